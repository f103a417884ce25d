output "project_id" {
  description = "Atlas project ID."
  value       = module.database.project_id
}

output "cluster_name" {
  description = "Atlas cluster name."
  value       = module.database.cluster_name
}

output "network_access" {
  description = "privatelink or ip_access_list."
  value       = module.database.network_access
}

output "host" {
  description = "SRV host the tasks connect to."
  value       = module.database.host
}
