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
    Cloud, CloudInstance, CloudResult, CloudSnapshot, CloudVolume, CommandStatus, HealthCheck,
    LaunchRequest, PoolResource, RuleAction, RuleInfo, SnapshotState, Tags, TargetGroupMetric,
    VolumeRequest,
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

mod quotas;
pub use quotas::{
    Bucket, DEFAULT_BURST_SHARE, DEFAULT_SHARE, QuotaClass, RateLimits, RetryMeter, account_quota,
    tokens_for,
};

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
    /// Each class's bucket, its capacity, and the line its callers wait in: tokio's mutex
    /// serves them in order, so no caller starves while others keep taking the tokens it
    /// waited for (governor alone wakes every waiter to race for them).
    limiters: BTreeMap<QuotaClass, (Limiter, u32, tokio::sync::Mutex<()>)>,
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
                        tokio::sync::Mutex::new(()),
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
            let Some((limiter, capacity, line)) = self.limiters.get(&class) else {
                continue;
            };
            let queued = tokio::time::Instant::now();
            let _turn = line.lock().await;
            let owed = self.retries.as_ref().map_or(0, |meter| meter.take(class));
            let tokens = tokens.saturating_add(owed);
            // A request larger than the bucket can never fit; it takes a full bucket instead.
            let n = NonZeroU32::new(tokens.min(*capacity)).unwrap_or(NonZeroU32::MIN);
            loop {
                match limiter.check_n(n) {
                    Ok(Ok(())) | Err(_) => break,
                    Ok(Err(not_until)) => {
                        tokio::time::sleep(not_until.wait_time_from(self.clock.now())).await;
                    }
                }
            }
            let waited = queued.elapsed();
            if waited >= Duration::from_millis(1) {
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

    async fn keep_blank_workspace(
        &self,
        instance: &InstanceId,
        volume_id: &str,
        device: &str,
        tags: &Tags,
    ) -> CloudResult<()> {
        self.acquire("ModifyInstanceAttribute", 1).await;
        self.acquire("CreateTags", 1).await;
        self.inner
            .keep_blank_workspace(instance, volume_id, device, tags)
            .await
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

    async fn agents_online(
        &self,
        instances: &[InstanceId],
    ) -> CloudResult<Option<std::collections::BTreeSet<InstanceId>>> {
        // One call per page of ids.
        for _ in 0..instances.len().div_ceil(crate::cloud::AGENT_IDS_PER_CALL) {
            self.acquire("DescribeInstanceInformation", 1).await;
        }
        self.inner.agents_online(instances).await
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

    async fn target_health(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        port: u16,
    ) -> CloudResult<crate::cloud::TargetHealth> {
        self.acquire("DescribeTargetHealth", 1).await;
        self.inner
            .target_health(target_group_arn, instance, port)
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
        condition: &crate::model::RuleMatch,
        target_group_arn: &str,
        tags: &Tags,
    ) -> CloudResult<String> {
        self.acquire("CreateRule", 1).await;
        self.inner
            .create_rule(listener_arn, priority, condition, target_group_arn, tags)
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

    async fn set_rule_match(
        &self,
        rule_arn: &str,
        condition: &crate::model::RuleMatch,
    ) -> CloudResult<()> {
        self.acquire("ModifyRule", 1).await;
        self.inner.set_rule_match(rule_arn, condition).await
    }

    async fn tag_elb_resources(&self, arns: &[String], tags: &Tags) -> CloudResult<()> {
        self.acquire("AddTags", 1).await;
        self.inner.tag_elb_resources(arns, tags).await
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

    async fn list_pool_snapshots(&self, owner: Option<&str>) -> CloudResult<Vec<CloudSnapshot>> {
        self.acquire("DescribeSnapshots", 1).await;
        self.inner.list_pool_snapshots(owner).await
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

    async fn instance_vcpus(
        &self,
        instance_types: &[String],
    ) -> CloudResult<BTreeMap<String, u32>> {
        self.acquire("DescribeInstanceTypes", 1).await;
        self.inner.instance_vcpus(instance_types).await
    }

    async fn spot_prices(
        &self,
        instance_types: &[String],
        zones: &[String],
    ) -> CloudResult<Vec<crate::model::cost::SpotPrice>> {
        self.acquire("DescribeSpotPriceHistory", 1).await;
        self.inner.spot_prices(instance_types, zones).await
    }

    async fn quota_values(
        &self,
        quotas: &[crate::model::quota::Quota],
    ) -> CloudResult<BTreeMap<crate::model::quota::Quota, f64>> {
        // No EC2 or ELB bucket: Service Quotas meters its own calls, and these are a handful
        // an hour.
        self.inner.quota_values(quotas).await
    }

    async fn image_digest(&self, image: &crate::image::EcrImage) -> CloudResult<String> {
        // No EC2 or ELB bucket: ECR meters its own calls, and the image is resolved once.
        self.inner.image_digest(image).await
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
            launch_template: crate::model::LaunchTemplate::example(),
            blank_workspace: None,
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
