//! The AWS adapter: [`AwsCloud`] implements the [`Cloud`] port with the AWS SDK. This file holds
//! the configuration, the clients and the port itself, which only delegates: one child module a
//! service (`ec2`, `ssm`, `secrets`, `elb`; `sqs` is the interruption queue), and `errors`, the
//! wrapper every SDK call goes through.
//!
//! Owns: every `aws_sdk_*` type in the crate (here and in the children), the SDK's retry and
//! timeout configuration, counting the SDK's attempts for the limiter ([`RetryMeter`]), the one
//! table that maps AWS error codes to [`CloudErrorKind`](super::CloudErrorKind)
//! (`errors::classify`), and the per-call metrics (`spotpool_aws_calls_total`,
//! `spotpool_aws_call_duration_seconds`).
//!
//! Must not: decide anything (that is `plan`), retry on its own (the SDK's standard retry mode
//! does that; splitting a failed batch into single calls is not a retry), or let a secret value
//! reach an error, a log line or a `Debug` output.

mod cloudwatch;
mod ebs;
mod ec2;
mod ecr;
mod elb;
mod errors;
mod quotas;
mod secrets;
mod sqs;
mod ssm;

pub use sqs::AwsInterruptionQueue;

use super::limit::RetryMeter;
use super::{
    Cloud, CloudInstance, CloudResult, CloudSnapshot, CloudVolume, CommandStatus, HealthCheck,
    LaunchRequest, PoolResource, RuleAction, RuleInfo, SnapshotState, Tags, TargetGroupMetric,
    VolumeRequest,
};
use crate::model::InstanceId;
use crate::model::quota::Quota;
use aws_sdk_ec2::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_ec2::config::{ConfigBag, Intercept, RuntimeComponents};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The pool's view of AWS: which pool it owns and how to launch and route its instances.
#[derive(Debug, Clone)]
pub struct AwsCloudConfig {
    /// Value of the `spotpool:pool` tag.
    pub pool: String,
    pub vpc_id: String,
    /// May be empty: then the launch template's security groups are used.
    pub security_group_ids: Vec<String>,
    pub instance_profile_arn: Option<String>,
    /// Budget of one operation, retries included.
    pub call_timeout: Duration,
    /// Budget of one attempt of an operation.
    pub attempt_timeout: Duration,
    /// Attempts per operation in the SDK's standard retry mode (1 = no retry).
    pub max_attempts: u32,
    /// Attempts of the API's request-path secret writes (`put_secret`, `update_secret`): a PUT
    /// has no later pass to retry them, so they get a longer budget. `call_timeout` still bounds
    /// them.
    pub secret_write_attempts: u32,
}

/// DescribeInstances' largest page. AWS accepts 5..=1000.
const DEFAULT_PAGE_SIZE: i32 = 1000;
/// Longest connect before an attempt counts as failed; an unreachable endpoint should fail fast.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// [`Cloud`] on AWS: EC2 for instances, SSM for commands, Secrets Manager, ELBv2 for routing.
#[derive(Debug, Clone)]
pub struct AwsCloud {
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    secrets: aws_sdk_secretsmanager::Client,
    elb: aws_sdk_elasticloadbalancingv2::Client,
    cloudwatch: aws_sdk_cloudwatch::Client,
    quotas: aws_sdk_servicequotas::Client,
    ecr: aws_sdk_ecr::Client,
    config: AwsCloudConfig,
    /// Region of the clients, for instance ARNs.
    region: String,
    page_size: i32,
    /// The SDK's retries, for the client-side limiter.
    retries: Arc<RetryMeter>,
}

/// Loads the SDK config from the environment (AWS_REGION, the credentials chain,
/// AWS_ENDPOINT_URL) with the retry and timeout config of `config`. Every client of the daemon
/// ([`AwsCloud`]'s and [`AwsInterruptionQueue`]'s) is built from it.
pub async fn load_sdk_config(config: &AwsCloudConfig) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(retry_config(config))
        .timeout_config(timeout_config(config))
        .load()
        .await
}

impl AwsCloud {
    /// Builds the clients from `sdk`, with the retry and timeout config of `config` replacing
    /// whatever `sdk` carries, so every caller gets the same retry behaviour.
    pub fn new(sdk: &aws_config::SdkConfig, config: AwsCloudConfig) -> AwsCloud {
        let sdk = sdk
            .to_builder()
            .retry_config(retry_config(&config))
            .timeout_config(timeout_config(&config))
            .build();
        let region = match sdk.region() {
            Some(region) => region.to_string(),
            None => {
                tracing::warn!("no AWS region configured; instance ARNs will lack the region");
                String::new()
            }
        };
        let retries = Arc::new(RetryMeter::default());
        // Each service's client from `sdk`, with the attempt counter feeding `retries`.
        macro_rules! client {
            ($service:ident) => {
                $service::Client::from_conf(
                    $service::config::Builder::from(&sdk)
                        .interceptor(AttemptCounter {
                            retries: Some(retries.clone()),
                        })
                        .build(),
                )
            };
        }
        AwsCloud {
            ec2: client!(aws_sdk_ec2),
            ssm: client!(aws_sdk_ssm),
            secrets: client!(aws_sdk_secretsmanager),
            elb: client!(aws_sdk_elasticloadbalancingv2),
            cloudwatch: client!(aws_sdk_cloudwatch),
            quotas: client!(aws_sdk_servicequotas),
            ecr: client!(aws_sdk_ecr),
            retries,
            config,
            region,
            page_size: DEFAULT_PAGE_SIZE,
        }
    }

    /// Sets the page size of DescribeInstances and DescribeRules (the latter capped at 400).
    /// Tests use a small one to exercise pagination.
    pub fn with_page_size(mut self, page_size: i32) -> Self {
        self.page_size = page_size.max(1);
        self
    }
}

fn retry_config(config: &AwsCloudConfig) -> aws_config::retry::RetryConfig {
    aws_config::retry::RetryConfig::standard().with_max_attempts(config.max_attempts.max(1))
}

tokio::task_local! {
    /// The SDK call `call` is awaiting in this task: its operation and its attempts so far.
    static IN_FLIGHT: (&'static str, Cell<u32>);
}

/// Before each of the SDK's attempts (`read_before_attempt` runs once per attempt): refuses it
/// while the task's [`crate::cloud::ATTEMPT_GATE`] says no (a call begun by a leader that then
/// froze sends no retry after its term ended), and records every attempt after the first in the
/// [`RetryMeter`]: AWS meters attempts, and the client-side limiter only sees calls. The
/// operation comes from `call`, which every SDK call goes through.
#[derive(Debug)]
pub(crate) struct AttemptCounter {
    /// None: the attempts are not metered (the interruption queue's long polls).
    pub(crate) retries: Option<Arc<RetryMeter>>,
}

impl Intercept for AttemptCounter {
    fn name(&self) -> &'static str {
        "spotpool_attempt_counter"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Ok(Some(reason)) = crate::cloud::ATTEMPT_GATE.try_with(|gate| gate()) {
            return Err(format!("not sent: {reason}").into());
        }
        let _ = IN_FLIGHT.try_with(|(operation, attempts)| {
            attempts.set(attempts.get() + 1);
            if let (true, Some(retries)) = (attempts.get() > 1, &self.retries) {
                retries.record(operation);
            }
        });
        Ok(())
    }
}

fn timeout_config(config: &AwsCloudConfig) -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .operation_timeout(config.call_timeout)
        .operation_attempt_timeout(config.attempt_timeout)
        .connect_timeout(config.attempt_timeout.min(MAX_CONNECT_TIMEOUT))
        .build()
}

/// One conversion from our `Tags` to each service's own `Tag` type (the SDK crates do not share
/// one, but their builders have the same shape).
macro_rules! sdk_tags {
    ($name:ident, $tag:ty) => {
        fn $name(tags: &Tags) -> Vec<$tag> {
            tags.iter()
                .map(|(key, value)| <$tag>::builder().key(key).value(value).build())
                .collect()
        }
    };
}

// Each service's file instantiates it for that service's `Tag` type.
use sdk_tags;

// --- The port: each method is the same method of one service's file -----------------------

#[async_trait::async_trait]
impl Cloud for AwsCloud {
    async fn describe_pool_instances(&self) -> CloudResult<Vec<CloudInstance>> {
        self.ec2_describe_pool_instances().await
    }

    async fn launch_instances(&self, request: &LaunchRequest) -> CloudResult<Vec<InstanceId>> {
        self.ec2_launch_instances(request).await
    }

    async fn tag_instance(&self, instance: &InstanceId, tags: &Tags) -> CloudResult<()> {
        self.ec2_tag_instance(instance, tags).await
    }

    async fn keep_blank_workspace(
        &self,
        instance: &InstanceId,
        volume_id: &str,
        device: &str,
        tags: &Tags,
    ) -> CloudResult<()> {
        self.ec2_keep_blank_workspace(instance, volume_id, device, tags)
            .await
    }

    async fn untag_instance(&self, instance: &InstanceId, keys: &[&str]) -> CloudResult<()> {
        self.ec2_untag_instance(instance, keys).await
    }

    async fn terminate_instances(&self, instances: &[InstanceId]) -> CloudResult<()> {
        self.ec2_terminate_instances(instances).await
    }

    async fn send_command(
        &self,
        instance: &InstanceId,
        comment: &str,
        script: &str,
        timeout_seconds: u32,
    ) -> CloudResult<String> {
        self.ssm_send_command(instance, comment, script, timeout_seconds)
            .await
    }

    async fn command_status(
        &self,
        command_id: &str,
        instance: &InstanceId,
    ) -> CloudResult<CommandStatus> {
        self.ssm_command_status(command_id, instance).await
    }

    async fn put_secret(&self, name: &str, value: &str, tags: &Tags) -> CloudResult<String> {
        self.secrets_put_secret(name, value, tags).await
    }

    async fn update_secret(&self, secret_id: &str, value: &str) -> CloudResult<()> {
        self.secrets_update_secret(secret_id, value).await
    }

    async fn tag_secret(&self, secret_id: &str, tags: &Tags) -> CloudResult<()> {
        self.secrets_tag_secret(secret_id, tags).await
    }

    async fn untag_secret(&self, secret_id: &str, keys: &[&str]) -> CloudResult<()> {
        self.secrets_untag_secret(secret_id, keys).await
    }

    async fn delete_secret(&self, secret_id: &str) -> CloudResult<()> {
        self.secrets_delete_secret(secret_id).await
    }

    async fn create_target_group(
        &self,
        name: &str,
        port: u16,
        health: &HealthCheck,
        tags: &Tags,
    ) -> CloudResult<String> {
        self.elb_create_target_group(name, port, health, tags).await
    }

    async fn target_health(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        port: u16,
    ) -> CloudResult<crate::cloud::TargetHealth> {
        self.elb_target_health(target_group_arn, instance, port)
            .await
    }

    async fn deregister_target(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        port: u16,
    ) -> CloudResult<()> {
        self.elb_deregister_target(target_group_arn, instance, port)
            .await
    }

    async fn register_target(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        port: u16,
    ) -> CloudResult<()> {
        self.elb_register_target(target_group_arn, instance, port)
            .await
    }

    async fn find_target_group(&self, name: &str) -> CloudResult<Option<String>> {
        self.elb_find_target_group(name).await
    }

    async fn delete_target_group(&self, target_group_arn: &str) -> CloudResult<()> {
        self.elb_delete_target_group(target_group_arn).await
    }

    async fn describe_rules(&self, listener_arn: &str) -> CloudResult<Vec<RuleInfo>> {
        self.elb_describe_rules(listener_arn).await
    }

    async fn create_rule(
        &self,
        listener_arn: &str,
        priority: u32,
        condition: &crate::model::RuleMatch,
        target_group_arn: &str,
        tags: &Tags,
    ) -> CloudResult<String> {
        self.elb_create_rule(listener_arn, priority, condition, target_group_arn, tags)
            .await
    }

    async fn delete_rule(&self, rule_arn: &str) -> CloudResult<()> {
        self.elb_delete_rule(rule_arn).await
    }

    async fn list_pool_target_groups(&self) -> CloudResult<Vec<PoolResource>> {
        self.elb_list_pool_target_groups().await
    }

    async fn list_pool_rules(&self, listener_arn: &str) -> CloudResult<Vec<PoolResource>> {
        self.elb_list_pool_rules(listener_arn).await
    }

    async fn list_pool_secrets(&self) -> CloudResult<Vec<PoolResource>> {
        self.secrets_list_pool_secrets().await
    }

    async fn set_rule_action(&self, rule_arn: &str, action: &RuleAction) -> CloudResult<()> {
        self.elb_set_rule_action(rule_arn, action).await
    }

    async fn set_rule_match(
        &self,
        rule_arn: &str,
        condition: &crate::model::RuleMatch,
    ) -> CloudResult<()> {
        self.elb_set_rule_match(rule_arn, condition).await
    }

    async fn tag_elb_resources(&self, arns: &[String], tags: &Tags) -> CloudResult<()> {
        self.elb_add_tags(arns, tags).await
    }

    async fn create_volume(&self, request: &VolumeRequest) -> CloudResult<String> {
        self.ebs_create_volume(request).await
    }

    async fn describe_volume(&self, volume_id: &str) -> CloudResult<Option<CloudVolume>> {
        self.ebs_describe_volume(volume_id).await
    }

    async fn list_pool_volumes(&self, owner: Option<&str>) -> CloudResult<Vec<CloudVolume>> {
        self.ebs_list_pool_volumes(owner).await
    }

    async fn attach_volume(
        &self,
        volume_id: &str,
        instance: &InstanceId,
        device: &str,
    ) -> CloudResult<()> {
        self.ebs_attach_volume(volume_id, instance, device).await
    }

    async fn detach_volume(
        &self,
        volume_id: &str,
        instance: &InstanceId,
        force: bool,
    ) -> CloudResult<()> {
        self.ebs_detach_volume(volume_id, instance, force).await
    }

    async fn delete_volume(&self, volume_id: &str) -> CloudResult<()> {
        self.ebs_delete_volume(volume_id).await
    }

    async fn create_snapshot(&self, volume_id: &str, tags: &Tags) -> CloudResult<String> {
        self.ebs_create_snapshot(volume_id, tags).await
    }

    async fn list_pool_snapshots(&self, owner: Option<&str>) -> CloudResult<Vec<CloudSnapshot>> {
        self.ebs_list_pool_snapshots(owner).await
    }

    async fn snapshot_state(&self, snapshot_id: &str) -> CloudResult<Option<SnapshotState>> {
        self.ebs_snapshot_state(snapshot_id).await
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> CloudResult<()> {
        self.ebs_delete_snapshot(snapshot_id).await
    }

    async fn subnet_zones(&self, subnet_ids: &[String]) -> CloudResult<BTreeMap<String, String>> {
        self.ebs_subnet_zones(subnet_ids).await
    }

    async fn agents_online(
        &self,
        instances: &[InstanceId],
    ) -> CloudResult<Option<std::collections::BTreeSet<InstanceId>>> {
        self.ssm_agents_online(instances).await
    }

    async fn instance_vcpus(
        &self,
        instance_types: &[String],
    ) -> CloudResult<BTreeMap<String, u32>> {
        self.aws_instance_vcpus(instance_types).await
    }

    async fn spot_prices(
        &self,
        instance_types: &[String],
        zones: &[String],
    ) -> CloudResult<Vec<crate::model::cost::SpotPrice>> {
        self.aws_spot_prices(instance_types, zones).await
    }

    async fn quota_values(&self, quotas: &[Quota]) -> CloudResult<BTreeMap<Quota, f64>> {
        self.aws_quota_values(quotas).await
    }

    async fn image_digest(&self, image: &crate::image::EcrImage) -> CloudResult<String> {
        self.ecr_image_digest(image).await
    }

    async fn request_counts(
        &self,
        groups: &[TargetGroupMetric],
        window: Duration,
    ) -> CloudResult<Vec<f64>> {
        self.cloudwatch_request_counts(groups, window).await
    }

    fn retry_meter(&self) -> Option<Arc<RetryMeter>> {
        Some(self.retries.clone())
    }
}
