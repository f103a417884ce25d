variable "name" {
  description = "Name prefix of the topic, alarms and dashboard, e.g. \"callpipe-dev\"."
  type        = string
}

variable "alarm_email" {
  description = "E-mail address subscribed to the alarm topic (the subscription must be confirmed from the mail); empty for none."
  type        = string
  default     = ""
}

variable "queue_names" {
  description = "Queue names by queue (the stages ingest, transcribe, index and the backfill lane): each gets an oldest-message-age alarm and dashboard lines."
  type        = map(string)
}

variable "dlq_names" {
  description = "Dead-letter queue names by a label (the stages' and the backfill lane's DLQs, and the backfill schedule's); each gets a depth > 0 alarm."
  type        = map(string)
}

variable "oldest_message_age_thresholds" {
  description = "Seconds the oldest message of a queue may wait before its alarm fires, by queue (missing ones use 3600). The backfill lane waits behind new uploads by design, so its threshold is hours."
  type        = map(number)
  default = {
    ingest     = 900
    transcribe = 3600
    index      = 900
    backfill   = 86400
  }
}

variable "cluster_name" {
  description = "Name of the ECS cluster."
  type        = string
}

variable "cluster_arn" {
  description = "ARN of the ECS cluster (task failure events are matched on it)."
  type        = string
}

variable "service_names" {
  description = "ECS service names by service key; each gets a running-below-desired alarm and dashboard lines."
  type        = map(string)
}

variable "running_below_desired_periods" {
  description = "Consecutive 5-minute periods a service may run fewer tasks than desired before its alarm fires (scale-outs and deploys take a few minutes)."
  type        = number
  default     = 3
}

variable "search_log_group_names" {
  description = "Log groups scanned for \"search error\" lines, by label (the index stage and the query API)."
  type        = map(string)
}

variable "search_error_threshold" {
  description = "Search errors per 5 minutes (from the logs, and each of the OpenSearch Serverless error metrics) above which the alarms fire."
  type        = number
  default     = 5
}

variable "collection_id" {
  description = "ID of the OpenSearch Serverless collection (metric dimension)."
  type        = string
}

variable "collection_name" {
  description = "Name of the OpenSearch Serverless collection (metric dimension)."
  type        = string
}

variable "kms_deletion_window_in_days" {
  description = "Waiting period before the alarm topic's KMS key is deleted after a destroy (7-30)."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource (on top of the provider's default_tags)."
  type        = map(string)
  default     = {}
}
