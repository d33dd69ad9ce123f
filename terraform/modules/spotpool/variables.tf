# Inputs of the spotpool module. Every input has a description; the ones with a
# default are optional. The module works in any region: the region and account
# come from the provider (data sources in main.tf), never from an input.

# --- Naming ------------------------------------------------------------------

variable "name" {
  description = "Prefix of every resource name (ALB, security groups, roles, launch template). Lowercase letters, digits and hyphens, at most 24 characters (the ALB name has a 32-character limit)."
  type        = string
  default     = "spotpool"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,22}[a-z0-9])?$", var.name))
    error_message = "name must be 1-24 lowercase letters, digits or hyphens, starting and ending with a letter or digit."
  }
}

variable "pool" {
  description = "Value of the spotpool:pool tag on every instance of this pool. The daemon's SPOTPOOL_POOL must be the same: the daemon only sees, and the daemon policy only lets it touch, instances with this tag."
  type        = string
  default     = "spotpool"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.:/=+@-]{1,64}$", var.pool))
    error_message = "pool must be 1-64 characters usable in an AWS tag value (letters, digits and _ . : / = + @ -)."
  }
}

variable "tags" {
  description = "Tags added to every resource the module creates. (Set here rather than with the provider's default_tags, which keep launch templates drifting.)"
  type        = map(string)
  default     = {}
  nullable    = false
}

# --- Network -----------------------------------------------------------------

variable "create_network" {
  description = "true: create a VPC with public subnets, an internet gateway and routes (and, with network_mode = \"private\", private subnets for the pool instances). false: use vpc_id and subnet_ids (and alb_subnet_ids)."
  type        = bool
  default     = false
}

variable "vpc_id" {
  description = "Existing VPC to use when create_network is false."
  type        = string
  default     = null

  validation {
    condition     = var.vpc_id == null || can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123abcd."
  }
}

variable "subnet_ids" {
  description = "Existing subnets of the pool instances when create_network is false, in different availability zones (SUBNET_IDS); the ALBs use them too unless alb_subnet_ids is set. The instances need outbound access to SSM, ECR, Secrets Manager and the image registry: public subnets that map public IPs on launch, or a NAT gateway, or VPC endpoints (network_mode = \"private\" creates them, and then refuses subnets that map public IPs on launch)."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for id in var.subnet_ids : can(regex("^subnet-[0-9a-f]+$", id))])
    error_message = "Every subnet id must look like subnet-0123abcd."
  }
}

variable "vpc_cidr" {
  description = "CIDR of the VPC created when create_network is true. Each subnet gets a sixteenth of it (a /20 of a /16): the public ones from the first, the private ones (network_mode = \"private\") from the ninth."
  type        = string
  default     = "10.0.0.0/16"
  nullable    = false

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && can(regex("/([0-9]|1[0-9]|2[0-2])$", var.vpc_cidr))
    error_message = "vpc_cidr must be an IPv4 CIDR of /22 or larger, e.g. 10.0.0.0/16 (each subnet gets 1/16 of it)."
  }
}

variable "public_subnet_count" {
  description = "How many public subnets (one per availability zone) to create when create_network is true, and as many private ones with network_mode = \"private\". An ALB needs at least two."
  type        = number
  default     = 2
  nullable    = false

  validation {
    condition     = var.public_subnet_count >= 2 && var.public_subnet_count <= 6 && floor(var.public_subnet_count) == var.public_subnet_count
    error_message = "public_subnet_count must be a whole number from 2 to 6."
  }
}

variable "availability_zones" {
  description = "Availability zones of the created subnets, in order. Empty: the region's first public_subnet_count available zones."
  type        = list(string)
  default     = []
}

variable "network_mode" {
  description = "How the pool instances reach AWS. \"public\" (the default, as before): in subnets that map a public IPv4 address on launch ($0.005 an hour per instance), or your own subnets' way out. \"private\": no public IPv4 on any pool instance; the module creates interface endpoints (interface_endpoint_services, private DNS on) and an S3 gateway endpoint, a fixed cost for the whole pool (output vpc_endpoint_hourly_cost_usd). With create_network, the instances go into private subnets without any route out of the VPC while the ALBs stay in the public ones: container_image must then be in this region's ECR, the AMI must get Docker from the region's S3 (Amazon Linux 2023's package repositories are S3 buckets there; another AMI needs Docker preinstalled), and the users' containers reach nothing outside the VPC but these endpoints (an agent that calls a model provider on the internet needs your own subnets with a NAT gateway). With your own subnets: they must not map public IPs on launch, and alb_subnet_ids names public ones for the ALBs."
  type        = string
  default     = "public"
  nullable    = false

  validation {
    condition     = contains(["public", "private"], var.network_mode)
    error_message = "network_mode must be public or private."
  }
}

variable "alb_subnet_ids" {
  description = "Existing public subnets (two or more, in different availability zones, among them every zone of subnet_ids, which a plan checks) of the internet-facing ALBs when create_network is false. Empty: subnet_ids. Required with network_mode = \"private\", whose subnet_ids are private."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for id in var.alb_subnet_ids : can(regex("^subnet-[0-9a-f]+$", id))])
    error_message = "Every subnet id must look like subnet-0123abcd."
  }
}

variable "private_route_table_ids" {
  description = "network_mode = \"private\" with your own subnets: the route tables of subnet_ids, which get the S3 gateway endpoint (ECR keeps image layers in S3, and Amazon Linux 2023 its packages). Empty: no S3 gateway endpoint is created, and the VPC must already route S3 (its own gateway endpoint, or a NAT gateway)."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for id in var.private_route_table_ids : can(regex("^rtb-[0-9a-f]+$", id))])
    error_message = "Every route table id must look like rtb-0123abcd."
  }
}

variable "interface_endpoint_services" {
  description = "network_mode = \"private\": the interface endpoints created in the VPC, by service (com.amazonaws.<region>.<service>), one network interface per availability zone of the pool's subnets, private DNS on. The default is what the instances call: the SSM agent (ssm, ssmmessages, ec2messages), the image pull (ecr.api, ecr.dkr) and the users' secrets (secretsmanager); with create_network they are all required. Add e.g. bedrock-runtime for agents that call Amazon Bedrock; with your own VPC, leave out the services it already has an endpoint with private DNS for (two would conflict). Each costs interface_endpoint_hourly_price per zone."
  type        = list(string)
  default     = ["ec2messages", "ecr.api", "ecr.dkr", "secretsmanager", "ssm", "ssmmessages"]
  nullable    = false

  validation {
    condition     = alltrue([for service in var.interface_endpoint_services : can(regex("^[a-z0-9][a-z0-9.-]*[a-z0-9]$", service))]) && length(distinct(var.interface_endpoint_services)) == length(var.interface_endpoint_services)
    error_message = "interface_endpoint_services holds distinct service names such as ssm or ecr.api (lower-case letters, digits, dots and hyphens)."
  }
  validation {
    condition     = !contains(var.interface_endpoint_services, "s3")
    error_message = "interface_endpoint_services must not hold s3: the module creates S3's free gateway endpoint instead."
  }
}

variable "interface_endpoint_hourly_price" {
  description = "USD an hour of one interface endpoint in one availability zone, for vpc_endpoint_hourly_cost_usd and the daemon's SPOTPOOL_NETWORK_FIXED_DOLLARS_PER_HOUR: $0.01 in us-east-1 (Amazon VPC pricing, AWS PrivateLink), plus $0.01 per GB processed, which is not counted. Set your region's."
  type        = number
  default     = 0.01
  nullable    = false

  validation {
    condition     = var.interface_endpoint_hourly_price >= 0 && var.interface_endpoint_hourly_price < 1
    error_message = "interface_endpoint_hourly_price must be from 0 to less than 1 USD an hour."
  }
}

# --- Load balancer -----------------------------------------------------------

variable "certificate_arn" {
  description = "ACM certificate for the HTTPS:443 listener of every shard (unless shard_certificate_arns or create_shard_certificates gives each its own). Set: users are routed on HTTPS and HTTP:80 redirects to it. Null: users are routed on HTTP:80 (fine for a trial, not for production)."
  type        = string
  default     = null

  validation {
    condition     = var.certificate_arn == null || can(regex("^arn:[a-z-]+:acm:", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN (arn:aws:acm:...)."
  }
}

variable "ssl_policy" {
  description = "TLS policy of the HTTPS listener."
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"
}

variable "public_hostname" {
  description = "Path routing: DNS name your users reach shard 0's ALB by (you create the record, e.g. a CNAME or alias to alb_dns_name). Null: the ALB's own DNS name. Used for PUBLIC_BASE_URL and shard 0's base_url; the other shards use their ALBs' DNS names."
  type        = string
  default     = null

  validation {
    condition     = var.public_hostname == null || can(regex("^[A-Za-z0-9.-]+$", var.public_hostname))
    error_message = "public_hostname must be a bare host name such as agents.example.com (no scheme, no path)."
  }
}

variable "alb_ingress_cidrs" {
  description = "IPv4 ranges allowed to reach the ALB on ports 80 and 443."
  type        = list(string)
  default     = ["0.0.0.0/0"]
  nullable    = false

  validation {
    condition     = length(var.alb_ingress_cidrs) > 0 && alltrue([for cidr in var.alb_ingress_cidrs : can(cidrhost(cidr, 0))])
    error_message = "alb_ingress_cidrs must be a non-empty list of IPv4 CIDRs."
  }
}

variable "alb_idle_timeout" {
  description = "Seconds the ALB keeps an idle connection open. The gateway uses long-lived WebSockets, hence more than the AWS default of 60."
  type        = number
  default     = 300

  validation {
    condition     = var.alb_idle_timeout >= 1 && var.alb_idle_timeout <= 4000
    error_message = "alb_idle_timeout must be between 1 and 4000 seconds."
  }
}

variable "alb_deletion_protection" {
  description = "Protect the ALBs from deletion (turn it off before terraform destroy)."
  type        = bool
  default     = false
  nullable    = false
}

# --- Shards (docs/DEPLOY.md, "Shards") ---------------------------------------

variable "shard_count" {
  description = "How many shards: one ALB each (with its listeners, in the one ALB security group), each holding at most shard_capacity users (an ALB takes at most 100 target groups, a hard quota, and 100 rules by default). 10,000 users at 90 a shard need 112. Shard 0 is the single ALB of earlier versions, unchanged."
  type        = number
  default     = 1
  nullable    = false

  validation {
    condition     = var.shard_count >= 1 && var.shard_count <= 500 && floor(var.shard_count) == var.shard_count
    error_message = "shard_count must be a whole number from 1 to 500."
  }
}

variable "shard_capacity" {
  description = "The most users the daemon places on one shard (capacity of each [[shard]] table of daemon_shards_toml). At most 100: an ALB holds at most 100 target groups (hard) and, by default, 100 rules; the default 90 leaves room for a move's second target group."
  type        = number
  default     = 90
  nullable    = false

  validation {
    condition     = var.shard_capacity >= 1 && var.shard_capacity <= 100 && floor(var.shard_capacity) == var.shard_capacity
    error_message = "shard_capacity must be a whole number from 1 to 100 (an ALB holds at most 100 target groups)."
  }
}

variable "routing" {
  description = "How each shard routes a user: \"path\" (https://<ALB or public_hostname>/<route>/, a path rule per user) or \"host\" (https://<route>.shard-<i>.<users_domain>/, a host-header rule per user; needs users_domain, one wildcard DNS record and one wildcard certificate per shard: the shards output names both)."
  type        = string
  default     = "path"
  nullable    = false

  validation {
    condition     = contains(["path", "host"], var.routing)
    error_message = "routing must be path or host."
  }
}

variable "users_domain" {
  description = "Host routing: the domain under which shard i serves its users as <route>.shard-<i>.<users_domain>. You point *.shard-<i>.<users_domain> at shard i's ALB (or set route53_zone_id). Null with path routing."
  type        = string
  default     = null

  validation {
    condition     = var.users_domain == null || can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.users_domain))
    error_message = "users_domain must be a lower-case DNS name such as users.example.com (no scheme, no wildcard, no trailing dot)."
  }
}

variable "shard_certificate_arns" {
  description = "One ACM certificate per shard, in shard order (host routing: a certificate for *.shard-<i>.<users_domain>), for its HTTPS:443 listener. Empty: certificate_arn serves every shard (one certificate whose names cover every shard), or the created ones (create_shard_certificates)."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for arn in var.shard_certificate_arns : can(regex("^arn:[a-z-]+:acm:", arn))])
    error_message = "Every entry of shard_certificate_arns must be an ACM certificate ARN (arn:aws:acm:...)."
  }
}

variable "route53_zone_id" {
  description = "Opt-in, host routing: the Route 53 hosted zone of users_domain. Set, the module creates each shard's wildcard record *.shard-<i>.<users_domain> (an alias of its ALB). Null: no DNS record is created; you create them from the shards output. The daemon never makes a DNS call per user either way."
  type        = string
  default     = null

  validation {
    condition     = var.route53_zone_id == null || can(regex("^Z[A-Z0-9]+$", var.route53_zone_id))
    error_message = "route53_zone_id must be a hosted zone id such as Z0123456789ABCDEFGHIJ."
  }
}

variable "create_shard_certificates" {
  description = "Opt-in, host routing with route53_zone_id: create one ACM certificate per shard for *.shard-<i>.<users_domain>, validated by DNS in that zone, for the shard's HTTPS listener."
  type        = bool
  default     = false
  nullable    = false
}

# --- Instances ---------------------------------------------------------------

variable "container_image" {
  description = "The user container image, pre-pulled by every instance and started by the daemon (CONTAINER_IMAGE). Null: <the created ECR repository>:latest, which needs create_ecr_repository = true."
  type        = string
  default     = null

  validation {
    condition     = var.container_image == null || can(regex("^[A-Za-z0-9._/:@-]+$", var.container_image))
    error_message = "container_image may only contain letters, digits and - _ . / : @ (the daemon refuses anything else)."
  }
}

variable "container_preset" {
  description = "The kind of user image (CONTAINER_PRESET): openclaw, the OpenClaw gateway (port 18789, health /healthz, started as a LAN-bound gateway, each user's secret carrying OPENCLAW_GATEWAY_TOKEN), or generic for any other image (set container_port and health_check_path to its own; daemon_extra_env may add CONTAINER_ARGS, CONTAINER_READY_PATH and CONTAINER_REQUIRED_SECRETS)."
  type        = string
  default     = "openclaw"

  validation {
    condition     = contains(["openclaw", "generic"], var.container_preset)
    error_message = "container_preset must be openclaw or generic."
  }
}

variable "on_demand_fallback" {
  description = "Launch on-demand when no spot offering of any instance type has capacity (SPOTPOOL_ON_DEMAND_FALLBACK): creates a second launch template without market options (ON_DEMAND_LAUNCH_TEMPLATE_ID) and lets the daemon launch on-demand instances from it, and from no other template."
  type        = bool
  default     = false
}

variable "tier_launch_template_ids" {
  description = "Spot launch templates that [[tier]] tables name as their own launch_template_id (the daemon may launch spot instances from them too). Build them like the module's: the pool's security group, the instance profile, the user data with the warm responder on the tier's port."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.tier_launch_template_ids : can(regex("^lt-[0-9a-f]+$", id))])
    error_message = "tier_launch_template_ids holds launch template ids (lt-...)."
  }
}

variable "tier_on_demand_launch_template_ids" {
  description = "On-demand launch templates (no market options) that [[tier]] tables name as their on_demand_launch_template_id: the daemon may launch on-demand instances from them, and from no other template but the module's own (on_demand_fallback)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.tier_on_demand_launch_template_ids : can(regex("^lt-[0-9a-f]+$", id))])
    error_message = "tier_on_demand_launch_template_ids holds launch template ids (lt-...)."
  }
}

variable "container_port" {
  description = "Port the user container listens on (CONTAINER_PORT; the OpenClaw gateway's is 18789, a generic image's usually 8080); the only port the instances accept, and only from the ALB."
  type        = number
  default     = 18789

  validation {
    condition     = var.container_port >= 1 && var.container_port <= 65535 && floor(var.container_port) == var.container_port
    error_message = "container_port must be a port number from 1 to 65535."
  }
}

variable "max_slots_per_instance" {
  description = "The most users one instance serves: the largest slots_per_instance of the daemon's [[tier]] tables (1 without shared tiers). User k of a shared instance is reached at container_port + k, so the load balancer may reach container_port to container_port + max_slots_per_instance - 1."
  type        = number
  default     = 1

  validation {
    condition     = var.max_slots_per_instance >= 1 && var.max_slots_per_instance <= 20 && floor(var.max_slots_per_instance) == var.max_slots_per_instance
    error_message = "max_slots_per_instance must be a whole number from 1 to 20 (each user's workspace is attached at a device name of its slot's)."
  }
  validation {
    condition     = var.container_port + var.max_slots_per_instance - 1 <= 65535
    error_message = "container_port + max_slots_per_instance - 1 is past port 65535."
  }
}

variable "health_check_path" {
  description = "Health check path of the users' target groups (HEALTH_CHECK_PATH). The OpenClaw gateway answers /healthz from the moment it listens; keep it at the root, not under a user's route (there it is the Control UI's page)."
  type        = string
  default     = "/healthz"
  nullable    = false

  validation {
    condition     = can(regex("^/[A-Za-z0-9._~/%?=&+-]*$", var.health_check_path)) && length(var.health_check_path) <= 1024
    error_message = "health_check_path must start with / and hold only letters, digits and . _ ~ / % ? = & + - (the start command refuses anything else)."
  }
}

variable "health_check" {
  description = "How the ALB checks each user's target (HEALTH_CHECK_INTERVAL_SECONDS, HEALTH_CHECK_TIMEOUT_SECONDS, HEALTH_CHECK_HEALTHY_THRESHOLD, HEALTH_CHECK_UNHEALTHY_THRESHOLD, HEALTH_CHECK_CODES: the matcher, which the start command's wait also applies). The daemon sets these on every target group it creates: AWS's own defaults (30 s x 5) keep a new target out of service for 2.5 minutes, longer than a spot interruption warning."
  type = object({
    interval_seconds    = optional(number, 5)
    timeout_seconds     = optional(number, 4)
    healthy_threshold   = optional(number, 2)
    unhealthy_threshold = optional(number, 2)
    codes               = optional(string, "200")
  })
  default = {}

  validation {
    condition = (
      var.health_check.interval_seconds >= 5 && var.health_check.interval_seconds <= 300 &&
      var.health_check.timeout_seconds >= 2 && var.health_check.timeout_seconds <= 120 &&
      var.health_check.timeout_seconds < var.health_check.interval_seconds
    )
    error_message = "health_check: interval_seconds must be 5-300 and timeout_seconds 2-120, less than the interval."
  }

  validation {
    condition = (
      var.health_check.healthy_threshold >= 2 && var.health_check.healthy_threshold <= 10 &&
      var.health_check.unhealthy_threshold >= 2 && var.health_check.unhealthy_threshold <= 10
    )
    error_message = "health_check: healthy_threshold and unhealthy_threshold must be 2-10."
  }

  validation {
    condition     = can(regex("^[2-4][0-9]{2}(-[2-4][0-9]{2})?(,[2-4][0-9]{2}(-[2-4][0-9]{2})?)*$", var.health_check.codes))
    error_message = "health_check.codes must be HTTP codes or ranges from 200 to 499 separated by commas, e.g. 200 or 200-299."
  }
}

variable "instance_types" {
  description = "Instance types of the pool, most preferred first (USER_INSTANCE_TYPE). The first is the launch template's default."
  type        = list(string)
  default     = ["t3.small"]

  validation {
    condition     = length(var.instance_types) > 0 && alltrue([for t in var.instance_types : can(regex("^[a-z0-9-]+\\.[a-z0-9]+$", t))])
    error_message = "instance_types must be a non-empty list of instance types such as t3.small."
  }
}

variable "ami_id" {
  description = "AMI of the pool instances. Null: the latest Amazon Linux 2023 image, read from the public SSM parameter ami_ssm_parameter. The user data expects Amazon Linux 2023 (dnf, the SSM agent and the aws CLI preinstalled)."
  type        = string
  default     = null

  validation {
    condition     = var.ami_id == null || can(regex("^ami-[0-9a-f]+$", var.ami_id))
    error_message = "ami_id must look like ami-0123abcd."
  }
}

variable "ami_ssm_parameter" {
  description = "Public SSM parameter holding the AMI id, read only when ami_id is null. Use the arm64 one with Graviton instance types."
  type        = string
  default     = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
  nullable    = false
}

variable "root_device_name" {
  description = "Root device of the AMI; /dev/xvda for Amazon Linux 2023."
  type        = string
  default     = "/dev/xvda"
}

variable "root_volume_size" {
  description = "Size in GiB of the encrypted gp3 root volume (the OS, Docker and the image; a user's data lives on its own workspace volume, which the daemon creates)."
  type        = number
  default     = 30
  nullable    = false

  validation {
    condition     = var.root_volume_size >= 8 && var.root_volume_size <= 16384
    error_message = "root_volume_size must be between 8 and 16384 GiB."
  }
}

variable "root_volume_kms_key_id" {
  description = "ARN of a customer-managed symmetric KMS key, in the pool's region, for the pool instances' root volumes. Null: the created key (create_kms_key), else the account's default EBS key (aws/ebs, or the customer key of account-wide default EBS encryption: set this variable to that key, docs/DEPLOY.md). Set: the daemon policy gets the KMS permissions RunInstances needs on it (through EC2 only), and the key policy must hold kms_key_policy_json's statements (the EC2 Spot service-linked role launches the instances)."
  type        = string
  default     = null

  validation {
    condition     = var.root_volume_kms_key_id == null || can(regex("^arn:[a-z-]+:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$", var.root_volume_kms_key_id))
    error_message = "root_volume_kms_key_id must be a KMS key ARN (arn:aws:kms:<region>:<account>:key/<key id>), not a key id or an alias: IAM scopes the daemon's KMS permissions to the key ARN."
  }
}

variable "create_kms_key" {
  description = "Create a customer-managed KMS key (alias/<name>-ebs, rotated yearly) whose policy is kms_key_policy_json, and use it for the root volumes and the workspaces whose key variable (root_volume_kms_key_id, workspace_kms_key_arn) is null."
  type        = bool
  default     = false
}

# --- Account prerequisites ---------------------------------------------------

variable "create_spot_service_linked_role" {
  description = "Create the account's EC2 Spot service-linked role (AWSServiceRoleForEC2Spot), without which no spot instance can be launched. False: the role must already exist (any earlier spot request in the account created it), and a plan without it fails with a message. It is one per account: let one deployment (or your account baseline) own it, and leave this false everywhere else."
  type        = bool
  default     = false
}

# --- Workspaces --------------------------------------------------------------

variable "workspace_size_gib" {
  description = "Size in GiB of each user's workspace: an encrypted gp3 volume the daemon creates per user and mounts at the container's /data (SPOTPOOL_WORKSPACE_SIZE_GIB). It lives as long as the user, asleep or not: $0.08 per GiB-month for gp3 in us-east-1."
  type        = number
  default     = 8

  validation {
    condition     = var.workspace_size_gib >= 1 && var.workspace_size_gib <= 16384 && floor(var.workspace_size_gib) == var.workspace_size_gib
    error_message = "workspace_size_gib must be a whole number of GiB from 1 to 16384 (the gp3 limits)."
  }
}

variable "workspace_kms_key_arn" {
  description = "ARN of a customer-managed symmetric KMS key, in the pool's region, for the workspace volumes and their snapshots (SPOTPOOL_WORKSPACE_KMS_KEY_ID). Null: the created key (create_kms_key), else the account's default EBS key (aws/ebs), and the daemon gets no KMS permission. Set: the daemon policy gets exactly the KMS permissions EBS needs on this key (through EC2 only), and the key policy must allow the daemon role (docs/DEPLOY.md). Changing it later leaves existing workspaces on the old key."
  type        = string
  default     = null

  validation {
    condition     = var.workspace_kms_key_arn == null || can(regex("^arn:[a-z-]+:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$", var.workspace_kms_key_arn))
    error_message = "workspace_kms_key_arn must be a KMS key ARN (arn:aws:kms:<region>:<account>:key/<key id>), not a key id or an alias: IAM scopes the daemon's KMS permissions to the key ARN."
  }
}

variable "idle_sleep_after" {
  description = "Put a ready user to sleep after this long without a request through the load balancer (CloudWatch RequestCount), e.g. \"2h\" (SPOTPOOL_IDLE_SLEEP_AFTER; units ms, s, m, h). \"off\" never does. Agents that only poll outward (Telegram, Discord) get no inbound requests: leave it off for them."
  type        = string
  default     = "off"

  validation {
    condition     = can(regex("^(off|0*[1-9][0-9]*(ms|s|m|h)?)$", var.idle_sleep_after))
    error_message = "idle_sleep_after must be \"off\" or a duration greater than zero such as 90m or 2h (units ms, s, m, h)."
  }
}

# --- Secrets -----------------------------------------------------------------

variable "secret_prefix" {
  description = "Prefix of the users' secret names in Secrets Manager (SECRET_PREFIX); a user's secret is <prefix><user id>. The instance role may read, and the daemon may manage, only secrets under it."
  type        = string
  default     = "openclaw/"
  nullable    = false

  validation {
    condition     = can(regex("^[A-Za-z0-9/_+=.@-]{1,256}$", var.secret_prefix))
    error_message = "secret_prefix must be 1-256 characters allowed in secret names (letters, digits and / _ + = . @ -)."
  }
}

# --- Container registry ------------------------------------------------------

variable "create_ecr_repository" {
  description = "Create an ECR repository for the user container; the instances may pull from it."
  type        = bool
  default     = false
  nullable    = false
}

variable "ecr_repository_name" {
  description = "Name of the created ECR repository. Null: the module's name."
  type        = string
  default     = null
}

variable "ecr_force_delete" {
  description = "Let terraform destroy delete the created ECR repository even when it holds images."
  type        = bool
  default     = false
  nullable    = false
}

variable "ecr_pull_from_image" {
  description = "When container_image is an ECR image, let the instances pull from its repository (the ARN is derived from the image). False: only create_ecr_repository and ecr_pull_repository_arns grant pulls, and a plan whose ECR image none of them covers fails."
  type        = bool
  default     = true
  nullable    = false
}

variable "cpu_credits" {
  description = "CPU credits of burstable (T) instance types: standard (the default) or unlimited. A container may use a whole vCPU, far above a t3's 20% baseline: unlimited lets it, and bills the surplus credits, which can cost several times the spot price; standard throttles to the baseline once the credits are spent. Ignored unless every instance type is a T type."
  type        = string
  default     = "standard"

  validation {
    condition     = contains(["standard", "unlimited"], var.cpu_credits)
    error_message = "cpu_credits must be standard or unlimited."
  }
}

variable "ecr_pull_repository_arns" {
  description = "Other ECR repositories (ARNs) the instances may pull from, e.g. one in a shared registry account. The created repository is added automatically."
  type        = list(string)
  default     = []
  nullable    = false
}

# --- The daemon --------------------------------------------------------------

variable "daemon_principal_arns" {
  description = "IAM principals (role or user ARNs) allowed to assume a daemon role that the module then creates with the daemon policy attached. Empty (and no daemon_trusted_services): no role is created; attach the daemon_policy_arn output to the daemon's own role yourself."
  type        = list(string)
  default     = []
}

variable "daemon_trusted_services" {
  description = "AWS services allowed to assume the daemon role, e.g. [\"ec2.amazonaws.com\"] when the daemon runs on an EC2 host (an instance profile is created too) or [\"ecs-tasks.amazonaws.com\"]."
  type        = list(string)
  default     = []
}

variable "daemon_extra_env" {
  description = "Additional KEY=value lines for the daemon_env output, e.g. { POOL_SPARE_COUNT = \"3\" }. Never put the API tokens here: outputs end up in the state file."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for key in keys(var.daemon_extra_env) : can(regex("^[A-Z][A-Z0-9_]*$", key)) && !endswith(key, "_TOKEN")])
    error_message = "daemon_extra_env keys must be upper-case environment variable names, and tokens (*_TOKEN) do not belong in Terraform."
  }
}

# --- Spot interruptions ------------------------------------------------------

variable "interruption_message_retention_seconds" {
  description = "How long the interruption queue keeps an EC2 event the daemon has not handled yet (SQS MessageRetentionPeriod). Long enough to outlast a daemon restart; the daemon forgets handled events after a day, so at most 12 hours."
  type        = number
  default     = 14400
  nullable    = false

  validation {
    condition     = var.interruption_message_retention_seconds >= 300 && var.interruption_message_retention_seconds <= 43200
    error_message = "interruption_message_retention_seconds must be from 300 (5 minutes) to 43200 (12 hours)."
  }
}

variable "interruption_max_receive_count" {
  description = "Receives of an interruption message the daemon could not store before it moves to the dead-letter queue."
  type        = number
  default     = 5
  nullable    = false

  validation {
    condition     = var.interruption_max_receive_count >= 1 && var.interruption_max_receive_count <= 1000
    error_message = "interruption_max_receive_count must be from 1 to 1000."
  }
}
