//! Settings to configuration: defaults, validation and the one-line errors.

use super::*;

const LISTENER_A: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/sp-a/1111/aaaa";
const LISTENER_B: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/sp-b/2222/bbbb";

/// `minimal()` with the `[[shard]]` tables of `toml` instead of ALB_LISTENER_ARN.
fn with_shards(toml: &str) -> Result<Config, ConfigError> {
    let file: Settings = toml::from_str(toml).map_err(|e| ConfigError::File {
        path: "test".into(),
        why: e.message().to_string(),
    })?;
    let mut settings = minimal();
    settings.alb_listener_arn = None;
    settings.or(file).into_config()
}

#[test]
fn shard_tables_replace_the_listener_and_the_base_url() {
    let config = with_shards(&format!(
        r#"
        [[shard]]
        name = "a"
        listener_arn = "{LISTENER_A}"
        routing = "path"
        base_url = "https://a.example.com/"

        [[shard]]
        name = "b"
        listener_arn = "{LISTENER_B}"
        routing = "host"
        domain = "B.users.example.com."
        capacity = 3
        "#
    ))
    .unwrap();
    let [a, b] = &config.shards[..] else {
        panic!("{:?}", config.shards)
    };
    assert_eq!((a.name.as_str(), a.capacity), ("a", 90));
    assert_eq!(a.url("r1"), "https://a.example.com/r1/");
    assert_eq!((b.routing, b.capacity), (crate::model::RouteMode::Host, 3));
    assert_eq!(b.url("r1"), "https://r1.b.users.example.com/");
    assert_eq!(b.load_balancer(), "app/sp-b/2222");
}

#[test]
fn without_shard_tables_the_listener_is_one_path_routed_shard() {
    let mut settings = minimal();
    settings.public_base_url = Some("https://agents.example.com/".into());
    let config = settings.into_config().unwrap();
    let [shard] = &config.shards[..] else {
        panic!("{:?}", config.shards)
    };
    assert_eq!(shard.name, "default");
    assert_eq!(shard.listener_arn, LISTENER_A);
    assert_eq!(shard.url("r1"), "https://agents.example.com/r1/");
    let mut settings = minimal();
    settings.alb_listener_arn = None;
    let error = settings.into_config().unwrap_err().to_string();
    assert!(
        error.contains("ALB_LISTENER_ARN") && error.contains("[[shard]]"),
        "{error}"
    );
}

#[test]
fn bad_shard_tables_are_refused_with_the_reason() {
    let table = |name: &str, listener: &str, rest: &str| {
        format!("[[shard]]\nname = \"{name}\"\nlistener_arn = \"{listener}\"\n{rest}\n")
    };
    let path = "routing = \"path\"\nbase_url = \"https://x.example.com\"";
    let with = |extra: &str| format!("{path}\n{extra}");
    let cases = [
        (
            table("a", LISTENER_A, path) + &table("b", LISTENER_A, path),
            "a load balancer of its own",
        ),
        (
            table("a", LISTENER_A, path) + &table("a", LISTENER_B, path),
            "used by another shard",
        ),
        (table("A b", LISTENER_A, path), "`name` needs"),
        (table("a", "arn:listener", path), "`listener_arn` must be"),
        (
            table("a", LISTENER_A, &with("capacity = 101")),
            "`capacity` must be 1 to 100",
        ),
        (
            table("a", LISTENER_A, &with("capacity = 0")),
            "`capacity` must be 1 to 100",
        ),
        (
            table("a", LISTENER_A, "routing = \"dns\""),
            "\"path\" or \"host\"",
        ),
        (
            table("a", LISTENER_A, "routing = \"host\""),
            "host routing needs `domain`",
        ),
        (
            table(
                "a",
                LISTENER_A,
                "routing = \"host\"\ndomain = \"localhost\"",
            ),
            "at least two labels",
        ),
        (
            table("a", LISTENER_A, "routing = \"host\"\ndomain = \"users.10\""),
            "the last one letters only",
        ),
        (
            table(
                "a",
                LISTENER_A,
                &format!(
                    "routing = \"host\"\ndomain = \"{}.example.com\"",
                    "a".repeat(99)
                ),
            ),
            "at most 111 characters",
        ),
        (
            table("a", LISTENER_A, "routing = \"path\""),
            "path routing needs `base_url`",
        ),
        (
            table(
                "a",
                LISTENER_A,
                "routing = \"path\"\nbase_url = \"ftp://x\"",
            ),
            "`base_url` must start with",
        ),
        (
            table("a", LISTENER_A, &with("domain = \"x.example.com\"")),
            "`domain` is for host routing",
        ),
        (
            table("a", LISTENER_A, &with("routing_mode = 1")),
            "unknown field",
        ),
    ];
    for (toml, why) in cases {
        let error = with_shards(&toml).unwrap_err().to_string();
        assert!(
            error.contains(why),
            "{toml}\n=> {error}\n(expected {why:?})"
        );
    }
}

fn minimal() -> Settings {
    Settings {
        launch_template_id: Some("lt-1".into()),
        subnet_ids: Some("subnet-a, subnet-b".into()),
        vpc_id: Some("vpc-1".into()),
        alb_listener_arn: Some(LISTENER_A.into()),
        spotpool_api_token: Some("service-token-0123456789".into()),
        spotpool_admin_token: Some("admin-token-0123456789".into()),
        container_image: Some("ghcr.io/openclaw/openclaw:latest".into()),
        ..Settings::default()
    }
}

#[test]
fn minimal_settings_get_the_documented_defaults() {
    let config = minimal().into_config().unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:7070");
    assert_eq!(config.subnet_ids, vec!["subnet-a", "subnet-b"]);
    assert_eq!(config.tiers[0].spare_count, 2);
    assert_eq!(config.tiers[0].instance_types, vec!["t3.small"]);
    assert_eq!(config.runtime.container.port, 18789);
    assert_eq!(config.pool, "spotpool");
    assert_eq!(config.secret_prefix, "openclaw/");
    assert_eq!(config.reconcile_interval, Duration::from_secs(10));
    assert_eq!(config.aws_max_attempts, 4);
    assert_eq!(config.aws_secret_write_attempts, 8);
}

#[test]
fn a_missing_setting_is_named_in_one_line() {
    let mut settings = minimal();
    settings.launch_template_id = None;
    let message = settings.into_config().unwrap_err().to_string();
    assert!(
        message.starts_with("missing setting LAUNCH_TEMPLATE_ID"),
        "{message}"
    );
    assert!(!message.contains('\n'));
}

#[test]
fn invalid_values_are_named_with_the_reason() {
    let mut settings = minimal();
    settings.spotpool_reconcile_interval = Some("fast".into());
    let message = settings.into_config().unwrap_err().to_string();
    assert!(message.contains("SPOTPOOL_RECONCILE_INTERVAL"), "{message}");

    let mut settings = minimal();
    settings.pool_max_instances = Some(1);
    let message = settings.into_config().unwrap_err().to_string();
    assert!(message.contains("POOL_MAX_INSTANCES"), "{message}");

    let mut settings = minimal();
    settings.container_image = Some("img; rm -rf /".into());
    let message = settings.into_config().unwrap_err().to_string();
    assert!(message.contains("CONTAINER_IMAGE"), "{message}");
}

#[test]
fn health_checks_default_to_five_seconds_twice_and_keep_the_timeout_below_the_interval() {
    let health = minimal()
        .into_config()
        .unwrap()
        .runtime
        .container
        .health_check;
    assert_eq!(
        (
            health.interval_seconds,
            health.timeout_seconds,
            health.healthy_threshold,
            health.unhealthy_threshold
        ),
        (5, 4, 2, 2)
    );
    assert_eq!(health.time_to_healthy(), Duration::from_secs(10));

    let mut settings = minimal();
    settings.health_check_interval_seconds = Some(10);
    settings.health_check_timeout_seconds = Some(6);
    settings.health_check_healthy_threshold = Some(3);
    settings.health_check_unhealthy_threshold = Some(4);
    let health = settings
        .into_config()
        .unwrap()
        .runtime
        .container
        .health_check;
    assert_eq!(health.time_to_healthy(), Duration::from_secs(30));
    assert_eq!((health.timeout_seconds, health.unhealthy_threshold), (6, 4));

    let refused = |settings: Settings| settings.into_config().unwrap_err().to_string();
    let mut settings = minimal();
    settings.health_check_timeout_seconds = Some(5);
    let message = refused(settings);
    assert!(
        message.starts_with("invalid setting HEALTH_CHECK_TIMEOUT_SECONDS=\"5\"")
            && message.contains("less than HEALTH_CHECK_INTERVAL_SECONDS (5)"),
        "{message}"
    );
    let mut settings = minimal();
    settings.health_check_interval_seconds = Some(4);
    assert!(refused(settings).contains("HEALTH_CHECK_INTERVAL_SECONDS"));
    let mut settings = minimal();
    settings.health_check_healthy_threshold = Some(1);
    assert!(refused(settings).contains("HEALTH_CHECK_HEALTHY_THRESHOLD"));
    let mut settings = minimal();
    settings.health_check_unhealthy_threshold = Some(11);
    assert!(refused(settings).contains("HEALTH_CHECK_UNHEALTHY_THRESHOLD"));
}

#[test]
fn container_limits_have_defaults_and_bounds() {
    let config = minimal().into_config().unwrap();
    assert_eq!(config.runtime.container.memory_mb, 1536);
    assert_eq!(config.runtime.container.cpus, 1.0);
    assert_eq!(config.runtime.container.pids_limit, 512);
    assert_eq!(config.runtime.container.health_check.path, "/healthz");

    let mut settings = minimal();
    settings.container_memory_mb = Some(4096);
    settings.container_cpus = Some(0.5);
    settings.container_pids_limit = Some(1024);
    let config = settings.into_config().unwrap();
    assert_eq!(
        (
            config.runtime.container.memory_mb,
            config.runtime.container.cpus,
            config.runtime.container.pids_limit
        ),
        (4096, 0.5, 1024)
    );

    let refused = |settings: Settings, env: &str| {
        let message = settings.into_config().unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("invalid setting {env}=")),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message}");
        message
    };
    for memory in [0, 63, 2_000_000] {
        let mut settings = minimal();
        settings.container_memory_mb = Some(memory);
        refused(settings, "CONTAINER_MEMORY_MB");
    }
    for cpus in [0.0, 0.001, -1.0, 257.0, f64::NAN, f64::INFINITY] {
        let mut settings = minimal();
        settings.container_cpus = Some(cpus);
        let message = refused(settings, "CONTAINER_CPUS");
        assert!(message.contains("from 0.01 to 256"), "{message}");
    }
    for pids in [0, 15, 2_000_000] {
        let mut settings = minimal();
        settings.container_pids_limit = Some(pids);
        refused(settings, "CONTAINER_PIDS_LIMIT");
    }
    for path in ["healthz", "/a b", "/$(id)", "/x'y", "/[1-2]"] {
        let mut settings = minimal();
        settings.health_check_path = Some(path.into());
        refused(settings, "HEALTH_CHECK_PATH");
    }
    let mut settings = minimal();
    settings.health_check_path = Some("/healthz?full=1".into());
    assert_eq!(
        settings
            .into_config()
            .unwrap()
            .runtime
            .container
            .health_check
            .path,
        "/healthz?full=1"
    );
}

#[test]
fn container_limits_come_from_the_file_too() {
    let file: Settings = toml::from_str(
        "container_memory_mb = 2048\ncontainer_cpus = 1.5\ncontainer_pids_limit = 256\n",
    )
    .unwrap();
    let config = minimal().or(file).into_config().unwrap();
    assert_eq!(config.runtime.container.memory_mb, 2048);
    assert_eq!(config.runtime.container.cpus, 1.5);
    assert_eq!(config.runtime.container.pids_limit, 256);
}

#[test]
fn a_database_password_never_prints() {
    let mut settings = minimal();
    settings.spotpool_database_url = Some("postgres://spotpool:hunter2-secret@db:5432/sp".into());
    let config = settings.into_config().unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2-secret"), "{debug}");
    assert_eq!(
        config.database_url.expose(),
        "postgres://spotpool:hunter2-secret@db:5432/sp"
    );
}

#[test]
fn tokens_never_print() {
    let config = minimal().into_config().unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("service-token-0123456789"));
    assert!(!debug.contains("admin-token-0123456789"));
    let mut settings = minimal();
    settings.spotpool_admin_token = Some("short".into());
    let message = settings.into_config().unwrap_err().to_string();
    assert!(!message.contains("short"), "{message}");
}

#[test]
fn flags_and_env_win_over_the_file() {
    let file: Settings = toml::from_str("pool_spare_count = 5\nvpc_id = \"vpc-file\"\n").unwrap();
    let mut cli = minimal();
    cli.vpc_id = None;
    cli.pool_spare_count = Some(3);
    let merged = cli.or(file);
    assert_eq!(merged.pool_spare_count, Some(3));
    assert_eq!(merged.vpc_id.as_deref(), Some("vpc-file"));
}

#[test]
fn unknown_file_keys_are_refused() {
    let error = toml::from_str::<Settings>("pool_spare_cuont = 5").unwrap_err();
    assert!(
        error.message().contains("pool_spare_cuont"),
        "{}",
        error.message()
    );
}

#[test]
fn the_interruption_queue_is_optional_and_must_be_a_queue_url() {
    assert_eq!(
        minimal().into_config().unwrap().interruption_queue_url,
        None
    );
    let mut settings = minimal();
    settings.spotpool_interruption_queue_url = Some("  ".into());
    assert_eq!(settings.into_config().unwrap().interruption_queue_url, None);
    for url in [
        "https://sqs.eu-west-1.amazonaws.com/123456789012/spotpool-interruptions",
        "http://127.0.0.1:5000/123456789012/spotpool-interruptions",
    ] {
        let mut settings = minimal();
        settings.spotpool_interruption_queue_url = Some(url.into());
        assert_eq!(
            settings
                .into_config()
                .unwrap()
                .interruption_queue_url
                .as_deref(),
            Some(url)
        );
    }
    for url in [
        "arn:aws:sqs:eu-west-1:123456789012:spotpool-interruptions",
        "spotpool-interruptions",
        "https://sqs.eu-west-1.amazonaws.com/spotpool-interruptions",
        "https://sqs.eu-west-1.amazonaws.com/123456789012/a/b",
    ] {
        let mut settings = minimal();
        settings.spotpool_interruption_queue_url = Some(url.into());
        let message = settings.into_config().unwrap_err().to_string();
        assert!(
            message.starts_with("invalid setting SPOTPOOL_INTERRUPTION_QUEUE_URL="),
            "{message}"
        );
    }
}

#[test]
fn durations_parse_with_units() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert!(parse_duration("0s").is_err());
    assert!(parse_duration("5 parsecs").is_err());
}

#[test]
fn every_documented_default_names_a_setting_and_no_help_text_repeats_one() {
    let command = <Settings as clap::Args>::augment_args(clap::Command::new("serve"));
    let ids: Vec<String> = command
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    for (id, _) in defaults::documented() {
        assert!(ids.iter().any(|i| i == id), "no setting {id}");
    }
    for arg in command.get_arguments() {
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        assert!(
            !help.contains("[default:"),
            "{}: the default belongs in config::defaults, not in the help text",
            arg.get_id()
        );
    }
    // The documented values are the ones applied.
    let config = minimal().into_config().unwrap();
    let documented: std::collections::HashMap<_, _> = defaults::documented().into_iter().collect();
    assert_eq!(
        documented["pool_spare_count"],
        config.tiers[0].spare_count.to_string()
    );
    assert!(
        documented["container_port"].starts_with(&format!("{} ", config.runtime.container.port)),
        "{}",
        documented["container_port"]
    );
    assert!(
        documented["health_check_path"]
            .starts_with(&format!("{} ", config.runtime.container.health_check.path))
    );
    assert_eq!(documented["spotpool_listen"], config.listen.to_string());
    assert_eq!(
        documented["health_check_interval_seconds"],
        config
            .runtime
            .container
            .health_check
            .interval_seconds
            .to_string()
    );
}

#[test]
fn the_default_container_is_an_openclaw_gateway_and_generic_images_keep_their_own_settings() {
    let config = minimal().into_config().unwrap();
    assert_eq!(config.container_preset, Preset::OpenClaw);
    assert_eq!(
        config.runtime.container.args,
        [
            "node",
            "openclaw.mjs",
            "gateway",
            "--bind",
            "lan",
            "--port",
            "18789"
        ]
    );
    assert_eq!(config.runtime.container.health_check.path, "/healthz");
    assert_eq!(config.container_ready_path.as_deref(), Some("/readyz"));
    assert_eq!(config.required_secrets, ["OPENCLAW_GATEWAY_TOKEN"]);
    assert!(
        config
            .runtime
            .container
            .env
            .contains(&("OPENCLAW_STATE_DIR".into(), "/data/.openclaw".into()))
    );
    assert!(
        config
            .runtime
            .container
            .env
            .contains(&("NODE_OPTIONS".into(), "--max-old-space-size=960".into()))
    );
    let gateway = config.gateway_config().unwrap();
    assert_eq!(gateway.state_dir, "/data/.openclaw");
    assert_eq!(config.shards[0].origin("r1"), "http://localhost");

    // The port follows CONTAINER_PORT into the arguments; the backend may be trusted to omit
    // the token; the origin is the base url's.
    let mut settings = minimal();
    settings.container_port = Some(28789);
    settings.container_required_secrets = Some(" ".into());
    settings.public_base_url = Some("https://Agents.Example.com:8443/some/path/".into());
    let config = settings.into_config().unwrap();
    assert_eq!(
        config.runtime.container.args.last().map(String::as_str),
        Some("28789")
    );
    assert!(config.required_secrets.is_empty());
    assert_eq!(
        config.shards[0].origin("r1"),
        "https://agents.example.com:8443"
    );

    let mut settings = minimal();
    settings.container_preset = Some("generic".into());
    let config = settings.into_config().unwrap();
    assert_eq!(config.runtime.container.port, 8080);
    assert_eq!(config.runtime.container.health_check.path, "/");
    assert!(config.runtime.container.args.is_empty());
    assert!(config.runtime.container.env.is_empty());
    assert_eq!(config.container_ready_path, None);
    assert!(config.required_secrets.is_empty());
    assert_eq!(config.gateway_config(), None);

    let mut settings = minimal();
    settings.container_preset = Some("generic".into());
    settings.container_args = Some("serve --listen 0.0.0.0:8080".into());
    settings.container_ready_path = Some("/ready".into());
    settings.container_required_secrets = Some("API_KEY, OTHER".into());
    let config = settings.into_config().unwrap();
    assert_eq!(
        config.runtime.container.args,
        ["serve", "--listen", "0.0.0.0:8080"]
    );
    assert_eq!(config.container_ready_path.as_deref(), Some("/ready"));
    assert_eq!(config.required_secrets, ["API_KEY", "OTHER"]);
}

#[test]
fn bad_container_presets_arguments_and_base_urls_are_named() {
    let refused = |settings: Settings| settings.into_config().unwrap_err().to_string();
    let mut settings = minimal();
    settings.container_preset = Some("openclow".into());
    assert!(refused(settings).contains("CONTAINER_PRESET"));
    let mut settings = minimal();
    settings.container_args = Some("gateway $(id)".into());
    assert!(refused(settings).contains("CONTAINER_ARGS"));
    let mut settings = minimal();
    settings.container_required_secrets = Some("OK,not-a-name".into());
    assert!(refused(settings).contains("CONTAINER_REQUIRED_SECRETS"));
    let mut settings = minimal();
    settings.container_ready_path = Some("readyz".into());
    assert!(refused(settings).contains("CONTAINER_READY_PATH"));
    for url in [
        "agents.example.com",
        "ftp://agents.example.com",
        "https://",
        "https://bad host",
        "https://a.example.com:0",
    ] {
        let mut settings = minimal();
        settings.public_base_url = Some(url.into());
        let message = refused(settings);
        assert!(message.contains("PUBLIC_BASE_URL"), "{url}: {message}");
    }
}

#[test]
fn health_codes_are_the_load_balancers_matcher_syntax() {
    assert_eq!(
        minimal()
            .into_config()
            .unwrap()
            .runtime
            .container
            .health_check
            .codes,
        "200"
    );
    for good in ["200-299", "200,204", "200-399,401"] {
        let mut settings = minimal();
        settings.health_check_codes = Some(good.into());
        assert_eq!(
            settings
                .into_config()
                .unwrap()
                .runtime
                .container
                .health_check
                .codes,
            good
        );
    }
    for bad in ["", "20", "199", "500", "299-200", "200,", "200;id", "2xx"] {
        let mut settings = minimal();
        settings.health_check_codes = Some(bad.into());
        let message = settings.into_config().unwrap_err().to_string();
        assert!(message.contains("HEALTH_CHECK_CODES"), "{bad:?}: {message}");
    }
}

#[test]
fn tls_needs_both_files_and_is_off_without_them() {
    assert_eq!(minimal().into_config().unwrap().tls, None);
    let cert_only = Settings {
        spotpool_tls_cert: Some("/etc/spotpool/api.pem".into()),
        ..minimal()
    };
    let message = cert_only.into_config().unwrap_err().to_string();
    assert!(message.contains("SPOTPOOL_TLS_KEY"), "{message}");
    let key_only = Settings {
        spotpool_tls_key: Some("/etc/spotpool/api.key".into()),
        ..minimal()
    };
    let message = key_only.into_config().unwrap_err().to_string();
    assert!(message.contains("SPOTPOOL_TLS_CERT"), "{message}");
    let both = Settings {
        spotpool_tls_cert: Some("/etc/spotpool/api.pem".into()),
        spotpool_tls_key: Some("/etc/spotpool/api.key".into()),
        ..minimal()
    };
    let tls = both.into_config().unwrap().tls.expect("TLS on");
    assert_eq!(tls.cert, std::path::Path::new("/etc/spotpool/api.pem"));
    assert_eq!(tls.key, std::path::Path::new("/etc/spotpool/api.key"));
}

#[test]
fn the_cost_settings_take_on_demand_prices_over_the_list_and_refuse_bad_ones() {
    let mut settings = minimal();
    settings.spotpool_on_demand_prices = Some(" t3.small=0.03 , x9.huge=1.5 ".into());
    settings.spotpool_public_ipv4 = Some(false);
    settings.spotpool_network_fixed_dollars_per_hour = Some(0.12);
    settings.spotpool_cpu_credits = Some("unlimited".into());
    settings.spotpool_move_cost_dollars = Some(0.25);
    let cost = settings.into_config().unwrap().cost;
    assert_eq!(cost.move_dollars, 0.25);
    assert_eq!(cost.on_demand.get("t3.small"), Some(&0.03));
    assert_eq!(cost.on_demand.get("x9.huge"), Some(&1.5));
    // The list's other prices stay.
    assert_eq!(cost.on_demand.get("t3.medium"), Some(&0.0416));
    assert!(!cost.public_ipv4 && cost.cpu_credits_unlimited);
    assert_eq!(cost.network_per_hour, 0.12);
    assert_eq!(cost.root_volume_gib, 30);

    for (set, env) in [
        (
            (|s: &mut Settings| s.spotpool_on_demand_prices = Some("t3.small".into()))
                as fn(&mut Settings),
            "SPOTPOOL_ON_DEMAND_PRICES",
        ),
        (
            |s| s.spotpool_on_demand_prices = Some("t3.small=-1".into()),
            "SPOTPOOL_ON_DEMAND_PRICES",
        ),
        (
            |s| s.spotpool_network_fixed_dollars_per_hour = Some(f64::NAN),
            "SPOTPOOL_NETWORK_FIXED_DOLLARS_PER_HOUR",
        ),
        (
            |s| s.spotpool_move_cost_dollars = Some(-0.1),
            "SPOTPOOL_MOVE_COST_DOLLARS",
        ),
        (
            |s| s.spotpool_root_volume_gib = Some(0),
            "SPOTPOOL_ROOT_VOLUME_GIB",
        ),
        (
            |s| s.spotpool_cpu_credits = Some("boundless".into()),
            "SPOTPOOL_CPU_CREDITS",
        ),
    ] {
        let mut settings = minimal();
        set(&mut settings);
        match settings.into_config() {
            Err(ConfigError::Invalid { env: named, .. }) => assert_eq!(named, env),
            other => panic!("{env}: {other:?}"),
        }
    }
}
