variable "environment" {
  description = "Environment name (dev, staging, prod); must match the AWS stack's."
  type        = string
}

variable "region" {
  description = "AWS region of the environment (the PrivateLink endpoint and the secret live there)."
  type        = string
}

variable "callpipe_state_bucket" {
  description = "S3 bucket holding the AWS stack's state (as in environments/<env>/backend.hcl)."
  type        = string
}

variable "callpipe_state_key" {
  description = "Key of the AWS stack's state in that bucket."
  type        = string
}

variable "callpipe_state_region" {
  description = "Region of the state bucket."
  type        = string
}

variable "atlas_org_id" {
  description = "Atlas organization ID."
  type        = string
}

variable "cluster_tier" {
  description = "Atlas tier: M0 (dev), M10 (staging), M20 (prod)."
  type        = string
}

variable "node_count" {
  description = "Electable nodes of a dedicated cluster (ignored for M0)."
  type        = number
  default     = 3
}

variable "mongodb_major_version" {
  description = "MongoDB major version of a dedicated cluster."
  type        = string
  default     = "8.0"
}

variable "backup_enabled" {
  description = "Cloud backup snapshots (dedicated tiers only)."
  type        = bool
}

variable "pit_enabled" {
  description = "Continuous cloud backup with point-in-time restore (prod)."
  type        = bool
}

variable "backup_retention_days" {
  description = "Days daily snapshots are kept."
  type        = number
  default     = 7
}

variable "termination_protection_enabled" {
  description = "Protect the cluster from deletion."
  type        = bool
}

variable "database_name" {
  description = "Database of the workers (the AWS stack's mongodb_database)."
  type        = string
  default     = "callpipe"
}

variable "password_rotation_id" {
  description = "Change to rotate the database user's password (the secret is updated in the same apply)."
  type        = string
  default     = "1"
}

variable "tags" {
  description = "Extra tags on the AWS resources of this stack."
  type        = map(string)
  default     = {}
}
