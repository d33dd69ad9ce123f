//! `[[tier]]` tables: each key over the flat setting, and the one-line errors that name the key.

use super::super::{Config, ConfigError, Settings};
use super::*;

/// Flat settings enough to start, with the `[[tier]]` tables of `toml` (a config file's text).
fn with_tiers(toml: &str) -> Result<Config, ConfigError> {
    let file: Settings = toml::from_str(toml).map_err(|e| ConfigError::File {
        path: "test".into(),
        why: e.message().to_string(),
    })?;
    flat().or(file).into_config()
}

fn flat() -> Settings {
    Settings {
        launch_template_id: Some("lt-flat".into()),
        subnet_ids: Some("subnet-a".into()),
        vpc_id: Some("vpc-1".into()),
        alb_listener_arn: Some(
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/sp/1/a".into(),
        ),
        spotpool_api_token: Some("service-token-0123456789".into()),
        spotpool_admin_token: Some("admin-token-0123456789".into()),
        container_image: Some("ghcr.io/openclaw/openclaw:latest".into()),
        container_memory_mb: Some(1536),
        spotpool_workspace_size_gib: Some(8),
        ..Settings::default()
    }
}

/// The error of `toml`'s tables, which must be one line.
fn refusal(toml: &str) -> String {
    let message = with_tiers(toml).unwrap_err().to_string();
    assert!(!message.contains('\n'), "{message}");
    message
}

const TWO: &str = r#"
    [[tier]]
    name = "basic"
    instance_types = ["t3.small", "t3a.small"]
    spare_count = 2
    max_instances = 10

    [[tier]]
    name = "large"
    instance_types = ["t3.large"]
    spare_count = 1
    max_instances = 4
    launch_template_id = "lt-large"
    launch_template_version = "7"
    container_image = "ghcr.io/openclaw/openclaw:2026.11"
    container_port = 9000
    health_check_path = "/ready"
    container_memory_mb = 4096
    container_cpus = 2.0
    container_pids_limit = 2048
    workspace_size_gib = 50
    idle_sleep_after = "2h"
    rebalance_moves = true
"#;

#[test]
fn without_tables_the_flat_settings_make_one_default_tier() {
    let config = flat().into_config().unwrap();
    let [tier] = &config.tiers[..] else {
        panic!("{:?}", config.tiers)
    };
    assert_eq!(tier.name, "default");
    assert_eq!(tier.instance_types, vec!["t3.small"]);
    assert_eq!(tier.workspace_size_gib, 8);
    assert_eq!(tier.runtime, config.runtime);
    assert_eq!(tier.runtime.launch.id, "lt-flat");
    assert_eq!(tier.runtime.launch.version, "$Default");
    assert_eq!(tier.runtime.container.memory_mb, 1536);
    assert_eq!(tier.runtime.container.port, 18789);
}

#[test]
fn each_table_key_overrides_the_flat_setting_and_the_rest_default_to_it() {
    let config = with_tiers(TWO).unwrap();
    let [basic, large] = &config.tiers[..] else {
        panic!("{:?}", config.tiers)
    };
    // `basic` names only the required keys: its runtime is the flat one.
    assert_eq!(basic.name, "basic");
    assert_eq!(basic.instance_types, vec!["t3.small", "t3a.small"]);
    assert_eq!((basic.spare_count, basic.max_instances), (2, 10));
    assert_eq!(basic.runtime, config.runtime);
    assert_eq!(basic.workspace_size_gib, 8);
    assert_eq!(basic.idle_sleep_after, None);

    assert_eq!((large.spare_count, large.max_instances), (1, 4));
    let runtime = &large.runtime;
    assert_eq!(
        (runtime.launch.id.as_str(), runtime.launch.version.as_str()),
        ("lt-large", "7")
    );
    let container = &runtime.container;
    assert_eq!(container.image, "ghcr.io/openclaw/openclaw:2026.11");
    assert_eq!(container.port, 9000);
    assert_eq!(container.health_check.path, "/ready");
    // The other health-check settings stay daemon-wide.
    let flat_check = &config.runtime.container.health_check;
    assert_eq!(
        container.health_check.interval_seconds,
        flat_check.interval_seconds
    );
    assert_eq!(
        (container.memory_mb, container.cpus, container.pids_limit),
        (4096, 2.0, 2048)
    );
    // The preset's arguments name the tier's port, and its heap follows the tier's memory.
    assert!(
        container.args.contains(&"9000".to_string()),
        "{:?}",
        container.args
    );
    assert!(!container.args.contains(&"18789".to_string()));
    assert_ne!(container.env, config.runtime.container.env);
    assert_eq!(container.env, crate::config::Preset::OpenClaw.env(4096));
    assert_eq!(large.workspace_size_gib, 50);
    assert_eq!(large.idle_sleep_after, Some(2 * 3600 * 1000));
    assert!(large.rebalance_moves);
}

#[test]
fn a_tier_launches_on_demand_only_with_an_on_demand_template() {
    let message = refusal(
        r#"
        [[tier]]
        name = "pro"
        instance_types = ["t3.small"]
        spare_count = 1
        max_instances = 2
        on_demand_fallback = true
        "#,
    );
    assert!(
        message.starts_with("invalid [[tier]] table 1 (\"pro\"): `on_demand_fallback`"),
        "{message}"
    );
    let config = with_tiers(
        r#"
        [[tier]]
        name = "pro"
        instance_types = ["t3.small"]
        spare_count = 1
        max_instances = 2
        on_demand_fallback = true
        on_demand_launch_template_id = "lt-od"
        launch_template_version = "3"
        "#,
    )
    .unwrap();
    let tier = &config.tiers[0];
    assert!(tier.on_demand_fallback);
    let on_demand = tier.runtime.on_demand.as_ref().unwrap();
    // Its own template at its own default version: "3" numbers the spot template's versions.
    assert_eq!(
        (on_demand.id.as_str(), on_demand.version.as_str()),
        ("lt-od", "$Default")
    );

    // A tier with a spot template of its own does not inherit the daemon-wide on-demand one,
    // which boots the daemon-wide user data.
    let pro = |rest: &str| {
        format!(
            "[[tier]]\nname = \"pro\"\ninstance_types = [\"t3.small\"]\nspare_count = 1\n\
             max_instances = 2\non_demand_fallback = true\n{rest}\n"
        )
    };
    let with_flat_on_demand = |toml: &str| {
        let file: Settings = toml::from_str(toml).unwrap();
        let mut settings = flat();
        settings.on_demand_launch_template_id = Some("lt-flat-od".into());
        settings.or(file).into_config()
    };
    let message = with_flat_on_demand(&pro("launch_template_id = \"lt-pro\""))
        .unwrap_err()
        .to_string();
    assert!(message.contains("`on_demand_fallback` needs"), "{message}");
    let config = with_flat_on_demand(&pro("")).unwrap();
    let on_demand = config.tiers[0].runtime.on_demand.as_ref().unwrap();
    assert_eq!(
        on_demand.id, "lt-flat-od",
        "a tier on the daemon-wide template inherits it"
    );
}

#[test]
fn bad_tables_stop_start_up_with_one_line_naming_the_key() {
    let table = |name: &str, rest: &str| {
        format!(
            "[[tier]]\nname = \"{name}\"\ninstance_types = [\"t3.small\"]\n\
             spare_count = 1\nmax_instances = 3\n{rest}\n"
        )
    };
    let cases = [
        (
            format!("{}{}", table("pro", ""), table("pro", "")),
            "invalid [[tier]] table 2 (\"pro\"): `name` is used by another tier",
        ),
        (
            table("pro", "slots_per_instance = 0"),
            "`slots_per_instance` = 0: from 1 to 20",
        ),
        (
            table("pro", "slots_per_instance = 21"),
            "`slots_per_instance` = 21: from 1 to 20",
        ),
        (
            "[[tier]]\nname = \"free\"\ninstance_types = [\"t3.large\"]\nspare_count = 9\n\
             max_instances = 2\nslots_per_instance = 4\n"
                .to_string(),
            "`spare_count` (9) exceeds `max_instances` × `slots_per_instance` (2 × 4)",
        ),
        (
            table("pro", "slots_per_instance = 4\ncontainer_port = 65534"),
            "`container_port` 65534 + `slots_per_instance` 4 - 1 is past port 65535",
        ),
        (
            "[[tier]]\nname = \"pro\"\ninstance_types = [\"t3.small\"]\nspare_count = 5\n\
             max_instances = 3\n"
                .to_string(),
            "invalid [[tier]] table 1 (\"pro\"): `spare_count` (5) exceeds `max_instances` (3)",
        ),
        (table("Pro!", ""), "`name` needs 1-32 characters"),
        (
            "[[tier]]\nname = \"pro\"\nspare_count = 1\nmax_instances = 3\n".to_string(),
            "`instance_types` is missing",
        ),
        (
            "[[tier]]\nname = \"pro\"\ninstance_types = []\nspare_count = 1\nmax_instances = 3\n"
                .to_string(),
            "`instance_types` names no instance type",
        ),
        (
            "[[tier]]\nname = \"pro\"\ninstance_types = [\"t3 small\"]\nspare_count = 1\n\
             max_instances = 3\n"
                .to_string(),
            "`instance_types` has \"t3 small\"",
        ),
        (
            "[[tier]]\nname = \"pro\"\ninstance_types = [\"t3.small\"]\nspare_count = 1\n"
                .to_string(),
            "`max_instances` is missing",
        ),
        (
            table("pro", "container_image = \"evil;rm -rf /\""),
            "`container_image` = \"evil;rm -rf /\": only letters, digits",
        ),
        (
            table("pro", "container_port = 0"),
            "`container_port` = \"0\"",
        ),
        (
            table("pro", "health_check_path = \"healthz\""),
            "`health_check_path` = \"healthz\": must start with /",
        ),
        (
            table("pro", "container_memory_mb = 8"),
            "`container_memory_mb` = \"8\": must be from 64",
        ),
        (
            table("pro", "container_cpus = 0.0"),
            "`container_cpus` = \"0\": must be a number of CPUs",
        ),
        (
            table("pro", "workspace_size_gib = 0"),
            "`workspace_size_gib` = \"0\"",
        ),
        (
            table("pro", "idle_sleep_after = \"soon\""),
            "`idle_sleep_after` = \"soon\"",
        ),
        (
            table("pro", "launch_template_id = \"template-1\""),
            "`launch_template_id` = \"template-1\": a launch template id starts with lt-",
        ),
    ];
    for (toml, expected) in cases {
        let message = refusal(&toml);
        assert!(message.contains(expected), "{toml}\n→ {message}");
        assert!(message.starts_with("invalid [[tier]] table"), "{message}");
    }
    // An unknown key is the file's error, naming the key.
    let message = refusal(&table("pro", "spares = 2"));
    assert!(message.contains("spares"), "{message}");
}

#[test]
fn a_pre_wired_tier_on_the_daemon_wide_template_keeps_its_responders_port() {
    let rest = "container_port = 9000";
    let toml = format!(
        "[[tier]]\nname = \"pro\"\ninstance_types = [\"t3.small\"]\nspare_count = 1\n\
         max_instances = 3\n{rest}\n"
    );
    let message = refusal(&toml);
    assert!(
        message.contains("`container_port` 9000") && message.contains("`launch_template_id`"),
        "{message}"
    );
    // Its own template (built for its port), or no pre-wiring, is fine.
    with_tiers(&format!("{toml}launch_template_id = \"lt-pro\"\n")).unwrap();
    let file: Settings = toml::from_str(&toml).unwrap();
    let mut settings = flat();
    settings.spotpool_prewired_spares = Some(false);
    settings.or(file).into_config().unwrap();
}

#[test]
fn the_documented_keys_are_the_tables_keys() {
    let every = TierSettings {
        name: Some("x".into()),
        instance_types: Some(vec![]),
        spare_count: Some(1),
        spare: Some("auto".into()),
        spare_min: Some(1),
        spare_max: Some(1),
        max_instances: Some(1),
        slots_per_instance: Some(1),
        launch_template_id: Some("lt-1".into()),
        launch_template_version: Some("1".into()),
        on_demand_fallback: Some(false),
        on_demand_launch_template_id: Some("lt-2".into()),
        container_image: Some("i".into()),
        container_port: Some(1),
        health_check_path: Some("/".into()),
        container_memory_mb: Some(64),
        container_cpus: Some(1.0),
        container_pids_limit: Some(16),
        workspace_size_gib: Some(1),
        idle_sleep_after: Some("off".into()),
        rebalance_moves: Some(false),
        placement: Some("ordered".into()),
    };
    let table = toml::Table::try_from(&every).unwrap();
    let mut keys: Vec<&str> = table.keys().map(String::as_str).collect();
    let mut documented = TIER_KEYS.to_vec();
    keys.sort_unstable();
    documented.sort_unstable();
    assert_eq!(keys, documented);
}

/// `spare = "auto"` with `spare_min` and `spare_max` instead of `spare_count`: the tier starts at
/// the minimum and carries its bounds; the keys refuse to mix.
#[test]
fn a_tier_may_keep_spares_that_follow_demand_within_bounds() {
    let config = with_tiers(
        r#"
        [[tier]]
        name = "auto"
        instance_types = ["t3.small"]
        spare = "auto"
        spare_min = 1
        spare_max = 8
        max_instances = 20
        "#,
    )
    .unwrap();
    let tier = &config.tiers[0];
    assert_eq!(tier.spare_count, 1);
    assert_eq!(
        tier.spare_auto,
        Some(crate::plan::SpareBounds { min: 1, max: 8 })
    );
    let table = |keys: &str| {
        format!(
            "[[tier]]\nname = \"auto\"\ninstance_types = [\"t3.small\"]\nmax_instances = 20\n{keys}\n"
        )
    };
    for (keys, why) in [
        ("spare = \"auto\"\nspare_max = 8", "needs `spare_min`"),
        ("spare = \"auto\"\nspare_min = 1", "needs `spare_max`"),
        (
            "spare = \"auto\"\nspare_min = 5\nspare_max = 2",
            "below `spare_min`",
        ),
        (
            "spare = \"auto\"\nspare_count = 2\nspare_min = 1\nspare_max = 2",
            "exclusive",
        ),
        (
            "spare = \"some\"\nspare_min = 1\nspare_max = 2",
            "only \"auto\"",
        ),
        (
            "spare_count = 2\nspare_min = 1",
            "go with `spare = \"auto\"`",
        ),
        (
            "spare = \"auto\"\nspare_min = 1\nspare_max = 30",
            "exceeds `max_instances`",
        ),
    ] {
        let error = refusal(&table(keys));
        assert!(error.contains(why), "{keys}: {error}");
    }
}
