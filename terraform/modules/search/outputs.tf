output "collection_id" {
  description = "ID of the collection."
  value       = aws_opensearchserverless_collection.this.id
}

output "collection_name" {
  description = "Name of the collection."
  value       = aws_opensearchserverless_collection.this.name
}

output "collection_arn" {
  description = "ARN of the collection (the resource of aoss:APIAccessAll in the task roles)."
  value       = aws_opensearchserverless_collection.this.arn
}

output "collection_endpoint" {
  description = "HTTPS endpoint of the collection's data plane (SigV4, service \"aoss\"); resolves to the VPC endpoint inside the VPC."
  value       = aws_opensearchserverless_collection.this.collection_endpoint
}

output "vpc_endpoint_id" {
  description = "ID of the OpenSearch Serverless VPC endpoint."
  value       = aws_opensearchserverless_vpc_endpoint.this.id
}

output "security_group_id" {
  description = "Security group of the VPC endpoint."
  value       = aws_security_group.endpoint.id
}

output "kms_key_arn" {
  description = "ARN of the KMS key encrypting the collection."
  value       = aws_kms_key.this.arn
}
