//! Container presets: what a kind of image needs to run behind the load balancer, as defaults
//! that explicit settings override.
//!
//! `openclaw` (the default) is the OpenClaw gateway, as measured against the real one
//! (`openclaw` 2026.9.6 on Node 24, `scripts/openclaw-check.sh`): it listens on 18789, only
//! beyond loopback when told `gateway --bind lan`, started as `node openclaw.mjs` in the image's directory, answers `/healthz` from the moment it listens
//! and `/readyz` once ready (seconds later), keeps its state under `OPENCLAW_STATE_DIR`, and
//! refuses a non-loopback bind without a token, which each user's secret must therefore carry
//! (`OPENCLAW_GATEWAY_TOKEN`). `generic` is any other image: port 8080, health on `/`, no
//! arguments, no required secret.
//!
//! Must not: hold anything user-specific (the start script gets the user's inputs).

use super::ConfigError;

/// The kind of image the users' containers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    OpenClaw,
    Generic,
}

/// The OpenClaw gateway's token: every user's secret carries it (unless configured otherwise).
pub const OPENCLAW_TOKEN: &str = "OPENCLAW_GATEWAY_TOKEN";
/// Where the gateway keeps its state: on the user's workspace (`/data`), so it survives moves.
pub const OPENCLAW_STATE_DIR: &str = "/data/.openclaw";

impl Preset {
    pub fn parse(raw: Option<&str>) -> Result<Preset, ConfigError> {
        match raw.map(str::trim) {
            None | Some("") | Some("openclaw") => Ok(Preset::OpenClaw),
            Some("generic") => Ok(Preset::Generic),
            Some(other) => Err(ConfigError::Invalid {
                env: "CONTAINER_PRESET",
                value: other.to_string(),
                why: "must be openclaw or generic".into(),
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Preset::OpenClaw => "openclaw",
            Preset::Generic => "generic",
        }
    }

    pub fn port(self) -> u16 {
        match self {
            Preset::OpenClaw => 18789,
            Preset::Generic => 8080,
        }
    }

    pub fn health_path(self) -> &'static str {
        match self {
            Preset::OpenClaw => "/healthz",
            Preset::Generic => "/",
        }
    }

    /// What the start script waits for after the health path answers, if anything.
    pub fn ready_path(self) -> Option<&'static str> {
        match self {
            Preset::OpenClaw => Some("/readyz"),
            Preset::Generic => None,
        }
    }

    /// The container's arguments (after the image) for a container listening on `port`.
    pub fn args(self, port: u16) -> Vec<String> {
        match self {
            // The image's working directory holds openclaw.mjs (its own CMD is
            // `node openclaw.mjs gateway --allow-unconfigured`, which binds loopback only).
            Preset::OpenClaw => [
                "node",
                "openclaw.mjs",
                "gateway",
                "--bind",
                "lan",
                "--port",
                &port.to_string(),
            ]
            .map(String::from)
            .to_vec(),
            Preset::Generic => Vec::new(),
        }
    }

    /// Fixed environment of every user's container (not secret), for a memory limit of
    /// `memory_mb`.
    pub fn env(self, memory_mb: u32) -> Vec<(String, String)> {
        match self {
            Preset::OpenClaw => vec![
                // V8's heap below the container's limit, leaving room for the gateway's worker
                // processes and native memory: at the limit itself V8 aborts instead of
                // collecting (OpenClaw's own compose file warns of exactly that under a 1 GiB cap).
                (
                    "NODE_OPTIONS".into(),
                    format!("--max-old-space-size={}", heap_mb(memory_mb)),
                ),
                ("OPENCLAW_STATE_DIR".into(), OPENCLAW_STATE_DIR.into()),
                // The image is the version: no self-update in a read-only container.
                ("OPENCLAW_NO_AUTO_UPDATE".into(), "1".into()),
                // No mDNS announcements from a container on a shared instance.
                ("OPENCLAW_DISABLE_BONJOUR".into(), "1".into()),
            ],
            Preset::Generic => Vec::new(),
        }
    }

    /// The secret names every user's PUT must carry.
    pub fn required_secrets(self) -> Vec<String> {
        match self {
            Preset::OpenClaw => vec![OPENCLAW_TOKEN.into()],
            Preset::Generic => Vec::new(),
        }
    }
}

/// The V8 old-space limit for a container limited to `memory_mb`: five eighths of it.
pub fn heap_mb(memory_mb: u32) -> u32 {
    memory_mb / 8 * 5
}

/// `CONTAINER_ARGS`: words separated by spaces, each of plain characters only (they go into the
/// start script, quoted, and a container's argv; no shell ever sees them unquoted).
pub(super) fn parse_args(raw: &str) -> Result<Vec<String>, ConfigError> {
    let words: Vec<String> = raw.split_whitespace().map(String::from).collect();
    for word in &words {
        let ok = word.len() <= 256
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:@=,+".contains(c));
        if !ok {
            return Err(ConfigError::Invalid {
                env: "CONTAINER_ARGS",
                value: raw.to_string(),
                why: format!(
                    "argument {word:?}: only letters, digits and - _ . / : @ = , + are allowed"
                ),
            });
        }
    }
    if words.len() > 64 {
        return Err(ConfigError::Invalid {
            env: "CONTAINER_ARGS",
            value: raw.to_string(),
            why: "at most 64 arguments".into(),
        });
    }
    Ok(words)
}

/// `CONTAINER_REQUIRED_SECRETS`: secret names, comma-separated; `none` (or empty) requires none.
pub(super) fn parse_required_secrets(raw: &str) -> Result<Vec<String>, ConfigError> {
    if raw.trim() == "none" {
        return Ok(Vec::new());
    }
    let names = super::checks::comma_list(raw);
    for name in &names {
        let mut chars = name.chars();
        let ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && name.len() <= 128;
        if !ok {
            return Err(ConfigError::Invalid {
                env: "CONTAINER_REQUIRED_SECRETS",
                value: raw.to_string(),
                why: format!("{name:?} is not named like an environment variable"),
            });
        }
    }
    Ok(names)
}

/// The browser origin (`scheme://host[:port]`) of `PUBLIC_BASE_URL`, which must be an http or
/// https url of a host name or IPv4 address, with a path or none.
pub(super) fn origin_of(url: &str) -> Result<String, ConfigError> {
    let invalid = |why: &str| ConfigError::Invalid {
        env: "PUBLIC_BASE_URL",
        value: url.to_string(),
        why: why.to_string(),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid("must start with https:// or http://"))?;
    if scheme != "https" && scheme != "http" {
        return Err(invalid("must start with https:// or http://"));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if !host_ok {
        return Err(invalid(
            "must name a host of letters, digits, dots and dashes",
        ));
    }
    if let Some(port) = port
        && port.parse::<u16>().ok().is_none_or(|p| p == 0)
    {
        return Err(invalid("has a port that is not 1 to 65535"));
    }
    Ok(format!("{scheme}://{}", authority.to_ascii_lowercase()))
}
