//! A drain (`POST /v1/admin/drain`): on-call empties a tier, an instance type, a zone or a list
//! of instances. Matching spares are retired, matching users moved off a few at a time, and no
//! claim, move or launch lands on a match while the drain lasts (`reconcile::drains`).

use super::{InstanceId, Millis, UserId};

/// Which instances a drain empties: every field given must hold (an AND), and at least one is.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainSelector {
    /// Instances of this tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Instances of one of these types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_types: Vec<String>,
    /// Instances in one of these availability zones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// These instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_ids: Vec<String>,
    /// Instances launched from another launch template or version than their tier's current
    /// one, or last running another image (a rolling upgrade, ARCHITECTURE.md "Rolling
    /// upgrades").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outdated: bool,
}

/// What a drain needs to know of an instance.
#[derive(Debug, Clone, Copy)]
pub struct DrainCandidate<'a> {
    pub id: &'a InstanceId,
    pub tier: &'a str,
    pub instance_type: Option<&'a str>,
    pub zone: Option<&'a str>,
    pub launched_at: Millis,
    /// Whether it was launched from, or last ran, something its tier no longer runs
    /// ([`TierVersions::outdated`]).
    pub outdated: bool,
}

impl DrainSelector {
    /// Whether it names nothing (which would drain everything: refused).
    pub fn is_empty(&self) -> bool {
        self.tier.is_none()
            && self.instance_types.is_empty()
            && self.zones.is_empty()
            && self.instance_ids.is_empty()
            && !self.outdated
    }

    /// Whether it names instance types or zones: launches avoid those offerings while the drain
    /// lasts, so the instances it matches are all there ever are. Without them (a tier or a
    /// list of ids), only instances launched before the drain match: the fresh ones that
    /// replace them are what the drain is for.
    pub fn names_offerings(&self) -> bool {
        !self.instance_types.is_empty() || !self.zones.is_empty()
    }

    /// Whether the drain created at `since` empties `instance`. An instance whose type or zone
    /// is not known yet never matches a selector that names types or zones.
    pub fn matches(&self, instance: &DrainCandidate<'_>, since: Millis) -> bool {
        let listed = |list: &[String], value: Option<&str>| {
            list.is_empty() || value.is_some_and(|v| list.iter().any(|l| l == v))
        };
        self.tier.as_deref().is_none_or(|t| t == instance.tier)
            && listed(&self.instance_types, instance.instance_type)
            && listed(&self.zones, instance.zone)
            && listed(&self.instance_ids, Some(instance.id.0.as_str()))
            && (!self.outdated || instance.outdated)
            && (self.names_offerings() || instance.launched_at < since)
    }

    /// Whether launches of `instance_type` into `zone` for `tier` would make instances it
    /// matches.
    pub fn covers_offering(&self, tier: &str, instance_type: &str, zone: Option<&str>) -> bool {
        self.names_offerings()
            && self.tier.as_deref().is_none_or(|t| t == tier)
            && (self.instance_types.is_empty()
                || self.instance_types.iter().any(|t| t == instance_type))
            && (self.zones.is_empty() || zone.is_some_and(|z| self.zones.iter().any(|l| l == z)))
            && self.instance_ids.is_empty()
    }
}

/// What a tier runs now: an instance launched from anything else, or last running another image,
/// is `outdated` (a rolling upgrade's drain moves its users, ARCHITECTURE.md "Rolling upgrades").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierVersions {
    /// `<template id>:<version>` of the tier's launch templates (spot, and on-demand if any).
    pub launch_templates: Vec<String>,
    /// The references a probe or a start pulls of the tier's image: the configured one, and
    /// its pinned `name@digest` once pinned (a pull before the pin took the configured tag,
    /// and counts as current: else a pin landing during a rollout would move users twice).
    pub images: Vec<String>,
}

impl TierVersions {
    /// Whether an instance launched from `launch_template` that last pulled `image` runs
    /// something else. An unknown template (launched before spotpool recorded it) counts as
    /// outdated; no image yet means nothing pulled, and its first pull will be the current one.
    pub fn outdated(&self, launch_template: Option<&str>, image: Option<&str>) -> bool {
        let template_current =
            launch_template.is_some_and(|t| self.launch_templates.iter().any(|c| c == t));
        !template_current || image.is_some_and(|i| !self.images.iter().any(|c| c == i))
    }
}

/// Users a drain moves at once unless told otherwise (a rollout's too).
pub const DEFAULT_MAX_CONCURRENT_MOVES: u32 = 2;
/// Failed moves before a drain pauses unless told otherwise (a rollout's too).
pub const DEFAULT_MAX_FAILURES: u32 = 3;

/// Where a drain is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainState {
    /// Retiring spares and moving users.
    Active,
    /// Stopped after `max_failures` failed moves: nothing more is moved (claims and launches
    /// still avoid its instances) until it is cancelled.
    Paused,
    /// Nothing it matches is left.
    Done,
    /// On-call cancelled it.
    Cancelled,
}

super::string_enum!(DrainState {
    Active => "active",
    Paused => "paused",
    Done => "done",
    Cancelled => "cancelled",
});

impl DrainState {
    /// Whether it still keeps claims, moves and launches off its instances.
    pub fn holds(self) -> bool {
        matches!(self, DrainState::Active | DrainState::Paused)
    }
}

/// One drain and its progress (the `drains` table).
#[derive(Debug, Clone, PartialEq)]
pub struct Drain {
    pub id: i64,
    pub selector: DrainSelector,
    /// Users moving off its instances at once, at most.
    pub max_concurrent_moves: u32,
    /// Failed moves before it pauses.
    pub max_failures: u32,
    pub state: DrainState,
    /// Users moved off, and moves that failed (the user stays where it was).
    pub moved: u32,
    pub failed: u32,
    /// The moves it asked for that have not ended: (user, the instance it leaves).
    pub requested: Vec<(UserId, InstanceId)>,
    /// Users whose move failed: not asked again by this drain.
    pub failed_users: Vec<UserId>,
    pub created_by: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl Drain {
    /// A new `active` drain of `selector`, with nothing done yet (the store gives it its id).
    pub fn new(
        selector: DrainSelector,
        (max_concurrent_moves, max_failures): (u32, u32),
        created_by: &str,
        now: Millis,
    ) -> Drain {
        Drain {
            id: 0,
            selector,
            max_concurrent_moves,
            max_failures,
            state: DrainState::Active,
            moved: 0,
            failed: 0,
            requested: Vec::new(),
            failed_users: Vec::new(),
            created_by: created_by.into(),
            created_at: now,
            updated_at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate<'a>(id: &'a InstanceId, itype: &'a str, zone: &'a str) -> DrainCandidate<'a> {
        DrainCandidate {
            id,
            tier: "basic",
            instance_type: Some(itype),
            zone: Some(zone),
            launched_at: 100,
            outdated: false,
        }
    }

    #[test]
    fn an_outdated_drain_takes_what_runs_another_template_or_image() {
        let versions = TierVersions {
            launch_templates: vec!["lt-1:4".into(), "lt-od:1".into()],
            images: vec!["gw:2".into(), "gw@sha256:2".into()],
        };
        assert!(!versions.outdated(Some("lt-1:4"), Some("gw:2")));
        assert!(!versions.outdated(Some("lt-1:4"), Some("gw@sha256:2")));
        assert!(
            versions.outdated(Some("lt-1:4"), Some("gw@sha256:1")),
            "an older pin"
        );
        assert!(
            !versions.outdated(Some("lt-od:1"), None),
            "nothing pulled yet"
        );
        assert!(versions.outdated(Some("lt-1:3"), Some("gw:2")));
        assert!(versions.outdated(Some("lt-1:4"), Some("gw:1")));
        assert!(
            versions.outdated(None, Some("gw:2")),
            "launched before it was recorded"
        );
        let id = InstanceId("i-1".into());
        let current = candidate(&id, "t3.small", "zone-a");
        let old = DrainCandidate {
            outdated: true,
            ..current
        };
        let rollout = DrainSelector {
            tier: Some("basic".into()),
            outdated: true,
            ..DrainSelector::default()
        };
        assert!(rollout.matches(&old, 500));
        assert!(!rollout.matches(&current, 500));
        assert!(
            !rollout.matches(&old, 100),
            "launched with or after the drain"
        );
        assert!(!rollout.names_offerings());
        assert!(!rollout.covers_offering("basic", "t3.small", Some("zone-a")));
        assert!(
            !DrainSelector {
                outdated: true,
                ..DrainSelector::default()
            }
            .is_empty()
        );
    }

    #[test]
    fn every_named_field_must_hold() {
        let id = InstanceId("i-1".into());
        let small_a = candidate(&id, "t3.small", "zone-a");
        let by_type = DrainSelector {
            instance_types: vec!["t3.small".into()],
            ..DrainSelector::default()
        };
        assert!(
            by_type.matches(&small_a, 50),
            "types match whenever launched"
        );
        assert!(!by_type.matches(&candidate(&id, "t3a.small", "zone-a"), 500));
        let type_and_zone = DrainSelector {
            zones: vec!["zone-b".into()],
            ..by_type.clone()
        };
        assert!(!type_and_zone.matches(&small_a, 500));
        let other_tier = DrainSelector {
            tier: Some("pro".into()),
            ..by_type.clone()
        };
        assert!(!other_tier.matches(&small_a, 500));
        let unknown_type = DrainCandidate {
            instance_type: None,
            ..small_a
        };
        assert!(!by_type.matches(&unknown_type, 500));
        assert!(DrainSelector::default().is_empty());
        assert!(!by_type.is_empty());
    }

    #[test]
    fn a_tier_or_id_drain_takes_only_instances_older_than_itself() {
        let id = InstanceId("i-1".into());
        let instance = candidate(&id, "t3.small", "zone-a");
        let by_tier = DrainSelector {
            tier: Some("basic".into()),
            ..DrainSelector::default()
        };
        assert!(by_tier.matches(&instance, 500));
        assert!(
            !by_tier.matches(&instance, 100),
            "launched with or after the drain"
        );
        assert!(!by_tier.covers_offering("basic", "t3.small", Some("zone-a")));
        let by_ids = DrainSelector {
            instance_ids: vec!["i-1".into()],
            ..DrainSelector::default()
        };
        assert!(by_ids.matches(&instance, 500));
        assert!(!by_ids.matches(&candidate(&InstanceId("i-2".into()), "t3.small", "a"), 500));
    }

    #[test]
    fn launches_avoid_the_offerings_a_type_or_zone_drain_names() {
        let by_type = DrainSelector {
            tier: Some("basic".into()),
            instance_types: vec!["t3.small".into()],
            ..DrainSelector::default()
        };
        assert!(by_type.covers_offering("basic", "t3.small", Some("zone-a")));
        assert!(by_type.covers_offering("basic", "t3.small", None));
        assert!(!by_type.covers_offering("pro", "t3.small", Some("zone-a")));
        assert!(!by_type.covers_offering("basic", "t3a.small", Some("zone-a")));
        let by_zone = DrainSelector {
            zones: vec!["zone-a".into()],
            ..DrainSelector::default()
        };
        assert!(by_zone.covers_offering("basic", "t3a.small", Some("zone-a")));
        assert!(!by_zone.covers_offering("basic", "t3a.small", Some("zone-b")));
        assert!(!by_zone.covers_offering("basic", "t3a.small", None));
    }
}
