################################################################################
# Environment
################################################################################

variable "environment" {
  description = "Environment name (dev, staging, prod); resources are named callpipe-<environment>."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,11}$", var.environment))
    error_message = "environment must be 2-12 lowercase letters or digits, starting with a letter."
  }
}

variable "region" {
  description = "AWS region of the environment."
  type        = string
}

variable "tags" {
  description = "Extra tags on every resource (Project, Environment and ManagedBy are always set)."
  type        = map(string)
  default     = {}
}

variable "kms_deletion_window_in_days" {
  description = "Waiting period before a destroyed KMS key is deleted (7-30 days)."
  type        = number
  default     = 30
}

variable "force_destroy" {
  description = "Let terraform destroy non-empty buckets and ECR repositories (dev only)."
  type        = bool
  default     = false
}

variable "log_retention_days" {
  description = "Retention of every CloudWatch log group (tasks, flow logs, Redis) and of the access-log bucket."
  type        = number
  default     = 365
}

variable "secret_recovery_window_in_days" {
  description = "Days a deleted secret can be restored (0 deletes at once; otherwise 7-30)."
  type        = number
  default     = 30
}

################################################################################
# Network
################################################################################

variable "vpc_cidr" {
  description = "CIDR block of the VPC."
  type        = string
}

variable "availability_zones" {
  description = "Availability zones (two or more) the subnets, NAT gateways, endpoints and caches spread over."
  type        = list(string)
}

variable "public_subnet_cidrs" {
  description = "Public subnet CIDRs, one per availability zone (NAT gateways only)."
  type        = list(string)
}

variable "private_subnet_cidrs" {
  description = "Private subnet CIDRs, one per availability zone (everything else)."
  type        = list(string)
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all AZs (dev, staging) instead of one per AZ (prod)."
  type        = bool
}

################################################################################
# Storage and queues
################################################################################

variable "recordings_prefix" {
  description = "Key prefix under which recordings are uploaded; new objects there are announced to the ingest queue, and the backfill lists it."
  type        = string
  default     = "incoming/"
}

variable "recordings_suffixes" {
  description = "Key suffixes of recordings announced to the ingest queue (case-sensitive)."
  type        = list(string)
  default     = [".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a"]
}

variable "recordings_transitions" {
  description = "Lifecycle transitions of recordings, e.g. [{ days = 30, storage_class = \"STANDARD_IA\" }]."
  type = list(object({
    days          = number
    storage_class = string
  }))
  default = []
}

variable "artifacts_transitions" {
  description = "Lifecycle transitions of artifacts (normalized audio, plans, transcripts)."
  type = list(object({
    days          = number
    storage_class = string
  }))
  default = []
}

variable "noncurrent_version_expiration_days" {
  description = "Days replaced object versions are kept in the recordings and artifacts buckets."
  type        = number
  default     = 30
}

variable "ingest_visibility_timeout_seconds" {
  description = "Initial visibility timeout of ingest messages (workers extend it while they work)."
  type        = number
  default     = 300
}

variable "transcribe_visibility_timeout_seconds" {
  description = "Initial visibility timeout of transcribe messages (workers extend it while they work)."
  type        = number
  default     = 1800
}

variable "index_visibility_timeout_seconds" {
  description = "Initial visibility timeout of index messages (workers extend it while they work)."
  type        = number
  default     = 300
}

variable "max_receive_count" {
  description = "Receives before a failing message moves to its dead-letter queue."
  type        = number
  default     = 5
}

################################################################################
# Search and cache
################################################################################

variable "search_standby_replicas" {
  description = "OpenSearch Serverless standby replicas: ENABLED (redundant, prod) or DISABLED (dev)."
  type        = string
}

variable "cache_node_type" {
  description = "ElastiCache node type."
  type        = string
}

variable "cache_num_cache_clusters" {
  description = "Redis nodes (primary + replicas)."
  type        = number
}

variable "cache_multi_az_enabled" {
  description = "Redis multi-AZ with automatic failover (needs 2+ nodes)."
  type        = bool
}

variable "cache_snapshot_retention_limit" {
  description = "Days of Redis snapshots kept."
  type        = number
  default     = 3
}

################################################################################
# MongoDB (the cluster itself is in the Atlas stack)
################################################################################

variable "mongodb_network_access" {
  description = "How tasks reach Atlas; must match the Atlas stack's tier: \"privatelink\" (M10+) or \"ip_access_list\" (M0, through the NAT gateways)."
  type        = string

  validation {
    condition     = contains(["privatelink", "ip_access_list"], var.mongodb_network_access)
    error_message = "mongodb_network_access must be privatelink or ip_access_list."
  }
}

variable "mongodb_database" {
  description = "MongoDB database the workers use."
  type        = string
  default     = "callpipe"
}

################################################################################
# Compute
################################################################################

variable "image_tag" {
  description = "Tag of the callpipe image in ECR (immutable; use the git commit)."
  type        = string
}

variable "gpu_image_tag" {
  description = "Tag of the CUDA callpipe image (only with enable_gpu_transcription)."
  type        = string
  default     = ""
}

variable "app_config_file" {
  description = "The environment's callpipe.toml, relative to the repository root (e.g. environments/dev/callpipe.toml)."
  type        = string
}

variable "extra_environment" {
  description = "Extra CALLPIPE_SECTION__KEY overrides for every task."
  type        = map(string)
  default     = {}
}

variable "services" {
  description = "Size and scaling of ingest, transcribe, index, api and live (see the compute module's services variable)."
  type = map(object({
    cpu                     = number
    memory                  = number
    min_count               = number
    max_count               = number
    capacity_provider       = optional(string, "FARGATE")
    target_backlog_per_task = optional(number, 10)
    target_cpu_percent      = optional(number, 60)
    ephemeral_storage_gib   = optional(number, 21)
  }))
}

variable "enable_execute_command" {
  description = "Allow ECS Exec into tasks."
  type        = bool
  default     = false
}

variable "certificate_arn" {
  description = "ACM certificate of the internal ALB's HTTPS listener; empty for plain HTTP (needs allow_http_without_certificate)."
  type        = string
  default     = ""
}

variable "allow_http_without_certificate" {
  description = "Accept plain HTTP on the internal ALB when certificate_arn is empty (dev only)."
  type        = bool
  default     = false
}

variable "alb_ingress_cidr_blocks" {
  description = "Who may reach the internal ALB; empty means the VPC CIDR only."
  type        = list(string)
  default     = []
}

variable "alb_deletion_protection" {
  description = "Protect the ALB from deletion."
  type        = bool
  default     = true
}

variable "enable_gpu_transcription" {
  description = "Run transcribe on a GPU capacity provider (EC2 g5/g6) instead of Fargate."
  type        = bool
  default     = false
}

variable "gpu_instance_type" {
  description = "GPU instance type."
  type        = string
  default     = "g6.xlarge"
}

variable "gpu_min_size" {
  description = "Minimum GPU instances."
  type        = number
  default     = 0
}

variable "gpu_max_size" {
  description = "Maximum GPU instances."
  type        = number
  default     = 4
}

################################################################################
# Backfill schedule and monitoring
################################################################################

variable "backfill_schedule_expression" {
  description = "When the backfill runs, e.g. cron(0 3 ? * SUN *)."
  type        = string
}

variable "backfill_schedule_enabled" {
  description = "Whether the backfill schedule fires."
  type        = bool
  default     = true
}

variable "backfill_extra_args" {
  description = "Arguments after `callpipe backfill --config FILE s3://RECORDINGS/PREFIX`: `--since DATE`, `--until DATE` (YYYY-MM-DD or RFC 3339), `--rate N`, `--max-in-flight N`, `--job NAME`, `--dry-run`; each flag and its value are separate elements (or `--flag=value`)."
  type        = list(string)
  default     = []

  validation {
    condition = alltrue([
      for a in var.backfill_extra_args : !startswith(a, "-") || contains(["--since", "--until", "--rate", "--max-in-flight", "--job", "--dry-run"], split("=", a)[0])
    ])
    error_message = "backfill_extra_args takes only --since, --until, --rate, --max-in-flight, --job and --dry-run (the recordings URI comes first, from recordings_prefix)."
  }
}

variable "alarm_email" {
  description = "E-mail subscribed to the alarm topic; empty for none."
  type        = string
  default     = ""
}

variable "oldest_message_age_thresholds" {
  description = "Seconds the oldest message of each queue may wait before alarming, by queue (ingest, transcribe, index, backfill; a missing one uses 3600). The backfill lane waits behind new uploads by design: give it hours, well under the 4-day message retention."
  type        = map(number)
  default = {
    ingest     = 900
    transcribe = 3600
    index      = 900
    backfill   = 86400
  }
}
