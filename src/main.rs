//! The `spotpool` binary: parses the command line and the configuration, sets up tracing, and
//! dispatches: `serve` and `migrate-store` to the composition root (`spotpool::app`), the
//! on-call subcommands to `admin_cli`.

mod admin_cli;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use spotpool::app::App;
use spotpool::config::{Config, Settings};
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Print the start command the daemon would send an instance for a user, with the settings
    /// of `serve` (the same flags, environment and file): what the instance would run.
    StartScript(Box<StartScriptArgs>),
    /// Show the daemon's readiness and each tier's counts (admin token).
    Status {
        /// Draw it again after each event, with the newest events under it, until interrupted.
        #[arg(long, short = 'w')]
        watch: bool,
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
    /// Empty a tier, instance type, zone or list of instances: show what would be drained, or
    /// (--execute) drain it and print its progress until it is done (admin token).
    Drain {
        #[command(flatten)]
        args: admin_cli::DrainArgs,
        #[command(flatten)]
        target: admin_cli::Target,
    },
    /// Move an instance's user to a fresh instance and terminate it (admin token).
    Recycle {
        instance_id: String,
        #[command(flatten)]
        target: admin_cli::Target,
    },
    /// Forget the container image's pinned digest; the daemon resolves its tag again (admin
    /// token).
    Repin {
        /// Only this tier's image; without it, every tier's.
        #[arg(long)]
        tier: Option<String>,
        #[command(flatten)]
        target: admin_cli::Target,
    },
    /// Print the daemon's events, one line each: those kept, or with --follow those to come
    /// (admin token).
    Events {
        #[command(flatten)]
        args: admin_cli::EventsArgs,
        #[command(flatten)]
        target: admin_cli::Target,
    },
    /// Show what the pool costs: per tier, dollars an hour for spares, assigned instances,
    /// workspaces, secrets and its share of the load balancers, and per user-month (admin
    /// token; docs/costs.md, "The live cost").
    Cost {
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
    /// Copy every table of one database into another, empty one: moving a SQLite deployment to
    /// PostgreSQL (or back). Stop the daemons first: it refuses while one holds a SQLite
    /// database's lock. Prints each table's rows, counted again on both sides after the copy.
    MigrateStore {
        /// The database to copy from, e.g. sqlite:///var/lib/spotpool/spotpool.db. It is
        /// migrated to this version's schema first, as a daemon's start would.
        #[arg(long, value_name = "URL")]
        from: String,
        /// The database to copy into, e.g. postgres://spotpool@db.internal:5432/spotpool (the
        /// password in PGPASSWORD or ~/.pgpass, not on the command line). Its tables are created
        /// if it has none; it is refused if any table the copy writes holds a row.
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

#[derive(clap::Args, Clone)]
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

#[derive(clap::Args)]
struct StartScriptArgs {
    /// The user's id.
    #[arg(long, value_name = "ID")]
    user_id: String,
    /// The user's route (the path segment of their url).
    #[arg(long, value_name = "ROUTE")]
    route: String,
    /// The ARN of the user's secret.
    #[arg(
        long,
        value_name = "ARN",
        default_value = "arn:aws:secretsmanager:us-east-1:123456789012:secret:openclaw/user-AbCdEf"
    )]
    secret_arn: String,
    /// The user's workspace volume, if any.
    #[arg(long, value_name = "VOLUME_ID")]
    volume_id: Option<String>,
    /// The instance's private address (without it the instance asks its metadata service).
    #[arg(long, value_name = "IPV4")]
    host_ip: Option<String>,
    /// The user's tier (its image, port and limits); the first configured one if not given.
    #[arg(long)]
    tier: Option<String>,
    /// The user's shard (its url's origin and path); the first configured one if not given.
    #[arg(long, value_name = "NAME")]
    shard: Option<String>,
    #[command(flatten)]
    serve: ServeArgs,
}

fn main() -> ExitCode {
    let mut command = with_defaults(Cli::command());
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
        Command::StartScript(args) => start_script(*args),
        Command::Status { watch, target } => admin_cli::status(&target, watch),
        Command::Repair { dry_run, target } => admin_cli::repair(&target, dry_run),
        Command::Pool { command, target } => admin_cli::pool(&target, &command),
        Command::Recycle {
            instance_id,
            target,
        } => admin_cli::recycle(&target, &instance_id),
        Command::Drain { args, target } => admin_cli::drain(&target, &args),
        Command::Repin { tier, target } => admin_cli::repin(&target, tier.as_deref()),
        Command::Audit { limit, target } => admin_cli::audit(&target, limit),
        Command::Events { args, target } => admin_cli::events(&target, &args),
        Command::Cost { target } => admin_cli::cost(&target),
        Command::MigrateStore { from, to } => migrate_store(&from, &to),
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

/// Appends each setting's default to its help, from the constants `into_config` applies
/// (`config::defaults`), so `--help` and the code cannot disagree.
fn with_defaults(command: clap::Command) -> clap::Command {
    command.mut_subcommand("serve", |mut serve| {
        for (id, value) in spotpool::config::defaults::documented() {
            serve = serve.mut_arg(id, |arg| {
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                arg.help(format!("{help} [default: {value}]"))
            });
        }
        serve
    })
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
    out.push_str(&format!(
        "\nIn the TOML file only: [[shard]] tables (load balancers) and [[tier]] tables (plans; \
         without them the settings above make one tier, `default`). A [[tier]] takes: {}. Every \
         key but name, instance_types, spare_count and max_instances defaults to the setting \
         above of the same meaning (docs/DEPLOY.md, \"Tiers\").\n",
        spotpool::config::TIER_KEYS.join(", ")
    ));
    out
}

/// The configuration of `serve`'s settings: flags and environment over the optional file.
fn load_config(args: ServeArgs) -> Result<Config, String> {
    let file = match &args.config {
        Some(path) => Settings::from_file(path).map_err(|e| e.to_string())?,
        None => Settings::default(),
    };
    args.settings
        .or(file)
        .into_config()
        .map_err(|e| e.to_string())
}

fn start_script(args: StartScriptArgs) -> ExitCode {
    let config = match load_config(args.serve) {
        Ok(config) => config,
        Err(error) => return fail(&error),
    };
    if let Err(error) = spotpool::model::UserId::parse(&args.user_id) {
        return fail(&format!("--user-id: {error}"));
    }
    let route_ok = !args.route.is_empty()
        && args.route.len() <= 64
        && args
            .route
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !route_ok {
        return fail(&"--route: a route is 1-64 letters, digits, - and _");
    }
    let reconciler = App::reconciler_config(&config);
    let tier = match &args.tier {
        Some(name) => match config.tiers.iter().find(|t| &t.name == name) {
            Some(tier) => tier,
            None => return fail(&format!("--tier: no tier is named {name:?}")),
        },
        None => &config.tiers[0],
    };
    let shard = match &args.shard {
        Some(name) => match reconciler.shard(name) {
            Some(shard) => shard,
            None => return fail(&format!("--shard: no shard is named {name:?}")),
        },
        None => &config.shards[0],
    };
    print!(
        "{}",
        spotpool::reconcile::start_command(
            &reconciler,
            &tier.runtime.container,
            &spotpool::reconcile::StartFor {
                user_id: &args.user_id,
                image: &tier.runtime.container.image,
                route: &args.route,
                shard,
                secret_arn: &args.secret_arn,
                volume_id: args.volume_id.as_deref(),
                host_ip: args.host_ip.as_deref(),
                slot: 0,
                shared: tier.slots_per_instance > 1,
            },
        )
    );
    ExitCode::SUCCESS
}

fn serve(args: ServeArgs) -> ExitCode {
    let log_format = args.log_format.clone();
    // A SIGHUP reads the file again, under the same flags and environment.
    let reload: spotpool::app::ReloadTiers = {
        let args = args.clone();
        std::sync::Arc::new(move || load_config(args.clone()).map(|config| config.tiers))
    };
    let config = match load_config(args) {
        Ok(config) => config,
        Err(error) => return fail(&error),
    };
    init_tracing(&log_format);
    match block_on(run(config, reload)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(&message),
    }
}

/// `migrate-store`: the copy (`app::migrate_store`), then one line per table and a summary;
/// a failure if any table's counts differ.
fn migrate_store(from: &str, to: &str) -> ExitCode {
    let report = match block_on(spotpool::app::migrate_store(from, to)) {
        Ok(report) => report,
        Err(message) => return fail(&message),
    };
    for table in &report.tables {
        if table.source == table.destination {
            println!("{}: {}", table.table, rows(table.destination));
        } else {
            println!(
                "{}: {} in the source, {} in the destination",
                table.table,
                rows(table.source),
                table.destination
            );
        }
    }
    let skipped: Vec<String> = spotpool::store::NOT_COPIED
        .iter()
        .map(|(table, why)| format!("{table} ({why})"))
        .collect();
    println!("not copied: {}", skipped.join("; "));
    let mismatches: Vec<&str> = report
        .mismatches()
        .iter()
        .map(|t| t.table.as_str())
        .collect();
    if !mismatches.is_empty() {
        return fail(&format!(
            "the row counts differ in {}: something wrote to a database during the copy; keep \
             running on the source",
            mismatches.join(", ")
        ));
    }
    println!(
        "copied {} tables, {}, from {} to {}",
        report.tables.len(),
        rows(report.rows()),
        spotpool::store::redacted_url(from),
        spotpool::store::redacted_url(to)
    );
    ExitCode::SUCCESS
}

/// "1 row", "2 rows".
fn rows(count: i64) -> String {
    match count {
        1 => "1 row".to_string(),
        n => format!("{n} rows"),
    }
}

/// Runs `future` to its end on a new multi-threaded runtime.
fn block_on<T>(future: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("starting the async runtime: {error}"))?
        .block_on(future)
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

/// Builds the daemon for `config` and serves until a signal.
async fn run(config: Config, reload: spotpool::app::ReloadTiers) -> Result<(), String> {
    // A certificate that does not load stops the start before anything connects.
    let tls = match &config.tls {
        Some(files) => Some((files.clone(), files.acceptor_config()?)),
        None => None,
    };
    let parts = App::connect(&config).await?;
    let reconciler = App::reconciler_config(&config);
    App::assemble(&config, reconciler, parts)
        .serve(&config, tls, Some(reload))
        .await
}
