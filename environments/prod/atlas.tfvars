# Atlas stack (terraform/stacks/atlas), prod: M20 over PrivateLink, snapshots plus continuous
# backup (point-in-time restore), termination protection.
environment = "prod"
region      = "us-east-1"

callpipe_state_bucket = "callpipe-terraform-state-prod"
callpipe_state_key    = "callpipe/prod/aws.tfstate"
callpipe_state_region = "us-east-1"

atlas_org_id                   = "000000000000000000000000"
cluster_tier                   = "M20"
node_count                     = 3
mongodb_major_version          = "8.0"
backup_enabled                 = true
pit_enabled                    = true
backup_retention_days          = 14
termination_protection_enabled = true
database_name                  = "callpipe"
password_rotation_id           = "1"
