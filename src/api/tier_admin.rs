//! `PUT /v1/admin/pool/{tier}`: on-call's sizing of a tier (spare count or its pin on an auto
//! tier, maximum, pause), its image and launch template version (a rolling upgrade), checked
//! against the account's spot vCPU quotas and audited.

use super::admin::{actor, audit};
use super::openapi::{ErrorBody, Forbidden, InternalError, Unauthorized};
use super::{ApiError, AppState};
use crate::plan::apply_overrides;
use crate::store::TierOverride;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

/// A tier's sizing as on-call sets it. Omitted fields keep their current value (an empty object
/// changes nothing and answers the current settings). A spare count above the maximum is allowed:
/// the maximum always wins, so the pool then simply fills to the maximum.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierUpdate {
    /// Spares to keep available; on a tier with `spare = "auto"` this pins a fixed count, and
    /// `null` unpins it (the spares follow demand again; on a fixed tier, back to the
    /// configured count).
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 10000)]
    #[serde(default, deserialize_with = "whole_number_or_clear")]
    pub spare_count: Option<Option<u32>>,
    /// Most instances at once.
    #[schema(minimum = 1, maximum = 10000)]
    #[serde(default, deserialize_with = "whole_number")]
    pub max_instances: Option<u32>,
    /// `true` stops launching (claims go on from the spares there are); `false` resumes.
    pub paused: Option<bool>,
    /// The image the tier's containers run instead of the configured one; `null` goes back to
    /// the configured one. A change starts a rolling upgrade: the tier's spares are replaced
    /// and its users moved to up-to-date instances, a few at a time (`GET /v1/admin/drains`).
    #[schema(value_type = Option<String>, pattern = r"^[A-Za-z0-9._/:@-]+$", min_length = 1, max_length = 255)]
    #[serde(default, deserialize_with = "set_or_clear")]
    pub container_image: Option<Option<String>>,
    /// The version of the tier's launch template its launches use instead of the configured
    /// one (a number, `$Default` or `$Latest`); `null` goes back to the configured one. A
    /// change starts a rolling upgrade, as an image's does.
    #[schema(value_type = Option<String>, pattern = r"^([0-9]{1,10}|\$Default|\$Latest)$")]
    #[serde(default, deserialize_with = "set_or_clear")]
    pub launch_template_version: Option<Option<String>>,
}

impl TierUpdate {
    /// Writes the fields given into `current`, checking the versions as the configuration
    /// does.
    fn apply_to(self, current: &mut TierOverride) -> Result<(), ApiError> {
        if let Some(n) = self.spare_count {
            current.spare_count = n;
        }
        if let Some(n) = self.max_instances {
            current.max_instances = Some(n);
        }
        if let Some(p) = self.paused {
            current.paused = p;
        }
        if let Some(image) = self.container_image {
            if image.as_deref().is_some_and(|i| !image_ok(i)) {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    "container_image must be 1-255 letters, digits and - _ . / : @",
                ));
            }
            current.container_image = image;
        }
        if let Some(version) = self.launch_template_version {
            if version.as_deref().is_some_and(|v| !template_version_ok(v)) {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    "launch_template_version must be a number, $Default or $Latest",
                ));
            }
            current.launch_template_version = version;
        }
        Ok(())
    }
}

/// A field that may be left out (None: no change), `null` (Some(None): back to the
/// configuration) or a value.
fn set_or_clear<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    use serde::Deserialize;
    Ok(Some(Option::<String>::deserialize(d)?))
}

/// Whether `image` is an image reference the start script can carry, as the configuration
/// checks `CONTAINER_IMAGE`.
fn image_ok(image: &str) -> bool {
    (1..=255).contains(&image.len())
        && (image.chars()).all(|c| c.is_ascii_alphanumeric() || "-_./:@".contains(c))
}

/// Whether `version` names a launch template version: a number, `$Default` or `$Latest`.
fn template_version_ok(version: &str) -> bool {
    matches!(version, "$Default" | "$Latest")
        || ((1..=10).contains(&version.len()) && version.chars().all(|c| c.is_ascii_digit()))
}

/// A field that may be left out (None: no change), `null` (Some(None): back to the
/// configuration) or a whole number.
fn whole_number_or_clear<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<u32>>, D::Error> {
    Ok(Some(whole_number(d)?))
}

/// A JSON Schema integer: `3` and `3.0` alike (JSON does not tell them apart), never `3.5`.
pub(super) fn whole_number<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<u32>, D::Error> {
    use serde::Deserialize;
    match Option::<f64>::deserialize(d)? {
        None => Ok(None),
        Some(x) if x.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&x) => {
            Ok(Some(x as u32))
        }
        Some(x) => Err(serde::de::Error::custom(format!(
            "{x} is not a whole number from 0 to {}",
            u32::MAX
        ))),
    }
}

/// A tier's effective sizing and versions.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TierSettings {
    pub tier: String,
    /// The spares it keeps: a fixed count (configured, or on-call's pin). On a tier with
    /// `spare = "auto"` and no pin, its `spare_min`: the current decision is `GET /v1/pool`'s
    /// `spare_target`.
    pub spare_count: u32,
    /// `spare = "auto"` and not pinned by on-call: the bounds the spares follow demand within.
    #[schema(required = true)]
    pub spare_auto: Option<SpareBoundsDocument>,
    pub max_instances: u32,
    pub paused: bool,
    /// The image its containers run (as configured, or on-call's).
    pub container_image: String,
    /// The version of its launch template its launches use.
    pub launch_template_version: String,
}

/// `spare = "auto"`'s bounds.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SpareBoundsDocument {
    pub min: u32,
    pub max: u32,
}

const MAX_TIER_SIZE: u32 = 10_000;

/// Sets a tier's spare count and maximum, and pauses or resumes its launching.
#[utoipa::path(
    put,
    path = "/v1/admin/pool/{tier}",
    tag = "admin",
    operation_id = "set_tier",
    params(("tier" = String, Path, description = "A configured tier.")),
    request_body = TierUpdate,
    responses(
        (status = 200, description = "The tier's effective settings.", body = TierSettings),
        (status = 400, description = "`invalid_body` or `invalid_actor`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "`unknown_tier`.", body = ErrorBody),
        (status = 409, description = "`quota_exceeded`: the tiers' maxima would need more spot vCPUs than the account's quota holds (the message has the numbers); `conflict`: another request changed the tier meanwhile (retry).", body = ErrorBody),
        (status = 500, response = InternalError),
    ),
    security(("bearer" = [])),
)]
pub async fn set_tier(
    State(state): State<AppState>,
    headers: HeaderMap,
    tier: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TierSettings>, ApiError> {
    let actor = actor(&headers)?;
    let Path(tier) = tier.map_err(|e| ApiError::bad_request("invalid_tier", e.body_text()))?;
    let bytes = body.map_err(|e| ApiError::new(e.status(), "invalid_body", e.body_text()))?;
    let update: TierUpdate = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
    if !state.tier_configured(&tier) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_tier",
            format!("tier {tier:?} is not configured"),
        ));
    }
    let overrides = state.store.tier_overrides().await?;
    let stored = overrides.iter().find(|o| o.tier == tier);
    let seen = stored.map(|o| o.updated_at);
    let mut current = stored.cloned().unwrap_or(TierOverride {
        tier: tier.clone(),
        spare_count: None,
        max_instances: None,
        paused: false,
        container_image: None,
        launch_template_version: None,
        updated_at: 0,
        updated_by: String::new(),
    });
    update.apply_to(&mut current)?;
    // Check the result, not just the fields: spare ≤ max must hold after the change.
    let mut tiers = state.settings.tiers.get().to_vec();
    apply_overrides(&mut tiers, std::slice::from_ref(&current));
    let Some(effective) = tiers.iter().find(|t| t.name == tier) else {
        return Err(ApiError::internal("tier vanished", &tier));
    };
    if effective.max_instances == 0 || effective.max_instances > MAX_TIER_SIZE {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!("max_instances must be 1 to {MAX_TIER_SIZE}"),
        ));
    }
    if effective.spare_count > MAX_TIER_SIZE {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!("spare_count must be 0 to {MAX_TIER_SIZE}"),
        ));
    }
    refuse_beyond_quota(&state, &overrides, &current).await?;
    current.updated_at = (state.clock)().max(seen.map_or(0, |t| t + 1));
    current.updated_by = actor.clone();
    if !state.store.put_tier_override(&current, seen).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("tier {tier:?} was changed by another request meanwhile: read it and retry"),
        ));
    }
    let settings = TierSettings {
        tier: tier.clone(),
        spare_count: effective.spare_count,
        spare_auto: (effective.spare_auto).map(|b| SpareBoundsDocument {
            min: b.min,
            max: b.max,
        }),
        max_instances: effective.max_instances,
        paused: current.paused,
        container_image: effective.runtime.container.image.clone(),
        launch_template_version: effective.runtime.launch.version.clone(),
    };
    audit(
        &state,
        &actor,
        "pool.set",
        &tier,
        format!(
            "spare={} max_instances={} paused={} container_image={} \
             launch_template_version={}",
            settings
                .spare_auto
                .as_ref()
                .map_or(settings.spare_count.to_string(), |b| {
                    format!("auto ({}-{})", b.min, b.max)
                }),
            settings.max_instances,
            settings.paused,
            settings.container_image,
            settings.launch_template_version
        ),
        "ok",
    )
    .await?;
    state.wake.notify_one();
    Ok(Json(settings))
}

/// Refuses (409 `quota_exceeded`) a new maximum that the account's spot vCPU quotas cannot hold,
/// as the start-up does; a change that leaves the maximum as it is (a pause, a spare count) asks
/// AWS nothing. Only the
/// replica running the reconciler reads the quotas; a standby, or a quota that cannot be read,
/// lets the change through (the hourly check and its alert still see it).
async fn refuse_beyond_quota(
    state: &AppState,
    overrides: &[TierOverride],
    proposed: &TierOverride,
) -> Result<(), ApiError> {
    let Some(reconciler) = state.reconciler.get() else {
        return Ok(());
    };
    let mut all: Vec<TierOverride> = overrides
        .iter()
        .filter(|o| o.tier != proposed.tier)
        .cloned()
        .collect();
    all.push(proposed.clone());
    let max_of = |overrides: &[TierOverride]| {
        let mut tiers = state.settings.tiers.get().to_vec();
        apply_overrides(&mut tiers, overrides);
        let max = tiers
            .iter()
            .find(|t| t.name == proposed.tier)
            .map_or(0, |t| t.max_instances);
        (tiers, max)
    };
    let (_, before) = max_of(overrides);
    let (tiers, after) = max_of(&all);
    if after == before {
        return Ok(());
    }
    match reconciler.quota_shortfalls(&tiers).await {
        Ok(shortfalls) if !shortfalls.is_empty() => Err(ApiError::new(
            StatusCode::CONFLICT,
            "quota_exceeded",
            shortfalls.join("; "),
        )),
        Ok(_) => Ok(()),
        Err(error) => {
            tracing::warn!(%error, "could not read the quotas to check a resize; allowed");
            Ok(())
        }
    }
}
