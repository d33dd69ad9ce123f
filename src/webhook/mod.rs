//! Ready webhooks (ARCHITECTURE.md "Webhooks"): the leader POSTs a user's instance document to
//! its `callback_url` when the user becomes `ready`, `failed` or `asleep`, signed
//! (`Spotpool-Signature`) and de-duplicable (`Spotpool-Event-Id`), from the store's outbox, at
//! least once, with back-off for a day.
//!
//! Owns: the outbox's delivery, the signature, which targets are allowed. Must not: call the
//! cloud. The document is rendered by the API (`Render`, given by `app`), so the body is the
//! one `GET /v1/users/{id}/instance` answers.

pub mod sign;
pub mod target;

use crate::clock::Clock;
use crate::config::SecretString;
use crate::model::{Event, Millis};
use crate::store::{Store, StoreResult, UserRecord, Webhook, WebhookOutcome};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use target::GuardedResolver;

/// How long a POST is retried before it is given up.
pub const GIVE_UP_AFTER: Millis = 24 * 3_600_000;
/// The first retry's delay; each later one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Millis = 5_000;
const MAX_BACKOFF: Millis = 30 * 60_000;
/// One attempt's limit: connect, TLS, and the receiver's answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// POSTs in flight at once; a batch of due ones is this many.
const CONCURRENCY: i64 = 16;
/// How often the outbox is read when nothing was due.
const POLL: Duration = Duration::from_secs(1);
/// Finished webhooks are kept this long (for on-call), then pruned.
const KEEP_FINISHED: Millis = 7 * 24 * 3_600_000;

/// The instance document of a user, as the API renders it, in the state the webhook reports.
pub type Render = Arc<
    dyn Fn(UserRecord) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>>
        + Send
        + Sync,
>;

/// The webhooks' settings (`SPOTPOOL_WEBHOOK_SECRET`, `SPOTPOOL_WEBHOOK_ALLOW_PRIVATE`).
#[derive(Clone)]
pub struct WebhookSettings {
    /// None: webhooks are off; what the outbox holds (a callback set while they were on) is
    /// not sent, and is given up a day after it was owed, with the backlog's metrics showing it.
    pub secret: Option<SecretString>,
    pub allow_private: bool,
}

/// The webhooks' HTTP client: HTTP/1 over rustls with the system's roots, connecting through
/// [`GuardedResolver`].
pub type HttpClient =
    Client<hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

/// The client for `allow_private` (see [`target`]).
pub fn client(allow_private: bool) -> Result<HttpClient, String> {
    let mut http = HttpConnector::new_with_resolver(GuardedResolver { allow_private });
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(crate::tls::client_config(None, true)?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// Delivers the outbox. One per daemon; [`Deliverer::for_term`] gives each leadership term's
/// copy its fenced store.
#[derive(Clone)]
pub struct Deliverer {
    store: Store,
    /// None when the TLS client could not be built: webhooks are off.
    client: Option<HttpClient>,
    settings: WebhookSettings,
    clock: Clock,
    render: Render,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// Failed; tried again at this time.
    Retry(Millis),
    Abandoned,
    Gone,
}

impl Deliverer {
    pub fn new(
        store: Store,
        settings: WebhookSettings,
        client: Option<HttpClient>,
        clock: Clock,
        render: Render,
    ) -> Deliverer {
        Deliverer {
            store,
            client,
            settings,
            clock,
            render,
        }
    }

    /// Whether POSTs go out: a signing key and a client.
    pub fn delivers(&self) -> bool {
        self.settings.secret.is_some() && self.client.is_some()
    }

    /// This deliverer writing through `store` (a term's fenced store).
    pub fn for_term(&self, store: Store) -> Deliverer {
        Deliverer {
            store,
            ..self.clone()
        }
    }

    /// Delivers until `stop` resolves: due POSTs as they come, the backlog's metrics, and an
    /// hourly prune of what finished a week ago.
    pub async fn run_until_stopped(&self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        // The backlog's gauges are the leader's: a replica that stops leading stops saying.
        let _gauges = ResetGauges;
        let mut pruned_at: Option<Millis> = None;
        loop {
            // A stop never waits for a batch (at least once: a POST cut short is sent again).
            let delivered = tokio::select! {
                biased;
                _ = &mut stop => return,
                delivered = self.deliver_due() => delivered,
            };
            let attempted = match delivered {
                Ok(attempted) => attempted,
                Err(error) => {
                    tracing::warn!(%error, "could not read the webhook outbox");
                    0
                }
            };
            self.report_backlog().await;
            let now = (self.clock)();
            if pruned_at.is_none_or(|at| now - at >= 3_600_000) {
                pruned_at = Some(now);
                if let Err(error) = self.store.prune_webhooks(now - KEEP_FINISHED).await {
                    tracing::warn!(%error, "could not prune finished webhooks");
                }
            }
            // A full batch: more may be due at once.
            if attempted as i64 == CONCURRENCY {
                continue;
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Attempts the due POSTs (each user's oldest pending one), up to [`CONCURRENCY`] at once;
    /// how many it attempted.
    pub async fn deliver_due(&self) -> StoreResult<usize> {
        let now = (self.clock)();
        let due = self.store.due_webhooks(now, CONCURRENCY).await?;
        let attempted = due.len();
        let results =
            futures_util::future::join_all(due.into_iter().map(|hook| self.attempt(hook))).await;
        for result in results {
            result?;
        }
        Ok(attempted)
    }

    /// One attempt at `hook`, and its bookkeeping.
    pub async fn attempt(&self, hook: Webhook) -> StoreResult<Attempt> {
        let user = self.store.get_user(&hook.user_id).await?;
        // A user deleted and created again since is another user: its predecessor's POSTs end.
        let Some(mut user) = user.filter(|user| user.created_at <= hook.created_at) else {
            self.store
                .finish_webhook(hook.id, WebhookOutcome::Gone, None, (self.clock)())
                .await?;
            count(WebhookOutcome::Gone.as_str());
            return Ok(Attempt::Gone);
        };
        // The document as of the change: its state and instance; the rest as it is now.
        user.state = hook.state;
        user.instance_id = hook.instance_id.clone();
        let result = match (self.render)(user).await {
            Ok(body) => self.post(&hook, body).await,
            Err(error) => Err(format!("the document could not be rendered: {error}")),
        };
        let now = (self.clock)();
        let host = host_of(&hook.url);
        let attempts = hook.attempts + 1;
        match result {
            Ok(()) => {
                self.store
                    .finish_webhook(hook.id, WebhookOutcome::Delivered, None, now)
                    .await?;
                count(WebhookOutcome::Delivered.as_str());
                let event = Event::WebhookDelivered {
                    id: hook.id,
                    state: hook.state,
                    host,
                    attempts,
                };
                self.journal(now, &event, &hook).await;
                Ok(Attempt::Delivered)
            }
            Err(error) if now - hook.created_at >= GIVE_UP_AFTER => {
                self.store
                    .finish_webhook(hook.id, WebhookOutcome::Abandoned, Some(&error), now)
                    .await?;
                count(WebhookOutcome::Abandoned.as_str());
                tracing::warn!(user = %hook.user_id, webhook = hook.id, %host, %error, "webhook given up after a day of failures");
                let event = Event::WebhookAbandoned {
                    id: hook.id,
                    state: hook.state,
                    host,
                    attempts,
                    error,
                };
                self.journal(now, &event, &hook).await;
                Ok(Attempt::Abandoned)
            }
            Err(error) => {
                let next = now + backoff(attempts, hook.id);
                self.store.retry_webhook(hook.id, &error, next).await?;
                count("failed");
                tracing::info!(user = %hook.user_id, webhook = hook.id, %host, %error, attempts, "webhook attempt failed; retrying");
                Ok(Attempt::Retry(next))
            }
        }
    }

    /// POSTs `body` to the hook's url: Ok on a 2xx answer. The message never holds the url's
    /// path or query (they may carry the receiver's token).
    async fn post(&self, hook: &Webhook, body: Vec<u8>) -> Result<(), String> {
        let (Some(secret), Some(client)) = (&self.settings.secret, &self.client) else {
            return Err("webhooks are off: the daemon has no SPOTPOOL_WEBHOOK_SECRET".into());
        };
        // Again at every attempt: an address literal is checked here (a name, when resolved).
        let target = target::parse(&hook.url, self.settings.allow_private)?;
        let seconds = (self.clock)().div_euclid(1000);
        let signature = sign::signature(secret.expose().as_bytes(), seconds, &body);
        let request = hyper::Request::post(target.uri)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("spotpool/", env!("CARGO_PKG_VERSION")),
            )
            .header("spotpool-event-id", hook.id.to_string())
            .header("spotpool-signature", signature)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("bad request: {e}"))?;
        let host = &target.host;
        let response = tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(request))
            .await
            .map_err(|_| format!("{host} did not answer within {ATTEMPT_TIMEOUT:?}"))?
            .map_err(|e| format!("{host}: {}", error_chain(&e)))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_redirection() {
            Err(format!(
                "{host} answered {status} (redirects are not followed)"
            ))
        } else {
            Err(format!("{host} answered {status}"))
        }
    }

    async fn journal(&self, now: Millis, event: &Event, hook: &Webhook) {
        if let Err(error) = self
            .store
            .record(now, event, Some(&hook.user_id), hook.instance_id.as_ref())
            .await
        {
            tracing::warn!(%error, "could not journal a webhook's end");
        }
    }

    async fn report_backlog(&self) {
        match self.store.webhook_backlog().await {
            Ok(backlog) => {
                metrics::gauge!("spotpool_webhook_backlog").set(backlog.pending as f64);
                let age = backlog
                    .oldest
                    .map_or(0, |oldest| ((self.clock)() - oldest).max(0));
                metrics::gauge!("spotpool_webhook_oldest_pending_seconds").set(age as f64 / 1000.0);
            }
            Err(error) => tracing::warn!(%error, "could not measure the webhook backlog"),
        }
    }
}

/// Zeroes the backlog's gauges when the leader's delivery ends (its term's future dropped).
struct ResetGauges;

impl Drop for ResetGauges {
    fn drop(&mut self) {
        metrics::gauge!("spotpool_webhook_backlog").set(0.0);
        metrics::gauge!("spotpool_webhook_oldest_pending_seconds").set(0.0);
    }
}

fn count(outcome: &'static str) {
    metrics::counter!("spotpool_webhook_deliveries_total", "outcome" => outcome).increment(1);
}

/// The url's host, for messages and events.
fn host_of(url: &str) -> String {
    url.parse::<hyper::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The delay before attempt `attempts + 1`: doubling from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`],
/// less up to a fifth (spread by the webhook's id, so a receiver's outage does not end in one
/// burst of every retry).
pub fn backoff(attempts: u32, id: i64) -> Millis {
    let full = FIRST_BACKOFF
        .saturating_mul(1 << attempts.saturating_sub(1).min(20))
        .min(MAX_BACKOFF);
    let spread = (id.unsigned_abs().wrapping_mul(2_654_435_761) % 1000) as i64;
    full - full / 5 * spread / 1000
}

/// An error and its sources, on one line (hyper's own says only "client error (Connect)").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn retries_back_off_doubling_to_half_an_hour_with_a_spread() {
        let delays: Vec<i64> = (1..=12).map(|n| super::backoff(n, 0)).collect();
        assert_eq!(delays[..4], [5_000, 10_000, 20_000, 40_000]);
        assert_eq!(delays[11], 30 * 60_000);
        for id in 1..200 {
            let delay = super::backoff(3, id);
            assert!((16_000..=20_000).contains(&delay), "{id}: {delay}");
        }
        assert_ne!(super::backoff(3, 1), super::backoff(3, 2));
    }
}
