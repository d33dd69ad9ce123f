//! The fake's ModifyRule (a rule's action, or its conditions), AddTags on load balancer
//! resources and what DescribeTargetHealth reports, as inherent methods the fake's `impl Cloud` forwards to (keeping `cloud_impl.rs`
//! a reading's length).
//!
//! Owns: what those calls do to the fake's rules and target groups. Must not: keep state of its
//! own; every call goes through `FakeCloud::enter` first.

use super::cloud_impl::not_found;
use super::{FakeCloud, State, group_healthy_from};
use crate::cloud::{CloudResult, RuleAction, Tags};
use crate::model::{InstanceId, Lifecycle, RuleMatch};

impl FakeCloud {
    pub(super) async fn modify_rule_action(
        &self,
        rule_arn: &str,
        action: &RuleAction,
    ) -> CloudResult<()> {
        let mut state = self.enter("ModifyRule", 1).await?;
        if let RuleAction::Forward { target_group_arn } = action
            && !state.target_groups.contains_key(target_group_arn)
        {
            return Err(not_found("ModifyRule", target_group_arn));
        }
        let now = state.now;
        let active_at = self.effect_at(now, |p| p.effects.rule_active);
        let rule = state
            .rules
            .get_mut(rule_arn)
            .ok_or_else(|| not_found("ModifyRule", rule_arn))?;
        match action {
            RuleAction::Forward { target_group_arn } => {
                let old = std::mem::replace(&mut rule.target_group_arn, target_group_arn.clone());
                // Health checks start when the rule first forwards to a group.
                if old != *target_group_arn || rule.fixed_response.is_some() {
                    rule.checks_since = active_at;
                }
                rule.fixed_response = None;
                rule.active_at = active_at;
                state.index_rule(&old, rule_arn, false);
                state.index_rule(target_group_arn, rule_arn, true);
            }
            RuleAction::FixedResponse { status, .. } => rule.fixed_response = Some(*status),
        }
        Ok(())
    }

    pub(super) async fn modify_rule_match(
        &self,
        rule_arn: &str,
        condition: &RuleMatch,
    ) -> CloudResult<()> {
        let mut state = self.enter("ModifyRule", 1).await?;
        let active_at = self.effect_at(state.now, |p| p.effects.rule_active);
        let rule = state
            .rules
            .get_mut(rule_arn)
            .ok_or_else(|| not_found("ModifyRule", rule_arn))?;
        rule.condition = condition.clone();
        rule.active_at = active_at;
        Ok(())
    }

    pub(super) async fn add_elb_tags(&self, arns: &[String], new_tags: &Tags) -> CloudResult<()> {
        let mut state = self.enter("AddTags", 1).await?;
        if let Some(missing) = arns
            .iter()
            .find(|arn| !state.target_groups.contains_key(*arn) && !state.rules.contains_key(*arn))
        {
            return Err(not_found("AddTags", missing));
        }
        for arn in arns {
            if let Some(group) = state.target_groups.get_mut(arn) {
                group.tags.extend(new_tags.clone());
            } else if let Some(rule) = state.rules.get_mut(arn) {
                rule.tags.extend(new_tags.clone());
            }
        }
        Ok(())
    }
}

/// What DescribeTargetHealth reports of `instance` in `group_arn`: registered in a group a rule
/// uses, and past the health checks' interval × threshold (at once in plain mode, `timed`
/// false); `unhealthy` when it is not running or the test said so (`set_unhealthy`).
pub(super) fn target_health(
    state: &State,
    target_group_arn: &str,
    instance: &InstanceId,
    timed: bool,
) -> crate::cloud::TargetHealth {
    let healthy_from = group_healthy_from(state, target_group_arn, timed)
        .get(&instance.0)
        .copied();
    let registered = state
        .target_groups
        .get(target_group_arn)
        .is_some_and(|group| group.targets.contains(instance));
    let running = state
        .instances
        .get(&instance.0)
        .is_some_and(|i| i.lifecycle == Lifecycle::Running);
    let (health, reason) = match healthy_from {
        _ if !registered => ("missing", None),
        None => ("unused", Some("Target.NotInUse")),
        Some(at) if at > state.now => ("initial", Some("Elb.RegistrationInProgress")),
        Some(_)
            if !running
                || state.unhealthy.contains(instance)
                || (state.unhealthy_targets.iter())
                    .any(|(group, i)| group == target_group_arn && i == instance) =>
        {
            (
                "unhealthy",
                Some("Target.ResponseCodeMismatch: Health checks failed with these codes: [502]"),
            )
        }
        Some(_) => ("healthy", None),
    };
    crate::cloud::TargetHealth {
        state: health.into(),
        reason: reason.map(str::to_string),
    }
}
