//! The interruption feed, spot interruptions' delivery path: EC2 events from the interruption
//! queue into the store. (What a notice means for the pool is `reconcile::notices`.)
//!
//! EventBridge rules (`terraform/modules/spotpool/interruptions.tf`) put three kinds of EC2
//! event into an SQS queue: the two-minute spot interruption warning, the rebalance
//! recommendation, and the state change to stopping, shutting-down or terminated. The
//! [`InterruptionConsumer`] long-polls that queue through the [`InterruptionQueue`] port, turns
//! each message into an [`InterruptionNotice`] ([`parse_event`], pure), and hands it over durably:
//!
//! 1. insert the notice into the store, keyed by EventBridge's event id (a duplicate inserts
//!    nothing);
//! 2. wake the reconciler;
//! 3. only then delete the message.
//!
//! A crash between 1 and 3 redelivers the message, and the key absorbs the duplicate. A store
//! failure leaves the message in the queue: it comes back after the visibility timeout (and
//! after a few such receives, SQS moves it to the dead-letter queue). A message that is not a
//! well-formed event of those three kinds can never become one: it is logged, counted and
//! deleted, so it cannot block the queue.
//!
//! Metrics: `spotpool_interruptions_received_total{kind}` counts every message that is a notice
//! (a redelivery counts again), `spotpool_interruption_duplicates_total{kind}` those the store
//! already had, and `spotpool_interruption_messages_rejected_total{reason}` the rest
//! (`malformed`, `unknown_event`, `ignored_state`). The queue calls themselves are in
//! `spotpool_aws_calls_total{service="sqs"}`.
//!
//! Owns: the event format and the hand-off. Must not: decide what an interruption means for a
//! user or a spare (the reconciler does, from `Store::list_unhandled_notices`), see AWS SDK
//! types (the queue is a port), or log a whole message body.

pub use crate::model::{InterruptionNotice, NoticeKind};

use crate::clock::{Clock, error_policy};
use crate::cloud::{CloudError, InterruptionQueue, QueueMessage};
use crate::model::{InstanceId, Lifecycle, Millis};
use crate::store::{Store, StoreError};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// `detail-type` of the two-minute warning.
pub const SPOT_INTERRUPTION_WARNING: &str = "EC2 Spot Instance Interruption Warning";
/// `detail-type` of the rebalance recommendation.
pub const REBALANCE_RECOMMENDATION: &str = "EC2 Instance Rebalance Recommendation";
/// `detail-type` of an instance state change.
pub const STATE_CHANGE_NOTIFICATION: &str = "EC2 Instance State-change Notification";
/// `source` of every EC2 event.
const EC2_SOURCE: &str = "aws.ec2";

/// Longest event id kept (EventBridge's are UUIDs, 36 characters).
const MAX_EVENT_ID_CHARS: usize = 128;
/// How much of an unreadable body a log line shows.
const BODY_PREVIEW_CHARS: usize = 200;
/// How much of a field a rejection message quotes.
const FIELD_PREVIEW_CHARS: usize = 64;

/// An empty receive that came back faster than this waits out the rest before the next one, so
/// a queue endpoint that ignores long polling cannot turn the loop into a busy loop.
const MIN_EMPTY_POLL: Duration = Duration::from_secs(1);
/// How often notices older than [`NOTICE_RETENTION`] are deleted.
const PRUNE_INTERVAL: Duration = Duration::from_secs(600);
/// How long a notice is kept after it arrived. Far longer than the queue keeps a message (at
/// most 12 hours, see the Terraform), so a redelivery always finds its duplicate.
const NOTICE_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Why a message was not turned into a notice. Each one is logged, counted and deleted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectedMessage {
    /// Not JSON, or an event of ours that lacks a field or has an unreadable one.
    #[error("malformed event: {0}")]
    Malformed(String),
    /// Well-formed JSON, but not one of the three EC2 events (another source or detail type).
    #[error("not an event spotpool handles: source {event_source:?}, detail-type {detail_type:?}")]
    UnknownEvent {
        event_source: String,
        detail_type: String,
    },
    /// A state change to a state that is not on the way out (pending, running): the rule should
    /// not even deliver these.
    #[error("state change of {instance_id} to {}, which needs nothing", state.as_str())]
    IgnoredState {
        instance_id: InstanceId,
        state: Lifecycle,
    },
}

impl RejectedMessage {
    /// The `reason` metric label (bounded: three values).
    pub fn reason(&self) -> &'static str {
        match self {
            RejectedMessage::Malformed(_) => "malformed",
            RejectedMessage::UnknownEvent { .. } => "unknown_event",
            RejectedMessage::IgnoredState { .. } => "ignored_state",
        }
    }
}

/// Turns an EventBridge event (the body of a queue message) into a notice. Pure; never panics.
///
/// The envelope is EventBridge's: `id`, `source` (`aws.ec2`), `detail-type`, `time` (RFC 3339)
/// and `detail` with `instance-id` (and `state` for a state change).
pub fn parse_event(body: &str) -> Result<InterruptionNotice, RejectedMessage> {
    let malformed = |why: String| RejectedMessage::Malformed(why);
    let event: serde_json::Value =
        serde_json::from_str(body).map_err(|err| malformed(format!("not JSON: {err}")))?;
    let Some(envelope) = event.as_object() else {
        return Err(malformed("not a JSON object".into()));
    };
    let text = |field: &str| envelope.get(field).and_then(|value| value.as_str());
    let source = text("source").unwrap_or_default();
    let detail_type = text("detail-type").unwrap_or_default();
    let event_type = match detail_type {
        _ if source != EC2_SOURCE => None,
        SPOT_INTERRUPTION_WARNING => Some(EventType::Warning),
        REBALANCE_RECOMMENDATION => Some(EventType::Rebalance),
        STATE_CHANGE_NOTIFICATION => Some(EventType::StateChange),
        _ => None,
    };
    let Some(event_type) = event_type else {
        return Err(RejectedMessage::UnknownEvent {
            event_source: preview(source),
            detail_type: preview(detail_type),
        });
    };

    let event_id = match text("id") {
        Some(id) if !id.is_empty() && id.chars().count() <= MAX_EVENT_ID_CHARS => id.to_string(),
        Some(id) => return Err(malformed(format!("unusable event id {:?}", preview(id)))),
        None => return Err(malformed("no event id".into())),
    };
    let event_time = match text("time") {
        Some(time) => parse_time(time)
            .ok_or_else(|| malformed(format!("unreadable time {:?}", preview(time))))?,
        None => return Err(malformed("no time".into())),
    };
    let Some(detail) = envelope.get("detail").and_then(|value| value.as_object()) else {
        return Err(malformed("no detail object".into()));
    };
    let instance_id = match detail.get("instance-id").and_then(|value| value.as_str()) {
        Some(id) if is_instance_id(id) => InstanceId(id.to_string()),
        Some(id) => return Err(malformed(format!("unusable instance id {:?}", preview(id)))),
        None => return Err(malformed("no detail.instance-id".into())),
    };
    let kind = match event_type {
        EventType::Warning => NoticeKind::SpotInterruptionWarning,
        EventType::Rebalance => NoticeKind::RebalanceRecommendation,
        EventType::StateChange => {
            let raw = detail
                .get("state")
                .and_then(|value| value.as_str())
                .ok_or_else(|| malformed("state change without detail.state".into()))?;
            let state = Lifecycle::parse(raw)
                .ok_or_else(|| malformed(format!("unknown state {:?}", preview(raw))))?;
            if !state.is_gone() {
                return Err(RejectedMessage::IgnoredState { instance_id, state });
            }
            NoticeKind::StateChange(state)
        }
    };
    Ok(InterruptionNotice {
        event_id,
        kind,
        instance_id,
        event_time,
    })
}

/// The three detail types, before a state change's state is read.
enum EventType {
    Warning,
    Rebalance,
    StateChange,
}

/// RFC 3339 (`2021-11-11T21:29:54Z`) to epoch milliseconds.
fn parse_time(raw: &str) -> Option<Millis> {
    let time =
        time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339).ok()?;
    Millis::try_from(time.unix_timestamp_nanos() / 1_000_000).ok()
}

/// `i-` and 1-32 hex digits (8 for old instances, 17 today), nothing else.
fn is_instance_id(raw: &str) -> bool {
    raw.strip_prefix("i-").is_some_and(|hex| {
        (1..=32).contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit())
    })
}

fn preview(text: &str) -> String {
    text.chars().take(FIELD_PREVIEW_CHARS).collect()
}

/// What one receive brought and what became of it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollReport {
    /// Messages the receive returned.
    pub received: usize,
    /// New notices written to the store.
    pub stored: usize,
    /// Notices the store already had (redeliveries).
    pub duplicates: usize,
    /// Messages that were not notices, deleted unread.
    pub rejected: usize,
    /// Messages left in the queue because their notice could not be stored.
    pub kept: usize,
    /// Handled messages whose delete failed; they come back as duplicates.
    pub delete_failures: usize,
}

/// Why a poll failed. The loop backs off and tries again; nothing is lost, because a message is
/// only deleted after its notice is stored.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("receiving from the interruption queue: {0}")]
    Receive(#[from] CloudError),
    /// At least one notice could not be stored; its message stays in the queue.
    #[error("storing an interruption notice: {0}")]
    Store(#[from] StoreError),
}

/// Reads the interruption queue into the store. See the module docs for the hand-off order.
pub struct InterruptionConsumer {
    queue: Arc<dyn InterruptionQueue>,
    store: Store,
    /// The reconciler's wake-up, shared with the API.
    wake: Arc<Notify>,
    clock: Clock,
}

impl InterruptionConsumer {
    pub fn new(
        queue: Arc<dyn InterruptionQueue>,
        store: Store,
        wake: Arc<Notify>,
        clock: Clock,
    ) -> InterruptionConsumer {
        InterruptionConsumer {
            queue,
            store,
            wake,
            clock,
        }
    }

    /// The consumer for one term of leadership: on the term's `store`, and the queue as
    /// `fence` wraps it.
    pub fn for_term(
        &self,
        store: Store,
        fence: impl FnOnce(Arc<dyn InterruptionQueue>) -> Arc<dyn InterruptionQueue>,
    ) -> InterruptionConsumer {
        InterruptionConsumer::new(
            fence(self.queue.clone()),
            store,
            self.wake.clone(),
            self.clock.clone(),
        )
    }

    /// One receive (a long poll) and the hand-off of everything it returned.
    pub async fn poll_once(&self) -> Result<PollReport, ConsumeError> {
        let messages = self.queue.receive().await?;
        let mut report = PollReport {
            received: messages.len(),
            ..PollReport::default()
        };
        let now = (self.clock)();
        let mut handled: Vec<&QueueMessage> = Vec::with_capacity(messages.len());
        let mut store_error = None;
        for message in &messages {
            let notice = match parse_event(&message.body) {
                Ok(notice) => notice,
                Err(rejected) => {
                    report.rejected += 1;
                    metrics::counter!(
                        "spotpool_interruption_messages_rejected_total",
                        "reason" => rejected.reason(),
                    )
                    .increment(1);
                    tracing::warn!(
                        message_id = %message.message_id,
                        body_chars = message.body.chars().count(),
                        body_start = %message.body.chars().take(BODY_PREVIEW_CHARS).collect::<String>(),
                        reason = rejected.reason(),
                        error = %rejected,
                        "interruption queue message is not a notice; deleting it"
                    );
                    handled.push(message);
                    continue;
                }
            };
            let kind = notice.kind.as_str();
            metrics::counter!("spotpool_interruptions_received_total", "kind" => kind).increment(1);
            match self.store.insert_notice(&notice, now).await {
                Ok(true) => {
                    report.stored += 1;
                    tracing::info!(
                        event_id = %notice.event_id,
                        instance_id = %notice.instance_id,
                        kind,
                        state = notice.kind.state().map(Lifecycle::as_str),
                        event_time = notice.event_time,
                        "interruption notice stored"
                    );
                    handled.push(message);
                }
                Ok(false) => {
                    report.duplicates += 1;
                    metrics::counter!("spotpool_interruption_duplicates_total", "kind" => kind)
                        .increment(1);
                    tracing::debug!(event_id = %notice.event_id, kind, "duplicate interruption notice");
                    handled.push(message);
                }
                Err(error) => {
                    report.kept += 1;
                    tracing::warn!(
                        event_id = %notice.event_id,
                        instance_id = %notice.instance_id,
                        kind,
                        error = %error,
                        "could not store an interruption notice; its message stays in the queue"
                    );
                    store_error.get_or_insert(error);
                }
            }
        }
        // The reconciler learns of the notices before any message is gone: a crash from here on
        // only redelivers them.
        if report.stored > 0 {
            self.wake.notify_one();
        }
        for message in handled {
            if let Err(error) = self.queue.delete(&message.receipt).await {
                report.delete_failures += 1;
                tracing::warn!(
                    message_id = %message.message_id,
                    error = %error,
                    "could not delete a handled interruption message; it will come back as a duplicate"
                );
            }
        }
        match store_error {
            Some(error) => Err(ConsumeError::Store(error)),
            None => Ok(report),
        }
    }

    /// Deletes notices older than a day, handled or not: by then the queue has long dropped any
    /// copy that could come back, and the instance is long gone.
    async fn prune(&self) {
        let cutoff = (self.clock)() - NOTICE_RETENTION.as_millis() as Millis;
        match self.store.prune_notices(cutoff).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "old interruption notices pruned"),
            Err(error) => tracing::warn!(error = %error, "pruning old interruption notices failed"),
        }
    }

    /// Polls until `shutdown` resolves. A failed poll never ends the loop: it backs off like the
    /// reconciler (1 s doubling to 60 s). Stopping mid-poll is safe: an undeleted message comes
    /// back after the visibility timeout.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        tracing::info!("interruption consumer started");
        let mut consecutive_failures: u32 = 0;
        let mut next_prune = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_prune {
                self.prune().await;
                next_prune = tokio::time::Instant::now() + PRUNE_INTERVAL;
            }
            let started = tokio::time::Instant::now();
            let result = tokio::select! {
                _ = &mut shutdown => break,
                result = self.poll_once() => result,
            };
            match &result {
                Ok(_) => consecutive_failures = 0,
                Err(_) => consecutive_failures += 1,
            }
            let delay = next_delay(&result, consecutive_failures, started.elapsed());
            if let Err(error) = &result {
                tracing::warn!(error = %error, retry_in = ?delay, "interruption queue poll failed");
            }
            if !delay.is_zero() {
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
        tracing::info!("interruption consumer stopped");
    }
}

/// The pause before the next poll: none after messages (more may be waiting), the rest of
/// [`MIN_EMPTY_POLL`] after an empty receive that came back early, and the reconciler's
/// [`error_policy`] after `consecutive_failures` failed polls.
fn next_delay(
    result: &Result<PollReport, ConsumeError>,
    consecutive_failures: u32,
    poll_took: Duration,
) -> Duration {
    match result {
        Ok(report) if report.received == 0 => MIN_EMPTY_POLL.saturating_sub(poll_took),
        Ok(_) => Duration::ZERO,
        Err(_) => error_policy(consecutive_failures),
    }
}

#[cfg(test)]
mod tests;
