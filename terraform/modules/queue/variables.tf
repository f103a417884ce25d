variable "name" {
  description = "Name prefix; queues are NAME-ingest, NAME-transcribe, NAME-index, the backfill lane NAME-backfill, and their NAME-QUEUE-dlq."
  type        = string
}

variable "recordings_bucket_arn" {
  description = "ARN of the recordings bucket, the only resource allowed to send to the ingest queue (and to use the queue KMS key for it)."
  type        = string
}

variable "ingest_visibility_timeout_seconds" {
  description = "Initial visibility timeout of ingest messages (decode, split, resample, VAD of one recording). Workers extend it while they work."
  type        = number
  default     = 300
}

variable "transcribe_visibility_timeout_seconds" {
  description = "Initial visibility timeout of transcribe messages (the engine over one call). Workers extend it while they work."
  type        = number
  default     = 1800
}

variable "index_visibility_timeout_seconds" {
  description = "Initial visibility timeout of index messages (embed, write metadata and vectors). Workers extend it while they work."
  type        = number
  default     = 300
}

variable "backfill_visibility_timeout_seconds" {
  description = "Initial visibility timeout of backfill-lane messages (ingest work, like the ingest queue's). Workers extend it while they work."
  type        = number
  default     = 300
}

variable "max_receive_count" {
  description = "Receives after which a message that keeps failing moves to its queue's dead-letter queue."
  type        = number
  default     = 5

  validation {
    condition     = var.max_receive_count >= 1 && var.max_receive_count <= 1000
    error_message = "max_receive_count must be between 1 and 1000."
  }
}

variable "message_retention_seconds" {
  description = "How long an unprocessed message stays in a stage queue or the backfill lane (60 s to 14 days)."
  type        = number
  default     = 345600
}

variable "dlq_message_retention_seconds" {
  description = "How long a message stays in a dead-letter queue (the SQS maximum, 14 days, by default)."
  type        = number
  default     = 1209600
}

variable "receive_wait_time_seconds" {
  description = "Long-polling wait of ReceiveMessage (0-20 s)."
  type        = number
  default     = 20
}

variable "kms_data_key_reuse_period_seconds" {
  description = "How long SQS reuses a data key before calling KMS again (60-86400 s); longer means fewer KMS requests."
  type        = number
  default     = 3600
}

variable "kms_deletion_window_in_days" {
  description = "Waiting period before the SQS KMS key is deleted after a destroy (7-30)."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource (on top of the provider's default_tags)."
  type        = map(string)
  default     = {}
}
