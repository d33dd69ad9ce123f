//! Quick claims: a wake-up (a PUT) assigns spares to queued users at once, without waiting for
//! the pass in progress to end or for the next pass's DescribeInstances.
//!
//! The plan is the pass's own (`plan::plan`), over the users and the ledger as the store has
//! them now and the instance lifecycles of the last listing; only its `Assign` actions are
//! taken, and they run like a pass's actions (the same per-object holds, in the loop's care
//! when they outlive the call). A listing at most a pass old can be wrong about a spare that
//! EC2 took back since: the claim's first AWS call then fails and the claim is retried, as a
//! pass's would be. Everything else (launches, moves, notices, probes) waits for the pass, and
//! so do claims while a notice is unhandled: a user an interruption evicts comes first.
//!
//! One planning at a time (a lane task per term): a wake-up during one makes it plan once more
//! when it is done. Users and instances an action holds are left out of the plan, so it serves
//! the ones nobody is serving yet.
//!
//! Must not: call AWS; plan anything but assignments.

use super::execute::{instance_key, user_key};
use super::{ReconcileError, Reconciler};
use crate::cloud::Lifecycle;
use crate::model::{InstanceId, UserState};
use crate::plan::{self, Action, PoolInstance, UserIntent};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

impl Reconciler {
    /// Remembers what the pass's listing said of each instance's lifecycle.
    pub(super) fn remember_lifecycles(&self, lifecycles: HashMap<InstanceId, Lifecycle>) {
        *self.inner.listed.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(lifecycles));
    }

    /// The quick-claim lane of a term: plans once per wake-up (`Inner::quick_wake`; wake-ups
    /// during a planning make one more), beside the loop's passes (the pass in progress may
    /// hold the store's only connection). On `stop` it plans no more and waits for the claims
    /// it started; dropped (a lost term), it aborts them.
    pub(super) async fn run_quick_lane(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut claims: JoinSet<()> = JoinSet::new();
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = self.inner.quick_wake.notified() => {}
            }
            while claims.try_join_next().is_some() {}
            match self.quick_claims().await {
                Ok(Some(mut started)) => {
                    claims.spawn(async move { while started.join_next().await.is_some() {} });
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(error = %error, "quick claims; the pass assigns instead");
                }
            }
        }
        while claims.join_next().await.is_some() {}
    }

    /// Plans and starts the claims of the queued users nobody serves yet; returns them running.
    async fn quick_claims(&self) -> Result<Option<JoinSet<bool>>, ReconcileError> {
        let inner = &self.inner;
        let users = inner.store.users_snapshot().await?;
        let held = |key: String| inner.in_flight.is_held(&key);
        let queued = |u: &&crate::store::UserRecord| {
            u.state == UserState::Queued && !held(user_key(&u.user_id))
        };
        if !users.iter().any(|u| queued(&u)) {
            return Ok(None);
        }
        if !inner.store.list_unhandled_notices().await?.is_empty() {
            return Ok(None);
        }
        let Some(lifecycles) = inner
            .listed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            // No listing yet in this term: the pass assigns.
            return Ok(None);
        };
        let now = self.now();
        let ledger = inner.store.instances_snapshot().await?;
        let wipes = inner.store.slot_wipes().await?;
        let (mut policy, paused) = self.effective_policy().await?;
        policy.subnet_zones = self.lock_subnet_zones().clone();
        // An instance with an action on it is left out; a shared one only for an action on all
        // of it (its other slots may be claimed while one is).
        let busy = |r: &crate::store::InstanceRecord| {
            let shared = policy
                .tier(&r.tier)
                .is_some_and(|t| t.slots_per_instance > 1);
            let key = instance_key(&r.instance_id);
            if shared {
                held(key)
            } else {
                inner.in_flight.is_busy(&key)
            }
        };
        let instances: Vec<PoolInstance> = ledger
            .iter()
            .filter(|r| !busy(r))
            .map(|r| {
                let lifecycle = lifecycles.get(&r.instance_id).copied();
                super::observe::pool_instance(r, lifecycle, None, (&wipes, now))
            })
            .collect();
        // Every user counts for the shards' room; only the free queued ones may be assigned.
        let intents: Vec<UserIntent> = users
            .iter()
            .filter(|u| u.state != UserState::Queued || queued(u))
            .map(super::observe::intent_of)
            .collect();
        let mut conditions = self.conditions().snapshot(now);
        conditions.launch_blocked.extend(paused);
        conditions.closed = self.drained().instances;
        let assignments: Vec<Action> = plan::plan(&intents, &instances, now, &policy, &conditions)
            .into_iter()
            .filter(|action| matches!(action, Action::Assign { .. }))
            .collect();
        if assignments.is_empty() {
            return Ok(None);
        }
        metrics::counter!("spotpool_quick_claims_total").increment(assignments.len() as u64);
        // No patience: the claims are handed back running; their steps may still poll their
        // start command in place, as a pass's may.
        Ok(self
            .execute(assignments, Some(Duration::ZERO))
            .await
            .stragglers)
    }
}
