//! Benchmark: the reconcile loop at pool sizes of 1,000 to 10,000 instances (issue 11, "a loop
//! that scales"), on the in-memory fake cloud (plain mode) and an in-memory SQLite store, wired
//! by the daemon's own `App::assemble` as the test worlds (`tests/it/world.rs`) are.
//!
//! `cargo build --bins --examples && target/debug/examples/scale [INSTANCES...]` (default
//! `1000 5000 10000`). For each size N it builds a pool of N instances with 90 % of them held
//! by `ready` users and 10 % spare, then reports:
//! - one steady pass (nothing to do): its CPU time (every thread of the process, from
//!   `/proc/self/task/*/schedstat`), its wall time, and its AWS calls by operation (the fake's
//!   call log; the fake answers DescribeInstances in pages of 1,000 as AWS does at the
//!   daemon's MaxResults);
//! - a burst: 500 extra spares, then 500 new users PUT at once through the API's router, and
//!   passes until every one is `ready`: the wall time, the time per claim, and the passes;
//! - the same pass after one write to each table (it reads both again), and the burst's CPU
//!   per claim less that much per pass of the burst (an estimate of the claims' own cost);
//! - the process's peak RSS (`VmHWM` of `/proc/self/status`) once the burst is done.
//!
//! Building the pool through the reconciler (9,000 claims at 10,000 instances) would take
//! longer than the measurement, so the pool is seeded: the instances, volumes, target groups,
//! rules and secrets are created through the fake's `Cloud` operations, the users are PUT
//! through the API, and each user's row and ledger row are written as a finished claim leaves
//! them. The burst then goes the daemon's way: API, passes, the claim step machine.
//!
//! The users are spread over host-routed shards of 90 users each (`[[shard]]` tables,
//! `shard_tables`), one load balancer each, as the fake enforces AWS's limits per load balancer.

use axum::body::Body;
use axum::http::Request;
use spotpool::api;
use spotpool::app::{App, Parts};
use spotpool::clock::Clock;
use spotpool::cloud::fake::FakeCloud;
use spotpool::cloud::{Cloud, LaunchRequest, Tags, VolumeRequest, tags};
use spotpool::config::{Config, Settings, ShardSettings};
use spotpool::model::{
    ClaimProgress, ClaimStep, InstanceId, InstanceStatus, SentCommand, UserId, UserState, Workspace,
};
use spotpool::reconcile::{Outcome, Reconciler};
use spotpool::store::{InstanceRecord, Store};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tower::ServiceExt;

const API_TOKEN: &str = "service-token-0123456789";
const ADMIN_TOKEN: &str = "admin-token-0123456789";
const SUBNETS: [&str; 2] = ["subnet-a", "subnet-b"];
const BURST: usize = 500;
const USERS_PER_LISTENER: usize = 90;
const START: i64 = 1_700_000_000_000;

/// The shards the users are spread over, as `[[shard]]` tables: enough of them for `users` at
/// 90 each, each on a load balancer of its own, host-routed.
fn shard_tables(users: usize) -> Vec<ShardSettings> {
    let count = users.div_ceil(USERS_PER_LISTENER).max(1);
    (0..count)
        .map(|n| ShardSettings {
            name: Some(format!("shard-{n}")),
            listener_arn: Some(format!(
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/alb-{n}/{n}/2"
            )),
            routing: Some("host".into()),
            base_url: None,
            domain: Some(format!("shard-{n}.agents.example.com")),
            capacity: Some(USERS_PER_LISTENER as u32),
        })
        .collect()
}

fn config(instances: usize, users: usize) -> Config {
    let spares = instances - users;
    Settings {
        launch_template_id: Some("lt-bench".into()),
        subnet_ids: Some(SUBNETS.join(",")),
        vpc_id: Some("vpc-bench".into()),
        shard: Some(shard_tables(users + BURST)),
        container_image: Some("ghcr.io/openclaw/openclaw:latest".into()),
        public_base_url: Some("https://agents.example.com".into()),
        spotpool_api_token: Some(API_TOKEN.into()),
        spotpool_admin_token: Some(ADMIN_TOKEN.into()),
        pool_spare_count: Some(spares as u32),
        pool_max_instances: Some((instances + BURST) as u32),
        container_required_secrets: Some("none".into()),
        ..Settings::default()
    }
    .into_config()
    .expect("the benchmark's settings are valid")
}

/// CPU time of every thread of the process so far (the tokio workers and SQLite's thread).
fn cpu_time() -> Duration {
    let mut nanos: u64 = 0;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let path = task.expect("a task").path().join("schedstat");
        if let Ok(text) = std::fs::read_to_string(path) {
            nanos += text
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(nanos)
}

/// The process's peak resident set (VmHWM), in MB.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

struct Bench {
    store: Store,
    cloud: Arc<FakeCloud>,
    reconciler: Reconciler,
    router: axum::Router,
    now: Arc<AtomicI64>,
    config: Config,
}

impl Bench {
    async fn new(instances: usize, users: usize) -> Bench {
        let config = config(instances, users);
        let store = Store::open("sqlite::memory:").await.expect("store");
        let cloud = Arc::new(FakeCloud::new(&config.pool));
        // 10,000 users need more than the region's 3,000 target groups: the quota increase
        // docs/DEPLOY.md ("Shards") lists.
        cloud.set_route_limits(spotpool::cloud::fake::RouteLimits {
            target_groups_per_region: 20_000,
            ..Default::default()
        });
        let now = Arc::new(AtomicI64::new(START));
        cloud.set_now(START);
        let clock: Clock = {
            let now = now.clone();
            Arc::new(move || now.load(Ordering::SeqCst))
        };
        let parts = Parts {
            store,
            cloud: cloud.clone(),
            clock,
            queue: None,
            metrics: None,
            registry: None,
        };
        let app = App::assemble(&config, App::reconciler_config(&config), parts);
        app.api.health.reconciling.store(true, Ordering::Relaxed);
        Bench {
            store: app.store,
            cloud,
            reconciler: app.reconciler,
            router: api::router(app.api.clone()),
            now,
            config,
        }
    }

    fn now(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    async fn pass(&self) -> Outcome {
        let outcome = self.reconciler.reconcile_once().await.expect("a pass");
        let now = self.now.fetch_add(1_000, Ordering::SeqCst) + 1_000;
        self.cloud.set_now(now);
        outcome
    }

    async fn request(&self, method: &str, user: &str, body: &str) -> serde_json::Value {
        let request = Request::builder()
            .method(method)
            .uri(format!("/v1/users/{user}/instance"))
            .header("authorization", format!("Bearer {API_TOKEN}"))
            .body(Body::from(body.to_string()))
            .expect("a request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("a response");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("a body");
        assert!(status.is_success(), "{method} {user}: {status}");
        serde_json::from_slice(&bytes).expect("JSON")
    }

    /// `count` spares, running and probed: in the fake tagged `available`, in the ledger too.
    async fn seed_spares(&self, count: usize) -> Vec<InstanceId> {
        let tier = &self.config.tiers[0];
        let mut ids = Vec::new();
        for (n, subnet) in SUBNETS.iter().enumerate() {
            let share = count / SUBNETS.len() + usize::from(n < count % SUBNETS.len());
            if share == 0 {
                continue;
            }
            let request = LaunchRequest {
                tier: tier.name.clone(),
                instance_type: tier.instance_types[0].clone(),
                subnet_id: subnet.to_string(),
                count: share as u32,
                client_token: format!("seed-{}-{subnet}", self.now()),
                spot: true,
                launch_template: tier.runtime.launch.clone(),
                blank_workspace: None,
            };
            ids.extend(self.cloud.launch_instances(&request).await.expect("launch"));
        }
        let status = one_tag(tags::STATUS, InstanceStatus::Available.as_str());
        for id in &ids {
            self.cloud.tag_instance(id, &status).await.expect("tag");
        }
        let listed: BTreeMap<_, _> = self
            .cloud
            .describe_pool_instances()
            .await
            .expect("list")
            .into_iter()
            .map(|i| (i.id.clone(), i))
            .collect();
        for id in &ids {
            let seen = &listed[id];
            let mut record = InstanceRecord::new(
                id.clone(),
                tier.name.clone(),
                InstanceStatus::Available,
                seen.launched_at,
                self.now(),
            );
            record.arn = Some(seen.arn.clone());
            record.instance_type = Some(seen.instance_type.clone());
            record.availability_zone = Some(seen.availability_zone.clone());
            record.private_ip = seen.private_ip.clone();
            self.store.put_instance(&record).await.expect("ledger");
        }
        ids
    }

    /// `users` users PUT through the API, each left as a finished claim leaves it on one of
    /// `spares` (which becomes `assigned`): tagged, its secret bound, its workspace created and
    /// attached, a start command sent, a target group with the instance, a rule, `ready`.
    async fn seed_users(&self, users: usize, spares: &[InstanceId]) {
        let shards = self.config.shards.clone();
        let health = self.config.runtime.container.health_check.clone();
        for n in 0..users {
            let name = format!("user-{n:05}");
            self.request("PUT", &name, "{}").await;
            let id = UserId::parse(&name).expect("a user id");
            let mut user = self.store.get_user(&id).await.expect("store").expect("row");
            let instance = spares[n].clone();
            let mut record = self.store.get_instance(&instance).await.unwrap().unwrap();
            let zone = record.availability_zone.clone().unwrap_or_default();
            let mut own = one_tag(tags::POOL, &self.config.pool);
            own.insert(tags::USER_ID.into(), name.clone());
            let mut instance_tags = one_tag(tags::STATUS, InstanceStatus::Assigned.as_str());
            instance_tags.insert(tags::USER_ID.into(), name.clone());
            let cloud = &self.cloud;
            cloud.tag_instance(&instance, &instance_tags).await.unwrap();
            let secret = user.secret_arn.clone().unwrap_or_default();
            let arn = record.arn.clone().unwrap_or_default();
            cloud
                .tag_secret(&secret, &one_tag(tags::INSTANCE_ARN, &arn))
                .await
                .unwrap();
            let token = format!("ws-{name}");
            let mut volume_tags = own.clone();
            volume_tags.insert(tags::WORKSPACE.into(), name.clone());
            let volume = cloud
                .create_volume(&VolumeRequest {
                    availability_zone: zone.clone(),
                    size_gib: self.config.tiers[0].workspace_size_gib,
                    kms_key_id: None,
                    snapshot_id: None,
                    client_token: token.clone(),
                    tags: volume_tags,
                })
                .await
                .unwrap();
            cloud
                .attach_volume(&volume, &instance, "/dev/sdf")
                .await
                .unwrap();
            let command = cloud
                .send_command(&instance, "seeded start", "true", 600)
                .await
                .unwrap();
            let mut group_tags = own.clone();
            group_tags.insert(tags::INSTANCE_ID.into(), instance.0.clone());
            let group = cloud
                .create_target_group(
                    &spotpool::reconcile::target_group_name(&user.route),
                    self.config.runtime.container.port,
                    &health,
                    &group_tags,
                )
                .await
                .unwrap();
            cloud
                .register_target(&group, &instance, self.config.runtime.container.port)
                .await
                .unwrap();
            let shard = &shards[n / USERS_PER_LISTENER];
            let listener = shard.listener_arn.clone();
            let priority = (n % USERS_PER_LISTENER) as u32 + 1;
            let rule = cloud
                .create_rule(
                    &listener,
                    priority,
                    &shard.rule_match(&user.route),
                    &group,
                    &group_tags,
                )
                .await
                .unwrap();
            let now = self.now();
            user.state = UserState::Ready;
            user.instance_id = Some(instance.clone());
            user.claim = Some(ClaimProgress {
                step: ClaimStep::Routed,
                command: Some(SentCommand {
                    id: Some(command),
                    sent_at: now,
                }),
            });
            user.routing.listener_arn = Some(listener);
            user.shard = Some(shard.name.clone());
            user.routing.rule_priority = Some(priority);
            user.routing.rule_arn = Some(rule);
            user.routing.target_group_arn = Some(group);
            let mut workspace =
                Workspace::planned(token, zone, self.config.tiers[0].workspace_size_gib);
            workspace.volume_id = Some(volume);
            workspace.attached_to = Some(instance.clone());
            user.workspace = Some(workspace);
            user.claimed_at = Some(now);
            user.ready_at = Some(now);
            user.updated_at = now;
            assert!(self.store.update_user(&mut user).await.unwrap());
            record.status = InstanceStatus::Assigned;
            record.status_since = now;
            self.store.put_instance(&record).await.unwrap();
        }
    }
}

fn one_tag(key: &str, value: &str) -> Tags {
    let mut out = Tags::new();
    out.insert(key.to_string(), value.to_string());
    out
}

/// The fake's calls since `from`, by operation.
fn calls_since(cloud: &FakeCloud, from: usize) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for call in cloud.calls().into_iter().skip(from) {
        *out.entry(call).or_insert(0) += 1;
    }
    out
}

struct Row {
    instances: usize,
    users: usize,
    seed: Duration,
    pass_cpu: Duration,
    pass_wall: Duration,
    pass_calls: BTreeMap<&'static str, usize>,
    reread_cpu: Duration,
    burst_wall: Duration,
    burst_cpu: Duration,
    burst_passes: usize,
    rss_mb: f64,
}

async fn measure(instances: usize) -> Row {
    let users = instances * 9 / 10;
    let started = Instant::now();
    let bench = Bench::new(instances, users).await;
    let spares = bench.seed_spares(instances).await;
    bench.seed_users(users, &spares).await;
    // The first passes read the subnets' zones and the quotas, and settle anything left.
    for _ in 0..5 {
        if bench.pass().await == Outcome::Converged {
            break;
        }
    }
    assert_eq!(
        bench.pass().await,
        Outcome::Converged,
        "the pool is not steady"
    );
    let seed = started.elapsed();

    let from = bench.cloud.calls().len();
    let (cpu, wall) = (cpu_time(), Instant::now());
    let outcome = bench.pass().await;
    let (pass_cpu, pass_wall) = (cpu_time() - cpu, wall.elapsed());
    assert_eq!(outcome, Outcome::Converged, "the steady pass had work");
    let pass_calls = calls_since(&bench.cloud, from);
    // The same pass after one write to each table: a pass re-reads a table that changed.
    let touched = UserId::parse("user-00000").expect("a user id");
    let mut row = bench
        .store
        .get_user(&touched)
        .await
        .unwrap()
        .expect("a row");
    assert!(bench.store.update_user(&mut row).await.unwrap());
    let record = bench
        .store
        .get_instance(&spares[0])
        .await
        .unwrap()
        .expect("a ledger row");
    bench.store.put_instance(&record).await.unwrap();
    let cpu = cpu_time();
    assert_eq!(bench.pass().await, Outcome::Converged, "the pass had work");
    let reread_cpu = cpu_time() - cpu;
    // SCALE_PROFILE_PASSES=n: n more steady passes, for a profiler to look at.
    let extra: usize = std::env::var("SCALE_PROFILE_PASSES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    for _ in 0..extra {
        bench.pass().await;
    }

    bench.seed_spares(BURST).await;
    let (cpu, wall) = (cpu_time(), Instant::now());
    let names: Vec<String> = (0..BURST).map(|n| format!("burst-{n:04}")).collect();
    for name in &names {
        bench.request("PUT", name, "{}").await;
    }
    let mut burst_passes = 0;
    loop {
        burst_passes += 1;
        assert!(burst_passes <= 50, "the burst is not ready after 50 passes");
        bench.pass().await;
        // The burst's rows only: a read of every user here would be the benchmark's own cost.
        let mut ready = 0;
        for name in &names {
            let id = UserId::parse(name).expect("a user id");
            let row = bench.store.get_user(&id).await.unwrap().expect("a row");
            ready += usize::from(row.state == UserState::Ready);
        }
        if ready == BURST {
            break;
        }
    }
    let (burst_cpu, burst_wall) = (cpu_time() - cpu, wall.elapsed());
    Row {
        instances,
        users,
        seed,
        pass_cpu,
        pass_wall,
        pass_calls,
        reread_cpu,
        burst_wall,
        burst_cpu,
        burst_passes,
        rss_mb: peak_rss_mb(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a pool size"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 5_000, 10_000]
    } else {
        sizes
    };
    let profile = if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    };
    println!("spotpool scale benchmark, {profile} profile, in-memory fake (plain) and SQLite");
    println!();
    println!(
        "| instances | users | steady pass: CPU | wall | AWS calls | after a write: CPU | burst of {BURST} claims: wall | per claim | CPU per claim | less the passes' re-reads | passes | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for size in sizes {
        // A fresh runtime per size, like a fresh daemon; peak RSS is the process's so far, so
        // run the sizes in increasing order (or one per process).
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let row = runtime.block_on(measure(size));
        drop(runtime);
        let calls: Vec<String> = row
            .pass_calls
            .iter()
            .map(|(op, n)| format!("{op} {n}"))
            .collect();
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.1} s | {:.1} ms | {:.1} ms | {:.1} ms | {} | {:.0} MB |",
            row.instances,
            row.users,
            ms(row.pass_cpu),
            ms(row.pass_wall),
            calls.join(", "),
            ms(row.reread_cpu),
            row.burst_wall.as_secs_f64(),
            row.burst_wall.as_secs_f64() * 1000.0 / BURST as f64,
            row.burst_cpu.as_secs_f64() * 1000.0 / BURST as f64,
            (row.burst_cpu.as_secs_f64() - row.burst_passes as f64 * row.reread_cpu.as_secs_f64())
                * 1000.0
                / BURST as f64,
            row.burst_passes,
            row.rss_mb,
        );
        eprintln!(
            "({} instances seeded and settled in {:.1} s)",
            row.instances,
            row.seed.as_secs_f64()
        );
    }
}
