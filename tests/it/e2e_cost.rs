//! The live cost end to end (issue 16, Done-when bullet 1): moto, the real binary, one ready
//! user and two spares. `GET /v1/pool` prices each instance at the spot price moto reports
//! (read here through the EC2 API, as the daemon reads it), adds what the settings say each
//! instance, workspace, secret, load balancer and the network cost, and `/metrics` and
//! `spotpool cost` show the same figures.

use crate::daemon::{ADMIN_TOKEN, Daemon, daemon_env, samples};
use crate::e2e::cli;
use crate::support::infra::Infra;
use crate::support::moto::Moto;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(90);
const ROOT_GIB: f64 = 20.0;
const NETWORK: f64 = 0.12;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 2e-6
}

#[tokio::test]
async fn e2e_the_pools_cost_is_its_instances_at_motos_spot_price_plus_the_fixed_rates() {
    let moto = Moto::start().await;
    let sdk = moto.sdk_config().await;
    let infra = Infra::create(&sdk).await;
    let mut env = daemon_env(&moto, &infra);
    for (key, value) in [
        ("SPOTPOOL_BLANK_WORKSPACES", "false"),
        ("SPOTPOOL_ROOT_VOLUME_GIB", "20"),
        ("SPOTPOOL_NETWORK_FIXED_DOLLARS_PER_HOUR", "0.12"),
        ("SPOTPOOL_CPU_CREDITS", "unlimited"),
    ] {
        env.push((key.into(), value.into()));
    }
    let daemon = Daemon::start(&env).await;
    daemon.wait_available(2, DEADLINE).await;
    let (status, doc) = daemon
        .put("ann", r#"{"secrets":{"OPENAI_API_KEY":"sk-cost-test"}}"#)
        .await;
    assert_eq!(status, 202, "{doc}");
    let ready = daemon.wait_state("ann", "ready", DEADLINE).await;
    let workspace_gib = ready["workspace"]["size_gib"]
        .as_f64()
        .expect("a workspace");

    // The price moto reports for the pool's type in its zones.
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let history = ec2
        .describe_spot_price_history()
        .instance_types(aws_sdk_ec2::types::InstanceType::T3Small)
        .send()
        .await
        .unwrap();
    let moto_prices: Vec<f64> = history
        .spot_price_history()
        .iter()
        .filter_map(|p| p.spot_price()?.parse().ok())
        .collect();
    assert!(!moto_prices.is_empty());
    let price = moto_prices[0];
    assert!(moto_prices.iter().all(|p| *p == price), "{moto_prices:?}");

    // Settled: the prices read, a spare replaced, nothing on its way in or out, and the
    // gauges of the same pass as the document.
    let last = std::sync::Mutex::new(serde_json::Value::Null);
    let settled = daemon
        .wait_for(DEADLINE, || async {
            let (_, doc) = daemon
                .request("GET", "/v1/pool", Some(ADMIN_TOKEN), None)
                .await;
            let counts = &doc["tiers"][0]["counts"];
            let steady = !doc["cost"]["prices_read_at"].is_null()
                && counts["available"] == 2
                && counts["assigned"] == 1
                && counts["initializing"] == 0
                && counts["terminating"] == 0;
            let metrics = daemon.metrics().await;
            let gauge = |kind: &str| {
                samples(&metrics, "spotpool_cost_dollars_per_hour")
                    .into_iter()
                    .find(|(l, _)| {
                        l.get("tier").map(String::as_str) == Some("default")
                            && l.get("kind").map(String::as_str) == Some(kind)
                    })
                    .map(|(_, v)| v)
            };
            let cost = &doc["tiers"][0]["cost"];
            let same = ["spares", "assigned", "workspaces", "secrets", "shared"]
                .iter()
                .all(|kind| {
                    let shown = cost[format!("{kind}_per_hour")].as_f64();
                    matches!((gauge(kind), shown), (Some(g), Some(s)) if close(g, s))
                });
            *last.lock().unwrap() = doc;
            steady && same
        })
        .await;
    let pool = last.into_inner().unwrap();
    assert!(settled, "{pool:#}\n{}", daemon.metrics().await);

    let tier = &pool["tiers"][0];
    let cost = &tier["cost"];
    assert_eq!(cost["price_source"], "spot_price_history", "{cost:#}");
    let per_instance = price + 0.005 + ROOT_GIB * 0.08 / 730.0;
    let figure = |key: &str| cost[key].as_f64().unwrap();
    assert!(
        close(figure("spares_per_hour"), 2.0 * per_instance),
        "{cost:#}"
    );
    assert!(close(figure("assigned_per_hour"), per_instance), "{cost:#}");
    assert!(close(
        figure("workspaces_per_hour"),
        workspace_gib * 0.08 / 730.0
    ));
    assert!(close(figure("secrets_per_hour"), 0.40 / 730.0), "{cost:#}");
    let load_balancers = 0.0225 + 2.0 * 0.005;
    assert!(close(figure("shared_per_hour"), load_balancers + NETWORK));
    // t3.small unlimited: 2 vCPUs above a 20% baseline at $0.05, for each of 3 instances.
    assert!(
        close(figure("cpu_credits_max_per_hour"), 3.0 * 0.08),
        "{cost:#}"
    );
    let total =
        3.0 * per_instance + workspace_gib * 0.08 / 730.0 + 0.40 / 730.0 + load_balancers + NETWORK;
    assert!(close(figure("total_per_hour"), total), "{cost:#}");
    assert!((figure("per_user_month") - total * 730.0).abs() < 1e-3);
    assert_eq!(cost["users"], 1);
    assert_eq!(cost["unpriced_instances"], 0);
    let counted: u64 = (cost["prices"].as_array().unwrap().iter())
        .map(|p| {
            assert_eq!(p["source"], "spot_price_history", "{p}");
            assert_eq!(p["instance_type"], "t3.small", "{p}");
            assert_eq!(p["dollars_per_hour"].as_f64(), Some(price), "{p}");
            p["instances"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(counted, 3, "{cost:#}");
    let pool_cost = &pool["cost"];
    assert!(close(
        pool_cost["load_balancers_per_hour"].as_f64().unwrap(),
        load_balancers
    ));
    assert!(close(
        pool_cost["network_per_hour"].as_f64().unwrap(),
        NETWORK
    ));
    assert!(close(pool_cost["total_per_hour"].as_f64().unwrap(), total));
    assert_eq!(pool_cost["root_volume_gib"], 20);

    // The pool's own gauges.
    let metrics = daemon.metrics().await;
    for (kind, value) in [("load_balancers", load_balancers), ("network", NETWORK)] {
        let found = samples(&metrics, "spotpool_cost_dollars_per_hour")
            .into_iter()
            .find(|(l, _)| l.get("kind").map(String::as_str) == Some(kind));
        let (labels, gauge) = found.unwrap_or_else(|| panic!("no {kind} gauge:\n{metrics}"));
        assert_eq!(
            labels.get("tier").map(String::as_str),
            Some(""),
            "{labels:?}"
        );
        assert!(close(gauge, value), "{kind}: {gauge}");
    }

    // `spotpool cost` prints the same row.
    let (code, out, err) = cli(&daemon, ADMIN_TOKEN, &["cost"]);
    assert_eq!(code, 0, "{out}{err}");
    eprintln!("spotpool cost:\n{out}");
    let row: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("default "))
        .unwrap_or_else(|| panic!("{out}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[1], "spot_price_history", "{out}");
    assert_eq!(row[2], "1", "{out}");
    assert_eq!(row[3], format!("{:.4}", figure("spares_per_hour")), "{out}");
    assert_eq!(row[9], format!("{:.2}", figure("per_user_month")), "{out}");
}
