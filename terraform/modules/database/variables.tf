variable "name" {
  description = "Name of the Atlas project and cluster, e.g. \"callpipe-dev\"."
  type        = string
}

variable "atlas_org_id" {
  description = "Atlas organization the project is created in."
  type        = string
}

variable "region" {
  description = "AWS region of the cluster and the VPC (e.g. us-east-1; Atlas's US_EAST_1 is derived)."
  type        = string
}

variable "cluster_tier" {
  description = "Atlas tier: M0 (dev; free shared tier, IP access list), M10 (staging), M20 (prod) or larger (PrivateLink)."
  type        = string

  validation {
    condition     = can(regex("^M(0|[1-9][0-9]+)$", var.cluster_tier))
    error_message = "cluster_tier must be M0 or a dedicated tier such as M10, M20, M30."
  }
}

variable "node_count" {
  description = "Electable nodes of a dedicated cluster (3, 5 or 7); ignored for M0."
  type        = number
  default     = 3
}

variable "mongodb_major_version" {
  description = "MongoDB major version of a dedicated cluster (M0 runs the version Atlas picks)."
  type        = string
  default     = "8.0"
}

variable "backup_enabled" {
  description = "Cloud backups with a daily and weekly snapshot schedule (dedicated tiers; M0 has none)."
  type        = bool
  default     = false
}

variable "pit_enabled" {
  description = "Continuous cloud backup (point-in-time restore) on top of the snapshots (prod)."
  type        = bool
  default     = false
}

variable "backup_retention_days" {
  description = "Days daily snapshots are kept."
  type        = number
  default     = 7
}

variable "restore_window_days" {
  description = "Days back a point-in-time restore can reach (continuous backup)."
  type        = number
  default     = 7
}

variable "termination_protection_enabled" {
  description = "Refuse to delete the cluster until this is turned off (prod)."
  type        = bool
  default     = false
}

variable "vpc_id" {
  description = "VPC the PrivateLink endpoint is created in (dedicated tiers)."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the PrivateLink endpoint."
  type        = list(string)
}

variable "allowed_security_group_ids" {
  description = "Security groups allowed to the PrivateLink endpoint, by a static label (the task security groups)."
  type        = map(string)
}

variable "nat_public_ips" {
  description = "Public IPs of the NAT gateways: the IP access list of an M0 cluster."
  type        = list(string)
}

variable "database_name" {
  description = "Database the user may read and write."
  type        = string
  default     = "callpipe"
}

variable "username" {
  description = "Name of the database user of the workers and the query API."
  type        = string
  default     = "callpipe"
}

variable "password_rotation_id" {
  description = "Any string; changing it generates a new password and updates the user and the secret in one apply."
  type        = string
  default     = "1"
}

variable "secret_arn" {
  description = "ARN of the Secrets Manager secret (created by the AWS stack) that receives the connection (JSON: uri, username, password, host, database)."
  type        = string
}

variable "tags" {
  description = "Tags added to the AWS resources (on top of the provider's default_tags)."
  type        = map(string)
  default     = {}
}
