//! Issue 13, point 5: the highest sustained arrival rate the default client-side buckets carry.
//! A benchmark: it prints a table for `docs/benchmarks.md` and asserts only that every user got
//! there and nothing leaked (no timing).
//!
//! The same harness as `baseline.rs` and `faults.rs`: the real store, API and reconciler loop
//! over the simulated fake on `aws-profile.md` (no faults; a small image's 1.5 s container
//! start), behind the default client-side buckets, on tokio's paused clock. For each rate, users
//! arrive at fixed gaps for `ARRIVALS`, each stays `STAY` after its `ready` and is then deleted.
//! The pool keeps `SPARES` spares (about the highest rate times the ~2 minutes from launch to a
//! wired spare), so the warm pool is not what runs out. Reported per rate: time to `ready` (PUT
//! to the row's `ready_at`), the account's quota rejections (attempts an account bucket refused;
//! the client-side buckets exist to keep it at 0), the lowest level the ELB write bucket reached,
//! and the ELB write calls per user.

use crate::faults::{hold_time_while_the_store_works, quantile};
use crate::support::aws::ELB_MUTATING;
use crate::world::{API_TOKEN, World, reconciler_config};
use spotpool::cloud::Cloud;
use spotpool::cloud::fake::FakeCloud;
use spotpool::cloud::limit::{Limited, QuotaClass, RateLimits};
use spotpool::cloud::profile::{Latency, Profile};
use spotpool::model::{InstanceStatus, UserId};
use spotpool::store::Store;
use std::sync::Arc;
use std::time::Duration;

const SEED: u64 = 20_261_202;
const ARRIVALS: Duration = Duration::from_secs(240);
const STAY: Duration = Duration::from_secs(60);
const SPARES: u32 = 150;
/// A wait that takes longer than this (simulated) is a stuck user: the run fails and prints what
/// the ledger says of it instead of running on.
const STUCK: Duration = Duration::from_secs(1_800);

/// What one rate measured.
struct Rate {
    per_second: f64,
    ready: Vec<Duration>,
    quota_rejections: u64,
    elb_bucket_low: f64,
    elb_writes_per_user: f64,
}

async fn run(per_second: f64) -> Rate {
    let store = Store::open("sqlite::memory:").await.unwrap();
    tokio::time::pause();
    let mut profile = Profile::aws();
    profile.effects.container_start = Latency::millis(1_500, 5_000);
    let fake = Arc::new(FakeCloud::simulated("spotpool", profile, SEED));
    let limited: Arc<dyn Cloud> = Arc::new(Limited::new(fake.clone(), &RateLimits::default()));
    let config = reconciler_config(SPARES, 4 * SPARES);
    let world = Arc::new(World::simulated(store, fake.clone(), limited, config));
    let keeper = tokio::spawn(hold_time_while_the_store_works(world.store.clone()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let reconciler = tokio::spawn(world.reconciler.clone().run_until_stopped(async {
        let _ = stopped.await;
    }));
    while world.ledger_count(InstanceStatus::Available).await < SPARES as usize {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let elb_before: usize = ELB_MUTATING.iter().map(|op| fake.count_calls(op)).sum();
    let rejections_before = fake.sim_stats().unwrap().quota_rejections_total();
    let users = (ARRIVALS.as_secs_f64() * per_second) as usize;
    let gap = Duration::from_secs_f64(1.0 / per_second);
    let mut tasks = Vec::new();
    for n in 0..users {
        let world = world.clone();
        let fake = fake.clone();
        tasks.push(tokio::spawn(async move {
            let user = format!("s{n}");
            let id = UserId::parse(&user).unwrap();
            let path = format!("/v1/users/{user}/instance");
            let body = r#"{"secrets":{"K":"v"}}"#;
            let put_at = fake.now();
            let stuck_at = put_at + STUCK.as_millis() as i64;
            loop {
                assert_not_stuck(&world, &fake, &user, stuck_at, "the PUT").await;
                let (status, _, _) = world
                    .request_with_headers("PUT", &path, Some(API_TOKEN), body)
                    .await;
                if status.is_success() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let ready = loop {
                let row = world.store.get_user(&id).await.unwrap().expect("user row");
                if let Some(at) = row.ready_at {
                    break Duration::from_millis((at - put_at) as u64);
                }
                assert_not_stuck(&world, &fake, &user, stuck_at, "ready").await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
            tokio::time::sleep(STAY).await;
            let (status, _, doc) = world
                .request_with_headers("DELETE", &path, Some(API_TOKEN), "")
                .await;
            assert_eq!(status.as_u16(), 202, "{doc}");
            ready
        }));
        tokio::time::sleep(gap).await;
    }
    let mut ready = Vec::new();
    for task in tasks {
        ready.push(task.await.unwrap());
    }
    let drained_by = fake.now() + STUCK.as_millis() as i64;
    while let Some(user) = world.store.list_users().await.unwrap().first() {
        assert_not_stuck(
            &world,
            &fake,
            user.user_id.as_str(),
            drained_by,
            "its deletion",
        )
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let stats = fake.sim_stats().unwrap();
    let elb: usize = ELB_MUTATING.iter().map(|op| fake.count_calls(op)).sum();
    let _ = stop.send(());
    reconciler.await.unwrap();
    world.assert_no_leaks().await;
    keeper.abort();
    Rate {
        per_second,
        ready,
        quota_rejections: stats.quota_rejections_total() - rejections_before,
        elb_bucket_low: stats
            .min_bucket_levels
            .get(&QuotaClass::ElbMutate)
            .copied()
            .unwrap_or(f64::NAN),
        elb_writes_per_user: (elb - elb_before) as f64 / users as f64,
    }
}

/// Fails the run, with the user's and its instance's rows and the journal's last entries, once
/// the simulated clock is past `by`.
async fn assert_not_stuck(world: &World, fake: &FakeCloud, user: &str, by: i64, waiting_for: &str) {
    if fake.now() < by {
        return;
    }
    let row = world
        .store
        .get_user(&UserId::parse(user).unwrap())
        .await
        .unwrap();
    let instance = match row.as_ref().and_then(|row| row.instance_id.clone()) {
        Some(id) => world.store.get_instance(&id).await.unwrap(),
        None => None,
    };
    let instance_id = instance.as_ref().map(|i| i.instance_id.to_string());
    let journal = world.store.journal_since(0, i64::MAX).await.unwrap();
    let last: Vec<String> = journal
        .iter()
        .rev()
        .map(|entry| format!("{entry:?}"))
        .filter(|entry| {
            entry.contains(&format!("\"{user}\""))
                || instance_id
                    .as_ref()
                    .is_some_and(|id| entry.contains(id.as_str()))
        })
        .take(40)
        .collect();
    panic!(
        "{user} waited {} s for {waiting_for}\nuser: {row:?}\ninstance: {instance:?}\nits last journal \
         entries, newest first:\n{}",
        STUCK.as_secs(),
        last.join("\n")
    );
}

#[test]
fn the_sustained_arrival_rate_the_default_buckets_carry() {
    let mut lines = vec![
        "| users per second | users | p50 to ready | p99 to ready | quota rejections | ELB write bucket low | ELB writes per user |".to_string(),
        "|---|---|---|---|---|---|---|".to_string(),
    ];
    for per_second in [0.5, 0.75, 1.0, 1.25] {
        let rate = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(per_second));
        let mut sorted = rate.ready.clone();
        sorted.sort();
        assert!(!sorted.is_empty(), "every user got there");
        lines.push(format!(
            "| {:.2} | {} | {:.1} s | {:.1} s | {} | {:.1} | {:.2} |",
            rate.per_second,
            sorted.len(),
            quantile(&sorted, 0.5),
            quantile(&sorted, 0.99),
            rate.quota_rejections,
            rate.elb_bucket_low,
            rate.elb_writes_per_user
        ));
    }
    eprintln!(
        "sustained arrivals for {} s, each user staying {} s, {SPARES} spares, seed {SEED}:\n{}",
        ARRIVALS.as_secs(),
        STAY.as_secs(),
        lines.join("\n")
    );
}
