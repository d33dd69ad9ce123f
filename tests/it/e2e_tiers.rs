//! Tiers end to end: moto, two `[[tier]]` tables (`basic` on t3.small, `large` on t3.large,
//! both from the test template) and the real binary. A user of each tier is served on an
//! instance of its tier's type, checked through the EC2 API; `GET /v1/pool` and `/metrics`
//! show both tiers.

use crate::daemon::{ADMIN_TOKEN, Daemon, daemon_env, samples};
use crate::support::infra::Infra;
use crate::support::moto::Moto;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(90);

#[tokio::test]
async fn e2e_two_tier_tables_serve_each_user_on_its_tiers_instance_type() {
    let moto = Moto::start().await;
    let sdk = moto.sdk_config().await;
    let infra = Infra::create(&sdk).await;
    let dir = std::env::temp_dir().join(format!("spotpool-tiers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("spotpool.toml");
    std::fs::write(
        &config,
        r#"
[[tier]]
name = "basic"
instance_types = ["t3.small"]
spare_count = 1
max_instances = 3

[[tier]]
name = "large"
instance_types = ["t3.large"]
spare_count = 1
max_instances = 3
container_memory_mb = 4096
"#,
    )
    .unwrap();
    let mut env = daemon_env(&moto, &infra);
    env.push(("SPOTPOOL_CONFIG".into(), config.display().to_string()));
    let daemon = Daemon::start(&env).await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);

    for (user, body) in [("ann", r#"{"tier":"large"}"#), ("bob", "{}")] {
        let (status, doc) = daemon.put(user, body).await;
        assert_eq!(status, 202, "{doc}");
    }
    for (user, tier, instance_type) in [("ann", "large", "t3.large"), ("bob", "basic", "t3.small")]
    {
        let doc = daemon.wait_state(user, "ready", DEADLINE).await;
        assert_eq!(doc["tier"], tier, "{doc}");
        let id = doc["instance_id"].as_str().unwrap();
        let described = ec2
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .unwrap();
        let instance = &described.reservations()[0].instances()[0];
        assert_eq!(
            instance.instance_type().map(|t| t.as_str()),
            Some(instance_type),
            "{user}"
        );
        let tag = instance
            .tags()
            .iter()
            .find(|t| t.key() == Some("spotpool:tier"));
        assert_eq!(tag.and_then(|t| t.value()), Some(tier), "{user}");
    }

    let (status, pool) = daemon
        .request("GET", "/v1/pool", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200, "{pool}");
    let names: Vec<&str> = (pool["tiers"].as_array().unwrap().iter())
        .map(|t| t["tier"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["basic", "large"], "{pool}");
    assert_eq!(
        pool["tiers"][1]["instance_types"],
        serde_json::json!(["t3.large"])
    );

    // The gauge follows at a pass: both tiers, each with its claimed user.
    let counted = daemon
        .wait_for(DEADLINE, || async {
            let metrics = daemon.metrics().await;
            ["basic", "large"].iter().all(|tier| {
                samples(&metrics, "spotpool_pool_instances")
                    .iter()
                    .any(|(labels, value)| {
                        labels.get("tier").map(String::as_str) == Some(*tier)
                            && labels.get("status").map(String::as_str) == Some("assigned")
                            && *value == 1.0
                    })
            })
        })
        .await;
    assert!(counted, "{}", daemon.metrics().await);
    let _ = std::fs::remove_dir_all(&dir);
}
