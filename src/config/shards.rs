//! The `[[shard]]` tables of the TOML file: the load balancers users are routed through
//! (`crate::model::Shard`), validated; and the one path-routed shard an existing deployment's
//! `ALB_LISTENER_ARN` and `PUBLIC_BASE_URL` make without them.

use super::{ConfigError, preset};
use crate::model::{
    ALB_TARGET_GROUPS_MAX, DEFAULT_SHARD_CAPACITY, RouteMode, Shard, load_balancer_of,
};
use std::collections::BTreeMap;

/// One `[[shard]]` table as written.
#[derive(Debug, Default, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShardSettings {
    pub name: Option<String>,
    pub listener_arn: Option<String>,
    /// `"path"` or `"host"`.
    pub routing: Option<String>,
    /// Path routing: the prefix of users' urls, e.g. `https://agents.example.com`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Host routing: users get `https://<route>.<domain>/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
}

/// The shards from the `[[shard]]` tables, validated: names unique, one shard per load balancer
/// (AWS's limits count per load balancer, so two shards on one would share them).
pub(super) fn from_tables(tables: &[ShardSettings]) -> Result<Vec<Shard>, ConfigError> {
    let mut shards: Vec<Shard> = Vec::with_capacity(tables.len());
    let mut balancers: BTreeMap<String, String> = BTreeMap::new();
    for (index, table) in tables.iter().enumerate() {
        let shard = one(index, table)?;
        if shards.iter().any(|s| s.name == shard.name) {
            return Err(invalid(
                index,
                &shard.name,
                "the name is used by another shard",
            ));
        }
        let balancer = load_balancer_of(&shard.listener_arn).to_string();
        if let Some(other) = balancers.insert(balancer.clone(), shard.name.clone()) {
            return Err(invalid(
                index,
                &shard.name,
                &format!(
                    "its listener is on load balancer {balancer}, like shard {other}'s; AWS \
                     counts target groups and rules per load balancer, so a shard needs a load \
                     balancer of its own"
                ),
            ));
        }
        shards.push(shard);
    }
    Ok(shards)
}

/// The shard of a deployment without `[[shard]]` tables: `ALB_LISTENER_ARN`, path-routed under
/// `PUBLIC_BASE_URL`, named `default`. A comma list of listeners (the old way to spread users)
/// gives one shard each, `default`, `default-2`, ...
pub(super) fn from_listeners(
    listeners: &[String],
    public_base_url: &str,
) -> Result<Vec<Shard>, ConfigError> {
    preset::origin_of(public_base_url)?;
    let tables: Vec<ShardSettings> = listeners
        .iter()
        .enumerate()
        .map(|(i, listener)| ShardSettings {
            name: Some(match i {
                0 => "default".to_string(),
                n => format!("default-{}", n + 1),
            }),
            listener_arn: Some(listener.clone()),
            routing: Some("path".into()),
            base_url: Some(public_base_url.to_string()),
            domain: None,
            capacity: None,
        })
        .collect();
    from_tables(&tables).map_err(|error| match error {
        ConfigError::Shard { why, .. } => ConfigError::Invalid {
            env: "ALB_LISTENER_ARN",
            value: listeners.join(","),
            why,
        },
        other => other,
    })
}

fn invalid(index: usize, name: &str, why: &str) -> ConfigError {
    ConfigError::Shard {
        index: index + 1,
        name: name.to_string(),
        why: why.to_string(),
    }
}

fn one(index: usize, table: &ShardSettings) -> Result<Shard, ConfigError> {
    let name = table.name.clone().unwrap_or_default();
    let fail = |why: &str| invalid(index, &name, why);
    let name_ok = (1..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !name_ok {
        return Err(fail(
            "`name` needs 1-32 characters of a-z, 0-9 and - (it is kept in every user's row)",
        ));
    }
    let listener_arn = table.listener_arn.clone().unwrap_or_default();
    if !listener_arn.starts_with("arn:") || !listener_arn.contains(":listener/app/") {
        return Err(fail(
            "`listener_arn` must be an Application Load Balancer listener's ARN \
             (arn:aws:elasticloadbalancing:<region>:<account>:listener/app/...)",
        ));
    }
    let capacity = table.capacity.unwrap_or(DEFAULT_SHARD_CAPACITY);
    if !(1..=ALB_TARGET_GROUPS_MAX).contains(&capacity) {
        return Err(fail(&format!(
            "`capacity` must be 1 to {ALB_TARGET_GROUPS_MAX}: a load balancer uses at most \
             {ALB_TARGET_GROUPS_MAX} target groups, one per user"
        )));
    }
    let routing = match table.routing.as_deref() {
        Some(raw) => {
            RouteMode::parse(raw).ok_or_else(|| fail("`routing` is \"path\" or \"host\""))?
        }
        None => return Err(fail("`routing` is missing: \"path\" or \"host\"")),
    };
    let (base_url, domain) = match routing {
        RouteMode::Path => {
            if table.domain.is_some() {
                return Err(fail(
                    "`domain` is for host routing; path routing takes `base_url`",
                ));
            }
            let base_url = table
                .base_url
                .clone()
                .ok_or_else(|| fail("path routing needs `base_url`, the prefix of users' urls"))?
                .trim_end_matches('/')
                .to_string();
            preset::origin_of(&base_url).map_err(|error| match error {
                ConfigError::Invalid { why, .. } => fail(&format!("`base_url` {why}")),
                other => other,
            })?;
            (base_url, None)
        }
        RouteMode::Host => {
            if table.base_url.is_some() {
                return Err(fail(
                    "`base_url` is for path routing; host routing takes `domain`",
                ));
            }
            let domain = table
                .domain
                .clone()
                .ok_or_else(|| {
                    fail("host routing needs `domain`: users get https://<route>.<domain>/")
                })?
                .trim_end_matches('.')
                .to_ascii_lowercase();
            if !valid_domain(&domain) {
                return Err(fail(
                    "`domain` must be a DNS name of at least two labels (letters, digits, \
                     inner dashes; the last one letters only; at most 111 characters, so \
                     <route>.<domain> fits AWS's 128)",
                ));
            }
            (format!("https://{domain}"), Some(domain))
        }
    };
    Ok(Shard {
        name,
        listener_arn,
        routing,
        base_url,
        domain,
        capacity,
    })
}

/// A DNS name a 16-character route label can be put in front of within AWS's 128 characters of
/// a host-header condition, ending in an alphabetic top-level label.
fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    domain.len() <= 128 - 17
        && labels.len() >= 2
        && labels
            .last()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_lowercase()))
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}
