//! Pool instances: readiness probes over SSM (sent once SSM lists the instance's agent online,
//! or by a back-off when SSM cannot say), and the two ways an instance leaves a user or the
//! pool: retired (ledger row `terminating` first, then TerminateInstances) or returned for a
//! fresh probe (only when no start command ever reached it).

use super::{Reconciler, StepError, one_tag};
use crate::cloud::{CloudErrorKind, CommandStatus, tags};
use crate::instance_scripts;
use crate::model::{Event, InstanceId, InstanceStatus, Millis, TerminateReason};
use std::collections::BTreeSet;

/// How long SSM's "cannot say which agents are online" (DescribeInstanceInformation denied, or
/// not implemented, as on moto) stands before it is asked again.
const AGENTS_UNKNOWN_RECHECK: Millis = 3_600_000;
/// How long after a failed DescribeInstanceInformation it is asked again.
const AGENTS_ERROR_RECHECK: Millis = 60_000;

impl Reconciler {
    /// Which of `instances` (the ones a probe may go to this pass) have their SSM agent online:
    /// one question per pass, none when there is nothing to ask. `None` when SSM cannot say, or
    /// could not a moment ago (then `plan` probes by a back-off): "cannot say" is remembered for
    /// an hour, a failed call for a minute, so a pass does not ask again every time.
    pub(super) async fn agents_online(
        &self,
        instances: &[InstanceId],
        now: Millis,
    ) -> Option<BTreeSet<InstanceId>> {
        if instances.is_empty() || now < *self.lock_agents_ask_at() {
            return None;
        }
        match self.inner.cloud.agents_online(instances).await {
            Ok(Some(online)) => Some(online),
            Ok(None) => {
                tracing::info!(
                    "SSM cannot say which agents are online (DescribeInstanceInformation denied \
                     or not implemented): probing young instances by a back-off; asking again \
                     in an hour"
                );
                *self.lock_agents_ask_at() = now + AGENTS_UNKNOWN_RECHECK;
                None
            }
            Err(error) => {
                tracing::warn!(error = %error, "could not ask SSM which agents are online; probing by a back-off for a minute");
                *self.lock_agents_ask_at() = now + AGENTS_ERROR_RECHECK;
                None
            }
        }
    }

    fn lock_agents_ask_at(&self) -> std::sync::MutexGuard<'_, Millis> {
        // Nothing panics while holding this lock; a poisoned lock still holds valid data.
        self.inner
            .agents_ask_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(super) async fn send_probe(
        &self,
        instance: &InstanceId,
        now: Millis,
    ) -> Result<(), StepError> {
        let store = &self.inner.store;
        let Some(mut record) = store.get_instance(instance).await? else {
            return Ok(());
        };
        // A pre-wired spare is health-checked through the warm responder: the probe checks it
        // answers, so a launch template without one fails here, saying so.
        let runtime = self.runtime(&record.tier);
        let container = &runtime.container;
        let warm = self
            .prewired(&record.tier)
            .then(|| instance_scripts::WarmCheck {
                port: container.port,
                health_path: &container.health_check.path,
            });
        let image = self.image_to_run(&container.image).await?;
        store.set_instance_image(instance, &image).await?;
        let script = instance_scripts::probe_script(&image, warm);
        let timeout = self.inner.config.probe_command_timeout.as_secs() as u32;
        match self
            .inner
            .cloud
            .send_command(instance, "spotpool readiness probe", &script, timeout)
            .await
        {
            Ok(command_id) => {
                record.probe_command_id = Some(command_id);
                record.probe_sent_at = Some(now);
                store.put_instance(&record).await?;
                Ok(())
            }
            Err(error) => {
                // NotFound here means the SSM agent is not online yet: normal while booting.
                record.probe_failed_at = Some(now);
                if error.kind != CloudErrorKind::NotFound {
                    record.probe_failures += 1;
                    record.last_error = Some(error.to_string());
                }
                store.put_instance(&record).await?;
                if error.kind == CloudErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(error.into())
                }
            }
        }
    }

    pub(super) async fn check_probe(
        &self,
        instance: &InstanceId,
        command_id: &str,
        now: Millis,
    ) -> Result<(), StepError> {
        let store = &self.inner.store;
        let Some(mut record) = store.get_instance(instance).await? else {
            return Ok(());
        };
        let status = self
            .inner
            .cloud
            .command_status(command_id, instance)
            .await?;
        let sent_at = record.probe_sent_at.unwrap_or(now);
        let limit = self.inner.config.probe_command_timeout.as_millis() as Millis;
        let failure = match status {
            CommandStatus::Success => return self.probe_passed(&record, now).await,
            CommandStatus::Pending if now - sent_at <= limit => return Ok(()),
            CommandStatus::Pending => "probe command timed out".to_string(),
            CommandStatus::Failed(message) => message,
        };
        record.probe_command_id = None;
        record.probe_failed_at = Some(now);
        record.probe_failures += 1;
        record.last_error = Some(failure.clone());
        store.put_instance(&record).await?;
        metrics::counter!("spotpool_probe_failures_total").increment(1);
        let event = Event::InstanceProbeFailed { cause: failure };
        self.journal(now, event, None, Some(instance)).await
    }

    /// Terminates a pool instance that `plan` gave up on (surplus, probe timeout, orphan,
    /// stopped, recycled, interrupted, or a retry of an earlier termination).
    pub(super) async fn terminate(
        &self,
        instance: &InstanceId,
        reason: TerminateReason,
        now: Millis,
    ) -> Result<(), StepError> {
        let store = &self.inner.store;
        let record = store.get_instance(instance).await?;
        if reason == TerminateReason::ProbeTimeout
            && let Some(record) = &record
        {
            let why = format!("instance {instance} failed its readiness probe until the timeout");
            self.tier_failed(&record.tier, &why, now).await?;
        }
        match reason {
            // Only an instance that is still an unclaimed spare may go as surplus.
            TerminateReason::Surplus => {
                if record.is_some()
                    && !store
                        .transition_instance(
                            instance,
                            InstanceStatus::Available,
                            InstanceStatus::Terminating,
                            now,
                        )
                        .await?
                {
                    return Ok(());
                }
                self.terminate_in_cloud(instance).await?;
            }
            // A retry restarts the clock, so the next retry waits the full interval.
            TerminateReason::Retry => {
                if let Some(mut record) = record {
                    record.status = InstanceStatus::Terminating;
                    record.status_since = now;
                    store.put_instance(&record).await?;
                }
                self.terminate_in_cloud(instance).await?;
            }
            _ => self.retire_instance(instance, now).await?,
        }
        metrics::counter!("spotpool_terminations_total", "reason" => reason.as_str()).increment(1);
        self.journal(
            now,
            Event::InstanceTerminating { reason },
            None,
            Some(instance),
        )
        .await
    }

    /// Retires an instance: its ledger row goes `terminating` first, so the intent survives a
    /// crash (the pool re-sends TerminateInstances for a `terminating` instance still running),
    /// then the cloud call. The one way an instance a user held, or a spare, is terminated.
    pub(super) async fn retire_instance(
        &self,
        instance: &InstanceId,
        now: Millis,
    ) -> Result<(), StepError> {
        let store = &self.inner.store;
        if let Some(mut record) = store.get_instance(instance).await?
            && record.status != InstanceStatus::Terminating
        {
            record.status = InstanceStatus::Terminating;
            record.status_since = now;
            store.put_instance(&record).await?;
        }
        self.terminate_in_cloud(instance).await
    }

    /// Gives a clean instance (no start command ever reached it) back to the pool: untagged,
    /// `initializing` again, so a fresh readiness probe runs before anyone gets it.
    pub(super) async fn return_to_pool(
        &self,
        instance: &InstanceId,
        now: Millis,
    ) -> Result<(), StepError> {
        let cloud = &self.inner.cloud;
        cloud.untag_instance(instance, &[tags::USER_ID]).await?;
        cloud
            .tag_instance(
                instance,
                &one_tag(tags::STATUS, InstanceStatus::Initializing.as_str()),
            )
            .await?;
        self.inner
            .store
            .transition_instance(
                instance,
                InstanceStatus::Assigned,
                InstanceStatus::Initializing,
                now,
            )
            .await?;
        Ok(())
    }

    async fn terminate_in_cloud(&self, instance: &InstanceId) -> Result<(), StepError> {
        let cloud = &self.inner.cloud;
        // The tag is a mirror for on-call; a failure to write it must not keep the instance alive.
        if let Err(error) = cloud
            .tag_instance(
                instance,
                &one_tag(tags::STATUS, InstanceStatus::Terminating.as_str()),
            )
            .await
            && error.kind != CloudErrorKind::NotFound
        {
            tracing::debug!(%instance, error = %error, "could not tag instance terminating");
        }
        cloud
            .terminate_instances(std::slice::from_ref(instance))
            .await?;
        Ok(())
    }
}
