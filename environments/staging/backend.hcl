# Partial S3 backend configuration of the AWS stack (terraform/stacks/callpipe), staging:
#   terraform -chdir=terraform/stacks/callpipe init -backend-config=../../../environments/staging/backend.hcl
# The state bucket and lock table are created once per account, outside these stacks.
bucket         = "callpipe-terraform-state-staging"
key            = "callpipe/staging/aws.tfstate"
region         = "us-east-1"
dynamodb_table = "callpipe-terraform-locks"
encrypt        = true
