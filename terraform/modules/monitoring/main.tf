data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  alarm_actions = [aws_sns_topic.this.arn]

  search_error_metric_namespace = "callpipe/${var.name}"
}

################################################################################
# SNS topic for alarms (KMS-encrypted; CloudWatch and EventBridge may publish)
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
      {
        Sid       = "AlarmPublishers"
        Effect    = "Allow"
        Principal = { Service = ["cloudwatch.amazonaws.com", "events.amazonaws.com"] }
        Action    = ["kms:GenerateDataKey*", "kms:Decrypt"]
        Resource  = "*"
        Condition = {
          StringEquals = { "aws:SourceAccount" = local.account_id }
        }
      },
    ]
  })
}

resource "aws_kms_key" "this" {
  description             = "${var.name}: alarm notifications"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_in_days
  policy                  = local.kms_key_policy

  tags = var.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}-alarms"
  target_key_id = aws_kms_key.this.key_id
}

resource "aws_sns_topic" "this" {
  name              = "${var.name}-alarms"
  kms_master_key_id = aws_kms_key.this.arn

  tags = var.tags
}

data "aws_iam_policy_document" "topic" {
  statement {
    sid       = "CloudWatchAlarms"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.this.arn]

    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:cloudwatch:${local.region}:${local.account_id}:alarm:*"]
    }
  }

  statement {
    sid       = "EcsTaskFailureEvents"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.this.arn]

    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_cloudwatch_event_rule.task_failures.arn]
    }
  }
}

resource "aws_sns_topic_policy" "this" {
  arn    = aws_sns_topic.this.arn
  policy = data.aws_iam_policy_document.topic.json
}

resource "aws_sns_topic_subscription" "email" {
  count = var.alarm_email != "" ? 1 : 0

  topic_arn = aws_sns_topic.this.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

################################################################################
# Queues: a message in a dead-letter queue is a failure someone must look at; an old message
# in a stage queue means the stage is not keeping up (or is stuck). The backfill lane waits
# behind new uploads by design, so its threshold is long: reaching it means ingest never gets to
# the lane (or cannot read it) and its messages approach their retention.
################################################################################

resource "aws_cloudwatch_metric_alarm" "dlq_not_empty" {
  for_each = var.dlq_names

  alarm_name          = "${var.name}-${each.key}-dlq-not-empty"
  alarm_description   = "Messages in ${each.value}: they failed repeatedly. Inspect, fix, then redrive."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = each.value }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "oldest_message_age" {
  for_each = var.queue_names

  alarm_name          = "${var.name}-${each.key}-oldest-message-age"
  alarm_description   = "The oldest message in ${each.value} is older than ${lookup(var.oldest_message_age_thresholds, each.key, 3600)} s: ${each.key} is falling behind or stuck."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = each.value }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = lookup(var.oldest_message_age_thresholds, each.key, 3600)
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  tags = var.tags
}

################################################################################
# ECS: services running fewer tasks than desired for a while (crash loops, failed
# placements, image pull errors), and every task that stops with a failure.
################################################################################

resource "aws_cloudwatch_metric_alarm" "running_below_desired" {
  for_each = var.service_names

  alarm_name          = "${var.name}-${each.key}-running-below-desired"
  alarm_description   = "ECS service ${each.value} has run fewer tasks than desired for ${var.running_below_desired_periods * 5} minutes."
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  evaluation_periods  = var.running_below_desired_periods
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  metric_query {
    id          = "desired"
    return_data = false

    metric {
      namespace   = "ECS/ContainerInsights"
      metric_name = "DesiredTaskCount"
      period      = 300
      stat        = "Minimum"
      dimensions  = { ClusterName = var.cluster_name, ServiceName = each.value }
    }
  }

  metric_query {
    id          = "running"
    return_data = false

    metric {
      namespace   = "ECS/ContainerInsights"
      metric_name = "RunningTaskCount"
      period      = 300
      stat        = "Minimum"
      dimensions  = { ClusterName = var.cluster_name, ServiceName = each.value }
    }
  }

  metric_query {
    id          = "missing"
    expression  = "desired - running"
    label       = "Desired minus running tasks"
    return_data = true
  }

  tags = var.tags
}

resource "aws_cloudwatch_event_rule" "task_failures" {
  name        = "${var.name}-ecs-task-failures"
  description = "callpipe tasks that failed to start or exited with a non-zero code"

  event_pattern = jsonencode({
    source        = ["aws.ecs"]
    "detail-type" = ["ECS Task State Change"]
    detail = {
      clusterArn = [var.cluster_arn]
      lastStatus = ["STOPPED"]
      "$or" = [
        { stopCode = ["TaskFailedToStart"] },
        { containers = { exitCode = [{ "anything-but" = 0 }] } },
      ]
    }
  })

  tags = var.tags
}

resource "aws_cloudwatch_event_target" "task_failures" {
  rule      = aws_cloudwatch_event_rule.task_failures.name
  target_id = "sns"
  arn       = aws_sns_topic.this.arn

  input_transformer {
    input_paths = {
      group  = "$.detail.group"
      task   = "$.detail.taskArn"
      code   = "$.detail.stopCode"
      reason = "$.detail.stoppedReason"
    }
    input_template = "\"callpipe ${var.name}: task <task> of <group> stopped (<code>): <reason>\""
  }
}

################################################################################
# Search errors: the index stage and the query API log "search error" on every failed
# OpenSearch call; OpenSearch Serverless also counts failed requests per collection.
################################################################################

resource "aws_cloudwatch_log_metric_filter" "search_errors" {
  for_each = var.search_log_group_names

  name           = "${var.name}-${each.key}-search-errors"
  log_group_name = each.value
  pattern        = "\"search error\""

  metric_transformation {
    name          = "SearchErrors"
    namespace     = local.search_error_metric_namespace
    value         = "1"
    default_value = "0"
    unit          = "Count"
  }
}

resource "aws_cloudwatch_metric_alarm" "search_errors" {
  alarm_name          = "${var.name}-search-errors"
  alarm_description   = "More than ${var.search_error_threshold} \"search error\" log lines in 5 minutes (index stage and query API)."
  namespace           = local.search_error_metric_namespace
  metric_name         = "SearchErrors"
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.search_error_threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  tags = var.tags

  depends_on = [aws_cloudwatch_log_metric_filter.search_errors]
}

resource "aws_cloudwatch_metric_alarm" "aoss_errors" {
  for_each = toset(["SearchRequestErrors", "IngestionRequestErrors"])

  alarm_name          = "${var.name}-aoss-${lower(each.key)}"
  alarm_description   = "OpenSearch Serverless ${each.key} on ${var.collection_name} above ${var.search_error_threshold} in 5 minutes."
  namespace           = "AWS/AOSS"
  metric_name         = each.key
  dimensions          = { ClientId = local.account_id, CollectionId = var.collection_id, CollectionName = var.collection_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.search_error_threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  tags = var.tags
}

################################################################################
# Dashboard
################################################################################

locals {
  queue_metric_rows = {
    visible = [for k, q in var.queue_names : ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", q, { label = k }]]
    age     = [for k, q in var.queue_names : ["AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", q, { label = k }]]
    dlq     = [for k, q in var.dlq_names : ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", q, { label = "${k} DLQ" }]]
  }
  service_metric_rows = {
    running = [for k, s in var.service_names : ["ECS/ContainerInsights", "RunningTaskCount", "ClusterName", var.cluster_name, "ServiceName", s, { label = k }]]
    cpu     = [for k, s in var.service_names : ["AWS/ECS", "CPUUtilization", "ClusterName", var.cluster_name, "ServiceName", s, { label = k }]]
    memory  = [for k, s in var.service_names : ["AWS/ECS", "MemoryUtilization", "ClusterName", var.cluster_name, "ServiceName", s, { label = k }]]
  }

  dashboard_widgets = [
    { title = "Messages waiting per queue", metrics = local.queue_metric_rows.visible, stat = "Maximum" },
    { title = "Oldest message age (s)", metrics = local.queue_metric_rows.age, stat = "Maximum" },
    { title = "Dead-letter queues", metrics = local.queue_metric_rows.dlq, stat = "Maximum" },
    { title = "Running tasks per service", metrics = local.service_metric_rows.running, stat = "Average" },
    { title = "CPU utilization per service (%)", metrics = local.service_metric_rows.cpu, stat = "Average" },
    { title = "Memory utilization per service (%)", metrics = local.service_metric_rows.memory, stat = "Average" },
    { title = "Search errors (logs)", metrics = [[local.search_error_metric_namespace, "SearchErrors"]], stat = "Sum" },
  ]
}

resource "aws_cloudwatch_dashboard" "this" {
  dashboard_name = var.name
  dashboard_body = jsonencode({
    widgets = [
      for i, w in local.dashboard_widgets : {
        type   = "metric"
        x      = (i % 2) * 12
        y      = floor(i / 2) * 6
        width  = 12
        height = 6
        properties = {
          title   = w.title
          metrics = w.metrics
          stat    = w.stat
          period  = 60
          region  = local.region
          view    = "timeSeries"
          stacked = false
        }
      }
    ]
  })
}
