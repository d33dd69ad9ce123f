//! EC2 for [`AwsCloud`]: the pool's instances. DescribeInstances (paged: the pool's live
//! instances with their tags), RunInstances (spot, or the on-demand template), CreateTags and
//! DeleteTags, TerminateInstances (a batch with an unknown id is split); instance ARNs and the
//! mapping of EC2's states to [`Lifecycle`].
//!
//! Must not: decide which instances to launch or terminate (that is `plan`), or send DeleteTags
//! without keys (it would delete every tag of the instance).

use super::errors::{call, next_page, with_context};
use super::{AwsCloud, sdk_tags};
use crate::cloud::BlankWorkspace;
use crate::cloud::{
    CloudError, CloudErrorKind, CloudInstance, CloudResult, LaunchRequest, Lifecycle, Tags, tags,
};
use crate::instance_scripts::BLANK_WORKSPACE_DEVICE_NAME;
use crate::model::{InstanceId, InstanceStatus};

/// States of an instance that still counts as part of the pool (everything but terminated).
const LIVE_STATES: [&str; 5] = ["pending", "running", "stopping", "stopped", "shutting-down"];

sdk_tags!(ec2_tags, aws_sdk_ec2::types::Tag);

impl AwsCloud {
    pub(super) async fn ec2_describe_pool_instances(&self) -> CloudResult<Vec<CloudInstance>> {
        use aws_sdk_ec2::types::Filter;
        let pool_filter = Filter::builder()
            .name(format!("tag:{}", tags::POOL))
            .values(&self.config.pool)
            .build();
        let state_filter = Filter::builder()
            .name("instance-state-name")
            .set_values(Some(LIVE_STATES.iter().map(|s| s.to_string()).collect()))
            .build();
        let mut instances = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let page = call(
                "ec2",
                "DescribeInstances",
                self.ec2
                    .describe_instances()
                    .filters(pool_filter.clone())
                    .filters(state_filter.clone())
                    .max_results(self.page_size)
                    .set_next_token(next_token.clone())
                    .send(),
            )
            .await
            .map_err(|err| {
                with_context(
                    err,
                    format!("listing instances of pool {}", self.config.pool),
                )
            })?;
            for reservation in page.reservations() {
                let owner_id = reservation.owner_id().unwrap_or_default();
                for instance in reservation.instances() {
                    let Some(id) = instance.instance_id() else {
                        continue;
                    };
                    let tag = |key: &str| {
                        instance
                            .tags()
                            .iter()
                            .find(|tag| tag.key() == Some(key))
                            .and_then(|tag| tag.value())
                            .map(str::to_string)
                    };
                    let launched_at = instance
                        .launch_time()
                        .and_then(|time| time.to_millis().ok())
                        .unwrap_or_default();
                    instances.push(CloudInstance {
                        id: InstanceId(id.to_string()),
                        arn: self.instance_arn(owner_id, id),
                        lifecycle: lifecycle(instance.state().and_then(|state| state.name())),
                        instance_type: instance
                            .instance_type()
                            .map(|t| t.as_str().to_string())
                            .unwrap_or_default(),
                        availability_zone: instance
                            .placement()
                            .and_then(|placement| placement.availability_zone())
                            .unwrap_or_default()
                            .to_string(),
                        subnet_id: instance.subnet_id().map(str::to_string),
                        private_ip: instance.private_ip_address().map(str::to_string),
                        launched_at,
                        tier: tag(tags::TIER),
                        status: tag(tags::STATUS).and_then(|raw| InstanceStatus::parse(&raw)),
                        user_id: tag(tags::USER_ID),
                        blank_volume_id: instance
                            .block_device_mappings()
                            .iter()
                            .find(|m| m.device_name() == Some(BLANK_WORKSPACE_DEVICE_NAME))
                            .and_then(|m| m.ebs())
                            .and_then(|ebs| ebs.volume_id())
                            .map(str::to_string),
                    });
                }
            }
            next_token = next_page("DescribeInstances", next_token, page.next_token())?;
            if next_token.is_none() {
                break;
            }
        }
        Ok(instances)
    }

    pub(super) async fn ec2_launch_instances(
        &self,
        request: &LaunchRequest,
    ) -> CloudResult<Vec<InstanceId>> {
        use aws_sdk_ec2::types::{
            HttpTokensState, IamInstanceProfileSpecification, InstanceInterruptionBehavior,
            InstanceMarketOptionsRequest, InstanceMetadataEndpointState,
            InstanceMetadataOptionsRequest, InstanceType, LaunchTemplateSpecification, MarketType,
            ResourceType, SpotInstanceType, SpotMarketOptions, TagSpecification,
        };
        if request.count == 0 {
            return Ok(Vec::new());
        }
        let max_count = i32::try_from(request.count).map_err(|_| {
            CloudError::new(
                CloudErrorKind::Fatal,
                "RunInstances",
                "",
                format!("cannot launch {} instances at once", request.count),
            )
        })?;
        let mut launch_tags = Tags::new();
        launch_tags.insert(tags::NAME.to_string(), tags::NAME_VALUE.to_string());
        launch_tags.insert(tags::POOL.to_string(), self.config.pool.clone());
        launch_tags.insert(tags::TIER.to_string(), request.tier.clone());
        launch_tags.insert(
            tags::STATUS.to_string(),
            InstanceStatus::Initializing.as_str().to_string(),
        );
        let tag_specification = |resource_type: ResourceType| {
            TagSpecification::builder()
                .resource_type(resource_type)
                .set_tags(Some(ec2_tags(&launch_tags)))
                .build()
        };
        // Spot, metadata and profile options are explicit even though the launch template has
        // them: moto ignores the template's, and explicit is clearer to read anyway.
        let market = InstanceMarketOptionsRequest::builder()
            .market_type(MarketType::Spot)
            .spot_options(
                SpotMarketOptions::builder()
                    .spot_instance_type(SpotInstanceType::OneTime)
                    .instance_interruption_behavior(InstanceInterruptionBehavior::Terminate)
                    .build(),
            )
            .build();
        let metadata = InstanceMetadataOptionsRequest::builder()
            .http_tokens(HttpTokensState::Required)
            .http_put_response_hop_limit(1)
            .http_endpoint(InstanceMetadataEndpointState::Enabled)
            .build();
        let mut run = self
            .ec2
            .run_instances()
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_id(&request.launch_template.id)
                    .version(&request.launch_template.version)
                    .build(),
            )
            .instance_type(InstanceType::from(request.instance_type.as_str()))
            .subnet_id(&request.subnet_id)
            .min_count(1)
            .max_count(max_count)
            .client_token(&request.client_token)
            .set_instance_market_options(request.spot.then_some(market))
            .metadata_options(metadata)
            .tag_specifications(tag_specification(ResourceType::Instance))
            .tag_specifications(tag_specification(ResourceType::Volume));
        if let Some(blank) = &request.blank_workspace {
            run = run.block_device_mappings(blank_mapping(blank));
        }
        if let Some(arn) = &self.config.instance_profile_arn {
            run = run
                .iam_instance_profile(IamInstanceProfileSpecification::builder().arn(arn).build());
        }
        if !self.config.security_group_ids.is_empty() {
            run = run.set_security_group_ids(Some(self.config.security_group_ids.clone()));
        }
        let output = call("ec2", "RunInstances", run.send())
            .await
            .map_err(|err| {
                let hint = launch_hint(&err.code);
                with_context(
                    err,
                    format!(
                        "launching {} {} instances of tier {} in subnet {}{hint}",
                        request.count, request.instance_type, request.tier, request.subnet_id
                    ),
                )
            })?;
        Ok(output
            .instances()
            .iter()
            .filter_map(|instance| instance.instance_id())
            .map(|id| InstanceId(id.to_string()))
            .collect())
    }

    pub(super) async fn ec2_tag_instance(
        &self,
        instance: &InstanceId,
        tags: &Tags,
    ) -> CloudResult<()> {
        if tags.is_empty() {
            return Ok(());
        }
        call(
            "ec2",
            "CreateTags",
            self.ec2
                .create_tags()
                .resources(instance.0.clone())
                .set_tags(Some(ec2_tags(tags)))
                .send(),
        )
        .await
        .map_err(|err| with_context(err, format!("tagging instance {instance}")))?;
        Ok(())
    }

    /// Tags first, then `DeleteOnTermination` off: a blank that is not tagged as the user's
    /// still goes with its instance, so an undo can forget it (the pool's permissions let the
    /// daemon detach only tagged workspaces). A redo after a crash finds the tags there already:
    /// the permissions allow tagging only a volume that is no workspace yet, so a refusal is
    /// checked against the volume's tags before it counts.
    pub(super) async fn ec2_keep_blank_workspace(
        &self,
        instance: &InstanceId,
        volume_id: &str,
        device: &str,
        tags: &Tags,
    ) -> CloudResult<()> {
        use aws_sdk_ec2::types::{
            EbsInstanceBlockDeviceSpecification as Keep,
            InstanceBlockDeviceMappingSpecification as Mapping,
        };
        let context = format!("keeping the blank workspace {volume_id} of {instance}");
        let tagged = call(
            "ec2",
            "CreateTags",
            self.ec2
                .create_tags()
                .resources(volume_id)
                .set_tags(Some(ec2_tags(tags)))
                .send(),
        )
        .await;
        if let Err(err) = tagged {
            let err = with_context(err, context.clone());
            let has_them = !err.kind.is_retryable()
                && self
                    .ebs_describe_volume(volume_id)
                    .await?
                    .is_some_and(|volume| {
                        tags.iter()
                            .all(|(key, value)| volume.tags.get(key) == Some(value))
                    });
            if !has_them {
                return Err(err);
            }
        }
        let keep = Mapping::builder()
            .device_name(device)
            .ebs(Keep::builder().delete_on_termination(false).build())
            .build();
        call(
            "ec2",
            "ModifyInstanceAttribute",
            self.ec2
                .modify_instance_attribute()
                .instance_id(&instance.0)
                .block_device_mappings(keep)
                .send(),
        )
        .await
        .map_err(|err| with_context(err, context))?;
        Ok(())
    }

    pub(super) async fn ec2_untag_instance(
        &self,
        instance: &InstanceId,
        keys: &[&str],
    ) -> CloudResult<()> {
        // DeleteTags without tags deletes every tag of the resource: never send that.
        if keys.is_empty() {
            return Ok(());
        }
        let tags = keys
            .iter()
            .map(|key| aws_sdk_ec2::types::Tag::builder().key(*key).build())
            .collect();
        call(
            "ec2",
            "DeleteTags",
            self.ec2
                .delete_tags()
                .resources(instance.0.clone())
                .set_tags(Some(tags))
                .send(),
        )
        .await
        .map_err(|err| with_context(err, format!("untagging instance {instance}")))?;
        Ok(())
    }

    pub(super) async fn ec2_terminate_instances(
        &self,
        instances: &[InstanceId],
    ) -> CloudResult<()> {
        if instances.is_empty() {
            return Ok(());
        }
        let ids = instances.iter().map(|id| id.0.clone()).collect();
        let result = call(
            "ec2",
            "TerminateInstances",
            self.ec2
                .terminate_instances()
                .set_instance_ids(Some(ids))
                .send(),
        )
        .await;
        match result {
            Ok(_) => Ok(()),
            // One unknown id fails the whole batch and terminates nothing. Split it so the
            // known ids still go; the unknown ones count as terminated.
            Err(err) if err.kind == CloudErrorKind::NotFound => {
                if instances.len() == 1 {
                    return Ok(());
                }
                for instance in instances {
                    self.terminate_one(instance).await?;
                }
                Ok(())
            }
            Err(err) => Err(with_context(
                err,
                format!("terminating {} instances", instances.len()),
            )),
        }
    }

    fn instance_arn(&self, owner_id: &str, instance_id: &str) -> String {
        // The partition follows the region; the secret's InstanceArn tag must match
        // ec2:SourceInstanceARN exactly, or the instance cannot read its user's secret.
        let partition = if self.region.starts_with("cn-") {
            "aws-cn"
        } else if self.region.starts_with("us-gov-") {
            "aws-us-gov"
        } else {
            "aws"
        };
        format!(
            "arn:{partition}:ec2:{}:{}:instance/{}",
            self.region, owner_id, instance_id
        )
    }

    /// Terminates one instance; an unknown one counts as terminated.
    async fn terminate_one(&self, instance: &InstanceId) -> CloudResult<()> {
        let result = call(
            "ec2",
            "TerminateInstances",
            self.ec2
                .terminate_instances()
                .instance_ids(instance.0.clone())
                .send(),
        )
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if err.kind == CloudErrorKind::NotFound => Ok(()),
            Err(err) => Err(with_context(
                err,
                format!("terminating instance {instance}"),
            )),
        }
    }
}

fn lifecycle(state: Option<&aws_sdk_ec2::types::InstanceStateName>) -> Lifecycle {
    use aws_sdk_ec2::types::InstanceStateName as State;
    match state {
        Some(State::Pending) => Lifecycle::Pending,
        Some(State::Running) => Lifecycle::Running,
        Some(State::Stopping) => Lifecycle::Stopping,
        Some(State::Stopped) => Lifecycle::Stopped,
        Some(State::ShuttingDown) => Lifecycle::ShuttingDown,
        Some(State::Terminated) => Lifecycle::Terminated,
        // An unknown or missing state: treat the instance as unusable rather than serve a user on it.
        _ => Lifecycle::ShuttingDown,
    }
}

/// What on-call should do about a launch refused for an account-level reason, appended to the
/// error's context (and so to `pool.launch_backoff`, `pool.launch_halted` and the log).
fn launch_hint(code: &str) -> &'static str {
    match code {
        // A fresh account without the EC2 Spot service-linked role, which the daemon may not
        // create (docs/DEPLOY.md, "Account prerequisites").
        "AuthFailure.ServiceLinkedRoleCreationNotPermitted" => {
            " (the account lacks the EC2 Spot service-linked role AWSServiceRoleForEC2Spot: create \
             it once with `aws iam create-service-linked-role --aws-service-name \
             spot.amazonaws.com`, or Terraform's create_spot_service_linked_role = true)"
        }
        _ => "",
    }
}

/// The spare's blank workspace in RunInstances: an encrypted gp3 volume that goes with the
/// instance unless a claim keeps it.
fn blank_mapping(blank: &BlankWorkspace) -> aws_sdk_ec2::types::BlockDeviceMapping {
    use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, VolumeType};
    BlockDeviceMapping::builder()
        .device_name(BLANK_WORKSPACE_DEVICE_NAME)
        .ebs(
            EbsBlockDevice::builder()
                .volume_size(blank.size_gib as i32)
                .volume_type(VolumeType::Gp3)
                .encrypted(true)
                .set_kms_key_id(blank.kms_key_id.clone())
                .delete_on_termination(true)
                .build(),
        )
        .build()
}

#[cfg(test)]
mod hint_tests {
    #[test]
    fn account_level_refusals_say_what_to_do() {
        let hint = super::launch_hint("AuthFailure.ServiceLinkedRoleCreationNotPermitted");
        assert!(hint.contains("create-service-linked-role"), "{hint}");
        assert_eq!(super::launch_hint("InsufficientInstanceCapacity"), "");
    }
}
