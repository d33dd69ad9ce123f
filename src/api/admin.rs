//! `/v1/admin/*`: on-call's repair, recycling, re-pinning and the audit log (a tier's sizing is
//! `tier_admin.rs`). Admin token only.
//!
//! Every action is written to the store's audit log (who, what, when, result) whether it
//! succeeded or not. "Who" is the `X-Spotpool-Actor` header (the CLI sends `$USER`), or `admin`.

use super::openapi::{ErrorBody, Forbidden, InternalError, Unauthorized};
use super::{ApiError, AppState};
use crate::model::InstanceId;
use crate::reconcile::{ReconcileError, RepairReport};
use crate::store::AuditEntry;
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;

/// The header naming the person or system behind an admin call, for the audit log.
pub const ACTOR_HEADER: &str = "x-spotpool-actor";

pub(super) fn actor(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(raw) = headers.get(ACTOR_HEADER) else {
        return Ok("admin".into());
    };
    raw.to_str()
        .ok()
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        })
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_actor",
                "X-Spotpool-Actor must be 1-64 letters, digits or - _ . @",
            )
        })
}

pub(super) async fn audit(
    state: &AppState,
    actor: &str,
    action: &str,
    target: &str,
    detail: String,
    outcome: &str,
) -> Result<(), ApiError> {
    let entry = AuditEntry {
        id: 0,
        at: (state.clock)(),
        actor: actor.to_string(),
        action: action.to_string(),
        target: target.to_string(),
        detail,
        outcome: outcome.to_string(),
    };
    tracing::info!(actor, action, target, detail = %entry.detail, outcome, "admin action");
    state.store.audit(&entry).await?;
    Ok(())
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RepairQuery {
    /// Only plan (the default); `false` takes the actions.
    pub dry_run: Option<bool>,
}

/// Runs a full reconcile pass plus an orphan sweep, or only plans them.
#[utoipa::path(
    post,
    path = "/v1/admin/repair",
    tag = "admin",
    operation_id = "repair",
    params(RepairQuery),
    responses(
        (status = 200, description = "What the pass and the sweep planned or did.", body = RepairReport),
        (status = 400, description = "`invalid_query` or `invalid_actor`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, description = "`standby`: this replica does not run the reconciler; `busy`: a reconcile pass has held the pass lock for over 2 s (retry after `Retry-After` seconds).", body = ErrorBody),
        (status = 500, response = InternalError),
        (status = 503, description = "`cloud_unavailable`: listing the pool's resources failed; retry later.", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn repair(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<RepairQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let actor = actor(&headers)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let dry_run = query.dry_run.unwrap_or(true);
    let reconciler = match state.reconciler.get() {
        Some(r) if state.health.reconciling.load(Ordering::Relaxed) => r,
        _ => {
            let leader = match super::leader_of(&state).await {
                Some(leader) => format!(
                    "; the leader is replica {} at {}",
                    leader.replica,
                    leader.url.as_deref().unwrap_or("an unknown address")
                ),
                None => "; no replica leads right now, retry shortly".into(),
            };
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "standby",
                format!("this replica does not run the reconciler{leader}"),
            ));
        }
    };
    let action = if dry_run { "repair.dry_run" } else { "repair" };
    match reconciler.repair(dry_run).await {
        Ok(report) => {
            let detail = format!(
                "{} pass actions, {} orphans: {}",
                report.pass_actions.len(),
                report.orphans.len(),
                report
                    .orphans
                    .iter()
                    .map(|o| format!("{} {} {}", o.kind.as_str(), o.id, o.result))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            let failed = report
                .orphans
                .iter()
                .any(|o| o.result.starts_with("failed"))
                || report.pass_error.is_some();
            audit(
                &state,
                &actor,
                action,
                "pool",
                detail,
                if failed { "partial" } else { "ok" },
            )
            .await?;
            Ok(Json(report).into_response())
        }
        Err(error @ ReconcileError::Busy(_)) => {
            audit(&state, &actor, action, "pool", error.to_string(), "busy").await?;
            let mut response =
                ApiError::new(StatusCode::CONFLICT, "busy", error.to_string()).into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            Ok(response)
        }
        Err(error) => {
            audit(&state, &actor, action, "pool", error.to_string(), "error").await?;
            Err(ApiError::unavailable(
                "repair could not list the pool",
                &error,
            ))
        }
    }
}

/// What a recycle will do.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RecycleAccepted {
    pub instance_id: String,
    /// The user who moves to a fresh instance, if the instance serves one (on a shared tier's
    /// instance, the one in its lowest slot).
    #[schema(required = true)]
    pub user_id: Option<String>,
    /// Every user on the instance, lowest slot first: all of a shared tier's instance's (a move
    /// empties it); a ready one moves, one still provisioning starts its claim over elsewhere.
    pub user_ids: Vec<String>,
}

/// Moves the instance's user (if any) to a fresh instance, keeping route and secret, and
/// terminates the instance. The reconciler does it; this answers at once.
#[utoipa::path(
    post,
    path = "/v1/admin/instances/{instance_id}/recycle",
    tag = "admin",
    operation_id = "recycle_instance",
    params(("instance_id" = String, Path, description = "A pool instance id.", pattern = "^i-[0-9a-f]{1,30}$")),
    responses(
        (status = 202, description = "Accepted; the reconciler acts on its next pass.", body = RecycleAccepted),
        (status = 400, description = "`invalid_instance_id` or `invalid_actor`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "`not_found`: no such pool instance, or it is already terminating.", body = ErrorBody),
        (status = 500, response = InternalError),
    ),
    security(("bearer" = [])),
)]
pub async fn recycle_instance(
    State(state): State<AppState>,
    headers: HeaderMap,
    instance: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let actor = actor(&headers)?;
    let Path(raw) =
        instance.map_err(|e| ApiError::bad_request("invalid_instance_id", e.body_text()))?;
    let valid = raw.len() <= 32
        && raw.starts_with("i-")
        && raw.len() > 2
        && raw[2..]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    if !valid {
        return Err(ApiError::bad_request(
            "invalid_instance_id",
            "an instance id is i- followed by hex digits",
        ));
    }
    let id = InstanceId(raw.clone());
    if !state.store.recycle_again(&id, (state.clock)()).await? {
        audit(
            &state,
            &actor,
            "instance.recycle",
            &raw,
            String::new(),
            "not_found",
        )
        .await?;
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{raw} is not a pool instance, or it is already terminating"),
        ));
    }
    let mut on: Vec<(u32, String)> = (state.store.list_users().await?.into_iter())
        .filter(|u| u.instance_id.as_ref() == Some(&id))
        .map(|u| (u.slot, u.user_id.to_string()))
        .collect();
    on.sort();
    let user_ids: Vec<String> = on.into_iter().map(|(_, u)| u).collect();
    let detail = match user_ids.as_slice() {
        [] => "replacing a spare".into(),
        [user] => format!("moving user {user} to a fresh instance"),
        users => format!("moving users {} to fresh instances", users.join(", ")),
    };
    audit(&state, &actor, "instance.recycle", &raw, detail, "accepted").await?;
    state.wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(RecycleAccepted {
            instance_id: raw,
            user_id: user_ids.first().cloned(),
            user_ids,
        }),
    )
        .into_response())
}

/// What a re-pin forgot.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RepinAccepted {
    /// Every image re-pinned: the asked tier's, or each configured tier's.
    pub images: Vec<RepinnedImage>,
}

/// One image a re-pin forgot the digest of.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RepinnedImage {
    /// The configured image (a tier's `container_image`, or `CONTAINER_IMAGE`).
    pub image: String,
    /// The digest it was pinned to; null if it had no pin.
    #[schema(required = true)]
    pub previous_digest: Option<String>,
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RepinQuery {
    /// Only this tier's image; absent, every tier's.
    pub tier: Option<String>,
}

/// Forgets a tier's image's pinned digest (every tier's without `tier`): the next pass
/// resolves its tag again, and spares of the tiers running it, probed after that, pull the
/// new bytes. Claimed instances keep what they run.
#[utoipa::path(
    post,
    path = "/v1/admin/image/repin",
    tag = "admin",
    operation_id = "repin_image",
    params(RepinQuery),
    responses(
        (status = 202, description = "Accepted; the reconciler resolves the images on its next pass.", body = RepinAccepted),
        (status = 400, description = "`invalid_query` or `invalid_actor`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "`unknown_tier`.", body = ErrorBody),
        (status = 500, response = InternalError),
    ),
    security(("bearer" = [])),
)]
pub async fn repin_image(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<RepinQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let actor = actor(&headers)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let (tiers, _) = state.effective_tiers().await?;
    let mut configured: Vec<String> = match &query.tier {
        Some(name) => match tiers.iter().find(|t| &t.name == name) {
            Some(tier) => vec![tier.runtime.container.image.clone()],
            None => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_tier",
                    format!("tier {name:?} is not configured"),
                ));
            }
        },
        None => tiers
            .iter()
            .map(|t| t.runtime.container.image.clone())
            .collect(),
    };
    configured.dedup();
    let mut images = Vec::with_capacity(configured.len());
    for image in configured {
        if images.iter().any(|i: &RepinnedImage| i.image == image) {
            continue;
        }
        let previous = state.store.image_pin(&image).await?.map(|p| p.digest);
        state.store.unpin_image(&image).await?;
        let detail = match &previous {
            Some(digest) => format!("forgot {digest}"),
            None => "had no pin".into(),
        };
        audit(&state, &actor, "image.repin", &image, detail, "accepted").await?;
        images.push(RepinnedImage {
            image,
            previous_digest: previous,
        });
    }
    state.wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(RepinAccepted { images })).into_response())
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Most entries to return, newest first (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// One audit log entry.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AuditDocument {
    pub id: i64,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub outcome: String,
}

/// The newest admin actions.
#[utoipa::path(
    get,
    path = "/v1/admin/audit",
    tag = "admin",
    operation_id = "audit_log",
    params(AuditQuery),
    responses(
        (status = 200, description = "Newest first.", body = Vec<AuditDocument>),
        (status = 400, description = "`invalid_query`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = InternalError),
    ),
    security(("bearer" = [])),
)]
pub async fn audit_log(
    State(state): State<AppState>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Vec<AuditDocument>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be 1 to 1000",
        ));
    }
    let entries = state.store.audit_log(i64::from(limit)).await?;
    Ok(Json(
        entries
            .into_iter()
            .map(|e| AuditDocument {
                id: e.id,
                at: super::rfc3339(e.at),
                actor: e.actor,
                action: e.action,
                target: e.target,
                detail: e.detail,
                outcome: e.outcome,
            })
            .collect(),
    ))
}
