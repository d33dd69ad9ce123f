//! The infrastructure Terraform would provide, created with the SDK against moto: a VPC with
//! two subnets, a security group, an ALB with an HTTP listener, and a launch template.

use aws_config::SdkConfig;
use aws_sdk_ec2::types::{InstanceType, RequestLaunchTemplateData};
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, FixedResponseActionConfig, LoadBalancerSchemeEnum,
    LoadBalancerTypeEnum, ProtocolEnum,
};

/// Ids and ARNs of the test infrastructure.
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub struct Infra {
    pub vpc_id: String,
    pub subnet_ids: Vec<String>,
    pub security_group_id: String,
    pub alb_arn: String,
    pub listener_arn: String,
    pub launch_template_id: String,
}

#[allow(dead_code)]
impl Infra {
    pub async fn create(sdk: &SdkConfig) -> Infra {
        let ec2 = aws_sdk_ec2::Client::new(sdk);
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(sdk);

        let vpc = ec2
            .create_vpc()
            .cidr_block("10.0.0.0/16")
            .send()
            .await
            .expect("creating the vpc");
        let vpc_id = vpc
            .vpc()
            .and_then(|vpc| vpc.vpc_id())
            .expect("the new vpc has an id")
            .to_string();

        let mut subnet_ids = Vec::new();
        for (zone, cidr) in [("us-east-1a", "10.0.1.0/24"), ("us-east-1b", "10.0.2.0/24")] {
            let subnet = ec2
                .create_subnet()
                .vpc_id(&vpc_id)
                .cidr_block(cidr)
                .availability_zone(zone)
                .send()
                .await
                .unwrap_or_else(|err| panic!("creating the subnet in {zone}: {err:?}"));
            subnet_ids.push(
                subnet
                    .subnet()
                    .and_then(|subnet| subnet.subnet_id())
                    .expect("the new subnet has an id")
                    .to_string(),
            );
        }

        let security_group_id = ec2
            .create_security_group()
            .group_name("spotpool-test")
            .description("spotpool test instances")
            .vpc_id(&vpc_id)
            .send()
            .await
            .expect("creating the security group")
            .group_id()
            .expect("the new security group has an id")
            .to_string();

        let (alb_arn, listener_arn) =
            create_load_balancer(&elb, "spotpool-test", &subnet_ids, &security_group_id).await;

        let images = ec2
            .describe_images()
            .send()
            .await
            .expect("listing moto's images");
        let image_id = images
            .images()
            .iter()
            .find_map(|image| image.image_id())
            .expect("moto offers at least one image")
            .to_string();

        let template = ec2
            .create_launch_template()
            .launch_template_name("spotpool-test")
            .launch_template_data(
                RequestLaunchTemplateData::builder()
                    .image_id(image_id)
                    .instance_type(InstanceType::T3Small)
                    .security_group_ids(&security_group_id)
                    .build(),
            )
            .send()
            .await
            .expect("creating the launch template");
        let launch_template_id = template
            .launch_template()
            .and_then(|template| template.launch_template_id())
            .expect("the new launch template has an id")
            .to_string();

        Infra {
            vpc_id,
            subnet_ids,
            security_group_id,
            alb_arn,
            listener_arn,
            launch_template_id,
        }
    }

    /// Another load balancer with an HTTP listener in the same subnets: (its ARN, the
    /// listener's ARN), for a second shard.
    pub async fn add_load_balancer(&self, sdk: &SdkConfig, name: &str) -> (String, String) {
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(sdk);
        create_load_balancer(&elb, name, &self.subnet_ids, &self.security_group_id).await
    }

    /// The daemon's network and template configuration, as environment variables.
    pub fn daemon_env(&self) -> Vec<(String, String)> {
        vec![
            ("VPC_ID".to_string(), self.vpc_id.clone()),
            ("SUBNET_IDS".to_string(), self.subnet_ids.join(",")),
            (
                "SECURITY_GROUP_ID".to_string(),
                self.security_group_id.clone(),
            ),
            ("ALB_LISTENER_ARN".to_string(), self.listener_arn.clone()),
            (
                "LAUNCH_TEMPLATE_ID".to_string(),
                self.launch_template_id.clone(),
            ),
        ]
    }
}

/// An internet-facing ALB named `name` with an HTTP listener on port 80 whose default action
/// answers 404: (the ALB's ARN, the listener's ARN).
async fn create_load_balancer(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    name: &str,
    subnet_ids: &[String],
    security_group_id: &str,
) -> (String, String) {
    let alb = elb
        .create_load_balancer()
        .name(name)
        .set_subnets(Some(subnet_ids.to_vec()))
        .security_groups(security_group_id)
        .scheme(LoadBalancerSchemeEnum::InternetFacing)
        .r#type(LoadBalancerTypeEnum::Application)
        .send()
        .await
        .expect("creating the load balancer");
    let alb_arn = alb
        .load_balancers()
        .first()
        .and_then(|lb| lb.load_balancer_arn())
        .expect("the new load balancer has an ARN")
        .to_string();
    let listener = elb
        .create_listener()
        .load_balancer_arn(&alb_arn)
        .protocol(ProtocolEnum::Http)
        .port(80)
        .default_actions(
            Action::builder()
                .r#type(ActionTypeEnum::FixedResponse)
                .fixed_response_config(
                    FixedResponseActionConfig::builder()
                        .status_code("404")
                        .content_type("text/plain")
                        .message_body("not found")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("creating the listener");
    let listener_arn = listener
        .listeners()
        .first()
        .and_then(|listener| listener.listener_arn())
        .expect("the new listener has an ARN")
        .to_string();
    (alb_arn, listener_arn)
}
