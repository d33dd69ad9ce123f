variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "us-east-1"
}

variable "aws_endpoint" {
  description = "Local AWS emulator (moto) to apply against instead of AWS, e.g. http://127.0.0.1:5000. Loopback only; with it, the provider uses the emulator's test credentials and never real ones. Null: real AWS."
  type        = string
  default     = null

  validation {
    condition     = var.aws_endpoint == null || can(regex("^http://(127\\.0\\.0\\.1|localhost|\\[::1\\]):[0-9]+/?$", var.aws_endpoint))
    error_message = "aws_endpoint must be a loopback URL such as http://127.0.0.1:5000: this root never sends test credentials anywhere else."
  }
}

variable "name" {
  description = "Prefix of the resource names."
  type        = string
  default     = "spotpool"
}

variable "pool" {
  description = "The spotpool:pool tag value (SPOTPOOL_POOL)."
  type        = string
  default     = "spotpool"
}

variable "container_image" {
  description = "The user container image."
  type        = string
  default     = "ghcr.io/openclaw/openclaw:latest"
}

variable "container_port" {
  description = "Port the user container listens on."
  type        = number
  default     = 18789
}

variable "instance_types" {
  description = "Instance types of the pool, most preferred first."
  type        = list(string)
  default     = ["t3.small"]
}

variable "certificate_arn" {
  description = "ACM certificate for HTTPS; null serves users on HTTP:80."
  type        = string
  default     = null
}

variable "public_hostname" {
  description = "DNS name users reach the ALB by; null uses the ALB's own."
  type        = string
  default     = null
}

variable "workspace_size_gib" {
  description = "Size in GiB of each user's workspace volume (encrypted gp3)."
  type        = number
  default     = 8
}

variable "workspace_kms_key_arn" {
  description = "Customer-managed KMS key ARN for the workspaces; null uses the account's aws/ebs key."
  type        = string
  default     = null
}

variable "idle_sleep_after" {
  description = "Sleep a user after this long without requests, e.g. 2h; \"off\" never does."
  type        = string
  default     = "off"
}

variable "daemon_principal_arns" {
  description = "Principals that may assume the daemon role (created only when set)."
  type        = list(string)
  default     = []
}

variable "daemon_trusted_services" {
  description = "AWS services that may assume the daemon role, e.g. [\"ec2.amazonaws.com\"] when the daemon runs on an EC2 host (an instance profile is then created too)."
  type        = list(string)
  default     = []
}

variable "container_preset" {
  description = "openclaw (the OpenClaw gateway) or generic (any other image)."
  type        = string
  default     = "openclaw"
}

variable "cpu_credits" {
  description = "CPU credits of T instance types: standard or unlimited."
  type        = string
  default     = "standard"
}

variable "daemon_extra_env" {
  description = "Extra KEY=value settings for the daemon_env output (no tokens)."
  type        = map(string)
  default     = {}
}
