//! The raw settings: one field per flag, environment variable and TOML key, and how the three
//! sources combine (flags, then the environment, then the file).

use super::ConfigError;
use std::path::PathBuf;

/// The raw settings, as flags, environment variables or TOML keys (the lowercase flag names
/// with underscores). Every field is optional here; [`Settings::into_config`] applies defaults
/// and validates.
#[derive(Debug, Default, Clone, clap::Args, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Launch template for pool instances (required).
    #[arg(long, env = "LAUNCH_TEMPLATE_ID")]
    pub launch_template_id: Option<String>,
    /// Launch template version to launch.
    #[arg(long, env = "LAUNCH_TEMPLATE_VERSION", value_name = "VERSION")]
    pub launch_template_version: Option<String>,
    /// Instance types for the default tier, as a comma list; the first is preferred.
    #[arg(long, env = "USER_INSTANCE_TYPE", value_name = "TYPES")]
    pub user_instance_type: Option<String>,
    /// Spare instances to keep available in the default tier.
    #[arg(long, env = "POOL_SPARE_COUNT", value_name = "N")]
    pub pool_spare_count: Option<u32>,
    /// Most instances the default tier may run at once, all statuses together.
    #[arg(long, env = "POOL_MAX_INSTANCES", value_name = "N")]
    pub pool_max_instances: Option<u32>,
    /// Subnets to launch into, as a comma list; launches are spread across them (required).
    #[arg(long, env = "SUBNET_IDS", value_name = "IDS")]
    pub subnet_ids: Option<String>,
    /// Security group for pool instances; empty uses the launch template's.
    #[arg(long, env = "SECURITY_GROUP_ID", value_name = "ID")]
    pub security_group_id: Option<String>,
    /// VPC of the target groups (required).
    #[arg(long, env = "VPC_ID", value_name = "ID")]
    pub vpc_id: Option<String>,
    /// ALB listener for the users' path rules (required unless the config file has [[shard]] tables, which replace it and PUBLIC_BASE_URL).
    #[arg(long, env = "ALB_LISTENER_ARN", value_name = "ARNS")]
    pub alb_listener_arn: Option<String>,
    /// Instance profile ARN passed explicitly at launch; empty uses the launch template's.
    #[arg(long, env = "INSTANCE_PROFILE_ARN", value_name = "ARN")]
    pub instance_profile_arn: Option<String>,
    /// ECR repository of the user container, used when CONTAINER_IMAGE is not set.
    #[arg(long, env = "ECR_REPOSITORY_URL", value_name = "URL")]
    pub ecr_repository_url: Option<String>,
    /// The user container image.
    #[arg(long, env = "CONTAINER_IMAGE", value_name = "IMAGE")]
    pub container_image: Option<String>,
    /// The kind of image: openclaw (the OpenClaw gateway) or generic; it sets the defaults of the port, arguments, health and ready paths and required secrets.
    #[arg(long, env = "CONTAINER_PRESET", value_name = "PRESET")]
    pub container_preset: Option<String>,
    /// Port the user container listens on.
    #[arg(long, env = "CONTAINER_PORT", value_name = "PORT")]
    pub container_port: Option<u16>,
    /// The container's arguments after the image, separated by spaces (openclaw: node openclaw.mjs gateway --bind lan --port <port>).
    #[arg(long, env = "CONTAINER_ARGS", value_name = "ARGS")]
    pub container_args: Option<String>,
    /// Health check path of the users' target groups.
    #[arg(long, env = "HEALTH_CHECK_PATH", value_name = "PATH")]
    pub health_check_path: Option<String>,
    /// A path the start waits for (200) after the health path answers, or none (openclaw: /readyz).
    #[arg(long, env = "CONTAINER_READY_PATH", value_name = "PATH")]
    pub container_ready_path: Option<String>,
    /// Secret names every user's PUT must carry, comma-separated, or none (openclaw: OPENCLAW_GATEWAY_TOKEN).
    #[arg(long, env = "CONTAINER_REQUIRED_SECRETS", value_name = "NAMES")]
    pub container_required_secrets: Option<String>,
    /// Seconds between the load balancer's health checks of a user's target, 5-300 (set on every target group; AWS's own default is 30).
    #[arg(long, env = "HEALTH_CHECK_INTERVAL_SECONDS", value_name = "SECONDS")]
    pub health_check_interval_seconds: Option<u32>,
    /// Seconds without an answer that fail one health check, 2-120 and less than the interval.
    #[arg(long, env = "HEALTH_CHECK_TIMEOUT_SECONDS", value_name = "SECONDS")]
    pub health_check_timeout_seconds: Option<u32>,
    /// Consecutive passed health checks before a new target is healthy, 2-10 (AWS's own default is 5).
    #[arg(long, env = "HEALTH_CHECK_HEALTHY_THRESHOLD", value_name = "N")]
    pub health_check_healthy_threshold: Option<u32>,
    /// Consecutive failed health checks before a target is unhealthy, 2-10.
    #[arg(long, env = "HEALTH_CHECK_UNHEALTHY_THRESHOLD", value_name = "N")]
    pub health_check_unhealthy_threshold: Option<u32>,
    /// HTTP codes of a passed health check, the load balancer's matcher (codes or ranges from 200 to 499, comma-separated, e.g. 200-299); the start command's wait accepts the same.
    #[arg(long, env = "HEALTH_CHECK_CODES", value_name = "CODES")]
    pub health_check_codes: Option<String>,
    /// Memory limit of each user container in MiB, swap included (so no swap).
    #[arg(long, env = "CONTAINER_MEMORY_MB", value_name = "MIB")]
    pub container_memory_mb: Option<u32>,
    /// CPU limit of each user container, in CPUs, e.g. 0.5 (Docker's --cpus).
    #[arg(long, env = "CONTAINER_CPUS", value_name = "CPUS")]
    pub container_cpus: Option<f64>,
    /// Most processes and threads in each user container.
    #[arg(long, env = "CONTAINER_PIDS_LIMIT", value_name = "N")]
    pub container_pids_limit: Option<u32>,
    /// Prefix of each user's url, e.g. https://agents.example.com.
    #[arg(long, env = "PUBLIC_BASE_URL", value_name = "URL")]
    pub public_base_url: Option<String>,
    /// Prefix of the users' secret names in Secrets Manager.
    #[arg(long, env = "SECRET_PREFIX", value_name = "PREFIX")]
    pub secret_prefix: Option<String>,
    /// Address the HTTP API listens on.
    #[arg(long, env = "SPOTPOOL_LISTEN", value_name = "ADDR")]
    pub spotpool_listen: Option<String>,
    /// This replica's name in the lease, the leadership events and the logs (1-64 letters, digits, '.', '_', ':' or '-'); unset, `<hostname>-<pid>`.
    #[arg(long, env = "SPOTPOOL_REPLICA_ID", value_name = "NAME")]
    pub spotpool_replica_id: Option<String>,
    /// The URL other replicas' callers are sent to while this replica leads (a standby's `409 standby` names it); unset, this replica's scheme and listen address, with the hostname for an unspecified address.
    #[arg(long, env = "SPOTPOOL_ADVERTISE_URL", value_name = "URL")]
    pub spotpool_advertise_url: Option<String>,
    /// PEM certificate chain for the API: with SPOTPOOL_TLS_KEY, the API serves HTTPS only
    /// (re-read on SIGHUP).
    #[arg(long, env = "SPOTPOOL_TLS_CERT", value_name = "PATH")]
    pub spotpool_tls_cert: Option<PathBuf>,
    /// PEM private key of SPOTPOOL_TLS_CERT (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "SPOTPOOL_TLS_KEY", value_name = "PATH")]
    pub spotpool_tls_key: Option<PathBuf>,
    /// Database URL.
    #[arg(long, env = "SPOTPOOL_DATABASE_URL", value_name = "URL")]
    pub spotpool_database_url: Option<String>,
    /// Bearer token of the service scope (the web backend) (required).
    #[arg(
        long,
        env = "SPOTPOOL_API_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub spotpool_api_token: Option<String>,
    /// Bearer token of the admin scope (on-call); also allowed everywhere else (required).
    #[arg(
        long,
        env = "SPOTPOOL_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub spotpool_admin_token: Option<String>,
    /// Tag namespace: the value of the spotpool:pool tag on everything this daemon owns.
    #[arg(long, env = "SPOTPOOL_POOL", value_name = "NAME")]
    pub spotpool_pool: Option<String>,
    /// Longest pause between reconcile passes when nothing is in flight, e.g. 10s.
    #[arg(long, env = "SPOTPOOL_RECONCILE_INTERVAL", value_name = "DURATION")]
    pub spotpool_reconcile_interval: Option<String>,
    /// Pause between passes while commands or launches are in flight.
    #[arg(long, env = "SPOTPOOL_POLL_INTERVAL", value_name = "DURATION")]
    pub spotpool_poll_interval: Option<String>,
    /// How long a new instance may take to pass its readiness probe before it is replaced.
    #[arg(long, env = "SPOTPOOL_PROBE_TIMEOUT", value_name = "DURATION")]
    pub spotpool_probe_timeout: Option<String>,
    /// How long the start-container command may run before the claim attempt fails.
    #[arg(long, env = "SPOTPOOL_CONTAINER_TIMEOUT", value_name = "DURATION")]
    pub spotpool_container_timeout: Option<String>,
    /// Claim attempts (each on a fresh instance) before a user is marked failed.
    #[arg(long, env = "SPOTPOOL_CLAIM_ATTEMPTS", value_name = "N")]
    pub spotpool_claim_attempts: Option<u32>,
    /// Most cloud operations one pass runs at once.
    #[arg(long, env = "SPOTPOOL_MAX_IN_FLIGHT", value_name = "N")]
    pub spotpool_max_in_flight: Option<u32>,
    /// Most attempts per AWS call, including the first (SDK standard retry mode).
    #[arg(long, env = "SPOTPOOL_AWS_MAX_ATTEMPTS", value_name = "N")]
    pub spotpool_aws_max_attempts: Option<u32>,
    /// Most attempts of the API's secret writes (a PUT's CreateSecret or PutSecretValue), which have no later pass to retry them; the call timeout still bounds them.
    #[arg(long, env = "SPOTPOOL_AWS_SECRET_WRITE_ATTEMPTS", value_name = "N")]
    pub spotpool_aws_secret_write_attempts: Option<u32>,
    /// Timeout of one AWS call including its retries.
    #[arg(long, env = "SPOTPOOL_AWS_CALL_TIMEOUT", value_name = "DURATION")]
    pub spotpool_aws_call_timeout: Option<String>,
    /// Launch template for on-demand fallback launches, without market options (required with SPOTPOOL_ON_DEMAND_FALLBACK).
    #[arg(long, env = "ON_DEMAND_LAUNCH_TEMPLATE_ID", value_name = "ID")]
    pub on_demand_launch_template_id: Option<String>,
    /// Launch on-demand instances when no spot offering of any type has capacity.
    #[arg(long, env = "SPOTPOOL_ON_DEMAND_FALLBACK", value_name = "BOOL")]
    pub spotpool_on_demand_fallback: Option<bool>,
    /// Pre-wire spares: each spare gets its own target group and a warm rule (a condition no client matches) on its shard's listener, and is available once the load balancer reports it healthy through the warm responder the launch template's user data runs; a claim then switches the rule to the user with one ModifyRule. false: a claim creates the target group and rule, and waits for the health checks of a new target.
    #[arg(long, env = "SPOTPOOL_PREWIRED_SPARES", value_name = "BOOL")]
    pub spotpool_prewired_spares: Option<bool>,
    /// How long after switching a pre-wired spare's rule to the user's route `ready` waits at least, so that the load balancer has applied the switch (AWS reports no moment when a rule change is live). The container's start usually covers it.
    #[arg(long, env = "SPOTPOOL_RULE_SETTLE", value_name = "DURATION")]
    pub spotpool_rule_settle: Option<String>,
    /// Launch each spare with a blank encrypted workspace volume (SPOTPOOL_WORKSPACE_SIZE_GIB, deleted with the instance unless a claim keeps it): a user's first claim keeps it where it is instead of creating and attaching a volume. false: the first claim creates and attaches the workspace.
    #[arg(long, env = "SPOTPOOL_BLANK_WORKSPACES", value_name = "BOOL")]
    pub spotpool_blank_workspaces: Option<bool>,
    /// Move a user off an instance that gets a rebalance recommendation when a spare is available (a move restarts the user's container on the new instance).
    #[arg(long, env = "SPOTPOOL_REBALANCE_MOVES", value_name = "BOOL")]
    pub spotpool_rebalance_moves: Option<bool>,
    /// How long an (instance type, subnet) offering that returned a capacity error is skipped.
    #[arg(long, env = "SPOTPOOL_CAPACITY_TTL", value_name = "DURATION")]
    pub spotpool_capacity_ttl: Option<String>,
    /// Consecutive launch or probe failures after which a tier stops launching until restarted.
    #[arg(long, env = "SPOTPOOL_LAUNCH_FAILURE_LIMIT", value_name = "N")]
    pub spotpool_launch_failure_limit: Option<u32>,
    /// Client-side AWS rate limits per quota class, as class=capacity/refill-per-second pairs overriding the defaults (60% of the capacity and 80% of the refill rate of the aws-profile account quotas), e.g. "ec2-run=4/1.6,elb-mutate=16/2.4".
    #[arg(long, env = "SPOTPOOL_RATE_LIMITS", value_name = "LIST")]
    pub spotpool_rate_limits: Option<String>,
    /// SQS queue of EC2 spot interruption, rebalance and state-change events (Terraform output interruption_queue_url); unset, none are read.
    #[arg(long, env = "SPOTPOOL_INTERRUPTION_QUEUE_URL", value_name = "URL")]
    pub spotpool_interruption_queue_url: Option<String>,
    /// Size of each user's workspace volume (encrypted gp3, mounted at the container's /data) in GiB, 1-16384.
    #[arg(long, env = "SPOTPOOL_WORKSPACE_SIZE_GIB", value_name = "GIB")]
    pub spotpool_workspace_size_gib: Option<u32>,
    /// A customer-managed KMS key (id or ARN) for workspace volumes; unset, the account's default EBS key.
    #[arg(long, env = "SPOTPOOL_WORKSPACE_KMS_KEY_ID", value_name = "KEY")]
    pub spotpool_workspace_kms_key_id: Option<String>,
    /// Put a ready user to sleep after this long without a request through the load balancer (CloudWatch RequestCount), e.g. 2h; "off" never does. Agents that only poll outward (Telegram, Discord) get no inbound requests: leave it off for them.
    #[arg(long, env = "SPOTPOOL_IDLE_SLEEP_AFTER", value_name = "DURATION")]
    pub spotpool_idle_sleep_after: Option<String>,
    /// The health watch's DescribeTargetHealth calls per second over the ready users (0 turns the watch off; at most 5, half the ELB describe quota). At 2, 1,000 users are each read every 500 s.
    #[arg(long, env = "SPOTPOOL_HEALTH_CHECKS_PER_SECOND", value_name = "RATE")]
    pub spotpool_health_checks_per_second: Option<f64>,
    /// The key of the ready webhooks' signatures (`Spotpool-Signature`, an HMAC-SHA256; at least 32 characters). Unset, a PUT with a callback_url is refused.
    #[arg(
        long,
        env = "SPOTPOOL_WEBHOOK_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub spotpool_webhook_secret: Option<String>,
    /// Accept callback URLs over plain http and to private, loopback and link-local addresses (tests and local mode only: it opens the daemon's network to whoever holds the service token).
    #[arg(long, env = "SPOTPOOL_WEBHOOK_ALLOW_PRIVATE", value_name = "BOOL")]
    pub spotpool_webhook_allow_private: Option<bool>,
    /// On-demand prices per hour, as a comma list of type=dollars (e.g. t3.small=0.0208), over the built-in us-east-1 list (docs/costs.md): the price of on-demand launches, and of spot ones before a spot price is read.
    #[arg(long, env = "SPOTPOOL_ON_DEMAND_PRICES", value_name = "PRICES")]
    pub spotpool_on_demand_prices: Option<String>,
    /// Pool instances get a public IPv4 address ($0.005 an hour each, counted in the cost); false in the Terraform module's private subnet mode.
    #[arg(long, env = "SPOTPOOL_PUBLIC_IPV4", value_name = "BOOL")]
    pub spotpool_public_ipv4: Option<bool>,
    /// Size in GiB of the instances' gp3 root volume, for the cost (the launch template sets it; the module's root_volume_size).
    #[arg(long, env = "SPOTPOOL_ROOT_VOLUME_GIB", value_name = "GIB")]
    pub spotpool_root_volume_gib: Option<u32>,
    /// The network's own dollars an hour, shared by the whole pool in the cost (the private subnet mode's VPC endpoints, a NAT gateway); 0 without.
    #[arg(
        long,
        env = "SPOTPOOL_NETWORK_FIXED_DOLLARS_PER_HOUR",
        value_name = "DOLLARS"
    )]
    pub spotpool_network_fixed_dollars_per_hour: Option<f64>,
    /// CPU credits of burstable (T) instances as the launch template sets them: standard or unlimited (the cost then shows what surplus credits could add).
    #[arg(long, env = "SPOTPOOL_CPU_CREDITS", value_name = "MODE")]
    pub spotpool_cpu_credits: Option<String>,
    /// What one move costs in dollars (a spare taken early, the workspace's detach and attach, the user's minute without the gateway), weighed against each offering's interruption rate by `placement = "cheapest"`.
    #[arg(long, env = "SPOTPOOL_MOVE_COST_DOLLARS", value_name = "DOLLARS")]
    pub spotpool_move_cost_dollars: Option<f64>,
    /// The load balancers users are routed through: `[[shard]]` tables, in the config file only
    /// (ARCHITECTURE.md, "Shards").
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Vec<super::ShardSettings>>,
    /// The tiers (plans) users are served in: `[[tier]]` tables, in the config file only
    /// (docs/DEPLOY.md, "Tiers"); without them, the flat settings make one tier, `default`.
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Vec<super::TierSettings>>,
}

impl Settings {
    /// Reads a TOML file of settings (keys are the lowercase setting names, e.g.
    /// `pool_spare_count = 3`). Unknown keys are an error, so typos do not pass silently.
    pub fn from_file(path: &PathBuf) -> Result<Settings, ConfigError> {
        let file_error = |why: String| ConfigError::File {
            path: path.display().to_string(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        toml::from_str(&text).map_err(|e| file_error(e.message().to_string()))
    }

    /// Fills every unset field of `self` (flags and env win) from `fallback` (the file).
    pub fn or(self, fallback: Settings) -> Settings {
        // Round-trip through TOML tables: None fields are skipped when serialising, so the
        // overlay only replaces what `self` actually sets. This keeps the field list in one place.
        let mut merged = toml::Table::try_from(&fallback).unwrap_or_default();
        if let Ok(overlay) = toml::Table::try_from(&self) {
            merged.extend(overlay);
        }
        merged.try_into().unwrap_or(self)
    }
}
