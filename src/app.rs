//! The composition root: the one place that turns a `Config` into a running daemon.
//!
//! [`App::connect`] builds the production adapters (the store at the database URL, the AWS SDK
//! behind the client-side rate limits, the interruption queue); [`App::assemble`] wires any such
//! parts into the reconciler, the secret vault, the API state and the interruption feed;
//! [`App::serve`] runs them until a signal. The test worlds call `assemble` with their own parts
//! (a fake cloud, an injected clock), so the daemon and the tests are wired by the same code.
//!
//! The policy timings that are not settings are named once, in [`policy`]; every setting's
//! default lives in `config`. Must not: hold logic worth testing beyond the wiring.

use crate::api::{self, ApiSettings, AppState};
use crate::clock::{Clock, system_clock};
use crate::cloud::aws::{self as aws_adapter, AwsCloud, AwsCloudConfig, AwsInterruptionQueue};
use crate::cloud::limit::Limited;
use crate::cloud::{Cloud, InterruptionQueue};
use crate::config::Config;
use crate::interruption_feed::InterruptionConsumer;
use crate::leader::{self, Candidate, Election};
use crate::plan::Policy;
use crate::reconcile::{Health, Reconciler, ReconcilerConfig};
use crate::store::{Backend, CopyReport, Store, redacted_url};
use crate::vault::SecretVault;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// The reconciler's fixed timings: not settings, because no deployment has needed to change
/// them, but named here so the daemon and the tests use the same values.
pub mod policy {
    use crate::clock::Backoff;
    use std::time::Duration;

    /// Wait after a failed probe (or an SSM agent not online yet) before probing again.
    pub const PROBE_RETRY: Duration = Duration::from_secs(5);
    /// The longest wait between probes of an instance whose agent SSM cannot report on.
    pub const PROBE_BACKOFF_MAX: Duration = Duration::from_secs(30);
    /// How long the readiness probe command may run.
    pub const PROBE_COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
    /// How long a launched instance may be missing from DescribeInstances (eventual consistency).
    pub const LAUNCH_VISIBILITY_GRACE: Duration = Duration::from_secs(60);
    /// How old an unaccounted-for instance or secret must be before it counts as an orphan (a
    /// PUT writes its secret a moment before its row).
    pub const ORPHAN_GRACE: Duration = Duration::from_secs(600);
    /// Re-send TerminateInstances for a `terminating` instance still running after this long.
    pub const TERMINATE_RETRY: Duration = Duration::from_secs(60);
    /// Consecutive listings a held instance must be missing from before its user is recovered.
    pub const MISSED_BEFORE_LOST: u32 = 2;
    /// A claim or move step failing with retryable errors is retried for the container timeout
    /// plus this long, then rolled back.
    pub const STEP_DEADLINE_MARGIN: Duration = Duration::from_secs(120);
    /// A failing tier's launches: blocked 10 s after the first failure, doubling to 10 minutes.
    pub const LAUNCH_BACKOFF: Backoff =
        Backoff::new(Duration::from_secs(10), Duration::from_secs(600));
    /// `/readyz` fails when the last good pass is older than this many reconcile intervals
    /// (and at least 30 s).
    pub const READY_STALENESS_INTERVALS: u32 = 3;
    /// How long shutdown waits for the API and the reconciler to finish.
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
}

/// What [`App::assemble`] wires together: the production adapters from [`App::connect`], or a
/// test's own.
pub struct Parts {
    pub store: Store,
    /// What the reconciler and the vault call (the rate-limited AWS adapter in production).
    pub cloud: Arc<dyn Cloud>,
    pub clock: Clock,
    /// The interruption queue; None runs no interruption feed.
    pub queue: Option<Arc<dyn InterruptionQueue>>,
    /// The Prometheus handle `/metrics` renders; None answers `/metrics` empty.
    pub metrics: Option<PrometheusHandle>,
    /// Resolves the digests of images outside ECR; None leaves such images unpinned.
    pub registry: Option<Arc<crate::image::RegistryClient>>,
}

/// A wired daemon: every long-lived piece, sharing one store, cloud, clock and wake-up.
pub struct App {
    pub store: Store,
    pub cloud: Arc<dyn Cloud>,
    pub reconciler: Reconciler,
    pub api: AppState,
    pub feed: Option<InterruptionConsumer>,
    /// The ready webhooks' delivery (`Deliverer::delivers` false without a key).
    pub webhooks: crate::webhook::Deliverer,
}

impl App {
    /// The production adapters for `config`.
    pub async fn connect(config: &Config) -> Result<Parts, String> {
        let metrics = install_metrics()?;
        let database = redacted_url(config.database_url.expose());
        let store = Store::open(config.database_url.expose())
            .await
            .map_err(|e| format!("opening the database {database}: {e}"))?;
        if store.backend() == Backend::Postgres {
            tracing::info!(%database, "PostgreSQL store: replicas elect their leader by its lease");
        }
        // Users routed before shards existed are on the shard of their listener.
        let listeners: Vec<(String, String)> = config
            .shards
            .iter()
            .map(|s| (s.name.clone(), s.listener_arn.clone()))
            .collect();
        let placed = store
            .place_routed_users(&listeners)
            .await
            .map_err(|e| format!("placing users on shards: {e}"))?;
        if placed > 0 {
            tracing::info!(
                placed,
                "users routed before shards placed on their listener's shard"
            );
        }
        let aws_config = aws_cloud_config(config);
        let sdk = aws_adapter::load_sdk_config(&aws_config).await;
        let aws: Arc<dyn Cloud> = Arc::new(AwsCloud::new(&sdk, aws_config));
        tracing::info!(rate_limits = %config.rate_limits.describe(), "client-side AWS rate limits");
        let cloud: Arc<dyn Cloud> = Arc::new(Limited::new(aws, &config.rate_limits));
        // SQS's API quota is far above anything a long poll does, so the queue does not go
        // through the client-side rate limits.
        let queue = config.interruption_queue_url.as_deref().map(|url| {
            tracing::info!(queue = url, "reading spot interruptions from the queue");
            Arc::new(AwsInterruptionQueue::new(&sdk, url)) as Arc<dyn InterruptionQueue>
        });
        let registry = crate::image::RegistryClient::new()
            .map_err(|e| format!("the image registry client: {e}"))?;
        Ok(Parts {
            store,
            cloud,
            clock: system_clock(),
            queue,
            metrics: Some(metrics),
            registry: Some(Arc::new(registry)),
        })
    }

    /// Wires `parts` for `config`, with the reconciler running `reconciler` (normally
    /// [`App::reconciler_config`] of the same config; tests adjust it).
    pub fn assemble(config: &Config, reconciler: ReconcilerConfig, parts: Parts) -> App {
        let wake = Arc::new(Notify::new());
        let health = Arc::new(Health::default());
        let tiers = reconciler.tiers.clone();
        let shards = reconciler.policy.shards.clone();
        let cost = reconciler.cost.clone();
        let ready_staleness = (config.reconcile_interval * policy::READY_STALENESS_INTERVALS)
            .max(Duration::from_secs(30));
        let reconciler = Reconciler::new(
            parts.store.clone(),
            parts.cloud.clone(),
            reconciler,
            parts.clock.clone(),
            wake.clone(),
            health.clone(),
            parts.registry,
        );
        let feed = parts.queue.map(|queue| {
            InterruptionConsumer::new(
                queue,
                parts.store.clone(),
                wake.clone(),
                parts.clock.clone(),
            )
        });
        let webhook_client = match crate::webhook::client(config.webhook_allow_private) {
            Ok(client) => Some(client),
            Err(error) => {
                tracing::error!(%error, "webhooks are off: no TLS client for them");
                None
            }
        };
        let api = AppState {
            store: parts.store.clone(),
            vault: Arc::new(SecretVault::new(
                parts.cloud.clone(),
                &config.secret_prefix,
                &config.pool,
            )),
            wake,
            health,
            metrics: parts.metrics,
            settings: Arc::new(ApiSettings {
                api_token: config.api_token.clone(),
                admin_token: config.admin_token.clone(),
                shards,
                tiers,
                required_secrets: config.required_secrets.clone(),
                ready_staleness,
                webhooks: config.webhook_secret.is_some() && webhook_client.is_some(),
                webhook_allow_private: config.webhook_allow_private,
                cost,
            }),
            clock: parts.clock,
            reconciler: crate::leader::Current::of(reconciler.clone()),
            events: crate::api::events::EventHub::new(parts.store.clone()),
        };
        // Always delivering (without a key, what the outbox holds is given up in a day, and the
        // backlog shows it).
        let webhooks = crate::webhook::Deliverer::new(
            parts.store.clone(),
            crate::webhook::WebhookSettings {
                secret: config.webhook_secret.clone(),
                allow_private: config.webhook_allow_private,
            },
            webhook_client,
            api.clock.clone(),
            api::webhook_render(api.clone()),
        );
        App {
            store: parts.store,
            cloud: parts.cloud,
            reconciler,
            api,
            feed,
            webhooks,
        }
    }

    /// What the reconciler runs with for `config`: the settings plus the fixed [`policy`].
    pub fn reconciler_config(config: &Config) -> ReconcilerConfig {
        let ms = |d: Duration| d.as_millis() as i64;
        ReconcilerConfig {
            pool: config.pool.clone(),
            tiers: crate::reconcile::LiveTiers::new(config.tiers.clone()),
            policy: Policy {
                // Each pass fills them in from `tiers` (`Reconciler::effective_policy`).
                tiers: Vec::new(),
                subnet_ids: config.subnet_ids.clone(),
                subnet_zones: Default::default(),
                probe_timeout: ms(config.probe_timeout),
                probe_retry: ms(policy::PROBE_RETRY),
                probe_backoff_max: ms(policy::PROBE_BACKOFF_MAX),
                launch_visibility_grace: ms(policy::LAUNCH_VISIBILITY_GRACE),
                orphan_grace: ms(policy::ORPHAN_GRACE),
                terminate_retry: ms(policy::TERMINATE_RETRY),
                missed_before_lost: policy::MISSED_BEFORE_LOST,
                shards: config.shards.clone(),
            },
            fallback_runtime: config.runtime.clone(),
            container_ready_path: config.container_ready_path.clone(),
            required_secrets: config.required_secrets.clone(),
            gateway: config.gateway_config(),
            container_timeout: config.container_timeout,
            probe_command_timeout: policy::PROBE_COMMAND_TIMEOUT,
            claim_attempts: config.claim_attempts,
            claim_step_deadline: config.container_timeout + policy::STEP_DEADLINE_MARGIN,
            reconcile_interval: config.reconcile_interval,
            poll_interval: config.poll_interval,
            max_in_flight: config.max_in_flight,
            capacity_ttl: config.capacity_ttl,
            launch_failure_limit: config.launch_failure_limit,
            launch_backoff: policy::LAUNCH_BACKOFF,
            workspace_size_gib: crate::config::defaults::WORKSPACE_SIZE_GIB,
            workspace_kms_key_id: config.workspace_kms_key_id.clone(),
            prewired_spares: config.prewired_spares,
            rule_settle: config.rule_settle,
            blank_workspaces: config.blank_workspaces,
            health_checks_per_second: config.health_checks_per_second,
            cost: config.cost.clone(),
        }
    }

    /// Runs the API (over TLS with `tls`: the files, re-read on SIGHUP, and the configuration
    /// read from them), reloads the tiers on SIGHUP with `reload`, and, whenever this replica is elected leader (`leader`), the reconciler
    /// and the interruption feed; stops on Ctrl-C or SIGTERM, or when the API ends or the
    /// first term refuses to lead (a tier beyond the account's quotas).
    pub async fn serve(
        self,
        config: &Config,
        tls: Option<(crate::tls::TlsFiles, axum_server::tls_rustls::RustlsConfig)>,
        reload: Option<ReloadTiers>,
    ) -> Result<(), String> {
        if let Some(reload) = reload {
            let tiers = self.api.settings.tiers.clone();
            tokio::spawn(reload_tiers_on_sighup(reload, tiers, self.api.wake.clone()));
        }
        let listener = std::net::TcpListener::bind(config.listen)
            .map_err(|e| format!("binding SPOTPOOL_LISTEN={}: {e}", config.listen))?;
        let address = listener
            .local_addr()
            .map_err(|e| format!("reading the bound address: {e}"))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(%address, scheme, pool = %config.pool, "spotpool listening");

        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let handle = axum_server::Handle::new();
        tokio::spawn({
            let (shutdown, handle) = (stopped(stop_rx.clone()), handle.clone());
            let events = self.api.events.clone();
            async move {
                shutdown.await;
                // Event streams end first (`event: close`), or they would hold the grace.
                events.stop();
                handle.graceful_shutdown(Some(policy::SHUTDOWN_GRACE));
            }
        });
        // A standby until elected: the API never sees the unfenced template reconciler.
        self.api.reconciler.clear();
        let current = self.api.reconciler.clone();
        let service = api::router(self.api).into_make_service();
        let mut api_task = match tls {
            None => {
                let server = axum_server::from_tcp(listener)
                    .map_err(|e| format!("serving on {address}: {e}"))?;
                tokio::spawn(server.handle(handle).serve(service))
            }
            Some((files, acceptor)) => {
                tokio::spawn(files.reload_on_sighup(acceptor.clone()));
                let server = axum_server::from_tcp_rustls(listener, acceptor)
                    .map_err(|e| format!("serving on {address}: {e}"))?;
                tokio::spawn(server.handle(handle).serve(service))
            }
        };
        // Every replica serves the API; the one elected leads (`leader`).
        let candidate = Candidate {
            replica: config.replica.clone(),
            election: Election::for_database(config.database_url.expose()),
            store: self.store.clone(),
            cloud: self.cloud.clone(),
            reconciler: self.reconciler,
            feed: self.feed,
            webhooks: self.webhooks,
            current,
        };
        tracing::info!(replica = %config.replica.id, url = %config.replica.url, "this replica");
        let mut reconciler_task = tokio::spawn(candidate.run(stop_rx.clone()));

        let result = tokio::select! {
            _ = shutdown_signal() => {
                tracing::info!("signal received; stopping");
                Ok(())
            }
            api = &mut api_task => Err(format!("the API stopped: {api:?}")),
            led = &mut reconciler_task => match led {
                Ok(Err(refusal)) => Err(refusal),
                _ => Err("the reconciler stopped unexpectedly".to_string()),
            },
        };
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(policy::SHUTDOWN_GRACE, async {
            let _ = (&mut api_task).await;
            let _ = (&mut reconciler_task).await;
        })
        .await;
        result
    }
}

/// The AWS adapter's settings for `config`.
fn aws_cloud_config(config: &Config) -> AwsCloudConfig {
    AwsCloudConfig {
        pool: config.pool.clone(),
        vpc_id: config.vpc_id.clone(),
        security_group_ids: config.security_group_ids.clone(),
        instance_profile_arn: config.instance_profile_arn.clone(),
        call_timeout: config.aws_call_timeout,
        attempt_timeout: config.aws_call_timeout / 2,
        max_attempts: config.aws_max_attempts,
        secret_write_attempts: config.aws_secret_write_attempts,
    }
}

/// The Prometheus recorder `/metrics` renders, with buckets for claim durations (seconds to
/// minutes) and for every other `_duration_seconds` (milliseconds to seconds).
fn install_metrics() -> Result<PrometheusHandle, String> {
    let seconds = [
        0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
    ];
    let fast = [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("spotpool_claim_duration_seconds".into()),
            &seconds,
        )
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), &fast))
        .and_then(|b| b.install_recorder())
        .map_err(|e| format!("installing the metrics recorder: {e}"))
}

/// `spotpool migrate-store`: copies every table of the store at `from` into the empty one at
/// `to` (`Store::copy_into`, which counts both sides after its commit). The reconciler lock of
/// each SQLite side is held throughout, as a daemon holds it: the copy refuses while a daemon
/// runs there, and a daemon started meanwhile does not reconcile. Opening migrates both stores
/// to this binary's schema, as a daemon's start would.
pub async fn migrate_store(from: &str, to: &str) -> Result<CopyReport, String> {
    let (source, destination) = (redacted_url(from), redacted_url(to));
    let same_file = match (leader::sqlite_file(from), leader::sqlite_file(to)) {
        (Some(a), Some(b)) => {
            a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
        }
        _ => false,
    };
    if from == to || same_file {
        return Err(format!("--from and --to name the same database ({source})"));
    }
    let _locks = (
        hold_for_copy("--from", from, true)?,
        hold_for_copy("--to", to, false)?,
    );
    let source_store = Store::open(from)
        .await
        .map_err(|e| format!("opening --from {source}: {e}"))?;
    let destination_store = Store::open(to)
        .await
        .map_err(|e| format!("opening --to {destination}: {e}"))?;
    // A PostgreSQL side with a live lease has a replica running on it.
    for (flag, store) in [("--from", &source_store), ("--to", &destination_store)] {
        if let Ok(Some(lease)) = store.leadership().await
            && lease.live()
            && store.backend() == Backend::Postgres
        {
            return Err(format!(
                "{flag}: spotpool replica {} leads on that database; stop every replica first",
                lease.holder
            ));
        }
    }
    let copied = source_store
        .copy_into(&destination_store)
        .await
        .map_err(|e| e.to_string());
    source_store.close().await;
    destination_store.close().await;
    copied
}

/// For a SQLite side of a copy: refuses an in-memory database, a URL without the scheme, and
/// for the source (`must_exist`) a missing file (opening would create an empty one); then takes
/// the database's reconciler lock. None for PostgreSQL, which has no such lock.
fn hold_for_copy(flag: &str, url: &str, must_exist: bool) -> Result<Option<std::fs::File>, String> {
    if Store::backend_of(url) == Backend::Postgres {
        return Ok(None);
    }
    let (Some(path), Some(lock)) = (leader::sqlite_file(url), leader::reconciler_lock_path(url))
    else {
        return Err(format!(
            "{flag}: name a PostgreSQL database (postgres://...) or a SQLite file (sqlite://PATH)"
        ));
    };
    if must_exist && !path.exists() {
        return Err(format!(
            "{flag}: there is no SQLite database at {}",
            path.display()
        ));
    }
    match leader::try_lock(&lock)? {
        Some(file) => Ok(Some(file)),
        None => Err(format!(
            "{flag}: a spotpool daemon runs on {} (it holds {}); stop it first",
            path.display(),
            lock.display()
        )),
    }
}

/// Reads the tiers of the configuration again (`serve`'s file, under its flags and environment).
pub type ReloadTiers = Arc<dyn Fn() -> Result<Vec<crate::plan::TierPolicy>, String> + Send + Sync>;

/// Reloads the tiers into `live` on every SIGHUP, until the process ends, and wakes the
/// reconciler when they changed (a changed image or launch template starts a rolling upgrade).
/// A file that does not load, or a change that needs a restart, is logged and changes nothing;
/// other settings are read at start only.
async fn reload_tiers_on_sighup(
    reload: ReloadTiers,
    live: crate::reconcile::LiveTiers,
    wake: Arc<Notify>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; the tiers reload on restart only");
        return;
    };
    while hangups.recv().await.is_some() {
        match reload().and_then(|tiers| live.reload(tiers)) {
            Ok(changes) if changes.is_empty() => {
                tracing::info!("SIGHUP: the tiers are unchanged (other settings apply at restart)")
            }
            Ok(changes) => {
                for change in &changes {
                    tracing::info!(change = %change, "SIGHUP: tier reloaded");
                }
                metrics::counter!("spotpool_config_reloads_total", "outcome" => "applied")
                    .increment(1);
                wake.notify_one();
            }
            Err(error) => {
                metrics::counter!("spotpool_config_reloads_total", "outcome" => "refused")
                    .increment(1);
                tracing::error!(%error, "SIGHUP: the tiers were not reloaded; they stay as they were")
            }
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
