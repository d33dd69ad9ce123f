//! 500 claims and releases against the simulated fake cloud, with AWS's faults (issue 4).
//!
//! The real store (in-memory SQLite), API router and reconciler loop (`run_until_stopped`) run
//! over `FakeCloud::simulated` behind the client-side rate limiter (`Limited` with the default
//! buckets, as `main.rs` wires it), on tokio's paused clock. Every number is simulated time.
//!
//! **Profile.** `aws-profile.md` (latencies, effects, the account's quota buckets) with 10% 5xx
//! and 10% throttling on every attempt of every operation, the SDK's standard retries as the
//! daemon configures them (4 attempts; 8 with backoffs capped at 4 s for the API's secret
//! writes; 30 s per call), and no spot capacity for t3.small in either subnet: the tier lists t3.small then t3a.small, so launches
//! fall back to t3a.small, and every time the unavailable-offerings TTL (3 min) runs out a launch
//! tries t3.small again and gets a capacity error.
//!
//! **Workload.** The pool first fills to its 40 spares (about the arrival rate times the ~65 s
//! mean refill of a launch and its probe). Then 525 users arrive, 0.4 per second on average
//! (uniform gaps of 0-5 s). The account's ELB quota sets that rate, not spotpool: a claim and its
//! release take 4 ELB mutations (CreateTargetGroup, CreateRule, DeleteRule, DeleteTargetGroup),
//! the account refills 3 per second, and at these fault rates a call costs 1.25 attempts, so
//! 0.6 users per second is the most any churn can sustain on the whole account and 0.48 on the
//! daemon's 80% share; 1 per second would queue without bound. 500 users claim: PUT with secrets
//! (every 5th PUTs again with new secrets, a rotation, every 7th repeats an empty PUT), poll GET
//! every 2 s until `ready`, stay 30-150 s, DELETE and poll until 404. The other 25 (every 21st
//! arrival) DELETE 1-20 s after their PUT, before they are served. A 429 is retried after its
//! `Retry-After`.
//!
//! **Deadline: 5 minutes from the first PUT to `ready`.** A user who finds no spare waits for a
//! cold launch. At the profile's p99 on every stage that is 2.5 s (RunInstances), 60 s
//! (pending to running), 90 s (agent online), about 15 s for the probe (pickup 3 s, run 2 s, a
//! 5 s probe retry, a pass) and about 18 s for the claim path (10 calls under 1 s each, command
//! pickup 3 s, container start 5 s): about 185 s. Five minutes leaves about two minutes for what
//! the faults add: jittered backoffs (up to 1, 2 and 4 s per retry), a launch lost to a capacity
//! error before the fallback, and passes that wait for their slowest action.
//!
//! **Simulated time and SQLite.** tokio's paused clock jumps to the next timer whenever the
//! runtime is idle, and a task awaiting SQLite looks idle: sqlx runs it on its own worker thread.
//! Left alone, every database call could let simulated time jump to the next timer (the next poll,
//! the next arrival: up to seconds), inflating every measured duration, and even run into sqlx's
//! own acquire timeout (which is why the store is opened before the clock is paused). The test
//! therefore runs a time keeper ([`hold_time_while_the_store_works`]): while the store has a
//! statement or transaction in flight (`Store::busy`: a connection is checked out) it keeps the
//! runtime busy with `yield_now`, which stops the clock; otherwise it sleeps 1 ms, which lets the
//! clock run but caps any jump at 1 ms. So a database call costs no simulated time, except that
//! one starting while the keeper sleeps may be charged up to 1 ms. The claim path makes about 30
//! of them: at most 30 ms of error on durations of seconds. Everything else (cloud latencies,
//! backoffs, the reconciler's intervals, the rate limiter's waits) is a timer on the paused clock,
//! exact to tokio's 1 ms resolution. Times are read from the fake's clock, which is tokio's.
//!
//! The run is seeded (`SEED`, or `SPOTPOOL_FAULTS_SEED`): the profile's draws and the workload
//! come from splitmix64. It is not bit-for-bit reproducible: the daemon's routes are random and
//! its hash maps iterate in a per-process order, which changes the order in which concurrent
//! calls draw.

use crate::world::{API_TOKEN, World, reconciler_config};
use axum::http::{HeaderMap, StatusCode, header};
use spotpool::cloud::fake::FakeCloud;
use spotpool::cloud::limit::{Limited, RateLimits};
use spotpool::cloud::profile::{FaultRates, Profile, SimRng};
use spotpool::cloud::{Cloud, Lifecycle, tags};
use spotpool::model::{InstanceStatus, Millis, UserId};
use spotpool::store::Store;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The run's seed; `SPOTPOOL_FAULTS_SEED` overrides it (docs/benchmarks.md).
const SEED: u64 = 20_261_124;

fn seed() -> u64 {
    std::env::var("SPOTPOOL_FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED)
}
/// Users who wait for their instance.
const CLAIMS: usize = 500;
/// Every this many arrivals, one more user gives up before being served.
const ABANDON_EVERY: usize = 21;
const SPARES: u32 = 40;
const MAX_INSTANCES: u32 = 200;
const DEADLINE: Duration = Duration::from_secs(300);
/// Arrivals are uniform gaps of 0 to this: 0.4 users per second on average (see the module docs).
const MAX_ARRIVAL_GAP: Duration = Duration::from_secs(5);
/// The share of claims that must be ready within the deadline.
const WITHIN_DEADLINE: f64 = 0.995;
/// The longest jump of the clock the time keeper allows.
const TICK: Duration = Duration::from_millis(1);
/// How often a user polls GET. Time to ready is read from the row's `ready_at`, so the poll
/// interval does not round it.
const POLL: Duration = Duration::from_secs(2);
/// A user stops waiting for ready (or for 404 after DELETE) after this long.
const GIVE_UP: Duration = Duration::from_secs(1_200);

/// Keeps tokio's paused clock still while the store works (see the module docs).
pub(crate) async fn hold_time_while_the_store_works(store: Store) {
    let mut busy_since: Option<std::time::Instant> = None;
    loop {
        if store.busy() {
            let since = *busy_since.get_or_insert_with(std::time::Instant::now);
            assert!(
                since.elapsed() < Duration::from_secs(60),
                "the store stayed busy for a minute of real time: a connection held across a \
                 simulated sleep would stop the clock for good"
            );
            tokio::task::yield_now().await;
        } else {
            busy_since = None;
            tokio::time::sleep(TICK).await;
        }
    }
}

/// The API as the web backend uses it, counting every answer by status.
pub(crate) struct Client {
    pub(crate) world: Arc<World>,
    pub(crate) statuses: Mutex<BTreeMap<u16, u64>>,
}

impl Client {
    async fn send(&self, method: &str, user: &str, body: &str) -> (StatusCode, serde_json::Value) {
        let (status, headers, doc) = self
            .world
            .request_with_headers(
                method,
                &format!("/v1/users/{user}/instance"),
                Some(API_TOKEN),
                body,
            )
            .await;
        *self
            .statuses
            .lock()
            .unwrap()
            .entry(status.as_u16())
            .or_default() += 1;
        if status == StatusCode::TOO_MANY_REQUESTS {
            tokio::time::sleep(retry_after(&headers)).await;
        } else if status.is_server_error() {
            // Counted (the test fails on it); a client would retry after a while.
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        (status, doc)
    }

    /// PUT until it is accepted (a 429 waits for its Retry-After inside `send`).
    pub(crate) async fn put(&self, user: &str, body: &str) -> serde_json::Value {
        loop {
            let (status, doc) = self.send("PUT", user, body).await;
            match status.as_u16() {
                200 | 202 => return doc,
                429 | 500..=599 => continue,
                _ => panic!("PUT {user}: {status} {doc}"),
            }
        }
    }

    /// DELETE, then GET until 404. Returns how long it took, None if it never finished.
    async fn release(&self, user: &str) -> Option<Duration> {
        let started = tokio::time::Instant::now();
        loop {
            let (status, doc) = self.send("DELETE", user, "").await;
            match status.as_u16() {
                202 => break,
                500..=599 => continue,
                _ => panic!("DELETE {user}: {status} {doc}"),
            }
        }
        while started.elapsed() < GIVE_UP {
            tokio::time::sleep(POLL).await;
            let (status, doc) = self.send("GET", user, "").await;
            match status.as_u16() {
                404 => return Some(started.elapsed()),
                200 => assert_eq!(doc["state"], "deleting", "{user}: {doc}"),
                _ => {}
            }
        }
        None
    }
}

fn retry_after(headers: &HeaderMap) -> Duration {
    let seconds = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a 429 carries Retry-After in seconds");
    Duration::from_secs(seconds)
}

/// What one user does, drawn before it arrives.
#[derive(Debug, Clone)]
struct Plan {
    user: String,
    /// Gives up this long after the PUT, before being served.
    abandon_after: Option<Duration>,
    /// A second PUT this long after the first: with new secrets (a rotation) or empty.
    repeat: Option<(Duration, &'static str)>,
    stay: Duration,
}

#[derive(Debug)]
struct UserReport {
    plan: Plan,
    /// First PUT to `ready`, and to routable (rule active and target healthy).
    ready_in: Option<Duration>,
    routable_in: Option<Duration>,
    failed: Option<String>,
    /// DELETE to 404.
    released_in: Option<Duration>,
}

async fn user(client: Arc<Client>, plan: Plan) -> UserReport {
    let world = client.world.clone();
    let name = plan.user.clone();
    let secrets = format!(r#"{{"secrets":{{"OPENAI_API_KEY":"sk-{name}-v1"}}}}"#);
    let put_at = world.cloud.now();
    let started = tokio::time::Instant::now();
    let doc = client.put(&name, &secrets).await;
    let route = doc["route"].as_str().expect("route").to_string();
    let mut report = UserReport {
        plan: plan.clone(),
        ready_in: None,
        routable_in: None,
        failed: None,
        released_in: None,
    };
    if let Some(after) = plan.abandon_after {
        tokio::time::sleep(after).await;
        report.released_in = client.release(&name).await;
        return report;
    }
    let mut repeat = plan.repeat;
    while started.elapsed() < GIVE_UP {
        if let Some((after, body)) = repeat
            && started.elapsed() >= after
        {
            let body = body.replace("{name}", &name);
            let again = client.put(&name, &body).await;
            assert_eq!(
                again["route"], doc["route"],
                "{name}: a repeat is the same claim"
            );
            repeat = None;
        }
        tokio::time::sleep(POLL).await;
        let (status, doc) = client.send("GET", &name, "").await;
        assert_eq!(status, StatusCode::OK, "GET {name}: {doc}");
        match doc["state"].as_str() {
            Some("ready") => {
                let id = UserId::parse(&name).unwrap();
                let row = world.store.get_user(&id).await.unwrap().expect("user row");
                let ready_at = row.ready_at.expect("a ready user has ready_at");
                report.ready_in = Some(millis(ready_at - put_at));
                report.routable_in = world
                    .cloud
                    .routable_at(&format!("/{route}/*"))
                    .map(|at| millis(at - put_at));
                break;
            }
            Some("failed") => {
                report.failed = Some(doc["error"].to_string());
                break;
            }
            _ => {}
        }
    }
    if let Some((after, body)) = repeat {
        tokio::time::sleep_until(started + after).await;
        client.put(&name, &body.replace("{name}", &name)).await;
    }
    tokio::time::sleep(plan.stay).await;
    report.released_in = client.release(&name).await;
    report
}

fn millis(ms: Millis) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

/// Samples the invariants while the run goes on: no instance held by two users in the store,
/// no user with two live instances tagged assigned to it in the cloud.
async fn watch_invariants(world: Arc<World>, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut violations = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut held = HashSet::new();
        for user in world.store.list_users().await.unwrap() {
            if let Some(instance) = user.instance_id
                && !held.insert(instance.clone())
            {
                violations.push(format!("{instance} held by two users in the store"));
            }
        }
        let mut per_user: HashMap<String, usize> = HashMap::new();
        for instance in world.cloud.live_instances() {
            if instance.tags.get(tags::STATUS).map(String::as_str) == Some("assigned")
                && let Some(user) = instance.tags.get(tags::USER_ID)
            {
                *per_user.entry(user.clone()).or_default() += 1;
            }
        }
        for (user, count) in per_user {
            if count > 1 {
                violations.push(format!("{user} has {count} live assigned instances"));
            }
        }
    }
    violations
}

/// The q-quantile (nearest rank) of sorted durations, in seconds.
pub(crate) fn quantile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64()
}

pub(crate) fn distribution(durations: &[Duration]) -> String {
    let mut sorted = durations.to_vec();
    sorted.sort();
    format!(
        "p50 {:.1} s, p90 {:.1} s, p99 {:.1} s, max {:.1} s (n = {})",
        quantile(&sorted, 0.50),
        quantile(&sorted, 0.90),
        quantile(&sorted, 0.99),
        quantile(&sorted, 1.0),
        sorted.len()
    )
}

fn profile() -> Profile {
    Profile::aws()
        .named("aws-profile.md, 10% 5xx + 10% throttling, no spot t3.small")
        .with_faults(FaultRates {
            server_error: 0.10,
            throttle: 0.10,
        })
        .with_capacity_error("t3.small", "subnet-a")
        .with_capacity_error("t3.small", "subnet-b")
}

fn plans() -> Vec<(Duration, Plan)> {
    let mut rng = SimRng::new(seed() ^ 0x5eed_5eed);
    let total = CLAIMS + CLAIMS / (ABANDON_EVERY - 1);
    let mut plans = Vec::new();
    for n in 0..total {
        let gap = rng.between(Duration::ZERO, MAX_ARRIVAL_GAP);
        let abandon_after = ((n + 1) % ABANDON_EVERY == 0)
            .then(|| rng.between(Duration::from_secs(1), Duration::from_secs(20)));
        let repeat_after = rng.between(Duration::from_secs(1), Duration::from_secs(15));
        let repeat = if n % 5 == 0 {
            Some((
                repeat_after,
                r#"{"secrets":{"OPENAI_API_KEY":"sk-{name}-v2"}}"#,
            ))
        } else if n % 7 == 0 {
            Some((repeat_after, "{}"))
        } else {
            None
        };
        let stay = rng.between(Duration::from_secs(30), Duration::from_secs(150));
        plans.push((
            gap,
            Plan {
                user: format!("user-{n:04}"),
                abandon_after,
                repeat,
                stay,
            },
        ));
    }
    assert_eq!(
        plans
            .iter()
            .filter(|(_, p)| p.abandon_after.is_none())
            .count(),
        CLAIMS
    );
    plans
}

#[tokio::test]
async fn five_hundred_claims_and_releases_under_faults_are_ready_in_time_without_leaks_or_5xx() {
    let wall = std::time::Instant::now();
    // The store first, on the running clock (see `World::simulated`), then simulated time.
    let store = Store::open("sqlite::memory:").await.unwrap();
    tokio::time::pause();
    let fake = Arc::new(FakeCloud::simulated("spotpool", profile(), seed()));
    let limited = Arc::new(Limited::new(fake.clone(), &RateLimits::default()));
    let mut config = reconciler_config(SPARES, MAX_INSTANCES);
    // In the order written: t3.small first, whose capacity errors the test counts on (the
    // profile prices t3a.small lower, which `placement = "cheapest"` would launch instead).
    config.tiers.update(|t| {
        t[0].instance_types = vec!["t3.small".into(), "t3a.small".into()];
        t[0].placement = spotpool::plan::Placement::Ordered;
    });
    // As `main.rs` sets it: the container timeout plus two minutes.
    config.claim_step_deadline = config.container_timeout + Duration::from_secs(120);
    let dyn_limited: Arc<dyn Cloud> = limited.clone();
    let world = Arc::new(World::simulated(store, fake.clone(), dyn_limited, config));
    let keeper = tokio::spawn(hold_time_while_the_store_works(world.store.clone()));
    let (stop_reconciler, stopped) = tokio::sync::oneshot::channel::<()>();
    let reconciler = tokio::spawn(world.reconciler.clone().run_until_stopped(async {
        let _ = stopped.await;
    }));

    // Warm the pool up before the users come.
    let warm_up = tokio::time::Instant::now();
    while world.ledger_count(InstanceStatus::Available).await < SPARES as usize {
        assert!(
            warm_up.elapsed() < Duration::from_secs(900),
            "the pool did not fill"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let warm_up = warm_up.elapsed();

    let client = Arc::new(Client {
        world: world.clone(),
        statuses: Mutex::new(BTreeMap::new()),
    });
    let stop_watching = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_invariants(world.clone(), stop_watching.clone()));
    let workload = tokio::time::Instant::now();
    let mut users = Vec::new();
    for (gap, plan) in plans() {
        tokio::time::sleep(gap).await;
        users.push(tokio::spawn(user(client.clone(), plan)));
    }
    let mut reports = Vec::new();
    for handle in users {
        reports.push(handle.await.expect("user task"));
    }
    let workload = workload.elapsed();

    // Let the pool settle: every user gone, every terminated instance gone from EC2's listing
    // and from the ledger.
    let settle = tokio::time::Instant::now();
    loop {
        let users_left = world.store.list_users().await.unwrap().len();
        let terminating = world.ledger_count(InstanceStatus::Terminating).await;
        let shutting_down = fake
            .describe_pool_instances()
            .await
            .map(|list| {
                list.iter()
                    .filter(|i| i.lifecycle == Lifecycle::ShuttingDown)
                    .count()
            })
            .unwrap_or(1);
        if users_left == 0 && terminating == 0 && shutting_down == 0 {
            break;
        }
        assert!(
            settle.elapsed() < Duration::from_secs(1_800),
            "did not settle: {users_left} users, {terminating} terminating, {shutting_down} \
             shutting down"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    stop_watching.store(true, Ordering::Relaxed);
    let violations = watcher.await.unwrap();
    let _ = stop_reconciler.send(());
    reconciler.await.unwrap();
    assert!(!keeper.is_finished(), "the time keeper died: {keeper:?}");
    let simulated = fake.now() - spotpool::cloud::fake::SIM_EPOCH;

    // --- figures ---------------------------------------------------------------------------
    let claims: Vec<&UserReport> = reports
        .iter()
        .filter(|r| r.plan.abandon_after.is_none())
        .collect();
    let ready: Vec<Duration> = claims.iter().filter_map(|r| r.ready_in).collect();
    let routable: Vec<Duration> = claims.iter().filter_map(|r| r.routable_in).collect();
    let in_time = claims
        .iter()
        .filter(|r| r.ready_in.is_some_and(|t| t <= DEADLINE))
        .count();
    let released: Vec<Duration> = reports.iter().filter_map(|r| r.released_in).collect();
    let failed: Vec<(&str, &str)> = claims
        .iter()
        .filter_map(|r| Some((r.plan.user.as_str(), r.failed.as_deref()?)))
        .collect();
    let statuses = client.statuses.lock().unwrap().clone();
    let by_class = |class: u16| -> u64 {
        statuses
            .iter()
            .filter(|(s, _)| **s / 100 == class)
            .map(|(_, n)| n)
            .sum()
    };
    let stats = fake.sim_stats().expect("a simulated fake");
    let waits = limited.waits();
    let mut launched: BTreeMap<String, usize> = BTreeMap::new();
    let mut starts: HashMap<String, HashSet<String>> = HashMap::new();
    for instance in fake.all_instances() {
        *launched.entry(instance.instance_type).or_default() += 1;
    }
    for command in fake.commands() {
        if let Some(user) = command
            .comment
            .strip_prefix("spotpool start container for ")
        {
            starts
                .entry(command.instance.0.clone())
                .or_default()
                .insert(user.to_string());
        }
    }

    eprintln!("--- faults: {}", fake.profile().unwrap().summary());
    eprintln!(
        "seed {}; pool: {SPARES} spares, max {MAX_INSTANCES}; warm-up {:.0} s; workload {:.0} s; simulated total {:.0} s; {} passes; wall {:.1} s",
        seed(),
        warm_up.as_secs_f64(),
        workload.as_secs_f64(),
        simulated as f64 / 1000.0,
        world.state.health.passes.load(Ordering::Relaxed),
        wall.elapsed().as_secs_f64()
    );
    eprintln!(
        "claims {} (+{} abandoned): {in_time} ready within {:?} ({:.1}%), {} failed",
        claims.len(),
        reports.len() - claims.len(),
        DEADLINE,
        100.0 * in_time as f64 / claims.len() as f64,
        failed.len()
    );
    eprintln!("time to ready (PUT to `ready`): {}", distribution(&ready));
    eprintln!(
        "time to routable (rule active, target healthy): {}",
        distribution(&routable)
    );
    eprintln!("release (DELETE to 404): {}", distribution(&released));
    eprintln!("HTTP statuses: {statuses:?}");
    eprintln!(
        "AWS: {} calls, {} attempts, {} retries; injected {} 5xx and {} throttles; {} capacity errors; failed calls after retries {:?}; call timeouts {}",
        stats.calls,
        stats.attempts,
        stats.retries,
        stats.injected_server_errors,
        stats.injected_throttles,
        stats.capacity_errors,
        stats.failed_calls,
        stats.timeouts
    );
    eprintln!(
        "quota rejections (our own rate): {:?}",
        stats.quota_rejections
    );
    let levels: Vec<String> = stats
        .min_bucket_levels
        .iter()
        .map(|(class, level)| format!("{} {level:.1}", class.as_str()))
        .collect();
    eprintln!("min server bucket levels: {}", levels.join(", "));
    let waited: Vec<String> = waits
        .iter()
        .map(|(class, w)| {
            format!(
                "{} {} calls, {:.1} s total, longest {:.2} s",
                class.as_str(),
                w.calls,
                w.total.as_secs_f64(),
                w.longest.as_secs_f64()
            )
        })
        .collect();
    eprintln!("client rate-limit waits: {}", waited.join("; "));
    eprintln!("instances launched by type: {launched:?}");
    let mut per_operation: BTreeMap<&str, usize> = BTreeMap::new();
    for operation in fake.calls() {
        *per_operation.entry(operation).or_default() += 1;
    }
    eprintln!("calls that took effect, by operation: {per_operation:?}");
    let mut events: BTreeMap<String, usize> = BTreeMap::new();
    for entry in world.store.journal_since(0, 1_000_000).await.unwrap() {
        if [
            "claim.requeued",
            "claim.failed",
            "pool.fallback",
            "pool.capacity_unavailable",
            "pool.launch_backoff",
            "instance.probe_failed",
        ]
        .contains(&entry.kind.as_str())
        {
            *events.entry(entry.kind).or_default() += 1;
        }
    }
    eprintln!("journal: {events:?}");
    // Readiness probes: every SendCommand that reached SSM but the container commands, against
    // the probes that passed (docs/benchmarks.md, "Probes that wait for the agent").
    let commands = fake.commands();
    let probe_commands = commands
        .iter()
        .filter(|c| c.comment.contains("readiness probe"))
        .count();
    let probe_sends = fake.count_calls("SendCommand") - (commands.len() - probe_commands);
    let passed = world
        .store
        .journal_since(0, 1_000_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == "instance.available")
        .count();
    eprintln!(
        "readiness probes: {probe_sends} SendCommands ({probe_commands} accepted), {passed} \
         passed: {:.2} SendCommands per passed probe; DescribeInstanceInformation {}",
        probe_sends as f64 / passed.max(1) as f64,
        fake.count_calls("DescribeInstanceInformation")
    );

    // --- assertions ------------------------------------------------------------------------
    assert!(failed.is_empty(), "failed users: {failed:?}");
    assert!(
        in_time as f64 >= WITHIN_DEADLINE * claims.len() as f64,
        "only {in_time} of {} claims ready within {DEADLINE:?}",
        claims.len()
    );
    assert_eq!(
        released.len(),
        reports.len(),
        "every DELETE completes: {:?}",
        reports
            .iter()
            .filter(|r| r.released_in.is_none())
            .map(|r| &r.plan.user)
            .collect::<Vec<_>>()
    );
    assert_eq!(by_class(5), 0, "the API answered 5xx: {statuses:?}");
    assert!(violations.is_empty(), "{violations:?}");
    for (instance, users) in &starts {
        assert!(
            users.len() == 1,
            "{instance} started containers for {users:?}"
        );
    }
    assert_eq!(
        stats.quota_rejections_total(),
        0,
        "our own rate emptied an account bucket: {:?}",
        stats.quota_rejections
    );
    for (class, level) in &stats.min_bucket_levels {
        assert!(*level >= 0.0, "{} went to {level}", class.as_str());
    }
    // The faults really happened.
    assert!(stats.injected_server_errors > 0 && stats.injected_throttles > 0);
    assert!(stats.retries > 0);
    assert!(stats.capacity_errors > 0);
    assert_eq!(
        launched.get("t3.small"),
        None,
        "no spot t3.small was launched"
    );
    assert!(launched.get("t3a.small").is_some_and(|n| *n > 0));
    world.assert_no_leaks().await;
    // What is left on the load balancer is the spares' warm routes (`assert_no_leaks` matched
    // each to a spare of the ledger).
    assert!(fake.secrets().is_empty());
    assert!(
        fake.rules()
            .iter()
            .all(|r| matches!(r.condition, spotpool::model::RuleMatch::Warm(_)))
    );
    assert!(
        fake.target_groups()
            .iter()
            .all(|g| g.name.starts_with("sp-warm-"))
    );
    // Only now: without the keeper, a database call lets the clock run into sqlx's timeouts.
    keeper.abort();
}
