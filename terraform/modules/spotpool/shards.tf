# The shards as the daemon sees them (the [[shard]] tables of its TOML file,
# daemon_shards_toml) and as the platform's DNS must see them: with host
# routing, shard i serves <route>.shard-<i>.<users_domain>, so one wildcard
# record *.shard-<i>.<users_domain> (pointing at the shard's ALB) and one
# wildcard certificate per shard serve every user of it; the daemon makes no
# DNS call per user. Both are the platform's by default (the shards output
# names them); route53_zone_id and create_shard_certificates opt in to
# creating them here.

locals {
  shard_names = [for i in local.shard_indexes : "shard-${i}"]

  # The listener that carries each shard's user rules: HTTPS:443 with a
  # certificate, else HTTP:80.
  shard_listener_arns = [
    for i in local.shard_indexes : local.shards_tls ? aws_lb_listener.https[i].arn : aws_lb_listener.http[i].arn
  ]

  public_scheme = local.shards_tls ? "https" : "http"

  shards = [
    for i in local.shard_indexes : {
      name          = local.shard_names[i]
      routing       = var.routing
      capacity      = var.shard_capacity
      listener_arn  = local.shard_listener_arns[i]
      alb_arn       = aws_lb.this[i].arn
      alb_name      = aws_lb.this[i].name
      alb_dns_name  = aws_lb.this[i].dns_name
      alb_zone_id   = aws_lb.this[i].zone_id
      certificate   = local.shards_tls ? local.shard_certificate_arns[i] : null
      domain        = var.routing == "host" ? "shard-${i}.${var.users_domain}" : null
      wildcard_name = var.routing == "host" ? "*.shard-${i}.${var.users_domain}" : null
      # Path routing: the prefix of the users' urls (shard 0: public_hostname when set).
      base_url = var.routing == "path" ? "${local.public_scheme}://${i == 0 ? coalesce(var.public_hostname, aws_lb.this[i].dns_name) : aws_lb.this[i].dns_name}" : null
    }
  ]

  # The daemon's [[shard]] tables. jsonencode gives TOML basic strings.
  daemon_shards_toml = join("\n", concat(
    ["# spotpool's shards (rendered by Terraform: the daemon_shards_toml output)\n"],
    [
      for shard in local.shards : join("", [
        "[[shard]]\n",
        "name = ${jsonencode(shard.name)}\n",
        "listener_arn = ${jsonencode(shard.listener_arn)}\n",
        "routing = ${jsonencode(shard.routing)}\n",
        shard.routing == "host" ? "domain = ${jsonencode(shard.domain)}\n" : "base_url = ${jsonencode(shard.base_url)}\n",
        "capacity = ${shard.capacity}\n",
      ])
    ],
  ))

  # The single path-routed listener of earlier versions: the daemon gets it as
  # ALB_LISTENER_ARN and PUBLIC_BASE_URL (daemon_env), and needs no TOML. Any
  # other layout is given as [[shard]] tables (daemon_shards_toml) instead.
  single_path_shard = var.shard_count == 1 && var.routing == "path"
}

# Opt-in: each shard's wildcard record, an alias of its ALB.
resource "aws_route53_record" "shard_wildcard" {
  count = var.route53_zone_id != null && var.routing == "host" ? var.shard_count : 0

  zone_id = var.route53_zone_id
  name    = local.shards[count.index].wildcard_name
  type    = "A"

  alias {
    name                   = aws_lb.this[count.index].dns_name
    zone_id                = aws_lb.this[count.index].zone_id
    evaluate_target_health = false
  }
}

# Opt-in: one wildcard certificate per shard, validated by DNS in the zone.
resource "aws_acm_certificate" "shard" {
  count = var.create_shard_certificates ? var.shard_count : 0

  domain_name       = "*.shard-${count.index}.${var.users_domain}"
  validation_method = "DNS"

  tags = merge(var.tags, { Name = "${var.name}-shard-${count.index}" })

  lifecycle {
    create_before_destroy = true

    precondition {
      condition     = var.routing == "host" && var.route53_zone_id != null && length(var.shard_certificate_arns) == 0
      error_message = "create_shard_certificates needs routing = \"host\", users_domain and route53_zone_id (the certificates are validated in that zone), and no shard_certificate_arns."
    }
  }
}

resource "aws_route53_record" "shard_certificate_validation" {
  count = var.create_shard_certificates ? var.shard_count : 0

  zone_id         = var.route53_zone_id
  name            = tolist(aws_acm_certificate.shard[count.index].domain_validation_options)[0].resource_record_name
  type            = tolist(aws_acm_certificate.shard[count.index].domain_validation_options)[0].resource_record_type
  records         = [tolist(aws_acm_certificate.shard[count.index].domain_validation_options)[0].resource_record_value]
  ttl             = 300
  allow_overwrite = true
}

resource "aws_acm_certificate_validation" "shard" {
  count = var.create_shard_certificates ? var.shard_count : 0

  certificate_arn         = aws_acm_certificate.shard[count.index].arn
  validation_record_fqdns = [aws_route53_record.shard_certificate_validation[count.index].fqdn]
}

# Host routing needs a domain; the zone only serves host routing.
check "shard_routing" {
  assert {
    condition     = var.routing != "host" || local.shards_tls
    error_message = "Host routing without a certificate serves users on HTTP:80, while the daemon gives them https:// urls: set certificate_arn, shard_certificate_arns or create_shard_certificates."
  }
}
