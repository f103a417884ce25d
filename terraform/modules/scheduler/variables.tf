variable "name" {
  description = "Name prefix, e.g. \"callpipe-dev\"."
  type        = string
}

variable "schedule_expression" {
  description = "When the backfill runs: cron(...) or rate(...), e.g. \"cron(0 3 ? * SUN *)\"."
  type        = string

  validation {
    condition     = can(regex("^(cron|rate|at)\\(.+\\)$", var.schedule_expression))
    error_message = "schedule_expression must be cron(...), rate(...) or at(...)."
  }
}

variable "schedule_timezone" {
  description = "IANA time zone of the cron expression."
  type        = string
  default     = "UTC"
}

variable "enabled" {
  description = "Whether the schedule fires."
  type        = bool
  default     = true
}

variable "flexible_window_minutes" {
  description = "Minutes the scheduler may delay the run to spread load (0 = exactly on time)."
  type        = number
  default     = 15
}

variable "cluster_arn" {
  description = "ARN of the ECS cluster the backfill task runs in."
  type        = string
}

variable "task_definition_arn" {
  description = "ARN of the backfill task definition (any revision of its family may be run)."
  type        = string
}

variable "task_role_arn" {
  description = "Task role of the backfill task (the only task role the scheduler may pass)."
  type        = string
}

variable "execution_role_arn" {
  description = "Execution role of the backfill task (the only execution role the scheduler may pass)."
  type        = string
}

variable "capacity_provider" {
  description = "Capacity provider of the backfill task: FARGATE or FARGATE_SPOT."
  type        = string
  default     = "FARGATE"
}

variable "subnet_ids" {
  description = "Private subnets of the backfill task."
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security groups of the backfill task."
  type        = list(string)
}

variable "maximum_retry_attempts" {
  description = "Retries of a failed RunTask call before the event goes to the dead-letter queue."
  type        = number
  default     = 3
}

variable "maximum_event_age_in_seconds" {
  description = "How long the scheduler keeps retrying one run (60-86400 s)."
  type        = number
  default     = 3600
}

variable "kms_deletion_window_in_days" {
  description = "Waiting period before the scheduler KMS key is deleted after a destroy (7-30)."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource (on top of the provider's default_tags)."
  type        = map(string)
  default     = {}
}
