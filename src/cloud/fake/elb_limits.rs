//! The fake's load balancer limits, which moto does not enforce: target groups in the region
//! (3,000 by default), and per load balancer its rules (100), the target groups its rules use
//! (100) and the targets registered in them (1,000). A test sets them low (`set_route_limits`)
//! to meet them with a few users; a listener's load balancer is read from its ARN as AWS counts.

use super::{FakeCloud, State};
use crate::cloud::{CloudError, CloudErrorKind, CloudResult};
use crate::model::load_balancer_of;
use std::collections::{BTreeMap, BTreeSet};

/// AWS's limits the fake enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLimits {
    pub target_groups_per_region: usize,
    pub rules_per_load_balancer: usize,
    pub target_groups_per_load_balancer: usize,
    pub targets_per_load_balancer: usize,
}

impl Default for RouteLimits {
    fn default() -> RouteLimits {
        RouteLimits {
            target_groups_per_region: 3_000,
            rules_per_load_balancer: 100,
            target_groups_per_load_balancer: 100,
            targets_per_load_balancer: 1_000,
        }
    }
}

impl FakeCloud {
    /// The limits CreateTargetGroup, CreateRule and RegisterTargets enforce from now on.
    pub fn set_route_limits(&self, limits: RouteLimits) {
        self.lock().route_limits = limits;
    }
}

fn refused(operation: &'static str, code: &str, message: String) -> CloudError {
    CloudError::new(CloudErrorKind::RouteCapacity, operation, code, message)
}

/// The rules of every listener of the load balancer of `listener`: a range of the rules' ARNs
/// (`<listener ARN>/rule/...`, and a listener's ARN is its load balancer's path plus an id), so
/// a claim's checks do not grow with the other load balancers' rules.
fn balancer_rules<'a>(
    state: &'a State,
    listener: &str,
) -> Box<dyn Iterator<Item = &'a super::FakeRule> + 'a> {
    let balancer = load_balancer_of(listener).to_string();
    match listener.rfind('/') {
        Some(end) if listener.contains(":listener/app/") => {
            let prefix = listener[..=end].to_string();
            Box::new(
                state
                    .rules
                    .range(prefix.clone()..)
                    .take_while(move |(arn, _)| arn.starts_with(&prefix))
                    .map(|(_, rule)| rule),
            )
        }
        _ => Box::new(
            state
                .rules
                .values()
                .filter(move |r| load_balancer_of(&r.listener_arn) == balancer),
        ),
    }
}

/// The target groups the rules of the load balancer of `listener` forward to.
fn groups_of(state: &State, listener: &str) -> BTreeSet<String> {
    balancer_rules(state, listener)
        .map(|r| r.target_group_arn.clone())
        .collect()
}

/// CreateTargetGroup of a new group: TooManyTargetGroups at the region's limit.
pub(super) fn check_new_target_group(state: &State) -> CloudResult<()> {
    let limit = state.route_limits.target_groups_per_region;
    if state.target_groups.len() >= limit {
        return Err(refused(
            "CreateTargetGroup",
            "TooManyTargetGroups",
            format!("the account has {limit} target groups, its limit"),
        ));
    }
    Ok(())
}

/// CreateRule on `listener` forwarding to `group`: TooManyRules, or
/// TooManyUniqueTargetGroupsPerLoadBalancer when the group is new to the load balancer.
pub(super) fn check_new_rule(state: &State, listener: &str, group: &str) -> CloudResult<()> {
    let balancer = load_balancer_of(listener);
    let limits = state.route_limits;
    let rules = balancer_rules(state, listener).count();
    if rules >= limits.rules_per_load_balancer {
        return Err(refused(
            "CreateRule",
            "TooManyRules",
            format!("load balancer {balancer} has {rules} rules, its limit"),
        ));
    }
    let groups = groups_of(state, listener);
    if !groups.contains(group) && groups.len() >= limits.target_groups_per_load_balancer {
        return Err(refused(
            "CreateRule",
            "TooManyUniqueTargetGroupsPerLoadBalancer",
            format!(
                "load balancer {balancer} uses {} target groups, its limit",
                groups.len()
            ),
        ));
    }
    Ok(())
}

/// RegisterTargets of a new target in `group`: TooManyTargets when a load balancer using the
/// group holds its limit of targets.
pub(super) fn check_new_target(state: &State, group: &str) -> CloudResult<()> {
    let limit = state.route_limits.targets_per_load_balancer;
    // One listener per load balancer using the group stands for its load balancer.
    let mut listeners: BTreeMap<&str, &str> = BTreeMap::new();
    for rule in state.rules_naming(group) {
        listeners
            .entry(load_balancer_of(&rule.listener_arn))
            .or_insert(&rule.listener_arn);
    }
    for (balancer, listener) in listeners {
        let targets: usize = groups_of(state, listener)
            .iter()
            .filter_map(|g| state.target_groups.get(g))
            .map(|g| g.targets.len())
            .sum();
        if targets >= limit {
            return Err(refused(
                "RegisterTargets",
                "TooManyTargets",
                format!("load balancer {balancer} has {targets} targets, its limit"),
            ));
        }
    }
    Ok(())
}
