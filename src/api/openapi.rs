//! The OpenAPI 3.1 document of the API, served without a token at `GET /openapi.json`.
//!
//! The document and the router are one source: `routes()` in `mod.rs` registers every route
//! through `utoipa_axum::routes!`, which takes the path, the methods and the documentation from
//! the handler's `#[utoipa::path]`. A route added with axum's plain `route` method would be served
//! but not documented; the test `every_served_route_is_documented` refuses that.
//!
//! Adding a route: annotate the handler with `#[utoipa::path(...)]`, reusing the shared
//! components below (e.g. `(status = 401, response = Unauthorized)`) and, when it needs a token,
//! `security(("bearer" = []))` ([`BEARER`]); then register it with `routes!(...)` in the group of
//! its scope in `routes()`. The schemas the annotation names are collected by themselves.
//!
//! Two things the derive macros cannot say are added by hand: the reserved user ids (a JSON
//! Schema `not` on `UserId`) and the tiers this daemon is configured with (an `enum` on `tier`,
//! patched into the served document at start-up by [`document`]).

use crate::model::{InstanceStatus, RESERVED_USER_IDS, UserId, UserState};
use crate::vault::{MAX_SECRET_BYTES, MAX_SECRET_ENTRIES};
use axum::Extension;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, KnownFormat, Ref, RefOr, Response, ResponseBuilder, SchemaFormat,
};
use utoipa::{Modify, OpenApi, PartialSchema, ToResponse, ToSchema};

/// The name of the bearer security scheme; `/v1` operations say `security(("bearer" = []))`.
pub const BEARER: &str = "bearer";

/// The user id rule of `UserId::parse`, as a regular expression (reserved names aside).
pub const USER_ID_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

/// The secret name rule of `UserSecrets::parse`: an environment variable name of at most 128.
pub const SECRET_NAME_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]{0,127}$";

/// The secret value rule of `UserSecrets::parse`: no line break and no NUL.
pub const SECRET_VALUE_PATTERN: &str = "^[^\\r\\n\\x00]*$";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "spotpool",
        description = "Hands out warm EC2 spot instances to users. The web backend asks for an \
            instance per user (`PUT`), reads its state (`GET`) and releases it (`DELETE`); the \
            daemon reconciles AWS in the background. Every `/v1` route needs \
            `Authorization: Bearer <token>` (the service or the admin token); a missing or \
            wrong token is `401`. Every error is `{\"error\":{\"code\",\"message\"}}`.",
    ),
    modifiers(&BearerScheme),
    components(
        schemas(ErrorBody, UserId),
        responses(Unauthorized, Forbidden, Throttled, InternalError),
    ),
    tags(
        (name = "users", description = "A user's instance: desired state, written by the web backend."),
        (name = "pool", description = "The warm pool, for on-call."),
        (name = "admin", description = "On-call's repair, tier sizing and recycling. Admin token only (the service token gets 403); every call is audited."),
        (name = "operations", description = "Health, readiness, metrics and this document. No token."),
    ),
)]
pub struct ApiDoc;

/// Adds the bearer scheme the `/v1` operations refer to.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        // The crate declares no licence; utoipa would publish an empty one.
        openapi.info.license = None;
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "SPOTPOOL_API_TOKEN (service scope) or SPOTPOOL_ADMIN_TOKEN (admin \
                         scope, also allowed on every service route).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The body of every error the API answers (`/readyz` answers 503 with its readiness document).
#[derive(Debug, serde::Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "invalid_user_id", "message": "user id contains 'A'; only lowercase letters, digits and hyphens are allowed"}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// A stable machine-readable code and a message for humans. The message never repeats a secret
/// value.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code: `unauthorized`, `invalid_user_id`, `invalid_body`, `invalid_secrets`,
    /// `unknown_tier`, `not_found`, `user_deleting`, `tier_mismatch`, `secret_being_deleted`,
    /// `conflict`, `method_not_allowed`, `cloud_unavailable`, `internal`, and on admin routes
    /// `forbidden`, `standby`, `invalid_query`, `invalid_actor`, `invalid_tier`,
    /// `invalid_instance_id`.
    pub code: Cow<'static, str>,
    /// What went wrong, for humans.
    pub message: String,
}

/// An error response with the JSON error body.
pub fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                .build(),
        )
        .build()
}

/// `401 unauthorized`, with `WWW-Authenticate: Bearer`.
pub struct Unauthorized;

impl<'r> ToResponse<'r> for Unauthorized {
    fn response() -> (&'r str, RefOr<Response>) {
        let mut response = error_response(
            "`unauthorized`: the Authorization header is missing, is not `Bearer <token>`, or \
             names neither token.",
        );
        response.headers.insert(
            header::WWW_AUTHENTICATE.as_str().into(),
            HeaderBuilder::new()
                .schema(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(["Bearer"])),
                )
                .description(Some("Always `Bearer`."))
                .build(),
        );
        ("Unauthorized", response.into())
    }
}

/// `429 throttled`, with `Retry-After` in seconds.
pub struct Throttled;

impl<'r> ToResponse<'r> for Throttled {
    fn response() -> (&'r str, RefOr<Response>) {
        let mut response = error_response(
            "`throttled`: AWS throttled the secret write through every retry of the SDK's \
             budget. Nothing was recorded; retry after `Retry-After` seconds.",
        );
        response.headers.insert(
            header::RETRY_AFTER.as_str().into(),
            HeaderBuilder::new()
                .schema(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                )
                .description(Some("Seconds to wait before retrying."))
                .build(),
        );
        ("Throttled", response.into())
    }
}

/// `403 forbidden`: an admin route called with the service token.
pub struct Forbidden;

impl<'r> ToResponse<'r> for Forbidden {
    fn response() -> (&'r str, RefOr<Response>) {
        (
            "Forbidden",
            error_response(
                "`forbidden`: this route needs the admin token; the service token cannot use it.",
            )
            .into(),
        )
    }
}

/// `500 internal`: the store failed; the details are in the daemon's log.
pub struct InternalError;

impl<'r> ToResponse<'r> for InternalError {
    fn response() -> (&'r str, RefOr<Response>) {
        (
            "InternalError",
            error_response(
                "`internal`: the daemon's store failed (the cause is in the daemon's log). Not a \
                 client error.",
            )
            .into(),
        )
    }
}

impl PartialSchema for UserId {
    fn schema() -> RefOr<Schema> {
        // utoipa 5 has no `not`; extensions are flattened into the schema object, so this is a
        // plain JSON Schema `not`, which clients and schemathesis honour.
        let reserved =
            Extensions::from_iter([("not", serde_json::json!({"enum": RESERVED_USER_IDS}))]);
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(63))
            .pattern(Some(USER_ID_PATTERN))
            .description(Some(format!(
                "A platform user id: lowercase letters, digits and hyphens, 1-63 characters, \
                 starting and ending with a letter or digit. Reserved, and refused: {}. A bad id \
                 is `400 invalid_user_id` with the rule it broke.",
                RESERVED_USER_IDS.join(", ")
            )))
            .examples(["alice"])
            .extensions(Some(reserved))
            .into()
    }
}

impl ToSchema for UserId {
    fn name() -> Cow<'static, str> {
        "UserId".into()
    }
}

impl PartialSchema for UserState {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(UserState::ALL.map(UserState::as_str)))
            .description(Some(
                "`queued` (waiting for a spare, first come first served), `provisioning` (claim \
                 steps running), `ready` (container running and routed), `failed` (gave up \
                 after the attempt limit; `error` says why; a PUT retries), `deleting` (release \
                 in progress; the user disappears when it is done).",
            ))
            .into()
    }
}

impl ToSchema for UserState {
    fn name() -> Cow<'static, str> {
        "UserState".into()
    }
}

impl PartialSchema for InstanceStatus {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(InstanceStatus::ALL.map(InstanceStatus::as_str)))
            .description(Some(
                "`initializing` (launched, waiting for the readiness probe), `available` (a \
                 warm spare), `assigned` (held by a user), `terminating`.",
            ))
            .into()
    }
}

impl ToSchema for InstanceStatus {
    fn name() -> Cow<'static, str> {
        "InstanceStatus".into()
    }
}

/// The body of `PUT /v1/users/{user_id}/instance`. It may be empty (same as `{}`).
///
/// Documentation only: the handler checks the body field by field, by hand, so that no error
/// message can echo a secret value.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct PutInstanceRequest {
    /// The tier; one of the configured tiers (default: the first). A user keeps its tier: a
    /// different one is `409 tier_mismatch`.
    pub tier: Option<String>,
    /// Environment variables for the user's container, written to Secrets Manager (never to
    /// the daemon's database or logs). In a repeat PUT they replace the stored ones; the running
    /// container sees them at its next start.
    #[schema(schema_with = secrets_schema)]
    pub secrets: Option<BTreeMap<String, String>>,
    /// Where to POST the instance document when the user becomes `ready`, `failed` or `asleep`
    /// (not after a move: the user stays served), signed with `Spotpool-Signature` and carrying
    /// `Spotpool-Event-Id`; at least once, retried for a day (docs/DEPLOY.md, "Webhooks"). An
    /// `https` URL to a public address (any with `SPOTPOOL_WEBHOOK_ALLOW_PRIVATE`), no
    /// credentials, at most 2,048 characters; `null` removes it. Refused while webhooks are off
    /// (no `SPOTPOOL_WEBHOOK_SECRET`).
    #[schema(max_length = 2048)]
    pub callback_url: Option<String>,
}

fn secrets_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(SECRET_NAME_PATTERN)),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(SECRET_VALUE_PATTERN))
                .description(Some(
                    "A value without line breaks or NUL (values become environment variables; \
                     encode multi-line values, e.g. base64).",
                ))
                .into(),
        ))))
        .max_properties(Some(MAX_SECRET_ENTRIES))
        .description(Some(format!(
            "NAME: value. Names are environment variable names (letters, digits and \
             underscores, not starting with a digit, at most 128). At most \
             {MAX_SECRET_ENTRIES} entries and {MAX_SECRET_BYTES} bytes as JSON."
        )))
        .examples([serde_json::json!({"OPENAI_API_KEY": "sk-..."})])
        .into()
}

/// `{"status": "ok"}`.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct HealthDocument {
    pub status: HealthStatus,
}

#[derive(Debug, serde::Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
}

/// Readiness: the store answers and (on the replica holding the reconciler lock) a reconcile
/// pass, which reaches AWS, succeeded recently.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ReadinessDocument {
    pub status: ReadyStatus,
    /// Whether this replica runs the reconciler (`leader`, it holds the lease) or serves the
    /// API only (`standby`).
    pub role: Role,
    /// On a standby, the replica that leads (absent while none does, or on the leader).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderDocument>,
    pub checks: ReadinessChecks,
}

/// The replica that holds the lease.
#[derive(Debug, Clone, serde::Serialize, ToSchema)]
pub struct LeaderDocument {
    /// Its `SPOTPOOL_REPLICA_ID`.
    pub replica: String,
    /// Its `SPOTPOOL_ADVERTISE_URL`: where to send what only the leader does.
    pub url: Option<String>,
    /// The lease's fencing epoch: one more at every change of leader.
    pub epoch: i64,
}

/// A replica's part: the one `leader` runs the reconciler and the interruption consumer; a
/// `standby` serves the API only and takes over when the leader's lease runs out or is handed
/// back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Leader,
    Standby,
}

impl Role {
    /// This replica's role, from whether it runs the reconciler.
    pub fn of(health: &crate::reconcile::Health) -> Role {
        if health
            .reconciling
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            Role::Leader
        } else {
            Role::Standby
        }
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadyStatus {
    Ready,
    NotReady,
}

/// Each check: `ok` or why not.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ReadinessChecks {
    /// `ok` or `unreachable`.
    #[schema(value_type = String, examples("ok"))]
    pub store: &'static str,
    /// `ok`, a standby note, or why the reconciler is not healthy.
    #[schema(value_type = String, examples("ok"))]
    pub cloud: &'static str,
}

/// `format: date-time` for the RFC 3339 timestamps.
pub fn date_time() -> SchemaFormat {
    SchemaFormat::KnownFormat(KnownFormat::DateTime)
}

/// The served document as JSON, with what only the running daemon knows: its tiers and the
/// secrets its containers require.
pub fn document(
    api: utoipa::openapi::OpenApi,
    tiers: &[String],
    settings: &super::ApiSettings,
) -> serde_json::Value {
    let mut doc = serde_json::to_value(&api).unwrap_or_default();
    camel_case_links(&mut doc);
    require_secrets(&mut doc, &settings.required_secrets);
    describe_callback(&mut doc, settings);
    super::drains::describe_request(&mut doc, tiers);
    if let Some(tier) = doc.pointer_mut("/components/schemas/PutInstanceRequest/properties/tier")
        && let Some(tier) = tier.as_object_mut()
    {
        let mut values: Vec<serde_json::Value> = tiers.iter().map(|t| t.as_str().into()).collect();
        values.push(serde_json::Value::Null);
        tier.insert("enum".into(), values.into());
    }
    // The admin route's `{tier}` names a configured tier too.
    let parameters = doc
        .pointer_mut("/paths/~1v1~1admin~1pool~1{tier}/put/parameters")
        .and_then(serde_json::Value::as_array_mut);
    for parameter in parameters.into_iter().flatten() {
        if parameter["name"] == "tier"
            && let Some(schema) = parameter
                .get_mut("schema")
                .and_then(serde_json::Value::as_object_mut)
        {
            schema.insert("enum".into(), tiers.into());
        }
    }
    doc
}

/// A PUT's `callback_url` as this daemon takes it: absent while webhooks are off; otherwise an
/// `https` URL to a named host (an address literal may be private: refused; the schema leaves
/// literals out), with any port, path and query, or any http(s) URL where private targets are
/// allowed. (A name is checked when it is resolved, at delivery.)
fn describe_callback(doc: &mut serde_json::Value, settings: &super::ApiSettings) {
    let Some(properties) = doc
        .pointer_mut("/components/schemas/PutInstanceRequest/properties")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return;
    };
    if !settings.webhooks {
        properties.remove("callback_url");
        return;
    }
    // A port of 1-65535; a path and a query of the characters RFC 3986 allows there.
    const PORT: &str = r"(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?";
    const REST: &str = r"(/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?(\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$";
    let host = if settings.webhook_allow_private {
        r"^https?://[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})*"
    } else {
        r"^https://([A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,63}"
    };
    let pattern = format!("{host}{PORT}{REST}");
    if let Some(url) = properties
        .get_mut("callback_url")
        .and_then(serde_json::Value::as_object_mut)
    {
        url.insert("pattern".into(), pattern.into());
    }
}

/// With required secrets (`CONTAINER_REQUIRED_SECRETS`), a PUT's body, its `secrets` and those
/// names in it are required, non-empty: a request the schema admits is never `missing_secrets`.
/// (A repeat PUT may still leave the secrets out, keeping the stored ones.)
fn require_secrets(doc: &mut serde_json::Value, required: &[String]) {
    if required.is_empty() {
        // The body is optional, and `null` is no body (the handler reads it as `{}`).
        if let Some(schema) = doc.pointer_mut(
            "/paths/~1v1~1users~1{user_id}~1instance/put/requestBody/content/application~1json/schema",
        ) {
            *schema = serde_json::json!({"anyOf": [
                {"$ref": "#/components/schemas/PutInstanceRequest"},
                {"type": "null"},
            ]});
        }
        return;
    }
    if let Some(body) = doc
        .pointer_mut("/paths/~1v1~1users~1{user_id}~1instance/put/requestBody")
        .and_then(serde_json::Value::as_object_mut)
    {
        body.insert("required".into(), true.into());
        // Not `null` either: the object, with its secrets.
        if let Some(schema) = body
            .get_mut("content")
            .and_then(|c| c.get_mut("application/json"))
            .and_then(serde_json::Value::as_object_mut)
        {
            schema.insert(
                "schema".into(),
                serde_json::json!({"$ref": "#/components/schemas/PutInstanceRequest"}),
            );
        }
    }
    let Some(request) = doc
        .pointer_mut("/components/schemas/PutInstanceRequest")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return;
    };
    request.insert("required".into(), serde_json::json!(["secrets"]));
    if let Some(secrets) = request
        .get_mut("properties")
        .and_then(|p| p.get_mut("secrets"))
        .and_then(serde_json::Value::as_object_mut)
    {
        secrets.insert("type".into(), "object".into());
        secrets.insert("required".into(), required.into());
        let properties: serde_json::Map<String, serde_json::Value> = required
            .iter()
            .map(|name| {
                (
                    name.clone(),
                    serde_json::json!({
                        "type": "string",
                        "minLength": 1,
                        "pattern": SECRET_VALUE_PATTERN,
                    }),
                )
            })
            .collect();
        secrets.insert("properties".into(), properties.into());
    }
}

/// utoipa 5 serialises a response link's fields in snake case (`operation_id`); OpenAPI says
/// `operationId`, `operationRef` and `requestBody` (fixed in utoipa 6).
fn camel_case_links(doc: &mut serde_json::Value) {
    let operations = doc
        .get_mut("paths")
        .and_then(serde_json::Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut());
    for operation in operations {
        let responses = operation
            .get_mut("responses")
            .and_then(serde_json::Value::as_object_mut)
            .into_iter()
            .flat_map(|responses| responses.values_mut());
        for response in responses {
            let links = response
                .get_mut("links")
                .and_then(serde_json::Value::as_object_mut)
                .into_iter()
                .flat_map(|links| links.values_mut())
                .filter_map(serde_json::Value::as_object_mut);
            for link in links {
                for (snake, camel) in [
                    ("operation_id", "operationId"),
                    ("operation_ref", "operationRef"),
                    ("request_body", "requestBody"),
                ] {
                    if let Some(value) = link.remove(snake) {
                        link.insert(camel.into(), value);
                    }
                }
            }
        }
    }
}

/// The document, serialised once at start-up.
#[derive(Clone)]
pub struct OpenApiJson(pub Arc<Bytes>);

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1).", body = Object, content_type = "application/json")),
)]
pub async fn openapi_json(Extension(doc): Extension<OpenApiJson>) -> axum::response::Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        Bytes::clone(&doc.0),
    )
        .into_response()
}
