//! The claim step machine: a queued user gets a spare, and the spare becomes the user's routed
//! instance (ARCHITECTURE.md, "The claim, step by step").
//!
//! Steps, each saved in the user's row before the next starts: tag the instance and bind the
//! secret to it; reserve the route on the user's shard (target group and rule, `routes.rs`);
//! create the user's workspace volume in the instance's zone (first claim only) and attach it;
//! mark the instance dirty, then send the start-container command; wait for it; register the
//! instance in the target group; and once the load balancer reports the instance healthy, the
//! user is `ready`. Also the helpers moves share: binding, the start script, the command poll
//! and the health wait.

use super::steps::Machine;
use super::workspace::Progress;
use super::{Reconciler, ReconcilerConfig, StepError, StepOutcome, StepResult, fatal, one_tag};
use crate::cloud::{CloudError, CloudErrorKind, CommandStatus, tags};
use crate::instance_scripts::{self, BLANK_WORKSPACE_DEVICE_NAME, ContainerSpec, GatewaySettings};
use crate::model::{
    ClaimProgress, ClaimStep, Event, InstanceId, InstanceStatus, Millis, Prewired, SentCommand,
    Shard, UserId, UserState,
};
use crate::model::{KEPT_TOKEN_PREFIX, TierContainer};
use crate::store::{InstanceRecord, UserRecord};

/// How long a step of the loop's pass polls a start command itself before it leaves the wait
/// to the next pass.
const COMMAND_LINGER: std::time::Duration = std::time::Duration::from_secs(10);

impl Reconciler {
    /// Gives a queued user a spare (one store transaction), then starts the claim.
    pub(super) async fn assign(
        &self,
        user: &UserId,
        (instance, slot): (&InstanceId, u32),
        shard: &str,
        now: Millis,
    ) -> Result<(), StepError> {
        let (tier, slots) = self.instance_slots(instance).await?;
        let tier = tier.as_str();
        let store = &self.inner.store;
        let taken = if slots > 1 {
            let taker = crate::store::SlotTaker::Claim { shard };
            store
                .take_slot(taker, user, (instance, slot, slots), now)
                .await?
        } else {
            let blank = (self.inner.config.blank_workspaces).then(|| self.workspace_size(tier));
            store.claim_spare(user, instance, shard, blank, now).await?
        };
        if taken {
            self.journal(now, Event::ClaimAssigned, Some(user), Some(instance))
                .await?;
            self.advance_claim(user).await?;
        }
        Ok(())
    }

    /// Runs the user's claim steps from the recorded one until it is ready, waiting on a command,
    /// or rolled back.
    pub(super) async fn advance_claim(&self, user: &UserId) -> Result<(), StepError> {
        self.drive(user, Machine::Claim).await
    }

    /// Performs the recorded claim step and saves its result. `Done` means the row moved on.
    pub(super) async fn claim_step(&self, mut user: UserRecord) -> StepOutcome {
        let inner = &self.inner;
        let cloud = &inner.cloud;
        let Some(instance) = user.instance_id.clone() else {
            // A provisioning row always has an instance; treat a corrupt one as a failed attempt.
            return Err(StepError::Cloud(CloudError::new(
                CloudErrorKind::Fatal,
                "Claim",
                "NoInstance",
                "provisioning user has no instance",
            )));
        };
        let now = self.now();
        let claim = user.claim.get_or_insert_with(ClaimProgress::assigned);
        let next = match claim.step {
            ClaimStep::Assigned => {
                let kept_here = self.bind_claim(&mut user, &instance, now).await?;
                // A pre-wired spare whose blank this step kept: its route came with it, and
                // the blank is attached to it (the keep changed that very attachment, which
                // AWS refuses for a device not mapped). Straight on to the start.
                if kept_here && user.routing.prewired.is_some() {
                    ClaimStep::WorkspaceAttached
                } else {
                    ClaimStep::Tagged
                }
            }
            // A pre-wired spare's route came with it: nothing to reserve.
            ClaimStep::Tagged if user.routing.prewired.is_some() => ClaimStep::RouteReserved,
            ClaimStep::Tagged => return self.reserve_route(user, &instance, now).await,
            ClaimStep::RouteReserved => {
                match self.attach_workspace(&mut user, &instance, now).await? {
                    Progress::Done => ClaimStep::WorkspaceAttached,
                    Progress::Waiting | Progress::RetireFirst => return Ok(StepResult::Waiting),
                }
            }
            ClaimStep::WorkspaceAttached => {
                let sent = self.send_start_command(&mut user, &instance, now).await?;
                let Some(command) = sent else {
                    return Ok(StepResult::Waiting);
                };
                let claim = user.claim.get_or_insert_with(ClaimProgress::assigned);
                claim.command = Some(command);
                ClaimStep::ContainerStarting
            }
            ClaimStep::ContainerStarting => {
                let command = claim.command.clone();
                // The warm rule switches to the user's route while the container starts: a
                // request that arrives meanwhile gets the warm responder's 503 "starting".
                if !self.switch_prewired_rule(&mut user, now).await? {
                    return Ok(StepResult::Waiting);
                }
                if !self
                    .container_started(command.as_ref(), &instance, now)
                    .await?
                {
                    return Ok(StepResult::Waiting);
                }
                ClaimStep::ContainerStarted
            }
            ClaimStep::ContainerStarted if user.routing.prewired.is_some() => {
                // The instance is registered in its pre-wired group, healthy already.
                if !self.switch_prewired_rule(&mut user, now).await? {
                    return Ok(StepResult::Waiting);
                }
                ClaimStep::Routed
            }
            ClaimStep::ContainerStarted => {
                // The route was reserved before the start: the target group is recorded (a claim
                // from before `RouteReserved` existed has none yet, and makes its group and rule
                // now, through `TargetGroupReady`; a woken one points its kept rule there).
                let reserved = user.routing.target_group_arn.is_some();
                let group = self.ensure_target_group(&mut user, &instance).await?;
                let port = self.port_on(&user, &instance);
                cloud.register_target(&group, &instance, port).await?;
                if reserved {
                    ClaimStep::Routed
                } else {
                    ClaimStep::TargetGroupReady
                }
            }
            ClaimStep::TargetGroupReady => {
                let group = user.routing.target_group_arn.clone().unwrap_or_default();
                if !self
                    .route_to_group(&mut user, &group, &instance, now)
                    .await?
                {
                    return Ok(StepResult::Waiting);
                }
                ClaimStep::Routed
            }
            ClaimStep::Routed => return self.confirm_routable(user, &instance, now).await,
        };
        self.save_claim_step(user, next, &instance, now).await
    }

    /// Moves the row to `next` and journals it; `Waiting` if the row changed under us (a
    /// DELETE), so the next pass acts on its new state.
    pub(super) async fn save_claim_step(
        &self,
        mut user: UserRecord,
        next: ClaimStep,
        instance: &InstanceId,
        now: Millis,
    ) -> StepOutcome {
        user.claim.get_or_insert_with(ClaimProgress::assigned).step = next;
        user.updated_at = now;
        if !self.inner.store.update_user(&mut user).await? {
            return Ok(StepResult::Waiting);
        }
        let event = Event::ClaimStepDone(next);
        self.journal(now, event, Some(&user.user_id), Some(instance))
            .await?;
        Ok(StepResult::Done)
    }

    /// Sends the start-container command for the user to `instance`, after marking the instance
    /// dirty in the row: from that write on a container may run there (a crash or a timed-out
    /// response cannot tell), so an undo terminates it rather than returning it to the pool. A
    /// definite refusal means nothing ran, and the mark is taken back. None when the row
    /// changed under us.
    async fn send_start_command(
        &self,
        user: &mut UserRecord,
        instance: &InstanceId,
        now: Millis,
    ) -> Result<Option<SentCommand>, StepError> {
        let inner = &self.inner;
        let script = self.start_script(user, instance).await?;
        let claim = user.claim.get_or_insert_with(ClaimProgress::assigned);
        if claim.command.is_none() {
            claim.command = Some(SentCommand {
                id: None,
                sent_at: now,
            });
            user.updated_at = now;
            if !inner.store.update_user(user).await? {
                return Ok(None);
            }
        }
        let sent = inner
            .cloud
            .send_command(
                instance,
                &format!("spotpool start container for {}", user.user_id),
                &script,
                inner.config.container_timeout.as_secs() as u32,
            )
            .await;
        match sent {
            Ok(id) => Ok(Some(SentCommand {
                id: Some(id),
                sent_at: now,
            })),
            Err(error) if error.kind != CloudErrorKind::Transient => {
                if let Some(claim) = &mut user.claim {
                    claim.command = None;
                }
                inner.store.update_user(user).await?;
                Err(error.into())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Tags `instance` for the user and binds the user's secret to it (its `InstanceArn` tag),
    /// the first step of a claim and of a move.
    pub(super) async fn bind_to_instance(
        &self,
        user: &UserRecord,
        instance: &InstanceId,
    ) -> Result<(), StepError> {
        let record = self.inner.store.get_instance(instance).await?;
        self.bind_to(user, instance, record.as_ref()).await
    }

    /// [`Reconciler::bind_to_instance`] with the instance's ledger row already read.
    async fn bind_to(
        &self,
        user: &UserRecord,
        instance: &InstanceId,
        record: Option<&InstanceRecord>,
    ) -> Result<(), StepError> {
        let cloud = &self.inner.cloud;
        let arn = record.and_then(|r| r.arn.clone()).unwrap_or_default();
        let mut instance_tags = one_tag(tags::STATUS, InstanceStatus::Assigned.as_str());
        // A tag names one user: a shared instance's users are in the store only.
        if self.slots_of(&user.tier) == 1 {
            instance_tags.insert(tags::USER_ID.into(), user.user_id.to_string());
        }
        let secret_arn = user.secret_arn.clone().unwrap_or_default();
        let secret_tags = one_tag(tags::INSTANCE_ARN, &arn);
        let (tagged, secret_tagged) = tokio::join!(
            cloud.tag_instance(instance, &instance_tags),
            cloud.tag_secret(&secret_arn, &secret_tags),
        );
        tagged?;
        secret_tagged?;
        Ok(())
    }

    /// Whether the start-container command succeeded: false while it is still running within
    /// the container timeout; an error (fatal) if it failed or ran out of time. Shared by claims
    /// and moves.
    pub(super) async fn container_started(
        &self,
        command: Option<&SentCommand>,
        instance: &InstanceId,
        now: Millis,
    ) -> Result<bool, StepError> {
        let timeout = self.inner.config.container_timeout;
        let id = command.and_then(|c| c.id.clone()).unwrap_or_default();
        let sent_at = command.map_or(now, |c| c.sent_at);
        // In the loop's passes, which no longer wait for a slow action, the step polls for a
        // while itself: a container that starts in seconds is seen at once, not a pass later.
        let poll = self.inner.config.poll_interval / 2;
        let lingering = super::execute::may_linger()
            .then(|| self.inner.lingering.clone().try_acquire_owned().ok())
            .flatten();
        let linger_until = tokio::time::Instant::now()
            + if lingering.is_some() {
                COMMAND_LINGER
            } else {
                std::time::Duration::ZERO
            };
        loop {
            let now = self.now().max(now);
            match self.inner.cloud.command_status(&id, instance).await? {
                CommandStatus::Success => return Ok(true),
                CommandStatus::Pending if now - sent_at <= timeout.as_millis() as Millis => {
                    if tokio::time::Instant::now() + poll > linger_until {
                        return Ok(false);
                    }
                    tokio::time::sleep(poll).await;
                }
                CommandStatus::Pending => {
                    return Err(fatal(
                        "StartContainer",
                        "Timeout",
                        format!("container did not start within {timeout:?}"),
                    ));
                }
                CommandStatus::Failed(output) => {
                    return Err(fatal("StartContainer", "CommandFailed", output));
                }
            }
        }
    }

    /// Whether the load balancer reports `instance` healthy in `group`: false while waiting
    /// (counted from `since`, up to the container timeout); an error (fatal) after that. Shared
    /// by a claim's last step and a move's switch.
    pub(super) async fn target_healthy_in_time(
        &self,
        (group, instance, port): (&str, &InstanceId, u16),
        since: Millis,
        now: Millis,
    ) -> Result<bool, StepError> {
        let config = &self.inner.config;
        if self
            .inner
            .cloud
            .target_healthy(group, instance, port)
            .await?
        {
            return Ok(true);
        }
        if now - since <= config.container_timeout.as_millis() as Millis {
            return Ok(false);
        }
        Err(fatal(
            "TargetHealth",
            "TargetUnhealthy",
            format!(
                "{instance} did not pass the load balancer's health checks within {:?}",
                config.container_timeout
            ),
        ))
    }

    /// The start-container command for the user on `instance`; records the image it pulls on
    /// the instance's ledger row (what an `outdated` drain compares; a shared instance keeps its
    /// earlier users' image, `Store::set_start_image`).
    pub(super) async fn start_script(
        &self,
        user: &UserRecord,
        instance: &InstanceId,
    ) -> Result<String, StepError> {
        let record = self.inner.store.get_instance(instance).await?;
        let host_ip = record.as_ref().and_then(|r| r.private_ip.clone());
        let volume_id = user.workspace.as_ref().and_then(|w| w.volume_id.clone());
        let config = &self.inner.config;
        let runtime = self.runtime(&user.tier);
        let container = &runtime.container;
        let image = self.image_to_run(&container.image).await?;
        (self.inner.store)
            .set_start_image(instance, &image, &user.user_id, self.now())
            .await?;
        let shared = self
            .tier(&user.tier)
            .is_some_and(|t| t.slots_per_instance > 1);
        let shard = user
            .shard
            .as_deref()
            .and_then(|s| config.shard(s))
            .or(config.policy.shards.first())
            .ok_or_else(|| fatal("StartContainer", "NoShard", "no shard is configured".into()))?;
        Ok(start_command(
            config,
            container,
            &StartFor {
                user_id: user.user_id.as_str(),
                image: &image,
                route: &user.route,
                shard,
                secret_arn: user.secret_arn.as_deref().unwrap_or_default(),
                volume_id: volume_id.as_deref(),
                host_ip: host_ip.as_deref(),
                slot: user.slot_on(instance),
                shared,
            },
        ))
    }

    /// The claim's end: once the load balancer reports the instance healthy, traffic on the
    /// route reaches the container, and only then is the user `ready`.
    async fn confirm_routable(
        &self,
        mut user: UserRecord,
        instance: &InstanceId,
        now: Millis,
    ) -> StepOutcome {
        let Some(group) = user.routing.target_group_arn.clone() else {
            return Ok(StepResult::Waiting);
        };
        // The switched rule has had its time to apply. A step of the loop's pass waits out
        // the rest (at most the settle time) rather than leaving it to a later pass.
        let settle = self.inner.config.rule_settle.as_millis() as Millis;
        let mut now = now;
        if let Some(settled) = user.routing.switched_at.map(|at| at + settle)
            && now < settled
        {
            if !super::execute::may_linger() {
                return Ok(StepResult::Waiting);
            }
            // Never longer than the settle time: a switch time from a clock that ran ahead
            // (another leader's, a wall clock stepped back) must not keep the step here.
            let rest = (settled - now).min(settle);
            tokio::time::sleep(std::time::Duration::from_millis(rest as u64)).await;
            now = self.now().max(settled);
        }
        let port = self.port_on(&user, instance);
        if !self
            .target_healthy_in_time((&group, instance, port), user.updated_at, now)
            .await?
        {
            return Ok(StepResult::Waiting);
        }
        user.state = UserState::Ready;
        user.ready_at = Some(now);
        user.error = None;
        user.updated_at = now;
        if !self.inner.store.update_user(&mut user).await? {
            return Ok(StepResult::Waiting);
        }
        let seconds = (now - user.requested_at).max(0) as f64 / 1000.0;
        metrics::counter!("spotpool_claims_total", "outcome" => "ready").increment(1);
        metrics::histogram!("spotpool_claim_duration_seconds").record(seconds);
        let event = Event::ClaimReady { seconds };
        self.journal(now, event, Some(&user.user_id), Some(instance))
            .await?;
        Ok(StepResult::Done)
    }
}

impl Reconciler {
    /// Switches a pre-wired spare's warm rule to the user's route with one ModifyRule, and
    /// records that it did (a crash before the record switches it again, which is harmless).
    /// False when the row changed under us (a DELETE): the next pass acts on its new state.
    async fn switch_prewired_rule(
        &self,
        user: &mut UserRecord,
        now: Millis,
    ) -> Result<bool, StepError> {
        if user.routing.prewired != Some(Prewired::Warm) {
            return Ok(true);
        }
        let Some(rule) = user.routing.rule_arn.clone() else {
            return Ok(true);
        };
        let condition = self.rule_match_of(user);
        self.inner.cloud.set_rule_match(&rule, &condition).await?;
        user.routing.prewired = Some(Prewired::Switched);
        user.routing.switched_at = Some(now);
        user.updated_at = now;
        Ok(self.inner.store.update_user(user).await?)
    }

    /// The claim's first step, its calls at once, each idempotent: the instance's and the
    /// secret's tags; a blank workspace the claim took kept past the instance's end; and a
    /// pre-wired rule switched to the user's route, so that the load balancer applies it while
    /// the container starts (a request meanwhile gets the warm responder's 503 "starting").
    /// True when it kept the spare's blank where the spare was launched with it.
    async fn bind_claim(
        &self,
        user: &mut UserRecord,
        instance: &InstanceId,
        now: Millis,
    ) -> Result<bool, StepError> {
        let switch = self.prewired_switch(user);
        let record = self.inner.store.get_instance(instance).await?;
        let blank = record.as_ref().and_then(|r| r.blank_volume_id.as_deref());
        let (bound, kept, switched) = tokio::join!(
            self.bind_to(user, instance, record.as_ref()),
            self.keep_blank_workspace(user, instance, blank),
            async {
                match &switch {
                    Some((rule, condition)) => {
                        self.inner.cloud.set_rule_match(rule, condition).await
                    }
                    None => Ok(()),
                }
            }
        );
        bound?;
        switched?;
        if switch.is_some() {
            user.routing.prewired = Some(Prewired::Switched);
            // From when the call returned: it may have waited for its bucket.
            user.routing.switched_at = Some(self.now().max(now));
        }
        let kept = kept?;
        if kept.is_some()
            && let Some(workspace) = &mut user.workspace
        {
            let volume = workspace.volume_id.clone().unwrap_or_default();
            workspace.client_token = format!("{KEPT_TOKEN_PREFIX}{volume}");
        }
        Ok(kept == Some(Kept::OnItsInstance))
    }

    /// The pre-wired rule to switch to the user's route and its new condition, while it still
    /// has its warm conditions.
    fn prewired_switch(&self, user: &UserRecord) -> Option<(String, crate::model::RuleMatch)> {
        if user.routing.prewired != Some(Prewired::Warm) {
            return None;
        }
        let rule = user.routing.rule_arn.clone()?;
        Some((rule, self.rule_match_of(user)))
    }

    /// A blank workspace this claim took from its instance and has not kept yet (ARCHITECTURE.md,
    /// "Blank workspaces"): tagged as the user's, then kept past the instance's termination,
    /// before any container can write to it. `None` for any other workspace.
    async fn keep_blank_workspace(
        &self,
        user: &UserRecord,
        instance: &InstanceId,
        blank: Option<&str>,
    ) -> Result<Option<Kept>, StepError> {
        let Some(workspace) = user.workspace.as_ref().filter(|w| w.is_unkept_blank()) else {
            return Ok(None);
        };
        let Some(volume) = workspace.volume_id.as_ref() else {
            return Ok(None);
        };
        // Not where the spare was launched with it: a claim rolled back after tagging it, and
        // its undo detached it (only a tagged workspace can be); an ordinary workspace since.
        if blank != Some(volume.as_str()) {
            return Ok(Some(Kept::Detached));
        }
        let tags = self.workspace_tags(user);
        self.inner
            .cloud
            .keep_blank_workspace(instance, volume, BLANK_WORKSPACE_DEVICE_NAME, &tags)
            .await?;
        Ok(Some(Kept::OnItsInstance))
    }

    /// After `ready`, off the claim path: the user's tag on its pre-wired target group and
    /// rule (one AddTags for both), so on-call and the orphan sweep see whose they are. (An
    /// asleep user has only its rule left.)
    pub(super) async fn tag_prewired_route(&self, user_id: &UserId) -> Result<(), StepError> {
        let Some(mut user) = self.inner.store.get_user(user_id).await? else {
            return Ok(());
        };
        let holds_route = matches!(user.state, UserState::Ready | UserState::Asleep);
        if !holds_route || user.routing.prewired != Some(Prewired::Switched) {
            return Ok(());
        }
        let arns: Vec<String> = [&user.routing.target_group_arn, &user.routing.rule_arn]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let user_tag = one_tag(tags::USER_ID, user.user_id.as_str());
        self.inner.cloud.tag_elb_resources(&arns, &user_tag).await?;
        let now = self.now();
        user.routing.prewired = None;
        user.updated_at = now;
        if self.inner.store.update_user(&mut user).await? {
            let instance = user.instance_id.clone();
            self.journal(now, Event::RouteTagged, Some(user_id), instance.as_ref())
                .await?;
        }
        Ok(())
    }
}

/// Whose container a start command starts, and where.
#[derive(Debug, Clone, Copy)]
pub struct StartFor<'a> {
    pub user_id: &'a str,
    /// The image to run: the pinned `name@sha256:...` once the configured image has a pin.
    pub image: &'a str,
    pub route: &'a str,
    /// The shard the user is routed through: its url's origin and path.
    pub shard: &'a Shard,
    pub secret_arn: &'a str,
    /// The user's workspace volume, attached before the start.
    pub volume_id: Option<&'a str>,
    /// The instance's private address; `None` lets the instance ask its metadata service.
    pub host_ip: Option<&'a str>,
    /// The user's slot on the instance (0 on a dedicated one): its host port is the container
    /// port plus the slot, and its workspace device the slot's.
    pub slot: u32,
    /// Whether the instance is shared (a tier of more than one slot).
    pub shared: bool,
}

/// The start-container command the daemon sends for `user` (also `spotpool start-script`, so
/// on-call and `scripts/openclaw-check.sh` see exactly what an instance runs).
pub fn start_command(
    config: &ReconcilerConfig,
    container: &TierContainer,
    user: &StartFor<'_>,
) -> String {
    // Path routing passes `/{route}/*` unchanged: the gateway serves under it. Host routing
    // serves the gateway at `/`.
    let base_path = user.shard.base_path(user.route);
    let origin = user.shard.origin(user.route);
    let gateway = config.gateway.as_ref().map(|g| GatewaySettings {
        origin: &origin,
        base_path: &base_path,
        state_dir: &g.state_dir,
    });
    let device = instance_scripts::workspace_device_name(user.slot).unwrap_or_default();
    instance_scripts::start_container_script(&ContainerSpec {
        user_id: user.user_id,
        secret_arn: user.secret_arn,
        image: user.image,
        port: container.port,
        host_port: host_port(container.port, user.slot),
        shared: user.shared,
        workspace_device: &device,
        host_ip: user.host_ip,
        health_path: &container.health_check.path,
        health_codes: &container.health_check.codes,
        health_timeout_seconds: (config.container_timeout.as_secs() as u32)
            .saturating_sub(30)
            .max(30),
        memory_mb: container.memory_mb,
        cpus: container.cpus,
        pids_limit: container.pids_limit,
        workspace_volume_id: user.volume_id,
        args: &container.args,
        env: &container.env,
        ready_path: config.container_ready_path.as_deref(),
        required_secrets: &config.required_secrets,
        gateway,
    })
}

/// The instance's port for the container of the user on `slot`: the container port plus the
/// slot (the security group opens `container_port` to `container_port + slots - 1`).
pub fn host_port(container_port: u16, slot: u32) -> u16 {
    container_port.saturating_add(slot as u16)
}

/// How a claim kept the spare's blank workspace it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// On the instance it was launched with, by this very step's ModifyInstanceAttribute: it is
    /// attached there.
    OnItsInstance,
    /// Detached already (an earlier claim's undo): an ordinary workspace, to attach.
    Detached,
}
