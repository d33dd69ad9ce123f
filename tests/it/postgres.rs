//! The reconciler and the API over the PostgreSQL store: a smoke test that the daemon's whole
//! path (claims, a rollback, a release, a restart) works there as on SQLite. The store's
//! behaviour itself is the shared suite's (`src/store/tests.rs`), run on both stores.

use crate::world::World;
use axum::http::StatusCode;
use spotpool::cloud::CloudErrorKind;
use spotpool::model::{InstanceStatus, UserState};
use spotpool::store::Backend;

const SECRET_BODY: &str = r#"{"secrets":{"OPENAI_API_KEY":"sk-test-value-123"}}"#;

#[tokio::test]
async fn on_postgres_users_are_claimed_rolled_back_and_released_without_leaks() {
    let world = World::on_postgres(2, 10).await;
    assert_eq!(world.store.backend(), Backend::Postgres);
    world.run_until_quiet(20).await;
    assert_eq!(world.ledger_count(InstanceStatus::Available).await, 2);
    // bob's first claim fails at its first step and is rolled back onto another spare.
    world.put_user("alice", SECRET_BODY).await;
    world.run_until_quiet(30).await;
    world
        .cloud
        .fail_next("CreateTags", CloudErrorKind::Fatal, 1);
    world.put_user("bob", SECRET_BODY).await;
    world.run_until_quiet(40).await;
    let (_, alice) = world.get_user("alice").await;
    let (_, bob) = world.get_user("bob").await;
    assert_eq!(
        (&alice["state"], &bob["state"]),
        (&"ready".into(), &"ready".into())
    );
    assert_ne!(alice["instance_id"], bob["instance_id"]);
    assert_eq!(world.user_row("bob").await.attempts, 1);
    world.assert_no_leaks().await;

    // A restarted daemon over the same database finds everything as it was.
    let restarted = world.restart().await;
    restarted.run_until_quiet(10).await;
    assert_eq!(restarted.user_state("alice").await, Some(UserState::Ready));

    let (status, _) = restarted.delete_user("alice").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    restarted.run_until_quiet(30).await;
    assert_eq!(restarted.get_user("alice").await.0, StatusCode::NOT_FOUND);
    assert_eq!(restarted.user_state("bob").await, Some(UserState::Ready));
    restarted.assert_no_leaks().await;
    let journal = restarted.store.journal_since(0, 1_000).await.unwrap();
    assert!(journal.iter().any(|e| e.kind == "claim.assigned"));
}
