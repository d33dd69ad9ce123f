//! The AWS behaviour model of the simulated fake cloud, as data (`aws-profile.md`).
//!
//! Owns: a [`Profile`]: how long each operation takes to answer and how long its effects take
//! (log-normal, given as p50/p99), the account's server-side quota buckets (the same classes and
//! sizes as the client-side governor of `limit/`, so client and server agree), injected fault
//! rates per operation, spot capacity errors per (instance type, subnet), hard limits, and the
//! SDK's standard retry mode as the daemon configures it. Also the seeded PRNG ([`SimRng`]) every
//! draw comes from. Must not: do IO, sleep or read the clock; `fake/` plays the profile out on
//! tokio's clock.
//!
//! A run states the profile it used with [`Profile::summary`]. The numbers are the
//! `aws-profile.md` table; the few operations and effects that table does not list are marked
//! "assumed" below.

use super::limit::{Bucket, QuotaClass, account_quota};
use std::collections::BTreeMap;
use std::time::Duration;

/// The 99th percentile of the standard normal distribution.
const Z_99: f64 = 2.326_347_874;

/// A small, fast, seeded PRNG (splitmix64). The same seed gives the same sequence of draws.
#[derive(Debug, Clone)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// Uniform in [low, high).
    pub fn between(&mut self, low: Duration, high: Duration) -> Duration {
        low + high.saturating_sub(low).mul_f64(self.next_f64())
    }

    /// A standard normal draw (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]: ln is finite
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// A log-normal duration given by its median and 99th percentile. `p99 == p50` is a constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    pub p50: Duration,
    pub p99: Duration,
}

impl Latency {
    pub const fn millis(p50: u64, p99: u64) -> Latency {
        Latency {
            p50: Duration::from_millis(p50),
            p99: Duration::from_millis(p99),
        }
    }

    pub const fn seconds(p50: u64, p99: u64) -> Latency {
        Latency::millis(p50 * 1_000, p99 * 1_000)
    }

    pub const ZERO: Latency = Latency::millis(0, 0);

    pub fn sample(&self, rng: &mut SimRng) -> Duration {
        // Always one draw, so the stream of draws does not depend on which latencies are fixed.
        let z = rng.normal();
        let p50 = self.p50.as_secs_f64();
        if p50 <= 0.0 {
            return Duration::ZERO;
        }
        let sigma = (self.p99.as_secs_f64() / p50).ln().max(0.0) / Z_99;
        Duration::from_secs_f64(p50 * (sigma * z).exp())
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}/{:?}", self.p50, self.p99)
    }
}

/// How long the effects of calls take to complete on AWS's side.
#[derive(Debug, Clone, PartialEq)]
pub struct Effects {
    /// RunInstances: `pending` → `running`.
    pub pending_to_running: Latency,
    /// From `running` until the SSM agent is online (SendCommand fails with InvalidInstanceId
    /// before).
    pub agent_online: Latency,
    /// SendCommand: until the agent picks the command up.
    pub command_pickup: Latency,
    /// GetCommandInvocation answers InvocationDoesNotExist this long after SendCommand.
    pub invocation_visible: Duration,
    /// The start-container command's run time with the image pre-pulled.
    pub container_start: Latency,
    /// Added to a container start when the image is not on the instance yet.
    pub image_pull: Latency,
    /// Whether the launch template's user data pulls the image before the instance is ready
    /// (spotpool's template does; the seed's flow pulls at claim time).
    pub image_prepulled: bool,
    /// The readiness probe's run time (assumed: it runs `docker info` and a few checks).
    pub probe_run: Latency,
    /// TerminateInstances: `shutting-down` → `terminated`.
    pub shutting_down: Latency,
    /// CreateRule: until the rule routes traffic. (A registered target turns healthy after its
    /// target group's own health check settings, interval × healthy threshold, counted from when
    /// a rule first forwards to the group: the fake reads them from CreateTargetGroup.)
    pub rule_active: Latency,
    /// CreateVolume (gp3, empty): `creating` → `available`.
    pub volume_create: Latency,
    /// CreateVolume from a snapshot: `creating` → `available` (blocks load lazily after).
    pub volume_from_snapshot: Latency,
    /// AttachVolume: until `attached` and the device is visible on the instance.
    pub volume_attach: Latency,
    /// DetachVolume (file system unmounted first): until the volume is `available`.
    pub volume_detach: Latency,
    /// CreateSnapshot of a mostly empty 8 GiB volume: `pending` → `completed`.
    pub snapshot: Latency,
    /// The stop-and-unmount command's run time (the container's stop, `sync`, `umount`).
    pub workspace_stop: Latency,
}

/// Injected fault probabilities of one attempt of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaultRates {
    /// A 5xx (InternalError, ServiceUnavailable): retryable, the request had no effect.
    pub server_error: f64,
    /// A throttle beyond the account's own buckets (other clients of the account, AWS-side
    /// load shedding): retryable, the request had no effect and took no token.
    pub throttle: f64,
}

/// The SDK's standard retry mode as the daemon configures it: a logical call fails only when
/// every attempt failed (or the operation timeout ran out). Between attempts it waits
/// `uniform(0, 1) × min(initial_backoff × 2^(retry - 1), max_backoff)` (aws-smithy-runtime's
/// `calculate_exponential_backoff`; retry behaviour 2.0, the same backoff for throttles and
/// 5xx). The SDK's retry quota (500 tokens, 5 per retry) is not modelled: at these rates it
/// never runs dry.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryModel {
    /// Attempts per call, the first included (`SPOTPOOL_AWS_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// Operations with their own budget (the request-path secret writes,
    /// `SPOTPOOL_AWS_SECRET_WRITE_ATTEMPTS`).
    pub attempts_per_operation: BTreeMap<&'static str, u32>,
    /// Operations with their own backoff ceiling (the secret writes, `SECRET_WRITE_MAX_BACKOFF`).
    pub max_backoff_per_operation: BTreeMap<&'static str, Duration>,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// The whole call's budget, retries included (`SPOTPOOL_AWS_CALL_TIMEOUT`).
    pub operation_timeout: Option<Duration>,
}

/// The fake's operations that are the API's request-path secret writes (`put_secret`,
/// `update_secret`): `cloud/aws` gives them `SPOTPOOL_AWS_SECRET_WRITE_ATTEMPTS`.
pub const SECRET_WRITE_OPERATIONS: [&str; 2] = ["PutSecret", "PutSecretValue"];

impl RetryModel {
    /// Standard mode with `max_attempts` for every operation, 1 s doubling to 20 s, 30 s per call.
    pub fn standard(max_attempts: u32) -> RetryModel {
        RetryModel {
            max_attempts: max_attempts.max(1),
            attempts_per_operation: BTreeMap::new(),
            max_backoff_per_operation: BTreeMap::new(),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(20),
            operation_timeout: Some(Duration::from_secs(30)),
        }
    }

    /// The daemon's defaults: every call `DEFAULT_AWS_MAX_ATTEMPTS`, the request-path secret
    /// writes `DEFAULT_SECRET_WRITE_ATTEMPTS`.
    pub fn daemon_defaults() -> RetryModel {
        let mut model = RetryModel::standard(super::DEFAULT_AWS_MAX_ATTEMPTS);
        for operation in SECRET_WRITE_OPERATIONS {
            model
                .attempts_per_operation
                .insert(operation, super::DEFAULT_SECRET_WRITE_ATTEMPTS);
            model
                .max_backoff_per_operation
                .insert(operation, super::SECRET_WRITE_MAX_BACKOFF);
        }
        model
    }

    pub fn attempts_for(&self, operation: &str) -> u32 {
        self.attempts_per_operation
            .get(operation)
            .copied()
            .unwrap_or(self.max_attempts)
            .max(1)
    }

    /// The wait before retry number `retry` of `operation` (1 is the wait after the first
    /// attempt).
    pub fn backoff(&self, operation: &str, retry: u32, rng: &mut SimRng) -> Duration {
        let exponent = retry.saturating_sub(1).min(30);
        let cap = self
            .max_backoff_per_operation
            .get(operation)
            .copied()
            .unwrap_or(self.max_backoff);
        let ceiling = self
            .initial_backoff
            .saturating_mul(1u32 << exponent)
            .min(cap);
        ceiling.mul_f64(rng.next_f64())
    }
}

/// AWS limits the fake enforces in simulated mode.
#[derive(Debug, Clone, PartialEq)]
pub struct HardLimits {
    /// Rules per load balancer (the default rules not counted): CreateRule beyond it is
    /// TooManyRules (the fake's `RouteLimits` in plain mode).
    pub rules_per_listener: usize,
}

/// The behaviour model one simulated run uses. Build it with [`Profile::aws`] and the `with_*`
/// methods; print [`Profile::summary`] with the run's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    /// Time to the response of one attempt, per operation (the fake's operation names).
    pub api_latency: BTreeMap<&'static str, Latency>,
    pub default_api_latency: Latency,
    pub effects: Effects,
    /// The account's server-side token buckets. An attempt that finds its bucket short is
    /// throttled (a quota rejection).
    pub quotas: BTreeMap<QuotaClass, Bucket>,
    pub faults: BTreeMap<&'static str, FaultRates>,
    pub default_faults: FaultRates,
    /// (instance type, subnet) offerings whose spot launches fail with
    /// InsufficientInstanceCapacity.
    pub capacity_errors: Vec<(String, String)>,
    /// Spot prices per hour by instance type, the same in every zone (`aws-profile.md`'s
    /// model values): what DescribeSpotPriceHistory answers until a test sets another.
    pub spot_prices: BTreeMap<String, f64>,
    pub retry: RetryModel,
    pub limits: HardLimits,
}

impl Profile {
    /// `aws-profile.md` without faults, and the daemon's default retry configuration.
    pub fn aws() -> Profile {
        let ec2_describe = Latency::millis(150, 600);
        let elb_write = Latency::millis(200, 800);
        let secret = Latency::millis(150, 500);
        let api_latency = BTreeMap::from([
            ("RunInstances", Latency::millis(800, 2_500)),
            ("DescribeInstances", ec2_describe),
            ("CreateTags", Latency::millis(100, 400)),
            ("DeleteTags", Latency::millis(100, 400)),
            ("ModifyInstanceAttribute", Latency::millis(100, 400)),
            ("TerminateInstances", Latency::millis(300, 1_000)),
            ("CreateTargetGroup", elb_write),
            ("DeleteTargetGroup", elb_write),
            ("CreateRule", elb_write),
            ("DeleteRule", elb_write),
            ("RegisterTargets", elb_write),
            ("DeregisterTargets", elb_write),
            // ELB describes are not in the table; assumed like EC2's.
            ("DescribeRules", ec2_describe),
            ("DescribeTargetGroups", ec2_describe),
            ("PutSecret", secret),
            ("PutSecretValue", secret),
            ("TagResource", secret),
            ("UntagResource", secret),
            ("DeleteSecret", secret),
            ("SendCommand", Latency::millis(200, 600)),
            ("GetCommandInvocation", Latency::millis(100, 300)),
            ("CreateVolume", Latency::millis(300, 1_000)),
            ("AttachVolume", Latency::millis(300, 1_000)),
            ("DetachVolume", Latency::millis(300, 1_000)),
            ("DeleteVolume", Latency::millis(300, 1_000)),
            ("CreateSnapshot", Latency::millis(300, 1_000)),
            ("DeleteSnapshot", Latency::millis(300, 1_000)),
            ("DescribeVolumes", ec2_describe),
            ("DescribeSnapshots", Latency::millis(300, 1_000)),
            ("ModifyRule", elb_write),
            ("AddTags", elb_write),
            ("DescribeSpotPriceHistory", Latency::millis(300, 1_000)),
        ]);
        Profile {
            name: "aws-profile.md".into(),
            api_latency,
            default_api_latency: Latency::millis(200, 800),
            effects: Effects {
                pending_to_running: Latency::seconds(25, 60),
                agent_online: Latency::seconds(20, 90),
                command_pickup: Latency::millis(500, 3_000),
                invocation_visible: Duration::from_millis(500),
                // The OpenClaw gateway's start until `/readyz`, measured (docs/openclaw.md): 20 s
                // on an idle 2-core machine, 31-38 s on a loaded one (aws-profile.md's 1.5 s / 5 s
                // is a small image's `docker run`).
                container_start: Latency::seconds(20, 40),
                image_pull: Latency::seconds(30, 90),
                image_prepulled: true,
                probe_run: Latency::millis(500, 2_000),
                shutting_down: Latency::seconds(30, 90),
                rule_active: Latency::seconds(1, 3),
                volume_create: Latency::seconds(3, 15),
                volume_from_snapshot: Latency::seconds(10, 30),
                volume_attach: Latency::seconds(3, 10),
                volume_detach: Latency::seconds(4, 20),
                snapshot: Latency::seconds(120, 600),
                // Assumed: the container gets up to 20 s to stop; a gateway stops in 2-7 s.
                workspace_stop: Latency::seconds(4, 20),
            },
            quotas: QuotaClass::ALL
                .into_iter()
                .map(|class| (class, account_quota(class)))
                .collect(),
            faults: BTreeMap::new(),
            default_faults: FaultRates::default(),
            capacity_errors: Vec::new(),
            spot_prices: [
                ("t3.small", 0.0065),
                ("t3a.small", 0.0060),
                ("t3.medium", 0.0125),
                ("t3.large", 0.025),
            ]
            .into_iter()
            .map(|(t, p)| (t.to_string(), p))
            .collect(),
            retry: RetryModel::daemon_defaults(),
            limits: HardLimits {
                rules_per_listener: 100,
            },
        }
    }

    pub fn named(mut self, name: impl Into<String>) -> Profile {
        self.name = name.into();
        self
    }

    /// The same fault rates on every operation.
    pub fn with_faults(mut self, rates: FaultRates) -> Profile {
        self.default_faults = rates;
        self
    }

    pub fn with_operation_faults(mut self, operation: &'static str, rates: FaultRates) -> Profile {
        self.faults.insert(operation, rates);
        self
    }

    /// Spot launches of `instance_type` in `subnet_id` fail with InsufficientInstanceCapacity.
    pub fn with_capacity_error(mut self, instance_type: &str, subnet_id: &str) -> Profile {
        self.capacity_errors
            .push((instance_type.to_string(), subnet_id.to_string()));
        self
    }

    pub fn with_retry(mut self, retry: RetryModel) -> Profile {
        self.retry = retry;
        self
    }

    pub fn api_latency(&self, operation: &str) -> Latency {
        self.api_latency
            .get(operation)
            .copied()
            .unwrap_or(self.default_api_latency)
    }

    pub fn faults(&self, operation: &str) -> FaultRates {
        self.faults
            .get(operation)
            .copied()
            .unwrap_or(self.default_faults)
    }

    /// One paragraph naming the profile and everything a reader needs to compare two runs.
    pub fn summary(&self) -> String {
        let percent = |p: f64| format!("{:.1}%", p * 100.0);
        let mut faults = format!(
            "{} 5xx + {} throttling per attempt on every operation",
            percent(self.default_faults.server_error),
            percent(self.default_faults.throttle)
        );
        for (operation, rates) in &self.faults {
            faults.push_str(&format!(
                ", {operation} {} 5xx + {} throttling",
                percent(rates.server_error),
                percent(rates.throttle)
            ));
        }
        let capacity = if self.capacity_errors.is_empty() {
            "none".to_string()
        } else {
            self.capacity_errors
                .iter()
                .map(|(t, s)| format!("{t} in {s}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let budgets: Vec<String> = self
            .retry
            .attempts_per_operation
            .iter()
            .map(
                |(op, n)| match self.retry.max_backoff_per_operation.get(op) {
                    Some(cap) => format!("{op} {n}, backoff to {cap:?}"),
                    None => format!("{op} {n}"),
                },
            )
            .collect();
        let effects = &self.effects;
        format!(
            "profile {:?}: faults {faults}; no spot capacity: {capacity}; retries: standard, {} \
             attempts ({}), backoff {:?} doubling to {:?} with full jitter, call timeout {:?}; \
             pending->running {}, agent online {}, command pickup {}, container start {}{}, \
             shutting-down {}, target healthy after the target group's interval x healthy \
             threshold; server buckets = aws-profile.md account quotas",
            self.name,
            self.retry.max_attempts,
            if budgets.is_empty() {
                "no per-operation budgets".to_string()
            } else {
                budgets.join(", ")
            },
            self.retry.initial_backoff,
            self.retry.max_backoff,
            self.retry.operation_timeout,
            effects.pending_to_running,
            effects.agent_online,
            effects.command_pickup,
            effects.container_start,
            if effects.image_prepulled {
                " (image pre-pulled)"
            } else {
                " + image pull"
            },
            effects.shutting_down,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_draws() {
        let mut a = SimRng::new(7);
        let mut b = SimRng::new(7);
        let mut c = SimRng::new(8);
        let first: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        assert_eq!(first, (0..5).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(first, (0..5).map(|_| c.next_u64()).collect::<Vec<_>>());
        assert!(
            (0..10_000)
                .map(|_| a.next_f64())
                .all(|x| (0.0..1.0).contains(&x))
        );
    }

    /// The sampled median and 99th percentile land on the profile's numbers.
    #[test]
    fn latencies_have_the_profiles_median_and_p99() {
        let mut rng = SimRng::new(42);
        let latency = Latency::seconds(25, 60);
        let mut samples: Vec<f64> = (0..200_000)
            .map(|_| latency.sample(&mut rng).as_secs_f64())
            .collect();
        samples.sort_by(f64::total_cmp);
        let p50 = samples[samples.len() / 2];
        let p99 = samples[samples.len() * 99 / 100];
        assert!((p50 - 25.0).abs() < 0.5, "p50 {p50}");
        assert!((p99 - 60.0).abs() < 2.0, "p99 {p99}");
        assert_eq!(
            Latency::seconds(10, 10).sample(&mut rng),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn backoff_doubles_with_full_jitter_up_to_the_cap() {
        let retry = RetryModel::standard(4);
        let mut rng = SimRng::new(1);
        for (attempt, ceiling) in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 20.0), (9, 20.0)] {
            let draws: Vec<f64> = (0..2_000)
                .map(|_| retry.backoff("CreateTags", attempt, &mut rng).as_secs_f64())
                .collect();
            let max = draws.iter().copied().fold(0.0, f64::max);
            assert!(max < ceiling && max > ceiling * 0.95, "{attempt}: {max}");
        }
        let defaults = RetryModel::daemon_defaults();
        assert_eq!(defaults.attempts_for("CreateTags"), 4);
        assert_eq!(defaults.attempts_for("PutSecret"), 8);
        assert_eq!(defaults.attempts_for("PutSecretValue"), 8);
        let writes: f64 = (0..2_000)
            .map(|_| defaults.backoff("PutSecret", 7, &mut rng).as_secs_f64())
            .fold(0.0, f64::max);
        assert!(writes < 4.0 && writes > 3.8, "{writes}");
        let others: f64 = (0..2_000)
            .map(|_| defaults.backoff("CreateTags", 7, &mut rng).as_secs_f64())
            .fold(0.0, f64::max);
        assert!(others > 19.0, "{others}");
    }
}
