//! The claim step machine: a queued user gets a spare, and the spare becomes the user's routed
//! instance (ARCHITECTURE.md, "The claim, step by step").
//!
//! Steps, each saved in the user's row before the next starts: tag the instance and bind the
//! secret to it; create the user's workspace volume in the instance's zone (first claim only) and
//! attach it; mark the instance dirty, then send the start-container command; wait for it;
//! create the target group with the instance registered; create the listener rule; and once the
//! load balancer reports the instance healthy, the user is `ready`. Also the helpers moves share:
//! binding, the start script, the command poll and the health wait.

use super::steps::Machine;
use super::workspace::Progress;
use super::{
    Reconciler, ReconcilerConfig, StepError, StepOutcome, StepResult, fatal, one_tag, route_path,
    target_group_name,
};
use crate::cloud::{CloudError, CloudErrorKind, CommandStatus, RuleAction, tags};
use crate::instance_scripts::{self, ContainerSpec, GatewaySettings};
use crate::model::{
    ClaimProgress, ClaimStep, Event, InstanceId, InstanceStatus, Millis, SentCommand, UserId,
    UserState,
};
use crate::store::{StoreError, UserRecord};
use std::sync::atomic::Ordering;

impl Reconciler {
    /// Gives a queued user a spare (one store transaction), then starts the claim.
    pub(super) async fn assign(
        &self,
        user: &UserId,
        instance: &InstanceId,
        now: Millis,
    ) -> Result<(), StepError> {
        if self.inner.store.assign(user, instance, now).await? {
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
        let config = &inner.config;
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
                self.bind_to_instance(&user, &instance).await?;
                ClaimStep::Tagged
            }
            ClaimStep::Tagged => match self.attach_workspace(&mut user, &instance, now).await? {
                Progress::Done => ClaimStep::WorkspaceAttached,
                Progress::Waiting | Progress::RetireFirst => return Ok(StepResult::Waiting),
            },
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
                if !self
                    .container_started(command.as_ref(), &instance, now)
                    .await?
                {
                    return Ok(StepResult::Waiting);
                }
                ClaimStep::ContainerStarted
            }
            ClaimStep::ContainerStarted => {
                let name = target_group_name(&user.route);
                let mut group_tags = self.resource_tags(&user.user_id);
                group_tags.insert(tags::INSTANCE_ID.into(), instance.0.clone());
                let arn = cloud
                    .create_target_group(
                        &name,
                        config.container_port,
                        &config.health_check,
                        &group_tags,
                    )
                    .await?;
                // (A crash before this step is saved loses the ARN; teardown then finds the group
                // by its deterministic name.)
                user.routing.target_group_arn = Some(arn.clone());
                cloud
                    .register_target(&arn, &instance, config.container_port)
                    .await?;
                ClaimStep::TargetGroupReady
            }
            ClaimStep::TargetGroupReady => return self.route_user(user, &instance, now).await,
            ClaimStep::Routed => return self.confirm_routable(user, &instance, now).await,
        };
        self.save_claim_step(user, next, &instance, now).await
    }

    /// Moves the row to `next` and journals it; `Waiting` if the row changed under us (a
    /// DELETE), so the next pass acts on its new state.
    async fn save_claim_step(
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
        let cloud = &self.inner.cloud;
        let record = self.inner.store.get_instance(instance).await?;
        let arn = record.and_then(|r| r.arn).unwrap_or_default();
        let mut instance_tags = one_tag(tags::STATUS, InstanceStatus::Assigned.as_str());
        instance_tags.insert(tags::USER_ID.into(), user.user_id.to_string());
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
        match self.inner.cloud.command_status(&id, instance).await? {
            CommandStatus::Success => Ok(true),
            CommandStatus::Pending if now - sent_at <= timeout.as_millis() as Millis => Ok(false),
            CommandStatus::Pending => Err(fatal(
                "StartContainer",
                "Timeout",
                format!("container did not start within {timeout:?}"),
            )),
            CommandStatus::Failed(output) => Err(fatal("StartContainer", "CommandFailed", output)),
        }
    }

    /// Whether the load balancer reports `instance` healthy in `group`: false while waiting
    /// (counted from `since`, up to the container timeout); an error (fatal) after that. Shared
    /// by a claim's last step and a move's switch.
    pub(super) async fn target_healthy_in_time(
        &self,
        group: &str,
        instance: &InstanceId,
        since: Millis,
        now: Millis,
    ) -> Result<bool, StepError> {
        let config = &self.inner.config;
        if self
            .inner
            .cloud
            .target_healthy(group, instance, config.container_port)
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

    /// The start-container command for the user on `instance`.
    pub(super) async fn start_script(
        &self,
        user: &UserRecord,
        instance: &InstanceId,
    ) -> Result<String, StepError> {
        let record = self.inner.store.get_instance(instance).await?;
        let host_ip = record.as_ref().and_then(|r| r.private_ip.clone());
        let volume_id = user.workspace.as_ref().and_then(|w| w.volume_id.clone());
        let image = self.image_to_run().await?;
        Ok(start_command(
            &self.inner.config,
            &StartFor {
                user_id: user.user_id.as_str(),
                image: &image,
                route: &user.route,
                secret_arn: user.secret_arn.as_deref().unwrap_or_default(),
                volume_id: volume_id.as_deref(),
                host_ip: host_ip.as_deref(),
            },
        ))
    }

    /// The claim's rule step: a listener rule for `/{route}/*` at the lowest free priority.
    async fn route_user(
        &self,
        mut user: UserRecord,
        instance: &InstanceId,
        now: Millis,
    ) -> StepOutcome {
        let inner = &self.inner;
        let cloud = &inner.cloud;
        if user.routing.listener_arn.is_none() || user.routing.rule_priority.is_none() {
            let listener = self.pick_listener().await?;
            let priority = self.take_priority(&listener).await?;
            user.routing.listener_arn = Some(listener);
            user.routing.rule_priority = Some(priority);
            user.updated_at = now;
            match inner.store.update_user(&mut user).await {
                Ok(true) => {}
                Ok(false) => return Ok(StepResult::Waiting),
                // Another claim in this pass took the same priority first (the unique index
                // decides); pick again on the next pass.
                Err(StoreError::Conflict(why)) => {
                    tracing::debug!(user = %user.user_id, why, "rule priority taken meanwhile");
                    return Ok(StepResult::Waiting);
                }
                Err(error) => return Err(error.into()),
            }
        }
        let (Some(listener), Some(priority), Some(group)) = (
            user.routing.listener_arn.clone(),
            user.routing.rule_priority,
            user.routing.target_group_arn.clone(),
        ) else {
            return Ok(StepResult::Waiting);
        };
        // A woken user kept its rule (answering "asleep" meanwhile): point it at the new group.
        if let Some(rule) = user.routing.rule_arn.clone() {
            let forward = RuleAction::Forward {
                target_group_arn: group,
            };
            cloud.set_rule_action(&rule, &forward).await?;
            return self
                .save_claim_step(user, ClaimStep::Routed, instance, now)
                .await;
        }
        let path = route_path(&user.route);
        let mut rule_tags = self.resource_tags(&user.user_id);
        rule_tags.insert(tags::INSTANCE_ID.into(), instance.0.clone());
        let rule_arn = match cloud
            .create_rule(&listener, priority, &path, &group, &rule_tags)
            .await
        {
            Ok(arn) => arn,
            Err(error) if error.kind == CloudErrorKind::Conflict => {
                // PriorityInUse: someone else took it. If it is our own rule from before a
                // crash, adopt it; otherwise forget the priority and pick another next time.
                let ours = cloud
                    .describe_rules(&listener)
                    .await?
                    .into_iter()
                    .find(|r| r.priority == Some(priority) && r.path_patterns.contains(&path));
                match ours {
                    Some(rule) => rule.arn,
                    None => {
                        user.routing.rule_priority = None;
                        user.updated_at = now;
                        inner.store.update_user(&mut user).await?;
                        return Ok(StepResult::Waiting);
                    }
                }
            }
            Err(error) => return Err(error.into()),
        };
        user.routing.rule_arn = Some(rule_arn);
        self.save_claim_step(user, ClaimStep::Routed, instance, now)
            .await
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
        if !self
            .target_healthy_in_time(&group, instance, user.updated_at, now)
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

    /// The listener with the fewest users, so a comma list of listeners shards evenly. The
    /// counts are read once per pass and kept up to date by the picks (a count of every user
    /// per claim made a claim's cost grow with the number of users).
    async fn pick_listener(&self) -> Result<String, StepError> {
        let pass = self.inner.pass_seq.load(Ordering::Relaxed);
        let mut loads = self.inner.listener_loads.lock().await;
        if loads.0 != pass {
            let counts = self.inner.store.users_per_listener().await?;
            *loads = (pass, counts.into_iter().collect());
        }
        let listeners = &self.inner.config.listener_arns;
        let best = listeners
            .iter()
            .min_by_key(|l| loads.1.get(*l).copied().unwrap_or(0))
            .cloned()
            .ok_or_else(|| fatal("Claim", "NoListener", "no listener configured".into()))?;
        *loads.1.entry(best.clone()).or_default() += 1;
        Ok(best)
    }
}

/// The rule priorities taken on one listener: read once per pass (the store's and DescribeRules'),
/// plus every priority handed out since, so the concurrent claims of a pass take different
/// priorities. (Before, each claim read the whole listener and all took the lowest free one;
/// all but one lost on the unique index and tried again next pass: 7 to 9 DescribeRules of the
/// whole listener per claim, measured on the fake with 50 to 200 claims at once.)
#[derive(Debug, Default)]
pub(super) struct PriorityBook {
    pass: u64,
    used: std::collections::BTreeSet<u32>,
    /// Every priority below this one is taken (the search starts here, not at 1).
    floor: u32,
}

impl PriorityBook {
    /// The lowest listener priority (1-50000) not taken, now taken.
    fn take(&mut self) -> u32 {
        let free = (self.floor.max(1)..=50_000)
            .find(|p| !self.used.contains(p))
            .unwrap_or(50_000);
        self.used.insert(free);
        self.floor = free;
        free
    }
}

impl Reconciler {
    /// A rule priority on `listener` no other claim of this pass gets. The unique index on
    /// (listener, priority) still decides against another process.
    async fn take_priority(&self, listener: &str) -> Result<u32, StepError> {
        let pass = self.inner.pass_seq.load(Ordering::Relaxed);
        let mut books = self.inner.priority_books.lock().await;
        let book = books.entry(listener.to_string()).or_default();
        if book.pass != pass {
            let mut used: std::collections::BTreeSet<u32> = self
                .inner
                .store
                .used_priorities(listener)
                .await?
                .into_iter()
                .collect();
            used.extend(
                self.inner
                    .cloud
                    .describe_rules(listener)
                    .await?
                    .into_iter()
                    .filter_map(|r| r.priority),
            );
            *book = PriorityBook {
                pass,
                used,
                floor: 1,
            };
        }
        Ok(book.take())
    }
}

/// Whose container a start command starts, and where.
#[derive(Debug, Clone, Copy)]
pub struct StartFor<'a> {
    pub user_id: &'a str,
    /// The image to run: the pinned `name@sha256:...` once the configured image has a pin.
    pub image: &'a str,
    pub route: &'a str,
    pub secret_arn: &'a str,
    /// The user's workspace volume, attached before the start.
    pub volume_id: Option<&'a str>,
    /// The instance's private address; `None` lets the instance ask its metadata service.
    pub host_ip: Option<&'a str>,
}

/// The start-container command the daemon sends for `user` (also `spotpool start-script`, so
/// on-call and `scripts/openclaw-check.sh` see exactly what an instance runs).
pub fn start_command(config: &ReconcilerConfig, user: &StartFor<'_>) -> String {
    // The load balancer routes `/{route}/*` unchanged: the gateway serves under it.
    let base_path = format!("/{}", user.route);
    let gateway = config.gateway.as_ref().map(|g| GatewaySettings {
        origin: &g.origin,
        base_path: &base_path,
        state_dir: &g.state_dir,
    });
    instance_scripts::start_container_script(&ContainerSpec {
        user_id: user.user_id,
        secret_arn: user.secret_arn,
        image: user.image,
        port: config.container_port,
        host_ip: user.host_ip,
        health_path: &config.health_check.path,
        health_codes: &config.health_check.codes,
        health_timeout_seconds: (config.container_timeout.as_secs() as u32)
            .saturating_sub(30)
            .max(30),
        memory_mb: config.container_memory_mb,
        cpus: config.container_cpus,
        pids_limit: config.container_pids_limit,
        workspace_volume_id: user.volume_id,
        args: &config.container_args,
        env: &config.container_env,
        ready_path: config.container_ready_path.as_deref(),
        required_secrets: &config.required_secrets,
        gateway,
    })
}
