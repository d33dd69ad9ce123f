//! `GET /v1/events`: the journal as server-sent events (ARCHITECTURE.md, "Events").
//!
//! Each replica has one [`EventHub`]: a task that reads the journal's new entries every
//! [`TAIL_INTERVAL`] (started by the first stream) and broadcasts them. A stream first reads
//! the entries after its cursor from the store, page by page, then follows the hub; it
//! subscribes before its first read, and skips what it has sent, so nothing falls between the
//! two. Ids commit in order (`store/journal.rs`), so resuming after id N loses and repeats
//! nothing; a cursor older than the journal's horizon gets `event: reset` first.
//!
//! Owns: the stream's filters and scopes (the service token sees entries about users only),
//! its bounded buffers, its end. Must not: let a slow client hold memory or slow the daemon (a
//! client that falls behind the hub's buffer reads from the store again, at its own pace; one
//! more than [`MAX_BEHIND`] entries behind is closed with the reason).

use super::openapi::{InternalError, Unauthorized};
use super::{ApiError, AppState, Scope, rfc3339};
use crate::store::{JournalEntry, JournalFilter, Store};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::{Extension, response::IntoResponse};
use futures_util::Stream;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// How often the hub reads the journal's new entries (a standby's stream lags its leader's
/// writes by at most this much, plus the read).
pub const TAIL_INTERVAL: Duration = Duration::from_millis(200);
/// Entries the hub keeps for streams that have not taken them yet; one that falls further
/// behind reads from the store again.
const HUB_BUFFER: usize = 1024;
/// A stream this many entries behind the newest is closed (`lagging`): it reconnects with
/// `Last-Event-ID` when it can keep up.
pub const MAX_BEHIND: i64 = 10_000;
/// Entries a stream reads from the store at once.
const PAGE: i64 = 200;
/// Comment lines that keep an idle stream open through proxies.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Streams a replica serves at once; one more is answered `503` with `Retry-After`.
pub const MAX_STREAMS: usize = 256;

/// The journal's new entries, read once per replica and broadcast to its streams.
pub struct EventHub {
    store: Store,
    sender: broadcast::Sender<Arc<JournalEntry>>,
    /// The newest entry broadcast, or found when the tail started; -1 until then (a stream
    /// waits for it: entries below it are never broadcast).
    head: watch::Sender<i64>,
    started: std::sync::Once,
    stop: watch::Sender<bool>,
    streams: Arc<tokio::sync::Semaphore>,
}

impl EventHub {
    pub fn new(store: Store) -> Arc<EventHub> {
        Arc::new(EventHub {
            store,
            sender: broadcast::channel(HUB_BUFFER).0,
            head: watch::channel(-1).0,
            started: std::sync::Once::new(),
            stop: watch::channel(false).0,
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
        })
    }

    /// Ends every stream (the daemon is stopping) and the tail.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// A receiver of the entries from now on; starts the tail on the first call.
    fn subscribe(self: &Arc<Self>) -> broadcast::Receiver<Arc<JournalEntry>> {
        let receiver = self.sender.subscribe();
        self.started.call_once(|| {
            tokio::spawn(self.clone().tail());
        });
        receiver
    }

    /// The newest entry the hub has (every entry up to it committed before it was read),
    /// once the tail has read the journal's head.
    async fn head(&self) -> i64 {
        let mut head = self.head.subscribe();
        match head.wait_for(|h| *h >= 0).await {
            Ok(head) => *head,
            // The sender lives as long as the hub.
            Err(_) => 0,
        }
    }

    async fn tail(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut failing = false;
        let mut head: Option<i64> = None;
        loop {
            let result = match head {
                None => (self.store.journal_head().await).map(|h| {
                    head = Some(h);
                    self.head.send_replace(h);
                }),
                Some(after) => self.broadcast_after(after, &mut head).await,
            };
            // Once per failure streak in the log, however long the database is away.
            match result {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("event hub: reading the journal again");
                }
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(error = %error, "event hub: cannot read the journal; retrying");
                }
                _ => {}
            }
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => return,
                _ = tokio::time::sleep(TAIL_INTERVAL) => {}
            }
        }
    }

    /// Broadcasts the entries after `after`, moving `head` along.
    async fn broadcast_after(
        &self,
        mut after: i64,
        head: &mut Option<i64>,
    ) -> Result<(), crate::store::StoreError> {
        loop {
            let rows = self.store.journal_since(after, PAGE).await?;
            let full = rows.len() as i64 == PAGE;
            for row in rows {
                after = row.id;
                *head = Some(after);
                // The head moves first: a stream that reads it after subscribing has every
                // entry up to it either from the store or coming to its receiver.
                self.head.send_replace(after);
                // No stream listening is fine.
                let _ = self.sender.send(Arc::new(row));
            }
            if !full {
                return Ok(());
            }
        }
    }
}

/// The query of `GET /v1/events`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only this user's events.
    #[param(value_type = Option<crate::model::UserId>)]
    user: Option<String>,
    /// Only events of this tier's users and instances.
    tier: Option<String>,
    /// Only these kinds: a comma-separated list of kinds (`claim.ready`) or families
    /// (`claim.*`).
    #[param(pattern = r"^[a-z_]+(\.[a-z_]+|\.\*)?(,[a-z_]+(\.[a-z_]+|\.\*)?)*$")]
    kind: Option<String>,
    /// Resume after this event id (a `Last-Event-ID` header wins); 0 for everything kept.
    /// Without either, the stream starts with the next event.
    #[param(minimum = 0, value_type = Option<i64>)]
    after: Option<String>,
    /// `false`: end the stream once it has sent what there is (the CLI without `--follow`).
    follow: Option<bool>,
}

/// One event's `data`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct EventDocument {
    /// Its id: also the SSE `id`, to resume after.
    pub id: i64,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub at: String,
    /// Also the SSE `event` (e.g. `claim.ready`, `move.done`, `drain.paused`).
    pub kind: String,
    #[schema(required = true, value_type = Option<crate::model::UserId>)]
    pub user_id: Option<String>,
    #[schema(required = true)]
    pub instance_id: Option<String>,
    #[schema(required = true)]
    pub tier: Option<String>,
    pub message: String,
}

/// Streams the journal as server-sent events.
#[utoipa::path(
    get,
    path = "/v1/events",
    params(EventsQuery, ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event id.")),
    responses(
        (status = 200, description = "`text/event-stream`: per event `id: <id>`, `event: <kind>`, `data: <EventDocument as JSON>`; \
            `event: reset` (data `{\"horizon\": <id>}`) first when the cursor is older than the journal keeps; `event: close` \
            (data `{\"reason\": ..., \"detail\": ...}`) before the daemon ends the stream (`lagging`, `stopping`, `store_error`); comment lines \
            as keep-alive. The service token gets only events about users.", content_type = "text/event-stream", body = String),
        (status = 400, description = "`invalid_query` (e.g. `follow` not a boolean), `invalid_user_id`, `unknown_tier`, `invalid_kind` or `invalid_after`.", body = super::ErrorBody),
        (status = 503, description = "`too_many_streams`: the replica serves its most streams already; `Retry-After` says when to try again.", body = super::ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 500, response = InternalError),
    ),
    security(("bearer" = [])),
)]
pub async fn stream_events(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let filter = JournalFilter {
        user: match &query.user {
            Some(user) => Some(
                crate::model::UserId::parse(user)
                    .map_err(|e| ApiError::bad_request("invalid_user_id", e.to_string()))?
                    .to_string(),
            ),
            None => None,
        },
        tier: match &query.tier {
            Some(tier) if !state.tier_configured(tier) => {
                return Err(ApiError::bad_request(
                    "unknown_tier",
                    format!("no tier {tier:?} is configured"),
                ));
            }
            tier => tier.clone(),
        },
        users_only: scope != Scope::Admin,
    };
    let kinds = parse_kinds(query.kind.as_deref())?;
    let resume = match headers.get("last-event-id") {
        Some(value) => Some(value.to_str().unwrap_or_default().to_string()),
        None => query.after.clone(),
    };
    let cursor = match resume {
        Some(raw) => Some(
            raw.trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_after",
                        "an event id (after, Last-Event-ID) is a whole number, 0 or more",
                    )
                })?,
        ),
        None => None,
    };
    let hub = state.events.clone();
    let Ok(permit) = hub.streams.clone().try_acquire_owned() else {
        return Err(ApiError {
            retry_after: Some(5),
            ..ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                format!("this replica serves {MAX_STREAMS} event streams already; retry later"),
            )
        });
    };
    // Subscribed before the first read: whatever commits after it reaches the receiver.
    let receiver = hub.subscribe();
    // Without a cursor: from the newest entry on (`after=0`: from the oldest kept, which is
    // no loss to report).
    let last = match cursor {
        None => hub.head().await,
        Some(after) => after,
    };
    let reader = Reader {
        _permit: permit,
        stop: hub.stop.subscribe(),
        hub,
        receiver,
        filter,
        kinds,
        last,
        pending: VecDeque::new(),
        asked_all: cursor == Some(0),
        live: false,
        lagged: false,
        follow: query.follow.unwrap_or(true),
        done: false,
    };
    let sse = Sse::new(reader.into_stream())
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"));
    Ok(sse.into_response())
}

/// `kind=claim.ready,move.*`: exact kinds, and families by their prefix (with the dot).
fn parse_kinds(raw: Option<&str>) -> Result<Vec<String>, ApiError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let word = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    raw.split(',')
        .map(|kind| {
            let valid = match kind.split_once('.') {
                None => word(kind),
                Some((family, "*")) => word(family),
                Some((family, rest)) => word(family) && word(rest),
            };
            if !valid {
                return Err(ApiError::bad_request(
                    "invalid_kind",
                    format!("{kind:?} is not a kind (claim.ready) or a family (claim.*)"),
                ));
            }
            Ok(kind.strip_suffix('*').unwrap_or(kind).to_string())
        })
        .collect()
}

/// One stream's state.
struct Reader {
    /// Its place among the replica's `MAX_STREAMS`.
    _permit: tokio::sync::OwnedSemaphorePermit,
    hub: Arc<EventHub>,
    receiver: broadcast::Receiver<Arc<JournalEntry>>,
    stop: watch::Receiver<bool>,
    filter: JournalFilter,
    /// Kinds, and families as `family.` prefixes; empty: every kind.
    kinds: Vec<String>,
    /// The newest id sent or passed over.
    last: i64,
    pending: VecDeque<Event>,
    /// It asked for everything kept (`after=0`): entries pruned before it are no loss.
    asked_all: bool,
    /// Following the hub (else reading the store).
    live: bool,
    /// It fell behind the hub's buffer (a slow client): closed if too far behind.
    lagged: bool,
    follow: bool,
    done: bool,
}

impl Reader {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures_util::stream::unfold(self, |mut reader| async move {
            let event = reader.next().await?;
            Some((Ok(event), reader))
        })
    }

    fn close(&mut self, reason: &str, detail: &str) {
        let data = serde_json::json!({ "reason": reason, "detail": detail }).to_string();
        self.pending
            .push_back(Event::default().event("close").data(data));
        self.done = true;
    }

    fn wanted(&self, entry: &JournalEntry) -> bool {
        let filter = &self.filter;
        (!filter.users_only || entry.user_id.is_some())
            && (filter.user.is_none() || entry.user_id == filter.user)
            && (filter.tier.is_none() || entry.tier == filter.tier)
            && (self.kinds.is_empty()
                || (self.kinds.iter()).any(|k| {
                    entry.kind == *k || (k.ends_with('.') && entry.kind.starts_with(k.as_str()))
                }))
    }

    fn take(&mut self, entry: &JournalEntry) {
        self.last = entry.id;
        if self.wanted(entry) {
            self.pending.push_back(to_event(entry));
        }
    }

    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            if *self.stop.borrow() {
                self.close(
                    "stopping",
                    "the daemon is stopping; reconnect with Last-Event-ID",
                );
                continue;
            }
            if !self.live {
                self.read_page().await;
                continue;
            }
            let received = tokio::select! {
                received = self.receiver.recv() => Some(received),
                _ = self.stop.wait_for(|stopped| *stopped) => None,
            };
            match received {
                Some(Ok(entry)) if entry.id > self.last => self.take(&entry),
                Some(Ok(_)) => {}
                // Fallen behind the hub's buffer: read from the store again.
                Some(Err(broadcast::error::RecvError::Lagged(_))) => {
                    self.receiver = self.hub.subscribe();
                    self.live = false;
                    self.lagged = true;
                }
                Some(Err(broadcast::error::RecvError::Closed)) | None => {
                    self.close(
                        "stopping",
                        "the daemon is stopping; reconnect with Last-Event-ID",
                    );
                }
            }
        }
    }

    /// Reads the next page from the store; a page not full means caught up: follow the hub
    /// (or end, without `follow`).
    async fn read_page(&mut self) {
        // Every entry up to the hub's head had committed before this read: a page not full has
        // all of them that the filter lets through.
        let head = self.hub.head().await;
        let behind = head - self.last;
        if self.lagged && behind > MAX_BEHIND {
            let detail = format!("{behind} events behind; reconnect with Last-Event-ID");
            self.close("lagging", &detail);
            return;
        }
        let store = &self.hub.store;
        let page = store.journal_page(self.last, &self.filter, PAGE).await;
        // Read after the page: a prune that committed before the page's read shows here, so
        // entries it took from under the cursor are reported, never silently skipped.
        let horizon = store.journal_horizon().await;
        let (rows, horizon) = match (page, horizon) {
            (Ok(rows), Ok(horizon)) => (rows, horizon),
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(error = %error, "an event stream could not read the journal");
                self.close("store_error", "the journal could not be read; reconnect");
                return;
            }
        };
        if horizon > self.last {
            // `after=0` asked for what is kept: nothing it could have had is lost.
            if !(self.asked_all && self.last == 0) {
                let data = serde_json::json!({ "horizon": horizon, "after": self.last });
                self.pending
                    .push_back(Event::default().event("reset").data(data.to_string()));
            }
            self.last = horizon;
        }
        self.asked_all = false;
        let full = rows.len() as i64 == PAGE;
        for row in &rows {
            if row.id > self.last {
                self.take(row);
            }
        }
        if !full {
            self.last = self.last.max(head);
            self.lagged = false;
            if self.follow {
                self.live = true;
            } else {
                self.done = true;
            }
        }
    }
}

fn to_event(entry: &JournalEntry) -> Event {
    let document = EventDocument {
        id: entry.id,
        at: rfc3339(entry.at),
        kind: entry.kind.clone(),
        user_id: entry.user_id.clone(),
        instance_id: entry.instance_id.clone(),
        tier: entry.tier.clone(),
        message: entry.message.clone(),
    };
    Event::default()
        .id(entry.id.to_string())
        .event(entry.kind.clone())
        .data(serde_json::to_string(&document).unwrap_or_default())
}
