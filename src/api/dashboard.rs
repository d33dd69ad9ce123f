//! The on-call dashboard (`GET /dashboard`, docs/DEPLOY.md "Dashboard"): a page and its two
//! assets, embedded in the binary (no CDN, no build step), served without a token under a
//! strict Content-Security-Policy; the page asks for the admin token, keeps it in session
//! storage, and reads the API with it (`/v1/pool`, [`list_users`], `/v1/events` through
//! `fetch`). And `GET /v1/admin/users`, its user table.

use super::openapi::{ErrorBody, InternalError, Unauthorized};
use super::users::{InstanceDocument, document_with};
use super::{ApiError, AppState};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("../../assets/dashboard/index.html");
const SCRIPT: &str = include_str!("../../assets/dashboard/dashboard.js");
const STYLE: &str = include_str!("../../assets/dashboard/dashboard.css");

/// Only the page's own script, style and API; no inline code, no frames, no form posts.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Every user, as `GET /v1/users/{user_id}/instance` answers for each.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct UserListDocument {
    /// Oldest request first.
    pub users: Vec<InstanceDocument>,
}

/// Every user's instance document (the dashboard's user table).
#[utoipa::path(
    get,
    path = "/v1/admin/users",
    tag = "admin",
    operation_id = "list_users",
    responses(
        (status = 200, description = "Every user, oldest request first.", body = UserListDocument),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: the service token.", body = ErrorBody),
        (status = 500, response = InternalError),
    ),
    security(("bearer" = [])),
)]
pub async fn list_users(State(state): State<AppState>) -> Result<Json<UserListDocument>, ApiError> {
    // The snapshot the passes share: decoded again only after a write of `users`.
    let users = state.store.users_snapshot().await?;
    let conditions = state.store.tier_conditions().await?;
    Ok(Json(UserListDocument {
        users: users
            .iter()
            .map(|user| document_with(&state, user, &conditions))
            .collect(),
    }))
}

/// The on-call dashboard: a page that asks for the admin token (kept in the tab's session
/// storage) and shows the pool live from the event stream.
#[utoipa::path(
    get,
    path = "/dashboard",
    tag = "operations",
    responses((status = 200, description = "The page.", body = String, content_type = "text/html")),
)]
pub async fn page() -> Response {
    asset(PAGE, "text/html; charset=utf-8")
}

/// The dashboard's assets, by name.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub enum AssetName {
    #[serde(rename = "dashboard.js")]
    Script,
    #[serde(rename = "dashboard.css")]
    Style,
}

/// The dashboard's script and style sheet.
#[utoipa::path(
    get,
    path = "/dashboard/{asset}",
    tag = "operations",
    params(("asset" = inline(AssetName), Path, description = "The asset.")),
    responses(
        (status = 200, description = "The script (`text/javascript`) or the style sheet (`text/css`).",
            content(
                (String = "text/javascript"),
                (String = "text/css"),
            )),
        (status = 404, description = "`not_found`: no such asset.", body = ErrorBody),
    ),
)]
pub async fn assets(Path(name): Path<String>) -> Result<Response, ApiError> {
    match name.as_str() {
        "dashboard.js" => Ok(asset(SCRIPT, "text/javascript; charset=utf-8")),
        "dashboard.css" => Ok(asset(STYLE, "text/css; charset=utf-8")),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such dashboard asset",
        )),
    }
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // A new binary's page is picked up at once.
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
