# dev: one NAT gateway, no OpenSearch standby, one small Redis node, workers on Fargate Spot
# that scale to zero, plain HTTP on the internal ALB. Same variables as staging and prod.

environment = "dev"
region      = "us-east-1"
tags        = { CostCenter = "callpipe-dev" }

kms_deletion_window_in_days    = 7
force_destroy                  = true
log_retention_days             = 30
secret_recovery_window_in_days = 0

# Network
vpc_cidr             = "10.10.0.0/16"
availability_zones   = ["us-east-1a", "us-east-1b"]
public_subnet_cidrs  = ["10.10.0.0/24", "10.10.1.0/24"]
private_subnet_cidrs = ["10.10.16.0/20", "10.10.32.0/20"]
single_nat_gateway   = true

# Storage and queues
recordings_prefix                  = "incoming/"
recordings_suffixes                = [".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a"]
recordings_transitions             = []
artifacts_transitions              = []
noncurrent_version_expiration_days = 7

ingest_visibility_timeout_seconds     = 300
transcribe_visibility_timeout_seconds = 1800
index_visibility_timeout_seconds      = 300
max_receive_count                     = 3

# Search and cache
search_standby_replicas        = "DISABLED"
cache_node_type                = "cache.t4g.micro"
cache_num_cache_clusters       = 1
cache_multi_az_enabled         = false
cache_snapshot_retention_limit = 1

# MongoDB: the Atlas stack runs an M0 here (no PrivateLink on the shared tier)
mongodb_network_access = "ip_access_list"
mongodb_database       = "callpipe"

# Compute. image_tag is the release deployed here; CI passes -var image_tag=<git sha>.
image_tag         = "0.1.0"
gpu_image_tag     = ""
app_config_file   = "environments/dev/callpipe.toml"
extra_environment = { RUST_LOG = "info,callpipe=debug" }

services = {
  ingest     = { cpu = 512, memory = 1024, min_count = 0, max_count = 2, capacity_provider = "FARGATE_SPOT", target_backlog_per_task = 50 }
  transcribe = { cpu = 2048, memory = 4096, min_count = 0, max_count = 4, capacity_provider = "FARGATE_SPOT", target_backlog_per_task = 10 }
  index      = { cpu = 1024, memory = 2048, min_count = 0, max_count = 2, capacity_provider = "FARGATE_SPOT", target_backlog_per_task = 50 }
  api        = { cpu = 512, memory = 1024, min_count = 1, max_count = 2, target_cpu_percent = 60 }
  live       = { cpu = 512, memory = 1024, min_count = 1, max_count = 2, target_cpu_percent = 60 }
}

enable_execute_command = true

# No certificate in dev: the ALB is internal and admits only the VPC, so plain HTTP is
# accepted explicitly. staging and prod require a certificate.
certificate_arn                = ""
allow_http_without_certificate = true
alb_ingress_cidr_blocks        = []
alb_deletion_protection        = false

enable_gpu_transcription = false
gpu_instance_type        = "g6.xlarge"
gpu_min_size             = 0
gpu_max_size             = 1

# Backfill: weekly, Sunday 04:00 UTC
backfill_schedule_expression = "cron(0 4 ? * SUN *)"
backfill_schedule_enabled    = true
backfill_extra_args          = []

# Monitoring
alarm_email = ""
oldest_message_age_thresholds = {
  ingest     = 1800
  transcribe = 7200
  index      = 1800
  backfill   = 86400 # the lane waits behind uploads by design; retention is 4 days
}
