# The smallest complete spotpool deployment: a new VPC with two public subnets,
# the ALB, the launch template, IAM and the daemon's policy.
#
#   terraform init && terraform apply -var region=eu-west-1
#   terraform output -raw daemon_env > env      # the daemon's EnvironmentFile
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
      secretsmanager = endpoints.value
      ecr            = endpoints.value
      sqs            = endpoints.value
      events         = endpoints.value
    }
  }
}

module "spotpool" {
  source = "../../modules/spotpool"

  name            = var.name
  pool            = var.pool
  create_network  = true
  container_image = var.container_image
  container_port  = var.container_port
  instance_types  = var.instance_types
  certificate_arn = var.certificate_arn
  public_hostname = var.public_hostname

  workspace_size_gib    = var.workspace_size_gib
  workspace_kms_key_arn = var.workspace_kms_key_arn
  idle_sleep_after      = var.idle_sleep_after

  container_preset = var.container_preset
  cpu_credits      = var.cpu_credits

  daemon_principal_arns   = var.daemon_principal_arns
  daemon_trusted_services = var.daemon_trusted_services
  daemon_extra_env        = var.daemon_extra_env
}
