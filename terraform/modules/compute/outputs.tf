output "cluster_name" {
  description = "Name of the ECS cluster."
  value       = aws_ecs_cluster.this.name
}

output "cluster_arn" {
  description = "ARN of the ECS cluster."
  value       = aws_ecs_cluster.this.arn
}

output "service_names" {
  description = "ECS service names by service key (ingest, transcribe, index, api, live)."
  value       = { for k, s in aws_ecs_service.this : k => s.name }
}

output "task_definition_arns" {
  description = "Task definition ARNs by task (the five services and backfill)."
  value       = { for k, t in aws_ecs_task_definition.this : k => t.arn }
}

output "task_role_arns" {
  description = "Task role ARNs by task."
  value       = { for k, r in aws_iam_role.task : k => r.arn }
}

output "execution_role_arn" {
  description = "ARN of the shared task execution role (image pull, logs)."
  value       = aws_iam_role.execution.arn
}

output "backfill_task_definition_arn" {
  description = "ARN of the backfill task definition (run by the scheduler)."
  value       = aws_ecs_task_definition.this["backfill"].arn
}

output "worker_security_group_id" {
  description = "Security group of the queue workers and the backfill task."
  value       = aws_security_group.workers.id
}

output "web_security_group_id" {
  description = "Security group of the query API and live gateway tasks."
  value       = aws_security_group.web.id
}

output "log_group_names" {
  description = "CloudWatch log group names by task."
  value       = { for k, g in aws_cloudwatch_log_group.task : k => g.name }
}

output "ecr_repository_urls" {
  description = "ECR repository URLs by repository key (callpipe, callpipe-cuda)."
  value       = { for k, r in aws_ecr_repository.this : k => r.repository_url }
}

output "alb_dns_name" {
  description = "DNS name of the internal ALB (query API at /, live gateway at live_path_patterns)."
  value       = aws_lb.this.dns_name
}

output "alb_arn_suffix" {
  description = "ARN suffix of the ALB (CloudWatch dimension LoadBalancer)."
  value       = aws_lb.this.arn_suffix
}

output "target_group_arn_suffixes" {
  description = "ARN suffixes of the api and live target groups (CloudWatch dimension TargetGroup)."
  value       = { for k, tg in aws_lb_target_group.this : k => tg.arn_suffix }
}

output "alb_url" {
  description = "Base URL of the query API through the ALB."
  value       = "${var.certificate_arn != "" ? "https" : "http"}://${aws_lb.this.dns_name}"
}

output "gpu_capacity_provider_name" {
  description = "Name of the GPU capacity provider, or null when GPU transcription is off."
  value       = one(aws_ecs_capacity_provider.gpu[*].name)
}

output "kms_key_arn" {
  description = "ARN of the KMS key of the ECR repositories, task log groups and ECS Exec."
  value       = aws_kms_key.this.arn
}
