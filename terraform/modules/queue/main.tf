data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  # The initial lease of a received message per queue. Workers extend it with
  # ChangeMessageVisibility while a job runs, so this only bounds how long a crashed worker's
  # message stays invisible before another worker retries it. One queue per stage, plus the
  # backfill lane: a second queue of the ingest stage, which `callpipe backfill` sends to and
  # ingest workers receive from only when the ingest queue has nothing waiting.
  stages = {
    ingest     = var.ingest_visibility_timeout_seconds
    transcribe = var.transcribe_visibility_timeout_seconds
    index      = var.index_visibility_timeout_seconds
    backfill   = var.backfill_visibility_timeout_seconds
  }

  # The stage each queue feeds (the backfill lane feeds ingest), for the tags.
  queue_tags = {
    for k in keys(local.stages) : k => k == "backfill" ? { Stage = "ingest", Lane = "backfill" } : { Stage = k }
  }
}

################################################################################
# KMS key: SQS server-side encryption; S3 may use it to send to the ingest queue
################################################################################

# A key policy is a resource policy: "*" is this key. The account root statement delegates
# everything else to IAM policies, which name this key's ARN.
locals {
  kms_key_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministration"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      # S3 event notifications to an SSE-KMS queue need the key; only for the recordings bucket.
      {
        Sid       = "S3EventNotifications"
        Effect    = "Allow"
        Principal = { Service = "s3.amazonaws.com" }
        Action    = ["kms:GenerateDataKey", "kms:Decrypt"]
        Resource  = "*"
        Condition = {
          StringEquals = { "aws:SourceAccount" = local.account_id }
          ArnEquals    = { "aws:SourceArn" = var.recordings_bucket_arn }
        }
      },
    ]
  })
}

resource "aws_kms_key" "this" {
  description             = "${var.name}: SQS stage queues"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_in_days
  policy                  = local.kms_key_policy

  tags = var.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}-sqs"
  target_key_id = aws_kms_key.this.key_id
}

################################################################################
# One queue per stage and one for the backfill lane, each with its own dead-letter queue
################################################################################

resource "aws_sqs_queue" "dlq" {
  for_each = local.stages

  name                              = "${var.name}-${each.key}-dlq"
  message_retention_seconds         = var.dlq_message_retention_seconds
  kms_master_key_id                 = aws_kms_key.this.arn
  kms_data_key_reuse_period_seconds = var.kms_data_key_reuse_period_seconds

  tags = merge(var.tags, local.queue_tags[each.key])
}

resource "aws_sqs_queue" "this" {
  for_each = local.stages

  name                              = "${var.name}-${each.key}"
  visibility_timeout_seconds        = each.value
  message_retention_seconds         = var.message_retention_seconds
  receive_wait_time_seconds         = var.receive_wait_time_seconds
  kms_master_key_id                 = aws_kms_key.this.arn
  kms_data_key_reuse_period_seconds = var.kms_data_key_reuse_period_seconds

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq[each.key].arn
    maxReceiveCount     = var.max_receive_count
  })

  tags = merge(var.tags, local.queue_tags[each.key])
}

resource "aws_sqs_queue_redrive_allow_policy" "dlq" {
  for_each = local.stages

  queue_url = aws_sqs_queue.dlq[each.key].id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.this[each.key].arn]
  })
}

################################################################################
# Queue policies: TLS only; the ingest queue also accepts S3 notifications from the
# recordings bucket of this account, and from nothing else (the backfill lane never gets S3
# notifications). Same-account IAM principals (the workers, the backfill task) are allowed by
# their own identity policies.
################################################################################

data "aws_iam_policy_document" "queue" {
  for_each = local.stages

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [aws_sqs_queue.this[each.key].arn]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  dynamic "statement" {
    for_each = each.key == "ingest" ? [1] : []
    content {
      sid       = "RecordingsBucketNotifications"
      actions   = ["sqs:SendMessage"]
      resources = [aws_sqs_queue.this[each.key].arn]

      principals {
        type        = "Service"
        identifiers = ["s3.amazonaws.com"]
      }

      condition {
        test     = "ArnEquals"
        variable = "aws:SourceArn"
        values   = [var.recordings_bucket_arn]
      }

      condition {
        test     = "StringEquals"
        variable = "aws:SourceAccount"
        values   = [local.account_id]
      }
    }
  }
}

resource "aws_sqs_queue_policy" "this" {
  for_each = local.stages

  queue_url = aws_sqs_queue.this[each.key].id
  policy    = data.aws_iam_policy_document.queue[each.key].json
}
