//! The health watch (ARCHITECTURE.md, "Health watch"): a ready user's target, read with
//! DescribeTargetHealth within a budget of the ELB describe quota
//! (`SPOTPOOL_HEALTH_CHECKS_PER_SECOND`), judged by [`HealthWatch::judge`]: a container failing
//! its health checks is restarted over SSM; failing again within the window, it is a crash loop
//! (an event, `spotpool_crash_loops_total{tier}`), and the user moves once to a fresh instance
//! with its workspace; failing there too, it is left `ready` with `health: crash_loop` and the
//! load balancer's reason.
//!
//! Each pass reads at most the budget earned since the last (a token bucket of
//! [`MAX_BURST`]): the users whose watch acted first, then the longest unread.

use super::Reconciler;
use crate::model::{
    Event, Health, HealthPolicy, HealthWatch, Millis, MoveReason, Reading, UserState, Verdict,
};
use crate::store::UserRecord;

/// After a container starts or restarts, how long a failing reading is not acted on.
pub(super) const HEALTH_GRACE: Millis = 3 * 60_000;
/// A failure this soon after the watch's restart or recycle is a crash loop.
pub(super) const CRASH_WINDOW: Millis = 15 * 60_000;
/// Most readings one pass makes.
const MAX_BURST: f64 = 20.0;
/// Readings in flight at once.
const CONCURRENCY: usize = 4;
/// The restart command's limit (`docker restart` waits 20 s for the container to stop).
const RESTART_TIMEOUT_SECONDS: u32 = 120;

const POLICY: HealthPolicy = HealthPolicy {
    grace: HEALTH_GRACE,
    window: CRASH_WINDOW,
};

/// The budget's state: when it was last filled, and the readings it holds.
#[derive(Debug, Default)]
pub(super) struct HealthBudget {
    filled_at: Option<Millis>,
    tokens: f64,
}

impl Reconciler {
    /// Auto-sleep, then the health watch, over the ready users: the users as they are after
    /// (read again when either changed one).
    pub(super) async fn watch_users(
        &self,
        mut users: std::sync::Arc<Vec<UserRecord>>,
        now: Millis,
    ) -> Result<std::sync::Arc<Vec<UserRecord>>, crate::store::StoreError> {
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
        let allowed = self.take_health_budget(now);
        if allowed == 0 {
            return false;
        }
        let mut due: Vec<&UserRecord> = users
            .iter()
            .filter(|u| {
                u.state == UserState::Ready
                    && u.teardown.is_none()
                    && u.instance_id.is_some()
                    && u.routing.target_group_arn.is_some()
            })
            .collect();
        // The users the watch acted on first (their grace may be over), then the longest unread.
        due.sort_by_key(|u| {
            let acting = matches!(
                u.health.health,
                Some(Health::Restarting | Health::Recycling)
            );
            (!acting, u.health.checked_at.unwrap_or(Millis::MIN))
        });
        due.truncate(allowed);
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

    /// The readings this pass may make: the budget earned since the last pass at
    /// `SPOTPOOL_HEALTH_CHECKS_PER_SECOND`, at most [`MAX_BURST`].
    fn take_health_budget(&self, now: Millis) -> usize {
        let rate = self.inner.config.health_checks_per_second;
        if rate <= 0.0 {
            return 0;
        }
        let mut budget = self
            .inner
            .health_budget
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let earned = match budget.filled_at {
            None => MAX_BURST,
            Some(at) => (now - at).max(0) as f64 / 1000.0 * rate,
        };
        budget.filled_at = Some(now);
        budget.tokens = (budget.tokens + earned).min(MAX_BURST);
        let taken = budget.tokens.floor();
        budget.tokens -= taken;
        taken as usize
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
        let (watch, verdict) = user.health.judge(instance, &reading, now, &POLICY);
        let moved = self.act_on_health(user, &watch, verdict, now).await;
        let was = user.health.health;
        if watch.health == Some(Health::Healthy)
            && user.health.instance.as_ref() == Some(instance)
            && let Some(was) = was.filter(|h| *h != Health::Healthy)
        {
            self.journal_health(now, Event::HealthRecovered { was }, user)
                .await;
        }
        if let Err(error) = self.inner.store.set_health(&user.user_id, &watch).await {
            tracing::warn!(user = %user.user_id, %error, "could not record the container's health");
        }
        moved
    }

    /// What `verdict` asks: restart the container, or count a crash loop and move the user.
    async fn act_on_health(
        &self,
        user: &UserRecord,
        watch: &HealthWatch,
        verdict: Verdict,
        now: Millis,
    ) -> bool {
        let reason = watch.cause.clone().unwrap_or_default();
        let tier = user.tier.clone();
        match verdict {
            Verdict::Record => false,
            Verdict::Restart => {
                let Some(instance) = &user.instance_id else {
                    return false;
                };
                let script =
                    crate::instance_scripts::restart_container_script(user.user_id.as_str());
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
                match sent {
                    Ok(command_id) => {
                        metrics::counter!("spotpool_container_restarts_total", "tier" => tier)
                            .increment(1);
                        tracing::warn!(user = %user.user_id, %instance, %reason, "container failing its health checks: restarted");
                        let event = Event::HealthRestarted { reason, command_id };
                        self.journal_health(now, event, user).await;
                    }
                    // Judged again after the grace: failing still, it counts as failing again.
                    Err(error) => {
                        tracing::warn!(user = %user.user_id, %error, "could not restart the container")
                    }
                }
                false
            }
            Verdict::CrashLoop { recycle } => {
                metrics::counter!("spotpool_crash_loops_total", "tier" => tier).increment(1);
                tracing::warn!(user = %user.user_id, %reason, recycle, "container crash loop");
                let event = Event::HealthCrashLoop { reason, recycle };
                self.journal_health(now, event, user).await;
                if !recycle {
                    return false;
                }
                match self
                    .begin_move(&user.user_id, MoveReason::CrashLoop, now)
                    .await
                {
                    Ok(()) => true,
                    Err(error) => {
                        tracing::warn!(user = %user.user_id, %error, "could not move a crash-looping user");
                        false
                    }
                }
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
