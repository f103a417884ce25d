terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
    mongodbatlas = {
      source  = "mongodb/mongodbatlas"
      version = "~> 1.26"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }

  # Partial configuration from environments/<env>/atlas.backend.hcl.
  backend "s3" {}
}

provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}

# Credentials come from the environment: MONGODB_ATLAS_PUBLIC_KEY and
# MONGODB_ATLAS_PRIVATE_KEY (an Atlas organization API key with Project Creator).
provider "mongodbatlas" {}
