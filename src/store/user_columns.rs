//! A `users` row in its flat column form, [`UserColumns`], to and from [`UserRecord`]: enums are
//! kept as their `as_str` strings and parsed back, so a value the code does not know is reported
//! as a corrupt row rather than guessed. The same on both databases (every integer is an `i64`).

use super::users::UserRecord;
use super::{StoreError, StoreResult, parse_column};
use crate::model::{
    ClaimProgress, ClaimStep, InstanceId, Millis, MoveProgress, MoveReason, MoveStep, MoveTarget,
    Prewired, Relocation, Routing, SentCommand, TeardownKind, UserId, UserState, Workspace,
};

/// The `users` table's columns, as sqlx reads and binds them.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct UserColumns {
    pub(super) user_id: String,
    pub(super) tier: String,
    pub(super) route: String,
    pub(super) state: String,
    pub(super) secret_arn: Option<String>,
    pub(super) instance_id: Option<String>,
    pub(super) claim_step: Option<String>,
    pub(super) command_id: Option<String>,
    pub(super) command_sent_at: Option<Millis>,
    pub(super) target_group_arn: Option<String>,
    pub(super) listener_arn: Option<String>,
    pub(super) shard: Option<String>,
    pub(super) rule_priority: Option<i64>,
    pub(super) rule_arn: Option<String>,
    pub(super) prewired_route: Option<String>,
    pub(super) route_switched_at: Option<Millis>,
    pub(super) teardown: Option<String>,
    pub(super) move_instance_id: Option<String>,
    pub(super) move_step: Option<String>,
    pub(super) move_command_id: Option<String>,
    pub(super) move_command_sent_at: Option<Millis>,
    pub(super) move_reason: Option<String>,
    pub(super) move_started_at: Option<Millis>,
    pub(super) move_attempts: i64,
    pub(super) workspace_volume_id: Option<String>,
    pub(super) workspace_token: Option<String>,
    pub(super) workspace_zone: Option<String>,
    pub(super) workspace_size_gib: Option<i64>,
    pub(super) workspace_attached_to: Option<String>,
    pub(super) workspace_stop_command_id: Option<String>,
    pub(super) workspace_stop_sent_at: Option<Millis>,
    pub(super) relocation_zone: Option<String>,
    pub(super) relocation_token: Option<String>,
    pub(super) relocation_snapshot_id: Option<String>,
    pub(super) relocation_volume_id: Option<String>,
    pub(super) attempts: i64,
    pub(super) error: Option<String>,
    pub(super) requested_at: Millis,
    pub(super) created_at: Millis,
    pub(super) updated_at: Millis,
    pub(super) claimed_at: Option<Millis>,
    pub(super) ready_at: Option<Millis>,
    pub(super) move_abandoned_at: Option<Millis>,
    pub(super) callback_url: Option<String>,
    pub(super) health: Option<String>,
    pub(super) health_instance_id: Option<String>,
    pub(super) health_since: Option<Millis>,
    pub(super) health_restarted_at: Option<Millis>,
    pub(super) health_recycled_at: Option<Millis>,
    pub(super) health_cause: Option<String>,
    pub(super) version: i64,
    pub(super) slot: i64,
    pub(super) move_slot: i64,
}

/// A move's columns, as read.
struct MoveColumns {
    instance_id: Option<String>,
    slot: i64,
    step: Option<String>,
    command: Option<SentCommand>,
    reason: Option<String>,
    started_at: Millis,
    attempts: i64,
}

/// The move a row records: none, one with no target yet, or one with its target and step.
fn moving_of(id: &str, row: MoveColumns) -> StoreResult<Option<MoveProgress>> {
    let field = |name: &'static str| move || format!("user {id}: {name}");
    let move_step = parse_column(MoveStep::parse, row.step, field("move step"))?;
    let target = match (row.instance_id, move_step) {
        (Some(instance), Some(step)) => Some(MoveTarget {
            instance: InstanceId(instance),
            slot: row.slot as u32,
            step,
            command: row.command,
        }),
        (None, None) => None,
        _ => {
            return Err(StoreError::Corrupt(format!(
                "user {id}: a move target needs both an instance and a step"
            )));
        }
    };
    let reason = parse_column(MoveReason::parse, row.reason, field("move reason"))?;
    match (reason, target) {
        (Some(reason), target) => Ok(Some(MoveProgress {
            reason,
            started_at: row.started_at,
            attempts: row.attempts as u32,
            target,
        })),
        (None, None) => Ok(None),
        (None, Some(_)) => Err(StoreError::Corrupt(format!(
            "user {id}: a move target without a move reason"
        ))),
    }
}

/// A workspace relocation's columns: one exists when its zone and token are both recorded.
fn relocation_of(
    (zone, token): (Option<String>, Option<String>),
    snapshot_id: Option<String>,
    volume_id: Option<String>,
) -> Option<Relocation> {
    Some(Relocation {
        to_zone: zone?,
        client_token: token?,
        snapshot_id,
        volume_id,
    })
}

/// A command's two columns (id, sent at) as an optional [`SentCommand`].
fn sent_command(id: Option<String>, sent_at: Option<Millis>) -> Option<SentCommand> {
    sent_at.map(|sent_at| SentCommand { id, sent_at })
}

fn command_columns(command: Option<&SentCommand>) -> (Option<String>, Option<Millis>) {
    match command {
        Some(command) => (command.id.clone(), Some(command.sent_at)),
        None => (None, None),
    }
}

impl From<&UserRecord> for UserColumns {
    fn from(user: &UserRecord) -> UserColumns {
        let claim = user.claim.as_ref();
        let (command_id, command_sent_at) = command_columns(claim.and_then(|c| c.command.as_ref()));
        let moving = user.moving.as_ref();
        let target = moving.and_then(|m| m.target.as_ref());
        let (move_command_id, move_command_sent_at) =
            command_columns(target.and_then(|t| t.command.as_ref()));
        let workspace = user.workspace.as_ref();
        let (workspace_stop_command_id, workspace_stop_sent_at) =
            command_columns(workspace.and_then(|w| w.stop_command.as_ref()));
        let relocation = workspace.and_then(|w| w.relocation.as_ref());
        UserColumns {
            user_id: user.user_id.to_string(),
            tier: user.tier.clone(),
            route: user.route.clone(),
            state: user.state.as_str().into(),
            secret_arn: user.secret_arn.clone(),
            instance_id: user.instance_id.as_ref().map(|i| i.0.clone()),
            claim_step: claim.map(|c| c.step.as_str().into()),
            command_id,
            command_sent_at,
            target_group_arn: user.routing.target_group_arn.clone(),
            listener_arn: user.routing.listener_arn.clone(),
            shard: user.shard.clone(),
            rule_priority: user.routing.rule_priority.map(i64::from),
            rule_arn: user.routing.rule_arn.clone(),
            prewired_route: user.routing.prewired.map(|p| p.as_str().into()),
            route_switched_at: user.routing.switched_at,
            teardown: user.teardown.map(|t| t.as_str().into()),
            move_instance_id: target.map(|t| t.instance.0.clone()),
            move_step: target.map(|t| t.step.as_str().into()),
            move_command_id,
            move_command_sent_at,
            move_reason: moving.map(|m| m.reason.as_str().into()),
            move_started_at: moving.map(|m| m.started_at),
            move_attempts: moving.map_or(0, |m| i64::from(m.attempts)),
            workspace_volume_id: workspace.and_then(|w| w.volume_id.clone()),
            workspace_token: workspace.map(|w| w.client_token.clone()),
            workspace_zone: workspace.map(|w| w.availability_zone.clone()),
            workspace_size_gib: workspace.map(|w| i64::from(w.size_gib)),
            workspace_attached_to: workspace
                .and_then(|w| w.attached_to.as_ref().map(|i| i.0.clone())),
            workspace_stop_command_id,
            workspace_stop_sent_at,
            relocation_zone: relocation.map(|r| r.to_zone.clone()),
            relocation_token: relocation.map(|r| r.client_token.clone()),
            relocation_snapshot_id: relocation.and_then(|r| r.snapshot_id.clone()),
            relocation_volume_id: relocation.and_then(|r| r.volume_id.clone()),
            attempts: i64::from(user.attempts),
            error: user.error.clone(),
            requested_at: user.requested_at,
            created_at: user.created_at,
            updated_at: user.updated_at,
            claimed_at: user.claimed_at,
            ready_at: user.ready_at,
            move_abandoned_at: user.move_abandoned_at,
            callback_url: user.callback_url.clone(),
            health: user.health.health.map(|h| h.as_str().into()),
            health_instance_id: user.health.instance.as_ref().map(|i| i.0.clone()),
            health_since: user.health.since,
            health_restarted_at: user.health.restarted_at,
            health_recycled_at: user.health.recycled_at,
            health_cause: user.health.cause.clone(),
            version: user.version,
            slot: i64::from(user.slot),
            move_slot: target.map_or(0, |t| i64::from(t.slot)),
        }
    }
}

impl TryFrom<UserColumns> for UserRecord {
    type Error = StoreError;

    fn try_from(row: UserColumns) -> StoreResult<UserRecord> {
        let id = row.user_id;
        let user_id =
            UserId::parse(&id).map_err(|e| StoreError::Corrupt(format!("user {id:?}: {e}")))?;
        let field = |name: &'static str| {
            let id = id.clone();
            move || format!("user {id}: {name}")
        };
        let state = parse_column(UserState::parse, Some(row.state), field("state"))?
            .unwrap_or(UserState::Queued);
        let claim =
            parse_column(ClaimStep::parse, row.claim_step, field("claim step"))?.map(|step| {
                ClaimProgress {
                    step,
                    command: sent_command(row.command_id, row.command_sent_at),
                }
            });
        let moving = moving_of(
            &id,
            MoveColumns {
                instance_id: row.move_instance_id,
                slot: row.move_slot,
                step: row.move_step,
                command: sent_command(row.move_command_id, row.move_command_sent_at),
                reason: row.move_reason,
                started_at: row.move_started_at.unwrap_or(row.updated_at),
                attempts: row.move_attempts,
            },
        )?;
        let relocation = relocation_of(
            (row.relocation_zone, row.relocation_token),
            row.relocation_snapshot_id,
            row.relocation_volume_id,
        );
        let workspace = match (row.workspace_token, row.workspace_zone) {
            (Some(client_token), Some(availability_zone)) => Some(Workspace {
                volume_id: row.workspace_volume_id,
                client_token,
                availability_zone,
                size_gib: row.workspace_size_gib.unwrap_or(0) as u32,
                attached_to: row.workspace_attached_to.map(InstanceId),
                stop_command: sent_command(
                    row.workspace_stop_command_id,
                    row.workspace_stop_sent_at,
                ),
                relocation,
            }),
            _ => None,
        };
        Ok(UserRecord {
            user_id,
            tier: row.tier,
            route: row.route,
            state,
            secret_arn: row.secret_arn,
            instance_id: row.instance_id.map(InstanceId),
            slot: row.slot as u32,
            claim,
            shard: row.shard,
            routing: Routing {
                listener_arn: row.listener_arn,
                rule_priority: row.rule_priority.map(|p| p as u32),
                rule_arn: row.rule_arn,
                target_group_arn: row.target_group_arn,
                prewired: parse_column(
                    Prewired::parse,
                    row.prewired_route,
                    field("prewired_route"),
                )?,
                switched_at: row.route_switched_at,
            },
            teardown: parse_column(TeardownKind::parse, row.teardown, field("teardown"))?,
            moving,
            workspace,
            attempts: row.attempts as u32,
            error: row.error,
            requested_at: row.requested_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
            claimed_at: row.claimed_at,
            ready_at: row.ready_at,
            move_abandoned_at: row.move_abandoned_at,
            callback_url: row.callback_url,
            health: crate::model::HealthWatch {
                health: parse_column(crate::model::Health::parse, row.health, || {
                    format!("user {id}: health")
                })?,
                instance: row.health_instance_id.map(InstanceId),
                since: row.health_since,
                restarted_at: row.health_restarted_at,
                recycled_at: row.health_recycled_at,
                cause: row.health_cause,
            },
            version: row.version,
        })
    }
}
