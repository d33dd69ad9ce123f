//! The `spotpool` binary: parse the CLI and config, set up tracing and metrics, build the
//! adapters, run the API and the reconciler, and stop on the first to exit or on a signal.

mod admin_cli;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use spotpool::api::{self, ApiSettings, AppState};
use spotpool::cloud::Cloud;
use spotpool::cloud::aws::{self as aws_adapter, AwsCloud, AwsCloudConfig, AwsInterruptionQueue};
use spotpool::cloud::limit::Limited;
use spotpool::config::{Config, Settings};
use spotpool::interruptions::InterruptionConsumer;
use spotpool::plan::Policy;
use spotpool::reconcile::{self, Health, Reconciler, ReconcilerConfig};
use spotpool::store::Store;
use spotpool::vault::SecretVault;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// spotpool keeps a warm pool of EC2 spot instances and gives each user one, running the user's
/// agent container (an OpenClaw gateway by default), routed at /{route}/ on a shared ALB.
#[derive(Parser)]
#[command(name = "spotpool", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: the HTTP API and the reconciler.
    Serve(Box<ServeArgs>),
    /// Show the daemon's readiness and each tier's counts (admin token).
    Status {
        #[command(flatten)]
        target: admin_cli::Target,
    },
    /// Run a full reconcile pass and an orphan sweep on the daemon (admin token).
    Repair {
        /// Only list what would be done.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        target: admin_cli::Target,
    },
    /// Show or change the pool's tiers (admin token).
    Pool {
        #[command(subcommand)]
        command: admin_cli::PoolCommand,
        #[command(flatten)]
        target: admin_cli::Target,
    },
    /// Move an instance's user to a fresh instance and terminate it (admin token).
    Recycle {
        instance_id: String,
        #[command(flatten)]
        target: admin_cli::Target,
    },
    /// Show the newest admin actions (admin token).
    Audit {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        target: admin_cli::Target,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Optional TOML file with any of the settings below (keys are the flag names with
    /// underscores, e.g. pool_spare_count = 3). Flags and environment variables win over it.
    #[arg(long, env = "SPOTPOOL_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "SPOTPOOL_LOG_FORMAT", value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(flatten)]
    settings: Settings,
}

fn main() -> ExitCode {
    let mut command = Cli::command();
    let settings_help = settings_table(&mut command);
    let command = command.after_long_help(settings_help);
    let matches = match command.clone().try_get_matches() {
        Ok(matches) => matches,
        Err(error) => match invalid_setting_line(&command, &error) {
            Some(line) => return fail(&line),
            None => error.exit(),
        },
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Status { target } => admin_cli::status(&target),
        Command::Repair { dry_run, target } => admin_cli::repair(&target, dry_run),
        Command::Pool { command, target } => admin_cli::pool(&target, &command),
        Command::Recycle {
            instance_id,
            target,
        } => admin_cli::recycle(&target, &instance_id),
        Command::Audit { limit, target } => admin_cli::audit(&target, limit),
    }
}

/// Turns clap's multi-line "invalid value" error for a setting into the same one-line form as
/// every other configuration error, naming the environment variable.
fn invalid_setting_line(command: &clap::Command, error: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        error.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = arg.trim_start_matches("--").split(' ').next()?;
    let serve = command.find_subcommand("serve")?;
    let setting = serve.get_arguments().find(|a| a.get_long() == Some(long))?;
    let name = setting
        .get_env()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("--{long}"));
    let value = match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) => value.clone(),
        _ => String::new(),
    };
    let why = std::error::Error::source(error)
        .map(|e| e.to_string())
        .unwrap_or_else(|| "not a valid value".into());
    Some(format!("invalid setting {name}={value:?}: {why}"))
}

/// Every `serve` setting with its environment variable, for `spotpool --help`.
fn settings_table(command: &mut clap::Command) -> String {
    let mut out = String::from(
        "Settings of `spotpool serve` (flag, environment variable, meaning; also accepted from the TOML file):\n",
    );
    if let Some(serve) = command.find_subcommand_mut("serve") {
        for arg in serve.get_arguments() {
            let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) else {
                continue;
            };
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            out.push_str(&format!(
                "  --{long:<30} {:<30} {help}\n",
                env.to_string_lossy()
            ));
        }
    }
    out
}

fn serve(args: ServeArgs) -> ExitCode {
    let file = match &args.config {
        Some(path) => match Settings::from_file(path) {
            Ok(file) => file,
            Err(error) => return fail(&error),
        },
        None => Settings::default(),
    };
    let config = match args.settings.or(file).into_config() {
        Ok(config) => config,
        Err(error) => return fail(&error),
    };
    init_tracing(&args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("starting the async runtime: {error}")),
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(&message),
    }
}

fn fail(message: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("spotpool: {message}");
    ExitCode::from(2)
}

fn init_tracing(format: &str) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // At trace level the SDK's orchestrator and the HTTP stack log whole requests, bodies
    // included, and CreateSecret's body is a user's secret. Cap them at debug whenever the
    // filter reaches trace (a directive would raise them to debug at a lower level, so only then).
    let reaches_trace = filter
        .max_level_hint()
        .is_none_or(|level| level >= tracing_subscriber::filter::LevelFilter::TRACE);
    for target in [
        "aws_smithy_runtime",
        "aws_smithy_runtime_api",
        "aws_smithy_http_client",
        "aws_smithy_http",
        "hyper",
        "hyper_util",
        "h2",
    ] {
        if !reaches_trace {
            break;
        }
        if let Ok(directive) = format!("{target}=debug").parse() {
            filter = filter.add_directive(directive);
        }
    }
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

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

async fn run(config: Config) -> Result<(), String> {
    let metrics = install_metrics()?;
    let store = Store::open(&config.database_url)
        .await
        .map_err(|e| format!("opening the database {}: {e}", config.database_url))?;
    let aws_config = AwsCloudConfig {
        pool: config.pool.clone(),
        launch_template_id: config.launch_template_id.clone(),
        launch_template_version: config.launch_template_version.clone(),
        on_demand_launch_template_id: config.on_demand_launch_template_id.clone(),
        vpc_id: config.vpc_id.clone(),
        security_group_ids: config.security_group_ids.clone(),
        instance_profile_arn: config.instance_profile_arn.clone(),
        call_timeout: config.aws_call_timeout,
        attempt_timeout: config.aws_call_timeout / 2,
        max_attempts: config.aws_max_attempts,
        secret_write_attempts: config.aws_secret_write_attempts,
    };
    let sdk = aws_adapter::load_sdk_config(&aws_config).await;
    let aws: Arc<dyn Cloud> = Arc::new(AwsCloud::new(&sdk, aws_config));
    tracing::info!(rate_limits = %config.rate_limits.describe(), "client-side AWS rate limits");
    let cloud: Arc<dyn Cloud> = Arc::new(Limited::new(aws, &config.rate_limits));
    let wake = Arc::new(Notify::new());
    let health = Arc::new(Health::default());
    let clock = reconcile::system_clock();
    // SQS's API quota is far above anything a long poll does, so the queue does not go through
    // the client-side rate limits.
    let interruptions = config.interruption_queue_url.as_deref().map(|url| {
        tracing::info!(queue = url, "reading spot interruptions from the queue");
        InterruptionConsumer::new(
            Arc::new(AwsInterruptionQueue::new(&sdk, url)),
            store.clone(),
            wake.clone(),
            clock.clone(),
        )
    });
    let reconciler = Reconciler::new(
        store.clone(),
        cloud.clone(),
        reconciler_config(&config),
        clock.clone(),
        wake.clone(),
        health.clone(),
    );
    let state = AppState {
        store: store.clone(),
        vault: Arc::new(SecretVault::new(cloud, &config.secret_prefix, &config.pool)),
        wake,
        health,
        metrics: Some(metrics),
        settings: Arc::new(ApiSettings {
            api_token: config.api_token.clone(),
            admin_token: config.admin_token.clone(),
            public_base_url: config.public_base_url.clone(),
            tiers: config.tiers.clone(),
            ready_staleness: (config.reconcile_interval * 3).max(Duration::from_secs(30)),
        }),
        clock,
        reconciler: Some(reconciler.clone()),
    };

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("binding SPOTPOOL_LISTEN={}: {e}", config.listen))?;
    let address = listener
        .local_addr()
        .map_err(|e| format!("reading the bound address: {e}"))?;
    tracing::info!(%address, pool = %config.pool, "spotpool listening");

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let mut api_task = tokio::spawn({
        let shutdown = stopped(stop_rx.clone());
        async move {
            axum::serve(listener, api::router(state))
                .with_graceful_shutdown(shutdown)
                .await
        }
    });
    let lock_path = reconciler_lock_path(&config.database_url);
    let mut reconciler_task = tokio::spawn({
        let shutdown = stopped(stop_rx.clone());
        async move {
            // One reconciler acts at a time: a file lock next to the SQLite database. API
            // replicas can be many; a second daemon serves the API and waits for the lock.
            let _lock = match lock_path {
                Some(path) => tokio::select! {
                    lock = acquire_lock(path) => Some(lock),
                    _ = stopped(stop_rx.clone()) => return,
                },
                None => None,
            };
            // The interruption consumer runs beside the reconciler it feeds, under the same
            // lock: a standby daemon leaves the queue to the active one.
            let consumer = async {
                if let Some(consumer) = interruptions {
                    consumer.run_until_stopped(stopped(stop_rx.clone())).await;
                }
            };
            tokio::join!(reconciler.run_until_stopped(shutdown), consumer);
        }
    });

    let result = tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("signal received; stopping");
            Ok(())
        }
        api = &mut api_task => Err(format!("the API stopped: {api:?}")),
        _ = &mut reconciler_task => Err("the reconciler stopped unexpectedly".to_string()),
    };
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        let _ = (&mut api_task).await;
        let _ = (&mut reconciler_task).await;
    })
    .await;
    result
}

fn reconciler_config(config: &Config) -> ReconcilerConfig {
    let ms = |d: Duration| d.as_millis() as i64;
    ReconcilerConfig {
        pool: config.pool.clone(),
        policy: Policy {
            tiers: config.tiers.clone(),
            subnet_ids: config.subnet_ids.clone(),
            probe_timeout: ms(config.probe_timeout),
            probe_retry: 5_000,
            launch_visibility_grace: 60_000,
            orphan_grace: 600_000,
            terminate_retry: 60_000,
            missed_before_lost: 2,
        },
        listener_arns: config.listener_arns.clone(),
        container_image: config.container_image.clone(),
        container_port: config.container_port,
        health_check: config.health_check.clone(),
        container_memory_mb: config.container_memory_mb,
        container_cpus: config.container_cpus,
        container_pids_limit: config.container_pids_limit,
        container_timeout: config.container_timeout,
        probe_command_timeout: Duration::from_secs(120),
        claim_attempts: config.claim_attempts,
        claim_step_deadline: config.container_timeout + Duration::from_secs(120),
        reconcile_interval: config.reconcile_interval,
        poll_interval: config.poll_interval,
        max_in_flight: config.max_in_flight,
        capacity_ttl: config.capacity_ttl,
        launch_failure_limit: config.launch_failure_limit,
        launch_backoff: Duration::from_secs(10),
    }
}

/// `sqlite://path/to/db?mode=rwc` -> `path/to/db.lock`; None for in-memory databases.
fn reconciler_lock_path(database_url: &str) -> Option<PathBuf> {
    let path = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path.contains(":memory:") {
        return None;
    }
    Some(PathBuf::from(format!("{path}.lock")))
}

/// Waits until this process holds the exclusive lock on `path`; the lock lives as long as the
/// returned file.
async fn acquire_lock(path: PathBuf) -> std::fs::File {
    let mut warned = false;
    loop {
        let attempt = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| e.to_string())
            .and_then(|file| match file.try_lock() {
                Ok(()) => Ok(file),
                Err(e) => Err(e.to_string()),
            });
        match attempt {
            Ok(file) => {
                if warned {
                    tracing::info!(lock = %path.display(), "reconciler lock acquired");
                }
                return file;
            }
            Err(error) if !warned => {
                tracing::warn!(lock = %path.display(), %error, "another spotpool holds the reconciler lock; serving the API only until it is released");
                warned = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
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
