# IAM for the pool instances and for the daemon.
#
# Instances: SSM (the daemon drives them with Run Command), ECR pull, and
# GetSecretValue on exactly one secret: the one under secret_prefix whose
# InstanceArn tag names the calling instance. The daemon writes that tag when
# it assigns the instance to a user and removes it when the user leaves, so an
# instance can read its current user's secret and no other. The instance role
# may not tag secrets, so it cannot point another user's secret at itself.
#
# Daemon: exactly the API calls src/cloud/aws/ makes, each scoped to the
# pool's tag, the secret prefix, the sp-* target groups, this ALB's listener or
# the interruption queue wherever AWS supports resource-level permissions for
# that call.

locals {
  arn_prefix_ec2 = "arn:${local.partition}:ec2:${local.region}:${local.account_id}"
  secret_arns    = "arn:${local.partition}:secretsmanager:${local.region}:${local.account_id}:secret:${var.secret_prefix}*"
  ec2_service    = "ec2.${local.dns_suffix}"

  ecr_pull_repository_arns = concat(aws_ecr_repository.this[*].arn, var.ecr_pull_repository_arns)

  # arn:...:listener/app/<alb>/<alb id>/<listener id> -> arn:...:listener-rule/app/<alb>/<alb id>/<listener id>/*
  listener_rule_arns = "${replace(local.listener_arn, ":listener/", ":listener-rule/")}/*"
  target_group_arns  = "arn:${local.partition}:elasticloadbalancing:${local.region}:${local.account_id}:targetgroup/sp-*/*"

  create_daemon_role = length(var.daemon_principal_arns) > 0 || length(var.daemon_trusted_services) > 0
}

# --- Instances -----------------------------------------------------------------

data "aws_iam_policy_document" "instance_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = [local.ec2_service]
    }
  }
}

resource "aws_iam_role" "instance" {
  name                 = "${var.name}-instance"
  description          = "spotpool pool instances: SSM, ECR pull, their own user's secret"
  assume_role_policy   = data.aws_iam_policy_document.instance_trust.json
  max_session_duration = 3600

  tags = var.tags
}

resource "aws_iam_instance_profile" "instance" {
  name = "${var.name}-instance"
  role = aws_iam_role.instance.name

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "instance_ssm" {
  role       = aws_iam_role.instance.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

data "aws_iam_policy_document" "instance_secrets" {
  statement {
    sid       = "ReadOwnUsersSecret"
    effect    = "Allow"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [local.secret_arns]

    # $${...} is an IAM policy variable, not Terraform interpolation.
    condition {
      test     = "StringEquals"
      variable = "secretsmanager:ResourceTag/InstanceArn"
      values   = ["$${ec2:SourceInstanceARN}"]
    }
  }

  # Belt and braces: even if another policy attached to this role allowed more,
  # no other user's secret under the prefix can be read.
  statement {
    sid       = "NeverReadAnotherUsersSecret"
    effect    = "Deny"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [local.secret_arns]

    condition {
      test     = "StringNotEquals"
      variable = "secretsmanager:ResourceTag/InstanceArn"
      values   = ["$${ec2:SourceInstanceARN}"]
    }
  }

  # Without this, an instance allowed to tag could set InstanceArn on another
  # user's secret to itself and then read it.
  statement {
    sid       = "NeverTagSecrets"
    effect    = "Deny"
    actions   = ["secretsmanager:TagResource", "secretsmanager:UntagResource"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "instance_secrets" {
  name   = "spotpool-user-secret"
  role   = aws_iam_role.instance.id
  policy = data.aws_iam_policy_document.instance_secrets.json
}

data "aws_iam_policy_document" "instance_ecr" {
  count = length(local.ecr_pull_repository_arns) > 0 ? 1 : 0

  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid = "EcrPull"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:GetDownloadUrlForLayer",
    ]
    resources = local.ecr_pull_repository_arns
  }
}

resource "aws_iam_role_policy" "instance_ecr" {
  count = length(local.ecr_pull_repository_arns) > 0 ? 1 : 0

  name   = "spotpool-ecr-pull"
  role   = aws_iam_role.instance.id
  policy = data.aws_iam_policy_document.instance_ecr[0].json
}

# --- The daemon ----------------------------------------------------------------

data "aws_iam_policy_document" "daemon" {
  # Observe: one paged DescribeInstances per pass (no resource-level permissions exist).
  statement {
    sid       = "Ec2Describe"
    actions   = ["ec2:DescribeInstances"]
    resources = ["*"]
  }

  # Launch: the instance and its volume must carry this pool's tag and be spot.
  statement {
    sid       = "Ec2RunTaggedSpotInstances"
    actions   = ["ec2:RunInstances"]
    resources = ["${local.arn_prefix_ec2}:instance/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/spotpool:pool"
      values   = [var.pool]
    }
    condition {
      test     = "StringEquals"
      variable = "ec2:InstanceMarketType"
      values   = ["spot"]
    }
  }

  statement {
    sid       = "Ec2RunTaggedVolumes"
    actions   = ["ec2:RunInstances"]
    resources = ["${local.arn_prefix_ec2}:volume/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/spotpool:pool"
      values   = [var.pool]
    }
  }

  # ...from this launch template, into these subnets and this security group.
  statement {
    sid     = "Ec2RunFromThisTemplate"
    actions = ["ec2:RunInstances"]
    resources = concat(
      [
        "${local.arn_prefix_ec2}:launch-template/${aws_launch_template.pool.id}",
        "${local.arn_prefix_ec2}:security-group/${aws_security_group.instances.id}",
        "${local.arn_prefix_ec2}:network-interface/*",
        "${local.arn_prefix_ec2}:spot-instances-request/*",
        "arn:${local.partition}:ec2:${local.region}::image/*",
      ],
      [for id in local.subnet_ids : "${local.arn_prefix_ec2}:subnet/${id}"],
    )
  }

  # Tags at launch (TagSpecifications) need CreateTags, for RunInstances only.
  statement {
    sid     = "Ec2TagAtLaunch"
    actions = ["ec2:CreateTags"]
    resources = [
      "${local.arn_prefix_ec2}:instance/*",
      "${local.arn_prefix_ec2}:volume/*",
    ]

    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["RunInstances"]
    }
  }

  # Later the daemon writes Status and UserId on its own instances, and removes UserId.
  statement {
    sid       = "Ec2RetagPoolInstances"
    actions   = ["ec2:CreateTags", "ec2:DeleteTags"]
    resources = ["${local.arn_prefix_ec2}:instance/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/spotpool:pool"
      values   = [var.pool]
    }
    condition {
      test     = "ForAllValues:StringEquals"
      variable = "aws:TagKeys"
      values   = ["Status", "UserId"]
    }
    # DeleteTags without keys would delete every tag: require keys.
    condition {
      test     = "Null"
      variable = "aws:TagKeys"
      values   = ["false"]
    }
  }

  statement {
    sid       = "Ec2TerminatePoolInstances"
    actions   = ["ec2:TerminateInstances"]
    resources = ["${local.arn_prefix_ec2}:instance/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/spotpool:pool"
      values   = [var.pool]
    }
  }

  # RunInstances passes the instance profile (INSTANCE_PROFILE_ARN).
  statement {
    sid       = "PassTheInstanceRole"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.instance.arn]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = [local.ec2_service]
    }
  }

  # Run Command: the AWS-RunShellScript document, on this pool's instances only.
  # The instance's tag is checked under both keys AWS documents for
  # SendCommand (aws:ResourceTag and ssm:resourceTag); either statement grants.
  statement {
    sid       = "SsmRunShellScript"
    actions   = ["ssm:SendCommand"]
    resources = ["arn:${local.partition}:ssm:${local.region}::document/AWS-RunShellScript"]
  }

  statement {
    sid       = "SsmOnPoolInstances"
    actions   = ["ssm:SendCommand"]
    resources = ["${local.arn_prefix_ec2}:instance/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/spotpool:pool"
      values   = [var.pool]
    }
  }

  statement {
    sid       = "SsmOnPoolInstancesSsmKey"
    actions   = ["ssm:SendCommand"]
    resources = ["${local.arn_prefix_ec2}:instance/*"]

    condition {
      test     = "StringEquals"
      variable = "ssm:resourceTag/spotpool:pool"
      values   = [var.pool]
    }
  }

  statement {
    sid       = "SsmCommandResults"
    actions   = ["ssm:GetCommandInvocation"]
    resources = ["*"]
  }

  # Users' secrets: written by the API (the value goes nowhere else), tagged
  # with the pool, the user and the instance, deleted on release. The daemon
  # never reads a secret value back.
  statement {
    sid       = "SecretsCreateTagged"
    actions   = ["secretsmanager:CreateSecret"]
    resources = [local.secret_arns]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/spotpool:pool"
      values   = [var.pool]
    }
  }

  statement {
    sid = "SecretsManageUnderPrefix"
    actions = [
      "secretsmanager:PutSecretValue",
      "secretsmanager:DeleteSecret",
    ]
    resources = [local.secret_arns]
  }

  # The orphan sweep lists the pool's secrets by tag. ListSecrets has no
  # resource-level permissions; it returns names, tags and dates, never values.
  statement {
    sid       = "SecretsListForSweep"
    actions   = ["secretsmanager:ListSecrets"]
    resources = ["*"]
  }

  statement {
    sid = "SecretsTagUnderPrefix"
    actions = [
      "secretsmanager:TagResource",
      "secretsmanager:UntagResource",
    ]
    resources = [local.secret_arns]

    condition {
      test     = "ForAllValues:StringEquals"
      variable = "aws:TagKeys"
      values   = ["spotpool:pool", "UserId", "InstanceArn"]
    }
  }

  # Routing: one target group sp-<route> per user and one rule on this listener.
  statement {
    sid = "ElbDescribe"
    actions = [
      "elasticloadbalancing:DescribeTargetGroups",
      "elasticloadbalancing:DescribeRules",
      # The orphan sweep (POST /v1/admin/repair) finds the pool's target groups and rules by tag.
      "elasticloadbalancing:DescribeTags",
      # A move waits for the new instance to be healthy before the old one leaves.
      "elasticloadbalancing:DescribeTargetHealth",
    ]
    resources = ["*"]
  }

  statement {
    sid = "ElbTargetGroups"
    actions = [
      "elasticloadbalancing:CreateTargetGroup",
      "elasticloadbalancing:RegisterTargets",
      "elasticloadbalancing:DeregisterTargets",
      "elasticloadbalancing:DeleteTargetGroup",
    ]
    resources = [local.target_group_arns]
  }

  statement {
    sid       = "ElbRulesOnThisListener"
    actions   = ["elasticloadbalancing:CreateRule"]
    resources = [local.listener_arn]
  }

  statement {
    sid       = "ElbDeleteRulesOfThisListener"
    actions   = ["elasticloadbalancing:DeleteRule"]
    resources = [local.listener_rule_arns]
  }

  # Tags on CreateTargetGroup and CreateRule are authorised as AddTags, only at creation.
  statement {
    sid       = "ElbTagAtCreation"
    actions   = ["elasticloadbalancing:AddTags"]
    resources = [local.target_group_arns, local.listener_rule_arns]

    condition {
      test     = "StringEquals"
      variable = "elasticloadbalancing:CreateAction"
      values   = ["CreateTargetGroup", "CreateRule"]
    }
  }

  # Spot interruptions: long-poll the queue the EventBridge rules fill, and
  # delete each message once its event is stored (interruptions.tf). The
  # queue uses SSE-SQS, so no KMS permission is needed.
  statement {
    sid = "SqsInterruptionQueue"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
    ]
    resources = [aws_sqs_queue.interruptions.arn]
  }
}

resource "aws_iam_policy" "daemon" {
  name        = "${var.name}-daemon"
  description = "spotpool daemon (pool ${var.pool}): exactly the AWS calls it makes"
  policy      = data.aws_iam_policy_document.daemon.json

  tags = var.tags
}

data "aws_iam_policy_document" "daemon_trust" {
  count = local.create_daemon_role ? 1 : 0

  dynamic "statement" {
    for_each = length(var.daemon_principal_arns) > 0 ? [1] : []
    content {
      actions = ["sts:AssumeRole"]
      principals {
        type        = "AWS"
        identifiers = var.daemon_principal_arns
      }
    }
  }

  dynamic "statement" {
    for_each = length(var.daemon_trusted_services) > 0 ? [1] : []
    content {
      actions = ["sts:AssumeRole"]
      principals {
        type        = "Service"
        identifiers = var.daemon_trusted_services
      }
    }
  }
}

resource "aws_iam_role" "daemon" {
  count = local.create_daemon_role ? 1 : 0

  name               = "${var.name}-daemon"
  description        = "spotpool daemon (pool ${var.pool})"
  assume_role_policy = data.aws_iam_policy_document.daemon_trust[0].json

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "daemon" {
  count = local.create_daemon_role ? 1 : 0

  role       = aws_iam_role.daemon[0].name
  policy_arn = aws_iam_policy.daemon.arn
}

# When the daemon runs on an EC2 host.
resource "aws_iam_instance_profile" "daemon" {
  count = contains(var.daemon_trusted_services, local.ec2_service) ? 1 : 0

  name = "${var.name}-daemon"
  role = aws_iam_role.daemon[0].name

  tags = var.tags
}
