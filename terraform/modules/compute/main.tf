data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  worker_stages = ["ingest", "transcribe", "index"]
  web_services  = ["api", "live"]

  worker_services = { for k, v in var.services : k => v if contains(local.worker_stages, k) }
  web_service_map = { for k, v in var.services : k => v if contains(local.web_services, k) }

  # Every task: the five services plus the scheduled backfill (a task without a service).
  tasks = merge(var.services, {
    backfill = {
      cpu                     = var.backfill_cpu
      memory                  = var.backfill_memory
      min_count               = 0
      max_count               = 0
      capacity_provider       = "FARGATE"
      target_backlog_per_task = 0
      target_cpu_percent      = 0
      ephemeral_storage_gib   = 21
    }
  })

  gpu_enabled = var.enable_gpu_transcription
  # Tasks placed on the GPU capacity provider (EC2) instead of Fargate.
  on_gpu = { for k in keys(local.tasks) : k => local.gpu_enabled && k == "transcribe" }

  config_dir = dirname(var.config_path)

  # The config file travels in the task definition (it holds no secrets) and is written to a
  # task-local volume before the binary starts, so one image serves every environment. The
  # command after the entry point is exactly the callpipe command line ("$@").
  entry_point = [
    "/bin/sh",
    "-c",
    "printf '%s' \"$CALLPIPE_CONFIG_TOML\" > ${var.config_path} && exec callpipe \"$@\"",
    "callpipe",
  ]

  commands = {
    ingest     = ["worker", "--stage", "ingest", "--config", var.config_path]
    transcribe = ["worker", "--stage", "transcribe", "--config", var.config_path]
    index      = ["worker", "--stage", "index", "--config", var.config_path]
    api        = ["serve", "--config", var.config_path]
    live       = ["live", "--config", var.config_path]
    backfill   = concat(["backfill", "--config", var.config_path], var.backfill_args)
  }

  # Deployment-specific values reach the app as CALLPIPE_SECTION__KEY overrides; secrets are
  # passed by ARN and read at run time with the task role, never as values.
  redis_env = {
    CALLPIPE_REDIS__ENDPOINT        = var.redis_endpoint
    CALLPIPE_REDIS__PORT            = tostring(var.redis_port)
    CALLPIPE_REDIS__TLS             = "true"
    CALLPIPE_REDIS__AUTH_SECRET_ARN = var.redis_auth_secret_arn
  }
  mongodb_env = {
    CALLPIPE_MONGODB__SECRET_ARN = var.mongodb_secret_arn
    CALLPIPE_MONGODB__DATABASE   = var.mongodb_database
  }
  opensearch_env = {
    CALLPIPE_OPENSEARCH__ENDPOINT = var.collection_endpoint
  }
  # Every task gets the settings of the backends callpipe.toml selects ([storage]
  # object_store = "s3", metadata = "mongodb", vector_index = "opensearch"), whether or not it
  # uses them: the binary validates the whole config at start-up, and a backend selected
  # without its settings fails there instead of falling back to a local one. None of them is a
  # secret, and each task role still grants only what that task touches.
  backend_env = merge({
    CALLPIPE_STORAGE__ARTIFACTS_BUCKET = var.artifacts_bucket_name
  }, local.mongodb_env, local.opensearch_env)
  gpu_env = local.gpu_enabled ? {
    CALLPIPE_TRANSCRIBE__DEVICE       = "cuda"
    CALLPIPE_TRANSCRIBE__COMPUTE_TYPE = "float16"
  } : {}

  # A worker stage's queues are all SQS or none (`callpipe config check --stage`): ingest
  # writes transcribe and, for the calls it rejects, index (the index stage records failures).
  # Ingest also reads the backfill lane, only when its own queue has nothing waiting; the
  # backfill task sends there (backfill_url set) and keeps ingest_url, which the lane needs.
  # tests/config_envs.rs runs `callpipe config check` with each task's map.
  task_env = {
    ingest = merge(local.backend_env, {
      CALLPIPE_STORAGE__RECORDINGS_BUCKET   = var.recordings_bucket_name
      CALLPIPE_QUEUE__INGEST_URL            = var.queue_urls["ingest"]
      CALLPIPE_QUEUE__BACKFILL_URL          = var.queue_urls["backfill"]
      CALLPIPE_QUEUE__TRANSCRIBE_URL        = var.queue_urls["transcribe"]
      CALLPIPE_QUEUE__INDEX_URL             = var.queue_urls["index"]
      CALLPIPE_WORKER__VISIBILITY_TIMEOUT_S = tostring(var.visibility_timeouts["ingest"])
    }, local.redis_env)
    transcribe = merge(local.backend_env, {
      CALLPIPE_QUEUE__TRANSCRIBE_URL        = var.queue_urls["transcribe"]
      CALLPIPE_QUEUE__INDEX_URL             = var.queue_urls["index"]
      CALLPIPE_WORKER__VISIBILITY_TIMEOUT_S = tostring(var.visibility_timeouts["transcribe"])
    }, local.redis_env, local.gpu_env)
    index = merge(local.backend_env, {
      CALLPIPE_QUEUE__INDEX_URL             = var.queue_urls["index"]
      CALLPIPE_WORKER__VISIBILITY_TIMEOUT_S = tostring(var.visibility_timeouts["index"])
    }, local.redis_env)
    api = merge(local.backend_env, {
      CALLPIPE_SERVE__LISTEN = "0.0.0.0:${var.container_port}"
    })
    live = merge(local.backend_env, {
      CALLPIPE_LIVE__LISTEN               = "0.0.0.0:${var.container_port}"
      CALLPIPE_STORAGE__RECORDINGS_BUCKET = var.recordings_bucket_name
    }, local.redis_env)
    # Redis: the admission control ([backfill] max_in_flight, rate) that every backfill
    # process shares; MongoDB (backend_env): the job checkpoints.
    backfill = merge(local.backend_env, {
      CALLPIPE_STORAGE__RECORDINGS_BUCKET = var.recordings_bucket_name
      CALLPIPE_QUEUE__INGEST_URL          = var.queue_urls["ingest"]
      CALLPIPE_QUEUE__BACKFILL_URL        = var.queue_urls["backfill"]
    }, local.redis_env)
  }

  images = {
    for k in keys(local.tasks) : k => (
      local.on_gpu[k]
      ? "${aws_ecr_repository.this[var.gpu_image_repository].repository_url}:${var.gpu_image_tag}"
      : "${aws_ecr_repository.this[var.image_repository].repository_url}:${var.image_tag}"
    )
  }

  container_definitions = {
    for k, t in local.tasks : k => {
      name       = k
      image      = local.images[k]
      essential  = true
      user       = var.container_user
      entryPoint = local.entry_point
      command    = local.commands[k]
      environment = [
        for name, value in merge(
          { AWS_REGION = local.region, CALLPIPE_CONFIG_TOML = var.config_toml },
          local.task_env[k],
          var.extra_environment,
        ) : { name = name, value = value }
      ]
      portMappings = contains(local.web_services, k) ? [{ containerPort = var.container_port, protocol = "tcp" }] : []
      # Read-only root: only the config directory and /tmp (task-local volumes) are writable.
      readonlyRootFilesystem = true
      mountPoints = [
        { sourceVolume = "config", containerPath = local.config_dir, readOnly = false },
        { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
      ]
      linuxParameters = { initProcessEnabled = true }
      # On SIGTERM a worker stops receiving and finishes or releases its messages; this is
      # how long ECS waits before SIGKILL (Fargate allows at most 120 s).
      stopTimeout          = contains(local.web_services, k) ? 30 : var.worker_stop_timeout
      resourceRequirements = local.on_gpu[k] ? [{ type = "GPU", value = "1" }] : null
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.task[k].name
          awslogs-region        = local.region
          awslogs-stream-prefix = k
        }
      }
    }
  }

  ecr_repository_arns = [for r in aws_ecr_repository.this : r.arn]
}

################################################################################
# KMS key: ECR images, task log groups, ECS Exec sessions
################################################################################

# A key policy is a resource policy: "*" is this key. The account root statement delegates
# everything else to IAM policies, which name this key's ARN.
locals {
  kms_key_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministration"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsUse"
        Effect    = "Allow"
        Principal = { Service = "logs.${local.region}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = { "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:/ecs/${var.name}/*" }
        }
      },
    ]
  })
}

resource "aws_kms_key" "this" {
  description             = "${var.name}: ECR images, ECS task logs and ECS Exec"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_in_days
  policy                  = local.kms_key_policy

  tags = var.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}-compute"
  target_key_id = aws_kms_key.this.key_id
}

################################################################################
# ECR
################################################################################

resource "aws_ecr_repository" "this" {
  for_each = toset(var.ecr_repositories)

  name                 = "${var.name}/${each.value}"
  image_tag_mutability = "IMMUTABLE"
  force_delete         = var.ecr_force_delete

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.this.arn
  }

  tags = var.tags
}

resource "aws_ecr_lifecycle_policy" "this" {
  for_each = aws_ecr_repository.this

  repository = each.value.name
  policy = jsonencode({
    rules = [
      {
        rulePriority = 1
        description  = "Expire untagged images after 7 days"
        selection = {
          tagStatus   = "untagged"
          countType   = "sinceImagePushed"
          countUnit   = "days"
          countNumber = 7
        }
        action = { type = "expire" }
      },
      {
        rulePriority = 2
        description  = "Keep the newest ${var.ecr_keep_images} images"
        selection = {
          tagStatus   = "any"
          countType   = "imageCountMoreThan"
          countNumber = var.ecr_keep_images
        }
        action = { type = "expire" }
      },
    ]
  })
}

################################################################################
# Log groups
################################################################################

resource "aws_cloudwatch_log_group" "task" {
  for_each = local.tasks

  name              = "/ecs/${var.name}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn

  tags = merge(var.tags, { Service = each.key })
}

resource "aws_cloudwatch_log_group" "exec" {
  name              = "/ecs/${var.name}/exec"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn

  tags = var.tags
}

################################################################################
# Cluster
################################################################################

resource "aws_ecs_cluster" "this" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  configuration {
    execute_command_configuration {
      kms_key_id = aws_kms_key.this.arn
      logging    = "OVERRIDE"

      log_configuration {
        cloud_watch_encryption_enabled = true
        cloud_watch_log_group_name     = aws_cloudwatch_log_group.exec.name
      }
    }
  }

  tags = var.tags
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = concat(["FARGATE", "FARGATE_SPOT"], aws_ecs_capacity_provider.gpu[*].name)

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

################################################################################
# Security groups: "workers" (queue stages and backfill; no ingress) and "web" (query API and
# live gateway; ingress from the ALB only). Both reach AWS APIs on 443, Redis and MongoDB.
################################################################################

resource "aws_security_group" "workers" {
  name        = "${var.name}-workers"
  description = "callpipe queue workers and backfill: no ingress"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-workers" })
}

resource "aws_security_group" "web" {
  name        = "${var.name}-web"
  description = "callpipe query API and live gateway: ingress from the internal ALB"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-web" })
}

locals {
  task_security_groups = {
    workers = aws_security_group.workers.id
    web     = aws_security_group.web.id
  }

  task_egress_rules = {
    https = {
      description = "HTTPS: AWS APIs (VPC endpoints, S3 gateway) and OpenSearch Serverless"
      from_port   = 443
      to_port     = 443
      cidr        = "0.0.0.0/0"
    }
    redis = {
      description = "Redis (ElastiCache) inside the VPC"
      from_port   = var.redis_port
      to_port     = var.redis_port
      cidr        = var.vpc_cidr_block
    }
    mongodb = {
      description = "MongoDB Atlas (${var.mongodb_egress.description})"
      from_port   = var.mongodb_egress.from_port
      to_port     = var.mongodb_egress.to_port
      cidr        = var.mongodb_egress.cidr_block
    }
  }

  task_egress = merge([
    for sg_key, sg_id in local.task_security_groups : {
      for rule_key, rule in local.task_egress_rules : "${sg_key}-${rule_key}" => merge(rule, { security_group_id = sg_id })
    }
  ]...)
}

resource "aws_vpc_security_group_egress_rule" "tasks" {
  for_each = local.task_egress

  security_group_id = each.value.security_group_id
  description       = each.value.description
  ip_protocol       = "tcp"
  from_port         = each.value.from_port
  to_port           = each.value.to_port
  cidr_ipv4         = each.value.cidr
}

resource "aws_vpc_security_group_ingress_rule" "web_from_alb" {
  security_group_id            = aws_security_group.web.id
  description                  = "Container port from the internal ALB"
  ip_protocol                  = "tcp"
  from_port                    = var.container_port
  to_port                      = var.container_port
  referenced_security_group_id = aws_security_group.alb.id
}

################################################################################
# IAM: one execution role (pull images, write logs) and one task role per task, scoped to
# exactly the buckets, queues, collection and secrets that task touches.
################################################################################

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:*"]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-ecs-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json

  tags = var.tags
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "EcrAuth"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid = "EcrPull"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:GetDownloadUrlForLayer",
      "ecr:BatchGetImage",
    ]
    resources = local.ecr_repository_arns
  }

  statement {
    sid       = "EcrImagesKey"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.this.arn]
  }

  statement {
    sid       = "WriteLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [for g in aws_cloudwatch_log_group.task : "${g.arn}:*"]
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "pull-and-log"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

locals {
  sqs_consume = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"]
  sqs_send    = ["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"]
  s3_read     = ["s3:GetObject", "s3:GetObjectVersion"]
  s3_write    = ["s3:PutObject", "s3:AbortMultipartUpload"]
  kms_use     = ["kms:Decrypt", "kms:GenerateDataKey"]

  statement_storage_key = { sid = "StorageKey", actions = local.kms_use, resources = [var.storage_kms_key_arn] }
  statement_queue_key   = { sid = "QueueKey", actions = local.kms_use, resources = [var.queue_kms_key_arn] }
  # ECS Exec: the session channel (not resource-scoped), its KMS key and its log group.
  statements_ecs_exec = [
    {
      sid       = "EcsExecChannels"
      actions   = ["ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel", "ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel"]
      resources = ["*"]
    },
    { sid = "EcsExecKey", actions = ["kms:Decrypt"], resources = [aws_kms_key.this.arn] },
    { sid = "EcsExecLogGroups", actions = ["logs:DescribeLogGroups"], resources = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*"] },
    { sid = "EcsExecLogs", actions = ["logs:CreateLogStream", "logs:PutLogEvents"], resources = ["${aws_cloudwatch_log_group.exec.arn}:*"] },
  ]

  task_statements = {
    ingest = [
      { sid = "ReadRecordings", actions = local.s3_read, resources = ["${var.recordings_bucket_arn}/*"] },
      { sid = "ListRecordings", actions = ["s3:ListBucket"], resources = [var.recordings_bucket_arn] },
      { sid = "WriteArtifacts", actions = local.s3_write, resources = ["${var.artifacts_bucket_arn}/*"] },
      { sid = "ConsumeIngestQueue", actions = local.sqs_consume, resources = [var.queue_arns["ingest"]] },
      # The backfill lane: received from only when the ingest queue has nothing waiting.
      { sid = "ConsumeBackfillQueue", actions = local.sqs_consume, resources = [var.queue_arns["backfill"]] },
      { sid = "SendTranscribeQueue", actions = local.sqs_send, resources = [var.queue_arns["transcribe"]] },
      # The calls ingest rejects go to the index stage, which records them.
      { sid = "SendIndexQueue", actions = local.sqs_send, resources = [var.queue_arns["index"]] },
      # Job leases and done markers in Redis: two ingest workers never take the same call.
      { sid = "ReadRedisSecret", actions = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"], resources = [var.redis_auth_secret_arn] },
      { sid = "SecretKey", actions = ["kms:Decrypt"], resources = [var.redis_kms_key_arn] },
      local.statement_storage_key,
      local.statement_queue_key,
    ]
    transcribe = [
      { sid = "ReadArtifacts", actions = local.s3_read, resources = ["${var.artifacts_bucket_arn}/*"] },
      { sid = "WriteArtifacts", actions = local.s3_write, resources = ["${var.artifacts_bucket_arn}/*"] },
      { sid = "ListArtifacts", actions = ["s3:ListBucket"], resources = [var.artifacts_bucket_arn] },
      { sid = "ConsumeTranscribeQueue", actions = local.sqs_consume, resources = [var.queue_arns["transcribe"]] },
      { sid = "SendIndexQueue", actions = local.sqs_send, resources = [var.queue_arns["index"]] },
      { sid = "ReadRedisSecret", actions = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"], resources = [var.redis_auth_secret_arn] },
      { sid = "SecretKey", actions = ["kms:Decrypt"], resources = [var.redis_kms_key_arn] },
      local.statement_storage_key,
      local.statement_queue_key,
    ]
    index = [
      { sid = "ReadArtifacts", actions = local.s3_read, resources = ["${var.artifacts_bucket_arn}/*"] },
      # Deletes a call's plan once it is indexed, and an earlier revision's transcript.
      { sid = "DeleteArtifacts", actions = ["s3:DeleteObject"], resources = ["${var.artifacts_bucket_arn}/*"] },
      { sid = "ListArtifacts", actions = ["s3:ListBucket"], resources = [var.artifacts_bucket_arn] },
      { sid = "ConsumeIndexQueue", actions = local.sqs_consume, resources = [var.queue_arns["index"]] },
      { sid = "SearchCollection", actions = ["aoss:APIAccessAll"], resources = [var.collection_arn] },
      { sid = "ReadSecrets", actions = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"], resources = [var.mongodb_secret_arn, var.redis_auth_secret_arn] },
      { sid = "SecretKeys", actions = ["kms:Decrypt"], resources = distinct([var.mongodb_secret_kms_key_arn, var.redis_kms_key_arn]) },
      { sid = "StorageKey", actions = ["kms:Decrypt"], resources = [var.storage_kms_key_arn] },
      { sid = "QueueKey", actions = ["kms:Decrypt"], resources = [var.queue_kms_key_arn] },
    ]
    # aoss:APIAccessAll is the only IAM action of the data plane; the collection's data access
    # policy narrows this role to ReadDocument and DescribeIndex.
    api = [
      { sid = "SearchCollection", actions = ["aoss:APIAccessAll"], resources = [var.collection_arn] },
      { sid = "ReadMongoSecret", actions = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"], resources = [var.mongodb_secret_arn] },
      { sid = "SecretKey", actions = ["kms:Decrypt"], resources = [var.mongodb_secret_kms_key_arn] },
    ]
    live = [
      { sid = "WriteRecordings", actions = local.s3_write, resources = ["${var.recordings_bucket_arn}/*"] },
      { sid = "ReadRedisSecret", actions = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"], resources = [var.redis_auth_secret_arn] },
      { sid = "SecretKey", actions = ["kms:Decrypt"], resources = [var.redis_kms_key_arn] },
      local.statement_storage_key,
    ]
    # Lists the recordings (ListObjectsV2; it reads no object), sends to the backfill lane
    # (GetQueueAttributes: its depth), admits calls through Redis and checkpoints its jobs in
    # MongoDB. With backfill_url set it never sends to the ingest queue.
    backfill = [
      { sid = "ListRecordings", actions = ["s3:ListBucket"], resources = [var.recordings_bucket_arn] },
      { sid = "SendBackfillQueue", actions = local.sqs_send, resources = [var.queue_arns["backfill"]] },
      { sid = "ReadSecrets", actions = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"], resources = [var.mongodb_secret_arn, var.redis_auth_secret_arn] },
      { sid = "SecretKeys", actions = ["kms:Decrypt"], resources = distinct([var.mongodb_secret_kms_key_arn, var.redis_kms_key_arn]) },
      local.statement_queue_key,
    ]
  }
}

resource "aws_iam_role" "task" {
  for_each = local.tasks

  name               = "${var.name}-${each.key}-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json

  tags = merge(var.tags, { Service = each.key })
}

data "aws_iam_policy_document" "task" {
  for_each = local.tasks

  dynamic "statement" {
    for_each = concat(local.task_statements[each.key], var.enable_execute_command ? local.statements_ecs_exec : [])
    content {
      sid       = statement.value.sid
      actions   = statement.value.actions
      resources = statement.value.resources
    }
  }
}

resource "aws_iam_role_policy" "task" {
  for_each = local.tasks

  name   = "${each.key}-access"
  role   = aws_iam_role.task[each.key].id
  policy = data.aws_iam_policy_document.task[each.key].json
}

################################################################################
# Task definitions and services
################################################################################

resource "aws_ecs_task_definition" "this" {
  for_each = local.tasks

  family                   = "${var.name}-${each.key}"
  requires_compatibilities = local.on_gpu[each.key] ? ["EC2"] : ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = tostring(each.value.cpu)
  memory                   = tostring(each.value.memory)
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task[each.key].arn
  container_definitions    = jsonencode([local.container_definitions[each.key]])

  volume {
    name = "config"
  }

  volume {
    name = "tmp"
  }

  dynamic "runtime_platform" {
    for_each = local.on_gpu[each.key] ? [] : [1]
    content {
      operating_system_family = "LINUX"
      cpu_architecture        = "X86_64"
    }
  }

  dynamic "ephemeral_storage" {
    for_each = !local.on_gpu[each.key] && each.value.ephemeral_storage_gib > 21 ? [1] : []
    content {
      size_in_gib = each.value.ephemeral_storage_gib
    }
  }

  tags = merge(var.tags, { Service = each.key })
}

resource "aws_ecs_service" "this" {
  for_each = var.services

  name                    = each.key
  cluster                 = aws_ecs_cluster.this.id
  task_definition         = aws_ecs_task_definition.this[each.key].arn
  desired_count           = each.value.min_count
  platform_version        = local.on_gpu[each.key] ? null : "LATEST"
  enable_execute_command  = var.enable_execute_command
  enable_ecs_managed_tags = true
  propagate_tags          = "SERVICE"
  wait_for_steady_state   = false

  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = contains(local.web_services, each.key) ? 60 : null

  capacity_provider_strategy {
    capacity_provider = local.on_gpu[each.key] ? aws_ecs_capacity_provider.gpu[0].name : each.value.capacity_provider
    weight            = 1
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [contains(local.web_services, each.key) ? aws_security_group.web.id : aws_security_group.workers.id]
    assign_public_ip = false
  }

  dynamic "load_balancer" {
    for_each = contains(local.web_services, each.key) ? [1] : []
    content {
      target_group_arn = aws_lb_target_group.this[each.key].arn
      container_name   = each.key
      container_port   = var.container_port
    }
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  tags = merge(var.tags, { Service = each.key })

  # Application Auto Scaling owns the desired count after creation.
  lifecycle {
    ignore_changes = [desired_count]
  }

  depends_on = [
    aws_lb_listener.https,
    aws_lb_listener.http,
    aws_ecs_cluster_capacity_providers.this,
    aws_iam_role_policy.task,
  ]
}

################################################################################
# Auto scaling. Queue stages track backlog per task: ApproximateNumberOfMessagesVisible of the
# stage's queues divided by the service's RunningTaskCount (Container Insights), held at the
# service's target_backlog_per_task. Target tracking cannot leave zero tasks (the ratio has no
# denominator), so a service whose minimum is 0 gets a step policy that starts one task when
# messages wait and none runs. The API and live gateway track average CPU.
################################################################################

locals {
  # The queues whose waiting messages are a stage's backlog. Ingest also reads the backfill
  # lane (only when its own queue is empty, but it is still ingest work): counting it lets a
  # backfill start and scale the ingest service like uploads do, up to max_count; the
  # backfill's max_in_flight bounds how many of its messages wait.
  backlog_queues = {
    ingest     = ["ingest", "backfill"]
    transcribe = ["transcribe"]
    index      = ["index"]
  }
  # Metric ids per stage and queue. A stage with one queue uses that queue's metric as
  # `visible`; ingest adds its two as an array, SUM([...]), rather than with `+`, which has no
  # value where either series has none (an idle, empty queue stops publishing its metrics).
  backlog_metric_ids = {
    for stage, queues in local.backlog_queues : stage => {
      for q in queues : q => length(queues) == 1 ? "visible" : "visible_${q}"
    }
  }
  backlog_sum = {
    for stage, ids in local.backlog_metric_ids : stage => "SUM([${join(", ", values(ids))}])" if length(ids) > 1
  }
  backlog_queue_names = {
    for stage, queues in local.backlog_queues : stage => join(" + ", [for q in queues : var.queue_names[q]])
  }
}

resource "aws_appautoscaling_target" "this" {
  for_each = var.services

  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.this[each.key].name}"
  min_capacity       = each.value.min_count
  max_capacity       = each.value.max_count

  tags = var.tags
}

resource "aws_appautoscaling_policy" "backlog" {
  for_each = local.worker_services

  name               = "${var.name}-${each.key}-backlog-per-task"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this[each.key].service_namespace
  scalable_dimension = aws_appautoscaling_target.this[each.key].scalable_dimension
  resource_id        = aws_appautoscaling_target.this[each.key].resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = each.value.target_backlog_per_task
    scale_out_cooldown = 60
    scale_in_cooldown  = 300

    customized_metric_specification {
      dynamic "metrics" {
        for_each = local.backlog_metric_ids[each.key]
        content {
          id          = metrics.value
          label       = "Messages waiting in ${var.queue_names[metrics.key]}"
          return_data = false

          metric_stat {
            stat = "Sum"

            metric {
              namespace   = "AWS/SQS"
              metric_name = "ApproximateNumberOfMessagesVisible"

              dimensions {
                name  = "QueueName"
                value = var.queue_names[metrics.key]
              }
            }
          }
        }
      }

      dynamic "metrics" {
        for_each = contains(keys(local.backlog_sum), each.key) ? [local.backlog_sum[each.key]] : []
        content {
          id          = "visible"
          label       = "Messages waiting in ${local.backlog_queue_names[each.key]}"
          expression  = metrics.value
          return_data = false
        }
      }

      metrics {
        id          = "running"
        label       = "Running ${each.key} tasks"
        return_data = false

        metric_stat {
          stat = "Average"

          metric {
            namespace   = "ECS/ContainerInsights"
            metric_name = "RunningTaskCount"

            dimensions {
              name  = "ClusterName"
              value = aws_ecs_cluster.this.name
            }

            dimensions {
              name  = "ServiceName"
              value = aws_ecs_service.this[each.key].name
            }
          }
        }
      }

      metrics {
        id          = "backlog_per_task"
        label       = "Backlog per ${each.key} task"
        expression  = "IF(running > 0, visible / running, visible)"
        return_data = true
      }
    }
  }
}

resource "aws_appautoscaling_policy" "wake" {
  for_each = { for k, v in local.worker_services : k => v if v.min_count == 0 }

  name               = "${var.name}-${each.key}-start-from-zero"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.this[each.key].service_namespace
  scalable_dimension = aws_appautoscaling_target.this[each.key].scalable_dimension
  resource_id        = aws_appautoscaling_target.this[each.key].resource_id

  step_scaling_policy_configuration {
    adjustment_type         = "ChangeInCapacity"
    cooldown                = 60
    metric_aggregation_type = "Maximum"

    step_adjustment {
      metric_interval_lower_bound = 0
      scaling_adjustment          = 1
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "wake" {
  for_each = aws_appautoscaling_policy.wake

  alarm_name          = "${var.name}-${each.key}-start-from-zero"
  alarm_description   = "Messages wait in ${local.backlog_queue_names[each.key]} and no ${each.key} task runs: start one (scaling, not paging)."
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  evaluation_periods  = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = [each.value.arn]

  dynamic "metric_query" {
    for_each = local.backlog_metric_ids[each.key]
    content {
      id          = metric_query.value
      return_data = false

      metric {
        namespace   = "AWS/SQS"
        metric_name = "ApproximateNumberOfMessagesVisible"
        period      = 60
        stat        = "Maximum"
        dimensions  = { QueueName = var.queue_names[metric_query.key] }
      }
    }
  }

  dynamic "metric_query" {
    for_each = contains(keys(local.backlog_sum), each.key) ? [local.backlog_sum[each.key]] : []
    content {
      id          = "visible"
      expression  = metric_query.value
      label       = "Messages waiting in ${local.backlog_queue_names[each.key]}"
      return_data = false
    }
  }

  metric_query {
    id          = "running"
    return_data = false

    metric {
      namespace   = "ECS/ContainerInsights"
      metric_name = "RunningTaskCount"
      period      = 60
      stat        = "Maximum"
      dimensions  = { ClusterName = aws_ecs_cluster.this.name, ServiceName = each.key }
    }
  }

  metric_query {
    id          = "idle_with_backlog"
    expression  = "IF(FILL(running, 0) == 0 AND visible > 0, 1, 0)"
    label       = "Backlog with no running task"
    return_data = true
  }

  tags = var.tags
}

resource "aws_appautoscaling_policy" "cpu" {
  for_each = local.web_service_map

  name               = "${var.name}-${each.key}-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this[each.key].service_namespace
  scalable_dimension = aws_appautoscaling_target.this[each.key].scalable_dimension
  resource_id        = aws_appautoscaling_target.this[each.key].resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = each.value.target_cpu_percent
    scale_out_cooldown = 60
    scale_in_cooldown  = 300

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

################################################################################
# Internal ALB for the query API (default) and the live gateway (live_path_patterns).
# HTTPS needs certificate_arn; without one the listener is plain HTTP, which the module
# accepts only when allow_http_without_certificate is set (dev: the ALB is internal and its
# security group admits only alb_ingress_cidr_blocks).
################################################################################

locals {
  tls_enabled = var.certificate_arn != ""
  alb_ports   = local.tls_enabled ? [443, 80] : [80]
  alb_ingress = {
    for pair in setproduct(local.alb_ports, var.alb_ingress_cidr_blocks) : "${pair[0]}-${pair[1]}" => {
      port = pair[0]
      cidr = pair[1]
    }
  }
  listener_arn = one(concat(aws_lb_listener.https[*].arn, aws_lb_listener.http[*].arn))
}

resource "aws_security_group" "alb" {
  name        = "${var.name}-alb"
  description = "Internal ALB of the callpipe query API and live gateway"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-alb" })
}

resource "aws_vpc_security_group_ingress_rule" "alb" {
  for_each = local.alb_ingress

  security_group_id = aws_security_group.alb.id
  description       = "HTTP(S) on ${each.value.port} from ${each.value.cidr}"
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = each.value.cidr
}

resource "aws_vpc_security_group_egress_rule" "alb_to_web" {
  security_group_id            = aws_security_group.alb.id
  description                  = "To the API and live gateway tasks"
  ip_protocol                  = "tcp"
  from_port                    = var.container_port
  to_port                      = var.container_port
  referenced_security_group_id = aws_security_group.web.id
}

resource "aws_lb" "this" {
  #checkov:skip=CKV2_AWS_20:With a certificate, port 80 only redirects to HTTPS (aws_lb_listener.http_redirect); without one (dev, allow_http_without_certificate) there is no HTTPS listener to redirect to.
  #checkov:skip=CKV2_AWS_28:Internal ALB reachable only from alb_ingress_cidr_blocks inside the private network; WAF is for internet-facing load balancers.
  name                       = substr("${var.name}-int", 0, 32)
  internal                   = true
  load_balancer_type         = "application"
  security_groups            = [aws_security_group.alb.id]
  subnets                    = var.private_subnet_ids
  drop_invalid_header_fields = true
  enable_deletion_protection = var.alb_deletion_protection
  idle_timeout               = var.alb_idle_timeout

  access_logs {
    bucket  = var.access_logs_bucket
    prefix  = "alb"
    enabled = true
  }

  tags = var.tags
}

resource "aws_lb_target_group" "this" {
  #checkov:skip=CKV_AWS_378:TLS ends at the internal ALB; the hop to the task stays in the private subnets, and the task security group admits only the ALB.
  for_each = local.web_service_map

  name                 = substr("${var.name}-${each.key}", 0, 32)
  port                 = var.container_port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = each.key == "live" ? var.live_deregistration_delay : 30

  health_check {
    path                = var.health_check_path
    matcher             = "200"
    interval            = 15
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  tags = merge(var.tags, { Service = each.key })
}

resource "aws_lb_listener" "https" {
  count = local.tls_enabled ? 1 : 0

  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = var.alb_ssl_policy
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this["api"].arn
  }

  tags = var.tags
}

resource "aws_lb_listener" "http_redirect" {
  count = local.tls_enabled ? 1 : 0

  load_balancer_arn = aws_lb.this.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = "redirect"

    redirect {
      port        = "443"
      protocol    = "HTTPS"
      status_code = "HTTP_301"
    }
  }

  tags = var.tags
}

resource "aws_lb_listener" "http" {
  #checkov:skip=CKV_AWS_2:Plain HTTP only when no certificate is given and allow_http_without_certificate is set (dev): an internal ALB open to alb_ingress_cidr_blocks only. A precondition refuses it otherwise.
  #checkov:skip=CKV_AWS_103:Same listener: no TLS at all, so no TLS version to pin; with a certificate the HTTPS listener uses alb_ssl_policy (TLS 1.2+).
  count = local.tls_enabled ? 0 : 1

  load_balancer_arn = aws_lb.this.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this["api"].arn
  }

  tags = var.tags

  lifecycle {
    precondition {
      condition     = var.allow_http_without_certificate
      error_message = "certificate_arn is empty: give an ACM certificate ARN for HTTPS, or set allow_http_without_certificate = true (dev only) to accept plain HTTP on the internal ALB."
    }
  }
}

resource "aws_lb_listener_rule" "live" {
  listener_arn = local.listener_arn
  priority     = 10

  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this["live"].arn
  }

  condition {
    path_pattern {
      values = var.live_path_patterns
    }
  }

  tags = var.tags
}

################################################################################
# Optional GPU capacity for the transcribe stage: an EC2 Auto Scaling group of GPU instances
# running the ECS GPU-optimised AMI, managed by an ECS capacity provider.
################################################################################

data "aws_ssm_parameter" "gpu_ami" {
  count = local.gpu_enabled ? 1 : 0

  name = var.gpu_ami_ssm_parameter
}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "gpu_instance" {
  count = local.gpu_enabled ? 1 : 0

  name               = "${var.name}-gpu-instance"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "gpu_instance" {
  count = local.gpu_enabled ? 1 : 0

  role       = aws_iam_role.gpu_instance[0].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
}

resource "aws_iam_instance_profile" "gpu" {
  count = local.gpu_enabled ? 1 : 0

  name = "${var.name}-gpu-instance"
  role = aws_iam_role.gpu_instance[0].name

  tags = var.tags
}

resource "aws_launch_template" "gpu" {
  count = local.gpu_enabled ? 1 : 0

  name_prefix            = "${var.name}-gpu-"
  image_id               = data.aws_ssm_parameter.gpu_ami[0].insecure_value
  instance_type          = var.gpu_instance_type
  vpc_security_group_ids = [aws_security_group.workers.id]
  update_default_version = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.gpu[0].arn
  }

  # IMDSv2 only, and one hop: containers cannot reach the instance role's credentials.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_size           = var.gpu_root_volume_size
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = var.gpu_ebs_kms_key_arn
      delete_on_termination = true
    }
  }

  monitoring {
    enabled = true
  }

  user_data = base64encode(<<-EOT
    #!/bin/bash
    cat >> /etc/ecs/ecs.config <<'EOF'
    ECS_CLUSTER=${var.name}
    ECS_ENABLE_GPU_SUPPORT=true
    ECS_ENABLE_TASK_IAM_ROLE=true
    ECS_CONTAINER_STOP_TIMEOUT=${var.worker_stop_timeout}s
    EOF
  EOT
  )

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = "${var.name}-gpu" })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(var.tags, { Name = "${var.name}-gpu" })
  }

  tags = var.tags
}

resource "aws_autoscaling_group" "gpu" {
  count = local.gpu_enabled ? 1 : 0

  name                  = "${var.name}-gpu"
  min_size              = var.gpu_min_size
  max_size              = var.gpu_max_size
  vpc_zone_identifier   = var.private_subnet_ids
  protect_from_scale_in = true
  health_check_type     = "EC2"

  launch_template {
    id      = aws_launch_template.gpu[0].id
    version = aws_launch_template.gpu[0].latest_version
  }

  tag {
    key                 = "AmazonECSManaged"
    value               = "true"
    propagate_at_launch = true
  }

  tag {
    key                 = "Name"
    value               = "${var.name}-gpu"
    propagate_at_launch = true
  }

  dynamic "tag" {
    for_each = var.tags
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  # The capacity provider's managed scaling owns the desired capacity.
  lifecycle {
    ignore_changes = [desired_capacity]
  }
}

resource "aws_ecs_capacity_provider" "gpu" {
  count = local.gpu_enabled ? 1 : 0

  name = "${var.name}-gpu"

  auto_scaling_group_provider {
    auto_scaling_group_arn         = aws_autoscaling_group.gpu[0].arn
    managed_termination_protection = "ENABLED"

    managed_scaling {
      status                    = "ENABLED"
      target_capacity           = 100
      minimum_scaling_step_size = 1
      maximum_scaling_step_size = 2
    }
  }

  tags = var.tags
}
