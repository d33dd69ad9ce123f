//! A user's workspace volume, on the reconciler's side: created in the zone of the user's first
//! instance, attached before the container starts, stopped and detached cleanly before the user
//! leaves an instance, copied to another zone when its zone has no capacity, and deleted only
//! with the user.
//!
//! Every function here is level-triggered: it looks at the volume as EBS reports it now, takes
//! the next step, records what it did in the user's row (the CreateVolume token before the call,
//! the volume id after; the stop command; the attachment) and answers `Waiting` while AWS works.
//! A crash anywhere therefore resumes from what EBS and the row say; a token or the volume's
//! `spotpool:workspace` tag finds a volume whose CreateVolume answer was lost, and the
//! relocation's token, which tags its snapshot (`spotpool:relocation`), finds a snapshot whose
//! CreateSnapshot answer was lost (CreateSnapshot takes no ClientToken).
//!
//! Must not: delete a volume that holds a user's data except on the user's release (a
//! relocation deletes the old volume only once the copy exists), detach a mounted file system
//! (the stop command unmounts it first; if it cannot, the instance is retired, which unmounts
//! it), or attach a volume to an instance of another zone.

use super::{Reconciler, StepError, fatal, one_tag};
use crate::cloud::{
    AttachmentState, CloudErrorKind, CloudVolume, CommandStatus, SnapshotState, Tags,
    VolumeRequest, VolumeState, tags,
};
use crate::instance_scripts::{self, WORKSPACE_DEVICE_NAME};
use crate::model::{InstanceId, InstanceStatus, Millis, Relocation, SentCommand, Workspace};
use crate::store::UserRecord;

/// How long a detach may take before it is forced (EBS normally needs seconds; a stuck one
/// usually means an instance that will never release it).
const FORCE_DETACH_AFTER: Millis = 5 * 60_000;
/// How long the stop-and-unmount command may run (20 s container grace, 10 s of unmount
/// retries, and the agent's pick-up).
const STOP_COMMAND_TIMEOUT_SECONDS: u32 = 120;
/// A volume just created may be missing from DescribeVolumes for a moment (eventual
/// consistency); after this long, a recorded volume that EBS does not know is gone.
const VISIBILITY_GRACE: Millis = 60_000;

/// How far a workspace step got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Progress {
    Done,
    Waiting,
    /// The stop command failed (the file system stayed busy, say): the instance must be retired,
    /// which unmounts everything; the volume is free once EC2 has terminated it.
    RetireFirst,
}

impl Reconciler {
    /// The user's workspace exists (created in `instance`'s zone at the user's first claim) and
    /// is attached to `instance`.
    pub(super) async fn attach_workspace(
        &self,
        user: &mut UserRecord,
        instance: &InstanceId,
        now: Millis,
    ) -> Result<Progress, StepError> {
        let zone = self.instance_zone(instance).await?;
        if user.workspace.is_none() {
            let size = self.workspace_size(&user.tier);
            let token = workspace_token(user.user_id.as_str(), now);
            user.workspace = Some(Workspace::planned(token, zone.clone(), size));
            if !self.save(user, now).await? {
                return Ok(Progress::Waiting);
            }
        }
        let Some(volume_id) = self.ensure_volume(user, now).await? else {
            return Ok(Progress::Waiting);
        };
        if self.forget_unkept_blank(user, now).await? {
            return Ok(Progress::Waiting);
        }
        let Some(volume) = self.volume_or_grace(user, &volume_id, now).await? else {
            return Ok(Progress::Waiting);
        };
        match (volume.state, &volume.attachment) {
            (VolumeState::Creating, _) => Ok(Progress::Waiting),
            (VolumeState::Available, _) => {
                if volume.availability_zone != zone {
                    return Err(fatal(
                        "AttachVolume",
                        "ZoneMismatch",
                        format!(
                            "workspace {volume_id} is in {}, the instance {instance} in {zone}",
                            volume.availability_zone
                        ),
                    ));
                }
                // Each slot of a shared instance attaches at a device name of its own.
                let device = instance_scripts::workspace_device_name(user.slot_on(instance))
                    .unwrap_or_else(|| WORKSPACE_DEVICE_NAME.into());
                self.inner
                    .cloud
                    .attach_volume(&volume_id, instance, &device)
                    .await?;
                if let Some(workspace) = &mut user.workspace {
                    workspace.attached_to = Some(instance.clone());
                    workspace.stop_command = None;
                }
                if !self.save(user, now).await? {
                    return Ok(Progress::Waiting);
                }
                // Attached already (an emulator answers at once): go on in this pass.
                let attached = self
                    .inner
                    .cloud
                    .describe_volume(&volume_id)
                    .await?
                    .and_then(|v| v.attachment)
                    .is_some_and(|a| {
                        &a.instance == instance && a.state == AttachmentState::Attached
                    });
                Ok(if attached {
                    Progress::Done
                } else {
                    Progress::Waiting
                })
            }
            (VolumeState::InUse, Some(attachment)) if &attachment.instance == instance => {
                match attachment.state {
                    AttachmentState::Attached => {
                        if let Some(workspace) = &mut user.workspace
                            && workspace.attached_to.as_ref() != Some(instance)
                        {
                            workspace.attached_to = Some(instance.clone());
                            self.save(user, now).await?;
                        }
                        Ok(Progress::Done)
                    }
                    _ => Ok(Progress::Waiting),
                }
            }
            // Still held by an instance the user left (lost, stopped, or a move's old one):
            // free it from there first.
            (VolumeState::InUse, Some(attachment)) => {
                let holder = attachment.instance.clone();
                if self.free_workspace(user, &holder, now).await? == Progress::RetireFirst {
                    self.retire_first(user, &holder, now).await?;
                }
                Ok(Progress::Waiting)
            }
            (VolumeState::InUse, None) => Ok(Progress::Waiting),
            (VolumeState::Deleting | VolumeState::Error, _) => Err(fatal(
                "AttachVolume",
                "WorkspaceUnusable",
                format!("workspace {volume_id} is {:?}", volume.state),
            )),
        }
    }

    /// The user's workspace is no longer attached to `instance`: the container there is stopped
    /// and the file system unmounted (when the instance may still run it), then the volume is
    /// detached (forced only after [`FORCE_DETACH_AFTER`]).
    pub(super) async fn free_workspace(
        &self,
        user: &mut UserRecord,
        instance: &InstanceId,
        now: Millis,
    ) -> Result<Progress, StepError> {
        let Some(volume_id) = self.ensure_volume_found(user, now).await? else {
            return Ok(Progress::Done);
        };
        if self.forget_unkept_blank(user, now).await? {
            return Ok(Progress::Done);
        }
        let Some(volume) = self.inner.cloud.describe_volume(&volume_id).await? else {
            return Ok(Progress::Done);
        };
        let attached_here = volume
            .attachment
            .as_ref()
            .is_some_and(|a| &a.instance == instance);
        if !attached_here {
            if let Some(workspace) = &mut user.workspace
                && (workspace.attached_to.is_some() || workspace.stop_command.is_some())
                && volume.attachment.is_none()
            {
                workspace.attached_to = None;
                workspace.stop_command = None;
                self.save(user, now).await?;
            }
            return Ok(Progress::Done);
        }
        if volume
            .attachment
            .as_ref()
            .is_some_and(|a| a.state == AttachmentState::Detaching)
        {
            return self.detach(user, &volume_id, instance, true, now).await;
        }
        match self.stop_container(user, &volume_id, instance, now).await? {
            Progress::Done => self.detach(user, &volume_id, instance, false, now).await,
            other => Ok(other),
        }
    }

    /// A spare's blank the user's claim took but never kept ("Blank workspaces"): if it is gone
    /// (it went with its instance) or was never tagged as the user's (so it still goes with its
    /// instance, and the pool's permissions do not let the daemon detach it), no container ever
    /// wrote to it, and the row forgets it: the next claim takes or makes another. True when
    /// it did.
    async fn forget_unkept_blank(
        &self,
        user: &mut UserRecord,
        now: Millis,
    ) -> Result<bool, StepError> {
        let Some(workspace) = user.workspace.as_ref().filter(|w| w.is_unkept_blank()) else {
            return Ok(false);
        };
        let Some(volume_id) = workspace.volume_id.clone() else {
            return Ok(false);
        };
        let volume = self.inner.cloud.describe_volume(&volume_id).await?;
        if volume.is_some_and(|v| v.tags.contains_key(tags::WORKSPACE)) {
            return Ok(false);
        }
        tracing::info!(user = %user.user_id, volume = %volume_id, "forgetting a blank workspace the claim never kept");
        user.workspace = None;
        self.save(user, now).await?;
        Ok(true)
    }

    /// Deletes the user's workspace (and a relocation's copy and snapshot): the user was
    /// released. The volume must be detached first.
    pub(super) async fn delete_workspace(
        &self,
        user: &mut UserRecord,
        now: Millis,
    ) -> Result<Progress, StepError> {
        let cloud = &self.inner.cloud;
        let Some(volume_id) = self.ensure_volume_found(user, now).await? else {
            return Ok(Progress::Done);
        };
        if let Some(volume) = cloud.describe_volume(&volume_id).await?
            && volume.attachment.is_some()
        {
            return Ok(Progress::Waiting);
        }
        if let Some(relocation) = user.workspace.as_ref().and_then(|w| w.relocation.clone()) {
            if let Some(copy) = &relocation.volume_id {
                cloud.delete_volume(copy).await?;
            }
            // The recorded snapshot, or one whose CreateSnapshot answer was lost.
            let mut snapshots = self.relocation_snapshots(user, &relocation).await?;
            snapshots.extend(relocation.snapshot_id.clone());
            for snapshot in snapshots {
                cloud.delete_snapshot(&snapshot).await?;
            }
        }
        match cloud.delete_volume(&volume_id).await {
            Ok(()) => Ok(Progress::Done),
            // Still attached (a detach EBS has not finished): next pass.
            Err(error) if error.kind == CloudErrorKind::Conflict => Ok(Progress::Waiting),
            Err(error) => Err(error.into()),
        }
    }

    /// Starts copying a waiting user's workspace to `to_zone` (its zone has no capacity).
    pub(super) async fn begin_relocation(
        &self,
        user_id: &crate::model::UserId,
        to_zone: &str,
    ) -> Result<(), StepError> {
        let Some(mut user) = self.inner.store.get_user(user_id).await? else {
            return Ok(());
        };
        let now = self.now();
        let Some(workspace) = &mut user.workspace else {
            return Ok(());
        };
        if workspace.relocation.is_some() || workspace.availability_zone == to_zone {
            return Ok(());
        }
        workspace.relocation = Some(Relocation {
            to_zone: to_zone.to_string(),
            snapshot_id: None,
            client_token: workspace_token(user.user_id.as_str(), now),
            volume_id: None,
        });
        let from = workspace.availability_zone.clone();
        if self.save(&mut user, now).await? {
            let event = crate::model::Event::WorkspaceRelocating {
                from,
                to: to_zone.to_string(),
            };
            self.journal(now, event, Some(user_id), None).await?;
        }
        Ok(())
    }

    /// The next step of a workspace's copy to another zone: snapshot, wait, create the copy from
    /// it there, wait, then delete the snapshot and the old volume and switch to the copy.
    pub(super) async fn advance_relocation(
        &self,
        user_id: &crate::model::UserId,
    ) -> Result<(), StepError> {
        let cloud = &self.inner.cloud;
        let Some(mut user) = self.inner.store.get_user(user_id).await? else {
            return Ok(());
        };
        let now = self.now();
        let Some(workspace) = user.workspace.clone() else {
            return Ok(());
        };
        let (Some(mut relocation), Some(old)) = (workspace.relocation.clone(), workspace.volume_id)
        else {
            return Ok(());
        };
        // Once the copy is recorded, only finishing is left, whatever a crash already did of it
        // (the snapshot or the old volume may be gone).
        if let Some(copy) = relocation.volume_id.clone() {
            return match cloud.describe_volume(&copy).await? {
                Some(volume) if volume.state == VolumeState::Available => {
                    self.finish_relocation(&mut user, relocation, &old, copy, now)
                        .await
                }
                _ => Ok(()),
            };
        }
        let snapshot = match &relocation.snapshot_id {
            Some(snapshot) => snapshot.clone(),
            None => {
                // CreateSnapshot takes no ClientToken: the relocation (recorded before the call)
                // tags its snapshot with its own token, and a snapshot carrying that tag is
                // adopted (a CreateSnapshot whose answer was lost) instead of taking another.
                let found = self.relocation_snapshots(&user, &relocation).await?;
                relocation.snapshot_id = Some(match found.into_iter().next() {
                    Some(snapshot) => snapshot,
                    None => {
                        let mut snapshot_tags = self.workspace_tags(&user);
                        snapshot_tags.extend(one_tag(tags::RELOCATION, &relocation.client_token));
                        cloud.create_snapshot(&old, &snapshot_tags).await?
                    }
                });
                return self.set_relocation(&mut user, Some(relocation), now).await;
            }
        };
        match cloud.snapshot_state(&snapshot).await? {
            Some(SnapshotState::Completed) => {}
            Some(SnapshotState::Pending) => return Ok(()),
            // A failed snapshot, or one deleted behind our back: give the copy up; the plan
            // tries again (a new snapshot) while the zone still has no capacity.
            Some(SnapshotState::Error) | None => {
                cloud.delete_snapshot(&snapshot).await?;
                return self.set_relocation(&mut user, None, now).await;
            }
        }
        let request = VolumeRequest {
            availability_zone: relocation.to_zone.clone(),
            size_gib: workspace.size_gib,
            kms_key_id: self.inner.config.workspace_kms_key_id.clone(),
            snapshot_id: Some(snapshot),
            client_token: relocation.client_token.clone(),
            tags: self.workspace_tags(&user),
        };
        relocation.volume_id = Some(cloud.create_volume(&request).await?);
        self.set_relocation(&mut user, Some(relocation), now).await
    }

    /// The copy exists: now, and only now, the snapshot (and any twin a lost answer left, since
    /// DescribeSnapshots may lag a CreateSnapshot) and the old volume go, and the workspace
    /// switches to the copy. Each delete tolerates what is already gone, so a crash between
    /// them and the switch only repeats them.
    async fn finish_relocation(
        &self,
        user: &mut UserRecord,
        relocation: Relocation,
        old: &str,
        copy: String,
        now: Millis,
    ) -> Result<(), StepError> {
        let cloud = &self.inner.cloud;
        let mut snapshots = self.relocation_snapshots(user, &relocation).await?;
        snapshots.extend(relocation.snapshot_id.clone());
        snapshots.sort();
        snapshots.dedup();
        for snapshot in snapshots {
            cloud.delete_snapshot(&snapshot).await?;
        }
        cloud.delete_volume(old).await?;
        if let Some(workspace) = &mut user.workspace {
            workspace.volume_id = Some(copy);
            workspace.availability_zone = relocation.to_zone.clone();
            workspace.client_token = relocation.client_token.clone();
            workspace.attached_to = None;
            workspace.stop_command = None;
            workspace.relocation = None;
        }
        if self.save(user, now).await? {
            let event = crate::model::Event::WorkspaceRelocated {
                to: relocation.to_zone,
            };
            self.journal(now, event, Some(&user.user_id), None).await?;
        }
        Ok(())
    }

    /// The snapshots tagged with this relocation's token.
    async fn relocation_snapshots(
        &self,
        user: &UserRecord,
        relocation: &Relocation,
    ) -> Result<Vec<String>, StepError> {
        let listed = self
            .inner
            .cloud
            .list_pool_snapshots(Some(user.user_id.as_str()))
            .await?;
        Ok(listed
            .into_iter()
            .filter(|s| s.tags.get(tags::RELOCATION) == Some(&relocation.client_token))
            .map(|s| s.id)
            .collect())
    }

    async fn set_relocation(
        &self,
        user: &mut UserRecord,
        relocation: Option<Relocation>,
        now: Millis,
    ) -> Result<(), StepError> {
        if let Some(workspace) = &mut user.workspace {
            workspace.relocation = relocation;
        }
        self.save(user, now).await?;
        Ok(())
    }

    /// The workspace's volume id, creating the volume if the row has only its token: a volume
    /// carrying the user's workspace tag is adopted (a CreateVolume whose answer was lost), else
    /// it is created with the recorded token. None when the row changed under us.
    async fn ensure_volume(
        &self,
        user: &mut UserRecord,
        now: Millis,
    ) -> Result<Option<String>, StepError> {
        if let Some(found) = self.ensure_volume_found(user, now).await? {
            return Ok(Some(found));
        }
        let Some(workspace) = user.workspace.clone() else {
            return Ok(None);
        };
        let request = VolumeRequest {
            availability_zone: workspace.availability_zone.clone(),
            size_gib: workspace.size_gib,
            kms_key_id: self.inner.config.workspace_kms_key_id.clone(),
            snapshot_id: None,
            client_token: workspace.client_token.clone(),
            tags: self.workspace_tags(user),
        };
        let volume_id = self.inner.cloud.create_volume(&request).await?;
        if let Some(workspace) = &mut user.workspace {
            workspace.volume_id = Some(volume_id.clone());
        }
        let size = workspace.size_gib;
        if self.save(user, now).await? {
            metrics::counter!("spotpool_workspaces_created_total").increment(1);
            let event = crate::model::Event::WorkspaceCreated {
                volume_id: volume_id.clone(),
                zone: workspace.availability_zone,
                size_gib: size,
            };
            self.journal(now, event, Some(&user.user_id), None).await?;
            Ok(Some(volume_id))
        } else {
            Ok(None)
        }
    }

    /// The workspace's volume id; for a row that recorded only the create's token, the volume
    /// found by the user's workspace tag (recorded then). None: no volume exists (yet).
    async fn ensure_volume_found(
        &self,
        user: &mut UserRecord,
        now: Millis,
    ) -> Result<Option<String>, StepError> {
        let Some(workspace) = &user.workspace else {
            return Ok(None);
        };
        if let Some(id) = &workspace.volume_id {
            return Ok(Some(id.clone()));
        }
        let zone = workspace.availability_zone.clone();
        let found = self
            .inner
            .cloud
            .list_pool_volumes(Some(user.user_id.as_str()))
            .await?
            .into_iter()
            .find(|v| v.availability_zone == zone && v.state != VolumeState::Deleting);
        let Some(found) = found else {
            return Ok(None);
        };
        if let Some(workspace) = &mut user.workspace {
            workspace.volume_id = Some(found.id.clone());
        }
        self.save(user, now).await?;
        Ok(Some(found.id))
    }

    /// The recorded volume as EBS reports it; None while a just-created volume is not visible
    /// yet. A recorded volume EBS no longer knows after that is an error: a user's data is
    /// never replaced by a blank volume behind their back.
    async fn volume_or_grace(
        &self,
        user: &UserRecord,
        volume_id: &str,
        now: Millis,
    ) -> Result<Option<CloudVolume>, StepError> {
        match self.inner.cloud.describe_volume(volume_id).await? {
            Some(volume) => Ok(Some(volume)),
            None if now - user.updated_at <= VISIBILITY_GRACE => Ok(None),
            None => Err(fatal(
                "DescribeVolumes",
                "WorkspaceGone",
                format!("workspace volume {volume_id} no longer exists"),
            )),
        }
    }

    /// Stops the user's container on `instance` and unmounts the workspace there, once per
    /// detach. Done when it succeeded, or when the instance cannot run it any more (gone, or on
    /// its way out, which unmounts everything).
    async fn stop_container(
        &self,
        user: &mut UserRecord,
        volume_id: &str,
        instance: &InstanceId,
        now: Millis,
    ) -> Result<Progress, StepError> {
        let cloud = &self.inner.cloud;
        let record = self.inner.store.get_instance(instance).await?;
        // Nothing to stop where no start command ever went (the volume was never mounted), or
        // where the instance is gone or on its way out (its shutdown unmounts everything).
        let Some(record) = record.filter(|r| r.status != InstanceStatus::Terminating) else {
            return Ok(Progress::Done);
        };
        if !may_have_started(user, instance) {
            return Ok(Progress::Done);
        }
        // Missing from the last listing: maybe gone, maybe one incomplete page. Never detach a
        // volume that may still be mounted on a running instance; wait for the listing to tell.
        if record.missed_observations > 0 {
            return Ok(Progress::Waiting);
        }
        let sent = user.workspace.as_ref().and_then(|w| w.stop_command.clone());
        let Some(sent) = sent else {
            // Recorded before sending, like a start: a crash resends at worst.
            self.set_stop_command(user, None, now).await?;
            let device =
                instance_scripts::workspace_device_name(user.slot_on(instance)).unwrap_or_default();
            let script =
                instance_scripts::stop_workspace_script(user.user_id.as_str(), volume_id, &device);
            let comment = format!("spotpool stop workspace of {}", user.user_id);
            return match cloud
                .send_command(instance, &comment, &script, STOP_COMMAND_TIMEOUT_SECONDS)
                .await
            {
                Ok(id) => {
                    self.set_stop_command(user, Some(id), now).await?;
                    Ok(Progress::Waiting)
                }
                // The agent is gone with the instance: nothing runs there any more.
                Err(error) if error.kind == CloudErrorKind::NotFound => Ok(Progress::Done),
                Err(error) => Err(error.into()),
            };
        };
        let Some(id) = sent.id else {
            // Sent, but its id was lost: send it again.
            if let Some(workspace) = &mut user.workspace {
                workspace.stop_command = None;
            }
            self.save(user, now).await?;
            return Ok(Progress::Waiting);
        };
        match cloud.command_status(&id, instance).await {
            Ok(CommandStatus::Success) => Ok(Progress::Done),
            Ok(CommandStatus::Pending)
                if now - sent.sent_at <= i64::from(STOP_COMMAND_TIMEOUT_SECONDS) * 1000 =>
            {
                Ok(Progress::Waiting)
            }
            Ok(CommandStatus::Pending | CommandStatus::Failed(_)) => {
                tracing::warn!(user = %user.user_id, %instance, "the workspace could not be unmounted cleanly; retiring the instance to free it");
                Ok(Progress::RetireFirst)
            }
            Err(error) if error.kind == CloudErrorKind::NotFound => Ok(Progress::Done),
            Err(error) => Err(error.into()),
        }
    }

    /// Asks EC2 to detach the volume from `instance` (forced once the stop is long past), unless
    /// it is `detaching` already and forcing is not due yet: then it only waits.
    async fn detach(
        &self,
        user: &mut UserRecord,
        volume_id: &str,
        instance: &InstanceId,
        detaching: bool,
        now: Millis,
    ) -> Result<Progress, StepError> {
        let stopped_at = user
            .workspace
            .as_ref()
            .and_then(|w| w.stop_command.as_ref())
            .map_or(user.updated_at, |c| c.sent_at);
        let force = now - stopped_at > FORCE_DETACH_AFTER;
        if detaching && !force {
            // EC2 is detaching it already: asked again only to force it, once that is due.
            return Ok(Progress::Waiting);
        }
        match self
            .inner
            .cloud
            .detach_volume(volume_id, instance, force)
            .await
        {
            Ok(()) => Ok(Progress::Waiting),
            // Detaching already, or the instance is still on its way out.
            Err(error) if error.kind == CloudErrorKind::Conflict => Ok(Progress::Waiting),
            Err(error) => Err(error.into()),
        }
    }

    async fn set_stop_command(
        &self,
        user: &mut UserRecord,
        id: Option<String>,
        now: Millis,
    ) -> Result<(), StepError> {
        if let Some(workspace) = &mut user.workspace {
            workspace.stop_command = Some(SentCommand { id, sent_at: now });
        }
        self.save(user, now).await?;
        Ok(())
    }

    /// Writes the row (guarded by its version); false if it changed under us.
    async fn save(&self, user: &mut UserRecord, now: Millis) -> Result<bool, StepError> {
        user.updated_at = now;
        Ok(self.inner.store.update_user(user).await?)
    }

    /// The zone of a pool instance, from the ledger (as DescribeInstances reported it).
    async fn instance_zone(&self, instance: &InstanceId) -> Result<String, StepError> {
        self.inner
            .store
            .get_instance(instance)
            .await?
            .and_then(|r| r.availability_zone)
            .ok_or_else(|| {
                fatal(
                    "AttachVolume",
                    "UnknownZone",
                    format!("the zone of {instance} is not known yet"),
                )
            })
    }

    pub(super) fn workspace_size(&self, tier: &str) -> u32 {
        (self.tier(tier)).map_or(self.inner.config.workspace_size_gib, |t| {
            t.workspace_size_gib
        })
    }

    /// The tags of a user's workspace volume and its snapshots.
    pub(super) fn workspace_tags(&self, user: &UserRecord) -> Tags {
        let mut out = self.resource_tags(&user.user_id);
        out.extend(one_tag(tags::WORKSPACE, user.user_id.as_str()));
        out
    }
}

/// Whether a start command may have reached `instance` for this user (then the workspace may
/// be mounted there): the user's own instance once its claim is dirty, a move's target once its
/// start was recorded, and any other instance holding the volume (a move's old instance).
fn may_have_started(user: &UserRecord, instance: &InstanceId) -> bool {
    if user.instance_id.as_ref() == Some(instance) {
        return user
            .claim
            .as_ref()
            .is_some_and(crate::model::ClaimProgress::dirty);
    }
    if let Some(target) = user.moving.as_ref().and_then(|m| m.target.as_ref())
        && &target.instance == instance
    {
        return target.command.is_some();
    }
    true
}

/// A CreateVolume ClientToken (at most 64 ASCII characters) unique to the user and the moment
/// the workspace was planned: FNV-1a of the user id, and the time.
fn workspace_token(user: &str, now: Millis) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in user.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("sp-ws-{hash:016x}-{now}")
}
