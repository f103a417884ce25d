output "recordings_bucket_id" {
  description = "Name of the recordings bucket (uploads land under notification_filter_prefix)."
  value       = aws_s3_bucket.data["recordings"].id
}

output "recordings_bucket_arn" {
  description = "ARN of the recordings bucket."
  value       = aws_s3_bucket.data["recordings"].arn
}

output "artifacts_bucket_id" {
  description = "Name of the artifacts bucket (normalized audio, call plans, transcripts)."
  value       = aws_s3_bucket.data["artifacts"].id
}

output "artifacts_bucket_arn" {
  description = "ARN of the artifacts bucket."
  value       = aws_s3_bucket.data["artifacts"].arn
}

output "logs_bucket_id" {
  description = "Name of the access-log bucket (S3 server access logs under s3/, ALB logs under alb/), available once its policy admits the log deliveries (an ALB checks that it can write when it is created)."
  value       = aws_s3_bucket.logs.id
  depends_on  = [aws_s3_bucket_policy.logs]
}

output "logs_bucket_arn" {
  description = "ARN of the access-log bucket."
  value       = aws_s3_bucket.logs.arn
}

output "kms_key_arn" {
  description = "ARN of the KMS key encrypting the recordings and artifacts buckets."
  value       = aws_kms_key.this.arn
}
