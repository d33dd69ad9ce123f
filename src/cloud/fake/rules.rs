//! The fake's ModifyRule (a rule's action, or its conditions) and AddTags on load balancer
//! resources, as inherent methods the fake's `impl Cloud` forwards to (keeping `cloud_impl.rs`
//! a reading's length).
//!
//! Owns: what those calls do to the fake's rules and target groups. Must not: keep state of its
//! own; every call goes through `FakeCloud::enter` first.

use super::FakeCloud;
use super::cloud_impl::not_found;
use crate::cloud::{CloudResult, RuleAction, Tags};
use crate::model::RuleMatch;

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
