# prod: three AZs with a NAT gateway each, redundant OpenSearch, multi-AZ Redis, Atlas M20 over
# PrivateLink with continuous backups, HTTPS, on-demand Fargate. Same variables as dev and
# staging.

environment = "prod"
region      = "us-east-1"
tags        = { CostCenter = "callpipe-prod" }

kms_deletion_window_in_days    = 30
force_destroy                  = false
log_retention_days             = 365
secret_recovery_window_in_days = 30

# Network
vpc_cidr             = "10.30.0.0/16"
availability_zones   = ["us-east-1a", "us-east-1b", "us-east-1c"]
public_subnet_cidrs  = ["10.30.0.0/24", "10.30.1.0/24", "10.30.2.0/24"]
private_subnet_cidrs = ["10.30.16.0/20", "10.30.32.0/20", "10.30.48.0/20"]
single_nat_gateway   = false

# Storage and queues
recordings_prefix   = "incoming/"
recordings_suffixes = [".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a"]
recordings_transitions = [
  { days = 30, storage_class = "STANDARD_IA" },
  { days = 180, storage_class = "GLACIER_IR" },
]
artifacts_transitions = [
  { days = 90, storage_class = "STANDARD_IA" },
]
noncurrent_version_expiration_days = 30

ingest_visibility_timeout_seconds     = 300
transcribe_visibility_timeout_seconds = 1800
index_visibility_timeout_seconds      = 300
max_receive_count                     = 5

# Search and cache
search_standby_replicas        = "ENABLED"
cache_node_type                = "cache.m7g.large"
cache_num_cache_clusters       = 2
cache_multi_az_enabled         = true
cache_snapshot_retention_limit = 7

# MongoDB: the Atlas stack runs an M20 reached over PrivateLink
mongodb_network_access = "privatelink"
mongodb_database       = "callpipe"

# Compute. image_tag is the release deployed here; CI passes -var image_tag=<git sha>.
image_tag         = "0.1.0"
gpu_image_tag     = ""
app_config_file   = "environments/prod/callpipe.toml"
extra_environment = { RUST_LOG = "info" }

services = {
  ingest     = { cpu = 1024, memory = 2048, min_count = 1, max_count = 10, target_backlog_per_task = 100 }
  transcribe = { cpu = 4096, memory = 8192, min_count = 2, max_count = 40, target_backlog_per_task = 20 }
  index      = { cpu = 1024, memory = 2048, min_count = 1, max_count = 10, target_backlog_per_task = 100 }
  api        = { cpu = 1024, memory = 2048, min_count = 2, max_count = 6, target_cpu_percent = 50 }
  live       = { cpu = 1024, memory = 2048, min_count = 2, max_count = 6, target_cpu_percent = 50 }
}

enable_execute_command = false

# The ACM certificate of the prod API name (replace with the real ARN).
certificate_arn                = "arn:aws:acm:us-east-1:222222222222:certificate/00000000-0000-0000-0000-000000000000"
allow_http_without_certificate = false
alb_ingress_cidr_blocks        = ["10.30.0.0/16", "10.0.0.0/16"]
alb_deletion_protection        = true

# Flip to true (with gpu_image_tag) to move transcription onto g6.xlarge instances.
enable_gpu_transcription = false
gpu_instance_type        = "g6.xlarge"
gpu_min_size             = 0
gpu_max_size             = 8

# Backfill: daily, 03:00 UTC
backfill_schedule_expression = "cron(0 3 * * ? *)"
backfill_schedule_enabled    = true
backfill_extra_args          = []

# Monitoring
alarm_email = "callpipe-oncall@example.com"
oldest_message_age_thresholds = {
  ingest     = 600
  transcribe = 1800
  index      = 600
  backfill   = 86400 # the lane waits behind uploads by design; retention is 4 days
}
