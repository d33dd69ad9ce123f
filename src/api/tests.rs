use super::*;
use crate::cloud::fake::FakeCloud;
use crate::cloud::{Cloud, CloudErrorKind};
use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

const SERVICE: &str = "service-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

async fn state_with(cloud: Arc<FakeCloud>) -> AppState {
    let dyn_cloud: Arc<dyn Cloud> = cloud;
    let store = Store::open("sqlite::memory:").await.unwrap();
    AppState {
        events: crate::api::events::EventHub::new(store.clone()),
        store,
        vault: Arc::new(SecretVault::new(dyn_cloud, "openclaw/", "spotpool")),
        wake: Arc::new(Notify::new()),
        health: Arc::new(Health::default()),
        metrics: None,
        settings: Arc::new(ApiSettings {
            api_token: SecretString::new(SERVICE),
            admin_token: SecretString::new(ADMIN),
            shards: vec![crate::model::Shard {
                name: "default".into(),
                listener_arn: "arn:listener".into(),
                routing: crate::model::RouteMode::Path,
                base_url: "https://agents.example.com".into(),
                domain: None,
                capacity: 90,
            }],
            tiers: crate::reconcile::LiveTiers::new(vec![TierPolicy {
                spare_count: 2,
                ..TierPolicy::example("default")
            }]),
            ready_staleness: Duration::from_secs(30),
            required_secrets: Vec::new(),
            webhooks: true,
            webhook_allow_private: false,
            cost: Default::default(),
        }),
        clock: Arc::new(|| 1_700_000_000_000),
        reconciler: Default::default(),
    }
}

async fn call(
    state: &AppState,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = router(state.clone())
        .oneshot(request.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

/// A PUT of `user`'s instance with the service token.
async fn put_as(state: &AppState, user: &str, body: &str) -> (StatusCode, serde_json::Value) {
    let uri = format!("/v1/users/{user}/instance");
    call(state, "PUT", &uri, Some(SERVICE), body).await
}

fn error_code(body: &serde_json::Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn every_user_route_refuses_missing_and_wrong_tokens() {
    let state = state_with(Arc::new(FakeCloud::default())).await;
    for (method, uri) in [
        ("PUT", "/v1/users/alice/instance"),
        ("GET", "/v1/users/alice/instance"),
        ("DELETE", "/v1/users/alice/instance"),
        ("GET", "/v1/pool"),
    ] {
        for token in [None, Some("wrong-token"), Some("")] {
            let (status, body) = call(&state, method, uri, token, "{}").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} {token:?}");
            assert_eq!(error_code(&body), "unauthorized");
            assert!(!body["error"]["message"].as_str().unwrap().is_empty());
        }
    }
}

#[tokio::test]
async fn admin_routes_refuse_missing_and_wrong_tokens_and_the_service_token() {
    let state = state_with(Arc::new(FakeCloud::default())).await;
    for (method, uri) in [
        ("POST", "/v1/admin/repair?dry_run=true"),
        ("PUT", "/v1/admin/pool/default"),
        ("POST", "/v1/admin/instances/i-0123456789abcdef0/recycle"),
        ("GET", "/v1/admin/audit"),
    ] {
        for token in [None, Some("wrong-token"), Some("")] {
            let (status, body) = call(&state, method, uri, token, "{}").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} {token:?}");
            assert_eq!(error_code(&body), "unauthorized");
        }
        let (status, body) = call(&state, method, uri, Some(SERVICE), "{}").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}");
        assert_eq!(error_code(&body), "forbidden");
        let (status, _) = call(&state, method, uri, Some(ADMIN), "{}").await;
        assert!(
            status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
            "{method} {uri}: {status}"
        );
    }
    // Refused calls changed nothing and left no audit entry; the admin calls did.
    let audited = state.store.audit_log(100).await.unwrap();
    assert!(audited.iter().all(|e| e.actor == "admin"), "{audited:?}");
}

#[tokio::test]
async fn the_auth_scheme_is_case_insensitive_and_other_schemes_are_refused() {
    let state = state_with(Arc::new(FakeCloud::default())).await;
    for (header, expected) in [
        (format!("bearer {SERVICE}"), StatusCode::OK),
        (format!("BEARER {SERVICE}"), StatusCode::OK),
        (format!("Basic {SERVICE}"), StatusCode::UNAUTHORIZED),
        (format!("Bearer  {SERVICE}"), StatusCode::UNAUTHORIZED),
        (SERVICE.to_string(), StatusCode::UNAUTHORIZED),
    ] {
        let request = Request::builder()
            .uri("/v1/pool")
            .header("authorization", &header)
            .body(Body::empty())
            .unwrap();
        let response = router(state.clone()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), expected, "{header}");
    }
}

#[tokio::test]
async fn both_scopes_may_call_the_service_routes() {
    let state = state_with(Arc::new(FakeCloud::default())).await;
    for token in [SERVICE, ADMIN] {
        let (status, _) = call(&state, "GET", "/v1/pool", Some(token), "").await;
        assert_eq!(status, StatusCode::OK);
    }
}

#[tokio::test]
async fn the_pool_shows_the_image_and_its_pinned_digest() {
    let state = state_with(Arc::new(FakeCloud::default())).await;
    let (_, body) = call(&state, "GET", "/v1/pool", Some(SERVICE), "").await;
    assert_eq!(
        body["image"]["configured"],
        "ghcr.io/openclaw/openclaw:latest"
    );
    assert_eq!(body["image"]["digest"], serde_json::Value::Null);
    state
        .store
        .pin_image(
            "ghcr.io/openclaw/openclaw:latest",
            "sha256:ab",
            1_700_000_000_000,
        )
        .await
        .unwrap();
    let (_, body) = call(&state, "GET", "/v1/pool", Some(SERVICE), "").await;
    assert_eq!(body["image"]["digest"], "sha256:ab");
    assert_eq!(body["image"]["pinned_at"], "2023-11-14T22:13:20Z");
}

#[tokio::test]
async fn bad_user_ids_get_400_naming_the_rule() {
    let state = state_with(Arc::new(FakeCloud::default())).await;
    let long = "a".repeat(64);
    let cases = [
        ("Alice", "only lowercase letters"),
        ("-alice", "start and end"),
        ("admin", "reserved"),
        (long.as_str(), "limit is 63"),
        ("a_b", "only lowercase letters"),
    ];
    for (id, needle) in cases {
        for method in ["PUT", "GET", "DELETE"] {
            let (status, body) = call(
                &state,
                method,
                &format!("/v1/users/{id}/instance"),
                Some(SERVICE),
                "{}",
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {id}");
            assert_eq!(error_code(&body), "invalid_user_id");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(needle), "{id}: {message}");
        }
    }
}

#[tokio::test]
async fn bad_bodies_get_400_without_echoing_values() {
    let state = state_with(Arc::new(FakeCloud::default())).await;
    let cases = [
        ("{not json", "invalid_body"),
        ("[1,2]", "invalid_body"),
        (r#"{"tier": 5}"#, "invalid_body"),
        (r#"{"colour": "red"}"#, "invalid_body"),
        (r#"{"secrets": "sk-should-not-echo"}"#, "invalid_secrets"),
        (r#"{"secrets": {"KEY": 12345678}}"#, "invalid_secrets"),
        (
            r#"{"secrets": {"1BAD": "sk-should-not-echo"}}"#,
            "invalid_secrets",
        ),
        (r#"{"tier": "gpu-huge"}"#, "unknown_tier"),
    ];
    for (body, code) in cases {
        let (status, answer) = call(
            &state,
            "PUT",
            "/v1/users/alice/instance",
            Some(SERVICE),
            body,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(&answer), code, "{body}");
        let text = answer.to_string();
        assert!(!text.contains("sk-should-not-echo"), "{text}");
        assert!(!text.contains("12345678"), "{text}");
    }
    // Nothing was created for any of them.
    assert!(state.store.list_users().await.unwrap().is_empty());
}

/// Without required secrets, a PUT's body may be left out or be `null`, and the served schema
/// says so (a fuzzer's `null` is no negative case).
#[tokio::test]
async fn without_required_secrets_a_null_body_is_no_body_and_the_schema_says_so() {
    let state = state_with(Arc::new(FakeCloud::default())).await;
    let (_, doc) = call(&state, "GET", "/openapi.json", None, "").await;
    let body = &doc["paths"]["/v1/users/{user_id}/instance"]["put"]["requestBody"];
    assert_eq!(
        body["content"]["application/json"]["schema"]["anyOf"][1],
        serde_json::json!({"type": "null"}),
        "{body}"
    );
    let (status, _) = call(
        &state,
        "PUT",
        "/v1/users/alice/instance",
        Some(SERVICE),
        "null",
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn secrets_the_container_needs_are_required_when_secrets_are_written() {
    let cloud = Arc::new(FakeCloud::default());
    let mut state = state_with(cloud.clone()).await;
    let base = state.settings.clone();
    state.settings = Arc::new(ApiSettings {
        api_token: SecretString::new(SERVICE),
        admin_token: SecretString::new(ADMIN),
        shards: base.shards.clone(),
        tiers: base.tiers.clone(),
        ready_staleness: base.ready_staleness,
        required_secrets: vec!["OPENCLAW_GATEWAY_TOKEN".into()],
        webhooks: base.webhooks,
        webhook_allow_private: base.webhook_allow_private,
        cost: Default::default(),
    });
    // The served schema says so, so a request it admits is never refused for it.
    let (_, doc) = call(&state, "GET", "/openapi.json", None, "").await;
    let body = &doc["paths"]["/v1/users/{user_id}/instance"]["put"]["requestBody"];
    assert_eq!(body["required"], true);
    assert_eq!(
        body["content"]["application/json"]["schema"],
        serde_json::json!({"$ref": "#/components/schemas/PutInstanceRequest"})
    );
    let request = &doc["components"]["schemas"]["PutInstanceRequest"];
    assert_eq!(request["required"], serde_json::json!(["secrets"]));
    assert_eq!(
        request["properties"]["secrets"]["required"],
        serde_json::json!(["OPENCLAW_GATEWAY_TOKEN"])
    );
    let uri = "/v1/users/alice/instance";
    for body in [
        "{}",
        r#"{"secrets": {"ANTHROPIC_API_KEY": "sk-should-not-echo"}}"#,
        r#"{"secrets": {"OPENCLAW_GATEWAY_TOKEN": ""}}"#,
    ] {
        let (status, answer) = call(&state, "PUT", uri, Some(SERVICE), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(&answer), "missing_secrets", "{body}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("OPENCLAW_GATEWAY_TOKEN"), "{message}");
        assert!(!message.contains("sk-should-not-echo"), "{message}");
    }
    // Nothing was created for any of them, not even a secret.
    assert!(state.store.list_users().await.unwrap().is_empty());
    assert!(cloud.secrets().is_empty());

    let with_token = r#"{"secrets": {"OPENCLAW_GATEWAY_TOKEN": "gw-token-1"}}"#;
    let (status, _) = call(&state, "PUT", uri, Some(SERVICE), with_token).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // A repeat without secrets keeps the stored ones; one that replaces them must carry it too.
    let (status, _) = call(&state, "PUT", uri, Some(SERVICE), "{}").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let replace = r#"{"secrets": {"OTHER": "x"}}"#;
    let (status, answer) = call(&state, "PUT", uri, Some(SERVICE), replace).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&answer), "missing_secrets");
}

#[tokio::test]
async fn an_empty_or_null_body_is_no_body() {
    let state = state_with(Arc::new(FakeCloud::default())).await;
    for (user, body) in [("ann", ""), ("ben", " \n"), ("cat", "null"), ("dan", "{}")] {
        let uri = format!("/v1/users/{user}/instance");
        let (status, doc) = call(&state, "PUT", &uri, Some(SERVICE), body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body:?}: {doc}");
        assert_eq!(doc["tier"], "default");
    }
}

#[tokio::test]
async fn a_put_queues_the_user_and_stores_the_secret_by_arn_only() {
    let cloud = Arc::new(FakeCloud::default());
    let state = state_with(cloud.clone()).await;
    let (status, doc) = call(
        &state,
        "PUT",
        "/v1/users/alice/instance",
        Some(SERVICE),
        r#"{"secrets":{"OPENAI_API_KEY":"sk-live-abc"}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(doc["state"], "queued");
    assert_eq!(doc["user_id"], "alice");
    assert_eq!(doc["tier"], "default");
    let route = doc["route"].as_str().unwrap();
    assert_eq!(route.len(), 16);
    assert_eq!(doc["url"], format!("https://agents.example.com/{route}/"));
    let secrets = cloud.secrets();
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0].0, "openclaw/alice");
    assert_eq!(secrets[0].1.value, r#"{"OPENAI_API_KEY":"sk-live-abc"}"#);
    let row = state
        .store
        .get_user(&crate::model::UserId::parse("alice").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.secret_arn.as_deref(), Some(secrets[0].1.arn.as_str()));
    assert!(!format!("{row:?}").contains("sk-live-abc"));

    // The same PUT again is idempotent: same route, no new secret write without secrets.
    cloud.clear_calls();
    let (status, again) = call(&state, "PUT", "/v1/users/alice/instance", Some(SERVICE), "").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(again["route"], doc["route"]);
    assert!(cloud.calls().is_empty());
}

#[tokio::test]
async fn a_cloud_failure_storing_the_secret_is_a_503_and_creates_nothing() {
    let cloud = Arc::new(FakeCloud::default());
    cloud.fail_next("PutSecret", CloudErrorKind::Transient, 1);
    let state = state_with(cloud).await;
    let (status, body) = call(
        &state,
        "PUT",
        "/v1/users/alice/instance",
        Some(SERVICE),
        r#"{"secrets":{"K":"sk-live-abc"}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&body), "cloud_unavailable");
    assert!(!body.to_string().contains("sk-live-abc"));
    assert!(state.store.list_users().await.unwrap().is_empty());
}

/// A throttle that outlasted the SDK's budget is "slow down", not an outage: 429 with
/// Retry-After, for a new user's secret and for a rotation alike, and nothing is recorded.
#[tokio::test]
async fn a_throttled_secret_write_is_a_429_with_retry_after_and_records_nothing() {
    let cloud = Arc::new(FakeCloud::default());
    let state = state_with(cloud.clone()).await;
    let put = |body: &'static str| {
        let state = state.clone();
        async move {
            let request = Request::builder()
                .method("PUT")
                .uri("/v1/users/alice/instance")
                .header("authorization", format!("Bearer {SERVICE}"))
                .body(Body::from(body))
                .unwrap();
            let response = router(state).oneshot(request).await.unwrap();
            let status = response.status();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap().to_string());
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            (status, retry_after, body)
        }
    };
    cloud.fail_next("PutSecret", CloudErrorKind::Throttled, 1);
    let (status, retry_after, body) = put(r#"{"secrets":{"K":"sk-live-abc"}}"#).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(retry_after.as_deref(), Some("5"));
    assert_eq!(error_code(&body), "throttled");
    assert!(!body.to_string().contains("sk-live-abc"));
    assert!(state.store.list_users().await.unwrap().is_empty());

    let (status, _, _) = put(r#"{"secrets":{"K":"v1"}}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    cloud.fail_next("PutSecretValue", CloudErrorKind::Throttled, 1);
    let (status, retry_after, body) = put(r#"{"secrets":{"K":"v2"}}"#).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(retry_after.as_deref(), Some("5"));
    let (_, secret) = &cloud.secrets()[0];
    assert_eq!(secret.value, r#"{"K":"v1"}"#);
}

#[tokio::test]
async fn get_and_delete_answer_404_for_unknown_users() {
    let state = state_with(Arc::new(FakeCloud::default())).await;
    for method in ["GET", "DELETE"] {
        let (status, body) = call(
            &state,
            method,
            "/v1/users/nobody/instance",
            Some(SERVICE),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(error_code(&body), "not_found");
    }
}

#[tokio::test]
async fn a_put_while_deleting_or_with_another_tier_is_a_409() {
    let state = state_with(Arc::new(FakeCloud::default())).await;
    call(
        &state,
        "PUT",
        "/v1/users/alice/instance",
        Some(SERVICE),
        "{}",
    )
    .await;
    let (status, body) = call(
        &state,
        "PUT",
        "/v1/users/alice/instance",
        Some(SERVICE),
        r#"{"tier":"default"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, doc) = call(
        &state,
        "DELETE",
        "/v1/users/alice/instance",
        Some(SERVICE),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(doc["state"], "deleting");
    let (status, body) = call(
        &state,
        "PUT",
        "/v1/users/alice/instance",
        Some(SERVICE),
        "{}",
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&body), "user_deleting");
}

#[tokio::test]
async fn health_needs_no_token_and_readiness_needs_a_recent_pass() {
    let state = state_with(Arc::new(FakeCloud::default())).await;
    let (status, _) = call(&state, "GET", "/healthz", None, "").await;
    assert_eq!(status, StatusCode::OK);
    // A standby replica (no reconciler lock) is ready as long as its store answers.
    let (status, body) = call(&state, "GET", "/readyz", None, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    state.health.reconciling.store(true, Ordering::Relaxed);
    let (status, body) = call(&state, "GET", "/readyz", None, "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["checks"]["store"], "ok");
    state
        .health
        .last_success
        .store(1_700_000_000_000 - 1_000, Ordering::Relaxed);
    let (status, body) = call(&state, "GET", "/readyz", None, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    state
        .health
        .last_success
        .store(1_700_000_000_000 - 60_000, Ordering::Relaxed);
    let (status, _) = call(&state, "GET", "/readyz", None, "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_json_error_format() {
    let state = state_with(Arc::new(FakeCloud::default())).await;
    let (status, body) = call(&state, "GET", "/v2/nothing", Some(SERVICE), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
    let (status, body) = call(&state, "POST", "/v1/pool", Some(SERVICE), "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&body), "method_not_allowed");
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413() {
    let state = state_with(Arc::new(FakeCloud::default())).await;
    let huge = format!(r#"{{"secrets":{{"K":"{}"}}}}"#, "x".repeat(200 * 1024));
    let (status, body) = call(
        &state,
        "PUT",
        "/v1/users/alice/instance",
        Some(SERVICE),
        &huge,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&body), "invalid_body");
}

/// The OpenAPI document is served without a token, is OpenAPI 3.x JSON, and describes exactly
/// what the router serves: every documented operation is routed, every other method on a
/// documented path is a 405, and no route bypasses the document.
#[tokio::test]
async fn every_served_route_is_documented() {
    let state = state_with(Arc::new(FakeCloud::default())).await;
    let (status, doc) = call(&state, "GET", "/openapi.json", None, "").await;
    assert_eq!(status, StatusCode::OK);
    let version = doc["openapi"].as_str().expect("an `openapi` version");
    assert!(version.starts_with("3."), "{version}");
    let paths = doc["paths"].as_object().expect("paths");

    let methods = ["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"];
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in paths {
        // Any path parameter gets a valid user id; a 404 for it must be the handler's, not the
        // router's.
        let mut uri = path.clone();
        while let (Some(open), Some(close)) = (uri.find('{'), uri.find('}')) {
            uri.replace_range(open..=close, "alice");
        }
        // The event stream follows the journal until the client leaves: read what there is.
        if uri == "/v1/events" {
            uri.push_str("?follow=false");
        }
        for method in methods {
            let operation = &item[method.to_ascii_lowercase()];
            let (status, body) = call(&state, method, &uri, Some(ADMIN), "").await;
            if operation.is_object() {
                documented.insert((path.clone(), method));
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                assert_ne!(body["error"]["message"], "no such route", "{method} {path}");
                let responses = operation["responses"].as_object().unwrap();
                assert!(
                    responses.contains_key(status.as_str()),
                    "{method} {path} answered {status}, which is not documented"
                );
                // /v1 needs the bearer token and says so; the operational routes need none.
                if path.starts_with("/v1/") {
                    assert_eq!(
                        operation["security"],
                        serde_json::json!([{"bearer": []}]),
                        "{method} {path}"
                    );
                    assert!(responses.contains_key("401"), "{method} {path}");
                } else {
                    assert!(operation.get("security").is_none(), "{method} {path}");
                }
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is served but not documented"
                );
                assert_eq!(error_code(&body), "method_not_allowed");
            }
        }
    }
    for (path, method) in [
        ("/v1/users/{user_id}/instance", "PUT"),
        ("/v1/users/{user_id}/instance", "GET"),
        ("/v1/users/{user_id}/instance", "DELETE"),
        ("/v1/pool", "GET"),
        ("/healthz", "GET"),
        ("/readyz", "GET"),
        ("/metrics", "GET"),
        ("/openapi.json", "GET"),
        ("/v1/admin/repair", "POST"),
        ("/v1/admin/pool/{tier}", "PUT"),
        ("/v1/admin/instances/{instance_id}/recycle", "POST"),
        ("/v1/admin/image/repin", "POST"),
        ("/v1/admin/audit", "GET"),
    ] {
        assert!(
            documented.contains(&(path.to_string(), method)),
            "{method} {path} is not documented"
        );
    }

    // Response links (schemathesis follows them: PUT, then GET or DELETE the same user) name
    // operations that exist, in OpenAPI's camel case.
    let operation_ids: Vec<&serde_json::Value> = paths
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .map(|operation| &operation["operationId"])
        .collect();
    let mut links = 0;
    for operation in paths.values().flat_map(|i| i.as_object().unwrap().values()) {
        for response in operation["responses"].as_object().unwrap().values() {
            for link in response["links"]
                .as_object()
                .into_iter()
                .flat_map(|l| l.values())
            {
                links += 1;
                assert!(operation_ids.contains(&&link["operationId"]), "{link}");
                assert!(link.get("operation_id").is_none(), "{link}");
            }
        }
    }
    assert!(links >= 6, "{links} links");

    // Routes reach the router only through `routes!`, which documents them: a plain
    // `.route(...)` (or a nested service) would be served without documentation.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        for bypass in [".route(", ".route_service(", ".nest(", ".nest_service("] {
            assert!(
                !source.contains(bypass),
                "{} calls {bypass}: register routes with routes!() so they are documented",
                path.display()
            );
        }
    }

    // The bearer scheme, the user id rule with its reserved names, and this daemon's tiers.
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let user_id = &doc["components"]["schemas"]["UserId"];
    assert_eq!(user_id["pattern"], "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$");
    assert_eq!(
        user_id["not"]["enum"],
        serde_json::json!(crate::model::RESERVED_USER_IDS)
    );
    assert_eq!(
        doc["components"]["schemas"]["PutInstanceRequest"]["properties"]["tier"]["enum"],
        serde_json::json!(["default", null])
    );
}

/// `callback_url`: https to a public host, set with the user and changed or removed by a later
/// PUT; anything else is `400 invalid_callback_url` (the message never repeats the query); with
/// webhooks off, refused and left out of the served schema.
#[tokio::test]
async fn a_callback_url_must_be_https_to_a_public_host_and_a_put_sets_or_clears_it() {
    let mut state = state_with(Arc::new(FakeCloud::default())).await;
    let put = |url: serde_json::Value| serde_json::json!({ "callback_url": url }).to_string();
    for (url, why) in [
        (
            serde_json::json!("http://hooks.example.com/x"),
            "must be https",
        ),
        (
            serde_json::json!("https://169.254.169.254/x?token=abc"),
            "not public",
        ),
        (
            serde_json::json!("https://[::ffff:10.0.0.1]/"),
            "not public",
        ),
        (
            serde_json::json!("https://me:pw@hooks.example.com/"),
            "credentials",
        ),
        (serde_json::json!(42), "must be a string"),
    ] {
        let (status, body) = put_as(&state, "alice", &put(url.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        assert_eq!(error_code(&body), "invalid_callback_url");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{url}: {message}");
        assert!(!message.contains("token=abc"), "{message}");
    }
    let (status, _) = call(&state, "GET", "/v1/users/alice/instance", Some(SERVICE), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was recorded");

    let url = "https://hooks.example.com/spotpool?token=abc";
    let (status, body) = put_as(&state, "alice", &put(url.into())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body["callback_url"], "https://hooks.example.com/spotpool?…",
        "shown without its query"
    );
    assert_eq!(
        state
            .store
            .get_user(&crate::model::UserId::parse("alice").unwrap())
            .await
            .unwrap()
            .unwrap()
            .callback_url
            .as_deref(),
        Some(url),
        "kept whole"
    );
    // A repeat without the field keeps it; another URL replaces it; null removes it.
    let (_, body) = put_as(&state, "alice", "{}").await;
    assert_eq!(body["callback_url"], "https://hooks.example.com/spotpool?…");
    let other = "https://other.example.com/hook";
    let (_, body) = put_as(&state, "alice", &put(other.into())).await;
    assert_eq!(body["callback_url"], other);
    let (_, body) = put_as(&state, "alice", &put(serde_json::Value::Null)).await;
    assert_eq!(body["callback_url"], serde_json::Value::Null);

    // Webhooks off: refused, and the served schema has no such field.
    let base = state.settings.clone();
    state.settings = Arc::new(ApiSettings {
        api_token: SecretString::new(SERVICE),
        admin_token: SecretString::new(ADMIN),
        shards: base.shards.clone(),
        tiers: base.tiers.clone(),
        ready_staleness: base.ready_staleness,
        required_secrets: Vec::new(),
        webhooks: false,
        webhook_allow_private: false,
        cost: Default::default(),
    });
    let (status, body) = put_as(&state, "bob", &put(url.into())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SPOTPOOL_WEBHOOK_SECRET")
    );
    let (_, doc) = call(&state, "GET", "/openapi.json", None, "").await;
    let properties = &doc["components"]["schemas"]["PutInstanceRequest"]["properties"];
    assert!(properties.get("callback_url").is_none(), "{properties}");
    assert!(properties.get("tier").is_some());
}

/// The dashboard loads without a token, under a policy that allows only its own script, style
/// and API; its user table is admin-only.
#[tokio::test]
async fn the_dashboard_is_served_without_a_token_and_its_user_list_needs_the_admin_token() {
    let state = state_with(Arc::new(FakeCloud::default())).await;
    for (path, kind) in [
        ("/dashboard", "text/html"),
        ("/dashboard/dashboard.js", "text/javascript"),
        ("/dashboard/dashboard.css", "text/css"),
    ] {
        let response = router(state.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers();
        assert!(headers["content-type"].to_str().unwrap().starts_with(kind));
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(policy.contains("connect-src 'self'"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    let (status, body) = call(&state, "GET", "/dashboard/other.js", None, "").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );

    call(
        &state,
        "PUT",
        "/v1/users/alice/instance",
        Some(SERVICE),
        "{}",
    )
    .await;
    let (status, _) = call(&state, "GET", "/v1/admin/users", Some(SERVICE), "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(&state, "GET", "/v1/admin/users", None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = call(&state, "GET", "/v1/admin/users", Some(ADMIN), "").await;
    assert_eq!(status, StatusCode::OK);
    let users = body["users"].as_array().unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["user_id"], "alice");
    assert_eq!(users[0]["state"], "queued");
}

/// Every `$ref` of the served document resolves (a schema named in a route but never
/// registered is an error to every client generator and to schemathesis).
#[tokio::test]
async fn every_reference_in_the_served_document_resolves() {
    fn refs(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("$ref", serde_json::Value::String(target)) => out.push(target.clone()),
                        _ => refs(value, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let state = state_with(Arc::new(FakeCloud::default())).await;
    let (_, doc) = call(&state, "GET", "/openapi.json", None, "").await;
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.len() > 10, "{found:?}");
    for target in found {
        let pointer = target.trim_start_matches('#');
        assert!(doc.pointer(pointer).is_some(), "{target} does not resolve");
    }
}
