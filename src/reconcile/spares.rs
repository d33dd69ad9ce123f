//! `spare = "auto"`'s measurements (ARCHITECTURE.md, "Spares that follow demand"): each auto
//! tier's rate of spare takings, from its users' `requested_at` (a first PUT, a retry, a wake)
//! and the moves this term saw under way (each by when it began: a move takes a spare too), and its
//! lead time, RunInstances to `available`: for each instance this term saw launching (first
//! seen `initializing`) and then `available` before anything else, its
//! `status_since` less its `launched_at`, once; the median of the tier's last
//! [`LEAD_SAMPLES`]. (A spare that became available again later, after a rolled-back claim, a
//! re-probe or an adoption, is not a launch.) Then `plan::spares::decide` sets the pass's spare
//! count, and the decision is kept for the next pass and for `GET /v1/pool`: in memory, and in
//! the store when it changes (`spare_decisions`), so a standby shows it and a new term goes on
//! from it (a hold under way keeps its start; a measured lead time is its first sample).

use super::Reconciler;
use crate::model::{InstanceId, InstanceStatus, Millis, UserId};
use crate::plan::{AutoSpares, Demand, Policy};
use crate::store::{InstanceRecord, StoredDecision, UserRecord};
use std::collections::{BTreeSet, HashMap, VecDeque};

/// The lead time assumed until a tier's launch was measured: a spot launch, the boot, the image
/// pull and the probe (`aws-profile.md`'s order of magnitude, rounded up).
pub const ASSUMED_LEAD_TIME: Millis = 180_000;
const HOUR: Millis = 60 * 60_000;
/// The lead times a tier's median is taken over.
const LEAD_SAMPLES: usize = 20;

/// An auto tier's decision and whether its lead time was measured.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoSpareState {
    pub decision: AutoSpares,
    pub lead_time_measured: bool,
}

/// The term's decisions and lead times, per tier.
#[derive(Debug, Default)]
pub(super) struct SpareMemory {
    decisions: HashMap<String, AutoSpareState>,
    /// Each tier's last lead times, oldest first.
    lead_times: HashMap<String, VecDeque<Millis>>,
    /// The instances seen this term, and whether their launch may still be measured (seen only
    /// launching so far).
    launching: HashMap<InstanceId, bool>,
    /// The stored decisions were loaded (a term starts from them).
    loaded: bool,
    /// The moves this term saw under way in the last hour, per tier: when each began and whose
    /// it is. A move takes a spare as a sign-up does (an interruption wave, a drain).
    moves: HashMap<String, BTreeSet<(Millis, UserId)>>,
}

impl Reconciler {
    /// Sets the spare count of each auto tier of `policy` from its demand, keeping the decision
    /// in memory and, when it changed, in the store (a dry run, the repair's, keeps nothing).
    /// A term's first pass starts from the stored decisions.
    pub(super) async fn size_auto_spares(
        &self,
        policy: &mut Policy,
        users: &[UserRecord],
        ledger: &[InstanceRecord],
        (now, dry_run): (Millis, bool),
    ) {
        if !dry_run {
            self.load_spare_decisions().await;
        }
        let changed = self.decide_spares(policy, users, ledger, (now, dry_run));
        for stored in changed {
            if let Err(error) = self.inner.store.put_spare_decision(&stored).await {
                tracing::warn!(%error, tier = %stored.tier, "could not store the spare decision");
            }
        }
    }

    /// The stored decisions, once a term: each tier's, with its lead time as the first sample
    /// when it was measured.
    async fn load_spare_decisions(&self) {
        if self.lock_spares().loaded {
            return;
        }
        match self.inner.store.spare_decisions().await {
            Ok(stored) => {
                let mut memory = self.lock_spares();
                for s in stored {
                    if s.lead_time_measured {
                        let leads = memory.lead_times.entry(s.tier.clone()).or_default();
                        if leads.is_empty() {
                            leads.push_back(s.decision.lead_time);
                        }
                    }
                    let state = AutoSpareState {
                        decision: s.decision,
                        lead_time_measured: s.lead_time_measured,
                    };
                    memory.decisions.entry(s.tier).or_insert(state);
                }
                memory.loaded = true;
            }
            Err(error) => tracing::warn!(%error, "could not load the spare decisions; will retry"),
        }
    }

    fn lock_spares(&self) -> std::sync::MutexGuard<'_, SpareMemory> {
        self.inner.spares.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The decisions of a pass; those that changed, to store.
    fn decide_spares(
        &self,
        policy: &mut Policy,
        users: &[UserRecord],
        ledger: &[InstanceRecord],
        (now, dry_run): (Millis, bool),
    ) -> Vec<StoredDecision> {
        let mut changed = Vec::new();
        let mut kept = self.lock_spares();
        let mut scratch = SpareMemory {
            decisions: kept.decisions.clone(),
            lead_times: kept.lead_times.clone(),
            launching: HashMap::new(),
            loaded: true,
            moves: kept.moves.clone(),
        };
        let memory: &mut SpareMemory = if dry_run { &mut scratch } else { &mut kept };
        if !dry_run {
            measure_launches(memory, ledger);
        }
        note_moves(memory, users, now);
        for tier in policy.tiers.iter_mut() {
            let Some(bounds) = tier.spare_auto else {
                memory.decisions.remove(&tier.name);
                continue;
            };
            let measured = memory.lead_times.get(&tier.name).and_then(median);
            let moves = memory.moves.get(&tier.name).into_iter().flatten();
            let sign_ups = (users.iter())
                .filter(|u| u.tier == tier.name)
                .map(|u| u.requested_at)
                .chain(moves.map(|(began, _)| *began));
            let lead_time = measured.unwrap_or(ASSUMED_LEAD_TIME);
            let demand = Demand::from_sign_ups(sign_ups, now, lead_time);
            let previous = memory.decisions.get(&tier.name).map(|s| &s.decision);
            let decision = crate::plan::spares::decide(bounds, &demand, previous, now);
            if !dry_run && previous.is_some_and(|p| p.target != decision.target) {
                tracing::info!(tier = %tier.name, from = previous.map_or(0, |p| p.target), to = decision.target, reason = %decision.reason(), "spare target changed");
            }
            if !dry_run {
                metrics::gauge!("spotpool_spare_target", "tier" => tier.name.clone())
                    .set(f64::from(decision.target));
            }
            tier.spare_count = decision.target;
            let key = |d: &AutoSpares| (d.target, d.wanted, d.lower_since, d.held);
            let was = memory.decisions.get(&tier.name);
            if !dry_run
                && was.is_none_or(|w| {
                    key(&w.decision) != key(&decision) || w.lead_time_measured != measured.is_some()
                })
            {
                changed.push(StoredDecision {
                    tier: tier.name.clone(),
                    decision: decision.clone(),
                    lead_time_measured: measured.is_some(),
                    decided_at: now,
                });
            }
            memory.decisions.insert(
                tier.name.clone(),
                AutoSpareState {
                    decision,
                    lead_time_measured: measured.is_some(),
                },
            );
        }
        changed
    }

    /// The auto tiers' last decisions (this replica's, while it leads).
    pub fn auto_spares(&self) -> HashMap<String, AutoSpareState> {
        (self.inner.spares.lock().unwrap_or_else(|e| e.into_inner()))
            .decisions
            .clone()
    }
}

/// Notes each move under way by when it began, and forgets those that began over an hour ago.
fn note_moves(memory: &mut SpareMemory, users: &[UserRecord], now: Millis) {
    for user in users {
        if let Some(moving) = &user.moving {
            let seen = memory.moves.entry(user.tier.clone()).or_default();
            seen.insert((moving.started_at, user.user_id.clone()));
        }
    }
    for seen in memory.moves.values_mut() {
        seen.retain(|(began, _)| now - began < HOUR);
    }
}

/// Records the lead time of each instance this term saw go from launching to `available`.
fn measure_launches(memory: &mut SpareMemory, ledger: &[InstanceRecord]) {
    let mut seen: HashMap<InstanceId, bool> = HashMap::with_capacity(ledger.len());
    for record in ledger {
        let launching = matches!(record.status, InstanceStatus::Initializing);
        // First seen now: measurable only if it is still launching.
        let measurable = memory
            .launching
            .get(&record.instance_id)
            .copied()
            .unwrap_or(launching);
        if measurable && record.status == InstanceStatus::Available {
            let lead = record.status_since - record.launched_at;
            if (1..HOUR).contains(&lead) {
                let leads = memory.lead_times.entry(record.tier.clone()).or_default();
                leads.push_back(lead);
                if leads.len() > LEAD_SAMPLES {
                    leads.pop_front();
                }
            }
        }
        seen.insert(record.instance_id.clone(), measurable && launching);
    }
    memory.launching = seen;
}

fn median(leads: &VecDeque<Millis>) -> Option<Millis> {
    let mut sorted: Vec<Millis> = leads.iter().copied().collect();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied()
}
