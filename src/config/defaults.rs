//! Every setting's default, named once: `into_config` applies these constants, and
//! `spotpool serve --help` shows them ([`documented`], appended by `main.rs` as
//! `[default: …]`), so the help and the code cannot disagree.

use super::Preset;
use crate::cloud::{DEFAULT_AWS_MAX_ATTEMPTS, DEFAULT_SECRET_WRITE_ATTEMPTS};

pub const LAUNCH_TEMPLATE_VERSION: &str = "$Default";
pub const USER_INSTANCE_TYPE: &str = "t3.small";
pub const POOL_SPARE_COUNT: u32 = 2;
pub const POOL_MAX_INSTANCES: u32 = 20;
pub const HEALTH_CHECK_INTERVAL_SECONDS: u32 = 5;
pub const HEALTH_CHECK_TIMEOUT_SECONDS: u32 = 4;
pub const HEALTH_CHECK_HEALTHY_THRESHOLD: u32 = 2;
pub const HEALTH_CHECK_UNHEALTHY_THRESHOLD: u32 = 2;
pub const HEALTH_CHECK_CODES: &str = "200";
pub const CONTAINER_MEMORY_MB: u32 = 1536;
pub const CONTAINER_CPUS: f64 = 1.0;
pub const CONTAINER_PIDS_LIMIT: u32 = 512;
pub const PUBLIC_BASE_URL: &str = "http://localhost";
pub const SECRET_PREFIX: &str = "openclaw/";
pub const LISTEN: &str = "127.0.0.1:7070";
pub const DATABASE_URL: &str = "sqlite://spotpool.db";
pub const POOL: &str = "spotpool";
pub const RECONCILE_INTERVAL: &str = "10s";
pub const POLL_INTERVAL: &str = "500ms";
pub const PROBE_TIMEOUT: &str = "10m";
pub const CONTAINER_TIMEOUT: &str = "5m";
pub const CLAIM_ATTEMPTS: u32 = 3;
pub const MAX_IN_FLIGHT: u32 = 16;
pub const AWS_CALL_TIMEOUT: &str = "30s";
pub const ON_DEMAND_FALLBACK: bool = false;
pub const REBALANCE_MOVES: bool = false;
/// Spares are pre-wired (ARCHITECTURE.md, "Pre-wired spares").
pub const PREWIRED_SPARES: bool = true;
/// The least time between a pre-wired rule's switch and `ready`.
pub const RULE_SETTLE: &str = "2s";
/// Spares are launched with a blank workspace (ARCHITECTURE.md, "Blank workspaces").
pub const BLANK_WORKSPACES: bool = true;
pub const CAPACITY_TTL: &str = "3m";
pub const LAUNCH_FAILURE_LIMIT: u32 = 10;
pub const WORKSPACE_SIZE_GIB: u32 = 8;
pub const IDLE_SLEEP_AFTER: &str = "off";
/// The health watch's reads per second (ARCHITECTURE.md, "Health watch").
pub const HEALTH_CHECKS_PER_SECOND: f64 = 2.0;

/// A preset-dependent default as `--help` shows it: the OpenClaw preset's value, then the generic
/// one's (`none` for no value).
fn presets(value: impl Fn(Preset) -> Option<String>) -> String {
    let shown = |preset| {
        value(preset)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "none".into())
    };
    format!(
        "{} (generic: {})",
        shown(Preset::OpenClaw),
        shown(Preset::Generic)
    )
}

/// The default of every setting that has one, as `--help` shows it: (the setting's argument
/// id, the value).
pub fn documented() -> Vec<(&'static str, String)> {
    let text = |value: &dyn std::fmt::Display| value.to_string();
    let cost = crate::model::cost::CostSettings::default();
    vec![
        ("launch_template_version", text(&LAUNCH_TEMPLATE_VERSION)),
        ("user_instance_type", text(&USER_INSTANCE_TYPE)),
        ("pool_spare_count", text(&POOL_SPARE_COUNT)),
        ("pool_max_instances", text(&POOL_MAX_INSTANCES)),
        ("container_image", "<ECR_REPOSITORY_URL>:latest".to_string()),
        ("container_preset", text(&Preset::OpenClaw.as_str())),
        ("container_port", presets(|p| Some(p.port().to_string()))),
        (
            "container_args",
            presets(|p| Some(p.args(p.port()).join(" "))),
        ),
        (
            "health_check_path",
            presets(|p| Some(p.health_path().into())),
        ),
        (
            "container_ready_path",
            presets(|p| p.ready_path().map(String::from)),
        ),
        (
            "container_required_secrets",
            presets(|p| Some(p.required_secrets().join(","))),
        ),
        ("health_check_codes", text(&HEALTH_CHECK_CODES)),
        (
            "health_check_interval_seconds",
            text(&HEALTH_CHECK_INTERVAL_SECONDS),
        ),
        (
            "health_check_timeout_seconds",
            text(&HEALTH_CHECK_TIMEOUT_SECONDS),
        ),
        (
            "health_check_healthy_threshold",
            text(&HEALTH_CHECK_HEALTHY_THRESHOLD),
        ),
        (
            "health_check_unhealthy_threshold",
            text(&HEALTH_CHECK_UNHEALTHY_THRESHOLD),
        ),
        ("container_memory_mb", text(&CONTAINER_MEMORY_MB)),
        ("container_cpus", format!("{CONTAINER_CPUS:.1}")),
        ("container_pids_limit", text(&CONTAINER_PIDS_LIMIT)),
        ("public_base_url", text(&PUBLIC_BASE_URL)),
        ("secret_prefix", text(&SECRET_PREFIX)),
        ("spotpool_listen", text(&LISTEN)),
        ("spotpool_database_url", text(&DATABASE_URL)),
        ("spotpool_pool", text(&POOL)),
        ("spotpool_reconcile_interval", text(&RECONCILE_INTERVAL)),
        ("spotpool_poll_interval", text(&POLL_INTERVAL)),
        ("spotpool_probe_timeout", text(&PROBE_TIMEOUT)),
        ("spotpool_container_timeout", text(&CONTAINER_TIMEOUT)),
        ("spotpool_claim_attempts", text(&CLAIM_ATTEMPTS)),
        ("spotpool_max_in_flight", text(&MAX_IN_FLIGHT)),
        ("spotpool_aws_max_attempts", text(&DEFAULT_AWS_MAX_ATTEMPTS)),
        (
            "spotpool_aws_secret_write_attempts",
            text(&DEFAULT_SECRET_WRITE_ATTEMPTS),
        ),
        ("spotpool_aws_call_timeout", text(&AWS_CALL_TIMEOUT)),
        ("spotpool_on_demand_fallback", text(&ON_DEMAND_FALLBACK)),
        ("spotpool_rebalance_moves", text(&REBALANCE_MOVES)),
        ("spotpool_prewired_spares", text(&PREWIRED_SPARES)),
        ("spotpool_rule_settle", text(&RULE_SETTLE)),
        ("spotpool_blank_workspaces", text(&BLANK_WORKSPACES)),
        ("spotpool_capacity_ttl", text(&CAPACITY_TTL)),
        ("spotpool_launch_failure_limit", text(&LAUNCH_FAILURE_LIMIT)),
        ("spotpool_rate_limits", "\"\"".to_string()),
        ("spotpool_workspace_size_gib", text(&WORKSPACE_SIZE_GIB)),
        ("spotpool_idle_sleep_after", text(&IDLE_SLEEP_AFTER)),
        (
            "spotpool_health_checks_per_second",
            text(&HEALTH_CHECKS_PER_SECOND),
        ),
        ("spotpool_public_ipv4", text(&cost.public_ipv4)),
        ("spotpool_root_volume_gib", text(&cost.root_volume_gib)),
        (
            "spotpool_network_fixed_dollars_per_hour",
            text(&cost.network_per_hour),
        ),
        ("spotpool_cpu_credits", "standard".to_string()),
        ("spotpool_move_cost_dollars", text(&cost.move_dollars)),
    ]
}
