output "name" {
  description = "Name prefix of the environment's resources."
  value       = local.name
}

output "region" {
  description = "AWS region of the environment."
  value       = var.region
}

# Network (also read by the Atlas stack through remote state)
output "vpc_id" {
  description = "ID of the VPC."
  value       = module.networking.vpc_id
}

output "vpc_cidr_block" {
  description = "CIDR block of the VPC."
  value       = module.networking.vpc_cidr_block
}

output "private_subnet_ids" {
  description = "Private subnet IDs."
  value       = module.networking.private_subnet_ids
}

output "nat_public_ips" {
  description = "Public IPs of the NAT gateways (the Atlas M0 IP access list)."
  value       = module.networking.nat_public_ips
}

output "task_security_group_ids" {
  description = "Security groups of the tasks by kind (workers, web): the Atlas PrivateLink endpoint admits them."
  value       = local.task_security_group_ids
}

output "mongodb_secret_arn" {
  description = "ARN of the MongoDB connection secret that the Atlas stack fills."
  value       = aws_secretsmanager_secret.mongodb.arn
}

output "mongodb_network_access" {
  description = "How tasks reach Atlas (privatelink or ip_access_list); the Atlas stack checks its tier against it."
  value       = var.mongodb_network_access
}

# Data
output "recordings_bucket" {
  description = "Recordings bucket; upload under recordings_prefix to trigger ingestion."
  value       = module.storage.recordings_bucket_id
}

output "recordings_prefix" {
  description = "Key prefix announced to the ingest queue."
  value       = var.recordings_prefix
}

output "artifacts_bucket" {
  description = "Artifacts bucket."
  value       = module.storage.artifacts_bucket_id
}

output "logs_bucket" {
  description = "Access-log bucket."
  value       = module.storage.logs_bucket_id
}

output "queue_urls" {
  description = "Queue URLs by queue: the stages (ingest, transcribe, index) and the backfill lane (backfill)."
  value       = module.queue.queue_urls
}

output "dlq_urls" {
  description = "Dead-letter queue URLs by queue (ingest, transcribe, index, backfill)."
  value       = module.queue.dlq_urls
}

output "collection_endpoint" {
  description = "OpenSearch Serverless collection endpoint (reachable from inside the VPC)."
  value       = module.search.collection_endpoint
}

output "collection_arn" {
  description = "OpenSearch Serverless collection ARN."
  value       = module.search.collection_arn
}

output "redis_endpoint" {
  description = "Redis primary endpoint (TLS + AUTH)."
  value       = module.cache.primary_endpoint_address
}

output "redis_auth_secret_arn" {
  description = "Secret holding the Redis AUTH token."
  value       = module.cache.auth_secret_arn
}

# Compute
output "cluster_name" {
  description = "ECS cluster name."
  value       = module.compute.cluster_name
}

output "service_names" {
  description = "ECS service names by service key."
  value       = module.compute.service_names
}

output "ecr_repository_urls" {
  description = "ECR repositories to push the callpipe images to."
  value       = module.compute.ecr_repository_urls
}

output "alb_url" {
  description = "Base URL of the query API on the internal ALB (the live gateway is under /live)."
  value       = module.compute.alb_url
}

output "task_role_arns" {
  description = "Task role ARNs by task."
  value       = module.compute.task_role_arns
}

output "backfill_schedule_arn" {
  description = "ARN of the backfill schedule."
  value       = module.scheduler.schedule_arn
}

# Operations
output "alarm_topic_arn" {
  description = "SNS topic receiving every alarm."
  value       = module.monitoring.sns_topic_arn
}

output "dashboard_name" {
  description = "CloudWatch dashboard of the environment."
  value       = module.monitoring.dashboard_name
}
