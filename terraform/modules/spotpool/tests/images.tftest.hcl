# Offline plans of the module with a mocked AWS provider (`terraform test`, run by
# scripts/terraform-check.sh): what is decided at plan time about images and
# instances. The apply against moto is tests/it/terraform.rs.

mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  create_network  = true
  ami_id          = "ami-0123456789abcdef0"
  container_image = "ghcr.io/openclaw/openclaw:2026.9.6"
}

run "a_public_image_needs_no_ecr_permission_and_t3_credits_are_standard" {
  command = plan

  assert {
    condition     = length(aws_iam_role_policy.instance_ecr) == 0
    error_message = "a public image got an ECR pull policy"
  }
  assert {
    condition     = aws_launch_template.pool["spot"].credit_specification[0].cpu_credits == "standard"
    error_message = "t3 instances must default to standard CPU credits"
  }
}

run "an_ecr_image_gets_a_pull_permission_for_its_repository" {
  command = plan

  variables {
    container_image = "210987654321.dkr.ecr.eu-west-1.amazonaws.com/team/gateway:1.2@sha256:0123"
  }

  assert {
    condition     = length(aws_iam_role_policy.instance_ecr) == 1
    error_message = "an ECR image got no pull policy"
  }
  assert {
    condition     = local.ecr_pull_repository_arns == ["arn:aws:ecr:eu-west-1:210987654321:repository/team/gateway"]
    error_message = "the pull permission is not for the image's repository: ${jsonencode(local.ecr_pull_repository_arns)}"
  }
}

run "an_ecr_image_without_a_pull_permission_is_refused" {
  command = plan

  variables {
    container_image     = "210987654321.dkr.ecr.eu-west-1.amazonaws.com/team/gateway:1.2"
    ecr_pull_from_image = false
  }

  expect_failures = [aws_launch_template.pool]
}

run "other_instance_families_get_no_credit_specification" {
  command = plan

  variables {
    instance_types = ["m7i.large", "t3.small"]
  }

  assert {
    condition     = length(aws_launch_template.pool["spot"].credit_specification) == 0
    error_message = "a credit specification for a non-burstable type"
  }
}
