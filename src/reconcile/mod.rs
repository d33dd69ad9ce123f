//! The reconciler: observe -> plan -> execute, one pass at a time.
//!
//! Owns: turning `plan`'s actions into cloud calls and store writes, the claim, move and
//! teardown step machines, and the loop with its error policy. Must not: decide pool policy
//! (that is `plan`), assume why it ran (every pass re-observes), or touch a secret value.
//!
//! One file per concern:
//! - `observe`: a pass's observation (DescribeInstances into the ledger) and its plan;
//! - `execute`: running the plan's actions concurrently;
//! - `launch`: launches journalled before RunInstances, the offerings cache, tier back-off;
//! - `instances`: readiness probes and retiring an instance (the one way one is terminated);
//! - `steps`: the driver shared by the claim and move step machines;
//! - `claim`, `moves`, `teardown`: the step machines and the undo (and a sleep);
//! - `workspace`: a user's EBS volume: create, attach, stop-and-detach, copy to another zone;
//! - `notices`: what an interruption notice means; `repair`: on-call's pass plus orphan sweep;
//! - `idle`: auto-sleep of users without requests.
//! - `image`: the container image pinned by digest, resolved once per image string.
//! - `quotas`: the account quotas, read at start-up and hourly; launches a quota refused.
//!
//! Crash safety: every claim or move step writes its result to the user's row before the next
//! step starts, and every step is idempotent, so after a crash the next pass simply redoes the
//! recorded step. A teardown (rollback, release, recovery) is a sequence of idempotent deletes run
//! from the row's recorded resources, falling back to lookups by deterministic name or path for
//! anything created but not yet recorded.

mod claim;
mod drains;
mod execute;
mod health_watch;
mod idle;
mod image;
mod live;
mod slots;
pub mod spares;
pub use image::tier_versions;
pub use live::LiveTiers;
mod instances;
mod launch;
mod moves;
mod notices;
mod observe;
mod placement;
pub mod prices;
mod quick;
mod quotas;
mod repair;
mod routes;
mod steps;
mod teardown;
mod warm;
mod workspace;

pub use claim::{StartFor, start_command};
pub use repair::{Orphan, OrphanKind, PlannedAction, RepairReport};

use crate::clock::{Backoff, Clock, error_policy};
use crate::cloud::{Cloud, CloudError, CloudErrorKind, Tags, tags};
use crate::model::{Event, InstanceId, Millis, TierRuntime, UserId};
use crate::plan::{Policy, TierPolicy};
use crate::store::{Store, StoreError};
use launch::ConditionState;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// What the reconciler needs to know beyond `plan`'s policy. Built from the daemon's `Config`
/// by `crate::app`, which names every policy constant once.
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    /// The value of the `spotpool:pool` tag on every resource this daemon creates.
    pub pool: String,
    /// `plan`'s policy, but for its `tiers`, which are `tiers` with on-call's overrides applied,
    /// filled in each pass ([`Reconciler::effective_policy`]).
    pub policy: Policy,
    /// The configured tiers, shared with the API and replaced by a reload (SIGHUP).
    pub tiers: LiveTiers,
    /// The runtime of a tier that is no longer configured: its users are still torn down and
    /// moved with it (the flat settings' runtime).
    pub fallback_runtime: TierRuntime,
    /// What the start script waits for after the health path, if anything.
    pub container_ready_path: Option<String>,
    /// Names every user's secret must carry; the start refuses a secret without one.
    pub required_secrets: Vec<String>,
    /// For the OpenClaw gateway: the state directory; the start merges it, and the user's
    /// browser origin and base path (of its shard), into its configuration.
    pub gateway: Option<GatewayConfig>,
    /// The start-container command may run this long before the attempt fails.
    pub container_timeout: Duration,
    /// The readiness probe command may run this long before it counts as failed.
    pub probe_command_timeout: Duration,
    /// Attempts per claim (each on a fresh instance) before the user is failed.
    pub claim_attempts: u32,
    /// A claim step failing with a retryable error keeps being retried for this long.
    pub claim_step_deadline: Duration,
    pub reconcile_interval: Duration,
    pub poll_interval: Duration,
    pub max_in_flight: usize,
    /// How long an offering that returned a capacity error is skipped.
    pub capacity_ttl: Duration,
    /// Consecutive launch or probe failures of a tier before it stops launching.
    pub launch_failure_limit: u32,
    /// A tier's launches after a failure: blocked for `first`, doubling per failure up to `max`.
    pub launch_backoff: Backoff,
    /// The size of a workspace whose tier is not configured any more.
    pub workspace_size_gib: u32,
    /// The KMS key of workspace volumes; None uses the account's default EBS key.
    pub workspace_kms_key_id: Option<String>,
    /// Spares get a target group and a warm rule before they are `available` (ARCHITECTURE.md,
    /// "Pre-wired spares").
    pub prewired_spares: bool,
    /// The least time between a pre-wired rule's switch and `ready`: the load balancer applies
    /// a rule change within seconds, and AWS reports no moment when it is live.
    pub rule_settle: Duration,
    /// Spares are launched with a blank workspace a first claim keeps (ARCHITECTURE.md, "Blank
    /// workspaces").
    pub blank_workspaces: bool,
    /// The health watch's DescribeTargetHealth calls per second (`SPOTPOOL_HEALTH_CHECKS_PER_SECOND`;
    /// 0: no watch).
    pub health_checks_per_second: f64,
    /// The deployment's rates the cost counts (`prices.rs`).
    pub cost: crate::model::cost::CostSettings,
}

impl ReconcilerConfig {
    /// The configured shard of that name (the shards are `policy.shards`).
    pub fn shard(&self, name: &str) -> Option<&crate::model::Shard> {
        self.policy.shard(name)
    }
}

/// What the start writes into each OpenClaw gateway's configuration besides the user's origin
/// and base path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// `OPENCLAW_STATE_DIR` inside the container.
    pub state_dir: String,
}

/// Why a pass ended the way it did; the loop picks the next delay from it (kube-rs `Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing in flight: wait for the full interval or a wake-up.
    Converged,
    /// Work in flight (probes, claims, releases): come back after this delay.
    Requeue(Duration),
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("observing instances: {0}")]
    Observe(#[source] CloudError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("a reconcile pass has been running for over {0:?}; try again shortly")]
    Busy(Duration),
}

/// Liveness of the loop, shared with `/readyz`.
#[derive(Debug, Default)]
pub struct Health {
    /// When the last pass succeeded (epoch ms), 0 if none has.
    pub last_success: AtomicI64,
    pub passes: AtomicU64,
    /// Whether this process runs the reconciler (holds the lock; `spotpool_leader` 1). A standby
    /// replica serves the API only, and its readiness does not depend on passes it never runs.
    pub reconciling: std::sync::atomic::AtomicBool,
}

/// What happened to one step; failures are logged and retried on a later pass.
enum StepResult {
    Done,
    /// Still in flight; come back on the next poll.
    Waiting,
}

type StepOutcome = Result<StepResult, StepError>;

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long a stop waits for the actions still in flight.
const STOP_GRACE: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Reconciler {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    cloud: Arc<dyn Cloud>,
    config: ReconcilerConfig,
    clock: Clock,
    wake: Arc<Notify>,
    health: Arc<Health>,
    launch_seq: AtomicU64,
    /// Consecutive passes in which AWS throttled an action.
    throttled_passes: AtomicU32,
    /// One pass at a time: the loop's and on-call's repair never interleave.
    /// One pass at a time (the loop's, or a repair's, whose actions may outlive the request).
    pass_lock: Arc<tokio::sync::Mutex<()>>,
    conditions: std::sync::Mutex<ConditionState>,
    /// Users whose route has no live instance, and since when (in memory: a restart starts the
    /// count again).
    unserved: std::sync::Mutex<HashMap<UserId, Millis>>,
    /// The zone of each subnet, once DescribeSubnets answered.
    subnet_zones: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
    /// When auto-sleep last read the request counts.
    last_idle_check: std::sync::Mutex<Millis>,
    /// The health watch's budget and rotation in this term.
    health_watch: std::sync::Mutex<health_watch::WatchState>,
    /// The auto tiers' spare decisions and lead times in this term.
    spares: std::sync::Mutex<spares::SpareMemory>,
    /// The spot prices this term read or loaded (`prices.rs`).
    prices: std::sync::Mutex<prices::PriceMemory>,
    /// The offerings' interruption history in this term (`placement.rs`).
    placement: std::sync::Mutex<placement::PlacementMemory>,
    /// When a pass last read the account's quotas (0: never).
    last_quota_check: std::sync::Mutex<Millis>,
    /// When this term last pruned the journal (0: not yet).
    last_journal_prune: std::sync::Mutex<Millis>,
    /// The passes started so far (the rule priorities are read once per pass).
    pass_seq: AtomicU64,
    /// Per listener, the rule priorities taken (`routes::PriorityBook`).
    priority_books: tokio::sync::Mutex<HashMap<String, routes::PriorityBook>>,
    /// Resolves images outside ECR (None: such an image stays unpinned).
    registry: Option<Arc<crate::image::RegistryClient>>,
    /// Per image, when it may be resolved again after a failure (absent: now).
    image_retry_at: std::sync::Mutex<HashMap<String, Millis>>,
    /// When SSM may be asked again which agents are online, after it could not say (0: now).
    agents_ask_at: std::sync::Mutex<Millis>,
    /// The offerings the drains keep launches off and the instances they keep claims off
    /// (`drains.rs`), as of this pass.
    drained: std::sync::Mutex<drains::DrainHold>,
    /// The objects with an action in flight (`execute.rs`).
    in_flight: Arc<execute::InFlight>,
    /// Claims or moves polling their start command in their own step (`execute::LINGERING`).
    lingering: Arc<tokio::sync::Semaphore>,
    /// Users whose teardown removed their route already (`teardown.rs`); forgotten when the
    /// teardown ends, and on a restart (which then looks once more).
    routes_removed: std::sync::Mutex<std::collections::HashSet<UserId>>,
    /// The instance lifecycles of this term's last listing, for quick claims (`quick.rs`).
    listed: std::sync::Mutex<Option<Arc<HashMap<InstanceId, crate::cloud::Lifecycle>>>>,
    /// Wakes the quick-claim lane (`quick.rs`).
    quick_wake: Notify,
    /// The tiers with on-call's overrides, as the last [`Reconciler::effective_policy`] read
    /// them: what launches, probes, starts and routes use.
    effective: std::sync::RwLock<Arc<Vec<TierPolicy>>>,
    /// What each tier last rolled out to, as the store said (`drains::start_rollouts`).
    rolled_out: tokio::sync::Mutex<HashMap<String, String>>,
}

/// Marks this replica as leading for as long as a reconciler loop runs.
struct Leading(Arc<Health>);

impl Leading {
    fn start(health: Arc<Health>) -> Leading {
        health.reconciling.store(true, Ordering::Relaxed);
        metrics::gauge!("spotpool_leader").set(1.0);
        Leading(health)
    }
}

impl Drop for Leading {
    fn drop(&mut self) {
        self.0.reconciling.store(false, Ordering::Relaxed);
        metrics::gauge!("spotpool_leader").set(0.0);
    }
}

impl Reconciler {
    pub fn new(
        store: Store,
        cloud: Arc<dyn Cloud>,
        config: ReconcilerConfig,
        clock: Clock,
        wake: Arc<Notify>,
        health: Arc<Health>,
        registry: Option<Arc<crate::image::RegistryClient>>,
    ) -> Reconciler {
        let effective = std::sync::RwLock::new(config.tiers.get());
        Reconciler {
            inner: Arc::new(Inner {
                effective,
                rolled_out: Default::default(),
                store,
                cloud,
                config,
                clock,
                wake,
                health,
                launch_seq: AtomicU64::new(0),
                throttled_passes: AtomicU32::new(0),
                pass_lock: Arc::new(tokio::sync::Mutex::new(())),
                conditions: std::sync::Mutex::new(ConditionState::default()),
                unserved: std::sync::Mutex::new(HashMap::new()),
                subnet_zones: std::sync::Mutex::new(Default::default()),
                last_idle_check: std::sync::Mutex::new(0),
                health_watch: Default::default(),
                spares: Default::default(),
                prices: Default::default(),
                placement: Default::default(),
                last_quota_check: std::sync::Mutex::new(0),
                last_journal_prune: std::sync::Mutex::new(0),
                pass_seq: AtomicU64::new(0),
                priority_books: tokio::sync::Mutex::new(HashMap::new()),
                registry,
                image_retry_at: Default::default(),
                agents_ask_at: std::sync::Mutex::new(0),
                drained: Default::default(),
                in_flight: Arc::default(),
                lingering: Arc::new(tokio::sync::Semaphore::new(execute::LINGERING)),
                routes_removed: Default::default(),
                listed: Default::default(),
                quick_wake: Notify::new(),
            }),
        }
    }

    /// A reconciler for one term of leadership: the same settings, clock, wake-up and health,
    /// over `store` and `cloud` (the term's fenced ones), and with nothing remembered from
    /// before (another replica may have led meanwhile).
    pub fn for_term(&self, store: Store, cloud: Arc<dyn Cloud>) -> Reconciler {
        let inner = &self.inner;
        Reconciler::new(
            store,
            cloud,
            inner.config.clone(),
            inner.clock.clone(),
            inner.wake.clone(),
            inner.health.clone(),
            inner.registry.clone(),
        )
    }

    /// The wake-up this reconciler's loop waits on (shared with the API).
    pub fn wake(&self) -> Arc<Notify> {
        self.inner.wake.clone()
    }

    /// Runs passes until `shutdown` resolves. A failed pass never ends the loop: the error policy
    /// backs off exponentially (1 s doubling to 60 s) and the loop goes on.
    /// While it runs (until it returns or is dropped, as a lost term drops it) this replica is
    /// the leader: `Health::reconciling` and `spotpool_leader` say so.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let _leading = Leading::start(self.inner.health.clone());
        tracing::info!("this replica is the leader: it runs the reconciler");
        let mut delay = Duration::ZERO;
        let mut consecutive_failures: u32 = 0;
        // Actions that outlived their pass (`execute`). Dropped with this loop (a lost term),
        // they are aborted; each step is safe to cut off.
        let mut stragglers: JoinSet<()> = JoinSet::new();
        // The quick-claim lane (`quick.rs`): each wake-up, between passes or during one.
        let (stop_quick, quick_stopped) = tokio::sync::watch::channel(false);
        let mut quick: JoinSet<()> = JoinSet::new();
        quick.spawn(self.clone().run_quick_lane(quick_stopped));
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.inner.wake.notified() => self.inner.quick_wake.notify_one(),
                _ = tokio::time::sleep(delay) => {}
            }
            while stragglers.try_join_next().is_some() {}
            let patience = self.inner.config.poll_interval;
            let pass = self.reconcile_within(Some(patience), &mut stragglers);
            tokio::pin!(pass);
            let mut woken = false;
            let result = loop {
                tokio::select! {
                    result = &mut pass => break result,
                    // A PUT during the pass is served now, not after it.
                    _ = self.inner.wake.notified() => {
                        self.inner.quick_wake.notify_one();
                        woken = true;
                    }
                }
            };
            match result {
                Ok(Outcome::Converged) => {
                    consecutive_failures = 0;
                    delay = self.inner.config.reconcile_interval;
                }
                Ok(Outcome::Requeue(after)) => {
                    consecutive_failures = 0;
                    delay = after;
                }
                Err(error) => {
                    consecutive_failures += 1;
                    delay = error_policy(consecutive_failures);
                    tracing::warn!(error = %error, retry_in = ?delay, "reconcile pass failed");
                }
            }
            if woken {
                // The wake-up may have meant more than a claim: a pass for it now, as a
                // wake-up between passes gets.
                self.inner.wake.notify_one();
            }
        }
        // A stop lets the actions in flight finish, as a pass in flight always did, for a while;
        // then drops them (every step is safe to cut off, as after a crash).
        let _ = stop_quick.send(true);
        let drained = async {
            while stragglers.join_next().await.is_some() {}
            while quick.join_next().await.is_some() {}
        };
        if tokio::time::timeout(STOP_GRACE, drained).await.is_err() {
            tracing::warn!(grace = ?STOP_GRACE, "stopping with actions still in flight; the next leader redoes their steps");
        }
        tracing::info!("reconciler stopped");
    }

    /// One pass: observe the cloud, merge it into the ledger, plan, and execute the actions.
    pub async fn reconcile_once(&self) -> Result<Outcome, ReconcileError> {
        self.reconcile_within(None, &mut JoinSet::new()).await
    }

    /// A pass that waits for its actions at most `patience` (all of them without): those still
    /// running then go on in `stragglers`, and the pass asks to come back after the poll
    /// interval.
    async fn reconcile_within(
        &self,
        patience: Option<Duration>,
        stragglers: &mut JoinSet<()>,
    ) -> Result<Outcome, ReconcileError> {
        let _turn = self.inner.pass_lock.lock().await;
        let started = Instant::now();
        let result = self.pass(patience, stragglers).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(_) => "error",
        };
        metrics::counter!("spotpool_reconcile_passes_total", "outcome" => outcome).increment(1);
        metrics::histogram!("spotpool_reconcile_pass_duration_seconds")
            .record(started.elapsed().as_secs_f64());

        if result.is_ok() {
            let health = &self.inner.health;
            health.last_success.store(self.now(), Ordering::Relaxed);
            health.passes.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn pass(
        &self,
        patience: Option<Duration>,
        stragglers: &mut JoinSet<()>,
    ) -> Result<Outcome, ReconcileError> {
        let inner = &self.inner;
        inner.pass_seq.fetch_add(1, Ordering::Relaxed);
        // The tiers as on-call and the configuration have them now, for everything below.
        self.refresh_tiers().await?;
        // Before any probe or start of this pass: they run the pinned image once there is one.
        self.pin_images_if_needed(self.now()).await?;
        self.start_rollouts(self.now()).await?;
        self.drive_drains(self.now()).await?;
        let planned = self.observe_and_plan(false).await?;
        let executed = self.execute(planned.actions, patience).await;
        let throttled = planned.throttled + executed.throttled;
        let still_running = executed.skipped > 0 || executed.stragglers.is_some();
        if let Some(mut rest) = executed.stragglers {
            stragglers.spawn(async move { while rest.join_next().await.is_some() {} });
        }
        // A pass that AWS throttled backs off (doubling up to a minute) before the next one, on
        // top of the client-side buckets: retries can never pile up into a storm.
        if throttled > 0 {
            let streak = inner.throttled_passes.fetch_add(1, Ordering::Relaxed) + 1;
            let delay = throttle_backoff(inner.config.poll_interval, streak);
            metrics::counter!("spotpool_throttled_passes_total").increment(1);
            metrics::gauge!("spotpool_throttle_backoff_seconds").set(delay.as_secs_f64());
            tracing::warn!(throttled, retry_in = ?delay, "AWS throttled this pass; backing off");
            return Ok(Outcome::Requeue(delay));
        }
        if inner.throttled_passes.swap(0, Ordering::Relaxed) > 0 {
            metrics::gauge!("spotpool_throttle_backoff_seconds").set(0.0);
        }
        Ok(if planned.in_flight || still_running {
            Outcome::Requeue(inner.config.poll_interval)
        } else {
            Outcome::Converged
        })
    }

    /// The configured policy with on-call's overrides (`PUT /v1/admin/pool/{tier}`) applied,
    /// and the tiers on-call paused.
    pub async fn effective_policy(&self) -> Result<(Policy, Vec<String>), StoreError> {
        let mut policy = self.inner.config.policy.clone();
        policy.tiers = self.inner.config.tiers.get().to_vec();
        let overrides = self.inner.store.tier_overrides().await?;
        let paused = crate::plan::apply_overrides(&mut policy.tiers, &overrides);
        Ok((policy, paused))
    }

    /// Reads the tiers as on-call and the configuration have them now into what launches,
    /// probes, starts and routes use ([`Reconciler::tiers`]). Only the pass does, at its
    /// start: a reader that began earlier (the quick lane) never writes an older version back.
    async fn refresh_tiers(&self) -> Result<(), StoreError> {
        let (policy, _) = self.effective_policy().await?;
        *self
            .inner
            .effective
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(policy.tiers);
        Ok(())
    }

    /// The tiers as the last pass saw them (configured, with on-call's overrides).
    pub(crate) fn tiers(&self) -> Arc<Vec<TierPolicy>> {
        (self.inner.effective.read())
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The tier named `name`, as the last pass saw it.
    pub(crate) fn tier(&self, name: &str) -> Option<TierPolicy> {
        self.tiers().iter().find(|t| t.name == name).cloned()
    }

    /// What the tier named `tier` launches and runs: its runtime as the last pass saw it, or
    /// the fallback for a tier that is no longer configured.
    pub(crate) fn runtime(&self, tier: &str) -> TierRuntime {
        self.tier(tier)
            .map_or_else(|| self.inner.config.fallback_runtime.clone(), |t| t.runtime)
    }

    /// The injected clock's time.
    pub fn now(&self) -> Millis {
        (self.inner.clock)()
    }

    /// Records `event` in the journal (and the log).
    async fn journal(
        &self,
        now: Millis,
        event: Event,
        user: Option<&UserId>,
        instance: Option<&InstanceId>,
    ) -> Result<(), StepError> {
        let message = event.message();
        tracing::info!(
            kind = event.kind(),
            user = user.map(UserId::as_str).unwrap_or("-"),
            instance = instance.map(|i| i.0.as_str()).unwrap_or("-"),
            message
        );
        self.inner.store.record(now, &event, user, instance).await?;
        Ok(())
    }

    /// The pool's and the user's tags, for every resource created for a user.
    fn resource_tags(&self, user: &UserId) -> Tags {
        let mut out = one_tag(tags::POOL, &self.inner.config.pool);
        out.insert(tags::USER_ID.into(), user.to_string());
        out
    }
}

/// A step failure that retrying will not fix: the claim or move is rolled back.
fn fatal(operation: &'static str, code: &str, message: String) -> StepError {
    StepError::Cloud(CloudError::new(
        CloudErrorKind::Fatal,
        operation,
        code,
        message,
    ))
}

fn one_tag(key: &str, value: &str) -> Tags {
    let mut out = Tags::new();
    out.insert(key.to_string(), value.to_string());
    out
}

/// `sp-<route>`: stable for the user's lifetime and well under the 32-character limit.
pub fn target_group_name(route: &str) -> String {
    format!("sp-{route}")
}

/// The listener rule's path pattern.
pub fn route_path(route: &str) -> String {
    format!("/{route}/*")
}

/// The delay after the `streak`-th consecutive throttled pass: the poll interval (at least
/// 1 s) doubled per pass, at most a minute.
pub fn throttle_backoff(poll_interval: Duration, streak: u32) -> Duration {
    Backoff::new(
        poll_interval.max(Duration::from_secs(1)),
        Duration::from_secs(60),
    )
    .after(streak)
}
