//! The on-call dashboard in a real headless Chromium (issue "See it live", point 4 and Done-when
//! bullet 3): the real binary against moto, the page signed in through its token form at a
//! phone's 390×844, the pool rendered and the event stream live, then a claim made after the
//! page loaded shows up in its feed (up to `claim.ready`) and its user table; no horizontal
//! scroll, every control at least 44 px, no script error or CSP violation
//! (`tests/dashboard/drive.py` drives Chromium over the DevTools protocol). The screenshot is
//! saved for the docs (`docs/images/dashboard.png`).

use crate::daemon::{ADMIN_TOKEN, Daemon, daemon_env};
use crate::support::infra::Infra;
use crate::support::moto::Moto;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Chromium: `SPOTPOOL_CHROMIUM`, or `chromium` / `chromium-browser` on PATH (scripts/test.sh
/// and CI install Debian's `chromium` when it is missing).
fn chromium() -> String {
    if let Ok(path) = std::env::var("SPOTPOOL_CHROMIUM") {
        return path;
    }
    for name in ["chromium", "chromium-browser"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        if let Some(path) = found.filter(|p| !p.is_empty()) {
            return path;
        }
    }
    panic!("no chromium: install Debian's chromium package (scripts/test.sh does)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_the_dashboard_shows_the_pool_and_a_new_claim_live_in_headless_chromium() {
    let moto = Moto::start().await;
    let sdk = moto.sdk_config().await;
    let infra = Infra::create(&sdk).await;
    let mut env = daemon_env(&moto, &infra);
    env.push(("POOL_SPARE_COUNT".into(), "1".into()));
    let daemon = Daemon::start(&env).await;
    daemon.wait_available(1, Duration::from_secs(90)).await;
    let (status, doc) = daemon.put("erin", "{}").await;
    assert_eq!(status, 202, "{doc}");
    daemon
        .wait_state("erin", "ready", Duration::from_secs(90))
        .await;

    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dashboard/drive.py");
    let mut driver = Command::new("python3")
        .arg(script)
        .args(["--chromium", &chromium()])
        .args(["--url", &format!("{}/dashboard", daemon.base)])
        .args(["--token", ADMIN_TOKEN])
        .arg("--screenshot")
        .arg(&screenshot)
        .args(["--timeout", "60"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs the driver");
    let lines = crate::daemon::lines_of(driver.stdout.take().unwrap());
    let next_line = |what: &str| {
        lines
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("the driver said nothing before {what}"))
    };

    let ready = tokio::task::block_in_place(|| next_line("READY"));
    assert_eq!(ready, "READY", "the page signed in and streams");
    // A claim after the page loaded: it must arrive through the stream.
    let (status, doc) = daemon.put("dana", "{}").await;
    assert_eq!(status, 202, "{doc}");
    let mut stdin = driver.stdin.take().unwrap();
    writeln!(stdin, "dana claim.ready").unwrap();
    stdin.flush().unwrap();
    let verdict = tokio::task::block_in_place(|| next_line("its verdict"));
    let exit = tokio::task::block_in_place(|| driver.wait()).unwrap();
    let verdict: serde_json::Value =
        serde_json::from_str(&verdict).unwrap_or_else(|_| panic!("not JSON: {verdict}"));
    assert_eq!(verdict["ok"], true, "{verdict}");
    assert!(exit.success(), "{verdict}");
    assert_eq!(
        verdict["tiers"],
        serde_json::json!(["default"]),
        "{verdict}"
    );
    let kinds: Vec<&str> = verdict["feed_kinds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k.as_str())
        .collect();
    assert!(kinds.contains(&"claim.ready"), "{kinds:?}");
    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}
