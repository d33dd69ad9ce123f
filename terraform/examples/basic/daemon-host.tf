# The daemon's own host, optional (create_daemon_host): one EC2 instance
# running the spotpool binary under deploy/spotpool.service (docs/DEPLOY.md,
# section 3, "The daemon host").
#
# - Its role is the module's daemon role (main.tf adds EC2 to its trusted
#   services), plus: read this deployment's three daemon secrets and the one
#   binary object, and the SSM agent's policy (Session Manager is the way in:
#   the host has no SSH).
# - Its security group admits the API port from daemon_api_allowed_security_group_ids
#   and daemon_api_allowed_cidr_blocks only (never from the pool instances or the
#   ALB) and lets out HTTPS only (the AWS APIs, S3).
# - IMDSv2 only with a hop limit of 1, an encrypted root volume.
# - The user data (daemon-host.sh.tftpl) holds no secret. The settings
#   (<name>-daemon/env: the module's daemon_env plus SPOTPOOL_LISTEN, the TLS
#   paths and, with shards, SPOTPOOL_CONFIG), the shards' [[shard]] tables
#   (<name>-daemon/config, the module's daemon_shards_toml, unless the one
#   path-routed shard is in the env as ALB_LISTENER_ARN), the API tokens
#   (<name>-daemon/tokens, which you fill) and the TLS bundle
#   (<name>-daemon/tls, which you fill) are Secrets Manager secrets that the
#   host reads before every start of the daemon. Terraform never sees the
#   tokens or the TLS key, so they are not in its state.
# - The host's root volume holds the daemon's database: a newer AMI or changed
#   user data never replaces the host (ignore_changes); upgrades follow
#   docs/DEPLOY.md section 4 through Session Manager.

data "aws_partition" "current" {}

data "aws_ssm_parameter" "daemon_host_ami" {
  count = var.create_daemon_host ? 1 : 0
  name  = var.daemon_host_ami_ssm_parameter
}

locals {
  daemon_host = var.create_daemon_host ? 1 : 0
  host_tags   = var.tags == null ? {} : var.tags
  # deploy/ of this repository; set daemon_units_dir when this root lives elsewhere.
  daemon_units_dir = coalesce(var.daemon_units_dir, "${path.module}/../../../deploy")

  # s3://bucket/key -> arn:aws:s3:::bucket/key, the one object the host may read.
  daemon_binary_arn = var.daemon_binary_s3_uri == null ? "" : "arn:${data.aws_partition.current.partition}:s3:::${trimprefix(var.daemon_binary_s3_uri, "s3://")}"

  # The credentials directory systemd gives the service (LoadCredential=).
  daemon_tls_env = var.daemon_tls ? join("", [
    "SPOTPOOL_TLS_CERT=/run/credentials/spotpool.service/tls-cert\n",
    "SPOTPOOL_TLS_KEY=/run/credentials/spotpool.service/tls-key\n",
  ]) : ""
  # The shards' [[shard]] tables, unless the one path-routed shard is in
  # daemon_env (ALB_LISTENER_ARN); a credential of the service, like the TLS files.
  daemon_config     = var.create_daemon_host && module.spotpool.daemon_needs_shards_toml ? 1 : 0
  daemon_config_env = local.daemon_config == 1 ? "SPOTPOOL_CONFIG=/run/credentials/spotpool.service/config\n" : ""
  daemon_host_env = join("", [
    module.spotpool.daemon_env,
    "SPOTPOOL_LISTEN=0.0.0.0:${var.daemon_api_port}\n",
    local.daemon_tls_env,
    local.daemon_config_env,
  ])

  daemon_secret_arns = concat(
    aws_secretsmanager_secret.daemon_env[*].arn,
    aws_secretsmanager_secret.daemon_config[*].arn,
    aws_secretsmanager_secret.daemon_tokens[*].arn,
    aws_secretsmanager_secret.daemon_tls[*].arn,
  )
}

# --- Secrets: settings (Terraform writes them), tokens and TLS (you do) --------

resource "aws_secretsmanager_secret" "daemon_env" {
  count = local.daemon_host

  name                    = "${var.name}-daemon/env"
  description             = "spotpool daemon settings (/etc/spotpool/env), rendered by Terraform; no tokens"
  recovery_window_in_days = 0

  tags = local.host_tags

  lifecycle {
    precondition {
      condition     = !startswith("${var.name}-daemon/", module.spotpool.secret_prefix)
      error_message = "The daemon's secrets (${var.name}-daemon/...) must not be under the users' secret_prefix (${module.spotpool.secret_prefix}): the daemon's orphan sweep manages that prefix."
    }
  }
}

resource "aws_secretsmanager_secret_version" "daemon_env" {
  count = local.daemon_host

  secret_id     = aws_secretsmanager_secret.daemon_env[0].id
  secret_string = local.daemon_host_env
}

resource "aws_secretsmanager_secret" "daemon_config" {
  count = local.daemon_config

  name                    = "${var.name}-daemon/config"
  description             = "spotpool daemon's TOML file (SPOTPOOL_CONFIG): the shards' [[shard]] tables, rendered by Terraform; no tokens"
  recovery_window_in_days = 0

  tags = local.host_tags
}

resource "aws_secretsmanager_secret_version" "daemon_config" {
  count = local.daemon_config

  secret_id     = aws_secretsmanager_secret.daemon_config[0].id
  secret_string = module.spotpool.daemon_shards_toml
}

resource "aws_secretsmanager_secret" "daemon_tokens" {
  count = local.daemon_host

  name                    = "${var.name}-daemon/tokens"
  description             = "spotpool API tokens (/etc/spotpool/tokens): SPOTPOOL_API_TOKEN=... and SPOTPOOL_ADMIN_TOKEN=... lines, put here by you, never by Terraform"
  recovery_window_in_days = 0

  tags = local.host_tags
}

resource "aws_secretsmanager_secret" "daemon_tls" {
  count = var.create_daemon_host && var.daemon_tls ? 1 : 0

  name                    = "${var.name}-daemon/tls"
  description             = "spotpool API TLS: a PEM bundle, the certificate chain then the private key, put here by you, never by Terraform"
  recovery_window_in_days = 0

  tags = local.host_tags
}

# --- Role ------------------------------------------------------------------------

data "aws_iam_policy_document" "daemon_host" {
  count = local.daemon_host

  statement {
    sid       = "ReadThisDaemonsSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.daemon_secret_arns
  }

  statement {
    sid       = "GetTheDaemonBinary"
    actions   = ["s3:GetObject"]
    resources = [local.daemon_binary_arn]
  }

  lifecycle {
    precondition {
      condition     = var.daemon_binary_s3_uri != null
      error_message = "create_daemon_host needs daemon_binary_s3_uri: the s3:// location of the spotpool binary the host installs."
    }
  }
}

resource "aws_iam_role_policy" "daemon_host" {
  count = local.daemon_host

  name   = "spotpool-daemon-host"
  role   = module.spotpool.daemon_role_name
  policy = data.aws_iam_policy_document.daemon_host[0].json
}

# Session Manager (no SSH) and the SSM agent.
resource "aws_iam_role_policy_attachment" "daemon_host_ssm" {
  count = local.daemon_host

  role       = module.spotpool.daemon_role_name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

# --- Security group ----------------------------------------------------------------

resource "aws_security_group" "daemon" {
  count = local.daemon_host

  name        = "${var.name}-daemon"
  description = "spotpool daemon host: its API from the allowed groups and ranges only, HTTPS out"
  vpc_id      = module.spotpool.vpc_id

  tags = merge(local.host_tags, { Name = "${var.name}-daemon" })

  lifecycle {
    precondition {
      condition     = !contains(var.daemon_api_allowed_security_group_ids, module.spotpool.instance_security_group_id) && !contains(var.daemon_api_allowed_security_group_ids, module.spotpool.alb_security_group_id)
      error_message = "daemon_api_allowed_security_group_ids must not contain the pool instances' or the ALB's security group: the users' containers must never reach the daemon's API."
    }
  }
}

# (No description on a rule that names a group: moto does not return it, and the plan would never settle.)
resource "aws_vpc_security_group_ingress_rule" "daemon_api_from_groups" {
  for_each = var.create_daemon_host ? toset(var.daemon_api_allowed_security_group_ids) : toset([])

  security_group_id            = aws_security_group.daemon[0].id
  ip_protocol                  = "tcp"
  from_port                    = var.daemon_api_port
  to_port                      = var.daemon_api_port
  referenced_security_group_id = each.value
}

resource "aws_vpc_security_group_ingress_rule" "daemon_api_from_cidrs" {
  for_each = var.create_daemon_host ? toset(var.daemon_api_allowed_cidr_blocks) : toset([])

  security_group_id = aws_security_group.daemon[0].id
  description       = "The daemon API"
  ip_protocol       = "tcp"
  from_port         = var.daemon_api_port
  to_port           = var.daemon_api_port
  cidr_ipv4         = each.value
}

# The AWS APIs and S3. (DNS to the VPC resolver, the instance metadata and the
# time service are link-local and not filtered by security groups.)
resource "aws_vpc_security_group_egress_rule" "daemon_https" {
  count = local.daemon_host

  security_group_id = aws_security_group.daemon[0].id
  description       = "AWS APIs and S3"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

# --- The host ------------------------------------------------------------------------

resource "aws_instance" "daemon" {
  count = local.daemon_host

  ami           = data.aws_ssm_parameter.daemon_host_ami[0].insecure_value
  instance_type = var.daemon_host_instance_type
  # A subnet of the ALBs: a public one, also with network_mode = "private", whose
  # pool subnets reach only the VPC endpoints (and the daemon calls more of AWS).
  subnet_id              = coalesce(var.daemon_host_subnet_id, module.spotpool.alb_subnet_ids[0])
  vpc_security_group_ids = [aws_security_group.daemon[0].id]
  iam_instance_profile   = module.spotpool.daemon_instance_profile_name

  user_data = templatefile("${path.module}/daemon-host.sh.tftpl", {
    region                  = module.spotpool.region
    binary_s3_uri           = coalesce(var.daemon_binary_s3_uri, "-")
    binary_sha256           = var.daemon_binary_sha256 == null ? "" : var.daemon_binary_sha256
    env_secret_arn          = aws_secretsmanager_secret.daemon_env[0].arn
    config_secret_arn       = one(aws_secretsmanager_secret.daemon_config[*].arn) == null ? "" : one(aws_secretsmanager_secret.daemon_config[*].arn)
    tokens_secret_arn       = aws_secretsmanager_secret.daemon_tokens[0].arn
    tls_secret_arn          = one(aws_secretsmanager_secret.daemon_tls[*].arn) == null ? "" : one(aws_secretsmanager_secret.daemon_tls[*].arn)
    spotpool_service        = trimspace(file("${local.daemon_units_dir}/spotpool.service"))
    spotpool_failed_service = trimspace(file("${local.daemon_units_dir}/spotpool-failed.service"))
  })

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = 20
    encrypted             = true
    kms_key_id            = module.spotpool.root_volume_kms_key_arn
    delete_on_termination = true
  }

  dynamic "credit_specification" {
    for_each = can(regex("^t[0-9][a-z]*\\.", var.daemon_host_instance_type)) ? [1] : []
    content {
      cpu_credits = "standard"
    }
  }

  tags        = merge(local.host_tags, { Name = "${var.name}-daemon" })
  volume_tags = merge(local.host_tags, { Name = "${var.name}-daemon" })

  # The settings must be in place before the first boot asks for them.
  depends_on = [
    aws_secretsmanager_secret_version.daemon_env,
    aws_secretsmanager_secret_version.daemon_config,
    aws_iam_role_policy.daemon_host,
    aws_iam_role_policy_attachment.daemon_host_ssm,
  ]

  lifecycle {
    # The root volume holds the daemon's database: never replace the host for a
    # newer AMI or new user data (upgrade it in place, docs/DEPLOY.md section 4).
    ignore_changes = [ami, user_data]
  }
}
