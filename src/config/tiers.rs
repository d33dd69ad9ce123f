//! The tiers: the user container and the pool the flat settings describe (one tier named
//! `default`, how every deployment before tiers was configured), or the `[[tier]]` tables of
//! the TOML file, each key defaulting to the flat setting of the same meaning.

use super::checks::{
    comma_list, duration, health_check, in_range, validate_health_check_path, validate_shell_safe,
};
use super::{ConfigError, DEFAULT_TIER, Preset, Settings, defaults, preset};
use crate::model::{LaunchTemplate, TierContainer, TierRuntime};
use crate::plan::TierPolicy;

/// One `[[tier]]` table as written. Only `name`, `instance_types`, `spare_count` and
/// `max_instances` are required; every other key defaults to the flat setting.
#[derive(Debug, Default, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TierSettings {
    pub name: Option<String>,
    pub instance_types: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spare_count: Option<u32>,
    /// `"auto"`: spares follow demand within `spare_min` and `spare_max` (instead of
    /// `spare_count`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spare: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spare_min: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spare_max: Option<u32>,
    pub max_instances: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots_per_instance: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launch_template_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launch_template_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_demand_fallback: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_demand_launch_template_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_memory_mb: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_cpus: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_pids_limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_size_gib: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_sleep_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebalance_moves: Option<bool>,
    /// `"cheapest"`: launches go to the offering of lowest expected cost; `"ordered"` (the
    /// default): the instance types in the order written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<String>,
}

/// The keys a `[[tier]]` table takes, in `--help` and the docs (a test holds it equal to
/// [`TierSettings`]' fields).
pub const TIER_KEYS: &[&str] = &[
    "name",
    "instance_types",
    "spare_count",
    "spare",
    "spare_min",
    "spare_max",
    "max_instances",
    "slots_per_instance",
    "launch_template_id",
    "launch_template_version",
    "on_demand_fallback",
    "on_demand_launch_template_id",
    "container_image",
    "container_port",
    "health_check_path",
    "container_memory_mb",
    "container_cpus",
    "container_pids_limit",
    "placement",
    "workspace_size_gib",
    "idle_sleep_after",
    "rebalance_moves",
];

/// The version a tier's own on-demand template is launched at.
const ON_DEMAND_VERSION: &str = "$Default";

/// The parts of the user container every tier shares.
pub(super) struct Common {
    pub preset: Preset,
    pub ready_path: Option<String>,
    pub required_secrets: Vec<String>,
    /// `CONTAINER_ARGS` as set; None takes the preset's, which name each tier's port.
    pub explicit_args: Option<Vec<String>>,
}

impl Settings {
    /// The daemon-wide parts of the user container, and the flat settings' runtime (the
    /// default of every tier's, and the runtime of a tier that is no longer configured).
    pub(super) fn runtime(
        &self,
        launch: LaunchTemplate,
        on_demand_id: Option<String>,
    ) -> Result<(Common, TierRuntime), ConfigError> {
        let image = match (&self.container_image, &self.ecr_repository_url) {
            (Some(image), _) if !image.trim().is_empty() => image.clone(),
            (_, Some(repo)) if !repo.trim().is_empty() => format!("{repo}:latest"),
            _ => {
                return Err(ConfigError::Missing {
                    env: "CONTAINER_IMAGE",
                    flag: "container-image",
                    what: "the user container image (or ECR_REPOSITORY_URL)",
                });
            }
        };
        validate_shell_safe("CONTAINER_IMAGE", &image)?;
        let preset = Preset::parse(self.container_preset.as_deref())?;
        let port = self.container_port.unwrap_or(preset.port());
        check_port("CONTAINER_PORT", port)?;
        let explicit_args = match &self.container_args {
            Some(raw) => Some(preset::parse_args(raw)?),
            None => None,
        };
        let health_check_path = self
            .health_check_path
            .clone()
            .unwrap_or_else(|| preset.health_path().into());
        validate_health_check_path(&health_check_path)?;
        let ready_path = match &self.container_ready_path {
            Some(path) if path.trim().is_empty() || path.trim() == "none" => None,
            Some(path) => Some(path.trim().to_string()),
            None => preset.ready_path().map(String::from),
        };
        if let Some(path) = &ready_path {
            validate_health_check_path(path).map_err(|error| match error {
                ConfigError::Invalid { value, why, .. } => ConfigError::Invalid {
                    env: "CONTAINER_READY_PATH",
                    value,
                    why,
                },
                other => other,
            })?;
        }
        let required_secrets = match &self.container_required_secrets {
            Some(raw) => preset::parse_required_secrets(raw)?,
            None => preset.required_secrets(),
        };
        let health_check = health_check(
            health_check_path,
            self.health_check_interval_seconds,
            self.health_check_timeout_seconds,
            self.health_check_healthy_threshold,
            self.health_check_unhealthy_threshold,
            self.health_check_codes.clone(),
        )?;
        let memory_mb = check_memory(
            self.container_memory_mb
                .unwrap_or(defaults::CONTAINER_MEMORY_MB),
        )?;
        let cpus = check_cpus(self.container_cpus.unwrap_or(defaults::CONTAINER_CPUS))?;
        let pids_limit = check_pids(
            self.container_pids_limit
                .unwrap_or(defaults::CONTAINER_PIDS_LIMIT),
        )?;
        let common = Common {
            preset,
            ready_path,
            required_secrets,
            explicit_args,
        };
        let runtime = TierRuntime {
            on_demand: on_demand_id.map(|id| LaunchTemplate {
                id,
                version: launch.version.clone(),
            }),
            launch,
            container: TierContainer {
                image,
                port,
                args: common.args(port),
                env: preset.env(memory_mb),
                health_check,
                memory_mb,
                cpus,
                pids_limit,
            },
        };
        Ok((common, runtime))
    }

    /// The tiers: the `[[tier]]` tables, or the one tier the flat settings describe.
    pub(super) fn tiers(
        &self,
        common: &Common,
        runtime: &TierRuntime,
    ) -> Result<Vec<TierPolicy>, ConfigError> {
        let flat = self.flat_tier(runtime)?;
        let Some(tables) = self.tier.as_ref().filter(|t| !t.is_empty()) else {
            return Ok(vec![flat]);
        };
        let prewired = self
            .spotpool_prewired_spares
            .unwrap_or(defaults::PREWIRED_SPARES);
        let mut tiers: Vec<TierPolicy> = Vec::with_capacity(tables.len());
        for (index, table) in tables.iter().enumerate() {
            let tier = from_table(table, &flat, common, prewired)
                .map_err(|why| invalid(index, table, why))?;
            if tiers.iter().any(|t| t.name == tier.name) {
                return Err(invalid(
                    index,
                    table,
                    "`name` is used by another tier".into(),
                ));
            }
            tiers.push(tier);
        }
        Ok(tiers)
    }

    /// The tier the flat settings describe.
    fn flat_tier(&self, runtime: &TierRuntime) -> Result<TierPolicy, ConfigError> {
        let instance_types = comma_list(
            self.user_instance_type
                .as_deref()
                .unwrap_or(defaults::USER_INSTANCE_TYPE),
        );
        if instance_types.is_empty() {
            return Err(ConfigError::Invalid {
                env: "USER_INSTANCE_TYPE",
                value: String::new(),
                why: "name at least one instance type".into(),
            });
        }
        let spare_count = self.pool_spare_count.unwrap_or(defaults::POOL_SPARE_COUNT);
        let max_instances = self
            .pool_max_instances
            .unwrap_or(defaults::POOL_MAX_INSTANCES);
        if max_instances < spare_count {
            return Err(ConfigError::Invalid {
                env: "POOL_MAX_INSTANCES",
                value: max_instances.to_string(),
                why: format!("must be at least POOL_SPARE_COUNT ({spare_count})"),
            });
        }
        let on_demand_fallback = self
            .spotpool_on_demand_fallback
            .unwrap_or(defaults::ON_DEMAND_FALLBACK);
        if on_demand_fallback && runtime.on_demand.is_none() {
            return Err(ConfigError::Missing {
                env: "ON_DEMAND_LAUNCH_TEMPLATE_ID",
                flag: "on-demand-launch-template-id",
                what: "the launch template for on-demand fallback (SPOTPOOL_ON_DEMAND_FALLBACK is true)",
            });
        }
        Ok(TierPolicy {
            name: DEFAULT_TIER.into(),
            spare_count,
            spare_auto: None,
            max_instances,
            slots_per_instance: 1,
            instance_types,
            placement: crate::plan::Placement::Ordered,
            on_demand_fallback,
            rebalance_moves: self
                .spotpool_rebalance_moves
                .unwrap_or(defaults::REBALANCE_MOVES),
            workspace_size_gib: check_workspace_size(
                self.spotpool_workspace_size_gib
                    .unwrap_or(defaults::WORKSPACE_SIZE_GIB),
            )?,
            idle_sleep_after: idle_sleep_after(
                self.spotpool_idle_sleep_after
                    .as_deref()
                    .unwrap_or(defaults::IDLE_SLEEP_AFTER),
            )?,
            runtime: runtime.clone(),
        })
    }
}

impl Common {
    /// The container's arguments when it listens on `port`.
    fn args(&self, port: u16) -> Vec<String> {
        self.explicit_args
            .clone()
            .unwrap_or_else(|| self.preset.args(port))
    }
}

fn invalid(index: usize, table: &TierSettings, why: String) -> ConfigError {
    ConfigError::Tier {
        index: index + 1,
        name: table.name.clone().unwrap_or_default(),
        why,
    }
}

/// A flat setting's check applied to a table's key: the same rule, the key named.
fn keyed<T>(key: &str, checked: Result<T, ConfigError>) -> Result<T, String> {
    checked.map_err(|error| match error {
        ConfigError::Invalid { value, why, .. } => format!("`{key}` = {value:?}: {why}"),
        other => format!("`{key}`: {other}"),
    })
}

/// One table over the flat tier; the error names the key.
fn from_table(
    table: &TierSettings,
    flat: &TierPolicy,
    common: &Common,
    prewired: bool,
) -> Result<TierPolicy, String> {
    let name = table.name.clone().unwrap_or_default();
    let name_ok = (1..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !name_ok {
        return Err(
            "`name` needs 1-32 characters of a-z, 0-9 and - (it is kept in every user's row \
             and tags every instance)"
                .into(),
        );
    }
    let instance_types = table
        .instance_types
        .clone()
        .ok_or("`instance_types` is missing: a list such as [\"t3.small\", \"t3a.small\"]")?;
    if instance_types.is_empty() {
        return Err("`instance_types` names no instance type".into());
    }
    if let Some(bad) = instance_types.iter().find(|t| !instance_type_ok(t)) {
        return Err(format!(
            "`instance_types` has {bad:?}, not an instance type such as \"t3.small\""
        ));
    }
    let (spare_count, spare_auto) = spares_of(table)?;
    let placement = match table.placement.as_deref() {
        None => crate::plan::Placement::Ordered,
        Some(raw) => crate::plan::Placement::parse(raw).ok_or(format!(
            "`placement` is {raw:?}: \"cheapest\" or \"ordered\""
        ))?,
    };
    let max_instances = table.max_instances.ok_or("`max_instances` is missing")?;
    let most_spares = spare_auto.map_or(spare_count, |bounds| bounds.max);
    let key = if spare_auto.is_some() {
        "spare_max"
    } else {
        "spare_count"
    };
    let slots_per_instance = slots_of(table, (key, most_spares), max_instances)?;
    let runtime = runtime_of(table, &flat.runtime, common)?;
    let on_demand_fallback = table.on_demand_fallback.unwrap_or(flat.on_demand_fallback);
    if on_demand_fallback && runtime.on_demand.is_none() {
        return Err(
            "`on_demand_fallback` needs `on_demand_launch_template_id` (or, for a tier on the \
             daemon-wide `launch_template_id`, ON_DEMAND_LAUNCH_TEMPLATE_ID): RunInstances \
             cannot remove a template's spot options"
                .into(),
        );
    }
    let container = &runtime.container;
    if u32::from(container.port) + slots_per_instance - 1 > 65_535 {
        return Err(format!(
            "`container_port` {} + `slots_per_instance` {slots_per_instance} - 1 is past port 65535 \
             (each slot's user is reached at the port plus its slot)",
            container.port
        ));
    }
    let responder = &flat.runtime.container;
    if prewired
        && runtime.launch.id == flat.runtime.launch.id
        && (container.port != responder.port
            || container.health_check.path != responder.health_check.path)
    {
        return Err(format!(
            "`container_port` {} and `health_check_path` {:?} differ from CONTAINER_PORT {} and \
             HEALTH_CHECK_PATH {:?}, yet the tier launches from the daemon-wide template, whose \
             warm responder answers only those: its pre-wired spares would never pass their \
             health check. Give the tier its own `launch_template_id`",
            container.port,
            container.health_check.path,
            responder.port,
            responder.health_check.path
        ));
    }
    Ok(TierPolicy {
        name,
        spare_count,
        spare_auto,
        max_instances,
        slots_per_instance,
        instance_types,
        placement,
        on_demand_fallback,
        rebalance_moves: table.rebalance_moves.unwrap_or(flat.rebalance_moves),
        workspace_size_gib: match table.workspace_size_gib {
            Some(size) => keyed("workspace_size_gib", check_workspace_size(size))?,
            None => flat.workspace_size_gib,
        },
        idle_sleep_after: match &table.idle_sleep_after {
            Some(raw) => keyed("idle_sleep_after", idle_sleep_after(raw))?,
            None => flat.idle_sleep_after,
        },
        runtime,
    })
}

/// A table's spares: a fixed `spare_count`, or `spare = "auto"` between `spare_min` and
/// `spare_max` (ARCHITECTURE.md, "Spares that follow demand"), starting at the minimum.
fn spares_of(table: &TierSettings) -> Result<(u32, Option<crate::plan::SpareBounds>), String> {
    match table.spare.as_deref() {
        None if table.spare_min.is_some() || table.spare_max.is_some() => {
            Err("`spare_min` and `spare_max` go with `spare = \"auto\"`".into())
        }
        None => Ok((
            table.spare_count.ok_or(
                "`spare_count` is missing (or `spare = \"auto\"` with `spare_min` and `spare_max`)",
            )?,
            None,
        )),
        Some("auto") => {
            if table.spare_count.is_some() {
                return Err(
                    "`spare_count` and `spare = \"auto\"` are exclusive: a fixed count, or one \
                     that follows demand"
                        .into(),
                );
            }
            let min = table
                .spare_min
                .ok_or("`spare = \"auto\"` needs `spare_min` (the fewest spares kept)")?;
            let max = table
                .spare_max
                .ok_or("`spare = \"auto\"` needs `spare_max` (the most spares kept)")?;
            if max < min {
                return Err(format!("`spare_max` ({max}) is below `spare_min` ({min})"));
            }
            Ok((min, Some(crate::plan::SpareBounds { min, max })))
        }
        Some(other) => Err(format!(
            "`spare` = {other:?}: only \"auto\" (a fixed count is `spare_count`)"
        )),
    }
}

/// A table's runtime: the flat one with the table's keys applied.
/// A table's `slots_per_instance` (1 to [`MAX_SLOTS`](crate::instance_scripts::MAX_SLOTS)),
/// with its spare count checked against what the tier can hold: a dedicated tier's spares are
/// instances, a shared tier's free slots.
fn slots_of(
    table: &TierSettings,
    (key, spare_count): (&str, u32),
    max_instances: u32,
) -> Result<u32, String> {
    let slots_per_instance = table.slots_per_instance.unwrap_or(1);
    let max_slots = crate::instance_scripts::MAX_SLOTS;
    if !(1..=max_slots).contains(&slots_per_instance) {
        return Err(format!(
            "`slots_per_instance` = {slots_per_instance}: from 1 to {max_slots} (each user's \
             workspace is a volume of its own, attached at a device name of its slot's)"
        ));
    }
    // A shared tier's spare count is in slots (free places for users).
    if slots_per_instance == 1 && spare_count > max_instances {
        return Err(format!(
            "`{key}` ({spare_count}) exceeds `max_instances` ({max_instances})"
        ));
    }
    if spare_count > max_instances.saturating_mul(slots_per_instance) {
        return Err(format!(
            "`{key}` ({spare_count}) exceeds `max_instances` × `slots_per_instance` \
             ({max_instances} × {slots_per_instance}): a shared tier's spares are free slots"
        ));
    }
    Ok(slots_per_instance)
}

fn runtime_of(
    table: &TierSettings,
    flat: &TierRuntime,
    common: &Common,
) -> Result<TierRuntime, String> {
    let mut runtime = flat.clone();
    let template_id = |key: &str, id: &String| -> Result<String, String> {
        let id = id.trim();
        keyed(key, validate_shell_safe("LAUNCH_TEMPLATE_ID", id))?;
        if !id.starts_with("lt-") {
            return Err(format!(
                "`{key}` = {id:?}: a launch template id starts with lt-"
            ));
        }
        Ok(id.to_string())
    };
    if let Some(id) = &table.launch_template_id {
        runtime.launch.id = template_id("launch_template_id", id)?;
    }
    if let Some(version) = &table.launch_template_version {
        keyed(
            "launch_template_version",
            validate_shell_safe("LAUNCH_TEMPLATE_VERSION", version),
        )?;
        runtime.launch.version = version.clone();
    }
    if let Some(id) = &table.on_demand_launch_template_id {
        // A template of the tier's own: launched at its default version (the tier's
        // `launch_template_version` numbers the spot template's versions, not this one's).
        runtime.on_demand = Some(LaunchTemplate {
            id: template_id("on_demand_launch_template_id", id)?,
            version: ON_DEMAND_VERSION.into(),
        });
    } else if table.launch_template_id.is_some() {
        // The daemon-wide on-demand template boots the daemon-wide user data, not what the
        // tier's own template boots: the tier launches no on-demand without one of its own.
        runtime.on_demand = None;
    }
    let container = &mut runtime.container;
    if let Some(image) = &table.container_image {
        keyed(
            "container_image",
            validate_shell_safe("CONTAINER_IMAGE", image),
        )?;
        container.image = image.clone();
    }
    if let Some(port) = table.container_port {
        keyed("container_port", check_port("CONTAINER_PORT", port))?;
        container.port = port;
        container.args = common.args(port);
    }
    if let Some(path) = &table.health_check_path {
        keyed("health_check_path", validate_health_check_path(path))?;
        container.health_check.path = path.clone();
    }
    if let Some(memory_mb) = table.container_memory_mb {
        container.memory_mb = keyed("container_memory_mb", check_memory(memory_mb))?;
        container.env = common.preset.env(memory_mb);
    }
    if let Some(cpus) = table.container_cpus {
        container.cpus = keyed("container_cpus", check_cpus(cpus))?;
    }
    if let Some(pids) = table.container_pids_limit {
        container.pids_limit = keyed("container_pids_limit", check_pids(pids))?;
    }
    Ok(runtime)
}

/// An instance type's name: `family.size` of letters, digits and dashes.
fn instance_type_ok(name: &str) -> bool {
    name.split_once('.').is_some_and(|(family, size)| {
        !family.is_empty()
            && !size.is_empty()
            && name.len() <= 32
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
    })
}

fn check_port(env: &'static str, port: u16) -> Result<u16, ConfigError> {
    if port == 0 {
        return Err(ConfigError::Invalid {
            env,
            value: "0".into(),
            why: "must be a port from 1 to 65535".into(),
        });
    }
    Ok(port)
}

fn check_memory(memory_mb: u32) -> Result<u32, ConfigError> {
    in_range(
        "CONTAINER_MEMORY_MB",
        memory_mb,
        64..=1_048_576,
        "must be from 64 to 1048576 (MiB)",
    )
}

fn check_cpus(cpus: f64) -> Result<f64, ConfigError> {
    // NaN fails both comparisons, so it is refused too.
    if !(0.01..=256.0).contains(&cpus) {
        return Err(ConfigError::Invalid {
            env: "CONTAINER_CPUS",
            value: cpus.to_string(),
            why: "must be a number of CPUs from 0.01 to 256, e.g. 1.0 or 0.5".into(),
        });
    }
    Ok(cpus)
}

fn check_pids(pids: u32) -> Result<u32, ConfigError> {
    in_range(
        "CONTAINER_PIDS_LIMIT",
        pids,
        16..=1_048_576,
        "must be from 16 to 1048576",
    )
}

fn check_workspace_size(size_gib: u32) -> Result<u32, ConfigError> {
    in_range(
        "SPOTPOOL_WORKSPACE_SIZE_GIB",
        size_gib,
        1..=16_384,
        "must be from 1 to 16384 (GiB)",
    )
}

/// A duration, or `off` (never).
fn idle_sleep_after(raw: &str) -> Result<Option<crate::model::Millis>, ConfigError> {
    match raw.trim() {
        "off" | "" => Ok(None),
        raw => Ok(Some(
            duration("SPOTPOOL_IDLE_SLEEP_AFTER", &Some(raw.to_string()), "")?.as_millis() as i64,
        )),
    }
}

#[cfg(test)]
mod tests;
