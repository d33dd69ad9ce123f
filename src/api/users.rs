//! `/v1/users/{user_id}/instance`: PUT (want one), GET (what is it), DELETE (want none).

use super::openapi::{ErrorBody, InternalError, PutInstanceRequest, Throttled, Unauthorized};
use super::{ApiError, AppState, rfc3339};
use crate::cloud::{CloudError, CloudErrorKind};
use crate::model::{UserId, UserState};
use crate::store::{StoreError, UserRecord};
use crate::vault::UserSecrets;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

/// A user's instance: what the web backend asked for and how far it has got.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct InstanceDocument {
    #[schema(value_type = crate::model::UserId)]
    pub user_id: String,
    /// The user's tier.
    pub tier: String,
    pub state: UserState,
    /// The EC2 instance serving the user, once one is claimed.
    #[schema(required = true, examples("i-0123456789abcdef0"))]
    pub instance_id: Option<String>,
    /// The user's opaque route on the load balancer: 16 hex characters, kept for the user's
    /// lifetime.
    #[schema(pattern = "^[0-9a-f]{16}$", examples("3f9c0a7d2b4e6f18"))]
    pub route: String,
    /// Where the user's container is served: `<base_url>/<route>/` on a path-routed shard,
    /// `https://<route>.<domain>/` on a host-routed one. Null until the user is placed on a
    /// shard (its first claim), unless only one shard is configured.
    #[schema(
        required = true,
        examples("https://agents.example.com/3f9c0a7d2b4e6f18/")
    )]
    pub url: Option<String>,
    /// The shard (load balancer) the user is routed through, once placed: for life.
    #[schema(required = true, examples("shard-0"))]
    pub shard: Option<String>,
    /// When the user first asked (RFC 3339).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When the instance became ready (RFC 3339).
    #[schema(required = true, format = DateTime)]
    pub ready_at: Option<String>,
    /// Why the last claim attempt failed (one line), if it did.
    #[schema(required = true)]
    pub error: Option<String>,
    /// The user's workspace volume (its `/data`), once the first claim created it.
    #[schema(required = true)]
    pub workspace: Option<WorkspaceDocument>,
    /// Why a `queued` user waits beyond the pool's normal pace: `quota_exceeded` (an account
    /// quota refused the tier's launches; `GET /v1/pool` has the details) or
    /// `no_route_capacity` (every shard is full; `error` says the same). Null otherwise.
    #[schema(required = true, examples("quota_exceeded"))]
    pub waiting_for: Option<String>,
    /// Where the user's becoming `ready`, `failed` or `asleep` is POSTed (the PUT's
    /// `callback_url`; ARCHITECTURE.md "Webhooks"), without its query, which may carry the
    /// receiver's token (`?…` marks one).
    #[schema(
        required = true,
        examples("https://backend.example.com/hooks/spotpool?…")
    )]
    pub callback_url: Option<String>,
    /// A ready user's container as the health watch last judged it: `healthy`, `restarting`
    /// (it failed its health checks and was restarted), `recycling` (it failed again soon
    /// after: a crash loop, and the user moves to a fresh instance with its workspace) or
    /// `crash_loop` (it failed there too; left for on-call, `health_cause` says why). Null
    /// until the first reading on the user's instance, and for users neither `ready` nor
    /// `migrating` (ARCHITECTURE.md, "Health watch").
    #[schema(required = true, examples("healthy"))]
    pub health: Option<&'static str>,
    /// The load balancer's reason for the last failure the watch acted on, while `health` is
    /// not `healthy`.
    #[schema(
        required = true,
        examples("Target.ResponseCodeMismatch: Health checks failed with these codes: [502]")
    )]
    pub health_cause: Option<String>,
}

/// A user's workspace: the EBS volume mounted at the container's `/data`. It outlives the
/// user's instances (moves, sleep and wake keep it) and is deleted with the user.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct WorkspaceDocument {
    /// The EBS volume, once created.
    #[schema(required = true, examples("vol-0123456789abcdef0"))]
    pub volume_id: Option<String>,
    pub availability_zone: String,
    pub size_gib: u32,
    /// The instance it is attached to, if any (none while the user is asleep or waiting).
    #[schema(required = true, examples("i-0123456789abcdef0"))]
    pub attached_to: Option<String>,
}

/// The user's url on its shard; before placement, the url it will get when only one shard is
/// configured (so a deployment without shards answers as it always did).
fn user_url(shards: &[crate::model::Shard], user: &UserRecord) -> Option<String> {
    let shard = match user.shard.as_deref() {
        Some(name) => shards.iter().find(|s| s.name == name)?,
        None if shards.len() == 1 => &shards[0],
        None => return None,
    };
    Some(shard.url(&user.route))
}

pub(super) async fn document(
    state: &AppState,
    user: &UserRecord,
) -> Result<InstanceDocument, ApiError> {
    let conditions = if user.state == UserState::Queued {
        state.store.tier_conditions().await?
    } else {
        Vec::new()
    };
    Ok(document_with(state, user, &conditions))
}

/// The document of `user`, given the tiers' conditions (read once for a list of users).
pub(super) fn document_with(
    state: &AppState,
    user: &UserRecord,
    conditions: &[crate::model::TierCondition],
) -> InstanceDocument {
    let waiting_for = if user.state == UserState::Queued {
        let now = (state.clock)();
        conditions
            .iter()
            .find(|c| c.tier == user.tier && c.until > now)
            .map(|c| c.cause.clone())
            .or_else(|| {
                (user.error.as_deref() == Some(crate::model::NO_ROUTE_CAPACITY))
                    .then(|| crate::model::NO_ROUTE_CAPACITY.to_string())
            })
    } else {
        None
    };
    // The watch's record is about the user's current instance only.
    let watched = matches!(user.state, UserState::Ready | UserState::Migrating)
        && user.health.instance.is_some()
        && user.health.instance == user.instance_id;
    InstanceDocument {
        user_id: user.user_id.to_string(),
        tier: user.tier.clone(),
        state: user.state,
        instance_id: user.instance_id.as_ref().map(|i| i.0.clone()),
        route: user.route.clone(),
        url: user_url(&state.settings.shards, user),
        shard: user.shard.clone(),
        created_at: rfc3339(user.created_at),
        ready_at: user.ready_at.map(rfc3339),
        error: user.error.clone(),
        workspace: user.workspace.as_ref().map(|w| WorkspaceDocument {
            volume_id: w.volume_id.clone(),
            availability_zone: w.availability_zone.clone(),
            size_gib: w.size_gib,
            attached_to: w.attached_to.as_ref().map(|i| i.0.clone()),
        }),
        waiting_for,
        callback_url: user.callback_url.as_deref().map(without_query),
        health: watched
            .then_some(user.health.health)
            .flatten()
            .map(crate::model::Health::as_str),
        health_cause: watched
            .then(|| user.health.cause.clone())
            .flatten()
            .filter(|_| user.health.health != Some(crate::model::Health::Healthy)),
    }
}

/// The webhooks' body: the user's instance document, rendered as `GET` answers it.
pub fn webhook_render(state: AppState) -> crate::webhook::Render {
    Arc::new(move |user: UserRecord| {
        let state = state.clone();
        Box::pin(async move {
            let document = document(&state, &user).await.map_err(|e| e.message)?;
            serde_json::to_vec(&document).map_err(|e| e.to_string())
        })
    })
}

pub(super) async fn respond(state: &AppState, user: &UserRecord) -> Result<Response, ApiError> {
    // A migrating user is still served by its old instance until the new one is routed.
    let status = if matches!(user.state, UserState::Ready | UserState::Migrating) {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(document(state, user).await?)).into_response())
}

pub(super) fn parse_user(path: Result<Path<String>, PathRejection>) -> Result<UserId, ApiError> {
    let Path(raw) = path.map_err(|e| ApiError::bad_request("invalid_user_id", e.body_text()))?;
    UserId::parse(&raw).map_err(|e| ApiError::bad_request("invalid_user_id", e.to_string()))
}

/// The PUT body, checked field by field so that no error message ever echoes a secret value.
#[derive(Debug, Default)]
struct PutBody {
    tier: Option<String>,
    secrets: Option<UserSecrets>,
    /// Absent: unchanged; `null`: cleared; a URL: set (checked by `check_callback`).
    callback_url: Option<Option<String>>,
}

fn parse_body(body: Result<Bytes, BytesRejection>) -> Result<PutBody, ApiError> {
    let bytes = body.map_err(|e| ApiError::new(e.status(), "invalid_body", e.body_text()))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(PutBody::default());
    }
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        // Syntax errors carry a position only, never the offending text.
        ApiError::bad_request(
            "invalid_body",
            format!(
                "body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    // `null` is no body, as `"tier": null` is no tier.
    if value.is_null() {
        return Ok(PutBody::default());
    }
    let serde_json::Value::Object(fields) = value else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "body must be a JSON object",
        ));
    };
    let mut parsed = PutBody::default();
    for (key, value) in fields {
        match (key.as_str(), value) {
            ("tier", serde_json::Value::String(tier)) => parsed.tier = Some(tier),
            ("tier", serde_json::Value::Null) => {}
            ("tier", _) => {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    "tier must be a string",
                ));
            }
            ("secrets", serde_json::Value::Object(entries)) => {
                let mut map = BTreeMap::new();
                for (name, value) in entries {
                    let serde_json::Value::String(value) = value else {
                        return Err(ApiError::bad_request(
                            "invalid_secrets",
                            format!("secret {name:?} must be a string"),
                        ));
                    };
                    map.insert(name, value);
                }
                parsed.secrets = Some(
                    UserSecrets::parse(map)
                        .map_err(|m| ApiError::bad_request("invalid_secrets", m))?,
                );
            }
            ("secrets", serde_json::Value::Null) => {}
            ("callback_url", serde_json::Value::String(url)) => {
                parsed.callback_url = Some(Some(url))
            }
            ("callback_url", serde_json::Value::Null) => parsed.callback_url = Some(None),
            ("callback_url", _) => {
                return Err(ApiError::bad_request(
                    "invalid_callback_url",
                    "callback_url must be a string (or null to remove it)",
                ));
            }
            ("secrets", _) => {
                return Err(ApiError::bad_request(
                    "invalid_secrets",
                    "secrets must be an object of NAME: value strings",
                ));
            }
            (other, _) => {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    format!("unknown field {other:?}; expected tier, secrets or callback_url"),
                ));
            }
        }
    }
    Ok(parsed)
}

/// A callback URL as documents show it: its query (which may carry the receiver's token) and
/// fragment left out, marked `?…`.
fn without_query(url: &str) -> String {
    match url.find(['?', '#']) {
        Some(at) => format!("{}?…", &url[..at]),
        None => url.to_string(),
    }
}

/// A callback URL must be allowed (`webhook::target`), and webhooks configured to sign it.
fn check_callback(state: &AppState, body: &PutBody) -> Result<(), ApiError> {
    let Some(Some(url)) = &body.callback_url else {
        return Ok(());
    };
    if !state.settings.webhooks {
        return Err(ApiError::bad_request(
            "invalid_callback_url",
            "webhooks are off: the daemon has no signing key (SPOTPOOL_WEBHOOK_SECRET)",
        ));
    }
    crate::webhook::target::parse(url, state.settings.webhook_allow_private)
        .map(|_| ())
        .map_err(|why| ApiError::bad_request("invalid_callback_url", why))
}

/// An opaque route: 16 hex characters from the process's random SipHash keys. Unguessable
/// enough that routes do not enumerate users; it is not an access control.
fn new_route() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", hasher.finish())
}

/// Desired: the user has an instance. Idempotent.
///
/// A repeat returns the same instance and makes no AWS call; secrets in a repeat replace the
/// stored ones. A `failed` user is retried. With no spare the user is `queued`, first come first
/// served: there is never a "sold out".
#[utoipa::path(
    put,
    path = "/v1/users/{user_id}/instance",
    tag = "users",
    operation_id = "put_instance",
    params(("user_id" = crate::model::UserId, Path, description = "The platform user id.")),
    request_body(
        content = Option<PutInstanceRequest>,
        content_type = "application/json",
        description = "Optional: an empty body is the same as `{}`. At most 128 KiB.",
    ),
    responses(
        (status = 200, description = "The instance is ready.", body = InstanceDocument,
            links(
                ("GetInstance" = (
                    operation_id = "get_instance",
                    parameters(("user_id" = "$response.body#/user_id")),
                    description = "The user's instance document."
                )),
                ("DeleteInstance" = (
                    operation_id = "delete_instance",
                    parameters(("user_id" = "$response.body#/user_id")),
                    description = "Release the user's instance."
                ))
            )),
        (status = 202, description = "Accepted: the user is queued or provisioning.", body = InstanceDocument,
            links(
                ("GetInstance" = (
                    operation_id = "get_instance",
                    parameters(("user_id" = "$response.body#/user_id")),
                    description = "The user's instance document."
                )),
                ("DeleteInstance" = (
                    operation_id = "delete_instance",
                    parameters(("user_id" = "$response.body#/user_id")),
                    description = "Release the user's instance."
                ))
            )),
        (status = 400, description = "`invalid_user_id`, `invalid_body` (not a JSON object, a field of the wrong type, an unknown field), `invalid_secrets` (a bad name or value, too many or too large), `missing_secrets` (the secrets written lack one the container needs, e.g. `OPENCLAW_GATEWAY_TOKEN`; named in the message), `unknown_tier` or `invalid_callback_url` (not https, not a public address, credentials in it, or webhooks off). The message never repeats a secret value.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 409, description = "`user_deleting` (the user's instance is being deleted; PUT again once GET answers 404), `tier_mismatch` (the user has another tier), `secret_being_deleted` (right after a delete, AWS is still removing the old secret; retry in seconds), `falling_asleep` (the user is still going to sleep; PUT again in a few seconds to wake it) or `conflict` (a concurrent change; retry).", body = ErrorBody),
        (status = 413, description = "`invalid_body`: the body is larger than 128 KiB.", body = ErrorBody),
        (status = 429, response = Throttled),
        (status = 500, response = InternalError),
        (status = 503, description = "`cloud_unavailable`: Secrets Manager failed to store the secrets (an outage that outlasted the SDK's retries); retry later. Nothing was recorded.", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn put_instance(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let user_id = parse_user(path)?;
    let body = parse_body(body)?;
    check_callback(&state, &body)?;
    if let Some(tier) = &body.tier
        && !state.tier_configured(tier)
    {
        let tiers = state.settings.tiers.get();
        let known: Vec<&str> = tiers.iter().map(|t| t.name.as_str()).collect();
        return Err(ApiError::bad_request(
            "unknown_tier",
            format!(
                "unknown tier {tier:?}; configured tiers: {}",
                known.join(", ")
            ),
        ));
    }
    let now = (state.clock)();
    let existing = state.store.get_user(&user_id).await?;
    // Secrets the request writes (a new user's, or a repeat's replacement) must carry the ones
    // the container needs: refused here, not minutes later by the start on the instance.
    if existing.is_none() || body.secrets.is_some() {
        let required = &state.settings.required_secrets;
        let missing = match &body.secrets {
            Some(secrets) => secrets.missing(required),
            None => required.iter().map(String::as_str).collect(),
        };
        if !missing.is_empty() {
            return Err(ApiError::bad_request(
                "missing_secrets",
                format!(
                    "secrets must carry {}: the container needs it to start \
                     (CONTAINER_REQUIRED_SECRETS)",
                    missing.join(", ")
                ),
            ));
        }
    }
    if let Some(existing) = existing {
        return update_existing(&state, existing, body, now).await;
    }

    let secrets = body.secrets.unwrap_or_default();
    let secret_arn = state
        .vault
        .put(&user_id, &secrets)
        .await
        .map_err(|e| secret_write_error(&e))?;
    let tier = body
        .tier
        .or_else(|| state.settings.tiers.get().first().map(|t| t.name.clone()))
        .unwrap_or_default();
    let mut record =
        UserRecord::queued(user_id.clone(), tier, new_route(), secret_arn.clone(), now);
    record.callback_url = body.callback_url.flatten();
    match state.store.insert_user(&record).await {
        Ok(()) => {}
        // A concurrent PUT for the same user won the insert: answer with its row.
        Err(StoreError::Conflict(_)) => {
            if let Some(existing) = state.store.get_user(&user_id).await? {
                return respond(&state, &existing).await;
            }
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "the user changed concurrently; retry",
            ));
        }
        Err(error) => {
            // Nobody will own the secret just created: remove it (best effort; the orphan
            // sweep catches what this misses).
            if let Err(cleanup) = state.vault.discard(&secret_arn).await {
                tracing::warn!(user = %user_id, error = %cleanup, "could not remove an unowned secret");
            }
            return Err(error.into());
        }
    }
    tracing::info!(user = %user_id, secrets = ?secrets, "user requested an instance");
    state.wake.notify_one();
    respond(&state, &record).await
}

/// A PUT for a user we already know: idempotent. It never claims a second instance; it only
/// rotates the secret if the body carries secrets, and retries a failed user.
async fn update_existing(
    state: &AppState,
    existing: UserRecord,
    body: PutBody,
    now: i64,
) -> Result<Response, ApiError> {
    if existing.state == UserState::Deleting {
        return Err(deleting());
    }
    // Asleep is a state a PUT can wake from; falling asleep is not yet (the instance is still
    // being retired): say so rather than let the request be lost.
    if existing.state == UserState::Sleeping {
        return Err(super::sleep::falling_asleep());
    }
    if let Some(tier) = &body.tier
        && *tier != existing.tier
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "tier_mismatch",
            format!(
                "the user already has an instance of tier {:?}; DELETE it first to change tier",
                existing.tier
            ),
        ));
    }
    if let (Some(secrets), Some(arn)) = (&body.secrets, &existing.secret_arn) {
        // Only ever the existing secret, by ARN: a release racing this PUT must not get a new
        // secret re-created behind it.
        state
            .vault
            .rotate(arn, secrets)
            .await
            .map_err(|e| match e.kind {
                CloudErrorKind::NotFound | CloudErrorKind::Conflict => deleting(),
                _ => secret_write_error(&e),
            })?;
        tracing::info!(user = %existing.user_id, secrets = ?secrets, "user's secrets updated; the container sees them at its next start");
    }
    // Before any state change this PUT makes, so that change is POSTed to it.
    if let Some(url) = &body.callback_url {
        state
            .store
            .set_callback_url(&existing.user_id, url.as_deref(), now)
            .await?;
    }
    if existing.state == UserState::Failed
        && state.store.requeue_failed(&existing.user_id, now).await?
    {
        state.wake.notify_one();
    }
    // A PUT of an asleep user wakes it.
    if existing.state == UserState::Asleep {
        super::sleep::wake_user(state, &existing.user_id, now).await?;
    }
    match state.store.get_user(&existing.user_id).await? {
        Some(current) if current.state == UserState::Deleting => Err(deleting()),
        Some(current) => respond(state, &current).await,
        // A release finished between the two reads: like a PUT during the release.
        None => Err(deleting()),
    }
}

/// The user's instance document.
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/instance",
    tag = "users",
    operation_id = "get_instance",
    params(("user_id" = crate::model::UserId, Path, description = "The platform user id.")),
    responses(
        (status = 200, description = "The instance document, in any state.", body = InstanceDocument,
            links(
                ("PutInstance" = (
                    operation_id = "put_instance",
                    parameters(("user_id" = "$response.body#/user_id")),
                    description = "Ask for the user's instance again."
                )),
                ("DeleteInstance" = (
                    operation_id = "delete_instance",
                    parameters(("user_id" = "$response.body#/user_id")),
                    description = "Release the user's instance."
                ))
            )),
        (status = 400, description = "`invalid_user_id`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: the user has no instance (never asked, or deleted).", body = ErrorBody),
        (status = 500, response = InternalError),
    ),
    security(("bearer" = [])),
)]
pub async fn get_instance(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let user_id = parse_user(path)?;
    match state.store.get_user(&user_id).await? {
        Some(user) => Ok((StatusCode::OK, Json(document(&state, &user).await?)).into_response()),
        None => Err(no_instance(&user_id)),
    }
}

/// Desired: the user has no instance. The rule, target group, instance and secret are removed in
/// the background; GET answers 404 once everything is gone.
#[utoipa::path(
    delete,
    path = "/v1/users/{user_id}/instance",
    tag = "users",
    operation_id = "delete_instance",
    params(("user_id" = crate::model::UserId, Path, description = "The platform user id.")),
    responses(
        (status = 202, description = "Accepted: the user is `deleting`.", body = InstanceDocument,
            links(
                ("GetInstance" = (
                    operation_id = "get_instance",
                    parameters(("user_id" = "$response.body#/user_id")),
                    description = "The user's instance document."
                )),
                ("PutInstance" = (
                    operation_id = "put_instance",
                    parameters(("user_id" = "$response.body#/user_id")),
                    description = "Ask for the user's instance again."
                ))
            )),
        (status = 400, description = "`invalid_user_id`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: the user has no instance.", body = ErrorBody),
        (status = 500, response = InternalError),
    ),
    security(("bearer" = [])),
)]
pub async fn delete_instance(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let user_id = parse_user(path)?;
    let now = (state.clock)();
    match state.store.mark_deleting(&user_id, now).await? {
        Some(user) => {
            state.wake.notify_one();
            Ok((StatusCode::ACCEPTED, Json(document(&state, &user).await?)).into_response())
        }
        None => Err(no_instance(&user_id)),
    }
}

pub(super) fn deleting() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "user_deleting",
        "the user's instance is being deleted; PUT again once GET answers 404",
    )
}

/// A failed secret write (after the SDK's longer request-path budget). A conflict on a new
/// user's secret means the previous secret of that name is still being deleted (force deletion
/// completes asynchronously): a 409 to retry. A throttle that outlasted every attempt is a 429
/// with `Retry-After`: the client is told to slow down, not that the daemon is broken. Anything
/// else (5xx, timeouts) is a true outage: 503.
fn secret_write_error(error: &CloudError) -> ApiError {
    const CONTEXT: &str = "could not store the user's secrets";
    match error.kind {
        CloudErrorKind::Conflict => ApiError::new(
            StatusCode::CONFLICT,
            "secret_being_deleted",
            "the user's previous secret is still being deleted; retry in a few seconds",
        ),
        CloudErrorKind::Throttled => ApiError::throttled(CONTEXT, error),
        _ => ApiError::unavailable(CONTEXT, error),
    }
}

pub(super) fn no_instance(user_id: &UserId) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("user {user_id} has no instance"),
    )
}
