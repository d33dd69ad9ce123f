//! What an interruption notice means for the pool (the notices come from the SQS consumer in
//! `crate::interruption_feed`, durably, keyed by event id).
//!
//! Each pass handles the unhandled notices, oldest event first, before it plans:
//! - a spot interruption warning or a state change on the way out, for an instance a ready user
//!   holds: the user starts moving now (`migrating`; first in line for a spare; the move's clock
//!   starts at the event's time);
//! - the same for a claim still in progress: the claim starts over elsewhere (recovery);
//! - the same for the target of a move in progress: that move is rolled back and retried;
//! - a warning for a spare: it is terminated and replaced, and its (type, subnet) offering is
//!   marked unavailable like a capacity error, since interruptions cluster;
//! - a rebalance recommendation: the user moves early if the tier allows it and a spare is
//!   ready; otherwise it is noted;
//! - anything else (an instance that is not ours, or a notice that arrives after the instance
//!   was already left behind): noted and marked handled.
//!
//! A notice acts on its instance and its users only while no action holds them (a claim that
//! outlived its pass may still be starting the container): it waits for a later pass otherwise.
//!
//! Every branch is idempotent, so a crash between acting and marking the notice handled only
//! repeats a no-op. A lost notice is caught anyway: an instance missing from DescribeInstances
//! is a lost instance, and its user is recovered.

use super::execute::{instance_key, user_key};
use super::{Reconciler, StepError};
use crate::cloud::CloudInstance;
use crate::model::{
    Event, InstanceStatus, Lifecycle, Millis, MoveReason, NoticeAction, NoticeKind,
    TerminateReason, UserState,
};
use crate::store::{StoredNotice, UserRecord};

impl Reconciler {
    /// Returns whether there were notices to handle.
    pub(super) async fn handle_notices(
        &self,
        observed: &[CloudInstance],
        now: Millis,
    ) -> Result<bool, StepError> {
        let store = &self.inner.store;
        let notices = store.list_unhandled_notices().await?;
        if notices.is_empty() {
            return Ok(false);
        }
        for stored in notices {
            let instance = &stored.notice.instance_id;
            let waits = || {
                tracing::debug!(event_id = %stored.notice.event_id, "notice waits: an action holds its instance or user");
            };
            let Some(_instance) = self.inner.in_flight.try_hold(vec![instance_key(instance)])
            else {
                waits();
                continue;
            };
            // The users as they are now that the instance is held: one a claim took since the
            // batch began is seen (the snapshot is decoded again only if a row changed). Every
            // branch re-checks its user's row before changing it, too.
            let users = store.users_snapshot().await?;
            let keys = users
                .iter()
                .filter(|u| {
                    u.instance_id.as_ref() == Some(instance) || u.move_target() == Some(instance)
                })
                .map(|u| user_key(&u.user_id))
                .collect();
            let Some(_users) = self.inner.in_flight.try_hold(keys) else {
                waits();
                continue;
            };
            let action = self.handle_notice(&stored, &users, observed, now).await?;
            let notice = &stored.notice;
            if notice.kind == NoticeKind::SpotInterruptionWarning {
                self.note_warned(instance, observed).await?;
            }
            metrics::counter!("spotpool_interruptions_handled_total", "kind" => notice.kind.as_str(), "action" => action.as_str())
                .increment(1);
            if action != NoticeAction::Ignored {
                let event = Event::Interruption {
                    action,
                    notice: notice.kind,
                    event_id: notice.event_id.clone(),
                    age_seconds: (now - notice.event_time).max(0) / 1000,
                };
                self.journal(now, event, None, Some(&notice.instance_id))
                    .await?;
            }
            store.mark_notice_handled(&notice.event_id, now).await?;
        }
        Ok(true)
    }

    /// Counts a warning against its instance's offering: as listed, or (a late notice, the
    /// instance gone from the listing) as the ledger had it.
    async fn note_warned(
        &self,
        instance: &crate::model::InstanceId,
        observed: &[CloudInstance],
    ) -> Result<(), StepError> {
        if let Some(seen) = observed.iter().find(|i| &i.id == instance) {
            self.note_interruption(&seen.instance_type, &seen.availability_zone);
        } else if let Some(record) = self.inner.store.get_instance(instance).await?
            && let (Some(instance_type), Some(zone)) =
                (&record.instance_type, &record.availability_zone)
        {
            self.note_interruption(instance_type, zone);
        }
        Ok(())
    }

    /// A shared instance EC2 takes back: each ready user moves (the first move asks the instance
    /// to recycle, so no claim lands there meanwhile; the executor's bound on actions in flight
    /// bounds the moves), each user still provisioning there is recovered.
    async fn empty_shared(
        &self,
        instance: &crate::model::InstanceId,
        on_it: &[&UserRecord],
        notice: &crate::model::InterruptionNotice,
    ) -> Result<NoticeAction, StepError> {
        self.inner
            .store
            .request_recycle(instance, self.now())
            .await?;
        let mut action = NoticeAction::Noted;
        for user in on_it {
            match user.state {
                UserState::Ready => {
                    self.begin_move(&user.user_id, reason(notice.kind), notice.event_time)
                        .await?;
                    action = NoticeAction::Move;
                }
                UserState::Provisioning => {
                    self.recover(&user.user_id).await?;
                    if action == NoticeAction::Noted {
                        action = NoticeAction::Recover;
                    }
                }
                _ => {}
            }
        }
        Ok(action)
    }

    /// Acts on one notice; returns what it did (a metric label).
    async fn handle_notice(
        &self,
        stored: &StoredNotice,
        users: &[UserRecord],
        observed: &[CloudInstance],
        now: Millis,
    ) -> Result<NoticeAction, StepError> {
        let inner = &self.inner;
        let store = &inner.store;
        let notice = &stored.notice;
        let instance = &notice.instance_id;
        let leaving = match notice.kind {
            NoticeKind::SpotInterruptionWarning => true,
            NoticeKind::StateChange(state) => state.is_gone(),
            NoticeKind::RebalanceRecommendation => false,
        };
        let on_it: Vec<&UserRecord> = (users.iter())
            .filter(|u| u.instance_id.as_ref() == Some(instance))
            .collect();
        if leaving && on_it.iter().any(|u| self.slots_of(&u.tier) > 1) {
            // Moves onto it go back too: their users stay where they are and try again.
            for mover in users.iter().filter(|u| u.move_target() == Some(instance)) {
                let cause = format!("the move target got {}", notice.kind.as_str());
                self.rollback_move(&mover.user_id, &cause).await?;
            }
            return self.empty_shared(instance, &on_it, notice).await;
        }
        if let Some(user) = on_it.first() {
            return Ok(match (user.state, leaving) {
                (UserState::Ready, true) => {
                    self.begin_move(&user.user_id, reason(notice.kind), notice.event_time)
                        .await?;
                    NoticeAction::Move
                }
                (UserState::Ready, false) => {
                    let allowed = (self.tier(&user.tier)).is_some_and(|t| t.rebalance_moves);
                    let spare = store.list_instances().await?.iter().any(|r| {
                        r.tier == user.tier
                            && r.status == InstanceStatus::Available
                            && !users
                                .iter()
                                .any(|u| u.move_target() == Some(&r.instance_id))
                    });
                    if allowed && spare {
                        let reason = MoveReason::Rebalance;
                        self.begin_move(&user.user_id, reason, notice.event_time)
                            .await?;
                        NoticeAction::Move
                    } else {
                        NoticeAction::Noted
                    }
                }
                (UserState::Provisioning, true) => {
                    self.recover(&user.user_id).await?;
                    NoticeAction::Recover
                }
                // Already moving off it, being released, or a rebalance mid-claim.
                _ => NoticeAction::Noted,
            });
        }
        let movers: Vec<&UserRecord> = (users.iter())
            .filter(|u| u.move_target() == Some(instance))
            .collect();
        if !movers.is_empty() {
            if !leaving {
                return Ok(NoticeAction::Noted);
            }
            // Every move onto it is rolled back (several onto a shared one), and the instance,
            // asked to recycle first, is retired, never given back to the pool while it dies.
            store.request_recycle(instance, now).await?;
            for user in movers {
                let cause = format!("the move target got {}", notice.kind.as_str());
                self.rollback_move(&user.user_id, &cause).await?;
            }
            return Ok(NoticeAction::MoveRetried);
        }
        let Some(record) = store.get_instance(instance).await? else {
            return Ok(NoticeAction::Ignored);
        };
        // Only a spare, or one still on its way to being one: an instance in any other status
        // has a holder this read of the users did not show, and it is that holder's to handle.
        if notice.kind != NoticeKind::SpotInterruptionWarning
            || !matches!(
                record.status,
                InstanceStatus::Available | InstanceStatus::Initializing
            )
        {
            return Ok(NoticeAction::Noted);
        }
        // A spare (or one still being probed) that EC2 takes back: replace it now, and avoid
        // its offering for a while.
        if let Some(seen) = observed.iter().find(|i| &i.id == instance)
            && let Some(subnet) = &seen.subnet_id
        {
            self.mark_unavailable(&record.tier, &seen.instance_type, subnet, now)
                .await?;
        }
        self.terminate(instance, TerminateReason::Interrupted, now)
            .await?;
        Ok(NoticeAction::Replace)
    }
}

fn reason(kind: NoticeKind) -> MoveReason {
    match kind {
        NoticeKind::SpotInterruptionWarning => MoveReason::Interruption,
        NoticeKind::RebalanceRecommendation => MoveReason::Rebalance,
        NoticeKind::StateChange(Lifecycle::Terminated | Lifecycle::ShuttingDown) => {
            MoveReason::Terminated
        }
        NoticeKind::StateChange(_) => MoveReason::Stopped,
    }
}
