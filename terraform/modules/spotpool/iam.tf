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
# pool's tag, the secret prefix, the sp-* target groups, the shards' listeners
# or the interruption queue wherever AWS supports resource-level permissions
# for that call. The resource types and condition keys of each action are the
# ones the Service Authorization Reference lists for it (docs/DEPLOY.md,
# section 2). Managed policies (IAM limits one to 6,144 characters):
# <name>-daemon, <name>-daemon-workspaces and, for the users' rules on the
# shards' listeners, <name>-daemon-routing (one more, -routing-2, -3, ...,
# for each further shards_per_routing_policy shards); the daemon role gets all.
#
# Workspaces: the daemon creates, attaches, detaches, snapshots and deletes one
# encrypted gp3 volume per user. Every such volume and snapshot carries
# spotpool:pool, UserId and spotpool:workspace from its creation (tags in
# CreateVolume/CreateSnapshot), so each write below requires the pool's tag and,
# for volumes and snapshots, the spotpool:workspace tag: the daemon cannot touch
# an instance's root volume or anybody else's volume. The instance role gets
# nothing for EBS: instances never call EC2 for their workspace.

locals {
  arn_prefix_ec2 = "arn:${local.partition}:ec2:${local.region}:${local.account_id}"
  secret_arns    = "arn:${local.partition}:secretsmanager:${local.region}:${local.account_id}:secret:${var.secret_prefix}*"
  ec2_service    = "ec2.${local.dns_suffix}"

  # An image in ECR (<account>.dkr.ecr.<region>.amazonaws.com/<repository>[:tag][@digest]) is
  # pulled with the instance role: its repository's ARN, derived from the image. (The created
  # repository's image, container_image = null, is covered by the repository itself.)
  image_ecr = try(regex("^([0-9]{12})\\.dkr\\.ecr\\.([a-z0-9-]+)\\.amazonaws\\.com(?:\\.cn)?/([^:@]+)", coalesce(var.container_image, "-")), null)
  image_ecr_repository_arn = local.image_ecr == null ? null : (
    "arn:${local.partition}:ecr:${local.image_ecr[1]}:${local.image_ecr[0]}:repository/${local.image_ecr[2]}"
  )
  ecr_pull_from_image = var.ecr_pull_from_image && local.image_ecr != null
  ecr_pull_repository_arns = concat(
    aws_ecr_repository.this[*].arn,
    var.ecr_pull_repository_arns,
    local.ecr_pull_from_image ? [local.image_ecr_repository_arn] : [],
  )
  # Known at plan time, unlike the created repository's ARN.
  ecr_pull_granted = var.create_ecr_repository || length(var.ecr_pull_repository_arns) > 0 || local.ecr_pull_from_image


  # Every shard's listener (shards.tf), and its rules:
  # arn:...:listener/app/<alb>/<alb id>/<listener id> -> arn:...:listener-rule/app/<alb>/<alb id>/<listener id>/*
  shard_listener_rule_arns = [for arn in local.shard_listener_arns : "${replace(arn, ":listener/", ":listener-rule/")}/*"]

  # The shards whose listeners one routing policy covers. A shard costs its
  # listener's ARN once and its rules' ARN pattern three times, at most ~600
  # characters (a 24-character name, the longest region and partition): 9 of
  # them and the statements fit in one managed policy.
  shards_per_routing_policy = 9
  routing_policy_shards     = chunklist(local.shard_indexes, local.shards_per_routing_policy)
  target_group_arns         = "arn:${local.partition}:elasticloadbalancing:${local.region}:${local.account_id}:targetgroup/sp-*/*"

  create_daemon_role = length(var.daemon_principal_arns) > 0 || length(var.daemon_trusted_services) > 0

  # The tags the daemon puts on a workspace volume, and no others
  # (src/reconcile/workspace.rs workspace_tags); a relocation's snapshot also carries
  # the relocation's token (spotpool:relocation), by which a restart finds it.
  workspace_tag_keys = ["spotpool:pool", "UserId", "spotpool:workspace"]
  snapshot_tag_keys  = concat(local.workspace_tag_keys, ["spotpool:relocation"])

  # The customer-managed keys the daemon's EBS calls use: local.ebs_kms_key_arns
  # (account.tf). None with the default aws/ebs key, which needs no permission.

  # EBS calls KMS on the daemon's behalf from this endpoint (kms:ViaService).
  ec2_via_service = "ec2.${local.region}.${local.dns_suffix}"

  # IAM's size limit for a managed policy, whitespace not counted.
  managed_policy_max_chars = 6144
  # The most managed policies IAM attaches to one role, once the quota "Managed
  # policies per role" (default 10) is raised to its maximum.
  managed_policies_per_role_max = 20
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
  count = local.ecr_pull_granted ? 1 : 0

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
  count = local.ecr_pull_granted ? 1 : 0

  name   = "spotpool-ecr-pull"
  role   = aws_iam_role.instance.id
  policy = data.aws_iam_policy_document.instance_ecr[0].json
}

# --- The daemon ----------------------------------------------------------------

data "aws_iam_policy_document" "daemon" {
  # Observe: one paged DescribeInstances per pass. EC2's Describe* actions
  # support no resource-level permissions (the Service Authorization Reference
  # lists no resource type for them, only ec2:Region), so "*" in this region is
  # as narrow as AWS allows.
  statement {
    sid       = "Ec2Describe"
    actions   = ["ec2:DescribeInstances"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "ec2:Region"
      values   = [local.region]
    }
  }

  # Launch: the instance and its volume must carry this pool's tag, be spot, and
  # come from the pool's launch template (without it, any image, user data or
  # instance type would do).
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
    condition {
      test     = "ArnEquals"
      variable = "ec2:LaunchTemplate"
      values = concat(
        [aws_launch_template.pool["spot"].arn],
        [for id in var.tier_launch_template_ids : "${local.arn_prefix_ec2}:launch-template/${id}"],
      )
    }
  }

  # Root volumes are never tagged as workspaces, so the workspace statements of
  # daemon_workspaces (which require that tag) never reach them.
  statement {
    sid       = "Ec2RunTaggedVolumes"
    actions   = ["ec2:RunInstances"]
    resources = ["${local.arn_prefix_ec2}:volume/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/spotpool:pool"
      values   = [var.pool]
    }
    condition {
      test     = "Null"
      variable = "aws:RequestTag/spotpool:workspace"
      values   = ["true"]
    }
  }

  # ...from this launch template (or a tier's), into these subnets and this
  # security group.
  statement {
    sid     = "Ec2RunFromThisTemplate"
    actions = ["ec2:RunInstances"]
    resources = concat(
      [for id in var.tier_launch_template_ids : "${local.arn_prefix_ec2}:launch-template/${id}"],
      local.on_demand_template_arns,
      [
        "${local.arn_prefix_ec2}:launch-template/${aws_launch_template.pool["spot"].id}",
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

  # Whose SSM agents are online, so a readiness probe waits for its agent.
  # DescribeInstanceInformation supports no resource-level permissions.
  statement {
    sid       = "SsmAgentStatus"
    actions   = ["ssm:DescribeInstanceInformation"]
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

  # Only this pool's secrets (tagged at creation): pools of one account share
  # the default prefix.
  statement {
    sid = "SecretsManageUnderPrefix"
    actions = [
      "secretsmanager:PutSecretValue",
      "secretsmanager:DeleteSecret",
    ]
    resources = [local.secret_arns]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/spotpool:pool"
      values   = [var.pool]
    }
  }

  # The orphan sweep lists the pool's secrets by tag. ListSecrets has no
  # resource-level permissions; it returns names, tags and dates, never values.
  statement {
    sid       = "SecretsListForSweep"
    actions   = ["secretsmanager:ListSecrets"]
    resources = ["*"]
  }

  # Tags of this pool's secrets (binding a secret to its instance, and back).
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
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/spotpool:pool"
      values   = [var.pool]
    }
  }

  # CreateSecret's tags are authorised as TagResource on a secret that has no
  # pool tag yet: they must name this pool, and never retag another pool's.
  statement {
    sid       = "SecretsTagAtCreation"
    actions   = ["secretsmanager:TagResource"]
    resources = [local.secret_arns]

    condition {
      test     = "ForAllValues:StringEquals"
      variable = "aws:TagKeys"
      values   = ["spotpool:pool", "UserId", "InstanceArn"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/spotpool:pool"
      values   = [var.pool]
    }
    condition {
      test     = "Null"
      variable = "aws:ResourceTag/spotpool:pool"
      values   = ["true"]
    }
  }

  # Routing: one target group sp-<route> per user, and one rule on its shard's
  # listener (the rules' statements are daemon_routing's).
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

  # Target groups are created with the pool's tag and used only when they carry
  # it: the sp- name prefix alone would reach another pool's groups.
  statement {
    sid       = "ElbCreateTaggedTargetGroups"
    actions   = ["elasticloadbalancing:CreateTargetGroup"]
    resources = [local.target_group_arns]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/spotpool:pool"
      values   = [var.pool]
    }
  }

  statement {
    sid = "ElbPoolTargetGroups"
    actions = [
      "elasticloadbalancing:RegisterTargets",
      "elasticloadbalancing:DeregisterTargets",
      "elasticloadbalancing:DeleteTargetGroup",
    ]
    resources = [local.target_group_arns]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/spotpool:pool"
      values   = [var.pool]
    }
  }

  # Tags on CreateTargetGroup are authorised as AddTags, only at creation (a
  # rule's: daemon_routing).
  statement {
    sid       = "ElbTagAtCreation"
    actions   = ["elasticloadbalancing:AddTags"]
    resources = [local.target_group_arns]

    condition {
      test     = "StringEquals"
      variable = "elasticloadbalancing:CreateAction"
      values   = ["CreateTargetGroup"]
    }
  }

  # A pre-wired spare's target group (sp-warm-<instance id>, tagged for the
  # pool at creation) gets its user's UserId once the claim is ready, off the
  # claim path; no other key, and only on the pool's groups. (Its rule:
  # daemon_routing.)
  statement {
    sid       = "ElbTagClaimedTargetGroups"
    actions   = ["elasticloadbalancing:AddTags"]
    resources = [local.target_group_arns]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/spotpool:pool"
      values   = [var.pool]
    }
    condition {
      test     = "ForAllValues:StringEquals"
      variable = "aws:TagKeys"
      values   = ["UserId"]
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

# The rest of the daemon's calls, in a second managed policy: one policy holding
# them all would exceed IAM's 6,144-character limit for a managed policy.
# Users' workspace volumes (src/cloud/aws/ebs.rs), sleep (ModifyRule) and
# auto-sleep (GetMetricData), and on-demand fallback launches (the first
# policy has no room left for them).
data "aws_iam_policy_document" "daemon_workspaces" {
  # On-demand fallback (on_demand_fallback): an on-demand instance only from the
  # on-demand template (the daemon policy's spot statement never allows
  # on-demand). Ec2RunFromThisTemplate and Ec2RunTaggedVolumes there cover the
  # launch's other resources.
  dynamic "statement" {
    for_each = length(local.on_demand_template_arns) > 0 ? [local.on_demand_template_arns] : []
    content {
      sid       = "Ec2RunTaggedOnDemandInstances"
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
        values   = ["on-demand"]
      }
      condition {
        test     = "ArnEquals"
        variable = "ec2:LaunchTemplate"
        values   = statement.value
      }
    }
  }

  # DescribeVolumes (by id, and by the tag filters spotpool:pool and
  # spotpool:workspace), DescribeSnapshots (a relocation's snapshot) and
  # DescribeSubnets (the zones of the pool's subnets), DescribeInstanceTypes (the
  # vCPUs of the tiers' types, for the spot quota check), DescribeSpotPriceHistory
  # (the tiers' spot prices per type and zone, read at most hourly for the cost
  # model, issue 16). Like every EC2 Describe* action they support no
  # resource-level permissions (no resource type in the Service Authorization
  # Reference, only ec2:Region): "*" in this region.
  statement {
    sid = "Ec2DescribeWorkspaces"
    actions = [
      "ec2:DescribeInstanceTypes",
      "ec2:DescribeSnapshots",
      "ec2:DescribeSpotPriceHistory",
      "ec2:DescribeSubnets",
      "ec2:DescribeVolumes",
    ]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "ec2:Region"
      values   = [local.region]
    }
  }

  # CreateVolume: an encrypted gp3 volume in this region (the ARN), tagged for
  # the pool and as a workspace at creation, with no tag keys but the daemon's.
  # The volume resource of CreateVolume supports aws:RequestTag, aws:TagKeys,
  # ec2:Encrypted and ec2:VolumeType.
  statement {
    sid       = "Ec2CreateWorkspaceVolumes"
    actions   = ["ec2:CreateVolume"]
    resources = ["${local.arn_prefix_ec2}:volume/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/spotpool:pool"
      values   = [var.pool]
    }
    condition {
      test     = "Null"
      variable = "aws:RequestTag/spotpool:workspace"
      values   = ["false"]
    }
    condition {
      test     = "ForAllValues:StringEquals"
      variable = "aws:TagKeys"
      values   = local.workspace_tag_keys
    }
    condition {
      test     = "Bool"
      variable = "ec2:Encrypted"
      values   = ["true"]
    }
    condition {
      test     = "StringEquals"
      variable = "ec2:VolumeType"
      values   = ["gp3"]
    }
  }

  # CreateSnapshot creates a snapshot tagged for the pool and as a workspace,
  # with the daemon's snapshot tag keys only (snapshot resource: aws:RequestTag,
  # aws:TagKeys). Snapshot ARNs have no account field.
  statement {
    sid       = "Ec2CreateTaggedWorkspaceSnapshots"
    actions   = ["ec2:CreateSnapshot"]
    resources = ["arn:${local.partition}:ec2:${local.region}::snapshot/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/spotpool:pool"
      values   = [var.pool]
    }
    condition {
      test     = "Null"
      variable = "aws:RequestTag/spotpool:workspace"
      values   = ["false"]
    }
    condition {
      test     = "ForAllValues:StringEquals"
      variable = "aws:TagKeys"
      values   = local.snapshot_tag_keys
    }
  }

  # Tags in CreateVolume/CreateSnapshot (TagSpecifications) need CreateTags, but
  # only as part of those calls (ec2:CreateAction): the daemon can never retag
  # an existing volume or snapshot. (CreateVolume's own statement keeps a
  # volume's keys to workspace_tag_keys.)
  statement {
    sid     = "Ec2TagWorkspacesAtCreation"
    actions = ["ec2:CreateTags"]
    resources = [
      "${local.arn_prefix_ec2}:volume/*",
      "arn:${local.partition}:ec2:${local.region}::snapshot/*",
    ]

    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["CreateVolume", "CreateSnapshot"]
    }
    condition {
      test     = "ForAllValues:StringEquals"
      variable = "aws:TagKeys"
      values   = local.snapshot_tag_keys
    }
  }

  # Existing volumes: only the pool's workspaces (aws:ResourceTag), never an
  # instance's root volume or anybody else's volume. AttachVolume and
  # DetachVolume (the volume resource; the instance is the next statement),
  # CreateSnapshot (its source volume), DeleteVolume (a deleted user's
  # workspace, a relocation's leftover copy).
  statement {
    sid = "Ec2PoolWorkspaceVolumes"
    actions = [
      "ec2:AttachVolume",
      "ec2:CreateSnapshot",
      "ec2:DeleteVolume",
      "ec2:DetachVolume",
    ]
    resources = ["${local.arn_prefix_ec2}:volume/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/spotpool:pool"
      values   = [var.pool]
    }
    condition {
      test     = "Null"
      variable = "aws:ResourceTag/spotpool:workspace"
      values   = ["false"]
    }
  }

  # On the pool's instances: AttachVolume/DetachVolume are also authorised on
  # the instance (the daemon always names it), and ModifyInstanceAttribute
  # keeps a spare's blank workspace (RunInstances, /dev/sdg) past the instance
  # at its first claim (DeleteOnTermination off, once the next statement's tags
  # are on the volume). IAM cannot narrow ModifyInstanceAttribute to one
  # attribute, so this also lets the daemon change its pool instances' other
  # attributes (termination protection, shutdown behaviour, source/dest
  # check); the daemon already runs commands as root on these instances and
  # terminates them, so that widens nothing it can do to them.
  statement {
    sid = "Ec2VolumesOnPoolInstances"
    actions = [
      "ec2:AttachVolume",
      "ec2:DetachVolume",
      "ec2:ModifyInstanceAttribute",
    ]
    resources = ["${local.arn_prefix_ec2}:instance/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/spotpool:pool"
      values   = [var.pool]
    }
  }
  # A blank becomes a user's workspace: the workspace tags on a pool volume that
  # is not a workspace yet (the tag condition also matches root volumes, which
  # gives nothing: tags are all it allows).
  statement {
    sid       = "Ec2TagBlankWorkspaces"
    actions   = ["ec2:CreateTags"]
    resources = ["${local.arn_prefix_ec2}:volume/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/spotpool:pool"
      values   = [var.pool]
    }
    condition {
      test     = "Null"
      variable = "aws:ResourceTag/spotpool:workspace"
      values   = ["true"]
    }
    condition {
      test     = "ForAllValues:StringEquals"
      variable = "aws:TagKeys"
      values   = local.workspace_tag_keys
    }
  }

  # Existing snapshots: only the pool's workspace snapshots. CreateVolume from
  # a snapshot (a workspace moving to another zone) is authorised on the
  # snapshot too; DeleteSnapshot once the copy is in place.
  statement {
    sid = "Ec2PoolWorkspaceSnapshots"
    actions = [
      "ec2:CreateVolume",
      "ec2:DeleteSnapshot",
    ]
    resources = ["arn:${local.partition}:ec2:${local.region}::snapshot/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/spotpool:pool"
      values   = [var.pool]
    }
    condition {
      test     = "Null"
      variable = "aws:ResourceTag/spotpool:workspace"
      values   = ["false"]
    }
  }

  # A customer-managed key (root_volume_kms_key_id, workspace_kms_key_arn or the
  # key of create_kms_key; account.tf): EBS uses it with the caller's permissions, through EC2
  # only (kms:ViaService), and the grant it creates for the instance must be one
  # an AWS service asks for (kms:GrantIsForAWSResource). These are the actions
  # the EBS user guide lists under "Permissions for users". None with aws/ebs,
  # whose key policy already allows the account's principals through EC2.
  dynamic "statement" {
    for_each = local.uses_customer_kms_key ? [1] : []
    content {
      sid       = "KmsUseKeyForEbs"
      actions   = local.ebs_kms_use_actions
      resources = local.ebs_kms_key_arns

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = [local.ec2_via_service]
      }
    }
  }

  dynamic "statement" {
    for_each = local.uses_customer_kms_key ? [1] : []
    content {
      sid       = "KmsGrantsForEbsOnly"
      actions   = ["kms:CreateGrant"]
      resources = local.ebs_kms_key_arns

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

  # Auto-sleep (idle_sleep_after) reads AWS/ApplicationELB RequestCount per
  # target group. CloudWatch metrics have no ARN: the CloudWatch permissions
  # reference gives "*" as the resource of GetMetricData. It reads metric
  # values and writes nothing.
  statement {
    sid       = "CloudWatchRequestCounts"
    actions   = ["cloudwatch:GetMetricData"]
    resources = ["*"]
  }

  # The account quotas read at start-up and hourly (src/reconcile/quotas.rs).
  # GetServiceQuota has no resource type ("*"); reading ELB's quotas needs its
  # dependent action elasticloadbalancing:DescribeAccountLimits. Read-only.
  statement {
    sid = "ServiceQuotasRead"
    actions = [
      "elasticloadbalancing:DescribeAccountLimits",
      "servicequotas:GetServiceQuota",
    ]
    resources = ["*"]
  }

  # The container image pinned by digest (src/reconcile/image.rs): when
  # container_image is in ECR, the daemon reads its tag's digest once per image
  # (DescribeImages), on exactly that repository. Read-only.
  dynamic "statement" {
    for_each = local.image_ecr_repository_arn == null ? [] : [1]
    content {
      sid       = "EcrResolveImageDigest"
      actions   = ["ecr:DescribeImages"]
      resources = [local.image_ecr_repository_arn]
    }
  }
}

# The users' rules, on the shards' listeners and nothing else: one policy per
# shards_per_routing_policy shards (their ARNs would not fit in the others).
data "aws_iam_policy_document" "daemon_routing" {
  count = length(local.routing_policy_shards)

  # A user's rule, on its shard's listener.
  statement {
    sid       = "ElbRulesOnShardListeners${count.index == 0 ? "" : "Part${count.index + 1}"}"
    actions   = ["elasticloadbalancing:CreateRule"]
    resources = [for i in local.routing_policy_shards[count.index] : local.shard_listener_arns[i]]
  }

  statement {
    sid       = "ElbDeleteRulesOfShardListeners${count.index == 0 ? "" : "Part${count.index + 1}"}"
    actions   = ["elasticloadbalancing:DeleteRule"]
    resources = [for i in local.routing_policy_shards[count.index] : local.shard_listener_rule_arns[i]]
  }

  # Tags on CreateRule are authorised as AddTags on the new rule, only at creation.
  statement {
    sid       = "ElbTagRulesAtCreation${count.index == 0 ? "" : "Part${count.index + 1}"}"
    actions   = ["elasticloadbalancing:AddTags"]
    resources = [for i in local.routing_policy_shards[count.index] : local.shard_listener_rule_arns[i]]

    condition {
      test     = "StringEquals"
      variable = "elasticloadbalancing:CreateAction"
      values   = ["CreateRule"]
    }
  }

  # Sleep and wake: a user's rule switches between a fixed 503 response and
  # forwarding to its target group; a claim points a pre-wired spare's warm
  # rule at the user's route. ModifyRule's only resource is the rule
  # (listener-rule/app), which supports aws:ResourceTag: the shards' rules that
  # the daemon created (tagged for the pool), never a listener's default action.
  # Once the claim is ready, the claimed rule gets its user's UserId (AddTags),
  # and no other key. Both share one statement: the rules' ARNs are most of a
  # routing policy, and a fourth copy of them would not fit 9 shards into IAM's
  # 6,144 characters. ModifyRule carries no aws:TagKeys, and ForAllValues holds
  # on an absent key, so the key condition limits AddTags alone.
  statement {
    sid = "ElbModifyPoolRulesOfShardListeners${count.index == 0 ? "" : "Part${count.index + 1}"}"
    actions = [
      "elasticloadbalancing:AddTags",
      "elasticloadbalancing:ModifyRule",
    ]
    resources = [for i in local.routing_policy_shards[count.index] : local.shard_listener_rule_arns[i]]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/spotpool:pool"
      values   = [var.pool]
    }
    condition {
      test     = "ForAllValues:StringEquals"
      variable = "aws:TagKeys"
      values   = ["UserId"]
    }
  }
}

# The templates on-demand launches may come from: the module's (on_demand_fallback)
# and the tiers' own (tier_on_demand_launch_template_ids).
locals {
  on_demand_template_arns = concat(
    [for market, template in aws_launch_template.pool : template.arn if market != "spot"],
    [for id in var.tier_on_demand_launch_template_ids : "${local.arn_prefix_ec2}:launch-template/${id}"],
  )
}

# The daemon's managed policies, <name>-daemon, <name>-daemon-workspaces and
# <name>-daemon-routing[-<n>], by the suffix of their names. (The first keeps
# its original description: a new description would replace the policy.)
locals {
  daemon_policies = merge(
    {
      daemon = {
        description = "spotpool daemon (pool ${var.pool}): exactly the AWS calls it makes"
        json        = data.aws_iam_policy_document.daemon.json
      }
      daemon-workspaces = {
        description = "spotpool daemon (pool ${var.pool}): users' workspace volumes, sleep and auto-sleep"
        json        = data.aws_iam_policy_document.daemon_workspaces.json
      }
    },
    {
      for k, shards in local.routing_policy_shards : (k == 0 ? "daemon-routing" : "daemon-routing-${k + 1}") => {
        description = "spotpool daemon (pool ${var.pool}): users' rules on the listeners of shards ${shards[0]} to ${shards[length(shards) - 1]}"
        json        = data.aws_iam_policy_document.daemon_routing[k].json
      }
    },
  )
}

resource "aws_iam_policy" "daemon" {
  for_each = local.daemon_policies

  name        = "${var.name}-${each.key}"
  description = each.value.description
  policy      = each.value.json

  tags = var.tags

  lifecycle {
    precondition {
      condition     = length(replace(each.value.json, "/\\s/", "")) <= local.managed_policy_max_chars
      error_message = "The policy ${var.name}-${each.key} exceeds the ${local.managed_policy_max_chars} characters IAM allows in a managed policy (a very long name, pool or secret_prefix?)."
    }
    precondition {
      condition     = length(local.daemon_policies) <= local.managed_policies_per_role_max
      error_message = "The daemon needs ${length(local.daemon_policies)} managed policies (2, and one per ${local.shards_per_routing_policy} shards), but IAM attaches at most ${local.managed_policies_per_role_max} to a role: at most ${(local.managed_policies_per_role_max - 2) * local.shards_per_routing_policy} shards."
    }
  }
}

# The single daemon policy of earlier versions is the first of the two.
moved {
  from = aws_iam_policy.daemon
  to   = aws_iam_policy.daemon["daemon"]
}

# Every daemon policy as one document, for review and for the integration test
# that checks every call the daemon made against it (daemon_policy_json).
data "aws_iam_policy_document" "daemon_all" {
  source_policy_documents = concat(
    [
      data.aws_iam_policy_document.daemon.json,
      data.aws_iam_policy_document.daemon_workspaces.json,
    ],
    data.aws_iam_policy_document.daemon_routing[*].json,
  )
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
  for_each = { for key, policy in local.daemon_policies : key => policy.description if local.create_daemon_role }

  role       = aws_iam_role.daemon[0].name
  policy_arn = aws_iam_policy.daemon[each.key].arn
}

moved {
  from = aws_iam_role_policy_attachment.daemon[0]
  to   = aws_iam_role_policy_attachment.daemon["daemon"]
}

# When the daemon runs on an EC2 host.
resource "aws_iam_instance_profile" "daemon" {
  count = contains(var.daemon_trusted_services, local.ec2_service) ? 1 : 0

  name = "${var.name}-daemon"
  role = aws_iam_role.daemon[0].name

  tags = var.tags
}
