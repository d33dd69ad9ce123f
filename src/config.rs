//! Typed configuration for `spotpool serve`, from command-line flags, the environment (the
//! names in DESIGN.md, the seed's names kept) or an optional TOML file, in that order of
//! precedence.
//!
//! Owns: every setting's name, default and validation. Must not: read anything but flags, env
//! and the file; start-up never panics on bad config, it stops with one line naming the setting.

use crate::cloud::HealthCheck;
use crate::cloud::limit::RateLimits;
use crate::plan::TierPolicy;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The name of the tier configured by the flat settings (POOL_SPARE_COUNT, ...).
pub const DEFAULT_TIER: &str = "default";

/// A secret string (an API token): never printed, not even by `{:?}`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> SecretString {
        SecretString(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

/// The raw settings, as flags, environment variables or TOML keys (the lowercase flag names
/// with underscores). Every field is optional here; [`Settings::into_config`] applies defaults
/// and validates.
#[derive(Debug, Default, Clone, clap::Args, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Launch template for pool instances (required).
    #[arg(long, env = "LAUNCH_TEMPLATE_ID")]
    pub launch_template_id: Option<String>,
    /// Launch template version to launch [default: $Default].
    #[arg(long, env = "LAUNCH_TEMPLATE_VERSION", value_name = "VERSION")]
    pub launch_template_version: Option<String>,
    /// Instance types for the default tier, as a comma list; the first is preferred [default: t3.small].
    #[arg(long, env = "USER_INSTANCE_TYPE", value_name = "TYPES")]
    pub user_instance_type: Option<String>,
    /// Spare instances to keep available in the default tier [default: 2].
    #[arg(long, env = "POOL_SPARE_COUNT", value_name = "N")]
    pub pool_spare_count: Option<u32>,
    /// Most instances the default tier may run at once, all statuses together [default: 20].
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
    /// ALB listener for the users' path rules; a comma list shards users across listeners (required).
    #[arg(long, env = "ALB_LISTENER_ARN", value_name = "ARNS")]
    pub alb_listener_arn: Option<String>,
    /// Instance profile ARN passed explicitly at launch; empty uses the launch template's.
    #[arg(long, env = "INSTANCE_PROFILE_ARN", value_name = "ARN")]
    pub instance_profile_arn: Option<String>,
    /// ECR repository of the user container, used when CONTAINER_IMAGE is not set.
    #[arg(long, env = "ECR_REPOSITORY_URL", value_name = "URL")]
    pub ecr_repository_url: Option<String>,
    /// The user container image [default: <ECR_REPOSITORY_URL>:latest].
    #[arg(long, env = "CONTAINER_IMAGE", value_name = "IMAGE")]
    pub container_image: Option<String>,
    /// Port the user container listens on [default: 8080].
    #[arg(long, env = "CONTAINER_PORT", value_name = "PORT")]
    pub container_port: Option<u16>,
    /// Health check path of the users' target groups [default: /].
    #[arg(long, env = "HEALTH_CHECK_PATH", value_name = "PATH")]
    pub health_check_path: Option<String>,
    /// Seconds between the load balancer's health checks of a user's target, 5-300 (set on every target group; AWS's own default is 30) [default: 5].
    #[arg(long, env = "HEALTH_CHECK_INTERVAL_SECONDS", value_name = "SECONDS")]
    pub health_check_interval_seconds: Option<u32>,
    /// Seconds without an answer that fail one health check, 2-120 and less than the interval [default: 4].
    #[arg(long, env = "HEALTH_CHECK_TIMEOUT_SECONDS", value_name = "SECONDS")]
    pub health_check_timeout_seconds: Option<u32>,
    /// Consecutive passed health checks before a new target is healthy, 2-10 (AWS's own default is 5) [default: 2].
    #[arg(long, env = "HEALTH_CHECK_HEALTHY_THRESHOLD", value_name = "N")]
    pub health_check_healthy_threshold: Option<u32>,
    /// Consecutive failed health checks before a target is unhealthy, 2-10 [default: 2].
    #[arg(long, env = "HEALTH_CHECK_UNHEALTHY_THRESHOLD", value_name = "N")]
    pub health_check_unhealthy_threshold: Option<u32>,
    /// Memory limit of each user container in MiB, swap included (so no swap) [default: 1536].
    #[arg(long, env = "CONTAINER_MEMORY_MB", value_name = "MIB")]
    pub container_memory_mb: Option<u32>,
    /// CPU limit of each user container, in CPUs, e.g. 0.5 (Docker's --cpus) [default: 1.0].
    #[arg(long, env = "CONTAINER_CPUS", value_name = "CPUS")]
    pub container_cpus: Option<f64>,
    /// Most processes and threads in each user container [default: 512].
    #[arg(long, env = "CONTAINER_PIDS_LIMIT", value_name = "N")]
    pub container_pids_limit: Option<u32>,
    /// Prefix of each user's url, e.g. https://agents.example.com [default: http://localhost].
    #[arg(long, env = "PUBLIC_BASE_URL", value_name = "URL")]
    pub public_base_url: Option<String>,
    /// Prefix of the users' secret names in Secrets Manager [default: openclaw/].
    #[arg(long, env = "SECRET_PREFIX", value_name = "PREFIX")]
    pub secret_prefix: Option<String>,
    /// Address the HTTP API listens on [default: 127.0.0.1:7070].
    #[arg(long, env = "SPOTPOOL_LISTEN", value_name = "ADDR")]
    pub spotpool_listen: Option<String>,
    /// Database URL [default: sqlite://spotpool.db].
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
    /// Tag namespace: the value of the spotpool:pool tag on everything this daemon owns [default: spotpool].
    #[arg(long, env = "SPOTPOOL_POOL", value_name = "NAME")]
    pub spotpool_pool: Option<String>,
    /// Longest pause between reconcile passes when nothing is in flight, e.g. 10s [default: 10s].
    #[arg(long, env = "SPOTPOOL_RECONCILE_INTERVAL", value_name = "DURATION")]
    pub spotpool_reconcile_interval: Option<String>,
    /// Pause between passes while commands or launches are in flight [default: 500ms].
    #[arg(long, env = "SPOTPOOL_POLL_INTERVAL", value_name = "DURATION")]
    pub spotpool_poll_interval: Option<String>,
    /// How long a new instance may take to pass its readiness probe before it is replaced [default: 10m].
    #[arg(long, env = "SPOTPOOL_PROBE_TIMEOUT", value_name = "DURATION")]
    pub spotpool_probe_timeout: Option<String>,
    /// How long the start-container command may run before the claim attempt fails [default: 5m].
    #[arg(long, env = "SPOTPOOL_CONTAINER_TIMEOUT", value_name = "DURATION")]
    pub spotpool_container_timeout: Option<String>,
    /// Claim attempts (each on a fresh instance) before a user is marked failed [default: 3].
    #[arg(long, env = "SPOTPOOL_CLAIM_ATTEMPTS", value_name = "N")]
    pub spotpool_claim_attempts: Option<u32>,
    /// Most cloud operations one pass runs at once [default: 16].
    #[arg(long, env = "SPOTPOOL_MAX_IN_FLIGHT", value_name = "N")]
    pub spotpool_max_in_flight: Option<u32>,
    /// Most attempts per AWS call, including the first (SDK standard retry mode) [default: 4].
    #[arg(long, env = "SPOTPOOL_AWS_MAX_ATTEMPTS", value_name = "N")]
    pub spotpool_aws_max_attempts: Option<u32>,
    /// Most attempts of the API's secret writes (a PUT's CreateSecret or PutSecretValue), which have no later pass to retry them; the call timeout still bounds them [default: 8].
    #[arg(long, env = "SPOTPOOL_AWS_SECRET_WRITE_ATTEMPTS", value_name = "N")]
    pub spotpool_aws_secret_write_attempts: Option<u32>,
    /// Timeout of one AWS call including its retries [default: 30s].
    #[arg(long, env = "SPOTPOOL_AWS_CALL_TIMEOUT", value_name = "DURATION")]
    pub spotpool_aws_call_timeout: Option<String>,
    /// Launch template for on-demand fallback launches, without market options (required with SPOTPOOL_ON_DEMAND_FALLBACK).
    #[arg(long, env = "ON_DEMAND_LAUNCH_TEMPLATE_ID", value_name = "ID")]
    pub on_demand_launch_template_id: Option<String>,
    /// Launch on-demand instances when no spot offering of any type has capacity [default: false].
    #[arg(long, env = "SPOTPOOL_ON_DEMAND_FALLBACK", value_name = "BOOL")]
    pub spotpool_on_demand_fallback: Option<bool>,
    /// Move a user off an instance that gets a rebalance recommendation when a spare is available (a move restarts the user's container on the new instance) [default: false].
    #[arg(long, env = "SPOTPOOL_REBALANCE_MOVES", value_name = "BOOL")]
    pub spotpool_rebalance_moves: Option<bool>,
    /// How long an (instance type, subnet) offering that returned a capacity error is skipped [default: 3m].
    #[arg(long, env = "SPOTPOOL_CAPACITY_TTL", value_name = "DURATION")]
    pub spotpool_capacity_ttl: Option<String>,
    /// Consecutive launch or probe failures after which a tier stops launching until restarted [default: 10].
    #[arg(long, env = "SPOTPOOL_LAUNCH_FAILURE_LIMIT", value_name = "N")]
    pub spotpool_launch_failure_limit: Option<u32>,
    /// Client-side AWS rate limits per quota class, as class=capacity/refill-per-second pairs overriding the defaults (60% of the capacity and 80% of the refill rate of the aws-profile account quotas), e.g. "ec2-run=4/1.6,elb-mutate=16/2.4" [default: ""].
    #[arg(long, env = "SPOTPOOL_RATE_LIMITS", value_name = "LIST")]
    pub spotpool_rate_limits: Option<String>,
    /// SQS queue of EC2 spot interruption, rebalance and state-change events (Terraform output interruption_queue_url); unset, none are read.
    #[arg(long, env = "SPOTPOOL_INTERRUPTION_QUEUE_URL", value_name = "URL")]
    pub spotpool_interruption_queue_url: Option<String>,
}

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub api_token: SecretString,
    pub admin_token: SecretString,
    pub pool: String,
    pub launch_template_id: String,
    pub launch_template_version: String,
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
    pub vpc_id: String,
    pub listener_arns: Vec<String>,
    pub instance_profile_arn: Option<String>,
    pub container_image: String,
    pub container_port: u16,
    /// The target groups' health check; its path is also what the start script waits for.
    pub health_check: HealthCheck,
    /// Memory limit of a user container in MiB (swap the same, so none).
    pub container_memory_mb: u32,
    /// CPU limit of a user container in CPUs; the instance gets it rounded to millicores.
    pub container_cpus: f64,
    pub container_pids_limit: u32,
    pub public_base_url: String,
    pub secret_prefix: String,
    pub tiers: Vec<TierPolicy>,
    pub reconcile_interval: Duration,
    pub poll_interval: Duration,
    pub probe_timeout: Duration,
    pub container_timeout: Duration,
    pub claim_attempts: u32,
    pub max_in_flight: usize,
    pub aws_max_attempts: u32,
    pub aws_secret_write_attempts: u32,
    pub aws_call_timeout: Duration,
    pub capacity_ttl: Duration,
    pub launch_failure_limit: u32,
    pub on_demand_launch_template_id: Option<String>,
    pub rate_limits: RateLimits,
    /// The SQS queue EventBridge fills with EC2 interruption events; None runs no consumer.
    pub interruption_queue_url: Option<String>,
}

/// A setting that is missing or invalid. Its `Display` is the one line start-up prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("missing setting {env} (--{flag}): {what}")]
    Missing {
        env: &'static str,
        flag: &'static str,
        what: &'static str,
    },
    #[error("invalid setting {env}={value:?}: {why}")]
    Invalid {
        env: &'static str,
        value: String,
        why: String,
    },
    #[error("config file {path}: {why}")]
    File { path: String, why: String },
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

    pub fn into_config(self) -> Result<Config, ConfigError> {
        let required = |value: Option<String>, env, flag, what| {
            value
                .filter(|v| !v.trim().is_empty())
                .ok_or(ConfigError::Missing { env, flag, what })
        };
        let launch_template_id = required(
            self.launch_template_id,
            "LAUNCH_TEMPLATE_ID",
            "launch-template-id",
            "the launch template for pool instances",
        )?;
        let subnet_ids = comma_list(&required(
            self.subnet_ids,
            "SUBNET_IDS",
            "subnet-ids",
            "the subnets to launch pool instances into",
        )?);
        let vpc_id = required(
            self.vpc_id,
            "VPC_ID",
            "vpc-id",
            "the VPC of the target groups",
        )?;
        let listener_arns = comma_list(&required(
            self.alb_listener_arn,
            "ALB_LISTENER_ARN",
            "alb-listener-arn",
            "the ALB listener that routes users",
        )?);
        let api_token = required(
            self.spotpool_api_token,
            "SPOTPOOL_API_TOKEN",
            "spotpool-api-token",
            "the bearer token of the web backend",
        )?;
        let admin_token = required(
            self.spotpool_admin_token,
            "SPOTPOOL_ADMIN_TOKEN",
            "spotpool-admin-token",
            "the bearer token of on-call",
        )?;
        for (env, token) in [
            ("SPOTPOOL_API_TOKEN", &api_token),
            ("SPOTPOOL_ADMIN_TOKEN", &admin_token),
        ] {
            if token.len() < 16 {
                return Err(ConfigError::Invalid {
                    env,
                    value: "<redacted>".into(),
                    why: "tokens need at least 16 characters".into(),
                });
            }
        }
        if api_token == admin_token {
            return Err(ConfigError::Invalid {
                env: "SPOTPOOL_ADMIN_TOKEN",
                value: "<redacted>".into(),
                why: "must differ from SPOTPOOL_API_TOKEN, or the scopes mean nothing".into(),
            });
        }
        let on_demand_launch_template_id = self
            .on_demand_launch_template_id
            .clone()
            .filter(|id| !id.trim().is_empty());
        if self.spotpool_on_demand_fallback == Some(true) && on_demand_launch_template_id.is_none()
        {
            return Err(ConfigError::Missing {
                env: "ON_DEMAND_LAUNCH_TEMPLATE_ID",
                flag: "on-demand-launch-template-id",
                what: "the launch template for on-demand fallback (SPOTPOOL_ON_DEMAND_FALLBACK is true)",
            });
        }
        let container_image = match (self.container_image, self.ecr_repository_url) {
            (Some(image), _) if !image.trim().is_empty() => image,
            (_, Some(repo)) if !repo.trim().is_empty() => format!("{repo}:latest"),
            _ => {
                return Err(ConfigError::Missing {
                    env: "CONTAINER_IMAGE",
                    flag: "container-image",
                    what: "the user container image (or ECR_REPOSITORY_URL)",
                });
            }
        };
        validate_shell_safe("CONTAINER_IMAGE", &container_image)?;
        let health_check_path = self.health_check_path.unwrap_or_else(|| "/".into());
        validate_health_check_path(&health_check_path)?;
        let health_check = health_check(
            health_check_path,
            self.health_check_interval_seconds,
            self.health_check_timeout_seconds,
            self.health_check_healthy_threshold,
            self.health_check_unhealthy_threshold,
        )?;
        let container_memory_mb = self.container_memory_mb.unwrap_or(1536);
        if !(64..=1_048_576).contains(&container_memory_mb) {
            return Err(ConfigError::Invalid {
                env: "CONTAINER_MEMORY_MB",
                value: container_memory_mb.to_string(),
                why: "must be from 64 to 1048576 (MiB)".into(),
            });
        }
        let container_cpus = self.container_cpus.unwrap_or(1.0);
        // NaN fails both comparisons, so it is refused too.
        if !(0.01..=256.0).contains(&container_cpus) {
            return Err(ConfigError::Invalid {
                env: "CONTAINER_CPUS",
                value: container_cpus.to_string(),
                why: "must be a number of CPUs from 0.01 to 256, e.g. 1.0 or 0.5".into(),
            });
        }
        let container_pids_limit = self.container_pids_limit.unwrap_or(512);
        if !(16..=1_048_576).contains(&container_pids_limit) {
            return Err(ConfigError::Invalid {
                env: "CONTAINER_PIDS_LIMIT",
                value: container_pids_limit.to_string(),
                why: "must be from 16 to 1048576".into(),
            });
        }
        let listen_raw = self
            .spotpool_listen
            .unwrap_or_else(|| "127.0.0.1:7070".into());
        let listen = listen_raw.parse().map_err(|_| ConfigError::Invalid {
            env: "SPOTPOOL_LISTEN",
            value: listen_raw.clone(),
            why: "expected an address like 127.0.0.1:7070".into(),
        })?;
        let instance_types = comma_list(self.user_instance_type.as_deref().unwrap_or("t3.small"));
        if instance_types.is_empty() {
            return Err(ConfigError::Invalid {
                env: "USER_INSTANCE_TYPE",
                value: String::new(),
                why: "name at least one instance type".into(),
            });
        }
        let spare_count = self.pool_spare_count.unwrap_or(2);
        let max_instances = self.pool_max_instances.unwrap_or(20);
        if max_instances < spare_count {
            return Err(ConfigError::Invalid {
                env: "POOL_MAX_INSTANCES",
                value: max_instances.to_string(),
                why: format!("must be at least POOL_SPARE_COUNT ({spare_count})"),
            });
        }
        let pool = self.spotpool_pool.unwrap_or_else(|| "spotpool".into());
        if pool.is_empty() || pool.len() > 64 {
            return Err(ConfigError::Invalid {
                env: "SPOTPOOL_POOL",
                value: pool,
                why: "needs 1-64 characters".into(),
            });
        }
        let secret_prefix = self.secret_prefix.unwrap_or_else(|| "openclaw/".into());
        let public_base_url = self
            .public_base_url
            .unwrap_or_else(|| "http://localhost".into())
            .trim_end_matches('/')
            .to_string();
        let claim_attempts = self.spotpool_claim_attempts.unwrap_or(3);
        if claim_attempts == 0 {
            return Err(ConfigError::Invalid {
                env: "SPOTPOOL_CLAIM_ATTEMPTS",
                value: "0".into(),
                why: "must be at least 1".into(),
            });
        }
        let interruption_queue_url = self
            .spotpool_interruption_queue_url
            .map(|url| url.trim().to_string())
            .filter(|url| !url.is_empty());
        if let Some(url) = &interruption_queue_url {
            validate_queue_url(url)?;
        }
        let duration = |env: &'static str, value: Option<String>, default: &str| {
            let raw = value.unwrap_or_else(|| default.to_string());
            parse_duration(&raw).map_err(|why| ConfigError::Invalid {
                env,
                value: raw.clone(),
                why,
            })
        };
        Ok(Config {
            listen,
            database_url: self
                .spotpool_database_url
                .unwrap_or_else(|| "sqlite://spotpool.db".into()),
            api_token: SecretString::new(api_token),
            admin_token: SecretString::new(admin_token),
            launch_template_id,
            launch_template_version: self
                .launch_template_version
                .unwrap_or_else(|| "$Default".into()),
            subnet_ids,
            security_group_ids: comma_list(self.security_group_id.as_deref().unwrap_or("")),
            vpc_id,
            listener_arns,
            instance_profile_arn: self.instance_profile_arn.filter(|v| !v.is_empty()),
            container_image,
            container_port: self.container_port.unwrap_or(8080),
            health_check,
            container_memory_mb,
            container_cpus,
            container_pids_limit,
            public_base_url,
            secret_prefix,
            tiers: vec![TierPolicy {
                name: DEFAULT_TIER.into(),
                spare_count,
                max_instances,
                instance_types,
                on_demand_fallback: self.spotpool_on_demand_fallback.unwrap_or(false),
                rebalance_moves: self.spotpool_rebalance_moves.unwrap_or(false),
            }],
            pool,
            reconcile_interval: duration(
                "SPOTPOOL_RECONCILE_INTERVAL",
                self.spotpool_reconcile_interval,
                "10s",
            )?,
            poll_interval: duration(
                "SPOTPOOL_POLL_INTERVAL",
                self.spotpool_poll_interval,
                "500ms",
            )?,
            probe_timeout: duration("SPOTPOOL_PROBE_TIMEOUT", self.spotpool_probe_timeout, "10m")?,
            container_timeout: duration(
                "SPOTPOOL_CONTAINER_TIMEOUT",
                self.spotpool_container_timeout,
                "5m",
            )?,
            claim_attempts,
            max_in_flight: self.spotpool_max_in_flight.unwrap_or(16).max(1) as usize,
            aws_max_attempts: self
                .spotpool_aws_max_attempts
                .unwrap_or(crate::cloud::DEFAULT_AWS_MAX_ATTEMPTS)
                .max(1),
            aws_secret_write_attempts: self
                .spotpool_aws_secret_write_attempts
                .unwrap_or(crate::cloud::DEFAULT_SECRET_WRITE_ATTEMPTS)
                .max(1),
            aws_call_timeout: duration(
                "SPOTPOOL_AWS_CALL_TIMEOUT",
                self.spotpool_aws_call_timeout,
                "30s",
            )?,
            capacity_ttl: duration("SPOTPOOL_CAPACITY_TTL", self.spotpool_capacity_ttl, "3m")?,
            launch_failure_limit: self.spotpool_launch_failure_limit.unwrap_or(10).max(1),
            on_demand_launch_template_id,
            rate_limits: {
                let spec = self.spotpool_rate_limits.unwrap_or_default();
                RateLimits::parse(&spec).map_err(|why| ConfigError::Invalid {
                    env: "SPOTPOOL_RATE_LIMITS",
                    value: spec.clone(),
                    why,
                })?
            },
            interruption_queue_url,
        })
    }
}

fn comma_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Values that end up inside the SSM shell script must not be able to break out of quoting.
fn validate_shell_safe(env: &'static str, value: &str) -> Result<(), ConfigError> {
    let ok = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            env,
            value: value.to_string(),
            why: "only letters, digits and - _ . / : @ are allowed".into(),
        })
    }
}

/// The health path goes into the start-container script and a curl URL: a path of plain
/// characters only (the script checks the same rule).
fn validate_health_check_path(path: &str) -> Result<(), ConfigError> {
    let ok = path.starts_with('/')
        && path.len() <= 1024
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._~/%?=&+-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            env: "HEALTH_CHECK_PATH",
            value: path.to_string(),
            why: "must start with / and use only letters, digits and . _ ~ / % ? = & + - \
                  (at most 1024 characters)"
                .into(),
        })
    }
}

/// The target groups' health check from its settings, within AWS's ranges, and with the timeout
/// below the interval (AWS refuses CreateTargetGroup otherwise).
fn health_check(
    path: String,
    interval: Option<u32>,
    timeout: Option<u32>,
    healthy: Option<u32>,
    unhealthy: Option<u32>,
) -> Result<HealthCheck, ConfigError> {
    let defaults = HealthCheck::with_path(path);
    let in_range = |env: &'static str, value: u32, range: std::ops::RangeInclusive<u32>| {
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::Invalid {
                env,
                value: value.to_string(),
                why: format!("must be from {} to {}", range.start(), range.end()),
            })
        }
    };
    let interval_seconds = in_range(
        "HEALTH_CHECK_INTERVAL_SECONDS",
        interval.unwrap_or(defaults.interval_seconds),
        5..=300,
    )?;
    let timeout_seconds = in_range(
        "HEALTH_CHECK_TIMEOUT_SECONDS",
        timeout.unwrap_or(defaults.timeout_seconds),
        2..=120,
    )?;
    if timeout_seconds >= interval_seconds {
        return Err(ConfigError::Invalid {
            env: "HEALTH_CHECK_TIMEOUT_SECONDS",
            value: timeout_seconds.to_string(),
            why: format!(
                "must be less than HEALTH_CHECK_INTERVAL_SECONDS ({interval_seconds}); AWS refuses the target group otherwise"
            ),
        });
    }
    Ok(HealthCheck {
        interval_seconds,
        timeout_seconds,
        healthy_threshold: in_range(
            "HEALTH_CHECK_HEALTHY_THRESHOLD",
            healthy.unwrap_or(defaults.healthy_threshold),
            2..=10,
        )?,
        unhealthy_threshold: in_range(
            "HEALTH_CHECK_UNHEALTHY_THRESHOLD",
            unhealthy.unwrap_or(defaults.unhealthy_threshold),
            2..=10,
        )?,
        path: defaults.path,
    })
}

/// An SQS queue URL: `https://sqs.<region>.amazonaws.com/<account>/<name>` on AWS, or an
/// `http://` one on a local emulator. Anything else (an ARN, a bare name) is a mistake worth
/// catching at start-up rather than at the first receive.
fn validate_queue_url(url: &str) -> Result<(), ConfigError> {
    let path = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, path)| path);
    let ok = path.is_some_and(|path| {
        let mut parts = path.split('/');
        matches!(
            (parts.next(), parts.next(), parts.next()),
            (Some(account), Some(name), None) if !account.is_empty() && !name.is_empty()
        )
    }) && !url.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            env: "SPOTPOOL_INTERRUPTION_QUEUE_URL",
            value: url.to_string(),
            why: "expected a queue URL like https://sqs.eu-west-1.amazonaws.com/123456789012/spotpool-interruptions".into(),
        })
    }
}

/// Parses `500ms`, `10s`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| "expected a duration like 500ms, 10s, 5m or 1h".to_string())?;
    let duration = match unit {
        "ms" => Duration::from_millis(number),
        "" | "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number * 60),
        "h" => Duration::from_secs(number * 3600),
        other => return Err(format!("unknown unit {other:?}; use ms, s, m or h")),
    };
    if duration.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> Settings {
        Settings {
            launch_template_id: Some("lt-1".into()),
            subnet_ids: Some("subnet-a, subnet-b".into()),
            vpc_id: Some("vpc-1".into()),
            alb_listener_arn: Some("arn:listener".into()),
            spotpool_api_token: Some("service-token-0123456789".into()),
            spotpool_admin_token: Some("admin-token-0123456789".into()),
            container_image: Some("ghcr.io/openclaw/openclaw:latest".into()),
            ..Settings::default()
        }
    }

    #[test]
    fn minimal_settings_get_the_documented_defaults() {
        let config = minimal().into_config().unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(config.subnet_ids, vec!["subnet-a", "subnet-b"]);
        assert_eq!(config.tiers[0].spare_count, 2);
        assert_eq!(config.tiers[0].instance_types, vec!["t3.small"]);
        assert_eq!(config.container_port, 8080);
        assert_eq!(config.pool, "spotpool");
        assert_eq!(config.secret_prefix, "openclaw/");
        assert_eq!(config.reconcile_interval, Duration::from_secs(10));
        assert_eq!(config.aws_max_attempts, 4);
        assert_eq!(config.aws_secret_write_attempts, 8);
    }

    #[test]
    fn a_missing_setting_is_named_in_one_line() {
        let mut settings = minimal();
        settings.launch_template_id = None;
        let message = settings.into_config().unwrap_err().to_string();
        assert!(
            message.starts_with("missing setting LAUNCH_TEMPLATE_ID"),
            "{message}"
        );
        assert!(!message.contains('\n'));
    }

    #[test]
    fn invalid_values_are_named_with_the_reason() {
        let mut settings = minimal();
        settings.spotpool_reconcile_interval = Some("fast".into());
        let message = settings.into_config().unwrap_err().to_string();
        assert!(message.contains("SPOTPOOL_RECONCILE_INTERVAL"), "{message}");

        let mut settings = minimal();
        settings.pool_max_instances = Some(1);
        let message = settings.into_config().unwrap_err().to_string();
        assert!(message.contains("POOL_MAX_INSTANCES"), "{message}");

        let mut settings = minimal();
        settings.container_image = Some("img; rm -rf /".into());
        let message = settings.into_config().unwrap_err().to_string();
        assert!(message.contains("CONTAINER_IMAGE"), "{message}");
    }

    #[test]
    fn health_checks_default_to_five_seconds_twice_and_keep_the_timeout_below_the_interval() {
        let health = minimal().into_config().unwrap().health_check;
        assert_eq!(
            (
                health.interval_seconds,
                health.timeout_seconds,
                health.healthy_threshold,
                health.unhealthy_threshold
            ),
            (5, 4, 2, 2)
        );
        assert_eq!(health.time_to_healthy(), Duration::from_secs(10));

        let mut settings = minimal();
        settings.health_check_interval_seconds = Some(10);
        settings.health_check_timeout_seconds = Some(6);
        settings.health_check_healthy_threshold = Some(3);
        settings.health_check_unhealthy_threshold = Some(4);
        let health = settings.into_config().unwrap().health_check;
        assert_eq!(health.time_to_healthy(), Duration::from_secs(30));
        assert_eq!((health.timeout_seconds, health.unhealthy_threshold), (6, 4));

        let refused = |settings: Settings| settings.into_config().unwrap_err().to_string();
        let mut settings = minimal();
        settings.health_check_timeout_seconds = Some(5);
        let message = refused(settings);
        assert!(
            message.starts_with("invalid setting HEALTH_CHECK_TIMEOUT_SECONDS=\"5\"")
                && message.contains("less than HEALTH_CHECK_INTERVAL_SECONDS (5)"),
            "{message}"
        );
        let mut settings = minimal();
        settings.health_check_interval_seconds = Some(4);
        assert!(refused(settings).contains("HEALTH_CHECK_INTERVAL_SECONDS"));
        let mut settings = minimal();
        settings.health_check_healthy_threshold = Some(1);
        assert!(refused(settings).contains("HEALTH_CHECK_HEALTHY_THRESHOLD"));
        let mut settings = minimal();
        settings.health_check_unhealthy_threshold = Some(11);
        assert!(refused(settings).contains("HEALTH_CHECK_UNHEALTHY_THRESHOLD"));
    }

    #[test]
    fn container_limits_have_defaults_and_bounds() {
        let config = minimal().into_config().unwrap();
        assert_eq!(config.container_memory_mb, 1536);
        assert_eq!(config.container_cpus, 1.0);
        assert_eq!(config.container_pids_limit, 512);
        assert_eq!(config.health_check.path, "/");

        let mut settings = minimal();
        settings.container_memory_mb = Some(4096);
        settings.container_cpus = Some(0.5);
        settings.container_pids_limit = Some(1024);
        let config = settings.into_config().unwrap();
        assert_eq!(
            (
                config.container_memory_mb,
                config.container_cpus,
                config.container_pids_limit
            ),
            (4096, 0.5, 1024)
        );

        let refused = |settings: Settings, env: &str| {
            let message = settings.into_config().unwrap_err().to_string();
            assert!(
                message.starts_with(&format!("invalid setting {env}=")),
                "{message}"
            );
            assert!(!message.contains('\n'), "{message}");
            message
        };
        for memory in [0, 63, 2_000_000] {
            let mut settings = minimal();
            settings.container_memory_mb = Some(memory);
            refused(settings, "CONTAINER_MEMORY_MB");
        }
        for cpus in [0.0, 0.001, -1.0, 257.0, f64::NAN, f64::INFINITY] {
            let mut settings = minimal();
            settings.container_cpus = Some(cpus);
            let message = refused(settings, "CONTAINER_CPUS");
            assert!(message.contains("from 0.01 to 256"), "{message}");
        }
        for pids in [0, 15, 2_000_000] {
            let mut settings = minimal();
            settings.container_pids_limit = Some(pids);
            refused(settings, "CONTAINER_PIDS_LIMIT");
        }
        for path in ["healthz", "/a b", "/$(id)", "/x'y", "/[1-2]"] {
            let mut settings = minimal();
            settings.health_check_path = Some(path.into());
            refused(settings, "HEALTH_CHECK_PATH");
        }
        let mut settings = minimal();
        settings.health_check_path = Some("/healthz?full=1".into());
        assert_eq!(
            settings.into_config().unwrap().health_check.path,
            "/healthz?full=1"
        );
    }

    #[test]
    fn container_limits_come_from_the_file_too() {
        let file: Settings = toml::from_str(
            "container_memory_mb = 2048\ncontainer_cpus = 1.5\ncontainer_pids_limit = 256\n",
        )
        .unwrap();
        let config = minimal().or(file).into_config().unwrap();
        assert_eq!(config.container_memory_mb, 2048);
        assert_eq!(config.container_cpus, 1.5);
        assert_eq!(config.container_pids_limit, 256);
    }

    #[test]
    fn tokens_never_print() {
        let config = minimal().into_config().unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("service-token-0123456789"));
        assert!(!debug.contains("admin-token-0123456789"));
        let mut settings = minimal();
        settings.spotpool_admin_token = Some("short".into());
        let message = settings.into_config().unwrap_err().to_string();
        assert!(!message.contains("short"), "{message}");
    }

    #[test]
    fn flags_and_env_win_over_the_file() {
        let file: Settings =
            toml::from_str("pool_spare_count = 5\nvpc_id = \"vpc-file\"\n").unwrap();
        let mut cli = minimal();
        cli.vpc_id = None;
        cli.pool_spare_count = Some(3);
        let merged = cli.or(file);
        assert_eq!(merged.pool_spare_count, Some(3));
        assert_eq!(merged.vpc_id.as_deref(), Some("vpc-file"));
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let error = toml::from_str::<Settings>("pool_spare_cuont = 5").unwrap_err();
        assert!(
            error.message().contains("pool_spare_cuont"),
            "{}",
            error.message()
        );
    }

    #[test]
    fn the_interruption_queue_is_optional_and_must_be_a_queue_url() {
        assert_eq!(
            minimal().into_config().unwrap().interruption_queue_url,
            None
        );
        let mut settings = minimal();
        settings.spotpool_interruption_queue_url = Some("  ".into());
        assert_eq!(settings.into_config().unwrap().interruption_queue_url, None);
        for url in [
            "https://sqs.eu-west-1.amazonaws.com/123456789012/spotpool-interruptions",
            "http://127.0.0.1:5000/123456789012/spotpool-interruptions",
        ] {
            let mut settings = minimal();
            settings.spotpool_interruption_queue_url = Some(url.into());
            assert_eq!(
                settings
                    .into_config()
                    .unwrap()
                    .interruption_queue_url
                    .as_deref(),
                Some(url)
            );
        }
        for url in [
            "arn:aws:sqs:eu-west-1:123456789012:spotpool-interruptions",
            "spotpool-interruptions",
            "https://sqs.eu-west-1.amazonaws.com/spotpool-interruptions",
            "https://sqs.eu-west-1.amazonaws.com/123456789012/a/b",
        ] {
            let mut settings = minimal();
            settings.spotpool_interruption_queue_url = Some(url.into());
            let message = settings.into_config().unwrap_err().to_string();
            assert!(
                message.starts_with("invalid setting SPOTPOOL_INTERRUPTION_QUEUE_URL="),
                "{message}"
            );
        }
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }
}
