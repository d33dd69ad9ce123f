# Everything the daemon's configuration needs, one output per setting, plus
# daemon_env: the same values rendered as the daemon's EnvironmentFile.

output "region" {
  description = "Region of everything here (AWS_REGION)."
  value       = local.region
}

output "pool" {
  description = "Value of the spotpool:pool tag (SPOTPOOL_POOL)."
  value       = var.pool
}

output "vpc_id" {
  description = "VPC of the ALB, the instances and the users' target groups (VPC_ID)."
  value       = local.vpc_id
}

output "subnet_ids" {
  description = "Subnets the pool launches into (SUBNET_IDS, comma-joined)."
  value       = local.subnet_ids
}

output "alb_subnet_ids" {
  description = "Subnets of the ALBs: public ones (with network_mode = \"private\", not the pool's)."
  value       = local.alb_subnet_ids
}

output "network_mode" {
  description = "public or private: whether the pool instances may have a public IPv4 address, or reach AWS through the VPC endpoints (vpc_endpoints)."
  value       = var.network_mode
}

output "public_ipv4" {
  description = "Whether the pool instances get a public IPv4 address (SPOTPOOL_PUBLIC_IPV4): never with network_mode = \"private\", always in the created public subnets, and in your own subnets when any of them maps one on launch."
  value       = local.public_ipv4
}

output "vpc_endpoints" {
  description = "The VPC endpoints of network_mode = \"private\", by service: id, type (Interface or Gateway) and zones (the availability zones an interface endpoint has a network interface in; 0 for the gateway). Empty in public mode."
  value = merge(
    { for service, endpoint in aws_vpc_endpoint.interface : service => { id = endpoint.id, type = "Interface", zones = local.endpoint_zone_count } },
    { for endpoint in aws_vpc_endpoint.s3 : "s3" => { id = endpoint.id, type = "Gateway", zones = 0 } },
  )
}

output "vpc_endpoint_hourly_cost_usd" {
  description = "Fixed cost of the VPC endpoints, USD an hour, shared by the whole pool (SPOTPOOL_NETWORK_FIXED_DOLLARS_PER_HOUR): interface endpoints x availability zones x interface_endpoint_hourly_price ($0.01 in us-east-1); the S3 gateway endpoint is free, and the $0.01 per GB processed is not counted. 0 in public mode."
  value       = local.vpc_endpoint_hourly_cost
}

output "alb_security_group_id" {
  description = "Security group of the ALBs (every shard's)."
  value       = aws_security_group.alb.id
}

output "instance_security_group_id" {
  description = "Security group of the pool instances (SECURITY_GROUP_ID)."
  value       = aws_security_group.instances.id
}

output "alb_arn" {
  description = "ARN of shard 0's ALB (the single ALB of earlier versions); every shard's: shards."
  value       = aws_lb.this[0].arn
}

output "alb_dns_name" {
  description = "DNS name of shard 0's ALB; point public_hostname's record at it. Every shard's: shards."
  value       = aws_lb.this[0].dns_name
}

output "listener_arn" {
  description = "Shard 0's listener that carries the users' rules (ALB_LISTENER_ARN of a single path-routed shard): HTTPS:443 with a certificate, else HTTP:80. Every shard's: shards, shard_listener_arns."
  value       = local.listener_arn
}

output "shards" {
  description = "Every shard, in order: name, routing, capacity, listener_arn (the users' rules), alb_arn, alb_name, alb_dns_name, alb_zone_id, certificate; host routing: domain (shard-<i>.<users_domain>) and wildcard_name (*.<domain>: the DNS record to point at alb_dns_name, and the name its certificate must cover); path routing: base_url."
  value       = local.shards
}

output "shard_listener_arns" {
  description = "Every shard's listener carrying the users' rules, in shard order (the daemon policy's rule statements cover exactly these)."
  value       = local.shard_listener_arns
}

output "shard_dns_records" {
  description = "Host routing: the wildcard DNS record of each shard (*.shard-<i>.<users_domain>) and the ALB DNS name it must point to (an alias, or a CNAME); each needs a certificate for the same wildcard. Empty with path routing."
  value       = var.routing == "host" ? { for shard in local.shards : shard.wildcard_name => shard.alb_dns_name } : {}
}

output "daemon_shards_toml" {
  description = "The daemon's [[shard]] tables (TOML), one per shard, for the file SPOTPOOL_CONFIG names. Unless there is a single path-routed shard (shard_count = 1, routing = path), daemon_env has no ALB_LISTENER_ARN nor PUBLIC_BASE_URL and the daemon needs this."
  value       = local.daemon_shards_toml
}

output "daemon_needs_shards_toml" {
  description = "Whether the daemon must get daemon_shards_toml (SPOTPOOL_CONFIG): false only for a single path-routed shard, which daemon_env describes as ALB_LISTENER_ARN and PUBLIC_BASE_URL."
  value       = !local.single_path_shard
}

output "launch_template_id" {
  description = "Launch template of the pool instances (LAUNCH_TEMPLATE_ID; the daemon launches its $Default version, which every apply updates)."
  value       = aws_launch_template.pool["spot"].id
}

output "on_demand_launch_template_id" {
  description = "Launch template of on-demand fallback launches (ON_DEMAND_LAUNCH_TEMPLATE_ID): the pool's without market options; null unless on_demand_fallback."
  value       = var.on_demand_fallback ? aws_launch_template.pool["on-demand"].id : null
}

output "launch_template_latest_version" {
  description = "Latest (and default) version of the launch template."
  value       = aws_launch_template.pool["spot"].latest_version
}

output "ami_id" {
  description = "AMI of the pool instances."
  value       = local.ami_id
}

output "instance_role_arn" {
  description = "Role of the pool instances."
  value       = aws_iam_role.instance.arn
}

output "instance_profile_arn" {
  description = "Instance profile passed at launch (INSTANCE_PROFILE_ARN)."
  value       = aws_iam_instance_profile.instance.arn
}

output "daemon_policy_arn" {
  description = "The daemon's least-privilege policy for instances, commands, secrets, routing and interruptions. Attach it and daemon_workspaces_policy_arn (or every ARN of daemon_policy_arns) to the role the daemon runs as."
  value       = aws_iam_policy.daemon["daemon"].arn
}

output "daemon_routing_policy_arns" {
  description = "The daemon's policies for the users' rules on the shards' listeners (<name>-daemon-routing, and -routing-2, ... for every further 9 shards). Attach them too (daemon_policy_arns lists every policy)."
  value       = [for key in sort(keys(local.daemon_policies)) : aws_iam_policy.daemon[key].arn if startswith(key, "daemon-routing")]
}

output "daemon_workspaces_policy_arn" {
  description = "The daemon's least-privilege policy for users' workspace volumes (EBS, and KMS with workspace_kms_key_arn), sleep and auto-sleep: the second half of its permissions, split off because IAM limits a managed policy to 6,144 characters."
  value       = aws_iam_policy.daemon["daemon-workspaces"].arn
}

output "daemon_policy_arns" {
  description = "Every policy the daemon's role needs (daemon_policy_arn, daemon_workspaces_policy_arn and daemon_routing_policy_arns)."
  value       = [for key in keys(local.daemon_policies) : aws_iam_policy.daemon[key].arn]
}

output "daemon_policy_json" {
  description = "The daemon's permissions (every policy of daemon_policy_arns) as one document, for review."
  value       = data.aws_iam_policy_document.daemon_all.json
}

output "daemon_role_name" {
  description = "Name of the daemon role, when the module created it; else null."
  value       = one(aws_iam_role.daemon[*].name)
}

output "daemon_role_arn" {
  description = "The daemon role, when daemon_principal_arns or daemon_trusted_services asked for one; else null."
  value       = one(aws_iam_role.daemon[*].arn)
}

output "daemon_instance_profile_arn" {
  description = "Instance profile of the daemon role, when daemon_trusted_services includes EC2; else null."
  value       = one(aws_iam_instance_profile.daemon[*].arn)
}

output "daemon_instance_profile_name" {
  description = "Name of the daemon role's instance profile, when daemon_trusted_services includes EC2; else null."
  value       = one(aws_iam_instance_profile.daemon[*].name)
}

output "ecr_repository_url" {
  description = "URL of the created ECR repository (ECR_REPOSITORY_URL), or null."
  value       = one(aws_ecr_repository.this[*].repository_url)
}

output "container_image" {
  description = "The user container image the instances pre-pull (CONTAINER_IMAGE)."
  value       = local.container_image
}

output "container_port" {
  description = "Port of the user container (CONTAINER_PORT)."
  value       = var.container_port
}

output "workspace_size_gib" {
  description = "Size in GiB of each user's workspace volume (SPOTPOOL_WORKSPACE_SIZE_GIB)."
  value       = var.workspace_size_gib
}

output "workspace_kms_key_arn" {
  description = "The customer-managed key of the workspace volumes (SPOTPOOL_WORKSPACE_KMS_KEY_ID): workspace_kms_key_arn, else the created key (create_kms_key), else null for the account's default EBS key."
  value       = local.workspace_kms_key_arn
}

output "root_volume_kms_key_arn" {
  description = "The customer-managed key of the pool instances' root volumes: root_volume_kms_key_id, else the created key (create_kms_key), else null for the account's default EBS key."
  value       = local.root_kms_key_arn
}

output "kms_key_arn" {
  description = "The KMS key created by create_kms_key, or null."
  value       = local.created_kms_key_arn
}

output "kms_key_policy_json" {
  description = "The key policy a customer-managed EBS key of this pool must hold (the created key holds it): the account, the EC2 Spot service-linked role, and the daemon role when the module creates it (docs/DEPLOY.md, \"KMS\")."
  value       = data.aws_iam_policy_document.kms_key.json
}

output "spot_service_linked_role_arn" {
  description = "The EC2 Spot service-linked role (AWSServiceRoleForEC2Spot): created when create_spot_service_linked_role is true, else the account's own."
  value       = local.spot_service_linked_role_arn
}

output "idle_sleep_after" {
  description = "How long a user may go without a request before the daemon puts it to sleep, or \"off\" (SPOTPOOL_IDLE_SLEEP_AFTER)."
  value       = var.idle_sleep_after
}

output "secret_prefix" {
  description = "Prefix of the users' secrets (SECRET_PREFIX)."
  value       = var.secret_prefix
}

output "public_base_url" {
  description = "Prefix of each user's url on shard 0 with path routing (PUBLIC_BASE_URL of a single path-routed shard)."
  value       = local.public_base_url
}

output "interruption_queue_url" {
  description = "The SQS queue the EventBridge rules fill with EC2 interruption, rebalance and state-change events (SPOTPOOL_INTERRUPTION_QUEUE_URL)."
  value       = aws_sqs_queue.interruptions.url
}

output "interruption_queue_arn" {
  description = "ARN of the interruption queue."
  value       = aws_sqs_queue.interruptions.arn
}

output "interruption_dead_letter_queue_url" {
  description = "Dead-letter queue of the interruption queue: events the daemon could not store after interruption_max_receive_count receives. Alarm on its ApproximateNumberOfMessagesVisible."
  value       = aws_sqs_queue.interruptions_dead_letter.url
}

output "interruption_dead_letter_queue_arn" {
  description = "ARN of the interruption dead-letter queue."
  value       = aws_sqs_queue.interruptions_dead_letter.arn
}

output "interruption_rule_arns" {
  description = "The EventBridge rules that feed the interruption queue, by name (spot-interruption, rebalance, state-change)."
  value       = { for key, rule in aws_cloudwatch_event_rule.interruptions : key => rule.arn }
}

output "user_data" {
  description = "The rendered user data of the pool instances, for review."
  value       = local.user_data
}

locals {
  daemon_env = merge(
    {
      AWS_REGION           = local.region
      SPOTPOOL_POOL        = var.pool
      VPC_ID               = local.vpc_id
      SUBNET_IDS           = join(",", local.subnet_ids)
      SECURITY_GROUP_ID    = aws_security_group.instances.id
      LAUNCH_TEMPLATE_ID   = aws_launch_template.pool["spot"].id
      INSTANCE_PROFILE_ARN = aws_iam_instance_profile.instance.arn
      USER_INSTANCE_TYPE   = join(",", var.instance_types)
      CONTAINER_IMAGE      = local.container_image
      CONTAINER_PRESET     = var.container_preset
      CONTAINER_PORT       = tostring(var.container_port)
      HEALTH_CHECK_PATH    = var.health_check_path

      HEALTH_CHECK_INTERVAL_SECONDS    = tostring(var.health_check.interval_seconds)
      HEALTH_CHECK_TIMEOUT_SECONDS     = tostring(var.health_check.timeout_seconds)
      HEALTH_CHECK_HEALTHY_THRESHOLD   = tostring(var.health_check.healthy_threshold)
      HEALTH_CHECK_UNHEALTHY_THRESHOLD = tostring(var.health_check.unhealthy_threshold)
      HEALTH_CHECK_CODES               = var.health_check.codes
      SECRET_PREFIX                    = var.secret_prefix

      SPOTPOOL_INTERRUPTION_QUEUE_URL = aws_sqs_queue.interruptions.url

      SPOTPOOL_WORKSPACE_SIZE_GIB = tostring(var.workspace_size_gib)
      SPOTPOOL_IDLE_SLEEP_AFTER   = var.idle_sleep_after

      # The network's part of the cost model (issue 16): whether each instance
      # pays for a public IPv4 address, and the VPC endpoints' fixed cost
      # (endpoints.tf; 0 in public mode). daemon_extra_env may override it, e.g.
      # to add your own NAT gateways.
      SPOTPOOL_PUBLIC_IPV4                    = tostring(local.public_ipv4)
      SPOTPOOL_NETWORK_FIXED_DOLLARS_PER_HOUR = tostring(local.vpc_endpoint_hourly_cost)
      # What each instance's root volume and burstable CPU credits cost
      # (ec2-per-user.tf's launch template). The template sets the credits only
      # when every type is a T type; with mixed types a T instance launches with
      # T3's default, unlimited.
      SPOTPOOL_ROOT_VOLUME_GIB = tostring(var.root_volume_size)
      SPOTPOOL_CPU_CREDITS = (
        alltrue([for t in var.instance_types : can(regex("^t[0-9][a-z]*\\.", t))]) ? var.cpu_credits :
        anytrue([for t in var.instance_types : can(regex("^t[0-9][a-z]*\\.", t))]) ? "unlimited" : "standard"
      )
    },
    # The single path-routed listener of earlier versions; any other layout is
    # daemon_shards_toml's [[shard]] tables.
    local.single_path_shard ? { ALB_LISTENER_ARN = local.listener_arn, PUBLIC_BASE_URL = local.public_base_url } : {},
    var.workspace_kms_key_arn != null || var.create_kms_key ? { SPOTPOOL_WORKSPACE_KMS_KEY_ID = local.workspace_kms_key_arn } : {},
    var.create_ecr_repository ? { ECR_REPOSITORY_URL = aws_ecr_repository.this[0].repository_url } : {},
    var.on_demand_fallback ? { SPOTPOOL_ON_DEMAND_FALLBACK = "true", ON_DEMAND_LAUNCH_TEMPLATE_ID = aws_launch_template.pool["on-demand"].id } : {},
    var.daemon_extra_env,
  )
}

output "daemon_env" {
  description = "The daemon's settings as KEY=value lines, for /etc/spotpool/env (a systemd EnvironmentFile). No tokens: SPOTPOOL_API_TOKEN and SPOTPOOL_ADMIN_TOKEN go in /etc/spotpool/tokens (docs/DEPLOY.md). With shards (daemon_needs_shards_toml), no ALB_LISTENER_ARN nor PUBLIC_BASE_URL: the shards are daemon_shards_toml's."
  value       = join("", [for key in keys(local.daemon_env) : "${key}=${local.daemon_env[key]}\n"])
}
