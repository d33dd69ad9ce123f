# The shared ALB. Its listener's default action is a fixed 404: only the
# daemon's per-user path rules (/<route>/*, one target group per user) route
# anything anywhere. With a certificate, users are served on HTTPS:443 and
# HTTP:80 only redirects; without one, the rules go on HTTP:80.

resource "aws_lb" "this" {
  name               = var.name
  internal           = false
  load_balancer_type = "application"
  security_groups    = [aws_security_group.alb.id]
  subnets            = local.subnet_ids
  idle_timeout       = var.alb_idle_timeout

  drop_invalid_header_fields = true
  enable_deletion_protection = var.alb_deletion_protection

  tags = merge(var.tags, { Name = var.name })

  lifecycle {
    precondition {
      condition     = var.create_network || (var.vpc_id != null && length(var.subnet_ids) >= 2)
      error_message = "With create_network = false, set vpc_id and at least two subnet_ids (in different availability zones)."
    }
    precondition {
      condition     = !var.create_network || (var.vpc_id == null && length(var.subnet_ids) == 0)
      error_message = "With create_network = true, leave vpc_id and subnet_ids unset: the module creates them."
    }
  }
}

locals {
  not_found = {
    content_type = "text/plain"
    message_body = "no such route"
    status_code  = "404"
  }
}

resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.this.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = var.certificate_arn == null ? "fixed-response" : "redirect"

    dynamic "fixed_response" {
      for_each = var.certificate_arn == null ? [local.not_found] : []
      content {
        content_type = fixed_response.value.content_type
        message_body = fixed_response.value.message_body
        status_code  = fixed_response.value.status_code
      }
    }

    dynamic "redirect" {
      for_each = var.certificate_arn == null ? [] : [1]
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
  count = var.certificate_arn == null ? 0 : 1

  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = var.ssl_policy
  certificate_arn   = var.certificate_arn

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
