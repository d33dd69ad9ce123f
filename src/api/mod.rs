//! The HTTP API: `router(state) -> Router`, the auth scopes, and the JSON error format.
//!
//! Owns: HTTP and JSON types, status codes, authentication. Must not: call the cloud, except the
//! secret vault (secret values must not pass through the store) and, through the reconciler,
//! repair and a resize's quota check. Handlers write desired state to
//! the store and wake the reconciler; they never wait for cloud work to finish.

mod admin;
pub mod cost;
mod dashboard;
mod drains;
pub mod events;
pub mod openapi;
mod pool;
mod sleep;
mod tier_admin;
mod users;

pub use users::webhook_render;

use crate::clock::Clock;
use crate::config::SecretString;
use crate::plan::TierPolicy;
use crate::reconcile::Health;
use crate::store::Store;
use crate::vault::SecretVault;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use openapi::{
    ErrorBody, ErrorDetail, HealthDocument, HealthStatus, ReadinessChecks, ReadinessDocument,
    ReadyStatus,
};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub vault: Arc<SecretVault>,
    pub wake: Arc<Notify>,
    pub health: Arc<Health>,
    pub metrics: Option<PrometheusHandle>,
    pub settings: Arc<ApiSettings>,
    pub clock: Clock,
    /// The reconciler of this replica's term while it leads: `POST /v1/admin/repair` runs on
    /// it and refuses (`409 standby`) without it.
    pub reconciler: crate::leader::Current,
    /// The journal's new entries, for `GET /v1/events`.
    pub events: Arc<events::EventHub>,
}

pub struct ApiSettings {
    pub api_token: SecretString,
    pub admin_token: SecretString,
    /// Where users are routed: a user's url is its shard's.
    pub shards: Vec<crate::model::Shard>,
    /// The configured tiers (shared with the reconciler; a SIGHUP reloads them).
    pub tiers: crate::reconcile::LiveTiers,
    /// Secret names a PUT that writes secrets must carry (`CONTAINER_REQUIRED_SECRETS`).
    pub required_secrets: Vec<String>,
    /// `/readyz` fails when the last successful reconcile pass is older than this.
    pub ready_staleness: Duration,
    /// Webhooks are on (a signing key is configured): a PUT may carry a `callback_url`.
    pub webhooks: bool,
    /// Callback URLs may be plain http to private addresses (`SPOTPOOL_WEBHOOK_ALLOW_PRIVATE`).
    pub webhook_allow_private: bool,
    /// The deployment's rates the pool's cost counts.
    pub cost: crate::model::cost::CostSettings,
}

impl AppState {
    /// The tiers as the reconciler runs them (configured, with on-call's overrides), and the
    /// tiers on-call paused.
    pub async fn effective_tiers(&self) -> Result<(Vec<TierPolicy>, Vec<String>), ApiError> {
        let mut tiers = self.settings.tiers.get().to_vec();
        let overrides = self.store.tier_overrides().await?;
        let paused = crate::plan::apply_overrides(&mut tiers, &overrides);
        Ok((tiers, paused))
    }

    /// What each tier runs now, for the `outdated` drains.
    pub async fn tier_versions(
        &self,
    ) -> Result<std::collections::HashMap<String, crate::model::TierVersions>, ApiError> {
        let (tiers, _) = self.effective_tiers().await?;
        Ok(crate::reconcile::tier_versions(&self.store, &tiers).await?)
    }

    /// Whether a tier of that name is configured.
    pub fn tier_configured(&self, name: &str) -> bool {
        self.settings.tiers.get().iter().any(|t| t.name == name)
    }
}

/// The error every handler returns: a status, a stable code and a message for humans.
/// Server-side failures get a generic message; the details go to the log.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

/// How long a client should wait after AWS throttled the request's secret write through every
/// attempt of the SDK's budget.
pub const THROTTLED_RETRY_AFTER_SECONDS: u64 = 5;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A failure on our side. The cause is logged with context; the client sees no internals.
    pub fn internal(context: &str, cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "{context}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the daemon's log",
        )
    }

    /// AWS throttled a call the request needs through every retry: a `429` with `Retry-After`,
    /// the honest answer to "slow down" (nothing was recorded).
    pub fn throttled(context: &str, cause: &dyn std::fmt::Display) -> ApiError {
        tracing::warn!(error = %cause, "{context}");
        ApiError {
            retry_after: Some(THROTTLED_RETRY_AFTER_SECONDS),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                format!(
                    "{context}: AWS is throttling; retry after {THROTTLED_RETRY_AFTER_SECONDS} s"
                ),
            )
        }
    }

    /// The cloud refused or failed a call the request needs; retrying later may work.
    pub fn unavailable(context: &str, cause: &dyn std::fmt::Display) -> ApiError {
        tracing::warn!(error = %cause, "{context}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cloud_unavailable",
            format!("{context}; retry later"),
        )
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> ApiError {
        ApiError::internal("store error", &error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The routes and their OpenAPI document, one source: every route is registered with `routes!`,
/// which reads its path, methods and documentation from the handler's `#[utoipa::path]`.
/// Routes are grouped by the scope they need; a new scope is a new group with its own
/// `route_layer`.
fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let service = OpenApiRouter::new()
        .routes(routes!(
            users::put_instance,
            users::get_instance,
            users::delete_instance
        ))
        .routes(routes!(sleep::sleep_user))
        .routes(routes!(sleep::wake))
        .routes(routes!(pool::get_pool))
        .routes(routes!(events::stream_events))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_service_scope,
        ));
    let admin = OpenApiRouter::new()
        .routes(routes!(admin::repair))
        .routes(routes!(tier_admin::set_tier))
        .routes(routes!(admin::recycle_instance))
        .routes(routes!(admin::repin_image))
        .routes(routes!(admin::audit_log))
        .routes(routes!(drains::start_drain))
        .routes(routes!(drains::list_drains))
        .routes(routes!(drains::cancel_drain))
        .routes(routes!(dashboard::list_users))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_admin_scope,
        ));
    let public = OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(render_metrics))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(dashboard::page))
        .routes(routes!(dashboard::assets));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(service)
        .merge(admin)
        .merge(public)
}

pub fn router(state: AppState) -> Router {
    let (router, api) = routes(&state).split_for_parts();
    // A reload never changes the tiers' names, so the document stays true.
    let tiers: Vec<String> = (state.settings.tiers.get().iter())
        .map(|t| t.name.clone())
        .collect();
    let document = openapi::document(api, &tiers, &state.settings);
    // Serialising a serde_json::Value cannot fail.
    let json = serde_json::to_vec(&document).unwrap_or_default();
    router
        .layer(Extension(openapi::OpenApiJson(Arc::new(json.into()))))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(128 * 1024))
        .layer(middleware::from_fn(count_requests))
        .with_state(state)
}

/// The scope a bearer token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Service,
    Admin,
}

fn scope_of(settings: &ApiSettings, request: &Request) -> Result<Scope, ApiError> {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing Authorization header; send Authorization: Bearer <token>",
            )
        })?;
    // The scheme is case-insensitive (RFC 9110, section 11.1): `bearer <token>` is fine too.
    let token = header
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authorization header must be Bearer <token>",
            )
        })?;
    if constant_time_eq(token.as_bytes(), settings.admin_token.expose().as_bytes()) {
        Ok(Scope::Admin)
    } else if constant_time_eq(token.as_bytes(), settings.api_token.expose().as_bytes()) {
        Ok(Scope::Service)
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid bearer token",
        ))
    }
}

async fn require_service_scope(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    match scope_of(&state.settings, &request) {
        Ok(scope) => {
            // A route both tokens may use sees which one came (`GET /v1/events`).
            request.extensions_mut().insert(scope);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}

async fn require_admin_scope(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match scope_of(&state.settings, &request) {
        Ok(Scope::Admin) => next.run(request).await,
        Ok(Scope::Service) => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this route needs the admin token; the service token cannot use it",
        )
        .into_response(),
        Err(error) => error.into_response(),
    }
}

/// Compares without an early exit, so response time does not leak how much of a token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn count_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("spotpool_http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("spotpool_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The daemon is alive.", body = HealthDocument)),
)]
async fn healthz() -> Json<HealthDocument> {
    Json(HealthDocument {
        status: HealthStatus::Ok,
    })
}

/// Ready when the store answers and a reconcile pass (which reaches the cloud) succeeded recently.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready: the store answers and, on the leader, a reconcile pass succeeded recently.", body = ReadinessDocument),
        (status = 503, description = "Not ready; `checks` names the failing check.", body = ReadinessDocument),
    ),
)]
async fn readyz(State(state): State<AppState>) -> Response {
    let store_ok = state.store.ping().await.is_ok();
    let last = state.health.last_success.load(Ordering::Relaxed);
    let reconciling = state.health.reconciling.load(Ordering::Relaxed);
    let now = (state.clock)();
    let staleness = state.settings.ready_staleness.as_millis() as i64;
    let cloud_ok = !reconciling || (last > 0 && now - last <= staleness);
    let leader = match reconciling {
        true => None,
        false => leader_of(&state).await,
    };
    let body = ReadinessDocument {
        role: openapi::Role::of(&state.health),
        leader,
        status: if store_ok && cloud_ok {
            ReadyStatus::Ready
        } else {
            ReadyStatus::NotReady
        },
        checks: ReadinessChecks {
            store: if store_ok { "ok" } else { "unreachable" },
            cloud: if !reconciling {
                "standby: another replica leads"
            } else if cloud_ok {
                "ok"
            } else if last == 0 {
                "no successful reconcile pass yet"
            } else {
                "last reconcile pass too old"
            },
        },
    };
    let status = if store_ok && cloud_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// The replica that leads now, as the lease says (None before any led, when the lease has run
/// out, or when the store cannot say).
pub(crate) async fn leader_of(state: &AppState) -> Option<openapi::LeaderDocument> {
    let lease = state.store.leadership().await.ok()??;
    let live = lease.live();
    live.then_some(openapi::LeaderDocument {
        replica: lease.holder,
        url: lease.address,
        epoch: lease.epoch,
    })
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4.", body = String, content_type = "text/plain")),
)]
async fn render_metrics(State(state): State<AppState>) -> Response {
    let body = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// RFC 3339 for an epoch-millisecond timestamp.
pub(crate) fn rfc3339(millis: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
