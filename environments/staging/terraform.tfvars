# staging: the prod topology at a smaller size (two AZs, one NAT gateway, no OpenSearch
# standby, Atlas M10 over PrivateLink, HTTPS). Same variables as dev and prod.

environment = "staging"
region      = "us-east-1"
tags        = { CostCenter = "callpipe-staging" }

kms_deletion_window_in_days    = 30
force_destroy                  = false
log_retention_days             = 90
secret_recovery_window_in_days = 7

# Network
vpc_cidr             = "10.20.0.0/16"
availability_zones   = ["us-east-1a", "us-east-1b"]
public_subnet_cidrs  = ["10.20.0.0/24", "10.20.1.0/24"]
private_subnet_cidrs = ["10.20.16.0/20", "10.20.32.0/20"]
single_nat_gateway   = true

# Storage and queues
recordings_prefix   = "incoming/"
recordings_suffixes = [".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a"]
recordings_transitions = [
  { days = 30, storage_class = "STANDARD_IA" },
]
artifacts_transitions              = []
noncurrent_version_expiration_days = 14

ingest_visibility_timeout_seconds     = 300
transcribe_visibility_timeout_seconds = 1800
index_visibility_timeout_seconds      = 300
max_receive_count                     = 5

# Search and cache
search_standby_replicas        = "DISABLED"
cache_node_type                = "cache.t4g.small"
cache_num_cache_clusters       = 2
cache_multi_az_enabled         = true
cache_snapshot_retention_limit = 3

# MongoDB: the Atlas stack runs an M10 reached over PrivateLink
mongodb_network_access = "privatelink"
mongodb_database       = "callpipe"

# Compute. image_tag is the release deployed here; CI passes -var image_tag=<git sha>.
image_tag         = "0.1.0"
gpu_image_tag     = ""
app_config_file   = "environments/staging/callpipe.toml"
extra_environment = { RUST_LOG = "info" }

services = {
  ingest     = { cpu = 512, memory = 1024, min_count = 1, max_count = 4, capacity_provider = "FARGATE_SPOT", target_backlog_per_task = 50 }
  transcribe = { cpu = 2048, memory = 4096, min_count = 1, max_count = 10, capacity_provider = "FARGATE_SPOT", target_backlog_per_task = 10 }
  index      = { cpu = 1024, memory = 2048, min_count = 1, max_count = 4, capacity_provider = "FARGATE_SPOT", target_backlog_per_task = 50 }
  api        = { cpu = 512, memory = 1024, min_count = 1, max_count = 3, target_cpu_percent = 60 }
  live       = { cpu = 512, memory = 1024, min_count = 1, max_count = 3, target_cpu_percent = 60 }
}

enable_execute_command = true

# The ACM certificate of the staging API name (replace with the real ARN).
certificate_arn                = "arn:aws:acm:us-east-1:111111111111:certificate/00000000-0000-0000-0000-000000000000"
allow_http_without_certificate = false
alb_ingress_cidr_blocks        = ["10.20.0.0/16", "10.0.0.0/16"]
alb_deletion_protection        = true

enable_gpu_transcription = false
gpu_instance_type        = "g6.xlarge"
gpu_min_size             = 0
gpu_max_size             = 2

# Backfill: weekly, Sunday 03:00 UTC
backfill_schedule_expression = "cron(0 3 ? * SUN *)"
backfill_schedule_enabled    = true
backfill_extra_args          = []

# Monitoring
alarm_email = "callpipe-alerts@example.com"
oldest_message_age_thresholds = {
  ingest     = 900
  transcribe = 3600
  index      = 900
  backfill   = 86400 # the lane waits behind uploads by design; retention is 4 days
}
