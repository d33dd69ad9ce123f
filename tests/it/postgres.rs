//! The reconciler and the API over the PostgreSQL store: smoke tests that the daemon's whole
//! path (claims, a rollback, a release, a restart; the real binary from its URL) works there as
//! on SQLite. The store's
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

/// The real binary over PostgreSQL and moto: the store is opened from `SPOTPOOL_DATABASE_URL`
/// (over TLS when the test cluster speaks it), a user is claimed, the daemon is killed with
/// SIGKILL, and a new one over the same database serves the user and launches nothing extra.
#[tokio::test]
async fn e2e_on_postgres_a_restarted_daemon_serves_its_users_and_launches_nothing_extra() {
    use crate::daemon::daemon_env;
    use crate::support::infra::Infra;
    use crate::support::moto::Moto;

    let moto = Moto::start().await;
    let sdk = moto.sdk_config().await;
    let infra = Infra::create(&sdk).await;
    let mut env = daemon_env(&moto, &infra);
    let url = spotpool::store::testing::postgres_url().await;
    env.push(("SPOTPOOL_DATABASE_URL".into(), url));
    crate::e2e::restart_serves_users_and_launches_nothing_extra(&sdk, &env, |first| {
        let log = first.log();
        assert!(log.contains("PostgreSQL store"), "{log}");
    })
    .await;
}
