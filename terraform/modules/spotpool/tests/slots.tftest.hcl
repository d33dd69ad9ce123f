# Offline plans of the module with a mocked AWS provider (`terraform test`, run by
# scripts/terraform-check.sh): the port range a shared tier's slots need.

mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  create_network  = true
  ami_id          = "ami-0123456789abcdef0"
  container_image = "ghcr.io/openclaw/openclaw:2026.9.6"
}

run "a_dedicated_pool_opens_the_container_port_only" {
  command = plan

  assert {
    condition     = aws_vpc_security_group_ingress_rule.instances_from_alb.from_port == var.container_port && aws_vpc_security_group_ingress_rule.instances_from_alb.to_port == var.container_port
    error_message = "the instances admit more than the container port"
  }
}

run "four_slots_open_four_ports_both_ways" {
  command = plan

  variables {
    max_slots_per_instance = 4
  }

  assert {
    condition     = aws_vpc_security_group_ingress_rule.instances_from_alb.to_port == var.container_port + 3 && aws_vpc_security_group_egress_rule.alb_to_instances.to_port == var.container_port + 3
    error_message = "the slot ports are not open from the load balancer"
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.instances_from_alb.from_port == var.container_port
    error_message = "the range does not start at the container port"
  }
}

run "more_slots_than_workspace_devices_are_refused" {
  command = plan

  variables {
    max_slots_per_instance = 21
  }

  expect_failures = [var.max_slots_per_instance]
}
