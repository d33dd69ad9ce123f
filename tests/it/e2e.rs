//! End to end: moto on loopback, the minimal infrastructure created with the SDK, and the real
//! `spotpool` binary; every effect is checked through the AWS API.

use crate::daemon::{ADMIN_TOKEN, API_TOKEN, Daemon, daemon_env};
use crate::support::aws::Aws;
use crate::support::infra::Infra;
use crate::support::moto::Moto;
use std::collections::HashMap;
use std::time::Duration;

const SECRET_VALUE: &str = "sk-e2e-very-secret-4242";
const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn e2e_pool_claims_release_and_bad_requests_against_moto() {
    let moto = Moto::start().await;
    let sdk = moto.sdk_config().await;
    let infra = Infra::create(&sdk).await;
    let aws = Aws::new(&sdk);
    // The container settings are the defaults: the OpenClaw gateway's, its token required.
    let mut env = daemon_env(&moto, &infra);
    env.retain(|(key, _)| key != "CONTAINER_REQUIRED_SECRETS");
    let daemon = Daemon::start(&env).await;

    // The pool reaches two available spares.
    daemon.wait_available(2, DEADLINE).await;

    // Without the gateway's token a user is refused, naming it; nothing is created.
    let (status, doc) = daemon
        .put(
            "alice",
            &format!(r#"{{"secrets":{{"OPENAI_API_KEY":"{SECRET_VALUE}"}}}}"#),
        )
        .await;
    assert_eq!(status, 400, "{doc}");
    assert_eq!(doc["error"]["code"], "missing_secrets");
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(message.contains("OPENCLAW_GATEWAY_TOKEN"), "{message}");
    assert!(!message.contains(SECRET_VALUE), "{message}");
    assert!(aws.secret("openclaw/alice").await.is_none());

    // Three users with secrets become ready.
    let body = format!(
        r#"{{"secrets":{{"OPENAI_API_KEY":"{SECRET_VALUE}","OPENCLAW_GATEWAY_TOKEN":"gw-e2e","OTHER":"x"}}}}"#
    );
    for user in ["alice", "bob", "carol"] {
        let (status, doc) = daemon.put(user, &body).await;
        assert!(status == 202 || status == 200, "{status} {doc}");
    }
    let mut docs = HashMap::new();
    for user in ["alice", "bob", "carol"] {
        docs.insert(user, daemon.wait_state(user, "ready", DEADLINE).await);
    }

    // Everything is verified through the AWS API.
    let mut seen_instances = std::collections::HashSet::new();
    for (user, doc) in &docs {
        let instance = doc["instance_id"].as_str().unwrap();
        assert!(
            seen_instances.insert(instance.to_string()),
            "two users on {instance}"
        );
        let route = doc["route"].as_str().unwrap();
        assert_eq!(doc["url"], format!("http://alb.local/{route}/"));

        let (tags, state) = aws.instance_tags_and_state(instance).await;
        assert_eq!(state, "running");
        assert_eq!(
            tags.get("Status").map(String::as_str),
            Some("assigned"),
            "{tags:?}"
        );
        assert_eq!(tags.get("UserId").map(String::as_str), Some(*user));
        assert_eq!(
            tags.get("Name").map(String::as_str),
            Some("openclaw-user-instance")
        );
        assert_eq!(
            tags.get("spotpool:pool").map(String::as_str),
            Some("spotpool")
        );

        let group = aws
            .user_target_group(&infra.listener_arn, route)
            .await
            .expect("target group");
        // The gateway's port and health path; the daemon's check timings, not AWS's (30 s × 5
        // would keep a new target out for 2.5 min).
        assert_eq!(
            aws.target_ports(&group).await,
            vec![(instance.to_string(), 18789)]
        );
        let (check, codes) = aws.health_check_and_codes(&group).await;
        assert_eq!(
            check,
            ("/healthz".to_string(), 5, 4, 2, 2),
            "health check of {group}"
        );
        // The start command waits for the same path and accepts the same codes as the group.
        assert_eq!(codes, "200");
        let start = start_script(&env, user, route);
        assert!(start.contains("\nHEALTH_PATH='/healthz'\n"), "{start}");
        assert!(
            start.contains(&format!("\nHEALTH_CODES='{codes}'\n")),
            "{start}"
        );
        let rules = aws.rules(&infra.listener_arn).await;
        assert!(
            rules
                .iter()
                .any(|(paths, groups)| paths.contains(&format!("/{route}/*"))
                    && groups.contains(&group)),
            "no rule /{route}/* -> {group}: {rules:?}"
        );

        let (value, secret_tags) = aws
            .secret(&format!("openclaw/{user}"))
            .await
            .expect("secret");
        let parsed: serde_json::Value = serde_json::from_str(&value).unwrap();
        assert_eq!(parsed["OPENAI_API_KEY"], SECRET_VALUE);
        assert_eq!(secret_tags.get("UserId").map(String::as_str), Some(*user));
        assert!(
            secret_tags
                .get("InstanceArn")
                .is_some_and(|arn| arn.ends_with(instance)),
            "{secret_tags:?}"
        );
    }

    // The pool refills to two spares.
    daemon.wait_available(2, DEADLINE).await;

    // A repeated PUT is idempotent: same instance, no new instance launched.
    let (_, before) = daemon
        .request("GET", "/v1/pool", Some(API_TOKEN), None)
        .await;
    let instances_before = before["tiers"][0]["instances"].as_array().unwrap().len();
    let (status, again) = daemon.put("alice", "{}").await;
    assert_eq!(status, 200);
    assert_eq!(again["instance_id"], docs["alice"]["instance_id"]);
    assert_eq!(again["route"], docs["alice"]["route"]);
    let (_, after) = daemon
        .request("GET", "/v1/pool", Some(API_TOKEN), None)
        .await;
    assert_eq!(
        after["tiers"][0]["instances"].as_array().unwrap().len(),
        instances_before
    );

    // DELETE removes the rule, the target group and the secret, and terminates the instance.
    let (status, _) = daemon.delete("bob").await;
    assert_eq!(status, 202);
    let gone = daemon
        .wait_for(DEADLINE, || async { daemon.get("bob").await.0 == 404 })
        .await;
    assert!(gone, "bob never went away; log:\n{}", daemon.log());
    let bob_route = docs["bob"]["route"].as_str().unwrap();
    let bob_instance = docs["bob"]["instance_id"].as_str().unwrap();
    let bob_group = format!("sp-warm-{}", &bob_instance[2..]);
    assert_eq!(aws.target_group_arn(&bob_group).await, None);
    assert_eq!(aws.target_group_arn(&format!("sp-{bob_route}")).await, None);
    let rules = aws.user_rules(&infra.listener_arn).await;
    assert!(
        !rules
            .iter()
            .any(|(paths, _)| paths.contains(&format!("/{bob_route}/*")))
    );
    assert_eq!(
        rules.len(),
        2,
        "alice's and carol's rules remain: {rules:?}"
    );
    assert!(aws.secret("openclaw/bob").await.is_none());
    let (_, state) = aws.instance_tags_and_state(bob_instance).await;
    assert!(state == "shutting-down" || state == "terminated", "{state}");
    assert_eq!(daemon.delete("bob").await.0, 404);

    // Bad ids and tokens get the right 4xx.
    assert_eq!(daemon.put("Not_Valid", "{}").await.0, 400);
    assert_eq!(daemon.put("admin", "{}").await.0, 400);
    assert_eq!(daemon.put("alice", "{oops").await.0, 400);
    let (status, body) = daemon
        .request("GET", "/v1/users/alice/instance", None, None)
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(
        daemon
            .request("GET", "/v1/pool", Some("not-the-token"), None)
            .await
            .0,
        401
    );
    assert_eq!(
        daemon
            .request("GET", "/v1/pool", Some(ADMIN_TOKEN), None)
            .await
            .0,
        200
    );
    assert_eq!(daemon.request("GET", "/healthz", None, None).await.0, 200);

    // Metrics carry the pool, claims, claim durations and AWS calls.
    let metrics = daemon.metrics().await;
    for series in [
        "spotpool_pool_instances{",
        "spotpool_claims_total{outcome=\"ready\"}",
        "spotpool_claim_duration_seconds_bucket",
        "spotpool_aws_calls_total{",
        "operation=\"RunInstances\"",
        "operation=\"SendCommand\"",
    ] {
        assert!(metrics.contains(series), "missing {series} in /metrics");
    }

    // The secret value appears nowhere in the daemon's output.
    let log = daemon.log();
    assert!(log.contains("alice"), "the log was captured");
    assert!(
        !log.contains(SECRET_VALUE),
        "secret value leaked into the daemon's output"
    );
}

#[tokio::test]
async fn e2e_a_restarted_daemon_adopts_its_pool_and_serves_existing_users() {
    let moto = Moto::start().await;
    let sdk = moto.sdk_config().await;
    let infra = Infra::create(&sdk).await;
    let env = daemon_env(&moto, &infra);
    restart_serves_users_and_launches_nothing_extra(&sdk, &env, |_| {}).await;
}

/// A daemon claims a user, is killed with SIGKILL, and a new one over the same database (and
/// `env`) serves the user and launches nothing extra: one assigned instance plus two spares.
/// `check_first` looks at the first daemon before the kill.
pub async fn restart_serves_users_and_launches_nothing_extra(
    sdk: &aws_config::SdkConfig,
    env: &[(String, String)],
    check_first: impl FnOnce(&Daemon),
) {
    let first = Daemon::start(env).await;
    first.wait_available(2, DEADLINE).await;
    first.put("dave", "{}").await;
    let doc = first.wait_state("dave", "ready", DEADLINE).await;
    first.wait_available(2, DEADLINE).await;
    check_first(&first);
    // Crash (SIGKILL) and start a new daemon over the same database.
    let dir = first.crash();

    let second = Daemon::start_in(dir, env).await;
    let (status, again) = second.get("dave").await;
    assert_eq!(status, 200);
    assert_eq!(again["instance_id"], doc["instance_id"]);
    second.wait_available(2, DEADLINE).await;
    // One assigned plus two spares: the restart launched nothing extra.
    let out = aws_sdk_ec2::Client::new(sdk)
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("instance-state-name")
                .values("running")
                .values("pending")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let running: usize = out.reservations().iter().map(|r| r.instances().len()).sum();
    assert_eq!(running, 3);
}

#[test]
fn a_missing_setting_stops_start_up_with_one_line_naming_it() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_spotpool"))
        .arg("serve")
        .env_clear()
        .env("SUBNET_IDS", "subnet-1")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("missing setting LAUNCH_TEMPLATE_ID"),
        "{stderr}"
    );

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_spotpool"))
        .arg("serve")
        .env_clear()
        .envs([
            ("LAUNCH_TEMPLATE_ID", "lt-1"),
            ("SUBNET_IDS", "subnet-1"),
            ("VPC_ID", "vpc-1"),
            ("ALB_LISTENER_ARN", "arn:listener"),
            ("SPOTPOOL_API_TOKEN", API_TOKEN),
            ("SPOTPOOL_ADMIN_TOKEN", ADMIN_TOKEN),
            ("CONTAINER_IMAGE", "img:1"),
            ("POOL_SPARE_COUNT", "many"),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("POOL_SPARE_COUNT"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn help_documents_every_setting() {
    for args in [&["--help"][..], &["serve", "--help"][..]] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_spotpool"))
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success());
        let help = String::from_utf8_lossy(&output.stdout);
        for name in [
            "LAUNCH_TEMPLATE_ID",
            "USER_INSTANCE_TYPE",
            "POOL_SPARE_COUNT",
            "SUBNET_IDS",
            "SECURITY_GROUP_ID",
            "VPC_ID",
            "ALB_LISTENER_ARN",
            "ECR_REPOSITORY_URL",
            "CONTAINER_IMAGE",
            "CONTAINER_PORT",
            "PUBLIC_BASE_URL",
            "SPOTPOOL_LISTEN",
            "SPOTPOOL_DATABASE_URL",
            "SPOTPOOL_API_TOKEN",
            "SPOTPOOL_ADMIN_TOKEN",
            "SPOTPOOL_POOL",
            "SPOTPOOL_RECONCILE_INTERVAL",
        ] {
            assert!(help.contains(name), "{args:?} help lacks {name}");
        }
    }
    // Defaults come from the constants the daemon applies.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_spotpool"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("[default: 127.0.0.1:7070]"), "{help}");
    assert!(help.contains("[default: 10s]"), "{help}");
}

/// A tiny deterministic generator (xorshift) so a failing run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

#[tokio::test]
async fn e2e_kill_9_at_random_moments_during_claims_and_releases_leaks_nothing() {
    let moto = Moto::start().await;
    let sdk = moto.sdk_config().await;
    let infra = Infra::create(&sdk).await;
    let aws = Aws::new(&sdk);
    let env = daemon_env(&moto, &infra);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("seed {seed}");
    let mut rng = Rng(seed);
    let users: Vec<String> = (0..8).map(|n| format!("kill-{n}")).collect();

    let mut daemon = Daemon::start(&env).await;
    for _ in 0..20 {
        for _ in 0..3 {
            let user = &users[rng.next(users.len() as u64) as usize];
            if rng.next(3) == 0 {
                daemon.delete(user).await;
            } else {
                daemon.put(user, r#"{"secrets":{"API_KEY":"k"}}"#).await;
            }
        }
        // The kill lands at a random moment of the work those requests started. (Random
        // timing is the point here; nothing waits on it for correctness.)
        tokio::time::sleep(Duration::from_millis(rng.next(400))).await;
        let dir = daemon.crash();
        daemon = Daemon::start_in(dir, &env).await;
    }

    // After the last restart, everything settles: each user ready or gone.
    let mut ready: HashMap<String, serde_json::Value> = HashMap::new();
    for user in &users {
        let settled = daemon
            .wait_for(DEADLINE, || async {
                let (status, doc) = daemon.get(user).await;
                status == 404 || doc["state"] == "ready" || doc["state"] == "failed"
            })
            .await;
        assert!(
            settled,
            "{user} never settled (seed {seed}); log:\n{}",
            daemon.log()
        );
        let (status, doc) = daemon.get(user).await;
        assert_ne!(doc["state"], "failed", "{user} failed: {doc} (seed {seed})");
        if status == 200 {
            ready.insert(user.clone(), doc);
        }
    }
    daemon.wait_available(2, DEADLINE).await;
    // The pool at rest: exactly its two spares, nothing on its way in or out. Instances the
    // daemon retired (tagged `terminating`, perhaps just before a kill) are terminated by the
    // passes that follow; launches made for users deleted since land and, as surplus, are
    // retired too.
    let at_rest = daemon
        .wait_for(DEADLINE, || async {
            aws.live_instances_tagged("terminating").await == 0
                && aws.live_instances_tagged("initializing").await == 0
                && aws.live_instances_tagged("available").await == 2
        })
        .await;
    assert!(
        at_rest,
        "the pool did not come to rest at two spares (seed {seed})"
    );

    // Through the AWS API: every pool resource belongs to a ready user, and vice versa.
    let spares = aws
        .assert_resources_match_users(&infra.listener_arn, &ready, &format!("seed {seed}"))
        .await;
    assert_eq!(spares, 2, "seed {seed}");
}

/// Runs the `spotpool` CLI against the daemon; returns (exit code, stdout, stderr).
pub fn cli(daemon: &Daemon, token: &str, args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(crate::daemon::binary())
        .args(args)
        .env_clear()
        .env("SPOTPOOL_URL", &daemon.base)
        .env("SPOTPOOL_ADMIN_TOKEN", token)
        .env("SPOTPOOL_ACTOR", "oncall")
        .output()
        .expect("running the spotpool CLI");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn e2e_the_admin_cli_drives_repair_pool_recycle_status_and_audit() {
    let moto = Moto::start().await;
    let sdk = moto.sdk_config().await;
    let infra = Infra::create(&sdk).await;
    let aws = Aws::new(&sdk);
    let daemon = Daemon::start(&daemon_env(&moto, &infra)).await;
    daemon.wait_available(2, DEADLINE).await;
    let (status, _) = daemon.put("alice", r#"{"secrets":{"K":"v"}}"#).await;
    assert!(status == 202 || status == 200);
    let before = daemon.wait_state("alice", "ready", DEADLINE).await;

    let (code, out, err) = cli(&daemon, ADMIN_TOKEN, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ready") && out.contains("default"), "{out}");
    // The table's columns line up: the tier's row is as wide as the header.
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[1].len(), lines[2].len(), "{out}");

    let (code, out, err) = cli(&daemon, ADMIN_TOKEN, &["repair", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("repair prints JSON");
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["orphans"], serde_json::json!([]), "{out}");

    let (code, out, err) = cli(
        &daemon,
        ADMIN_TOKEN,
        &["pool", "set", "default", "--spare", "1", "--pause"],
    );
    assert_eq!(code, 0, "{err}");
    let tier: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (tier["spare_count"].as_u64(), tier["paused"].as_bool()),
        (Some(1), Some(true))
    );
    let (code, _, err) = cli(
        &daemon,
        ADMIN_TOKEN,
        &["pool", "set", "default", "--resume"],
    );
    assert_eq!(code, 0, "{err}");

    // Recycling alice's instance moves her: same route, another instance, the old one gone.
    let old = before["instance_id"].as_str().unwrap().to_string();
    let (code, out, err) = cli(&daemon, ADMIN_TOKEN, &["recycle", &old]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"alice\""), "{out}");
    let moved = daemon
        .wait_for(DEADLINE, || async {
            let (_, doc) = daemon.get("alice").await;
            doc["state"] == "ready" && doc["instance_id"].as_str() != Some(old.as_str())
        })
        .await;
    assert!(moved, "alice was not moved:\n{}", daemon.log());
    let (_, after) = daemon.get("alice").await;
    assert_eq!(after["route"], before["route"]);
    let gone = daemon
        .wait_for(DEADLINE, || async {
            let (_, state) = aws.instance_tags_and_state(&old).await;
            state == "terminated" || state == "shutting-down"
        })
        .await;
    assert!(gone, "the recycled instance is still running");

    // Errors are one line with the API's code; a wrong token and an unreachable daemon differ.
    let (code, _, err) = cli(&daemon, ADMIN_TOKEN, &["recycle", "i-0000000000000dead"]);
    assert_eq!(code, 1);
    assert!(err.contains("404 not_found"), "{err}");
    let (code, _, err) = cli(&daemon, API_TOKEN, &["repair", "--dry-run"]);
    assert_eq!(code, 1);
    assert!(err.contains("403 forbidden"), "{err}");

    let (code, out, err) = cli(&daemon, ADMIN_TOKEN, &["audit"]);
    assert_eq!(code, 0, "{err}");
    let audit: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let actions: Vec<&str> = audit
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "instance.recycle",
            "instance.recycle",
            "pool.set",
            "pool.set",
            "repair.dry_run"
        ],
        "{out}"
    );
    assert!(audit.iter().all(|e| e["actor"] == "oncall"), "{out}");
    assert_eq!(audit[0]["outcome"], "not_found");
}

/// Issue 5 against moto: an interruption warning published to the SQS queue, the instance then
/// terminated through the EC2 API; the daemon moves the user, and the AWS API shows the user's
/// target group holding the new instance, with route, rule and secret intact.
#[tokio::test]
async fn e2e_an_interruption_warning_moves_the_user_to_a_new_instance() {
    let moto = Moto::start().await;
    let sdk = moto.sdk_config().await;
    let infra = Infra::create(&sdk).await;
    let aws = Aws::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue_url = sqs
        .create_queue()
        .queue_name("spotpool-interruptions")
        .send()
        .await
        .expect("creating the queue")
        .queue_url
        .expect("a queue URL");
    let mut env = daemon_env(&moto, &infra);
    env.push(("SPOTPOOL_INTERRUPTION_QUEUE_URL".into(), queue_url.clone()));
    let daemon = Daemon::start(&env).await;
    daemon.wait_available(2, DEADLINE).await;
    let (status, _) = daemon.put("alice", r#"{"secrets":{"K":"v"}}"#).await;
    assert!(status == 200 || status == 202);
    let before = daemon.wait_state("alice", "ready", DEADLINE).await;
    let old = before["instance_id"].as_str().unwrap().to_string();
    let route = before["route"].as_str().unwrap().to_string();
    let group = aws
        .user_target_group(&infra.listener_arn, &route)
        .await
        .expect("alice's target group");
    let rules_before = aws.user_rules(&infra.listener_arn).await;

    let warning = serde_json::json!({
        "version": "0",
        "id": "e2e-warning-1",
        "detail-type": "EC2 Spot Instance Interruption Warning",
        "source": "aws.ec2",
        "account": "123456789012",
        "time": "2026-11-23T06:00:00Z",
        "region": "us-east-1",
        "resources": [format!("arn:aws:ec2:us-east-1:123456789012:instance/{old}")],
        "detail": {"instance-id": old, "instance-action": "terminate"}
    });
    sqs.send_message()
        .queue_url(&queue_url)
        .message_body(warning.to_string())
        .send()
        .await
        .expect("publishing the warning");
    // EC2 takes the instance (here at once rather than two minutes later).
    aws.terminate(&old).await;

    let moved = daemon
        .wait_for(DEADLINE, || async {
            let (_, doc) = daemon.get("alice").await;
            doc["state"] == "ready" && doc["instance_id"].as_str() != Some(old.as_str())
        })
        .await;
    assert!(moved, "alice was not moved:\n{}", daemon.log());
    let (_, after) = daemon.get("alice").await;
    let new = after["instance_id"].as_str().unwrap().to_string();
    assert_eq!(after["route"], before["route"]);

    // Through the AWS API: the same target group now holds exactly the new instance, the rules
    // are unchanged, and the secret is bound to the new instance.
    assert_eq!(aws.targets(&group).await, vec![new.clone()]);
    assert_eq!(aws.user_rules(&infra.listener_arn).await, rules_before);
    let (_, secret_tags) = aws.secret("openclaw/alice").await.expect("alice's secret");
    assert!(
        secret_tags["InstanceArn"].ends_with(&new),
        "{secret_tags:?}"
    );
    let (tags, state) = aws.instance_tags_and_state(&new).await;
    assert_eq!(state, "running");
    assert_eq!(tags.get("UserId").map(String::as_str), Some("alice"));
    // The message was handled and deleted.
    let metrics = daemon.metrics().await;
    assert!(
        metrics.contains(
            "spotpool_interruptions_received_total{kind=\"spot_interruption_warning\"} 1"
        ),
        "{metrics}"
    );
    let ready = HashMap::from([("alice".to_string(), after.clone())]);
    aws.assert_resources_match_users(&infra.listener_arn, &ready, "after the move")
        .await;
}

/// Issue 10 against moto, through the real binary: a user's workspace volume is created in the
/// zone of the user's instance and attached to it; it follows the user to a new instance on a
/// recycle, stays (detached) while the user sleeps with no instance and no target group, is
/// attached again on wake, and is deleted with the user. moto does not check zones, so the test
/// does.
#[tokio::test]
async fn e2e_a_workspace_follows_its_user_through_recycle_sleep_wake_and_delete() {
    let moto = Moto::start().await;
    let sdk = moto.sdk_config().await;
    let infra = Infra::create(&sdk).await;
    let aws = Aws::new(&sdk);
    let daemon = Daemon::start(&daemon_env(&moto, &infra)).await;
    daemon.wait_available(2, DEADLINE).await;

    // Claimed: one tagged, encrypted volume in the instance's zone, attached to it.
    let (status, _) = daemon.put("alice", r#"{"secrets":{"K":"v"}}"#).await;
    assert!(status == 202 || status == 200, "{status}");
    let claimed = daemon.wait_state("alice", "ready", DEADLINE).await;
    let first = claimed["instance_id"].as_str().unwrap().to_string();
    let route = claimed["route"].as_str().unwrap().to_string();
    let volumes = aws.workspace_volumes("alice").await;
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    let volume = volumes[0].clone();
    assert_eq!(volume.zone, aws.instance_zone(&first).await, "{volume:?}");
    assert_eq!(volume.attached_to, vec![first.clone()], "{volume:?}");
    assert!(volume.encrypted, "{volume:?}");
    assert_eq!(volume.size_gib, 8);
    assert_eq!(
        volume.tags.get("spotpool:pool").map(String::as_str),
        Some("spotpool")
    );
    assert_eq!(
        claimed["workspace"],
        serde_json::json!({
            "volume_id": volume.id,
            "availability_zone": volume.zone,
            "size_gib": 8,
            "attached_to": first,
        })
    );

    // Recycled: the same volume on the new instance (same zone), the route unchanged.
    let (status, body) = daemon
        .request(
            "POST",
            &format!("/v1/admin/instances/{first}/recycle"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let moved = daemon
        .wait_for(DEADLINE, || async {
            let (_, doc) = daemon.get("alice").await;
            doc["state"] == "ready" && doc["instance_id"].as_str() != Some(first.as_str())
        })
        .await;
    assert!(moved, "alice was not moved:\n{}", daemon.log());
    let (_, recycled) = daemon.get("alice").await;
    let second = recycled["instance_id"].as_str().unwrap().to_string();
    assert_eq!(recycled["route"], claimed["route"]);
    let volumes = aws.workspace_volumes("alice").await;
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert_eq!(volumes[0].id, volume.id);
    assert_eq!(volumes[0].attached_to, vec![second.clone()]);
    assert_eq!(aws.instance_zone(&second).await, volume.zone);

    // Asleep: no instance, no target group, the rule kept, the volume detached and kept.
    let (status, body) = daemon
        .request("POST", "/v1/users/alice/sleep", Some(API_TOKEN), None)
        .await;
    assert_eq!(status, 202, "{body}");
    let asleep = daemon.wait_state("alice", "asleep", DEADLINE).await;
    assert_eq!(asleep["instance_id"], serde_json::Value::Null, "{asleep}");
    assert_eq!(asleep["route"], claimed["route"]);
    assert_eq!(asleep["workspace"]["attached_to"], serde_json::Value::Null);
    let volumes = aws.workspace_volumes("alice").await;
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert_eq!(volumes[0].id, volume.id);
    assert!(volumes[0].attached_to.is_empty(), "{volumes:?}");
    assert_eq!(volumes[0].state, "available");
    assert_eq!(aws.target_group_arn(&format!("sp-{route}")).await, None);
    let rules = aws.rules(&infra.listener_arn).await;
    assert!(
        rules
            .iter()
            .any(|(paths, groups)| paths.contains(&format!("/{route}/*")) && groups.is_empty()),
        "the route's rule answers without a target group: {rules:?}"
    );
    let gone = daemon
        .wait_for(DEADLINE, || async {
            let (_, state) = aws.instance_tags_and_state(&second).await;
            state == "terminated" || state == "shutting-down"
        })
        .await;
    assert!(gone, "the sleeping user's instance is still running");

    // Woken: ready again with the same route and volume.
    let (status, body) = daemon
        .request("POST", "/v1/users/alice/wake", Some(API_TOKEN), None)
        .await;
    assert_eq!(status, 202, "{body}");
    let woken = daemon.wait_state("alice", "ready", DEADLINE).await;
    let third = woken["instance_id"].as_str().unwrap().to_string();
    assert_eq!(woken["route"], claimed["route"]);
    assert_eq!(woken["url"], claimed["url"]);
    assert_eq!(woken["workspace"]["volume_id"], volume.id.as_str());
    let volumes = aws.workspace_volumes("alice").await;
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert_eq!(volumes[0].attached_to, vec![third.clone()]);
    assert_eq!(aws.instance_zone(&third).await, volume.zone);
    let ready = HashMap::from([("alice".to_string(), woken.clone())]);
    aws.assert_resources_match_users(&infra.listener_arn, &ready, "after the wake")
        .await;

    // Deleted: the volume goes with the user; nothing is left.
    assert_eq!(daemon.delete("alice").await.0, 202);
    let deleted = daemon
        .wait_for(DEADLINE, || async { daemon.get("alice").await.0 == 404 })
        .await;
    assert!(deleted, "alice never went away:\n{}", daemon.log());
    let volumes = aws.workspace_volumes("alice").await;
    assert!(
        volumes
            .iter()
            .all(|v| v.state == "deleting" || v.state == "deleted"),
        "{volumes:?}"
    );
    aws.assert_resources_match_users(&infra.listener_arn, &HashMap::new(), "after the delete")
        .await;
}

/// The start command the daemon with `env` sends for `user` (`spotpool start-script`).
fn start_script(env: &[(String, String)], user: &str, route: &str) -> String {
    let output = std::process::Command::new(crate::daemon::binary())
        .args(["start-script", "--user-id", user, "--route", route])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn e2e_a_second_daemon_on_the_database_is_a_standby_until_the_leader_dies() {
    let moto = Moto::start().await;
    let sdk = moto.sdk_config().await;
    let infra = Infra::create(&sdk).await;
    let env = daemon_env(&moto, &infra);
    let leader = Daemon::start(&env).await;
    leader.wait_available(2, DEADLINE).await;
    let standby = Daemon::start_in(leader.dir.clone(), &env).await;
    let role = |daemon: &Daemon| {
        let client = daemon.client.clone();
        let url = format!("{}/readyz", daemon.base);
        async move {
            let doc: serde_json::Value =
                client.get(url).send().await.unwrap().json().await.unwrap();
            doc["role"].as_str().unwrap_or_default().to_string()
        }
    };
    assert_eq!(role(&leader).await, "leader");
    assert_eq!(role(&standby).await, "standby");
    assert!(leader.metrics().await.contains("spotpool_leader 1"));
    assert!(standby.metrics().await.contains("spotpool_leader 0"));
    let (_, pool) = standby
        .request("GET", "/v1/pool", Some(API_TOKEN), None)
        .await;
    assert_eq!(pool["role"], "standby", "{pool}");

    // The leader dies: the standby takes the reconciler lock and leads.
    let _dir = leader.crash();
    let took_over = standby
        .wait_for(DEADLINE, || async {
            standby.metrics().await.contains("spotpool_leader 1")
        })
        .await;
    assert!(took_over, "{}", standby.log());
    assert_eq!(role(&standby).await, "leader");
}
