variable "name" {
  description = "Name of the ECS cluster and prefix of every resource, e.g. \"callpipe-dev\"."
  type        = string
}

################################################################################
# Network
################################################################################

variable "vpc_id" {
  description = "VPC of the tasks, the ALB and the GPU instances."
  type        = string
}

variable "vpc_cidr_block" {
  description = "CIDR block of the VPC (task egress to Redis is limited to it)."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets of the tasks, the internal ALB and the GPU instances."
  type        = list(string)
}

variable "mongodb_egress" {
  description = "Task egress to MongoDB Atlas. PrivateLink (M10+): ports 1024-65535 to the VPC CIDR; IP access list (M0): 27015-27017 to 0.0.0.0/0 through the NAT gateways."
  type = object({
    description = string
    from_port   = number
    to_port     = number
    cidr_block  = string
  })
}

################################################################################
# Images and configuration
################################################################################

variable "ecr_repositories" {
  description = "ECR repositories to create, named NAME/REPO: the CPU image and the CUDA build of callpipe."
  type        = list(string)
  default     = ["callpipe", "callpipe-cuda"]
}

variable "image_repository" {
  description = "Which of ecr_repositories holds the CPU image every task runs."
  type        = string
  default     = "callpipe"
}

variable "image_tag" {
  description = "Tag of the callpipe image to run (tags are immutable: use the git commit)."
  type        = string
}

variable "gpu_image_repository" {
  description = "Which of ecr_repositories holds the CUDA image the transcribe stage runs on GPU instances."
  type        = string
  default     = "callpipe-cuda"
}

variable "gpu_image_tag" {
  description = "Tag of the CUDA callpipe image (used only when enable_gpu_transcription is true)."
  type        = string
  default     = ""
}

variable "ecr_keep_images" {
  description = "Tagged images kept per repository; older ones expire."
  type        = number
  default     = 50
}

variable "ecr_force_delete" {
  description = "Let terraform delete repositories that still hold images (dev only)."
  type        = bool
  default     = false
}

variable "config_toml" {
  description = "Contents of the environment's callpipe.toml (no secrets). It is written to config_path in each task before callpipe starts."
  type        = string
}

variable "config_path" {
  description = "Where the config file is written inside the container (its directory is a task-local volume)."
  type        = string
  default     = "/etc/callpipe/callpipe.toml"
}

variable "extra_environment" {
  description = "Extra environment variables for every task, typically CALLPIPE_SECTION__KEY overrides of the config file."
  type        = map(string)
  default     = {}
}

variable "container_user" {
  description = "User the containers run as (UID:GID; the image must own /etc/callpipe and /tmp for it)."
  type        = string
  default     = "10001:10001"
}

################################################################################
# Services
################################################################################

variable "services" {
  description = <<-EOT
    Sizing and scaling of the five services: ingest, transcribe, index (queue workers), api
    (callpipe serve) and live (the live-call gateway). cpu/memory are Fargate task units;
    min_count/max_count bound Application Auto Scaling; capacity_provider is FARGATE or
    FARGATE_SPOT (ignored for transcribe on GPU); target_backlog_per_task is the queue messages
    per running task the workers are scaled to; target_cpu_percent is the CPU the api and live
    services are scaled to.
  EOT
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

  validation {
    condition     = sort(keys(var.services)) == sort(["ingest", "transcribe", "index", "api", "live"])
    error_message = "services must have exactly the keys ingest, transcribe, index, api and live."
  }

  validation {
    condition     = alltrue([for s in values(var.services) : contains(["FARGATE", "FARGATE_SPOT"], s.capacity_provider)])
    error_message = "capacity_provider must be FARGATE or FARGATE_SPOT."
  }

  validation {
    condition     = alltrue([for s in values(var.services) : s.min_count >= 0 && s.max_count >= s.min_count])
    error_message = "Every service needs 0 <= min_count <= max_count."
  }
}

variable "worker_stop_timeout" {
  description = "Seconds ECS waits after SIGTERM before killing a worker: the drain deadline (at most 120 on Fargate)."
  type        = number
  default     = 120
}

variable "backfill_cpu" {
  description = "CPU units of the scheduled backfill task (it lists S3 and enqueues; light)."
  type        = number
  default     = 256
}

variable "backfill_memory" {
  description = "Memory (MiB) of the scheduled backfill task."
  type        = number
  default     = 512
}

variable "backfill_args" {
  description = "Arguments after `callpipe backfill --config FILE`, e.g. [\"s3://BUCKET/incoming/\"]."
  type        = list(string)
  default     = []
}

variable "enable_execute_command" {
  description = "Allow ECS Exec into running tasks (sessions are KMS-encrypted and logged)."
  type        = bool
  default     = false
}

################################################################################
# What the tasks use
################################################################################

variable "recordings_bucket_name" {
  description = "Name of the recordings bucket."
  type        = string
}

variable "recordings_bucket_arn" {
  description = "ARN of the recordings bucket (ingest reads it, backfill lists it, the live gateway writes it)."
  type        = string
}

variable "artifacts_bucket_name" {
  description = "Name of the artifacts bucket."
  type        = string
}

variable "artifacts_bucket_arn" {
  description = "ARN of the artifacts bucket (ingest writes, transcribe reads and writes, index reads)."
  type        = string
}

variable "storage_kms_key_arn" {
  description = "KMS key of the two buckets."
  type        = string
}

variable "queue_urls" {
  description = "Queue URLs by queue: the stages (ingest, transcribe, index) and the backfill lane (backfill), which the ingest stage reads when its own queue is empty."
  type        = map(string)

  validation {
    condition     = alltrue([for k in ["ingest", "transcribe", "index", "backfill"] : contains(keys(var.queue_urls), k)])
    error_message = "queue_urls needs the keys ingest, transcribe, index and backfill."
  }
}

variable "queue_arns" {
  description = "Queue ARNs by queue (ingest, transcribe, index, backfill)."
  type        = map(string)
}

variable "queue_names" {
  description = "Queue names by queue (ingest, transcribe, index, backfill), for the backlog metrics."
  type        = map(string)
}

variable "visibility_timeouts" {
  description = "Initial visibility timeout in seconds by queue; the ingest, transcribe and index values are passed to their workers (an ingest worker uses its value for the backfill lane too)."
  type        = map(number)
}

variable "queue_kms_key_arn" {
  description = "KMS key of the queues."
  type        = string
}

variable "collection_arn" {
  description = "ARN of the OpenSearch Serverless collection."
  type        = string
}

variable "collection_endpoint" {
  description = "HTTPS endpoint of the OpenSearch Serverless collection."
  type        = string
}

variable "mongodb_secret_arn" {
  description = "ARN of the Secrets Manager secret holding the MongoDB connection (JSON: uri, username, password, database), filled by the Atlas stack."
  type        = string
}

variable "mongodb_secret_kms_key_arn" {
  description = "KMS key of the MongoDB secret."
  type        = string
}

variable "mongodb_database" {
  description = "MongoDB database name."
  type        = string
  default     = "callpipe"
}

variable "redis_endpoint" {
  description = "Primary endpoint of the Redis replication group."
  type        = string
}

variable "redis_port" {
  description = "Redis port."
  type        = number
  default     = 6379
}

variable "redis_auth_secret_arn" {
  description = "ARN of the Secrets Manager secret holding the Redis AUTH token."
  type        = string
}

variable "redis_kms_key_arn" {
  description = "KMS key of the Redis AUTH token secret."
  type        = string
}

variable "log_retention_days" {
  description = "Days the task log groups keep their events."
  type        = number
  default     = 365
}

################################################################################
# Load balancer
################################################################################

variable "container_port" {
  description = "Port the query API and live gateway listen on inside their containers."
  type        = number
  default     = 8080
}

variable "health_check_path" {
  description = "HTTP path the ALB health-checks the API and live gateway on."
  type        = string
  default     = "/healthz"
}

variable "live_path_patterns" {
  description = "Path patterns the ALB routes to the live gateway; everything else goes to the query API."
  type        = list(string)
  default     = ["/live", "/live/*"]
}

variable "live_deregistration_delay" {
  description = "Seconds the ALB lets a draining live-gateway task finish its open call streams."
  type        = number
  default     = 300
}

variable "certificate_arn" {
  description = "ACM certificate of the HTTPS listener. Empty means no HTTPS: then allow_http_without_certificate must be true."
  type        = string
  default     = ""
}

variable "allow_http_without_certificate" {
  description = "Accept a plain-HTTP listener when certificate_arn is empty (dev only: the ALB is internal and limited to alb_ingress_cidr_blocks)."
  type        = bool
  default     = false
}

variable "alb_ssl_policy" {
  description = "TLS policy of the HTTPS listener."
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"
}

variable "alb_ingress_cidr_blocks" {
  description = "CIDR blocks allowed to reach the internal ALB (the VPC, peered networks, the corporate VPN)."
  type        = list(string)
}

variable "alb_deletion_protection" {
  description = "Protect the ALB from deletion."
  type        = bool
  default     = true
}

variable "alb_idle_timeout" {
  description = "Seconds an idle connection stays open on the ALB (live call streams may pause)."
  type        = number
  default     = 300
}

variable "access_logs_bucket" {
  description = "Bucket receiving the ALB access logs (under alb/); it must be SSE-S3 encrypted and allow ELB log delivery."
  type        = string
}

################################################################################
# GPU capacity for transcription
################################################################################

variable "enable_gpu_transcription" {
  description = "Run the transcribe stage on an EC2 GPU capacity provider (gpu_image_tag, CUDA build) instead of Fargate CPUs."
  type        = bool
  default     = false
}

variable "gpu_instance_type" {
  description = "GPU instance type of the capacity provider (g5/g6 family, one NVIDIA GPU per task)."
  type        = string
  default     = "g6.xlarge"

  validation {
    condition     = can(regex("^g(5|6|6e)\\.", var.gpu_instance_type))
    error_message = "gpu_instance_type must be a g5, g6 or g6e instance type."
  }
}

variable "gpu_ami_ssm_parameter" {
  description = "SSM parameter holding the ECS GPU-optimised AMI ID."
  type        = string
  default     = "/aws/service/ecs/optimized-ami/amazon-linux-2/gpu/recommended/image_id"
}

variable "gpu_min_size" {
  description = "Minimum GPU instances (0 lets the capacity provider scale to nothing when idle)."
  type        = number
  default     = 0
}

variable "gpu_max_size" {
  description = "Maximum GPU instances."
  type        = number
  default     = 4
}

variable "gpu_root_volume_size" {
  description = "Root EBS volume size (GiB) of the GPU instances (the CUDA image is large)."
  type        = number
  default     = 100
}

variable "gpu_ebs_kms_key_arn" {
  description = "KMS key for the GPU instances' EBS volumes; null uses the account's default EBS key (the volumes are encrypted either way)."
  type        = string
  default     = null
}

variable "kms_deletion_window_in_days" {
  description = "Waiting period before the compute KMS key is deleted after a destroy (7-30)."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource (on top of the provider's default_tags)."
  type        = map(string)
  default     = {}
}
