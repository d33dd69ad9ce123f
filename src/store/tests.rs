//! The store's behaviour, run against a fresh in-memory database per test.

use super::*;
use crate::model::{
    ClaimStep, Event, InstanceId, InstanceStatus, InterruptionNotice, Lifecycle, Millis,
    NoticeKind, UserId, UserState,
};

async fn store() -> Store {
    Store::open("sqlite::memory:").await.unwrap()
}

fn user(id: &str, route: &str) -> UserRecord {
    UserRecord::queued(
        UserId::parse(id).unwrap(),
        "default".into(),
        route.into(),
        "arn:secret".into(),
        10,
    )
}

fn available(id: &str) -> InstanceRecord {
    InstanceRecord {
        instance_id: InstanceId(id.into()),
        tier: "default".into(),
        status: InstanceStatus::Available,
        arn: None,
        instance_type: Some("t3.small".into()),
        availability_zone: None,
        private_ip: None,
        launched_at: 1,
        status_since: 1,
        probe_command_id: None,
        probe_sent_at: None,
        probe_failed_at: None,
        probe_failures: 0,
        last_error: None,
        missed_observations: 0,
        recycle_requested_at: None,
    }
}

#[tokio::test]
async fn users_round_trip_and_conflict_on_a_second_insert() {
    let store = store().await;
    let alice = user("alice", "r1");
    store.insert_user(&alice).await.unwrap();
    assert_eq!(
        store.get_user(&alice.user_id).await.unwrap(),
        Some(alice.clone())
    );
    assert!(matches!(
        store.insert_user(&alice).await,
        Err(StoreError::Conflict(_))
    ));
}

#[tokio::test]
async fn an_instance_is_assigned_to_exactly_one_user() {
    let store = store().await;
    store.insert_user(&user("alice", "r1")).await.unwrap();
    store.insert_user(&user("bob", "r2")).await.unwrap();
    store.put_instance(&available("i-1")).await.unwrap();
    let instance = InstanceId("i-1".into());
    let alice = UserId::parse("alice").unwrap();
    let bob = UserId::parse("bob").unwrap();
    assert!(store.assign(&alice, &instance, "s0", 20).await.unwrap());
    assert!(!store.assign(&bob, &instance, "s0", 20).await.unwrap());
    let bob_row = store.get_user(&bob).await.unwrap().unwrap();
    assert_eq!(bob_row.state, UserState::Queued);
    assert_eq!(bob_row.instance_id, None);
    let alice_row = store.get_user(&alice).await.unwrap().unwrap();
    assert_eq!(alice_row.state, UserState::Provisioning);
    assert_eq!(alice_row.claim.map(|c| c.step), Some(ClaimStep::Assigned));
    let ledger = store.get_instance(&instance).await.unwrap().unwrap();
    assert_eq!(ledger.status, InstanceStatus::Assigned);
}

#[tokio::test]
async fn a_stale_update_never_overwrites_a_delete() {
    let store = store().await;
    store.insert_user(&user("alice", "r1")).await.unwrap();
    let alice = UserId::parse("alice").unwrap();
    let mut read_by_reconciler = store.get_user(&alice).await.unwrap().unwrap();
    store.mark_deleting(&alice, 30).await.unwrap();
    read_by_reconciler.state = UserState::Ready;
    assert!(!store.update_user(&mut read_by_reconciler).await.unwrap());
    let now = store.get_user(&alice).await.unwrap().unwrap();
    assert_eq!(now.state, UserState::Deleting);
}

#[tokio::test]
async fn rule_priorities_are_unique_per_listener() {
    let store = store().await;
    for (id, route) in [("alice", "r1"), ("bob", "r2")] {
        store.insert_user(&user(id, route)).await.unwrap();
    }
    let mut alice = store
        .get_user(&UserId::parse("alice").unwrap())
        .await
        .unwrap()
        .unwrap();
    alice.routing.listener_arn = Some("arn:l".into());
    alice.routing.rule_priority = Some(7);
    assert!(store.update_user(&mut alice).await.unwrap());
    let mut bob = store
        .get_user(&UserId::parse("bob").unwrap())
        .await
        .unwrap()
        .unwrap();
    bob.routing.listener_arn = Some("arn:l".into());
    bob.routing.rule_priority = Some(7);
    assert!(store.update_user(&mut bob).await.is_err());
    assert_eq!(store.used_priorities("arn:l").await.unwrap(), vec![7]);
}

#[tokio::test]
async fn users_are_counted_per_shard_and_routed_users_placed_on_their_listeners_shard() {
    let store = store().await;
    for (id, route) in [("alice", "r1"), ("bob", "r2"), ("cyd", "r3")] {
        store.insert_user(&user(id, route)).await.unwrap();
    }
    // alice and bob were routed before shards existed; cyd never was.
    for (id, listener) in [("alice", "arn:l0"), ("bob", "arn:l1")] {
        let mut row = store
            .get_user(&UserId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap();
        row.routing.listener_arn = Some(listener.into());
        assert!(store.update_user(&mut row).await.unwrap());
    }
    let shards = [
        ("default".to_string(), "arn:l0".to_string()),
        ("other".to_string(), "arn:l1".to_string()),
    ];
    assert_eq!(store.place_routed_users(&shards).await.unwrap(), 2);
    assert_eq!(store.place_routed_users(&shards).await.unwrap(), 0, "once");
    let mut counts = store.users_per_shard().await.unwrap();
    counts.sort();
    assert_eq!(
        counts,
        vec![("default".to_string(), 1), ("other".to_string(), 1)]
    );
    // A claim places the user with its spare, in the same transaction.
    store.put_instance(&available("i-1")).await.unwrap();
    let cyd = UserId::parse("cyd").unwrap();
    assert!(
        store
            .assign(&cyd, &InstanceId("i-1".into()), "other", 20)
            .await
            .unwrap()
    );
    let row = store.get_user(&cyd).await.unwrap().unwrap();
    assert_eq!(row.shard.as_deref(), Some("other"));
    let mut counts = store.users_per_shard().await.unwrap();
    counts.sort();
    assert_eq!(counts[1], ("other".to_string(), 2));
    // `[[shard]]` tables replace ALB_LISTENER_ARN: a user follows its listener to the shard's
    // new name; a claim in flight from before shards (no listener yet) goes to the first.
    let dan = user("dan", "r4");
    store.insert_user(&dan).await.unwrap();
    store.put_instance(&available("i-2")).await.unwrap();
    let dan_id = UserId::parse("dan").unwrap();
    assert!(
        store
            .assign(&dan_id, &InstanceId("i-2".into()), "x", 30)
            .await
            .unwrap()
    );
    let mut row = store.get_user(&dan_id).await.unwrap().unwrap();
    row.shard = None;
    assert!(store.update_user(&mut row).await.unwrap());
    let renamed = [
        ("shard-0".to_string(), "arn:l0".to_string()),
        ("shard-1".to_string(), "arn:l1".to_string()),
    ];
    assert_eq!(store.place_routed_users(&renamed).await.unwrap(), 3);
    let shard_of = |id: &'static str| {
        let store = store.clone();
        async move {
            let id = UserId::parse(id).unwrap();
            store.get_user(&id).await.unwrap().unwrap().shard
        }
    };
    assert_eq!(shard_of("alice").await.as_deref(), Some("shard-0"));
    assert_eq!(shard_of("bob").await.as_deref(), Some("shard-1"));
    assert_eq!(shard_of("dan").await.as_deref(), Some("shard-0"));
    assert_eq!(
        shard_of("cyd").await.as_deref(),
        Some("other"),
        "no listener: kept"
    );
}

fn notice(event_id: &str, kind: NoticeKind, event_time: Millis) -> InterruptionNotice {
    InterruptionNotice {
        event_id: event_id.into(),
        kind,
        instance_id: InstanceId("i-0123456789abcdef0".into()),
        event_time,
    }
}

#[tokio::test]
async fn a_notice_with_a_known_event_id_is_a_duplicate_and_changes_nothing() {
    let store = store().await;
    let warning = notice("ev-1", NoticeKind::SpotInterruptionWarning, 100);
    assert!(store.insert_notice(&warning, 1_000).await.unwrap());
    // A redelivery, even one that reads differently, keeps the first copy.
    let mut again = warning.clone();
    again.event_time = 999;
    assert!(!store.insert_notice(&again, 2_000).await.unwrap());
    let stored = store.list_unhandled_notices().await.unwrap();
    assert_eq!(
        stored,
        vec![StoredNotice {
            notice: warning.clone(),
            received_at: 1_000,
            handled_at: None,
        }]
    );
    // Still a duplicate once handled: it never comes back as work.
    assert!(store.mark_notice_handled("ev-1", 3_000).await.unwrap());
    assert!(!store.insert_notice(&warning, 4_000).await.unwrap());
    assert!(store.list_unhandled_notices().await.unwrap().is_empty());
}

#[tokio::test]
async fn unhandled_notices_are_listed_by_event_time_until_handled() {
    let store = store().await;
    let terminated = notice("ev-3", NoticeKind::StateChange(Lifecycle::Terminated), 300);
    let warning = notice("ev-2", NoticeKind::SpotInterruptionWarning, 200);
    let rebalance = notice("ev-1", NoticeKind::RebalanceRecommendation, 100);
    // Arrival order is not event order.
    for (n, arrived) in [(&terminated, 10), (&warning, 20), (&rebalance, 30)] {
        assert!(store.insert_notice(n, arrived).await.unwrap());
    }
    let ids = |list: Vec<StoredNotice>| {
        list.into_iter()
            .map(|s| s.notice.event_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.list_unhandled_notices().await.unwrap()),
        ["ev-1", "ev-2", "ev-3"]
    );
    assert!(store.mark_notice_handled("ev-2", 40).await.unwrap());
    assert!(!store.mark_notice_handled("ev-2", 50).await.unwrap());
    assert!(!store.mark_notice_handled("ev-unknown", 50).await.unwrap());
    let left = store.list_unhandled_notices().await.unwrap();
    assert_eq!(left[1].notice, terminated);
    assert_eq!(ids(left), ["ev-1", "ev-3"]);
}

#[tokio::test]
async fn pruning_deletes_the_notices_received_before_the_cutoff() {
    let store = store().await;
    for (id, arrived) in [("ev-old", 10), ("ev-new", 100)] {
        let n = notice(id, NoticeKind::RebalanceRecommendation, arrived);
        store.insert_notice(&n, arrived).await.unwrap();
    }
    assert_eq!(store.prune_notices(50).await.unwrap(), 1);
    let left = store.list_unhandled_notices().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].notice.event_id, "ev-new");
}

#[tokio::test]
async fn the_journal_lists_entries_in_order() {
    let store = store().await;
    let alice = UserId::parse("alice").unwrap();
    store
        .record(1, &Event::ClaimAssigned, Some(&alice), None)
        .await
        .unwrap();
    store
        .record(
            2,
            &Event::ClaimStepDone(ClaimStep::Tagged),
            Some(&alice),
            None,
        )
        .await
        .unwrap();
    let entries = store.journal_since(0, 10).await.unwrap();
    assert_eq!(
        entries.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["claim.assigned", "claim.tagged"]
    );
    assert_eq!(
        store.journal_since(entries[0].id, 10).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn an_image_is_pinned_once_and_the_first_pin_wins() {
    let store = store().await;
    let image = "ghcr.io/openclaw/openclaw:latest";
    assert_eq!(store.image_pin(image).await.unwrap(), None);
    let first = store.pin_image(image, "sha256:aa", 5).await.unwrap();
    assert_eq!((first.digest.as_str(), first.resolved_at), ("sha256:aa", 5));
    // Another replica resolving at the same time (or later) gets the recorded pin back.
    let second = store.pin_image(image, "sha256:bb", 6).await.unwrap();
    assert_eq!(second, first);
    // A new image string is pinned on its own; re-pinning forgets only its image.
    store.pin_image("img:2", "sha256:cc", 7).await.unwrap();
    assert!(store.unpin_image(image).await.unwrap());
    assert!(!store.unpin_image(image).await.unwrap());
    assert_eq!(store.image_pin(image).await.unwrap(), None);
    assert_eq!(
        store.image_pin("img:2").await.unwrap().unwrap().digest,
        "sha256:cc"
    );
}

/// A pass's snapshot of the users and the ledger is decoded again only after a write to that
/// table, whichever connection or process wrote it (issue 11: a steady pass of a large pool
/// decoded every row of both tables).
#[tokio::test]
async fn snapshots_are_read_again_only_after_a_write_from_any_connection() {
    let path = std::env::temp_dir().join(format!("spotpool-snapshots-{}.db", std::process::id()));
    let url = format!("sqlite://{}", path.display());
    let (reconciler, api) = (
        Store::open(&url).await.unwrap(),
        Store::open(&url).await.unwrap(),
    );
    api.insert_user(&user("alice", "r-alice")).await.unwrap();
    api.put_instance(&available("i-1")).await.unwrap();

    let users = reconciler.users_snapshot().await.unwrap();
    let ledger = reconciler.instances_snapshot().await.unwrap();
    assert_eq!((users.len(), ledger.len()), (1, 1));
    // Nothing written: the same rows, not decoded again.
    assert!(std::sync::Arc::ptr_eq(
        &users,
        &reconciler.users_snapshot().await.unwrap()
    ));
    assert!(std::sync::Arc::ptr_eq(
        &ledger,
        &reconciler.instances_snapshot().await.unwrap()
    ));

    // Writes through the other store (another process on the same file) are seen, each by its
    // own table's snapshot only.
    let mut alice = api
        .get_user(&UserId::parse("alice").unwrap())
        .await
        .unwrap()
        .unwrap();
    alice.error = Some("changed".into());
    assert!(api.update_user(&mut alice).await.unwrap());
    let users = reconciler.users_snapshot().await.unwrap();
    assert_eq!(users[0].error.as_deref(), Some("changed"));
    assert!(std::sync::Arc::ptr_eq(
        &ledger,
        &reconciler.instances_snapshot().await.unwrap()
    ));
    api.insert_user(&user("bob", "r-bob")).await.unwrap();
    assert_eq!(reconciler.users_snapshot().await.unwrap().len(), 2);
    api.delete_user(
        &api.get_user(&UserId::parse("bob").unwrap())
            .await
            .unwrap()
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(reconciler.users_snapshot().await.unwrap().len(), 1);
    assert!(
        api.assign(
            &UserId::parse("alice").unwrap(),
            &InstanceId("i-1".into()),
            "s0",
            5
        )
        .await
        .unwrap()
    );
    let ledger = reconciler.instances_snapshot().await.unwrap();
    assert_eq!(ledger[0].status, InstanceStatus::Assigned);
    let users = reconciler.users_snapshot().await.unwrap();
    assert_eq!(users[0].instance_id, Some(InstanceId("i-1".into())));
    api.put_instance(&available("i-2")).await.unwrap();
    assert_eq!(reconciler.instances_snapshot().await.unwrap().len(), 2);

    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}
