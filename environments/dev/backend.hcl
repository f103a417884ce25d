# Partial S3 backend configuration of the AWS stack (terraform/stacks/callpipe), dev:
#   terraform -chdir=terraform/stacks/callpipe init -backend-config=../../../environments/dev/backend.hcl
# The state bucket and lock table are created once per account, outside these stacks.
bucket         = "callpipe-terraform-state-dev"
key            = "callpipe/dev/aws.tfstate"
region         = "us-east-1"
dynamodb_table = "callpipe-terraform-locks"
encrypt        = true
