# Offline plans of the module with a mocked AWS provider (`terraform test`, run by
# scripts/terraform-check.sh): the on-demand fallback's template and settings. The
# policy that lets the daemon use it is checked after the apply against moto
# (tests/it/terraform.rs).

mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  create_network  = true
  ami_id          = "ami-0123456789abcdef0"
  container_image = "ghcr.io/openclaw/openclaw:2026.9.6"
}

run "without_the_fallback_there_is_one_spot_template_and_no_on_demand_setting" {
  command = plan

  assert {
    condition     = keys(aws_launch_template.pool) == ["spot"]
    error_message = "templates: ${jsonencode(keys(aws_launch_template.pool))}"
  }
  assert {
    condition     = !contains(keys(local.daemon_env), "ON_DEMAND_LAUNCH_TEMPLATE_ID") && !contains(keys(local.daemon_env), "SPOTPOOL_ON_DEMAND_FALLBACK")
    error_message = "daemon_env names an on-demand template without the fallback"
  }
}

run "the_fallback_adds_a_template_without_market_options_and_tells_the_daemon" {
  command = plan

  variables {
    on_demand_fallback = true
  }

  assert {
    condition     = length(aws_launch_template.pool["spot"].instance_market_options) == 1 && aws_launch_template.pool["spot"].instance_market_options[0].market_type == "spot"
    error_message = "the spot template lost its market options"
  }
  assert {
    condition     = length(aws_launch_template.pool["on-demand"].instance_market_options) == 0
    error_message = "the on-demand template has market options"
  }
  assert {
    condition     = aws_launch_template.pool["on-demand"].user_data == aws_launch_template.pool["spot"].user_data && aws_launch_template.pool["on-demand"].image_id == aws_launch_template.pool["spot"].image_id
    error_message = "the on-demand template boots differently from the spot one"
  }
  assert {
    condition     = local.daemon_env["SPOTPOOL_ON_DEMAND_FALLBACK"] == "true"
    error_message = "daemon_env does not turn the fallback on"
  }
}

run "a_tiers_own_on_demand_template_is_the_only_other_one_on_demand_launches_may_use" {
  command = plan

  variables {
    tier_on_demand_launch_template_ids = ["lt-0abc123"]
  }

  assert {
    condition     = length(local.on_demand_template_arns) == 1 && endswith(local.on_demand_template_arns[0], ":launch-template/lt-0abc123")
    error_message = "on-demand templates: ${jsonencode(local.on_demand_template_arns)}"
  }
  assert {
    condition     = keys(aws_launch_template.pool) == ["spot"]
    error_message = "a tier's template made the module's on-demand one"
  }
}
