# Partial S3 backend configuration of the Atlas stack (terraform/stacks/atlas), prod:
#   terraform -chdir=terraform/stacks/atlas init -backend-config=../../../environments/prod/atlas.backend.hcl
bucket         = "callpipe-terraform-state-prod"
key            = "callpipe/prod/atlas.tfstate"
region         = "us-east-1"
dynamodb_table = "callpipe-terraform-locks"
encrypt        = true
