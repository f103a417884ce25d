# Partial S3 backend configuration of the Atlas stack (terraform/stacks/atlas), dev:
#   terraform -chdir=terraform/stacks/atlas init -backend-config=../../../environments/dev/atlas.backend.hcl
bucket         = "callpipe-terraform-state-dev"
key            = "callpipe/dev/atlas.tfstate"
region         = "us-east-1"
dynamodb_table = "callpipe-terraform-locks"
encrypt        = true
