//! The health watch (ARCHITECTURE.md, "Health watch"): a ready user's target, read with
//! DescribeTargetHealth within a budget of the ELB describe quota
//! (`SPOTPOOL_HEALTH_CHECKS_PER_SECOND`), judged by [`HealthWatch::judge`]: a container failing
//! its health checks is restarted over SSM; failing again within the window, it is a crash loop
//! (an event, `spotpool_crash_loops_total{tier}`), and the user moves once to a fresh instance
//! with its workspace; failing there too, it is left `ready` with `health: crash_loop` and the
//! load balancer's reason.
//!
//! Each pass reads at most the budget earned since the last (a token bucket of
//! [`MAX_BURST`]): the users whose restart's grace just ended first, then the longest unread.
//! The grace and the window are the tier's (`HealthPolicy::for_check`): at least 3 and 15
//! minutes, longer when its load balancer needs longer to see a target healthy.

use super::Reconciler;
use crate::model::{
    Event, Health, HealthPolicy, HealthWatch, InstanceId, Millis, MoveReason, Reading, UserId,
    UserState, Verdict,
};
use crate::store::UserRecord;
use std::collections::HashMap;

/// Most readings one pass makes.
const MAX_BURST: f64 = 20.0;
/// Readings in flight at once.
const CONCURRENCY: usize = 4;
/// The restart command's limit (`docker restart` waits 20 s for the container to stop).
const RESTART_TIMEOUT_SECONDS: u32 = 120;

/// The watch's state in this term: the budget (when it was last filled, the readings it holds)
/// and when each user was last read (for the rotation; a new leader starts it again).
#[derive(Debug, Default)]
pub(super) struct WatchState {
    filled_at: Option<Millis>,
    tokens: f64,
    read_at: HashMap<UserId, Millis>,
}

impl Reconciler {
    /// Auto-sleep, then the health watch, over the ready users (neither on a dry run): the users
    /// as they are after (read again when either changed one).
    pub(super) async fn watch_users(
        &self,
        mut users: std::sync::Arc<Vec<UserRecord>>,
        (now, dry_run): (Millis, bool),
    ) -> Result<std::sync::Arc<Vec<UserRecord>>, crate::store::StoreError> {
        if dry_run {
            return Ok(users);
        }
        if self.sleep_idle_users(&users, now).await {
            users = self.inner.store.users_snapshot().await?;
        }
        if self.watch_health(&users, now).await {
            users = self.inner.store.users_snapshot().await?;
        }
        Ok(users)
    }

    /// Reads and judges the health of the ready users the budget allows; returns whether a
    /// user began a move (the users must be read again).
    pub(super) async fn watch_health(&self, users: &[UserRecord], now: Millis) -> bool {
        let due = self.due_for_reading(users, now);
        let mut moved = false;
        for batch in due.chunks(CONCURRENCY) {
            let checks = batch.iter().map(|user| self.check_health(user, now));
            moved |= futures_util::future::join_all(checks)
                .await
                .into_iter()
                .any(|m| m);
        }
        moved
    }

    /// The users this pass reads, at most the budget earned since the last pass at
    /// `SPOTPOOL_HEALTH_CHECKS_PER_SECOND` (at most [`MAX_BURST`]): those whose restart's
    /// grace just ended first (the watch's next step waits on them), then the longest unread.
    /// Each is marked read now, whatever the reading brings (an error included), so no user
    /// holds the budget.
    fn due_for_reading<'a>(&self, users: &'a [UserRecord], now: Millis) -> Vec<&'a UserRecord> {
        let rate = self.inner.config.health_checks_per_second;
        if rate <= 0.0 {
            return Vec::new();
        }
        let mut state = self
            .inner
            .health_watch
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let earned = match state.filled_at {
            None => MAX_BURST,
            Some(at) => (now - at).max(0) as f64 / 1000.0 * rate,
        };
        state.filled_at = Some(now);
        state.tokens = (state.tokens + earned).min(MAX_BURST);
        let allowed = state.tokens.floor();
        let mut due: Vec<&UserRecord> = users
            .iter()
            .filter(|u| {
                u.state == UserState::Ready
                    && u.teardown.is_none()
                    && u.instance_id.is_some()
                    && u.routing.target_group_arn.is_some()
            })
            .collect();
        // Forget the users that are not watched any more (released, asleep, moving).
        let watched: std::collections::HashSet<&UserId> = due.iter().map(|u| &u.user_id).collect();
        state.read_at.retain(|user, _| watched.contains(user));
        // Each user's key once (its tier's policy is a lookup), not at every comparison.
        due.sort_by_cached_key(|u| {
            let policy = self.health_policy(u);
            let waited_on = u.health.health == Some(Health::Restarting)
                && u.health.instance == u.instance_id
                && u.health.since.is_some_and(|since| {
                    now - since >= policy.grace && now - since <= policy.window
                });
            let read_at = state.read_at.get(&u.user_id).copied();
            (!waited_on, read_at.unwrap_or(Millis::MIN))
        });
        due.truncate(allowed as usize);
        state.tokens -= due.len() as f64;
        for user in &due {
            state.read_at.insert(user.user_id.clone(), now);
        }
        due
    }

    /// The grace and window of the user's tier's health check.
    fn health_policy(&self, user: &UserRecord) -> HealthPolicy {
        HealthPolicy::for_check(&self.runtime(&user.tier).container.health_check)
    }

    /// One user: read, judge, act, record. Returns whether it began a move.
    async fn check_health(&self, user: &UserRecord, now: Millis) -> bool {
        let (Some(instance), Some(group)) = (&user.instance_id, &user.routing.target_group_arn)
        else {
            return false;
        };
        let port = self.port_on(user, instance);
        let reading = match self.inner.cloud.target_health(group, instance, port).await {
            Ok(health) if health.is_healthy() => Reading::Healthy,
            Ok(health) if health.is_unhealthy() => Reading::Unhealthy(
                health
                    .reason
                    .unwrap_or_else(|| "failing its health checks".into()),
            ),
            Ok(_) => Reading::Other,
            Err(error) => {
                metrics::counter!("spotpool_health_checks_total", "result" => "error").increment(1);
                tracing::warn!(user = %user.user_id, %error, "could not read the container's health");
                return false;
            }
        };
        let result = match &reading {
            Reading::Healthy => "healthy",
            Reading::Unhealthy(_) => "unhealthy",
            Reading::Other => "other",
        };
        metrics::counter!("spotpool_health_checks_total", "result" => result).increment(1);
        let (watch, verdict) =
            user.health
                .judge(instance, &reading, now, &self.health_policy(user));
        let (watch, moved) = match verdict {
            Verdict::Record => (watch, false),
            Verdict::Restart => (self.restart(user, instance, watch, now).await, false),
            Verdict::CrashLoop { recycle } => self.crash_loop(user, watch, recycle, now).await,
        };
        if watch.health == Some(Health::Healthy)
            && user.health.instance.as_ref() == Some(instance)
            && let Some(was) = user.health.health.filter(|h| *h != Health::Healthy)
        {
            self.journal_health(now, Event::HealthRecovered { was }, user)
                .await;
        }
        // Written only when the judgement changed: a write of `users` makes the next pass
        // decode every user again.
        if watch != user.health {
            self.record_health(user, &watch).await;
        }
        moved
    }

    /// Restarts the container; the record to keep: `watch` once the command was sent, else the
    /// user's record as it was (so a restart that never ran cannot count as one that failed).
    async fn restart(
        &self,
        user: &UserRecord,
        instance: &InstanceId,
        watch: HealthWatch,
        now: Millis,
    ) -> HealthWatch {
        let script = crate::instance_scripts::restart_container_script(user.user_id.as_str());
        let sent = self
            .inner
            .cloud
            .send_command(
                instance,
                "spotpool: restart the user's container",
                &script,
                RESTART_TIMEOUT_SECONDS,
            )
            .await;
        let reason = watch.cause.clone().unwrap_or_default();
        match sent {
            Ok(command_id) => {
                metrics::counter!("spotpool_container_restarts_total", "tier" => user.tier.clone())
                    .increment(1);
                tracing::warn!(user = %user.user_id, %instance, %reason, "container failing its health checks: restarted");
                let event = Event::HealthRestarted { reason, command_id };
                self.journal_health(now, event, user).await;
                watch
            }
            Err(error) => {
                tracing::warn!(user = %user.user_id, %error, "could not restart the container; trying again at its next reading");
                user.health.clone()
            }
        }
    }

    /// A crash loop: journalled and counted; with `recycle`, the record (`Recycling`) written
    /// first, then the move, so a crash between them cannot lose the recycle and move the user
    /// again and again. A move that did not begin leaves the record as it was.
    async fn crash_loop(
        &self,
        user: &UserRecord,
        watch: HealthWatch,
        recycle: bool,
        now: Millis,
    ) -> (HealthWatch, bool) {
        let reason = watch.cause.clone().unwrap_or_default();
        metrics::counter!("spotpool_crash_loops_total", "tier" => user.tier.clone()).increment(1);
        tracing::warn!(user = %user.user_id, %reason, recycle, "container crash loop");
        let event = Event::HealthCrashLoop { reason, recycle };
        self.journal_health(now, event, user).await;
        if !recycle {
            return (watch, false);
        }
        if !self.record_health(user, &watch).await {
            return (user.health.clone(), false);
        }
        match self
            .begin_move(&user.user_id, MoveReason::CrashLoop, now)
            .await
        {
            Ok(true) => (watch, true),
            Ok(false) => (user.health.clone(), false),
            Err(error) => {
                tracing::warn!(user = %user.user_id, %error, "could not move a crash-looping user");
                (user.health.clone(), false)
            }
        }
    }

    /// Writes the watch's record of `user`; whether it was written.
    async fn record_health(&self, user: &UserRecord, watch: &HealthWatch) -> bool {
        match self.inner.store.set_health(&user.user_id, watch).await {
            Ok(written) => written,
            Err(error) => {
                tracing::warn!(user = %user.user_id, %error, "could not record the container's health");
                false
            }
        }
    }

    async fn journal_health(&self, now: Millis, event: Event, user: &UserRecord) {
        let instance = user.instance_id.as_ref();
        if let Err(error) = self
            .journal(now, event, Some(&user.user_id), instance)
            .await
        {
            tracing::warn!(%error, "could not journal the container's health");
        }
    }
}
