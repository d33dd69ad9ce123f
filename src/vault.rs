//! The secret vault: the only path a user's secret values take, from the API request body
//! straight to Secrets Manager.
//!
//! Owns: the secret's name, its tags, and the rules for secret names and sizes. Must not: log,
//! store, journal or echo a value; its errors name the rule broken, never the value.
//!
//! This is the one place the API touches the cloud (ARCHITECTURE.md, invariant 3): the values
//! must not pass through the store, so the API writes them itself and records only the ARN.

use crate::cloud::{Cloud, CloudResult, Tags, tags};
use crate::model::UserId;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Secrets Manager's limit is 65,536 bytes per value; keep a margin for the JSON framing.
pub const MAX_SECRET_BYTES: usize = 60_000;
pub const MAX_SECRET_ENTRIES: usize = 100;

/// A user's secrets: environment variable names to values. `Debug` never shows the values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct UserSecrets(BTreeMap<String, String>);

impl std::fmt::Debug for UserSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl UserSecrets {
    /// The names of `required` that these secrets lack or hold empty.
    pub fn missing<'a>(&self, required: &'a [String]) -> Vec<&'a str> {
        required
            .iter()
            .filter(|name| self.0.get(*name).is_none_or(|value| value.is_empty()))
            .map(String::as_str)
            .collect()
    }

    /// Checks names (environment-variable style) and sizes. The error never includes a value.
    pub fn parse(entries: BTreeMap<String, String>) -> Result<UserSecrets, String> {
        if entries.len() > MAX_SECRET_ENTRIES {
            return Err(format!(
                "secrets has {} entries; the limit is {MAX_SECRET_ENTRIES}",
                entries.len()
            ));
        }
        for (name, value) in &entries {
            if value.contains(['\n', '\r', '\0']) {
                return Err(format!(
                    "secret {name:?} contains a line break or NUL; values are passed as \
                     environment variables, which cannot carry them (encode the value, e.g. base64)"
                ));
            }
        }
        for name in entries.keys() {
            let mut chars = name.chars();
            let first_ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !first_ok || !rest_ok || name.len() > 128 {
                return Err(format!(
                    "secret name {name:?} is not a valid environment variable name \
                     (letters, digits and underscores, not starting with a digit, at most 128)"
                ));
            }
        }
        let secrets = UserSecrets(entries);
        let size = secrets.to_json().len();
        if size > MAX_SECRET_BYTES {
            return Err(format!(
                "secrets take {size} bytes as JSON; the limit is {MAX_SECRET_BYTES}"
            ));
        }
        Ok(secrets)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    fn to_json(&self) -> String {
        // Serialising a map of strings cannot fail.
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".into())
    }
}

pub struct SecretVault {
    cloud: Arc<dyn Cloud>,
    prefix: String,
    pool: String,
}

impl SecretVault {
    pub fn new(cloud: Arc<dyn Cloud>, prefix: &str, pool: &str) -> SecretVault {
        SecretVault {
            cloud,
            prefix: prefix.to_string(),
            pool: pool.to_string(),
        }
    }

    /// `openclaw/<user>` with the default prefix.
    pub fn secret_name(&self, user: &UserId) -> String {
        format!("{}{}", self.prefix, user)
    }

    /// Replaces the values of the user's existing secret, by ARN. `NotFound` if it is gone.
    pub async fn rotate(&self, secret_arn: &str, secrets: &UserSecrets) -> CloudResult<()> {
        self.cloud
            .update_secret(secret_arn, &secrets.to_json())
            .await
    }

    /// Deletes the user's secret (after a failed request created it for nothing).
    pub async fn discard(&self, secret_arn: &str) -> CloudResult<()> {
        self.cloud.delete_secret(secret_arn).await
    }

    /// Creates or updates the user's secret with `secrets`; returns its ARN.
    pub async fn put(&self, user: &UserId, secrets: &UserSecrets) -> CloudResult<String> {
        let mut secret_tags = Tags::new();
        secret_tags.insert(tags::POOL.into(), self.pool.clone());
        secret_tags.insert(tags::USER_ID.into(), user.to_string());
        self.cloud
            .put_secret(&self.secret_name(user), &secrets.to_json(), &secret_tags)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn secret_names_must_be_environment_variable_names() {
        assert!(UserSecrets::parse(map(&[("OPENAI_API_KEY", "x"), ("_X1", "y")])).is_ok());
        for bad in ["1ABC", "A-B", "", "A B"] {
            assert!(UserSecrets::parse(map(&[(bad, "v")])).is_err(), "{bad:?}");
        }
        for bad in ["line\nbreak", "cr\r", "nul\0"] {
            let error = UserSecrets::parse(map(&[("KEY", bad)])).unwrap_err();
            assert!(error.contains("line break"), "{error}");
            assert!(!error.contains(bad), "{error}");
        }
    }

    #[test]
    fn errors_and_debug_never_show_values() {
        let big = "sk-secret-value".repeat(5_000);
        let error = UserSecrets::parse(map(&[("KEY", &big)])).unwrap_err();
        assert!(!error.contains("sk-secret-value"), "{error}");
        let secrets = UserSecrets::parse(map(&[("KEY", "sk-secret-value")])).unwrap();
        assert_eq!(format!("{secrets:?}"), r#"{"KEY"}"#);
    }
}
