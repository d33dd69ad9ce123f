//! Auto-sleep: a ready user of a tier with `idle_sleep_after` that got no request through the
//! load balancer for that long is put to sleep (as `POST /v1/users/{id}/sleep` would).
//!
//! Requests come from CloudWatch's `AWS/ApplicationELB` `RequestCount` of the user's target
//! group, read in batched GetMetricData calls at most every [`IDLE_CHECK_INTERVAL`]. The metric
//! is reported only while requests flow, so a missing data point counts as zero. Agents whose
//! channels only poll outward (Telegram, Discord) see no inbound requests: the setting is off
//! by default.

use super::Reconciler;
use crate::cloud::TargetGroupMetric;
use crate::model::{Event, Millis, UserState};
use crate::store::UserRecord;
use std::time::Duration;

/// How often the request counts are read.
pub(super) const IDLE_CHECK_INTERVAL: Millis = 5 * 60_000;

impl Reconciler {
    /// Puts idle users to sleep, when the last check is older than [`IDLE_CHECK_INTERVAL`];
    /// returns whether any was. Failures are logged: the next check tries again.
    pub(super) async fn sleep_idle_users(&self, users: &[UserRecord], now: Millis) -> bool {
        {
            let mut last = self
                .inner
                .last_idle_check
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if now - *last < IDLE_CHECK_INTERVAL {
                return false;
            }
            *last = now;
        }
        let tiers = self.tiers();
        let mut candidates: Vec<(&UserRecord, TargetGroupMetric)> = Vec::new();
        let mut window = Duration::ZERO;
        for user in users {
            let tier = tiers.iter().find(|t| t.name == user.tier);
            let Some(idle_after) = tier.and_then(|t| t.idle_sleep_after) else {
                continue;
            };
            let ready_long_enough = user.ready_at.is_some_and(|at| now - at >= idle_after);
            if user.state != UserState::Ready || !ready_long_enough {
                continue;
            }
            let (Some(listener), Some(group)) =
                (&user.routing.listener_arn, &user.routing.target_group_arn)
            else {
                continue;
            };
            if let Some(metric) = TargetGroupMetric::from_arns(listener, group) {
                window = window.max(Duration::from_millis(idle_after as u64));
                candidates.push((user, metric));
            }
        }
        if candidates.is_empty() {
            return false;
        }
        let metrics: Vec<TargetGroupMetric> = candidates.iter().map(|(_, m)| m.clone()).collect();
        let counts = match self.inner.cloud.request_counts(&metrics, window).await {
            Ok(counts) => counts,
            Err(error) => {
                tracing::warn!(error = %error, "could not read the request counts; no auto-sleep this time");
                return false;
            }
        };
        let mut slept = false;
        for ((user, _), count) in candidates.iter().zip(counts) {
            if count > 0.0 {
                continue;
            }
            match self.inner.store.request_sleep(&user.user_id, now).await {
                Ok(true) => {
                    slept = true;
                    metrics::counter!("spotpool_idle_sleeps_total", "tier" => user.tier.clone())
                        .increment(1);
                    let event = Event::SleepRequested {
                        reason: "idle".into(),
                    };
                    if let Err(error) = self.journal(now, event, Some(&user.user_id), None).await {
                        tracing::warn!(error = %error, "could not journal an idle sleep");
                    }
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(error = %error, "could not put an idle user to sleep"),
            }
        }
        slept
    }
}
