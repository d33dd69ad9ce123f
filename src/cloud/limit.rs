//! Client-side rate limits: one token bucket per AWS quota class, in front of every cloud call.
//!
//! Owns: the quota classes (which AWS operation draws from which bucket), their sizes from
//! `aws-profile.md`, and the [`Limited`] decorator that makes every call wait for a token.
//! Must not: retry (the SDK does that) or decide anything about the pool.
//!
//! AWS meters API calls per account and region with token buckets. Staying under them on our side
//! means the SDK rarely sees a throttle at all, so a burst of claims slows down smoothly instead of
//! failing and retrying. The client buckets default to 80% of the refill rate of the profile's
//! account quota and 60% of its capacity; other clients of the account (Terraform, consoles) and
//! the retries of a burst use the rest.
//!
//! AWS meters every *attempt*, and the SDK retries inside one call, out of [`Limited`]'s reach.
//! So the cloud records its retries in a [`RetryMeter`] ([`Cloud::retry_meter`]) and `Limited`
//! charges them to their bucket before the next call of the same class goes out. Without this, at
//! a 20% failure rate the SDK's retries add 25% to every class, and a class the client runs at
//! its 80% share reaches 100% of the account's quota.
//!
//! Time comes from tokio's clock, so the buckets follow a paused test clock too.

use super::{
    Cloud, CloudInstance, CloudResult, CloudVolume, CommandStatus, HealthCheck, LaunchRequest,
    PoolResource, RuleAction, RuleInfo, SnapshotState, Tags, TargetGroupMetric, VolumeRequest,
};
use crate::model::InstanceId;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

/// A family of AWS operations that share one account-level token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QuotaClass {
    /// EC2 Describe* calls.
    Ec2Describe,
    /// EC2 mutating calls other than RunInstances (CreateTags, DeleteTags, TerminateInstances).
    Ec2Mutate,
    /// RunInstances calls.
    Ec2RunCalls,
    /// Instances launched by RunInstances (a call of count n takes n tokens).
    Ec2RunInstances,
    /// ELBv2 mutating calls (CreateTargetGroup, CreateRule, DeleteRule, DeleteTargetGroup, ...).
    ElbMutate,
    /// RegisterTargets and DeregisterTargets.
    ElbRegister,
    /// ELBv2 Describe* calls.
    ElbDescribe,
    /// SSM SendCommand.
    SsmSend,
    /// SSM GetCommandInvocation and other reads.
    SsmRead,
    /// Secrets Manager writes (CreateSecret, PutSecretValue, TagResource, DeleteSecret, ...).
    SecretsWrite,
    /// Secrets Manager reads (ListSecrets, DescribeSecret).
    SecretsRead,
    /// CloudWatch GetMetricData (auto-sleep's request counts).
    CloudWatchRead,
}

impl QuotaClass {
    pub const ALL: [QuotaClass; 12] = [
        QuotaClass::Ec2Describe,
        QuotaClass::Ec2Mutate,
        QuotaClass::Ec2RunCalls,
        QuotaClass::Ec2RunInstances,
        QuotaClass::ElbMutate,
        QuotaClass::ElbRegister,
        QuotaClass::ElbDescribe,
        QuotaClass::SsmSend,
        QuotaClass::SsmRead,
        QuotaClass::SecretsWrite,
        QuotaClass::SecretsRead,
        QuotaClass::CloudWatchRead,
    ];

    /// The name used in `SPOTPOOL_RATE_LIMITS` and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaClass::Ec2Describe => "ec2-describe",
            QuotaClass::Ec2Mutate => "ec2-mutate",
            QuotaClass::Ec2RunCalls => "ec2-run",
            QuotaClass::Ec2RunInstances => "ec2-run-instances",
            QuotaClass::ElbMutate => "elb-mutate",
            QuotaClass::ElbRegister => "elb-register",
            QuotaClass::ElbDescribe => "elb-describe",
            QuotaClass::SsmSend => "ssm-send",
            QuotaClass::SsmRead => "ssm-read",
            QuotaClass::SecretsWrite => "secrets-write",
            QuotaClass::SecretsRead => "secrets-read",
            QuotaClass::CloudWatchRead => "cloudwatch-read",
        }
    }

    pub fn parse(name: &str) -> Option<QuotaClass> {
        QuotaClass::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The bucket an AWS operation draws one token from. RunInstances also draws one token per
    /// instance from [`QuotaClass::Ec2RunInstances`]; see [`tokens_for`].
    pub fn of_operation(operation: &str) -> QuotaClass {
        match operation {
            "RunInstances" => QuotaClass::Ec2RunCalls,
            "CreateTags" | "DeleteTags" | "TerminateInstances" | "CreateVolume"
            | "AttachVolume" | "DetachVolume" | "DeleteVolume" | "CreateSnapshot"
            | "DeleteSnapshot" => QuotaClass::Ec2Mutate,
            "GetMetricData" => QuotaClass::CloudWatchRead,
            "RegisterTargets" | "DeregisterTargets" => QuotaClass::ElbRegister,
            "CreateTargetGroup" | "DeleteTargetGroup" | "CreateRule" | "DeleteRule"
            | "ModifyRule" | "ModifyTargetGroup" | "AddTags" | "RemoveTags" => {
                QuotaClass::ElbMutate
            }
            "SendCommand" | "CancelCommand" => QuotaClass::SsmSend,
            "GetCommandInvocation" | "ListCommandInvocations" => QuotaClass::SsmRead,
            "CreateSecret" | "PutSecret" | "PutSecretValue" | "UpdateSecret" | "TagResource"
            | "UntagResource" | "DeleteSecret" => QuotaClass::SecretsWrite,
            "ListSecrets" | "DescribeSecret" => QuotaClass::SecretsRead,
            op if op.starts_with("Describe") && is_elb_describe(op) => QuotaClass::ElbDescribe,
            op if op.starts_with("Describe") => QuotaClass::Ec2Describe,
            // Unknown operations count as EC2 mutations: the most conservative shared bucket.
            _ => QuotaClass::Ec2Mutate,
        }
    }
}

fn is_elb_describe(operation: &str) -> bool {
    matches!(
        operation,
        "DescribeTargetGroups"
            | "DescribeRules"
            | "DescribeTags"
            | "DescribeTargetHealth"
            | "DescribeListeners"
            | "DescribeLoadBalancers"
    )
}

/// Every (bucket, tokens) an operation takes: RunInstances of `count` instances takes one call
/// token and `count` instance tokens; everything else takes one token of its class.
pub fn tokens_for(operation: &str, count: u32) -> Vec<(QuotaClass, u32)> {
    let class = QuotaClass::of_operation(operation);
    if class == QuotaClass::Ec2RunCalls {
        vec![
            (QuotaClass::Ec2RunCalls, 1),
            (QuotaClass::Ec2RunInstances, count.max(1)),
        ]
    } else {
        vec![(class, 1)]
    }
}

/// Attempts the account metered that the client-side buckets have not charged yet: the retries
/// the SDK made inside logical calls. The cloud adapter records them; [`Limited`] takes them
/// from the bucket of their class before that class's next call.
#[derive(Debug, Default)]
pub struct RetryMeter {
    owed: Mutex<BTreeMap<QuotaClass, u32>>,
}

impl RetryMeter {
    /// One retry of `operation` (one more attempt than the call's first).
    pub fn record(&self, operation: &str) {
        let mut owed = self.owed.lock().unwrap_or_else(|e| e.into_inner());
        for (class, tokens) in tokens_for(operation, 1) {
            *owed.entry(class).or_default() += tokens;
        }
    }

    /// Takes what `class` owes.
    fn take(&self, class: QuotaClass) -> u32 {
        let mut owed = self.owed.lock().unwrap_or_else(|e| e.into_inner());
        owed.remove(&class).unwrap_or(0)
    }
}

/// A token bucket's size: at most `capacity` tokens, refilled at `refill_per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub capacity: u32,
    pub refill_per_second: f64,
}

impl Bucket {
    pub const fn new(capacity: u32, refill_per_second: f64) -> Bucket {
        Bucket {
            capacity,
            refill_per_second,
        }
    }

    /// This bucket scaled by `factor` (capacity at least 1).
    pub fn scaled(self, factor: f64) -> Bucket {
        self.share(factor, factor)
    }

    /// This bucket with its capacity scaled by `burst` (at least 1) and its refill by `refill`.
    pub fn share(self, burst: f64, refill: f64) -> Bucket {
        Bucket {
            capacity: ((f64::from(self.capacity) * burst).floor() as u32).max(1),
            refill_per_second: self.refill_per_second * refill,
        }
    }
}

/// The account quotas of `aws-profile.md` (per account and region). SSM is not in the profile;
/// its numbers are conservative defaults of the same shape.
pub fn account_quota(class: QuotaClass) -> Bucket {
    match class {
        QuotaClass::Ec2Describe => Bucket::new(100, 20.0),
        QuotaClass::Ec2Mutate => Bucket::new(50, 5.0),
        QuotaClass::Ec2RunCalls => Bucket::new(5, 2.0),
        QuotaClass::Ec2RunInstances => Bucket::new(1000, 2.0),
        QuotaClass::ElbMutate => Bucket::new(20, 3.0),
        QuotaClass::ElbRegister => Bucket::new(20, 4.0),
        QuotaClass::ElbDescribe => Bucket::new(40, 10.0),
        QuotaClass::SsmSend => Bucket::new(20, 5.0),
        QuotaClass::SsmRead => Bucket::new(40, 20.0),
        QuotaClass::SecretsWrite => Bucket::new(50, 50.0),
        QuotaClass::SecretsRead => Bucket::new(50, 50.0),
        // GetMetricData: 50 transactions per second per account and region.
        QuotaClass::CloudWatchRead => Bucket::new(50, 50.0),
    }
}

/// The share of each account quota's refill rate the daemon allows itself by default.
pub const DEFAULT_SHARE: f64 = 0.8;

/// The share of each account quota's capacity (its burst) the daemon allows itself by default.
/// Retries are charged after the fact ([`RetryMeter`]), so a burst of the whole client capacity
/// reaches AWS together with its own retries: capacity × (1 + retries per call) must stay under
/// the account's capacity. At 20% failed attempts a call averages 0.25 retries, and 80% would
/// leave nothing (0.8 × 1.25 = 1); 60% leaves a quarter of the bucket (0.6 × 1.25 = 0.75).
pub const DEFAULT_BURST_SHARE: f64 = 0.6;

/// The client-side bucket of every quota class.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimits {
    pub buckets: BTreeMap<QuotaClass, Bucket>,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            buckets: QuotaClass::ALL
                .into_iter()
                .map(|c| {
                    let bucket = account_quota(c).share(DEFAULT_BURST_SHARE, DEFAULT_SHARE);
                    (c, bucket)
                })
                .collect(),
        }
    }
}

impl RateLimits {
    /// The defaults with overrides from `class=capacity/refill,...`, e.g.
    /// `ec2-run=4/1.5,elb-mutate=10/2`. An empty string means the defaults.
    pub fn parse(spec: &str) -> Result<RateLimits, String> {
        let mut limits = RateLimits::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, size) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not class=capacity/refill"))?;
            let class = QuotaClass::parse(name.trim()).ok_or_else(|| {
                let known: Vec<&str> = QuotaClass::ALL.iter().map(|c| c.as_str()).collect();
                format!("unknown quota class {name:?} (known: {})", known.join(", "))
            })?;
            let (capacity, refill) = size
                .split_once('/')
                .ok_or_else(|| format!("{item:?} is not class=capacity/refill"))?;
            let capacity: u32 = capacity
                .trim()
                .parse()
                .ok()
                .filter(|c| *c > 0)
                .ok_or_else(|| format!("{item:?}: capacity must be a whole number above 0"))?;
            let refill: f64 = refill
                .trim()
                .parse()
                .ok()
                .filter(|r: &f64| r.is_finite() && *r > 0.0)
                .ok_or_else(|| {
                    format!("{item:?}: refill must be a number of tokens per second above 0")
                })?;
            limits.buckets.insert(class, Bucket::new(capacity, refill));
        }
        Ok(limits)
    }

    /// The effective sizes as `class=capacity/refill,...` (for logs and `--help`).
    pub fn describe(&self) -> String {
        self.buckets
            .iter()
            .map(|(c, b)| format!("{}={}/{}", c.as_str(), b.capacity, b.refill_per_second))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// governor's clock on tokio's time, so a paused test clock drives the buckets too.
#[derive(Debug, Clone)]
struct TokioClock {
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// How often and how long the calls of one quota class waited for their tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waits {
    /// Calls that had to wait.
    pub calls: u64,
    pub total: Duration,
    pub longest: Duration,
}

/// A [`Cloud`] whose every call first takes its tokens from the client-side buckets, waiting
/// (asynchronously) while a bucket is empty.
pub struct Limited {
    inner: Arc<dyn Cloud>,
    clock: TokioClock,
    limiters: BTreeMap<QuotaClass, (Limiter, u32)>,
    waits: Mutex<BTreeMap<QuotaClass, Waits>>,
    /// The inner cloud's retries, charged with the next call of their class.
    retries: Option<Arc<RetryMeter>>,
}

impl Limited {
    /// Limits every call of `inner`, and charges the retries it records in its
    /// [`Cloud::retry_meter`].
    pub fn new(inner: Arc<dyn Cloud>, limits: &RateLimits) -> Limited {
        let clock = TokioClock {
            start: tokio::time::Instant::now(),
        };
        let limiters = limits
            .buckets
            .iter()
            .map(|(class, bucket)| {
                let capacity = NonZeroU32::new(bucket.capacity).unwrap_or(NonZeroU32::MIN);
                let period = Duration::from_secs_f64(1.0 / bucket.refill_per_second.max(1e-6));
                let quota = Quota::with_period(period)
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                    .allow_burst(capacity);
                (
                    *class,
                    (
                        RateLimiter::direct_with_clock(quota, clock.clone()),
                        capacity.get(),
                    ),
                )
            })
            .collect();
        let retries = inner.retry_meter();
        Limited {
            inner,
            clock,
            limiters,
            waits: Mutex::new(BTreeMap::new()),
            retries,
        }
    }

    /// The waits so far, per quota class (the same figures as `spotpool_rate_limited_calls_total`
    /// and `spotpool_rate_limit_wait_seconds`).
    pub fn waits(&self) -> BTreeMap<QuotaClass, Waits> {
        self.waits.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until every bucket `operation` draws from has its tokens (and those of the class's
    /// retries not charged yet), then takes them.
    async fn acquire(&self, operation: &'static str, count: u32) {
        for (class, tokens) in tokens_for(operation, count) {
            let Some((limiter, capacity)) = self.limiters.get(&class) else {
                continue;
            };
            let owed = self.retries.as_ref().map_or(0, |meter| meter.take(class));
            let tokens = tokens.saturating_add(owed);
            // A request larger than the bucket can never fit; it takes a full bucket instead.
            let n = NonZeroU32::new(tokens.min(*capacity)).unwrap_or(NonZeroU32::MIN);
            let mut waited = Duration::ZERO;
            loop {
                match limiter.check_n(n) {
                    Ok(Ok(())) | Err(_) => break,
                    Ok(Err(not_until)) => {
                        let wait = not_until.wait_time_from(self.clock.now());
                        waited += wait;
                        tokio::time::sleep(wait).await;
                    }
                }
            }
            if !waited.is_zero() {
                {
                    let mut waits = self.waits.lock().unwrap_or_else(|e| e.into_inner());
                    let entry = waits.entry(class).or_default();
                    entry.calls += 1;
                    entry.total += waited;
                    entry.longest = entry.longest.max(waited);
                }
                metrics::counter!("spotpool_rate_limited_calls_total", "class" => class.as_str())
                    .increment(1);
                metrics::histogram!("spotpool_rate_limit_wait_seconds", "class" => class.as_str())
                    .record(waited.as_secs_f64());
            }
        }
    }
}

#[async_trait::async_trait]
impl Cloud for Limited {
    async fn describe_pool_instances(&self) -> CloudResult<Vec<CloudInstance>> {
        self.acquire("DescribeInstances", 1).await;
        self.inner.describe_pool_instances().await
    }

    async fn launch_instances(&self, request: &LaunchRequest) -> CloudResult<Vec<InstanceId>> {
        self.acquire("RunInstances", request.count).await;
        self.inner.launch_instances(request).await
    }

    async fn tag_instance(&self, instance: &InstanceId, tags: &Tags) -> CloudResult<()> {
        self.acquire("CreateTags", 1).await;
        self.inner.tag_instance(instance, tags).await
    }

    async fn untag_instance(&self, instance: &InstanceId, keys: &[&str]) -> CloudResult<()> {
        self.acquire("DeleteTags", 1).await;
        self.inner.untag_instance(instance, keys).await
    }

    async fn terminate_instances(&self, instances: &[InstanceId]) -> CloudResult<()> {
        self.acquire("TerminateInstances", 1).await;
        self.inner.terminate_instances(instances).await
    }

    async fn send_command(
        &self,
        instance: &InstanceId,
        comment: &str,
        script: &str,
        timeout_seconds: u32,
    ) -> CloudResult<String> {
        self.acquire("SendCommand", 1).await;
        self.inner
            .send_command(instance, comment, script, timeout_seconds)
            .await
    }

    async fn command_status(
        &self,
        command_id: &str,
        instance: &InstanceId,
    ) -> CloudResult<CommandStatus> {
        self.acquire("GetCommandInvocation", 1).await;
        self.inner.command_status(command_id, instance).await
    }

    async fn put_secret(&self, name: &str, value: &str, tags: &Tags) -> CloudResult<String> {
        self.acquire("PutSecret", 1).await;
        self.inner.put_secret(name, value, tags).await
    }

    async fn update_secret(&self, secret_id: &str, value: &str) -> CloudResult<()> {
        self.acquire("PutSecretValue", 1).await;
        self.inner.update_secret(secret_id, value).await
    }

    async fn tag_secret(&self, secret_id: &str, tags: &Tags) -> CloudResult<()> {
        self.acquire("TagResource", 1).await;
        self.inner.tag_secret(secret_id, tags).await
    }

    async fn untag_secret(&self, secret_id: &str, keys: &[&str]) -> CloudResult<()> {
        self.acquire("UntagResource", 1).await;
        self.inner.untag_secret(secret_id, keys).await
    }

    async fn delete_secret(&self, secret_id: &str) -> CloudResult<()> {
        self.acquire("DeleteSecret", 1).await;
        self.inner.delete_secret(secret_id).await
    }

    async fn create_target_group(
        &self,
        name: &str,
        port: u16,
        health: &HealthCheck,
        tags: &Tags,
    ) -> CloudResult<String> {
        self.acquire("CreateTargetGroup", 1).await;
        self.inner
            .create_target_group(name, port, health, tags)
            .await
    }

    async fn find_target_group(&self, name: &str) -> CloudResult<Option<String>> {
        self.acquire("DescribeTargetGroups", 1).await;
        self.inner.find_target_group(name).await
    }

    async fn register_target(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        port: u16,
    ) -> CloudResult<()> {
        self.acquire("RegisterTargets", 1).await;
        self.inner
            .register_target(target_group_arn, instance, port)
            .await
    }

    async fn target_healthy(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        port: u16,
    ) -> CloudResult<bool> {
        self.acquire("DescribeTargetHealth", 1).await;
        self.inner
            .target_healthy(target_group_arn, instance, port)
            .await
    }

    async fn deregister_target(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        port: u16,
    ) -> CloudResult<()> {
        self.acquire("DeregisterTargets", 1).await;
        self.inner
            .deregister_target(target_group_arn, instance, port)
            .await
    }

    async fn delete_target_group(&self, target_group_arn: &str) -> CloudResult<()> {
        self.acquire("DeleteTargetGroup", 1).await;
        self.inner.delete_target_group(target_group_arn).await
    }

    async fn describe_rules(&self, listener_arn: &str) -> CloudResult<Vec<RuleInfo>> {
        self.acquire("DescribeRules", 1).await;
        self.inner.describe_rules(listener_arn).await
    }

    async fn create_rule(
        &self,
        listener_arn: &str,
        priority: u32,
        path_pattern: &str,
        target_group_arn: &str,
        tags: &Tags,
    ) -> CloudResult<String> {
        self.acquire("CreateRule", 1).await;
        self.inner
            .create_rule(listener_arn, priority, path_pattern, target_group_arn, tags)
            .await
    }

    async fn delete_rule(&self, rule_arn: &str) -> CloudResult<()> {
        self.acquire("DeleteRule", 1).await;
        self.inner.delete_rule(rule_arn).await
    }

    async fn set_rule_action(&self, rule_arn: &str, action: &RuleAction) -> CloudResult<()> {
        self.acquire("ModifyRule", 1).await;
        self.inner.set_rule_action(rule_arn, action).await
    }

    async fn create_volume(&self, request: &VolumeRequest) -> CloudResult<String> {
        self.acquire("CreateVolume", 1).await;
        self.inner.create_volume(request).await
    }

    async fn describe_volume(&self, volume_id: &str) -> CloudResult<Option<CloudVolume>> {
        self.acquire("DescribeVolumes", 1).await;
        self.inner.describe_volume(volume_id).await
    }

    async fn list_pool_volumes(&self, owner: Option<&str>) -> CloudResult<Vec<CloudVolume>> {
        self.acquire("DescribeVolumes", 1).await;
        self.inner.list_pool_volumes(owner).await
    }

    async fn attach_volume(
        &self,
        volume_id: &str,
        instance: &InstanceId,
        device: &str,
    ) -> CloudResult<()> {
        self.acquire("AttachVolume", 1).await;
        self.inner.attach_volume(volume_id, instance, device).await
    }

    async fn detach_volume(
        &self,
        volume_id: &str,
        instance: &InstanceId,
        force: bool,
    ) -> CloudResult<()> {
        self.acquire("DetachVolume", 1).await;
        self.inner.detach_volume(volume_id, instance, force).await
    }

    async fn delete_volume(&self, volume_id: &str) -> CloudResult<()> {
        self.acquire("DeleteVolume", 1).await;
        self.inner.delete_volume(volume_id).await
    }

    async fn create_snapshot(&self, volume_id: &str, tags: &Tags) -> CloudResult<String> {
        self.acquire("CreateSnapshot", 1).await;
        self.inner.create_snapshot(volume_id, tags).await
    }

    async fn snapshot_state(&self, snapshot_id: &str) -> CloudResult<Option<SnapshotState>> {
        self.acquire("DescribeSnapshots", 1).await;
        self.inner.snapshot_state(snapshot_id).await
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> CloudResult<()> {
        self.acquire("DeleteSnapshot", 1).await;
        self.inner.delete_snapshot(snapshot_id).await
    }

    async fn subnet_zones(&self, subnet_ids: &[String]) -> CloudResult<BTreeMap<String, String>> {
        self.acquire("DescribeSubnets", 1).await;
        self.inner.subnet_zones(subnet_ids).await
    }

    async fn request_counts(
        &self,
        groups: &[TargetGroupMetric],
        window: Duration,
    ) -> CloudResult<Vec<f64>> {
        // One GetMetricData per 500 target groups.
        for _ in 0..groups.len().div_ceil(500).max(1) {
            self.acquire("GetMetricData", 1).await;
        }
        self.inner.request_counts(groups, window).await
    }

    async fn list_pool_target_groups(&self) -> CloudResult<Vec<PoolResource>> {
        self.acquire("DescribeTargetGroups", 1).await;
        self.inner.list_pool_target_groups().await
    }

    async fn list_pool_rules(&self, listener_arn: &str) -> CloudResult<Vec<PoolResource>> {
        self.acquire("DescribeRules", 1).await;
        self.inner.list_pool_rules(listener_arn).await
    }

    async fn list_pool_secrets(&self) -> CloudResult<Vec<PoolResource>> {
        self.acquire("ListSecrets", 1).await;
        self.inner.list_pool_secrets().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::fake::FakeCloud;

    #[test]
    fn every_operation_the_daemon_calls_has_a_bucket() {
        let cases = [
            ("DescribeInstances", QuotaClass::Ec2Describe),
            ("RunInstances", QuotaClass::Ec2RunCalls),
            ("CreateTags", QuotaClass::Ec2Mutate),
            ("TerminateInstances", QuotaClass::Ec2Mutate),
            ("SendCommand", QuotaClass::SsmSend),
            ("GetCommandInvocation", QuotaClass::SsmRead),
            ("CreateSecret", QuotaClass::SecretsWrite),
            ("DeleteSecret", QuotaClass::SecretsWrite),
            ("CreateTargetGroup", QuotaClass::ElbMutate),
            ("RegisterTargets", QuotaClass::ElbRegister),
            ("DescribeRules", QuotaClass::ElbDescribe),
            ("DescribeTargetGroups", QuotaClass::ElbDescribe),
            ("CreateRule", QuotaClass::ElbMutate),
        ];
        for (operation, class) in cases {
            assert_eq!(QuotaClass::of_operation(operation), class, "{operation}");
        }
        assert_eq!(
            tokens_for("RunInstances", 3),
            vec![
                (QuotaClass::Ec2RunCalls, 1),
                (QuotaClass::Ec2RunInstances, 3)
            ]
        );
    }

    #[test]
    fn overrides_parse_and_bad_specs_name_the_problem() {
        let limits = RateLimits::parse("ec2-run=3/1.5, elb-mutate=10/2").unwrap();
        assert_eq!(
            limits.buckets[&QuotaClass::Ec2RunCalls],
            Bucket::new(3, 1.5)
        );
        assert_eq!(limits.buckets[&QuotaClass::ElbMutate], Bucket::new(10, 2.0));
        assert_eq!(
            limits.buckets[&QuotaClass::Ec2Describe],
            Bucket::new(60, 16.0)
        );
        assert_eq!(RateLimits::parse("").unwrap(), RateLimits::default());
        for (spec, needle) in [
            ("ec2-runn=3/1", "unknown quota class"),
            ("ec2-run=3", "class=capacity/refill"),
            ("ec2-run=0/1", "capacity"),
            ("ec2-run=3/-1", "refill"),
            ("ec2-run=3/NaN", "refill"),
        ] {
            let error = RateLimits::parse(spec).unwrap_err();
            assert!(error.contains(needle), "{spec}: {error}");
        }
    }

    /// A burst larger than the bucket is spread out at the refill rate, on tokio's clock.
    #[tokio::test(start_paused = true)]
    async fn calls_beyond_the_burst_wait_for_the_refill() {
        let fake = Arc::new(FakeCloud::default());
        let limits = RateLimits::parse("ec2-describe=5/2").unwrap();
        let cloud = Limited::new(fake.clone(), &limits);
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            cloud.describe_pool_instances().await.unwrap();
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is free");
        for _ in 0..4 {
            cloud.describe_pool_instances().await.unwrap();
        }
        // Four more tokens at 2 per second: two seconds.
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(1_990) && waited <= Duration::from_millis(2_100),
            "{waited:?}"
        );
        assert_eq!(fake.count_calls("DescribeInstances"), 9);
    }

    /// AWS meters attempts: the retries a cloud records in its meter are charged to their bucket
    /// with the class's next call.
    #[tokio::test(start_paused = true)]
    async fn the_clouds_retries_are_charged_to_their_bucket() {
        use crate::cloud::profile::{FaultRates, Latency, Profile, RetryModel};
        let mut profile = Profile::aws()
            .with_operation_faults(
                "DescribeInstances",
                FaultRates {
                    server_error: 1.0,
                    throttle: 0.0,
                },
            )
            .with_retry(RetryModel {
                initial_backoff: Duration::ZERO,
                ..RetryModel::standard(2)
            });
        profile.api_latency.clear();
        profile.default_api_latency = Latency::ZERO;
        profile
            .quotas
            .insert(QuotaClass::Ec2Describe, Bucket::new(1_000, 1_000.0));
        let fake = Arc::new(FakeCloud::simulated("spotpool", profile, 1));
        let cloud = Limited::new(
            fake.clone(),
            &RateLimits::parse("ec2-describe=4/1").unwrap(),
        );
        let start = tokio::time::Instant::now();
        // Each call is two attempts: 1 token, then 1 + 1 owed, then 1 + 1 owed with 1 left.
        for _ in 0..3 {
            cloud.describe_pool_instances().await.unwrap_err();
        }
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(990) && waited <= Duration::from_millis(1_100),
            "{waited:?}"
        );
        assert_eq!(fake.sim_stats().unwrap().retries, 3);
        assert_eq!(cloud.waits()[&QuotaClass::Ec2Describe].calls, 1);
    }

    /// RunInstances draws per instance too: a large launch waits for instance tokens.
    #[tokio::test(start_paused = true)]
    async fn launches_draw_instance_tokens() {
        let fake = Arc::new(FakeCloud::default());
        let limits = RateLimits::parse("ec2-run=100/100,ec2-run-instances=4/1").unwrap();
        let cloud = Limited::new(fake.clone(), &limits);
        let start = tokio::time::Instant::now();
        let request = |token: &str| LaunchRequest {
            tier: "default".into(),
            instance_type: "t3.small".into(),
            subnet_id: "subnet-a".into(),
            count: 3,
            client_token: token.into(),
            spot: true,
        };
        cloud.launch_instances(&request("a")).await.unwrap();
        cloud.launch_instances(&request("b")).await.unwrap();
        // 3 of 4 tokens, then 3 more with 1 left: wait 2 s for the refill.
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(1_990) && waited <= Duration::from_millis(2_100),
            "{waited:?}"
        );
        assert_eq!(fake.live_instances().len(), 6);
    }
}
