//! ELBv2 for [`AwsCloud`]: the users' routes. Target groups (created with their health check,
//! found by name, deleted), targets (registered, deregistered, their health), listener rules
//! (paged and read into [`RuleInfo`], created, deleted), ELBv2 tags, and the pool's target groups
//! and rules for the orphan sweep.
//!
//! Must not: list a resource as the pool's without the pool's tag, or the listener's default
//! rule.

use super::errors::{call, missing, next_page, with_context};
use super::{AwsCloud, sdk_tags};
use crate::cloud::{
    CloudError, CloudErrorKind, CloudResult, HealthCheck, PoolResource, RuleAction, RuleInfo, Tags,
    tags,
};
use crate::model::{InstanceId, RuleMatch};
use std::collections::BTreeMap;

/// DescribeRules' largest page. AWS accepts 1..=400.
const MAX_RULES_PAGE_SIZE: i32 = 400;
/// ELBv2 DescribeTags takes at most 20 resource ARNs.
const MAX_ELB_TAG_ARNS: usize = 20;

sdk_tags!(elb_tags, aws_sdk_elasticloadbalancingv2::types::Tag);

impl AwsCloud {
    pub(super) async fn elb_create_target_group(
        &self,
        name: &str,
        port: u16,
        health: &HealthCheck,
        tags: &Tags,
    ) -> CloudResult<String> {
        use aws_sdk_elasticloadbalancingv2::types::{ProtocolEnum, TargetTypeEnum};
        let result = call(
            "elbv2",
            "CreateTargetGroup",
            self.elb
                .create_target_group()
                .name(name)
                .protocol(ProtocolEnum::Http)
                .port(i32::from(port))
                .vpc_id(&self.config.vpc_id)
                .target_type(TargetTypeEnum::Instance)
                .health_check_path(&health.path)
                .health_check_interval_seconds(whole_seconds(health.interval_seconds))
                .health_check_timeout_seconds(whole_seconds(health.timeout_seconds))
                .healthy_threshold_count(whole_seconds(health.healthy_threshold))
                .unhealthy_threshold_count(whole_seconds(health.unhealthy_threshold))
                .matcher(
                    aws_sdk_elasticloadbalancingv2::types::Matcher::builder()
                        .http_code(&health.codes)
                        .build(),
                )
                .set_tags((!tags.is_empty()).then(|| elb_tags(tags)))
                .send(),
        )
        .await;
        match result {
            Ok(output) => output
                .target_groups()
                .iter()
                .find_map(|group| group.target_group_arn())
                .map(str::to_string)
                .ok_or_else(|| missing("CreateTargetGroup", "target group ARN")),
            // DuplicateTargetGroupName: AWS returns the existing group when the settings match,
            // but fails when they differ (and moto always fails). Either way, use the existing one.
            Err(err) if err.kind == CloudErrorKind::Conflict => {
                self.existing_target_group(name).await
            }
            Err(err) => Err(with_context(err, format!("creating target group {name}"))),
        }
    }

    pub(super) async fn elb_target_health(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        port: u16,
    ) -> CloudResult<crate::cloud::TargetHealth> {
        let output = call(
            "elbv2",
            "DescribeTargetHealth",
            self.elb
                .describe_target_health()
                .target_group_arn(target_group_arn)
                .targets(target(instance, port))
                .send(),
        )
        .await
        .map_err(|err| {
            with_context(
                err,
                format!("reading the health of {instance} in target group {target_group_arn}"),
            )
        })?;
        let health = output
            .target_health_descriptions()
            .iter()
            .find(|d| d.target().and_then(|t| t.id()) == Some(instance.0.as_str()))
            .and_then(|d| d.target_health());
        Ok(match health {
            None => crate::cloud::TargetHealth {
                state: "missing".into(),
                reason: None,
            },
            Some(health) => crate::cloud::TargetHealth {
                state: health
                    .state()
                    .map_or("missing", |state| state.as_str())
                    .to_string(),
                reason: health.reason().map(|reason| match health.description() {
                    Some(description) => format!("{}: {description}", reason.as_str()),
                    None => reason.as_str().to_string(),
                }),
            },
        })
    }

    pub(super) async fn elb_deregister_target(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        port: u16,
    ) -> CloudResult<()> {
        let result = call(
            "elbv2",
            "DeregisterTargets",
            self.elb
                .deregister_targets()
                .target_group_arn(target_group_arn)
                .targets(target(instance, port))
                .send(),
        )
        .await;
        match result {
            Ok(_) => Ok(()),
            // InvalidTarget: the instance is not registered or is already terminated.
            Err(err) if err.kind == CloudErrorKind::NotFound || err.code == "InvalidTarget" => {
                Ok(())
            }
            Err(err) => Err(with_context(
                err,
                format!("deregistering instance {instance} from target group {target_group_arn}"),
            )),
        }
    }

    pub(super) async fn elb_register_target(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        port: u16,
    ) -> CloudResult<()> {
        call(
            "elbv2",
            "RegisterTargets",
            self.elb
                .register_targets()
                .target_group_arn(target_group_arn)
                .targets(target(instance, port))
                .send(),
        )
        .await
        .map_err(|err| {
            with_context(
                err,
                format!("registering instance {instance} in target group {target_group_arn}"),
            )
        })?;
        Ok(())
    }

    pub(super) async fn elb_find_target_group(&self, name: &str) -> CloudResult<Option<String>> {
        match self.existing_target_group(name).await {
            Ok(arn) => Ok(Some(arn)),
            Err(err) if err.kind == CloudErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    pub(super) async fn elb_delete_target_group(&self, target_group_arn: &str) -> CloudResult<()> {
        let result = call(
            "elbv2",
            "DeleteTargetGroup",
            self.elb
                .delete_target_group()
                .target_group_arn(target_group_arn)
                .send(),
        )
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if err.kind == CloudErrorKind::NotFound => Ok(()),
            // ResourceInUse (a rule still forwards to it) stays a Conflict for the caller.
            Err(err) => Err(with_context(
                err,
                format!("deleting target group {target_group_arn}"),
            )),
        }
    }

    pub(super) async fn elb_describe_rules(
        &self,
        listener_arn: &str,
    ) -> CloudResult<Vec<RuleInfo>> {
        let page_size = self.page_size.min(MAX_RULES_PAGE_SIZE);
        let mut rules = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = call(
                "elbv2",
                "DescribeRules",
                self.elb
                    .describe_rules()
                    .listener_arn(listener_arn)
                    .page_size(page_size)
                    .set_marker(marker.clone())
                    .send(),
            )
            .await
            .map_err(|err| {
                with_context(err, format!("listing rules of listener {listener_arn}"))
            })?;
            for rule in page.rules() {
                rules.push(rule_info(rule)?);
            }
            marker = next_page("DescribeRules", marker, page.next_marker())?;
            if marker.is_none() {
                break;
            }
        }
        Ok(rules)
    }

    pub(super) async fn elb_create_rule(
        &self,
        listener_arn: &str,
        priority: u32,
        condition: &RuleMatch,
        target_group_arn: &str,
        tags: &Tags,
    ) -> CloudResult<String> {
        use aws_sdk_elasticloadbalancingv2::types::{Action, ActionTypeEnum};
        let priority_i32 = i32::try_from(priority).map_err(|_| {
            CloudError::new(
                CloudErrorKind::Fatal,
                "CreateRule",
                "",
                format!("rule priority {priority} is out of range"),
            )
        })?;
        let output = call(
            "elbv2",
            "CreateRule",
            self.elb
                .create_rule()
                .listener_arn(listener_arn)
                .priority(priority_i32)
                .set_conditions(Some(rule_conditions(condition)))
                .actions(
                    Action::builder()
                        .r#type(ActionTypeEnum::Forward)
                        .target_group_arn(target_group_arn)
                        .build(),
                )
                .set_tags((!tags.is_empty()).then(|| elb_tags(tags)))
                .send(),
        )
        .await
        .map_err(|err| {
            with_context(
                err,
                format!("creating rule {} at priority {priority}", condition.value()),
            )
        })?;
        output
            .rules()
            .iter()
            .find_map(|rule| rule.rule_arn())
            .map(str::to_string)
            .ok_or_else(|| missing("CreateRule", "rule ARN"))
    }

    pub(super) async fn elb_set_rule_action(
        &self,
        rule_arn: &str,
        action: &RuleAction,
    ) -> CloudResult<()> {
        use aws_sdk_elasticloadbalancingv2::types::{
            Action, ActionTypeEnum, FixedResponseActionConfig,
        };
        let sdk_action = match action {
            RuleAction::Forward { target_group_arn } => Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .target_group_arn(target_group_arn)
                .build(),
            RuleAction::FixedResponse {
                status,
                content_type,
                body,
            } => Action::builder()
                .r#type(ActionTypeEnum::FixedResponse)
                .fixed_response_config(
                    FixedResponseActionConfig::builder()
                        .status_code(status.to_string())
                        .content_type(content_type)
                        .message_body(body)
                        .build(),
                )
                .build(),
        };
        call(
            "elbv2",
            "ModifyRule",
            self.elb
                .modify_rule()
                .rule_arn(rule_arn)
                .actions(sdk_action)
                .send(),
        )
        .await
        .map_err(|err| with_context(err, format!("changing the action of rule {rule_arn}")))?;
        Ok(())
    }

    pub(super) async fn elb_set_rule_match(
        &self,
        rule_arn: &str,
        condition: &RuleMatch,
    ) -> CloudResult<()> {
        call(
            "elbv2",
            "ModifyRule",
            self.elb
                .modify_rule()
                .rule_arn(rule_arn)
                .set_conditions(Some(rule_conditions(condition)))
                .send(),
        )
        .await
        .map_err(|err| {
            with_context(
                err,
                format!("switching rule {rule_arn} to {}", condition.value()),
            )
        })?;
        Ok(())
    }

    pub(super) async fn elb_add_tags(&self, arns: &[String], tags: &Tags) -> CloudResult<()> {
        if arns.is_empty() || tags.is_empty() {
            return Ok(());
        }
        call(
            "elbv2",
            "AddTags",
            self.elb
                .add_tags()
                .set_resource_arns(Some(arns.to_vec()))
                .set_tags(Some(elb_tags(tags)))
                .send(),
        )
        .await
        .map_err(|err| with_context(err, format!("tagging {}", arns.join(", "))))?;
        Ok(())
    }

    pub(super) async fn elb_delete_rule(&self, rule_arn: &str) -> CloudResult<()> {
        let result = call(
            "elbv2",
            "DeleteRule",
            self.elb.delete_rule().rule_arn(rule_arn).send(),
        )
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if err.kind == CloudErrorKind::NotFound => Ok(()),
            Err(err) => Err(with_context(err, format!("deleting rule {rule_arn}"))),
        }
    }

    pub(super) async fn elb_list_pool_target_groups(&self) -> CloudResult<Vec<PoolResource>> {
        let mut found = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = call(
                "elbv2",
                "DescribeTargetGroups",
                self.elb
                    .describe_target_groups()
                    .page_size(self.page_size.min(MAX_RULES_PAGE_SIZE))
                    .set_marker(marker.clone())
                    .send(),
            )
            .await
            .map_err(|err| with_context(err, "listing target groups"))?;
            for group in page.target_groups() {
                if let (Some(arn), Some(name)) =
                    (group.target_group_arn(), group.target_group_name())
                {
                    found.push((arn.to_string(), name.to_string()));
                }
            }
            marker = next_page("DescribeTargetGroups", marker, page.next_marker())?;
            if marker.is_none() {
                break;
            }
        }
        self.only_ours(found).await
    }

    pub(super) async fn elb_list_pool_rules(
        &self,
        listener_arn: &str,
    ) -> CloudResult<Vec<PoolResource>> {
        let found = self
            .elb_describe_rules(listener_arn)
            .await?
            .into_iter()
            // The default rule has no priority and is never ours.
            .filter(|rule| rule.priority.is_some())
            .map(|rule| {
                let name = rule.condition_text();
                (rule.arn, name)
            })
            .collect();
        self.only_ours(found).await
    }

    async fn existing_target_group(&self, name: &str) -> CloudResult<String> {
        let output = call(
            "elbv2",
            "DescribeTargetGroups",
            self.elb.describe_target_groups().names(name).send(),
        )
        .await
        .map_err(|err| with_context(err, format!("finding existing target group {name}")))?;
        output
            .target_groups()
            .iter()
            .find_map(|group| group.target_group_arn())
            .map(str::to_string)
            .ok_or_else(|| {
                CloudError::new(
                    CloudErrorKind::Transient,
                    "DescribeTargetGroups",
                    "",
                    format!("target group {name} was reported as existing but is not listed"),
                )
            })
    }

    /// The tags of ELBv2 resources, 20 ARNs per DescribeTags call (the API's limit).
    async fn elb_tags_of(&self, arns: &[String]) -> CloudResult<BTreeMap<String, Tags>> {
        let mut out = BTreeMap::new();
        for chunk in arns.chunks(MAX_ELB_TAG_ARNS) {
            let output = call(
                "elbv2",
                "DescribeTags",
                self.elb
                    .describe_tags()
                    .set_resource_arns(Some(chunk.to_vec()))
                    .send(),
            )
            .await?;
            for description in output.tag_descriptions() {
                let Some(arn) = description.resource_arn() else {
                    continue;
                };
                let tags: Tags = description
                    .tags()
                    .iter()
                    .filter_map(|t| {
                        Some((
                            t.key()?.to_string(),
                            t.value().unwrap_or_default().to_string(),
                        ))
                    })
                    .collect();
                out.insert(arn.to_string(), tags);
            }
        }
        Ok(out)
    }

    /// Keeps the (arn, name) pairs whose tags say they belong to this pool.
    async fn only_ours(&self, found: Vec<(String, String)>) -> CloudResult<Vec<PoolResource>> {
        let arns: Vec<String> = found.iter().map(|(arn, _)| arn.clone()).collect();
        let mut tags = self.elb_tags_of(&arns).await?;
        Ok(found
            .into_iter()
            .filter_map(|(arn, name)| {
                let tags = tags.remove(&arn)?;
                (tags.get(tags::POOL) == Some(&self.config.pool)).then_some(PoolResource {
                    arn,
                    name,
                    created_at: None,
                    tags,
                })
            })
            .collect())
    }
}

/// One instance target on the container port, as RegisterTargets, DeregisterTargets and
/// DescribeTargetHealth take it.
fn target(
    instance: &InstanceId,
    port: u16,
) -> aws_sdk_elasticloadbalancingv2::types::TargetDescription {
    aws_sdk_elasticloadbalancingv2::types::TargetDescription::builder()
        .id(instance.0.clone())
        .port(i32::from(port))
        .build()
}

fn rule_info(rule: &aws_sdk_elasticloadbalancingv2::types::Rule) -> CloudResult<RuleInfo> {
    let arn = rule
        .rule_arn()
        .ok_or_else(|| missing("DescribeRules", "rule ARN"))?
        .to_string();
    let priority = match rule.priority() {
        None | Some("default") => None,
        Some(raw) => Some(raw.parse::<u32>().map_err(|_| {
            CloudError::new(
                CloudErrorKind::Fatal,
                "DescribeRules",
                "",
                format!("rule {arn} has an unreadable priority {raw:?}"),
            )
        })?),
    };
    let mut path_patterns = Vec::new();
    let mut host_headers = Vec::new();
    let mut source_ips = Vec::new();
    for condition in rule.conditions() {
        match condition.field() {
            Some("path-pattern") => {
                if let Some(config) = condition.path_pattern_config() {
                    path_patterns.extend(config.values().iter().cloned());
                }
                path_patterns.extend(condition.values().iter().cloned());
            }
            Some("host-header") => {
                if let Some(config) = condition.host_header_config() {
                    host_headers.extend(config.values().iter().cloned());
                }
                host_headers.extend(condition.values().iter().cloned());
            }
            Some("source-ip") => {
                if let Some(config) = condition.source_ip_config() {
                    source_ips.extend(config.values().iter().cloned());
                }
            }
            _ => {}
        }
    }
    path_patterns.dedup();
    host_headers.dedup();
    let mut target_group_arns: Vec<String> = Vec::new();
    for action in rule.actions() {
        if action.r#type() != Some(&aws_sdk_elasticloadbalancingv2::types::ActionTypeEnum::Forward)
        {
            continue;
        }
        let from_forward_config = action
            .forward_config()
            .map(|config| config.target_groups())
            .unwrap_or_default()
            .iter()
            .filter_map(|group| group.target_group_arn());
        for arn in action
            .target_group_arn()
            .into_iter()
            .chain(from_forward_config)
        {
            if !target_group_arns.iter().any(|known| known == arn) {
                target_group_arns.push(arn.to_string());
            }
        }
    }
    Ok(RuleInfo {
        arn,
        priority,
        path_patterns,
        host_headers,
        source_ips,
        target_group_arns,
    })
}

/// A rule's conditions for `condition`: one path pattern or host header; a warm rule's source
/// address and path pattern.
fn rule_conditions(
    condition: &RuleMatch,
) -> Vec<aws_sdk_elasticloadbalancingv2::types::RuleCondition> {
    use aws_sdk_elasticloadbalancingv2::types::{
        HostHeaderConditionConfig, PathPatternConditionConfig, RuleCondition,
        SourceIpConditionConfig,
    };
    let path = |path: &str| {
        RuleCondition::builder()
            .field("path-pattern")
            .path_pattern_config(PathPatternConditionConfig::builder().values(path).build())
            .build()
    };
    match condition {
        RuleMatch::Path(value) => vec![path(value)],
        RuleMatch::Host(host) => vec![
            RuleCondition::builder()
                .field("host-header")
                .host_header_config(HostHeaderConditionConfig::builder().values(host).build())
                .build(),
        ],
        RuleMatch::Warm(value) => vec![
            RuleCondition::builder()
                .field("source-ip")
                .source_ip_config(
                    SourceIpConditionConfig::builder()
                        .values(crate::model::WARM_SOURCE_IP)
                        .build(),
                )
                .build(),
            path(value),
        ],
    }
}

/// A health-check count for the SDK's `i32` fields. Config validation keeps them at most 300, so
/// the saturation never happens.
fn whole_seconds(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_info_reads_both_pattern_forms_and_both_forward_forms() {
        use aws_sdk_elasticloadbalancingv2::types::{
            Action, ActionTypeEnum, ForwardActionConfig, PathPatternConditionConfig, Rule,
            RuleCondition, TargetGroupTuple,
        };
        let rule = Rule::builder()
            .rule_arn("arn:rule")
            .priority("7")
            .conditions(
                RuleCondition::builder()
                    .field("path-pattern")
                    .path_pattern_config(
                        PathPatternConditionConfig::builder().values("/a/*").build(),
                    )
                    .build(),
            )
            .conditions(
                RuleCondition::builder()
                    .field("path-pattern")
                    .values("/b/*")
                    .build(),
            )
            .conditions(
                RuleCondition::builder()
                    .field("host-header")
                    .values("x.example")
                    .build(),
            )
            .actions(
                Action::builder()
                    .r#type(ActionTypeEnum::Forward)
                    .target_group_arn("arn:tg1")
                    .forward_config(
                        ForwardActionConfig::builder()
                            .target_groups(
                                TargetGroupTuple::builder()
                                    .target_group_arn("arn:tg1")
                                    .build(),
                            )
                            .target_groups(
                                TargetGroupTuple::builder()
                                    .target_group_arn("arn:tg2")
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            )
            .build();
        let info = rule_info(&rule).unwrap();
        assert_eq!(info.priority, Some(7));
        assert_eq!(info.path_patterns, vec!["/a/*", "/b/*"]);
        assert_eq!(info.host_headers, vec!["x.example"]);
        assert_eq!(info.target_group_arns, vec!["arn:tg1", "arn:tg2"]);

        let default = Rule::builder()
            .rule_arn("arn:default")
            .priority("default")
            .build();
        assert_eq!(rule_info(&default).unwrap().priority, None);
    }
}
