//! Workspaces on the fake: each user's EBS volume is created in its first instance's zone,
//! follows the user through moves, sleep, wake and recovery, is copied to another zone only when
//! its zone has no capacity, and is deleted only with the user.

use crate::world::{API_TOKEN, World, reconciler_config};
use spotpool::cloud::fake::FakeVolume;
use spotpool::cloud::{AttachmentState, CloudErrorKind, CommandStatus, VolumeState, tags};
use spotpool::model::{InstanceId, UserState};

const SECRET_BODY: &str = r#"{"secrets":{"OPENAI_API_KEY":"sk-test-value-123"}}"#;

impl World {
    fn volume_of(&self, user: &str) -> FakeVolume {
        let volumes: Vec<FakeVolume> = self
            .cloud
            .volumes()
            .into_iter()
            .filter(|v| v.tags.get(tags::WORKSPACE).map(String::as_str) == Some(user))
            .collect();
        assert_eq!(volumes.len(), 1, "{user}'s volumes: {volumes:?}");
        volumes.into_iter().next().unwrap()
    }

    async fn post(&self, user: &str, what: &str) -> (axum::http::StatusCode, serde_json::Value) {
        self.request(
            "POST",
            &format!("/v1/users/{user}/{what}"),
            Some(API_TOKEN),
            "",
        )
        .await
    }

    /// Alice's claim, its first attempt rolled back by `count` fatal failures of `operation`,
    /// then ready on its retry; her instance.
    async fn ready_after_a_rollback(&self, operation: &'static str, count: usize) -> InstanceId {
        self.cloud
            .fail_next(operation, CloudErrorKind::Fatal, count);
        self.put_user("alice", SECRET_BODY).await;
        self.run_until_quiet(80).await;
        let (_, doc) = self.get_user("alice").await;
        assert_eq!(doc["state"], "ready", "{doc}");
        let journal = self.store.journal_since(0, 10_000).await.unwrap();
        assert!(
            journal.iter().any(|e| e.kind == "claim.requeued"),
            "{journal:?}"
        );
        InstanceId(doc["instance_id"].as_str().unwrap().into())
    }

    /// The start-container command sent to `instance`.
    fn start_command_on(&self, instance: &InstanceId) -> spotpool::cloud::fake::FakeCommand {
        self.cloud
            .commands()
            .into_iter()
            .find(|c| &c.instance == instance && c.script.contains("start the user's container"))
            .expect("a start command")
    }

    fn zone_of_instance(&self, id: &InstanceId) -> String {
        self.cloud
            .zone_of(&self.cloud.instance(id).unwrap().subnet_id)
    }
}

/// A pool whose spares have no blank workspace: a first claim creates and attaches one.
fn without_blanks(spare_count: u32, max_instances: u32) -> spotpool::reconcile::ReconcilerConfig {
    let mut config = reconciler_config(spare_count, max_instances);
    config.blank_workspaces = false;
    config
}

fn attached_to(volume: &FakeVolume) -> Option<InstanceId> {
    volume
        .attachment
        .as_ref()
        .filter(|a| a.state == AttachmentState::Attached)
        .map(|a| a.instance.clone())
}

#[tokio::test]
async fn a_claim_creates_the_workspace_in_the_instances_zone_and_mounts_it() {
    let world = World::with_config(without_blanks(2, 10)).await;
    let doc = world.ready_user("alice", SECRET_BODY).await;
    let instance = InstanceId(doc["instance_id"].as_str().unwrap().into());
    let volume = world.volume_of("alice");
    assert_eq!(volume.zone, world.zone_of_instance(&instance));
    assert_eq!(volume.size_gib, 8);
    assert_eq!(attached_to(&volume), Some(instance.clone()));
    assert_eq!(
        volume.tags.get(tags::POOL).map(String::as_str),
        Some("spotpool")
    );
    assert_eq!(
        volume.tags.get(tags::USER_ID).map(String::as_str),
        Some("alice")
    );
    // GET shows it, and the start command mounted exactly it.
    assert_eq!(doc["workspace"]["volume_id"], volume.id.as_str());
    assert_eq!(doc["workspace"]["availability_zone"], volume.zone.as_str());
    assert_eq!(doc["workspace"]["attached_to"], instance.0.as_str());
    assert_eq!(doc["workspace"]["size_gib"], 8);
    let start = world.start_command_on(&instance);
    assert!(
        start
            .script
            .contains(&format!("WORKSPACE_VOLUME_ID='{}'", volume.id))
    );
    // Attached before the start was sent.
    let calls = world.cloud.calls();
    let attach = calls.iter().position(|c| *c == "AttachVolume").unwrap();
    let first_send_after = calls[attach..].contains(&"SendCommand");
    assert!(first_send_after);
    world.assert_no_leaks().await;
}

/// Each spare is launched with a blank workspace that goes with it; a first claim keeps it where
/// it is (no CreateVolume, no AttachVolume) and makes it the user's for good before the start:
/// it outlives the instance, and follows the user like any workspace.
#[tokio::test]
async fn a_first_claim_keeps_the_spares_blank_workspace_where_it_is() {
    let world = World::new(2, 10).await;
    world.run_until_quiet(20).await;
    let spares = world.cloud.live_instances();
    assert_eq!(spares.len(), 2);
    for spare in &spares {
        let blank = spare.blank_volume.clone().expect("launched with a blank");
        let volume = world
            .cloud
            .volumes()
            .into_iter()
            .find(|v| v.id == blank)
            .unwrap();
        let attachment = volume.attachment.clone().expect("attached at launch");
        assert_eq!(attachment.instance, spare.id);
        assert!(attachment.delete_on_termination, "goes with the spare");
        assert!(!volume.tags.contains_key(tags::WORKSPACE));
        assert_eq!(volume.zone, world.zone_of_instance(&spare.id));
    }

    let doc = world.ready_user("alice", SECRET_BODY).await;
    let instance = InstanceId(doc["instance_id"].as_str().unwrap().into());
    let blank = world
        .cloud
        .instance(&instance)
        .unwrap()
        .blank_volume
        .unwrap();
    let volume = world.volume_of("alice");
    assert_eq!(volume.id, blank, "alice's workspace is her spare's blank");
    assert_eq!(doc["workspace"]["volume_id"], blank.as_str());
    assert_eq!(doc["workspace"]["attached_to"], instance.0.as_str());
    assert_eq!(doc["workspace"]["size_gib"], 8);
    assert_eq!(
        volume.tags.get(tags::USER_ID).map(String::as_str),
        Some("alice")
    );
    assert_eq!(
        volume.tags.get(tags::POOL).map(String::as_str),
        Some("spotpool")
    );
    assert!(
        !volume.attachment.unwrap().delete_on_termination,
        "kept past the instance"
    );
    let calls = world.cloud.calls();
    assert!(!calls.contains(&"CreateVolume") && !calls.contains(&"AttachVolume"));
    // Kept before the start was sent; the start mounts exactly it.
    let kept = calls
        .iter()
        .position(|c| *c == "ModifyInstanceAttribute")
        .unwrap();
    assert!(calls[kept..].contains(&"SendCommand"));
    let start = world.start_command_on(&instance);
    assert!(
        start
            .script
            .contains(&format!("WORKSPACE_VOLUME_ID='{blank}'"))
    );
    world.assert_no_leaks().await;

    // Spot takes the instance: the workspace outlives it and follows alice to a spare, whose
    // own blank stays unused and goes with it.
    world.cloud.reclaim(&instance);
    world.run_until_quiet(60).await;
    let (_, after) = world.get_user("alice").await;
    assert_eq!(after["state"], "ready", "{after}");
    let new = InstanceId(after["instance_id"].as_str().unwrap().into());
    assert_ne!(new, instance);
    let moved = world.volume_of("alice");
    assert_eq!(moved.id, blank, "the same volume");
    assert_eq!(attached_to(&moved), Some(new.clone()));
    assert!(world.deleted_workspaces().is_empty());
    let unused = world.cloud.instance(&new).unwrap().blank_volume.unwrap();
    assert_ne!(unused, blank);
    world.assert_no_leaks().await;

    // Deleting alice deletes her workspace; the blanks that went with their instances were
    // never anybody's.
    world.delete_user("alice").await;
    world.run_until_quiet(40).await;
    let deleted: Vec<String> = world
        .deleted_workspaces()
        .into_iter()
        .map(|v| v.id)
        .collect();
    assert_eq!(deleted, vec![blank]);
    world.assert_no_leaks().await;
}

/// A claim rolled back before the blank it took was tagged forgets it: no container ever
/// wrote to it, it still goes with its spare (which returns to the pool with it), and the
/// retry keeps a blank of its own.
#[tokio::test]
async fn a_claim_rolled_back_before_tagging_its_blank_forgets_it() {
    let world = World::new(2, 10).await;
    world.run_until_quiet(20).await;
    let blanks: Vec<String> = world
        .cloud
        .live_instances()
        .into_iter()
        .filter_map(|i| i.blank_volume)
        .collect();
    // Both CreateTags of the first step (the instance's, the blank's) are refused.
    let instance = world.ready_after_a_rollback("CreateTags", 2).await;
    let volume = world.volume_of("alice");
    assert_eq!(
        world.cloud.instance(&instance).unwrap().blank_volume,
        Some(volume.id.clone()),
        "the retry kept its own spare's blank"
    );
    assert!(!volume.attachment.unwrap().delete_on_termination);
    // The first spare's blank was never the user's: it is still a blank, or the retry's.
    for blank in blanks.iter().filter(|b| **b != volume.id) {
        let still = world.cloud.volumes().into_iter().find(|v| &v.id == blank);
        assert!(still.is_none_or(|v| !v.tags.contains_key(tags::WORKSPACE)));
    }
    assert!(world.deleted_workspaces().is_empty());
    world.assert_no_leaks().await;
}

/// A claim whose keep fails after the blank was tagged rolls back: the tagged blank is the
/// user's workspace from then on, detached from the spare (which goes back to the pool, never
/// started) and attached to the next claim's instance, never deleted.
#[tokio::test]
async fn a_claim_whose_keep_fails_retries_with_the_tagged_blank_as_its_workspace() {
    let world = World::new(2, 10).await;
    world.run_until_quiet(20).await;
    let instance = world
        .ready_after_a_rollback("ModifyInstanceAttribute", 1)
        .await;
    let volume = world.volume_of("alice");
    assert_eq!(attached_to(&volume), Some(instance.clone()));
    assert_ne!(
        world.cloud.instance(&instance).unwrap().blank_volume,
        Some(volume.id.clone()),
        "the first spare's blank, moved to the retry's instance"
    );
    assert!(!volume.attachment.unwrap().delete_on_termination);
    assert!(world.deleted_workspaces().is_empty());
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_recycle_stops_detaches_and_attaches_the_same_workspace_to_a_spare_of_its_zone() {
    let world = World::new(2, 10).await;
    let before = world.ready_user("alice", SECRET_BODY).await;
    world.run_until_quiet(20).await;
    let old = InstanceId(before["instance_id"].as_str().unwrap().into());
    let volume = world.volume_of("alice");
    world
        .request(
            "POST",
            &format!("/v1/admin/instances/{}/recycle", old.0),
            Some(crate::world::ADMIN_TOKEN),
            "",
        )
        .await;
    world.run_until_quiet(60).await;
    let (_, after) = world.get_user("alice").await;
    assert_eq!(after["state"], "ready");
    let new = InstanceId(after["instance_id"].as_str().unwrap().into());
    assert_ne!(new, old);
    assert_eq!(after["route"], before["route"]);
    let moved = world.volume_of("alice");
    assert_eq!(moved.id, volume.id, "the same volume");
    assert_eq!(attached_to(&moved), Some(new.clone()));
    assert_eq!(world.zone_of_instance(&new), volume.zone);
    // The old container was stopped and the file system unmounted before the detach.
    let stop = world
        .cloud
        .commands()
        .into_iter()
        .find(|c| c.instance == old && c.script.contains("stop-workspace.sh"))
        .expect("a stop command on the old instance");
    assert!(
        stop.script
            .contains(&format!("WORKSPACE_VOLUME_ID='{}'", volume.id))
    );
    assert!(world.deleted_workspaces().is_empty());
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn sleep_keeps_workspace_secret_and_route_and_wake_brings_the_same_ones_back() {
    let world = World::new(1, 10).await;
    let before = world.ready_user("alice", SECRET_BODY).await;
    let volume = world.volume_of("alice");
    let row = world.user_row("alice").await;
    let (rule, secret) = (
        row.routing.rule_arn.clone().unwrap(),
        row.secret_arn.clone(),
    );

    let (status, doc) = world.post("alice", "sleep").await;
    assert_eq!(status, 202, "{doc}");
    assert_eq!(doc["state"], "sleeping");
    world.run_until_quiet(40).await;
    let (_, asleep) = world.get_user("alice").await;
    assert_eq!(asleep["state"], "asleep");
    assert_eq!(asleep["instance_id"], serde_json::Value::Null);
    assert_eq!(asleep["route"], before["route"]);
    assert_eq!(asleep["workspace"]["attached_to"], serde_json::Value::Null);
    let kept = world.volume_of("alice");
    assert_eq!(kept.id, volume.id);
    assert_eq!(kept.state, VolumeState::Available);
    // The rule answers "asleep"; the user holds no target group (a load balancer's 100 target
    // groups are not spent on sleepers).
    let rules = world.cloud.rules();
    let asleep_rule = rules.iter().find(|r| r.arn == rule).unwrap();
    assert_eq!(asleep_rule.fixed_response, Some(503));
    let spares = world
        .ledger_ids(spotpool::model::InstanceStatus::Available)
        .await;
    for group in world.cloud.target_groups() {
        assert!(
            spares
                .iter()
                .any(|s| group.name == format!("sp-warm-{}", &s[2..])),
            "only the spares' warm groups are left: {}",
            group.name
        );
    }
    let row = world.user_row("alice").await;
    assert_eq!(row.routing.target_group_arn, None);
    assert_eq!(row.secret_arn, secret);
    world.assert_no_leaks().await;
    // Sleeping again is the same answer.
    assert_eq!(world.post("alice", "sleep").await.0, 202);

    let (status, doc) = world.post("alice", "wake").await;
    assert_eq!(status, 202, "{doc}");
    assert_eq!(doc["state"], "queued");
    world.run_until_quiet(40).await;
    let (_, awake) = world.get_user("alice").await;
    assert_eq!(awake["state"], "ready");
    assert_eq!(awake["route"], before["route"]);
    let instance = InstanceId(awake["instance_id"].as_str().unwrap().into());
    let attached = world.volume_of("alice");
    assert_eq!(attached.id, volume.id);
    assert_eq!(attached_to(&attached), Some(instance));
    let rules = world.cloud.rules();
    let forwarding = rules.iter().find(|r| r.arn == rule).unwrap();
    assert_eq!(
        forwarding.fixed_response, None,
        "the same rule forwards again"
    );
    assert_eq!(
        Some(forwarding.target_group_arn.clone()),
        world.user_row("alice").await.routing.target_group_arn
    );
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_put_wakes_an_asleep_user_and_sleep_and_wake_refuse_what_they_cannot_do() {
    let world = World::new(1, 10).await;
    world.run_until_quiet(20).await;
    world.put_user("bob", "{}").await;
    // Not ready yet: a sleep is refused with the state.
    let (status, body) = world.post("bob", "sleep").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "not_ready");
    assert_eq!(world.post("nobody", "sleep").await.0, 404);
    assert_eq!(world.post("nobody", "wake").await.0, 404);
    assert_eq!(world.post("Bad_Id", "wake").await.0, 400);
    world.run_until_quiet(40).await;

    assert_eq!(world.post("bob", "sleep").await.0, 202);
    let (status, body) = world.post("bob", "wake").await;
    assert_eq!(status, 409, "still falling asleep: {body}");
    assert_eq!(body["error"]["code"], "falling_asleep");
    // A PUT meanwhile is refused the same way, rather than accepted and lost.
    let (status, body) = world.put_user("bob", "{}").await;
    assert_eq!(status, 409, "still falling asleep: {body}");
    assert_eq!(body["error"]["code"], "falling_asleep");
    world.run_until_quiet(40).await;
    assert_eq!(world.user_state("bob").await, Some(UserState::Asleep));
    let (status, _) = world.put_user("bob", "{}").await;
    assert_eq!(status, 202);
    world.run_until_quiet(40).await;
    assert_eq!(world.user_state("bob").await, Some(UserState::Ready));
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn delete_removes_the_workspace_and_only_then_the_user() {
    let world = World::new(1, 10).await;
    world.ready_user("alice", SECRET_BODY).await;
    let volume = world.volume_of("alice");
    world.delete_user("alice").await;
    world.run_until_quiet(40).await;
    assert_eq!(world.user_state("alice").await, None);
    assert!(
        world
            .cloud
            .volumes()
            .iter()
            .all(|v| !v.tags.contains_key(tags::WORKSPACE)),
        "only the spares' blank workspaces are left"
    );
    let deleted = world.deleted_workspaces();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].id, volume.id);
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_lost_instance_is_recovered_with_the_same_workspace() {
    let world = World::new(2, 10).await;
    let before = world.ready_user("alice", SECRET_BODY).await;
    let volume = world.volume_of("alice");
    let old = InstanceId(before["instance_id"].as_str().unwrap().into());
    world.cloud.reclaim(&old);
    world.run_until_quiet(60).await;
    let (_, after) = world.get_user("alice").await;
    assert_eq!(after["state"], "ready");
    let new = InstanceId(after["instance_id"].as_str().unwrap().into());
    assert_ne!(new, old);
    let recovered = world.volume_of("alice");
    assert_eq!(recovered.id, volume.id, "EBS survives the instance");
    assert_eq!(attached_to(&recovered), Some(new));
    assert!(world.deleted_workspaces().is_empty());
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn failed_claims_keep_the_workspace_detached_and_never_delete_it() {
    let world = World::new(1, 10).await;
    world.ready_user("alice", SECRET_BODY).await;
    let volume = world.volume_of("alice");
    world.post("alice", "sleep").await;
    world.run_until_quiet(40).await;
    world.cloud.command_outcome(
        "start the user's container",
        CommandStatus::Failed("spotpool: image missing".into()),
    );
    world.post("alice", "wake").await;
    world.run_until_quiet(80).await;
    assert_eq!(world.user_state("alice").await, Some(UserState::Failed));
    let kept = world.volume_of("alice");
    assert_eq!(kept.id, volume.id);
    assert!(kept.attachment.is_none());
    assert!(world.deleted_workspaces().is_empty());
    world.assert_no_leaks().await;
}

/// Puts alice to sleep, then takes her workspace zone's capacity and spares away: her wake
/// can only be served by copying the workspace to the other zone. Returns her volume.
async fn asleep_in_a_zone_without_capacity(world: &World) -> spotpool::cloud::fake::FakeVolume {
    world.ready_user("alice", SECRET_BODY).await;
    let volume = world.volume_of("alice");
    world.post("alice", "sleep").await;
    world.run_until_quiet(40).await;
    let zone_subnet = ["subnet-a", "subnet-b"]
        .into_iter()
        .find(|s| world.cloud.zone_of(s) == volume.zone)
        .unwrap();
    world.cloud.fail_capacity("t3.small", zone_subnet);
    for instance in world.cloud.live_instances() {
        if instance.subnet_id == zone_subnet {
            world.cloud.reclaim(&instance.id);
        }
    }
    volume
}

#[tokio::test]
async fn a_workspace_whose_zone_has_no_capacity_is_copied_to_another_zone_then_served_there() {
    let world = World::new(1, 10).await;
    let volume = asleep_in_a_zone_without_capacity(&world).await;
    world.post("alice", "wake").await;
    world.run_until_quiet(80).await;
    let (_, doc) = world.get_user("alice").await;
    assert_eq!(doc["state"], "ready", "{doc}");
    let copy = world.volume_of("alice");
    assert_ne!(copy.id, volume.id);
    assert_ne!(copy.zone, volume.zone);
    assert!(copy.snapshot_id.is_some(), "made from a snapshot");
    assert!(world.cloud.was_copied(&volume.id));
    assert_eq!(doc["workspace"]["availability_zone"], copy.zone.as_str());
    // The old volume went only once the copy existed; the snapshot is gone too.
    assert_eq!(world.deleted_workspaces()[0].id, volume.id);
    assert!(world.cloud.snapshots().is_empty());
    let journal = world.store.journal_since(0, 10_000).await.unwrap();
    assert!(journal.iter().any(|e| e.kind == "workspace.relocated"));
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_lost_create_snapshot_answer_is_found_by_its_tag_not_taken_twice() {
    let world = World::new(1, 10).await;
    let volume = asleep_in_a_zone_without_capacity(&world).await;
    // CreateSnapshot takes no ClientToken: the snapshot exists, the daemon never learns its id.
    world.cloud.lose_next_response("CreateSnapshot");
    world.post("alice", "wake").await;
    world.run_until_quiet(80).await;
    assert_eq!(world.user_state("alice").await, Some(UserState::Ready));
    assert_eq!(world.cloud.count_calls("CreateSnapshot"), 1, "one snapshot");
    assert!(world.cloud.was_copied(&volume.id));
    assert!(
        world.cloud.snapshots().is_empty(),
        "the adopted snapshot went too"
    );
    world.assert_no_leaks().await;
}

/// A snapshot of the pool's that no relocation accounts for is an orphan once older than the
/// grace; one tagged with a relocation in progress is not.
#[tokio::test]
async fn repair_deletes_snapshots_no_relocation_accounts_for() {
    use spotpool::cloud::Cloud;
    let world = World::new(1, 10).await;
    let volume = asleep_in_a_zone_without_capacity(&world).await;
    let snapshot_tags = |relocation: &str| {
        let mut tags = spotpool::cloud::Tags::new();
        tags.insert(tags::POOL.into(), "spotpool".into());
        tags.insert(tags::USER_ID.into(), "alice".into());
        tags.insert(tags::WORKSPACE.into(), "alice".into());
        tags.insert(tags::RELOCATION.into(), relocation.into());
        tags
    };
    // Left by a relocation that is over (a crash between its CreateSnapshot and the record).
    let stale = world
        .cloud
        .create_snapshot(&volume.id, &snapshot_tags("sp-ws-over"))
        .await
        .unwrap();
    // Alice's wake starts a relocation; stop before it finishes (the copy is still pending).
    world.post("alice", "wake").await;
    let in_flight = loop {
        world.pass().await;
        world.advance(1_000);
        let row = world.user_row("alice").await;
        if let Some(snapshot) = row
            .workspace
            .and_then(|w| w.relocation)
            .and_then(|r| r.snapshot_id)
        {
            break snapshot;
        }
    };
    // A twin carrying the relocation's token (a CreateSnapshot whose answer was lost) is the
    // relocation's to clean up, not an orphan.
    let token = world
        .user_row("alice")
        .await
        .workspace
        .and_then(|w| w.relocation)
        .unwrap()
        .client_token;
    let twin = world
        .cloud
        .create_snapshot(&volume.id, &snapshot_tags(&token))
        .await
        .unwrap();
    let (young, report) = repair_deleted(&world, "snapshot").await;
    assert!(young.is_empty(), "younger than the grace: {report}");
    world.advance(world.config.policy.orphan_grace + 1_000);
    let (planned, report) = repair_orphans(&world, "snapshot", true).await;
    assert_eq!(planned, vec![stale.clone()], "{report}");
    assert!(world.cloud.snapshots().iter().any(|s| s.id == twin));
    let (deleted, report) = repair_deleted(&world, "snapshot").await;
    // Only the stale one: the relocation's own was its to delete (the repair's pass may have
    // finished the copy and done so).
    assert_eq!(deleted, vec![stale.clone()], "{report}");
    assert_ne!(stale, in_flight);
    world.run_until_quiet(80).await;
    assert_eq!(world.user_state("alice").await, Some(UserState::Ready));
    assert!(
        world.cloud.snapshots().is_empty(),
        "the twin went with the relocation"
    );
}

#[tokio::test]
async fn a_stop_that_cannot_unmount_retires_the_instance_instead_of_detaching_a_mounted_volume() {
    let world = World::new(1, 10).await;
    let before = world.ready_user("alice", SECRET_BODY).await;
    let old = InstanceId(before["instance_id"].as_str().unwrap().into());
    world.cloud.command_outcome(
        "stop-workspace.sh",
        CommandStatus::Failed("spotpool: /data stays busy".into()),
    );
    world.post("alice", "sleep").await;
    world.run_until_quiet(40).await;
    assert_eq!(world.user_state("alice").await, Some(UserState::Asleep));
    // No DetachVolume while the file system may be mounted: the instance was retired, and the
    // volume came free when it terminated.
    assert_eq!(world.cloud.count_calls("DetachVolume"), 0);
    assert!(world.cloud.instance(&old).unwrap().lifecycle.is_gone());
    assert!(world.volume_of("alice").attachment.is_none());
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_found_again_not_duplicated() {
    let world = World::with_config(without_blanks(1, 10)).await;
    world.run_until_quiet(20).await;
    world.cloud.lose_next_response("CreateVolume");
    world
        .cloud
        .fail_next("AttachVolume", CloudErrorKind::Transient, 1);
    world.put_user("alice", SECRET_BODY).await;
    world.run_until_quiet(40).await;
    assert_eq!(world.user_state("alice").await, Some(UserState::Ready));
    assert_eq!(world.cloud.count_calls("CreateVolume"), 1);
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_tier_with_idle_sleep_puts_users_without_requests_to_sleep_and_leaves_busy_ones() {
    let config = reconciler_config(2, 10);
    config
        .tiers
        .update(|t| t[0].idle_sleep_after = Some(3_600_000));
    let world = World::with_config(config).await;
    world.ready_user("alice", SECRET_BODY).await;
    world.ready_user("bob", SECRET_BODY).await;
    let bob = world.user_row("bob").await;
    world
        .cloud
        .set_request_count(bob.routing.target_group_arn.as_deref().unwrap(), 12.0);
    // Not idle long enough yet: nobody sleeps, and CloudWatch is not even asked.
    world.advance(30 * 60_000);
    world.run_until_quiet(20).await;
    assert_eq!(world.user_state("alice").await, Some(UserState::Ready));
    assert_eq!(world.cloud.count_calls("GetMetricData"), 0);

    world.advance(60 * 60_000);
    world.run_until_quiet(40).await;
    assert_eq!(world.user_state("alice").await, Some(UserState::Asleep));
    assert_eq!(world.user_state("bob").await, Some(UserState::Ready));
    assert_eq!(
        world.cloud.count_calls("GetMetricData"),
        1,
        "one batched read"
    );
    let journal = world.store.journal_since(0, 10_000).await.unwrap();
    assert!(journal.iter().any(|e| e.kind == "sleep.requested"
        && e.user_id.as_deref() == Some("alice")
        && e.message.contains("idle")));
    world.assert_no_leaks().await;
}

/// The orphan sweep deletes a workspace only when its user is gone, it is detached and it is
/// older than the grace: never an existing user's volume, never a young one.
#[tokio::test]
async fn repair_deletes_only_detached_workspaces_of_gone_users_past_the_grace() {
    use spotpool::cloud::{Cloud, VolumeRequest};
    let world = World::new(1, 10).await;
    world.ready_user("alice", SECRET_BODY).await;
    let alice_volume = world.volume_of("alice").id;
    let plant = |user: &str, token: &str| {
        let mut tags = spotpool::cloud::Tags::new();
        tags.insert(tags::POOL.into(), "spotpool".into());
        tags.insert(tags::USER_ID.into(), user.into());
        tags.insert(tags::WORKSPACE.into(), user.into());
        VolumeRequest {
            availability_zone: world.cloud.zone_of("subnet-a"),
            size_gib: 8,
            kms_key_id: None,
            snapshot_id: None,
            client_token: token.into(),
            tags,
        }
    };
    // A gone user's volume, and one tagged for alice that her row does not record (a lost
    // CreateVolume answer, say): only the first is an orphan.
    let ghost = world
        .cloud
        .create_volume(&plant("ghost", "t-1"))
        .await
        .unwrap();
    let unrecorded = world
        .cloud
        .create_volume(&plant("alice", "t-2"))
        .await
        .unwrap();
    world.advance(1_000);

    let (young, report) = repair_deleted(&world, "volume").await;
    assert!(young.is_empty(), "younger than the grace: {report}");

    world.advance(world.config.policy.orphan_grace + 1_000);
    let (deleted, report) = repair_deleted(&world, "volume").await;
    assert_eq!(deleted, vec![ghost.clone()], "{report}");
    let live: Vec<String> = world.cloud.volumes().into_iter().map(|v| v.id).collect();
    assert!(!live.contains(&ghost), "{live:?}");
    assert!(
        live.contains(&unrecorded) && live.contains(&alice_volume),
        "{live:?}"
    );
    assert_eq!(world.user_state("alice").await, Some(UserState::Ready));
}

/// Runs a repair (not a dry run); returns the ids of the `kind` orphans it deleted, and the
/// report.
async fn repair_deleted(world: &World, kind: &str) -> (Vec<String>, serde_json::Value) {
    repair_orphans(world, kind, false).await
}

/// Runs a repair (a dry run if `dry_run`); returns the ids of the `kind` orphans it deleted (or
/// planned to), and the report.
async fn repair_orphans(
    world: &World,
    kind: &str,
    dry_run: bool,
) -> (Vec<String>, serde_json::Value) {
    let (_, report) = world
        .request(
            "POST",
            &format!("/v1/admin/repair?dry_run={dry_run}"),
            Some(crate::world::ADMIN_TOKEN),
            "",
        )
        .await;
    let ids = report["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == kind && (o["result"] == "deleted" || o["result"] == "planned"))
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect();
    (ids, report)
}
