# Where the module runs (region, account, partition) and the values the other
# files share. Nothing here creates a resource.

data "aws_region" "current" {}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

# The latest Amazon Linux 2023 image, only when no AMI is given.
data "aws_ssm_parameter" "ami" {
  count = var.ami_id == null ? 1 : 0
  name  = var.ami_ssm_parameter
}

locals {
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  dns_suffix = data.aws_partition.current.dns_suffix

  # The instance name is the seed's, so its troubleshooting commands still work.
  instance_name = "openclaw-user-instance"

  vpc_id = var.create_network ? aws_vpc.this[0].id : var.vpc_id
  # The pool instances' subnets (SUBNET_IDS): the created private ones with
  # network_mode = "private", else the created public ones, or subnet_ids.
  subnet_ids = (
    var.create_network ? (local.private_network ? aws_subnet.private[*].id : aws_subnet.public[*].id) :
    var.subnet_ids
  )
  # The ALBs' subnets: always public ones, the created ones or alb_subnet_ids
  # (empty: subnet_ids, where the pool instances are too).
  alb_subnet_ids = (
    var.create_network ? aws_subnet.public[*].id :
    length(var.alb_subnet_ids) > 0 ? var.alb_subnet_ids : var.subnet_ids
  )

  # An AMI id is no secret; insecure_value is the parameter without the sensitive mark.
  ami_id = var.ami_id != null ? var.ami_id : data.aws_ssm_parameter.ami[0].insecure_value

  container_image = (
    var.container_image != null ? var.container_image :
    var.create_ecr_repository ? "${aws_ecr_repository.this[0].repository_url}:latest" : null
  )

  # Shard 0's path prefix and listener: PUBLIC_BASE_URL and ALB_LISTENER_ARN of
  # the single-listener layout (shards.tf), and the outputs of earlier versions.
  public_base_url = "${local.public_scheme}://${coalesce(var.public_hostname, aws_lb.this[0].dns_name)}"
  listener_arn    = local.shard_listener_arns[0]
}
