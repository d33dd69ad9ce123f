//! The AWS adapter: [`AwsCloud`] implements the [`Cloud`] port with the AWS SDK.
//!
//! Owns: every `aws_sdk_*` type in the crate (SQS in the child module `sqs`, the interruption
//! queue), the SDK's retry and timeout configuration, the one table that maps AWS error codes to
//! [`CloudErrorKind`] ([`classify`]), and the per-call metrics (`spotpool_aws_calls_total`,
//! `spotpool_aws_call_duration_seconds`).
//!
//! Must not: decide anything (that is `plan`), retry on its own (the SDK's standard retry mode
//! does that; splitting a failed batch into single calls is not a retry), or let a secret value
//! reach an error, a log line or a `Debug` output.

mod sqs;

pub use sqs::AwsInterruptionQueue;

use super::limit::RetryMeter;
use super::{
    Cloud, CloudError, CloudErrorKind, CloudInstance, CloudResult, CommandStatus, HealthCheck,
    LaunchRequest, Lifecycle, PoolResource, RuleInfo, Tags, tags,
};
use crate::model::{InstanceId, InstanceStatus};
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_ec2::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_ec2::error::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The pool's view of AWS: which pool it owns and how to launch and route its instances.
#[derive(Debug, Clone)]
pub struct AwsCloudConfig {
    /// Value of the `spotpool:pool` tag.
    pub pool: String,
    pub launch_template_id: String,
    /// e.g. `$Default`.
    pub launch_template_version: String,
    /// Template for on-demand fallback launches (no market options); None disables them.
    pub on_demand_launch_template_id: Option<String>,
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
/// DescribeRules' largest page. AWS accepts 1..=400.
const MAX_RULES_PAGE_SIZE: i32 = 400;
/// ELBv2 DescribeTags takes at most 20 resource ARNs.
const MAX_ELB_TAG_ARNS: usize = 20;
/// ListSecrets returns at most 100 secrets per page.
const MAX_SECRETS_PAGE_SIZE: i32 = 100;
/// Longest connect before an attempt counts as failed; an unreachable endpoint should fail fast.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// SSM's limit on a command comment.
const MAX_COMMENT_CHARS: usize = 100;
/// How much of a failed command's stderr is kept.
const MAX_FAILURE_CHARS: usize = 500;
/// States of an instance that still counts as part of the pool (everything but terminated).
const LIVE_STATES: [&str; 5] = ["pending", "running", "stopping", "stopped", "shutting-down"];

/// [`Cloud`] on AWS: EC2 for instances, SSM for commands, Secrets Manager, ELBv2 for routing.
#[derive(Debug, Clone)]
pub struct AwsCloud {
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    secrets: aws_sdk_secretsmanager::Client,
    elb: aws_sdk_elasticloadbalancingv2::Client,
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
                            retries: retries.clone(),
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

    /// TagResource on a secret, with a per-operation config override (the request path's
    /// longer retry budget) or the client's.
    async fn tag_secret_with(
        &self,
        secret_id: &str,
        tags: &Tags,
        config_override: Option<aws_sdk_secretsmanager::config::Builder>,
    ) -> CloudResult<()> {
        if tags.is_empty() {
            return Ok(());
        }
        let mut request = self
            .secrets
            .tag_resource()
            .secret_id(secret_id)
            .set_tags(Some(secret_tags(tags)))
            .customize();
        if let Some(config_override) = config_override {
            request = request.config_override(config_override);
        }
        call("secretsmanager", "TagResource", request.send())
            .await
            .map_err(|err| with_context(err, format!("tagging secret {secret_id}")))?;
        Ok(())
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
}

impl AwsCloud {
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

fn retry_config(config: &AwsCloudConfig) -> aws_config::retry::RetryConfig {
    aws_config::retry::RetryConfig::standard().with_max_attempts(config.max_attempts.max(1))
}

/// The per-operation override of the request-path secret writes: the same standard retry mode
/// with `secret_write_attempts`. Everything else (timeouts, endpoint, credentials) stays the
/// client's.
fn secret_write_override(config: &AwsCloudConfig) -> aws_sdk_secretsmanager::config::Builder {
    aws_sdk_secretsmanager::config::Builder::default().retry_config(
        aws_config::retry::RetryConfig::standard()
            .with_max_attempts(config.secret_write_attempts.max(1)),
    )
}

tokio::task_local! {
    /// The SDK call `call` is awaiting in this task: its operation and its attempts so far.
    static IN_FLIGHT: (&'static str, Cell<u32>);
}

/// Counts the SDK's attempts of each call (`read_before_attempt` runs once per attempt) and
/// records every attempt after the first in the [`RetryMeter`]: AWS meters attempts, and the
/// client-side limiter only sees calls. The operation comes from `call`, which every SDK call
/// goes through.
#[derive(Debug)]
struct AttemptCounter {
    retries: Arc<RetryMeter>,
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
        let _ = IN_FLIGHT.try_with(|(operation, attempts)| {
            attempts.set(attempts.get() + 1);
            if attempts.get() > 1 {
                self.retries.record(operation);
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

// --- Errors and metrics --------------------------------------------------------------------

/// AWS error codes and their class. Codes are exact and case-sensitive: EC2's
/// `InvalidInstanceID.NotFound` and SSM's `InvalidInstanceId` are different codes.
/// A code not listed here is `Transient` if AWS answered 5xx, `Throttled` on 429, else `Fatal`.
const ERROR_CODES: &[(&str, CloudErrorKind)] = &[
    // Rate limits, left over after the SDK's retries.
    ("RequestLimitExceeded", CloudErrorKind::Throttled),
    ("Throttling", CloudErrorKind::Throttled),
    ("ThrottlingException", CloudErrorKind::Throttled),
    ("ThrottledException", CloudErrorKind::Throttled),
    ("TooManyRequestsException", CloudErrorKind::Throttled),
    ("RequestThrottled", CloudErrorKind::Throttled),
    ("RequestThrottledException", CloudErrorKind::Throttled),
    ("EC2ThrottledException", CloudErrorKind::Throttled),
    ("SlowDown", CloudErrorKind::Throttled),
    ("PriorRequestNotComplete", CloudErrorKind::Throttled),
    ("BandwidthLimitExceeded", CloudErrorKind::Throttled),
    ("TooManyUpdates", CloudErrorKind::Throttled),
    // SQS: too many messages in flight; KMS throttling the queue's encryption.
    ("OverLimit", CloudErrorKind::Throttled),
    ("KmsThrottled", CloudErrorKind::Throttled),
    // No capacity for this (instance type, zone), or a quota that says the same
    // (Karpenter's unfulfillable-capacity codes).
    ("InsufficientInstanceCapacity", CloudErrorKind::Capacity),
    ("InsufficientCapacity", CloudErrorKind::Capacity),
    ("InsufficientHostCapacity", CloudErrorKind::Capacity),
    (
        "InsufficientReservedInstanceCapacity",
        CloudErrorKind::Capacity,
    ),
    (
        "InsufficientFreeAddressesInSubnet",
        CloudErrorKind::Capacity,
    ),
    ("SpotMaxPriceTooLow", CloudErrorKind::Capacity),
    ("MaxSpotInstanceCountExceeded", CloudErrorKind::Capacity),
    ("VcpuLimitExceeded", CloudErrorKind::Capacity),
    ("InstanceLimitExceeded", CloudErrorKind::Capacity),
    ("UnfulfillableCapacity", CloudErrorKind::Capacity),
    ("ReservationCapacityExceeded", CloudErrorKind::Capacity),
    // The instance type is not offered in this zone.
    ("Unsupported", CloudErrorKind::Capacity),
    // The resources the port manages by id, gone or never there. A malformed instance id is
    // deliberately not here: ids come from AWS, so a malformed one is a bug (Fatal).
    ("InvalidInstanceID.NotFound", CloudErrorKind::NotFound),
    ("InvalidInstanceId", CloudErrorKind::NotFound),
    ("InvocationDoesNotExist", CloudErrorKind::NotFound),
    ("InvalidCommandId", CloudErrorKind::NotFound),
    ("ResourceNotFoundException", CloudErrorKind::NotFound),
    ("TargetGroupNotFound", CloudErrorKind::NotFound),
    ("RuleNotFound", CloudErrorKind::NotFound),
    ("ListenerNotFound", CloudErrorKind::NotFound),
    ("LoadBalancerNotFound", CloudErrorKind::NotFound),
    // Collisions with existing state.
    ("PriorityInUse", CloudErrorKind::Conflict),
    ("ResourceExistsException", CloudErrorKind::Conflict),
    ("DuplicateTargetGroupName", CloudErrorKind::Conflict),
    ("ResourceInUse", CloudErrorKind::Conflict),
    ("IdempotentParameterMismatch", CloudErrorKind::Conflict),
    ("IncorrectInstanceState", CloudErrorKind::Conflict),
    // SQS: a receipt handle that expired (the message was received again since, or is gone).
    ("ReceiptHandleIsInvalid", CloudErrorKind::NotFound),
    // Secrets Manager: the secret is scheduled for deletion (a force delete completes
    // asynchronously), so it can be neither created nor updated for a few seconds.
    ("InvalidRequestException", CloudErrorKind::Conflict),
    // AWS-side failures.
    ("InternalError", CloudErrorKind::Transient),
    ("InternalFailure", CloudErrorKind::Transient),
    ("InternalServerError", CloudErrorKind::Transient),
    ("InternalServiceError", CloudErrorKind::Transient),
    ("InternalServiceErrorException", CloudErrorKind::Transient),
    ("ServiceUnavailable", CloudErrorKind::Transient),
    ("ServiceUnavailableException", CloudErrorKind::Transient),
    ("Unavailable", CloudErrorKind::Transient),
    ("RequestTimeout", CloudErrorKind::Transient),
    ("RequestTimeoutException", CloudErrorKind::Transient),
];

/// Classifies a failed SDK call. The only place that looks at AWS error codes.
fn classify<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(context) => {
            let code = err.code().unwrap_or_default().to_string();
            let status = context.raw().status();
            let listed = ERROR_CODES
                .iter()
                .find(|(listed, _)| *listed == code)
                .map(|(_, kind)| *kind);
            let kind = match listed {
                Some(kind) => kind,
                None if status.as_u16() == 429 => CloudErrorKind::Throttled,
                None if status.is_server_error() => CloudErrorKind::Transient,
                None => CloudErrorKind::Fatal,
            };
            let message = match err.message() {
                Some(message) => message.to_string(),
                None => format!("HTTP {}: {}", status.as_u16(), DisplayErrorContext(&err)),
            };
            CloudError::new(kind, operation, code, message)
        }
        // The request could not even be built: a bug, not something time fixes.
        SdkError::ConstructionFailure(_) => CloudError::new(
            CloudErrorKind::Fatal,
            operation,
            "",
            DisplayErrorContext(&err).to_string(),
        ),
        // Timeouts, connection failures and unreadable responses that survived the retries.
        _ => CloudError::new(
            CloudErrorKind::Transient,
            operation,
            "",
            DisplayErrorContext(&err).to_string(),
        ),
    }
}

/// Awaits one SDK call, classifies its error and records its metrics and a debug line.
/// Not a retry wrapper: the SDK has retried already.
async fn call<T, E>(
    service: &'static str,
    operation: &'static str,
    request: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
) -> CloudResult<T>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let started = Instant::now();
    let result = IN_FLIGHT
        .scope((operation, Cell::new(0)), request)
        .await
        .map_err(|err| classify(operation, err));
    let elapsed = started.elapsed();
    let outcome = match &result {
        Ok(_) => "ok",
        Err(err) => err.kind.as_str(),
    };
    metrics::counter!(
        "spotpool_aws_calls_total",
        "service" => service,
        "operation" => operation,
        "outcome" => outcome,
    )
    .increment(1);
    metrics::histogram!(
        "spotpool_aws_call_duration_seconds",
        "service" => service,
        "operation" => operation,
    )
    .record(elapsed.as_secs_f64());
    match &result {
        Ok(_) => tracing::debug!(
            service,
            operation,
            outcome,
            duration_ms = elapsed.as_millis() as u64,
            "aws call"
        ),
        Err(err) => tracing::debug!(
            service,
            operation,
            outcome,
            code = %err.code,
            duration_ms = elapsed.as_millis() as u64,
            "aws call"
        ),
    }
    result
}

/// Prefixes an error's message with what we were doing.
fn with_context(mut err: CloudError, context: impl std::fmt::Display) -> CloudError {
    err.message = format!("{context}: {}", err.message);
    err
}

/// Removes `secret` from an error's text, in case AWS ever echoes a request field back.
fn redact(mut err: CloudError, secret: &str) -> CloudError {
    if !secret.is_empty() {
        err.message = err.message.replace(secret, "<redacted>");
        err.code = err.code.replace(secret, "<redacted>");
    }
    err
}

/// An error for a response that lacks a field AWS always sends.
fn missing(operation: &'static str, what: &str) -> CloudError {
    CloudError::new(
        CloudErrorKind::Transient,
        operation,
        "",
        format!("the response has no {what}"),
    )
}

/// The token of the next page, `None` after the last one. A service that hands back the token it
/// was given would make the loop endless, so that is an error.
fn next_page(
    operation: &'static str,
    sent: Option<String>,
    received: Option<&str>,
) -> CloudResult<Option<String>> {
    match received {
        None | Some("") => Ok(None),
        Some(token) if sent.as_deref() == Some(token) => Err(CloudError::new(
            CloudErrorKind::Transient,
            operation,
            "",
            "the service returned the same page token twice",
        )),
        Some(token) => Ok(Some(token.to_string())),
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

// --- Conversions ---------------------------------------------------------------------------

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

sdk_tags!(ec2_tags, aws_sdk_ec2::types::Tag);
sdk_tags!(secret_tags, aws_sdk_secretsmanager::types::Tag);
sdk_tags!(elb_tags, aws_sdk_elasticloadbalancingv2::types::Tag);

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
    for condition in rule.conditions() {
        if condition.field() != Some("path-pattern") {
            continue;
        }
        if let Some(config) = condition.path_pattern_config() {
            path_patterns.extend(config.values().iter().cloned());
        }
        path_patterns.extend(condition.values().iter().cloned());
    }
    path_patterns.dedup();
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
        target_group_arns,
    })
}

// --- The port ------------------------------------------------------------------------------

#[async_trait::async_trait]
impl Cloud for AwsCloud {
    async fn describe_pool_instances(&self) -> CloudResult<Vec<CloudInstance>> {
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

    async fn launch_instances(&self, request: &LaunchRequest) -> CloudResult<Vec<InstanceId>> {
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
        // RunInstances can override a template's market options but not remove them, so an
        // on-demand launch needs its own template without them.
        let template_id = if request.spot {
            &self.config.launch_template_id
        } else {
            match &self.config.on_demand_launch_template_id {
                Some(id) => id,
                None => {
                    return Err(CloudError::new(
                        CloudErrorKind::Fatal,
                        "RunInstances",
                        "NoOnDemandTemplate",
                        "an on-demand launch needs ON_DEMAND_LAUNCH_TEMPLATE_ID",
                    ));
                }
            }
        };
        let mut run = self
            .ec2
            .run_instances()
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_id(template_id)
                    .version(&self.config.launch_template_version)
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
                with_context(
                    err,
                    format!(
                        "launching {} {} instances of tier {} in subnet {}",
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

    async fn tag_instance(&self, instance: &InstanceId, tags: &Tags) -> CloudResult<()> {
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

    async fn untag_instance(&self, instance: &InstanceId, keys: &[&str]) -> CloudResult<()> {
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

    async fn terminate_instances(&self, instances: &[InstanceId]) -> CloudResult<()> {
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

    async fn send_command(
        &self,
        instance: &InstanceId,
        comment: &str,
        script: &str,
        timeout_seconds: u32,
    ) -> CloudResult<String> {
        let output = call(
            "ssm",
            "SendCommand",
            self.ssm
                .send_command()
                .document_name("AWS-RunShellScript")
                .instance_ids(instance.0.clone())
                .comment(truncate(comment, MAX_COMMENT_CHARS))
                .parameters("commands", vec![script.to_string()])
                .parameters("executionTimeout", vec![timeout_seconds.to_string()])
                .send(),
        )
        .await
        .map_err(|err| with_context(err, format!("sending command to instance {instance}")))?;
        output
            .command()
            .and_then(|command| command.command_id())
            .map(str::to_string)
            .ok_or_else(|| missing("SendCommand", "command id"))
    }

    async fn command_status(
        &self,
        command_id: &str,
        instance: &InstanceId,
    ) -> CloudResult<CommandStatus> {
        use aws_sdk_ssm::types::CommandInvocationStatus as Status;
        let result = call(
            "ssm",
            "GetCommandInvocation",
            self.ssm
                .get_command_invocation()
                .command_id(command_id)
                .instance_id(instance.0.clone())
                .send(),
        )
        .await;
        let output = match result {
            Ok(output) => output,
            // AWS answers this for a short while after SendCommand.
            Err(err)
                if err.kind == CloudErrorKind::NotFound && err.code == "InvocationDoesNotExist" =>
            {
                return Ok(CommandStatus::Pending);
            }
            Err(err) => {
                return Err(with_context(
                    err,
                    format!("reading command {command_id} on instance {instance}"),
                ));
            }
        };
        let failure = || {
            let stderr = output.standard_error_content().unwrap_or_default().trim();
            let text = if stderr.is_empty() {
                output.status_details().unwrap_or_default()
            } else {
                stderr
            };
            CommandStatus::Failed(truncate(text, MAX_FAILURE_CHARS))
        };
        Ok(match output.status() {
            Some(Status::Success) => CommandStatus::Success,
            Some(Status::Failed | Status::TimedOut | Status::Cancelled | Status::Cancelling) => {
                failure()
            }
            Some(Status::Pending | Status::InProgress | Status::Delayed) | None => {
                CommandStatus::Pending
            }
            Some(other) => {
                tracing::warn!(
                    command_id,
                    %instance,
                    status = other.as_str(),
                    "unknown command status, treating it as pending"
                );
                CommandStatus::Pending
            }
        })
    }

    async fn put_secret(&self, name: &str, value: &str, tags: &Tags) -> CloudResult<String> {
        let created = call(
            "secretsmanager",
            "CreateSecret",
            self.secrets
                .create_secret()
                .name(name)
                .secret_string(value)
                .set_tags((!tags.is_empty()).then(|| secret_tags(tags)))
                .customize()
                .config_override(secret_write_override(&self.config))
                .send(),
        )
        .await;
        match created {
            Ok(output) => {
                return output
                    .arn()
                    .map(str::to_string)
                    .ok_or_else(|| missing("CreateSecret", "secret ARN"));
            }
            // ResourceExistsException: the secret exists, so put a new version instead.
            Err(err) if err.kind == CloudErrorKind::Conflict => {}
            Err(err) => {
                return Err(redact(
                    with_context(err, format!("creating secret {name}")),
                    value,
                ));
            }
        }
        let output = call(
            "secretsmanager",
            "PutSecretValue",
            self.secrets
                .put_secret_value()
                .secret_id(name)
                .secret_string(value)
                .customize()
                .config_override(secret_write_override(&self.config))
                .send(),
        )
        .await
        .map_err(|err| redact(with_context(err, format!("updating secret {name}")), value))?;
        let arn = output
            .arn()
            .map(str::to_string)
            .ok_or_else(|| missing("PutSecretValue", "secret ARN"))?;
        self.tag_secret_with(&arn, tags, Some(secret_write_override(&self.config)))
            .await?;
        Ok(arn)
    }

    async fn update_secret(&self, secret_id: &str, value: &str) -> CloudResult<()> {
        call(
            "secretsmanager",
            "PutSecretValue",
            self.secrets
                .put_secret_value()
                .secret_id(secret_id)
                .secret_string(value)
                .customize()
                .config_override(secret_write_override(&self.config))
                .send(),
        )
        .await
        .map(|_| ())
        .map_err(|err| {
            redact(
                with_context(err, format!("updating secret {secret_id}")),
                value,
            )
        })
    }

    async fn tag_secret(&self, secret_id: &str, tags: &Tags) -> CloudResult<()> {
        self.tag_secret_with(secret_id, tags, None).await
    }

    async fn untag_secret(&self, secret_id: &str, keys: &[&str]) -> CloudResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        call(
            "secretsmanager",
            "UntagResource",
            self.secrets
                .untag_resource()
                .secret_id(secret_id)
                .set_tag_keys(Some(keys.iter().map(|key| key.to_string()).collect()))
                .send(),
        )
        .await
        .map_err(|err| with_context(err, format!("untagging secret {secret_id}")))?;
        Ok(())
    }

    async fn delete_secret(&self, secret_id: &str) -> CloudResult<()> {
        let result = call(
            "secretsmanager",
            "DeleteSecret",
            self.secrets
                .delete_secret()
                .secret_id(secret_id)
                .force_delete_without_recovery(true)
                .send(),
        )
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if err.kind == CloudErrorKind::NotFound => Ok(()),
            Err(err) => Err(with_context(err, format!("deleting secret {secret_id}"))),
        }
    }

    async fn create_target_group(
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

    async fn target_healthy(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        port: u16,
    ) -> CloudResult<bool> {
        use aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum;
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
        Ok(output.target_health_descriptions().iter().any(|d| {
            d.target().and_then(|t| t.id()) == Some(instance.0.as_str())
                && d.target_health().and_then(|h| h.state())
                    == Some(&TargetHealthStateEnum::Healthy)
        }))
    }

    async fn deregister_target(
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

    async fn register_target(
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

    async fn find_target_group(&self, name: &str) -> CloudResult<Option<String>> {
        match self.existing_target_group(name).await {
            Ok(arn) => Ok(Some(arn)),
            Err(err) if err.kind == CloudErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    async fn delete_target_group(&self, target_group_arn: &str) -> CloudResult<()> {
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

    async fn describe_rules(&self, listener_arn: &str) -> CloudResult<Vec<RuleInfo>> {
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

    async fn create_rule(
        &self,
        listener_arn: &str,
        priority: u32,
        path_pattern: &str,
        target_group_arn: &str,
        tags: &Tags,
    ) -> CloudResult<String> {
        use aws_sdk_elasticloadbalancingv2::types::{
            Action, ActionTypeEnum, PathPatternConditionConfig, RuleCondition,
        };
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
                .conditions(
                    RuleCondition::builder()
                        .field("path-pattern")
                        .path_pattern_config(
                            PathPatternConditionConfig::builder()
                                .values(path_pattern)
                                .build(),
                        )
                        .build(),
                )
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
                format!("creating rule {path_pattern} at priority {priority}"),
            )
        })?;
        output
            .rules()
            .iter()
            .find_map(|rule| rule.rule_arn())
            .map(str::to_string)
            .ok_or_else(|| missing("CreateRule", "rule ARN"))
    }

    async fn delete_rule(&self, rule_arn: &str) -> CloudResult<()> {
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

    async fn list_pool_target_groups(&self) -> CloudResult<Vec<PoolResource>> {
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

    async fn list_pool_rules(&self, listener_arn: &str) -> CloudResult<Vec<PoolResource>> {
        let found = self
            .describe_rules(listener_arn)
            .await?
            .into_iter()
            // The default rule has no priority and is never ours.
            .filter(|rule| rule.priority.is_some())
            .map(|rule| {
                let path = rule.path_patterns.first().cloned().unwrap_or_default();
                (rule.arn, path)
            })
            .collect();
        self.only_ours(found).await
    }

    async fn list_pool_secrets(&self) -> CloudResult<Vec<PoolResource>> {
        use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = call(
                "secretsmanager",
                "ListSecrets",
                self.secrets
                    .list_secrets()
                    .filters(
                        Filter::builder()
                            .key(FilterNameStringType::TagKey)
                            .values(tags::POOL)
                            .build(),
                    )
                    .filters(
                        Filter::builder()
                            .key(FilterNameStringType::TagValue)
                            .values(&self.config.pool)
                            .build(),
                    )
                    .max_results(MAX_SECRETS_PAGE_SIZE.min(self.page_size))
                    .set_next_token(token.clone())
                    .send(),
            )
            .await
            .map_err(|err| with_context(err, "listing secrets"))?;
            for entry in page.secret_list() {
                let tags: Tags = entry
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                    .collect();
                // The two filters match the key and the value independently; check the pair.
                if tags.get(tags::POOL) != Some(&self.config.pool) {
                    continue;
                }
                let (Some(arn), Some(name)) = (entry.arn(), entry.name()) else {
                    continue;
                };
                out.push(PoolResource {
                    arn: arn.to_string(),
                    name: name.to_string(),
                    created_at: entry.created_date().and_then(|d| d.to_millis().ok()),
                    tags,
                });
            }
            token = next_page("ListSecrets", token, page.next_token())?;
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    fn retry_meter(&self) -> Option<Arc<RetryMeter>> {
        Some(self.retries.clone())
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
    use aws_sdk_ec2::operation::describe_instances::DescribeInstancesError;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    fn service_error(code: &str, status: u16) -> SdkError<DescribeInstancesError, HttpResponse> {
        let meta = ErrorMetadata::builder()
            .code(code)
            .message("something happened")
            .build();
        SdkError::service_error(
            DescribeInstancesError::generic(meta),
            HttpResponse::new(status.try_into().unwrap(), SdkBody::empty()),
        )
    }

    #[test]
    fn every_listed_code_gets_its_class() {
        for (code, kind) in ERROR_CODES {
            let err = classify("DescribeInstances", service_error(code, 400));
            assert_eq!(err.kind, *kind, "code {code}");
            assert_eq!(err.code, *code);
            assert_eq!(err.operation, "DescribeInstances");
        }
    }

    #[test]
    fn the_documented_codes_are_classified_as_the_contract_says() {
        use CloudErrorKind::*;
        let cases = [
            ("RequestLimitExceeded", Throttled),
            ("Throttling", Throttled),
            ("ThrottlingException", Throttled),
            ("TooManyRequestsException", Throttled),
            ("InsufficientInstanceCapacity", Capacity),
            ("InsufficientCapacity", Capacity),
            ("SpotMaxPriceTooLow", Capacity),
            ("MaxSpotInstanceCountExceeded", Capacity),
            ("InsufficientHostCapacity", Capacity),
            ("Unsupported", Capacity),
            ("InvalidInstanceID.NotFound", NotFound),
            ("TargetGroupNotFound", NotFound),
            ("RuleNotFound", NotFound),
            ("ResourceNotFoundException", NotFound),
            ("InvocationDoesNotExist", NotFound),
            ("InvalidInstanceId", NotFound),
            ("ReceiptHandleIsInvalid", NotFound),
            ("OverLimit", Throttled),
            ("PriorityInUse", Conflict),
            ("ResourceExistsException", Conflict),
            ("DuplicateTargetGroupName", Conflict),
            ("ResourceInUse", Conflict),
            ("InternalError", Transient),
            ("ServiceUnavailable", Transient),
            ("InvalidInstanceID.Malformed", Fatal),
            ("UnauthorizedOperation", Fatal),
            ("ValidationError", Fatal),
            ("AccessDeniedException", Fatal),
        ];
        for (code, kind) in cases {
            assert_eq!(
                classify("Op", service_error(code, 400)).kind,
                kind,
                "code {code}"
            );
        }
    }

    #[test]
    fn codes_match_exactly_and_case_sensitively() {
        assert_eq!(
            classify("Op", service_error("invalidinstanceid.notfound", 400)).kind,
            CloudErrorKind::Fatal
        );
        assert_eq!(
            classify("Op", service_error("InvalidInstanceID", 400)).kind,
            CloudErrorKind::Fatal
        );
    }

    #[test]
    fn an_unknown_code_falls_back_on_the_http_status() {
        assert_eq!(
            classify("Op", service_error("SomethingNew", 503)).kind,
            CloudErrorKind::Transient
        );
        assert_eq!(
            classify("Op", service_error("SomethingNew", 500)).kind,
            CloudErrorKind::Transient
        );
        assert_eq!(
            classify("Op", service_error("SomethingNew", 429)).kind,
            CloudErrorKind::Throttled
        );
        assert_eq!(
            classify("Op", service_error("SomethingNew", 400)).kind,
            CloudErrorKind::Fatal
        );
        // A listed code wins over the status.
        assert_eq!(
            classify("Op", service_error("RuleNotFound", 500)).kind,
            CloudErrorKind::NotFound
        );
    }

    #[test]
    fn failures_outside_the_service_are_transient_except_construction() {
        let timeout: SdkError<DescribeInstancesError, HttpResponse> =
            SdkError::timeout_error("operation timed out");
        assert_eq!(classify("Op", timeout).kind, CloudErrorKind::Transient);
        let unreadable: SdkError<DescribeInstancesError, HttpResponse> = SdkError::response_error(
            "bad xml",
            HttpResponse::new(200.try_into().unwrap(), SdkBody::empty()),
        );
        assert_eq!(classify("Op", unreadable).kind, CloudErrorKind::Transient);
        let construction: SdkError<DescribeInstancesError, HttpResponse> =
            SdkError::construction_failure("missing field");
        assert_eq!(classify("Op", construction).kind, CloudErrorKind::Fatal);
    }

    #[test]
    fn the_message_comes_from_aws_with_our_context_in_front() {
        let err = with_context(
            classify("Op", service_error("RuleNotFound", 400)),
            "deleting rule r-1",
        );
        assert_eq!(err.message, "deleting rule r-1: something happened");
        assert_eq!(
            err.to_string(),
            "Op failed (not_found): RuleNotFound: deleting rule r-1: something happened"
        );
    }

    #[test]
    fn redact_removes_the_secret_from_message_and_code() {
        let err = CloudError::new(
            CloudErrorKind::Fatal,
            "CreateSecret",
            "Bad",
            "value 'hunter2' at 'secretString' failed",
        );
        let err = redact(err, "hunter2");
        assert!(!err.to_string().contains("hunter2"));
        assert!(!format!("{err:?}").contains("hunter2"));
        // An empty value would replace every position; it is left alone.
        let err = redact(CloudError::new(CloudErrorKind::Fatal, "Op", "C", "msg"), "");
        assert_eq!(err.message, "msg");
    }

    #[test]
    fn pagination_stops_on_an_empty_token_and_refuses_a_repeated_one() {
        assert_eq!(next_page("Op", None, None).unwrap(), None);
        assert_eq!(next_page("Op", Some("a".into()), Some("")).unwrap(), None);
        assert_eq!(
            next_page("Op", Some("a".into()), Some("b")).unwrap(),
            Some("b".to_string())
        );
        let stuck = next_page("Op", Some("a".into()), Some("a")).unwrap_err();
        assert_eq!(stuck.kind, CloudErrorKind::Transient);
    }

    #[test]
    fn truncate_counts_characters_not_bytes() {
        assert_eq!(truncate("héllo", 2), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }

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
        assert_eq!(info.target_group_arns, vec!["arn:tg1", "arn:tg2"]);

        let default = Rule::builder()
            .rule_arn("arn:default")
            .priority("default")
            .build();
        assert_eq!(rule_info(&default).unwrap().priority, None);
    }
}
