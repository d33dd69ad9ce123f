# VPC endpoints of network_mode = "private": the pool instances have no public
# IPv4 and reach AWS through them alone (docs/DEPLOY.md, "Private subnet mode").
# Nothing here exists in the default public mode.
#
# - Interface endpoints (interface_endpoint_services), private DNS on, one
#   network interface per availability zone of the pool's subnets: the SSM agent
#   (ssm, ssmmessages, ec2messages), the image pull (ecr.api, ecr.dkr) and the
#   users' secrets (secretsmanager). That is every AWS call of the user data
#   (user-data.sh.tftpl) and of the instance scripts (scripts/instance/); none
#   sends logs, so there is no CloudWatch Logs endpoint. Private DNS answers for
#   the whole VPC, so any host in it (the daemon's too) reaches these services
#   through the endpoints: their security group admits 443 from the pool
#   instances' group and from the VPC's primary CIDR.
# - An S3 gateway endpoint on the private route table(s), free: ECR keeps image
#   layers in S3, and Amazon Linux 2023 its package repositories (the user
#   data's dnf install docker).
#
# The fixed cost: interface endpoints x zones x interface_endpoint_hourly_price
# ($0.01 in us-east-1), whatever the pool's size; the gateway endpoint is free.
# It is the output vpc_endpoint_hourly_cost_usd and the daemon's
# SPOTPOOL_NETWORK_FIXED_DOLLARS_PER_HOUR (outputs.tf daemon_env).
#
# With your own subnets (create_network = false), the module reads them: in
# private mode it refuses one that maps public IPs on launch (the launch
# template cannot turn that off, network.tf), and in either mode daemon_env's
# SPOTPOOL_PUBLIC_IPV4 says whether the instances get a public address. It
# reads alb_subnet_ids too, when given, for their zones: an ALB routes only to
# targets in its own zones, and alb.tf refuses ALB subnets that miss a zone of
# subnet_ids. It reads the VPC in private mode: private DNS needs its DNS
# support and DNS host names. (count, not for_each: subnet ids created in the
# same apply are unknown at plan, and then the lookups wait for the apply.)

# The services the default private mode needs; with create_network, where the
# instances have no other way out, every one of them is required.
locals {
  required_endpoint_services = ["ec2messages", "ecr.api", "ecr.dkr", "secretsmanager", "ssm", "ssmmessages"]

  interface_endpoint_services = local.private_network ? sort(var.interface_endpoint_services) : []

  # Whether the image is in this region's ECR (the created repository is), the
  # only registry the endpoints reach.
  image_in_region_ecr = var.container_image == null ? var.create_ecr_repository : try(local.image_ecr[1] == local.region, false)
}

data "aws_subnet" "pool" {
  count = var.create_network ? 0 : length(var.subnet_ids)

  id = var.subnet_ids[count.index]

  lifecycle {
    postcondition {
      condition     = !local.private_network || !self.map_public_ip_on_launch
      error_message = "network_mode = \"private\": subnet ${self.id} maps a public IPv4 address on launch, which the launch template cannot turn off (the daemon names the subnet at RunInstances, and a network interface in the template would then be refused). Use private subnets (map_public_ip_on_launch = false), or network_mode = \"public\"."
    }
  }
}

# The ALBs' own subnets (alb_subnet_ids), for their availability zones only
# (alb_missing_zones, alb.tf).
data "aws_subnet" "alb" {
  count = var.create_network ? 0 : length(var.alb_subnet_ids)

  id = var.alb_subnet_ids[count.index]
}

data "aws_vpc" "pool" {
  count = local.private_network && !var.create_network ? 1 : 0

  id = var.vpc_id

  lifecycle {
    postcondition {
      condition     = self.enable_dns_support && self.enable_dns_hostnames
      error_message = "network_mode = \"private\": the VPC ${self.id} needs DNS support and DNS host names on (enable_dns_support, enable_dns_hostnames), or the endpoints' private DNS names do not resolve and the instances reach no AWS service."
    }
  }
}

locals {
  # Your own subnets by availability zone; an interface endpoint takes one
  # subnet per zone.
  pool_subnets_by_zone = { for subnet in data.aws_subnet.pool : subnet.availability_zone => subnet.id... }

  endpoint_subnet_ids = (
    !local.private_network ? [] :
    var.create_network ? aws_subnet.private[*].id :
    [for zone in sort(keys(local.pool_subnets_by_zone)) : sort(local.pool_subnets_by_zone[zone])[0]]
  )
  endpoint_zone_count = (
    !local.private_network ? 0 :
    var.create_network ? length(local.subnet_zones) : length(local.pool_subnets_by_zone)
  )
  endpoint_route_table_ids = (
    !local.private_network ? [] :
    var.create_network ? aws_route_table.private[*].id : var.private_route_table_ids
  )
  vpc_cidr = local.private_network ? (var.create_network ? var.vpc_cidr : data.aws_vpc.pool[0].cidr_block) : null

  # Whether the pool instances get a public IPv4 address (SPOTPOOL_PUBLIC_IPV4):
  # never in private mode, always in the created public subnets, and in your own
  # subnets when any of them maps one on launch.
  public_ipv4 = (
    local.private_network ? false :
    var.create_network ? true :
    anytrue([for subnet in data.aws_subnet.pool : subnet.map_public_ip_on_launch])
  )

  # USD an hour, rounded to a millionth (0.01 is no exact binary fraction):
  # interface endpoints x zones x the hourly price of one in one zone.
  vpc_endpoint_hourly_cost = floor(
    length(local.interface_endpoint_services) * local.endpoint_zone_count * var.interface_endpoint_hourly_price * 1000000 + 0.5
  ) / 1000000
}

data "aws_vpc_endpoint_service" "interface" {
  for_each = toset(local.interface_endpoint_services)

  service      = each.key
  service_type = "Interface"
}

data "aws_vpc_endpoint_service" "s3" {
  count = length(local.endpoint_route_table_ids) > 0 ? 1 : 0

  service      = "s3"
  service_type = "Gateway"
}

resource "aws_security_group" "endpoints" {
  count = local.private_network ? 1 : 0

  name        = "${var.name}-endpoints"
  description = "spotpool VPC endpoints: HTTPS from the pool instances and the VPC"
  vpc_id      = local.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-endpoints" })
}

# The pool instances, wherever in the VPC their subnets are. (No description on
# a rule that names a group: moto does not return it, and the plan would never
# settle.)
resource "aws_vpc_security_group_ingress_rule" "endpoints_from_instances" {
  count = local.private_network ? 1 : 0

  security_group_id            = aws_security_group.endpoints[0].id
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.instances.id

  tags = var.tags
}

# Every other host of the VPC: private DNS sends its calls to these services
# (the daemon's to SSM and Secrets Manager, say) here too.
resource "aws_vpc_security_group_ingress_rule" "endpoints_from_vpc" {
  count = local.private_network ? 1 : 0

  security_group_id = aws_security_group.endpoints[0].id
  description       = "HTTPS from the VPC, whose calls to these services private DNS sends here"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = local.vpc_cidr

  tags = var.tags
}

resource "aws_vpc_endpoint" "interface" {
  for_each = data.aws_vpc_endpoint_service.interface

  vpc_id              = local.vpc_id
  service_name        = each.value.service_name
  vpc_endpoint_type   = "Interface"
  subnet_ids          = local.endpoint_subnet_ids
  security_group_ids  = [aws_security_group.endpoints[0].id]
  private_dns_enabled = true

  tags = merge(var.tags, { Name = "${var.name}-${each.key}" })
}

resource "aws_vpc_endpoint" "s3" {
  count = length(data.aws_vpc_endpoint_service.s3)

  vpc_id            = local.vpc_id
  service_name      = data.aws_vpc_endpoint_service.s3[0].service_name
  vpc_endpoint_type = "Gateway"
  route_table_ids   = local.endpoint_route_table_ids

  tags = merge(var.tags, { Name = "${var.name}-s3" })
}

check "private_network" {
  assert {
    condition     = !local.private_network || var.create_network || local.image_in_region_ecr
    error_message = "network_mode = \"private\": container_image ${coalesce(local.container_image, "-")} is not in this region's ECR (${local.region}). The endpoints reach only this region's ECR: unless your subnets have another way out (a NAT gateway), no instance can pull the image."
  }
  assert {
    condition     = !local.private_network || var.create_network || length(setsubtract(local.required_endpoint_services, var.interface_endpoint_services)) == 0
    error_message = "network_mode = \"private\": no endpoint is created for ${join(", ", sort(setsubtract(local.required_endpoint_services, var.interface_endpoint_services)))}. Unless your VPC has its own (with private DNS) or a NAT gateway, the instances cannot reach them."
  }
}
