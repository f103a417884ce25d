# Partial S3 backend configuration of the Atlas stack (terraform/stacks/atlas), staging:
#   terraform -chdir=terraform/stacks/atlas init -backend-config=../../../environments/staging/atlas.backend.hcl
bucket         = "callpipe-terraform-state-staging"
key            = "callpipe/staging/atlas.tfstate"
region         = "us-east-1"
dynamodb_table = "callpipe-terraform-locks"
encrypt        = true
