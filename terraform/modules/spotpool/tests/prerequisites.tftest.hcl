# Offline plans of the module with a mocked AWS provider (`terraform test`, run by
# scripts/terraform-check.sh): the account prerequisites of account.tf, the EC2
# Spot service-linked role and the customer-managed EBS key. The apply against
# moto (tests/it/terraform.rs) creates both; only here is the role found rather
# than created, and missing.

mock_provider "aws" {
  source = "./tests/mocks"

  # Like moto and a fresh account: no EC2 Spot service-linked role.
  mock_data "aws_iam_roles" {
    defaults = { arns = [] }
  }
}

variables {
  create_network  = true
  ami_id          = "ami-0123456789abcdef0"
  container_image = "ghcr.io/openclaw/openclaw:2026.9.6"
}

run "an_account_without_the_spot_role_is_refused" {
  command = plan

  expect_failures = [data.aws_iam_roles.spot]
}

run "an_account_with_the_spot_role_uses_it_and_creates_none" {
  command = plan

  override_data {
    target = data.aws_iam_roles.spot[0]
    values = { arns = ["arn:aws:iam::123456789012:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot"] }
  }

  assert {
    condition     = length(aws_iam_service_linked_role.spot) == 0
    error_message = "the module created a service-linked role the account already has"
  }
  assert {
    condition     = local.spot_service_linked_role_arn == "arn:aws:iam::123456789012:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot"
    error_message = "the key policy would not name the account's Spot role: ${local.spot_service_linked_role_arn}"
  }
  # The default: no customer-managed key, so the daemon gets no KMS permission.
  assert {
    condition     = !local.uses_customer_kms_key && length(local.ebs_kms_key_arns) == 0 && length(aws_kms_key.ebs) == 0
    error_message = "KMS permissions or a key without any customer-managed key asked for"
  }
  assert {
    condition     = aws_launch_template.pool["spot"].block_device_mappings[0].ebs[0].kms_key_id == null
    error_message = "the root volume names a key although none was given"
  }
}

run "the_module_creates_the_spot_role_when_asked_and_looks_for_none" {
  command = plan

  variables {
    create_spot_service_linked_role = true
  }

  assert {
    condition     = length(aws_iam_service_linked_role.spot) == 1 && aws_iam_service_linked_role.spot[0].aws_service_name == "spot.amazonaws.com"
    error_message = "no service-linked role for spot.amazonaws.com"
  }
  assert {
    condition     = length(data.aws_iam_roles.spot) == 0
    error_message = "the lookup of the role still runs (and would refuse the plan)"
  }
}

run "a_root_volume_key_is_the_launch_templates_and_the_daemons" {
  command = plan

  variables {
    create_spot_service_linked_role = true
    root_volume_kms_key_id          = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
  }

  assert {
    condition     = aws_launch_template.pool["spot"].block_device_mappings[0].ebs[0].kms_key_id == var.root_volume_kms_key_id
    error_message = "the launch template does not encrypt the root volume with the given key"
  }
  assert {
    condition     = length(local.ebs_kms_key_arns) == 1 && local.ebs_kms_key_arns[0] == var.root_volume_kms_key_id
    error_message = "the daemon's KMS permissions are not scoped to exactly the root key: ${jsonencode(local.ebs_kms_key_arns)}"
  }
  assert {
    condition     = local.workspace_kms_key_arn == null
    error_message = "the workspaces got the root volume's key without asking"
  }
}

run "a_root_volume_key_must_be_an_arn" {
  command = plan

  variables {
    create_spot_service_linked_role = true
    root_volume_kms_key_id          = "alias/my-ebs-key"
  }

  expect_failures = [var.root_volume_kms_key_id]
}

run "a_created_key_serves_both_kinds_of_volume" {
  command = plan

  variables {
    create_spot_service_linked_role = true
    create_kms_key                  = true
  }

  assert {
    condition     = length(aws_kms_key.ebs) == 1 && aws_kms_key.ebs[0].enable_key_rotation && aws_kms_alias.ebs[0].name == "alias/spotpool-ebs"
    error_message = "no rotated key with its alias"
  }
  assert {
    condition     = local.uses_customer_kms_key && length(local.ebs_kms_key_arns) == 1
    error_message = "the daemon's KMS permissions are not for the created key alone"
  }
}
