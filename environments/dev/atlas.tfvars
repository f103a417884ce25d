# Atlas stack (terraform/stacks/atlas), dev: the free M0 shared tier, reached through the NAT
# gateway's IP (the AWS stack has mongodb_network_access = "ip_access_list").
environment = "dev"
region      = "us-east-1"

callpipe_state_bucket = "callpipe-terraform-state-dev"
callpipe_state_key    = "callpipe/dev/aws.tfstate"
callpipe_state_region = "us-east-1"

atlas_org_id                   = "000000000000000000000000"
cluster_tier                   = "M0"
node_count                     = 3
mongodb_major_version          = "8.0"
backup_enabled                 = false
pit_enabled                    = false
backup_retention_days          = 1
termination_protection_enabled = false
database_name                  = "callpipe"
password_rotation_id           = "1"
