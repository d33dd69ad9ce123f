//! EBS for [`AwsCloud`]: users' workspace volumes and the snapshots that copy one to another
//! zone. CreateVolume (encrypted gp3, tagged at creation, with a ClientToken), DescribeVolumes,
//! AttachVolume, DetachVolume (always naming the instance), DeleteVolume, CreateSnapshot,
//! DescribeSnapshots, DeleteSnapshot; and DescribeSubnets, for the zone of each subnet.
//!
//! Must not: decide when a volume is created, moved or deleted (the reconciler does), or force a
//! detach on its own.

use super::errors::{call, missing, next_page, with_context};
use super::{AwsCloud, sdk_tags};
use crate::cloud::{
    AttachmentState, CloudErrorKind, CloudResult, CloudSnapshot, CloudVolume, SnapshotState, Tags,
    VolumeAttachment, VolumeRequest, VolumeState, tags,
};
use crate::model::InstanceId;
use std::collections::BTreeMap;

sdk_tags!(ebs_tags, aws_sdk_ec2::types::Tag);

/// DescribeVolumes' largest page with filters.
const MAX_VOLUMES_PAGE: i32 = 500;
/// DescribeSnapshots' largest page.
const MAX_SNAPSHOTS_PAGE: i32 = 1000;

impl AwsCloud {
    pub(super) async fn ebs_create_volume(&self, request: &VolumeRequest) -> CloudResult<String> {
        use aws_sdk_ec2::types::{ResourceType, TagSpecification, VolumeType};
        let tag_spec = TagSpecification::builder()
            .resource_type(ResourceType::Volume)
            .set_tags(Some(ebs_tags(&request.tags)))
            .build();
        // A snapshot-based volume takes the snapshot's size unless asked for more.
        let size = (request.snapshot_id.is_none() || request.size_gib > 0)
            .then(|| i32::try_from(request.size_gib).unwrap_or(i32::MAX));
        let output = call(
            "ec2",
            "CreateVolume",
            self.ec2
                .create_volume()
                .availability_zone(&request.availability_zone)
                .set_size(size)
                .volume_type(VolumeType::Gp3)
                .encrypted(true)
                .set_kms_key_id(request.kms_key_id.clone())
                .set_snapshot_id(request.snapshot_id.clone())
                .client_token(&request.client_token)
                .tag_specifications(tag_spec)
                .send(),
        )
        .await
        .map_err(|err| {
            with_context(
                err,
                format!(
                    "creating a workspace volume in {}",
                    request.availability_zone
                ),
            )
        })?;
        output
            .volume_id()
            .map(str::to_string)
            .ok_or_else(|| missing("CreateVolume", "volume id"))
    }

    pub(super) async fn ebs_describe_volume(
        &self,
        volume_id: &str,
    ) -> CloudResult<Option<CloudVolume>> {
        let result = call(
            "ec2",
            "DescribeVolumes",
            self.ec2.describe_volumes().volume_ids(volume_id).send(),
        )
        .await;
        match result {
            Ok(output) => Ok(output.volumes().iter().find_map(volume)),
            Err(err) if err.kind == CloudErrorKind::NotFound => Ok(None),
            Err(err) => Err(with_context(err, format!("describing volume {volume_id}"))),
        }
    }

    pub(super) async fn ebs_list_pool_volumes(
        &self,
        owner: Option<&str>,
    ) -> CloudResult<Vec<CloudVolume>> {
        let [pool, workspace] = self.workspace_filters(owner);
        let mut volumes = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let page = call(
                "ec2",
                "DescribeVolumes",
                self.ec2
                    .describe_volumes()
                    .filters(pool.clone())
                    .filters(workspace.clone())
                    .max_results(MAX_VOLUMES_PAGE)
                    .set_next_token(next_token.clone())
                    .send(),
            )
            .await
            .map_err(|err| with_context(err, "listing the pool's workspace volumes"))?;
            volumes.extend(page.volumes().iter().filter_map(volume));
            match next_page("DescribeVolumes", next_token.clone(), page.next_token())? {
                Some(token) => next_token = Some(token),
                None => return Ok(volumes),
            }
        }
    }

    /// The tag filters of the pool's workspace volumes and snapshots: `spotpool:pool=<pool>`,
    /// and `spotpool:workspace` (=`owner` when given).
    fn workspace_filters(&self, owner: Option<&str>) -> [aws_sdk_ec2::types::Filter; 2] {
        use aws_sdk_ec2::types::Filter;
        let pool = Filter::builder()
            .name(format!("tag:{}", tags::POOL))
            .values(&self.config.pool)
            .build();
        let workspace = match owner {
            Some(owner) => Filter::builder()
                .name(format!("tag:{}", tags::WORKSPACE))
                .values(owner)
                .build(),
            None => Filter::builder()
                .name("tag-key")
                .values(tags::WORKSPACE)
                .build(),
        };
        [pool, workspace]
    }

    pub(super) async fn ebs_attach_volume(
        &self,
        volume_id: &str,
        instance: &InstanceId,
        device: &str,
    ) -> CloudResult<()> {
        call(
            "ec2",
            "AttachVolume",
            self.ec2
                .attach_volume()
                .volume_id(volume_id)
                .instance_id(&instance.0)
                .device(device)
                .send(),
        )
        .await
        .map_err(|err| with_context(err, format!("attaching {volume_id} to {instance}")))?;
        Ok(())
    }

    pub(super) async fn ebs_detach_volume(
        &self,
        volume_id: &str,
        instance: &InstanceId,
        force: bool,
    ) -> CloudResult<()> {
        // The instance is always named: it makes the call exact (moto also requires it).
        let result = call(
            "ec2",
            "DetachVolume",
            self.ec2
                .detach_volume()
                .volume_id(volume_id)
                .instance_id(&instance.0)
                .force(force)
                .send(),
        )
        .await;
        match result {
            Ok(_) => Ok(()),
            // Not attached there (any more), or gone: nothing to detach.
            Err(err) if err.kind == CloudErrorKind::NotFound => Ok(()),
            Err(err) => Err(with_context(
                err,
                format!("detaching {volume_id} from {instance}"),
            )),
        }
    }

    pub(super) async fn ebs_delete_volume(&self, volume_id: &str) -> CloudResult<()> {
        let result = call(
            "ec2",
            "DeleteVolume",
            self.ec2.delete_volume().volume_id(volume_id).send(),
        )
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if err.kind == CloudErrorKind::NotFound => Ok(()),
            Err(err) => Err(with_context(err, format!("deleting volume {volume_id}"))),
        }
    }

    pub(super) async fn ebs_create_snapshot(
        &self,
        volume_id: &str,
        snapshot_tags: &Tags,
    ) -> CloudResult<String> {
        use aws_sdk_ec2::types::{ResourceType, TagSpecification};
        let tag_spec = TagSpecification::builder()
            .resource_type(ResourceType::Snapshot)
            .set_tags(Some(ebs_tags(snapshot_tags)))
            .build();
        let output = call(
            "ec2",
            "CreateSnapshot",
            self.ec2
                .create_snapshot()
                .volume_id(volume_id)
                .description("spotpool workspace copy to another zone")
                .tag_specifications(tag_spec)
                .send(),
        )
        .await
        .map_err(|err| with_context(err, format!("snapshotting {volume_id}")))?;
        output
            .snapshot_id()
            .map(str::to_string)
            .ok_or_else(|| missing("CreateSnapshot", "snapshot id"))
    }

    pub(super) async fn ebs_snapshot_state(
        &self,
        snapshot_id: &str,
    ) -> CloudResult<Option<SnapshotState>> {
        let result = call(
            "ec2",
            "DescribeSnapshots",
            self.ec2
                .describe_snapshots()
                .snapshot_ids(snapshot_id)
                .send(),
        )
        .await;
        let output = match result {
            Ok(output) => output,
            Err(err) if err.kind == CloudErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(with_context(
                    err,
                    format!("describing snapshot {snapshot_id}"),
                ));
            }
        };
        Ok(output.snapshots().first().map(snapshot_state))
    }

    pub(super) async fn ebs_list_pool_snapshots(
        &self,
        owner: Option<&str>,
    ) -> CloudResult<Vec<CloudSnapshot>> {
        let [pool, workspace] = self.workspace_filters(owner);
        let mut snapshots = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let page = call(
                "ec2",
                "DescribeSnapshots",
                self.ec2
                    .describe_snapshots()
                    .owner_ids("self")
                    .filters(pool.clone())
                    .filters(workspace.clone())
                    .max_results(MAX_SNAPSHOTS_PAGE)
                    .set_next_token(next_token.clone())
                    .send(),
            )
            .await
            .map_err(|err| with_context(err, "listing the pool's workspace snapshots"))?;
            snapshots.extend(page.snapshots().iter().filter_map(snapshot));
            match next_page("DescribeSnapshots", next_token.clone(), page.next_token())? {
                Some(token) => next_token = Some(token),
                None => return Ok(snapshots),
            }
        }
    }

    pub(super) async fn ebs_delete_snapshot(&self, snapshot_id: &str) -> CloudResult<()> {
        let result = call(
            "ec2",
            "DeleteSnapshot",
            self.ec2.delete_snapshot().snapshot_id(snapshot_id).send(),
        )
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if err.kind == CloudErrorKind::NotFound => Ok(()),
            Err(err) => Err(with_context(
                err,
                format!("deleting snapshot {snapshot_id}"),
            )),
        }
    }

    pub(super) async fn ebs_subnet_zones(
        &self,
        subnet_ids: &[String],
    ) -> CloudResult<BTreeMap<String, String>> {
        let output = call(
            "ec2",
            "DescribeSubnets",
            self.ec2
                .describe_subnets()
                .set_subnet_ids(Some(subnet_ids.to_vec()))
                .send(),
        )
        .await
        .map_err(|err| with_context(err, "reading the zones of the pool's subnets"))?;
        Ok(output
            .subnets()
            .iter()
            .filter_map(|s| {
                Some((
                    s.subnet_id()?.to_string(),
                    s.availability_zone()?.to_string(),
                ))
            })
            .collect())
    }
}

/// Our view of an SDK volume; None without an id.
fn volume(v: &aws_sdk_ec2::types::Volume) -> Option<CloudVolume> {
    use aws_sdk_ec2::types::{VolumeAttachmentState as Att, VolumeState as Sdk};
    let state = match v.state() {
        Some(Sdk::Creating) => VolumeState::Creating,
        Some(Sdk::Available) => VolumeState::Available,
        Some(Sdk::InUse) => VolumeState::InUse,
        Some(Sdk::Deleting) | Some(Sdk::Deleted) => VolumeState::Deleting,
        _ => VolumeState::Error,
    };
    let attachment = v.attachments().iter().find_map(|a| {
        let state = match a.state()? {
            Att::Attaching => AttachmentState::Attaching,
            Att::Attached => AttachmentState::Attached,
            Att::Detaching => AttachmentState::Detaching,
            Att::Busy => AttachmentState::Busy,
            _ => return None,
        };
        Some(VolumeAttachment {
            instance: InstanceId(a.instance_id()?.to_string()),
            state,
        })
    });
    Some(CloudVolume {
        id: v.volume_id()?.to_string(),
        availability_zone: v.availability_zone().unwrap_or_default().to_string(),
        size_gib: v.size().and_then(|s| u32::try_from(s).ok()).unwrap_or(0),
        state,
        attachment,
        tags: tag_map(v.tags()),
        created_at: v
            .create_time()
            .and_then(|t| t.to_millis().ok())
            .unwrap_or_default(),
    })
}

fn snapshot_state(s: &aws_sdk_ec2::types::Snapshot) -> SnapshotState {
    use aws_sdk_ec2::types::SnapshotState as Sdk;
    match s.state() {
        Some(Sdk::Completed) => SnapshotState::Completed,
        Some(Sdk::Error) | Some(Sdk::Recoverable) => SnapshotState::Error,
        _ => SnapshotState::Pending,
    }
}

fn snapshot(s: &aws_sdk_ec2::types::Snapshot) -> Option<CloudSnapshot> {
    Some(CloudSnapshot {
        id: s.snapshot_id()?.to_string(),
        volume_id: s.volume_id().unwrap_or_default().to_string(),
        state: snapshot_state(s),
        tags: tag_map(s.tags()),
        created_at: s
            .start_time()
            .and_then(|t| t.to_millis().ok())
            .unwrap_or_default(),
    })
}

fn tag_map(sdk: &[aws_sdk_ec2::types::Tag]) -> Tags {
    sdk.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
        .collect()
}
