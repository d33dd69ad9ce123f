//! Benchmark (issue 16, point 5): spares that follow demand (`spare = "auto"`) against fixed
//! spare counts over seeded, bursty days of sign-ups.
//!
//! `cargo build --bins --examples && target/debug/examples/spares_day [SEED...]` (default seed
//! 20261202; more seeds print one summary line each). With `--window`, the figures of the
//! launch-day spike's window only ([`SPIKE_WINDOW`]), which `tests/it/spares_daemon.rs` replays
//! on the real daemon: measured within the two-day run, and run alone from a pool filled just
//! before it, as the daemon's run starts.
//!
//! **What runs.** A discrete-event simulation of one dedicated tier at one-second steps over two
//! days, with the daemon's own decision (`plan::spares::decide` fed by `Demand::from_sign_ups`,
//! the lead time the median of the last 20 launches, 180 s until one was measured) and the
//! daemon's counting rule (a pass every 5 s launches `target + queued - (available +
//! launching)`; a surplus of available spares over the target retires the newest). The times
//! are drawn from the simulated fake's profile (`Profile::aws()`, `aws-profile.md`): a launch is
//! available after RunInstances, pending to running, the SSM agent, the probe's pickup and run,
//! two passed health checks of the warm route (2 × 5 s) and the next pass; a claim is ready
//! after its API calls (2 s), the start command's pickup, the OpenClaw gateway's start and the
//! rule. The full daemon on the simulated fake runs about 30 simulated seconds per wall second
//! (`tests/it/faults.rs`: its time keeper caps each clock jump at 1 ms while SQLite works), so
//! seven policies over two days would take hours; this model runs them in seconds.
//! `tests/it/spares_daemon.rs` checks it against the daemon over the spike's window (about 90
//! simulated seconds per wall second there, with no faults).
//!
//! **The trace.** Sign-ups are a Poisson process whose rate follows the day: 6 an hour at night
//! (0-6 h), a ramp to 60 an hour (6-10 h), 60 an hour in the day (10-18 h), down to 6 by
//! midnight; on the second day a launch-day spike of 10× (600 an hour) from 14:00 to 14:20. Users
//! stay hours and some leave, but a release terminates the user's instance: nothing comes back
//! to the pool, so departures do not change the spares and the model leaves them out.
//!
//! **Measured.** Warm hits (a sign-up that found an `available` spare), time to `ready` (p50,
//! p99), spare instance-hours (instances no user holds: launching or available) and their
//! dollars at the profile's t3.small spot price with a public address, a 30 GiB root volume
//! and an 8 GiB blank workspace (`model::cost`).

use spotpool::cloud::profile::{Latency, Profile, SimRng};
use spotpool::model::Millis;
use spotpool::model::cost::{CostSettings, PriceBook, PricedInstance, SpotPrice, pool_cost};
use spotpool::plan::spares::{AutoSpares, Demand, SpareBounds, decide};
use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;

const SECOND: Millis = 1_000;
const MINUTE: Millis = 60 * SECOND;
const HOUR: Millis = 3_600 * SECOND;
const DAY: Millis = 24 * HOUR;
const DAYS: Millis = 2;
/// The launch-day spike: 10× from 14:00 to 14:20 on the second day.
pub(crate) const SPIKE: Range<Millis> = DAY + 14 * HOUR..DAY + 14 * HOUR + 20 * MINUTE;
/// The spike with 40 minutes (at 60 sign-ups an hour) either side: what `--window` reports and
/// `tests/it/spares_daemon.rs` replays on the daemon.
pub(crate) const SPIKE_WINDOW: Range<Millis> = SPIKE.start - 40 * MINUTE..SPIKE.end + 40 * MINUTE;
/// The window run alone: the pool fills for this long before the window's first second ...
const WARM_UP: Millis = 5 * MINUTE;
/// ... and the window's last sign-ups are served within this after its end.
const DRAIN: Millis = 15 * MINUTE;
const PASS: Millis = 5 * SECOND;
const ASSUMED_LEAD_TIME: Millis = 180 * SECOND;
const LEAD_SAMPLES: usize = 20;
pub(crate) const AUTO: SpareBounds = SpareBounds { min: 1, max: 60 };

/// Sign-ups an hour at `t`.
fn rate_per_hour(t: Millis) -> f64 {
    let hour = (t % DAY) as f64 / HOUR as f64;
    let (night, day) = (6.0, 60.0);
    let base = if hour < 6.0 {
        night
    } else if hour < 10.0 {
        night + (hour - 6.0) / 4.0 * (day - night)
    } else if hour < 18.0 {
        day
    } else {
        day - (hour - 18.0) / 6.0 * (day - night)
    };
    if SPIKE.contains(&t) {
        base * 10.0
    } else {
        base
    }
}

/// One sign-up.
pub(crate) struct Arrival {
    pub(crate) at: Millis,
}

/// The two days' sign-ups of `seed`, one chance a second.
pub(crate) fn trace(seed: u64) -> Vec<Arrival> {
    let mut rng = SimRng::new(seed);
    let mut arrivals = Vec::new();
    for second in 0..DAYS * DAY / SECOND {
        let at = second * SECOND;
        if rng.chance(rate_per_hour(at) / 3_600.0) {
            arrivals.push(Arrival { at });
        }
    }
    arrivals
}

#[derive(Clone, Copy)]
pub(crate) enum Spares {
    Fixed(u32),
    Auto,
}

impl Spares {
    pub(crate) fn name(self) -> String {
        match self {
            Spares::Fixed(k) => format!("k = {k}"),
            Spares::Auto => format!("auto ({}-{})", AUTO.min, AUTO.max),
        }
    }
}

/// What one policy's run measured (of the sign-ups that arrived in the measured span, and the
/// spares over it).
pub(crate) struct Report {
    sign_ups: usize,
    warm: usize,
    ready_ms: Vec<Millis>,
    spare_ms: f64,
    peak_target: u32,
    /// When the sign-ups that found no spare came, from the measured span's start.
    pub(crate) misses: Vec<Millis>,
}

impl Report {
    fn warm_ratio(&self) -> f64 {
        self.warm as f64 / self.sign_ups as f64
    }

    fn spare_hours(&self) -> f64 {
        self.spare_ms / HOUR as f64
    }

    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.ready_ms.clone();
        sorted.sort_unstable();
        let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[index] as f64 / SECOND as f64
    }
}

fn draw(rng: &mut SimRng, latency: &Latency) -> Millis {
    latency.sample(rng).as_millis() as Millis
}

/// Launch to `available`, as the profile plays it.
pub(crate) fn lead_time(rng: &mut SimRng, profile: &Profile, launched: Millis) -> Millis {
    let effects = &profile.effects;
    let run = profile.api_latency["RunInstances"];
    let ready = launched
        + draw(rng, &run)
        + draw(rng, &effects.pending_to_running)
        + draw(rng, &effects.agent_online)
        + draw(rng, &effects.command_pickup)
        + draw(rng, &effects.probe_run)
        + 2 * 5 * SECOND;
    // Marked available by the next pass.
    (ready + PASS - 1) / PASS * PASS
}

/// A claim of an available spare to `ready`.
fn claim_time(rng: &mut SimRng, profile: &Profile) -> Millis {
    let effects = &profile.effects;
    2 * SECOND
        + draw(rng, &effects.command_pickup)
        + draw(rng, &effects.container_start)
        + draw(rng, &effects.rule_active)
}

/// Runs the seconds of `span` (from an empty pool), measuring the sign-ups that arrive in
/// `measured` (whenever they are served) and the spares over it.
fn run(
    policy: Spares,
    arrivals: &[Arrival],
    seed: u64,
    span: &Range<Millis>,
    measured: &Range<Millis>,
) -> Report {
    let profile = Profile::aws();
    let mut rng = SimRng::new(seed ^ 0x5eed);
    // Available spares by launch time (the newest retired first), launches by ready time.
    let mut available: Vec<Millis> = Vec::new();
    let mut launching: Vec<(Millis, Millis)> = Vec::new();
    let mut queue: VecDeque<Millis> = VecDeque::new();
    let mut leads: VecDeque<Millis> = VecDeque::new();
    let mut sign_ups: Vec<Millis> = Vec::new();
    let mut decision: Option<AutoSpares> = None;
    let mut report = Report {
        sign_ups: arrivals.iter().filter(|a| measured.contains(&a.at)).count(),
        warm: 0,
        ready_ms: Vec::with_capacity(arrivals.len()),
        spare_ms: 0.0,
        peak_target: 0,
        misses: Vec::new(),
    };
    let mut next = arrivals.iter().skip_while(|a| a.at < span.start).peekable();
    for second in span.start / SECOND..span.end / SECOND {
        let now = second * SECOND;
        let measuring = measured.contains(&now);
        // Launches that became available; a queued user takes the first one.
        launching.retain(|&(launched, ready)| {
            if ready > now {
                return true;
            }
            leads.push_back(ready - launched);
            if leads.len() > LEAD_SAMPLES {
                leads.pop_front();
            }
            available.push(launched);
            false
        });
        while !queue.is_empty() && !available.is_empty() {
            let arrived = queue.pop_front().expect("a queued user");
            available.remove(0);
            let ready = now - arrived + claim_time(&mut rng, &profile);
            if measured.contains(&arrived) {
                report.ready_ms.push(ready);
            }
        }
        while let Some(arrival) = next.next_if(|a| a.at <= now) {
            sign_ups.push(arrival.at);
            if available.is_empty() {
                queue.push_back(arrival.at);
                if measured.contains(&arrival.at) {
                    report.misses.push(arrival.at - measured.start);
                }
            } else {
                available.remove(0);
                let ready = claim_time(&mut rng, &profile);
                if measured.contains(&arrival.at) {
                    report.warm += 1;
                    report.ready_ms.push(ready);
                }
            }
        }
        if now % PASS == 0 {
            let target = match policy {
                Spares::Fixed(k) => k,
                Spares::Auto => {
                    let mut sorted: Vec<Millis> = leads.iter().copied().collect();
                    sorted.sort_unstable();
                    let lead = sorted.get(sorted.len() / 2).copied();
                    let recent = sign_ups.iter().rev().take_while(|&&at| now - at < HOUR);
                    let demand = Demand::from_sign_ups(
                        recent.copied(),
                        now,
                        lead.unwrap_or(ASSUMED_LEAD_TIME),
                    );
                    let decided = decide(AUTO, &demand, decision.as_ref(), now);
                    let target = decided.target;
                    decision = Some(decided);
                    target
                }
            };
            if measuring {
                report.peak_target = report.peak_target.max(target);
            }
            let have = available.len() + launching.len();
            let want = target as usize + queue.len();
            for _ in have..want {
                let ready = lead_time(&mut rng, &profile, now);
                launching.push((now, ready));
            }
            if queue.is_empty() && available.len() > target as usize {
                available.sort_unstable();
                available.truncate(target as usize);
            }
        }
        if measuring {
            report.spare_ms += ((available.len() + launching.len()) as Millis * SECOND) as f64;
        }
    }
    report
}

/// The policies' reports over [`SPIKE_WINDOW`]: measured within the two-day run ("in the
/// day"), and the window run alone, its sign-ups [`WARM_UP`] after a start from an empty pool,
/// as the daemon's cross-check runs it ("alone").
pub(crate) fn window(seed: u64, policies: &[Spares]) -> Vec<(&'static str, Vec<(Spares, Report)>)> {
    let arrivals = trace(seed);
    let whole = 0..DAYS * DAY;
    let in_the_day = policies
        .iter()
        .map(|&p| (p, run(p, &arrivals, seed, &whole, &SPIKE_WINDOW)))
        .collect();
    let shift = SPIKE_WINDOW.start - WARM_UP;
    let alone: Vec<Arrival> = arrivals
        .iter()
        .filter(|a| SPIKE_WINDOW.contains(&a.at))
        .map(|a| Arrival { at: a.at - shift })
        .collect();
    let length = SPIKE_WINDOW.end - SPIKE_WINDOW.start;
    let (span, measured) = (0..WARM_UP + length + DRAIN, WARM_UP..WARM_UP + length);
    let alone = policies
        .iter()
        .map(|&p| (p, run(p, &alone, seed, &span, &measured)))
        .collect();
    vec![("in the day", in_the_day), ("alone", alone)]
}

/// The markdown table of `reports`, a spare at `dollars` an hour.
pub(crate) fn table(reports: &[(Spares, Report)], dollars: f64) -> String {
    let mut lines = vec![
        "| spares | warm hits | p50 to ready | p99 to ready | spare instance-hours | spare dollars | peak target |".to_string(),
        "|---|---|---|---|---|---|---|".to_string(),
    ];
    for (policy, r) in reports {
        lines.push(format!(
            "| {} | {:.2} % ({} of {}) | {:.1} s | {:.1} s | {:.1} | ${:.2} | {} |",
            policy.name(),
            r.warm_ratio() * 100.0,
            r.warm,
            r.sign_ups,
            r.percentile(0.5),
            r.percentile(0.99),
            r.spare_hours(),
            r.spare_hours() * dollars,
            r.peak_target
        ));
    }
    lines.join("\n")
}

/// What one spare instance costs an hour: the profile's t3.small spot price, a public address,
/// a 30 GiB root volume and an 8 GiB blank workspace.
pub(crate) fn spare_dollars_per_hour() -> f64 {
    let profile = Profile::aws();
    let price = SpotPrice {
        instance_type: "t3.small".into(),
        zone: "az".into(),
        dollars_per_hour: profile.spot_prices["t3.small"],
        since: 0,
    };
    let book = PriceBook::new(&[price], CostSettings::default());
    let spare = PricedInstance {
        tier: "t",
        instance_type: Some("t3.small"),
        zone: Some("az"),
        on_demand: false,
        assigned: false,
        blank_gib: 8,
    };
    let cost = pool_cost(&book, &["t"], 0, &[spare], &BTreeMap::new());
    cost.tiers[0].1.spares_per_hour
}

/// The policies the benchmark compares.
const POLICIES: [Spares; 7] = [
    Spares::Auto,
    Spares::Fixed(1),
    Spares::Fixed(2),
    Spares::Fixed(4),
    Spares::Fixed(8),
    Spares::Fixed(16),
    Spares::Fixed(32),
];

/// `--window`: the spike window's figures of `seed`.
fn print_window(seed: u64, dollars: f64) {
    let arrivals = trace(seed);
    let count = |range: &Range<Millis>| arrivals.iter().filter(|a| range.contains(&a.at)).count();
    println!(
        "seed {seed}, the spike window (day 2, 13:20 to 15:00: 40 minutes at 60 sign-ups an hour, \
         20 at 600, 40 at 60): {} sign-ups ({} in the spike); a spare costs ${dollars:.5} an hour",
        count(&SPIKE_WINDOW),
        count(&SPIKE)
    );
    for (label, reports) in window(seed, &POLICIES) {
        let how = match label {
            "in the day" => "measured within the two-day run",
            _ => {
                "run alone: the pool filled from empty 5 minutes before the window, the last sign-ups served after it"
            }
        };
        println!("\n{label} ({how}):\n{}", table(&reports, dollars));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seeds: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let seeds = if seeds.is_empty() {
        vec![20_261_202]
    } else {
        seeds
    };
    let dollars = spare_dollars_per_hour();
    if args.iter().any(|a| a == "--window") {
        for seed in seeds {
            print_window(seed, dollars);
        }
        return;
    }
    let whole = 0..DAYS * DAY;
    for (n, &seed) in seeds.iter().enumerate() {
        let arrivals = trace(seed);
        let reports: Vec<(Spares, Report)> = POLICIES
            .iter()
            .map(|&p| (p, run(p, &arrivals, seed, &whole, &whole)))
            .collect();
        let smallest_99 = reports
            .iter()
            .filter(|(p, r)| matches!(p, Spares::Fixed(_)) && r.warm_ratio() >= 0.99)
            .map(|(_, r)| r.spare_hours())
            .next();
        let auto = &reports[0].1;
        let against = smallest_99.map_or("no fixed k reached 99 %".to_string(), |hours| {
            format!(
                "{:.2}× the spare hours of the smallest fixed k at 99 %",
                auto.spare_hours() / hours
            )
        });
        if n == 0 {
            println!(
                "seed {seed}: {} sign-ups over {DAYS} days ({} in the spike); a spare costs ${dollars:.5} an hour",
                arrivals.len(),
                arrivals.iter().filter(|a| SPIKE.contains(&a.at)).count()
            );
            println!("{}", table(&reports, dollars));
            println!("auto: {against}");
        } else {
            let fixed: Vec<String> = reports[1..]
                .iter()
                .map(|(p, r)| {
                    format!(
                        "{} {:.2} %/{:.0} h",
                        p.name(),
                        r.warm_ratio() * 100.0,
                        r.spare_hours()
                    )
                })
                .collect();
            println!(
                "seed {seed}: {} sign-ups; auto {:.2} % warm, p99 {:.1} s, {:.1} spare hours; {}; {against}",
                arrivals.len(),
                auto.warm_ratio() * 100.0,
                auto.percentile(0.99),
                auto.spare_hours(),
                fixed.join(", ")
            );
        }
    }
}
