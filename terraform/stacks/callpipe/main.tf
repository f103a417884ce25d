# The AWS part of callpipe for one environment. MongoDB Atlas lives in its own root
# (../atlas), applied after this one: this stack creates the (empty) Secrets Manager secret
# for the MongoDB connection, and the Atlas stack reads this stack's outputs from remote state
# and writes the connection into that secret. Nothing here needs the mongodbatlas provider.

locals {
  name = "callpipe-${var.environment}"

  tags = merge(var.tags, {
    Project     = "callpipe"
    Environment = var.environment
    ManagedBy   = "terraform"
  })

  # Reaching Atlas: a PrivateLink endpoint in the VPC (M10+) uses ports 1024-65535 on the
  # endpoint's addresses; the shared M0 tier has no PrivateLink, so tasks reach its public
  # endpoint through the NAT gateways, whose IPs are the Atlas IP access list.
  mongodb_egress = var.mongodb_network_access == "privatelink" ? {
    description = "PrivateLink endpoint inside the VPC"
    from_port   = 1024
    to_port     = 65535
    cidr_block  = module.networking.vpc_cidr_block
    } : {
    description = "public endpoint through the NAT gateways, M0 IP access list"
    from_port   = 27015
    to_port     = 27017
    cidr_block  = "0.0.0.0/0"
  }

  alb_ingress_cidr_blocks = length(var.alb_ingress_cidr_blocks) > 0 ? var.alb_ingress_cidr_blocks : [var.vpc_cidr]

  task_security_group_ids = {
    workers = module.compute.worker_security_group_id
    web     = module.compute.web_security_group_id
  }
}

module "networking" {
  source = "../../modules/networking"

  name                        = local.name
  vpc_cidr                    = var.vpc_cidr
  availability_zones          = var.availability_zones
  public_subnet_cidrs         = var.public_subnet_cidrs
  private_subnet_cidrs        = var.private_subnet_cidrs
  single_nat_gateway          = var.single_nat_gateway
  flow_logs_retention_days    = var.log_retention_days
  kms_deletion_window_in_days = var.kms_deletion_window_in_days
}

module "storage" {
  source = "../../modules/storage"

  name                               = local.name
  force_destroy                      = var.force_destroy
  ingest_queue_arn                   = module.queue.ingest_queue_arn
  notification_filter_prefix         = var.recordings_prefix
  notification_filter_suffixes       = var.recordings_suffixes
  recordings_transitions             = var.recordings_transitions
  artifacts_transitions              = var.artifacts_transitions
  noncurrent_version_expiration_days = var.noncurrent_version_expiration_days
  logs_expiration_days               = var.log_retention_days
  kms_deletion_window_in_days        = var.kms_deletion_window_in_days
}

module "queue" {
  source = "../../modules/queue"

  name                                  = local.name
  recordings_bucket_arn                 = module.storage.recordings_bucket_arn
  ingest_visibility_timeout_seconds     = var.ingest_visibility_timeout_seconds
  transcribe_visibility_timeout_seconds = var.transcribe_visibility_timeout_seconds
  index_visibility_timeout_seconds      = var.index_visibility_timeout_seconds
  max_receive_count                     = var.max_receive_count
  kms_deletion_window_in_days           = var.kms_deletion_window_in_days

  # The backfill lane is ingest work, read by the same workers with the same lease.
  backfill_visibility_timeout_seconds = var.ingest_visibility_timeout_seconds
}

module "search" {
  source = "../../modules/search"

  name                        = local.name
  collection_name             = local.name
  standby_replicas            = var.search_standby_replicas
  vpc_id                      = module.networking.vpc_id
  subnet_ids                  = module.networking.private_subnet_ids
  allowed_security_group_ids  = local.task_security_group_ids
  index_principal_arns        = [module.compute.task_role_arns["index"]]
  query_principal_arns        = [module.compute.task_role_arns["api"]]
  kms_deletion_window_in_days = var.kms_deletion_window_in_days
}

module "cache" {
  source = "../../modules/cache"

  name                           = local.name
  vpc_id                         = module.networking.vpc_id
  subnet_ids                     = module.networking.private_subnet_ids
  allowed_security_group_ids     = local.task_security_group_ids
  node_type                      = var.cache_node_type
  num_cache_clusters             = var.cache_num_cache_clusters
  multi_az_enabled               = var.cache_multi_az_enabled
  snapshot_retention_limit       = var.cache_snapshot_retention_limit
  log_retention_days             = var.log_retention_days
  secret_recovery_window_in_days = var.secret_recovery_window_in_days
  kms_deletion_window_in_days    = var.kms_deletion_window_in_days
}

################################################################################
# The MongoDB connection secret: created empty here, filled by the Atlas stack.
################################################################################

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

# A key policy is a resource policy: "*" is this key. The account root statement delegates
# everything else to IAM policies, which name this key's ARN.
locals {
  mongodb_secret_kms_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministration"
        Effect    = "Allow"
        Principal = { AWS = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
    ]
  })
}

resource "aws_kms_key" "mongodb_secret" {
  description             = "${local.name}: MongoDB Atlas connection secret"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_in_days
  policy                  = local.mongodb_secret_kms_policy
}

resource "aws_kms_alias" "mongodb_secret" {
  name          = "alias/${local.name}-mongodb-secret"
  target_key_id = aws_kms_key.mongodb_secret.key_id
}

resource "aws_secretsmanager_secret" "mongodb" {
  #checkov:skip=CKV2_AWS_57:The password is generated by the Atlas stack; rotating it means re-applying that stack with a new rotation_id (README), which updates Atlas and this secret together.
  name                    = "${local.name}/mongodb/connection"
  description             = "MongoDB Atlas connection of ${local.name} (JSON: uri, username, password, database), written by the Atlas stack"
  kms_key_id              = aws_kms_key.mongodb_secret.arn
  recovery_window_in_days = var.secret_recovery_window_in_days
}

################################################################################
# Compute, schedule, monitoring
################################################################################

module "compute" {
  source = "../../modules/compute"

  name               = local.name
  vpc_id             = module.networking.vpc_id
  vpc_cidr_block     = module.networking.vpc_cidr_block
  private_subnet_ids = module.networking.private_subnet_ids
  mongodb_egress     = local.mongodb_egress

  image_tag        = var.image_tag
  gpu_image_tag    = var.gpu_image_tag
  ecr_force_delete = var.force_destroy
  config_toml      = file("${path.root}/../../../${var.app_config_file}")

  extra_environment      = var.extra_environment
  services               = var.services
  backfill_args          = concat(["s3://${module.storage.recordings_bucket_id}/${var.recordings_prefix}"], var.backfill_extra_args)
  enable_execute_command = var.enable_execute_command

  recordings_bucket_name = module.storage.recordings_bucket_id
  recordings_bucket_arn  = module.storage.recordings_bucket_arn
  artifacts_bucket_name  = module.storage.artifacts_bucket_id
  artifacts_bucket_arn   = module.storage.artifacts_bucket_arn
  storage_kms_key_arn    = module.storage.kms_key_arn

  queue_urls          = module.queue.queue_urls
  queue_arns          = module.queue.queue_arns
  queue_names         = module.queue.queue_names
  visibility_timeouts = module.queue.visibility_timeouts
  queue_kms_key_arn   = module.queue.kms_key_arn

  collection_arn      = module.search.collection_arn
  collection_endpoint = module.search.collection_endpoint

  mongodb_secret_arn         = aws_secretsmanager_secret.mongodb.arn
  mongodb_secret_kms_key_arn = aws_kms_key.mongodb_secret.arn
  mongodb_database           = var.mongodb_database

  redis_endpoint        = module.cache.primary_endpoint_address
  redis_port            = module.cache.port
  redis_auth_secret_arn = module.cache.auth_secret_arn
  redis_kms_key_arn     = module.cache.kms_key_arn

  log_retention_days             = var.log_retention_days
  certificate_arn                = var.certificate_arn
  allow_http_without_certificate = var.allow_http_without_certificate
  alb_ingress_cidr_blocks        = local.alb_ingress_cidr_blocks
  alb_deletion_protection        = var.alb_deletion_protection
  access_logs_bucket             = module.storage.logs_bucket_id

  enable_gpu_transcription = var.enable_gpu_transcription
  gpu_instance_type        = var.gpu_instance_type
  gpu_min_size             = var.gpu_min_size
  gpu_max_size             = var.gpu_max_size

  kms_deletion_window_in_days = var.kms_deletion_window_in_days
}

module "scheduler" {
  source = "../../modules/scheduler"

  name                        = local.name
  schedule_expression         = var.backfill_schedule_expression
  enabled                     = var.backfill_schedule_enabled
  cluster_arn                 = module.compute.cluster_arn
  task_definition_arn         = module.compute.backfill_task_definition_arn
  task_role_arn               = module.compute.task_role_arns["backfill"]
  execution_role_arn          = module.compute.execution_role_arn
  subnet_ids                  = module.networking.private_subnet_ids
  security_group_ids          = [module.compute.worker_security_group_id]
  kms_deletion_window_in_days = var.kms_deletion_window_in_days
}

module "monitoring" {
  source = "../../modules/monitoring"

  name        = local.name
  alarm_email = var.alarm_email
  queue_names = module.queue.queue_names
  dlq_names = merge(
    module.queue.dlq_names,
    { backfill-schedule = module.scheduler.dlq_name },
  )
  oldest_message_age_thresholds = var.oldest_message_age_thresholds
  cluster_name                  = module.compute.cluster_name
  cluster_arn                   = module.compute.cluster_arn
  service_names                 = module.compute.service_names
  search_log_group_names = {
    index = module.compute.log_group_names["index"]
    api   = module.compute.log_group_names["api"]
  }
  collection_id               = module.search.collection_id
  collection_name             = module.search.collection_name
  kms_deletion_window_in_days = var.kms_deletion_window_in_days
}
