variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "us-east-1"
}

variable "aws_endpoint" {
  description = "Local AWS emulator (moto) to apply against instead of AWS, e.g. http://127.0.0.1:5000. Loopback only; with it, the provider uses the emulator's test credentials and never real ones. Null: real AWS."
  type        = string
  default     = null

  validation {
    condition     = var.aws_endpoint == null || can(regex("^http://(127\\.0\\.0\\.1|localhost|\\[::1\\]):[0-9]+/?$", var.aws_endpoint))
    error_message = "aws_endpoint must be a loopback URL such as http://127.0.0.1:5000: this root never sends test credentials anywhere else."
  }
}

variable "name" {
  description = "Prefix of the resource names."
  type        = string
  default     = "spotpool"
}

variable "pool" {
  description = "The spotpool:pool tag value (SPOTPOOL_POOL)."
  type        = string
  default     = "spotpool"
}

variable "container_image" {
  description = "The user container image."
  type        = string
  default     = "ghcr.io/openclaw/openclaw:latest"
}

variable "container_port" {
  description = "Port the user container listens on."
  type        = number
  default     = 18789
}

variable "instance_types" {
  description = "Instance types of the pool, most preferred first."
  type        = list(string)
  default     = ["t3.small"]
}

variable "certificate_arn" {
  description = "ACM certificate for HTTPS on every shard (unless shard_certificate_arns); null serves users on HTTP:80."
  type        = string
  default     = null
}

variable "public_hostname" {
  description = "Path routing: DNS name users reach shard 0's ALB by; null uses the ALB's own."
  type        = string
  default     = null
}

# --- Shards (docs/DEPLOY.md, "Shards") ---------------------------------------

variable "shard_count" {
  description = "How many shards (one ALB each, at most shard_capacity users each): 1 for up to ~90 users, 12 for 1,000, 112 for 10,000."
  type        = number
  default     = 1
}

variable "shard_capacity" {
  description = "The most users the daemon places on one shard (at most 100)."
  type        = number
  default     = 90
}

variable "routing" {
  description = "host (the default here: users get https://<route>.shard-<i>.<users_domain>/; needs users_domain, a wildcard DNS record and a wildcard certificate per shard) or path (https://<ALB or public_hostname>/<route>/)."
  type        = string
  default     = "host"
}

variable "users_domain" {
  description = "Host routing: the domain of the users' hosts, e.g. users.example.com; shard i serves <route>.shard-<i>.<users_domain>."
  type        = string
  default     = null
}

variable "shard_certificate_arns" {
  description = "One ACM certificate per shard (*.shard-<i>.<users_domain>), in shard order; empty: certificate_arn for every shard."
  type        = list(string)
  default     = []
}

variable "route53_zone_id" {
  description = "Opt-in: the Route 53 zone of users_domain, where the module creates each shard's wildcard record. Null: you create them (output shard_dns_records)."
  type        = string
  default     = null
}

variable "create_shard_certificates" {
  description = "Opt-in, with route53_zone_id: create and DNS-validate one wildcard certificate per shard."
  type        = bool
  default     = false
}

variable "workspace_size_gib" {
  description = "Size in GiB of each user's workspace volume (encrypted gp3)."
  type        = number
  default     = 8
}

variable "workspace_kms_key_arn" {
  description = "Customer-managed KMS key ARN for the workspaces; null uses the account's aws/ebs key."
  type        = string
  default     = null
}

variable "idle_sleep_after" {
  description = "Sleep a user after this long without requests, e.g. 2h; \"off\" never does."
  type        = string
  default     = "off"
}

variable "daemon_principal_arns" {
  description = "Principals that may assume the daemon role (created only when set)."
  type        = list(string)
  default     = []
}

variable "daemon_trusted_services" {
  description = "AWS services that may assume the daemon role, e.g. [\"ec2.amazonaws.com\"] when the daemon runs on an EC2 host (an instance profile is then created too)."
  type        = list(string)
  default     = []
}

variable "container_preset" {
  description = "openclaw (the OpenClaw gateway) or generic (any other image)."
  type        = string
  default     = "openclaw"
}

variable "on_demand_fallback" {
  description = "Launch on-demand when spot has no capacity (the module's on_demand_fallback)."
  type        = bool
  default     = false
}

variable "cpu_credits" {
  description = "CPU credits of T instance types: standard or unlimited."
  type        = string
  default     = "standard"
}

variable "daemon_extra_env" {
  description = "Extra KEY=value settings for the daemon_env output (no tokens)."
  type        = map(string)
  default     = {}
}

# --- Account prerequisites ---------------------------------------------------

variable "create_spot_service_linked_role" {
  description = "Create the account's EC2 Spot service-linked role (AWSServiceRoleForEC2Spot). False: it must exist already, and the plan says so when it does not."
  type        = bool
  default     = false
}

variable "create_kms_key" {
  description = "Create a customer-managed KMS key for the root volumes and workspaces (those whose key variable is null), with the key policy of the kms_key_policy_json output."
  type        = bool
  default     = false
}

variable "root_volume_kms_key_id" {
  description = "Customer-managed KMS key ARN for the pool instances' root volumes (and the daemon host's); null: the created key, else the account's default EBS key."
  type        = string
  default     = null
}

# --- The daemon's host (daemon-host.tf) --------------------------------------

variable "create_daemon_host" {
  description = "Create an EC2 host for the daemon: it runs as the module's daemon role, takes the binary from daemon_binary_s3_uri and its settings, tokens and TLS files from Secrets Manager, and serves the API on daemon_api_port to the allowed groups and ranges only."
  type        = bool
  default     = false
}

variable "daemon_binary_s3_uri" {
  description = "s3://bucket/key of the spotpool binary (built for Amazon Linux 2023, x86_64 or arm64 as the host type). The host role may read exactly this object."
  type        = string
  default     = null

  validation {
    condition     = var.daemon_binary_s3_uri == null || can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[A-Za-z0-9!_.*'()/-]+$", var.daemon_binary_s3_uri))
    error_message = "daemon_binary_s3_uri must look like s3://bucket/path/spotpool (letters, digits and ! _ . * ' ( ) / - in the key)."
  }
}

variable "daemon_binary_sha256" {
  description = "SHA-256 (hex) of the binary at daemon_binary_s3_uri; the host refuses to install anything else. Null: no check."
  type        = string
  default     = null

  validation {
    condition     = var.daemon_binary_sha256 == null || can(regex("^[0-9a-f]{64}$", var.daemon_binary_sha256))
    error_message = "daemon_binary_sha256 must be 64 lower-case hex digits (sha256sum's output)."
  }
}

variable "daemon_host_instance_type" {
  description = "Instance type of the daemon host (an x86_64 type with the default AMI parameter)."
  type        = string
  default     = "t3.small"
}

variable "daemon_host_ami_ssm_parameter" {
  description = "Public SSM parameter holding the daemon host's AMI (Amazon Linux 2023). Read when the host is created; a newer AMI later does not replace the host."
  type        = string
  default     = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
}

variable "daemon_host_subnet_id" {
  description = "Subnet of the daemon host; null: the ALBs' first subnet (the pool's first, unless network_mode = \"private\" or alb_subnet_ids puts the ALBs elsewhere). It needs outbound HTTPS to the AWS APIs (a public IP, a NAT gateway or VPC endpoints)."
  type        = string
  default     = null
}

variable "daemon_api_port" {
  description = "Port of the daemon's API on the host (SPOTPOOL_LISTEN=0.0.0.0:<port>)."
  type        = number
  default     = 7070

  validation {
    condition     = var.daemon_api_port >= 1024 && var.daemon_api_port <= 65535 && floor(var.daemon_api_port) == var.daemon_api_port
    error_message = "daemon_api_port must be a port number from 1024 to 65535 (the daemon runs unprivileged)."
  }
}

variable "daemon_api_allowed_security_group_ids" {
  description = "Security groups (e.g. the web backend's) that may reach the daemon's API port. Never the pool instances' or the ALB's group."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.daemon_api_allowed_security_group_ids : can(regex("^sg-[0-9a-f]+$", id))])
    error_message = "Every entry of daemon_api_allowed_security_group_ids must look like sg-0123abcd."
  }
}

variable "daemon_api_allowed_cidr_blocks" {
  description = "IPv4 ranges (e.g. the web backend's subnet) that may reach the daemon's API port. Keep them narrow: the API is the control plane."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for cidr in var.daemon_api_allowed_cidr_blocks : can(cidrhost(cidr, 0)) && cidr != "0.0.0.0/0"])
    error_message = "daemon_api_allowed_cidr_blocks must be IPv4 CIDRs, and not 0.0.0.0/0."
  }
}

variable "daemon_tls" {
  description = "Serve the API over HTTPS: the host writes the certificate chain and key from the <name>-daemon/tls secret (one PEM bundle, which you put there) and sets SPOTPOOL_TLS_CERT and SPOTPOOL_TLS_KEY."
  type        = bool
  default     = false
}

variable "daemon_units_dir" {
  description = "Folder holding spotpool.service and spotpool-failed.service for the daemon host; null: this repository's deploy/ (set it when this root lives elsewhere)."
  type        = string
  default     = null
}

variable "create_network" {
  description = "true (this root's default): create a VPC with public subnets. false: use vpc_id and subnet_ids."
  type        = bool
  default     = true
}

# --- Passed to the module as they are (null: the module's default) ------------

variable "vpc_id" {
  description = "The module's vpc_id (terraform/modules/spotpool/variables.tf, docs/DEPLOY.md); null: the module's default."
  type        = string
  default     = null
}

variable "ami_id" {
  description = "The module's ami_id (terraform/modules/spotpool/variables.tf, docs/DEPLOY.md); null: the module's default."
  type        = string
  default     = null
}

variable "alb_deletion_protection" {
  description = "The module's alb_deletion_protection (terraform/modules/spotpool/variables.tf, docs/DEPLOY.md); null: the module's default."
  type        = bool
  default     = null
}

variable "alb_ingress_cidrs" {
  description = "The module's alb_ingress_cidrs (terraform/modules/spotpool/variables.tf, docs/DEPLOY.md); null: the module's default."
  type        = list(string)
  default     = null
}

variable "ami_ssm_parameter" {
  description = "The module's ami_ssm_parameter (terraform/modules/spotpool/variables.tf, docs/DEPLOY.md); null: the module's default."
  type        = string
  default     = null
}

variable "create_ecr_repository" {
  description = "The module's create_ecr_repository (terraform/modules/spotpool/variables.tf, docs/DEPLOY.md); null: the module's default."
  type        = bool
  default     = null
}

variable "ecr_force_delete" {
  description = "The module's ecr_force_delete (terraform/modules/spotpool/variables.tf, docs/DEPLOY.md); null: the module's default."
  type        = bool
  default     = null
}

variable "ecr_pull_from_image" {
  description = "The module's ecr_pull_from_image (terraform/modules/spotpool/variables.tf, docs/DEPLOY.md); null: the module's default."
  type        = bool
  default     = null
}

variable "ecr_pull_repository_arns" {
  description = "The module's ecr_pull_repository_arns (terraform/modules/spotpool/variables.tf, docs/DEPLOY.md); null: the module's default."
  type        = list(string)
  default     = null
}

variable "health_check_path" {
  description = "The module's health_check_path (terraform/modules/spotpool/variables.tf, docs/DEPLOY.md); null: the module's default."
  type        = string
  default     = null
}

variable "interruption_max_receive_count" {
  description = "The module's interruption_max_receive_count (terraform/modules/spotpool/variables.tf, docs/DEPLOY.md); null: the module's default."
  type        = number
  default     = null
}

variable "interruption_message_retention_seconds" {
  description = "The module's interruption_message_retention_seconds (terraform/modules/spotpool/variables.tf, docs/DEPLOY.md); null: the module's default."
  type        = number
  default     = null
}

variable "public_subnet_count" {
  description = "The module's public_subnet_count (terraform/modules/spotpool/variables.tf, docs/DEPLOY.md); null: the module's default."
  type        = number
  default     = null
}

variable "root_volume_size" {
  description = "The module's root_volume_size (terraform/modules/spotpool/variables.tf, docs/DEPLOY.md); null: the module's default."
  type        = number
  default     = null
}

variable "secret_prefix" {
  description = "The module's secret_prefix (terraform/modules/spotpool/variables.tf, docs/DEPLOY.md); null: the module's default."
  type        = string
  default     = null
}

variable "subnet_ids" {
  description = "The module's subnet_ids (terraform/modules/spotpool/variables.tf, docs/DEPLOY.md); null: the module's default."
  type        = list(string)
  default     = null
}

variable "tags" {
  description = "The module's tags (terraform/modules/spotpool/variables.tf, docs/DEPLOY.md); null: the module's default."
  type        = map(string)
  default     = null
}

variable "vpc_cidr" {
  description = "The module's vpc_cidr (terraform/modules/spotpool/variables.tf, docs/DEPLOY.md); null: the module's default."
  type        = string
  default     = null
}

variable "network_mode" {
  description = "The module's network_mode (terraform/modules/spotpool/variables.tf, docs/DEPLOY.md); null: the module's default."
  type        = string
  default     = null
}

variable "alb_subnet_ids" {
  description = "The module's alb_subnet_ids (terraform/modules/spotpool/variables.tf, docs/DEPLOY.md); null: the module's default."
  type        = list(string)
  default     = null
}

variable "private_route_table_ids" {
  description = "The module's private_route_table_ids (terraform/modules/spotpool/variables.tf, docs/DEPLOY.md); null: the module's default."
  type        = list(string)
  default     = null
}

variable "interface_endpoint_services" {
  description = "The module's interface_endpoint_services (terraform/modules/spotpool/variables.tf, docs/DEPLOY.md); null: the module's default."
  type        = list(string)
  default     = null
}

variable "interface_endpoint_hourly_price" {
  description = "The module's interface_endpoint_hourly_price (terraform/modules/spotpool/variables.tf, docs/DEPLOY.md); null: the module's default."
  type        = number
  default     = null
}
