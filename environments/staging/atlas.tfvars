# Atlas stack (terraform/stacks/atlas), staging: M10 over PrivateLink, daily snapshots.
environment = "staging"
region      = "us-east-1"

callpipe_state_bucket = "callpipe-terraform-state-staging"
callpipe_state_key    = "callpipe/staging/aws.tfstate"
callpipe_state_region = "us-east-1"

atlas_org_id                   = "000000000000000000000000"
cluster_tier                   = "M10"
node_count                     = 3
mongodb_major_version          = "8.0"
backup_enabled                 = true
pit_enabled                    = false
backup_retention_days          = 3
termination_protection_enabled = false
database_name                  = "callpipe"
password_rotation_id           = "1"
