output "schedule_arn" {
  description = "ARN of the backfill schedule."
  value       = aws_scheduler_schedule.this.arn
}

output "role_arn" {
  description = "ARN of the role the scheduler assumes to run the task."
  value       = aws_iam_role.this.arn
}

output "dlq_arn" {
  description = "ARN of the schedule's dead-letter queue."
  value       = aws_sqs_queue.dlq.arn
}

output "dlq_name" {
  description = "Name of the schedule's dead-letter queue."
  value       = aws_sqs_queue.dlq.name
}

output "dlq_url" {
  description = "URL of the schedule's dead-letter queue."
  value       = aws_sqs_queue.dlq.url
}
