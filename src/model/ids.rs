//! Identities and time: `UserId` (checked), `InstanceId`, `Millis`.

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
}
