variable "name" {
  description = "Name prefix; buckets are named NAME-recordings-ACCOUNT, NAME-artifacts-ACCOUNT and NAME-logs-ACCOUNT."
  type        = string
}

variable "force_destroy" {
  description = "Let terraform destroy non-empty buckets (dev only; never in prod)."
  type        = bool
  default     = false
}

variable "ingest_queue_arn" {
  description = "ARN of the ingest SQS queue that receives s3:ObjectCreated:* notifications for new recordings. Its queue policy must already allow this bucket (the queue module's ingest_queue_arn output waits for it)."
  type        = string
}

variable "notification_filter_prefix" {
  description = "Key prefix of the recordings that are announced to the ingest queue (\"\" = the whole bucket)."
  type        = string
  default     = "incoming/"
}

variable "notification_filter_suffixes" {
  description = "Key suffixes announced to the ingest queue, one S3 notification rule each (case-sensitive). [\"\"] announces every object under the prefix."
  type        = list(string)
  default     = [".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a"]

  validation {
    condition     = length(var.notification_filter_suffixes) > 0
    error_message = "Give at least one suffix; use [\"\"] for every object."
  }
}

variable "recordings_transitions" {
  description = "Lifecycle transitions of current recording versions, e.g. [{ days = 30, storage_class = \"STANDARD_IA\" }, { days = 180, storage_class = \"GLACIER_IR\" }]. Recordings are read once by ingest and again only by a backfill."
  type = list(object({
    days          = number
    storage_class = string
  }))
  default = [
    { days = 30, storage_class = "STANDARD_IA" },
    { days = 180, storage_class = "GLACIER_IR" },
  ]
}

variable "artifacts_transitions" {
  description = "Lifecycle transitions of current artifact versions (normalized audio, plans, transcripts). Empty keeps them in STANDARD."
  type = list(object({
    days          = number
    storage_class = string
  }))
  default = []
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which a replaced (noncurrent) object version is deleted from the recordings and artifacts buckets."
  type        = number
  default     = 30
}

variable "abort_incomplete_multipart_upload_days" {
  description = "Days after which incomplete multipart uploads are aborted and their parts deleted."
  type        = number
  default     = 7
}

variable "logs_expiration_days" {
  description = "Days the logs bucket keeps S3 and ALB access logs."
  type        = number
  default     = 365
}

variable "kms_deletion_window_in_days" {
  description = "Waiting period before the S3 KMS key is deleted after a destroy (7-30)."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource (on top of the provider's default_tags)."
  type        = map(string)
  default     = {}
}
