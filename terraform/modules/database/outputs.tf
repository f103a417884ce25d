output "project_id" {
  description = "ID of the Atlas project."
  value       = mongodbatlas_project.this.id
}

output "cluster_name" {
  description = "Name of the Atlas cluster."
  value       = mongodbatlas_advanced_cluster.this.name
}

output "network_access" {
  description = "How the tasks reach the cluster: privatelink or ip_access_list."
  value       = local.use_privatelink ? "privatelink" : "ip_access_list"
}

output "host" {
  description = "SRV host of the cluster as the tasks reach it (private endpoint host with PrivateLink)."
  value       = local.host
}

output "privatelink_vpc_endpoint_id" {
  description = "ID of the PrivateLink VPC endpoint, or null for M0."
  value       = one(aws_vpc_endpoint.atlas[*].id)
}

output "secret_version_id" {
  description = "Version of the connection secret written by this apply."
  value       = aws_secretsmanager_secret_version.this.version_id
}
