//! What a tier runs (its launch templates and its user container, `[[tier]]` in the config
//! file), and on-call's changes to a tier's sizing (`PUT /v1/admin/pool/{tier}`), which `plan`
//! applies over the configured policy on every pass.

use super::Millis;

/// A launch template and the version RunInstances names (`$Default`, `$Latest` or a number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchTemplate {
    pub id: String,
    pub version: String,
}

impl LaunchTemplate {
    /// `<id>:<version>`, as an instance's ledger row records what it was launched from.
    pub fn key(&self) -> String {
        format!("{}:{}", self.id, self.version)
    }
}

#[cfg(any(test, feature = "fake"))]
impl TierRuntime {
    /// The runtime of the tests' tiers: the flat settings' defaults of an OpenClaw gateway.
    pub fn example() -> TierRuntime {
        TierRuntime {
            launch: LaunchTemplate::example(),
            on_demand: None,
            container: TierContainer {
                image: "ghcr.io/openclaw/openclaw:latest".into(),
                port: 18789,
                health_check: HealthCheck {
                    path: "/healthz".into(),
                    interval_seconds: 5,
                    timeout_seconds: 4,
                    healthy_threshold: 2,
                    unhealthy_threshold: 2,
                    codes: "200".into(),
                },
                memory_mb: 1024,
                cpus: 1.0,
                pids_limit: 512,
                args: Vec::new(),
                env: Vec::new(),
            },
        }
    }
}

#[cfg(any(test, feature = "fake"))]
impl LaunchTemplate {
    /// The tests' spot template.
    pub fn example() -> LaunchTemplate {
        LaunchTemplate {
            id: "lt-test".into(),
            version: "$Default".into(),
        }
    }
}

/// What a tier's instances run: the templates they launch from and the user container.
#[derive(Debug, Clone, PartialEq)]
pub struct TierRuntime {
    /// The spot launch template.
    pub launch: LaunchTemplate,
    /// The template of on-demand fallback launches (no market options); None launches none.
    pub on_demand: Option<LaunchTemplate>,
    pub container: TierContainer,
}

impl TierRuntime {
    /// What a rolling upgrade follows: the image and the launch templates. A tier whose
    /// fingerprint changes has its `outdated` instances drained (ARCHITECTURE.md "Rolling
    /// upgrades").
    pub fn fingerprint(&self) -> String {
        let on_demand = self
            .on_demand
            .as_ref()
            .map_or("-".into(), LaunchTemplate::key);
        format!(
            "image={} launch={} on_demand={on_demand}",
            self.container.image,
            self.launch.key()
        )
    }
}

/// A tier's user container.
#[derive(Debug, Clone, PartialEq)]
pub struct TierContainer {
    /// The image as configured; the start runs its pinned digest.
    pub image: String,
    /// The port the container listens on, and the target groups' port.
    pub port: u16,
    /// The target groups' health check; the start script waits for its path.
    pub health_check: HealthCheck,
    /// Memory limit in MiB (swap the same, so none).
    pub memory_mb: u32,
    /// CPU limit in CPUs; the instance gets it rounded to millicores.
    pub cpus: f64,
    pub pids_limit: u32,
    /// The arguments after the image (the preset's name the port).
    pub args: Vec<String>,
    /// Fixed (not secret) environment (the preset's sizes the heap from the memory).
    pub env: Vec<(String, String)>,
}

/// How the load balancer checks a user's target: sent with every CreateTargetGroup, because
/// AWS's defaults (a 30 s interval and 5 healthy checks) keep a new target out of service for
/// about 2.5 minutes, longer than a spot interruption's warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// The path the load balancer requests, e.g. `/healthz`.
    pub path: String,
    /// Seconds between checks of one target (AWS: 5-300).
    pub interval_seconds: u32,
    /// Seconds without an answer that fail a check (AWS: 2-120, less than the interval).
    pub timeout_seconds: u32,
    /// Consecutive passed checks that make a target healthy (AWS: 2-10).
    pub healthy_threshold: u32,
    /// Consecutive failed checks that make a target unhealthy (AWS: 2-10).
    pub unhealthy_threshold: u32,
    /// The HTTP codes of a passed check, in the load balancer's matcher syntax (`200`,
    /// `200,204`, `200-299`); the start command's wait accepts exactly these.
    pub codes: String,
}

impl HealthCheck {
    /// How long after checks start a target that answers is reported healthy:
    /// interval × healthy threshold.
    pub fn time_to_healthy(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.interval_seconds * self.healthy_threshold))
    }
}

/// On-call's sizing and version of a tier; `None` keeps the configured value.
#[derive(Debug, Clone, PartialEq)]
pub struct TierOverride {
    pub tier: String,
    pub spare_count: Option<u32>,
    pub max_instances: Option<u32>,
    /// No launches while paused; claims go on from the spares there are.
    pub paused: bool,
    /// The image its containers run instead of the configured one (a rolling upgrade).
    pub container_image: Option<String>,
    /// The version of its launch template launches use instead of the configured one.
    pub launch_template_version: Option<String>,
    pub updated_at: Millis,
    pub updated_by: String,
}

/// Why a tier's launches are held back, shown by the API (`GET /v1/pool`, a queued user's
/// `waiting_for`).
#[derive(Debug, Clone, PartialEq)]
pub struct TierCondition {
    pub tier: String,
    /// `quota_exceeded`: RunInstances answered that an account quota is used up.
    pub cause: String,
    /// The cloud's message, with the quota and the numbers.
    pub detail: String,
    pub since: Millis,
    /// When the reconciler tries to launch again.
    pub until: Millis,
}

impl TierCondition {
    pub const QUOTA_EXCEEDED: &'static str = "quota_exceeded";
}

/// The digest an image reference was pinned to (`image_pins`): every probe and start of that
/// image runs `name@digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePin {
    /// The image reference as configured (`ghcr.io/openclaw/openclaw:latest`).
    pub image: String,
    /// `sha256:...`.
    pub digest: String,
    pub resolved_at: Millis,
}
