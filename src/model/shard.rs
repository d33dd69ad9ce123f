//! Shards: the load balancers users are routed through (ARCHITECTURE.md, "Shards").
//!
//! A shard is one Application Load Balancer, reached through one of its listeners. AWS counts
//! target groups (100, a hard limit) and rules (100 by default) per load balancer, and spotpool
//! keeps one of each per user, so one load balancer routes at most 100 users: past that, users go
//! to other shards. A user is placed on a shard at its first claim and stays there for life.
//!
//! A shard routes either by path (`<base_url>/<route>/`, the rule matches `/<route>/*`) or by
//! host (`https://<route>.<domain>/`, the rule matches `Host: <route>.<domain>`): host routing
//! serves apps that cannot live under a path prefix, with one wildcard DNS record and one
//! wildcard certificate per shard, so no DNS call is made per user.

/// The most target groups AWS lets one Application Load Balancer use (a hard limit), and so the
/// most users a shard can hold: each user has a target group of its own.
pub const ALB_TARGET_GROUPS_MAX: u32 = 100;

/// The users placed on a shard unless its `capacity` says otherwise: room below AWS's limits of
/// 100 target groups and 100 rules per load balancer for rules that are not ours.
pub const DEFAULT_SHARD_CAPACITY: u32 = 90;

/// A queued user's `error` while no shard has room for its route.
pub const NO_ROUTE_CAPACITY: &str = "no_route_capacity";

/// How a shard's rules match a user's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteMode {
    /// `/<route>/*` on the shard's host: the user's url is `<base_url>/<route>/`.
    Path,
    /// `Host: <route>.<domain>`: the user's url is `https://<route>.<domain>/`.
    Host,
}

super::string_enum!(RouteMode {
    Path => "path",
    Host => "host",
});

/// What a listener rule matches: one condition per rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleMatch {
    /// A path-pattern condition, e.g. `/r-1/*`.
    Path(String),
    /// A host-header condition, e.g. `r-1.shard-0.agents.example.com`.
    Host(String),
    /// A pre-wired spare's warm rule (ARCHITECTURE.md, "Pre-wired spares"): a `source-ip`
    /// condition of [`WARM_SOURCE_IP`] and the path pattern `/_warm/<instance id>`. No client
    /// can match it (the address is reserved for documentation, RFC 5737); it exists so the
    /// load balancer health-checks the spare's target group, which it does only for groups a
    /// rule uses.
    Warm(String),
}

/// The source address of a warm rule's condition: TEST-NET-1, which never reaches a load
/// balancer from the internet.
pub const WARM_SOURCE_IP: &str = "192.0.2.1/32";

impl RuleMatch {
    /// The condition's value, for a person (logs, the orphan sweep's names).
    pub fn value(&self) -> &str {
        match self {
            RuleMatch::Path(value) | RuleMatch::Host(value) | RuleMatch::Warm(value) => value,
        }
    }

    /// The warm rule of `instance`'s spare.
    pub fn warm(instance: &str) -> RuleMatch {
        RuleMatch::Warm(warm_path(instance))
    }
}

/// The path pattern of `instance`'s warm rule (also the orphan sweep's name for it).
pub fn warm_path(instance: &str) -> String {
    format!("/_warm/{instance}")
}

/// The name of `instance`'s pre-wired target group: `sp-warm-` and the instance id without
/// its `i-` (25 characters for today's 17-digit ids; AWS allows 32). It stays the group's name
/// when a user claims the spare.
pub fn warm_target_group_name(instance: &str) -> String {
    format!("sp-warm-{}", instance.trim_start_matches("i-"))
}

/// One load balancer users are routed through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// Stable name, recorded in each user's row: `[a-z0-9-]`, 1-32 characters.
    pub name: String,
    pub listener_arn: String,
    pub routing: RouteMode,
    /// Path routing: the prefix of users' urls, e.g. `https://agents.example.com` (no trailing
    /// slash). Host routing: `https://<domain>`.
    pub base_url: String,
    /// Host routing: the users' parent domain (`<route>.<domain>`).
    pub domain: Option<String>,
    /// The most users placed on the shard (at most `ALB_TARGET_GROUPS_MAX`).
    pub capacity: u32,
}

impl Shard {
    /// The user's url on this shard.
    pub fn url(&self, route: &str) -> String {
        match (&self.routing, &self.domain) {
            (RouteMode::Host, Some(domain)) => format!("https://{route}.{domain}/"),
            _ => format!("{}/{route}/", self.base_url),
        }
    }

    /// What the user's listener rule matches.
    pub fn rule_match(&self, route: &str) -> RuleMatch {
        match (&self.routing, &self.domain) {
            (RouteMode::Host, Some(domain)) => RuleMatch::Host(format!("{route}.{domain}")),
            _ => RuleMatch::Path(format!("/{route}/*")),
        }
    }

    /// The path prefix the load balancer passes to the user's app: `/<route>` with path routing,
    /// empty with host routing (the app is served at `/`).
    pub fn base_path(&self, route: &str) -> String {
        match self.routing {
            RouteMode::Path => format!("/{route}"),
            RouteMode::Host => String::new(),
        }
    }

    /// The browser origin of the user's url (`scheme://host[:port]`).
    pub fn origin(&self, route: &str) -> String {
        let url = self.url(route);
        let after_scheme = url.find("://").map_or(0, |i| i + 3);
        let end = url[after_scheme..]
            .find('/')
            .map_or(url.len(), |i| after_scheme + i);
        // Scheme and host are case-insensitive; browsers send them lowercased.
        url[..end].to_ascii_lowercase()
    }

    /// The load balancer of the shard's listener (`app/<name>/<id>`), which AWS's limits count.
    pub fn load_balancer(&self) -> &str {
        load_balancer_of(&self.listener_arn)
    }
}

/// The load balancer part of a listener ARN
/// (`arn:aws:elasticloadbalancing:<region>:<account>:listener/app/<name>/<lb id>/<listener id>`
/// gives `app/<name>/<lb id>`); anything else is taken whole.
pub fn load_balancer_of(listener_arn: &str) -> &str {
    let Some((_, rest)) = listener_arn.split_once(":listener/") else {
        return listener_arn;
    };
    match rest.rfind('/') {
        Some(end) if rest[..end].matches('/').count() == 2 => &rest[..end],
        _ => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(routing: RouteMode) -> Shard {
        Shard {
            name: "s0".into(),
            listener_arn: "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/sp-0/50dc6c495c0c9188/f2f7dc8efc522ab2".into(),
            routing,
            base_url: "https://agents.example.com".into(),
            domain: (routing == RouteMode::Host).then(|| "s0.agents.example.com".into()),
            capacity: 90,
        }
    }

    #[test]
    fn a_path_shard_routes_a_prefix_of_its_base_url() {
        let s = shard(RouteMode::Path);
        assert_eq!(s.url("r1"), "https://agents.example.com/r1/");
        assert_eq!(s.rule_match("r1"), RuleMatch::Path("/r1/*".into()));
        assert_eq!(s.base_path("r1"), "/r1");
        assert_eq!(s.origin("r1"), "https://agents.example.com");
    }

    #[test]
    fn a_host_shard_routes_a_subdomain_at_the_root() {
        let s = shard(RouteMode::Host);
        assert_eq!(s.url("r1"), "https://r1.s0.agents.example.com/");
        assert_eq!(
            s.rule_match("r1"),
            RuleMatch::Host("r1.s0.agents.example.com".into())
        );
        assert_eq!(s.base_path("r1"), "");
        assert_eq!(s.origin("r1"), "https://r1.s0.agents.example.com");
    }

    #[test]
    fn the_load_balancer_is_read_from_the_listener_arn() {
        assert_eq!(
            shard(RouteMode::Path).load_balancer(),
            "app/sp-0/50dc6c495c0c9188"
        );
        assert_eq!(load_balancer_of("arn:listener"), "arn:listener");
        assert_eq!(
            load_balancer_of("arn:aws:elasticloadbalancing:r:1:listener/app/a/b"),
            "app/a/b"
        );
    }
}
