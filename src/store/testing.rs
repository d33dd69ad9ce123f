//! Test scaffolding (cargo feature `fake`, like the fake cloud): PostgreSQL databases for the
//! store's shared test suite and the worlds over PostgreSQL, and a user row with every column
//! set ([`set_every_column`]).
//!
//! [`postgres_url`] creates a fresh, empty database for each caller on one cluster: the one
//! `SPOTPOOL_TEST_POSTGRES_URL` names (`scripts/test.sh` starts one for the whole run), or else
//! one this test process starts for itself with `scripts/throwaway-postgres.sh serve` (initdb in
//! a temporary directory, a free loopback port, as the `postgres` user when run as root). That
//! script holds the read end of a pipe whose write end lives in this process; when the process
//! exits, however it exits, the pipe closes and the script stops the cluster by its PID and
//! deletes its directory. Nothing is skipped: without PostgreSQL's binaries the script fails and
//! so does the test, with the script's message.

use super::UserRecord;
use crate::model::{
    ClaimProgress, ClaimStep, InstanceId, MoveProgress, MoveReason, MoveStep, MoveTarget,
    Relocation, Routing, SentCommand, TeardownKind, UserState, Workspace,
};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// The variable naming a cluster to create the test databases on (a URL whose user may
/// `CREATE DATABASE`).
pub const CLUSTER_URL_VARIABLE: &str = "SPOTPOOL_TEST_POSTGRES_URL";

/// The URL of a new empty database, created for the caller on the test cluster.
pub async fn postgres_url() -> String {
    use sqlx::Connection;
    let cluster = cluster_url();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    // Unique across the processes of one run sharing a cluster: pid, counter, and the clock.
    let name = format!(
        "spotpool_test_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = sqlx::PgConnection::connect(&cluster)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test cluster: {e}"));
    // The name is digits and underscores only: nothing to quote.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("creating the test database {name}: {e}"));
    let _ = admin.close().await;
    with_database(&cluster, &name)
}

/// `url` naming the database `name` instead of its own.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let (scheme, rest) = base
        .split_once("://")
        .unwrap_or_else(|| panic!("{CLUSTER_URL_VARIABLE} is not a URL"));
    let authority = rest.split('/').next().unwrap_or(rest);
    let mut url = format!("{scheme}://{authority}/{name}");
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// The test cluster's URL: the variable's, or this process's own cluster, started once.
fn cluster_url() -> String {
    if let Ok(url) = std::env::var(CLUSTER_URL_VARIABLE)
        && !url.is_empty()
    {
        return url;
    }
    static OWN: OnceLock<String> = OnceLock::new();
    OWN.get_or_init(start_own_cluster).clone()
}

/// Starts `scripts/throwaway-postgres.sh serve` and keeps its standard input open until this
/// process exits.
fn start_own_cluster() -> String {
    static SERVER: Mutex<Option<Child>> = Mutex::new(None);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/throwaway-postgres.sh");
    let mut child = Command::new("bash")
        .arg(script)
        .arg("serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {script}: {e}"));
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped");
    BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("reading {script}: {e}"));
    let url = line.trim().to_string();
    if url.is_empty() {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let status = child.wait();
        panic!("no PostgreSQL for the store tests ({status:?}): {stderr}");
    }
    // The stdin pipe stays open as long as this process lives: dropping the child does not
    // close it, and nothing else holds a copy (std's pipes are close-on-exec).
    *SERVER.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
    url
}

/// `user` with every column set, as a user being moved from the instance `held` to `target` has
/// them, and more (a teardown, a workspace on its way to another zone, an error with quotes,
/// timestamps at the edges): for tests that a whole row survives a round trip or a copy.
pub fn set_every_column(user: &mut UserRecord, held: &InstanceId, target: &InstanceId) {
    user.state = UserState::Migrating;
    user.instance_id = Some(held.clone());
    user.slot = 3;
    user.claim = Some(ClaimProgress {
        step: ClaimStep::Routed,
        command: Some(SentCommand {
            id: Some("cmd-1".into()),
            sent_at: 1_700_000_000_123,
        }),
    });
    user.shard = Some("default".into());
    user.routing = Routing {
        listener_arn: Some("arn:l".into()),
        rule_priority: Some(4_000),
        rule_arn: Some("arn:rule".into()),
        target_group_arn: Some("arn:tg".into()),
        prewired: Some(crate::model::Prewired::Switched),
        switched_at: Some(1_700_000_000_321),
    };
    user.teardown = Some(TeardownKind::Recover);
    user.moving = Some(MoveProgress {
        reason: MoveReason::Interruption,
        started_at: 1_700_000_000_200,
        attempts: 2,
        target: Some(MoveTarget {
            instance: target.clone(),
            slot: 2,
            step: MoveStep::ContainerStarting,
            command: Some(SentCommand {
                id: None,
                sent_at: 1_700_000_000_300,
            }),
        }),
    });
    user.workspace = Some(Workspace {
        volume_id: Some("vol-1".into()),
        client_token: "tok-1".into(),
        availability_zone: "us-east-1a".into(),
        size_gib: 20,
        attached_to: Some(held.clone()),
        stop_command: Some(SentCommand {
            id: Some("cmd-stop".into()),
            sent_at: 1_700_000_000_400,
        }),
        relocation: Some(Relocation {
            to_zone: "us-east-1b".into(),
            snapshot_id: Some("snap-1".into()),
            client_token: "tok-2".into(),
            volume_id: Some("vol-2".into()),
        }),
    });
    user.attempts = 3;
    user.error = Some("it's \"quoted\"; DROP TABLE users; --".into());
    user.requested_at = i64::MAX - 1;
    user.updated_at = 1_700_000_000_500;
    user.claimed_at = Some(1_700_000_000_600);
    user.ready_at = Some(-1);
    user.move_abandoned_at = Some(1_700_000_000_700);
}
