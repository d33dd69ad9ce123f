//! The tiers a running daemon serves, shared by the API and every term's reconciler, and their
//! reload on SIGHUP (docs/DEPLOY.md, "Rolling upgrades"). Here, not in `config`, which builds
//! the reconciler's settings (`config` → `reconcile`, never back).
//!
//! Owns: which changes of the `[[tier]]` tables a running daemon takes (images, launch
//! templates, sizes, instance types, limits, and the flat container settings they default to)
//! and which need a restart (the tiers' names and order, a slot count, a port or the health
//! check, which the routes already built were made with). Must not: apply part of a reload; a reload is taken whole or refused whole.

use crate::plan::TierPolicy;
use std::sync::{Arc, RwLock};

/// The configured tiers (before on-call's overrides), replaced whole by a reload.
#[derive(Debug, Clone)]
pub struct LiveTiers(Arc<RwLock<Arc<Vec<TierPolicy>>>>);

impl LiveTiers {
    pub fn new(tiers: Vec<TierPolicy>) -> LiveTiers {
        LiveTiers(Arc::new(RwLock::new(Arc::new(tiers))))
    }

    /// The tiers as of now.
    pub fn get(&self) -> Arc<Vec<TierPolicy>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Changes the tiers in place, unchecked: for the tests' worlds.
    #[cfg(any(test, feature = "fake"))]
    pub fn update(&self, change: impl FnOnce(&mut Vec<TierPolicy>)) {
        let mut live = self.0.write().unwrap_or_else(|e| e.into_inner());
        let mut tiers = live.to_vec();
        change(&mut tiers);
        *live = Arc::new(tiers);
    }

    /// Takes `reloaded` (the tables read again) if it changes only what a running daemon can
    /// change; returns one line per change (empty: nothing changed), or why it was refused.
    pub fn reload(&self, reloaded: Vec<TierPolicy>) -> Result<Vec<String>, String> {
        let mut live = self.0.write().unwrap_or_else(|e| e.into_inner());
        let changes = changes(&live, &reloaded)?;
        if !changes.is_empty() {
            *live = Arc::new(reloaded);
        }
        Ok(changes)
    }
}

/// What `new` changes of `old`, or why a running daemon cannot take it.
fn changes(old: &[TierPolicy], new: &[TierPolicy]) -> Result<Vec<String>, String> {
    let names = |tiers: &[TierPolicy]| tiers.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    if names(old) != names(new) {
        return Err(format!(
            "the tiers changed from [{}] to [{}]: adding, removing or reordering tiers needs a \
             restart",
            names(old).join(", "),
            names(new).join(", ")
        ));
    }
    let mut out = Vec::new();
    for (was, now) in old.iter().zip(new) {
        let (a, b) = (&was.runtime.container, &now.runtime.container);
        let fixed = [
            (
                "slots_per_instance",
                was.slots_per_instance.to_string(),
                now.slots_per_instance.to_string(),
            ),
            ("container_port", a.port.to_string(), b.port.to_string()),
            (
                "health_check_path",
                a.health_check.path.clone(),
                b.health_check.path.clone(),
            ),
            (
                "the health check (HEALTH_CHECK_*)",
                format!("{:?}", a.health_check),
                format!("{:?}", b.health_check),
            ),
        ];
        for (key, before, after) in fixed {
            if before != after {
                return Err(format!(
                    "tier {:?}: `{key}` changed ({before} → {after}); routes are built with it, \
                     so it needs a restart",
                    was.name
                ));
            }
        }
        let mut changed = Vec::new();
        if a.image != b.image {
            changed.push(format!("container_image {} → {}", a.image, b.image));
        }
        if was.runtime.launch != now.runtime.launch {
            changed.push(format!(
                "launch template {} → {}",
                was.runtime.launch.key(),
                now.runtime.launch.key()
            ));
        }
        if was.runtime.on_demand != now.runtime.on_demand {
            changed.push("on-demand launch template".into());
        }
        let spares = |t: &TierPolicy| match t.spare_auto {
            Some(bounds) => format!("auto ({}-{})", bounds.min, bounds.max),
            None => t.spare_count.to_string(),
        };
        if (spares(was), was.max_instances) != (spares(now), now.max_instances) {
            changed.push(format!(
                "spare {} → {}, max_instances {} → {}",
                spares(was),
                spares(now),
                was.max_instances,
                now.max_instances
            ));
        }
        if was.instance_types != now.instance_types {
            changed.push(format!(
                "instance_types → {}",
                now.instance_types.join(", ")
            ));
        }
        // The rest, with what is named above taken from `now`: any difference left is in them.
        let mut rest = was.clone();
        rest.runtime.container.image = b.image.clone();
        rest.runtime.launch = now.runtime.launch.clone();
        rest.runtime.on_demand = now.runtime.on_demand.clone();
        (rest.spare_count, rest.max_instances) = (now.spare_count, now.max_instances);
        rest.spare_auto = now.spare_auto;
        rest.instance_types = now.instance_types.clone();
        if rest != *now {
            changed.push("limits and settings".into());
        }
        if !changed.is_empty() {
            out.push(format!("tier {:?}: {}", was.name, changed.join("; ")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier(name: &str) -> TierPolicy {
        TierPolicy::example(name)
    }

    #[test]
    fn a_reload_takes_images_templates_and_sizes() {
        let live = LiveTiers::new(vec![tier("basic"), tier("pro")]);
        let mut reloaded = (*live.get()).clone();
        reloaded[0].runtime.container.image = "gw:2".into();
        reloaded[1].runtime.launch.version = "7".into();
        reloaded[1].spare_count = 5;
        let changes = live.reload(reloaded.clone()).unwrap();
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(changes[0].contains("container_image") && changes[0].contains("gw:2"));
        assert!(changes[1].contains(":7") && changes[1].contains("spare 1 → 5"));
        assert_eq!(*live.get(), reloaded);
        assert_eq!(live.reload(reloaded).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_reload_that_needs_a_restart_is_refused_whole() {
        let live = LiveTiers::new(vec![tier("basic"), tier("pro")]);
        let before = live.get();
        let mut port = (*before).clone();
        port[0].runtime.container.image = "gw:2".into();
        port[1].runtime.container.port = 9000;
        let why = live.reload(port).unwrap_err();
        assert!(
            why.contains("\"pro\"") && why.contains("container_port"),
            "{why}"
        );
        let renamed = vec![tier("basic"), tier("team")];
        let why = live.reload(renamed).unwrap_err();
        assert!(why.contains("needs a restart"), "{why}");
        assert_eq!(live.get(), before, "nothing of a refused reload is taken");
    }
}
