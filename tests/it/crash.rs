//! Crash safety against the fake: for every cloud call of a scenario (replenish, claim with a
//! workspace, release, a move with the workspace, sleep, wake),
//! the daemon "crashes" right before the call takes effect and, in a second run, right after it
//! took effect but before the daemon saw the answer. The pass is dropped mid-flight (its tasks
//! are aborted, as with a SIGKILL), a fresh reconciler starts over the same store and cloud, and
//! runs until quiet. Then: no leaked instance, target group, rule, secret or volume; no user with
//! two instances; no instance with two users; no volume attached where its user is not; no
//! volume of a user that still exists deleted; every user `ready`, `failed` or gone.

use crate::world::World;
use spotpool::clock::Clock;
use spotpool::cloud::fake::FakeCloud;
use spotpool::cloud::{
    Cloud, CloudInstance, CloudResult, CloudSnapshot, CloudVolume, CommandStatus, HealthCheck,
    LaunchRequest, PoolResource, RuleAction, RuleInfo, SnapshotState, Tags, TargetGroupMetric,
    VolumeRequest,
};
use spotpool::model::{InstanceId, InstanceStatus, UserState};
use spotpool::reconcile::{Health, Outcome, Reconciler};
use spotpool::store::Store;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;

/// Where, relative to the armed call, the crash happens.
#[derive(Debug, Clone, Copy, PartialEq)]
enum When {
    /// The call never reaches AWS.
    Before,
    /// AWS did it, but the daemon died before it saw the answer.
    After,
}

/// A `Cloud` that parks forever on its `crash_at`-th call (1-based) and signals `crashed`.
struct Crashing {
    inner: Arc<FakeCloud>,
    calls: AtomicUsize,
    crash_at: usize,
    when: When,
    crashed: Notify,
}

impl Crashing {
    fn new(inner: Arc<FakeCloud>, crash_at: usize, when: When) -> Crashing {
        Crashing {
            inner,
            calls: AtomicUsize::new(0),
            crash_at,
            when,
            crashed: Notify::new(),
        }
    }

    async fn before(&self) -> usize {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.crash_at && self.when == When::Before {
            self.park().await;
        }
        n
    }

    async fn after(&self, n: usize) {
        if n == self.crash_at && self.when == When::After {
            self.park().await;
        }
    }

    async fn park(&self) {
        self.crashed.notify_one();
        std::future::pending::<()>().await;
    }
}

/// Forwards one call to the fake, crashing around it when armed.
macro_rules! forward {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {{
        let n = $self.before().await;
        let result = $self.inner.$method($($arg),*).await;
        $self.after(n).await;
        result
    }};
}

#[async_trait::async_trait]
impl Cloud for Crashing {
    async fn describe_pool_instances(&self) -> CloudResult<Vec<CloudInstance>> {
        forward!(self.describe_pool_instances())
    }
    async fn launch_instances(&self, request: &LaunchRequest) -> CloudResult<Vec<InstanceId>> {
        forward!(self.launch_instances(request))
    }
    async fn tag_instance(&self, instance: &InstanceId, tags: &Tags) -> CloudResult<()> {
        forward!(self.tag_instance(instance, tags))
    }
    async fn keep_blank_workspace(
        &self,
        instance: &InstanceId,
        volume_id: &str,
        device: &str,
        tags: &Tags,
    ) -> CloudResult<()> {
        forward!(self.keep_blank_workspace(instance, volume_id, device, tags))
    }
    async fn untag_instance(&self, instance: &InstanceId, keys: &[&str]) -> CloudResult<()> {
        forward!(self.untag_instance(instance, keys))
    }
    async fn terminate_instances(&self, instances: &[InstanceId]) -> CloudResult<()> {
        forward!(self.terminate_instances(instances))
    }
    async fn send_command(
        &self,
        instance: &InstanceId,
        comment: &str,
        script: &str,
        timeout_seconds: u32,
    ) -> CloudResult<String> {
        forward!(self.send_command(instance, comment, script, timeout_seconds))
    }
    async fn command_status(
        &self,
        command_id: &str,
        instance: &InstanceId,
    ) -> CloudResult<CommandStatus> {
        forward!(self.command_status(command_id, instance))
    }
    async fn agents_online(
        &self,
        instances: &[InstanceId],
    ) -> CloudResult<Option<std::collections::BTreeSet<InstanceId>>> {
        forward!(self.agents_online(instances))
    }
    async fn put_secret(&self, name: &str, value: &str, tags: &Tags) -> CloudResult<String> {
        forward!(self.put_secret(name, value, tags))
    }
    async fn update_secret(&self, secret_id: &str, value: &str) -> CloudResult<()> {
        forward!(self.update_secret(secret_id, value))
    }
    async fn tag_secret(&self, secret_id: &str, tags: &Tags) -> CloudResult<()> {
        forward!(self.tag_secret(secret_id, tags))
    }
    async fn untag_secret(&self, secret_id: &str, keys: &[&str]) -> CloudResult<()> {
        forward!(self.untag_secret(secret_id, keys))
    }
    async fn delete_secret(&self, secret_id: &str) -> CloudResult<()> {
        forward!(self.delete_secret(secret_id))
    }
    async fn create_target_group(
        &self,
        name: &str,
        port: u16,
        health: &HealthCheck,
        tags: &Tags,
    ) -> CloudResult<String> {
        forward!(self.create_target_group(name, port, health, tags))
    }
    async fn find_target_group(&self, name: &str) -> CloudResult<Option<String>> {
        forward!(self.find_target_group(name))
    }
    async fn register_target(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        port: u16,
    ) -> CloudResult<()> {
        forward!(self.register_target(target_group_arn, instance, port))
    }
    async fn delete_target_group(&self, target_group_arn: &str) -> CloudResult<()> {
        forward!(self.delete_target_group(target_group_arn))
    }
    async fn describe_rules(&self, listener_arn: &str) -> CloudResult<Vec<RuleInfo>> {
        forward!(self.describe_rules(listener_arn))
    }
    async fn create_rule(
        &self,
        listener_arn: &str,
        priority: u32,
        condition: &spotpool::model::RuleMatch,
        target_group_arn: &str,
        tags: &Tags,
    ) -> CloudResult<String> {
        forward!(self.create_rule(listener_arn, priority, condition, target_group_arn, tags))
    }
    async fn delete_rule(&self, rule_arn: &str) -> CloudResult<()> {
        forward!(self.delete_rule(rule_arn))
    }
    async fn list_pool_target_groups(&self) -> CloudResult<Vec<PoolResource>> {
        forward!(self.list_pool_target_groups())
    }
    async fn list_pool_rules(&self, listener_arn: &str) -> CloudResult<Vec<PoolResource>> {
        forward!(self.list_pool_rules(listener_arn))
    }
    async fn list_pool_secrets(&self) -> CloudResult<Vec<PoolResource>> {
        forward!(self.list_pool_secrets())
    }
    async fn target_health(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        port: u16,
    ) -> CloudResult<spotpool::cloud::TargetHealth> {
        forward!(self.target_health(target_group_arn, instance, port))
    }
    async fn deregister_target(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        port: u16,
    ) -> CloudResult<()> {
        forward!(self.deregister_target(target_group_arn, instance, port))
    }
    async fn set_rule_action(&self, rule_arn: &str, action: &RuleAction) -> CloudResult<()> {
        forward!(self.set_rule_action(rule_arn, action))
    }
    async fn set_rule_match(
        &self,
        rule_arn: &str,
        condition: &spotpool::model::RuleMatch,
    ) -> CloudResult<()> {
        forward!(self.set_rule_match(rule_arn, condition))
    }
    async fn tag_elb_resources(&self, arns: &[String], tags: &Tags) -> CloudResult<()> {
        forward!(self.tag_elb_resources(arns, tags))
    }
    async fn create_volume(&self, request: &VolumeRequest) -> CloudResult<String> {
        forward!(self.create_volume(request))
    }
    async fn describe_volume(&self, volume_id: &str) -> CloudResult<Option<CloudVolume>> {
        forward!(self.describe_volume(volume_id))
    }
    async fn list_pool_volumes(&self, owner: Option<&str>) -> CloudResult<Vec<CloudVolume>> {
        forward!(self.list_pool_volumes(owner))
    }
    async fn attach_volume(
        &self,
        volume_id: &str,
        instance: &InstanceId,
        device: &str,
    ) -> CloudResult<()> {
        forward!(self.attach_volume(volume_id, instance, device))
    }
    async fn detach_volume(
        &self,
        volume_id: &str,
        instance: &InstanceId,
        force: bool,
    ) -> CloudResult<()> {
        forward!(self.detach_volume(volume_id, instance, force))
    }
    async fn delete_volume(&self, volume_id: &str) -> CloudResult<()> {
        forward!(self.delete_volume(volume_id))
    }
    async fn create_snapshot(&self, volume_id: &str, tags: &Tags) -> CloudResult<String> {
        forward!(self.create_snapshot(volume_id, tags))
    }
    async fn list_pool_snapshots(&self, owner: Option<&str>) -> CloudResult<Vec<CloudSnapshot>> {
        forward!(self.list_pool_snapshots(owner))
    }
    async fn snapshot_state(&self, snapshot_id: &str) -> CloudResult<Option<SnapshotState>> {
        forward!(self.snapshot_state(snapshot_id))
    }
    async fn delete_snapshot(&self, snapshot_id: &str) -> CloudResult<()> {
        forward!(self.delete_snapshot(snapshot_id))
    }
    async fn subnet_zones(
        &self,
        subnet_ids: &[String],
    ) -> CloudResult<std::collections::BTreeMap<String, String>> {
        forward!(self.subnet_zones(subnet_ids))
    }
    async fn instance_vcpus(
        &self,
        instance_types: &[String],
    ) -> CloudResult<std::collections::BTreeMap<String, u32>> {
        forward!(self.instance_vcpus(instance_types))
    }
    async fn spot_prices(
        &self,
        instance_types: &[String],
        zones: &[String],
    ) -> CloudResult<Vec<spotpool::model::cost::SpotPrice>> {
        forward!(self.spot_prices(instance_types, zones))
    }
    async fn quota_values(
        &self,
        quotas: &[spotpool::model::quota::Quota],
    ) -> CloudResult<std::collections::BTreeMap<spotpool::model::quota::Quota, f64>> {
        forward!(self.quota_values(quotas))
    }
    async fn image_digest(&self, image: &spotpool::image::EcrImage) -> CloudResult<String> {
        forward!(self.image_digest(image))
    }
    async fn request_counts(
        &self,
        groups: &[TargetGroupMetric],
        window: std::time::Duration,
    ) -> CloudResult<Vec<f64>> {
        forward!(self.request_counts(groups, window))
    }
}

/// What the scenario does between reconcile phases.
#[derive(Debug, Clone, Copy)]
enum Step {
    Converge,
    Put,
    Delete,
    Recycle,
    Sleep,
    Wake,
    DrainZone,
}

/// Replenish, then claim two users (each gets a workspace), then release one of them, then move
/// the other off its instance (on-call's recycle: its workspace follows), put it to sleep, take
/// its workspace zone's capacity and spares away, and wake it: the wake copies the workspace to
/// the other zone through a snapshot (a relocation) and attaches the copy there.
const SCENARIO: &[Step] = &[
    Step::Converge,
    Step::Put,
    Step::Converge,
    Step::Delete,
    Step::Converge,
    Step::Recycle,
    Step::Converge,
    Step::Sleep,
    Step::Converge,
    Step::DrainZone,
    Step::Wake,
    Step::Converge,
];

fn reconciler_over(world: &World, store: Store, cloud: Arc<dyn Cloud>) -> Reconciler {
    let now = world.now.clone();
    let clock: Clock = Arc::new(move || now.load(Ordering::SeqCst));
    Reconciler::new(
        store,
        cloud,
        world.config.clone(),
        clock,
        Arc::new(Notify::new()),
        Arc::new(Health::default()),
        None,
    )
}

/// Runs passes until quiet. With `crashing`, returns early (true) when it crashes: the pass in
/// flight is dropped, which aborts every task it spawned.
async fn converge(world: &World, reconciler: &Reconciler, crashing: Option<&Crashing>) -> bool {
    for _ in 0..200 {
        let outcome = match crashing {
            Some(crashing) => tokio::select! {
                biased;
                _ = crashing.crashed.notified() => return true,
                outcome = reconciler.reconcile_once() => outcome,
            },
            None => reconciler.reconcile_once().await,
        };
        world.advance(1_000);
        if outcome.expect("pass") == Outcome::Converged {
            return false;
        }
    }
    let calls = world.cloud.calls();
    let users = world.store.list_users().await.unwrap();
    panic!(
        "no convergence in 200 passes; the last calls {:?}; the users {users:#?}",
        &calls[calls.len().saturating_sub(30)..]
    );
}

/// Plays the scenario, crashing at call `crash_at` (if any). Returns how many cloud calls the
/// crashing reconciler made.
async fn play(crash_at: usize, when: When) -> (World, usize) {
    // On disk: a restart reopens the database file, as a new process would (an in-memory
    // database would vanish with the connection the aborted pass dropped).
    // The health watch off: its reads are crash points with nothing between them to lose (a
    // read, then at most one restart command judged again after the grace), and they would
    // double the scenario's calls; `health` tests its branches.
    let mut config = crate::world::reconciler_config(2, 10);
    config.health_checks_per_second = 0.0;
    let world = World::on_disk_with(config).await;
    let crashing = Arc::new(Crashing::new(world.cloud.clone(), crash_at, when));
    // The crashing daemon has its own connections, as a process would. On the crash they are
    // closed, which lets statements it already handed to SQLite finish first: a killed process's
    // writes either landed before it died or never land (sqlx runs each connection's statements
    // on a worker thread, which dropping the pass does not stop).
    let path = world.db_path.clone().expect("an on-disk world");
    let crash_store = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let crashing_reconciler = reconciler_over(&world, crash_store.clone(), crashing.clone());
    let mut restarted: Option<World> = None;
    for step in SCENARIO {
        match step {
            Step::Put => {
                for user in ["alice", "bob"] {
                    world.put_user(user, r#"{"secrets":{"API_KEY":"k"}}"#).await;
                }
            }
            Step::Delete => {
                world.delete_user("alice").await;
            }
            Step::Recycle => {
                let bob = world.user_row("bob").await;
                let instance = bob.instance_id.expect("bob is ready on an instance");
                let (status, body) = world
                    .request(
                        "POST",
                        &format!("/v1/admin/instances/{}/recycle", instance.0),
                        Some(crate::world::ADMIN_TOKEN),
                        "",
                    )
                    .await;
                assert_eq!(status.as_u16(), 202, "{body}");
            }
            Step::Sleep | Step::Wake => {
                let what = if matches!(step, Step::Sleep) {
                    "sleep"
                } else {
                    "wake"
                };
                let (status, body) = world
                    .request(
                        "POST",
                        &format!("/v1/users/bob/{what}"),
                        Some(crate::world::API_TOKEN),
                        "",
                    )
                    .await;
                assert_eq!(status.as_u16(), 202, "{what}: {body}");
            }
            Step::DrainZone => {
                let bob = world.user_row("bob").await;
                let zone = bob
                    .workspace
                    .expect("bob has a workspace")
                    .availability_zone;
                let subnet = ["subnet-a", "subnet-b"]
                    .into_iter()
                    .find(|s| world.cloud.zone_of(s) == zone)
                    .expect("the workspace's zone is one of the pool's");
                world.cloud.fail_capacity("t3.small", subnet);
                for instance in world.cloud.live_instances() {
                    if instance.subnet_id == subnet {
                        world.cloud.reclaim(&instance.id);
                    }
                }
            }
            Step::Converge => {
                if restarted.is_none()
                    && converge(&world, &crashing_reconciler, Some(&crashing)).await
                {
                    // The restarted daemon: a new store connection and reconciler over the same
                    // database file and cloud.
                    crash_store.close().await;
                    restarted = Some(world.restart().await);
                }
                if let Some(daemon) = &restarted {
                    converge(&world, &daemon.reconciler, None).await;
                }
            }
        }
    }
    let calls = crashing.calls.load(Ordering::SeqCst);
    (world, calls)
}

async fn assert_promise(world: &World, context: &str) {
    world.assert_no_leaks().await;
    for user in world.store.list_users().await.unwrap() {
        assert!(
            matches!(user.state, UserState::Ready | UserState::Failed),
            "{context}: {} ended {:?}",
            user.user_id,
            user.state
        );
        assert_eq!(user.teardown, None, "{context}: undo left unfinished");
    }
    assert_eq!(
        world.user_state("alice").await,
        None,
        "{context}: alice not released"
    );
    assert_eq!(
        world.user_state("bob").await,
        Some(UserState::Ready),
        "{context}"
    );
    assert_eq!(
        world.ledger_count(InstanceStatus::Available).await,
        2,
        "{context}: pool not refilled"
    );
    assert!(
        world
            .cloud
            .secrets()
            .iter()
            .all(|(name, _)| name != "openclaw/alice"),
        "{context}: alice's secret survived"
    );
    // Bob kept one workspace throughout (moved, slept, copied to the other zone, woke): one
    // volume, the one his row records, in a zone with capacity; his old one was deleted only
    // once its copy existed; alice's went with her; no snapshot is left.
    let bob = world.user_row("bob").await;
    let volume = bob
        .workspace
        .and_then(|w| w.volume_id)
        .expect("bob has a workspace");
    let bobs: Vec<_> = world
        .cloud
        .volumes()
        .into_iter()
        .filter(|v| {
            v.tags
                .get(spotpool::cloud::tags::WORKSPACE)
                .map(String::as_str)
                == Some("bob")
        })
        .collect();
    assert_eq!(bobs.len(), 1, "{context}: bob's volumes {bobs:?}");
    assert_eq!(bobs[0].id, volume, "{context}");
    assert!(
        bobs[0].snapshot_id.is_some(),
        "{context}: bob's is the copy"
    );
    let recorded: Vec<String> = world
        .store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|u| u.workspace?.volume_id)
        .collect();
    for deleted in world.cloud.deleted_volumes() {
        let owner = deleted.tags.get(spotpool::cloud::tags::WORKSPACE);
        // A blank workspace nobody kept went with its spare.
        let blank = owner.is_none() && !recorded.contains(&deleted.id);
        assert!(
            blank
                || owner.map(String::as_str) == Some("alice")
                || world.cloud.was_copied(&deleted.id),
            "{context}: {} of {owner:?} deleted with its data",
            deleted.id
        );
    }
    assert!(
        world.cloud.snapshots().is_empty(),
        "{context}: snapshots left {:?}",
        world.cloud.snapshots()
    );
}

#[tokio::test]
async fn a_crash_at_any_step_boundary_leaks_nothing_and_every_user_ends_settled() {
    // A dry run counts the scenario's cloud calls.
    let (world, total) = play(usize::MAX, When::Before).await;
    assert_promise(&world, "without a crash").await;
    assert!(total > 30, "the scenario makes {total} calls");

    // Both crashes at a call play at once: their worlds share nothing, and one's waits (the
    // database's syncs) overlap the other's work.
    let mut runs = 0;
    for crash_at in 1..=total {
        let (before, after) =
            tokio::join!(play(crash_at, When::Before), play(crash_at, When::After));
        for (when, (world, _)) in [(When::Before, before), (When::After, after)] {
            assert_promise(
                &world,
                &format!("crash {when:?} call {crash_at} of {total}"),
            )
            .await;
            runs += 1;
        }
    }
    assert_eq!(runs, 2 * total);
    eprintln!("{runs} crash points ({total} cloud calls, before and after each), all settled");
}
