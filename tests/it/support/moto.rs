//! A private `moto_server` per test: started on a free port of 127.0.0.1, killed on drop.
//!
//! Every test starts its own (nextest runs each test in its own process), so tests never see
//! each other's resources and need no cleanup.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long moto may take to answer its first request.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// Between two readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

pub const REGION: &str = "us-east-1";
pub const ACCESS_KEY_ID: &str = "test";
pub const SECRET_ACCESS_KEY: &str = "test";

/// A running `moto_server`.
pub struct Moto {
    child: Child,
    port: u16,
    log_path: PathBuf,
}

#[allow(dead_code)]
impl Moto {
    /// Starts moto and waits until it answers HTTP. Panics with moto's log if it does not.
    pub async fn start() -> Moto {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("spotpool-moto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the moto log directory");
        let log_path = dir.join("moto.log");
        let log = std::fs::File::create(&log_path).expect("creating the moto log file");
        let log_err = log.try_clone().expect("cloning the moto log file handle");
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .expect("starting moto_server (is it on PATH?)");
        let mut moto = Moto {
            child,
            port,
            log_path,
        };
        moto.wait_until_ready().await;
        moto
    }

    async fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + START_DEADLINE;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("building the probe client");
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "moto_server exited with {status} before answering; log:\n{}",
                    self.log()
                );
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
                && client
                    .get(format!("{}/moto-api/", self.endpoint()))
                    .send()
                    .await
                    .is_ok()
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "moto_server did not answer on port {} within {START_DEADLINE:?}; log:\n{}",
                    self.port,
                    self.log()
                );
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What moto printed so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// An SDK config aimed at this moto, with static test credentials and short timeouts.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config(&self.endpoint()).await
    }

    /// The environment a daemon process needs to talk to this moto.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".to_string(), self.endpoint()),
            ("AWS_REGION".to_string(), REGION.to_string()),
            ("AWS_ACCESS_KEY_ID".to_string(), ACCESS_KEY_ID.to_string()),
            (
                "AWS_SECRET_ACCESS_KEY".to_string(),
                SECRET_ACCESS_KEY.to_string(),
            ),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Kill by the PID we started; never by name, other tests run their own moto.
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Keep the log of a failed test for a post-mortem; otherwise leave no trace.
        if std::thread::panicking() {
            eprintln!("moto log kept at {}", self.log_path.display());
        } else if let Some(dir) = self.log_path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// An SDK config aimed at `endpoint` (moto, or a proxy in front of it), with moto's static test
/// credentials, two attempts per call and short timeouts.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "moto",
        ))
        .endpoint_url(endpoint)
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(30))
                .operation_timeout(Duration::from_secs(60))
                .build(),
        )
        .load()
        .await
}

/// A port that was free a moment ago: bind port 0, read the port, release it.
fn free_port() -> u16 {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding 127.0.0.1:0 to find a port");
    listener
        .local_addr()
        .expect("reading the bound address")
        .port()
}
