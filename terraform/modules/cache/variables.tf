variable "name" {
  description = "Name of the replication group and prefix of its resources (at most 40 characters)."
  type        = string

  validation {
    condition     = length(var.name) <= 40
    error_message = "name must be at most 40 characters (ElastiCache replication group ID limit)."
  }
}

variable "vpc_id" {
  description = "VPC of the cache."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the cache subnet group (one per AZ)."
  type        = list(string)
}

variable "allowed_security_group_ids" {
  description = "Security groups allowed to connect on the Redis port, by a static label (e.g. { workers = sg-1, web = sg-2 })."
  type        = map(string)
}

variable "node_type" {
  description = "Cache node type, e.g. cache.t4g.micro (dev) or cache.m7g.large (prod)."
  type        = string
  default     = "cache.t4g.small"
}

variable "num_cache_clusters" {
  description = "Nodes in the replication group: 1 = primary only; 2+ = primary and replicas (required for multi-AZ)."
  type        = number
  default     = 2
}

variable "multi_az_enabled" {
  description = "Multi-AZ with automatic failover to a replica in another AZ (prod). Needs num_cache_clusters >= 2."
  type        = bool
  default     = true
}

variable "engine_version" {
  description = "Redis engine version."
  type        = string
  default     = "7.1"
}

variable "parameter_group_name" {
  description = "Cache parameter group (must match the engine version family)."
  type        = string
  default     = "default.redis7"
}

variable "port" {
  description = "Port Redis listens on."
  type        = number
  default     = 6379
}

variable "snapshot_retention_limit" {
  description = "Days of automatic snapshots to keep (0 disables them). The data is rebuildable coordination state, so a short window suffices."
  type        = number
  default     = 3
}

variable "snapshot_window" {
  description = "Daily UTC window for the automatic snapshot, e.g. 03:00-04:00."
  type        = string
  default     = "03:00-04:00"
}

variable "maintenance_window" {
  description = "Weekly UTC maintenance window, e.g. sun:05:00-sun:06:00."
  type        = string
  default     = "sun:05:00-sun:06:00"
}

variable "apply_immediately" {
  description = "Apply modifications now instead of in the next maintenance window."
  type        = bool
  default     = false
}

variable "log_retention_days" {
  description = "Days the slow-log group keeps its events."
  type        = number
  default     = 365
}

variable "secret_recovery_window_in_days" {
  description = "Days a deleted AUTH token secret can be restored (0 deletes it at once; otherwise 7-30)."
  type        = number
  default     = 30
}

variable "kms_deletion_window_in_days" {
  description = "Waiting period before the cache KMS key is deleted after a destroy (7-30)."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource (on top of the provider's default_tags)."
  type        = map(string)
  default     = {}
}
