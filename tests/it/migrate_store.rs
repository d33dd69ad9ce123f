//! `spotpool migrate-store`, the real binary: a SQLite store with rows in every table copied into
//! a fresh PostgreSQL database and compared row for row, table by table, with the tables taken
//! from the schema (a table a migration adds must be filled here and copied, or this fails);
//! identity ids continuing past the copied ones; the copy back into SQLite; the refusals (a
//! destination with rows, a daemon's lock on the SQLite file, a missing source, one database
//! twice); and 10,000 users copied in seconds.

use spotpool::model::{
    Event, InstanceId, InstanceStatus, InterruptionNotice, Lifecycle, NoticeKind, TerminateReason,
    TierCondition, TierOverride, UserId, UserState,
};
use spotpool::store::{AuditEntry, InstanceRecord, PendingLaunch, Store, UserRecord};
use sqlx::{PgPool, Row, SqlitePool};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

/// The tables the copy leaves out by design (`spotpool::store::NOT_COPIED` says why); every
/// other table of the schema must arrive row for row.
const NOT_COPIED: [&str; 3] = ["_sqlx_migrations", "generations", "leadership"];

#[tokio::test]
async fn migrate_store_copies_every_table_from_sqlite_to_postgres_row_for_row() {
    let dir = temp_dir("copy");
    let sqlite_url = format!("sqlite://{}", dir.join("spotpool.db").display());
    let source = Store::open(&sqlite_url).await.unwrap();
    fill_every_table(&source).await;
    let postgres_url = spotpool::store::testing::postgres_url().await;
    // A password in the URL (the throwaway cluster trusts loopback and never asks for it) must
    // never be printed.
    let with_password = with_password(&postgres_url, "pw-n0t-for-logs");

    let output = migrate(&sqlite_url, &with_password);
    let (stdout, stderr) = texts(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        !format!("{stdout}{stderr}").contains("pw-n0t-for-logs"),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains(":***@"), "{stdout}");

    let (sqlite, postgres) = (sqlite_pool(&sqlite_url).await, pg_pool(&postgres_url).await);
    let tables = schema_tables(&sqlite).await;
    assert_eq!(
        tables,
        postgres_tables(&postgres).await,
        "the two schemas differ"
    );
    for table in &tables {
        let rows = sqlite_rows(&sqlite, table).await;
        assert!(
            !rows.is_empty(),
            "fill_every_table leaves {table} empty: give it rows, so its copy is tested"
        );
        assert_eq!(
            rows,
            postgres_rows(&postgres, table).await,
            "{table} differs after the copy"
        );
        assert!(
            stdout.contains(&format!("\n{table}: {}\n", counted(rows.len())))
                || stdout.starts_with(&format!("{table}: {}\n", counted(rows.len()))),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains(&format!("copied {} tables", tables.len())),
        "{stdout}"
    );
    assert_generations_count_the_copied_rows(&postgres).await;

    // The daemon's own reads of the copy agree with the source's.
    let copy = Store::open(&postgres_url).await.unwrap();
    assert_same_through_the_store(&source, &copy).await;
    // Identity ids continue after the copied ones.
    let last = source.journal_since(0, 10_000).await.unwrap();
    let last_id = last.last().unwrap().id;
    copy.record(9_000, &Event::InstanceAvailable, None, None)
        .await
        .unwrap();
    let next = copy.journal_since(last_id, 10).await.unwrap();
    assert_eq!(next.len(), 1, "{next:?}");
    assert!(next[0].id > last_id);
    let newest_audit = source.audit_log(1).await.unwrap()[0].id;
    copy.audit(&audit_entry(9_000, "after-copy")).await.unwrap();
    assert!(copy.audit_log(1).await.unwrap()[0].id > newest_audit);

    // A second run finds the rows and refuses, naming the tables.
    let again = migrate(&sqlite_url, &postgres_url);
    let (stdout, stderr) = texts(&again);
    assert!(!again.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("already holds data"), "{stderr}");
    assert!(stderr.contains("users: 6 rows"), "{stderr}");
    assert!(stderr.contains("journal: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // And back: PostgreSQL into a new SQLite file gives the original rows again (but for the
    // two rows written to the copy above).
    sqlx::query("DELETE FROM journal WHERE id > $1")
        .bind(last_id)
        .execute(&postgres)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_log WHERE id > $1")
        .bind(newest_audit)
        .execute(&postgres)
        .await
        .unwrap();
    let back_url = format!("sqlite://{}", dir.join("back.db").display());
    let back = migrate(&postgres_url, &back_url);
    let (stdout, stderr) = texts(&back);
    assert!(back.status.success(), "{stdout}\n{stderr}");
    let back_pool = sqlite_pool(&back_url).await;
    for table in &tables {
        assert_eq!(
            sqlite_rows(&sqlite, table).await,
            sqlite_rows(&back_pool, table).await,
            "{table} differs after the copy back"
        );
    }
    copy.close().await;
    source.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn migrate_store_refuses_while_a_daemon_holds_the_sqlite_lock() {
    let dir = temp_dir("lock");
    let path = dir.join("spotpool.db");
    let sqlite_url = format!("sqlite://{}", path.display());
    let source = Store::open(&sqlite_url).await.unwrap();
    source.insert_user(&user("alice", "r-alice")).await.unwrap();
    source.close().await;
    let postgres_url = spotpool::store::testing::postgres_url().await;

    // The lock a daemon takes (`App::serve`): `<database>.lock`, exclusive.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(format!("{}.lock", path.display()))
        .unwrap();
    lock.try_lock().unwrap();
    let refused = migrate(&sqlite_url, &postgres_url);
    let (stdout, stderr) = texts(&refused);
    assert!(!refused.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("a spotpool daemon runs on"), "{stderr}");
    assert!(stderr.contains("stop it first"), "{stderr}");
    // Nothing was written: the destination was not even opened.
    let postgres = pg_pool(&postgres_url).await;
    assert!(postgres_tables(&postgres).await.is_empty());

    // Nor for a source that does not exist (opening would create it empty), nor for one
    // database named twice.
    let missing = format!("sqlite://{}", dir.join("missing.db").display());
    let (_, stderr) = texts(&migrate(&missing, &postgres_url));
    assert!(stderr.contains("no SQLite database at"), "{stderr}");
    assert!(!dir.join("missing.db").exists());
    let (_, stderr) = texts(&migrate(&postgres_url, &postgres_url));
    assert!(stderr.contains("name the same database"), "{stderr}");

    // Once the daemon is gone, the same command copies.
    drop(lock);
    let copied = migrate(&sqlite_url, &postgres_url);
    let (stdout, stderr) = texts(&copied);
    assert!(copied.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("users: 1 row\n"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn migrate_store_copies_ten_thousand_users_in_seconds() {
    let dir = temp_dir("scale");
    let sqlite_url = format!("sqlite://{}", dir.join("spotpool.db").display());
    Store::open(&sqlite_url).await.unwrap().close().await;
    let sqlite = sqlite_pool(&sqlite_url).await;
    // 10,000 ready users on 10,000 instances, 50,000 journal entries: written in one statement
    // each (a store call per row would take longer than the copy).
    for statement in [
        "INSERT INTO instances (instance_id, tier, status, launched_at, status_since, private_ip)
         SELECT 'i-' || n, 'default', 'assigned', n, n, '10.0.' || (n / 256) || '.' || (n % 256)
         FROM series",
        "INSERT INTO users (user_id, tier, route, state, secret_arn, instance_id, claim_step,
                            command_id, command_sent_at, requested_at, created_at, updated_at,
                            ready_at, shard, version)
         SELECT 'user-' || n, 'default', 'r-' || n, 'ready', 'arn:secret:' || n, 'i-' || n,
                'routed', 'cmd-' || n, n, n, n, n, n, 'default', 3
         FROM series",
        "INSERT INTO journal (at, kind, user_id, instance_id, message)
         SELECT n, 'claim.assigned', 'user-' || (n % 10000), 'i-' || (n % 10000), 'entry ' || n
         FROM (SELECT a.n * 5 + b.n AS n FROM series a, (SELECT n FROM series WHERE n < 5) b)",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH RECURSIVE series(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM series WHERE n < 9999) {statement}"
        )))
        .execute(&sqlite)
        .await
        .unwrap();
    }
    let postgres_url = spotpool::store::testing::postgres_url().await;
    let started = Instant::now();
    let output = migrate(&sqlite_url, &postgres_url);
    let elapsed = started.elapsed();
    let (stdout, stderr) = texts(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    println!("copied in {elapsed:?}:\n{stdout}");
    for line in [
        "users: 10000 rows",
        "instances: 10000 rows",
        "journal: 50000 rows",
    ] {
        assert!(stdout.contains(line), "{stdout}");
    }
    // Seconds on a laptop; the bound only catches a copy that went row by row.
    assert!(elapsed < Duration::from_secs(90), "took {elapsed:?}");
    let postgres = pg_pool(&postgres_url).await;
    assert_generations_count_the_copied_rows(&postgres).await;
    let copy = Store::open(&postgres_url).await.unwrap();
    assert_eq!(copy.users_snapshot().await.unwrap().len(), 10_000);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Rows in every table, through the store's own methods: users in every state and with every
/// column set, instances in every status, launches, notices, the journal, the audit log, tier
/// overrides and conditions, an image pin, a drain.
async fn fill_every_table(store: &Store) {
    for (id, status) in [
        ("i-ready", InstanceStatus::Available),
        ("i-moving-to", InstanceStatus::Available),
        ("i-provisioning", InstanceStatus::Available),
        ("i-spare", InstanceStatus::Available),
        ("i-new", InstanceStatus::Initializing),
        ("i-leaving", InstanceStatus::Terminating),
    ] {
        store.put_instance(&instance(id, status)).await.unwrap();
    }
    store
        .request_recycle(&InstanceId("i-spare".into()), 77)
        .await
        .unwrap();
    fill_users(store).await;
    for (token, spot) in [("tok-a", true), ("tok-b", false)] {
        store
            .insert_launch(&PendingLaunch {
                client_token: token.into(),
                tier: "default".into(),
                instance_type: "t3.small".into(),
                subnet_id: "subnet-a".into(),
                count: 2,
                spot,
                created_at: 40,
                attempts: 0,
                last_error: None,
            })
            .await
            .unwrap();
    }
    store
        .launch_failed("tok-b", "InsufficientInstanceCapacity: none")
        .await
        .unwrap();
    fill_notices_and_admin(store).await;
    for n in 0..5 {
        store
            .record(
                100 + n,
                &Event::InstanceTerminating {
                    reason: TerminateReason::Surplus,
                },
                Some(&UserId::parse("alice").unwrap()),
                Some(&InstanceId("i-ready".into())),
            )
            .await
            .unwrap();
    }
    store
        .record(200, &Event::InstanceAvailable, None, None)
        .await
        .unwrap();
    // The first two entries pruned: a horizon to copy, and a journal that starts past id 1.
    assert_eq!(store.prune_journal(102).await.unwrap(), 2);
    store
        .pin_image("ghcr.io/openclaw/openclaw:latest", "sha256:abc", 300)
        .await
        .unwrap();
    let price = spotpool::model::cost::SpotPrice {
        instance_type: "t3.small".into(),
        zone: "us-east-1a".into(),
        dollars_per_hour: 0.0065,
        since: 250,
    };
    store.put_spot_prices(&[price], 310).await.unwrap();
    let decision = spotpool::store::StoredDecision {
        tier: "default".into(),
        decision: spotpool::plan::AutoSpares {
            target: 4,
            wanted: 3,
            lower_since: Some(305),
            held: 3,
            demanded: 3,
            rate_per_hour: 12.5,
            lead_time: 70_000,
        },
        lead_time_measured: true,
        decided_at: 305,
    };
    store.put_spare_decision(&decision).await.unwrap();
    let history = spotpool::store::OfferingHistory {
        instance_type: "t3.small".into(),
        zone: "us-east-1a".into(),
        instance_hours: 30.5,
        interruptions: 1.25,
        at: 320,
    };
    store.put_offering_history(&[history]).await.unwrap();
    let drain = spotpool::model::Drain {
        id: 0,
        selector: spotpool::model::DrainSelector {
            instance_types: vec!["t3.small".into()],
            ..Default::default()
        },
        max_concurrent_moves: 2,
        max_failures: 3,
        state: spotpool::model::DrainState::Active,
        moved: 1,
        failed: 1,
        requested: vec![(
            UserId::parse("alice").unwrap(),
            InstanceId("i-ready".into()),
        )],
        failed_users: vec![UserId::parse("bob").unwrap()],
        created_by: "oncall".into(),
        created_at: 400,
        updated_at: 410,
    };
    store.insert_drain(&drain).await.unwrap();
    let rollout = spotpool::model::Drain {
        selector: spotpool::model::DrainSelector {
            tier: Some("default".into()),
            outdated: true,
            ..Default::default()
        },
        created_by: "rollout".into(),
        requested: Vec::new(),
        failed_users: Vec::new(),
        ..drain
    };
    store
        .record_rollout(
            "default",
            "image=a launch=lt-1:2 on_demand=-",
            Some(&rollout),
            420,
        )
        .await
        .unwrap();
    store
        .note_launch_template(&InstanceId("i-ready".into()), "lt-1:2")
        .await
        .unwrap();
    store
        .set_instance_image(
            &InstanceId("i-ready".into()),
            "ghcr.io/openclaw/openclaw@sha256:abc",
        )
        .await
        .unwrap();
    let wipe = spotpool::store::SlotWipe {
        instance_id: InstanceId("i-ready".into()),
        slot: 3,
        user_id: UserId::parse("erin").unwrap(),
        volume_id: Some("vol-erin".into()),
        command: None,
        created_at: 500,
    };
    store.add_slot_wipe(&wipe).await.unwrap();
    let sent = spotpool::model::SentCommand {
        id: Some("cmd-wipe".into()),
        sent_at: 510,
    };
    store
        .set_slot_wipe_command(&wipe.instance_id, 3, &sent)
        .await
        .unwrap();
}

/// Users: queued, provisioning, ready with every column set, migrating, asleep with a
/// workspace, failed, deleting.
async fn fill_users(store: &Store) {
    for (id, route) in [
        ("alice", "r-alice"),
        ("bob", "r-bob"),
        ("carol", "r-carol"),
        ("dave", "r-dave"),
        ("erin", "r-erin"),
        ("frank", "r-frank"),
    ] {
        store.insert_user(&user(id, route)).await.unwrap();
    }
    let id = |name: &str| UserId::parse(name).unwrap();
    assert!(
        store
            .assign(
                &id("carol"),
                &InstanceId("i-provisioning".into()),
                "default",
                20
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .assign(&id("alice"), &InstanceId("i-ready".into()), "default", 21)
            .await
            .unwrap()
    );
    let mut alice = store.get_user(&id("alice")).await.unwrap().unwrap();
    spotpool::store::testing::set_every_column(
        &mut alice,
        &InstanceId("i-ready".into()),
        &InstanceId("i-moving-to".into()),
    );
    assert!(store.update_user(&mut alice).await.unwrap());
    // Dave's callback: his falling asleep owes it a webhook (the outbox's trigger).
    store
        .set_callback_url(&id("dave"), Some("https://hooks.example.com/dave"), 10)
        .await
        .unwrap();
    // Alice's container as the health watch last judged it.
    let watch = spotpool::model::HealthWatch {
        health: Some(spotpool::model::Health::Restarting),
        instance: Some(InstanceId("i-ready".into())),
        since: Some(25),
        restarted_at: Some(25),
        recycled_at: Some(5),
        cause: Some("Target.Timeout".into()),
    };
    assert!(store.set_health(&id("alice"), &watch).await.unwrap());
    let mut dave = store.get_user(&id("dave")).await.unwrap().unwrap();
    dave.state = UserState::Asleep;
    dave.workspace = alice.workspace.clone().map(|mut w| {
        w.volume_id = Some("vol-dave".into());
        w.attached_to = None;
        w.relocation = None;
        w
    });
    assert!(store.update_user(&mut dave).await.unwrap());
    let mut erin = store.get_user(&id("erin")).await.unwrap().unwrap();
    erin.state = UserState::Failed;
    erin.attempts = 3;
    erin.error = Some("it's \"quoted\"; DROP TABLE users; -- é ✓".into());
    assert!(store.update_user(&mut erin).await.unwrap());
    store.mark_deleting(&id("frank"), 50).await.unwrap();
}

async fn fill_notices_and_admin(store: &Store) {
    for (event_id, kind, time) in [
        ("ev-1", NoticeKind::SpotInterruptionWarning, 10),
        ("ev-2", NoticeKind::RebalanceRecommendation, 11),
        ("ev-3", NoticeKind::StateChange(Lifecycle::Stopping), 12),
    ] {
        let notice = InterruptionNotice {
            event_id: event_id.into(),
            kind,
            instance_id: InstanceId("i-ready".into()),
            event_time: time,
        };
        assert!(store.insert_notice(&notice, time + 1).await.unwrap());
    }
    store.mark_notice_handled("ev-1", 15).await.unwrap();
    for (tier, paused) in [("default", true), ("gpu", false)] {
        store
            .put_tier_override(
                &TierOverride {
                    tier: tier.into(),
                    spare_count: Some(4),
                    max_instances: paused.then_some(40),
                    paused,
                    container_image: paused.then(|| "ghcr.io/example/gw:2".into()),
                    launch_template_version: None,
                    updated_at: 60,
                    updated_by: "oncall".into(),
                },
                None,
            )
            .await
            .unwrap();
    }
    for at in [61, 62, 63] {
        store.audit(&audit_entry(at, "resize")).await.unwrap();
    }
    store
        .put_tier_condition(&TierCondition {
            tier: "gpu".into(),
            cause: "quota_exceeded".into(),
            detail: "L-34B43A08: 32 of 32 vCPUs".into(),
            since: 70,
            until: 80,
        })
        .await
        .unwrap();
}

fn user(id: &str, route: &str) -> UserRecord {
    UserRecord::queued(
        UserId::parse(id).unwrap(),
        "default".into(),
        route.into(),
        format!("arn:secret:{id}"),
        10,
    )
}

fn instance(id: &str, status: InstanceStatus) -> InstanceRecord {
    InstanceRecord {
        arn: Some(format!("arn:aws:ec2:us-east-1:123456789012:instance/{id}")),
        instance_type: Some("t3.small".into()),
        availability_zone: Some("us-east-1a".into()),
        private_ip: Some("10.0.0.7".into()),
        probe_command_id: Some("probe-1".into()),
        probe_sent_at: Some(5),
        probe_failed_at: Some(6),
        probe_failures: 2,
        last_error: Some("probe: timed out".into()),
        missed_observations: 1,
        ..InstanceRecord::new(InstanceId(id.into()), "default".into(), status, 1, 2)
    }
}

fn audit_entry(at: i64, action: &str) -> AuditEntry {
    AuditEntry {
        id: 0,
        at,
        actor: "oncall".into(),
        action: action.into(),
        target: "default".into(),
        detail: r#"{"spare_count":4}"#.into(),
        outcome: "ok".into(),
    }
}

/// The domain reads of both stores agree: what the daemon will see on the copy.
async fn assert_same_through_the_store(source: &Store, copy: &Store) {
    macro_rules! same {
        ($($read:ident($($arg:expr),*)),+ $(,)?) => {$(
            assert_eq!(
                source.$read($($arg),*).await.unwrap(),
                copy.$read($($arg),*).await.unwrap(),
                stringify!($read)
            );
        )+};
    }
    same!(
        list_users(),
        users_snapshot(),
        list_instances(),
        instances_snapshot(),
        list_launches(),
        list_unhandled_notices(),
        journal_since(0, 1_000),
        audit_log(100),
        tier_overrides(),
        tier_conditions(),
        image_pin("ghcr.io/openclaw/openclaw:latest"),
    );
}

/// On the copy the change counters (not copied: the triggers of migration 0010 keep them) have
/// moved once per copied row of their table, so no reader can take the copy for an empty table.
async fn assert_generations_count_the_copied_rows(postgres: &PgPool) {
    for table in ["users", "instances"] {
        let generation: i64 = sqlx::query_scalar("SELECT n FROM generations WHERE name = $1")
            .bind(table)
            .fetch_one(postgres)
            .await
            .unwrap();
        let rows: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(postgres)
                .await
                .unwrap();
        assert_eq!(generation, rows, "generations.{table}");
    }
}

/// As the command prints a table's count.
fn counted(rows: usize) -> String {
    if rows == 1 {
        "1 row".into()
    } else {
        format!("{rows} rows")
    }
}

/// Runs `spotpool migrate-store --from from --to to`.
fn migrate(from: &str, to: &str) -> Output {
    std::process::Command::new(crate::daemon::binary())
        .args(["migrate-store", "--from", from, "--to", to])
        .output()
        .unwrap()
}

fn texts(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `url` with `password` in its user part.
fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (user, host) = rest.split_once('@').unwrap();
    format!("{scheme}://{user}:{password}@{host}")
}

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "spotpool-migrate-{tag}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn sqlite_pool(url: &str) -> SqlitePool {
    SqlitePool::connect(url).await.unwrap()
}

async fn pg_pool(url: &str) -> PgPool {
    PgPool::connect(url).await.unwrap()
}

/// The schema's tables, from SQLite's catalog, less SQLite's own and the ones not copied by
/// design.
async fn schema_tables(sqlite: &SqlitePool) -> Vec<String> {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(sqlite)
            .await
            .unwrap();
    names
        .into_iter()
        .filter(|name| !name.starts_with("sqlite_") && !NOT_COPIED.contains(&name.as_str()))
        .collect()
}

/// The same from PostgreSQL's catalog.
async fn postgres_tables(postgres: &PgPool) -> Vec<String> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = current_schema() ORDER BY table_name",
    )
    .fetch_all(postgres)
    .await
    .unwrap();
    names
        .into_iter()
        .filter(|name| !NOT_COPIED.contains(&name.as_str()))
        .collect()
}

/// Every row of `table` as a JSON object with its keys sorted, the rows sorted: SQLite's
/// `json_object` of every column.
async fn sqlite_rows(sqlite: &SqlitePool, table: &str) -> Vec<String> {
    let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info($1)")
        .bind(table)
        .fetch_all(sqlite)
        .await
        .unwrap();
    let pairs: Vec<String> = columns.iter().map(|c| format!("'{c}', \"{c}\"")).collect();
    let select = format!("SELECT json_object({}) FROM \"{table}\"", pairs.join(", "));
    let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(select))
        .fetch_all(sqlite)
        .await
        .unwrap();
    normalized(rows, &[])
}

/// The same from PostgreSQL (`row_to_json`), its booleans as SQLite keeps them (0 and 1).
async fn postgres_rows(postgres: &PgPool, table: &str) -> Vec<String> {
    let booleans: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = $1 AND data_type = 'boolean'",
    )
    .bind(table)
    .fetch_all(postgres)
    .await
    .unwrap();
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT row_to_json(t)::text FROM \"{table}\" t"
    )))
    .fetch_all(postgres)
    .await
    .unwrap()
    .iter()
    .map(|row| row.get::<String, _>(0))
    .collect();
    normalized(rows, &booleans)
}

fn normalized(rows: Vec<String>, booleans: &[String]) -> Vec<String> {
    let mut rows: Vec<String> = rows
        .iter()
        .map(|row| {
            let mut object: BTreeMap<String, serde_json::Value> =
                serde_json::from_str(row).unwrap();
            for column in booleans {
                if let Some(value) = object.get_mut(column)
                    && let Some(flag) = value.as_bool()
                {
                    *value = serde_json::Value::from(i64::from(flag));
                }
            }
            serde_json::to_string(&object).unwrap()
        })
        .collect();
    rows.sort();
    rows
}
