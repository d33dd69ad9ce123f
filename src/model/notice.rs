//! EC2's interruption events about one instance, as the interruption queue delivers them (the
//! delivery path is `crate::interruption_feed`; what a notice means is `reconcile::notices`).

use super::{InstanceId, Lifecycle, Millis};

/// What happened to the instance, by EventBridge detail type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoticeKind {
    /// "EC2 Spot Instance Interruption Warning": EC2 takes the instance back in two minutes.
    SpotInterruptionWarning,
    /// "EC2 Instance Rebalance Recommendation": the instance is at elevated risk.
    RebalanceRecommendation,
    /// "EC2 Instance State-change Notification": the instance entered this state. Only states
    /// on the way out ([`Lifecycle::is_gone`]) are kept.
    StateChange(Lifecycle),
}

impl NoticeKind {
    /// The stored `kind` column and the `kind` metric label (bounded: three values).
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::SpotInterruptionWarning => "spot_interruption_warning",
            NoticeKind::RebalanceRecommendation => "rebalance_recommendation",
            NoticeKind::StateChange(_) => "state_change",
        }
    }

    /// The state entered, for a state change.
    pub fn state(self) -> Option<Lifecycle> {
        match self {
            NoticeKind::StateChange(state) => Some(state),
            _ => None,
        }
    }

    /// The inverse of (`as_str`, `state`), for reading rows back.
    pub fn from_parts(kind: &str, state: Option<&str>) -> Option<NoticeKind> {
        match (kind, state) {
            ("spot_interruption_warning", None) => Some(NoticeKind::SpotInterruptionWarning),
            ("rebalance_recommendation", None) => Some(NoticeKind::RebalanceRecommendation),
            ("state_change", Some(state)) => Lifecycle::parse(state).map(NoticeKind::StateChange),
            _ => None,
        }
    }
}

/// One EC2 event about one instance, as delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterruptionNotice {
    /// EventBridge's event id (`id`): the same event delivered twice has the same id.
    pub event_id: String,
    pub kind: NoticeKind,
    pub instance_id: InstanceId,
    /// When EC2 emitted the event (`time`), epoch milliseconds (EventBridge gives seconds).
    /// Delivery can be out of order: a later state change may arrive before an earlier warning.
    pub event_time: Millis,
}
