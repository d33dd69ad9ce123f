//! The reconciler: observe -> plan -> execute, one pass at a time.
//!
//! Owns: turning `plan`'s actions into cloud calls and store writes, the claim and teardown step
//! machines, and the loop with its error policy. Must not: decide pool policy (that is `plan`),
//! assume why it ran (every pass re-observes), or touch a secret value.
//!
//! Crash safety: every claim step writes its result to the user's row before the next step
//! starts, and every step is idempotent, so after a crash the next pass simply redoes the
//! recorded step. A teardown (rollback, release, recovery) is a sequence of idempotent deletes run
//! from the row's recorded resources, falling back to lookups by deterministic name or path for
//! anything created but not yet recorded.

mod interruptions;
mod moves;
mod repair;

pub use repair::{Orphan, OrphanKind, RepairReport};

use crate::cloud::{
    Cloud, CloudError, CloudErrorKind, CommandStatus, HealthCheck, LaunchRequest, Tags, tags,
};
use crate::commands::{self, ContainerSpec};
use crate::model::{ClaimStep, InstanceId, InstanceStatus, Millis, UserId, UserState};
use crate::plan::{
    self, Action, Conditions, Market, Policy, PoolInstance, TerminateReason, UserIntent,
};
use crate::store::{InstanceRecord, PendingLaunch, Store, StoreError, TierOverride, UserRecord};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

/// A source of "now" in epoch milliseconds. Tests inject their own.
pub type Clock = Arc<dyn Fn() -> Millis + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0)
    })
}

/// What the reconciler needs to know beyond `plan`'s policy.
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    /// The value of the `spotpool:pool` tag on every resource this daemon creates.
    pub pool: String,
    pub policy: Policy,
    pub listener_arns: Vec<String>,
    pub container_image: String,
    pub container_port: u16,
    /// The target groups' health check; the start script waits for its path.
    pub health_check: HealthCheck,
    /// Limits of each user container: memory in MiB (no swap), CPUs, processes and threads.
    pub container_memory_mb: u32,
    pub container_cpus: f64,
    pub container_pids_limit: u32,
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
    /// First back-off after a launch or probe failure; it doubles per failure up to 10 minutes.
    pub launch_backoff: Duration,
}

/// The reconciler's memory of recent cloud conditions (kept in process: a restart forgets it,
/// which at worst retries an unavailable offering once more).
#[derive(Debug, Default)]
struct ConditionState {
    /// (instance type, subnet) -> skipped until.
    unavailable: HashMap<(String, String), Millis>,
    tiers: HashMap<String, TierHealth>,
}

#[derive(Debug, Default)]
struct TierHealth {
    consecutive_failures: u32,
    blocked_until: Millis,
    halted: bool,
}

impl ConditionState {
    fn snapshot(&mut self, now: Millis) -> Conditions {
        self.unavailable.retain(|_, until| *until > now);
        Conditions {
            unavailable: self.unavailable.keys().cloned().collect(),
            launch_blocked: self
                .tiers
                .iter()
                .filter(|(_, h)| h.halted || h.blocked_until > now)
                .map(|(tier, _)| tier.clone())
                .collect(),
        }
    }
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
    /// Whether this process runs the reconciler (holds the lock). A standby replica serves the
    /// API only, and its readiness does not depend on passes it never runs.
    pub reconciling: std::sync::atomic::AtomicBool,
}

/// What happened to one action; failures are logged and retried on a later pass.
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
    pass_lock: tokio::sync::Mutex<()>,
    conditions: std::sync::Mutex<ConditionState>,
    /// Users whose route has no live instance, and since when (in memory: a restart starts the
    /// count again).
    unserved: std::sync::Mutex<HashMap<UserId, Millis>>,
}

/// One pass's plan: the actions, whether work is in flight, and how many launch redos AWS
/// throttled on the way.
struct Planned {
    actions: Vec<Action>,
    in_flight: bool,
    throttled: usize,
}

/// A launch that keeps failing with retryable errors is redone this many times with its token;
/// then the row is dropped (anything it started is tagged for the pool and adopted).
const MAX_LAUNCH_REDOS: u32 = 10;

/// Teardown flavours: what happens to the user afterwards and to the secret.
#[derive(Debug, Clone, PartialEq)]
enum Teardown {
    /// A claim step failed: undo, then retry on another instance or fail the user.
    Rollback { cause: String },
    /// The user's instance vanished: undo, then queue the user first in line (no attempt used).
    Recover,
    /// The user asked to go: undo everything including the secret, then delete the row.
    Release,
}

impl Reconciler {
    pub fn new(
        store: Store,
        cloud: Arc<dyn Cloud>,
        config: ReconcilerConfig,
        clock: Clock,
        wake: Arc<Notify>,
        health: Arc<Health>,
    ) -> Reconciler {
        Reconciler {
            inner: Arc::new(Inner {
                store,
                cloud,
                config,
                clock,
                wake,
                health,
                launch_seq: AtomicU64::new(0),
                throttled_passes: AtomicU32::new(0),
                pass_lock: tokio::sync::Mutex::new(()),
                conditions: std::sync::Mutex::new(ConditionState::default()),
                unserved: std::sync::Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Runs passes until `shutdown` resolves. A failed pass never ends the loop: the error policy
    /// backs off exponentially (1 s doubling to 60 s) and the loop goes on.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        self.inner.health.reconciling.store(true, Ordering::Relaxed);
        let mut delay = Duration::ZERO;
        let mut consecutive_failures: u32 = 0;
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(delay) => {}
            }
            match self.reconcile_once().await {
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
        }
        tracing::info!("reconciler stopped");
    }

    /// One pass: observe the cloud, merge it into the ledger, plan, and execute the actions.
    pub async fn reconcile_once(&self) -> Result<Outcome, ReconcileError> {
        let _turn = self.inner.pass_lock.lock().await;
        let started = Instant::now();
        let result = self.pass().await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(_) => "error",
        };
        metrics::counter!("spotpool_reconcile_passes_total", "outcome" => outcome).increment(1);
        metrics::histogram!("spotpool_reconcile_pass_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        if result.is_ok() {
            let health = &self.inner.health;
            health
                .last_success
                .store((self.inner.clock)(), Ordering::Relaxed);
            health.passes.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Observes the cloud, merges it into the ledger and plans. A dry run redoes no launch (it
    /// only counts the pending ones) and changes nothing in the cloud; it still updates the
    /// ledger from the listing, which is bookkeeping, not action.
    async fn observe_and_plan(&self, dry_run: bool) -> Result<Planned, ReconcileError> {
        let inner = &self.inner;
        let observed = inner
            .cloud
            .describe_pool_instances()
            .await
            .map_err(ReconcileError::Observe)?;
        let now = (inner.clock)();
        let (launching, throttled) = if dry_run {
            let pending = inner.store.list_launches().await?;
            (pending.into_iter().map(|l| l.tier).collect(), 0)
        } else {
            self.finish_launches(now).await?
        };
        let (policy, paused) = self.effective_policy().await?;
        let mut ledger = self.sync_ledger(&observed, now).await?;
        let mut acted_on_notices = false;
        if !dry_run {
            match self.handle_notices(&observed, now).await {
                Ok(acted) => acted_on_notices = acted,
                Err(StepError::Store(e)) => return Err(e.into()),
                // A failed cloud call leaves the notice unhandled: the next pass tries again.
                Err(StepError::Cloud(e)) => {
                    acted_on_notices = true;
                    tracing::warn!(error = %e, "handling interruption notices; will retry");
                }
            }
        }
        if acted_on_notices {
            // Notices may have terminated spares: plan from the ledger as it is now.
            ledger = inner.store.list_instances().await?;
            ledger.sort_by(|a, b| {
                (a.launched_at, &a.instance_id).cmp(&(b.launched_at, &b.instance_id))
            });
        }
        let lifecycles: HashMap<&InstanceId, _> =
            observed.iter().map(|i| (&i.id, i.lifecycle)).collect();
        let instances: Vec<PoolInstance> = ledger
            .iter()
            .map(|r| PoolInstance {
                id: r.instance_id.clone(),
                tier: r.tier.clone(),
                status: r.status,
                lifecycle: lifecycles.get(&r.instance_id).copied(),
                launched_at: r.launched_at,
                status_since: r.status_since,
                probe: r
                    .probe_command_id
                    .clone()
                    .map(|c| (c, r.probe_sent_at.unwrap_or(now))),
                probe_failed_at: r.probe_failed_at,
                missed: r.missed_observations,
                recycle: r.recycle_requested_at.is_some(),
            })
            .collect();
        let users = inner.store.list_users().await?;
        let intents: Vec<UserIntent> = users
            .iter()
            .map(|u| UserIntent {
                user: u.user_id.clone(),
                tier: u.tier.clone(),
                state: u.state,
                instance: u.instance_id.clone(),
                requested_at: u.requested_at,
                tearing_down: u.teardown.is_some(),
                moving_to: u.move_instance_id.clone(),
            })
            .collect();
        let unserved = export_gauges(&ledger, &users, &policy);
        self.track_unserved(&unserved, now);

        let mut conditions = self.conditions().snapshot(now);
        conditions.launch_blocked.extend(paused);
        let mut actions = plan::plan(&intents, &instances, now, &policy, &conditions);
        actions.retain(|a| !matches!(a, Action::Launch { tier, .. } if launching.contains(tier)));
        // Work in flight brings the next pass sooner: actions, instances on their way in or out,
        // and instances missing from the last listing (to confirm or clear the miss).
        let in_flight = !actions.is_empty()
            || acted_on_notices
            || !launching.is_empty()
            || ledger.iter().any(|r| {
                r.missed_observations > 0
                    || matches!(
                        r.status,
                        InstanceStatus::Initializing | InstanceStatus::Terminating
                    )
            });
        Ok(Planned {
            actions,
            in_flight,
            throttled,
        })
    }

    /// The configured policy with on-call's overrides (`PUT /v1/admin/pool/{tier}`) applied,
    /// and the tiers on-call paused.
    pub async fn effective_policy(&self) -> Result<(Policy, Vec<String>), StoreError> {
        let mut policy = self.inner.config.policy.clone();
        let overrides = self.inner.store.tier_overrides().await?;
        let paused = apply_overrides(&mut policy.tiers, &overrides);
        Ok((policy, paused))
    }

    async fn pass(&self) -> Result<Outcome, ReconcileError> {
        let inner = &self.inner;
        let planned = self.observe_and_plan(false).await?;
        let in_flight = planned.in_flight;
        let throttled_redos = planned.throttled;
        let actions = planned.actions;
        let throttled = throttled_redos + self.execute(actions).await;
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
        Ok(if in_flight {
            Outcome::Requeue(inner.config.poll_interval)
        } else {
            Outcome::Converged
        })
    }

    /// Adopts instances tagged for this pool that the ledger does not know (after a restart or a
    /// lost launch response) and refreshes what AWS reports about known ones.
    async fn sync_ledger(
        &self,
        observed: &[crate::cloud::CloudInstance],
        now: Millis,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let store = &self.inner.store;
        let mut ledger: HashMap<InstanceId, InstanceRecord> = store
            .list_instances()
            .await?
            .into_iter()
            .map(|r| (r.instance_id.clone(), r))
            .collect();
        let default_tier = self
            .inner
            .config
            .policy
            .tiers
            .first()
            .map(|t| t.name.clone())
            .unwrap_or_default();
        for seen in observed {
            let known = ledger.get(&seen.id);
            let mut record = match known {
                Some(record) => record.clone(),
                None => {
                    let status = seen.status.unwrap_or(InstanceStatus::Initializing);
                    tracing::info!(instance = %seen.id, %status, "adopting instance tagged for this pool");
                    store
                        .record(
                            now,
                            "instance.adopted",
                            None,
                            Some(&seen.id),
                            &format!("adopted with status {status}"),
                        )
                        .await?;
                    InstanceRecord::new(
                        seen.id.clone(),
                        seen.tier.clone().unwrap_or_else(|| default_tier.clone()),
                        status,
                        seen.launched_at,
                        now,
                    )
                }
            };
            record.missed_observations = 0;
            record.arn = Some(seen.arn.clone());
            record.instance_type = Some(seen.instance_type.clone());
            record.availability_zone = Some(seen.availability_zone.clone());
            record.private_ip = seen.private_ip.clone();
            if known != Some(&record) {
                store.put_instance(&record).await?;
                ledger.insert(record.instance_id.clone(), record);
            }
        }
        // Count the passes each known instance has been missing; plan only calls a held instance
        // lost after several, so one incomplete listing cannot tear down its user.
        let seen: std::collections::HashSet<&InstanceId> = observed.iter().map(|i| &i.id).collect();
        for record in ledger.values_mut() {
            if !seen.contains(&record.instance_id) {
                record.missed_observations += 1;
                store.put_instance(record).await?;
            }
        }
        let mut records: Vec<InstanceRecord> = ledger.into_values().collect();
        records
            .sort_by(|a, b| (a.launched_at, &a.instance_id).cmp(&(b.launched_at, &b.instance_id)));
        Ok(records)
    }

    /// Runs the actions concurrently, at most `max_in_flight` at once. Failures are logged and
    /// counted; the next pass plans again from fresh observations.
    /// Returns how many actions AWS throttled (after the SDK's retries).
    async fn execute(&self, actions: Vec<Action>) -> usize {
        let permits = Arc::new(Semaphore::new(self.inner.config.max_in_flight));
        let mut tasks = JoinSet::new();
        for action in actions {
            let this = self.clone();
            let permits = permits.clone();
            tasks.spawn(async move {
                let Ok(_permit) = permits.acquire_owned().await else {
                    return false;
                };
                let kind = action_kind(&action);
                match this.run_action(&action).await {
                    Ok(()) => false,
                    Err(error) => {
                        metrics::counter!("spotpool_action_errors_total", "action" => kind).increment(1);
                        tracing::warn!(?action, error = %error, "action failed; will retry on a later pass");
                        matches!(&error, StepError::Cloud(e) if e.kind == CloudErrorKind::Throttled)
                    }
                }
            });
        }
        let mut throttled = 0;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(true) => throttled += 1,
                Ok(false) => {}
                Err(error) => tracing::error!(error = %error, "action task panicked"),
            }
        }
        throttled
    }

    async fn run_action(&self, action: &Action) -> Result<(), StepError> {
        let now = (self.inner.clock)();
        match action {
            Action::Launch {
                tier,
                instance_type,
                subnet_id,
                count,
                market,
            } => {
                self.launch(tier, instance_type, subnet_id, *count, *market, now)
                    .await
            }
            Action::SendProbe { instance } => self.send_probe(instance, now).await,
            Action::CheckProbe {
                instance,
                command_id,
            } => self.check_probe(instance, command_id, now).await,
            Action::Terminate { instance, reason } => self.terminate(instance, *reason, now).await,
            Action::Forget { instance } => {
                self.inner.store.delete_instance(instance).await?;
                self.journal(
                    now,
                    "instance.gone",
                    None,
                    Some(instance),
                    "no longer listed by EC2",
                )
                .await
            }
            Action::Assign { user, instance } => {
                if self.inner.store.assign(user, instance, now).await? {
                    self.journal(
                        now,
                        "claim.assigned",
                        Some(user),
                        Some(instance),
                        "spare claimed",
                    )
                    .await?;
                    self.advance_claim(user).await?;
                }
                Ok(())
            }
            Action::AdvanceClaim { user } => self.advance_claim(user).await,
            Action::Release { user } => self.teardown_user(user, Teardown::Release).await,
            Action::Recover { user } => self.teardown_user(user, Teardown::Recover).await,
            Action::BeginMove { user } => self.begin_move(user, "recycle", now).await,
            Action::AssignMove { user, instance } => self.assign_move(user, instance).await,
            Action::AdvanceMove { user } => self.advance_move(user).await,
        }
    }

    async fn journal(
        &self,
        now: Millis,
        kind: &str,
        user: Option<&UserId>,
        instance: Option<&InstanceId>,
        message: &str,
    ) -> Result<(), StepError> {
        tracing::info!(
            kind,
            user = user.map(UserId::as_str).unwrap_or("-"),
            instance = instance.map(|i| i.0.as_str()).unwrap_or("-"),
            message
        );
        self.inner
            .store
            .record(now, kind, user, instance, message)
            .await?;
        Ok(())
    }

    // --- pool instances --------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    async fn launch(
        &self,
        tier: &str,
        instance_type: &str,
        subnet_id: &str,
        count: u32,
        market: Market,
        now: Millis,
    ) -> Result<(), StepError> {
        let seq = self.inner.launch_seq.fetch_add(1, Ordering::Relaxed);
        let preferred = self
            .inner
            .config
            .policy
            .tier(tier)
            .and_then(|t| t.instance_types.first())
            .is_some_and(|t| t == instance_type);
        if market == Market::OnDemand || !preferred {
            let kind = if market == Market::OnDemand {
                "on_demand"
            } else {
                "instance_type"
            };
            metrics::counter!("spotpool_launch_fallbacks_total", "tier" => tier.to_string(), "kind" => kind)
                .increment(u64::from(count));
            self.journal(now, "pool.fallback", None, None, &format!("tier {tier}: launching {count} {instance_type} ({market:?}) in {subnet_id}: preferred offerings have no capacity"))
                .await?;
        }
        // The launch is written down with its ClientToken before RunInstances, so a lost
        // response is redone with the same token and EC2 answers with the same instances.
        let launch = PendingLaunch {
            client_token: format!("sp-{now}-{seq}"),
            tier: tier.to_string(),
            instance_type: instance_type.to_string(),
            subnet_id: subnet_id.to_string(),
            count,
            spot: market == Market::Spot,
            created_at: now,
            attempts: 0,
            last_error: None,
        };
        self.inner.store.insert_launch(&launch).await?;
        self.run_launch(&launch, now).await
    }

    /// Calls RunInstances for a recorded launch and settles its row: instances into the ledger
    /// and the row deleted, or the row kept (with the error) for a redo on the next pass.
    async fn run_launch(&self, launch: &PendingLaunch, now: Millis) -> Result<(), StepError> {
        let store = &self.inner.store;
        let tier = launch.tier.as_str();
        let request = LaunchRequest {
            tier: launch.tier.clone(),
            instance_type: launch.instance_type.clone(),
            subnet_id: launch.subnet_id.clone(),
            count: launch.count,
            client_token: launch.client_token.clone(),
            spot: launch.spot,
        };
        let ids = match self.inner.cloud.launch_instances(&request).await {
            Ok(ids) => ids,
            Err(error) => {
                metrics::counter!("spotpool_launches_total", "tier" => tier.to_string(), "outcome" => error.kind.as_str())
                    .increment(u64::from(launch.count));
                // Capacity marks the offering; a refusal that retrying will not fix counts against
                // the tier. Throttling and 5xx that outlived the SDK's retries are the API's
                // trouble, not the tier's: the next pass redoes the launch with the same token.
                if error.kind.is_retryable() && launch.attempts + 1 < MAX_LAUNCH_REDOS {
                    store
                        .launch_failed(&launch.client_token, &error.to_string())
                        .await?;
                    return Err(error.into());
                }
                if error.kind == CloudErrorKind::Capacity {
                    self.mark_unavailable(tier, &launch.instance_type, &launch.subnet_id, now)
                        .await?;
                } else if !error.kind.is_retryable() {
                    self.tier_failed(tier, &error.to_string(), now).await?;
                }
                // Nothing was started (or, after MAX_LAUNCH_REDOS, anything that was is tagged
                // for the pool and adopted from the next listing).
                store.delete_launch(&launch.client_token).await?;
                return Err(error.into());
            }
        };
        metrics::counter!("spotpool_launches_total", "tier" => tier.to_string(), "outcome" => "ok")
            .increment(ids.len() as u64);
        for id in &ids {
            if store.get_instance(id).await?.is_some() {
                // A redo whose instances were already adopted from a listing.
                continue;
            }
            store
                .put_instance(&InstanceRecord {
                    instance_type: Some(launch.instance_type.clone()),
                    ..InstanceRecord::new(
                        id.clone(),
                        tier.to_string(),
                        InstanceStatus::Initializing,
                        now,
                        now,
                    )
                })
                .await?;
            self.journal(
                now,
                "instance.launched",
                None,
                Some(id),
                &format!("{} in {}", launch.instance_type, launch.subnet_id),
            )
            .await?;
        }
        store.delete_launch(&launch.client_token).await?;
        Ok(())
    }

    /// Redoes launches whose outcome was lost. Returns the tiers that still have one pending:
    /// they launch nothing new this pass, so a lost response can never double a launch.
    /// Also returns how many redos AWS throttled.
    async fn finish_launches(&self, now: Millis) -> Result<(Vec<String>, usize), StoreError> {
        let pending = self.inner.store.list_launches().await?;
        if pending.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let mut throttled = 0;
        for launch in pending {
            tracing::info!(client_token = %launch.client_token, tier = %launch.tier, attempts = launch.attempts, "redoing a launch whose outcome was not recorded");
            match self.run_launch(&launch, now).await {
                Ok(()) => {}
                Err(StepError::Store(e)) => return Err(e),
                Err(StepError::Cloud(error)) => {
                    throttled += usize::from(error.kind == CloudErrorKind::Throttled);
                    tracing::warn!(client_token = %launch.client_token, error = %error, "launch redo failed");
                }
            }
        }
        let still_pending = self
            .inner
            .store
            .list_launches()
            .await?
            .into_iter()
            .map(|l| l.tier)
            .collect();
        Ok((still_pending, throttled))
    }

    /// Starts the clock of users who just became unserved; records how long the others that
    /// are served again went without (`spotpool_unserved_seconds`, and an event).
    fn track_unserved(&self, now_unserved: &[UserId], now: Millis) {
        let mut since = self
            .inner
            .unserved
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for user in now_unserved {
            since.entry(user.clone()).or_insert(now);
        }
        since.retain(|user, started| {
            if now_unserved.contains(user) {
                return true;
            }
            let seconds = (now - *started).max(0) as f64 / 1000.0;
            metrics::histogram!("spotpool_unserved_seconds").record(seconds);
            tracing::info!(user = %user, seconds, "user no longer without a live instance");
            false
        });
    }

    fn conditions(&self) -> std::sync::MutexGuard<'_, ConditionState> {
        // Nothing panics while holding this lock; a poisoned lock still holds valid data.
        self.inner
            .conditions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A capacity error: skip this (type, subnet) offering for `capacity_ttl`; `plan` falls back
    /// to another subnet, then the next type, then on-demand if the tier allows it.
    async fn mark_unavailable(
        &self,
        tier: &str,
        instance_type: &str,
        subnet_id: &str,
        now: Millis,
    ) -> Result<(), StepError> {
        let until = now + self.inner.config.capacity_ttl.as_millis() as Millis;
        self.conditions()
            .unavailable
            .insert((instance_type.to_string(), subnet_id.to_string()), until);
        metrics::counter!("spotpool_capacity_errors_total", "tier" => tier.to_string(), "instance_type" => instance_type.to_string())
            .increment(1);
        self.journal(
            now,
            "pool.capacity_unavailable",
            None,
            None,
            &format!(
                "no spot capacity for {instance_type} in {subnet_id}; skipped for {:?}",
                self.inner.config.capacity_ttl
            ),
        )
        .await
    }

    /// A launch or probe failure of `tier`: back off exponentially, and stop launching at the
    /// failure limit, so a broken template or image cannot spend money in a loop.
    async fn tier_failed(&self, tier: &str, why: &str, now: Millis) -> Result<(), StepError> {
        let config = &self.inner.config;
        let (failures, backoff, halted_now) = {
            let mut conditions = self.conditions();
            let health = conditions.tiers.entry(tier.to_string()).or_default();
            health.consecutive_failures += 1;
            let doublings = health.consecutive_failures.saturating_sub(1).min(16);
            let backoff = config
                .launch_backoff
                .saturating_mul(1u32 << doublings)
                .min(Duration::from_secs(600));
            health.blocked_until = now + backoff.as_millis() as Millis;
            let halted_now =
                !health.halted && health.consecutive_failures >= config.launch_failure_limit;
            health.halted |= halted_now;
            (health.consecutive_failures, backoff, halted_now)
        };
        if halted_now {
            metrics::gauge!("spotpool_tier_launch_halted", "tier" => tier.to_string()).set(1.0);
            return self
                .journal(now, "pool.launch_halted", None, None, &format!("tier {tier} stopped launching after {failures} consecutive failures (last: {why}); fix the cause and restart the daemon"))
                .await;
        }
        self.journal(
            now,
            "pool.launch_backoff",
            None,
            None,
            &format!("tier {tier}: failure {failures} ({why}); no launches for {backoff:?}"),
        )
        .await
    }

    /// An instance of `tier` passed its probe: the tier works, forget its failures.
    fn tier_healthy(&self, tier: &str) {
        let mut conditions = self.conditions();
        if let Some(health) = conditions.tiers.get_mut(tier)
            && !health.halted
        {
            health.consecutive_failures = 0;
            health.blocked_until = 0;
        }
    }

    async fn send_probe(&self, instance: &InstanceId, now: Millis) -> Result<(), StepError> {
        let store = &self.inner.store;
        let Some(mut record) = store.get_instance(instance).await? else {
            return Ok(());
        };
        let script = commands::probe_script(&self.inner.config.container_image);
        let timeout = self.inner.config.probe_command_timeout.as_secs() as u32;
        match self
            .inner
            .cloud
            .send_command(instance, "spotpool readiness probe", &script, timeout)
            .await
        {
            Ok(command_id) => {
                record.probe_command_id = Some(command_id);
                record.probe_sent_at = Some(now);
                store.put_instance(&record).await?;
                Ok(())
            }
            Err(error) => {
                // NotFound here means the SSM agent is not online yet: normal while booting.
                record.probe_failed_at = Some(now);
                if error.kind != CloudErrorKind::NotFound {
                    record.probe_failures += 1;
                    record.last_error = Some(error.to_string());
                }
                store.put_instance(&record).await?;
                if error.kind == CloudErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(error.into())
                }
            }
        }
    }

    async fn check_probe(
        &self,
        instance: &InstanceId,
        command_id: &str,
        now: Millis,
    ) -> Result<(), StepError> {
        let store = &self.inner.store;
        let Some(mut record) = store.get_instance(instance).await? else {
            return Ok(());
        };
        let status = self
            .inner
            .cloud
            .command_status(command_id, instance)
            .await?;
        let sent_at = record.probe_sent_at.unwrap_or(now);
        let limit = self.inner.config.probe_command_timeout.as_millis() as Millis;
        let failure = match status {
            CommandStatus::Success => {
                // Mirror first, then the ledger: if the tag write fails, the probe runs again.
                self.inner
                    .cloud
                    .tag_instance(
                        instance,
                        &one_tag(tags::STATUS, InstanceStatus::Available.as_str()),
                    )
                    .await?;
                store
                    .transition_instance(
                        instance,
                        InstanceStatus::Initializing,
                        InstanceStatus::Available,
                        now,
                    )
                    .await?;
                self.tier_healthy(&record.tier);
                return self
                    .journal(
                        now,
                        "instance.available",
                        None,
                        Some(instance),
                        "readiness probe passed",
                    )
                    .await;
            }
            CommandStatus::Pending if now - sent_at <= limit => return Ok(()),
            CommandStatus::Pending => "probe command timed out".to_string(),
            CommandStatus::Failed(message) => message,
        };
        record.probe_command_id = None;
        record.probe_failed_at = Some(now);
        record.probe_failures += 1;
        record.last_error = Some(failure.clone());
        store.put_instance(&record).await?;
        metrics::counter!("spotpool_probe_failures_total").increment(1);
        self.journal(now, "instance.probe_failed", None, Some(instance), &failure)
            .await
    }

    async fn terminate(
        &self,
        instance: &InstanceId,
        reason: TerminateReason,
        now: Millis,
    ) -> Result<(), StepError> {
        let store = &self.inner.store;
        if let Some(mut record) = store.get_instance(instance).await? {
            if reason == TerminateReason::ProbeTimeout {
                let why =
                    format!("instance {instance} failed its readiness probe until the timeout");
                self.tier_failed(&record.tier, &why, now).await?;
            }
            if reason == TerminateReason::Surplus {
                // Only an instance that is still an unclaimed spare may go as surplus.
                if !store
                    .transition_instance(
                        instance,
                        InstanceStatus::Available,
                        InstanceStatus::Terminating,
                        now,
                    )
                    .await?
                {
                    return Ok(());
                }
            } else if record.status != InstanceStatus::Terminating
                || reason == TerminateReason::Retry
            {
                record.status = InstanceStatus::Terminating;
                record.status_since = now;
                store.put_instance(&record).await?;
            }
        }
        self.terminate_in_cloud(instance).await?;
        metrics::counter!("spotpool_terminations_total", "reason" => reason.as_str()).increment(1);
        self.journal(
            now,
            "instance.terminating",
            None,
            Some(instance),
            reason.as_str(),
        )
        .await
    }

    async fn terminate_in_cloud(&self, instance: &InstanceId) -> Result<(), StepError> {
        let cloud = &self.inner.cloud;
        // The tag is a mirror for on-call; a failure to write it must not keep the instance alive.
        if let Err(error) = cloud
            .tag_instance(
                instance,
                &one_tag(tags::STATUS, InstanceStatus::Terminating.as_str()),
            )
            .await
            && error.kind != CloudErrorKind::NotFound
        {
            tracing::debug!(%instance, error = %error, "could not tag instance terminating");
        }
        cloud
            .terminate_instances(std::slice::from_ref(instance))
            .await?;
        Ok(())
    }

    // --- claims ----------------------------------------------------------------------------

    /// Runs the user's claim steps from the recorded one until it is ready, waiting on a command,
    /// or failed. Each step's result is saved before the next starts.
    async fn advance_claim(&self, user_id: &UserId) -> Result<(), StepError> {
        loop {
            let Some(user) = self.inner.store.get_user(user_id).await? else {
                return Ok(());
            };
            if user.state != UserState::Provisioning {
                return Ok(());
            }
            let step = user.claim_step.unwrap_or(ClaimStep::Assigned);
            match self.claim_step(user.clone(), step).await {
                Ok(StepResult::Done) => {
                    if step == ClaimStep::Routed {
                        return Ok(());
                    }
                }
                Ok(StepResult::Waiting) => return Ok(()),
                Err(StepError::Cloud(error)) => {
                    // Retryable errors are retried until the step has been stuck too long,
                    // counted from the step's start (the row's last write), not the claim's.
                    let now = (self.inner.clock)();
                    let step_started = user.updated_at;
                    let deadline = self.inner.config.claim_step_deadline.as_millis() as Millis;
                    if error.kind.is_retryable() && now - step_started <= deadline {
                        return Err(StepError::Cloud(error));
                    }
                    let cause = format!("claim step {} failed: {error}", step.as_str());
                    return self
                        .teardown_user(user_id, Teardown::Rollback { cause })
                        .await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Performs one claim step and saves its result. `Done` means the row moved to the next step.
    async fn claim_step(&self, mut user: UserRecord, step: ClaimStep) -> StepOutcome {
        let inner = &self.inner;
        let cloud = &inner.cloud;
        let config = &inner.config;
        let Some(instance) = user.instance_id.clone() else {
            // A provisioning row always has an instance; treat a corrupt one as a failed attempt.
            return Err(StepError::Cloud(CloudError::new(
                CloudErrorKind::Fatal,
                "Claim",
                "NoInstance",
                "provisioning user has no instance",
            )));
        };
        let now = (inner.clock)();
        let next = match step {
            ClaimStep::Assigned => {
                self.bind_to_instance(&user, &instance).await?;
                ClaimStep::Tagged
            }
            ClaimStep::Tagged => {
                let script = self.start_script(&user, &instance).await?;
                // Mark the instance dirty *before* sending: from here on a container may run on
                // it (a crash or a timed-out response cannot tell), so an undo terminates it
                // rather than returning it to the pool.
                if user.command_sent_at.is_none() {
                    user.command_sent_at = Some(now);
                    user.updated_at = now;
                    if !inner.store.update_user(&mut user).await? {
                        return Ok(StepResult::Waiting);
                    }
                }
                let sent = cloud
                    .send_command(
                        &instance,
                        &format!("spotpool start container for {}", user.user_id),
                        &script,
                        config.container_timeout.as_secs() as u32,
                    )
                    .await;
                let command_id = match sent {
                    Ok(command_id) => command_id,
                    // A definite refusal means nothing ran: the instance is still clean.
                    Err(error) if error.kind != CloudErrorKind::Transient => {
                        user.command_sent_at = None;
                        inner.store.update_user(&mut user).await?;
                        return Err(error.into());
                    }
                    Err(error) => return Err(error.into()),
                };
                user.command_id = Some(command_id);
                user.command_sent_at = Some(now);
                ClaimStep::ContainerStarting
            }
            ClaimStep::ContainerStarting => {
                let command_id = user.command_id.clone().unwrap_or_default();
                let sent = user.command_sent_at.unwrap_or(now);
                if !self
                    .container_started(&command_id, &instance, sent, now)
                    .await?
                {
                    return Ok(StepResult::Waiting);
                }
                ClaimStep::ContainerStarted
            }
            ClaimStep::ContainerStarted => {
                let name = target_group_name(&user.route);
                let mut group_tags = self.resource_tags(&user.user_id);
                group_tags.insert(tags::INSTANCE_ID.into(), instance.0.clone());
                let arn = cloud
                    .create_target_group(
                        &name,
                        config.container_port,
                        &config.health_check,
                        &group_tags,
                    )
                    .await?;
                // (A crash before this step is saved loses the ARN; teardown then finds the group
                // by its deterministic name.)
                user.target_group_arn = Some(arn.clone());
                cloud
                    .register_target(&arn, &instance, config.container_port)
                    .await?;
                ClaimStep::TargetGroupReady
            }
            ClaimStep::TargetGroupReady => return self.route_user(user, &instance, now).await,
            ClaimStep::Routed => return self.confirm_routable(user, &instance, now).await,
        };
        user.claim_step = Some(next);
        user.updated_at = now;
        if !inner.store.update_user(&mut user).await? {
            // The row changed under us (a DELETE): the next pass acts on its new state.
            return Ok(StepResult::Waiting);
        }
        self.journal(
            now,
            &format!("claim.{}", next.as_str()),
            Some(&user.user_id),
            Some(&instance),
            "claim step done",
        )
        .await?;
        Ok(StepResult::Done)
    }

    /// Tags `instance` for the user and binds the user's secret to it (its `InstanceArn` tag),
    /// the first step of a claim and of a move.
    async fn bind_to_instance(
        &self,
        user: &UserRecord,
        instance: &InstanceId,
    ) -> Result<(), StepError> {
        let cloud = &self.inner.cloud;
        let record = self.inner.store.get_instance(instance).await?;
        let arn = record.and_then(|r| r.arn).unwrap_or_default();
        let mut instance_tags = one_tag(tags::STATUS, InstanceStatus::Assigned.as_str());
        instance_tags.insert(tags::USER_ID.into(), user.user_id.to_string());
        let secret_arn = user.secret_arn.clone().unwrap_or_default();
        let secret_tags = one_tag(tags::INSTANCE_ARN, &arn);
        let (tagged, secret_tagged) = tokio::join!(
            cloud.tag_instance(instance, &instance_tags),
            cloud.tag_secret(&secret_arn, &secret_tags),
        );
        tagged?;
        secret_tagged?;
        Ok(())
    }

    /// Whether the start-container command succeeded: false while it is still running within
    /// the container timeout; an error (fatal) if it failed or ran out of time. Shared by claims
    /// and moves.
    async fn container_started(
        &self,
        command_id: &str,
        instance: &InstanceId,
        sent_at: Millis,
        now: Millis,
    ) -> Result<bool, StepError> {
        let timeout = self.inner.config.container_timeout;
        match self
            .inner
            .cloud
            .command_status(command_id, instance)
            .await?
        {
            CommandStatus::Success => Ok(true),
            CommandStatus::Pending if now - sent_at <= timeout.as_millis() as Millis => Ok(false),
            CommandStatus::Pending => Err(fatal(
                "StartContainer",
                "Timeout",
                format!("container did not start within {timeout:?}"),
            )),
            CommandStatus::Failed(output) => Err(fatal("StartContainer", "CommandFailed", output)),
        }
    }

    /// Whether the load balancer reports `instance` healthy in `group`: false while waiting
    /// (counted from `since`, up to the container timeout); an error (fatal) after that. Shared
    /// by a claim's last step and a move's switch.
    async fn target_healthy_in_time(
        &self,
        group: &str,
        instance: &InstanceId,
        since: Millis,
        now: Millis,
    ) -> Result<bool, StepError> {
        let config = &self.inner.config;
        if self
            .inner
            .cloud
            .target_healthy(group, instance, config.container_port)
            .await?
        {
            return Ok(true);
        }
        if now - since <= config.container_timeout.as_millis() as Millis {
            return Ok(false);
        }
        Err(fatal(
            "TargetHealth",
            "TargetUnhealthy",
            format!(
                "{instance} did not pass the load balancer's health checks within {:?}",
                config.container_timeout
            ),
        ))
    }

    /// The start-container command for the user on `instance`.
    async fn start_script(
        &self,
        user: &UserRecord,
        instance: &InstanceId,
    ) -> Result<String, StepError> {
        let config = &self.inner.config;
        let record = self.inner.store.get_instance(instance).await?;
        let host_ip = record.as_ref().and_then(|r| r.private_ip.clone());
        let secret_arn = user.secret_arn.clone().unwrap_or_default();
        Ok(commands::start_container_script(&ContainerSpec {
            user_id: user.user_id.as_str(),
            secret_arn: &secret_arn,
            image: &config.container_image,
            port: config.container_port,
            host_ip: host_ip.as_deref(),
            health_path: &config.health_check.path,
            health_timeout_seconds: (config.container_timeout.as_secs() as u32)
                .saturating_sub(30)
                .max(30),
            memory_mb: config.container_memory_mb,
            cpus: config.container_cpus,
            pids_limit: config.container_pids_limit,
        }))
    }

    /// The last claim step: a listener rule for `/{route}/*`, then the user is ready.
    async fn route_user(
        &self,
        mut user: UserRecord,
        instance: &InstanceId,
        now: Millis,
    ) -> StepOutcome {
        let inner = &self.inner;
        let cloud = &inner.cloud;
        if user.listener_arn.is_none() || user.rule_priority.is_none() {
            let listener = self.pick_listener().await?;
            let mut used: Vec<u32> = inner.store.used_priorities(&listener).await?;
            used.extend(
                cloud
                    .describe_rules(&listener)
                    .await?
                    .into_iter()
                    .filter_map(|r| r.priority),
            );
            user.listener_arn = Some(listener);
            user.rule_priority = Some(lowest_free_priority(&used));
            user.updated_at = now;
            match inner.store.update_user(&mut user).await {
                Ok(true) => {}
                Ok(false) => return Ok(StepResult::Waiting),
                // Another claim in this pass took the same priority first (the unique index
                // decides); pick again on the next pass.
                Err(StoreError::Conflict(why)) => {
                    tracing::debug!(user = %user.user_id, why, "rule priority taken meanwhile");
                    return Ok(StepResult::Waiting);
                }
                Err(error) => return Err(error.into()),
            }
        }
        let (Some(listener), Some(priority), Some(group)) = (
            user.listener_arn.clone(),
            user.rule_priority,
            user.target_group_arn.clone(),
        ) else {
            return Ok(StepResult::Waiting);
        };
        let path = route_path(&user.route);
        let mut rule_tags = self.resource_tags(&user.user_id);
        rule_tags.insert(tags::INSTANCE_ID.into(), instance.0.clone());
        let rule_arn = match cloud
            .create_rule(&listener, priority, &path, &group, &rule_tags)
            .await
        {
            Ok(arn) => arn,
            Err(error) if error.kind == CloudErrorKind::Conflict => {
                // PriorityInUse: someone else took it. If it is our own rule from before a
                // crash, adopt it; otherwise forget the priority and pick another next time.
                let ours = cloud
                    .describe_rules(&listener)
                    .await?
                    .into_iter()
                    .find(|r| r.priority == Some(priority) && r.path_patterns.contains(&path));
                match ours {
                    Some(rule) => rule.arn,
                    None => {
                        user.rule_priority = None;
                        user.updated_at = now;
                        inner.store.update_user(&mut user).await?;
                        return Ok(StepResult::Waiting);
                    }
                }
            }
            Err(error) => return Err(error.into()),
        };
        user.rule_arn = Some(rule_arn);
        user.claim_step = Some(ClaimStep::Routed);
        user.updated_at = now;
        if !inner.store.update_user(&mut user).await? {
            return Ok(StepResult::Waiting);
        }
        self.journal(
            now,
            "claim.routed",
            Some(&user.user_id),
            Some(instance),
            "claim step done",
        )
        .await?;
        Ok(StepResult::Done)
    }

    /// The claim's end: once the load balancer reports the instance healthy, traffic on the
    /// route reaches the container, and only then is the user `ready`.
    async fn confirm_routable(
        &self,
        mut user: UserRecord,
        instance: &InstanceId,
        now: Millis,
    ) -> StepOutcome {
        let inner = &self.inner;
        let Some(group) = user.target_group_arn.clone() else {
            return Ok(StepResult::Waiting);
        };
        if !self
            .target_healthy_in_time(&group, instance, user.updated_at, now)
            .await?
        {
            return Ok(StepResult::Waiting);
        }
        user.state = UserState::Ready;
        user.ready_at = Some(now);
        user.error = None;
        user.updated_at = now;
        if !inner.store.update_user(&mut user).await? {
            return Ok(StepResult::Waiting);
        }
        let seconds = (now - user.requested_at).max(0) as f64 / 1000.0;
        metrics::counter!("spotpool_claims_total", "outcome" => "ready").increment(1);
        metrics::histogram!("spotpool_claim_duration_seconds").record(seconds);
        self.journal(
            now,
            "claim.ready",
            Some(&user.user_id),
            Some(instance),
            &format!("ready in {seconds:.2}s"),
        )
        .await?;
        Ok(StepResult::Done)
    }

    /// The listener with the fewest users, so a comma list of listeners shards evenly.
    async fn pick_listener(&self) -> Result<String, StepError> {
        let loads: HashMap<String, i64> = self
            .inner
            .store
            .users_per_listener()
            .await?
            .into_iter()
            .collect();
        let listeners = &self.inner.config.listener_arns;
        let best = listeners
            .iter()
            .min_by_key(|l| loads.get(*l).copied().unwrap_or(0))
            .cloned();
        best.ok_or_else(|| {
            StepError::Cloud(CloudError::new(
                CloudErrorKind::Fatal,
                "Claim",
                "NoListener",
                "no listener configured",
            ))
        })
    }

    fn resource_tags(&self, user: &UserId) -> Tags {
        let mut out = one_tag(tags::POOL, &self.inner.config.pool);
        out.insert(tags::USER_ID.into(), user.to_string());
        out
    }

    // --- teardown --------------------------------------------------------------------------

    /// Undoes everything the user's row records, in reverse order of creation: rule, target
    /// group, secret tag (or the secret, on release), then the instance. Every call is
    /// idempotent, and a rollback or recovery is marked in the row before it starts, so a crash
    /// or error part-way resumes the same undo on the next pass instead of the claim.
    async fn teardown_user(&self, user_id: &UserId, requested: Teardown) -> Result<(), StepError> {
        let inner = &self.inner;
        let cloud = &inner.cloud;
        let Some(mut user) = inner.store.get_user(user_id).await? else {
            return Ok(());
        };
        let now = (inner.clock)();
        let mode = match (&requested, user.state, user.teardown.as_deref()) {
            (Teardown::Release, _, _) | (_, UserState::Deleting, _) => Teardown::Release,
            // An undo already under way keeps its kind (and its recorded cause).
            (_, _, Some("rollback")) => Teardown::Rollback {
                cause: user.error.clone().unwrap_or_default(),
            },
            (_, _, Some(_)) => Teardown::Recover,
            (mode, _, None) => mode.clone(),
        };
        let kind = match &mode {
            Teardown::Rollback { .. } => "rollback",
            Teardown::Recover => "recover",
            Teardown::Release => "release",
        };
        if mode != Teardown::Release && user.teardown.is_none() {
            user.teardown = Some(kind.to_string());
            if let Teardown::Rollback { cause } = &mode {
                user.error = Some(cause.clone());
            }
            user.updated_at = now;
            if !inner.store.update_user(&mut user).await? {
                return Ok(());
            }
        }

        // 1. Listener rules: the recorded one, plus any rule on the listener for the user's path
        //    (one whose ARN a crash or a timed-out CreateRule never let us record).
        let path = route_path(&user.route);
        let mut rules: Vec<String> = user.rule_arn.iter().cloned().collect();
        if let Some(listener) = &user.listener_arn {
            for rule in cloud.describe_rules(listener).await? {
                if rule.path_patterns.contains(&path) && !rules.contains(&rule.arn) {
                    rules.push(rule.arn);
                }
            }
        }
        for arn in rules {
            cloud.delete_rule(&arn).await?;
        }

        // 2. The target group, by ARN or by its deterministic name.
        let group = match &user.target_group_arn {
            Some(arn) => Some(arn.clone()),
            None => {
                cloud
                    .find_target_group(&target_group_name(&user.route))
                    .await?
            }
        };
        if let Some(arn) = group {
            cloud.delete_target_group(&arn).await?;
        }

        // 3. The secret: deleted on release; otherwise only unbound from the old instance. The
        //    unbinding is best-effort: the instance is about to be terminated or re-probed, and
        //    the next claim overwrites the tag anyway.
        if let Some(secret) = &user.secret_arn {
            match mode {
                Teardown::Release => cloud.delete_secret(secret).await?,
                _ => {
                    if let Err(error) = cloud.untag_secret(secret, &[tags::INSTANCE_ARN]).await {
                        tracing::warn!(user = %user_id, error = %error, "could not remove the secret's InstanceArn tag");
                    }
                }
            }
        }

        // 4. The instance: if no command was ever sent to it, it goes back for a fresh readiness
        //    probe (so a broken instance is not handed straight to the next user); otherwise a
        //    container may have run with this user's secrets, and it is terminated.
        if let Some(instance) = user.instance_id.clone() {
            let dirty = user.claim_step >= Some(ClaimStep::ContainerStarting)
                || user.command_sent_at.is_some();
            let record = inner.store.get_instance(&instance).await?;
            let reusable = !dirty
                && mode != Teardown::Recover
                && record.as_ref().is_some_and(|r| {
                    matches!(
                        r.status,
                        InstanceStatus::Assigned | InstanceStatus::Initializing
                    )
                });
            if reusable {
                cloud.untag_instance(&instance, &[tags::USER_ID]).await?;
                cloud
                    .tag_instance(
                        &instance,
                        &one_tag(tags::STATUS, InstanceStatus::Initializing.as_str()),
                    )
                    .await?;
                inner
                    .store
                    .transition_instance(
                        &instance,
                        InstanceStatus::Assigned,
                        InstanceStatus::Initializing,
                        now,
                    )
                    .await?;
                self.journal(
                    now,
                    &format!("{kind}.instance_returned"),
                    Some(user_id),
                    Some(&instance),
                    "returned to the pool for a fresh probe",
                )
                .await?;
            } else {
                if let Some(mut record) = record
                    && record.status != InstanceStatus::Terminating
                {
                    record.status = InstanceStatus::Terminating;
                    record.status_since = now;
                    inner.store.put_instance(&record).await?;
                }
                self.terminate_in_cloud(&instance).await?;
                self.journal(
                    now,
                    &format!("{kind}.instance_terminated"),
                    Some(user_id),
                    Some(&instance),
                    "terminated",
                )
                .await?;
            }
        }

        // 4b. A move under way: its new instance goes too.
        if let Some(target) = user.move_instance_id.clone() {
            self.retire_move_target(&user, &target, now).await?;
        }

        // 5. The row.
        if mode == Teardown::Release {
            if inner.store.delete_user(&user).await? {
                metrics::counter!("spotpool_releases_total").increment(1);
                self.journal(
                    now,
                    "release.done",
                    Some(user_id),
                    None,
                    "everything removed",
                )
                .await?;
            }
            return Ok(());
        }
        user.instance_id = None;
        user.claim_step = None;
        user.command_id = None;
        user.command_sent_at = None;
        user.target_group_arn = None;
        user.listener_arn = None;
        user.rule_priority = None;
        user.rule_arn = None;
        user.claimed_at = None;
        user.ready_at = None;
        user.teardown = None;
        user.move_instance_id = None;
        user.move_step = None;
        user.move_command_id = None;
        user.move_command_sent_at = None;
        user.move_reason = None;
        user.move_started_at = None;
        user.updated_at = now;
        let message = match mode {
            Teardown::Rollback { cause } => {
                user.attempts += 1;
                user.error = Some(cause.clone());
                if user.attempts >= inner.config.claim_attempts {
                    user.state = UserState::Failed;
                    metrics::counter!("spotpool_claims_total", "outcome" => "failed").increment(1);
                    format!("failed after {} attempts: {cause}", user.attempts)
                } else {
                    user.state = UserState::Queued;
                    metrics::counter!("spotpool_claims_total", "outcome" => "retried").increment(1);
                    format!("attempt {} rolled back, retrying: {cause}", user.attempts)
                }
            }
            Teardown::Recover => {
                // The user keeps their place in the queue (requested_at is unchanged).
                user.state = UserState::Queued;
                metrics::counter!("spotpool_recoveries_total").increment(1);
                "instance lost; queued first in line".to_string()
            }
            Teardown::Release => unreachable!("handled above"),
        };
        if inner.store.update_user(&mut user).await? {
            let kind = if user.state == UserState::Failed {
                "claim.failed"
            } else {
                "claim.requeued"
            };
            self.journal(now, kind, Some(user_id), None, &message)
                .await?;
        }
        Ok(())
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

/// The lowest listener priority (1-50000) not in `used`.
fn lowest_free_priority(used: &[u32]) -> u32 {
    let taken: std::collections::HashSet<u32> = used.iter().copied().collect();
    (1..=50_000).find(|p| !taken.contains(p)).unwrap_or(50_000)
}

/// Delay after `failures` consecutive failed passes: 1 s doubling, capped at 60 s.
/// Applies on-call's tier overrides to configured tiers; returns the paused tiers. Overrides of
/// tiers no longer configured are ignored.
pub fn apply_overrides(tiers: &mut [plan::TierPolicy], overrides: &[TierOverride]) -> Vec<String> {
    let mut paused = Vec::new();
    for o in overrides {
        let Some(tier) = tiers.iter_mut().find(|t| t.name == o.tier) else {
            continue;
        };
        if let Some(spare_count) = o.spare_count {
            tier.spare_count = spare_count;
        }
        if let Some(max_instances) = o.max_instances {
            tier.max_instances = max_instances;
        }
        if o.paused {
            paused.push(o.tier.clone());
        }
    }
    paused
}

/// The delay after the `streak`-th consecutive throttled pass: the poll interval doubled per
/// pass (at least 1 s), at most a minute.
pub fn throttle_backoff(poll_interval: Duration, streak: u32) -> Duration {
    poll_interval
        .max(Duration::from_secs(1))
        .saturating_mul(1 << (streak.clamp(1, 7) - 1))
        .min(Duration::from_secs(60))
}

pub fn error_policy(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

fn action_kind(action: &Action) -> &'static str {
    match action {
        Action::Launch { .. } => "launch",
        Action::SendProbe { .. } => "send_probe",
        Action::CheckProbe { .. } => "check_probe",
        Action::Terminate { .. } => "terminate",
        Action::Forget { .. } => "forget",
        Action::Assign { .. } => "assign",
        Action::AdvanceClaim { .. } => "advance_claim",
        Action::Release { .. } => "release",
        Action::Recover { .. } => "recover",
        Action::BeginMove { .. } => "begin_move",
        Action::AssignMove { .. } => "assign_move",
        Action::AdvanceMove { .. } => "advance_move",
    }
}

/// Exports the pool and user gauges; returns the users whose route has no live instance.
fn export_gauges(ledger: &[InstanceRecord], users: &[UserRecord], policy: &Policy) -> Vec<UserId> {
    for tier in &policy.tiers {
        for status in InstanceStatus::ALL {
            let count = ledger
                .iter()
                .filter(|r| r.tier == tier.name && r.status == status)
                .count();
            metrics::gauge!("spotpool_pool_instances", "tier" => tier.name.clone(), "status" => status.as_str())
                .set(count as f64);
        }
    }
    for state in UserState::ALL {
        let count = users.iter().filter(|u| u.state == state).count();
        metrics::gauge!("spotpool_users", "state" => state.as_str()).set(count as f64);
    }
    // Users whose route has no live instance behind it right now: ready or migrating, and the
    // instance they are on is missing from the last listing (or gone from the ledger).
    let unserved: Vec<UserId> = users
        .iter()
        .filter(|u| matches!(u.state, UserState::Ready | UserState::Migrating))
        .filter(|u| {
            u.instance_id.as_ref().is_some_and(|id| {
                ledger
                    .iter()
                    .find(|r| &r.instance_id == id)
                    .is_none_or(|r| r.missed_observations > 0)
            })
        })
        .map(|u| u.user_id.clone())
        .collect();
    metrics::gauge!("spotpool_users_unserved").set(unserved.len() as f64);
    unserved
}
