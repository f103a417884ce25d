# Partial S3 backend configuration of the AWS stack (terraform/stacks/callpipe), prod:
#   terraform -chdir=terraform/stacks/callpipe init -backend-config=../../../environments/prod/backend.hcl
# The state bucket and lock table are created once per account, outside these stacks.
bucket         = "callpipe-terraform-state-prod"
key            = "callpipe/prod/aws.tfstate"
region         = "us-east-1"
dynamodb_table = "callpipe-terraform-locks"
encrypt        = true
