# The load balancers: one ALB per shard (shard_count). A shard is one ALB,
# reached through one listener; the daemon puts one rule and one target group
# per user on it, so both per-ALB quotas (100 target groups, hard; 100 rules by
# default) bound the users of one shard, and more users need more shards
# (docs/DEPLOY.md, "Shards").
#
# Each listener's default action is a fixed 404: only the daemon's per-user
# rules (a path /<route>/* or a host <route>.<shard domain>, one target group
# per user) route anything anywhere. With a certificate, users are served on
# HTTPS:443 and HTTP:80 only redirects; without one, the rules go on HTTP:80.
#
# Shard 0 keeps the names (and the Terraform addresses, through the moved
# blocks below) of the single ALB of earlier versions, so an upgrade with
# shard_count = 1 changes nothing. Every shard's ALB shares the one ALB
# security group (security.tf): the instances' group then needs one ingress
# rule for all of them, not one per ALB against its rules quota.

locals {
  shard_indexes = range(var.shard_count)

  # Shard 0's ALB is named var.name, as the single ALB was; the others <name>-s<i>.
  shard_alb_names = [for i in local.shard_indexes : i == 0 ? var.name : "${var.name}-s${i}"]

  # Each shard's certificate: its own from shard_certificate_arns, else the
  # created one (create_shard_certificates), else certificate_arn for all.
  shard_certificate_arns = [
    for i in local.shard_indexes : (
      length(var.shard_certificate_arns) > 0 ? try(var.shard_certificate_arns[i], null) :
      var.create_shard_certificates ? aws_acm_certificate_validation.shard[i].certificate_arn :
      var.certificate_arn
    )
  ]
  # Known at plan time: whether the shards are served on HTTPS.
  shards_tls = var.certificate_arn != null || length(var.shard_certificate_arns) > 0 || var.create_shard_certificates

  # The availability zones of subnet_ids (pool_subnets_by_zone, endpoints.tf)
  # that no subnet of alb_subnet_ids is in. An ALB routes only to targets in the
  # zones it is enabled in: a pool instance in another zone would stay an unused
  # target, and its users would never be served. Empty when the ALBs use the
  # created subnets or subnet_ids themselves (no alb_subnet_ids, no lookup).
  alb_missing_zones = length(data.aws_subnet.alb) == 0 ? [] : sort(setsubtract(
    keys(local.pool_subnets_by_zone),
    [for subnet in data.aws_subnet.alb : subnet.availability_zone],
  ))
}

resource "aws_lb" "this" {
  count = var.shard_count

  name               = local.shard_alb_names[count.index]
  internal           = false
  load_balancer_type = "application"
  security_groups    = [aws_security_group.alb.id]
  subnets            = local.alb_subnet_ids
  idle_timeout       = var.alb_idle_timeout

  drop_invalid_header_fields = true
  enable_deletion_protection = var.alb_deletion_protection

  tags = merge(var.tags, { Name = local.shard_alb_names[count.index] })

  lifecycle {
    precondition {
      condition     = var.create_network || (var.vpc_id != null && length(var.subnet_ids) >= 1 && length(local.alb_subnet_ids) >= 2)
      error_message = "With create_network = false, set vpc_id, subnet_ids and at least two subnets for the ALBs, in different availability zones: subnet_ids, or alb_subnet_ids."
    }
    precondition {
      condition     = !var.create_network || (var.vpc_id == null && length(var.subnet_ids) == 0 && length(var.alb_subnet_ids) == 0 && length(var.private_route_table_ids) == 0)
      error_message = "With create_network = true, leave vpc_id, subnet_ids, alb_subnet_ids and private_route_table_ids unset: the module creates them."
    }
    precondition {
      condition     = var.create_network || !local.private_network || length(var.alb_subnet_ids) >= 2
      error_message = "network_mode = \"private\" with your own subnets needs alb_subnet_ids: at least two public subnets (a route to an internet gateway), in the zones of subnet_ids, for the internet-facing ALBs; subnet_ids are the pool instances' private ones."
    }
    precondition {
      condition     = length(local.alb_missing_zones) == 0
      error_message = "alb_subnet_ids has no subnet in the availability zone(s) ${join(", ", local.alb_missing_zones)}, where subnet_ids puts pool instances. An ALB routes only to targets in its own zones: instances there would stay unused targets, and their users would never be served. Add a public subnet of each of these zones to alb_subnet_ids (or take those zones out of subnet_ids)."
    }
    precondition {
      condition     = var.routing == "path" || var.users_domain != null
      error_message = "routing = \"host\" needs users_domain: shard i serves its users as <route>.shard-<i>.<users_domain>. (Or set routing = \"path\".)"
    }
    precondition {
      condition     = var.route53_zone_id == null || var.routing == "host"
      error_message = "route53_zone_id creates the shards' wildcard records of host routing: set routing = \"host\" and users_domain, or leave it null."
    }
    precondition {
      condition     = length(var.shard_certificate_arns) == 0 || length(var.shard_certificate_arns) == var.shard_count
      error_message = "shard_certificate_arns must be empty or hold one certificate per shard (${var.shard_count}), in shard order."
    }
  }
}

# The single ALB and its listeners of earlier versions are shard 0's.
moved {
  from = aws_lb.this
  to   = aws_lb.this[0]
}

moved {
  from = aws_lb_listener.http
  to   = aws_lb_listener.http[0]
}

locals {
  not_found = {
    content_type = "text/plain"
    message_body = "no such route"
    status_code  = "404"
  }
}

resource "aws_lb_listener" "http" {
  count = var.shard_count

  load_balancer_arn = aws_lb.this[count.index].arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = local.shards_tls ? "redirect" : "fixed-response"

    dynamic "fixed_response" {
      for_each = local.shards_tls ? [] : [local.not_found]
      content {
        content_type = fixed_response.value.content_type
        message_body = fixed_response.value.message_body
        status_code  = fixed_response.value.status_code
      }
    }

    dynamic "redirect" {
      for_each = local.shards_tls ? [1] : []
      content {
        port        = "443"
        protocol    = "HTTPS"
        status_code = "HTTP_301"
      }
    }
  }

  tags = var.tags
}

resource "aws_lb_listener" "https" {
  count = local.shards_tls ? var.shard_count : 0

  load_balancer_arn = aws_lb.this[count.index].arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = var.ssl_policy
  certificate_arn   = local.shard_certificate_arns[count.index]

  default_action {
    type = "fixed-response"

    fixed_response {
      content_type = local.not_found.content_type
      message_body = local.not_found.message_body
      status_code  = local.not_found.status_code
    }
  }

  tags = var.tags
}
