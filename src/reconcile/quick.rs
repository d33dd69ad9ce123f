//! Quick claims: a wake-up (a PUT) assigns spares to queued users at once, without waiting for
//! the pass in progress to end or for the next pass's DescribeInstances.
//!
//! The plan is the pass's own (`plan::plan`), over the users and the ledger as the store has
//! them now and the instance lifecycles of the last listing; only its `Assign` actions are
//! taken, and they run like a pass's actions (the same per-object holds, in the loop's care
//! when they outlive the call). A listing at most a pass old can be wrong about a spare that
//! EC2 took back since: the claim's first AWS call then fails and the claim is retried, as a
//! pass's would be. Everything else (launches, moves, notices, probes) waits for the pass.
//!
//! Must not: call AWS; plan anything but assignments.

use super::{ReconcileError, Reconciler};
use crate::cloud::Lifecycle;
use crate::model::{InstanceId, UserState};
use crate::plan::{self, Action, PoolInstance, UserIntent};
use std::collections::HashMap;
use std::time::Duration;
use tokio::task::JoinSet;

impl Reconciler {
    /// Remembers what the pass's listing said of each instance's lifecycle.
    pub(super) fn remember_lifecycles(&self, lifecycles: HashMap<InstanceId, Lifecycle>) {
        *self.inner.listed.lock().unwrap_or_else(|e| e.into_inner()) = Some(lifecycles);
    }

    /// Assigns spares to the queued users now, in a task of `quick` of its own: the loop goes
    /// on meanwhile (the pass in progress may hold the store's only connection).
    pub(super) fn start_quick_claims(&self, quick: &mut JoinSet<()>) {
        let this = self.clone();
        quick.spawn(async move {
            if let Err(error) = this.quick_claims().await {
                tracing::warn!(error = %error, "quick claims; the pass assigns instead");
            }
        });
    }

    /// Assigns spares to the queued users and runs their claims as far as they go (as a pass's
    /// actions do). Returns whether it started any.
    async fn quick_claims(&self) -> Result<bool, ReconcileError> {
        let inner = &self.inner;
        let users = inner.store.users_snapshot().await?;
        if !users.iter().any(|u| u.state == UserState::Queued) {
            return Ok(false);
        }
        let Some(lifecycles) = inner
            .listed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            // No listing yet in this term: the pass assigns.
            return Ok(false);
        };
        let now = self.now();
        let ledger = inner.store.instances_snapshot().await?;
        let (mut policy, paused) = self.effective_policy().await?;
        policy.subnet_zones = self.lock_subnet_zones().clone();
        let instances: Vec<PoolInstance> = ledger
            .iter()
            .map(|r| {
                let lifecycle = lifecycles.get(&r.instance_id).copied();
                super::observe::pool_instance(r, lifecycle, None, now)
            })
            .collect();
        let intents: Vec<UserIntent> = users.iter().map(super::observe::intent_of).collect();
        let mut conditions = self.conditions().snapshot(now);
        conditions.launch_blocked.extend(paused);
        let assignments: Vec<Action> = plan::plan(&intents, &instances, now, &policy, &conditions)
            .into_iter()
            .filter(|action| matches!(action, Action::Assign { .. }))
            .collect();
        if assignments.is_empty() {
            return Ok(false);
        }
        metrics::counter!("spotpool_quick_claims_total").increment(assignments.len() as u64);
        // All the patience in the world: this task is the claims' own, and their steps may poll
        // their start command in place as a pass's may.
        self.execute(assignments, Some(Duration::MAX)).await;
        Ok(true)
    }
}
