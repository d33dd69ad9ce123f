//! The `Cloud` port: every call spotpool makes to AWS goes through this trait.
//!
//! Owns: the contract each operation must keep (idempotence, what "not found" means) and the
//! error classification every caller relies on. The [`InterruptionQueue`] port (the SQS queue
//! that EventBridge fills with EC2 interruption events) lives here too. Must not: contain AWS SDK types (only
//! `cloud/aws/` sees those) or make decisions (that is `plan`).
//!
//! Contract shared by every method:
//! - Creating something that already exists returns the existing thing (or succeeds), and
//!   deleting something that is already gone succeeds. Callers rely on this to redo the last
//!   journal step after a crash.
//! - Errors are classified once, in the adapter, into [`CloudErrorKind`]; nobody else
//!   string-matches AWS error codes.
//! - Retries of throttling and 5xx happen inside the adapter (the SDK's retry config); callers
//!   never wrap a call in a second retry loop. The adapter records them in its
//!   [`Cloud::retry_meter`], because the account meters every attempt.

pub mod aws;
// The fakes and the AWS model they simulate are test scaffolding: only builds with the `fake`
// feature (every test build, through the self dev-dependency in Cargo.toml) compile them.
#[cfg(feature = "fake")]
pub mod fake;
#[cfg(feature = "fake")]
pub use fake::queue as fake_queue;
pub mod limit;
#[cfg(feature = "fake")]
pub mod profile;

pub use crate::model::{HealthCheck, Lifecycle};
mod targets;
pub use targets::{TargetGroupMetric, TargetHealth};

use crate::model::{InstanceId, InstanceStatus, Millis};
use std::collections::BTreeMap;

/// Attempts per AWS call, the first included, in the SDK's standard retry mode
/// (`SPOTPOOL_AWS_MAX_ATTEMPTS`).
pub const DEFAULT_AWS_MAX_ATTEMPTS: u32 = 4;

/// Attempts of the API's request-path secret writes (`put_secret`, `update_secret`;
/// `SPOTPOOL_AWS_SECRET_WRITE_ATTEMPTS`). A PUT's secret must be durable before it answers, and
/// there is no later pass to retry it, so these get a longer budget than the reconciler's calls
/// (which simply come back on the next pass). The call timeout still bounds the wait.
pub const DEFAULT_SECRET_WRITE_ATTEMPTS: u32 = 8;

/// The longest wait between two attempts of a request-path secret write. The SDK's default (20 s)
/// suits the reconciler, which has no one waiting; a PUT has a caller on the line, and with 20 s
/// waits the 30 s call timeout would cut the budget after five failures. With 4 s, eight
/// attempts fit in the timeout (at most 1 + 2 + 4 × 5 = 23 s of waiting), so a write fails only
/// when all eight attempts do.
pub const SECRET_WRITE_MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(4);

/// Instance ids per DescribeInstanceInformation call: the most its `InstanceIds` filter takes.
pub const AGENT_IDS_PER_CALL: usize = 50;

/// The class of a failed cloud call. The reconciler's error policy keys off this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloudErrorKind {
    /// Rate limited (RequestLimitExceeded, Throttling, ThrottlingException) after the SDK's retries.
    Throttled,
    /// No spot capacity for this (instance type, AZ): InsufficientInstanceCapacity and friends.
    Capacity,
    /// An account quota is used up (MaxSpotInstanceCountExceeded, VcpuLimitExceeded,
    /// TooManyTargetGroups, ...): no other offering helps until the quota grows or usage falls.
    Quota,
    /// The resource does not exist (or no longer exists).
    NotFound,
    /// The request collides with existing state (PriorityInUse, ResourceExists, ...).
    Conflict,
    /// A network error, timeout or 5xx that survived the SDK's retries. Worth retrying later.
    Transient,
    /// A load balancer (or the region) holds no more of what a user's route needs:
    /// TooManyRules, TooManyUniqueTargetGroupsPerLoadBalancer, TooManyTargets (that shard is
    /// full), TooManyTargetGroups (the region's target groups: every shard is). Never a failed
    /// claim: the user waits as `no_route_capacity`.
    RouteCapacity,
    /// Anything else: bad request, access denied, validation. Retrying will not help.
    Fatal,
}

impl CloudErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CloudErrorKind::Throttled => "throttled",
            CloudErrorKind::Capacity => "capacity",
            CloudErrorKind::Quota => "quota_exceeded",
            CloudErrorKind::NotFound => "not_found",
            CloudErrorKind::Conflict => "conflict",
            CloudErrorKind::Transient => "transient",
            CloudErrorKind::RouteCapacity => "route_capacity",
            CloudErrorKind::Fatal => "fatal",
        }
    }

    /// Whether the same call may succeed if simply tried again later.
    pub fn is_retryable(self) -> bool {
        matches!(self, CloudErrorKind::Throttled | CloudErrorKind::Transient)
    }
}

/// A failed cloud call: its class, the operation, the AWS error code if any, and a message.
/// The message never contains a secret value: secret values are only ever request bodies.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} failed ({}): {code}: {message}", kind.as_str())]
pub struct CloudError {
    pub kind: CloudErrorKind,
    pub operation: &'static str,
    pub code: String,
    pub message: String,
}

impl CloudError {
    pub fn new(
        kind: CloudErrorKind,
        operation: &'static str,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> CloudError {
        CloudError {
            kind,
            operation,
            code: code.into(),
            message: message.into(),
        }
    }
}

pub type CloudResult<T> = Result<T, CloudError>;

/// One instance as DescribeInstances reports it, with the tags spotpool cares about.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudInstance {
    pub id: InstanceId,
    /// `arn:aws:ec2:<region>:<account>:instance/<id>`; the secret's `InstanceArn` tag uses it.
    pub arn: String,
    pub lifecycle: Lifecycle,
    pub instance_type: String,
    pub availability_zone: String,
    /// The subnet it runs in (the pool's unit of placement and of the capacity cache).
    pub subnet_id: Option<String>,
    pub private_ip: Option<String>,
    pub launched_at: Millis,
    /// The `spotpool:tier` tag.
    pub tier: Option<String>,
    /// The `Status` tag, if it holds a known value.
    pub status: Option<InstanceStatus>,
    /// The `UserId` tag.
    pub user_id: Option<String>,
    /// The volume attached at launch as the spare's blank workspace
    /// ([`crate::instance_scripts::BLANK_WORKSPACE_DEVICE_NAME`]), while it is still attached.
    pub blank_volume_id: Option<String>,
}

/// What to launch: `count` spot instances of one type in one subnet, tagged for `tier`.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchRequest {
    pub tier: String,
    pub instance_type: String,
    pub subnet_id: String,
    pub count: u32,
    /// Idempotency token (EC2 ClientToken): the same token never launches twice.
    pub client_token: String,
    /// Spot (the pool's normal market) or on-demand (the tier's fallback when no spot offering
    /// has capacity; it uses the on-demand launch template, which has no market options).
    pub spot: bool,
    /// The tier's spot template, or its on-demand one for an on-demand launch (RunInstances
    /// can override a template's market options but not remove them).
    pub launch_template: crate::model::LaunchTemplate,
    /// A blank workspace volume to create with each instance, attached at
    /// [`crate::instance_scripts::BLANK_WORKSPACE_DEVICE_NAME`] and deleted with the instance
    /// unless a claim keeps it ([`Cloud::keep_blank_workspace`]).
    pub blank_workspace: Option<BlankWorkspace>,
}

/// The blank workspace a spare is launched with (ARCHITECTURE.md, "Blank workspaces").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlankWorkspace {
    pub size_gib: u32,
    /// A customer-managed KMS key; None uses the account's EBS default key.
    pub kms_key_id: Option<String>,
}

/// The outcome of an SSM command on one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandStatus {
    /// Sent, queued or running; poll again later. Includes "invocation does not exist yet",
    /// which AWS answers for a short while after SendCommand.
    Pending,
    Success,
    /// Failed, timed out or cancelled, with what the command printed to stderr (truncated).
    Failed(String),
}

/// A listener rule as DescribeRules reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleInfo {
    pub arn: String,
    /// `None` for the listener's default rule.
    pub priority: Option<u32>,
    pub path_patterns: Vec<String>,
    pub host_headers: Vec<String>,
    /// The `source-ip` condition's values (a warm rule's).
    pub source_ips: Vec<String>,
    pub target_group_arns: Vec<String>,
}

impl RuleInfo {
    /// Whether the rule has the condition a user's (or a spare's warm) rule is created with.
    pub fn matches(&self, wanted: &crate::model::RuleMatch) -> bool {
        use crate::model::RuleMatch;
        match wanted {
            RuleMatch::Path(path) => self.path_patterns.contains(path),
            RuleMatch::Host(host) => self.host_headers.contains(host),
            RuleMatch::Warm(path) => {
                self.path_patterns.contains(path)
                    && self
                        .source_ips
                        .iter()
                        .any(|ip| ip == crate::model::WARM_SOURCE_IP)
            }
        }
    }

    /// The rule's first condition value, for a person (the orphan sweep's names).
    pub fn condition_text(&self) -> String {
        self.path_patterns
            .first()
            .or(self.host_headers.first())
            .cloned()
            .unwrap_or_default()
    }
}

/// Tags to put on a resource, as ordered key/value pairs.
pub type Tags = BTreeMap<String, String>;

/// A target group, rule or secret tagged for this pool, as the orphan sweep sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolResource {
    pub arn: String,
    /// The target group's or secret's name; a rule's path pattern.
    pub name: String,
    /// When AWS says it was created, if it says (secrets do; target groups and rules do not).
    pub created_at: Option<Millis>,
    pub tags: Tags,
}

tokio::task_local! {
    /// Set around a call by a caller whose right to call can end mid-call
    /// (`leader::FencedCloud`): the AWS adapter asks it before every attempt of the SDK, its
    /// retries included, and sends nothing once it answers a reason.
    pub static ATTEMPT_GATE: std::sync::Arc<dyn Fn() -> Option<String> + Send + Sync>;
}

/// The capability to run spotpool's pool on a cloud. See the module docs for the shared contract.
#[async_trait::async_trait]
pub trait Cloud: Send + Sync + 'static {
    // --- EC2 -------------------------------------------------------------------------------

    /// Every non-terminated instance tagged `spotpool:pool=<pool>`. Follows NextToken to the end:
    /// one logical call per reconcile pass serves every decision.
    async fn describe_pool_instances(&self) -> CloudResult<Vec<CloudInstance>>;

    /// Launches spot instances from the configured launch template, tagged at launch with
    /// `Name`, `spotpool:pool`, `spotpool:tier` and `Status=initializing`. Returns the new ids.
    async fn launch_instances(&self, request: &LaunchRequest) -> CloudResult<Vec<InstanceId>>;

    /// Creates or overwrites tags on an instance.
    async fn tag_instance(&self, instance: &InstanceId, tags: &Tags) -> CloudResult<()>;

    /// Makes the blank workspace `volume_id`, attached to `instance` at `device` since launch,
    /// a user's: it survives the instance's termination from now on (ModifyInstanceAttribute,
    /// `DeleteOnTermination` false) and carries `tags` (CreateTags). Idempotent.
    async fn keep_blank_workspace(
        &self,
        instance: &InstanceId,
        volume_id: &str,
        device: &str,
        tags: &Tags,
    ) -> CloudResult<()>;

    /// Removes tag keys from an instance. Removing a missing key succeeds.
    async fn untag_instance(&self, instance: &InstanceId, keys: &[&str]) -> CloudResult<()>;

    /// Terminates instances. Already terminated or unknown ids count as success.
    async fn terminate_instances(&self, instances: &[InstanceId]) -> CloudResult<()>;

    // --- SSM -------------------------------------------------------------------------------

    /// Runs a shell script on one instance (AWS-RunShellScript). Returns the command id.
    /// An instance whose agent is not online yet fails with `NotFound`.
    async fn send_command(
        &self,
        instance: &InstanceId,
        comment: &str,
        script: &str,
        timeout_seconds: u32,
    ) -> CloudResult<String>;

    /// The status of a command on one instance (GetCommandInvocation).
    async fn command_status(
        &self,
        command_id: &str,
        instance: &InstanceId,
    ) -> CloudResult<CommandStatus>;

    /// Which of `instances` have an SSM agent that is `Online` (DescribeInstanceInformation,
    /// filtered by instance id, at most [`AGENT_IDS_PER_CALL`] ids per call, paginated).
    /// `Ok(None)` when the service cannot say: the operation is denied or not implemented (moto
    /// answers it with a bare HTTP 500). A probe then falls back to a back-off.
    async fn agents_online(
        &self,
        instances: &[InstanceId],
    ) -> CloudResult<Option<std::collections::BTreeSet<InstanceId>>>;

    // --- Secrets Manager -------------------------------------------------------------------

    /// Creates the secret `name` with `value`, or puts `value` as its new current version if it
    /// exists. Applies `tags`. Returns the secret's ARN. `value` never appears in errors or logs.
    async fn put_secret(&self, name: &str, value: &str, tags: &Tags) -> CloudResult<String>;

    /// Puts `value` as the new current version of an existing secret (PutSecretValue). A missing
    /// secret is `NotFound`; it is never re-created, so a release racing a rotation cannot leak
    /// a new secret.
    async fn update_secret(&self, secret_id: &str, value: &str) -> CloudResult<()>;

    /// Creates or overwrites tags on a secret.
    async fn tag_secret(&self, secret_id: &str, tags: &Tags) -> CloudResult<()>;

    /// Removes tag keys from a secret.
    async fn untag_secret(&self, secret_id: &str, keys: &[&str]) -> CloudResult<()>;

    /// Deletes a secret at once (ForceDeleteWithoutRecovery). A missing secret counts as success.
    async fn delete_secret(&self, secret_id: &str) -> CloudResult<()>;

    // --- ELBv2 -----------------------------------------------------------------------------

    /// Creates an HTTP target group of type `instance` in the configured VPC, with `health` as
    /// its health check, or returns the existing one with that name. Returns its ARN.
    async fn create_target_group(
        &self,
        name: &str,
        port: u16,
        health: &HealthCheck,
        tags: &Tags,
    ) -> CloudResult<String>;

    /// The ARN of the target group with this name, if it exists (DescribeTargetGroups by name).
    /// Teardown uses it when a crash lost the ARN between CreateTargetGroup and the journal write.
    async fn find_target_group(&self, name: &str) -> CloudResult<Option<String>>;

    /// Registers an instance in a target group. Registering it twice succeeds.
    async fn register_target(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        port: u16,
    ) -> CloudResult<()>;

    /// What the load balancer reports of the instance in the target group
    /// (DescribeTargetHealth): its state, and why when it is not healthy.
    async fn target_health(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        port: u16,
    ) -> CloudResult<TargetHealth>;

    /// Whether the load balancer reports the instance healthy in the target group.
    async fn target_healthy(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        port: u16,
    ) -> CloudResult<bool> {
        Ok(self
            .target_health(target_group_arn, instance, port)
            .await?
            .is_healthy())
    }

    /// Deregisters an instance from a target group. An instance that is not registered (or no
    /// longer exists) counts as success.
    async fn deregister_target(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        port: u16,
    ) -> CloudResult<()>;

    /// Deletes a target group. A missing group counts as success.
    async fn delete_target_group(&self, target_group_arn: &str) -> CloudResult<()>;

    /// All rules of a listener.
    async fn describe_rules(&self, listener_arn: &str) -> CloudResult<Vec<RuleInfo>>;

    /// Creates a rule forwarding requests that match `condition` (a path pattern or a host
    /// header) to a target group. A taken priority fails with `Conflict`; the caller picks
    /// another. A load balancer at its limits fails with `RouteCapacity`.
    async fn create_rule(
        &self,
        listener_arn: &str,
        priority: u32,
        condition: &crate::model::RuleMatch,
        target_group_arn: &str,
        tags: &Tags,
    ) -> CloudResult<String>;

    /// Deletes a rule. A missing rule counts as success.
    async fn delete_rule(&self, rule_arn: &str) -> CloudResult<()>;

    /// Points an existing rule at `action` (ModifyRule): its conditions and priority stay.
    /// A missing rule is `NotFound`.
    async fn set_rule_action(&self, rule_arn: &str, action: &RuleAction) -> CloudResult<()>;

    /// Replaces an existing rule's conditions with `condition` (ModifyRule): its action and
    /// priority stay. A claim of a pre-wired spare switches the warm rule to the user's route
    /// with this one call. A missing rule is `NotFound`.
    async fn set_rule_match(
        &self,
        rule_arn: &str,
        condition: &crate::model::RuleMatch,
    ) -> CloudResult<()>;

    /// Adds `tags` to load balancer resources (AddTags, at most 20 ARNs): the user's tag on a
    /// claimed spare's target group and rule, after the user is ready.
    async fn tag_elb_resources(&self, arns: &[String], tags: &Tags) -> CloudResult<()>;

    // --- EBS: workspace volumes -------------------------------------------------------------

    /// Creates an encrypted gp3 volume (CreateVolume) tagged at creation, or, for a
    /// `client_token` already used, returns the volume that token created. Returns its id.
    async fn create_volume(&self, request: &VolumeRequest) -> CloudResult<String>;

    /// One volume as DescribeVolumes reports it; None once it no longer exists.
    async fn describe_volume(&self, volume_id: &str) -> CloudResult<Option<CloudVolume>>;

    /// Every volume tagged `spotpool:pool=<pool>` and `spotpool:workspace` (DescribeVolumes with
    /// tag filters, every page); only `owner`'s (its `spotpool:workspace` tag) when given.
    async fn list_pool_volumes(&self, owner: Option<&str>) -> CloudResult<Vec<CloudVolume>>;

    /// Attaches a volume to an instance of the same availability zone as `device`
    /// (AttachVolume). A volume attached elsewhere is `Conflict`.
    async fn attach_volume(
        &self,
        volume_id: &str,
        instance: &InstanceId,
        device: &str,
    ) -> CloudResult<()>;

    /// Detaches a volume from `instance` (DetachVolume, naming the instance; `force` only as a
    /// last resort, since it skips the file system's flush). A volume that is not attached
    /// there counts as success.
    async fn detach_volume(
        &self,
        volume_id: &str,
        instance: &InstanceId,
        force: bool,
    ) -> CloudResult<()>;

    /// Deletes a volume. A missing volume counts as success; an attached one is `Conflict`.
    async fn delete_volume(&self, volume_id: &str) -> CloudResult<()>;

    /// Snapshots a volume (CreateSnapshot), tagged at creation. Returns the snapshot's id.
    async fn create_snapshot(&self, volume_id: &str, tags: &Tags) -> CloudResult<String>;

    /// Every snapshot this account owns tagged `spotpool:pool=<pool>` and `spotpool:workspace`
    /// (DescribeSnapshots with tag filters, every page); only `owner`'s when given.
    async fn list_pool_snapshots(&self, owner: Option<&str>) -> CloudResult<Vec<CloudSnapshot>>;

    /// A snapshot's state; None once it no longer exists.
    async fn snapshot_state(&self, snapshot_id: &str) -> CloudResult<Option<SnapshotState>>;

    /// Deletes a snapshot. A missing snapshot counts as success.
    async fn delete_snapshot(&self, snapshot_id: &str) -> CloudResult<()>;

    /// The availability zone of each subnet (DescribeSubnets).
    async fn subnet_zones(&self, subnet_ids: &[String]) -> CloudResult<BTreeMap<String, String>>;

    /// The vCPUs of each instance type (DescribeInstanceTypes); unknown types are left out.
    async fn instance_vcpus(&self, instance_types: &[String])
    -> CloudResult<BTreeMap<String, u32>>;

    /// The current Linux/UNIX spot price of each of `instance_types` in each of `zones`
    /// (DescribeSpotPriceHistory from now, every page); an offering AWS reports no price for
    /// is left out.
    async fn spot_prices(
        &self,
        instance_types: &[String],
        zones: &[String],
    ) -> CloudResult<Vec<crate::model::cost::SpotPrice>>;

    // --- Service Quotas ------------------------------------------------------------------------

    /// The applied value of each quota (GetServiceQuota); one the region does not know is left
    /// out.
    async fn quota_values(
        &self,
        quotas: &[crate::model::quota::Quota],
    ) -> CloudResult<BTreeMap<crate::model::quota::Quota, f64>>;

    // --- ECR ---------------------------------------------------------------------------------

    /// The digest (`sha256:...`) of an ECR image's tag (DescribeImages), for pinning the
    /// container image. NotFound when the repository or the tag does not exist.
    async fn image_digest(&self, image: &crate::image::EcrImage) -> CloudResult<String>;

    // --- CloudWatch --------------------------------------------------------------------------

    /// The requests the load balancer sent each target group over the last `window`
    /// (CloudWatch `AWS/ApplicationELB` `RequestCount`, Sum; batched GetMetricData). A target
    /// group without data points (no requests flowed) is 0.
    async fn request_counts(
        &self,
        groups: &[TargetGroupMetric],
        window: std::time::Duration,
    ) -> CloudResult<Vec<f64>>;

    // --- Listings for the orphan sweep -----------------------------------------------------

    /// Every target group tagged `spotpool:pool=<pool>` (DescribeTargetGroups, DescribeTags).
    async fn list_pool_target_groups(&self) -> CloudResult<Vec<PoolResource>>;

    /// Every rule of the listener tagged `spotpool:pool=<pool>` (DescribeRules, DescribeTags);
    /// `name` is the first path pattern. Rules of anyone else are never listed.
    async fn list_pool_rules(&self, listener_arn: &str) -> CloudResult<Vec<PoolResource>>;

    /// Every secret tagged `spotpool:pool=<pool>` (ListSecrets filtered by tag).
    async fn list_pool_secrets(&self) -> CloudResult<Vec<PoolResource>>;

    // --- Metering --------------------------------------------------------------------------

    /// Where this cloud records the retries it makes inside a call (the SDK's), so the
    /// client-side rate limiter (`limit::Limited`) charges every attempt the account meters.
    /// None: every call is one attempt.
    fn retry_meter(&self) -> Option<std::sync::Arc<limit::RetryMeter>> {
        None
    }
}

/// What a listener rule does with a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleAction {
    /// Forward to a target group.
    Forward { target_group_arn: String },
    /// Answer with a fixed response (a sleeping user's route answers 503 "asleep").
    FixedResponse {
        status: u16,
        content_type: String,
        body: String,
    },
}

/// What to create for a workspace.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeRequest {
    pub availability_zone: String,
    pub size_gib: u32,
    /// A customer-managed KMS key; None uses the account's EBS default key.
    pub kms_key_id: Option<String>,
    /// Create from this snapshot (a workspace moving to another zone).
    pub snapshot_id: Option<String>,
    /// CreateVolume's idempotency token.
    pub client_token: String,
    pub tags: Tags,
}

/// EBS's view of a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeState {
    Creating,
    Available,
    InUse,
    Deleting,
    Error,
}

/// EBS's view of an attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachmentState {
    Attaching,
    Attached,
    Detaching,
    Busy,
}

/// A volume's attachment to an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeAttachment {
    pub instance: InstanceId,
    pub state: AttachmentState,
}

/// One volume as DescribeVolumes reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudVolume {
    pub id: String,
    pub availability_zone: String,
    pub size_gib: u32,
    pub state: VolumeState,
    pub attachment: Option<VolumeAttachment>,
    pub tags: Tags,
    pub created_at: Millis,
}

/// A snapshot's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotState {
    Pending,
    Completed,
    Error,
}

/// One snapshot as DescribeSnapshots reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudSnapshot {
    pub id: String,
    pub volume_id: String,
    pub state: SnapshotState,
    pub tags: Tags,
    pub created_at: Millis,
}

/// One message taken from the interruption queue: its body (an EventBridge event, JSON) and the
/// receipt that deletes it. It stays in the queue, invisible for the queue's visibility timeout,
/// until it is deleted; if it never is, it comes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    /// SQS's id of the message, for logs. (The event's own id is inside the body.)
    pub message_id: String,
    /// The handle [`InterruptionQueue::delete`] takes; valid for this receive only.
    pub receipt: String,
    pub body: String,
}

/// The capability to read the queue of EC2 interruption events (issue 5): EventBridge rules put
/// the events there, and the daemon takes them out.
///
/// Contract:
/// - `receive` long-polls: it waits (up to 20 s on AWS) until messages arrive and returns at most
///   10. An empty list is a normal answer. A message received and not deleted is delivered
///   again later, and any message may be delivered twice or out of order: callers must be
///   idempotent and judge by the event's own time.
/// - `delete` removes a received message. A message already deleted, or a receipt that has
///   expired, counts as success: the message then comes back once more at worst.
/// - Errors are classified like every other cloud error ([`CloudErrorKind`]); the adapter never
///   retries on its own beyond the SDK's retry config.
#[async_trait::async_trait]
pub trait InterruptionQueue: Send + Sync + 'static {
    async fn receive(&self) -> CloudResult<Vec<QueueMessage>>;

    async fn delete(&self, receipt: &str) -> CloudResult<()>;
}

/// Tag keys and fixed values. The seed's names (`Name`, `Status`, `UserId`) are kept so its
/// troubleshooting commands still work.
pub mod tags {
    pub const NAME: &str = "Name";
    pub const NAME_VALUE: &str = "openclaw-user-instance";
    pub const POOL: &str = "spotpool:pool";
    pub const TIER: &str = "spotpool:tier";
    pub const STATUS: &str = "Status";
    pub const USER_ID: &str = "UserId";
    pub const INSTANCE_ID: &str = "InstanceId";
    pub const INSTANCE_ARN: &str = "InstanceArn";
    /// On a user's workspace volume (and its snapshots): the value is the user id.
    pub const WORKSPACE: &str = "spotpool:workspace";
    /// On a relocation's snapshot: the relocation's client token, recorded before
    /// CreateSnapshot (which takes no ClientToken), so a restart finds a snapshot whose answer
    /// was lost instead of taking a second one.
    pub const RELOCATION: &str = "spotpool:relocation";
}
