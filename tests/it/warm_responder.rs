//! The warm responder (`terraform/modules/spotpool/warm-responder.py`), run for real with
//! python3 on a free loopback port: 200 `warm` on the health path, 503 `starting` with
//! `Retry-After` on every other path and method, and a prompt exit on SIGTERM.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HEALTH_PATH: &str = "/healthz";

/// The responder, killed on drop if a test failed before it stopped.
struct Responder {
    child: Child,
    port: u16,
}

impl Responder {
    /// Started on a free 127.0.0.1 port; returns once it accepts connections.
    fn start() -> Responder {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("terraform/modules/spotpool/warm-responder.py");
        let child = Command::new("python3")
            .arg("-I")
            .arg(&script)
            .args(["--port", &port.to_string()])
            .args(["--health-path", HEALTH_PATH])
            .args(["--bind", "127.0.0.1"])
            // The unit's settings are the environment; the arguments win over them.
            .env("SPOTPOOL_WARM_PORT", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs the warm responder");
        let mut responder = Responder { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = responder.child.try_wait().unwrap() {
                panic!("the warm responder exited before listening: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the warm responder never listened on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        responder
    }

    /// One HTTP/1.1 request; the status, the headers (names lowercased) and the body.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, Vec<(String, String)>, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: ELB-HealthChecker/2.0\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no end of headers in {response:?}"));
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap();
        let code = status
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status code in {status:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
            .collect();
        (code, headers, body.to_string())
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn the_warm_responder_passes_the_health_check_says_starting_elsewhere_and_stops_on_sigterm() {
    let responder = Responder::start();

    let (code, headers, body) = responder.request("GET", HEALTH_PATH, "");
    assert_eq!((code, body.as_str()), (200, "warm\n"), "{headers:?}");
    assert_eq!(header(&headers, "retry-after"), None);
    // A query string does not change the health path.
    let (code, _, _) = responder.request("GET", "/healthz?probe=1", "");
    assert_eq!(code, 200);

    for (method, path, body) in [
        ("GET", "/", ""),
        ("GET", "/r-abc123/", ""),
        ("GET", "/healthz/more", ""),
        ("POST", "/r-abc123/api/chat", r#"{"message":"hello"}"#),
        ("POST", HEALTH_PATH, "x"),
        ("PUT", "/r-abc123/x", "y"),
        ("DELETE", "/r-abc123/x", ""),
        ("OPTIONS", "/r-abc123/", ""),
    ] {
        let (code, headers, text) = responder.request(method, path, body);
        assert_eq!(code, 503, "{method} {path}: {headers:?} {text:?}");
        assert_eq!(
            header(&headers, "retry-after"),
            Some("5"),
            "{method} {path}"
        );
        assert!(
            header(&headers, "content-type").is_some_and(|t| t.starts_with("text/plain")),
            "{method} {path}: {headers:?}"
        );
        assert!(
            text.starts_with("starting") && text.contains("gateway is starting"),
            "{method} {path}: {text:?}"
        );
    }
    // HEAD: the same answers, without bodies.
    let (code, _, body) = responder.request("HEAD", HEALTH_PATH, "");
    assert_eq!((code, body.as_str()), (200, ""));
    let (code, headers, _) = responder.request("HEAD", "/r-abc123/", "");
    assert_eq!(code, 503);
    assert_eq!(header(&headers, "retry-after"), Some("5"));

    // SIGTERM (what systemctl stop sends): gone at once, with status 0, the port free.
    let mut responder = responder;
    let pid = responder.child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(3);
    let status = loop {
        if let Some(status) = responder.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the warm responder outlived SIGTERM by 3 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{status}");
    TcpListener::bind(("127.0.0.1", responder.port))
        .expect("the port is free once the responder stopped");
}

#[test]
fn the_warm_responder_refuses_a_missing_port() {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("terraform/modules/spotpool/warm-responder.py");
    let output = Command::new("python3")
        .arg("-I")
        .arg(&script)
        .env_remove("SPOTPOOL_WARM_PORT")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SPOTPOOL_WARM_PORT"), "{stderr}");
}
