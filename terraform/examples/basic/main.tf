# The smallest complete spotpool deployment: a new VPC with two public subnets,
# the ALB, the launch template, IAM and the daemon's policy; optionally the
# account prerequisites (the EC2 Spot service-linked role, a KMS key) and the
# daemon's own host (daemon-host.tf).
#
#   terraform init && terraform apply -var region=eu-west-1 -var users_domain=users.example.com
#   terraform output -raw daemon_env > env      # the daemon's EnvironmentFile
#   terraform output -raw daemon_shards_toml    # its [[shard]] tables (SPOTPOOL_CONFIG)
#
# The same root applies against moto for the local mode and the tests:
#   terraform apply -var aws_endpoint=http://127.0.0.1:5000
#
# No default_tags on the provider: they make launch templates drift. Tags go
# through the module's `tags` input instead.

locals {
  local_endpoint = var.aws_endpoint != null
}

provider "aws" {
  region = var.region

  # Against a local emulator: its test credentials (never the machine's real
  # ones), no EC2 metadata lookup, no credential validation. STS stays on, so
  # the account id in the ARNs is the emulator's (moto: 123456789012).
  access_key                  = local.local_endpoint ? "test" : null
  secret_key                  = local.local_endpoint ? "test" : null
  skip_credentials_validation = local.local_endpoint
  skip_metadata_api_check     = local.local_endpoint
  skip_region_validation      = local.local_endpoint
  s3_use_path_style           = local.local_endpoint

  dynamic "endpoints" {
    for_each = local.local_endpoint ? [trimsuffix(var.aws_endpoint, "/")] : []
    content {
      ec2            = endpoints.value
      elb            = endpoints.value
      elbv2          = endpoints.value
      iam            = endpoints.value
      sts            = endpoints.value
      ssm            = endpoints.value
      kms            = endpoints.value
      secretsmanager = endpoints.value
      ecr            = endpoints.value
      sqs            = endpoints.value
      events         = endpoints.value
      acm            = endpoints.value
      route53        = endpoints.value
    }
  }
}

module "spotpool" {
  source = "../../modules/spotpool"

  name            = var.name
  pool            = var.pool
  create_network  = var.create_network
  container_image = var.container_image
  container_port  = var.container_port
  instance_types  = var.instance_types
  certificate_arn = var.certificate_arn
  public_hostname = var.public_hostname

  shard_count               = var.shard_count
  shard_capacity            = var.shard_capacity
  routing                   = var.routing
  users_domain              = var.users_domain
  shard_certificate_arns    = var.shard_certificate_arns
  route53_zone_id           = var.route53_zone_id
  create_shard_certificates = var.create_shard_certificates

  workspace_size_gib    = var.workspace_size_gib
  workspace_kms_key_arn = var.workspace_kms_key_arn
  idle_sleep_after      = var.idle_sleep_after

  create_spot_service_linked_role = var.create_spot_service_linked_role
  create_kms_key                  = var.create_kms_key
  root_volume_kms_key_id          = var.root_volume_kms_key_id

  container_preset   = var.container_preset
  cpu_credits        = var.cpu_credits
  on_demand_fallback = var.on_demand_fallback

  daemon_principal_arns = var.daemon_principal_arns
  # The daemon host (daemon-host.tf) runs as the module's daemon role.
  daemon_trusted_services = distinct(concat(var.daemon_trusted_services, var.create_daemon_host ? ["ec2.amazonaws.com"] : []))
  daemon_extra_env        = var.daemon_extra_env

  vpc_id                                 = var.vpc_id
  ami_id                                 = var.ami_id
  alb_deletion_protection                = var.alb_deletion_protection
  alb_ingress_cidrs                      = var.alb_ingress_cidrs
  ami_ssm_parameter                      = var.ami_ssm_parameter
  create_ecr_repository                  = var.create_ecr_repository
  ecr_force_delete                       = var.ecr_force_delete
  ecr_pull_from_image                    = var.ecr_pull_from_image
  ecr_pull_repository_arns               = var.ecr_pull_repository_arns
  health_check_path                      = var.health_check_path
  interruption_max_receive_count         = var.interruption_max_receive_count
  interruption_message_retention_seconds = var.interruption_message_retention_seconds
  public_subnet_count                    = var.public_subnet_count
  root_volume_size                       = var.root_volume_size
  secret_prefix                          = var.secret_prefix
  subnet_ids                             = var.subnet_ids
  tags                                   = var.tags
  vpc_cidr                               = var.vpc_cidr

  network_mode                    = var.network_mode
  alb_subnet_ids                  = var.alb_subnet_ids
  private_route_table_ids         = var.private_route_table_ids
  interface_endpoint_services     = var.interface_endpoint_services
  interface_endpoint_hourly_price = var.interface_endpoint_hourly_price
}
