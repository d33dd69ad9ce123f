//! On-call's changes to a tier's sizing (`PUT /v1/admin/pool/{tier}`), which `plan` applies
//! over the configured policy on every pass.

use super::Millis;

/// On-call's sizing of a tier; `None` keeps the configured value.
#[derive(Debug, Clone, PartialEq)]
pub struct TierOverride {
    pub tier: String,
    pub spare_count: Option<u32>,
    pub max_instances: Option<u32>,
    /// No launches while paused; claims go on from the spares there are.
    pub paused: bool,
    pub updated_at: Millis,
    pub updated_by: String,
}

/// Why a tier's launches are held back, shown by the API (`GET /v1/pool`, a queued user's
/// `waiting_for`).
#[derive(Debug, Clone, PartialEq)]
pub struct TierCondition {
    pub tier: String,
    /// `quota_exceeded`: RunInstances answered that an account quota is used up.
    pub cause: String,
    /// The cloud's message, with the quota and the numbers.
    pub detail: String,
    pub since: Millis,
    /// When the reconciler tries to launch again.
    pub until: Millis,
}

impl TierCondition {
    pub const QUOTA_EXCEEDED: &'static str = "quota_exceeded";
}

/// The digest an image reference was pinned to (`image_pins`): every probe and start of that
/// image runs `name@digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePin {
    /// The image reference as configured (`ghcr.io/openclaw/openclaw:latest`).
    pub image: String,
    /// `sha256:...`.
    pub digest: String,
    pub resolved_at: Millis,
}
