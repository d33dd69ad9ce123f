//! Issue 16, point 5, on the daemon: the launch-day spike of `examples/spares_day.rs`'s trace
//! replayed against the real reconciler and API on the simulated fake, with `spare = "auto"`
//! and with fixed spare counts, beside what that model predicts for the same window. A
//! benchmark, `#[ignore]`d (about 70 s of wall time per policy, 6 minutes for the five): run it
//! on purpose with
//! `scripts/test.sh --run-ignored only -E 'test(/spike_hour_on_the_daemon/)' --no-capture`. It
//! prints the tables for docs/benchmarks.md and asserts only what holds whatever the timing:
//! every sign-up ends `ready`, and nothing leaks.
//!
//! **The trace.** The model's own (`model::trace`, the example's file compiled into this test:
//! one splitmix64 chance a second, seed 20261202), its sign-ups in `model::SPIKE_WINDOW`: day 2,
//! 13:20 to 15:00, that is 40 minutes at 60 sign-ups an hour, the 20-minute spike at 600 and 40
//! minutes at 60 (305 sign-ups, 214 in the spike). Each is a PUT with a secret at its second,
//! counted from the moment the pool first holds its starting target (auto: its minimum). Users
//! stay: a release terminates the instance, so departures would not change the spares (the model
//! leaves them out too).
//!
//! **The daemon.** As `faults.rs` runs it: the real store (in-memory SQLite), API router and
//! reconciler loop (`run_until_stopped`) over `FakeCloud::simulated` on `Profile::aws()` (no
//! injected faults or capacity errors: the model has none), behind the default client-side
//! buckets (`Limited`), on tokio's paused clock with `faults`' time keeper. One dedicated tier
//! (t3.small, `max_instances` 400) over the test settings' two subnets; five path-routed shards
//! of 90 routes, since one load balancer holds at most 100 rules and every user and pre-wired
//! spare takes one.
//!
//! **Measured**, per policy, over the window:
//! - warm hit: the sign-up found an `available` spare. From the journal: the instance of the
//!   user's first `claim.assigned` had, of its `instance.available` and `claim.assigned` entries
//!   up to the user's `requested_at`, an `instance.available` last (a rolled-back claim's spare
//!   that was made available again counts as available);
//! - time to ready: the user row's `ready_at - requested_at`;
//! - spare instance-hours: the ledger's instances no user holds (`initializing` and `available`,
//!   as the model counts launching and available ones), sampled every simulated 5 s over the
//!   window; `terminating` ones are shown apart (the live cost counts them, the model does not);
//! - the peak target (auto: the stored decisions, sampled with the spares), the measured lead
//!   time at the end, and the run's simulated and wall time.
//!
//! The model's figures for the same window come from `model::window`: measured within its
//! two-day run ("in the day": the pool shaped by hours at 60 an hour when the window begins), and
//! the window run alone from an empty pool filled five minutes before its first second ("alone":
//! how this run starts).

use crate::faults::{Client, hold_time_while_the_store_works, quantile};
use crate::world::{World, shards, test_settings};
use model::Spares;
use spotpool::app::App;
use spotpool::cloud::Cloud;
use spotpool::cloud::fake::FakeCloud;
use spotpool::cloud::limit::{Limited, RateLimits};
use spotpool::cloud::profile::Profile;
use spotpool::config::{Settings, TierSettings};
use spotpool::model::{InstanceStatus, Millis, UserState};
use spotpool::reconcile::ReconcilerConfig;
use spotpool::store::Store;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The model, compiled here for its trace and its predictions (its `main` unused).
#[allow(dead_code)]
#[path = "../../examples/spares_day.rs"]
mod model;

/// The model's default seed: the trace of docs/benchmarks.md's table. `SPOTPOOL_SPARES_SEED`
/// overrides it (the trace's and the fake's).
const SEED: u64 = 20_261_202;

fn seed() -> u64 {
    std::env::var("SPOTPOOL_SPARES_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED)
}

const POLICIES: [Spares; 5] = [
    Spares::Auto,
    Spares::Fixed(4),
    Spares::Fixed(8),
    Spares::Fixed(16),
    Spares::Fixed(32),
];
const TIER: &str = "dedicated";
const MAX_INSTANCES: u32 = 400;
const SHARDS: usize = 5;
const SHARD_CAPACITY: u32 = 90;
/// How often the spares are counted.
const SAMPLE: Duration = Duration::from_secs(5);
/// A sign-up not ready this long after the window's end fails the run.
const STUCK: Duration = Duration::from_secs(1_800);

/// What one policy's run on the daemon measured.
struct Measured {
    policy: Spares,
    sign_ups: usize,
    claims: Claims,
    ready: Vec<Duration>,
    spare_hours: f64,
    terminating_hours: f64,
    peak_target: u32,
    lead_time: Option<Millis>,
    warm_up: Duration,
    /// The run's simulated time, warm-up and settling included.
    simulated: Duration,
    passes: u64,
    launched: usize,
    statuses: BTreeMap<u16, u64>,
    wall: Duration,
}

/// The daemon's configuration for `policy`: one dedicated tier, parsed by the daemon's own
/// `Settings::into_config`.
fn config(policy: Spares) -> ReconcilerConfig {
    let spares = match policy {
        Spares::Auto => TierSettings {
            spare: Some("auto".into()),
            spare_min: Some(model::AUTO.min),
            spare_max: Some(model::AUTO.max),
            ..TierSettings::default()
        },
        Spares::Fixed(k) => TierSettings {
            spare_count: Some(k),
            ..TierSettings::default()
        },
    };
    let settings = Settings {
        tier: Some(vec![TierSettings {
            name: Some(TIER.into()),
            instance_types: Some(vec!["t3.small".into()]),
            max_instances: Some(MAX_INSTANCES),
            ..spares
        }]),
        ..test_settings(0, MAX_INSTANCES)
    };
    let mut config = App::reconciler_config(&settings.into_config().expect("a valid tier"));
    config.policy.shards = shards(SHARDS, SHARD_CAPACITY);
    config
}

/// The sign-ups of the window, as offsets from its start.
fn arrivals() -> Vec<Duration> {
    let window = model::SPIKE_WINDOW;
    model::trace(seed())
        .iter()
        .filter(|a| window.contains(&a.at))
        .map(|a| Duration::from_millis((a.at - window.start) as u64))
        .collect()
}

fn window_length() -> Duration {
    Duration::from_millis((model::SPIKE_WINDOW.end - model::SPIKE_WINDOW.start) as u64)
}

/// What the spares sampler integrated over the window.
#[derive(Default)]
struct Sampled {
    spare_ms: f64,
    terminating_ms: f64,
    peak_target: u32,
}

/// Counts the ledger's spares every [`SAMPLE`] for `length` (and the auto tier's target).
async fn sample_spares(world: Arc<World>, length: Duration, fixed: Option<u32>) -> Sampled {
    let started = tokio::time::Instant::now();
    let step = SAMPLE.as_millis() as f64;
    let mut sampled = Sampled {
        peak_target: fixed.unwrap_or(0),
        ..Sampled::default()
    };
    while started.elapsed() < length {
        let instances = world.store.list_instances().await.unwrap();
        let count = |statuses: &[InstanceStatus]| {
            instances
                .iter()
                .filter(|i| statuses.contains(&i.status))
                .count() as f64
        };
        sampled.spare_ms +=
            step * count(&[InstanceStatus::Initializing, InstanceStatus::Available]);
        sampled.terminating_ms += step * count(&[InstanceStatus::Terminating]);
        if fixed.is_none() {
            for stored in world.store.spare_decisions().await.unwrap() {
                sampled.peak_target = sampled.peak_target.max(stored.decision.target);
            }
        }
        tokio::time::sleep(SAMPLE).await;
    }
    sampled
}

/// Until no user is short of `ready` and no instance is on its way in or out (so the ledger
/// and the cloud can be compared); panics with the users still waiting after `limit`.
async fn settle(world: &World, fake: &FakeCloud, limit: Duration) {
    let started = tokio::time::Instant::now();
    loop {
        let users = world.store.list_users().await.unwrap();
        let waiting: Vec<String> = users
            .iter()
            .filter(|u| u.state != UserState::Ready)
            .map(|u| format!("{} {:?} {:?}", u.user_id, u.state, u.error))
            .collect();
        let moving = world.ledger_count(InstanceStatus::Initializing).await
            + world.ledger_count(InstanceStatus::Terminating).await;
        let shutting_down = fake
            .all_instances()
            .iter()
            .filter(|i| i.lifecycle == spotpool::cloud::Lifecycle::ShuttingDown)
            .count();
        if waiting.is_empty() && moving == 0 && shutting_down == 0 {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "not settled after {limit:?}: {moving} instances initializing or terminating, \
             {shutting_down} shutting down, users not ready: {waiting:?}"
        );
        tokio::time::sleep(SAMPLE).await;
    }
}

/// What the journal says of the sign-ups.
struct Claims {
    /// Sign-ups that found an `available` spare (see the module docs).
    warm: usize,
    /// When the others came, from the window's start.
    misses: Vec<Millis>,
    /// A cross-check of `warm`: sign-ups whose first `claim.assigned` came within 5 s.
    assigned_within_5_s: usize,
    /// `claim.requeued` and `claim.failed` entries.
    rollbacks: usize,
    /// Of the instances launched in the window, launch (EC2's launch time) to their first
    /// `instance.available`, and the part of it to their first `instance.probed` (the readiness
    /// probe passed; the rest is the warm route's wiring and health checks).
    lead_times: Vec<Duration>,
    probe_times: Vec<Duration>,
}

/// Reads warm hits, misses and lead times from the journal; the window began at
/// `window_start`.
async fn claims(world: &World, fake: &FakeCloud, window_start: Millis) -> Claims {
    let users = world.store.list_users().await.unwrap();
    let journal = world.store.journal_since(0, i64::MAX).await.unwrap();
    let mut first_claim: HashMap<&str, (&str, Millis)> = HashMap::new();
    // Per instance, its `instance.available` (true) and `claim.assigned` (false) entries.
    let mut history: HashMap<&str, Vec<(Millis, bool)>> = HashMap::new();
    let mut claims = Claims {
        warm: 0,
        misses: Vec::new(),
        assigned_within_5_s: 0,
        rollbacks: 0,
        lead_times: Vec::new(),
        probe_times: Vec::new(),
    };
    let mut probed: HashMap<&str, Millis> = HashMap::new();
    for entry in &journal {
        let instance = entry.instance_id.as_deref();
        match (entry.kind.as_str(), instance) {
            ("instance.available", Some(i)) => history.entry(i).or_default().push((entry.at, true)),
            ("claim.assigned", Some(i)) => {
                history.entry(i).or_default().push((entry.at, false));
                if let Some(user) = entry.user_id.as_deref() {
                    first_claim.entry(user).or_insert((i, entry.at));
                }
            }
            ("instance.probed", Some(i)) => {
                probed.entry(i).or_insert(entry.at);
            }
            ("claim.requeued" | "claim.failed", _) => claims.rollbacks += 1,
            _ => {}
        }
    }
    for user in &users {
        let first = first_claim.get(user.user_id.as_str());
        let warm = first.is_some_and(|(instance, _)| {
            history[instance]
                .iter()
                .rev()
                .find(|(at, _)| *at <= user.requested_at)
                .is_some_and(|(_, available)| *available)
        });
        if warm {
            claims.warm += 1;
        } else {
            claims.misses.push(user.requested_at - window_start);
        }
        if first.is_some_and(|(_, at)| at - user.requested_at < 5_000) {
            claims.assigned_within_5_s += 1;
        }
    }
    for instance in fake.all_instances() {
        let first_available = history
            .get(instance.id.0.as_str())
            .and_then(|h| h.iter().find(|(_, available)| *available));
        if let Some((at, _)) = first_available
            && instance.launched_at >= window_start
        {
            let since_launch =
                |at: Millis| Duration::from_millis((at - instance.launched_at) as u64);
            claims.lead_times.push(since_launch(*at));
            if let Some(probed) = probed.get(instance.id.0.as_str()) {
                claims.probe_times.push(since_launch(*probed));
            }
        }
    }
    claims.lead_times.sort();
    claims.probe_times.sort();
    claims
}

/// The model's lead time (launch to `available`, as `model::lead_time` draws it), p50 and p90
/// of 10,000 draws.
fn model_lead_time() -> String {
    let profile = Profile::aws();
    let mut rng = spotpool::cloud::profile::SimRng::new(seed());
    let mut draws: Vec<Duration> = (0..10_000)
        .map(|_| Duration::from_millis(model::lead_time(&mut rng, &profile, 0) as u64))
        .collect();
    draws.sort();
    format!(
        "launch to available p50 {:.1} s, p90 {:.1} s",
        quantile(&draws, 0.5),
        quantile(&draws, 0.9)
    )
}

/// The misses by the trace's phase: before the spike, its first two minutes, the rest of it,
/// after it.
fn phases(misses: &[Millis]) -> String {
    let spike = model::SPIKE.start - model::SPIKE_WINDOW.start;
    let spike_end = model::SPIKE.end - model::SPIKE_WINDOW.start;
    let bounds = [0, spike, spike + 120_000, spike_end, Millis::MAX];
    let counts: Vec<usize> = bounds
        .windows(2)
        .map(|b| misses.iter().filter(|m| (b[0]..b[1]).contains(*m)).count())
        .collect();
    format!(
        "misses {} before the spike, {} in its first 2 minutes, {} in the rest of it, {} after",
        counts[0], counts[1], counts[2], counts[3]
    )
}

/// Each of the window's sign-ups PUTs at its time from `start` (a 429 or 5xx tried again).
async fn sign_up(client: &Arc<Client>, start: tokio::time::Instant) {
    let mut puts = Vec::new();
    for (n, at) in arrivals().into_iter().enumerate() {
        tokio::time::sleep_until(start + at).await;
        let client = client.clone();
        puts.push(tokio::spawn(async move {
            let user = format!("user-{n:04}");
            let secrets = format!(r#"{{"secrets":{{"OPENAI_API_KEY":"sk-{user}"}}}}"#);
            client.put(&user, &secrets).await;
        }));
    }
    for put in puts {
        put.await.expect("a PUT");
    }
}

/// Replays the window on the daemon with `policy`.
async fn run(policy: Spares) -> Measured {
    let wall = std::time::Instant::now();
    // The store first, on the running clock (see `World::simulated`), then simulated time.
    let store = Store::open("sqlite::memory:").await.unwrap();
    tokio::time::pause();
    let fake = Arc::new(FakeCloud::simulated("spotpool", Profile::aws(), seed()));
    let limited: Arc<dyn Cloud> = Arc::new(Limited::new(fake.clone(), &RateLimits::default()));
    let world = Arc::new(World::simulated(
        store,
        fake.clone(),
        limited,
        config(policy),
    ));
    let keeper = tokio::spawn(hold_time_while_the_store_works(world.store.clone()));
    let (stop_reconciler, stopped) = tokio::sync::oneshot::channel::<()>();
    let reconciler = tokio::spawn(world.reconciler.clone().run_until_stopped(async {
        let _ = stopped.await;
    }));

    // The pool fills to its starting target before the first sign-up.
    let fixed = match policy {
        Spares::Fixed(k) => Some(k),
        Spares::Auto => None,
    };
    let starting = fixed.unwrap_or(model::AUTO.min) as usize;
    let warm_up = tokio::time::Instant::now();
    while world.ledger_count(InstanceStatus::Available).await < starting {
        assert!(warm_up.elapsed() < STUCK, "the pool did not fill");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let warm_up = warm_up.elapsed();

    let start = tokio::time::Instant::now();
    let window_start = fake.now();
    let sampler = tokio::spawn(sample_spares(world.clone(), window_length(), fixed));
    let client = Arc::new(Client {
        world: world.clone(),
        statuses: Mutex::new(BTreeMap::new()),
    });
    sign_up(&client, start).await;
    let sampled = sampler.await.expect("the sampler");
    settle(&world, &fake, STUCK).await;
    let _ = stop_reconciler.send(());
    reconciler.await.unwrap();
    assert!(!keeper.is_finished(), "the time keeper died: {keeper:?}");

    let users = world.store.list_users().await.unwrap();
    let ready = users
        .iter()
        .map(|u| {
            let at = u.ready_at.expect("a ready user has ready_at");
            Duration::from_millis((at - u.requested_at).max(0) as u64)
        })
        .collect();
    let claims = claims(&world, &fake, window_start).await;
    let lead_time = world
        .store
        .spare_decisions()
        .await
        .unwrap()
        .first()
        .map(|d| d.decision.lead_time);
    world.assert_no_leaks().await;
    let hour = 3_600_000.0;
    let measured = Measured {
        policy,
        sign_ups: users.len(),
        claims,
        ready,
        spare_hours: sampled.spare_ms / hour,
        terminating_hours: sampled.terminating_ms / hour,
        peak_target: sampled.peak_target,
        lead_time,
        warm_up,
        simulated: Duration::from_millis((fake.now() - spotpool::cloud::fake::SIM_EPOCH) as u64),
        passes: world
            .state
            .health
            .passes
            .load(std::sync::atomic::Ordering::Relaxed),
        launched: fake.all_instances().len(),
        statuses: client.statuses.lock().unwrap().clone(),
        wall: wall.elapsed(),
    };
    // Only now: without the keeper, a database call lets the clock run into sqlx's timeouts.
    keeper.abort();
    measured
}

fn table(runs: &[Measured], dollars: f64) -> String {
    let mut lines = vec![
        "| spares | warm hits | p50 to ready | p99 to ready | spare instance-hours | spare dollars | peak target | terminating instance-hours | wall |".to_string(),
        "|---|---|---|---|---|---|---|---|---|".to_string(),
    ];
    for run in runs {
        let mut sorted = run.ready.clone();
        sorted.sort();
        lines.push(format!(
            "| {} | {:.2} % ({} of {}) | {:.1} s | {:.1} s | {:.1} | ${:.2} | {} | {:.2} | {:.0} s |",
            run.policy.name(),
            100.0 * run.claims.warm as f64 / run.sign_ups as f64,
            run.claims.warm,
            run.sign_ups,
            quantile(&sorted, 0.5),
            quantile(&sorted, 0.99),
            run.spare_hours,
            run.spare_hours * dollars,
            run.peak_target,
            run.terminating_hours,
            run.wall.as_secs_f64()
        ));
    }
    lines.join("\n")
}

#[test]
#[ignore = "a benchmark of several minutes: run it on purpose (module docs)"]
fn spike_hour_on_the_daemon_auto_against_fixed_spares() {
    let wall = std::time::Instant::now();
    let sign_ups = arrivals().len();
    let mut runs = Vec::new();
    for policy in POLICIES {
        let run = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(policy));
        eprintln!(
            "{}: warm-up {:.0} s, {} passes, {} instances launched, {} claims rolled back, {} of \
             {} assigned within 5 s of their PUT, launch to available p50 {:.1} s, p90 {:.1} s \
             ({} launched in the window; to the probe's pass p50 {:.1} s; the decision's lead \
             time at the end {:?} ms), HTTP \
             statuses {:?}; {}; simulated {:.0} s in {:.0} s of wall time",
            run.policy.name(),
            run.warm_up.as_secs_f64(),
            run.passes,
            run.launched,
            run.claims.rollbacks,
            run.claims.assigned_within_5_s,
            run.sign_ups,
            quantile(&run.claims.lead_times, 0.5),
            quantile(&run.claims.lead_times, 0.9),
            run.claims.lead_times.len(),
            quantile(&run.claims.probe_times, 0.5),
            run.lead_time,
            run.statuses,
            phases(&run.claims.misses),
            run.simulated.as_secs_f64(),
            run.wall.as_secs_f64()
        );
        assert_eq!(run.sign_ups, sign_ups, "every sign-up has a user");
        assert_eq!(run.ready.len(), sign_ups, "every sign-up is ready");
        runs.push(run);
    }
    let dollars = model::spare_dollars_per_hour();
    eprintln!(
        "--- the spike window on the daemon (seed {}, {sign_ups} sign-ups over {:.0} minutes; a \
         spare at ${dollars:.5} an hour):\n{}",
        seed(),
        window_length().as_secs_f64() / 60.0,
        table(&runs, dollars)
    );
    for (label, reports) in model::window(seed(), &POLICIES) {
        eprintln!(
            "--- the model, {label} ({}):\n{}",
            model_lead_time(),
            model::table(&reports, dollars)
        );
        for (policy, report) in &reports {
            eprintln!("{}: {}", policy.name(), phases(&report.misses));
        }
    }
    eprintln!("wall time: {:.0} s", wall.elapsed().as_secs_f64());
}
