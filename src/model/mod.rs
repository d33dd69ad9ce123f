//! Domain types shared by every room of the crate: ids, statuses, the typed progress of a
//! user's claim, move and teardown, interruption notices and journal events.
//!
//! Owns: the checked constructors (`UserId::parse`, ...) and every string form persisted in the
//! store or shown in the API (`as_str`/`parse` pairs, so a typo is a compile error and a row
//! written by an older daemon either parses or is reported corrupt). Must not: know HTTP, SQL
//! or the AWS SDK, or do any IO.

pub mod cost;
mod drain;
mod event;
mod health;
mod ids;
mod notice;
mod progress;
pub mod quota;
mod shard;
mod status;
mod tier;
mod workspace;

pub use drain::{
    DEFAULT_MAX_CONCURRENT_MOVES, DEFAULT_MAX_FAILURES, Drain, DrainCandidate, DrainSelector,
    DrainState, TierVersions,
};
pub use event::{Event, NoticeAction};
pub use health::{Health, HealthPolicy, HealthWatch, Reading, Verdict};
pub use ids::{InstanceId, Millis, RESERVED_USER_IDS, UserId, UserIdError};
pub use notice::{InterruptionNotice, NoticeKind};
pub use progress::{
    ClaimProgress, ClaimStep, MoveProgress, MoveReason, MoveStep, MoveTarget, Prewired, Routing,
    SentCommand, TeardownKind,
};
pub use shard::{
    ALB_TARGET_GROUPS_MAX, DEFAULT_SHARD_CAPACITY, NO_ROUTE_CAPACITY, RouteMode, RuleMatch, Shard,
    WARM_SOURCE_IP, load_balancer_of, warm_path, warm_target_group_name,
};
pub use status::{InstanceStatus, Lifecycle, TerminateReason, UserState};
pub use tier::{
    HealthCheck, ImagePin, LaunchTemplate, TierCondition, TierContainer, TierOverride, TierRuntime,
};
pub use workspace::{
    BLANK_TOKEN_PREFIX, KEPT_TOKEN_PREFIX, Relocation, VolumeCount, VolumeUse, Workspace,
    count_volumes,
};

/// Implements `ALL`, `as_str`, `parse` and `Display` for a field-less enum from one table of
/// `Variant => "string"` pairs: the string is what the store, the API and the metrics see.
macro_rules! string_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            pub const ALL: [$name; [$($name::$variant),+].len()] = [$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The value whose `as_str` is `raw`; None for anything else.
            pub fn parse(raw: &str) -> Option<$name> {
                $name::ALL.into_iter().find(|value| value.as_str() == raw)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use string_enum;
