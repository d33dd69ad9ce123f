//! A user's workspace: one encrypted EBS volume in one availability zone, mounted at the
//! container's `/data`. It is created at the user's first claim, follows the user through moves,
//! sleep and wake (detached from one instance, attached to the next), and is deleted only when
//! the user is deleted.

use super::{InstanceId, SentCommand};

/// The user's workspace volume, as the store records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// None between recording the create and CreateVolume's answer; the token (and the
    /// volume's tags) find it again after a crash.
    pub volume_id: Option<String>,
    /// CreateVolume's idempotency token, recorded before the call.
    pub client_token: String,
    pub availability_zone: String,
    pub size_gib: u32,
    /// The instance the daemon attached it to (cleared once it is detached).
    pub attached_to: Option<InstanceId>,
    /// The stop-and-unmount command sent to `attached_to` before DetachVolume, so it is sent
    /// once per detach rather than every pass.
    pub stop_command: Option<SentCommand>,
    /// A copy to another zone, under way (the volume's zone has no capacity).
    pub relocation: Option<Relocation>,
}

/// The token of a workspace taken from a spare's blank (`Store::claim_spare`), until the claim
/// has kept it (tagged, and no longer deleted with the instance).
pub const BLANK_TOKEN_PREFIX: &str = "sp-blank-";
/// The token of a spare's blank once the claim has kept it.
pub const KEPT_TOKEN_PREFIX: &str = "sp-kept-";

impl Workspace {
    /// A spare's blank a claim took but has not kept yet: its volume may still go with the
    /// instance, and no container ever wrote to it, so if it is gone or was never tagged it can
    /// be forgotten (ARCHITECTURE.md, "Blank workspaces").
    pub fn is_unkept_blank(&self) -> bool {
        self.client_token.starts_with(BLANK_TOKEN_PREFIX)
    }

    /// A workspace about to be created in `zone`: only its token and place are known.
    pub fn planned(client_token: String, availability_zone: String, size_gib: u32) -> Workspace {
        Workspace {
            volume_id: None,
            client_token,
            availability_zone,
            size_gib,
            attached_to: None,
            stop_command: None,
            relocation: None,
        }
    }
}

/// What a workspace volume is doing, for the cost figures (`GET /v1/pool`, `/metrics`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum VolumeUse {
    /// Attached to the user's instance: the user is served (or being started).
    Attached,
    /// Between instances: a claim, a move or a recovery is under way.
    Detached,
    /// Kept while the user sleeps: storage is all the user costs.
    Asleep,
}

impl VolumeUse {
    pub const ALL: [VolumeUse; 3] = [VolumeUse::Attached, VolumeUse::Detached, VolumeUse::Asleep];

    pub fn as_str(self) -> &'static str {
        match self {
            VolumeUse::Attached => "attached",
            VolumeUse::Detached => "detached",
            VolumeUse::Asleep => "asleep",
        }
    }
}

/// Volumes and their GiB by use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct VolumeCount {
    pub volumes: u64,
    pub gib: u64,
}

/// Counts the workspaces that exist (a volume id is known) by use; every use is present.
/// `asleep` says whether the workspace's user is asleep.
pub fn count_volumes<'a>(
    workspaces: impl IntoIterator<Item = (&'a Workspace, bool)>,
) -> std::collections::BTreeMap<VolumeUse, VolumeCount> {
    let mut counts: std::collections::BTreeMap<VolumeUse, VolumeCount> = VolumeUse::ALL
        .into_iter()
        .map(|u| (u, VolumeCount::default()))
        .collect();
    for (workspace, asleep) in workspaces {
        if workspace.volume_id.is_none() {
            continue;
        }
        let state = if workspace.attached_to.is_some() {
            VolumeUse::Attached
        } else if asleep {
            VolumeUse::Asleep
        } else {
            VolumeUse::Detached
        };
        let entry = counts.entry(state).or_default();
        entry.volumes += 1;
        entry.gib += u64::from(workspace.size_gib);
        // A relocation's new volume exists next to the old one until the switch.
        if let Some(copy) = &workspace.relocation
            && copy.volume_id.is_some()
        {
            let entry = counts.entry(VolumeUse::Detached).or_default();
            entry.volumes += 1;
            entry.gib += u64::from(workspace.size_gib);
        }
    }
    counts
}

/// A workspace moving to another zone through a snapshot: snapshot the volume, create a volume
/// from it in `to_zone`, then switch to the new volume and delete the old one and the snapshot.
/// The old volume is deleted only once the new one exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relocation {
    pub to_zone: String,
    pub snapshot_id: Option<String>,
    /// The new volume's CreateVolume token, recorded before the call.
    pub client_token: String,
    pub volume_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(volume: Option<&str>, attached: Option<&str>, size_gib: u32) -> Workspace {
        let mut w = Workspace::planned("t".into(), "us-east-1a".into(), size_gib);
        w.volume_id = volume.map(String::from);
        w.attached_to = attached.map(|i| InstanceId(i.into()));
        w
    }

    #[test]
    fn volumes_are_counted_by_use_with_their_size_and_planned_ones_are_not() {
        let attached = workspace(Some("vol-1"), Some("i-1"), 8);
        let between = workspace(Some("vol-2"), None, 8);
        let sleeping = workspace(Some("vol-3"), None, 20);
        let planned = workspace(None, None, 8);
        let mut relocating = workspace(Some("vol-4"), None, 10);
        relocating.relocation = Some(Relocation {
            to_zone: "us-east-1b".into(),
            snapshot_id: Some("snap-1".into()),
            client_token: "t2".into(),
            volume_id: Some("vol-5".into()),
        });
        let counts = count_volumes([
            (&attached, false),
            (&between, false),
            (&sleeping, true),
            (&planned, false),
            (&relocating, true),
        ]);
        let count = |volumes, gib| VolumeCount { volumes, gib };
        assert_eq!(counts[&VolumeUse::Attached], count(1, 8));
        assert_eq!(counts[&VolumeUse::Detached], count(2, 18));
        assert_eq!(counts[&VolumeUse::Asleep], count(2, 30));
    }
}
