//! A drain end to end: moto, the real binary with a tier of two instance types, and the CLI.
//! A dry run changes nothing; `spotpool drain --instance-type t3.small --execute` follows the
//! drain to its end, after which no user and no instance of the pool is on t3.small, checked
//! through the EC2 API.

use crate::daemon::{ADMIN_TOKEN, Daemon, daemon_env};
use crate::support::infra::Infra;
use crate::support::moto::Moto;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(90);

/// The pool's live instances (pending or running), by type.
async fn live_types(ec2: &aws_sdk_ec2::Client) -> Vec<(String, String)> {
    use aws_sdk_ec2::types::Filter;
    let out = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:spotpool:pool")
                .values("spotpool")
                .build(),
        )
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        )
        .send()
        .await
        .unwrap();
    (out.reservations().iter())
        .flat_map(|r| r.instances())
        .map(|i| {
            let id = i.instance_id().unwrap_or_default().to_string();
            let kind = i.instance_type().map(|t| t.as_str().to_string());
            (id, kind.unwrap_or_default())
        })
        .collect()
}

#[tokio::test]
async fn e2e_a_drain_of_an_instance_type_leaves_no_user_and_no_instance_of_it() {
    let moto = Moto::start().await;
    let sdk = moto.sdk_config().await;
    let infra = Infra::create(&sdk).await;
    let mut env = daemon_env(&moto, &infra);
    env.push(("USER_INSTANCE_TYPE".into(), "t3.small,t3a.small".into()));
    env.push(("POOL_SPARE_COUNT".into(), "1".into()));
    let daemon = Daemon::start(&env).await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    for user in ["ann", "bob"] {
        let (status, doc) = daemon.put(user, "{}").await;
        assert_eq!(status, 202, "{doc}");
    }
    for user in ["ann", "bob"] {
        daemon.wait_state(user, "ready", DEADLINE).await;
    }
    daemon.wait_available(1, DEADLINE).await;
    let before = live_types(&ec2).await;
    assert!(before.iter().all(|(_, t)| t == "t3.small"), "{before:?}");

    // A dry run through the API: it names both users and changes nothing.
    let body = r#"{"selector":{"instance_types":["t3.small"]}}"#;
    let (status, dry) = daemon
        .request("POST", "/v1/admin/drain", Some(ADMIN_TOKEN), Some(body))
        .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(
        dry["remaining"]["users"].as_array().unwrap().len(),
        2,
        "{dry}"
    );
    let (_, listed) = daemon
        .request("GET", "/v1/admin/drains", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(listed, serde_json::json!([]));

    // The CLI starts it and prints its progress until it is done.
    let cli = tokio::process::Command::new(crate::daemon::binary())
        .args([
            "drain",
            "--instance-type",
            "t3.small",
            "--max-concurrent-moves",
            "1",
            "--execute",
        ])
        .env_clear()
        .env("SPOTPOOL_URL", &daemon.base)
        .env("SPOTPOOL_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SPOTPOOL_ACTOR", "oncall")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(240), cli)
        .await
        .unwrap_or_else(|_| panic!("the drain did not end:\n{}", daemon.log()))
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = out.lines().last().unwrap_or_default();
    assert!(last.contains(": done; moved 2"), "{out}");

    for user in ["ann", "bob"] {
        let (_, doc) = daemon.get(user).await;
        assert_eq!(doc["state"], "ready", "{doc}");
    }
    // No instance of the type is left in the pool (the retired ones terminate as they go).
    let cleared = daemon
        .wait_for(DEADLINE, || async {
            live_types(&ec2).await.iter().all(|(_, t)| t != "t3.small")
        })
        .await;
    assert!(cleared, "{:?}", live_types(&ec2).await);
    for user in ["ann", "bob"] {
        let (_, doc) = daemon.get(user).await;
        let id = doc["instance_id"].as_str().unwrap();
        let kind = live_types(&ec2).await.into_iter().find(|(i, _)| i == id);
        assert_eq!(kind.map(|(_, t)| t).as_deref(), Some("t3a.small"), "{user}");
    }
}
