//! Users leaving a shared instance (ARCHITECTURE.md, "Shared tiers"): the slot a user leaves with
//! something of theirs on it (a release, a rollback, a sleep) is recorded to wipe (`slot_wipes`)
//! and nobody's until the wipe command (`instance_scripts::wipe_slot_script`: container,
//! workspace mount, Docker network and volume, mount point) succeeded; the last user to leave
//! retires the instance, whose other users' containers ran there too (one no start ever reached
//! goes back to the pool instead).
//!
//! Owns: `leave_shared` (the wipe record and the retirement, both guarded in the store) and the
//! `WipeSlot` action (send, poll, free the slot; a failed wipe asks the instance to recycle: its
//! users move off, and it is retired, never handed out again). Must not: free a slot whose wipe
//! has not succeeded, or retire an instance another user holds or moves to.

use super::{Reconciler, StepError, one_tag};
use crate::cloud::{CloudErrorKind, CommandStatus, tags};
use crate::instance_scripts;
use crate::model::{InstanceId, InstanceStatus, Millis, SentCommand, UserId};
use crate::store::{SlotWipe, Vacated};

/// What a user leaving a slot leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Left {
    /// A start may have reached the slot: it is wiped before anyone takes it.
    Dirty,
    /// Nothing of the user's: the instance may go back to the pool if no start ever reached it.
    Clean,
    /// Nothing of the user's, but the instance is lost or dying (a recovery): never back.
    Lost,
}

/// A wipe may run this long before it counts as failed.
const WIPE_COMMAND_TIMEOUT_SECONDS: u32 = 120;

impl Reconciler {
    /// `user` leaves `slot` of the shared `instance`: with something of theirs on it
    /// (`Left::Dirty`), the slot is recorded to wipe first; then, if nobody else holds the
    /// instance or moves to it, the instance is retired or returned
    /// ([`Reconciler::retire_if_vacated`]; a teardown or a move asks again once its row let go).
    /// Returns what became of the instance.
    pub(super) async fn leave_shared(
        &self,
        user: &UserId,
        (instance, slot): (&InstanceId, u32),
        left: Left,
        now: Millis,
    ) -> Result<Vacated, StepError> {
        let store = &self.inner.store;
        if left == Left::Dirty {
            let wipe = SlotWipe {
                instance_id: instance.clone(),
                slot,
                user_id: user.clone(),
                volume_id: None,
                command: None,
                created_at: now,
            };
            store.add_slot_wipe(&wipe).await?;
        }
        self.retire_if_vacated(instance, user, left, now).await
    }

    /// The user's workspace could not be unmounted from `instance`: the instance goes (its
    /// shutdown unmounts everything). A shared one is first emptied: asked to recycle, its other
    /// users move off, and once only `user` is left it is retired.
    pub(super) async fn retire_first(
        &self,
        user: &crate::store::UserRecord,
        instance: &InstanceId,
        now: Millis,
    ) -> Result<(), StepError> {
        if self.slots_of(&user.tier) == 1 {
            return self.retire_instance(instance, now).await;
        }
        self.inner.store.request_recycle(instance, now).await?;
        self.retire_if_vacated(instance, &user.user_id, Left::Dirty, now)
            .await?;
        Ok(())
    }

    /// If no user but `user` (leaving) holds the shared `instance` or moves to it, retires it,
    /// or, when it `left` it clean, returns it to the pool if no start ever reached it
    /// ([`crate::store::Store::vacate`]); what became of it.
    pub(super) async fn retire_if_vacated(
        &self,
        instance: &InstanceId,
        user: &UserId,
        left: Left,
        now: Millis,
    ) -> Result<Vacated, StepError> {
        let store = &self.inner.store;
        let may_return = left == Left::Clean;
        let vacated = store.vacate(instance, user, may_return, now).await?;
        match vacated {
            Vacated::Held => {}
            Vacated::Returned => {
                tracing::info!(%instance, %user,
                    "the last user left the shared instance before any start; back to the pool");
                // The tag mirrors the ledger for on-call; the ledger decided already.
                let status = one_tag(tags::STATUS, InstanceStatus::Initializing.as_str());
                if let Err(error) = self.inner.cloud.tag_instance(instance, &status).await {
                    tracing::debug!(%instance, error = %error, "could not tag instance initializing");
                }
            }
            Vacated::Retired => {
                tracing::info!(%instance, %user, "the last user left the shared instance; retiring it");
                self.retire_instance(instance, now).await?;
            }
        }
        Ok(vacated)
    }

    /// Drives the wipe of `slot` of `instance` one step: sends it (recorded first, so a crash
    /// resends at worst), or polls it; on success the slot is free.
    pub(super) async fn wipe_slot(
        &self,
        instance: &InstanceId,
        slot: u32,
        now: Millis,
    ) -> Result<(), StepError> {
        let store = &self.inner.store;
        let Some(wipe) = (store.slot_wipes().await?.into_iter())
            .find(|w| &w.instance_id == instance && w.slot == slot)
        else {
            return Ok(());
        };
        let record = store.get_instance(instance).await?;
        if record.is_none_or(|r| r.status == InstanceStatus::Terminating) {
            // The instance goes with everything on it.
            store.delete_slot_wipe(instance, slot).await?;
            return Ok(());
        }
        let cloud = &self.inner.cloud;
        let sent = match &wipe.command {
            Some(SentCommand {
                id: Some(id),
                sent_at,
            }) => (id.clone(), *sent_at),
            _ => {
                let unsent = SentCommand {
                    id: None,
                    sent_at: now,
                };
                store.set_slot_wipe_command(instance, slot, &unsent).await?;
                let device = instance_scripts::workspace_device_name(slot).unwrap_or_default();
                let script = instance_scripts::wipe_slot_script(
                    wipe.user_id.as_str(),
                    wipe.volume_id.as_deref(),
                    &device,
                );
                let comment = format!("spotpool wipe the slot of {}", wipe.user_id);
                let id = cloud
                    .send_command(instance, &comment, &script, WIPE_COMMAND_TIMEOUT_SECONDS)
                    .await?;
                let sent = SentCommand {
                    id: Some(id),
                    sent_at: now,
                };
                store.set_slot_wipe_command(instance, slot, &sent).await?;
                return Ok(());
            }
        };
        let (id, sent_at) = sent;
        match cloud.command_status(&id, instance).await {
            Ok(CommandStatus::Success) => {
                store.delete_slot_wipe(instance, slot).await?;
                metrics::counter!("spotpool_slot_wipes_total", "outcome" => "wiped").increment(1);
                tracing::info!(%instance, slot, user = %wipe.user_id, "slot wiped; free again");
            }
            Ok(CommandStatus::Pending)
                if now - sent_at <= i64::from(WIPE_COMMAND_TIMEOUT_SECONDS) * 1000 => {}
            Ok(CommandStatus::Pending | CommandStatus::Failed(_)) => {
                // Something of the user may be left: the slot stays taken, and the instance is
                // emptied and retired instead.
                metrics::counter!("spotpool_slot_wipes_total", "outcome" => "failed").increment(1);
                tracing::warn!(%instance, slot, user = %wipe.user_id,
                    "a slot could not be wiped; the instance is recycled");
                store.request_recycle(instance, now).await?;
            }
            // SSM no longer knows the command: sent again at the next step.
            Err(error) if error.kind == CloudErrorKind::NotFound => {
                let unsent = SentCommand {
                    id: None,
                    sent_at: now,
                };
                store.set_slot_wipe_command(instance, slot, &unsent).await?;
            }
            Err(error) => return Err(error.into()),
        }
        Ok(())
    }
}
