output "ingest_queue_arn" {
  description = "ARN of the ingest queue, available only once its policy lets the recordings bucket send (so the S3 notification that uses it is created after the policy)."
  value       = aws_sqs_queue.this["ingest"].arn
  depends_on  = [aws_sqs_queue_policy.this]
}

output "queue_urls" {
  description = "Queue URLs by queue: the stages (ingest, transcribe, index) and the backfill lane (backfill, read by the ingest stage)."
  value       = { for k, q in aws_sqs_queue.this : k => q.url }
}

output "queue_arns" {
  description = "Queue ARNs by queue (ingest, transcribe, index, backfill)."
  value       = { for k, q in aws_sqs_queue.this : k => q.arn }
}

output "queue_names" {
  description = "Queue names by queue (ingest, transcribe, index, backfill)."
  value       = { for k, q in aws_sqs_queue.this : k => q.name }
}

output "dlq_urls" {
  description = "Dead-letter queue URLs by queue (ingest, transcribe, index, backfill)."
  value       = { for k, q in aws_sqs_queue.dlq : k => q.url }
}

output "dlq_arns" {
  description = "Dead-letter queue ARNs by queue (ingest, transcribe, index, backfill)."
  value       = { for k, q in aws_sqs_queue.dlq : k => q.arn }
}

output "dlq_names" {
  description = "Dead-letter queue names by queue (ingest, transcribe, index, backfill)."
  value       = { for k, q in aws_sqs_queue.dlq : k => q.name }
}

output "visibility_timeouts" {
  description = "Initial visibility timeout in seconds by queue (ingest, transcribe, index, backfill): the workers' lease before they extend it."
  value       = local.stages
}

output "kms_key_arn" {
  description = "ARN of the KMS key encrypting the queues (senders need kms:GenerateDataKey, receivers kms:Decrypt)."
  value       = aws_kms_key.this.arn
}
