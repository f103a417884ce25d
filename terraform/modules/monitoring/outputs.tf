output "sns_topic_arn" {
  description = "ARN of the alarm topic (subscribe pagers or chat integrations to it)."
  value       = aws_sns_topic.this.arn
}

output "dashboard_name" {
  description = "Name of the CloudWatch dashboard."
  value       = aws_cloudwatch_dashboard.this.dashboard_name
}

output "alarm_names" {
  description = "Names of all alarms, by kind."
  value = {
    dlq_not_empty         = [for a in aws_cloudwatch_metric_alarm.dlq_not_empty : a.alarm_name]
    oldest_message_age    = [for a in aws_cloudwatch_metric_alarm.oldest_message_age : a.alarm_name]
    running_below_desired = [for a in aws_cloudwatch_metric_alarm.running_below_desired : a.alarm_name]
    search_errors         = concat([aws_cloudwatch_metric_alarm.search_errors.alarm_name], [for a in aws_cloudwatch_metric_alarm.aoss_errors : a.alarm_name])
  }
}
