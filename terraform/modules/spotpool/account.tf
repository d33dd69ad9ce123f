# Account prerequisites: the EC2 Spot service-linked role and, optionally, a
# customer-managed KMS key for the EBS volumes (docs/DEPLOY.md, section 1,
# "Account prerequisites").
#
# Spot service-linked role. EC2 launches spot instances through the role
# AWSServiceRoleForEC2Spot. A fresh account lacks it until someone requests a
# spot instance from the console, and the daemon may not create roles, so its
# first RunInstances would fail. create_spot_service_linked_role = true creates
# it; false (the default) requires it to exist and refuses to plan otherwise.
# Never "create it if it is missing": a count driven by a lookup would flip once
# the role exists, and the next plan would destroy it.
#
# KMS. With a customer-managed key for the root volumes (root_volume_kms_key_id)
# or the workspaces (workspace_kms_key_arn), or one created here
# (create_kms_key), three principals need the key: the account (so that IAM
# policies can grant it, as the default key policy does), the Spot
# service-linked role (EC2 launches spot instances with encrypted volumes as
# that role: https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/service-linked-roles-spot-instance-requests.html
# and "Required AWS KMS key policy for use with encrypted volumes",
# https://docs.aws.amazon.com/autoscaling/ec2/userguide/key-policy-requirements-EBS-encryption.html),
# and the daemon role (the same KMS actions as its IAM policy, through EC2
# only). kms_key_policy_json is that policy; the created key carries it.

locals {
  spot_service_name = "spot.${local.dns_suffix}"
  spot_role_name    = "AWSServiceRoleForEC2Spot"
}

resource "aws_iam_service_linked_role" "spot" {
  count = var.create_spot_service_linked_role ? 1 : 0

  aws_service_name = local.spot_service_name
  description      = "EC2 launches and manages spot instances (created by spotpool ${var.name})"
}

# An empty result rather than an error when the role is missing, so the
# postcondition can say what to do.
data "aws_iam_roles" "spot" {
  count = var.create_spot_service_linked_role ? 0 : 1

  name_regex  = "^${local.spot_role_name}$"
  path_prefix = "/aws-service-role/${local.spot_service_name}/"

  lifecycle {
    postcondition {
      condition     = length(self.arns) == 1
      error_message = "This account has no EC2 Spot service-linked role (${local.spot_role_name}), so every spot launch of the daemon would fail, and the daemon may not create it. Set create_spot_service_linked_role = true to create it with this module, or create it once for the account: aws iam create-service-linked-role --aws-service-name ${local.spot_service_name}"
    }
  }
}

resource "aws_kms_key" "ebs" {
  count = var.create_kms_key ? 1 : 0

  description              = "spotpool ${var.name}: root volumes of the pool instances and users' workspaces (pool ${var.pool})"
  key_usage                = "ENCRYPT_DECRYPT"
  customer_master_key_spec = "SYMMETRIC_DEFAULT"
  enable_key_rotation      = true
  deletion_window_in_days  = 30
  policy                   = data.aws_iam_policy_document.kms_key.json

  tags = var.tags
}

resource "aws_kms_alias" "ebs" {
  count = var.create_kms_key ? 1 : 0

  name          = "alias/${var.name}-ebs"
  target_key_id = aws_kms_key.ebs[0].key_id
}

locals {
  spot_service_linked_role_arn = (
    var.create_spot_service_linked_role ? aws_iam_service_linked_role.spot[0].arn : one(data.aws_iam_roles.spot[0].arns)
  )

  # The key of each kind of volume: the variable, else the created key, else
  # null (the account's default EBS key, normally aws/ebs).
  created_kms_key_arn   = var.create_kms_key ? aws_kms_key.ebs[0].arn : null
  root_kms_key_arn      = var.root_volume_kms_key_id != null ? var.root_volume_kms_key_id : local.created_kms_key_arn
  workspace_kms_key_arn = var.workspace_kms_key_arn != null ? var.workspace_kms_key_arn : local.created_kms_key_arn

  # Whether the daemon uses a customer-managed key, known at plan time even when
  # the created key's ARN is not.
  uses_customer_kms_key = var.create_kms_key || var.root_volume_kms_key_id != null || var.workspace_kms_key_arn != null
  # The daemon's KMS permissions are scoped to these keys (iam.tf).
  ebs_kms_key_arns = concat(
    var.create_kms_key ? [aws_kms_key.ebs[0].arn] : [],
    distinct(compact([var.root_volume_kms_key_id, var.workspace_kms_key_arn])),
  )

  # The KMS actions EBS needs from whoever creates or attaches an encrypted
  # volume ("Permissions for users" in the EBS user guide), granted to the
  # daemon through EC2 only.
  ebs_kms_use_actions = [
    "kms:Decrypt",
    "kms:DescribeKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
  ]
}

# The key policy a customer-managed EBS key of this pool must hold (output
# kms_key_policy_json; the created key's policy). "*" as the resource of a key
# policy means this key.
data "aws_iam_policy_document" "kms_key" {
  # The account administers the key, and IAM policies may grant its use: the
  # statement of the default key policy. Without it only the principals below
  # could ever use or change the key.
  statement {
    sid       = "AccountAdministersTheKeyAndIamPoliciesGrantIt"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  # EC2 launches spot instances, and creates their encrypted root volumes, as
  # the Spot service-linked role.
  statement {
    sid = "SpotLaunchesUseTheKey"
    actions = [
      "kms:Decrypt",
      "kms:DescribeKey",
      "kms:Encrypt",
      "kms:GenerateDataKey*",
      "kms:ReEncrypt*",
    ]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = [local.spot_service_linked_role_arn]
    }
  }

  statement {
    sid       = "SpotLaunchesAttachPersistentResources"
    actions   = ["kms:CreateGrant"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = [local.spot_service_linked_role_arn]
    }
    condition {
      test     = "Bool"
      variable = "kms:GrantIsForAWSResource"
      values   = ["true"]
    }
  }

  # The daemon role, when the module creates it: what its IAM policy grants,
  # named in the key policy too, so a key policy without the account statement
  # still works. (A role of your own gets the key through its IAM policies and
  # the account statement.)
  dynamic "statement" {
    for_each = local.create_daemon_role ? [1] : []
    content {
      sid       = "DaemonUsesTheKeyThroughEc2"
      actions   = local.ebs_kms_use_actions
      resources = ["*"]
      principals {
        type        = "AWS"
        identifiers = [aws_iam_role.daemon[0].arn]
      }
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = [local.ec2_via_service]
      }
    }
  }

  dynamic "statement" {
    for_each = local.create_daemon_role ? [1] : []
    content {
      sid       = "DaemonCreatesGrantsForEbsOnly"
      actions   = ["kms:CreateGrant"]
      resources = ["*"]
      principals {
        type        = "AWS"
        identifiers = [aws_iam_role.daemon[0].arn]
      }
      condition {
        test     = "Bool"
        variable = "kms:GrantIsForAWSResource"
        values   = ["true"]
      }
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = [local.ec2_via_service]
      }
    }
  }
}
