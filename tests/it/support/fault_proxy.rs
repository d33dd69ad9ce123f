//! A fault-injecting HTTP proxy in front of moto, on a free port of 127.0.0.1.
//!
//! Every call is forwarded to moto unchanged, except a seeded, deterministic share of the calls
//! to EC2, ELBv2, SSM and Secrets Manager, which get instead (moto never sees them) a throttling
//! error or an HTTP 500 in that service's own wire format:
//!
//! | service | protocol | throttling | 500 |
//! |---|---|---|---|
//! | EC2 | ec2Query: `<Response><Errors><Error>` | 503 `RequestLimitExceeded` | `InternalError` |
//! | ELBv2 | awsQuery: `<ErrorResponse><Error>` | 400 `Throttling` (`Sender`) | `InternalFailure` (`Receiver`) |
//! | SSM | awsJson1_1: `{"__type", "message"}` | 400 `ThrottlingException` | `InternalServerError` |
//! | Secrets Manager | awsJson1_1 | 400 `ThrottlingException` | `InternalServiceError` |
//!
//! These are the shapes the SDK's error parsers read (`ec2_query_errors.rs`,
//! `rest_xml_wrapped_errors.rs`, aws-smithy-json's `__type`/`x-amzn-errortype`), the throttling
//! codes are in aws-runtime's `THROTTLING_ERRORS`, and 500 is in aws-smithy-runtime's transient
//! status codes, so the SDK's standard retry retries both. The codes are also in the daemon's own
//! `ERROR_CODES` table, as `Throttled` and `Transient`.
//!
//! The service is told by the request: `X-Amz-Target` (`AmazonSSM.<Op>`,
//! `secretsmanager.<Op>`) for the JSON services; the form body's `Action=<Op>` and the SigV4
//! credential scope of `Authorization` (`/ec2/`, `/elasticloadbalancing/`) for the query ones.
//! Anything else (moto's own API) is always forwarded.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Largest request body forwarded (the daemon's largest is a secret, under 64 KiB).
const MAX_BODY_BYTES: usize = 1 << 20;

/// Headers that belong to one connection, not to the request, plus the ones the client
/// recomputes for the upstream connection.
const NOT_FORWARDED: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Service {
    Ec2,
    Elbv2,
    Ssm,
    SecretsManager,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// The service's throttling error.
    Throttle,
    /// HTTP 500 with the service's internal-error code.
    ServerError,
}

/// Which share of the recognised calls fails, and the seed that picks them.
#[derive(Debug, Clone, Copy)]
pub struct FaultRates {
    pub throttle_percent: u64,
    pub server_error_percent: u64,
    pub seed: u64,
}

/// What the proxy did so far.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Requests forwarded to moto, by service (`None`: not a call the proxy recognises).
    pub forwarded: BTreeMap<Option<Service>, u64>,
    /// Forwarded requests that moto answered with a 5xx (moto's own failures, not injected),
    /// by operation (`None`: not a call the proxy recognises).
    pub upstream_server_errors: BTreeMap<Option<String>, u64>,
    /// Injected faults by (kind, service, operation).
    pub faults: BTreeMap<(Fault, Service, String), u64>,
}

impl Counts {
    pub fn forwarded_total(&self) -> u64 {
        self.forwarded.values().sum()
    }

    pub fn faults_of(&self, kind: Fault) -> u64 {
        self.faults
            .iter()
            .filter(|((fault, _, _), _)| *fault == kind)
            .map(|(_, count)| count)
            .sum()
    }

    /// Injected faults of both kinds, by service.
    pub fn faults_by_service(&self) -> BTreeMap<Service, u64> {
        let mut out = BTreeMap::new();
        for ((_, service, _), count) in &self.faults {
            *out.entry(*service).or_default() += count;
        }
        out
    }
}

/// A running proxy; dropping it stops the server.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    rates: FaultRates,
    rng: Mutex<SplitMix64>,
    counts: Mutex<Counts>,
}

impl FaultProxy {
    /// Starts the proxy in front of `upstream` (e.g. `http://127.0.0.1:5000`).
    pub async fn start(upstream: &str, rates: FaultRates) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the fault proxy to 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("reading the proxy's address")
            .port();
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("building the proxy's client"),
            rates,
            rng: Mutex::new(SplitMix64(rates.seed)),
            counts: Mutex::new(Counts::default()),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("serving the fault proxy");
        });
        FaultProxy {
            port,
            shared,
            server,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn counts(&self) -> Counts {
        self.shared.counts.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A call the proxy recognises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub service: Service,
    pub operation: String,
}

impl Call {
    /// The service and operation of a request, from its headers and body.
    pub fn identify(headers: &HeaderMap, body: &[u8]) -> Option<Call> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(target) = text("x-amz-target") {
            let (prefix, operation) = target.split_once('.')?;
            let service = match prefix {
                "AmazonSSM" => Service::Ssm,
                "secretsmanager" => Service::SecretsManager,
                _ => return None,
            };
            return Some(Call {
                service,
                operation: operation.to_string(),
            });
        }
        // SigV4: `Credential=<key>/<date>/<region>/<service>/aws4_request`.
        let scope = text("authorization")?
            .split("Credential=")
            .nth(1)?
            .split(',')
            .next()?;
        let service = match scope.split('/').nth(3)? {
            "ec2" => Service::Ec2,
            "elasticloadbalancing" => Service::Elbv2,
            _ => return None,
        };
        let operation = std::str::from_utf8(body)
            .ok()?
            .split('&')
            .find_map(|pair| pair.strip_prefix("Action="))?;
        Some(Call {
            service,
            operation: operation.to_string(),
        })
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "fault proxy: body too large").into_response();
    };
    let call = Call::identify(&parts.headers, &body);
    let operation = call.as_ref().map(|c| c.operation.clone());
    if let Some(call) = &call {
        let (fault, request_id) = shared.draw();
        if let Some(fault) = fault {
            *shared
                .counts
                .lock()
                .unwrap()
                .faults
                .entry((fault, call.service, call.operation.clone()))
                .or_default() += 1;
            return fault_response(fault, call.service, &request_id);
        }
    }
    *shared
        .counts
        .lock()
        .unwrap()
        .forwarded
        .entry(call.map(|c| c.service))
        .or_default() += 1;
    shared.forward(parts, body, operation).await
}

impl Shared {
    /// Draws the fate of one recognised call, and a request id for a fault.
    fn draw(&self) -> (Option<Fault>, String) {
        let mut rng = self.rng.lock().unwrap();
        let roll = rng.next() % 100;
        let request_id = format!("fault-{:016x}", rng.next());
        let fault = if roll < self.rates.throttle_percent {
            Some(Fault::Throttle)
        } else if roll < self.rates.throttle_percent + self.rates.server_error_percent {
            Some(Fault::ServerError)
        } else {
            None
        };
        (fault, request_id)
    }

    async fn forward(
        &self,
        parts: axum::http::request::Parts,
        body: Bytes,
        operation: Option<String>,
    ) -> Response {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = self
            .client
            .request(parts.method, format!("{}{path}", self.upstream))
            .body(body);
        for (name, value) in &parts.headers {
            if !NOT_FORWARDED.contains(&name.as_str()) {
                request = request.header(name, value);
            }
        }
        let answer = match request.send().await {
            Ok(answer) => answer,
            // moto is gone: a gateway error, which the SDK treats as transient.
            Err(error) => {
                return (StatusCode::BAD_GATEWAY, format!("fault proxy: {error}")).into_response();
            }
        };
        let status = answer.status();
        if status.is_server_error() {
            *self
                .counts
                .lock()
                .unwrap()
                .upstream_server_errors
                .entry(operation)
                .or_default() += 1;
        }
        let headers = answer.headers().clone();
        let body = match answer.bytes().await {
            Ok(body) => body,
            Err(error) => {
                return (StatusCode::BAD_GATEWAY, format!("fault proxy: {error}")).into_response();
            }
        };
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        for (name, value) in &headers {
            if !NOT_FORWARDED.contains(&name.as_str()) {
                response.headers_mut().append(name, value.clone());
            }
        }
        response
    }
}

/// The error the service itself would send.
fn fault_response(fault: Fault, service: Service, request_id: &str) -> Response {
    match (service, fault) {
        (Service::Ec2, Fault::Throttle) => ec2_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "RequestLimitExceeded",
            "Request limit exceeded.",
            request_id,
        ),
        (Service::Ec2, Fault::ServerError) => ec2_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "An internal error has occurred.",
            request_id,
        ),
        (Service::Elbv2, Fault::Throttle) => query_error(
            StatusCode::BAD_REQUEST,
            "Sender",
            "Throttling",
            "Rate exceeded",
            request_id,
        ),
        (Service::Elbv2, Fault::ServerError) => query_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Receiver",
            "InternalFailure",
            "The request processing has failed because of an unknown error.",
            request_id,
        ),
        (Service::Ssm | Service::SecretsManager, Fault::Throttle) => json_error(
            StatusCode::BAD_REQUEST,
            "ThrottlingException",
            "Rate exceeded",
            request_id,
        ),
        (Service::Ssm, Fault::ServerError) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "An error occurred on the server side.",
            request_id,
        ),
        (Service::SecretsManager, Fault::ServerError) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServiceError",
            "An error occurred on the server side.",
            request_id,
        ),
    }
}

/// EC2's query protocol error document.
fn ec2_error(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
         <Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"
    );
    with_headers(status, body, "text/xml;charset=UTF-8", request_id)
}

/// The awsQuery protocol's error document (ELBv2).
fn query_error(
    status: StatusCode,
    kind: &str,
    code: &str,
    message: &str,
    request_id: &str,
) -> Response {
    let body = format!(
        "<ErrorResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\">\
         <Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>\
         <RequestId>{request_id}</RequestId></ErrorResponse>"
    );
    with_headers(status, body, "text/xml", request_id)
}

/// The awsJson1_1 protocol's error document (SSM, Secrets Manager).
fn json_error(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response {
    let body = serde_json::json!({ "__type": code, "message": message }).to_string();
    with_headers(status, body, "application/x-amz-json-1.1", request_id)
}

fn with_headers(
    status: StatusCode,
    body: String,
    content_type: &'static str,
    request_id: &str,
) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", value);
    }
    response
}

/// splitmix64 (Steele, Lea and Flood): a tiny, good-enough generator, so a run's faults follow
/// from its seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
