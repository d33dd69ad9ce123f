# Spot interruptions: three EventBridge rules deliver the EC2 events the daemon
# acts on into one SQS queue, which the daemon long-polls
# (SPOTPOOL_INTERRUPTION_QUEUE_URL):
#
#   - EC2 Spot Instance Interruption Warning: two minutes before EC2 takes an
#     instance back;
#   - EC2 Instance Rebalance Recommendation: an instance at elevated risk;
#   - EC2 Instance State-change Notification, for stopping, shutting-down and
#     terminated only: an instance on its way out, warned or not.
#
# EventBridge cannot match on tags, so the rules see every instance of the
# account and region; the daemon ignores the ones that are not its pool's.
#
# The daemon stores each event (keyed by its EventBridge id, so a redelivered
# duplicate counts once) before it deletes the message. A message it could not
# store comes back after the visibility timeout, and after
# interruption_max_receive_count receives it moves to the dead-letter queue for
# a post-mortem. The queues use SQS-managed encryption (SSE-SQS): EventBridge
# can write to them without a KMS key policy, and the daemon needs no KMS grant.

locals {
  interruption_rules = {
    spot-interruption = {
      description = "spotpool ${var.pool}: EC2 Spot Instance Interruption Warning to the interruption queue"
      pattern = {
        source      = ["aws.ec2"]
        detail-type = ["EC2 Spot Instance Interruption Warning"]
      }
    }
    rebalance = {
      description = "spotpool ${var.pool}: EC2 Instance Rebalance Recommendation to the interruption queue"
      pattern = {
        source      = ["aws.ec2"]
        detail-type = ["EC2 Instance Rebalance Recommendation"]
      }
    }
    state-change = {
      description = "spotpool ${var.pool}: instances stopping, shutting down or terminated, to the interruption queue"
      pattern = {
        source      = ["aws.ec2"]
        detail-type = ["EC2 Instance State-change Notification"]
        detail = {
          state = ["stopping", "shutting-down", "terminated"]
        }
      }
    }
  }
}

resource "aws_sqs_queue" "interruptions_dead_letter" {
  name                      = "${var.name}-interruptions-dlq"
  message_retention_seconds = 1209600 # 14 days, the most SQS keeps: time for a post-mortem
  sqs_managed_sse_enabled   = true

  tags = var.tags
}

resource "aws_sqs_queue" "interruptions" {
  name = "${var.name}-interruptions"

  # An event older than this is moot: the instance is long gone, and the
  # daemon's next DescribeInstances has noticed. Hours, so that a daemon
  # restart or upgrade loses nothing.
  message_retention_seconds = var.interruption_message_retention_seconds
  # Handling a message is one database write. Short, because a crashed
  # daemon's received-but-undeleted messages stay hidden this long, and a
  # duplicate delivery costs nothing.
  visibility_timeout_seconds = 30
  # Long polling by default too (the daemon asks for 20 s on every receive).
  receive_wait_time_seconds = 20
  sqs_managed_sse_enabled   = true

  tags = var.tags

  # aws_sqs_queue_redrive_policy below owns the redrive policy. (Set here, an
  # emulator that returns the JSON re-spaced makes every plan show a change.)
  lifecycle {
    ignore_changes = [redrive_policy]
  }
}

resource "aws_sqs_queue_redrive_policy" "interruptions" {
  queue_url = aws_sqs_queue.interruptions.id
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.interruptions_dead_letter.arn
    maxReceiveCount     = var.interruption_max_receive_count
  })
}

resource "aws_cloudwatch_event_rule" "interruptions" {
  for_each = local.interruption_rules

  name          = "${var.name}-${each.key}"
  description   = each.value.description
  event_pattern = jsonencode(each.value.pattern)

  tags = var.tags
}

resource "aws_cloudwatch_event_target" "interruptions" {
  for_each = aws_cloudwatch_event_rule.interruptions

  rule      = each.value.name
  target_id = "spotpool-interruption-queue"
  arn       = aws_sqs_queue.interruptions.arn
}

# Only EventBridge may send to the queue, and only on behalf of these rules.
data "aws_iam_policy_document" "interruptions_queue" {
  statement {
    sid       = "EventBridgeRulesOnly"
    effect    = "Allow"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.interruptions.arn]

    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [for rule in aws_cloudwatch_event_rule.interruptions : rule.arn]
    }
  }
}

resource "aws_sqs_queue_policy" "interruptions" {
  queue_url = aws_sqs_queue.interruptions.id
  policy    = data.aws_iam_policy_document.interruptions_queue.json

  # Both resources call SetQueueAttributes. AWS changes only the attributes
  # named, but moto (the local mode and the tests) also drops the policy when
  # another attribute is set: the policy goes last.
  depends_on = [aws_sqs_queue_redrive_policy.interruptions]
}
