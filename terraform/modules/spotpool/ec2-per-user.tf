# The launch template of the pool instances: one per user, taken warm from the
# pool. The daemon launches from it (RunInstances with LAUNCH_TEMPLATE_ID) and
# passes the spot, metadata and profile options again explicitly, so the
# instances are the same whichever of the two is read.
#
# - Spot, one-time, terminated on interruption: the daemon replaces lost
#   instances and re-queues their users; a stopped spot instance is of no use.
# - IMDSv2 only, hop limit 1: a token's response cannot cross the Docker
#   bridge, so containers cannot get the instance role's credentials (the
#   user data also drops their traffic to the metadata address).
# - An encrypted gp3 root volume.
# - The user data installs Docker, pre-pulls the image, blocks the metadata
#   address for containers, starts the warm responder (warm-responder.py, the
#   unit spotpool-warm.service) on the container port and writes the
#   readiness marker last.
#
# - No network interface of its own: the daemon names the subnet (and the
#   security group) at RunInstances, which a network interface in the template
#   would make AWS refuse (InvalidParameterCombination). So the subnet decides
#   whether an instance gets a public IPv4 address: the created private subnets
#   of network_mode = "private" (network.tf) never give one.
#
# With on_demand_fallback, a second template ("on-demand") is the same but for
# the market options: RunInstances can override a template's market options but
# not remove them, so the daemon's on-demand fallback launches need their own.

locals {
  # The pool's templates, by market: always spot; on-demand for the fallback.
  launch_markets = var.on_demand_fallback ? ["spot", "on-demand"] : ["spot"]

  user_data = templatefile("${path.module}/user-data.sh.tftpl", {
    region          = local.region
    container_image = local.container_image
    ready_marker    = "/var/lib/spotpool/ready"
    # The daemon's CONTAINER_PORT and HEALTH_CHECK_PATH (outputs.tf daemon_env):
    # the warm responder answers the users' target groups' health check there.
    container_port    = var.container_port
    health_check_path = var.health_check_path
    warm_responder    = file("${path.module}/warm-responder.py")
  })

  instance_tags = merge(var.tags, {
    Name            = local.instance_name
    "spotpool:pool" = var.pool
  })
}

resource "aws_launch_template" "pool" {
  for_each = toset(local.launch_markets)

  name        = each.key == "spot" ? "${var.name}-pool" : "${var.name}-pool-on-demand"
  description = "spotpool pool instances (pool ${var.pool}, ${each.key})"

  image_id               = local.ami_id
  instance_type          = var.instance_types[0]
  vpc_security_group_ids = [aws_security_group.instances.id]
  user_data              = base64encode(local.user_data)
  update_default_version = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.instance.arn
  }

  dynamic "instance_market_options" {
    for_each = each.key == "spot" ? [1] : []
    content {
      market_type = "spot"

      spot_options {
        spot_instance_type             = "one-time"
        instance_interruption_behavior = "terminate"
      }
    }
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  block_device_mappings {
    device_name = var.root_device_name

    ebs {
      volume_type           = "gp3"
      volume_size           = var.root_volume_size
      encrypted             = true
      kms_key_id            = local.root_kms_key_arn
      delete_on_termination = true
    }
  }

  monitoring {
    enabled = false
  }

  # T3 credits: unlimited (AWS's default for T3) bills a busy container's surplus credits.
  dynamic "credit_specification" {
    for_each = alltrue([for t in var.instance_types : can(regex("^t[0-9][a-z]*\\.", t))]) ? [1] : []
    content {
      cpu_credits = var.cpu_credits
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = local.instance_tags
  }

  tag_specifications {
    resource_type = "volume"
    tags          = local.instance_tags
  }

  tags = var.tags

  lifecycle {
    precondition {
      condition     = local.container_image != null
      error_message = "Set container_image, or create_ecr_repository = true to use <repository>:latest."
    }
    precondition {
      condition     = local.image_ecr_repository_arn == null || contains(var.ecr_pull_repository_arns, coalesce(local.image_ecr_repository_arn, "-")) || local.ecr_pull_from_image
      error_message = "container_image is in the ECR repository ${coalesce(local.image_ecr_repository_arn, "-")}, which the instances may not pull from: their boot would stop at the ECR login and no instance would ever be ready. Set ecr_pull_from_image = true, or add the repository's ARN to ecr_pull_repository_arns."
    }
    # The created private subnets have no way out of the VPC but its endpoints
    # (endpoints.tf); your own may have more, which a check only warns about.
    precondition {
      condition     = !local.private_network || !var.create_network || local.image_in_region_ecr
      error_message = "network_mode = \"private\" with create_network: the instances reach nothing outside the VPC but its endpoints, which serve this region's ECR only, so container_image must be an image in ${local.region}'s ECR (or the created repository's, create_ecr_repository): no instance could pull ${coalesce(var.container_image, "-")}."
    }
    precondition {
      condition     = !local.private_network || !var.create_network || length(setsubtract(local.required_endpoint_services, var.interface_endpoint_services)) == 0
      error_message = "network_mode = \"private\" with create_network: interface_endpoint_services must hold ${join(", ", local.required_endpoint_services)}, the instances' only way to the SSM agent's services, ECR and Secrets Manager; missing: ${join(", ", sort(setsubtract(local.required_endpoint_services, var.interface_endpoint_services)))}."
    }
  }
}

# The single template of earlier versions is the spot one.
moved {
  from = aws_launch_template.pool
  to   = aws_launch_template.pool["spot"]
}
