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
