#!/usr/bin/env python3
"""Create the minimal AWS infrastructure spotpool needs, inside moto.

Usage: moto_infra.py --endpoint http://127.0.0.1:PORT

Creates (or finds, when it already exists in this moto) a VPC 10.0.0.0/16, two
subnets in us-east-1a/us-east-1b, a security group, an internet-facing ALB over
both subnets, an HTTP:80 listener whose default action is a fixed 404, and a
launch template (t3.small, an Amazon image that moto knows). Prints the result
on stdout as shell lines `export NAME='value'`, meant for `eval`; progress goes
to stderr. Every resource carries the tag spotpool:local=true.

It only ever talks to the endpoint it is given, with fake credentials: it
refuses anything that is not a loopback URL, so it cannot touch a real account.
"""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlparse

import boto3
from botocore.config import Config

REGION = "us-east-1"
NAME = "spotpool-local"
TAG = {"Key": "spotpool:local", "Value": "true"}
VPC_CIDR = "10.0.0.0/16"
SUBNETS = [("us-east-1a", "10.0.1.0/24"), ("us-east-1b", "10.0.2.0/24")]
INSTANCE_TYPE = "t3.small"


def log(msg: str) -> None:
    print(f"moto_infra: {msg}", file=sys.stderr)


def tags(name: str) -> list[dict[str, str]]:
    return [{"Key": "Name", "Value": name}, TAG]


def shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def clients(endpoint: str):
    session = boto3.session.Session(
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name=REGION,
    )
    cfg = Config(retries={"max_attempts": 3, "mode": "standard"})
    return (
        session.client("ec2", endpoint_url=endpoint, config=cfg),
        session.client("elbv2", endpoint_url=endpoint, config=cfg),
    )


def ensure_vpc(ec2) -> str:
    found = ec2.describe_vpcs(
        Filters=[{"Name": "tag:Name", "Values": [NAME]}, {"Name": "cidr", "Values": [VPC_CIDR]}]
    )["Vpcs"]
    if found:
        return found[0]["VpcId"]
    vpc_id = ec2.create_vpc(
        CidrBlock=VPC_CIDR,
        TagSpecifications=[{"ResourceType": "vpc", "Tags": tags(NAME)}],
    )["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})
    igw = ec2.create_internet_gateway(
        TagSpecifications=[{"ResourceType": "internet-gateway", "Tags": tags(NAME)}]
    )["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc_id)
    log(f"created VPC {vpc_id} with internet gateway {igw}")
    return vpc_id


def ensure_subnets(ec2, vpc_id: str) -> list[str]:
    ids = []
    for az, cidr in SUBNETS:
        found = ec2.describe_subnets(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "cidr-block", "Values": [cidr]},
            ]
        )["Subnets"]
        if found:
            ids.append(found[0]["SubnetId"])
            continue
        subnet_id = ec2.create_subnet(
            VpcId=vpc_id,
            CidrBlock=cidr,
            AvailabilityZone=az,
            TagSpecifications=[{"ResourceType": "subnet", "Tags": tags(f"{NAME}-{az}")}],
        )["Subnet"]["SubnetId"]
        ec2.modify_subnet_attribute(SubnetId=subnet_id, MapPublicIpOnLaunch={"Value": True})
        log(f"created subnet {subnet_id} ({az} {cidr})")
        ids.append(subnet_id)
    return ids


def ensure_security_group(ec2, vpc_id: str) -> str:
    found = ec2.describe_security_groups(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "group-name", "Values": [NAME]},
        ]
    )["SecurityGroups"]
    if found:
        return found[0]["GroupId"]
    sg_id = ec2.create_security_group(
        GroupName=NAME,
        Description="spotpool local: ALB and pool instances",
        VpcId=vpc_id,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": tags(NAME)}],
    )["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=sg_id,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 80,
                "ToPort": 80,
                "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "ALB HTTP"}],
            },
            {
                # The ALB reaches the containers inside the group.
                "IpProtocol": "tcp",
                "FromPort": 0,
                "ToPort": 65535,
                "UserIdGroupPairs": [{"GroupId": sg_id, "Description": "within group"}],
            },
        ],
    )
    log(f"created security group {sg_id}")
    return sg_id


def ensure_load_balancer(elbv2, subnet_ids: list[str], sg_id: str) -> tuple[str, str]:
    try:
        lbs = elbv2.describe_load_balancers(Names=[NAME])["LoadBalancers"]
    except elbv2.exceptions.LoadBalancerNotFoundException:
        lbs = []
    if not lbs:
        lbs = elbv2.create_load_balancer(
            Name=NAME,
            Subnets=subnet_ids,
            SecurityGroups=[sg_id],
            Scheme="internet-facing",
            Type="application",
            IpAddressType="ipv4",
            Tags=[TAG],
        )["LoadBalancers"]
        log(f"created ALB {lbs[0]['LoadBalancerArn']}")
    return lbs[0]["LoadBalancerArn"], lbs[0]["DNSName"]


def ensure_listener(elbv2, lb_arn: str) -> str:
    for listener in elbv2.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"]:
        if listener["Port"] == 80:
            return listener["ListenerArn"]
    listener_arn = elbv2.create_listener(
        LoadBalancerArn=lb_arn,
        Protocol="HTTP",
        Port=80,
        DefaultActions=[
            {
                "Type": "fixed-response",
                "FixedResponseConfig": {
                    "StatusCode": "404",
                    "ContentType": "text/plain",
                    "MessageBody": "no such route",
                },
            }
        ],
        Tags=[TAG],
    )["Listeners"][0]["ListenerArn"]
    log(f"created listener {listener_arn}")
    return listener_arn


def pick_image(ec2) -> str:
    images = [
        i
        for i in ec2.describe_images(Owners=["amazon"])["Images"]
        if i.get("Architecture", "x86_64") == "x86_64"
    ]
    if not images:
        images = ec2.describe_images()["Images"]
    if not images:
        raise SystemExit("moto_infra: moto returned no images at all")

    def rank(image) -> int:
        name = image.get("Name") or ""
        if name.startswith("al2023-ami-") and "minimal" not in name and "ecs" not in name:
            return 0
        if name.startswith("amzn2-ami-hvm"):
            return 1
        return 2

    # The newest (greatest name) image of the best family.
    best_rank = min(rank(i) for i in images)
    best = max((i for i in images if rank(i) == best_rank), key=lambda i: i.get("Name") or "")
    return best["ImageId"]


def ensure_launch_template(ec2, image_id: str) -> str:
    found = ec2.describe_launch_templates(
        Filters=[{"Name": "launch-template-name", "Values": [NAME]}]
    )["LaunchTemplates"]
    if found:
        return found[0]["LaunchTemplateId"]
    lt_id = ec2.create_launch_template(
        LaunchTemplateName=NAME,
        LaunchTemplateData={"ImageId": image_id, "InstanceType": INSTANCE_TYPE},
    )["LaunchTemplate"]["LaunchTemplateId"]
    # Tagged afterwards: moto copies CreateLaunchTemplate's TagSpecifications
    # into the template data, where AWS would only tag the template itself.
    ec2.create_tags(Resources=[lt_id], Tags=tags(NAME))
    log(f"created launch template {lt_id} (image {image_id}, {INSTANCE_TYPE})")
    return lt_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", required=True, help="moto URL, e.g. http://127.0.0.1:5000")
    args = parser.parse_args()

    host = urlparse(args.endpoint).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        parser.error(f"--endpoint must be a loopback moto URL, got {args.endpoint!r}")

    ec2, elbv2 = clients(args.endpoint)
    vpc_id = ensure_vpc(ec2)
    subnet_ids = ensure_subnets(ec2, vpc_id)
    sg_id = ensure_security_group(ec2, vpc_id)
    lb_arn, dns_name = ensure_load_balancer(elbv2, subnet_ids, sg_id)
    listener_arn = ensure_listener(elbv2, lb_arn)
    lt_id = ensure_launch_template(ec2, pick_image(ec2))

    outputs = {
        "VPC_ID": vpc_id,
        "SUBNET_IDS": ",".join(subnet_ids),
        "SECURITY_GROUP_ID": sg_id,
        "ALB_LISTENER_ARN": listener_arn,
        "LAUNCH_TEMPLATE_ID": lt_id,
        "PUBLIC_BASE_URL": f"http://{dns_name}",
    }
    for name, value in outputs.items():
        print(f"export {name}={shell_quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
