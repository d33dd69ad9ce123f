//! Typed configuration for `spotpool serve`, from command-line flags, the environment (the
//! names in DESIGN.md, the seed's names kept) or an optional TOML file, in that order of
//! precedence.
//!
//! Owns: every setting's name (`settings`), default (here) and validation (`checks`). Must not:
//! read anything but flags, env and the file; start-up never panics on bad config, it stops with
//! one line naming the setting.

mod checks;
pub mod defaults;
pub mod preset;
mod replica;
mod settings;
mod shards;
mod tiers;

pub use checks::parse_duration;
pub use preset::Preset;
pub use replica::Replica;
pub use settings::Settings;
pub use shards::ShardSettings;
pub use tiers::{TIER_KEYS, TierSettings};

use crate::cloud::limit::RateLimits;
use crate::model::{LaunchTemplate, TierRuntime};
use crate::plan::TierPolicy;
use checks::{comma_list, duration, in_range, required, validate_queue_url};
use std::fmt;
use std::net::SocketAddr;
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

/// The store's URL: a password in it is never printed (`{:?}` and `{}` show it redacted).
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::store::redacted_url(&self.0))
    }
}

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The API's certificate and key: HTTPS when set.
    pub tls: Option<crate::tls::TlsFiles>,
    pub database_url: DatabaseUrl,
    pub api_token: SecretString,
    pub admin_token: SecretString,
    pub pool: String,
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
    pub vpc_id: String,
    /// The load balancers users are routed through (`[[shard]]`, or `ALB_LISTENER_ARN`).
    pub shards: Vec<crate::model::Shard>,
    pub instance_profile_arn: Option<String>,
    pub container_preset: Preset,
    /// What the start script waits for after the health path, if anything.
    pub container_ready_path: Option<String>,
    /// Secret names every user's PUT must carry.
    pub required_secrets: Vec<String>,
    /// What the flat settings configure: the default of every tier's runtime, and the runtime
    /// of a tier that is no longer configured (its users are still torn down or moved).
    pub runtime: TierRuntime,
    pub secret_prefix: String,
    /// The tiers, in the order written; a PUT without a tier takes the first.
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
    pub rate_limits: RateLimits,
    /// The SQS queue EventBridge fills with EC2 interruption events; None runs no consumer.
    pub interruption_queue_url: Option<String>,
    /// The KMS key of workspace volumes; None uses the account's default EBS key.
    pub workspace_kms_key_id: Option<String>,
    /// Spares are pre-wired (`SPOTPOOL_PREWIRED_SPARES`).
    pub prewired_spares: bool,
    /// How long `ready` waits after a pre-wired rule's switch (`SPOTPOOL_RULE_SETTLE`).
    pub rule_settle: Duration,
    /// Spares are launched with a blank workspace (`SPOTPOOL_BLANK_WORKSPACES`).
    pub blank_workspaces: bool,
    /// This replica: its name and the address it is reached at while it leads.
    pub replica: Replica,
    /// The health watch's DescribeTargetHealth calls per second (0: off).
    pub health_checks_per_second: f64,
    /// The ready webhooks' signing key; None refuses callback URLs.
    pub webhook_secret: Option<SecretString>,
    /// Callback URLs may be plain http and reach private addresses (tests, local mode).
    pub webhook_allow_private: bool,
    /// The deployment's rates the cost counts (docs/costs.md, "The live cost").
    pub cost: crate::model::cost::CostSettings,
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
    #[error("invalid [[shard]] table {index} ({name:?}): {why}")]
    Shard {
        index: usize,
        name: String,
        why: String,
    },
    #[error("invalid [[tier]] table {index} ({name:?}): {why}")]
    Tier {
        index: usize,
        name: String,
        why: String,
    },
    #[error("config file {path}: {why}")]
    File { path: String, why: String },
}

impl Config {
    /// What the start merges into each OpenClaw gateway's configuration; `None` for other images.
    pub fn gateway_config(&self) -> Option<crate::reconcile::GatewayConfig> {
        (self.container_preset == Preset::OpenClaw).then(|| crate::reconcile::GatewayConfig {
            state_dir: preset::OPENCLAW_STATE_DIR.to_string(),
        })
    }
}

impl Settings {
    /// Applies the defaults and validates; the first problem is the error.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let network = self.network()?;
        let (api_token, admin_token) = self.tokens()?;
        let service = self.service()?;
        let launch = LaunchTemplate {
            id: network.launch_template_id.clone(),
            version: self
                .launch_template_version
                .clone()
                .unwrap_or_else(|| defaults::LAUNCH_TEMPLATE_VERSION.into()),
        };
        let (common, runtime) =
            self.runtime(launch, service.on_demand_launch_template_id.clone())?;
        let tiers = self.tiers(&common, &runtime)?;
        let timings = self.timings()?;
        let replica = Replica::resolve(
            self.spotpool_replica_id.as_deref(),
            self.spotpool_advertise_url.as_deref(),
            service.listen,
            service.tls.is_some(),
        )?;
        Ok(Config {
            listen: service.listen,
            tls: service.tls,
            database_url: DatabaseUrl(
                self.spotpool_database_url
                    .clone()
                    .unwrap_or_else(|| defaults::DATABASE_URL.into()),
            ),
            api_token,
            admin_token,
            subnet_ids: network.subnet_ids,
            security_group_ids: comma_list(self.security_group_id.as_deref().unwrap_or("")),
            vpc_id: network.vpc_id,
            shards: network.shards,
            instance_profile_arn: self.instance_profile_arn.clone().filter(|v| !v.is_empty()),
            container_preset: common.preset,
            container_ready_path: common.ready_path,
            required_secrets: common.required_secrets,
            runtime,
            secret_prefix: self
                .secret_prefix
                .clone()
                .unwrap_or_else(|| defaults::SECRET_PREFIX.into()),
            tiers,
            pool: service.pool,
            reconcile_interval: timings.reconcile_interval,
            poll_interval: timings.poll_interval,
            probe_timeout: timings.probe_timeout,
            container_timeout: timings.container_timeout,
            claim_attempts: service.claim_attempts,
            max_in_flight: self
                .spotpool_max_in_flight
                .unwrap_or(defaults::MAX_IN_FLIGHT)
                .max(1) as usize,
            aws_max_attempts: self
                .spotpool_aws_max_attempts
                .unwrap_or(crate::cloud::DEFAULT_AWS_MAX_ATTEMPTS)
                .max(1),
            aws_secret_write_attempts: self
                .spotpool_aws_secret_write_attempts
                .unwrap_or(crate::cloud::DEFAULT_SECRET_WRITE_ATTEMPTS)
                .max(1),
            aws_call_timeout: timings.aws_call_timeout,
            capacity_ttl: timings.capacity_ttl,
            launch_failure_limit: self
                .spotpool_launch_failure_limit
                .unwrap_or(defaults::LAUNCH_FAILURE_LIMIT)
                .max(1),
            rate_limits: service.rate_limits,
            interruption_queue_url: service.interruption_queue_url,
            workspace_kms_key_id: self
                .spotpool_workspace_kms_key_id
                .clone()
                .filter(|key| !key.trim().is_empty()),
            prewired_spares: self
                .spotpool_prewired_spares
                .unwrap_or(defaults::PREWIRED_SPARES),
            rule_settle: timings.rule_settle,
            blank_workspaces: self
                .spotpool_blank_workspaces
                .unwrap_or(defaults::BLANK_WORKSPACES),
            replica,
            health_checks_per_second: self.health_checks_per_second()?,
            webhook_secret: self.webhook_secret()?,
            webhook_allow_private: self.spotpool_webhook_allow_private.unwrap_or(false),
            cost: self.cost_settings()?,
        })
    }

    /// The rates the cost counts: the on-demand price list with the configured prices over
    /// it, the address, the root volume, the network and the credits.
    fn cost_settings(&self) -> Result<crate::model::cost::CostSettings, ConfigError> {
        let mut cost = crate::model::cost::CostSettings::default();
        let invalid = |env: &'static str, value: String, why: &str| ConfigError::Invalid {
            env,
            value,
            why: why.into(),
        };
        for entry in (self.spotpool_on_demand_prices.as_deref().unwrap_or(""))
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let parsed = entry.split_once('=').and_then(|(t, p)| {
                let price = p.trim().parse::<f64>().ok()?;
                let name = t.trim();
                (!name.is_empty() && price.is_finite() && price >= 0.0).then_some((name, price))
            });
            let Some((instance_type, price)) = parsed else {
                return Err(invalid(
                    "SPOTPOOL_ON_DEMAND_PRICES",
                    entry.to_string(),
                    "each entry is type=dollars per hour, e.g. t3.small=0.0208",
                ));
            };
            cost.on_demand.insert(instance_type.to_string(), price);
        }
        cost.public_ipv4 = self.spotpool_public_ipv4.unwrap_or(cost.public_ipv4);
        if let Some(gib) = self.spotpool_root_volume_gib {
            if !(1..=16_384).contains(&gib) {
                let why = "a gp3 volume is 1-16384 GiB";
                return Err(invalid("SPOTPOOL_ROOT_VOLUME_GIB", gib.to_string(), why));
            }
            cost.root_volume_gib = gib;
        }
        let dollars = |value: Option<f64>, env: &'static str, why: &'static str| match value {
            Some(d) if !(d.is_finite() && d >= 0.0) => Err(invalid(env, d.to_string(), why)),
            other => Ok(other),
        };
        let env = "SPOTPOOL_NETWORK_FIXED_DOLLARS_PER_HOUR";
        let network = self.spotpool_network_fixed_dollars_per_hour;
        if let Some(d) = dollars(network, env, "dollars an hour, 0 or more")? {
            cost.network_per_hour = d;
        }
        let moves = self.spotpool_move_cost_dollars;
        if let Some(d) = dollars(moves, "SPOTPOOL_MOVE_COST_DOLLARS", "dollars, 0 or more")? {
            cost.move_dollars = d;
        }
        cost.cpu_credits_unlimited = match self.spotpool_cpu_credits.as_deref().map(str::trim) {
            None | Some("") | Some("standard") => false,
            Some("unlimited") => true,
            Some(other) => {
                let why = "standard or unlimited";
                return Err(invalid("SPOTPOOL_CPU_CREDITS", other.to_string(), why));
            }
        };
        Ok(cost)
    }

    /// The health watch's rate: at most half the ELB describe quota's refill (10 per second),
    /// which the claims' and spares' health waits share.
    fn health_checks_per_second(&self) -> Result<f64, ConfigError> {
        let rate = self
            .spotpool_health_checks_per_second
            .unwrap_or(defaults::HEALTH_CHECKS_PER_SECOND);
        if !(0.0..=5.0).contains(&rate) {
            return Err(ConfigError::Invalid {
                env: "SPOTPOOL_HEALTH_CHECKS_PER_SECOND",
                value: rate.to_string(),
                why: "from 0 (no health watch) to 5 (half of the ELB describe quota's 10 per \
                      second, which claims and spares share)"
                    .into(),
            });
        }
        Ok(rate)
    }

    /// The webhooks' signing key, if set: long enough to resist guessing.
    fn webhook_secret(&self) -> Result<Option<SecretString>, ConfigError> {
        match self.spotpool_webhook_secret.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(secret) if secret.chars().count() < 32 => Err(ConfigError::Invalid {
                env: "SPOTPOOL_WEBHOOK_SECRET",
                value: "<redacted>".into(),
                why: "a webhook signing key has at least 32 characters".into(),
            }),
            Some(secret) => Ok(Some(SecretString::new(secret))),
        }
    }

    /// Where instances run and how users are routed: the required network settings, in the
    /// order a missing one is reported.
    fn network(&self) -> Result<Network, ConfigError> {
        Ok(Network {
            launch_template_id: required(
                &self.launch_template_id,
                "LAUNCH_TEMPLATE_ID",
                "launch-template-id",
                "the launch template for pool instances",
            )?,
            subnet_ids: comma_list(&required(
                &self.subnet_ids,
                "SUBNET_IDS",
                "subnet-ids",
                "the subnets to launch pool instances into",
            )?),
            vpc_id: required(
                &self.vpc_id,
                "VPC_ID",
                "vpc-id",
                "the VPC of the target groups",
            )?,
            shards: self.shards()?,
        })
    }

    /// The `[[shard]]` tables; without them, `ALB_LISTENER_ARN` under `PUBLIC_BASE_URL` as one
    /// path-routed shard (how deployments before shards were configured).
    fn shards(&self) -> Result<Vec<crate::model::Shard>, ConfigError> {
        if let Some(tables) = self.shard.as_ref().filter(|t| !t.is_empty()) {
            return shards::from_tables(tables);
        }
        let public_base_url = self
            .public_base_url
            .clone()
            .unwrap_or_else(|| defaults::PUBLIC_BASE_URL.into())
            .trim_end_matches('/')
            .to_string();
        let listeners = comma_list(&required(
            &self.alb_listener_arn,
            "ALB_LISTENER_ARN",
            "alb-listener-arn",
            "the ALB listener that routes users, or [[shard]] tables in the config file",
        )?);
        shards::from_listeners(&listeners, &public_base_url)
    }

    /// The daemon's own settings that need checking: the listen address, the pool's name, the
    /// attempts, the on-demand template, the interruption queue and the rate limits.
    fn service(&self) -> Result<Service, ConfigError> {
        let on_demand_launch_template_id = self
            .on_demand_launch_template_id
            .clone()
            .filter(|id| !id.trim().is_empty());
        let listen_raw = self
            .spotpool_listen
            .clone()
            .unwrap_or_else(|| defaults::LISTEN.into());
        let listen = listen_raw.parse().map_err(|_| ConfigError::Invalid {
            env: "SPOTPOOL_LISTEN",
            value: listen_raw.clone(),
            why: "expected an address like 127.0.0.1:7070".into(),
        })?;
        let pool = self
            .spotpool_pool
            .clone()
            .unwrap_or_else(|| defaults::POOL.into());
        if pool.is_empty() || pool.len() > 64 {
            return Err(ConfigError::Invalid {
                env: "SPOTPOOL_POOL",
                value: pool,
                why: "needs 1-64 characters".into(),
            });
        }
        let claim_attempts = in_range(
            "SPOTPOOL_CLAIM_ATTEMPTS",
            self.spotpool_claim_attempts
                .unwrap_or(defaults::CLAIM_ATTEMPTS),
            1..=u32::MAX,
            "must be at least 1",
        )?;
        let interruption_queue_url = self
            .spotpool_interruption_queue_url
            .as_ref()
            .map(|url| url.trim().to_string())
            .filter(|url| !url.is_empty());
        if let Some(url) = &interruption_queue_url {
            validate_queue_url(url)?;
        }
        let spec = self.spotpool_rate_limits.clone().unwrap_or_default();
        let rate_limits = RateLimits::parse(&spec).map_err(|why| ConfigError::Invalid {
            env: "SPOTPOOL_RATE_LIMITS",
            value: spec.clone(),
            why,
        })?;
        let tls = match (&self.spotpool_tls_cert, &self.spotpool_tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Missing {
                    env: "SPOTPOOL_TLS_KEY",
                    flag: "spotpool-tls-key",
                    what: "the private key of SPOTPOOL_TLS_CERT (TLS needs both)",
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    env: "SPOTPOOL_TLS_CERT",
                    flag: "spotpool-tls-cert",
                    what: "the certificate of SPOTPOOL_TLS_KEY (TLS needs both)",
                });
            }
        };
        Ok(Service {
            listen,
            tls,
            pool,
            claim_attempts,
            on_demand_launch_template_id,
            interruption_queue_url,
            rate_limits,
        })
    }

    /// Every duration setting, checked.
    fn timings(&self) -> Result<Timings, ConfigError> {
        Ok(Timings {
            reconcile_interval: duration(
                "SPOTPOOL_RECONCILE_INTERVAL",
                &self.spotpool_reconcile_interval,
                defaults::RECONCILE_INTERVAL,
            )?,
            poll_interval: duration(
                "SPOTPOOL_POLL_INTERVAL",
                &self.spotpool_poll_interval,
                defaults::POLL_INTERVAL,
            )?,
            probe_timeout: duration(
                "SPOTPOOL_PROBE_TIMEOUT",
                &self.spotpool_probe_timeout,
                defaults::PROBE_TIMEOUT,
            )?,
            container_timeout: duration(
                "SPOTPOOL_CONTAINER_TIMEOUT",
                &self.spotpool_container_timeout,
                defaults::CONTAINER_TIMEOUT,
            )?,
            aws_call_timeout: duration(
                "SPOTPOOL_AWS_CALL_TIMEOUT",
                &self.spotpool_aws_call_timeout,
                defaults::AWS_CALL_TIMEOUT,
            )?,
            capacity_ttl: duration(
                "SPOTPOOL_CAPACITY_TTL",
                &self.spotpool_capacity_ttl,
                defaults::CAPACITY_TTL,
            )?,
            rule_settle: duration(
                "SPOTPOOL_RULE_SETTLE",
                &self.spotpool_rule_settle,
                defaults::RULE_SETTLE,
            )?,
        })
    }

    /// The two bearer tokens: both present, long enough, and different.
    fn tokens(&self) -> Result<(SecretString, SecretString), ConfigError> {
        let api_token = required(
            &self.spotpool_api_token,
            "SPOTPOOL_API_TOKEN",
            "spotpool-api-token",
            "the bearer token of the web backend",
        )?;
        let admin_token = required(
            &self.spotpool_admin_token,
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
        Ok((SecretString::new(api_token), SecretString::new(admin_token)))
    }
}

/// The required network settings, validated.
struct Network {
    launch_template_id: String,
    subnet_ids: Vec<String>,
    vpc_id: String,
    shards: Vec<crate::model::Shard>,
}

/// The daemon's own settings, validated.
struct Service {
    listen: SocketAddr,
    tls: Option<crate::tls::TlsFiles>,
    pool: String,
    claim_attempts: u32,
    on_demand_launch_template_id: Option<String>,
    interruption_queue_url: Option<String>,
    rate_limits: RateLimits,
}

/// The duration settings, parsed.
struct Timings {
    reconcile_interval: Duration,
    poll_interval: Duration,
    probe_timeout: Duration,
    container_timeout: Duration,
    aws_call_timeout: Duration,
    capacity_ttl: Duration,
    rule_settle: Duration,
}

#[cfg(test)]
mod tests;
