//! The store's behaviour: one suite, run against both stores. Each test is an
//! `async fn(Store)`; [`store_tests!`] makes two tests of it, `sqlite::<name>` on a fresh
//! in-memory SQLite database and `postgres::<name>` on a fresh PostgreSQL database
//! ([`super::testing::postgres_url`]).

use super::*;
use crate::model::{
    ClaimStep, Event, InstanceId, InstanceStatus, InterruptionNotice, Lifecycle, Millis,
    MoveProgress, MoveReason, NoticeKind, Routing, TierCondition, UserId, UserState, Workspace,
};

/// `store_tests!(a, b, ...)`: the tests `sqlite::a`, `postgres::a`, ... each running the
/// suite's `async fn a(store: Store)` on a fresh store of its kind.
macro_rules! store_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::sqlite_store().await).await
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::postgres_store().await).await
                }
            )+
        }
    };
}

store_tests!(
    users_round_trip_and_conflict_on_a_second_insert,
    an_instance_is_assigned_to_exactly_one_user,
    a_stale_update_never_overwrites_a_delete,
    rule_priorities_are_unique_per_listener,
    users_are_counted_per_shard_and_routed_users_placed_on_their_listeners_shard,
    a_notice_with_a_known_event_id_is_a_duplicate_and_changes_nothing,
    unhandled_notices_are_listed_by_event_time_until_handled,
    pruning_deletes_the_notices_received_before_the_cutoff,
    the_journal_lists_entries_in_order,
    the_journal_notes_tiers_filters_pages_and_prunes_behind_a_horizon,
    an_image_is_pinned_once_and_the_first_pin_wins,
    every_column_of_a_user_round_trips,
    a_move_target_is_a_spare_taken_like_a_claim,
    requeue_sleep_and_wake_apply_only_from_their_states,
    concurrent_claims_of_one_spare_give_it_to_exactly_one_user,
    concurrent_writes_of_one_row_version_apply_once,
    the_instance_ledger_round_trips_and_its_transitions_are_guarded,
    launches_are_recorded_retried_and_deleted,
    tier_overrides_are_upserted_and_the_audit_log_lists_newest_first,
    a_tier_condition_keeps_its_since_while_the_cause_stays,
    spot_prices_replace_each_offerings_last_one,
    spare_decisions_replace_each_tiers_last_one,
    offering_history_replaces_each_offerings_last_one,
    the_lease_goes_to_one_replica_until_it_runs_out_or_is_handed_back,
    a_claim_takes_a_spares_complete_warm_route_on_the_users_shard_only,
    a_first_claim_keeps_the_spares_blank_workspace_unless_a_user_holds_that_volume,
    observing_an_instance_writes_only_what_the_listing_reports,
    drains_round_trip_their_progress_and_a_cancel_ends_them,
    a_rollout_replaces_the_tiers_earlier_rollout_drain_in_one_transaction,
    an_instance_keeps_the_launch_template_it_was_first_recorded_with,
    users_share_an_instance_each_on_a_slot_of_their_own,
    a_shared_instances_slots_go_to_one_user_each_and_wait_for_their_wipe,
    the_last_user_leaving_retires_a_shared_instance_and_no_claim_lands_after,
    a_repeated_recycle_request_keeps_its_time_and_on_calls_asks_again,
    two_claims_racing_for_one_slot_give_it_to_one_and_two_slots_to_both,
    a_users_state_changes_owe_its_callback_one_webhook_each_in_order,
);

async fn sqlite_store() -> Store {
    Store::open("sqlite::memory:").await.unwrap()
}

async fn postgres_store() -> Store {
    let store = Store::open(&testing::postgres_url().await).await.unwrap();
    assert_eq!(store.backend(), Backend::Postgres);
    store
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
        probed_at: None,
        warm: Default::default(),
        blank_volume_id: None,
        launch_template: None,
        image: None,
        started_at: None,
    }
}

async fn users_round_trip_and_conflict_on_a_second_insert(store: Store) {
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

async fn an_instance_is_assigned_to_exactly_one_user(store: Store) {
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
    // A plan from before the claim cannot forget the row of the instance alice holds.
    assert!(!store.delete_instance(&instance).await.unwrap());
    assert!(store.get_instance(&instance).await.unwrap().is_some());
    // A spare on-call or a drain asked to recycle is never taken, by a claim or a move, even
    // by a plan from before the request.
    store.put_instance(&available("i-2")).await.unwrap();
    let recycled = InstanceId("i-2".into());
    assert!(store.request_recycle(&recycled, 25).await.unwrap());
    assert!(!store.assign(&bob, &recycled, "s0", 30).await.unwrap());
    let ledger = store.get_instance(&recycled).await.unwrap().unwrap();
    assert_eq!(ledger.status, InstanceStatus::Available);
    assert_eq!(
        store.get_user(&bob).await.unwrap().unwrap().state,
        UserState::Queued
    );
}

async fn a_stale_update_never_overwrites_a_delete(store: Store) {
    store.insert_user(&user("alice", "r1")).await.unwrap();
    let alice = UserId::parse("alice").unwrap();
    let mut read_by_reconciler = store.get_user(&alice).await.unwrap().unwrap();
    store.mark_deleting(&alice, 30).await.unwrap();
    read_by_reconciler.state = UserState::Ready;
    assert!(!store.update_user(&mut read_by_reconciler).await.unwrap());
    let now = store.get_user(&alice).await.unwrap().unwrap();
    assert_eq!(now.state, UserState::Deleting);
}

async fn rule_priorities_are_unique_per_listener(store: Store) {
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

async fn users_are_counted_per_shard_and_routed_users_placed_on_their_listeners_shard(
    store: Store,
) {
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

async fn a_notice_with_a_known_event_id_is_a_duplicate_and_changes_nothing(store: Store) {
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

async fn unhandled_notices_are_listed_by_event_time_until_handled(store: Store) {
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

async fn pruning_deletes_the_notices_received_before_the_cutoff(store: Store) {
    for (id, arrived) in [("ev-old", 10), ("ev-new", 100)] {
        let n = notice(id, NoticeKind::RebalanceRecommendation, arrived);
        store.insert_notice(&n, arrived).await.unwrap();
    }
    assert_eq!(store.prune_notices(50).await.unwrap(), 1);
    let left = store.list_unhandled_notices().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].notice.event_id, "ev-new");
}

async fn the_journal_lists_entries_in_order(store: Store) {
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

async fn the_journal_notes_tiers_filters_pages_and_prunes_behind_a_horizon(store: Store) {
    use super::JournalFilter;
    let mut alice = user("alice", "r1");
    alice.tier = "pro".into();
    store.insert_user(&alice).await.unwrap();
    let mut spare = available("i-1");
    spare.tier = "basic".into();
    store.put_instance(&spare).await.unwrap();
    let i1 = InstanceId("i-1".into());
    assert_eq!(store.journal_head().await.unwrap(), 0);
    assert_eq!(store.journal_horizon().await.unwrap(), 0);
    // At 10, 20, 30, 40: alice's, the spare's, the pool's, alice's on the spare.
    let entries = [
        (Some(&alice.user_id), None),
        (None, Some(&i1)),
        (None, None),
        (Some(&alice.user_id), Some(&i1)),
    ];
    for (n, (user, instance)) in entries.into_iter().enumerate() {
        let at = 10 * (n as i64 + 1);
        store
            .record(at, &Event::ClaimAssigned, user, instance)
            .await
            .unwrap();
    }
    let all = store.journal_since(0, 10).await.unwrap();
    let tiers: Vec<Option<&str>> = all.iter().map(|e| e.tier.as_deref()).collect();
    assert_eq!(
        tiers,
        [Some("pro"), Some("basic"), None, Some("pro")],
        "the user's tier first, else the instance's"
    );
    assert_eq!(store.journal_head().await.unwrap(), all[3].id);
    let page = |filter: JournalFilter, after: i64| {
        let store = store.clone();
        async move {
            let rows = store.journal_page(after, &filter, 10).await.unwrap();
            rows.into_iter().map(|e| e.at).collect::<Vec<_>>()
        }
    };
    let users_only = JournalFilter {
        users_only: true,
        ..JournalFilter::default()
    };
    assert_eq!(page(users_only, 0).await, [10, 40]);
    let basic = JournalFilter {
        tier: Some("basic".into()),
        ..JournalFilter::default()
    };
    assert_eq!(page(basic, 0).await, [20]);
    let alices = JournalFilter {
        user: Some("alice".into()),
        ..JournalFilter::default()
    };
    assert_eq!(page(alices.clone(), 0).await, [10, 40]);
    assert_eq!(page(alices, all[0].id).await, [40], "after an id");

    // Entries before 25 go: the horizon is the newest of them.
    assert_eq!(store.prune_journal(25).await.unwrap(), 2);
    assert_eq!(store.journal_horizon().await.unwrap(), all[1].id);
    let left = store.journal_since(0, 10).await.unwrap();
    assert_eq!(left, all[2..].to_vec());
    assert_eq!(store.prune_journal(25).await.unwrap(), 0, "nothing more");
    assert_eq!(store.journal_horizon().await.unwrap(), all[1].id);
    // An entry from a clock far ahead does not hold back the older-by-id entries after it.
    store
        .record(1_000_000, &Event::ClaimAssigned, None, None)
        .await
        .unwrap();
    store
        .record(50, &Event::ClaimAssigned, None, None)
        .await
        .unwrap();
    // The cut is the newest entry written before 1,000 (at 50): it and everything older by id
    // go, the far-ahead one too (the older rule kept it and everything after it).
    assert_eq!(store.prune_journal(1_000).await.unwrap(), 4);
    let left = store.journal_since(0, 10).await.unwrap();
    assert!(left.is_empty(), "{left:?}");
    assert!(store.journal_horizon().await.unwrap() > all[3].id);
}

async fn an_image_is_pinned_once_and_the_first_pin_wins(store: Store) {
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

async fn every_column_of_a_user_round_trips(store: Store) {
    let mut alice = user("alice", "r1");
    store.insert_user(&alice).await.unwrap();
    testing::set_every_column(
        &mut alice,
        &InstanceId("i-1".into()),
        &InstanceId("i-2".into()),
    );
    assert!(store.update_user(&mut alice).await.unwrap());
    assert_eq!(alice.version, 1);
    assert_eq!(
        store.get_user(&alice.user_id).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(store.list_users().await.unwrap(), vec![alice.clone()]);
    // Back to nothing: every column can be cleared again.
    alice.forget_placement();
    alice.workspace = None;
    alice.error = None;
    alice.shard = None;
    alice.move_abandoned_at = None;
    alice.state = UserState::Queued;
    assert!(store.update_user(&mut alice).await.unwrap());
    assert_eq!(
        store.get_user(&alice.user_id).await.unwrap(),
        Some(alice.clone())
    );
    assert!(store.delete_user(&alice).await.unwrap());
    assert_eq!(store.get_user(&alice.user_id).await.unwrap(), None);
}

async fn a_move_target_is_a_spare_taken_like_a_claim(store: Store) {
    let mut alice = user("alice", "r1");
    store.insert_user(&alice).await.unwrap();
    for id in ["i-1", "i-2"] {
        store.put_instance(&available(id)).await.unwrap();
    }
    let (first, second) = (InstanceId("i-1".into()), InstanceId("i-2".into()));
    // Only a migrating user without a target gets one.
    assert!(
        !store
            .assign_move(&alice.user_id, &second, 30)
            .await
            .unwrap()
    );
    assert!(
        store
            .assign(&alice.user_id, &first, "s0", 20)
            .await
            .unwrap()
    );
    alice = store.get_user(&alice.user_id).await.unwrap().unwrap();
    alice.state = UserState::Migrating;
    alice.moving = Some(MoveProgress::new(MoveReason::Recycle, 25));
    assert!(store.update_user(&mut alice).await.unwrap());
    // An instance that is not available is refused, and nothing changes.
    assert!(!store.assign_move(&alice.user_id, &first, 30).await.unwrap());
    assert_eq!(
        store
            .get_user(&alice.user_id)
            .await
            .unwrap()
            .unwrap()
            .version,
        alice.version
    );
    assert!(
        store
            .assign_move(&alice.user_id, &second, 30)
            .await
            .unwrap()
    );
    let row = store.get_user(&alice.user_id).await.unwrap().unwrap();
    assert_eq!(row.move_target(), Some(&second));
    assert_eq!(row.instance_id, Some(first));
    assert_eq!(row.shard.as_deref(), Some("s0"));
    let ledger = store.get_instance(&second).await.unwrap().unwrap();
    assert_eq!(
        (ledger.status, ledger.status_since),
        (InstanceStatus::Assigned, 30)
    );
    // Once it has a target, another spare is not taken.
    store.put_instance(&available("i-3")).await.unwrap();
    let third = InstanceId("i-3".into());
    assert!(!store.assign_move(&alice.user_id, &third, 40).await.unwrap());
    let ledger = store.get_instance(&third).await.unwrap().unwrap();
    assert_eq!(ledger.status, InstanceStatus::Available, "rolled back");
}

async fn requeue_sleep_and_wake_apply_only_from_their_states(store: Store) {
    let mut alice = user("alice", "r1");
    store.insert_user(&alice).await.unwrap();
    let id = alice.user_id.clone();
    assert!(!store.requeue_failed(&id, 20).await.unwrap());
    assert!(!store.request_sleep(&id, 20).await.unwrap());
    assert!(!store.wake(&id, 20).await.unwrap());
    alice.state = UserState::Failed;
    alice.attempts = 3;
    alice.error = Some("boom".into());
    assert!(store.update_user(&mut alice).await.unwrap());
    assert!(store.requeue_failed(&id, 30).await.unwrap());
    let row = store.get_user(&id).await.unwrap().unwrap();
    assert_eq!(
        (
            row.state,
            row.attempts,
            row.error.clone(),
            row.requested_at,
            row.version
        ),
        (UserState::Queued, 0, None, 30, 2)
    );
    let mut row = row;
    row.state = UserState::Ready;
    assert!(store.update_user(&mut row).await.unwrap());
    assert!(store.request_sleep(&id, 40).await.unwrap());
    assert!(!store.request_sleep(&id, 41).await.unwrap());
    let mut row = store.get_user(&id).await.unwrap().unwrap();
    assert_eq!((row.state, row.updated_at), (UserState::Sleeping, 40));
    row.state = UserState::Asleep;
    assert!(store.update_user(&mut row).await.unwrap());
    assert!(store.wake(&id, 50).await.unwrap());
    let row = store.get_user(&id).await.unwrap().unwrap();
    assert_eq!((row.state, row.requested_at), (UserState::Queued, 50));
    // A deleting user stays deleting; marking it again changes nothing.
    let deleting = store.mark_deleting(&id, 60).await.unwrap().unwrap();
    assert_eq!(deleting.state, UserState::Deleting);
    let again = store.mark_deleting(&id, 70).await.unwrap().unwrap();
    assert_eq!(again, deleting);
    let nobody = UserId::parse("nobody").unwrap();
    assert_eq!(store.mark_deleting(&nobody, 70).await.unwrap(), None);
}

async fn concurrent_claims_of_one_spare_give_it_to_exactly_one_user(store: Store) {
    const USERS: usize = 16;
    for n in 0..USERS {
        store
            .insert_user(&user(&format!("user-{n}"), &format!("r{n}")))
            .await
            .unwrap();
    }
    store.put_instance(&available("i-1")).await.unwrap();
    let mut claims = tokio::task::JoinSet::new();
    for n in 0..USERS {
        let store = store.clone();
        claims.spawn(async move {
            let id = UserId::parse(&format!("user-{n}")).unwrap();
            store
                .assign(&id, &InstanceId("i-1".into()), "s0", 20)
                .await
                .unwrap()
        });
    }
    let won = claims
        .join_all()
        .await
        .into_iter()
        .filter(|won| *won)
        .count();
    assert_eq!(won, 1);
    let users = store.list_users().await.unwrap();
    let holders: Vec<_> = users.iter().filter(|u| u.instance_id.is_some()).collect();
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].state, UserState::Provisioning);
    let queued = users
        .iter()
        .filter(|u| u.state == UserState::Queued)
        .count();
    assert_eq!(queued, USERS - 1);
    let ledger = store.get_instance(&InstanceId("i-1".into())).await.unwrap();
    assert_eq!(ledger.unwrap().status, InstanceStatus::Assigned);
}

async fn concurrent_writes_of_one_row_version_apply_once(store: Store) {
    store.insert_user(&user("alice", "r1")).await.unwrap();
    let id = UserId::parse("alice").unwrap();
    let read = store.get_user(&id).await.unwrap().unwrap();
    let mut writes = tokio::task::JoinSet::new();
    for n in 0..8u32 {
        let (store, mut copy) = (store.clone(), read.clone());
        writes.spawn(async move {
            copy.attempts = n;
            store.update_user(&mut copy).await.unwrap().then_some(n)
        });
    }
    let applied: Vec<u32> = writes.join_all().await.into_iter().flatten().collect();
    assert_eq!(applied.len(), 1, "{applied:?}");
    let row = store.get_user(&id).await.unwrap().unwrap();
    assert_eq!((row.attempts, row.version), (applied[0], 1));
}

async fn the_instance_ledger_round_trips_and_its_transitions_are_guarded(store: Store) {
    let mut full = available("i-b");
    full.status = InstanceStatus::Initializing;
    full.arn = Some("arn:aws:ec2:us-east-1:123456789012:instance/i-b".into());
    full.availability_zone = Some("us-east-1a".into());
    full.private_ip = Some("10.0.0.7".into());
    full.launched_at = 5;
    full.status_since = 6;
    full.probe_command_id = Some("cmd-probe".into());
    full.probe_sent_at = Some(7);
    full.probe_failed_at = Some(8);
    full.probe_failures = 2;
    full.last_error = Some("probe failed".into());
    full.missed_observations = 1;
    store.put_instance(&full).await.unwrap();
    store.put_instance(&available("i-a")).await.unwrap();
    let id = full.instance_id.clone();
    assert_eq!(store.get_instance(&id).await.unwrap(), Some(full.clone()));
    let listed: Vec<_> = store.list_instances().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|i| i.instance_id.0.as_str())
            .collect::<Vec<_>>(),
        ["i-a", "i-b"],
        "by launch time"
    );
    // put_instance replaces every column but the recycle request.
    assert!(store.request_recycle(&id, 9).await.unwrap());
    full.probe_failures = 0;
    full.last_error = None;
    store.put_instance(&full).await.unwrap();
    let row = store.get_instance(&id).await.unwrap().unwrap();
    assert_eq!((row.probe_failures, row.last_error.as_deref()), (0, None));
    assert_eq!(row.recycle_requested_at, Some(9));
    store.clear_recycle(&id).await.unwrap();
    assert_eq!(
        store
            .get_instance(&id)
            .await
            .unwrap()
            .unwrap()
            .recycle_requested_at,
        None
    );
    // A transition applies only from the status it names.
    let (from, to) = (InstanceStatus::Available, InstanceStatus::Terminating);
    assert!(!store.transition_instance(&id, from, to, 10).await.unwrap());
    let from = InstanceStatus::Initializing;
    assert!(store.transition_instance(&id, from, to, 10).await.unwrap());
    let row = store.get_instance(&id).await.unwrap().unwrap();
    assert_eq!(
        (row.status, row.status_since, row.probe_command_id),
        (to, 10, None)
    );
    assert!(
        !store.request_recycle(&id, 11).await.unwrap(),
        "terminating"
    );
    let unknown = InstanceId("i-unknown".into());
    assert!(!store.request_recycle(&unknown, 11).await.unwrap());
    assert!(store.delete_instance(&id).await.unwrap());
    assert_eq!(store.get_instance(&id).await.unwrap(), None);
}

async fn launches_are_recorded_retried_and_deleted(store: Store) {
    let launch = |token: &str, created_at: Millis, spot: bool| PendingLaunch {
        client_token: token.into(),
        tier: "default".into(),
        instance_type: "t3.small".into(),
        subnet_id: "subnet-a".into(),
        count: 3,
        spot,
        created_at,
        attempts: 0,
        last_error: None,
    };
    store
        .insert_launch(&launch("tok-b", 2, true))
        .await
        .unwrap();
    store
        .insert_launch(&launch("tok-a", 1, false))
        .await
        .unwrap();
    assert!(
        store
            .insert_launch(&launch("tok-a", 1, false))
            .await
            .is_err()
    );
    store
        .launch_failed("tok-b", "InsufficientInstanceCapacity")
        .await
        .unwrap();
    store.launch_failed("tok-b", "again").await.unwrap();
    let mut retried = launch("tok-b", 2, true);
    retried.attempts = 2;
    retried.last_error = Some("again".into());
    assert_eq!(
        store.list_launches().await.unwrap(),
        vec![launch("tok-a", 1, false), retried.clone()]
    );
    store.delete_launch("tok-a").await.unwrap();
    assert_eq!(store.list_launches().await.unwrap(), vec![retried]);
}

async fn tier_overrides_are_upserted_and_the_audit_log_lists_newest_first(store: Store) {
    let mut o = TierOverride {
        tier: "default".into(),
        spare_count: Some(4),
        max_instances: None,
        paused: true,
        container_image: None,
        launch_template_version: None,
        updated_at: 10,
        updated_by: "oncall".into(),
    };
    assert!(store.put_tier_override(&o, None).await.unwrap());
    assert!(
        !store.put_tier_override(&o, None).await.unwrap(),
        "a second writer that read no row loses"
    );
    o.spare_count = None;
    o.max_instances = Some(40);
    o.paused = false;
    o.container_image = Some("ghcr.io/example/gw:2".into());
    o.launch_template_version = Some("7".into());
    o.updated_at = 20;
    assert!(
        !store.put_tier_override(&o, Some(5)).await.unwrap(),
        "stale"
    );
    assert!(store.put_tier_override(&o, Some(10)).await.unwrap());
    let mut gpu = o.clone();
    gpu.tier = "gpu".into();
    assert!(store.put_tier_override(&gpu, None).await.unwrap());
    assert_eq!(store.tier_overrides().await.unwrap(), vec![o, gpu]);
    for (at, action) in [(1, "resize"), (2, "recycle"), (3, "repin")] {
        let entry = AuditEntry {
            id: 0,
            at,
            actor: "oncall".into(),
            action: action.into(),
            target: "default".into(),
            detail: "{}".into(),
            outcome: "ok".into(),
        };
        store.audit(&entry).await.unwrap();
    }
    let log = store.audit_log(2).await.unwrap();
    assert_eq!(
        log.iter()
            .map(|e| (e.at, e.action.as_str()))
            .collect::<Vec<_>>(),
        [(3, "repin"), (2, "recycle")]
    );
    assert!(log[0].id > log[1].id);
}

async fn spare_decisions_replace_each_tiers_last_one(store: Store) {
    use crate::plan::AutoSpares;
    use crate::store::StoredDecision;
    let stored =
        |tier: &str, target: u32, lower_since: Option<Millis>, at: Millis| StoredDecision {
            tier: tier.into(),
            decision: AutoSpares {
                target,
                wanted: 2,
                lower_since,
                held: 3,
                demanded: 5,
                rate_per_hour: 37.5,
                lead_time: 70_000,
            },
            lead_time_measured: true,
            decided_at: at,
        };
    assert!(store.spare_decisions().await.unwrap().is_empty());
    store
        .put_spare_decision(&stored("pro", 8, None, 1))
        .await
        .unwrap();
    store
        .put_spare_decision(&stored("basic", 4, None, 2))
        .await
        .unwrap();
    store
        .put_spare_decision(&stored("pro", 6, Some(90), 3))
        .await
        .unwrap();
    assert_eq!(
        store.spare_decisions().await.unwrap(),
        vec![stored("basic", 4, None, 2), stored("pro", 6, Some(90), 3)]
    );
}

async fn offering_history_replaces_each_offerings_last_one(store: Store) {
    use crate::store::OfferingHistory;
    let history =
        |t: &str, zone: &str, hours: f64, interruptions: f64, at: Millis| OfferingHistory {
            instance_type: t.into(),
            zone: zone.into(),
            instance_hours: hours,
            interruptions,
            at,
        };
    assert!(store.offering_history().await.unwrap().is_empty());
    let first = [
        history("t3.small", "us-east-1b", 12.5, 0.0, 100),
        history("t3.small", "us-east-1a", 40.25, 1.5, 100),
    ];
    store.put_offering_history(&first).await.unwrap();
    store
        .put_offering_history(&[history("t3.small", "us-east-1b", 13.0, 1.0, 200)])
        .await
        .unwrap();
    assert_eq!(
        store.offering_history().await.unwrap(),
        vec![
            history("t3.small", "us-east-1a", 40.25, 1.5, 100),
            history("t3.small", "us-east-1b", 13.0, 1.0, 200),
        ]
    );
}

async fn spot_prices_replace_each_offerings_last_one(store: Store) {
    use crate::model::cost::SpotPrice;
    let price = |instance_type: &str, zone: &str, dollars: f64, since: Millis| SpotPrice {
        instance_type: instance_type.into(),
        zone: zone.into(),
        dollars_per_hour: dollars,
        since,
    };
    assert_eq!(store.spot_prices().await.unwrap(), (vec![], None));
    let first = [
        price("t3.small", "us-east-1b", 0.0071, 5),
        price("t3.small", "us-east-1a", 0.0065, 4),
    ];
    store.put_spot_prices(&first, 100).await.unwrap();
    store
        .put_spot_prices(&[price("t3.small", "us-east-1b", 0.00642, 9)], 200)
        .await
        .unwrap();
    assert_eq!(
        store.spot_prices().await.unwrap(),
        (
            vec![
                price("t3.small", "us-east-1a", 0.0065, 4),
                price("t3.small", "us-east-1b", 0.00642, 9),
            ],
            Some(200)
        )
    );
}

async fn a_tier_condition_keeps_its_since_while_the_cause_stays(store: Store) {
    let condition = |cause: &str, since: Millis, until: Millis| TierCondition {
        tier: "default".into(),
        cause: cause.into(),
        detail: format!("{cause} at {since}"),
        since,
        until,
    };
    store
        .put_tier_condition(&condition("quota_exceeded", 10, 20))
        .await
        .unwrap();
    store
        .put_tier_condition(&condition("quota_exceeded", 15, 30))
        .await
        .unwrap();
    let mut kept = condition("quota_exceeded", 15, 30);
    kept.since = 10;
    assert_eq!(store.tier_conditions().await.unwrap(), vec![kept]);
    store
        .put_tier_condition(&condition("other_cause", 40, 50))
        .await
        .unwrap();
    assert_eq!(
        store.tier_conditions().await.unwrap(),
        vec![condition("other_cause", 40, 50)]
    );
    assert!(store.clear_tier_condition("default").await.unwrap());
    assert!(!store.clear_tier_condition("default").await.unwrap());
    assert!(store.tier_conditions().await.unwrap().is_empty());
}

/// PostgreSQL's claim does not wait for a spare another transaction holds: it skips it
/// (`FOR UPDATE SKIP LOCKED`) and answers false at once; once the holder lets go, the same
/// claim succeeds.
#[tokio::test]
async fn a_postgres_claim_skips_a_spare_another_transaction_has_locked() {
    let store = postgres_store().await;
    store.insert_user(&user("alice", "r1")).await.unwrap();
    store.put_instance(&available("i-1")).await.unwrap();
    let Pool::Postgres(pool) = &store.pool else {
        unreachable!("a PostgreSQL store")
    };
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT * FROM instances WHERE instance_id = 'i-1' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let alice = UserId::parse("alice").unwrap();
    let instance = InstanceId("i-1".into());
    // Were it waiting for the lock, this would never finish while `holder` is open.
    let claim = store.assign(&alice, &instance, "s0", 20);
    let skipped = tokio::time::timeout(std::time::Duration::from_secs(30), claim)
        .await
        .expect("the claim does not wait for the locked row");
    assert!(!skipped.unwrap());
    let row = store.get_user(&alice).await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.version),
        (UserState::Queued, 0),
        "untouched"
    );
    holder.rollback().await.unwrap();
    assert!(store.assign(&alice, &instance, "s0", 20).await.unwrap());
}

/// Both schemas, as their migrations leave them: the same tables, columns and named indexes,
/// and migrations paired by file name, so a change to one store's schema is not forgotten in
/// the other.
#[tokio::test]
async fn both_stores_have_the_same_tables_columns_and_indexes() {
    let migrations = |kind: &str| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(kind);
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(migrations("sqlite"), migrations("postgres"));
    let (sqlite, postgres) = (sqlite_store().await, postgres_store().await);
    assert_eq!(schema(&sqlite).await, schema(&postgres).await);
}

/// `(table, column)` pairs and `(table, index)` pairs of the named indexes, the migrations'
/// bookkeeping table aside.
async fn schema(store: &Store) -> Vec<(String, String)> {
    let rows: Vec<(String, String)> = match &store.pool {
        Pool::Sqlite(pool) => sqlx::query_as(
            "SELECT m.name, 'column ' || p.name FROM sqlite_master m, pragma_table_info(m.name) p
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> '_sqlx_migrations'
             UNION ALL
             SELECT tbl_name, 'index ' || name FROM sqlite_master
             WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex_%'",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
        Pool::Postgres(pool) => sqlx::query_as(
            "SELECT table_name::text, 'column ' || column_name::text FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'
             UNION ALL
             SELECT tablename::text, 'index ' || indexname::text FROM pg_indexes
             WHERE schemaname = 'public' AND tablename <> '_sqlx_migrations'
               AND indexname NOT LIKE '%_pkey' AND indexname NOT LIKE '%_key'",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
    };
    let mut rows = rows;
    rows.sort();
    assert!(rows.len() > 60, "{rows:?}");
    rows
}

#[test]
fn a_database_url_is_shown_without_its_password() {
    for (url, shown) in [
        (
            "postgres://spotpool:s3cr%40t@db.internal:5432/spotpool?sslmode=verify-full",
            "postgres://spotpool:***@db.internal:5432/spotpool?sslmode=verify-full",
        ),
        (
            "postgresql://db.internal/spotpool?user=spotpool&password=s3cret&sslmode=require",
            "postgresql://db.internal/spotpool?user=spotpool&password=***&sslmode=require",
        ),
        (
            "postgres://spotpool@db.internal/spotpool",
            "postgres://spotpool@db.internal/spotpool",
        ),
        ("sqlite://spotpool.db", "sqlite://spotpool.db"),
        ("sqlite::memory:", "sqlite::memory:"),
    ] {
        assert_eq!(redacted_url(url), shown);
    }
    assert_eq!(Store::backend_of("postgresql://h/db"), Backend::Postgres);
    assert_eq!(Store::backend_of("postgres://h/db"), Backend::Postgres);
    assert_eq!(Store::backend_of("sqlite://spotpool.db"), Backend::Sqlite);
}

/// The throwaway clusters speak TLS and their URLs ask for `sslmode=verify-full` with the
/// cluster's CA (`scripts/throwaway-postgres.sh`): the store's connections go through rustls,
/// and a server whose certificate does not name the host it was reached by is refused.
#[tokio::test]
async fn a_postgres_store_verifies_the_servers_certificate_when_the_url_asks() {
    let url = testing::postgres_url().await;
    if !url.contains("sslmode=verify-full") {
        eprintln!("the test cluster's URL asks for no TLS: nothing to check here");
        return;
    }
    let store = Store::open(&url).await.unwrap();
    let Pool::Postgres(pool) = &store.pool else {
        unreachable!("a PostgreSQL store")
    };
    let (ssl,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(ssl, "the connection is encrypted");
    // The certificate names 127.0.0.1, not localhost.
    let wrong_name = url.replace("@127.0.0.1:", "@localhost:");
    assert_ne!(wrong_name, url);
    let refused = Store::open(&wrong_name)
        .await
        .expect_err("a certificate for another name");
    assert!(matches!(refused, StoreError::Database(_)), "{refused}");
}

/// A pass's snapshot of the users and the ledger is decoded again only after a write to that
/// table, whichever connection or process wrote it (issue 11: a steady pass of a large pool
/// decoded every row of both tables).
#[tokio::test]
async fn sqlite_snapshots_are_read_again_only_after_a_write_from_any_connection() {
    let path = std::env::temp_dir().join(format!("spotpool-snapshots-{}.db", std::process::id()));
    snapshots_are_read_again_only_after_a_write_from_any_connection(&format!(
        "sqlite://{}",
        path.display()
    ))
    .await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test]
async fn postgres_snapshots_are_read_again_only_after_a_write_from_any_connection() {
    snapshots_are_read_again_only_after_a_write_from_any_connection(&testing::postgres_url().await)
        .await;
}

/// Two stores on the database at `url`, as two processes.
async fn snapshots_are_read_again_only_after_a_write_from_any_connection(url: &str) {
    let (reconciler, api) = (
        Store::open(url).await.unwrap(),
        Store::open(url).await.unwrap(),
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
}

/// The lease: one holder at a time; a second replica finds it held until it runs out (or is
/// handed back), then takes it with the next epoch, and the deposed holder can neither renew
/// nor release it. `force` (SQLite's file lock decided) takes it regardless.
async fn the_lease_goes_to_one_replica_until_it_runs_out_or_is_handed_back(store: Store) {
    use std::time::Duration;
    let long = Duration::from_secs(60);
    assert_eq!(store.leadership().await.unwrap(), None);
    let Acquisition::Acquired(a) = store
        .acquire_leadership("a", Some("http://a:1"), long, false)
        .await
        .unwrap()
    else {
        panic!("the first replica leads")
    };
    assert_eq!((a.epoch, a.previous.as_deref()), (1, None));
    assert!(a.live() && a.expires_at >= a.read_at + 59_000, "{a:?}");
    match store
        .acquire_leadership("b", None, long, false)
        .await
        .unwrap()
    {
        Acquisition::Held(held) => {
            assert_eq!((held.holder.as_str(), held.epoch), ("a", 1));
            assert_eq!(held.address.as_deref(), Some("http://a:1"));
        }
        other => panic!("b must find the lease held: {other:?}"),
    }
    assert!(store.renew_leadership("a", 1, long).await.unwrap());
    assert!(!store.renew_leadership("b", 1, long).await.unwrap());
    assert!(!store.renew_leadership("a", 2, long).await.unwrap());

    // a's lease runs out: b takes it over with epoch 2; a can no longer renew or release it.
    assert!(
        store
            .renew_leadership("a", 1, Duration::ZERO)
            .await
            .unwrap()
    );
    let Acquisition::Acquired(b) = store
        .acquire_leadership("b", None, long, false)
        .await
        .unwrap()
    else {
        panic!("an expired lease is taken over")
    };
    assert_eq!((b.epoch, b.previous.as_deref()), (2, Some("a")));
    assert!(!store.renew_leadership("a", 1, long).await.unwrap());
    assert!(!store.release_leadership("a", 1).await.unwrap());

    // b hands it back: a takes it at once, epoch 3.
    assert!(store.release_leadership("b", 2).await.unwrap());
    assert!(!store.leadership().await.unwrap().unwrap().live());
    let Acquisition::Acquired(a) = store
        .acquire_leadership("a", None, long, false)
        .await
        .unwrap()
    else {
        panic!("a handed-back lease is free")
    };
    assert_eq!((a.epoch, a.previous.as_deref()), (3, Some("b")));
    // A forced acquisition takes a live lease.
    let Acquisition::Acquired(c) = store
        .acquire_leadership("c", None, long, true)
        .await
        .unwrap()
    else {
        panic!("force takes it")
    };
    assert_eq!((c.epoch, c.previous.as_deref()), (4, Some("a")));
}

/// Two replicas racing for a free lease: exactly one gets it.
#[tokio::test]
async fn on_postgres_two_replicas_racing_for_the_lease_elect_exactly_one() {
    let store = postgres_store().await;
    for round in 0..5 {
        let ttl = std::time::Duration::from_secs(60);
        let races = (0..4).map(|i| {
            let store = store.clone();
            async move {
                store
                    .acquire_leadership(&format!("r{i}"), None, ttl, false)
                    .await
                    .unwrap()
            }
        });
        let results: Vec<Acquisition> = races.collect::<tokio::task::JoinSet<_>>().join_all().await;
        let winners: Vec<&Lease> = results
            .iter()
            .filter_map(|r| match r {
                Acquisition::Acquired(lease) => Some(lease),
                Acquisition::Held(_) => None,
            })
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let winner = winners[0];
        assert_eq!(winner.epoch, round + 1);
        assert!(
            store
                .release_leadership(&winner.holder, winner.epoch)
                .await
                .unwrap()
        );
    }
}

/// The fence: a leader's writes go through while its epoch is current; once another replica
/// has taken the lease over, every write of the deposed leader's fenced store is refused
/// (SQLSTATE SPF01) and changes nothing, while unfenced writers (the API) go on.
#[tokio::test]
async fn on_postgres_a_deposed_leaders_writes_are_refused_by_the_fence() {
    use crate::model::Event;
    use std::time::Duration;
    let store = postgres_store().await;
    let a = leads(&store, "a").await;
    let fenced = store.sibling(2, Some(a.epoch)).await.unwrap();
    fenced.insert_user(&user("alice", "r1")).await.unwrap();
    fenced
        .record(1, &Event::ClaimAssigned, None, None)
        .await
        .unwrap();

    // b takes over after a's lease runs out.
    assert!(
        store
            .renew_leadership("a", a.epoch, Duration::ZERO)
            .await
            .unwrap()
    );
    let Acquisition::Acquired(_) = store
        .acquire_leadership("b", None, Duration::from_secs(60), false)
        .await
        .unwrap()
    else {
        panic!("b takes over")
    };
    let refused = fenced.insert_user(&user("bob", "r2")).await.unwrap_err();
    assert!(is_fenced(&refused), "{refused}");
    let refused = fenced
        .record(2, &Event::ClaimAssigned, None, None)
        .await
        .unwrap_err();
    assert!(is_fenced(&refused), "{refused}");
    let alice = UserId::parse("alice").unwrap();
    let row = store.get_user(&alice).await.unwrap().unwrap();
    assert!(is_fenced(&fenced.delete_user(&row).await.unwrap_err()));
    assert!(
        store
            .get_user(&UserId::parse("bob").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.get_user(&alice).await.unwrap().is_some());
    assert_eq!(store.journal_since(0, 10).await.unwrap().len(), 1);
    // The API's writes are not fenced.
    store.insert_user(&user("carol", "r3")).await.unwrap();
    // Nor is a lease that merely ran out any better: a's old epoch stays refused even if b
    // hands the lease back.
    assert!(is_fenced(
        &fenced.insert_user(&user("dave", "r4")).await.unwrap_err()
    ));
}

/// Every table a reconciler writes has the fence trigger (a table added later without it
/// would take a deposed leader's writes).
#[tokio::test]
async fn on_postgres_every_table_but_the_lease_has_the_fence() {
    let store = postgres_store().await;
    let Pool::Postgres(pool) = &store.pool else {
        unreachable!("a PostgreSQL store")
    };
    let unfenced: Vec<(String,)> = sqlx::query_as(
        "SELECT t.tablename::text FROM pg_tables t
         WHERE t.schemaname = 'public'
           AND t.tablename NOT IN ('leadership', 'generations', '_sqlx_migrations')
           AND NOT EXISTS (SELECT 1 FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
                           WHERE c.relname = t.tablename AND g.tgname = 'spotpool_fence')",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        unfenced.is_empty(),
        "tables without the fence: {unfenced:?}"
    );
    let fenced: (i64,) =
        sqlx::query_as("SELECT count(*) FROM pg_trigger WHERE tgname = 'spotpool_fence'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(fenced.0 >= 9, "{fenced:?}");
}

/// The fence's lock on the lease row: a fenced write in flight does not hold up the leader's
/// renewal, but does hold up a take-over until it commits (so no write of the old epoch lands
/// after the new one began).
#[tokio::test]
async fn on_postgres_a_fenced_write_in_flight_delays_a_take_over_but_not_a_renewal() {
    use std::time::Duration;
    let store = postgres_store().await;
    let a = leads(&store, "a").await;
    let fenced = store.sibling(1, Some(a.epoch)).await.unwrap();
    let Pool::Postgres(pool) = &fenced.pool else {
        unreachable!("a PostgreSQL store")
    };
    let mut writing = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO image_pins (image, digest, resolved_at) VALUES ('i', 'sha256:1', 1)")
        .execute(&mut *writing)
        .await
        .unwrap();
    // Renewals go through at once while the write is open.
    let renewal = store.renew_leadership("a", a.epoch, Duration::from_secs(60));
    let renewed = tokio::time::timeout(Duration::from_secs(5), renewal)
        .await
        .expect("a renewal does not wait for the leader's own writes");
    assert!(renewed.unwrap());
    // The lease runs out; b's take-over waits for the open write.
    assert!(
        store
            .renew_leadership("a", a.epoch, Duration::ZERO)
            .await
            .unwrap()
    );
    let takeover = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .acquire_leadership("b", None, Duration::from_secs(60), false)
                .await
                .unwrap()
        }
    });
    // It waits on the lease row's lock (PostgreSQL says so), not merely slowly.
    let Pool::Postgres(main) = &store.pool else {
        unreachable!("a PostgreSQL store")
    };
    let blocked = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (waiting,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(main)
            .await
            .unwrap();
            if waiting > 0 || takeover.is_finished() {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        blocked.is_ok() && !takeover.is_finished(),
        "the take-over did not wait"
    );
    writing.commit().await.unwrap();
    let Acquisition::Acquired(b) = takeover.await.unwrap() else {
        panic!("b takes over once the write committed")
    };
    assert_eq!(b.epoch, a.epoch + 1);
    assert_eq!(
        store.image_pin("i").await.unwrap().unwrap().digest,
        "sha256:1"
    );
}

/// `holder` takes the free (or expired) lease for a minute: its lease.
async fn leads(store: &Store, holder: &str) -> Lease {
    let ttl = std::time::Duration::from_secs(60);
    match store
        .acquire_leadership(holder, None, ttl, false)
        .await
        .unwrap()
    {
        Acquisition::Acquired(lease) => lease,
        held => panic!("{holder} must lead: {held:?}"),
    }
}

/// Whether `error` is the fence (migration 0011) refusing a deposed leader's write: SQLSTATE
/// SPF01.
fn is_fenced(error: &StoreError) -> bool {
    match error {
        StoreError::Database(sqlx::Error::Database(e)) => e.code().as_deref() == Some("SPF01"),
        _ => false,
    }
}

fn warm_route(instance: &str, priority: u32) -> WarmRoute {
    WarmRoute {
        shard: Some("s0".into()),
        listener_arn: Some("arn:l".into()),
        priority: Some(priority),
        target_group_arn: Some(format!("arn:tg/sp-warm-{instance}")),
        rule_arn: Some(format!("arn:rule/{instance}")),
    }
}

async fn a_claim_takes_a_spares_complete_warm_route_on_the_users_shard_only(store: Store) {
    // A probed spare is wired while `initializing` or `available`, never after a claim.
    let mut spare = available("i-1");
    spare.status = InstanceStatus::Initializing;
    store.put_instance(&spare).await.unwrap();
    assert!(store.mark_probed(&spare.instance_id, 5).await.unwrap());
    let warm = warm_route("i-1", 11);
    assert!(
        store
            .set_warm_route(&spare.instance_id, &warm)
            .await
            .unwrap()
    );
    let read = store
        .get_instance(&spare.instance_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((read.probed_at, &read.warm), (Some(5), &warm));
    // `put_instance` (the pass's observations) leaves the warm route and the probe mark alone.
    store.put_instance(&spare).await.unwrap();
    let read = store
        .get_instance(&spare.instance_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((read.probed_at, &read.warm), (Some(5), &warm));
    assert!(
        store
            .transition_instance(
                &spare.instance_id,
                InstanceStatus::Initializing,
                InstanceStatus::Available,
                6
            )
            .await
            .unwrap()
    );
    // Its priority counts as used on the listener, and a second spare cannot hold it.
    assert_eq!(store.used_priorities("arn:l").await.unwrap(), vec![11]);
    store.put_instance(&available("i-2")).await.unwrap();
    let taken = store
        .set_warm_route(&InstanceId("i-2".into()), &warm_route("i-2", 11))
        .await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    assert_eq!(
        store.warm_routes_per_shard().await.unwrap(),
        vec![("s0".to_string(), 1)]
    );

    // A user on another shard gets the spare but not its route.
    let elsewhere = user("bob", "r2");
    store.insert_user(&elsewhere).await.unwrap();
    assert!(
        store
            .assign(&elsewhere.user_id, &spare.instance_id, "s1", 7)
            .await
            .unwrap()
    );
    let bob = store.get_user(&elsewhere.user_id).await.unwrap().unwrap();
    assert_eq!(bob.routing, Routing::default());
    let read = store
        .get_instance(&spare.instance_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.warm, warm, "left for the pool to remove");
    // A claimed spare is wired no further.
    assert!(
        !store
            .set_warm_route(&spare.instance_id, &warm)
            .await
            .unwrap()
    );
    store.clear_warm_route(&spare.instance_id).await.unwrap();
    assert!(
        store
            .get_instance(&spare.instance_id)
            .await
            .unwrap()
            .unwrap()
            .warm
            .is_empty()
    );

    // A user on the spare's shard takes the complete route, in the same transaction.
    let mut third = available("i-3");
    third.status = InstanceStatus::Available;
    store.put_instance(&third).await.unwrap();
    assert!(
        store
            .set_warm_route(&third.instance_id, &warm_route("i-3", 12))
            .await
            .unwrap()
    );
    let alice = user("alice", "r1");
    store.insert_user(&alice).await.unwrap();
    assert!(
        store
            .assign(&alice.user_id, &third.instance_id, "s0", 8)
            .await
            .unwrap()
    );
    let alice = store.get_user(&alice.user_id).await.unwrap().unwrap();
    assert_eq!(
        alice.routing,
        Routing {
            listener_arn: Some("arn:l".into()),
            rule_priority: Some(12),
            rule_arn: Some("arn:rule/i-3".into()),
            target_group_arn: Some("arn:tg/sp-warm-i-3".into()),
            prewired: Some(crate::model::Prewired::Warm),
            switched_at: None,
        }
    );
    assert_eq!(alice.shard.as_deref(), Some("s0"));
    let read = store
        .get_instance(&third.instance_id)
        .await
        .unwrap()
        .unwrap();
    assert!(read.warm.is_empty(), "the route moved: {:?}", read.warm);
    assert_eq!(store.used_priorities("arn:l").await.unwrap(), vec![12]);

    // An incomplete route (no rule yet) stays with the spare.
    let mut fourth = available("i-4");
    fourth.status = InstanceStatus::Available;
    store.put_instance(&fourth).await.unwrap();
    let mut partial = warm_route("i-4", 13);
    partial.rule_arn = None;
    assert!(
        store
            .set_warm_route(&fourth.instance_id, &partial)
            .await
            .unwrap()
    );
    let carol = user("carol", "r3");
    store.insert_user(&carol).await.unwrap();
    assert!(
        store
            .assign(&carol.user_id, &fourth.instance_id, "s0", 9)
            .await
            .unwrap()
    );
    let carol = store.get_user(&carol.user_id).await.unwrap().unwrap();
    assert_eq!(carol.routing, Routing::default());
    let read = store
        .get_instance(&fourth.instance_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.warm, partial);
}

/// A spare with its blank workspace, in a zone.
fn with_blank(id: &str, volume: &str) -> InstanceRecord {
    let mut spare = available(id);
    spare.availability_zone = Some("us-west-2a".into());
    spare.blank_volume_id = Some(volume.into());
    spare
}

async fn a_first_claim_keeps_the_spares_blank_workspace_unless_a_user_holds_that_volume(
    store: Store,
) {
    for name in ["alice", "bob", "carl", "dan"] {
        store.insert_user(&user(name, name)).await.unwrap();
    }
    let id = |name: &str| UserId::parse(name).unwrap();
    // The observed blank round-trips through the ledger.
    store
        .put_instance(&with_blank("i-1", "vol-1"))
        .await
        .unwrap();
    let read = store
        .get_instance(&InstanceId("i-1".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.blank_volume_id.as_deref(), Some("vol-1"));

    // A first claim takes it, attached where it is, with the tier's size.
    let (user, spare) = (id("alice"), InstanceId("i-1".into()));
    assert!(
        store
            .claim_spare(&user, &spare, "s0", Some(8), 20)
            .await
            .unwrap()
    );
    let mut expected = Workspace::planned("sp-blank-vol-1".into(), "us-west-2a".into(), 8);
    expected.volume_id = Some("vol-1".into());
    expected.attached_to = Some(InstanceId("i-1".into()));
    assert_eq!(workspace_of(&store, "alice").await, Some(expected.clone()));

    // Without a size (blank workspaces off) the spare keeps it.
    store
        .put_instance(&with_blank("i-2", "vol-2"))
        .await
        .unwrap();
    assert!(
        store
            .assign(&id("bob"), &InstanceId("i-2".into()), "s0", 20)
            .await
            .unwrap()
    );
    assert_eq!(workspace_of(&store, "bob").await, None);

    // A spare still listing alice's volume (her claim rolled back, the detach under way) gives
    // it to nobody else.
    store
        .put_instance(&with_blank("i-3", "vol-1"))
        .await
        .unwrap();
    let (user, spare) = (id("carl"), InstanceId("i-3".into()));
    assert!(
        store
            .claim_spare(&user, &spare, "s0", Some(8), 30)
            .await
            .unwrap()
    );
    assert_eq!(workspace_of(&store, "carl").await, None);
    assert_eq!(workspace_of(&store, "alice").await, Some(expected));

    // A user with a workspace of its own keeps it; the spare's blank stays unused.
    let mut dan = store.get_user(&id("dan")).await.unwrap().unwrap();
    let mut own = Workspace::planned("sp-ws-dan".into(), "us-west-2b".into(), 8);
    own.volume_id = Some("vol-dan".into());
    dan.workspace = Some(own.clone());
    assert!(store.update_user(&mut dan).await.unwrap());
    store
        .put_instance(&with_blank("i-4", "vol-4"))
        .await
        .unwrap();
    let (user, spare) = (id("dan"), InstanceId("i-4".into()));
    assert!(
        store
            .claim_spare(&user, &spare, "s0", Some(8), 40)
            .await
            .unwrap()
    );
    assert_eq!(workspace_of(&store, "dan").await, Some(own));
}

async fn workspace_of(store: &Store, name: &str) -> Option<Workspace> {
    let user = UserId::parse(name).unwrap();
    store.get_user(&user).await.unwrap().unwrap().workspace
}

async fn observing_an_instance_writes_only_what_the_listing_reports(store: Store) {
    // A new row is written whole.
    let listed = with_blank("i-1", "vol-1");
    store.observe_instance(&listed).await.unwrap();
    let id = InstanceId("i-1".into());
    let read = store.get_instance(&id).await.unwrap().unwrap();
    assert_eq!(read.status, InstanceStatus::Available);
    // An action changes its status meanwhile; the next listing, merged from an older
    // snapshot, updates what it observes and leaves the status alone.
    let claimed =
        store.transition_instance(&id, InstanceStatus::Available, InstanceStatus::Assigned, 5);
    assert!(claimed.await.unwrap());
    let mut stale = listed.clone();
    stale.private_ip = Some("10.0.0.9".into());
    stale.blank_volume_id = None;
    stale.missed_observations = 0;
    store.observe_instance(&stale).await.unwrap();
    let read = store.get_instance(&id).await.unwrap().unwrap();
    assert_eq!(read.status, InstanceStatus::Assigned);
    assert_eq!(read.status_since, 5);
    assert_eq!(read.private_ip.as_deref(), Some("10.0.0.9"));
    assert_eq!(read.blank_volume_id, None);
}

async fn a_rollout_replaces_the_tiers_earlier_rollout_drain_in_one_transaction(store: Store) {
    use crate::model::{Drain, DrainSelector, DrainState};
    let selector = DrainSelector {
        tier: Some("basic".into()),
        outdated: true,
        ..DrainSelector::default()
    };
    let rollout = |at| Drain::new(selector.clone(), (2, 3), "rollout", at);
    // First sight: only the record.
    let (none, replaced) = store.record_rollout("basic", "v1", None, 10).await.unwrap();
    assert_eq!((none, replaced), (None, None));
    let (first, replaced) = (store.record_rollout("basic", "v2", Some(&rollout(20)), 20))
        .await
        .unwrap();
    let first = first.unwrap();
    assert_eq!(replaced, None, "v1 had no drain");
    let (second, replaced) = (store.record_rollout("basic", "v3", Some(&rollout(30)), 30))
        .await
        .unwrap();
    let second = second.unwrap();
    assert_eq!(
        replaced.map(|d| (d.id, d.state)),
        Some((first.id, DrainState::Cancelled))
    );
    let rows = store.rollouts().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].fingerprint.as_str(), rows[0].drain_id),
        ("v3", Some(second.id))
    );
    let drains = store.list_drains().await.unwrap();
    assert_eq!(
        drains.iter().map(|d| (d.id, d.state)).collect::<Vec<_>>(),
        vec![
            (second.id, DrainState::Active),
            (first.id, DrainState::Cancelled)
        ]
    );
    assert_eq!(drains[0].selector, rollout(30).selector);
    // A replaced drain that had ended stays as it ended.
    store.cancel_drain(second.id, 35).await.unwrap();
    let (_, replaced) = (store.record_rollout("basic", "v4", Some(&rollout(40)), 40))
        .await
        .unwrap();
    assert_eq!(replaced, None, "nothing held to replace");
}

async fn an_instance_keeps_the_launch_template_it_was_first_recorded_with(store: Store) {
    let mut spare = available("i-1");
    spare.launch_template = Some("lt-1:3".into());
    store.put_instance(&spare).await.unwrap();
    store
        .note_launch_template(&spare.instance_id, "lt-1:4")
        .await
        .unwrap();
    spare.launch_template = Some("lt-9:9".into());
    store.put_instance(&spare).await.unwrap();
    let adopted = available("i-2");
    store.observe_instance(&adopted).await.unwrap();
    store
        .note_launch_template(&adopted.instance_id, "lt-1:4")
        .await
        .unwrap();
    store
        .set_instance_image(&adopted.instance_id, "gw@sha256:1")
        .await
        .unwrap();
    let read = |id: &str| {
        let store = store.clone();
        let id = InstanceId(id.into());
        async move { store.get_instance(&id).await.unwrap().unwrap() }
    };
    let first = read("i-1").await;
    assert_eq!(
        first.launch_template.as_deref(),
        Some("lt-1:3"),
        "never replaced"
    );
    assert_eq!(first.image, None, "nothing pulled yet");
    let second = read("i-2").await;
    assert_eq!(
        second.launch_template.as_deref(),
        Some("lt-1:4"),
        "noted once adopted"
    );
    assert_eq!(second.image.as_deref(), Some("gw@sha256:1"));
}

async fn users_share_an_instance_each_on_a_slot_of_their_own(store: Store) {
    store.put_instance(&available("i-1")).await.unwrap();
    let place = |name: &str, route: &str, slot: u32| {
        let mut row = user(name, route);
        row.instance_id = Some(InstanceId("i-1".into()));
        row.slot = slot;
        row
    };
    for (name, route, slot) in [("alice", "r1", 0), ("bob", "r2", 1)] {
        let mut row = place(name, route, slot);
        store.insert_user(&row).await.unwrap();
        assert!(store.update_user(&mut row).await.unwrap(), "{name}");
    }
    let mut carol = place("carol", "r3", 1);
    store.insert_user(&carol).await.unwrap();
    let taken = store.update_user(&mut carol).await;
    assert!(
        matches!(taken, Err(StoreError::Conflict(_))),
        "one slot, one user: {taken:?}"
    );
    carol.slot = 2;
    assert!(store.update_user(&mut carol).await.unwrap());
    let on_it: Vec<(String, u32)> = (store.list_users().await.unwrap().into_iter())
        .filter(|u| u.instance_id == Some(InstanceId("i-1".into())))
        .map(|u| (u.user_id.to_string(), u.slot))
        .collect();
    assert_eq!(
        on_it,
        vec![("alice".into(), 0), ("bob".into(), 1), ("carol".into(), 2)]
    );
}

/// alice, bob, carol and dave, queued.
async fn insert_four_users(store: &Store) {
    for (name, route) in [
        ("alice", "r1"),
        ("bob", "r2"),
        ("carol", "r3"),
        ("dave", "r4"),
    ] {
        store.insert_user(&user(name, route)).await.unwrap();
    }
}

async fn a_shared_instances_slots_go_to_one_user_each_and_wait_for_their_wipe(store: Store) {
    use super::{SlotTaker, SlotWipe};
    let claim = SlotTaker::Claim { shard: "s0" };
    let i1 = InstanceId("i-1".into());
    store.put_instance(&available("i-1")).await.unwrap();
    insert_four_users(&store).await;
    let id = |name: &str| UserId::parse(name).unwrap();
    let take = |name: &'static str, slot: u32| {
        let (store, i1) = (store.clone(), i1.clone());
        async move {
            let user = UserId::parse(name).unwrap();
            (store.take_slot(claim, &user, (&i1, slot, 3), 10))
                .await
                .unwrap()
        }
    };
    assert!(take("alice", 0).await);
    assert!(!take("bob", 0).await, "slot 0 is alice's");
    assert!(!take("alice", 1).await, "alice holds a slot already");
    assert!(take("bob", 1).await);
    assert!(!take("carol", 3).await, "three slots: 0 to 2");
    let record = store.get_instance(&i1).await.unwrap().unwrap();
    assert_eq!(record.status, InstanceStatus::Assigned);
    let bob = store.get_user(&id("bob")).await.unwrap().unwrap();
    assert_eq!(
        (
            bob.state,
            bob.instance_id.clone(),
            bob.slot,
            bob.shard.as_deref()
        ),
        (UserState::Provisioning, Some(i1.clone()), 1, Some("s0"))
    );

    // A slot left to wipe is nobody's until the wipe is done.
    let wipe = SlotWipe {
        instance_id: i1.clone(),
        slot: 2,
        user_id: id("erin"),
        volume_id: Some("vol-1".into()),
        command: None,
        created_at: 5,
    };
    store.add_slot_wipe(&wipe).await.unwrap();
    store.add_slot_wipe(&wipe).await.unwrap();
    assert!(!take("carol", 2).await, "slot 2 waits for its wipe");
    // Nor does the wiped user take another slot there meanwhile: the wipe, which goes by user,
    // would remove its new container.
    store.insert_user(&user("erin", "r5")).await.unwrap();
    let erin = UserId::parse("erin").unwrap();
    assert!(
        !store
            .take_slot(claim, &erin, (&i1, 3, 4), 10)
            .await
            .unwrap()
    );
    let sent = crate::model::SentCommand {
        id: Some("cmd-wipe".into()),
        sent_at: 7,
    };
    store.set_slot_wipe_command(&i1, 2, &sent).await.unwrap();
    let listed = store.slot_wipes().await.unwrap();
    assert_eq!(
        listed,
        vec![SlotWipe {
            command: Some(sent),
            ..wipe
        }]
    );
    store.delete_slot_wipe(&i1, 2).await.unwrap();
    assert!(take("carol", 2).await);

    // A move takes a slot of another instance only; a recycled instance gives none.
    let mut alice = store.get_user(&id("alice")).await.unwrap().unwrap();
    alice.state = UserState::Migrating;
    alice.moving = Some(MoveProgress::new(MoveReason::Recycle, 25));
    assert!(store.update_user(&mut alice).await.unwrap());
    store.put_instance(&available("i-2")).await.unwrap();
    let i2 = InstanceId("i-2".into());
    let moving = |instance: InstanceId, slot: u32| {
        let store = store.clone();
        async move {
            let user = UserId::parse("alice").unwrap();
            (store.take_slot(SlotTaker::Move, &user, (&instance, slot, 3), 30))
                .await
                .unwrap()
        }
    };
    assert!(!moving(i1.clone(), 1).await, "its own instance");
    store.request_recycle(&i2, 26).await.unwrap();
    assert!(!moving(i2.clone(), 0).await, "asked to recycle");
    store.clear_recycle(&i2).await.unwrap();
    assert!(moving(i2.clone(), 2).await);
    let alice = store.get_user(&id("alice")).await.unwrap().unwrap();
    assert_eq!(alice.move_target(), Some(&i2));
    assert_eq!((alice.slot, alice.slot_on(&i2)), (0, 2));
    assert!(
        !take("dave", 0).await,
        "the instance is full: 0 alice, 1 bob, 2 carol"
    );
}

async fn the_last_user_leaving_retires_a_shared_instance_and_no_claim_lands_after(store: Store) {
    use super::{SlotTaker, Vacated};
    let claim = SlotTaker::Claim { shard: "s0" };
    let i1 = InstanceId("i-1".into());
    store.put_instance(&available("i-1")).await.unwrap();
    for (name, route, slot) in [("alice", "r1", 0), ("bob", "r2", 1)] {
        store.insert_user(&user(name, route)).await.unwrap();
        let user = UserId::parse(name).unwrap();
        assert!(
            store
                .take_slot(claim, &user, (&i1, slot, 4), 10)
                .await
                .unwrap()
        );
    }
    let alice = UserId::parse("alice").unwrap();
    let mut bob = store
        .get_user(&UserId::parse("bob").unwrap())
        .await
        .unwrap()
        .unwrap();
    // alice's start reaches it; bob's, later, with a newer image, does not replace the image
    // alice runs.
    store
        .set_start_image(&i1, "gw@sha256:old", &alice, 12)
        .await
        .unwrap();
    let mut alice_row = store.get_user(&alice).await.unwrap().unwrap();
    alice_row.claim = Some(crate::model::ClaimProgress {
        step: ClaimStep::ContainerStarting,
        command: Some(crate::model::SentCommand {
            id: Some("cmd-1".into()),
            sent_at: 12,
        }),
    });
    assert!(store.update_user(&mut alice_row).await.unwrap());
    store
        .set_start_image(&i1, "gw@sha256:new", &bob.user_id, 14)
        .await
        .unwrap();
    let record = store.get_instance(&i1).await.unwrap().unwrap();
    assert_eq!(
        (record.image.as_deref(), record.started_at),
        (Some("gw@sha256:old"), Some(12)),
        "the earliest start's image and time"
    );
    assert_eq!(
        store.vacate(&i1, &alice, true, 20).await.unwrap(),
        Vacated::Held,
        "bob is there"
    );
    bob.forget_placement();
    assert!(store.update_user(&mut bob).await.unwrap());
    assert_eq!(
        store.vacate(&i1, &alice, true, 20).await.unwrap(),
        Vacated::Retired,
        "a start reached it: retired"
    );
    let record = store.get_instance(&i1).await.unwrap().unwrap();
    assert_eq!(record.status, InstanceStatus::Terminating);
    assert_eq!(
        store.vacate(&i1, &alice, true, 21).await.unwrap(),
        Vacated::Held,
        "once"
    );
    store.insert_user(&user("carol", "r3")).await.unwrap();
    let carol = UserId::parse("carol").unwrap();
    assert!(
        !store
            .take_slot(claim, &carol, (&i1, 2, 4), 30)
            .await
            .unwrap(),
        "a retiring instance gives no slot"
    );

    // An instance whose only claim never started goes back to the pool, and only once; one
    // asked to recycle, with a slot left to wipe, or lost (a recovery's), is retired.
    for (id, recycled, wipe, lost) in [
        ("i-2", false, false, false),
        ("i-3", true, false, false),
        ("i-4", false, true, false),
        ("i-5", false, false, true),
    ] {
        let instance = InstanceId(id.into());
        store.put_instance(&available(id)).await.unwrap();
        assert!(
            store
                .take_slot(claim, &carol, (&instance, 0, 4), 40)
                .await
                .unwrap()
        );
        if recycled {
            store.request_recycle(&instance, 41).await.unwrap();
        }
        if wipe {
            let wipe = super::SlotWipe {
                instance_id: instance.clone(),
                slot: 3,
                user_id: UserId::parse("dave").unwrap(),
                volume_id: None,
                command: None,
                created_at: 41,
            };
            store.add_slot_wipe(&wipe).await.unwrap();
        }
        let mut row = store.get_user(&carol).await.unwrap().unwrap();
        row.state = UserState::Queued;
        row.forget_placement();
        assert!(store.update_user(&mut row).await.unwrap());
        let expected = if recycled || wipe || lost {
            (Vacated::Retired, InstanceStatus::Terminating)
        } else {
            (Vacated::Returned, InstanceStatus::Initializing)
        };
        let vacated = store.vacate(&instance, &carol, !lost, 42).await.unwrap();
        let status = store.get_instance(&instance).await.unwrap().unwrap().status;
        assert_eq!((vacated, status), expected, "{id}");
        assert_eq!(
            store.vacate(&instance, &carol, true, 43).await.unwrap(),
            Vacated::Held,
            "{id}: no longer assigned"
        );
    }
}

async fn a_repeated_recycle_request_keeps_its_time_and_on_calls_asks_again(store: Store) {
    let i1 = InstanceId("i-1".into());
    store.put_instance(&available("i-1")).await.unwrap();
    let mut alice = user("alice", "r1");
    store.insert_user(&alice).await.unwrap();
    alice.state = UserState::Ready;
    alice.instance_id = Some(i1.clone());
    alice.move_abandoned_at = Some(15);
    assert!(store.update_user(&mut alice).await.unwrap());
    let asked = |store: Store| async move {
        let record = store.get_instance(&InstanceId("i-1".into())).await.unwrap();
        record.unwrap().recycle_requested_at
    };
    assert!(store.request_recycle(&i1, 10).await.unwrap());
    assert!(store.request_recycle(&i1, 20).await.unwrap());
    assert_eq!(
        asked(store.clone()).await,
        Some(10),
        "the first request's time"
    );
    // On-call's is a new request: its time, and the given-up move is asked again.
    assert!(store.recycle_again(&i1, 30).await.unwrap());
    assert_eq!(asked(store.clone()).await, Some(30));
    let alice = store.get_user(&alice.user_id).await.unwrap().unwrap();
    assert_eq!(alice.move_abandoned_at, None);
    assert_eq!(alice.version, 2, "the row's version moved on");
    assert!(
        !store
            .recycle_again(&InstanceId("i-9".into()), 40)
            .await
            .unwrap(),
        "unknown"
    );
}

async fn two_claims_racing_for_one_slot_give_it_to_one_and_two_slots_to_both(store: Store) {
    use super::SlotTaker;
    let claim = SlotTaker::Claim { shard: "s0" };
    for id in ["i-1", "i-2"] {
        store.put_instance(&available(id)).await.unwrap();
    }
    insert_four_users(&store).await;
    let race = |a: &'static str, b: &'static str, instance: &'static str, slots: (u32, u32)| {
        let store = store.clone();
        async move {
            let i = InstanceId(instance.into());
            let (ua, ub) = (UserId::parse(a).unwrap(), UserId::parse(b).unwrap());
            let (x, y) = tokio::join!(
                store.take_slot(claim, &ua, (&i, slots.0, 4), 10),
                store.take_slot(claim, &ub, (&i, slots.1, 4), 10)
            );
            (x.unwrap(), y.unwrap())
        }
    };
    let (a, b) = race("alice", "bob", "i-1", (0, 0)).await;
    assert!(a ^ b, "one slot, one winner: {a} {b}");
    let (c, d) = race("carol", "dave", "i-2", (0, 1)).await;
    assert!(c && d, "two slots, both: {c} {d}");
}

async fn drains_round_trip_their_progress_and_a_cancel_ends_them(store: Store) {
    use crate::model::{Drain, DrainSelector, DrainState};
    let drain = Drain {
        id: 0,
        selector: DrainSelector {
            tier: Some("basic".into()),
            instance_types: vec!["t3.small".into()],
            zones: vec!["us-east-1a".into()],
            instance_ids: vec!["i-1".into()],
            outdated: true,
        },
        max_concurrent_moves: 2,
        max_failures: 3,
        state: DrainState::Active,
        moved: 0,
        failed: 0,
        requested: Vec::new(),
        failed_users: Vec::new(),
        created_by: "oncall".into(),
        created_at: 10,
        updated_at: 10,
    };
    let first = store.insert_drain(&drain).await.unwrap();
    let second = store.insert_drain(&drain).await.unwrap();
    assert!(second.id > first.id);
    assert_eq!(
        store.list_drains().await.unwrap(),
        vec![second.clone(), first.clone()]
    );

    let mut progressed = first.clone();
    progressed.moved = 4;
    progressed.failed = 1;
    progressed.requested = vec![(UserId::parse("alice").unwrap(), InstanceId("i-1".into()))];
    progressed.failed_users = vec![UserId::parse("bob").unwrap()];
    progressed.state = DrainState::Paused;
    progressed.updated_at = 20;
    assert!(store.update_drain(&progressed).await.unwrap());
    assert_eq!(
        store.holding_drains().await.unwrap(),
        vec![progressed.clone(), second.clone()],
        "oldest first"
    );

    let cancelled = store.cancel_drain(first.id, 30).await.unwrap().unwrap();
    assert_eq!(cancelled.state, DrainState::Cancelled);
    assert_eq!(cancelled.updated_at, 30);
    assert_eq!(
        cancelled.requested, progressed.requested,
        "kept for the record"
    );
    assert_eq!(
        store.cancel_drain(first.id, 40).await.unwrap(),
        None,
        "once"
    );
    assert_eq!(store.cancel_drain(999, 40).await.unwrap(), None);
    // The reconciler's late write does not revive a cancelled drain.
    assert!(!store.update_drain(&progressed).await.unwrap());
    assert_eq!(store.holding_drains().await.unwrap(), vec![second]);
}

/// The outbox's trigger: `ready`, `failed` and `asleep` owe the callback a POST (a move's end
/// does not), in the transaction of the change; each user's oldest pending one is due first,
/// back-off and the ends are recorded once.
async fn a_users_state_changes_owe_its_callback_one_webhook_each_in_order(store: Store) {
    let mut alice = user("alice", "r1");
    alice.callback_url = Some("https://hooks.example.com/a".into());
    store.insert_user(&alice).await.unwrap();
    // Bob has no callback: nothing is owed for him.
    let mut bob = user("bob", "r2");
    store.insert_user(&bob).await.unwrap();
    let step = |user: &mut UserRecord, state: UserState, at: Millis| {
        user.state = state;
        user.updated_at = at;
        user.instance_id = Some(InstanceId("i-1".into()));
        user.clone()
    };
    for (state, at) in [
        (UserState::Provisioning, 10),
        (UserState::Ready, 20),
        (UserState::Ready, 25),
        (UserState::Migrating, 30),
        (UserState::Ready, 40),
        (UserState::Sleeping, 50),
        (UserState::Asleep, 60),
    ] {
        let mut row = step(&mut alice, state, at);
        assert!(store.update_user(&mut row).await.unwrap());
        alice.version = row.version;
        let mut row = step(&mut bob, state, at);
        row.instance_id = Some(InstanceId("i-2".into()));
        assert!(store.update_user(&mut row).await.unwrap());
        bob.version = row.version;
    }
    assert_eq!(
        (store.get_user(&alice.user_id).await.unwrap().unwrap())
            .callback_url
            .as_deref(),
        Some("https://hooks.example.com/a")
    );
    let backlog = store.webhook_backlog().await.unwrap();
    assert_eq!((backlog.pending, backlog.oldest), (2, Some(20)));
    // Only alice's oldest is due (her states arrive in order), and only once it is time.
    assert!(store.due_webhooks(19, 10).await.unwrap().is_empty());
    let due = store.due_webhooks(100, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let ready = &due[0];
    assert_eq!(ready.user_id, alice.user_id);
    assert_eq!(ready.state, UserState::Ready);
    assert_eq!(ready.instance_id, Some(InstanceId("i-1".into())));
    assert_eq!(ready.url, "https://hooks.example.com/a");
    assert_eq!((ready.created_at, ready.attempts), (20, 0));
    // A failed attempt waits for its time.
    assert_eq!(store.webhook_error(ready.id).await.unwrap(), None);
    assert!(store.retry_webhook(ready.id, "500", 200).await.unwrap());
    assert_eq!(
        store.webhook_error(ready.id).await.unwrap().as_deref(),
        Some("500")
    );
    assert!(store.due_webhooks(199, 10).await.unwrap().is_empty());
    assert_eq!(store.due_webhooks(200, 10).await.unwrap()[0].attempts, 1);
    assert!(
        store
            .finish_webhook(ready.id, WebhookOutcome::Delivered, None, 210)
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_webhook(ready.id, WebhookOutcome::Abandoned, None, 220)
            .await
            .unwrap(),
        "once"
    );
    assert!(!store.retry_webhook(ready.id, "late", 300).await.unwrap());
    let asleep = store.due_webhooks(210, 10).await.unwrap();
    assert_eq!(asleep.len(), 1);
    assert_eq!(asleep[0].state, UserState::Asleep);
    assert!(asleep[0].id > ready.id);
    // A new URL takes what is still owed; a removed callback cancels it and owes nothing more.
    assert!(
        store
            .set_callback_url(&alice.user_id, Some("https://hooks.example.com/b"), 215)
            .await
            .unwrap()
    );
    assert_eq!(
        store.due_webhooks(215, 10).await.unwrap()[0].url,
        "https://hooks.example.com/b"
    );
    store
        .set_callback_url(&alice.user_id, None, 220)
        .await
        .unwrap();
    assert_eq!(store.webhook_backlog().await.unwrap().pending, 0);
    let mut row = step(&mut alice, UserState::Failed, 70);
    assert!(store.update_user(&mut row).await.unwrap());
    alice.version = row.version;
    assert_eq!(store.webhook_backlog().await.unwrap().pending, 0);
    assert!(
        !store
            .finish_webhook(asleep[0].id, WebhookOutcome::Gone, None, 300)
            .await
            .unwrap(),
        "cancelled already"
    );
    // A failure: owed too.
    store
        .set_callback_url(&alice.user_id, Some("https://hooks.example.com/c"), 230)
        .await
        .unwrap();
    let mut row = step(&mut alice, UserState::Queued, 80);
    row.instance_id = None;
    assert!(store.update_user(&mut row).await.unwrap());
    alice.version = row.version;
    let mut row = step(&mut alice, UserState::Failed, 90);
    assert!(store.update_user(&mut row).await.unwrap());
    assert_eq!(store.webhook_backlog().await.unwrap().pending, 1);
    let failed = store.due_webhooks(300, 10).await.unwrap();
    assert_eq!(failed[0].state, UserState::Failed);
    assert_eq!(failed[0].url, "https://hooks.example.com/c");
    assert!(
        !store
            .set_callback_url(&UserId::parse("nobody").unwrap(), None, 300)
            .await
            .unwrap()
    );
    // Pruning takes only what ended before the cut.
    assert_eq!(
        store.prune_webhooks(215).await.unwrap(),
        1,
        "the delivered one"
    );
    assert_eq!(
        store.prune_webhooks(301).await.unwrap(),
        1,
        "the cancelled one"
    );
    assert_eq!(store.webhook_backlog().await.unwrap().pending, 1);
}
