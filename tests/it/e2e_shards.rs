//! Shards end to end: moto, two load balancers given as two `[[shard]]` tables of three users
//! each (one path-routed, one host-routed), and the real binary. Every effect is checked through
//! the AWS API: each user's rule and target group are on its own shard's listener.

use crate::daemon::{Daemon, daemon_env};
use crate::support::aws::Aws;
use crate::support::infra::Infra;
use crate::support::moto::Moto;
use std::collections::BTreeMap;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(90);

#[tokio::test]
async fn e2e_two_load_balancers_of_three_users_each_route_six_and_queue_the_seventh() {
    let moto = Moto::start().await;
    let sdk = moto.sdk_config().await;
    let infra = Infra::create(&sdk).await;
    let (_, second_listener) = infra.add_load_balancer(&sdk, "spotpool-test-1").await;
    let dir = std::env::temp_dir().join(format!("spotpool-shards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("spotpool.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[shard]]
name = "path-0"
listener_arn = "{}"
routing = "path"
base_url = "http://alb-0.local"
capacity = 3

[[shard]]
name = "host-1"
listener_arn = "{second_listener}"
routing = "host"
domain = "host-1.users.example.com"
capacity = 3
"#,
            infra.listener_arn
        ),
    )
    .unwrap();
    let mut env: Vec<(String, String)> = daemon_env(&moto, &infra)
        .into_iter()
        .filter(|(key, _)| key != "ALB_LISTENER_ARN" && key != "PUBLIC_BASE_URL")
        .collect();
    env.push(("SPOTPOOL_CONFIG".into(), config.display().to_string()));
    let daemon = Daemon::start(&env).await;
    let aws = Aws::new(&sdk);

    let users: Vec<String> = (1..=6).map(|n| format!("user-{n}")).collect();
    for user in &users {
        let (status, doc) = daemon.put(user, "{}").await;
        assert_eq!(status, 202, "{doc}");
    }
    let mut docs = BTreeMap::new();
    for user in &users {
        docs.insert(
            user.clone(),
            daemon.wait_state(user, "ready", DEADLINE).await,
        );
    }
    let mut per_shard: BTreeMap<String, Vec<&serde_json::Value>> = BTreeMap::new();
    for doc in docs.values() {
        let shard = doc["shard"].as_str().expect("placed").to_string();
        per_shard.entry(shard).or_default().push(doc);
    }
    assert_eq!(
        per_shard
            .iter()
            .map(|(s, d)| (s.as_str(), d.len()))
            .collect::<Vec<_>>(),
        vec![("host-1", 3), ("path-0", 3)],
        "{docs:?}"
    );
    // Each shard's users have their rules and target groups on its listener, matched by path
    // on the path-routed one and by host (and no path) on the host-routed one.
    for (shard, listener) in [
        ("path-0", &infra.listener_arn),
        ("host-1", &second_listener),
    ] {
        let rules = aws.rule_conditions(listener).await;
        assert_eq!(rules.len(), 3, "{shard}: {rules:?}");
        for doc in &per_shard[shard] {
            let route = doc["route"].as_str().unwrap();
            let (url, condition) = match shard {
                "path-0" => (
                    format!("http://alb-0.local/{route}/"),
                    ("path-pattern".to_string(), vec![format!("/{route}/*")]),
                ),
                _ => (
                    format!("https://{route}.host-1.users.example.com/"),
                    (
                        "host-header".to_string(),
                        vec![format!("{route}.host-1.users.example.com")],
                    ),
                ),
            };
            assert_eq!(doc["url"], url, "{doc}");
            let rule = rules
                .iter()
                .find(|(conditions, _)| conditions == &vec![condition.clone()])
                .unwrap_or_else(|| panic!("{shard}: no rule {condition:?} in {rules:?}"));
            // Its own group, or the one its pre-wired spare brought: holding exactly it.
            assert_eq!(
                aws.targets(&rule.1[0]).await,
                vec![doc["instance_id"].as_str().unwrap().to_string()],
                "{rule:?}"
            );
        }
    }

    // The seventh has no room: queued, visibly, with no instance.
    let (status, doc) = daemon.put("user-7", "{}").await;
    assert_eq!(status, 202, "{doc}");
    let waiting = daemon
        .wait_for(DEADLINE, || async {
            let (_, doc) = daemon.get("user-7").await;
            doc["error"] == "no_route_capacity"
        })
        .await;
    assert!(waiting, "user-7 never said no_route_capacity");
    let (_, doc) = daemon.get("user-7").await;
    assert_eq!(doc["state"], "queued", "{doc}");
    assert!(
        doc["instance_id"].is_null() && doc["shard"].is_null(),
        "{doc}"
    );
    // The gauge follows at the next pass.
    let counted = daemon
        .wait_for(DEADLINE, || async {
            let metrics = daemon.metrics().await;
            metrics.contains("spotpool_users_waiting_for_route 1")
                && metrics.contains("spotpool_shard_users{shard=\"host-1\"} 3")
        })
        .await;
    assert!(counted, "{}", daemon.metrics().await);

    // A user leaves the host-routed shard: the seventh is served there.
    let leaving = per_shard["host-1"][0]["user_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = daemon.delete(&leaving).await;
    assert_eq!(status, 202);
    let doc = daemon.wait_state("user-7", "ready", DEADLINE).await;
    assert_eq!(doc["shard"], "host-1", "{doc}");
    assert!(doc["error"].is_null(), "{doc}");
    assert_eq!(aws.rule_conditions(&second_listener).await.len(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}
