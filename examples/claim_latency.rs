//! Benchmark: wall time of a claim against moto, from the PUT to `ready`, and the AWS calls a
//! claim costs, by operation.
//!
//! `cargo build --bins --examples && cargo run --example claim_latency -- [CLAIMS] [POLL_INTERVAL]` (defaults 25 and 500ms, the
//! daemon's default poll interval). It starts moto and the real daemon on free loopback ports,
//! creates the minimal infrastructure, then claims users one at a time, each on a warm spare
//! (it waits for the pool to refill between claims), and then a burst of concurrent claims.
//! Numbers are wall-clock on this machine against moto: they measure spotpool's own overhead and
//! its poll cadence, not AWS latency (see docs/benchmarks.md).

// The integration tests' fixtures, shared rather than copied; the benchmark uses a subset.
#[allow(dead_code)]
#[path = "../tests/it/support/mod.rs"]
mod support;

#[allow(dead_code)]
#[path = "../tests/it/daemon.rs"]
mod daemon;

use daemon::{API_TOKEN, Daemon, daemon_env};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::infra::Infra;
use support::moto::Moto;

const DEADLINE: Duration = Duration::from_secs(60);

/// `spotpool_aws_calls_total` by operation, summed over services and outcomes.
fn aws_calls(metrics: &str) -> BTreeMap<String, f64> {
    daemon::counter_by(metrics, "spotpool_aws_calls_total", "operation")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(label: &str, mut samples: Vec<f64>) {
    samples.sort_by(f64::total_cmp);
    println!(
        "{label}: n={} p50={:.0} ms p90={:.0} ms p99={:.0} ms max={:.0} ms",
        samples.len(),
        percentile(&samples, 50.0),
        percentile(&samples, 90.0),
        percentile(&samples, 99.0),
        samples[samples.len() - 1],
    );
}

async fn wait_ready(daemon: &Daemon, user: &str) {
    let start = Instant::now();
    loop {
        let (_, doc) = daemon.get(user).await;
        if doc["state"] == "ready" {
            return;
        }
        assert!(doc["state"] != "failed", "{user} failed: {doc}");
        assert!(start.elapsed() < DEADLINE, "{user} not ready: {doc}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let claims: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(25);
    let poll = args.get(2).cloned().unwrap_or_else(|| "500ms".into());

    let moto = Moto::start().await;
    let sdk = moto.sdk_config().await;
    let infra = Infra::create(&sdk).await;
    let mut env = daemon_env(&moto, &infra);
    env.push(("SPOTPOOL_POLL_INTERVAL".into(), poll.clone()));
    env.push(("RUST_LOG".into(), "warn".into()));
    env.push(("POOL_MAX_INSTANCES".into(), "100".into()));
    let daemon = Daemon::start(&env).await;
    daemon.wait_available(2, DEADLINE).await;
    println!("claims against moto, poll interval {poll}, spare count 2");

    // One at a time, each on a warm spare.
    let before = aws_calls(&daemon.metrics().await);
    let mut sequential = Vec::new();
    for n in 0..claims {
        let user = format!("seq-{n}");
        let start = Instant::now();
        let (status, doc) = daemon
            .put(&user, r#"{"secrets":{"API_KEY":"bench"}}"#)
            .await;
        assert!(status == 202 || status == 200, "{status} {doc}");
        wait_ready(&daemon, &user).await;
        sequential.push(start.elapsed().as_secs_f64() * 1000.0);
        daemon.wait_available(2, DEADLINE).await;
    }
    let after = aws_calls(&daemon.metrics().await);
    summary("sequential claims, PUT to ready", sequential);
    println!(
        "AWS calls per claim, including the pass polling and the replacement spare's launch and probe:"
    );
    println!("| operation | calls per claim |");
    println!("|---|---|");
    for (operation, total) in &after {
        let per_claim = (total - before.get(operation).copied().unwrap_or(0.0)) / claims as f64;
        if per_claim > 0.0 {
            println!("| {operation} | {per_claim:.2} |");
        }
    }

    // A burst larger than the spare count: most users queue and wait for new instances.
    let burst = 10;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..burst {
        let client = daemon.client.clone();
        let url = format!("{}/v1/users/burst-{n}/instance", daemon.base);
        tasks.push(tokio::spawn(async move {
            let status = client
                .put(&url)
                .bearer_auth(API_TOKEN)
                .body("{}")
                .send()
                .await?
                .status();
            assert!(status.is_success(), "{status}");
            loop {
                let doc: serde_json::Value = client
                    .get(&url)
                    .bearer_auth(API_TOKEN)
                    .send()
                    .await?
                    .json()
                    .await?;
                if doc["state"] == "ready" {
                    return Ok::<f64, reqwest::Error>(start.elapsed().as_secs_f64() * 1000.0);
                }
                assert!(start.elapsed() < DEADLINE, "not ready: {doc}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    let mut bursty = Vec::new();
    for task in tasks {
        bursty.push(task.await.unwrap().unwrap());
    }
    summary(
        &format!("burst of {burst} concurrent claims (2 spares), PUT to ready"),
        bursty,
    );
}
