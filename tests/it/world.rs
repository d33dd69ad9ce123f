//! A test world: the real store and API and reconciler over the in-memory fake cloud, on an
//! injected clock. Passes are run explicitly, so there is no sleeping anywhere.
//!
//! [`World::simulated`] is the other kind: a simulated fake (`FakeCloud::simulated`) behind any
//! `Cloud` (the rate limiter, say), on the fake's clock, which is tokio's paused clock; its
//! reconciler runs as the daemon's loop (`run_until_stopped`) and simulated time passes.

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use spotpool::api::{self, AppState};
use spotpool::app::{App, Parts};
use spotpool::clock::Clock;
use spotpool::cloud::fake::FakeCloud;
use spotpool::cloud::{Cloud, tags};
use spotpool::config::{Config, Settings};
use spotpool::model::{InstanceStatus, UserState};
use spotpool::reconcile::{Outcome, Reconciler, ReconcilerConfig};
use spotpool::store::Store;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use tower::ServiceExt;

pub const API_TOKEN: &str = "service-token-0123456789";
pub const ADMIN_TOKEN: &str = "admin-token-0123456789";
pub const LISTENER: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/alb/1/2";

pub struct World {
    pub store: Store,
    pub cloud: Arc<FakeCloud>,
    pub reconciler: Reconciler,
    pub state: AppState,
    /// The API's router, built once like the daemon's (building it is the costly part of a
    /// request: the OpenAPI document).
    router: axum::Router,
    pub now: Arc<AtomicI64>,
    pub config: ReconcilerConfig,
    pub db_path: Option<PathBuf>,
    /// The webhook outbox's delivery (the leader's; the test drives it).
    pub webhooks: spotpool::webhook::Deliverer,
}

/// The worlds' webhook signing key.
pub const WEBHOOK_SECRET: &str = "test-webhook-signing-key-0123456789abcdef";

/// The daemon's configuration for a test world: the settings a deployment would give, parsed
/// by the daemon's own `Settings::into_config`, so every default is the daemon's.
pub fn test_config(spare_count: u32, max_instances: u32) -> Config {
    test_settings(spare_count, max_instances)
        .into_config()
        .expect("the test settings are valid")
}

/// The settings of [`test_config`], for a test that changes some.
pub fn test_settings(spare_count: u32, max_instances: u32) -> Settings {
    Settings {
        launch_template_id: Some("lt-test".into()),
        subnet_ids: Some("subnet-a,subnet-b".into()),
        vpc_id: Some("vpc-test".into()),
        alb_listener_arn: Some(LISTENER.into()),
        container_image: Some("ghcr.io/openclaw/openclaw:latest".into()),
        public_base_url: Some("https://agents.example.com".into()),
        spotpool_api_token: Some(API_TOKEN.into()),
        spotpool_admin_token: Some(ADMIN_TOKEN.into()),
        pool_spare_count: Some(spare_count),
        pool_max_instances: Some(max_instances),
        // A failing tier halts sooner than the daemon's default (10), so the test sees it.
        spotpool_launch_failure_limit: Some(5),
        // The worlds' users carry no gateway token; the API's refusal has tests of its own.
        container_required_secrets: Some("none".into()),
        // Webhooks on, to the tests' loopback receivers.
        spotpool_webhook_secret: Some(WEBHOOK_SECRET.into()),
        spotpool_webhook_allow_private: Some(true),
        ..Settings::default()
    }
}

/// `n` path-routed shards of `capacity` users, each on a load balancer of its own (the fake
/// enforces AWS's limits per load balancer): for worlds of more users than one holds.
pub fn shards(n: usize, capacity: u32) -> Vec<spotpool::model::Shard> {
    (0..n)
        .map(|i| spotpool::model::Shard {
            name: format!("shard-{i}"),
            listener_arn: format!(
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/alb-{i}/{i}/1"
            ),
            routing: spotpool::model::RouteMode::Path,
            base_url: format!("https://shard-{i}.agents.example.com"),
            domain: None,
            capacity,
        })
        .collect()
}

/// The reconciler's configuration for a test world: the daemon's, from [`test_config`].
pub fn reconciler_config(spare_count: u32, max_instances: u32) -> ReconcilerConfig {
    App::reconciler_config(&test_config(spare_count, max_instances))
}

fn start_clock() -> Arc<AtomicI64> {
    Arc::new(AtomicI64::new(1_700_000_000_000))
}

fn temp_db() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("spotpool-test-{}-{n}.db", std::process::id()))
}

impl World {
    /// The deleted volumes that were a user's workspace (a spare's blank that went with its
    /// instance never was).
    pub fn deleted_workspaces(&self) -> Vec<spotpool::cloud::fake::FakeVolume> {
        self.cloud
            .deleted_volumes()
            .into_iter()
            .filter(|v| v.tags.contains_key(tags::WORKSPACE))
            .collect()
    }

    /// A world over an in-memory database.
    pub async fn new(spare_count: u32, max_instances: u32) -> World {
        let store = Store::open("sqlite::memory:").await.unwrap();
        World::build(
            store,
            Arc::new(FakeCloud::default()),
            reconciler_config(spare_count, max_instances),
            None,
            start_clock(),
        )
    }

    /// A world over an in-memory database with the reconciler configuration `config`.
    pub async fn with_config(config: ReconcilerConfig) -> World {
        let store = Store::open("sqlite::memory:").await.unwrap();
        World::build(
            store,
            Arc::new(FakeCloud::default()),
            config,
            None,
            start_clock(),
        )
    }

    /// A world over an existing store and cloud (a new daemon over the same account).
    pub fn from_parts(
        store: Store,
        cloud: Arc<FakeCloud>,
        spare_count: u32,
        max_instances: u32,
    ) -> World {
        World::build(
            store,
            cloud,
            reconciler_config(spare_count, max_instances),
            None,
            start_clock(),
        )
    }

    /// A world over a fresh PostgreSQL database (`spotpool::store::testing`).
    pub async fn on_postgres(spare_count: u32, max_instances: u32) -> World {
        let url = spotpool::store::testing::postgres_url().await;
        let store = Store::open(&url).await.unwrap();
        World::build(
            store,
            Arc::new(FakeCloud::default()),
            reconciler_config(spare_count, max_instances),
            None,
            start_clock(),
        )
    }

    /// A world over a database file, so a second reconciler can be started over the same store.
    pub async fn on_disk(spare_count: u32, max_instances: u32) -> World {
        World::on_disk_with(reconciler_config(spare_count, max_instances)).await
    }

    /// A world over a database file with the reconciler configuration `config`.
    pub async fn on_disk_with(config: ReconcilerConfig) -> World {
        let path = temp_db();
        let store = Store::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        World::build(
            store,
            Arc::new(FakeCloud::default()),
            config,
            Some(path),
            start_clock(),
        )
    }

    /// A world over the simulated fake `fake`, which the daemon sees through `cloud` (e.g.
    /// `Limited` around it), on `store` and the fake's clock. Open the store before pausing the
    /// clock: connecting happens on sqlx's threads, and a paused clock would let the pool's
    /// acquire timeout run out meanwhile.
    pub fn simulated(
        store: Store,
        fake: Arc<FakeCloud>,
        cloud: Arc<dyn Cloud>,
        config: ReconcilerConfig,
    ) -> World {
        let clock: Clock = {
            let fake = fake.clone();
            Arc::new(move || fake.now())
        };
        let now = Arc::new(AtomicI64::new(fake.now()));
        World::assemble(store, fake, cloud, config, None, now, clock)
    }

    fn build(
        store: Store,
        cloud: Arc<FakeCloud>,
        config: ReconcilerConfig,
        db_path: Option<PathBuf>,
        now: Arc<AtomicI64>,
    ) -> World {
        let clock: Clock = {
            let now = now.clone();
            Arc::new(move || now.load(Ordering::SeqCst))
        };
        cloud.set_now(now.load(Ordering::SeqCst));
        let dyn_cloud: Arc<dyn Cloud> = cloud.clone();
        World::assemble(store, cloud, dyn_cloud, config, db_path, now, clock)
    }

    /// `cloud` is what the daemon calls; `fake` is what the assertions inspect (the same object
    /// unless something wraps it).
    fn assemble(
        store: Store,
        fake: Arc<FakeCloud>,
        dyn_cloud: Arc<dyn Cloud>,
        config: ReconcilerConfig,
        db_path: Option<PathBuf>,
        now: Arc<AtomicI64>,
        clock: Clock,
    ) -> World {
        // Wired by the daemon's own composition root; only the parts are the test's.
        let parts = Parts {
            store,
            cloud: dyn_cloud,
            clock,
            queue: None,
            metrics: None,
            registry: None,
        };
        let app = App::assemble(&test_config(0, 0), config.clone(), parts);
        // The world's reconciler is the one running passes (the test drives them).
        app.api.health.reconciling.store(true, Ordering::Relaxed);
        World {
            store: app.store,
            cloud: fake,
            reconciler: app.reconciler,
            router: api::router(app.api.clone()),
            state: app.api,
            now,
            config,
            db_path,
            webhooks: app.webhooks,
        }
    }

    /// A new reconciler and API over the same store and cloud, as after a crash and restart.
    /// The old world keeps ownership of the database file.
    pub async fn restart(&self) -> World {
        let store = match &self.db_path {
            Some(path) => Store::open(&format!("sqlite://{}", path.display()))
                .await
                .unwrap(),
            None => self.store.clone(),
        };
        World::build(
            store,
            self.cloud.clone(),
            self.config.clone(),
            None,
            self.now.clone(),
        )
    }

    /// A new daemon over the same store and cloud with another reconciler configuration, as
    /// after a configuration change and restart.
    pub fn reconfigured(&self, config: ReconcilerConfig) -> World {
        let (store, cloud) = (self.store.clone(), self.cloud.clone());
        World::build(store, cloud, config, None, self.now.clone())
    }

    pub fn advance(&self, millis: i64) {
        let now = self.now.fetch_add(millis, Ordering::SeqCst) + millis;
        self.cloud.set_now(now);
    }

    /// One pass, then the clock moves on by a second.
    pub async fn pass(&self) -> Outcome {
        let outcome = self
            .reconciler
            .reconcile_once()
            .await
            .expect("reconcile pass");
        self.advance(1_000);
        outcome
    }

    /// Runs passes until one converges; panics after `limit`.
    pub async fn run_until_quiet(&self, limit: usize) -> usize {
        for n in 1..=limit {
            if self.pass().await == Outcome::Converged {
                return n;
            }
        }
        panic!("no convergence after {limit} passes");
    }

    /// The API's router, for a request read as a stream.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    pub async fn request(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let (status, _, json) = self.request_with_headers(method, uri, token, body).await;
        (status, json)
    }

    /// A request through the router, answering the status, the headers and the JSON body.
    pub async fn request_with_headers(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, HeaderMap, serde_json::Value) {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let response = self
            .router
            .clone()
            .oneshot(builder.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, headers, json)
    }

    pub async fn put_user(&self, user: &str, body: &str) -> (StatusCode, serde_json::Value) {
        self.request(
            "PUT",
            &format!("/v1/users/{user}/instance"),
            Some(API_TOKEN),
            body,
        )
        .await
    }

    pub async fn get_user(&self, user: &str) -> (StatusCode, serde_json::Value) {
        self.request(
            "GET",
            &format!("/v1/users/{user}/instance"),
            Some(API_TOKEN),
            "",
        )
        .await
    }

    pub async fn delete_user(&self, user: &str) -> (StatusCode, serde_json::Value) {
        self.request(
            "DELETE",
            &format!("/v1/users/{user}/instance"),
            Some(API_TOKEN),
            "",
        )
        .await
    }

    /// The ids of the ledger's instances in `status`.
    pub async fn ledger_ids(&self, status: InstanceStatus) -> Vec<String> {
        self.store
            .list_instances()
            .await
            .unwrap()
            .into_iter()
            .filter(|i| i.status == status)
            .map(|i| i.instance_id.0)
            .collect()
    }

    pub async fn ledger_count(&self, status: InstanceStatus) -> usize {
        self.store
            .list_instances()
            .await
            .unwrap()
            .iter()
            .filter(|i| i.status == status)
            .count()
    }

    /// The user's row; panics if there is none.
    pub async fn user_row(&self, user: &str) -> spotpool::store::UserRecord {
        let id = spotpool::model::UserId::parse(user).unwrap();
        self.store.get_user(&id).await.unwrap().expect("user row")
    }

    /// Fills the pool, claims `user` with `body`, runs until quiet and returns the document.
    pub async fn ready_user(&self, user: &str, body: &str) -> serde_json::Value {
        self.run_until_quiet(20).await;
        self.put_user(user, body).await;
        self.run_until_quiet(30).await;
        let (_, doc) = self.get_user(user).await;
        assert_eq!(doc["state"], "ready", "{doc}");
        doc
    }

    pub async fn user_state(&self, user: &str) -> Option<UserState> {
        let id = spotpool::model::UserId::parse(user).unwrap();
        self.store.get_user(&id).await.unwrap().map(|u| u.state)
    }

    /// The promise: every live instance, target group, rule and secret belongs to something the
    /// store wants, no user holds two instances, and no slot of an instance serves two users (a
    /// dedicated instance has one slot; a shared one's users are not named by a tag).
    pub async fn assert_no_leaks(&self) {
        let users = self.store.list_users().await.unwrap();
        let ledger = self.store.list_instances().await.unwrap();
        let mut holders: HashMap<String, String> = HashMap::new();
        let mut slots: HashSet<(String, u32)> = HashSet::new();
        let mut shared: HashSet<String> = HashSet::new();
        for user in &users {
            if let Some(instance) = &user.instance_id {
                assert!(
                    slots.insert((instance.0.clone(), user.slot)),
                    "slot {} of instance {instance} serves two users",
                    user.slot
                );
                if holders
                    .insert(instance.0.clone(), user.user_id.to_string())
                    .is_some()
                {
                    shared.insert(instance.0.clone());
                }
            }
        }
        let tiers = self.config.tiers.get();
        for record in &ledger {
            let slots =
                (tiers.iter().find(|t| t.name == record.tier)).map_or(1, |t| t.slots_per_instance);
            if slots > 1 {
                shared.insert(record.instance_id.0.clone());
            }
        }
        let ledger_ids: HashSet<&str> = ledger.iter().map(|i| i.instance_id.0.as_str()).collect();
        for instance in self.cloud.live_instances() {
            assert!(
                ledger_ids.contains(instance.id.0.as_str()),
                "instance {} is untracked",
                instance.id
            );
            let status = instance.tags.get(tags::STATUS).map(String::as_str);
            let record = ledger
                .iter()
                .find(|r| r.instance_id == instance.id)
                .unwrap();
            match record.status {
                InstanceStatus::Assigned => {
                    let holder = holders.get(&instance.id.0);
                    assert!(
                        holder.is_some(),
                        "assigned instance {} has no user",
                        instance.id
                    );
                    if !shared.contains(&instance.id.0) {
                        assert_eq!(
                            instance.tags.get(tags::USER_ID),
                            holder,
                            "UserId tag of {}",
                            instance.id
                        );
                    }
                }
                InstanceStatus::Available | InstanceStatus::Initializing => {
                    assert!(
                        !holders.contains_key(&instance.id.0),
                        "spare {} is held",
                        instance.id
                    );
                    assert_eq!(
                        status,
                        Some(record.status.as_str()),
                        "Status tag of {}",
                        instance.id
                    );
                }
                InstanceStatus::Terminating => {
                    panic!("instance {} terminating but still running", instance.id)
                }
            }
        }
        // Users' routes, and the warm routes of the spares in the ledger.
        let group_arns: HashSet<&str> = users
            .iter()
            .filter_map(|u| u.routing.target_group_arn.as_deref())
            .chain(
                ledger
                    .iter()
                    .filter_map(|r| r.warm.target_group_arn.as_deref()),
            )
            .collect();
        for group in self.cloud.target_groups() {
            assert!(
                group_arns.contains(group.arn.as_str()),
                "leaked target group {}",
                group.name
            );
        }
        let rule_arns: HashSet<&str> = users
            .iter()
            .filter_map(|u| u.routing.rule_arn.as_deref())
            .chain(ledger.iter().filter_map(|r| r.warm.rule_arn.as_deref()))
            .collect();
        for row in &ledger {
            if !row.warm.is_empty() {
                assert!(
                    matches!(
                        row.status,
                        InstanceStatus::Available | InstanceStatus::Initializing
                    ),
                    "{} is {} with a warm route",
                    row.instance_id,
                    row.status.as_str()
                );
            }
        }
        for rule in self.cloud.rules() {
            assert!(
                rule_arns.contains(rule.arn.as_str()),
                "leaked rule {}",
                rule.condition.value()
            );
        }
        // Every volume is a user's workspace (or the copy of one being relocated), attached at
        // most to that user's instance; a deleted volume was a released user's, or the source
        // of a finished copy.
        let workspaces: HashMap<&str, &spotpool::store::UserRecord> = users
            .iter()
            .flat_map(|u| {
                let workspace = u.workspace.as_ref();
                let volume = workspace.and_then(|w| w.volume_id.as_deref());
                let copy = workspace
                    .and_then(|w| w.relocation.as_ref())
                    .and_then(|r| r.volume_id.as_deref());
                [volume, copy].into_iter().flatten().map(move |v| (v, u))
            })
            .collect();
        for volume in self.cloud.volumes() {
            let owner = workspaces.get(volume.id.as_str());
            let goes_with_instance = volume
                .attachment
                .as_ref()
                .is_some_and(|a| a.delete_on_termination);
            if let Some(owner) = owner {
                assert!(
                    !goes_with_instance,
                    "{}'s workspace {} would go with its instance",
                    owner.user_id, volume.id
                );
            } else if goes_with_instance {
                // A spare's blank workspace, or one a user with a workspace left unused: it
                // goes with its instance.
                continue;
            }
            assert!(owner.is_some(), "leaked volume {}", volume.id);
            if let (Some(attachment), Some(owner)) = (&volume.attachment, owner) {
                let holders = [owner.instance_id.as_ref(), owner.move_target()];
                assert!(
                    holders.contains(&Some(&attachment.instance)),
                    "volume {} attached to {}, which {} does not hold",
                    volume.id,
                    attachment.instance,
                    owner.user_id
                );
            }
        }
        // A snapshot exists only for a relocation in progress (recorded, or tagged with its
        // token before the id is recorded).
        for snapshot in self.cloud.snapshots() {
            let wanted = users
                .iter()
                .filter_map(|u| u.workspace.as_ref()?.relocation.as_ref())
                .any(|r| {
                    r.snapshot_id.as_deref() == Some(snapshot.id.as_str())
                        || snapshot.tags.get(tags::RELOCATION) == Some(&r.client_token)
                });
            assert!(wanted, "leaked snapshot {}", snapshot.id);
        }
        for deleted in self.cloud.deleted_volumes() {
            let owner = deleted
                .tags
                .get(tags::WORKSPACE)
                .cloned()
                .unwrap_or_default();
            let released = !users.iter().any(|u| u.user_id.as_str() == owner);
            assert!(
                released || self.cloud.was_copied(&deleted.id),
                "volume {} of {owner}, who still exists, was deleted",
                deleted.id
            );
        }
        let secret_arns: HashSet<&str> = users
            .iter()
            .filter_map(|u| u.secret_arn.as_deref())
            .collect();
        for (name, secret) in self.cloud.secrets() {
            assert!(
                secret_arns.contains(secret.arn.as_str()),
                "leaked secret {name}"
            );
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(path) = &self.db_path {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
    }
}
