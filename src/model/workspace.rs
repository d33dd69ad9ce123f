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

impl Workspace {
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
