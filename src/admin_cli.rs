//! The on-call subcommands: `status`, `repair`, `pool`, `recycle`, `repin`, `drain`, `audit`,
//! `events`, `cost`. Each is one call to the daemon's admin API with the admin token; the daemon does
//! the work and audits it.
//!
//! Output is the API's JSON, pretty-printed (pipe it to `jq`), except `status`, which prints a
//! short table (`--watch`: again after each event, with the newest events under it), `cost`, a
//! table of dollars, and `events`, one line per event. A non-2xx answer prints one line `spotpool: <status> <code>: <message>` and
//! exits 1; a daemon that cannot be reached exits 2.

mod live;

pub use live::{EventsArgs, events};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::process::ExitCode;
use std::time::Duration;

/// Where the daemon is and how to authenticate.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// The daemon's API base URL.
    #[arg(long, env = "SPOTPOOL_URL", default_value = "http://127.0.0.1:7070")]
    url: String,
    /// The admin bearer token.
    #[arg(long, env = "SPOTPOOL_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
    /// Who you are, for the audit log [default: $USER].
    #[arg(long, env = "SPOTPOOL_ACTOR")]
    actor: Option<String>,
    /// PEM certificates to trust for an https URL, besides the system's (a private CA).
    #[arg(long, env = "SPOTPOOL_CA_CERT", value_name = "PATH")]
    ca_cert: Option<std::path::PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum PoolCommand {
    /// Show every tier: spare target, maximum, paused, counts and instances.
    Show,
    /// Change a tier's spare count and maximum, pause or resume its launching, or roll out a
    /// new image or launch template version (its users move to up-to-date instances).
    Set {
        tier: String,
        /// The image its containers run ("configured": back to the configuration's).
        #[arg(long, value_name = "IMAGE")]
        image: Option<String>,
        /// The launch template version its launches use: a number, $Default or $Latest
        /// ("configured": back to the configuration's).
        #[arg(long, value_name = "VERSION")]
        launch_template_version: Option<String>,
        /// Spares to keep available.
        #[arg(long)]
        spare: Option<u32>,
        /// Most instances at once.
        #[arg(long)]
        max: Option<u32>,
        /// Stop launching (claims go on from the spares there are).
        #[arg(long, conflicts_with = "resume")]
        pause: bool,
        /// Launch again.
        #[arg(long)]
        resume: bool,
    },
}

/// `spotpool drain`: what to drain and how.
#[derive(clap::Args, Debug)]
pub struct DrainArgs {
    /// Instances of this tier.
    #[arg(long)]
    tier: Option<String>,
    /// Instances of this type (repeatable).
    #[arg(long = "instance-type", value_name = "TYPE")]
    instance_types: Vec<String>,
    /// Instances in this availability zone (repeatable).
    #[arg(long = "zone", value_name = "ZONE")]
    zones: Vec<String>,
    /// This instance (repeatable).
    #[arg(long = "instance-id", value_name = "ID")]
    instance_ids: Vec<String>,
    /// Instances launched from another launch template version, or running another image,
    /// than their tier's current one.
    #[arg(long)]
    outdated: bool,
    /// Users moving off at once, at most.
    #[arg(long)]
    max_concurrent_moves: Option<u32>,
    /// Failed moves before the drain pauses.
    #[arg(long)]
    max_failures: Option<u32>,
    /// Start it (without this, only show what it would drain), then print its progress every
    /// 2 s until it is done, paused or cancelled.
    #[arg(long)]
    execute: bool,
    /// Cancel the drain with this id instead.
    #[arg(long, value_name = "ID", conflicts_with = "execute")]
    cancel: Option<i64>,
}

/// One admin request: method, path and JSON body.
struct Call {
    method: &'static str,
    path: String,
    body: Option<serde_json::Value>,
}

pub fn status(target: &Target, watch: bool) -> ExitCode {
    if watch {
        return live::watch_status(target);
    }
    match render_status(target) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// The status's table of tiers: counts by status, and why launches are held back.
fn tier_rows(out: &mut String, pool: &serde_json::Value) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "{:<16} {:>6} {:>5} {:>7} {:>12} {:>10} {:>9} {:>12} {:>7}",
        "tier",
        "spare",
        "max",
        "paused",
        "initializing",
        "available",
        "assigned",
        "terminating",
        "queued"
    );
    for tier in pool["tiers"].as_array().into_iter().flatten() {
        let count = |s: &str| tier["counts"][s].as_u64().unwrap_or(0);
        let _ = writeln!(
            out,
            "{:<16} {:>6} {:>5} {:>7} {:>12} {:>10} {:>9} {:>12} {:>7}",
            tier["tier"].as_str().unwrap_or("?"),
            // serde_json's Display ignores widths: format the values as strings first.
            tier["spare_target"].to_string(),
            tier["max_instances"].to_string(),
            tier["paused"].to_string(),
            count("initializing"),
            count("available"),
            count("assigned"),
            count("terminating"),
            tier["queued_users"].to_string(),
        );
        let blocked = &tier["launch_blocked"];
        if let Some(cause) = blocked["cause"].as_str() {
            let _ = writeln!(
                out,
                "  launches held back: {cause} until {}: {}",
                blocked["retry_at"].as_str().unwrap_or("?"),
                blocked["detail"].as_str().unwrap_or("")
            );
        }
    }
}

/// The status as text: readiness, the role, and a table of tiers and of shards.
fn render_status(target: &Target) -> Result<String, ExitCode> {
    use std::fmt::Write;
    let (ready_status, ready) = request(
        target,
        &Call {
            method: "GET",
            path: "/readyz".into(),
            body: None,
        },
    )?;
    let pool = checked(
        target,
        Call {
            method: "GET",
            path: "/v1/pool".into(),
            body: None,
        },
    )?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "daemon {}: {} ({})",
        target.url,
        if ready_status == 200 {
            "ready"
        } else {
            "NOT READY"
        },
        pool["role"].as_str().unwrap_or("?")
    );
    if ready_status != 200 {
        let _ = writeln!(out, "  {ready}");
    }
    if let Some(leader) = ready["leader"]["replica"].as_str() {
        let url = ready["leader"]["url"]
            .as_str()
            .unwrap_or("an unknown address");
        let _ = writeln!(out, "  the leader is replica {leader} at {url}");
    }
    tier_rows(&mut out, &pool);
    let _ = writeln!(
        out,
        "{:<16} {:>7} {:>6} {:>9}",
        "shard", "routing", "users", "capacity"
    );
    for shard in pool["shards"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<16} {:>7} {:>6} {:>9}",
            shard["name"].as_str().unwrap_or("?"),
            shard["routing"].as_str().unwrap_or("?"),
            shard["users"].to_string(),
            shard["capacity"].to_string(),
        );
    }
    let waiting = pool["waiting_for_route"].as_u64().unwrap_or(0);
    if waiting > 0 {
        let _ = writeln!(
            out,
            "  {waiting} users wait for route capacity (no_route_capacity): every shard is full"
        );
    }
    Ok(out)
}

pub fn repair(target: &Target, dry_run: bool) -> ExitCode {
    print_json(
        target,
        Call {
            method: "POST",
            path: format!("/v1/admin/repair?dry_run={dry_run}"),
            body: None,
        },
    )
}

pub fn pool(target: &Target, command: &PoolCommand) -> ExitCode {
    match command {
        PoolCommand::Show => print_json(
            target,
            Call {
                method: "GET",
                path: "/v1/pool".into(),
                body: None,
            },
        ),
        PoolCommand::Set {
            tier,
            spare,
            max,
            pause,
            resume,
            image,
            launch_template_version,
        } => {
            let mut body = serde_json::Map::new();
            // "configured" clears on-call's value: JSON null.
            let or_configured = |value: &String| match value.as_str() {
                "configured" => serde_json::Value::Null,
                other => other.into(),
            };
            if let Some(image) = image {
                body.insert("container_image".into(), or_configured(image));
            }
            if let Some(version) = launch_template_version {
                body.insert("launch_template_version".into(), or_configured(version));
            }
            if let Some(spare) = spare {
                body.insert("spare_count".into(), (*spare).into());
            }
            if let Some(max) = max {
                body.insert("max_instances".into(), (*max).into());
            }
            if *pause || *resume {
                body.insert("paused".into(), (*pause).into());
            }
            print_json(
                target,
                Call {
                    method: "PUT",
                    path: format!("/v1/admin/pool/{}", spotpool::url::component(tier)),
                    body: Some(body.into()),
                },
            )
        }
    }
}

pub fn recycle(target: &Target, instance: &str) -> ExitCode {
    print_json(
        target,
        Call {
            method: "POST",
            path: format!(
                "/v1/admin/instances/{}/recycle",
                spotpool::url::component(instance)
            ),
            body: None,
        },
    )
}

pub fn repin(target: &Target, tier: Option<&str>) -> ExitCode {
    let path = match tier {
        Some(tier) => format!(
            "/v1/admin/image/repin?tier={}",
            spotpool::url::component(tier)
        ),
        None => "/v1/admin/image/repin".into(),
    };
    print_json(
        target,
        Call {
            method: "POST",
            path,
            body: None,
        },
    )
}

/// `spotpool drain`: a dry run, a cancel, or a drain followed to its end.
pub fn drain(target: &Target, args: &DrainArgs) -> ExitCode {
    if let Some(id) = args.cancel {
        let path = format!("/v1/admin/drains/{id}");
        return print_json(
            target,
            Call {
                method: "DELETE",
                path,
                body: None,
            },
        );
    }
    let mut selector = serde_json::Map::new();
    if let Some(tier) = &args.tier {
        selector.insert("tier".into(), tier.clone().into());
    }
    if args.outdated {
        selector.insert("outdated".into(), true.into());
    }
    for (key, values) in [
        ("instance_types", &args.instance_types),
        ("zones", &args.zones),
        ("instance_ids", &args.instance_ids),
    ] {
        if !values.is_empty() {
            selector.insert(key.into(), values.clone().into());
        }
    }
    let body = serde_json::json!({
        "selector": selector,
        "dry_run": !args.execute,
        "max_concurrent_moves": args.max_concurrent_moves,
        "max_failures": args.max_failures,
    });
    let call = Call {
        method: "POST",
        path: "/v1/admin/drain".into(),
        body: Some(body),
    };
    if !args.execute {
        return print_json(target, call);
    }
    let started = match checked(target, call) {
        Ok(document) => document,
        Err(code) => return code,
    };
    let id = started["id"].as_i64().unwrap_or_default();
    loop {
        let listing = Call {
            method: "GET",
            path: "/v1/admin/drains".into(),
            body: None,
        };
        let drains = match checked(target, listing) {
            Ok(drains) => drains,
            Err(code) => return code,
        };
        let Some(drain) = drains
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["id"] == id)
        else {
            eprintln!("spotpool: drain {id} is no longer listed");
            return ExitCode::from(1);
        };
        println!("{}", progress_line(drain));
        match drain["state"].as_str() {
            // Done, but some users' moves failed and they stayed: say so in the exit code.
            Some("done") if drain["failed"].as_u64().unwrap_or(0) > 0 => return ExitCode::from(1),
            Some("done") => return ExitCode::SUCCESS,
            Some("paused") | Some("cancelled") => return ExitCode::from(1),
            _ => std::thread::sleep(Duration::from_secs(2)),
        }
    }
}

/// One line of a drain's progress.
fn progress_line(drain: &serde_json::Value) -> String {
    let count = |key: &str| drain[key].as_u64().unwrap_or(0);
    let left = |key: &str| drain["remaining"][key].as_array().map_or(0, Vec::len);
    format!(
        "drain {}: {}; moved {}, moving {}, failed {}; left: {} users, {} spares",
        drain["id"],
        drain["state"].as_str().unwrap_or("?"),
        count("moved"),
        count("in_flight"),
        count("failed"),
        left("users"),
        left("spares"),
    )
}

pub fn audit(target: &Target, limit: u32) -> ExitCode {
    print_json(
        target,
        Call {
            method: "GET",
            path: format!("/v1/admin/audit?limit={limit}"),
            body: None,
        },
    )
}

fn print_json(target: &Target, call: Call) -> ExitCode {
    match checked(target, call) {
        Ok(value) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// The answer's JSON if the status is 2xx; otherwise prints the API's error line.
fn checked(target: &Target, call: Call) -> Result<serde_json::Value, ExitCode> {
    let (status, value) = request(target, &call)?;
    if (200..300).contains(&status) {
        return Ok(value);
    }
    let code = value["error"]["code"].as_str().unwrap_or("error");
    let message = value["error"]["message"].as_str().unwrap_or("");
    eprintln!(
        "spotpool: {} {} answered {status} {code}: {message}",
        call.method, call.path
    );
    Err(ExitCode::from(1))
}

fn request(target: &Target, call: &Call) -> Result<(u16, serde_json::Value), ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| unreachable_daemon(target, &e))?;
    runtime.block_on(async {
        // Repair runs a whole pass and a sweep; give it time, but never hang forever.
        let response = tokio::time::timeout(Duration::from_secs(300), send(target, call))
            .await
            .map_err(|e| unreachable_daemon(target, &e))??;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable_daemon(target, &e))?
            .to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok((status, value))
    })
}

/// Sends `call` with the token and the actor; the response, its body unread.
async fn send(
    target: &Target,
    call: &Call,
) -> Result<hyper::Response<hyper::body::Incoming>, ExitCode> {
    let actor = target
        .actor
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .map(|a| {
            a.chars()
                .filter(|c| c.is_ascii_alphanumeric() || "-_.@".contains(*c))
                .take(64)
                .collect::<String>()
        })
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "cli".into());
    let uri = format!("{}{}", target.url.trim_end_matches('/'), call.path);
    let body = call
        .body
        .as_ref()
        .map(|b| Bytes::from(b.to_string()))
        .unwrap_or_default();
    let request = hyper::Request::builder()
        .method(call.method)
        .uri(&uri)
        .header("authorization", format!("Bearer {}", target.token))
        .header("content-type", "application/json")
        .header("x-spotpool-actor", actor)
        .body(Full::new(body))
        .map_err(|e| unreachable_daemon(target, &e))?;
    let https = uri.starts_with("https://");
    let tls = spotpool::tls::client_config(target.ca_cert.as_deref(), https).map_err(|e| {
        eprintln!("spotpool: {e}");
        ExitCode::from(2)
    })?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new()).build(connector);
    client
        .request(request)
        .await
        .map_err(|e| unreachable_daemon(target, &e))
}

fn unreachable_daemon(target: &Target, error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!(
        "spotpool: cannot reach the daemon at {}: {error}",
        target.url
    );
    ExitCode::from(2)
}

/// `spotpool cost`: the pool's cost from `GET /v1/pool`, one row per tier and the pool's own.
pub fn cost(target: &Target) -> ExitCode {
    let pool = match checked(
        target,
        Call {
            method: "GET",
            path: "/v1/pool".into(),
            body: None,
        },
    ) {
        Ok(pool) => pool,
        Err(code) => return code,
    };
    print!("{}", render_cost(&pool));
    ExitCode::SUCCESS
}

/// The cost table: per tier, its dollars an hour by kind and per user-month; then the load
/// balancers, the network and the total.
fn render_cost(pool: &serde_json::Value) -> String {
    use std::fmt::Write;
    let money = |v: &serde_json::Value| v.as_f64().map_or("-".to_string(), |d| format!("{d:.4}"));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<18} {:>6} {:>9} {:>10} {:>12} {:>9} {:>8} {:>9} {:>14}",
        "tier",
        "price source",
        "users",
        "spares/h",
        "assigned/h",
        "workspaces/h",
        "secrets/h",
        "shared/h",
        "total/h",
        "per user-month"
    );
    for tier in pool["tiers"].as_array().into_iter().flatten() {
        let cost = &tier["cost"];
        let _ = writeln!(
            out,
            "{:<16} {:<18} {:>6} {:>9} {:>10} {:>12} {:>9} {:>8} {:>9} {:>14}",
            tier["tier"].as_str().unwrap_or("?"),
            cost["price_source"].as_str().unwrap_or("?"),
            cost["users"].to_string(),
            money(&cost["spares_per_hour"]),
            money(&cost["assigned_per_hour"]),
            money(&cost["workspaces_per_hour"]),
            money(&cost["secrets_per_hour"]),
            money(&cost["shared_per_hour"]),
            money(&cost["total_per_hour"]),
            cost["per_user_month"]
                .as_f64()
                .map_or("-".to_string(), |d| format!("{d:.2}")),
        );
        let unpriced = cost["unpriced_instances"].as_u64().unwrap_or(0);
        if unpriced > 0 {
            let _ = writeln!(
                out,
                "  {unpriced} instances of an unpriced type are not counted: set SPOTPOOL_ON_DEMAND_PRICES"
            );
        }
    }
    let pool_cost = &pool["cost"];
    let _ = writeln!(
        out,
        "load balancers {}/h, network {}/h, total {}/h ({}/month); spot prices read {}",
        money(&pool_cost["load_balancers_per_hour"]),
        money(&pool_cost["network_per_hour"]),
        money(&pool_cost["total_per_hour"]),
        pool_cost["total_per_hour"]
            .as_f64()
            .map_or("-".to_string(), |d| format!("{:.2}", d * 730.0)),
        pool_cost["prices_read_at"].as_str().unwrap_or("never"),
    );
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cost_table_shows_each_tiers_dollars_and_the_pools_own() {
        let pool = serde_json::json!({
            "tiers": [{
                "tier": "default",
                "cost": {
                    "price_source": "spot_price_history", "users": 2,
                    "spares_per_hour": 0.0147, "assigned_per_hour": 0.0294,
                    "workspaces_per_hour": 0.0017, "secrets_per_hour": 0.0011,
                    "shared_per_hour": 0.0325, "total_per_hour": 0.08,
                    "per_user_month": 29.0, "unpriced_instances": 1
                }
            }],
            "cost": {
                "load_balancers_per_hour": 0.0325, "network_per_hour": 0.0,
                "total_per_hour": 0.08, "prices_read_at": "2026-12-02T10:00:00Z"
            }
        });
        let text = super::render_cost(&pool);
        let row = text.lines().nth(1).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "default",
                "spot_price_history",
                "2",
                "0.0147",
                "0.0294",
                "0.0017",
                "0.0011",
                "0.0325",
                "0.0800",
                "29.00"
            ]
        );
        assert!(text.contains("1 instances of an unpriced type"), "{text}");
        assert!(
            text.contains("total 0.0800/h (58.40/month); spot prices read 2026-12-02T10:00:00Z"),
            "{text}"
        );
    }
}
