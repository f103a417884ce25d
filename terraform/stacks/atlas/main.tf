# MongoDB Atlas for one environment, applied after the AWS stack (../callpipe), whose state
# it reads: the VPC, subnets and task security groups for the PrivateLink endpoint, the NAT
# IPs for an M0 access list, and the empty Secrets Manager secret this stack fills with the
# connection. The AWS stack never reads this one, so it plans, validates and applies without
# the mongodbatlas provider.

data "terraform_remote_state" "callpipe" {
  backend = "s3"

  config = {
    bucket = var.callpipe_state_bucket
    key    = var.callpipe_state_key
    region = var.callpipe_state_region
  }
}

locals {
  aws = data.terraform_remote_state.callpipe.outputs

  tags = merge(var.tags, {
    Project     = "callpipe"
    Environment = var.environment
    ManagedBy   = "terraform"
  })
}

module "database" {
  source = "../../modules/database"

  name                           = local.aws.name
  atlas_org_id                   = var.atlas_org_id
  region                         = local.aws.region
  cluster_tier                   = var.cluster_tier
  node_count                     = var.node_count
  mongodb_major_version          = var.mongodb_major_version
  backup_enabled                 = var.backup_enabled
  pit_enabled                    = var.pit_enabled
  backup_retention_days          = var.backup_retention_days
  termination_protection_enabled = var.termination_protection_enabled
  password_rotation_id           = var.password_rotation_id

  vpc_id                     = local.aws.vpc_id
  subnet_ids                 = local.aws.private_subnet_ids
  allowed_security_group_ids = local.aws.task_security_group_ids
  nat_public_ips             = local.aws.nat_public_ips

  database_name = var.database_name
  secret_arn    = local.aws.mongodb_secret_arn
}

# The AWS stack opened its task egress for one kind of access; refuse a tier that needs the
# other.
check "network_access_matches_aws_stack" {
  assert {
    condition     = module.database.network_access == local.aws.mongodb_network_access
    error_message = "The AWS stack has mongodb_network_access = ${local.aws.mongodb_network_access}, but tier ${var.cluster_tier} needs ${module.database.network_access}: change one of them."
  }
}
