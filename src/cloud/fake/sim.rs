//! Simulated mode of the fake cloud: a [`Profile`] played out on tokio's clock.
//!
//! Owns: the SDK's retry loop around every logical call, the account's server-side token
//! buckets, the draws of injected faults, the timelines of effects (when an instance runs, when
//! its agent is online, when it is gone) and the counters a report prints ([`SimStats`]).
//! Must not: touch the fake's resources (instances, rules, ...); `cloud_impl.rs` applies a call's
//! effect once [`Sim::call`] let an attempt through.
//!
//! How a logical call plays out (`Sim::call`):
//! 1. An attempt reaches AWS. An injected throttle rejects it outright (no token taken).
//!    Otherwise it takes its tokens (`limit::tokens_for`) from the account's buckets; a bucket
//!    short of tokens throttles it (a *quota rejection*, counted per class). Then an injected 5xx
//!    may fail it (the tokens are spent).
//! 2. The answer arrives after the operation's latency (`tokio::time::sleep`).
//! 3. A failed attempt is retried after the standard mode's jittered backoff while attempts and
//!    the call timeout last; the logical call fails with the last attempt's error otherwise.
//!    Each retry is recorded in the fake's `RetryMeter`, as `aws.rs` records the SDK's, so the
//!    client-side limiter charges it.
//!
//! Time: tokio's clock (pause it in tests). The fake's "now" in epoch milliseconds is
//! `epoch + elapsed since the fake was built`; give the daemon the same clock
//! ([`super::FakeCloud::now`]) so its timestamps and the fake's agree.

use super::super::limit::{QuotaClass, RetryMeter, tokens_for};
use super::super::profile::{Latency, Profile, SimRng};
use super::super::{CloudError, CloudErrorKind, CloudResult};
use crate::model::Millis;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// What a simulated run did, for its report. Every count is of attempts reaching AWS unless it
/// says calls (what the daemon asked for).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimStats {
    /// Logical calls the daemon made.
    pub calls: u64,
    /// Attempts that reached AWS (calls plus retries).
    pub attempts: u64,
    /// Retries the simulated SDK made.
    pub retries: u64,
    /// Injected 5xx answers.
    pub injected_server_errors: u64,
    /// Injected throttles (beyond the account's buckets).
    pub injected_throttles: u64,
    /// Attempts throttled because the account's bucket was short: our own rate.
    pub quota_rejections: BTreeMap<QuotaClass, u64>,
    /// The lowest level each bucket reached. A rejected attempt records the level it would
    /// have left (below zero), so `min >= 0` for every class means no quota rejection.
    pub min_bucket_levels: BTreeMap<QuotaClass, f64>,
    /// Logical calls that failed after every attempt, by the error kind's name.
    pub failed_calls: BTreeMap<&'static str, u64>,
    /// Logical calls cut by the call timeout.
    pub timeouts: u64,
    /// Spot launches refused for capacity.
    pub capacity_errors: u64,
}

impl SimStats {
    pub fn quota_rejections_total(&self) -> u64 {
        self.quota_rejections.values().sum()
    }
}

/// One server-side token bucket.
#[derive(Debug, Clone)]
struct ServerBucket {
    capacity: f64,
    refill_per_second: f64,
    level: f64,
    updated: Duration,
}

impl ServerBucket {
    fn refill(&mut self, at: Duration) {
        let elapsed = at.saturating_sub(self.updated).as_secs_f64();
        self.level = (self.level + elapsed * self.refill_per_second).min(self.capacity);
        self.updated = at;
    }
}

/// When an instance's effects complete (epoch milliseconds on the fake's clock).
#[derive(Debug, Clone, Default)]
pub(super) struct Timeline {
    pub running_at: Millis,
    pub agent_online_at: Millis,
    pub terminated_at: Option<Millis>,
}

/// A fake's simulation: the profile, the seed, the clock's origin, and the mutable draws and
/// counters (under their own lock, always taken after the fake's state lock, never before).
#[derive(Debug)]
pub(super) struct Sim {
    pub profile: Profile,
    pub seed: u64,
    start: Instant,
    epoch: Millis,
    state: Mutex<SimState>,
    /// Every retry, for the client-side limiter (as `aws.rs` reports the SDK's).
    pub retries: Arc<RetryMeter>,
}

#[derive(Debug)]
struct SimState {
    rng: SimRng,
    buckets: BTreeMap<QuotaClass, ServerBucket>,
    stats: SimStats,
}

impl Sim {
    pub fn new(profile: Profile, seed: u64, epoch: Millis) -> Sim {
        let buckets = profile
            .quotas
            .iter()
            .map(|(class, bucket)| {
                let capacity = f64::from(bucket.capacity);
                (
                    *class,
                    ServerBucket {
                        capacity,
                        refill_per_second: bucket.refill_per_second,
                        level: capacity,
                        updated: Duration::ZERO,
                    },
                )
            })
            .collect();
        let stats = SimStats {
            min_bucket_levels: profile
                .quotas
                .iter()
                .map(|(class, bucket)| (*class, f64::from(bucket.capacity)))
                .collect(),
            ..SimStats::default()
        };
        Sim {
            profile,
            seed,
            start: Instant::now(),
            epoch,
            state: Mutex::new(SimState {
                rng: SimRng::new(seed),
                buckets,
                stats,
            }),
            retries: Arc::new(RetryMeter::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Simulated time since the fake was built.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The fake's clock in epoch milliseconds.
    pub fn now(&self) -> Millis {
        self.epoch + self.elapsed().as_millis() as Millis
    }

    /// `now` plus a draw of `latency`, in epoch milliseconds.
    pub fn after(&self, now: Millis, latency: Latency) -> Millis {
        now + latency.sample(&mut self.lock().rng).as_millis() as Millis
    }

    pub fn stats(&self) -> SimStats {
        self.lock().stats.clone()
    }

    pub fn count_capacity_error(&self) {
        self.lock().stats.capacity_errors += 1;
    }

    /// Plays out one logical call of `operation` (launching `count` instances for RunInstances):
    /// attempts, latencies, backoffs. `Ok` means an attempt got through and its answer has
    /// arrived: the caller applies the effect now.
    pub async fn call(&self, operation: &'static str, count: u32) -> CloudResult<()> {
        let retry = &self.profile.retry;
        let budget = retry.attempts_for(operation);
        let started = Instant::now();
        self.lock().stats.calls += 1;
        let mut attempt = 1;
        loop {
            let (latency, outcome) =
                self.lock()
                    .attempt(&self.profile, operation, count, self.elapsed());
            let left = retry
                .operation_timeout
                .map(|timeout| timeout.saturating_sub(started.elapsed()));
            if let Some(left) = left
                && latency >= left
            {
                tokio::time::sleep(left).await;
                return Err(self.timed_out(operation));
            }
            tokio::time::sleep(latency).await;
            let error = match outcome {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            if attempt >= budget {
                *self
                    .lock()
                    .stats
                    .failed_calls
                    .entry(error.kind.as_str())
                    .or_default() += 1;
                return Err(error);
            }
            let backoff = retry.backoff(operation, attempt, &mut self.lock().rng);
            if let Some(timeout) = retry.operation_timeout {
                let left = timeout.saturating_sub(started.elapsed());
                if backoff >= left {
                    tokio::time::sleep(left).await;
                    return Err(self.timed_out(operation));
                }
            }
            self.lock().stats.retries += 1;
            self.retries.record(operation);
            tokio::time::sleep(backoff).await;
            attempt += 1;
        }
    }

    fn timed_out(&self, operation: &'static str) -> CloudError {
        let mut state = self.lock();
        state.stats.timeouts += 1;
        *state.stats.failed_calls.entry("timeout").or_default() += 1;
        CloudError::new(
            CloudErrorKind::Transient,
            operation,
            "",
            format!(
                "operation timed out after {:?} (simulated SDK call timeout)",
                self.profile.retry.operation_timeout.unwrap_or_default()
            ),
        )
    }
}

impl SimState {
    /// One attempt reaching AWS at `at`: the injected throttle, the account's buckets, the
    /// injected 5xx. Returns the time to its answer and its outcome.
    fn attempt(
        &mut self,
        profile: &Profile,
        operation: &'static str,
        count: u32,
        at: Duration,
    ) -> (Duration, CloudResult<()>) {
        self.stats.attempts += 1;
        let latency = profile.api_latency(operation).sample(&mut self.rng);
        let faults = profile.faults(operation);
        let roll = self.rng.next_f64();
        if roll < faults.throttle {
            self.stats.injected_throttles += 1;
            return (
                latency,
                Err(throttled(operation, "rate exceeded (injected)")),
            );
        }
        let draws = tokens_for(operation, count);
        let mut short = false;
        for (class, tokens) in &draws {
            let Some(bucket) = self.buckets.get_mut(class) else {
                continue;
            };
            bucket.refill(at);
            let tokens = f64::from(*tokens).min(bucket.capacity);
            if bucket.level < tokens {
                short = true;
                *self.stats.quota_rejections.entry(*class).or_default() += 1;
                record_min(&mut self.stats, *class, bucket.level - tokens);
            }
        }
        if short {
            return (
                latency,
                Err(throttled(operation, "rate exceeded (account quota)")),
            );
        }
        for (class, tokens) in &draws {
            if let Some(bucket) = self.buckets.get_mut(class) {
                bucket.level -= f64::from(*tokens).min(bucket.capacity);
                let level = bucket.level;
                record_min(&mut self.stats, *class, level);
            }
        }
        if roll < faults.throttle + faults.server_error {
            self.stats.injected_server_errors += 1;
            return (
                latency,
                Err(CloudError::new(
                    CloudErrorKind::Transient,
                    operation,
                    server_error_code(operation),
                    "we encountered an internal error; please try again (injected)",
                )),
            );
        }
        (latency, Ok(()))
    }
}

fn record_min(stats: &mut SimStats, class: QuotaClass, level: f64) {
    let min = stats.min_bucket_levels.entry(class).or_insert(level);
    if level < *min {
        *min = level;
    }
}

/// The throttling error code each service answers with.
fn throttled(operation: &'static str, message: &str) -> CloudError {
    let code = match QuotaClass::of_operation(operation) {
        QuotaClass::Ec2Describe
        | QuotaClass::Ec2Mutate
        | QuotaClass::Ec2RunCalls
        | QuotaClass::Ec2RunInstances => "RequestLimitExceeded",
        QuotaClass::ElbMutate | QuotaClass::ElbRegister | QuotaClass::ElbDescribe => "Throttling",
        QuotaClass::SsmSend
        | QuotaClass::SsmRead
        | QuotaClass::SecretsWrite
        | QuotaClass::SecretsRead => "ThrottlingException",
        QuotaClass::CloudWatchRead => "Throttling",
    };
    CloudError::new(CloudErrorKind::Throttled, operation, code, message)
}

fn server_error_code(operation: &str) -> &'static str {
    match QuotaClass::of_operation(operation) {
        QuotaClass::Ec2Describe
        | QuotaClass::Ec2Mutate
        | QuotaClass::Ec2RunCalls
        | QuotaClass::Ec2RunInstances => "InternalError",
        _ => "InternalFailure",
    }
}
