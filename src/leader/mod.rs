//! Leadership: of the replicas on one database, exactly one (the leader) runs the reconciler,
//! the interruption feed and repairs; every replica serves the whole API.
//!
//! Owns: the election (a lease row in PostgreSQL, the file lock beside a SQLite database), the
//! terms of this replica's leadership (a fresh reconciler per term, on a fenced store and a
//! fenced cloud), the `spotpool_leader` gauge, and the leadership events and log lines.
//! Must not: decide anything about the pool; the reconciler does, while it leads.
//!
//! A term: elected with `epoch`, the replica builds a reconciler whose store writes are fenced
//! by the database (`store/leadership.rs`) and whose cloud calls are fenced by the term's
//! [`Fence`] (`fence.rs`), journals `leadership.acquired` with its own and its predecessor's
//! ids, and runs until the daemon stops (it then journals `leadership.released` and hands the
//! lease back, so a standby takes over at its next try) or the fence ends (the lease was taken
//! over, or ran out unrenewed: the pass in flight is dropped where it stands and the replica
//! stands by again). ARCHITECTURE.md, "Replicas and leadership", argues the choice of a lease.

mod fence;

pub use fence::{Fence, FencedCloud, FencedQueue};

use crate::cloud::Cloud;
use crate::config::Replica;
use crate::interruption_feed::InterruptionConsumer;
use crate::model::Event;
use crate::reconcile::Reconciler;
use crate::store::{Acquisition, Lease, Store};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio::sync::watch;
use tokio::time::Instant;

/// The lease's timings (PostgreSQL): not settings, named once.
pub mod policy {
    use std::time::Duration;

    /// How long a lease lasts unrenewed: the longest a dead leader's replica can leave the pool
    /// without a leader (plus one [`POLL`]).
    pub const LEASE_TTL: Duration = Duration::from_secs(10);
    /// How often the leader renews.
    pub const RENEW: Duration = Duration::from_secs(2);
    /// How much before the lease's end the leader stops calling: covers a renewal's answer
    /// lost in flight and the drift between the two machines' clock rates.
    pub const MARGIN: Duration = Duration::from_secs(2);
    /// How often a standby tries to take the lease (or the file lock).
    pub const POLL: Duration = Duration::from_secs(1);
    /// A SQLite leader's lease row never runs out: its file lock decides.
    pub const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
}

/// The reconciler of this replica's current term, if it leads: what `POST /v1/admin/repair`
/// and the quota read run on. Clones share the slot.
#[derive(Clone, Default)]
pub struct Current {
    slot: Arc<RwLock<Option<Reconciler>>>,
}

impl Current {
    /// A slot holding `reconciler` (a test world, or a daemon without election).
    pub fn of(reconciler: Reconciler) -> Current {
        let current = Current::default();
        current.set(Some(reconciler));
        current
    }

    pub fn get(&self) -> Option<Reconciler> {
        self.slot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, reconciler: Option<Reconciler>) {
        *self.slot.write().unwrap_or_else(|e| e.into_inner()) = reconciler;
    }

    /// Empties the slot: this replica does not lead (yet).
    pub fn clear(&self) {
        self.set(None);
    }
}

/// How this replica contends for leadership.
#[derive(Debug, Clone)]
pub enum Election {
    /// PostgreSQL: the lease row, renewed while this replica leads.
    Lease,
    /// SQLite: the exclusive lock on this file beside the database (one machine).
    FileLock(PathBuf),
    /// A private in-memory database: nobody else can share it, so this replica leads.
    Alone,
}

impl Election {
    /// The election a database URL calls for.
    pub fn for_database(url: &str) -> Election {
        if Store::backend_of(url) == crate::store::Backend::Postgres {
            return Election::Lease;
        }
        match reconciler_lock_path(url) {
            Some(path) => Election::FileLock(path),
            None => Election::Alone,
        }
    }
}

/// Everything a replica needs to lead: the unfenced parts a term's fenced ones are made from.
pub struct Candidate {
    pub replica: Replica,
    pub election: Election,
    /// The API's store: the lease is read and renewed through it.
    pub store: Store,
    pub cloud: Arc<dyn Cloud>,
    /// The reconciler the terms' reconcilers are made from (`Reconciler::for_term`).
    pub reconciler: Reconciler,
    pub feed: Option<InterruptionConsumer>,
    /// The webhook outbox's delivery, while leading.
    pub webhooks: crate::webhook::Deliverer,
    pub current: Current,
}

/// One term of leadership.
struct Term {
    lease: Lease,
    fence: Fence,
    /// The reconciler's store: fenced by `lease.epoch`.
    store: Store,
    /// The file lock (SQLite), held as long as the term.
    _lock: Option<std::fs::File>,
}

/// How a term ended.
enum Ended {
    /// The daemon is stopping.
    Stopped,
    /// The lease was lost, for this reason.
    Lost(String),
}

impl Candidate {
    /// Stands by until elected, leads until the term ends, and again, until `stop` turns true.
    /// An error is a refusal to lead at all (the first term's quota check).
    pub async fn run(mut self, stop: watch::Receiver<bool>) -> Result<(), String> {
        // A standby until elected (`App::serve` cleared `current` before the API started).
        metrics::gauge!("spotpool_leader").set(0.0);
        // The lease on a connection of its own: a busy API never delays a renewal.
        match self.store.sibling(1, None).await {
            Ok(lease) => self.store = lease,
            Err(error) => tracing::warn!(%error, "no connection of its own for the lease"),
        }
        let mut first = true;
        loop {
            let term = tokio::select! {
                term = self.elect() => term,
                _ = stopped(stop.clone()) => return Ok(()),
            };
            let ended = self.lead(&term, first, stop.clone()).await?;
            first = false;
            // The term's reconciler loop has ended (its guard reset the health and the gauge).
            self.current.clear();
            match ended {
                Ended::Stopped => {
                    self.hand_back(&term).await;
                    close_term_store(term.store);
                    return Ok(());
                }
                Ended::Lost(reason) => {
                    tracing::warn!(
                        replica = %self.replica.id,
                        epoch = term.lease.epoch,
                        %reason,
                        "leadership lost: this replica stops acting and stands by"
                    );
                    close_term_store(term.store);
                }
            }
        }
    }

    /// One term: the fenced reconciler (and feed) run until the daemon stops or the fence ends.
    /// The lease is renewed from the start, the first term's quota check included.
    async fn lead(
        &self,
        term: &Term,
        first: bool,
        stop: watch::Receiver<bool>,
    ) -> Result<Ended, String> {
        let cloud: Arc<dyn Cloud> =
            Arc::new(FencedCloud::new(self.cloud.clone(), term.fence.clone()));
        let reconciler = self.reconciler.for_term(term.store.clone(), cloud);
        let run = async {
            if first {
                self.check_quotas(&reconciler, &term.lease).await?;
            }
            self.announce(term).await;
            self.current.set(Some(reconciler.clone()));
            let feed = self.feed.as_ref().map(|feed| {
                feed.for_term(term.store.clone(), |queue| {
                    Arc::new(FencedQueue::new(queue, term.fence.clone()))
                })
            });
            let consumer = async {
                if let Some(feed) = feed {
                    feed.run_until_stopped(stopped(stop.clone())).await;
                }
            };
            // Other replicas' API writes wake this one's reconciler.
            let wake = reconciler.wake();
            let forward = async {
                tokio::select! {
                    _ = term.store.forward_api_writes(&wake) => {}
                    _ = stopped(stop.clone()) => {}
                }
            };
            let webhooks = self.webhooks.for_term(term.store.clone());
            let webhooks = webhooks.run_until_stopped(stopped(stop.clone()));
            tokio::join!(
                reconciler.run_until_stopped(stopped(stop.clone())),
                consumer,
                forward,
                webhooks
            );
            Ok(Ended::Stopped)
        };
        // The fence first: a replica resuming from a freeze finds its term over before the
        // pass it froze in is polled again, and drops it where it stands.
        tokio::select! {
            biased;
            reason = term.fence.lost() => Ok(Ended::Lost(reason)),
            _ = self.renew(term) => Ok(Ended::Lost("the lease could not be renewed".into())),
            ended = run => ended,
        }
    }

    /// The first term's quota check: tier maxima the account's spot vCPU quota cannot hold
    /// stop the daemon, with the numbers, when this is the database's first leader (a start
    /// with a bad configuration); after another replica led, a shortfall is logged as the
    /// hourly check logs it (a refusal would only pass the lease from replica to replica).
    /// Quotas that cannot be read (no permission yet, an emulator) only warn.
    async fn check_quotas(&self, reconciler: &Reconciler, lease: &Lease) -> Result<(), String> {
        match reconciler.check_quotas().await {
            Ok(report) if !report.shortfalls.is_empty() => {
                let shortfalls = report.shortfalls.join("; ");
                if lease.previous.is_none() {
                    return Err(shortfalls);
                }
                tracing::error!(%shortfalls, "the tiers' maxima do not fit the account's quotas");
            }
            Ok(report) => tracing::info!(quotas = report.limits.len(), "account quotas read"),
            Err(error) => tracing::warn!(%error, "could not read the account's quotas"),
        }
        Ok(())
    }

    /// The log line and the journal event of a new term, with both replicas' ids.
    async fn announce(&self, term: &Term) {
        let lease = &term.lease;
        tracing::info!(
            replica = %self.replica.id,
            previous = lease.previous.as_deref().unwrap_or("none"),
            epoch = lease.epoch,
            "leadership acquired: this replica runs the reconciler"
        );
        let event = Event::LeadershipAcquired {
            replica: self.replica.id.clone(),
            epoch: lease.epoch,
            previous: lease.previous.clone(),
        };
        if let Err(error) = term
            .store
            .record(self.reconciler.now(), &event, None, None)
            .await
        {
            tracing::warn!(%error, "could not journal the leadership change");
        }
    }

    /// Waits until this replica is elected.
    async fn elect(&self) -> Term {
        let mut last_holder: Option<String> = None;
        let mut failing = false;
        loop {
            let (lock, force, ttl) = match &self.election {
                Election::Lease => (None, false, policy::LEASE_TTL),
                Election::FileLock(path) => (Some(acquire_lock(path).await), true, policy::FOREVER),
                Election::Alone => (None, true, policy::FOREVER),
            };
            let sent = Instant::now();
            metrics::counter!("spotpool_lease_attempts_total").increment(1);
            let attempt = self
                .store
                .acquire_leadership(&self.replica.id, Some(&self.replica.url), ttl, force)
                .await;
            let acquired = match attempt {
                Ok(Acquisition::Acquired(lease)) => {
                    let fence = match self.election {
                        Election::Lease => {
                            Fence::new(Some(sent + policy::LEASE_TTL - policy::MARGIN))
                        }
                        _ => Fence::new(None),
                    };
                    match self.store.sibling(8, Some(lease.epoch)).await {
                        Ok(store) => Some(Term {
                            lease,
                            fence,
                            store,
                            _lock: lock,
                        }),
                        Err(error) => {
                            // Hand the lease back rather than sit on it until it runs out.
                            tracing::warn!(%error, "could not open the leader's fenced connections");
                            let _ = self
                                .store
                                .release_leadership(&self.replica.id, lease.epoch)
                                .await;
                            None
                        }
                    }
                }
                Ok(Acquisition::Held(lease)) => {
                    if last_holder.as_deref() != Some(lease.holder.as_str()) {
                        tracing::info!(
                            replica = %self.replica.id,
                            leader = %lease.holder,
                            leader_url = lease.address.as_deref().unwrap_or("unknown"),
                            "standby: another replica leads; serving the API only"
                        );
                        last_holder = Some(lease.holder);
                    }
                    None
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "could not read the lease; trying again");
                    }
                    failing = true;
                    None
                }
            };
            if let Some(term) = acquired {
                return term;
            }
            tokio::time::sleep(policy::POLL).await;
        }
    }

    /// Renews a lease term's lease every 2 s until it is lost, ending the term's fence then;
    /// never returns for a term without a lease to renew. A renewal that fails or takes longer
    /// than 2 s ends the term: without its database a leader cannot know that it still leads.
    async fn renew(&self, term: &Term) {
        if !matches!(self.election, Election::Lease) {
            return std::future::pending().await;
        }
        let epoch = term.lease.epoch;
        loop {
            tokio::time::sleep(policy::RENEW).await;
            let sent = Instant::now();
            let renewal = self
                .store
                .renew_leadership(&self.replica.id, epoch, policy::LEASE_TTL);
            match tokio::time::timeout(policy::RENEW, renewal).await {
                Ok(Ok(true)) => term.fence.extend(sent + policy::LEASE_TTL - policy::MARGIN),
                Ok(Ok(false)) => {
                    term.fence
                        .end("another replica took the lease over, or it ran out");
                    return;
                }
                // Without its database a leader cannot know whether it still leads: it stops
                // now rather than when the lease would run out.
                Ok(Err(error)) => {
                    term.fence
                        .end(format!("renewing the lease failed: {error}"));
                    return;
                }
                Err(_) => {
                    term.fence.end("renewing the lease timed out");
                    return;
                }
            }
        }
    }

    /// A clean stop: journals the hand-back and releases the lease, so a standby leads at its
    /// next try.
    async fn hand_back(&self, term: &Term) {
        if term.fence.ended().is_some() {
            return;
        }
        let event = Event::LeadershipReleased {
            replica: self.replica.id.clone(),
            epoch: term.lease.epoch,
        };
        let _ = term
            .store
            .record(self.reconciler.now(), &event, None, None)
            .await;
        match self
            .store
            .release_leadership(&self.replica.id, term.lease.epoch)
            .await
        {
            Ok(_) => tracing::info!(replica = %self.replica.id, "leadership handed back"),
            Err(error) => tracing::warn!(%error, "could not hand the lease back; it runs out"),
        }
    }
}

/// Closes a term's own pool in the background (PostgreSQL; on SQLite the term shares the API's
/// pool, which stays open): a close waits for connections still checked out, and a lost
/// database must not hold up the next election.
fn close_term_store(store: Store) {
    if store.backend() == crate::store::Backend::Postgres {
        tokio::spawn(async move { store.close().await });
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The file of a SQLite database URL (`sqlite://path/to/db?mode=rwc` -> `path/to/db`); None
/// for an in-memory database, a URL without the `sqlite:` scheme, and PostgreSQL.
pub fn sqlite_file(database_url: &str) -> Option<PathBuf> {
    let path = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path.contains(":memory:") {
        return None;
    }
    Some(PathBuf::from(path))
}

/// `sqlite://path/to/db?mode=rwc` -> `path/to/db.lock`; None for in-memory databases.
pub fn reconciler_lock_path(database_url: &str) -> Option<PathBuf> {
    let mut lock = sqlite_file(database_url)?.into_os_string();
    lock.push(".lock");
    Some(PathBuf::from(lock))
}

/// Takes the exclusive lock on `path` (creating the file): None if another process holds it.
/// The lock lives as long as the returned file.
pub fn try_lock(path: &Path) -> Result<Option<std::fs::File>, String> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("locking {}: {e}", path.display())),
    }
}

/// Waits until this process holds the exclusive lock on `path`.
async fn acquire_lock(path: &Path) -> std::fs::File {
    let mut warned = false;
    loop {
        let error = match try_lock(path) {
            Ok(Some(file)) => return file,
            Ok(None) => "held by another process".to_string(),
            Err(error) => error,
        };
        if !warned {
            tracing::warn!(lock = %path.display(), %error, "another spotpool holds the reconciler lock; serving the API only until it is released");
            warned = true;
        }
        tokio::time::sleep(policy::POLL).await;
    }
}
