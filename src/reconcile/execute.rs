//! Runs a pass's actions concurrently, at most `max_in_flight` at once. A failed action is
//! logged and counted; the next pass plans again from fresh observations.

use super::{Reconciler, StepError};
use crate::cloud::CloudErrorKind;
use crate::model::{Event, MoveReason};
use crate::plan::Action;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

impl Reconciler {
    /// Runs the actions concurrently, at most `max_in_flight` at once. Failures are logged and
    /// counted; the next pass plans again from fresh observations.
    /// Returns how many actions AWS throttled (after the SDK's retries).
    pub(super) async fn execute(&self, actions: Vec<Action>) -> usize {
        let permits = Arc::new(Semaphore::new(self.inner.config.max_in_flight));
        let mut tasks = JoinSet::new();
        for action in actions {
            let this = self.clone();
            let permits = permits.clone();
            tasks.spawn(async move {
                let Ok(_permit) = permits.acquire_owned().await else {
                    return false;
                };
                let kind = action.kind();
                match this.run_action(&action).await {
                    Ok(()) => false,
                    Err(error) => {
                        metrics::counter!("spotpool_action_errors_total", "action" => kind).increment(1);
                        tracing::warn!(?action, error = %error, "action failed; will retry on a later pass");
                        matches!(&error, StepError::Cloud(e) if e.kind == CloudErrorKind::Throttled)
                    }
                }
            });
        }
        let mut throttled = 0;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(true) => throttled += 1,
                Ok(false) => {}
                Err(error) => tracing::error!(error = %error, "action task panicked"),
            }
        }
        throttled
    }

    async fn run_action(&self, action: &Action) -> Result<(), StepError> {
        let now = self.now();
        match action {
            Action::Launch {
                tier,
                instance_type,
                subnet_id,
                count,
                market,
            } => {
                self.launch(tier, instance_type, subnet_id, *count, *market, now)
                    .await
            }
            Action::SendProbe { instance } => self.send_probe(instance, now).await,
            Action::CheckProbe {
                instance,
                command_id,
            } => self.check_probe(instance, command_id, now).await,
            Action::Terminate { instance, reason } => self.terminate(instance, *reason, now).await,
            Action::Forget { instance } => {
                self.inner.store.delete_instance(instance).await?;
                self.journal(now, Event::InstanceGone, None, Some(instance))
                    .await
            }
            Action::Assign {
                user,
                instance,
                shard,
            } => self.assign(user, instance, shard, now).await,
            Action::AwaitRoute { user } => self.await_route(user, now).await,
            Action::RouteAvailable { user } => self.route_available(user, now).await,
            Action::AdvanceClaim { user } => self.advance_claim(user).await,
            Action::Release { user } => self.release(user).await,
            Action::Recover { user } => self.recover(user).await,
            Action::BeginMove { user } => self.begin_move(user, MoveReason::Recycle, now).await,
            Action::AssignMove { user, instance } => self.assign_move(user, instance).await,
            Action::AdvanceMove { user } => self.advance_move(user).await,
            Action::AdvanceSleep { user } => self.sleep(user).await,
            Action::RelocateWorkspace { user, to_zone } => {
                self.begin_relocation(user, to_zone).await
            }
            Action::AdvanceRelocation { user } => self.advance_relocation(user).await,
            Action::Wire { instance, shard } => self.wire(instance, shard.as_deref(), now).await,
            Action::Unwire { instance } => self.unwire(instance).await,
            Action::TagRoute { user } => self.tag_prewired_route(user).await,
        }
    }
}
