//! Spares that follow demand (`spare = "auto"`, ARCHITECTURE.md "Spares that follow demand"):
//! a tier's spare target from the observed sign-up rate and the measured lead time (RunInstances
//! to `available`), so that a sign-up almost never waits for a cold boot, within the tier's
//! `min` and `max`. Pure: the reconciler measures, [`decide`] decides.
//!
//! The model: every claim takes a spare and starts a launch that takes the lead time `L` to
//! deliver its replacement. With sign-ups at rate `λ`, the replacements under way when a sign-up
//! comes are about Poisson with mean `λ·L`; it finds a spare when fewer than `k` are, so `k` is
//! one more than the 99th percentile of that Poisson. The rate is the largest of the last
//! minute's, quarter hour's and hour's (a spike is answered at once, a lull only once it lasts),
//! and a lower target must hold for [`SHRINK_AFTER`] before the tier shrinks to it.

use crate::model::Millis;

/// The share of sign-ups that should find a spare ready.
pub const WARM_HIT_GOAL: f64 = 0.99;
/// A lower target holds this long before the tier shrinks to it.
pub const SHRINK_AFTER: Millis = 15 * 60_000;

/// `spare = "auto"`'s bounds: never fewer spares than `min`, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpareBounds {
    pub min: u32,
    pub max: u32,
}

/// What the reconciler measured of a tier's demand.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Demand {
    /// Sign-ups (claims asked for) per hour over the last minute ([`RECENT`]).
    pub recent_rate: f64,
    /// Sign-ups (claims asked for) per hour over the last 15 minutes.
    pub quarter_hour_rate: f64,
    /// Sign-ups per hour over the last hour.
    pub hour_rate: f64,
    /// RunInstances to `available`: the tier's measured lead time, or an assumed one until a
    /// launch was measured.
    pub lead_time: Millis,
}

/// The shortest window the rate is measured over: a spike's onset shows within it
/// (`examples/spares_day.rs` measured 5 and 2 minutes short of 99 % warm hits at a 10× spike).
pub const RECENT: Millis = 60_000;
/// The sign-ups the last minute must hold for its rate to count.
pub const RECENT_LEAST: u32 = 2;
const QUARTER_HOUR: Millis = 15 * 60_000;
const HOUR: Millis = 60 * 60_000;

impl Demand {
    /// The demand of sign-ups made at `sign_ups` (a tier's users' `requested_at`), as of `now`,
    /// with the lead time `lead_time`.
    pub fn from_sign_ups(
        sign_ups: impl IntoIterator<Item = Millis>,
        now: Millis,
        lead_time: Millis,
    ) -> Demand {
        let (mut recent, mut quarter_hour, mut hour) = (0u32, 0u32, 0u32);
        for at in sign_ups {
            let age = now - at;
            recent += u32::from(age < RECENT);
            quarter_hour += u32::from(age < QUARTER_HOUR);
            hour += u32::from(age < HOUR);
        }
        // One sign-up (or wake) in a minute is no spike: it would read as 60 an hour.
        let recent = if recent >= RECENT_LEAST { recent } else { 0 };
        Demand {
            recent_rate: f64::from(recent) * (HOUR / RECENT) as f64,
            quarter_hour_rate: f64::from(quarter_hour) * (HOUR / QUARTER_HOUR) as f64,
            hour_rate: f64::from(hour),
            lead_time,
        }
    }
}

/// The decision and what it was made from, kept from pass to pass (and shown by `GET /v1/pool`).
#[derive(Debug, Clone, PartialEq)]
pub struct AutoSpares {
    /// The spares the tier keeps now.
    pub target: u32,
    /// What the demand asks for now (the target follows it up at once, down after
    /// [`SHRINK_AFTER`]).
    pub wanted: u32,
    /// Since when `wanted` has been below `target`.
    pub lower_since: Option<Millis>,
    /// The most `wanted` was since then: what the tier shrinks to when the hold ends (so a rate
    /// that merely wavers below the target does not shrink it to a dip and grow it back).
    pub held: u32,
    /// The spares that would cover the goal, before `max` capped them.
    pub demanded: u64,
    /// The rate used (sign-ups per hour) and the lead time.
    pub rate_per_hour: f64,
    pub lead_time: Millis,
}

impl AutoSpares {
    /// One line on-call reads: the rate, the lead time, the arrivals expected within one lead
    /// time, and why the target is what it is.
    pub fn reason(&self) -> String {
        let expected = self.rate_per_hour * self.lead_time as f64 / 3_600_000.0;
        let cover = if self.demanded > u64::from(self.wanted) {
            format!(
                "{} spares would cover {:.0} % of sign-ups, capped at {} (spare_max)",
                self.demanded,
                WARM_HIT_GOAL * 100.0,
                self.wanted
            )
        } else {
            format!(
                "{} spares cover {:.0} % of sign-ups",
                self.wanted,
                WARM_HIT_GOAL * 100.0
            )
        };
        let base = format!(
            "{:.1} sign-ups an hour, a lead time of {} s: {expected:.2} expected while a spare is \
             replaced; {cover}",
            self.rate_per_hour,
            self.lead_time / 1000,
        );
        match self.lower_since {
            Some(_) => format!(
                "{base}; holding {} until the lower demand has lasted {} minutes",
                self.target,
                SHRINK_AFTER / 60_000
            ),
            None => base,
        }
    }
}

/// The target for `demand` within `bounds`, given the last decision (`previous`) at `now`.
pub fn decide(
    bounds: SpareBounds,
    demand: &Demand,
    previous: Option<&AutoSpares>,
    now: Millis,
) -> AutoSpares {
    let rate = (demand.recent_rate)
        .max(demand.quarter_hour_rate)
        .max(demand.hour_rate)
        .max(0.0);
    let expected = rate * demand.lead_time.max(0) as f64 / 3_600_000.0;
    let demanded = poisson_quantile(expected, WARM_HIT_GOAL) + 1;
    let max = bounds.max.max(bounds.min);
    let wanted = demanded.clamp(u64::from(bounds.min), u64::from(max)) as u32;
    let (target, lower_since, held) = match previous {
        // Bounds changed under it (a reload): the last target within them, then as ever.
        Some(previous) => {
            let current = previous.target.clamp(bounds.min, max);
            if wanted >= current {
                (wanted, None, wanted)
            } else {
                let held = match previous.lower_since {
                    Some(_) => previous.held.max(wanted).min(current),
                    None => wanted,
                };
                let since = previous.lower_since.unwrap_or(now);
                if now - since >= SHRINK_AFTER {
                    (held, None, held)
                } else {
                    (current, Some(since), held)
                }
            }
        }
        None => (wanted, None, wanted),
    };
    AutoSpares {
        target,
        wanted,
        lower_since,
        held,
        demanded,
        rate_per_hour: rate,
        lead_time: demand.lead_time,
    }
}

/// The smallest `k` with P(X ≤ k) ≥ `goal` for X Poisson with mean `mean`; past a mean of 500
/// (where e^-mean underflows) the normal approximation.
fn poisson_quantile(mean: f64, goal: f64) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    if mean > 500.0 {
        // z of 0.99.
        return (mean + 2.326 * mean.sqrt()).ceil() as u64;
    }
    let mut term = (-mean).exp();
    let mut cumulative = term;
    let mut k = 0u64;
    while cumulative < goal && k < 10_000 {
        k += 1;
        term *= mean / k as f64;
        cumulative += term;
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BOUNDS: SpareBounds = SpareBounds { min: 1, max: 40 };

    fn demand(rate: f64, lead_seconds: i64) -> Demand {
        Demand {
            recent_rate: rate,
            quarter_hour_rate: rate,
            hour_rate: rate,
            lead_time: lead_seconds * 1000,
        }
    }

    #[test]
    fn the_quantile_matches_the_poisson_tables() {
        assert_eq!(poisson_quantile(0.0, 0.99), 0);
        // P(X ≤ 2) = 0.9856, P(X ≤ 3) = 0.9982 at mean 0.5.
        assert_eq!(poisson_quantile(0.5, 0.99), 3);
        // At mean 4: P(X ≤ 8) = 0.9786, P(X ≤ 9) = 0.9919.
        assert_eq!(poisson_quantile(4.0, 0.99), 9);
        assert_eq!(poisson_quantile(1_000.0, 0.99), 1_074);
    }

    /// No sign-ups: the minimum. A steady trickle (60 an hour, 2.5 minutes to replace a spare,
    /// 2.5 expected meanwhile; 99 % of Poisson(2.5) is 7 or fewer): 8. A launch day (600 an
    /// hour, 25 expected; 37): 38, and twice that is past the max.
    #[test]
    fn the_target_follows_the_rate_and_the_lead_time() {
        assert_eq!(decide(BOUNDS, &demand(0.0, 150), None, 0).target, 1);
        assert_eq!(decide(BOUNDS, &demand(60.0, 150), None, 0).target, 8);
        assert_eq!(decide(BOUNDS, &demand(600.0, 150), None, 0).target, 38);
        let capped = decide(BOUNDS, &demand(1_200.0, 150), None, 0);
        assert_eq!((capped.target, capped.demanded), (40, 68), "the max");
        assert!(
            capped
                .reason()
                .contains("68 spares would cover 99 % of sign-ups, capped at 40"),
            "{}",
            capped.reason()
        );
        let wide = SpareBounds { min: 2, max: 100 };
        assert_eq!(decide(wide, &demand(600.0, 150), None, 0).target, 38);
        assert_eq!(
            decide(wide, &demand(0.0, 150), None, 0).target,
            2,
            "the min"
        );
    }

    /// A spike is answered at once; the lull after it only once it lasted 15 minutes.
    #[test]
    fn a_spike_grows_at_once_and_a_lull_shrinks_after_it_lasted() {
        let busy = decide(BOUNDS, &demand(1_200.0, 150), None, 0);
        assert_eq!(busy.target, 40);
        let quiet = demand(6.0, 150);
        let held = decide(BOUNDS, &quiet, Some(&busy), 60_000);
        assert_eq!((held.target, held.lower_since), (40, Some(60_000)));
        assert!(held.reason().contains("holding 40"), "{}", held.reason());
        let still = decide(BOUNDS, &quiet, Some(&held), 60_000 + SHRINK_AFTER - 1);
        assert_eq!(still.target, 40);
        let shrunk = decide(BOUNDS, &quiet, Some(&still), 60_000 + SHRINK_AFTER);
        assert_eq!((shrunk.target, shrunk.lower_since), (shrunk.wanted, None));
        assert!(shrunk.target < 5);
        // A rate that wavers during the hold: it shrinks to the most the hold asked for.
        let wavering = decide(BOUNDS, &demand(60.0, 150), Some(&held), 90_000);
        assert_eq!((wavering.target, wavering.held), (40, 8));
        let dip = decide(BOUNDS, &quiet, Some(&wavering), 60_000 + SHRINK_AFTER);
        assert_eq!(dip.target, 8, "the hold's most, not the dip's 3");
        // A rise during the wait ends it.
        let back = decide(BOUNDS, &demand(1_200.0, 150), Some(&held), 120_000);
        assert_eq!((back.target, back.lower_since), (40, None));
        // The quarter hour's rate answers a spike the hour's has not caught up with.
        let spike = Demand {
            recent_rate: 0.0,
            quarter_hour_rate: 240.0,
            hour_rate: 60.0,
            lead_time: 150_000,
        };
        assert_eq!(decide(BOUNDS, &spike, None, 0).target, 19);
    }

    /// The last minute's sign-ups answer a spike's onset before the quarter hour's do.
    #[test]
    fn the_rate_of_each_window_counts_its_own_sign_ups() {
        let now = 10 * HOUR;
        // One an hour ago and more, 3 in the last quarter hour, 4 in the last minute.
        let ages = [
            2 * HOUR,
            HOUR - 1,
            14 * 60_000,
            5 * 60_000,
            2 * 60_000,
            59_000,
            30_000,
            1,
            0,
        ];
        let demand = Demand::from_sign_ups(ages.iter().map(|a| now - a), now, 150_000);
        assert_eq!(demand.hour_rate, 8.0);
        assert_eq!(demand.quarter_hour_rate, 7.0 * 4.0);
        assert_eq!(demand.recent_rate, 4.0 * 60.0);
        assert_eq!(demand.lead_time, 150_000);
        // 240 an hour over 150 s: 10 expected, 18 cover 99 %, one more.
        assert_eq!(decide(BOUNDS, &demand, None, now).target, 19);
        // A lone sign-up in the last minute is no spike.
        let lone = Demand::from_sign_ups([now - 10 * 60_000, now - 1_000], now, 150_000);
        assert_eq!((lone.recent_rate, lone.quarter_hour_rate), (0.0, 8.0));
    }

    proptest! {
        /// Within the bounds, whatever the demand, the history and a reload of the bounds.
        #[test]
        fn the_target_stays_within_the_bounds(
            rates in proptest::collection::vec(
                ((0.0f64..5_000.0, 0.0f64..5_000.0, 0.0f64..5_000.0), 0i64..3_600_000, 0u32..20, 0u32..50),
                1..40,
            ),
        ) {
            let mut last: Option<AutoSpares> = None;
            for (n, ((recent, quarter, hour), lead, min, extra)) in rates.into_iter().enumerate() {
                let bounds = SpareBounds { min, max: min + extra };
                let demand = Demand { recent_rate: recent, quarter_hour_rate: quarter, hour_rate: hour, lead_time: lead };
                let next = decide(bounds, &demand, last.as_ref(), n as i64 * 60_000);
                prop_assert!(next.target >= bounds.min && next.target <= bounds.max, "{next:?}");
                last = Some(next);
            }
        }

        /// A constant rate gives one target, pass after pass: no oscillation.
        #[test]
        fn a_constant_rate_never_oscillates(
            rate in 0.0f64..5_000.0,
            lead in 10_000i64..1_800_000,
            start in 0u32..40,
        ) {
            let demand = Demand { recent_rate: rate, quarter_hour_rate: rate, hour_rate: rate, lead_time: lead };
            let first = decide(BOUNDS, &demand, None, 0);
            let mut last = AutoSpares { target: start.clamp(BOUNDS.min, BOUNDS.max), ..first.clone() };
            let mut targets = Vec::new();
            for pass in 1..200 {
                last = decide(BOUNDS, &demand, Some(&last), pass * 10_000);
                targets.push(last.target);
            }
            // It settles on the demand's target and stays there.
            let settled = targets.last().copied().unwrap();
            prop_assert_eq!(settled, first.target);
            let changes = targets.windows(2).filter(|w| w[0] != w[1]).count();
            prop_assert!(changes <= 1, "{targets:?}");
        }

        /// More sign-ups, or a longer lead time, never ask for fewer spares.
        #[test]
        fn more_demand_never_asks_for_fewer(
            rate in 0.0f64..2_000.0,
            more in 0.0f64..2_000.0,
            lead in 0i64..1_800_000,
        ) {
            let bounds = SpareBounds { min: 0, max: 10_000 };
            let low = decide(bounds, &Demand { recent_rate: rate, quarter_hour_rate: rate, hour_rate: rate, lead_time: lead }, None, 0);
            let high = decide(bounds, &Demand { recent_rate: rate + more, quarter_hour_rate: rate + more, hour_rate: rate + more, lead_time: lead }, None, 0);
            // More in the last minute alone never asks for fewer either.
            let burst = decide(bounds, &Demand { recent_rate: rate + more, quarter_hour_rate: rate, hour_rate: rate, lead_time: lead }, None, 0);
            prop_assert!(burst.wanted >= low.wanted);
            let longer = decide(bounds, &Demand { recent_rate: rate, quarter_hour_rate: rate, hour_rate: rate, lead_time: lead * 2 }, None, 0);
            prop_assert!(high.wanted >= low.wanted);
            prop_assert!(longer.wanted >= low.wanted);
        }
    }
}
