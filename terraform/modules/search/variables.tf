variable "name" {
  description = "Name prefix for the KMS alias and security group, e.g. \"callpipe-dev\"."
  type        = string
}

variable "collection_name" {
  description = "Name of the VECTORSEARCH collection (3-27 lowercase letters, digits or hyphens, starting with a letter; policy names append up to 5 characters and AWS allows 32)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,26}$", var.collection_name))
    error_message = "collection_name must be 3-27 characters of a-z, 0-9 or -, starting with a letter."
  }
}

variable "standby_replicas" {
  description = "ENABLED: redundant OCUs in a second AZ (prod; at least twice the OCUs); DISABLED: no standby (dev, the cheapest floor)."
  type        = string
  default     = "ENABLED"

  validation {
    condition     = contains(["ENABLED", "DISABLED"], var.standby_replicas)
    error_message = "standby_replicas must be ENABLED or DISABLED."
  }
}

variable "vpc_id" {
  description = "VPC of the collection's VPC endpoint."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets the VPC endpoint is placed in (one per AZ)."
  type        = list(string)
}

variable "allowed_security_group_ids" {
  description = "Security groups allowed to reach the VPC endpoint on 443, by a static label (e.g. { workers = sg-1, web = sg-2 })."
  type        = map(string)
  default     = {}
}

variable "index_principal_arns" {
  description = "IAM role ARNs granted index permissions (CreateIndex, DescribeIndex, UpdateIndex, WriteDocument, ReadDocument): the index stage's task role."
  type        = list(string)
  default     = []
}

variable "query_principal_arns" {
  description = "IAM role ARNs granted read permissions (ReadDocument, DescribeIndex): the query API's task role."
  type        = list(string)
  default     = []
}

variable "kms_deletion_window_in_days" {
  description = "Waiting period before the collection's KMS key is deleted after a destroy (7-30)."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource (on top of the provider's default_tags)."
  type        = map(string)
  default     = {}
}
