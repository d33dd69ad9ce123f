//! A webhook receiver on a loopback port, for the webhook tests: it records every request
//! (path, headers, body) and answers with the status the test sets; `/redirect` answers a 302 to
//! `/elsewhere`. Stopped when dropped.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// What the receiver answered.
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header"))
    }

    /// Checks `Spotpool-Signature` against `key` as a receiver would (HMAC-SHA256 of
    /// `"<t>.<body>"`); its `t`.
    pub fn verify(&self, key: &str) -> i64 {
        let header = self.header("spotpool-signature");
        let (t, v1) = header
            .split_once(',')
            .and_then(|(t, v1)| Some((t.strip_prefix("t=")?, v1.strip_prefix("v1=")?)))
            .unwrap_or_else(|| panic!("malformed signature {header:?}"));
        let tag: Vec<u8> = (0..v1.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&v1[i..i + 2], 16).expect("hex"))
            .collect();
        let mut signed = format!("{t}.").into_bytes();
        signed.extend_from_slice(&self.body);
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.as_bytes());
        aws_lc_rs::hmac::verify(&key, &signed, &tag).expect("the signature verifies");
        t.parse().expect("t is a number")
    }
}

#[derive(Clone)]
struct Shared {
    received: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    arrived: Arc<Notify>,
}

pub struct Receiver {
    pub url: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let shared = Shared {
            received: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
            arrived: Arc::new(Notify::new()),
        };
        let app = axum::Router::new()
            .fallback(record)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { url, shared, task }
    }

    /// Answers `status` from now on.
    pub fn answer(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits until `n` requests have arrived (at most `limit`); what arrived.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let arrived = self.shared.arrived.notified();
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!("{} of {n} requests within {limit:?}", self.received().len());
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap) {
    let path = uri.path().to_string();
    let mut answer = HeaderMap::new();
    let status = if path == "/redirect" {
        answer.insert("location", "/elsewhere".parse().unwrap());
        StatusCode::FOUND
    } else {
        StatusCode::from_u16(shared.status.load(Ordering::SeqCst)).unwrap()
    };
    shared.received.lock().unwrap().push(Received {
        path,
        headers,
        body,
        status: status.as_u16(),
    });
    shared.arrived.notify_waiters();
    (status, answer)
}
