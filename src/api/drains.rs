//! `/v1/admin/drain[s]`: on-call empties a tier, an instance type, a zone or a list of
//! instances (ARCHITECTURE.md, "Drains"). Admin token only; every call that changes something
//! is audited. The reconciler does the work (`reconcile::drains`); these handlers only record
//! and report.

use super::admin::{actor, audit};
use super::openapi::{ErrorBody, Forbidden, InternalError, Unauthorized};
use super::{ApiError, AppState, rfc3339};
use crate::model::{
    DEFAULT_MAX_CONCURRENT_MOVES, DEFAULT_MAX_FAILURES, Drain, DrainSelector, InstanceStatus,
};
use crate::store::{InstanceRecord, UserRecord};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// What each tier runs now (`reconcile::tier_versions`).
type Versions = std::collections::HashMap<String, crate::model::TierVersions>;

/// `POST /v1/admin/drain`'s body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// Which instances: every field given must hold. At least one of `tier`,
    /// `instance_types`, `zones`, `instance_ids`.
    #[schema(value_type = Object)]
    pub selector: serde_json::Value,
    /// Only report what would be drained (the default); `false` starts the drain.
    pub dry_run: Option<bool>,
    /// Users moving off at once, at most (1-100, default 2).
    #[schema(minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "super::tier_admin::whole_number")]
    pub max_concurrent_moves: Option<u32>,
    /// Failed moves before the drain pauses (1-1000, default 3).
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "super::tier_admin::whole_number")]
    pub max_failures: Option<u32>,
}

/// The served document's drain request as the handler checks it: no unknown key, a selector that
/// names something (`tier` one of the configured tiers; each list 1-100 values of 1-64
/// characters), so that a request the schema admits is never refused for its shape.
pub(super) fn describe_request(doc: &mut serde_json::Value, tiers: &[String]) {
    let list = serde_json::json!({
        "type": "array", "minItems": 1, "maxItems": 100,
        "items": {"type": "string", "minLength": 1, "maxLength": 64},
    });
    let selector = serde_json::json!({
        "type": "object",
        "description": "Which instances: every field given must hold; at least one is given.",
        "additionalProperties": false,
        "minProperties": 1,
        "properties": {
            "tier": {"type": "string", "enum": tiers},
            "instance_types": list,
            "zones": list,
            "instance_ids": list,
            "outdated": {
                "type": "boolean", "enum": [true],
                "description": "Instances launched from another launch template or version \
                                than their tier's current one, or last running another image.",
            },
        },
    });
    if let Some(request) = doc
        .pointer_mut("/components/schemas/DrainRequest")
        .and_then(serde_json::Value::as_object_mut)
    {
        request.insert("additionalProperties".into(), false.into());
        if let Some(properties) = request
            .get_mut("properties")
            .and_then(serde_json::Value::as_object_mut)
        {
            properties.insert("selector".into(), selector);
        }
    }
}

/// What a drain matches now.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DrainMatches {
    /// Spares it retires.
    pub spares: Vec<String>,
    /// Users it moves, with the instance each leaves.
    pub users: Vec<DrainUser>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DrainUser {
    pub user_id: String,
    pub instance_id: String,
    /// The user's state now (only `ready` users are moved; others when they are ready).
    pub state: String,
}

/// A drain and its progress.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DrainDocument {
    /// 0 for a dry run.
    pub id: i64,
    #[schema(value_type = Object)]
    pub selector: DrainSelector,
    pub dry_run: bool,
    /// `active`, `paused` (after `max_failures` failed moves), `done` or `cancelled`.
    pub state: String,
    pub max_concurrent_moves: u32,
    pub max_failures: u32,
    /// Users moved off, moves that failed (the user stayed), moves under way.
    pub moved: u32,
    pub failed: u32,
    pub in_flight: u32,
    /// What it still matches (for a dry run: everything it would drain).
    pub remaining: DrainMatches,
    pub created_by: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// Starts a drain, or (`dry_run`, the default) reports what it would drain.
#[utoipa::path(
    post,
    path = "/v1/admin/drain",
    tag = "admin",
    operation_id = "drain",
    request_body = DrainRequest,
    responses(
        (status = 200, description = "A dry run: what the drain would retire and move; nothing changed.", body = DrainDocument),
        (status = 202, description = "The drain started; `GET /v1/admin/drains` shows its progress.", body = DrainDocument),
        (status = 400, description = "`invalid_body`, `invalid_selector` or `invalid_actor`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = InternalError),
    ),
    security(("bearer" = [])),
)]
pub async fn start_drain(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let actor = actor(&headers)?;
    let bytes = body.map_err(|e| ApiError::new(e.status(), "invalid_body", e.body_text()))?;
    let request: DrainRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
    let selector = selector_of(&state, &request.selector)?;
    let bounded = |value: Option<u32>, default: u32, max: u32, name: &str| {
        let value = value.unwrap_or(default);
        if (1..=max).contains(&value) {
            Ok(value)
        } else {
            Err(ApiError::bad_request(
                "invalid_body",
                format!("{name} must be from 1 to {max}"),
            ))
        }
    };
    let now = (state.clock)();
    let bounds = (
        bounded(
            request.max_concurrent_moves,
            DEFAULT_MAX_CONCURRENT_MOVES,
            100,
            "max_concurrent_moves",
        )?,
        bounded(
            request.max_failures,
            DEFAULT_MAX_FAILURES,
            1000,
            "max_failures",
        )?,
    );
    let drain = Drain::new(selector, bounds, &actor, now);
    let ledger = state.store.list_instances().await?;
    let users = state.store.list_users().await?;
    let versions = state.tier_versions().await?;
    let rows = (ledger.as_slice(), users.as_slice());
    if request.dry_run.unwrap_or(true) {
        let document = document(&drain, true, rows, &versions);
        return Ok((StatusCode::OK, Json(document)).into_response());
    }
    let drain = state.store.insert_drain(&drain).await?;
    // Its spares leave the pool now, before a claim can take one (the reconciler would, at its
    // next pass; a claim in between would cost its user a move).
    for spare in document(&drain, true, rows, &versions).remaining.spares {
        state
            .store
            .request_recycle(&crate::model::InstanceId(spare), now)
            .await?;
    }
    let detail = serde_json::to_string(&drain.selector).unwrap_or_default();
    audit(
        &state,
        &actor,
        "drain.start",
        &drain.id.to_string(),
        detail,
        "accepted",
    )
    .await?;
    state.wake.notify_one();
    let document = document(&drain, false, rows, &versions);
    Ok((StatusCode::ACCEPTED, Json(document)).into_response())
}

/// Every drain, newest first, with what each still matches.
#[utoipa::path(
    get,
    path = "/v1/admin/drains",
    tag = "admin",
    operation_id = "list_drains",
    responses(
        (status = 200, description = "Newest first.", body = Vec<DrainDocument>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = InternalError),
    ),
    security(("bearer" = [])),
)]
pub async fn list_drains(
    State(state): State<AppState>,
) -> Result<Json<Vec<DrainDocument>>, ApiError> {
    let drains = state.store.list_drains().await?;
    let ledger = state.store.list_instances().await?;
    let users = state.store.list_users().await?;
    let versions = state.tier_versions().await?;
    Ok(Json(
        drains
            .iter()
            .map(|d| document(d, false, (&ledger, &users), &versions))
            .collect(),
    ))
}

/// Cancels a drain: no more moves are asked for, and moves it asked for that have not begun
/// are withdrawn. Spares it retired stay retired; moves under way finish.
#[utoipa::path(
    delete,
    path = "/v1/admin/drains/{id}",
    tag = "admin",
    operation_id = "cancel_drain",
    params(("id" = i64, Path, description = "The drain's id.")),
    responses(
        (status = 200, description = "Cancelled.", body = DrainDocument),
        (status = 400, description = "`invalid_drain_id` or `invalid_actor`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "`not_found`: no such drain, or it has ended.", body = ErrorBody),
        (status = 500, response = InternalError),
    ),
    security(("bearer" = [])),
)]
pub async fn cancel_drain(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Response, ApiError> {
    let actor = actor(&headers)?;
    let Path(id) = id.map_err(|e| ApiError::bad_request("invalid_drain_id", e.body_text()))?;
    let Some(drain) = state.store.cancel_drain(id, (state.clock)()).await? else {
        audit(
            &state,
            &actor,
            "drain.cancel",
            &id.to_string(),
            String::new(),
            "not_found",
        )
        .await?;
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no drain {id} is active or paused"),
        ));
    };
    state.store.withdraw_moves(&drain.requested).await?;
    let users = state.store.list_users().await?;
    audit(
        &state,
        &actor,
        "drain.cancel",
        &id.to_string(),
        String::new(),
        "ok",
    )
    .await?;
    state.wake.notify_one();
    let ledger = state.store.list_instances().await?;
    let versions = state.tier_versions().await?;
    Ok((
        StatusCode::OK,
        Json(document(&drain, false, (&ledger, &users), &versions)),
    )
        .into_response())
}

/// The selector of a request, checked: known keys, something named, a configured tier, no
/// empty list (what `describe_request` puts in the OpenAPI document).
fn selector_of(state: &AppState, raw: &serde_json::Value) -> Result<DrainSelector, ApiError> {
    let invalid = |why: String| ApiError::bad_request("invalid_selector", why);
    if raw.get("tier").is_some_and(serde_json::Value::is_null) {
        return Err(invalid(
            "`tier` must name a tier (leave it out for any)".into(),
        ));
    }
    if raw
        .get("outdated")
        .is_some_and(|v| v != &serde_json::Value::Bool(true))
    {
        return Err(invalid(
            "`outdated` is true, or left out (for any version)".into(),
        ));
    }
    let selector: DrainSelector =
        serde_json::from_value(raw.clone()).map_err(|e| invalid(e.to_string()))?;
    // A list given is not empty (an empty one would name nothing, or everything).
    for key in ["instance_types", "zones", "instance_ids"] {
        if raw
            .get(key)
            .and_then(serde_json::Value::as_array)
            .is_some_and(Vec::is_empty)
        {
            return Err(invalid(format!(
                "`{key}` is empty: leave it out, or name something"
            )));
        }
    }
    if selector.is_empty() {
        return Err(invalid(
            "name at least one of tier, instance_types, zones, instance_ids, outdated".into(),
        ));
    }
    if let Some(tier) = &selector.tier
        && !state.tier_configured(tier)
    {
        return Err(invalid(format!("tier {tier:?} is not configured")));
    }
    let lists = [
        &selector.instance_types,
        &selector.zones,
        &selector.instance_ids,
    ];
    if lists
        .iter()
        .any(|l| l.len() > 100 || l.iter().any(|v| v.is_empty() || v.chars().count() > 64))
    {
        return Err(invalid(
            "each list holds at most 100 values of 1-64 characters".into(),
        ));
    }
    Ok(selector)
}

fn document(
    drain: &Drain,
    dry_run: bool,
    (ledger, users): (&[InstanceRecord], &[UserRecord]),
    versions: &Versions,
) -> DrainDocument {
    let holds = dry_run || drain.state.holds();
    let matching = ledger.iter().filter(|r| {
        holds
            && r.status != InstanceStatus::Terminating
            && drain.selector.matches(
                &r.drain_candidate(versions.get(&r.tier)),
                if dry_run { i64::MAX } else { drain.created_at },
            )
    });
    let mut remaining = DrainMatches {
        spares: Vec::new(),
        users: Vec::new(),
    };
    for record in matching {
        // Users' instance (every user of a shared one), or one a user is moving to: not a spare.
        let id = Some(&record.instance_id);
        let on: Vec<DrainUser> = (users.iter())
            .filter(|u| u.instance_id.as_ref() == id || u.move_target() == id)
            .map(|user| DrainUser {
                user_id: user.user_id.to_string(),
                instance_id: record.instance_id.0.clone(),
                state: user.state.as_str().to_string(),
            })
            .collect();
        if on.is_empty() {
            remaining.spares.push(record.instance_id.0.clone());
        }
        remaining.users.extend(on);
    }
    DrainDocument {
        id: drain.id,
        selector: drain.selector.clone(),
        dry_run,
        state: drain.state.as_str().to_string(),
        max_concurrent_moves: drain.max_concurrent_moves,
        max_failures: drain.max_failures,
        moved: drain.moved,
        failed: drain.failed,
        in_flight: drain.requested.len() as u32,
        remaining,
        created_by: drain.created_by.clone(),
        created_at: rfc3339(drain.created_at),
        updated_at: rfc3339(drain.updated_at),
    }
}
