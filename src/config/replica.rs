//! This replica's identity: the name it holds the lease under and the URL a standby sends
//! callers to while it leads (`SPOTPOOL_REPLICA_ID`, `SPOTPOOL_ADVERTISE_URL`).

use super::ConfigError;
use std::net::SocketAddr;

/// One replica of the daemon, as the others and on-call see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Unique among the replicas of a database: the lease's holder.
    pub id: String,
    /// Where this replica's API is reached.
    pub url: String,
}

impl Replica {
    /// `id` or `<hostname>-<pid>`; `url` or this replica's scheme and listen address (the
    /// hostname for an unspecified address such as 0.0.0.0).
    pub fn resolve(
        id: Option<&str>,
        url: Option<&str>,
        listen: SocketAddr,
        tls: bool,
    ) -> Result<Replica, ConfigError> {
        let host = hostname();
        let id = match id.map(str::trim).filter(|id| !id.is_empty()) {
            Some(id) => id.to_string(),
            None => format!("{host}-{}", std::process::id()),
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
        if id.len() > 64 || !id.chars().all(valid) {
            return Err(ConfigError::Invalid {
                env: "SPOTPOOL_REPLICA_ID",
                value: id,
                why: "needs 1-64 letters, digits, '.', '_', ':' or '-'".into(),
            });
        }
        let url = match url.map(str::trim).filter(|url| !url.is_empty()) {
            Some(url) => {
                let rest = url
                    .strip_prefix("https://")
                    .or_else(|| url.strip_prefix("http://"));
                if rest.is_none_or(|rest| rest.is_empty() || rest.contains(char::is_whitespace)) {
                    return Err(ConfigError::Invalid {
                        env: "SPOTPOOL_ADVERTISE_URL",
                        value: url.to_string(),
                        why: "expected an http:// or https:// URL such as https://spotpool-1.internal:7070".into(),
                    });
                }
                url.trim_end_matches('/').to_string()
            }
            None => {
                let scheme = if tls { "https" } else { "http" };
                if listen.ip().is_unspecified() {
                    format!("{scheme}://{host}:{}", listen.port())
                } else {
                    format!("{scheme}://{listen}")
                }
            }
        };
        Ok(Replica { id, url })
    }
}

/// The machine's hostname (`spotpool` if it cannot be read).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "spotpool".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_is_named_and_addressed_from_its_settings_or_its_host() {
        let listen: SocketAddr = "127.0.0.1:7070".parse().unwrap();
        let r = Replica::resolve(Some("a-1"), None, listen, false).unwrap();
        assert_eq!(r.url, "http://127.0.0.1:7070");
        let any: SocketAddr = "0.0.0.0:7443".parse().unwrap();
        let r = Replica::resolve(None, None, any, true).unwrap();
        assert!(r.id.ends_with(&format!("-{}", std::process::id())));
        assert_eq!(r.url, format!("https://{}:7443", hostname()));
        let r = Replica::resolve(Some("b"), Some("https://b.internal:7070/"), any, true).unwrap();
        assert_eq!(r.url, "https://b.internal:7070");
        let error = Replica::resolve(Some("a b"), None, listen, false).unwrap_err();
        assert!(error.to_string().contains("SPOTPOOL_REPLICA_ID"), "{error}");
        let error = Replica::resolve(None, Some("b.internal:7070"), listen, false).unwrap_err();
        assert!(
            error.to_string().contains("SPOTPOOL_ADVERTISE_URL"),
            "{error}"
        );
    }
}
