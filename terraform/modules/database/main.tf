locals {
  # M0 is Atlas's free shared tier: provider TENANT backed by AWS, a fixed shape (no node
  # count, no disk auto-scaling, no backups), and no PrivateLink or peering. Dedicated tiers
  # (M10+) run on AWS directly and are reached over PrivateLink.
  is_tenant       = var.cluster_tier == "M0"
  use_privatelink = !local.is_tenant
  atlas_region    = upper(replace(var.region, "-", "_"))

  backup_enabled = !local.is_tenant && var.backup_enabled
  pit_enabled    = local.backup_enabled && var.pit_enabled

  # With PrivateLink the cluster's connection strings include one per endpoint; pick ours.
  private_endpoints = flatten([
    for cs in mongodbatlas_advanced_cluster.this.connection_strings : cs.private_endpoint
  ])
  privatelink_srv = [
    for pe in local.private_endpoints : pe.srv_connection_string
    if contains([for e in pe.endpoints : e.endpoint_id], try(aws_vpc_endpoint.atlas[0].id, ""))
  ]
  srv_connection_string = (
    length(local.privatelink_srv) > 0
    ? local.privatelink_srv[0]
    : mongodbatlas_advanced_cluster.this.connection_strings[0].standard_srv
  )
  host = trimprefix(local.srv_connection_string, "mongodb+srv://")
  uri  = "mongodb+srv://${mongodbatlas_database_user.this.username}:${urlencode(random_password.this.result)}@${local.host}/${var.database_name}?retryWrites=true&w=majority&authSource=admin"
}

################################################################################
# Project
################################################################################

resource "mongodbatlas_project" "this" {
  name   = var.name
  org_id = var.atlas_org_id
}

################################################################################
# Network access: PrivateLink for dedicated tiers, the NAT gateways' IPs for M0
################################################################################

resource "mongodbatlas_privatelink_endpoint" "this" {
  count = local.use_privatelink ? 1 : 0

  project_id    = mongodbatlas_project.this.id
  provider_name = "AWS"
  region        = var.region
}

resource "aws_security_group" "privatelink" {
  count = local.use_privatelink ? 1 : 0

  name        = "${var.name}-atlas-privatelink"
  description = "MongoDB Atlas PrivateLink endpoint: from the callpipe tasks only"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-atlas-privatelink" })
}

# Atlas maps each cluster node to its own port on the endpoint, anywhere in 1024-65535.
resource "aws_vpc_security_group_ingress_rule" "privatelink" {
  #checkov:skip=CKV_AWS_25:The source is the task security groups (referenced_security_group_id), never 0.0.0.0/0; the range must span 1024-65535 because Atlas picks each node's port in it.
  for_each = local.use_privatelink ? var.allowed_security_group_ids : {}

  security_group_id            = aws_security_group.privatelink[0].id
  description                  = "MongoDB over PrivateLink from ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = 1024
  to_port                      = 65535
  referenced_security_group_id = each.value
}

resource "aws_vpc_endpoint" "atlas" {
  count = local.use_privatelink ? 1 : 0

  vpc_id             = var.vpc_id
  service_name       = mongodbatlas_privatelink_endpoint.this[0].endpoint_service_name
  vpc_endpoint_type  = "Interface"
  subnet_ids         = var.subnet_ids
  security_group_ids = [aws_security_group.privatelink[0].id]

  tags = merge(var.tags, { Name = "${var.name}-atlas" })
}

resource "mongodbatlas_privatelink_endpoint_service" "this" {
  count = local.use_privatelink ? 1 : 0

  project_id          = mongodbatlas_privatelink_endpoint.this[0].project_id
  private_link_id     = mongodbatlas_privatelink_endpoint.this[0].private_link_id
  endpoint_service_id = aws_vpc_endpoint.atlas[0].id
  provider_name       = "AWS"
}

# M0 has no private networking: the tasks reach its public, TLS-only endpoint through the NAT
# gateways, and only those addresses are on the access list.
resource "mongodbatlas_project_ip_access_list" "nat" {
  for_each = local.is_tenant ? toset(var.nat_public_ips) : toset([])

  project_id = mongodbatlas_project.this.id
  cidr_block = "${each.value}/32"
  comment    = "${var.name} NAT gateway"
}

################################################################################
# Cluster
################################################################################

resource "mongodbatlas_advanced_cluster" "this" {
  project_id                     = mongodbatlas_project.this.id
  name                           = var.name
  cluster_type                   = "REPLICASET"
  mongo_db_major_version         = local.is_tenant ? null : var.mongodb_major_version
  backup_enabled                 = local.backup_enabled
  pit_enabled                    = local.pit_enabled
  termination_protection_enabled = var.termination_protection_enabled

  replication_specs {
    region_configs {
      provider_name         = local.is_tenant ? "TENANT" : "AWS"
      backing_provider_name = local.is_tenant ? "AWS" : null
      region_name           = local.atlas_region
      priority              = 7

      electable_specs {
        instance_size = var.cluster_tier
        node_count    = local.is_tenant ? null : var.node_count
      }

      dynamic "auto_scaling" {
        for_each = local.is_tenant ? [] : [1]
        content {
          disk_gb_enabled = true
        }
      }
    }
  }

  # The private connection string exists only once the endpoint is connected.
  depends_on = [mongodbatlas_privatelink_endpoint_service.this]
}

resource "mongodbatlas_cloud_backup_schedule" "this" {
  count = local.backup_enabled ? 1 : 0

  project_id   = mongodbatlas_project.this.id
  cluster_name = mongodbatlas_advanced_cluster.this.name

  reference_hour_of_day    = 3
  reference_minute_of_hour = 0
  restore_window_days      = var.restore_window_days

  policy_item_daily {
    frequency_interval = 1
    retention_unit     = "days"
    retention_value    = var.backup_retention_days
  }

  policy_item_weekly {
    frequency_interval = 7
    retention_unit     = "weeks"
    retention_value    = 4
  }
}

################################################################################
# Database user: random password, stored with the URI in the (KMS-encrypted) Secrets
# Manager secret that the AWS stack created. Change rotation_id to rotate the password.
################################################################################

resource "random_password" "this" {
  length  = 40
  special = false

  keepers = {
    rotation_id = var.password_rotation_id
  }
}

resource "mongodbatlas_database_user" "this" {
  project_id         = mongodbatlas_project.this.id
  auth_database_name = "admin"
  username           = var.username
  password           = random_password.this.result

  roles {
    role_name     = "readWrite"
    database_name = var.database_name
  }

  scopes {
    name = mongodbatlas_advanced_cluster.this.name
    type = "CLUSTER"
  }
}

resource "aws_secretsmanager_secret_version" "this" {
  secret_id = var.secret_arn
  secret_string = jsonencode({
    uri      = local.uri
    username = mongodbatlas_database_user.this.username
    password = random_password.this.result
    host     = local.host
    database = var.database_name
  })
}
