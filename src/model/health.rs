//! A ready user's container health as the health watch sees it (ARCHITECTURE.md, "Health
//! watch"): what the load balancer last said, the watch's restart and crash-loop recycle, and
//! the judgement of one reading ([`HealthWatch::judge`]), pure so each branch is tested alone.

use super::{InstanceId, Millis, string_enum};

/// The `health` of a ready user's instance document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// The load balancer reports the container healthy.
    Healthy,
    /// The container was restarted over SSM after failing its health checks; judged again after
    /// the grace.
    Restarting,
    /// It failed again within the window after a restart: a crash loop, and the user moves to a
    /// fresh instance (with its workspace).
    Recycling,
    /// It failed again on the fresh instance too: left as it is, `ready`, for on-call.
    CrashLoop,
}

string_enum!(Health {
    Healthy => "healthy",
    Restarting => "restarting",
    Recycling => "recycling",
    CrashLoop => "crash_loop",
});

/// The watch's record of one user (the `users.health_*` columns, written by the watch alone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthWatch {
    /// None until a reading of the current container was judged.
    pub health: Option<Health>,
    /// The instance the record is about: a user on another one has a new container.
    pub instance: Option<InstanceId>,
    /// Since when the current container runs, as far as the watch knows (its first reading on
    /// this instance, or the restart): readings within the grace after it do not count.
    pub since: Option<Millis>,
    /// The watch's last restart of the container.
    pub restarted_at: Option<Millis>,
    /// The watch's last crash-loop recycle of the user: when the fresh instance's container
    /// was first read (so a slow move does not eat the window), or, while the move runs, when it
    /// was asked for.
    pub recycled_at: Option<Millis>,
    /// The load balancer's reason for the last failure judged (e.g.
    /// `Target.ResponseCodeMismatch: Health checks failed with these codes: [502]`).
    pub cause: Option<String>,
}

/// One reading of the load balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    Healthy,
    /// Failing its health checks, with AWS's reason.
    Unhealthy(String),
    /// Anything else (`initial`, `unused`, `draining`, not registered): no judgement.
    Other,
}

/// The watch's timings (per tier: [`HealthPolicy::for_check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// After a container starts (or restarts), how long an unhealthy reading is not acted on:
    /// the load balancer needs its healthy threshold of checks to see it healthy again.
    pub grace: Millis,
    /// A failure this soon after the watch's restart (or recycle) is a crash loop.
    pub window: Millis,
}

impl HealthPolicy {
    /// The least grace and window, for a tier whose health check sees a restarted container
    /// healthy quickly.
    pub const FLOOR: HealthPolicy = HealthPolicy {
        grace: 3 * 60_000,
        window: 15 * 60_000,
    };

    /// The timings for a tier's health check: the grace covers the load balancer's time to see
    /// a restarted container healthy (interval × healthy threshold, up to 50 minutes) and a
    /// minute of start; the window is at least twice the grace.
    pub fn for_check(check: &super::HealthCheck) -> HealthPolicy {
        let to_healthy = check.time_to_healthy().as_millis() as Millis;
        let grace = HealthPolicy::FLOOR.grace.max(to_healthy + 60_000);
        HealthPolicy {
            grace,
            window: HealthPolicy::FLOOR.window.max(2 * grace),
        }
    }
}

/// What to do after a reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Only record the watch.
    Record,
    /// Restart the container over SSM.
    Restart,
    /// A crash loop: journal and count it; `recycle`: move the user to a fresh instance (the
    /// first time within the window), else leave it.
    CrashLoop { recycle: bool },
}

impl HealthWatch {
    /// Judges `reading` of the user's container on `instance` at `now`: the record to keep and
    /// what to do.
    pub fn judge(
        &self,
        instance: &InstanceId,
        reading: &Reading,
        now: Millis,
        policy: &HealthPolicy,
    ) -> (HealthWatch, Verdict) {
        let mut watch = self.clone();
        if watch.instance.as_ref() != Some(instance) {
            // A new container (a claim, a move, a wake): judged afresh. The one a crash-loop
            // recycle moved to starts the recycle's window now, however long the move took; an
            // earlier recycle is remembered.
            let recycled_now = self.health == Some(Health::Recycling);
            watch = HealthWatch {
                instance: Some(instance.clone()),
                since: Some(now),
                recycled_at: if recycled_now {
                    Some(now)
                } else {
                    self.recycled_at
                },
                ..HealthWatch::default()
            };
        }
        let reason = match reading {
            Reading::Other => return (watch, Verdict::Record),
            Reading::Healthy => {
                watch.health = Some(Health::Healthy);
                watch.cause = None;
                return (watch, Verdict::Record);
            }
            Reading::Unhealthy(reason) => reason,
        };
        let settling = watch.since.is_some_and(|since| now - since < policy.grace);
        if settling || watch.health == Some(Health::CrashLoop) {
            return (watch, Verdict::Record);
        }
        watch.cause = Some(reason.clone());
        let recent = |at: Option<Millis>| at.is_some_and(|at| now - at <= policy.window);
        if !recent(watch.restarted_at) && !recent(watch.recycled_at) {
            watch.health = Some(Health::Restarting);
            watch.restarted_at = Some(now);
            watch.since = Some(now);
            return (watch, Verdict::Restart);
        }
        if recent(watch.recycled_at) {
            watch.health = Some(Health::CrashLoop);
            return (watch, Verdict::CrashLoop { recycle: false });
        }
        watch.health = Some(Health::Recycling);
        watch.recycled_at = Some(now);
        (watch, Verdict::CrashLoop { recycle: true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: HealthPolicy = HealthPolicy::FLOOR;

    fn unhealthy() -> Reading {
        Reading::Unhealthy("Target.Timeout".into())
    }

    /// Each branch: a new container settles; a failure restarts it; a failure again within the
    /// window recycles the user; a failure on the fresh instance is a crash loop left alone; a
    /// healthy reading clears the cause; a failure long after a restart restarts again.
    #[test]
    fn a_failure_restarts_a_second_recycles_and_a_third_is_left_as_a_crash_loop() {
        let (i1, i2) = (InstanceId("i-1".into()), InstanceId("i-2".into()));
        let start = HealthWatch::default();
        // The first reading of a container starting: within the grace, nothing is done.
        let (watch, verdict) = start.judge(&i1, &unhealthy(), 1_000, &POLICY);
        assert_eq!(verdict, Verdict::Record);
        assert_eq!((watch.since, watch.health), (Some(1_000), None));
        // Past it: restarted.
        let (watch, verdict) = watch.judge(&i1, &unhealthy(), 200_000, &POLICY);
        assert_eq!(verdict, Verdict::Restart);
        assert_eq!(watch.health, Some(Health::Restarting));
        assert_eq!(watch.cause.as_deref(), Some("Target.Timeout"));
        // Still failing within the restart's grace: wait.
        let (watch, verdict) = watch.judge(&i1, &unhealthy(), 300_000, &POLICY);
        assert_eq!(verdict, Verdict::Record);
        // Failing again after it, within the window: a crash loop, recycled once.
        let (watch, verdict) = watch.judge(&i1, &unhealthy(), 400_000, &POLICY);
        assert_eq!(verdict, Verdict::CrashLoop { recycle: true });
        assert_eq!(watch.health, Some(Health::Recycling));
        // On the fresh instance (the move took 20 minutes, longer than the window): a new
        // container, settling first, then left as a crash loop; the window counts from there.
        let (watch, verdict) = watch.judge(&i2, &unhealthy(), 1_600_000, &POLICY);
        assert_eq!(verdict, Verdict::Record);
        assert_eq!(watch.recycled_at, Some(1_600_000));
        assert_eq!(watch.restarted_at, None);
        let (watch, verdict) = watch.judge(&i2, &unhealthy(), 1_800_000, &POLICY);
        assert_eq!(verdict, Verdict::CrashLoop { recycle: false });
        assert_eq!(watch.health, Some(Health::CrashLoop));
        // Left alone while it fails.
        let (watch, verdict) = watch.judge(&i2, &unhealthy(), 1_900_000, &POLICY);
        assert_eq!(verdict, Verdict::Record);
        // It recovers: healthy, no cause.
        let (watch, verdict) = watch.judge(&i2, &Reading::Healthy, 2_000_000, &POLICY);
        assert_eq!(verdict, Verdict::Record);
        assert_eq!(
            (watch.health, watch.cause.clone()),
            (Some(Health::Healthy), None)
        );
        // A failure long after the window: a restart again, not a crash loop.
        let (_, verdict) = watch.judge(&i2, &unhealthy(), 3_000_000, &POLICY);
        assert_eq!(verdict, Verdict::Restart);
        // A reading that says nothing (initial, unused) changes nothing.
        let (same, verdict) = watch.judge(&i2, &Reading::Other, 3_000_000, &POLICY);
        assert_eq!(verdict, Verdict::Record);
        assert_eq!(same, watch);
    }

    /// A restart that fixed it: a failure after the window is a fresh restart.
    #[test]
    fn a_restart_that_held_past_the_window_starts_over() {
        let i1 = InstanceId("i-1".into());
        let watch = HealthWatch {
            health: Some(Health::Healthy),
            instance: Some(i1.clone()),
            since: Some(0),
            restarted_at: Some(0),
            ..HealthWatch::default()
        };
        let (_, verdict) = watch.judge(&i1, &unhealthy(), POLICY.window + 1, &POLICY);
        assert_eq!(verdict, Verdict::Restart);
        let (_, verdict) = watch.judge(&i1, &unhealthy(), POLICY.window, &POLICY);
        assert_eq!(verdict, Verdict::CrashLoop { recycle: true });
    }

    /// A tier whose load balancer needs 5 minutes to see a target healthy gets a grace past
    /// that, and a window at least twice the grace.
    #[test]
    fn a_slow_health_check_gets_a_longer_grace_and_window() {
        let check = |interval_seconds, healthy_threshold| crate::model::HealthCheck {
            path: "/healthz".into(),
            interval_seconds,
            timeout_seconds: 5,
            healthy_threshold,
            unhealthy_threshold: 2,
            codes: "200".into(),
        };
        assert_eq!(HealthPolicy::for_check(&check(5, 2)), HealthPolicy::FLOOR);
        let slow = HealthPolicy::for_check(&check(60, 5));
        assert_eq!(slow.grace, 360_000);
        assert_eq!(slow.window, 900_000);
        let slowest = HealthPolicy::for_check(&check(300, 10));
        assert_eq!(slowest.grace, 3_060_000);
        assert_eq!(slowest.window, 6_120_000);
    }
}
