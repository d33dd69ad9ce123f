//! The fence on a leader's cloud calls: a term's [`Fence`] says whether this replica still
//! leads, from its own monotonic clock, and [`FencedCloud`] and [`FencedQueue`] check it before
//! every call.
//!
//! Owns: the local half of fencing (the database's trigger is the other, `store/leadership.rs`).
//! Must not: talk to the store; `leader` extends or ends the fence as the lease goes.
//!
//! A lease renewed by a statement sent at instant `s` cannot expire in the database before
//! `s + ttl` (the database reads its clock later than `s`), so the fence holds until
//! `s + ttl - margin` and ends there unless a later renewal extends it. A replica frozen by
//! SIGSTOP or a stalled host resumes past that instant: its first check fails, before any call
//! goes out, whatever it was doing when it froze.

use crate::cloud::{
    Cloud, CloudError, CloudErrorKind, CloudInstance, CloudResult, CloudSnapshot, CloudVolume,
    CommandStatus, HealthCheck, InterruptionQueue, LaunchRequest, PoolResource, QueueMessage,
    RuleAction, RuleInfo, SnapshotState, Tags, TargetGroupMetric, VolumeRequest,
};
use crate::model::InstanceId;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Whether this replica still leads in one term. Clones share the state.
#[derive(Clone, Debug)]
pub struct Fence {
    inner: Arc<FenceState>,
}

#[derive(Debug)]
struct FenceState {
    /// Until when the term holds (None: until it is ended; a file lock's term).
    valid_until: Mutex<Option<Instant>>,
    /// Why the term ended, once it has.
    ended: Mutex<Option<String>>,
    changed: Notify,
}

impl Fence {
    /// A term that holds until `valid_until`, or with None until [`Fence::end`].
    pub fn new(valid_until: Option<Instant>) -> Fence {
        Fence {
            inner: Arc::new(FenceState {
                valid_until: Mutex::new(valid_until),
                ended: Mutex::new(None),
                changed: Notify::new(),
            }),
        }
    }

    /// Moves the end of the term to `valid_until` (a renewal), unless the term has ended.
    pub fn extend(&self, valid_until: Instant) {
        if self.ended().is_none() {
            *lock(&self.inner.valid_until) = Some(valid_until);
            self.inner.changed.notify_waiters();
        }
    }

    /// Ends the term for `reason` (the first reason is kept).
    pub fn end(&self, reason: impl Into<String>) {
        let mut ended = lock(&self.inner.ended);
        if ended.is_none() {
            *ended = Some(reason.into());
        }
        drop(ended);
        self.inner.changed.notify_waiters();
    }

    /// Why the term ended, or None while it holds. A term past its time ends here.
    pub fn ended(&self) -> Option<String> {
        if let Some(reason) = lock(&self.inner.ended).clone() {
            return Some(reason);
        }
        let until = *lock(&self.inner.valid_until);
        match until {
            Some(until) if Instant::now() >= until => {
                self.end("the lease ran out before it could be renewed");
                lock(&self.inner.ended).clone()
            }
            _ => None,
        }
    }

    /// Ok while the term holds; otherwise the error every fenced call returns instead of
    /// going out (retryable, so nothing is given up for it).
    pub fn check(&self, operation: &'static str) -> CloudResult<()> {
        match self.ended() {
            None => Ok(()),
            Some(reason) => {
                metrics::counter!("spotpool_fenced_calls_total").increment(1);
                Err(CloudError {
                    kind: CloudErrorKind::Transient,
                    operation,
                    code: "NotLeader".into(),
                    message: format!("not sent: this replica no longer leads ({reason})"),
                })
            }
        }
    }

    /// Resolves with the reason once the term ends (ended, or past its time).
    pub async fn lost(&self) -> String {
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(reason) = self.ended() {
                return reason;
            }
            let until = *lock(&self.inner.valid_until);
            match until {
                Some(until) => {
                    tokio::select! {
                        _ = changed => {}
                        _ = tokio::time::sleep_until(until) => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A [`Cloud`] whose every call first checks the term's [`Fence`]: a replica that no longer
/// leads sends nothing.
pub struct FencedCloud {
    inner: Arc<dyn Cloud>,
    fence: Fence,
}

impl FencedCloud {
    pub fn new(inner: Arc<dyn Cloud>, fence: Fence) -> FencedCloud {
        FencedCloud { inner, fence }
    }

    fn gated<F: std::future::Future>(
        &self,
        call: F,
    ) -> impl std::future::Future<Output = F::Output> {
        gated(&self.fence, call)
    }
}

/// `call` with `fence` as its attempt gate: the SDK checks it before each attempt, so a retry
/// of a call begun before the replica froze is not sent after the term ended.
fn gated<F: std::future::Future>(
    fence: &Fence,
    call: F,
) -> impl std::future::Future<Output = F::Output> {
    let fence = fence.clone();
    crate::cloud::ATTEMPT_GATE.scope(Arc::new(move || fence.ended()), call)
}

/// The interruption queue behind the term's [`Fence`], like [`FencedCloud`].
pub struct FencedQueue {
    inner: Arc<dyn InterruptionQueue>,
    fence: Fence,
}

impl FencedQueue {
    pub fn new(inner: Arc<dyn InterruptionQueue>, fence: Fence) -> FencedQueue {
        FencedQueue { inner, fence }
    }
}

#[async_trait::async_trait]
impl InterruptionQueue for FencedQueue {
    async fn receive(&self) -> CloudResult<Vec<QueueMessage>> {
        self.fence.check("ReceiveMessage")?;
        gated(&self.fence, self.inner.receive()).await
    }

    async fn delete(&self, receipt: &str) -> CloudResult<()> {
        self.fence.check("DeleteMessage")?;
        gated(&self.fence, self.inner.delete(receipt)).await
    }
}

#[async_trait::async_trait]
impl Cloud for FencedCloud {
    async fn describe_pool_instances(&self) -> CloudResult<Vec<CloudInstance>> {
        self.fence.check("DescribeInstances")?;
        self.gated(self.inner.describe_pool_instances()).await
    }

    async fn launch_instances(&self, request: &LaunchRequest) -> CloudResult<Vec<InstanceId>> {
        self.fence.check("RunInstances")?;
        self.gated(self.inner.launch_instances(request)).await
    }

    async fn tag_instance(&self, instance: &InstanceId, tags: &Tags) -> CloudResult<()> {
        self.fence.check("CreateTags")?;
        self.gated(self.inner.tag_instance(instance, tags)).await
    }

    async fn keep_blank_workspace(
        &self,
        instance: &InstanceId,
        volume_id: &str,
        device: &str,
        tags: &Tags,
    ) -> CloudResult<()> {
        self.fence.check("ModifyInstanceAttribute")?;
        self.gated(
            self.inner
                .keep_blank_workspace(instance, volume_id, device, tags),
        )
        .await
    }

    async fn untag_instance(&self, instance: &InstanceId, keys: &[&str]) -> CloudResult<()> {
        self.fence.check("DeleteTags")?;
        self.gated(self.inner.untag_instance(instance, keys)).await
    }

    async fn terminate_instances(&self, instances: &[InstanceId]) -> CloudResult<()> {
        self.fence.check("TerminateInstances")?;
        self.gated(self.inner.terminate_instances(instances)).await
    }

    async fn send_command(
        &self,
        instance: &InstanceId,
        comment: &str,
        script: &str,
        timeout_seconds: u32,
    ) -> CloudResult<String> {
        self.fence.check("SendCommand")?;
        self.gated(
            self.inner
                .send_command(instance, comment, script, timeout_seconds),
        )
        .await
    }

    async fn command_status(
        &self,
        command_id: &str,
        instance: &InstanceId,
    ) -> CloudResult<CommandStatus> {
        self.fence.check("GetCommandInvocation")?;
        self.gated(self.inner.command_status(command_id, instance))
            .await
    }

    async fn agents_online(
        &self,
        instances: &[InstanceId],
    ) -> CloudResult<Option<std::collections::BTreeSet<InstanceId>>> {
        self.fence.check("DescribeInstanceInformation")?;
        self.gated(self.inner.agents_online(instances)).await
    }

    async fn put_secret(&self, name: &str, value: &str, tags: &Tags) -> CloudResult<String> {
        self.fence.check("PutSecret")?;
        self.gated(self.inner.put_secret(name, value, tags)).await
    }

    async fn update_secret(&self, secret_id: &str, value: &str) -> CloudResult<()> {
        self.fence.check("PutSecretValue")?;
        self.gated(self.inner.update_secret(secret_id, value)).await
    }

    async fn tag_secret(&self, secret_id: &str, tags: &Tags) -> CloudResult<()> {
        self.fence.check("TagResource")?;
        self.gated(self.inner.tag_secret(secret_id, tags)).await
    }

    async fn untag_secret(&self, secret_id: &str, keys: &[&str]) -> CloudResult<()> {
        self.fence.check("UntagResource")?;
        self.gated(self.inner.untag_secret(secret_id, keys)).await
    }

    async fn delete_secret(&self, secret_id: &str) -> CloudResult<()> {
        self.fence.check("DeleteSecret")?;
        self.gated(self.inner.delete_secret(secret_id)).await
    }

    async fn create_target_group(
        &self,
        name: &str,
        port: u16,
        health: &HealthCheck,
        tags: &Tags,
    ) -> CloudResult<String> {
        self.fence.check("CreateTargetGroup")?;
        self.gated(self.inner.create_target_group(name, port, health, tags))
            .await
    }

    async fn find_target_group(&self, name: &str) -> CloudResult<Option<String>> {
        self.fence.check("DescribeTargetGroups")?;
        self.gated(self.inner.find_target_group(name)).await
    }

    async fn register_target(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        port: u16,
    ) -> CloudResult<()> {
        self.fence.check("RegisterTargets")?;
        self.gated(self.inner.register_target(target_group_arn, instance, port))
            .await
    }

    async fn target_health(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        port: u16,
    ) -> CloudResult<crate::cloud::TargetHealth> {
        self.fence.check("DescribeTargetHealth")?;
        self.gated(self.inner.target_health(target_group_arn, instance, port))
            .await
    }

    async fn deregister_target(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        port: u16,
    ) -> CloudResult<()> {
        self.fence.check("DeregisterTargets")?;
        self.gated(
            self.inner
                .deregister_target(target_group_arn, instance, port),
        )
        .await
    }

    async fn delete_target_group(&self, target_group_arn: &str) -> CloudResult<()> {
        self.fence.check("DeleteTargetGroup")?;
        self.gated(self.inner.delete_target_group(target_group_arn))
            .await
    }

    async fn describe_rules(&self, listener_arn: &str) -> CloudResult<Vec<RuleInfo>> {
        self.fence.check("DescribeRules")?;
        self.gated(self.inner.describe_rules(listener_arn)).await
    }

    async fn create_rule(
        &self,
        listener_arn: &str,
        priority: u32,
        condition: &crate::model::RuleMatch,
        target_group_arn: &str,
        tags: &Tags,
    ) -> CloudResult<String> {
        self.fence.check("CreateRule")?;
        self.gated(self.inner.create_rule(
            listener_arn,
            priority,
            condition,
            target_group_arn,
            tags,
        ))
        .await
    }

    async fn delete_rule(&self, rule_arn: &str) -> CloudResult<()> {
        self.fence.check("DeleteRule")?;
        self.gated(self.inner.delete_rule(rule_arn)).await
    }

    async fn set_rule_action(&self, rule_arn: &str, action: &RuleAction) -> CloudResult<()> {
        self.fence.check("ModifyRule")?;
        self.gated(self.inner.set_rule_action(rule_arn, action))
            .await
    }

    async fn set_rule_match(
        &self,
        rule_arn: &str,
        condition: &crate::model::RuleMatch,
    ) -> CloudResult<()> {
        self.fence.check("ModifyRule")?;
        self.gated(self.inner.set_rule_match(rule_arn, condition))
            .await
    }

    async fn tag_elb_resources(&self, arns: &[String], tags: &Tags) -> CloudResult<()> {
        self.fence.check("AddTags")?;
        self.gated(self.inner.tag_elb_resources(arns, tags)).await
    }

    async fn create_volume(&self, request: &VolumeRequest) -> CloudResult<String> {
        self.fence.check("CreateVolume")?;
        self.gated(self.inner.create_volume(request)).await
    }

    async fn describe_volume(&self, volume_id: &str) -> CloudResult<Option<CloudVolume>> {
        self.fence.check("DescribeVolumes")?;
        self.gated(self.inner.describe_volume(volume_id)).await
    }

    async fn list_pool_volumes(&self, owner: Option<&str>) -> CloudResult<Vec<CloudVolume>> {
        self.fence.check("DescribeVolumes")?;
        self.gated(self.inner.list_pool_volumes(owner)).await
    }

    async fn attach_volume(
        &self,
        volume_id: &str,
        instance: &InstanceId,
        device: &str,
    ) -> CloudResult<()> {
        self.fence.check("AttachVolume")?;
        self.gated(self.inner.attach_volume(volume_id, instance, device))
            .await
    }

    async fn detach_volume(
        &self,
        volume_id: &str,
        instance: &InstanceId,
        force: bool,
    ) -> CloudResult<()> {
        self.fence.check("DetachVolume")?;
        self.gated(self.inner.detach_volume(volume_id, instance, force))
            .await
    }

    async fn delete_volume(&self, volume_id: &str) -> CloudResult<()> {
        self.fence.check("DeleteVolume")?;
        self.gated(self.inner.delete_volume(volume_id)).await
    }

    async fn create_snapshot(&self, volume_id: &str, tags: &Tags) -> CloudResult<String> {
        self.fence.check("CreateSnapshot")?;
        self.gated(self.inner.create_snapshot(volume_id, tags))
            .await
    }

    async fn list_pool_snapshots(&self, owner: Option<&str>) -> CloudResult<Vec<CloudSnapshot>> {
        self.fence.check("DescribeSnapshots")?;
        self.gated(self.inner.list_pool_snapshots(owner)).await
    }

    async fn snapshot_state(&self, snapshot_id: &str) -> CloudResult<Option<SnapshotState>> {
        self.fence.check("DescribeSnapshots")?;
        self.gated(self.inner.snapshot_state(snapshot_id)).await
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> CloudResult<()> {
        self.fence.check("DeleteSnapshot")?;
        self.gated(self.inner.delete_snapshot(snapshot_id)).await
    }

    async fn subnet_zones(&self, subnet_ids: &[String]) -> CloudResult<BTreeMap<String, String>> {
        self.fence.check("DescribeSubnets")?;
        self.gated(self.inner.subnet_zones(subnet_ids)).await
    }

    async fn instance_vcpus(
        &self,
        instance_types: &[String],
    ) -> CloudResult<BTreeMap<String, u32>> {
        self.fence.check("DescribeInstanceTypes")?;
        self.gated(self.inner.instance_vcpus(instance_types)).await
    }

    async fn spot_prices(
        &self,
        instance_types: &[String],
        zones: &[String],
    ) -> CloudResult<Vec<crate::model::cost::SpotPrice>> {
        self.fence.check("DescribeSpotPriceHistory")?;
        self.gated(self.inner.spot_prices(instance_types, zones))
            .await
    }

    async fn quota_values(
        &self,
        quotas: &[crate::model::quota::Quota],
    ) -> CloudResult<BTreeMap<crate::model::quota::Quota, f64>> {
        self.fence.check("GetServiceQuota")?;
        self.gated(self.inner.quota_values(quotas)).await
    }

    async fn image_digest(&self, image: &crate::image::EcrImage) -> CloudResult<String> {
        self.fence.check("DescribeImages")?;
        self.gated(self.inner.image_digest(image)).await
    }

    async fn request_counts(
        &self,
        groups: &[TargetGroupMetric],
        window: Duration,
    ) -> CloudResult<Vec<f64>> {
        self.fence.check("GetMetricData")?;
        self.gated(self.inner.request_counts(groups, window)).await
    }

    async fn list_pool_target_groups(&self) -> CloudResult<Vec<PoolResource>> {
        self.fence.check("DescribeTargetGroups")?;
        self.gated(self.inner.list_pool_target_groups()).await
    }

    async fn list_pool_rules(&self, listener_arn: &str) -> CloudResult<Vec<PoolResource>> {
        self.fence.check("DescribeRules")?;
        self.gated(self.inner.list_pool_rules(listener_arn)).await
    }

    async fn list_pool_secrets(&self) -> CloudResult<Vec<PoolResource>> {
        self.fence.check("ListSecrets")?;
        self.gated(self.inner.list_pool_secrets()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_term_past_its_time_refuses_every_call_and_reports_the_loss() {
        let fence = Fence::new(Some(Instant::now() + Duration::from_secs(8)));
        assert!(fence.check("RunInstances").is_ok());
        // A renewal moves the end; the term holds past the first deadline.
        tokio::time::advance(Duration::from_secs(5)).await;
        fence.extend(Instant::now() + Duration::from_secs(8));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(fence.check("RunInstances").is_ok());
        let lost = tokio::spawn({
            let fence = fence.clone();
            async move { fence.lost().await }
        });
        // Nothing renews it: the term ends at its time, and calls are refused, retryable.
        let reason = lost.await.unwrap();
        assert!(reason.contains("ran out"), "{reason}");
        let error = fence.check("RunInstances").unwrap_err();
        assert_eq!(error.code, "NotLeader");
        assert!(error.kind.is_retryable());
        // An ended term is not revived by a late renewal.
        fence.extend(Instant::now() + Duration::from_secs(8));
        assert!(fence.check("RunInstances").is_err());
    }

    /// The decorator: calls go out while the term holds; once it is past its time, none reaches
    /// the cloud, and the SDK-attempt gate the calls run under says no as well.
    #[tokio::test(start_paused = true)]
    async fn a_fenced_cloud_sends_nothing_once_the_term_is_over() {
        let fake = Arc::new(crate::cloud::fake::FakeCloud::new("spotpool"));
        let fence = Fence::new(Some(Instant::now() + Duration::from_secs(8)));
        let cloud = FencedCloud::new(fake.clone(), fence.clone());
        cloud.describe_pool_instances().await.unwrap();
        let gate_open = cloud
            .gated(async { crate::cloud::ATTEMPT_GATE.with(|gate| gate()) })
            .await;
        assert_eq!(gate_open, None);
        assert_eq!(fake.count_calls("DescribeInstances"), 1);
        tokio::time::advance(Duration::from_secs(9)).await;
        let error = cloud.describe_pool_instances().await.unwrap_err();
        assert_eq!(error.code, "NotLeader");
        let error = cloud
            .terminate_instances(&[InstanceId("i-1".into())])
            .await
            .unwrap_err();
        assert_eq!(error.operation, "TerminateInstances");
        assert_eq!(fake.count_calls("DescribeInstances"), 1);
        assert_eq!(fake.count_calls("TerminateInstances"), 0);
        let gate = cloud
            .gated(async { crate::cloud::ATTEMPT_GATE.with(|gate| gate()) })
            .await;
        assert!(gate.is_some_and(|reason| reason.contains("ran out")));
    }

    #[tokio::test]
    async fn an_ended_term_wakes_the_waiter_with_the_first_reason() {
        let fence = Fence::new(None);
        let lost = tokio::spawn({
            let fence = fence.clone();
            async move { fence.lost().await }
        });
        tokio::task::yield_now().await;
        fence.end("replica b took over");
        fence.end("a later reason");
        assert_eq!(lost.await.unwrap(), "replica b took over");
    }
}
