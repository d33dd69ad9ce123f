//! Users: desired state plus the typed progress of each user's claim, move and teardown.
//!
//! A row maps to [`UserRecord`] through [`UserColumns`], its flat column form: enums are kept
//! as their `as_str` strings and parsed back, so a value the code does not know is reported as a
//! corrupt row rather than guessed.

use super::{Store, StoreError, StoreResult, parse_column};
use crate::model::{
    ClaimProgress, ClaimStep, InstanceId, Millis, MoveProgress, MoveReason, MoveStep, MoveTarget,
    Relocation, Routing, SentCommand, TeardownKind, UserId, UserState, Workspace,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

/// A user's row: desired state plus the progress of whatever is under way.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub user_id: UserId,
    pub tier: String,
    pub route: String,
    pub state: UserState,
    pub secret_arn: Option<String>,
    /// The instance the user holds (unique across users).
    pub instance_id: Option<InstanceId>,
    /// The claim of that instance; kept after `ready` (its command says the instance is dirty).
    pub claim: Option<ClaimProgress>,
    /// The shard (load balancer) the user is routed through: placed at the first claim, for
    /// life.
    pub shard: Option<String>,
    /// The user's rule and target group.
    pub routing: Routing,
    /// An undo under way (rollback or recover; a release is the `deleting` state).
    pub teardown: Option<TeardownKind>,
    /// A move under way (state `migrating`).
    pub moving: Option<MoveProgress>,
    /// The user's workspace volume, once the first claim created it.
    pub workspace: Option<Workspace>,
    /// Claim attempts rolled back so far.
    pub attempts: u32,
    pub error: Option<String>,
    pub requested_at: Millis,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub claimed_at: Option<Millis>,
    pub ready_at: Option<Millis>,
    pub version: i64,
}

impl UserRecord {
    /// The workspaces' volumes and GiB of `users` by use (attached, detached, asleep).
    pub fn count_volumes(
        users: &[UserRecord],
    ) -> std::collections::BTreeMap<crate::model::VolumeUse, crate::model::VolumeCount> {
        crate::model::count_volumes(users.iter().filter_map(|u| {
            u.workspace
                .as_ref()
                .map(|w| (w, u.state == UserState::Asleep))
        }))
    }

    /// A freshly requested user, queued.
    pub fn queued(
        user_id: UserId,
        tier: String,
        route: String,
        secret_arn: String,
        now: Millis,
    ) -> UserRecord {
        UserRecord {
            user_id,
            tier,
            route,
            state: UserState::Queued,
            secret_arn: Some(secret_arn),
            instance_id: None,
            claim: None,
            shard: None,
            routing: Routing::default(),
            teardown: None,
            moving: None,
            workspace: None,
            attempts: 0,
            error: None,
            requested_at: now,
            created_at: now,
            updated_at: now,
            claimed_at: None,
            ready_at: None,
            version: 0,
        }
    }

    /// After a teardown: the user holds nothing any more (no instance, claim, route
    /// resources, undo marker or move). Desired state, attempts, the error and the workspace
    /// (detached by then) stay.
    pub fn forget_placement(&mut self) {
        self.instance_id = None;
        self.claim = None;
        self.routing = Routing::default();
        self.teardown = None;
        self.moving = None;
        self.claimed_at = None;
        self.ready_at = None;
    }

    /// The instance a move is bringing the user to, once assigned.
    pub fn move_target(&self) -> Option<&InstanceId> {
        self.moving.as_ref().and_then(MoveProgress::target_instance)
    }
}

/// The `users` table's columns, as sqlx reads and binds them.
#[derive(Debug, sqlx::FromRow)]
struct UserColumns {
    user_id: String,
    tier: String,
    route: String,
    state: String,
    secret_arn: Option<String>,
    instance_id: Option<String>,
    claim_step: Option<String>,
    command_id: Option<String>,
    command_sent_at: Option<Millis>,
    target_group_arn: Option<String>,
    listener_arn: Option<String>,
    shard: Option<String>,
    rule_priority: Option<i64>,
    rule_arn: Option<String>,
    teardown: Option<String>,
    move_instance_id: Option<String>,
    move_step: Option<String>,
    move_command_id: Option<String>,
    move_command_sent_at: Option<Millis>,
    move_reason: Option<String>,
    move_started_at: Option<Millis>,
    move_attempts: i64,
    workspace_volume_id: Option<String>,
    workspace_token: Option<String>,
    workspace_zone: Option<String>,
    workspace_size_gib: Option<i64>,
    workspace_attached_to: Option<String>,
    workspace_stop_command_id: Option<String>,
    workspace_stop_sent_at: Option<Millis>,
    relocation_zone: Option<String>,
    relocation_token: Option<String>,
    relocation_snapshot_id: Option<String>,
    relocation_volume_id: Option<String>,
    attempts: i64,
    error: Option<String>,
    requested_at: Millis,
    created_at: Millis,
    updated_at: Millis,
    claimed_at: Option<Millis>,
    ready_at: Option<Millis>,
    version: i64,
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
            version: user.version,
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
        let move_step = parse_column(MoveStep::parse, row.move_step, field("move step"))?;
        let target = match (row.move_instance_id, move_step) {
            (Some(instance), Some(step)) => Some(MoveTarget {
                instance: InstanceId(instance),
                step,
                command: sent_command(row.move_command_id, row.move_command_sent_at),
            }),
            (None, None) => None,
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "user {id}: a move target needs both an instance and a step"
                )));
            }
        };
        let reason = parse_column(MoveReason::parse, row.move_reason, field("move reason"))?;
        let moving = match (reason, target) {
            (Some(reason), target) => Some(MoveProgress {
                reason,
                started_at: row.move_started_at.unwrap_or(row.updated_at),
                attempts: row.move_attempts as u32,
                target,
            }),
            (None, None) => None,
            (None, Some(_)) => {
                return Err(StoreError::Corrupt(format!(
                    "user {id}: a move target without a move reason"
                )));
            }
        };
        let relocation = match (row.relocation_zone, row.relocation_token) {
            (Some(to_zone), Some(client_token)) => Some(Relocation {
                to_zone,
                snapshot_id: row.relocation_snapshot_id,
                client_token,
                volume_id: row.relocation_volume_id,
            }),
            _ => None,
        };
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
            claim,
            shard: row.shard,
            routing: Routing {
                listener_arn: row.listener_arn,
                rule_priority: row.rule_priority.map(|p| p as u32),
                rule_arn: row.rule_arn,
                target_group_arn: row.target_group_arn,
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
            version: row.version,
        })
    }
}

/// Every user row, in queue order (also the reconciler's snapshot, `generations.rs`).
pub(super) async fn fetch_users(conn: &mut SqliteConnection) -> StoreResult<Vec<UserRecord>> {
    let rows =
        sqlx::query_as::<_, UserColumns>("SELECT * FROM users ORDER BY requested_at, user_id")
            .fetch_all(conn)
            .await?;
    rows.into_iter().map(UserRecord::try_from).collect()
}

impl Store {
    pub async fn get_user(&self, user: &UserId) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query_as::<_, UserColumns>("SELECT * FROM users WHERE user_id = $1")
            .bind(user.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(UserRecord::try_from).transpose()
    }

    pub async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        fetch_users(&mut *self.pool.acquire().await?).await
    }

    /// Inserts a new user. An existing user id is a `Conflict` (the caller re-reads it).
    pub async fn insert_user(&self, user: &UserRecord) -> StoreResult<()> {
        let result = sqlx::query(
            "INSERT INTO users (user_id, tier, route, state, secret_arn, attempts, requested_at,
                                created_at, updated_at, version)
             VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8, 0)",
        )
        .bind(user.user_id.as_str())
        .bind(&user.tier)
        .bind(&user.route)
        .bind(user.state.as_str())
        .bind(&user.secret_arn)
        .bind(user.requested_at)
        .bind(user.created_at)
        .bind(user.updated_at)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict(
                format!("user {} already exists", user.user_id),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes every mutable column of `user` if the row still has `user.version`; bumps the
    /// version in `user` on success. Returns false (and writes nothing) if the row changed.
    pub async fn update_user(&self, user: &mut UserRecord) -> StoreResult<bool> {
        let columns = UserColumns::from(&*user);
        let mut query = QueryBuilder::<Sqlite>::new("UPDATE users SET version = version + 1");
        // Every column by name, beside its value: no positional parameters to keep in step.
        macro_rules! set {
            ($($column:ident),+ $(,)?) => {
                $( query.push(concat!(", ", stringify!($column), " = ")).push_bind(columns.$column); )+
            };
        }
        set!(
            state,
            secret_arn,
            instance_id,
            claim_step,
            command_id,
            command_sent_at,
            target_group_arn,
            listener_arn,
            shard,
            rule_priority,
            rule_arn,
            teardown,
            move_instance_id,
            move_step,
            move_command_id,
            move_command_sent_at,
            move_reason,
            move_started_at,
            move_attempts,
            workspace_volume_id,
            workspace_token,
            workspace_zone,
            workspace_size_gib,
            workspace_attached_to,
            workspace_stop_command_id,
            workspace_stop_sent_at,
            relocation_zone,
            relocation_token,
            relocation_snapshot_id,
            relocation_volume_id,
            attempts,
            error,
            requested_at,
            updated_at,
            claimed_at,
            ready_at,
        );
        query
            .push(" WHERE user_id = ")
            .push_bind(user.user_id.as_str())
            .push(" AND version = ")
            .push_bind(user.version);
        let result = match query.build().execute(&self.pool).await {
            Ok(result) => result,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!(
                    "user {}: {}",
                    user.user_id,
                    e.message()
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let applied = result.rows_affected() == 1;
        if applied {
            user.version += 1;
        }
        Ok(applied)
    }
    /// Marks a user deleting, whatever it was doing. Returns the updated row, or None if there is
    /// no such user.
    pub async fn mark_deleting(
        &self,
        user: &UserId,
        now: Millis,
    ) -> StoreResult<Option<UserRecord>> {
        sqlx::query(
            "UPDATE users SET state = 'deleting', updated_at = $1, version = version + 1
             WHERE user_id = $2 AND state <> 'deleting'",
        )
        .bind(now)
        .bind(user.as_str())
        .execute(&self.pool)
        .await?;
        self.get_user(user).await
    }

    /// Puts a failed user back in the queue (a new PUT retries). Returns whether it applied.
    pub async fn requeue_failed(&self, user: &UserId, now: Millis) -> StoreResult<bool> {
        let result = sqlx::query(
            "UPDATE users SET state = 'queued', attempts = 0, error = NULL, requested_at = $1,
                updated_at = $1, version = version + 1
             WHERE user_id = $2 AND state = 'failed'",
        )
        .bind(now)
        .bind(user.as_str())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Asks a ready user to sleep (`ready` → `sleeping`). Returns whether it applied.
    pub async fn request_sleep(&self, user: &UserId, now: Millis) -> StoreResult<bool> {
        let result = sqlx::query(
            "UPDATE users SET state = 'sleeping', updated_at = $1, version = version + 1
             WHERE user_id = $2 AND state = 'ready'",
        )
        .bind(now)
        .bind(user.as_str())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Wakes an asleep user (`asleep` → `queued`, at the back of the queue). Returns whether it
    /// applied.
    pub async fn wake(&self, user: &UserId, now: Millis) -> StoreResult<bool> {
        let result = sqlx::query(
            "UPDATE users SET state = 'queued', attempts = 0, error = NULL, requested_at = $1,
                updated_at = $1, version = version + 1
             WHERE user_id = $2 AND state = 'asleep'",
        )
        .bind(now)
        .bind(user.as_str())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Deletes a user row if it still has `version`.
    pub async fn delete_user(&self, user: &UserRecord) -> StoreResult<bool> {
        let result = sqlx::query("DELETE FROM users WHERE user_id = $1 AND version = $2")
            .bind(user.user_id.as_str())
            .bind(user.version)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Atomically gives an `available` instance to a `queued` user, placed on `shard` (its own
    /// already, or the one `plan` chose with it): both change or neither does. Returns false if
    /// either has moved on (another pass, a DELETE) in the meantime.
    pub async fn assign(
        &self,
        user: &UserId,
        instance: &InstanceId,
        shard: &str,
        now: Millis,
    ) -> StoreResult<bool> {
        self.take_spare(
            "UPDATE users SET state = 'provisioning', instance_id = $1, claim_step = 'assigned',
                command_id = NULL, command_sent_at = NULL, error = NULL, claimed_at = $2,
                updated_at = $2, shard = $4, version = version + 1
             WHERE user_id = $3 AND state = 'queued' AND instance_id IS NULL",
            user,
            instance,
            Some(shard),
            now,
        )
        .await
    }

    /// Gives a migrating user `instance` (a spare) as its move target, guarded like `assign`.
    pub async fn assign_move(
        &self,
        user: &UserId,
        instance: &InstanceId,
        now: Millis,
    ) -> StoreResult<bool> {
        self.take_spare(
            "UPDATE users SET move_instance_id = $1, move_step = 'assigned',
                move_command_id = NULL, move_command_sent_at = NULL, updated_at = $2,
                version = version + 1
             WHERE user_id = $3 AND state = 'migrating' AND move_instance_id IS NULL",
            user,
            instance,
            None,
            now,
        )
        .await
    }

    /// One transaction: the spare goes `available` → `assigned` and `user_update` ($1 the
    /// instance, $2 now, $3 the user, $4 the shard) hands it to the user; false, with nothing
    /// changed, if either row was not in the expected state.
    async fn take_spare(
        &self,
        user_update: &'static str,
        user: &UserId,
        instance: &InstanceId,
        shard: Option<&str>,
        now: Millis,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let taken = sqlx::query(
            "UPDATE instances SET status = 'assigned', status_since = $1
             WHERE instance_id = $2 AND status = 'available'",
        )
        .bind(now)
        .bind(&instance.0)
        .execute(&mut *tx)
        .await?;
        if taken.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        let mut claim = sqlx::query(user_update)
            .bind(&instance.0)
            .bind(now)
            .bind(user.as_str());
        if let Some(shard) = shard {
            claim = claim.bind(shard);
        }
        let claimed = claim.execute(&mut *tx).await?;
        if claimed.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Rule priorities in use on a listener, as recorded in the store.
    pub async fn used_priorities(&self, listener_arn: &str) -> StoreResult<Vec<u32>> {
        let rows = sqlx::query(
            "SELECT rule_priority FROM users WHERE listener_arn = $1 AND rule_priority IS NOT NULL",
        )
        .bind(listener_arn)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<i64, _>("rule_priority")? as u32))
            .collect()
    }

    /// The users placed on each shard, failed ones aside (their routes were undone).
    pub async fn users_per_shard(&self) -> StoreResult<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT shard, COUNT(*) AS n FROM users WHERE shard IS NOT NULL AND state <> 'failed'
             GROUP BY shard",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("shard")?, r.try_get("n")?)))
            .collect()
    }

    /// Places users on the configured shards (`(name, listener ARN)` pairs) at start-up: a user
    /// whose rule is on a shard's listener belongs to that shard, whatever it was called before
    /// (routed before shards existed, or a shard renamed); a claim in flight from before shards
    /// existed (no listener recorded yet) goes to the first shard, the only one such a deployment
    /// had. Returns how many rows changed.
    pub async fn place_routed_users(&self, shards: &[(String, String)]) -> StoreResult<u64> {
        let mut placed = 0;
        for (name, listener) in shards {
            placed += sqlx::query(
                "UPDATE users SET shard = $1, version = version + 1
                 WHERE listener_arn = $2 AND (shard IS NULL OR shard <> $1)",
            )
            .bind(name)
            .bind(listener)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        if let Some((first, _)) = shards.first() {
            placed += sqlx::query(
                "UPDATE users SET shard = $1, version = version + 1
                 WHERE shard IS NULL AND state NOT IN ('queued', 'failed')",
            )
            .bind(first)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        Ok(placed)
    }
}
