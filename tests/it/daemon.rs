//! The real `spotpool` binary, started on a free loopback port against a moto server, with its
//! output captured to a file so tests can read what it logged.

use crate::support::infra::Infra;
use crate::support::moto::Moto;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const API_TOKEN: &str = "e2e-service-token-0123456789";
pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";

pub struct Daemon {
    child: Child,
    pub base: String,
    pub dir: PathBuf,
    pub client: reqwest::Client,
    keep_dir: bool,
}

/// The daemon binary: Cargo's for integration tests; for the benchmark example (which Cargo gives
/// no such variable) `SPOTPOOL_BIN` or `target/debug/spotpool`.
pub fn binary() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_spotpool") {
        return PathBuf::from(path);
    }
    std::env::var_os("SPOTPOOL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/debug/spotpool"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("spotpool-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The environment the daemon gets: moto's endpoint and credentials, the infrastructure's ids,
/// tokens, and fast intervals. Nothing is inherited from the machine but PATH and HOME.
pub fn daemon_env(moto: &Moto, infra: &Infra) -> Vec<(String, String)> {
    let mut env = moto.env();
    env.extend(infra.daemon_env());
    for (key, value) in [
        ("CONTAINER_IMAGE", "ghcr.io/openclaw/openclaw:latest"),
        ("PUBLIC_BASE_URL", "http://alb.local"),
    ] {
        env.push((key.into(), value.into()));
    }
    env.extend(test_settings());
    env
}

/// What every test daemon gets on top of its infrastructure's settings: the tokens, fast
/// intervals and a verbose log.
pub fn test_settings() -> Vec<(String, String)> {
    [
        ("SPOTPOOL_API_TOKEN", API_TOKEN),
        ("SPOTPOOL_ADMIN_TOKEN", ADMIN_TOKEN),
        ("SPOTPOOL_RECONCILE_INTERVAL", "2s"),
        ("SPOTPOOL_POLL_INTERVAL", "100ms"),
        ("RUST_LOG", "info,spotpool=debug"),
        // Most tests' users carry no gateway token; e2e's defaults test keeps the requirement.
        ("CONTAINER_REQUIRED_SECRETS", "none"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect()
}

impl Daemon {
    pub async fn start(env: &[(String, String)]) -> Daemon {
        Daemon::start_in(temp_dir("daemon"), env).await
    }

    /// Starts the binary with its database in `dir` (reused across restarts; or the
    /// `SPOTPOOL_DATABASE_URL` of `env`) and waits for /readyz.
    pub async fn start_in(dir: PathBuf, env: &[(String, String)]) -> Daemon {
        let port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("daemon.log"))
            .unwrap();
        let child = Command::new(binary())
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            // A SQLite database in `dir`, unless `env` names another.
            .env(
                "SPOTPOOL_DATABASE_URL",
                format!("sqlite://{}", dir.join("spotpool.db").display()),
            )
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("SPOTPOOL_LISTEN", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting the spotpool binary");
        // With TLS the tests' HTTP client cannot speak to it: ready is the port taken (the
        // certificate is loaded before the bind), and the test calls it through the CLI.
        let tls = env.iter().any(|(key, _)| key == "SPOTPOOL_TLS_CERT");
        let scheme = if tls { "https" } else { "http" };
        let daemon = Daemon {
            child,
            base: format!("{scheme}://127.0.0.1:{port}"),
            dir,
            client: reqwest::Client::new(),
            keep_dir: false,
        };
        let ready = daemon
            .wait_for(Duration::from_secs(60), || async {
                if tls {
                    return tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .is_ok();
                }
                daemon
                    .client
                    .get(format!("{}/readyz", daemon.base))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            })
            .await;
        assert!(ready, "daemon not ready in 60 s; log:\n{}", daemon.log());
        daemon
    }

    /// The daemon's process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the process like a crash and hands back its directory (database and log) for a
    /// restart.
    pub fn crash(mut self) -> PathBuf {
        self.kill();
        self.keep_dir = true;
        self.dir.clone()
    }

    /// Waits until GET /v1/pool shows exactly `count` available spares.
    pub async fn wait_available(&self, count: u64, deadline: Duration) {
        let reached = self
            .wait_for(deadline, || async {
                self.pool_count("available").await == count
            })
            .await;
        assert!(
            reached,
            "pool never had {count} available; log:\n{}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Polls `condition` until it holds or `deadline` passes. Returns whether it held.
    pub async fn wait_for<F, Fut>(&self, deadline: Duration, mut condition: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if condition().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("request to the daemon");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    pub async fn put(&self, user: &str, body: &str) -> (u16, serde_json::Value) {
        self.request(
            "PUT",
            &format!("/v1/users/{user}/instance"),
            Some(API_TOKEN),
            Some(body),
        )
        .await
    }

    pub async fn get(&self, user: &str) -> (u16, serde_json::Value) {
        self.request(
            "GET",
            &format!("/v1/users/{user}/instance"),
            Some(API_TOKEN),
            None,
        )
        .await
    }

    pub async fn delete(&self, user: &str) -> (u16, serde_json::Value) {
        self.request(
            "DELETE",
            &format!("/v1/users/{user}/instance"),
            Some(API_TOKEN),
            None,
        )
        .await
    }

    /// Count of instances with `status` in the default tier, from GET /v1/pool.
    pub async fn pool_count(&self, status: &str) -> u64 {
        let (_, pool) = self.request("GET", "/v1/pool", Some(API_TOKEN), None).await;
        pool["tiers"][0]["counts"][status].as_u64().unwrap_or(0)
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Polls GET until the user's state is `state`; returns the document.
    pub async fn wait_state(
        &self,
        user: &str,
        state: &str,
        deadline: Duration,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let (_, doc) = self.get(user).await;
            if doc["state"] == state {
                return doc;
            }
            assert!(
                start.elapsed() < deadline,
                "{user} did not reach {state}: {doc}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The samples of the metric `name` in a Prometheus text page: each series' labels and value.
pub fn samples(metrics: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let prefix = format!("{name}{{");
    metrics
        .lines()
        .filter_map(|line| {
            let (labels, value) = line.strip_prefix(&prefix)?.rsplit_once("} ")?;
            let labels = labels
                .split(',')
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    Some((key.to_string(), value.trim_matches('"').to_string()))
                })
                .collect();
            Some((labels, value.parse().ok()?))
        })
        .collect()
}

/// The counter `name` summed by the value of its label `label`.
pub fn counter_by(metrics: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    for (labels, value) in samples(metrics, name) {
        if let Some(key) = labels.get(label) {
            *sums.entry(key.clone()).or_default() += value;
        }
    }
    sums
}

/// The lines a child process writes to `stdout`, as they come, read on a thread of their own.
pub fn lines_of(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    lines
}
