//! The original flow beside spotpool's claim (issue 13, point 4), in one harness: the simulated
//! fake cloud on `aws-profile.md`, the same seed, the same arrivals, a warm pool, no faults and
//! then 10% 5xx plus 10% throttling. A benchmark: it prints the table for `docs/benchmarks.md`
//! and asserts only that every claim got there (no timing).
//!
//! **The original flow** (`aws-profile.md`, "The baseline"): steps 1-9 one after another, per
//! user, straight on the cloud (no client-side buckets, the SDK's retries as the profile models
//! them; a step that still fails is tried again, which is kinder to it than the original):
//! DescribeInstances for an available instance, CreateSecret, SendCommand with the image pulled at
//! claim time (the profile's `image_prepulled: false` for this flow) and its completion,
//! CreateTags, CreateTargetGroup, RegisterTargets, CreateRule, target health polled every second,
//! RunInstances for the replacement. Ready is the end of step 9. It runs twice: with the target
//! group as the original created it (no health-check settings: AWS's 30 s × 5) and with
//! spotpool's 5 s × 2, so the comparison does not rest on that one defect.
//!
//! **spotpool's claim**: the real store (in-memory SQLite), API and reconciler loop over the same
//! simulated fake behind the default client-side buckets, as `faults.rs` runs them; ready is the
//! row's `ready_at`, PUT to `ready`.

use crate::faults::{hold_time_while_the_store_works, quantile};
use crate::support::aws::ELB_MUTATING;
use crate::world::{API_TOKEN, LISTENER, World, reconciler_config};
use spotpool::cloud::fake::FakeCloud;
use spotpool::cloud::limit::{Limited, RateLimits};
use spotpool::cloud::profile::{FaultRates, Profile};
use spotpool::cloud::{Cloud, CloudResult, HealthCheck, LaunchRequest, Tags};
use spotpool::model::{InstanceId, InstanceStatus, RuleMatch, UserId};
use spotpool::store::Store;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SEED: u64 = 20_261_201;
/// Users, one every `GAP` (0.2 per second), each with a warm instance waiting.
const USERS: usize = 40;
const GAP: Duration = Duration::from_secs(5);

/// The container's start: `aws-profile.md`'s `docker run` of a small image (1.5 s, 5 s at p99),
/// or the OpenClaw gateway's measured start to `/readyz` (20 s, 40 s; `docs/openclaw.md`).
#[derive(Debug, Clone, Copy)]
enum Container {
    SmallImage,
    OpenClaw,
}

thread_local! {
    static CONTAINER: std::cell::Cell<Container> = const { std::cell::Cell::new(Container::OpenClaw) };
}

fn profile(faults: bool, prepulled: bool) -> Profile {
    let mut profile = Profile::aws();
    profile.effects.image_prepulled = prepulled;
    if let Container::SmallImage = CONTAINER.with(|c| c.get()) {
        profile.effects.container_start = spotpool::cloud::profile::Latency::millis(1_500, 5_000);
    }
    if faults {
        profile = profile.with_faults(FaultRates {
            server_error: 0.10,
            throttle: 0.10,
        });
    }
    profile
}

/// What one run measured.
struct Run {
    ready: Vec<Duration>,
    elb_mutating_per_claim: f64,
    /// spotpool only: ELB mutating calls per release (DELETE to 404).
    elb_mutating_per_release: Option<f64>,
    /// spotpool only: of the mutating calls while the users claimed, per claim, the claim
    /// path's (ModifyRule), the AddTags after `ready`, and the pre-wiring of the replacement
    /// spares (CreateTargetGroup + CreateRule).
    breakdown: Option<(f64, f64, f64)>,
}

/// Tries `step` until it succeeds, one second apart (the original had no retry policy of its
/// own; this is kinder to it than failing the claim).
async fn until_ok<T, F, Fut>(mut step: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = CloudResult<T>>,
{
    loop {
        match step().await {
            Ok(value) => return value,
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// The original flow for `USERS` users over a warm pool.
async fn original(faults: bool, health: HealthCheck) -> Run {
    tokio::time::pause();
    let fake = Arc::new(FakeCloud::simulated(
        "spotpool",
        profile(faults, false),
        SEED,
    ));
    let launch = |n: u32, token: String| LaunchRequest {
        tier: "default".into(),
        instance_type: "t3.small".into(),
        subnet_id: "subnet-a".into(),
        count: n,
        client_token: token,
        spot: true,
        launch_template: spotpool::model::LaunchTemplate::example(),
        blank_workspace: None,
    };
    // Warm: every instance running with its agent online.
    let mut warm: Vec<InstanceId> = Vec::new();
    for batch in 0..USERS / 10 {
        let request = launch(10, format!("warm-{batch}"));
        warm.extend(until_ok(|| fake.launch_instances(&request)).await);
    }
    loop {
        let online = fake.agents_online(&warm).await.ok().flatten();
        if online.is_some_and(|set| set.len() == warm.len()) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let free = Arc::new(Mutex::new(warm.into_iter().collect::<BTreeSet<_>>()));
    let elb_before: usize = ELB_MUTATING.iter().map(|op| fake.count_calls(op)).sum();
    let mut users = Vec::new();
    for n in 0..USERS {
        let (fake, free, health) = (fake.clone(), free.clone(), health.clone());
        users.push(tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let route = format!("r{n}");
            // 1. An available instance (the original's describe; the set keeps two users off
            //    one instance, which the original did not).
            until_ok(|| fake.describe_pool_instances()).await;
            let instance = free.lock().unwrap().pop_first().expect("a warm instance");
            // 2-3. The secret, then the container, the image pulled now.
            let tags = Tags::new();
            let secret = format!("openclaw/u{n}");
            until_ok(|| fake.put_secret(&secret, "sk-value", &tags)).await;
            let command =
                until_ok(|| fake.send_command(&instance, "start container", "docker run", 600))
                    .await;
            loop {
                let status = fake.command_status(&command, &instance).await;
                if matches!(status, Ok(spotpool::cloud::CommandStatus::Success)) {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            // 4-7. Tag, target group, target, rule.
            let group_name = format!("sp-{route}");
            until_ok(|| fake.tag_instance(&instance, &tags)).await;
            let group =
                until_ok(|| fake.create_target_group(&group_name, 18789, &health, &tags)).await;
            until_ok(|| fake.register_target(&group, &instance, 18789)).await;
            let pattern = RuleMatch::Path(format!("/{route}/*"));
            until_ok(|| fake.create_rule(LISTENER, 100 + n as u32, &pattern, &group, &tags)).await;
            // 8. Wait for the target's health.
            while !matches!(
                fake.target_healthy(&group, &instance, 18789).await,
                Ok(true)
            ) {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            // 9. The replacement.
            let request = launch(1, format!("replace-{n}"));
            until_ok(|| fake.launch_instances(&request)).await;
            started.elapsed()
        }));
        tokio::time::sleep(GAP).await;
    }
    let mut ready = Vec::new();
    for user in users {
        ready.push(user.await.unwrap());
    }
    let elb: usize = ELB_MUTATING.iter().map(|op| fake.count_calls(op)).sum();
    Run {
        ready,
        elb_mutating_per_claim: (elb - elb_before) as f64 / USERS as f64,
        elb_mutating_per_release: None,
        breakdown: None,
    }
}

/// spotpool's claim for `USERS` users over a warm pool of as many spares.
async fn ours(faults: bool) -> Run {
    let store = Store::open("sqlite::memory:").await.unwrap();
    tokio::time::pause();
    let fake = Arc::new(FakeCloud::simulated(
        "spotpool",
        profile(faults, true),
        SEED,
    ));
    let limited: Arc<dyn Cloud> = Arc::new(Limited::new(fake.clone(), &RateLimits::default()));
    let config = reconciler_config(USERS as u32, 2 * USERS as u32 + 10);
    let world = Arc::new(World::simulated(store, fake.clone(), limited, config));
    let keeper = tokio::spawn(hold_time_while_the_store_works(world.store.clone()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let reconciler = tokio::spawn(world.reconciler.clone().run_until_stopped(async {
        let _ = stopped.await;
    }));
    while world.ledger_count(InstanceStatus::Available).await < USERS {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let elb_before: usize = ELB_MUTATING.iter().map(|op| fake.count_calls(op)).sum();
    let count = |ops: &[&str]| -> usize { ops.iter().map(|op| fake.count_calls(op)).sum() };
    let (switches_before, tags_before, wiring_before) = (
        count(&["ModifyRule"]),
        count(&["AddTags"]),
        count(&["CreateTargetGroup", "CreateRule"]),
    );
    let mut puts = Vec::new();
    for n in 0..USERS {
        let user = format!("u{n}");
        let body = format!(r#"{{"secrets":{{"OPENAI_API_KEY":"sk-{user}"}}}}"#);
        let put_at = fake.now();
        loop {
            let (status, _, doc) = world
                .request_with_headers(
                    "PUT",
                    &format!("/v1/users/{user}/instance"),
                    Some(API_TOKEN),
                    &body,
                )
                .await;
            if status.is_success() {
                break;
            }
            assert!(
                status.as_u16() == 429 || status.is_server_error(),
                "{status} {doc}"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        puts.push((user, put_at));
        tokio::time::sleep(GAP).await;
    }
    let mut ready = Vec::new();
    for (user, put_at) in &puts {
        let id = UserId::parse(user).unwrap();
        loop {
            let row = world.store.get_user(&id).await.unwrap().expect("user row");
            if let Some(at) = row.ready_at {
                ready.push(Duration::from_millis((at - put_at) as u64));
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    // Every user's tag lands a pass after its `ready`: wait for the last one.
    while count(&["AddTags"]) - tags_before < USERS
        && world
            .store
            .list_users()
            .await
            .unwrap()
            .iter()
            .any(|u| u.routing.prewired.is_some())
    {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let elb: usize = ELB_MUTATING.iter().map(|op| fake.count_calls(op)).sum();
    let per_claim = |n: usize| n as f64 / USERS as f64;
    let breakdown = (
        per_claim(count(&["ModifyRule"]) - switches_before),
        per_claim(count(&["AddTags"]) - tags_before),
        per_claim(count(&["CreateTargetGroup", "CreateRule"]) - wiring_before),
    );
    // Then every user leaves: DELETE, and wait for the row to go.
    for (user, _) in &puts {
        let (status, _, doc) = world
            .request_with_headers(
                "DELETE",
                &format!("/v1/users/{user}/instance"),
                Some(API_TOKEN),
                "",
            )
            .await;
        assert_eq!(status.as_u16(), 202, "{doc}");
    }
    while !world.store.list_users().await.unwrap().is_empty() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let released: usize = ELB_MUTATING.iter().map(|op| fake.count_calls(op)).sum();
    let _ = stop.send(());
    reconciler.await.unwrap();
    keeper.abort();
    Run {
        ready,
        elb_mutating_per_claim: (elb - elb_before) as f64 / USERS as f64,
        elb_mutating_per_release: Some((released - elb) as f64 / USERS as f64),
        breakdown: Some(breakdown),
    }
}

fn row(name: &str, run: &Run, reference: Option<&Run>) -> String {
    let mut sorted = run.ready.clone();
    sorted.sort();
    let (p50, p99) = (quantile(&sorted, 0.5), quantile(&sorted, 0.99));
    let ratio = reference.map_or(" | |".to_string(), |r| {
        let mut theirs = r.ready.clone();
        theirs.sort();
        format!(
            " | {:.2}× | {:.2}×",
            p50 / quantile(&theirs, 0.5),
            p99 / quantile(&theirs, 0.99)
        )
    });
    let release = run
        .elb_mutating_per_release
        .map_or("n/a".to_string(), |n| format!("{n:.1}"));
    let per_claim = match run.breakdown {
        Some((path, tags, wiring)) => format!(
            "{:.1} ({path:.1} on the claim path, {tags:.1} AddTags after ready, {wiring:.1} wiring the replacement)",
            run.elb_mutating_per_claim
        ),
        None => format!("{:.1}", run.elb_mutating_per_claim),
    };
    format!("| {name} | {p50:.1} s | {p99:.1} s | {per_claim} | {release}{ratio} |")
}

/// Runs `run` on a runtime of its own (each run pauses its own clock).
fn on_own_runtime<F: std::future::Future<Output = Run>>(run: F) -> Run {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run)
}

#[test]
fn the_original_flow_and_spotpools_claim_side_by_side() {
    let aws_default = HealthCheck {
        path: "/".into(),
        interval_seconds: 30,
        timeout_seconds: 5,
        healthy_threshold: 5,
        unhealthy_threshold: 2,
        codes: "200".into(),
    };
    let spotpools = HealthCheck {
        interval_seconds: 5,
        healthy_threshold: 2,
        ..aws_default.clone()
    };
    let mut lines = vec![
        "| run | p50 | p99 | ELB mutating calls per claim | per release | ours ÷ original, p50 | p99 |"
            .to_string(),
        "|---|---|---|---|---|---|---|".to_string(),
    ];
    for (container, faults) in [
        (Container::SmallImage, false),
        (Container::SmallImage, true),
        (Container::OpenClaw, false),
        (Container::OpenClaw, true),
    ] {
        CONTAINER.with(|c| c.set(container));
        let label = format!(
            "{}, {}",
            match container {
                Container::SmallImage => "small image (1.5 s start)",
                Container::OpenClaw => "OpenClaw (20 s start)",
            },
            if faults {
                "10% 5xx + 10% throttling"
            } else {
                "no faults"
            }
        );
        let original_default = on_own_runtime(original(faults, aws_default.clone()));
        let original_tuned = on_own_runtime(original(faults, spotpools.clone()));
        let ours = on_own_runtime(ours(faults));
        for run in [&original_default, &original_tuned, &ours] {
            assert_eq!(run.ready.len(), USERS, "every claim got there");
        }
        lines.push(row(
            &format!("original, AWS default health check, {label}"),
            &original_default,
            None,
        ));
        lines.push(row(
            &format!("original, 5 s × 2 health check, {label}"),
            &original_tuned,
            None,
        ));
        lines.push(row(
            &format!("spotpool vs the original as written, {label}"),
            &ours,
            Some(&original_default),
        ));
        lines.push(row(
            &format!("spotpool vs the original with 5 s × 2, {label}"),
            &ours,
            Some(&original_tuned),
        ));
    }
    eprintln!(
        "{USERS} warm claims, one every {} s, seed {SEED}:\n{}",
        GAP.as_secs(),
        lines.join("\n")
    );
}
