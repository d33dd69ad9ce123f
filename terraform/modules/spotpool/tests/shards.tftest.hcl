# Offline runs of the module with a mocked AWS provider (`terraform test`, run by
# scripts/terraform-check.sh): the shards of alb.tf and shards.tf, their
# [[shard]] tables, DNS names and the daemon's routing policies. (A mocked
# provider "applies" nothing real; the apply against moto, with two shards, is
# tests/it/terraform.rs.)

mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  create_network  = true
  ami_id          = "ami-0123456789abcdef0"
  container_image = "ghcr.io/openclaw/openclaw:2026.9.6"
}

run "one_path_routed_shard_is_the_single_alb_of_earlier_versions" {
  command = apply

  assert {
    condition     = length(aws_lb.this) == 1 && aws_lb.this[0].name == "spotpool" && length(aws_lb_listener.https) == 0
    error_message = "one shard must be the one ALB named after the module, on HTTP without a certificate"
  }
  assert {
    condition     = strcontains(output.daemon_env, "ALB_LISTENER_ARN=${aws_lb_listener.http[0].arn}\n") && strcontains(output.daemon_env, "PUBLIC_BASE_URL=http://")
    error_message = "a single path-routed shard must stay in daemon_env as ALB_LISTENER_ARN and PUBLIC_BASE_URL"
  }
  assert {
    condition     = !output.daemon_needs_shards_toml && output.listener_arn == output.shards[0].listener_arn
    error_message = "a single path-routed shard needs no TOML"
  }
  assert {
    condition     = jsonencode(keys(local.daemon_policies)) == jsonencode(["daemon", "daemon-routing", "daemon-workspaces"]) && jsonencode(local.routing_policy_shards) == "[[0]]"
    error_message = "one shard needs one routing policy: ${jsonencode(keys(local.daemon_policies))}"
  }
  assert {
    condition     = output.shards[0].routing == "path" && output.shards[0].base_url == "http://${aws_lb.this[0].dns_name}" && output.shards[0].domain == null
    error_message = "shard 0's path prefix is its ALB: ${jsonencode(output.shards[0])}"
  }
  assert {
    condition     = output.shard_dns_records == {}
    error_message = "path routing needs no wildcard records"
  }
}

run "host_routed_shards_get_one_alb_each_and_their_toml" {
  command = apply

  variables {
    shard_count     = 3
    routing         = "host"
    users_domain    = "users.example.com"
    certificate_arn = "arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555"
  }

  assert {
    condition     = [for lb in aws_lb.this : lb.name] == ["spotpool", "spotpool-s1", "spotpool-s2"]
    error_message = "the ALBs are not named per shard: ${jsonencode([for lb in aws_lb.this : lb.name])}"
  }
  assert {
    condition     = length(aws_lb_listener.https) == 3 && alltrue([for l in aws_lb_listener.https : l.certificate_arn == var.certificate_arn])
    error_message = "every shard needs its HTTPS listener with the certificate"
  }
  assert {
    condition     = alltrue([for lb in aws_lb.this : lb.security_groups == toset([aws_security_group.alb.id])])
    error_message = "every shard's ALB must be in the one ALB security group"
  }
  assert {
    condition     = output.shard_listener_arns == aws_lb_listener.https[*].arn
    error_message = "the users' rules must go on the HTTPS listeners"
  }
  assert {
    condition     = !strcontains(output.daemon_env, "ALB_LISTENER_ARN=") && !strcontains(output.daemon_env, "PUBLIC_BASE_URL=") && output.daemon_needs_shards_toml
    error_message = "with shards, daemon_env must leave the listener to the [[shard]] tables"
  }
  assert {
    condition = output.daemon_shards_toml == join("\n", concat(
      ["# spotpool's shards (rendered by Terraform: the daemon_shards_toml output)\n"],
      [for i in range(3) : "[[shard]]\nname = \"shard-${i}\"\nlistener_arn = \"${aws_lb_listener.https[i].arn}\"\nrouting = \"host\"\ndomain = \"shard-${i}.users.example.com\"\ncapacity = 90\n"],
    ))
    error_message = "unexpected TOML:\n${output.daemon_shards_toml}"
  }
  assert {
    condition     = jsonencode(output.shard_dns_records) == jsonencode({ for i in range(3) : "*.shard-${i}.users.example.com" => aws_lb.this[i].dns_name })
    error_message = "each shard's wildcard name must point at its ALB: ${jsonencode(output.shard_dns_records)}"
  }
  assert {
    condition     = length(aws_route53_record.shard_wildcard) == 0 && length(aws_acm_certificate.shard) == 0
    error_message = "no DNS record nor certificate without the opt-in"
  }
}

run "path_routed_shards_get_a_base_url_each" {
  command = apply

  variables {
    shard_count     = 2
    shard_capacity  = 3
    public_hostname = "agents.example.com"
  }

  assert {
    condition     = output.shards[0].base_url == "http://agents.example.com" && output.shards[1].base_url == "http://${aws_lb.this[1].dns_name}"
    error_message = "shard 0 keeps public_hostname, the others their ALB: ${jsonencode(output.shards)}"
  }
  assert {
    condition     = strcontains(output.daemon_shards_toml, "routing = \"path\"\nbase_url = \"http://agents.example.com\"\ncapacity = 3\n") && !strcontains(output.daemon_env, "ALB_LISTENER_ARN=")
    error_message = "unexpected TOML:\n${output.daemon_shards_toml}"
  }
}

run "the_routing_policies_cover_every_shards_listener_and_its_rules" {
  command = apply

  variables {
    shard_count = 20
  }

  assert {
    condition     = jsonencode(local.routing_policy_shards) == jsonencode([range(0, 9), range(9, 18), range(18, 20)])
    error_message = "20 shards need three routing policies of at most 9: ${jsonencode(local.routing_policy_shards)}"
  }
  assert {
    condition     = jsonencode(keys(local.daemon_policies)) == jsonencode(["daemon", "daemon-routing", "daemon-routing-2", "daemon-routing-3", "daemon-workspaces"]) && length(aws_iam_policy.daemon) == 5
    error_message = "unexpected policies: ${jsonencode(keys(local.daemon_policies))}"
  }
  assert {
    condition     = alltrue([for arn in local.shard_listener_rule_arns : arn == "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener-rule/app/spotpool/0123456789abcdef/fedcba9876543210/*"])
    error_message = "the rules' ARN pattern is not the listener's: ${local.shard_listener_rule_arns[0]}"
  }
}

run "host_routing_needs_a_domain" {
  command = plan

  variables {
    routing         = "host"
    certificate_arn = "arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555"
  }

  expect_failures = [aws_lb.this]
}

run "host_routing_without_a_certificate_is_warned_about" {
  command = plan

  variables {
    routing      = "host"
    users_domain = "users.example.com"
  }

  expect_failures = [check.shard_routing]
}

run "one_certificate_per_shard_or_none" {
  command = plan

  variables {
    shard_count            = 2
    shard_certificate_arns = ["arn:aws:acm:us-east-1:123456789012:certificate/1"]
  }

  expect_failures = [aws_lb.this]
}

run "the_zone_opt_in_creates_the_wildcard_records_and_certificates" {
  command = apply

  variables {
    shard_count               = 2
    routing                   = "host"
    users_domain              = "users.example.com"
    route53_zone_id           = "Z0123456789ABCDEFGHIJ"
    create_shard_certificates = true
  }

  override_resource {
    target = aws_acm_certificate.shard
    values = {
      arn = "arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555"
      domain_validation_options = [{
        domain_name           = "*.users.example.com"
        resource_record_name  = "_x.users.example.com."
        resource_record_type  = "CNAME"
        resource_record_value = "_y.acm-validations.aws."
      }]
    }
  }

  assert {
    condition     = [for r in aws_route53_record.shard_wildcard : r.name] == ["*.shard-0.users.example.com", "*.shard-1.users.example.com"]
    error_message = "no wildcard record per shard"
  }
  assert {
    condition     = [for c in aws_acm_certificate.shard : c.domain_name] == ["*.shard-0.users.example.com", "*.shard-1.users.example.com"]
    error_message = "no wildcard certificate per shard"
  }
  assert {
    condition     = length(aws_lb_listener.https) == 2 && aws_lb_listener.https[1].certificate_arn == aws_acm_certificate_validation.shard[1].certificate_arn
    error_message = "a shard's listener must use its own validated certificate"
  }
}

run "the_zone_serves_host_routing_only" {
  command = plan

  variables {
    route53_zone_id = "Z0123456789ABCDEFGHIJ"
  }

  expect_failures = [aws_lb.this]
}

run "more_routing_policies_than_a_role_takes_are_refused" {
  command = plan

  variables {
    shard_count = 163
  }

  expect_failures = [aws_iam_policy.daemon]
}
