//! Spot interruptions on the fake: notices (as the SQS consumer stores them) turned into moves,
//! replacements and notes by the reconciler.

use crate::world::World;
use spotpool::cloud::{Lifecycle, tags};
use spotpool::interruption_feed::{InterruptionNotice, NoticeKind};
use spotpool::model::{InstanceId, InstanceStatus, UserState};

const SECRET_BODY: &str = r#"{"secrets":{"OPENAI_API_KEY":"sk-test-value-123"}}"#;

impl World {
    pub(crate) async fn notice(&self, event_id: &str, kind: NoticeKind, instance: &InstanceId) {
        let now = self.now.load(std::sync::atomic::Ordering::SeqCst);
        let notice = InterruptionNotice {
            event_id: event_id.to_string(),
            kind,
            instance_id: instance.clone(),
            event_time: now,
        };
        assert!(self.store.insert_notice(&notice, now).await.unwrap());
    }

    async fn instance_of(&self, user: &str) -> InstanceId {
        self.user_row(user).await.instance_id.expect("an instance")
    }

    fn spare(&self) -> InstanceId {
        self.cloud
            .live_instances()
            .into_iter()
            .find(|i| i.tags.get(tags::STATUS).map(String::as_str) == Some("available"))
            .expect("a spare")
            .id
    }
}

#[tokio::test]
async fn a_warning_moves_the_user_with_route_and_secret_and_retires_the_old_instance() {
    let world = World::new(1, 10).await;
    world.run_until_quiet(20).await;
    world.ready_user("alice", SECRET_BODY).await;
    world.run_until_quiet(20).await;
    let before = world.user_row("alice").await;
    let old = before.instance_id.clone().unwrap();

    world
        .notice("ev-1", NoticeKind::SpotInterruptionWarning, &old)
        .await;
    world.pass().await;
    world.run_until_quiet(30).await;

    let after = world.user_row("alice").await;
    assert_eq!(after.state, UserState::Ready);
    assert_ne!(after.instance_id.as_ref(), Some(&old));
    assert_eq!(after.route, before.route);
    assert_eq!(after.secret_arn, before.secret_arn);
    assert_eq!(after.routing.rule_arn, before.routing.rule_arn);
    assert!(world.cloud.live_instances().iter().all(|i| i.id != old));
    assert!(
        world
            .store
            .list_unhandled_notices()
            .await
            .unwrap()
            .is_empty()
    );
    let journal = world.store.journal_since(0, 10_000).await.unwrap();
    assert!(journal.iter().any(|e| e.kind == "move.done"));
    // A duplicate delivery of the same event, and a late state change for the old instance,
    // change nothing.
    world
        .notice("ev-2", NoticeKind::StateChange(Lifecycle::Terminated), &old)
        .await;
    world.run_until_quiet(20).await;
    assert_eq!(world.user_row("alice").await.instance_id, after.instance_id);
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn with_no_spare_the_user_is_first_in_line_and_ends_served_even_if_the_old_instance_dies() {
    let world = World::new(0, 10).await;
    world.put_user("bob", SECRET_BODY).await;
    world.run_until_quiet(30).await;
    world.ready_user("alice", SECRET_BODY).await;
    world.run_until_quiet(30).await;
    let old = world.instance_of("alice").await;
    // Another user queues at the same moment: alice still goes first.
    world.put_user("carol", SECRET_BODY).await;
    world
        .notice("ev-1", NoticeKind::SpotInterruptionWarning, &old)
        .await;
    world.pass().await;
    assert_eq!(world.user_row("alice").await.state, UserState::Migrating);
    // Two minutes later EC2 takes the instance, before the replacement is ready.
    world.cloud.reclaim(&old);
    world.run_until_quiet(40).await;
    let alice = world.user_row("alice").await;
    assert_eq!(alice.state, UserState::Ready);
    assert_ne!(alice.instance_id.as_ref(), Some(&old));
    assert_eq!(world.user_state("carol").await, Some(UserState::Ready));
    let journal = world.store.journal_since(0, 10_000).await.unwrap();
    let alice_moved = journal
        .iter()
        .position(|e| e.kind == "move.assigned" && e.user_id.as_deref() == Some("alice"))
        .expect("alice got a spare");
    let carol_assigned = journal
        .iter()
        .position(|e| e.kind == "claim.assigned" && e.user_id.as_deref() == Some("carol"))
        .expect("carol got a spare");
    assert!(alice_moved < carol_assigned, "the evicted user goes first");
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_warning_for_a_spare_replaces_it_and_avoids_its_offering() {
    let world = World::new(1, 10).await;
    world.run_until_quiet(20).await;
    let spare = world.spare();
    let subnet = world.cloud.instance(&spare).unwrap().subnet_id;
    world
        .notice("ev-1", NoticeKind::SpotInterruptionWarning, &spare)
        .await;
    world.run_until_quiet(20).await;
    let live = world.cloud.live_instances();
    assert!(
        live.iter().all(|i| i.id != spare),
        "the warned spare is gone"
    );
    assert_eq!(world.ledger_count(InstanceStatus::Available).await, 1);
    assert!(
        live.iter().all(|i| i.subnet_id != subnet),
        "the replacement avoided the interrupted offering"
    );
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_rebalance_recommendation_moves_early_only_when_the_tier_allows_it() {
    for allowed in [false, true] {
        let mut world = World::new(1, 10).await;
        if allowed {
            world.config.tiers.update(|t| t[0].rebalance_moves = true);
            world = world.restart().await;
        }
        world.run_until_quiet(20).await;
        world.ready_user("alice", SECRET_BODY).await;
        world.run_until_quiet(20).await;
        let old = world.instance_of("alice").await;
        world
            .notice("ev-1", NoticeKind::RebalanceRecommendation, &old)
            .await;
        world.run_until_quiet(30).await;
        let moved = world.instance_of("alice").await != old;
        assert_eq!(moved, allowed, "rebalance_moves = {allowed}");
        assert_eq!(world.user_row("alice").await.state, UserState::Ready);
        world.assert_no_leaks().await;
    }
}

#[tokio::test]
async fn a_state_change_without_a_warning_moves_the_user_too() {
    let world = World::new(1, 10).await;
    world.run_until_quiet(20).await;
    world.ready_user("alice", SECRET_BODY).await;
    world.run_until_quiet(20).await;
    let old = world.instance_of("alice").await;
    world
        .notice(
            "ev-1",
            NoticeKind::StateChange(Lifecycle::ShuttingDown),
            &old,
        )
        .await;
    world.run_until_quiet(30).await;
    assert_ne!(world.instance_of("alice").await, old);
    assert_eq!(world.user_row("alice").await.state, UserState::Ready);
    world.assert_no_leaks().await;
}
