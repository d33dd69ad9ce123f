//! The fake's EBS: workspace volumes and their snapshots, with what moto does not enforce.
//!
//! A volume attaches only to a running instance of its own zone, to one instance at a time
//! (`VolumeInUse` otherwise), through `attaching` → `attached`; a detach goes through `detaching`
//! to `available`; a volume attached to an instance that terminated is released. CreateVolume
//! honours its ClientToken. In plain mode every transition is immediate; in simulated mode each
//! takes the profile's latency, settled lazily like the instances' effects. Every deletion is
//! logged ([`FakeCloud::deleted_volumes`]), so a test can check that no volume with a user's
//! data was deleted.

use super::cloud_impl::not_found;
use super::{FakeCloud, State};
use crate::cloud::{
    AttachmentState, CloudError, CloudErrorKind, CloudResult, CloudSnapshot, CloudVolume,
    Lifecycle, SnapshotState, Tags, VolumeAttachment, VolumeRequest, VolumeState, tags,
};
use crate::model::{InstanceId, Millis};
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct FakeVolume {
    pub id: String,
    pub zone: String,
    pub size_gib: u32,
    pub state: VolumeState,
    pub attachment: Option<FakeAttachment>,
    pub tags: Tags,
    pub created_at: Millis,
    pub snapshot_id: Option<String>,
    pub kms_key_id: Option<String>,
    /// When `creating` ends.
    pub available_at: Millis,
}

#[derive(Debug, Clone)]
pub struct FakeAttachment {
    pub instance: InstanceId,
    /// The device name it was attached as.
    pub device: String,
    pub state: AttachmentState,
    /// When `attaching` or `detaching` ends.
    pub done_at: Millis,
    /// Whether the detach was forced.
    pub forced: bool,
    /// Deleted when its instance terminates: a blank workspace made at launch, until a claim
    /// keeps it.
    pub delete_on_termination: bool,
}

#[derive(Debug, Clone)]
pub struct FakeSnapshot {
    pub id: String,
    pub volume_id: String,
    pub tags: Tags,
    pub created_at: Millis,
    pub completed_at: Millis,
}

/// The fake's EBS state.
#[derive(Debug, Default)]
pub(super) struct Ebs {
    volumes: BTreeMap<String, FakeVolume>,
    snapshots: BTreeMap<String, FakeSnapshot>,
    /// CreateVolume's ClientTokens and the volume each created.
    tokens: BTreeMap<String, String>,
    /// Every volume deleted, in order.
    deleted: Vec<FakeVolume>,
    /// Every volume created from a snapshot: (the snapshot's source volume, the new volume).
    copies: Vec<(String, String)>,
    /// Requests per target group (its CloudWatch dimension), as the test sets them.
    pub(super) request_counts: BTreeMap<String, f64>,
    /// The volumes of each workspace owner (DescribeVolumes' tag filter, as an index).
    owners: BTreeMap<String, Vec<String>>,
}

impl Ebs {
    /// Completes every transition due by `now`, and releases volumes whose instance is gone.
    pub(super) fn settle(
        &mut self,
        now: Millis,
        lifecycle: impl Fn(&InstanceId) -> Option<Lifecycle>,
    ) {
        let mut gone = Vec::new();
        for volume in self.volumes.values_mut() {
            if settle_volume(volume, now, &lifecycle) {
                gone.push(volume.id.clone());
            }
        }
        for id in gone {
            self.remove(&id);
        }
    }

    /// Removes a volume, logging it as deleted.
    fn remove(&mut self, volume_id: &str) {
        if let Some(volume) = self.volumes.remove(volume_id) {
            if let Some(owner) = volume.tags.get(tags::WORKSPACE)
                && let Some(owned) = self.owners.get_mut(owner)
            {
                owned.retain(|id| id != volume_id);
            }
            self.deleted.push(volume);
        }
    }

    /// Creates a blank workspace attached to `instance` at launch, deleted with it unless kept.
    fn create_blank(
        &mut self,
        id: String,
        instance: &InstanceId,
        zone: String,
        blank: &crate::cloud::BlankWorkspace,
        tags: Tags,
        now: Millis,
    ) {
        let volume = FakeVolume {
            id: id.clone(),
            zone,
            size_gib: blank.size_gib,
            state: VolumeState::InUse,
            attachment: Some(FakeAttachment {
                instance: instance.clone(),
                device: crate::instance_scripts::BLANK_WORKSPACE_DEVICE_NAME.into(),
                state: AttachmentState::Attached,
                done_at: now,
                forced: false,
                delete_on_termination: true,
            }),
            tags,
            created_at: now,
            snapshot_id: None,
            kms_key_id: blank.kms_key_id.clone(),
            available_at: now,
        };
        self.volumes.insert(id, volume);
    }

    /// Whether `volume_id` is attached to `instance` (the listing's blank workspace).
    pub(super) fn attached_to(&self, volume_id: &str, instance: &InstanceId) -> bool {
        self.volumes
            .get(volume_id)
            .and_then(|v| v.attachment.as_ref())
            .is_some_and(|a| &a.instance == instance)
    }

    /// The ids of `owner`'s workspace volumes (its `spotpool:workspace` tag, set at creation).
    fn owned_by(&self, owner: &str) -> Vec<String> {
        self.owners.get(owner).cloned().unwrap_or_default()
    }
}

/// One volume's [`Ebs::settle`].
/// RunInstances' block device mapping: a blank workspace for the instance just launched, with
/// the instance's launch tags.
pub(super) fn launch_blank(
    state: &mut State,
    instance: &InstanceId,
    zone: String,
    blank: &crate::cloud::BlankWorkspace,
) {
    state.next_id += 1;
    let volume = format!("vol-{:017x}", state.next_id);
    let Some(launched) = state.instances.get_mut(&instance.0) else {
        return;
    };
    launched.blank_volume = Some(volume.clone());
    let tags = launched.tags.clone();
    let now = state.now;
    state
        .ebs
        .create_blank(volume, instance, zone, blank, tags, now);
}

/// True when the volume went with its terminated instance (`DeleteOnTermination`).
fn settle_volume(
    volume: &mut FakeVolume,
    now: Millis,
    lifecycle: &impl Fn(&InstanceId) -> Option<Lifecycle>,
) -> bool {
    if volume.state == VolumeState::Creating && now >= volume.available_at {
        volume.state = VolumeState::Available;
    }
    let Some(attachment) = &mut volume.attachment else {
        return false;
    };
    let gone = lifecycle(&attachment.instance).is_none_or(|l| l == Lifecycle::Terminated);
    if gone && attachment.delete_on_termination {
        return true;
    }
    match attachment.state {
        _ if gone => volume.attachment = None,
        AttachmentState::Attaching if now >= attachment.done_at => {
            attachment.state = AttachmentState::Attached;
        }
        AttachmentState::Detaching if now >= attachment.done_at => {
            volume.attachment = None;
        }
        _ => {}
    }
    volume.state = match (&volume.attachment, volume.state) {
        (Some(_), _) => VolumeState::InUse,
        (None, VolumeState::InUse) => VolumeState::Available,
        (None, state) => state,
    };
    false
}

impl FakeCloud {
    /// [`crate::cloud::Cloud::keep_blank_workspace`]: `DeleteOnTermination` off for the
    /// volume at `device` (ModifyInstanceAttribute), then its tags (CreateTags).
    pub(super) async fn fake_keep_blank_workspace(
        &self,
        instance: &InstanceId,
        volume_id: &str,
        device: &str,
        new_tags: &Tags,
    ) -> CloudResult<()> {
        // Tags first: a blank without them still goes with its instance (see the AWS adapter).
        {
            let mut state = self.enter("CreateTags", 1).await?;
            let Some(volume) = state.ebs.volumes.get_mut(volume_id) else {
                return Err(not_found("CreateTags", volume_id));
            };
            volume.tags.extend(new_tags.clone());
            if let Some(owner) = new_tags.get(tags::WORKSPACE) {
                let owned = state.ebs.owners.entry(owner.clone()).or_default();
                if !owned.iter().any(|id| id == volume_id) {
                    owned.push(volume_id.to_string());
                }
            }
        }
        let mut state = self.enter("ModifyInstanceAttribute", 1).await?;
        if !state.instances.contains_key(&instance.0) {
            return Err(not_found("ModifyInstanceAttribute", &instance.0));
        }
        release_dead(&mut state, [volume_id]);
        let attachment = state
            .ebs
            .volumes
            .get_mut(volume_id)
            .and_then(|v| v.attachment.as_mut())
            .filter(|a| &a.instance == instance);
        match attachment {
            Some(attachment) => attachment.delete_on_termination = false,
            None => {
                return Err(CloudError::new(
                    CloudErrorKind::Fatal,
                    "ModifyInstanceAttribute",
                    "InvalidInstanceAttributeValue",
                    format!("no volume {volume_id} at {device} of {instance}"),
                ));
            }
        }
        Ok(())
    }

    /// Every volume the fake holds now (settled, as DescribeVolumes would report them).
    pub fn volumes(&self) -> Vec<FakeVolume> {
        let mut state = self.lock();
        let ids: Vec<String> = state.ebs.volumes.keys().cloned().collect();
        release_dead(&mut state, ids.iter().map(String::as_str));
        state.ebs.volumes.values().cloned().collect()
    }

    /// Every volume deleted so far, in order.
    pub fn deleted_volumes(&self) -> Vec<FakeVolume> {
        self.lock().ebs.deleted.clone()
    }

    /// Whether a volume was created from a snapshot of `volume_id` (its data lives on).
    pub fn was_copied(&self, volume_id: &str) -> bool {
        self.lock()
            .ebs
            .copies
            .iter()
            .any(|(from, _)| from == volume_id)
    }

    /// Every snapshot the fake holds now.
    pub fn snapshots(&self) -> Vec<FakeSnapshot> {
        self.lock().ebs.snapshots.values().cloned().collect()
    }

    /// The zone of a subnet in this fake: `<region>-<subnet>`, as its instances report.
    pub fn zone_of(&self, subnet: &str) -> String {
        format!("{}-{subnet}", self.region)
    }

    /// How many requests CloudWatch reports for `target_group_arn` over any window.
    pub fn set_request_count(&self, target_group_arn: &str, count: f64) {
        if let Some(group) = target_group_arn.split_once(":targetgroup/") {
            let dimension = format!("targetgroup/{}", group.1);
            self.lock().ebs.request_counts.insert(dimension, count);
        }
    }

    pub(super) async fn fake_create_volume(&self, request: &VolumeRequest) -> CloudResult<String> {
        let mut state = self.enter("CreateVolume", 1).await?;
        if let Some(existing) = state.ebs.tokens.get(&request.client_token) {
            return Ok(existing.clone());
        }
        if let Some(snapshot) = &request.snapshot_id
            && !state.ebs.snapshots.contains_key(snapshot)
        {
            return Err(not_found("CreateVolume", snapshot));
        }
        let from_snapshot = request.snapshot_id.is_some();
        let available_at = self.effect_at(state.now, |p| {
            if from_snapshot {
                p.effects.volume_from_snapshot
            } else {
                p.effects.volume_create
            }
        });
        state.next_id += 1;
        let id = format!("vol-{:017x}", state.next_id);
        let now = state.now;
        let volume = FakeVolume {
            id: id.clone(),
            zone: request.availability_zone.clone(),
            size_gib: request.size_gib,
            state: if available_at <= now {
                VolumeState::Available
            } else {
                VolumeState::Creating
            },
            attachment: None,
            tags: request.tags.clone(),
            created_at: now,
            snapshot_id: request.snapshot_id.clone(),
            kms_key_id: request.kms_key_id.clone(),
            available_at,
        };
        if let Some(source) = request
            .snapshot_id
            .as_ref()
            .and_then(|s| state.ebs.snapshots.get(s))
            .map(|s| s.volume_id.clone())
        {
            state.ebs.copies.push((source, id.clone()));
        }
        if let Some(owner) = volume.tags.get(tags::WORKSPACE) {
            let owned = state.ebs.owners.entry(owner.clone()).or_default();
            owned.push(id.clone());
        }
        state.ebs.volumes.insert(id.clone(), volume);
        state
            .ebs
            .tokens
            .insert(request.client_token.clone(), id.clone());
        if let Some(lost) = state.lost_response("CreateVolume") {
            return Err(lost);
        }
        Ok(id)
    }

    pub(super) async fn fake_describe_volume(
        &self,
        volume_id: &str,
    ) -> CloudResult<Option<CloudVolume>> {
        let mut state = self.enter("DescribeVolumes", 1).await?;
        release_dead(&mut state, [volume_id]);
        Ok(state.ebs.volumes.get(volume_id).map(cloud_volume))
    }

    pub(super) async fn fake_list_pool_volumes(
        &self,
        owner: Option<&str>,
    ) -> CloudResult<Vec<CloudVolume>> {
        let mut state = self.enter("DescribeVolumes", 1).await?;
        // The tag filter answers from an index, as AWS's does: a pass's lookup of one user's
        // workspace costs the same however many volumes the pool has.
        let ids = match owner {
            Some(owner) => state.ebs.owned_by(owner),
            None => state.ebs.volumes.keys().cloned().collect(),
        };
        release_dead(&mut state, ids.iter().map(String::as_str));
        Ok(ids
            .iter()
            .filter_map(|id| state.ebs.volumes.get(id))
            .filter(|v| self.is_ours(&v.tags))
            .filter(|v| match owner {
                Some(owner) => v.tags.get(tags::WORKSPACE).map(String::as_str) == Some(owner),
                None => v.tags.contains_key(tags::WORKSPACE),
            })
            .map(cloud_volume)
            .collect())
    }

    pub(super) async fn fake_attach_volume(
        &self,
        volume_id: &str,
        instance: &InstanceId,
        device: &str,
    ) -> CloudResult<()> {
        let mut state = self.enter("AttachVolume", 1).await?;
        release_dead(&mut state, [volume_id]);
        let Some(subnet) = state
            .instances
            .get(&instance.0)
            .filter(|i| i.lifecycle == Lifecycle::Running)
            .map(|i| i.subnet_id.clone())
        else {
            return Err(CloudError::new(
                CloudErrorKind::Conflict,
                "AttachVolume",
                "IncorrectInstanceState",
                format!("instance {instance} is not running"),
            ));
        };
        let zone = self.zone_of(&subnet);
        // As EC2: one volume per device name of an instance.
        let taken = (state.ebs.volumes.values()).any(|v| {
            v.attachment
                .as_ref()
                .is_some_and(|a| &a.instance == instance && a.device == device)
        });
        if taken {
            return Err(CloudError::new(
                CloudErrorKind::Fatal,
                "AttachVolume",
                "InvalidParameterValue",
                format!("Attachment point {device} is already in use"),
            ));
        }
        let done_at = self.effect_at(state.now, |p| p.effects.volume_attach);
        let now = state.now;
        let volume = state
            .ebs
            .volumes
            .get_mut(volume_id)
            .ok_or_else(|| not_found("AttachVolume", volume_id))?;
        if volume.zone != zone {
            return Err(CloudError::new(
                CloudErrorKind::Fatal,
                "AttachVolume",
                "InvalidVolume.ZoneMismatch",
                format!(
                    "volume {volume_id} is in {}, instance {instance} in {zone}",
                    volume.zone
                ),
            ));
        }
        if volume.state != VolumeState::Available || volume.attachment.is_some() {
            return Err(CloudError::new(
                CloudErrorKind::Conflict,
                "AttachVolume",
                "VolumeInUse",
                format!("volume {volume_id} is {:?}, not available", volume.state),
            ));
        }
        let slots = crate::instance_scripts::MAX_SLOTS;
        if !(0..slots)
            .any(|s| crate::instance_scripts::workspace_device_name(s).as_deref() == Some(device))
        {
            return Err(CloudError::new(
                CloudErrorKind::Fatal,
                "AttachVolume",
                "InvalidParameterValue",
                format!("unexpected device {device}"),
            ));
        }
        volume.state = VolumeState::InUse;
        volume.attachment = Some(FakeAttachment {
            instance: instance.clone(),
            device: device.to_string(),
            state: if done_at <= now {
                AttachmentState::Attached
            } else {
                AttachmentState::Attaching
            },
            done_at,
            forced: false,
            delete_on_termination: false,
        });
        Ok(())
    }

    pub(super) async fn fake_detach_volume(
        &self,
        volume_id: &str,
        instance: &InstanceId,
        force: bool,
    ) -> CloudResult<()> {
        let mut state = self.enter("DetachVolume", 1).await?;
        release_dead(&mut state, [volume_id]);
        let done_at = self.effect_at(state.now, |p| p.effects.volume_detach);
        let now = state.now;
        let Some(volume) = state.ebs.volumes.get_mut(volume_id) else {
            return Ok(());
        };
        let Some(attachment) = &mut volume.attachment else {
            return Ok(());
        };
        if &attachment.instance != instance {
            return Ok(());
        }
        if done_at <= now {
            volume.attachment = None;
            volume.state = VolumeState::Available;
        } else if attachment.state != AttachmentState::Detaching {
            attachment.state = AttachmentState::Detaching;
            attachment.done_at = done_at;
            attachment.forced = force;
        }
        Ok(())
    }

    pub(super) async fn fake_delete_volume(&self, volume_id: &str) -> CloudResult<()> {
        let mut state = self.enter("DeleteVolume", 1).await?;
        release_dead(&mut state, [volume_id]);
        match state.ebs.volumes.get(volume_id) {
            None => Ok(()),
            Some(volume) if volume.attachment.is_some() => Err(CloudError::new(
                CloudErrorKind::Conflict,
                "DeleteVolume",
                "VolumeInUse",
                format!("volume {volume_id} is attached"),
            )),
            Some(_) => {
                state.ebs.remove(volume_id);
                Ok(())
            }
        }
    }

    pub(super) async fn fake_create_snapshot(
        &self,
        volume_id: &str,
        new_tags: &Tags,
    ) -> CloudResult<String> {
        let mut state = self.enter("CreateSnapshot", 1).await?;
        if !state.ebs.volumes.contains_key(volume_id) {
            return Err(not_found("CreateSnapshot", volume_id));
        }
        let completed_at = self.effect_at(state.now, |p| p.effects.snapshot);
        state.next_id += 1;
        let id = format!("snap-{:017x}", state.next_id);
        let created_at = state.now;
        state.ebs.snapshots.insert(
            id.clone(),
            FakeSnapshot {
                id: id.clone(),
                volume_id: volume_id.to_string(),
                tags: new_tags.clone(),
                created_at,
                completed_at,
            },
        );
        if let Some(lost) = state.lost_response("CreateSnapshot") {
            return Err(lost);
        }
        Ok(id)
    }

    pub(super) async fn fake_list_pool_snapshots(
        &self,
        owner: Option<&str>,
    ) -> CloudResult<Vec<CloudSnapshot>> {
        let state = self.enter("DescribeSnapshots", 1).await?;
        Ok(state
            .ebs
            .snapshots
            .values()
            .filter(|s| self.is_ours(&s.tags))
            .filter(|s| match owner {
                Some(owner) => s.tags.get(tags::WORKSPACE).map(String::as_str) == Some(owner),
                None => s.tags.contains_key(tags::WORKSPACE),
            })
            .map(|s| cloud_snapshot(s, state.now))
            .collect())
    }

    pub(super) async fn fake_snapshot_state(
        &self,
        snapshot_id: &str,
    ) -> CloudResult<Option<SnapshotState>> {
        let state = self.enter("DescribeSnapshots", 1).await?;
        Ok(state
            .ebs
            .snapshots
            .get(snapshot_id)
            .map(|s| cloud_snapshot(s, state.now).state))
    }

    pub(super) async fn fake_delete_snapshot(&self, snapshot_id: &str) -> CloudResult<()> {
        let mut state = self.enter("DeleteSnapshot", 1).await?;
        state.ebs.snapshots.remove(snapshot_id);
        Ok(())
    }
}

/// Settles `volumes` (both modes: plain mode settles nothing else lazily), releasing them from
/// instances that are gone. Only the volumes a call looks at: a call costs the same however many
/// volumes the fake holds.
fn release_dead<'a>(state: &mut State, volumes: impl IntoIterator<Item = &'a str>) {
    let now = state.now;
    let instances = &state.instances;
    let lifecycle = |id: &InstanceId| instances.get(&id.0).map(|i| i.lifecycle);
    let mut gone = Vec::new();
    for id in volumes {
        if let Some(volume) = state.ebs.volumes.get_mut(id)
            && settle_volume(volume, now, &lifecycle)
        {
            gone.push(id);
        }
    }
    for id in gone {
        state.ebs.remove(id);
    }
}

fn cloud_volume(volume: &FakeVolume) -> CloudVolume {
    CloudVolume {
        id: volume.id.clone(),
        availability_zone: volume.zone.clone(),
        size_gib: volume.size_gib,
        state: volume.state,
        attachment: volume.attachment.as_ref().map(|a| VolumeAttachment {
            instance: a.instance.clone(),
            state: a.state,
        }),
        tags: volume.tags.clone(),
        created_at: volume.created_at,
    }
}

fn cloud_snapshot(snapshot: &FakeSnapshot, now: Millis) -> CloudSnapshot {
    CloudSnapshot {
        id: snapshot.id.clone(),
        volume_id: snapshot.volume_id.clone(),
        state: if now >= snapshot.completed_at {
            SnapshotState::Completed
        } else {
            SnapshotState::Pending
        },
        tags: snapshot.tags.clone(),
        created_at: snapshot.created_at,
    }
}
