# The module's outputs, passed through. daemon_env gains the emulator's endpoint
# and test credentials when aws_endpoint is set, so it is complete for the local mode.

output "region" {
  description = "Region of everything here (AWS_REGION)."
  value       = module.spotpool.region
}

output "pool" {
  description = "Value of the spotpool:pool tag (SPOTPOOL_POOL)."
  value       = module.spotpool.pool
}

output "vpc_id" {
  description = "VPC of the ALB, the instances and the users' target groups (VPC_ID)."
  value       = module.spotpool.vpc_id
}

output "subnet_ids" {
  description = "Subnets the pool launches into (SUBNET_IDS, comma-joined)."
  value       = module.spotpool.subnet_ids
}

output "alb_subnet_ids" {
  description = "Subnets of the ALBs (public ones; with network_mode = \"private\", not the pool's)."
  value       = module.spotpool.alb_subnet_ids
}

output "network_mode" {
  description = "public or private (no public IPv4 on the pool instances; VPC endpoints)."
  value       = module.spotpool.network_mode
}

output "public_ipv4" {
  description = "Whether the pool instances get a public IPv4 address (SPOTPOOL_PUBLIC_IPV4)."
  value       = module.spotpool.public_ipv4
}

output "vpc_endpoints" {
  description = "The VPC endpoints of network_mode = \"private\", by service; empty in public mode."
  value       = module.spotpool.vpc_endpoints
}

output "vpc_endpoint_hourly_cost_usd" {
  description = "The VPC endpoints' fixed cost, USD an hour (SPOTPOOL_NETWORK_FIXED_DOLLARS_PER_HOUR); 0 in public mode."
  value       = module.spotpool.vpc_endpoint_hourly_cost_usd
}

output "alb_security_group_id" {
  description = "Security group of the ALB."
  value       = module.spotpool.alb_security_group_id
}

output "instance_security_group_id" {
  description = "Security group of the pool instances (SECURITY_GROUP_ID)."
  value       = module.spotpool.instance_security_group_id
}

output "alb_arn" {
  description = "ARN of shard 0's ALB."
  value       = module.spotpool.alb_arn
}

output "alb_dns_name" {
  description = "DNS name of shard 0's ALB; point public_hostname's record at it."
  value       = module.spotpool.alb_dns_name
}

output "listener_arn" {
  description = "Shard 0's listener that carries the users' rules (ALB_LISTENER_ARN of a single path-routed shard)."
  value       = module.spotpool.listener_arn
}

output "shards" {
  description = "Every shard: its ALB, listener, routing, capacity and, with host routing, its domain and wildcard DNS name."
  value       = module.spotpool.shards
}

output "shard_listener_arns" {
  description = "Every shard's listener carrying the users' rules."
  value       = module.spotpool.shard_listener_arns
}

output "shard_dns_records" {
  description = "Host routing: each shard's wildcard DNS name and the ALB DNS name to point it at."
  value       = module.spotpool.shard_dns_records
}

output "daemon_shards_toml" {
  description = "The daemon's [[shard]] tables (TOML), for the file SPOTPOOL_CONFIG names."
  value       = module.spotpool.daemon_shards_toml
}

output "daemon_needs_shards_toml" {
  description = "Whether the daemon needs daemon_shards_toml (false only for a single path-routed shard, which daemon_env describes)."
  value       = module.spotpool.daemon_needs_shards_toml
}

output "launch_template_id" {
  description = "Launch template of the pool instances (LAUNCH_TEMPLATE_ID; the daemon launches its $Default version, which every apply updates)."
  value       = module.spotpool.launch_template_id
}

output "on_demand_launch_template_id" {
  description = "Launch template of on-demand fallback launches; null unless on_demand_fallback."
  value       = module.spotpool.on_demand_launch_template_id
}

output "launch_template_latest_version" {
  description = "Latest (and default) version of the launch template."
  value       = module.spotpool.launch_template_latest_version
}

output "ami_id" {
  description = "AMI of the pool instances."
  value       = module.spotpool.ami_id
}

output "instance_role_arn" {
  description = "Role of the pool instances."
  value       = module.spotpool.instance_role_arn
}

output "instance_profile_arn" {
  description = "Instance profile passed at launch (INSTANCE_PROFILE_ARN)."
  value       = module.spotpool.instance_profile_arn
}

output "daemon_policy_arn" {
  description = "The daemon's least-privilege policy; attach it, with daemon_workspaces_policy_arn and daemon_routing_policy_arns (daemon_policy_arns: all of them), to the role the daemon runs as."
  value       = module.spotpool.daemon_policy_arn
}

output "daemon_routing_policy_arns" {
  description = "The daemon's policies for the users' rules on the shards' listeners; attach them too."
  value       = module.spotpool.daemon_routing_policy_arns
}

output "daemon_workspaces_policy_arn" {
  description = "The daemon's second policy (workspaces, sleep, auto-sleep); attach it too."
  value       = module.spotpool.daemon_workspaces_policy_arn
}

output "daemon_policy_arns" {
  description = "Every policy the daemon's role needs."
  value       = module.spotpool.daemon_policy_arns
}

output "daemon_policy_json" {
  description = "The daemon's permissions (every policy) as one document, for review."
  value       = module.spotpool.daemon_policy_json
}

output "daemon_role_arn" {
  description = "The daemon role, when daemon_principal_arns or daemon_trusted_services asked for one; else null."
  value       = module.spotpool.daemon_role_arn
}

output "daemon_instance_profile_arn" {
  description = "Instance profile of the daemon role, when daemon_trusted_services includes EC2; else null."
  value       = module.spotpool.daemon_instance_profile_arn
}

output "ecr_repository_url" {
  description = "URL of the created ECR repository (ECR_REPOSITORY_URL), or null."
  value       = module.spotpool.ecr_repository_url
}

output "container_image" {
  description = "The user container image the instances pre-pull (CONTAINER_IMAGE)."
  value       = module.spotpool.container_image
}

output "container_port" {
  description = "Port of the user container (CONTAINER_PORT)."
  value       = module.spotpool.container_port
}

output "workspace_size_gib" {
  description = "Size in GiB of each user's workspace volume (SPOTPOOL_WORKSPACE_SIZE_GIB)."
  value       = module.spotpool.workspace_size_gib
}

output "workspace_kms_key_arn" {
  description = "The workspaces' customer-managed key (SPOTPOOL_WORKSPACE_KMS_KEY_ID), or null for aws/ebs."
  value       = module.spotpool.workspace_kms_key_arn
}

output "idle_sleep_after" {
  description = "How long a user may go without a request before the daemon puts it to sleep, or \"off\" (SPOTPOOL_IDLE_SLEEP_AFTER)."
  value       = module.spotpool.idle_sleep_after
}

output "secret_prefix" {
  description = "Prefix of the users' secrets (SECRET_PREFIX)."
  value       = module.spotpool.secret_prefix
}

output "public_base_url" {
  description = "Prefix of each user's url on shard 0 with path routing (PUBLIC_BASE_URL)."
  value       = module.spotpool.public_base_url
}

output "interruption_queue_url" {
  description = "The SQS queue the EventBridge rules fill with EC2 interruption, rebalance and state-change events (SPOTPOOL_INTERRUPTION_QUEUE_URL)."
  value       = module.spotpool.interruption_queue_url
}

output "interruption_queue_arn" {
  description = "ARN of the interruption queue."
  value       = module.spotpool.interruption_queue_arn
}

output "interruption_dead_letter_queue_url" {
  description = "Dead-letter queue of the interruption queue: events the daemon could not store. Alarm on its ApproximateNumberOfMessagesVisible."
  value       = module.spotpool.interruption_dead_letter_queue_url
}

output "interruption_dead_letter_queue_arn" {
  description = "ARN of the interruption dead-letter queue."
  value       = module.spotpool.interruption_dead_letter_queue_arn
}

output "interruption_rule_arns" {
  description = "The EventBridge rules that feed the interruption queue, by name."
  value       = module.spotpool.interruption_rule_arns
}

output "user_data" {
  description = "The rendered user data of the pool instances, for review."
  value       = module.spotpool.user_data
}

output "daemon_env" {
  description = "The daemon's settings as KEY=value lines (no API tokens), for /etc/spotpool/env."
  value = join("", concat(
    [module.spotpool.daemon_env],
    # moto's fixed test credentials, never real ones (see the provider block).
    local.local_endpoint ? [
      "AWS_ENDPOINT_URL=${trimsuffix(var.aws_endpoint, "/")}\n",
      "AWS_ACCESS_KEY_ID=test\n",
      "AWS_SECRET_ACCESS_KEY=test\n",
    ] : [],
  ))
}

# --- Account prerequisites ---------------------------------------------------

output "spot_service_linked_role_arn" {
  description = "The EC2 Spot service-linked role (created, or the account's own)."
  value       = module.spotpool.spot_service_linked_role_arn
}

output "kms_key_arn" {
  description = "The KMS key created by create_kms_key, or null."
  value       = module.spotpool.kms_key_arn
}

output "root_volume_kms_key_arn" {
  description = "The root volumes' customer-managed key, or null for the account's default EBS key."
  value       = module.spotpool.root_volume_kms_key_arn
}

output "kms_key_policy_json" {
  description = "The key policy a customer-managed EBS key of this pool must hold (the created key holds it)."
  value       = module.spotpool.kms_key_policy_json
}

# --- The daemon host ---------------------------------------------------------

output "daemon_host_instance_id" {
  description = "The daemon host, when create_daemon_host; else null."
  value       = one(aws_instance.daemon[*].id)
}

output "daemon_host_private_ip" {
  description = "Private address of the daemon host, when create_daemon_host; else null."
  value       = one(aws_instance.daemon[*].private_ip)
}

output "daemon_host_security_group_id" {
  description = "Security group of the daemon host, when create_daemon_host; else null."
  value       = one(aws_security_group.daemon[*].id)
}

output "daemon_api_url" {
  description = "The daemon's API as the web backend reaches it (https with daemon_tls; the certificate must name the address or a DNS name you point at it), when create_daemon_host; else null."
  value       = var.create_daemon_host ? "${var.daemon_tls ? "https" : "http"}://${aws_instance.daemon[0].private_ip}:${var.daemon_api_port}" : null
}

output "daemon_env_secret_arn" {
  description = "The secret holding the daemon host's settings (/etc/spotpool/env), written by Terraform."
  value       = one(aws_secretsmanager_secret.daemon_env[*].arn)
}

output "daemon_config_secret_arn" {
  description = "The secret holding the daemon host's TOML file (the shards' [[shard]] tables, SPOTPOOL_CONFIG), written by Terraform; null without create_daemon_host or with a single path-routed shard."
  value       = one(aws_secretsmanager_secret.daemon_config[*].arn)
}

output "daemon_tokens_secret_arn" {
  description = "The secret you put the API tokens in (SPOTPOOL_API_TOKEN=... and SPOTPOOL_ADMIN_TOKEN=... lines)."
  value       = one(aws_secretsmanager_secret.daemon_tokens[*].arn)
}

output "daemon_tls_secret_arn" {
  description = "The secret you put the API's TLS bundle in (PEM: certificate chain, then private key), when daemon_tls."
  value       = one(aws_secretsmanager_secret.daemon_tls[*].arn)
}

output "daemon_host_policy_json" {
  description = "What the daemon host's role gets on top of the daemon policies (its secrets, its binary), for review; null without create_daemon_host."
  value       = one(data.aws_iam_policy_document.daemon_host[*].json)
}
