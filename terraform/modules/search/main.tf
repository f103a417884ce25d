data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  index_resource = "index/${var.collection_name}/*"

  data_access_rules = concat(
    length(var.index_principal_arns) == 0 ? [] : [{
      Description = "Index stage: create and update the indexes, write and read segment vectors"
      Rules = [{
        ResourceType = "index"
        Resource     = [local.index_resource]
        Permission = [
          "aoss:CreateIndex",
          "aoss:DescribeIndex",
          "aoss:UpdateIndex",
          "aoss:WriteDocument",
          "aoss:ReadDocument",
        ]
      }]
      Principal = var.index_principal_arns
    }],
    length(var.query_principal_arns) == 0 ? [] : [{
      Description = "Query API: read-only search"
      Rules = [{
        ResourceType = "index"
        Resource     = [local.index_resource]
        Permission   = ["aoss:ReadDocument", "aoss:DescribeIndex"]
      }]
      Principal = var.query_principal_arns
    }],
  )
}

################################################################################
# Encryption: a customer managed key. It costs $1 a month and, unlike the AWS-owned key, its
# use shows up in CloudTrail, can be revoked by disabling it, and follows the same key policy
# and rotation as every other data store in the stack. (A collection with its own key also gets
# its own OCUs rather than sharing those of other collections in the account.)
################################################################################

# A key policy is a resource policy: "*" is this key. The account root statement delegates
# everything else to IAM policies, which name this key's ARN.
locals {
  kms_key_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministration"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
    ]
  })
}

resource "aws_kms_key" "this" {
  description             = "${var.name}: OpenSearch Serverless collection ${var.collection_name}"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_in_days
  policy                  = local.kms_key_policy

  tags = var.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}-aoss"
  target_key_id = aws_kms_key.this.key_id
}

resource "aws_opensearchserverless_security_policy" "encryption" {
  name        = "${var.collection_name}-enc"
  type        = "encryption"
  description = "CMK encryption for ${var.collection_name}"
  policy = jsonencode({
    Rules = [{
      ResourceType = "collection"
      Resource     = ["collection/${var.collection_name}"]
    }]
    AWSOwnedKey = false
    KmsARN      = aws_kms_key.this.arn
  })
}

################################################################################
# Network: reachable only through a VPC endpoint in the private subnets; no public access,
# and no Dashboards access at all.
################################################################################

resource "aws_security_group" "endpoint" {
  name        = "${var.name}-aoss-endpoint"
  description = "OpenSearch Serverless VPC endpoint: HTTPS from the tasks that search or index"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-aoss-endpoint" })
}

resource "aws_vpc_security_group_ingress_rule" "endpoint" {
  for_each = var.allowed_security_group_ids

  security_group_id            = aws_security_group.endpoint.id
  description                  = "HTTPS from ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = each.value
}

resource "aws_opensearchserverless_vpc_endpoint" "this" {
  name               = "${var.collection_name}-vpce"
  vpc_id             = var.vpc_id
  subnet_ids         = var.subnet_ids
  security_group_ids = [aws_security_group.endpoint.id]
}

resource "aws_opensearchserverless_security_policy" "network" {
  name        = "${var.collection_name}-net"
  type        = "network"
  description = "VPC endpoint access only for ${var.collection_name}"
  policy = jsonencode([{
    Description = "Collection API through the VPC endpoint only"
    Rules = [{
      ResourceType = "collection"
      Resource     = ["collection/${var.collection_name}"]
    }]
    AllowFromPublic = false
    SourceVPCEs     = [aws_opensearchserverless_vpc_endpoint.this.id]
  }])
}

################################################################################
# Data access: the index stage writes, the query API reads; nobody else.
################################################################################

resource "aws_opensearchserverless_access_policy" "this" {
  count = length(local.data_access_rules) > 0 ? 1 : 0

  name        = "${var.collection_name}-data"
  type        = "data"
  description = "Index stage writes, query API reads"
  policy      = jsonencode(local.data_access_rules)
}

resource "aws_opensearchserverless_collection" "this" {
  name             = var.collection_name
  description      = "callpipe segment vectors (${var.name})"
  type             = "VECTORSEARCH"
  standby_replicas = var.standby_replicas

  tags = var.tags

  depends_on = [
    aws_opensearchserverless_security_policy.encryption,
    aws_opensearchserverless_security_policy.network,
  ]
}
