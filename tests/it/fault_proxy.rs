//! The real binary against moto behind a fault-injecting proxy (`support::fault_proxy`): a share
//! of every AWS call is answered with the service's throttling error or a 500 instead, so the
//! whole real SDK path (parsing, classification, the standard retry) and the daemon's own pass
//! retries are exercised. Claims and releases must still converge, with nothing leaked.
//!
//! The daemon runs with its own SDK retry settings (standard mode, `SPOTPOOL_AWS_MAX_ATTEMPTS`
//! default 4); whatever still fails after those is retried by its next reconcile pass.

use crate::daemon::{API_TOKEN, Daemon, counter_by, daemon_env, samples};
use crate::support::aws::Aws;
use crate::support::fault_proxy::{Call, Fault, FaultProxy, FaultRates, Service};
use crate::support::infra::Infra;
use crate::support::moto::{Moto, sdk_config};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Share of calls answered with a throttling error, and with a 500.
const THROTTLE_PERCENT: u64 = 15;
const SERVER_ERROR_PERCENT: u64 = 10;
/// The seed when `SPOTPOOL_FAULT_SEED` does not give one (to replay a failed run).
const DEFAULT_SEED: u64 = 0x5eed_f00d;
/// From the first PUT to every user settled and the pool quiet.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(60);
/// The seed of this run, printed so a failure can be replayed.
fn seed() -> u64 {
    std::env::var("SPOTPOOL_FAULT_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

/// PUTs and expects the daemon to accept (200 or 202). Secrets Manager's faults never reach the
/// client: the API's secret writes have their own, longer SDK retry budget
/// (`SPOTPOOL_AWS_SECRET_WRITE_ATTEMPTS`, 8: at this proxy's 25% a PUT fails 1 in 65,536).
async fn put_accepted(daemon: &Daemon, user: &str, body: &str) {
    let (status, doc) = daemon.put(user, body).await;
    assert!(
        status == 200 || status == 202,
        "PUT {user}: {status} {doc}\nlog:\n{}",
        daemon.log()
    );
}

/// The daemon's AWS calls that still failed after the SDK's retries, by outcome (`throttled`,
/// `transient`, ...): what the reconciler's next pass had to retry. `not_found` is an answer, not
/// a failure.
fn calls_failed_after_retries(metrics: &str) -> BTreeMap<String, f64> {
    let mut failed = counter_by(metrics, "spotpool_aws_calls_total", "outcome");
    failed.retain(|outcome, _| outcome != "ok" && outcome != "not_found");
    failed
}

/// The API's answers with a 5xx status, but readiness's (whose 503 before the first successful
/// pass is its contract): (method, route, status) and count.
fn api_server_errors(metrics: &str) -> Vec<((String, String, String), f64)> {
    samples(metrics, "spotpool_http_requests_total")
        .into_iter()
        .filter(|(labels, _)| labels["status"].starts_with('5') && labels["route"] != "/readyz")
        .map(|(mut labels, count)| {
            let mut take = |key: &str| labels.remove(key).unwrap_or_default();
            ((take("method"), take("route"), take("status")), count)
        })
        .collect()
}

/// The AWS error code of a failed SDK call.
fn error_code<T, E: ProvideErrorMetadata>(result: Result<T, E>) -> Option<String> {
    result.err().and_then(|err| err.code().map(String::from))
}

#[tokio::test]
async fn fault_proxy_claims_and_releases_converge_with_no_leaks_under_throttling_and_500s() {
    let moto = Moto::start().await;
    // Set-up and checks go straight to moto; only the daemon goes through the proxy.
    let sdk = moto.sdk_config().await;
    let infra = Infra::create(&sdk).await;
    let aws = Aws::new(&sdk);
    let seed = seed();
    eprintln!("fault proxy seed {seed} (replay with SPOTPOOL_FAULT_SEED={seed})");
    let proxy = FaultProxy::start(
        &moto.endpoint(),
        FaultRates {
            throttle_percent: THROTTLE_PERCENT,
            server_error_percent: SERVER_ERROR_PERCENT,
            seed,
        },
    )
    .await;
    let env: Vec<(String, String)> = daemon_env(&moto, &infra)
        .into_iter()
        .map(|(key, value)| match key.as_str() {
            "AWS_ENDPOINT_URL" => (key, proxy.endpoint()),
            _ => (key, value),
        })
        .collect();
    let daemon = Daemon::start(&env).await;

    // A burst: eight users, three of them asked for twice (two with new secrets, which rotates
    // them), and three deleted right after, while they are queued or being claimed.
    let users: Vec<String> = (0..8).map(|n| format!("fault-{n}")).collect();
    let (kept, deleted) = users.split_at(5);
    let started = Instant::now();
    for user in &users {
        put_accepted(&daemon, user, r#"{"secrets":{"API_KEY":"k1"}}"#).await;
    }
    for (user, body) in kept[..3].iter().zip([
        r#"{"secrets":{"API_KEY":"k2"}}"#,
        r#"{"secrets":{"API_KEY":"k2"}}"#,
        "{}",
    ]) {
        put_accepted(&daemon, user, body).await;
    }
    for user in deleted {
        let (status, doc) = daemon.delete(user).await;
        assert_eq!(status, 202, "DELETE {user}: {doc}");
    }

    // Converged: every kept user ready, every deleted one gone, the pool back to its two spares
    // with nothing launching, probing or terminating.
    let converged = daemon
        .wait_for(CONVERGE_DEADLINE, || async {
            for user in kept {
                if daemon.get(user).await.1["state"] != "ready" {
                    return false;
                }
            }
            for user in deleted {
                if daemon.get(user).await.0 != 404 {
                    return false;
                }
            }
            let (_, pool) = daemon
                .request("GET", "/v1/pool", Some(API_TOKEN), None)
                .await;
            let counts = &pool["tiers"][0]["counts"];
            let count = |status: &str| counts[status].as_u64().unwrap_or(0);
            count("assigned") == kept.len() as u64
                && count("available") == 2
                && count("initializing") == 0
                && count("terminating") == 0
        })
        .await;
    let converge_time = started.elapsed();
    let mut states = HashMap::new();
    for user in &users {
        states.insert(user.clone(), daemon.get(user).await);
    }
    assert!(
        converged,
        "not converged in {CONVERGE_DEADLINE:?} (seed {seed}): {states:?}\nproxy: {:?}\nlog:\n{}",
        proxy.counts(),
        daemon.log()
    );

    // Through the AWS API, straight to moto: exactly the kept users' resources, nothing more.
    let ready: HashMap<String, serde_json::Value> = states
        .into_iter()
        .filter(|(user, _)| kept.contains(user))
        .map(|(user, (_, doc))| (user, doc))
        .collect();
    let context = format!("seed {seed}");
    let spares = aws
        .assert_resources_match_users(&infra.listener_arn, &ready, &context)
        .await;
    assert_eq!(spares, 2, "{context}");

    // The faults really happened, of both kinds, and the API never answered a 5xx.
    let counts = proxy.counts();
    let throttles = counts.faults_of(Fault::Throttle);
    let server_errors_injected = counts.faults_of(Fault::ServerError);
    assert!(throttles > 0, "no throttling injected: {counts:?}");
    assert!(server_errors_injected > 0, "no 500 injected: {counts:?}");
    // moto does not implement DescribeInstanceInformation and answers it 500: the daemon
    // takes that as "SSM cannot say" (issue 13). Any other 500 of moto's is a failure.
    let moto_failures: u64 = counts
        .upstream_server_errors
        .iter()
        .filter(|(operation, _)| operation.as_deref() != Some("DescribeInstanceInformation"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(moto_failures, 0, "moto itself failed: {counts:?}");
    let metrics = daemon.metrics().await;
    let api_errors = api_server_errors(&metrics);
    assert!(
        api_errors.is_empty(),
        "the API answered 5xx under faults: {api_errors:?}; log:\n{}",
        daemon.log()
    );

    eprintln!(
        "fault proxy: {} users ({} kept, {} deleted) converged in {:.1} s; {} requests forwarded \
         to moto ({:?}), {} throttling errors and {} 500s injected ({} of {} calls faulted), by \
         service {:?}; daemon calls still failing after the SDK's retries {:?}",
        users.len(),
        kept.len(),
        deleted.len(),
        converge_time.as_secs_f64(),
        counts.forwarded_total(),
        counts.forwarded,
        throttles,
        server_errors_injected,
        throttles + server_errors_injected,
        counts.forwarded_total() + throttles + server_errors_injected,
        counts.faults_by_service(),
        calls_failed_after_retries(&metrics),
    );
}

/// Each service's injected errors, read by the real SDK: the code it parses out of the body, and
/// a retry (both kinds are retryable, so two attempts reach the proxy). No moto is needed: with
/// every call faulted, nothing is forwarded.
#[tokio::test]
async fn fault_proxy_errors_are_parsed_and_retried_by_the_sdk() {
    for (fault, codes) in [
        (
            Fault::Throttle,
            [
                "RequestLimitExceeded",
                "Throttling",
                "ThrottlingException",
                "ThrottlingException",
            ],
        ),
        (
            Fault::ServerError,
            [
                "InternalError",
                "InternalFailure",
                "InternalServerError",
                "InternalServiceError",
            ],
        ),
    ] {
        let (throttle_percent, server_error_percent) = match fault {
            Fault::Throttle => (100, 0),
            Fault::ServerError => (0, 100),
        };
        let proxy = FaultProxy::start(
            "http://127.0.0.1:9",
            FaultRates {
                throttle_percent,
                server_error_percent,
                seed: 1,
            },
        )
        .await;
        let sdk = sdk_config(&proxy.endpoint())
            .await
            .to_builder()
            .retry_config(
                aws_config::retry::RetryConfig::standard()
                    .with_max_attempts(2)
                    .with_initial_backoff(Duration::from_millis(1)),
            )
            .build();
        let got = [
            error_code(
                aws_sdk_ec2::Client::new(&sdk)
                    .describe_instances()
                    .send()
                    .await,
            ),
            error_code(
                aws_sdk_elasticloadbalancingv2::Client::new(&sdk)
                    .describe_load_balancers()
                    .send()
                    .await,
            ),
            error_code(
                aws_sdk_ssm::Client::new(&sdk)
                    .describe_instance_information()
                    .send()
                    .await,
            ),
            error_code(
                aws_sdk_secretsmanager::Client::new(&sdk)
                    .list_secrets()
                    .send()
                    .await,
            ),
        ];
        assert_eq!(got, codes.map(|code| Some(code.to_string())), "{fault:?}");
        let counts = proxy.counts();
        for (service, operation) in [
            (Service::Ec2, "DescribeInstances"),
            (Service::Elbv2, "DescribeLoadBalancers"),
            (Service::Ssm, "DescribeInstanceInformation"),
            (Service::SecretsManager, "ListSecrets"),
        ] {
            assert_eq!(
                counts.faults.get(&(fault, service, operation.to_string())),
                Some(&2),
                "{fault:?} {service:?} {operation} was not retried once: {counts:?}"
            );
        }
        assert_eq!(counts.forwarded_total(), 0, "{counts:?}");
    }
}

#[test]
fn fault_proxy_tells_services_and_operations_from_requests() {
    let headers = |pairs: &[(&'static str, &'static str)]| {
        let mut map = axum::http::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    };
    let scope = |service: &str| {
        format!(
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/{service}/aws4_request, \
             SignedHeaders=host, Signature=0"
        )
    };
    let call = |service, operation: &str| {
        Some(Call {
            service,
            operation: operation.to_string(),
        })
    };
    assert_eq!(
        Call::identify(
            &headers(&[("x-amz-target", "AmazonSSM.SendCommand")]),
            b"{}"
        ),
        call(Service::Ssm, "SendCommand")
    );
    assert_eq!(
        Call::identify(
            &headers(&[("x-amz-target", "secretsmanager.CreateSecret")]),
            b"{}"
        ),
        call(Service::SecretsManager, "CreateSecret")
    );
    for (service, expected) in [
        ("ec2", Service::Ec2),
        ("elasticloadbalancing", Service::Elbv2),
    ] {
        let mut map = axum::http::HeaderMap::new();
        map.insert("authorization", scope(service).parse().unwrap());
        assert_eq!(
            Call::identify(&map, b"Action=RunInstances&Version=2016-11-15"),
            call(expected, "RunInstances")
        );
    }
    let mut s3 = axum::http::HeaderMap::new();
    s3.insert("authorization", scope("s3").parse().unwrap());
    assert_eq!(Call::identify(&s3, b"Action=ListBuckets"), None);
    assert_eq!(Call::identify(&headers(&[]), b""), None);
}
