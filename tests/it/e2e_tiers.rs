//! Tiers end to end: moto, two `[[tier]]` tables (`basic` on t3.small, `large` on t3.large,
//! both from the test template) and the real binary. A user of each tier is served on an
//! instance of its tier's type, checked through the EC2 API; `GET /v1/pool` and `/metrics`
//! show both tiers. Then a rolling upgrade: `basic`'s image changes in the file, a SIGHUP
//! reloads it, and its user moves to a new instance behind the same rule and target group,
//! checked through the ELB API; `large`'s user stays where it is.

use crate::daemon::{ADMIN_TOKEN, Daemon, daemon_env, samples};
use crate::support::infra::Infra;
use crate::support::moto::Moto;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(90);

const TIERS: &str = r#"
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
"#;

/// The rules of the listener forwarding to a target group, with that group: (rule, group).
async fn forwards(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    listener: &str,
) -> Vec<(String, String)> {
    let rules = elb
        .describe_rules()
        .listener_arn(listener)
        .send()
        .await
        .unwrap();
    (rules.rules().iter())
        .filter(|r| r.is_default() != Some(true))
        .flat_map(|r| {
            let arn = r.rule_arn().unwrap_or_default().to_string();
            (r.actions().iter())
                .filter_map(|a| a.target_group_arn())
                .map(move |g| (arn.clone(), g.to_string()))
        })
        .collect()
}

/// The instances registered in a target group.
async fn targets(elb: &aws_sdk_elasticloadbalancingv2::Client, group: &str) -> Vec<String> {
    let health = elb
        .describe_target_health()
        .target_group_arn(group)
        .send()
        .await
        .unwrap();
    (health.target_health_descriptions().iter())
        .filter_map(|d| d.target().and_then(|t| t.id()).map(String::from))
        .collect()
}

/// moto, its infrastructure and the real binary reading `tables` from its TOML file.
pub(crate) struct TierDaemon {
    /// Kept for the daemon's lifetime.
    _moto: Moto,
    pub sdk: aws_config::SdkConfig,
    pub infra: Infra,
    pub daemon: Daemon,
    /// The directory of the TOML file (`config`), removed on drop.
    pub dir: std::path::PathBuf,
    pub config: std::path::PathBuf,
}

impl TierDaemon {
    pub(crate) async fn start(tables: &str, name: &str) -> TierDaemon {
        let moto = Moto::start().await;
        let sdk = moto.sdk_config().await;
        let infra = Infra::create(&sdk).await;
        let dir = std::env::temp_dir().join(format!("spotpool-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("spotpool.toml");
        std::fs::write(&config, tables).unwrap();
        let mut env = daemon_env(&moto, &infra);
        env.push(("SPOTPOOL_CONFIG".into(), config.display().to_string()));
        let daemon = Daemon::start(&env).await;
        TierDaemon {
            _moto: moto,
            sdk,
            infra,
            daemon,
            dir,
            config,
        }
    }
}

impl Drop for TierDaemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An instance's type, as EC2 describes it.
pub(crate) async fn instance_type(ec2: &aws_sdk_ec2::Client, id: &str) -> String {
    let described = ec2
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .unwrap();
    let instance = &described.reservations()[0].instances()[0];
    (instance.instance_type())
        .map(|t| t.as_str().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn e2e_two_tier_tables_serve_each_user_on_its_tiers_instance_type() {
    let tiered = TierDaemon::start(TIERS, "tiers").await;
    let (sdk, infra, daemon, config) = (&tiered.sdk, &tiered.infra, &tiered.daemon, &tiered.config);
    let ec2 = aws_sdk_ec2::Client::new(sdk);

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

    // A rolling upgrade of `basic`: a new image in the file, then SIGHUP.
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(sdk);
    let (_, bob) = daemon.get("bob").await;
    let (_, ann) = daemon.get("ann").await;
    let bob_instance = bob["instance_id"].as_str().unwrap().to_string();
    let rules = forwards(&elb, &infra.listener_arn).await;
    let bob_group = {
        let mut found = None;
        for (rule, group) in &rules {
            if targets(&elb, group).await.contains(&bob_instance) {
                found = Some((rule.clone(), group.clone()));
            }
        }
        found.expect("bob's rule and target group")
    };
    let new_image = "ghcr.io/openclaw/openclaw:2026.12.1";
    let reloaded = TIERS.replacen(
        "max_instances = 3\n",
        &format!("max_instances = 3\ncontainer_image = \"{new_image}\"\n"),
        1,
    );
    std::fs::write(config, reloaded).unwrap();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let moved = daemon
        .wait_for(DEADLINE, || async {
            let (_, doc) = daemon.get("bob").await;
            doc["state"] == "ready" && doc["instance_id"] != bob["instance_id"]
        })
        .await;
    assert!(moved, "bob was not moved:\n{}", daemon.log());
    let (_, moved_bob) = daemon.get("bob").await;
    assert_eq!(moved_bob["url"], bob["url"], "{moved_bob}");
    let new_instance = moved_bob["instance_id"].as_str().unwrap().to_string();
    assert!(
        forwards(&elb, &infra.listener_arn)
            .await
            .contains(&bob_group),
        "bob's rule still forwards to bob's target group"
    );
    let registered = daemon
        .wait_for(DEADLINE, || async {
            targets(&elb, &bob_group.1).await == vec![new_instance.clone()]
        })
        .await;
    assert!(registered, "{:?}", targets(&elb, &bob_group.1).await);
    let (_, drains) = daemon
        .request("GET", "/v1/admin/drains", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(drains[0]["created_by"], "rollout", "{drains}");
    assert_eq!(
        drains[0]["selector"],
        serde_json::json!({"tier": "basic", "outdated": true})
    );
    let (_, pool) = daemon
        .request("GET", "/v1/pool", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(pool["tiers"][0]["image"]["configured"], new_image, "{pool}");
    let (_, ann_after) = daemon.get("ann").await;
    assert_eq!(
        ann_after["instance_id"], ann["instance_id"],
        "large did not change"
    );
}
