//! Domain newtypes and enums shared by every room of the crate.
//!
//! Owns: the checked constructors (`UserId::parse`, ...) and the state enums with their
//! string forms. Must not: know about HTTP, SQL or the AWS SDK.

use std::fmt;

/// Milliseconds since the Unix epoch. All timestamps in the store and in `plan` use this, so
/// `plan` can take `now` as a plain number and tests can pick any time they like.
pub type Millis = i64;

/// Reserved names that can never be user ids (they collide with environment and system names).
pub const RESERVED_USER_IDS: &[&str] = &[
    "production",
    "development",
    "staging",
    "test",
    "dev",
    "prod",
    "admin",
    "api",
    "system",
];

/// A platform user id: lowercase letters, digits and hyphens, 1-63 characters, starting and
/// ending with a letter or digit, and not a reserved name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct UserId(String);

/// Why a string is not a valid [`UserId`]; the message names the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    #[error("user id is empty; it needs 1-63 characters")]
    Empty,
    #[error("user id is {0} characters long; the limit is 63")]
    TooLong(usize),
    #[error("user id contains {0:?}; only lowercase letters, digits and hyphens are allowed")]
    BadCharacter(char),
    #[error("user id must start and end with a lowercase letter or digit, not a hyphen")]
    EdgeHyphen,
    #[error("user id {0:?} is a reserved name")]
    Reserved(String),
}

impl UserId {
    pub fn parse(raw: &str) -> Result<UserId, UserIdError> {
        if raw.is_empty() {
            return Err(UserIdError::Empty);
        }
        let length = raw.chars().count();
        if length > 63 {
            return Err(UserIdError::TooLong(length));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(UserIdError::BadCharacter(bad));
        }
        if raw.starts_with('-') || raw.ends_with('-') {
            return Err(UserIdError::EdgeHyphen);
        }
        if RESERVED_USER_IDS.contains(&raw) {
            return Err(UserIdError::Reserved(raw.to_string()));
        }
        Ok(UserId(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An EC2 instance id (`i-...`). Not validated beyond being non-empty: AWS owns the format.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct InstanceId(pub String);

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a pool instance is in its life, as the store records it and the `Status` tag mirrors it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceStatus {
    /// Launched; waiting for the readiness probe over SSM.
    Initializing,
    /// Probed and ready to be claimed.
    Available,
    /// Claimed by a user (the `UserId` tag says which).
    Assigned,
    /// Being terminated; forgotten once AWS no longer lists it.
    Terminating,
}

impl InstanceStatus {
    pub const ALL: [InstanceStatus; 4] = [
        InstanceStatus::Initializing,
        InstanceStatus::Available,
        InstanceStatus::Assigned,
        InstanceStatus::Terminating,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Initializing => "initializing",
            InstanceStatus::Available => "available",
            InstanceStatus::Assigned => "assigned",
            InstanceStatus::Terminating => "terminating",
        }
    }

    pub fn parse(raw: &str) -> Option<InstanceStatus> {
        InstanceStatus::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of a user's instance, as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UserState {
    /// Waiting for a spare; served first come, first served.
    Queued,
    /// A spare is claimed and the claim steps are running.
    Provisioning,
    /// Container running and routed.
    Ready,
    /// Gave up after the attempt limit; `error` says why. A new PUT retries.
    Failed,
    /// Release in progress; the row disappears when everything is gone.
    Deleting,
    /// Ready, and being moved to another instance (its instance is being interrupted or was
    /// recycled): the old instance serves until the new one is routed. Route and secret stay.
    Migrating,
}

impl UserState {
    pub const ALL: [UserState; 6] = [
        UserState::Queued,
        UserState::Provisioning,
        UserState::Ready,
        UserState::Failed,
        UserState::Deleting,
        UserState::Migrating,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UserState::Queued => "queued",
            UserState::Provisioning => "provisioning",
            UserState::Ready => "ready",
            UserState::Failed => "failed",
            UserState::Deleting => "deleting",
            UserState::Migrating => "migrating",
        }
    }

    pub fn parse(raw: &str) -> Option<UserState> {
        UserState::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Whether the user wants an instance (as opposed to being released or given up on).
    pub fn wants_instance(self) -> bool {
        matches!(
            self,
            UserState::Queued | UserState::Provisioning | UserState::Ready | UserState::Migrating
        )
    }
}

impl fmt::Display for UserState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How far a claim has got. Each step is persisted before the next starts, so a crash resumes
/// at the recorded step; every step is idempotent, so redoing the last one is harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClaimStep {
    /// The store assigned an instance; tags not yet written.
    Assigned,
    /// Instance tagged `assigned` and the secret tagged with the instance ARN.
    Tagged,
    /// The start-container command was sent; waiting for it to finish.
    ContainerStarting,
    /// The container runs; from here on the instance is dirty and is never returned to the pool.
    ContainerStarted,
    /// The target group exists with the instance registered.
    TargetGroupReady,
    /// The listener rule exists; the user is ready once the load balancer reports the instance
    /// healthy.
    Routed,
}

/// Where a move stands. Like a claim, each step is recorded before the next starts and every
/// step is idempotent. The user's rule and target group stay in place throughout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MoveStep {
    /// The store assigned the new instance; tags not yet written.
    Assigned,
    /// The new instance is tagged for the user and the secret is bound to it.
    Tagged,
    /// The start-container command was sent to the new instance.
    ContainerStarting,
    /// The container runs on the new instance.
    ContainerStarted,
    /// The new instance is registered in the user's target group.
    Registered,
    /// The old instance is deregistered and being terminated; the row switches next.
    Retired,
}

impl MoveStep {
    pub const ALL: [MoveStep; 6] = [
        MoveStep::Assigned,
        MoveStep::Tagged,
        MoveStep::ContainerStarting,
        MoveStep::ContainerStarted,
        MoveStep::Registered,
        MoveStep::Retired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MoveStep::Assigned => "assigned",
            MoveStep::Tagged => "tagged",
            MoveStep::ContainerStarting => "container_starting",
            MoveStep::ContainerStarted => "container_started",
            MoveStep::Registered => "registered",
            MoveStep::Retired => "retired",
        }
    }

    pub fn parse(raw: &str) -> Option<MoveStep> {
        MoveStep::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

impl ClaimStep {
    pub const ALL: [ClaimStep; 6] = [
        ClaimStep::Assigned,
        ClaimStep::Tagged,
        ClaimStep::ContainerStarting,
        ClaimStep::ContainerStarted,
        ClaimStep::TargetGroupReady,
        ClaimStep::Routed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClaimStep::Assigned => "assigned",
            ClaimStep::Tagged => "tagged",
            ClaimStep::ContainerStarting => "container_starting",
            ClaimStep::ContainerStarted => "container_started",
            ClaimStep::TargetGroupReady => "target_group_ready",
            ClaimStep::Routed => "routed",
        }
    }

    pub fn parse(raw: &str) -> Option<ClaimStep> {
        ClaimStep::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_accepts_the_documented_alphabet() {
        for ok in ["a", "alice", "user-42", "0", "a-b-c", &"x".repeat(63)] {
            assert!(UserId::parse(ok).is_ok(), "{ok} should be valid");
        }
    }

    #[test]
    fn user_id_names_the_rule_it_broke() {
        let cases: &[(&str, UserIdError)] = &[
            ("", UserIdError::Empty),
            (&"x".repeat(64), UserIdError::TooLong(64)),
            ("Alice", UserIdError::BadCharacter('A')),
            ("a_b", UserIdError::BadCharacter('_')),
            ("a.b", UserIdError::BadCharacter('.')),
            ("-abc", UserIdError::EdgeHyphen),
            ("abc-", UserIdError::EdgeHyphen),
            ("admin", UserIdError::Reserved("admin".into())),
            ("prod", UserIdError::Reserved("prod".into())),
        ];
        for (raw, want) in cases {
            assert_eq!(UserId::parse(raw).unwrap_err(), *want, "input {raw:?}");
        }
    }

    #[test]
    fn state_strings_round_trip() {
        for s in UserState::ALL {
            assert_eq!(UserState::parse(s.as_str()), Some(s));
        }
        for s in InstanceStatus::ALL {
            assert_eq!(InstanceStatus::parse(s.as_str()), Some(s));
        }
        for s in ClaimStep::ALL {
            assert_eq!(ClaimStep::parse(s.as_str()), Some(s));
        }
        assert_eq!(UserState::parse("gone"), None);
    }
}
