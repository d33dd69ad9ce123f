//! Users: desired state plus the typed progress of each user's claim, move and teardown.
//!
//! A row maps to [`UserRecord`] through `UserColumns` (`user_columns.rs`), its flat column
//! form.

use super::user_columns::UserColumns;
use super::{Pool, Store, StoreError, StoreResult};
use crate::model::{
    ClaimProgress, InstanceId, Millis, MoveProgress, Routing, TeardownKind, UserId, UserState,
    Workspace,
};
use sqlx::{QueryBuilder, Row};

/// A user's row: desired state plus the progress of whatever is under way.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub user_id: UserId,
    pub tier: String,
    pub route: String,
    pub state: UserState,
    pub secret_arn: Option<String>,
    /// The instance the user holds (with `slot`, unique across users).
    pub instance_id: Option<InstanceId>,
    /// Which of that instance's slots the user holds: its host port, Docker network and
    /// workspace device follow from it (0 on a dedicated tier's instance).
    pub slot: u32,
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
    /// When the user's last move was given up before its point of no return (it stayed where
    /// it was): a shared instance asked to recycle before then does not ask it to move again.
    pub move_abandoned_at: Option<Millis>,
    /// Where the user's state changes are POSTed (`PUT`'s `callback_url`; the API alone writes
    /// it: `Store::set_callback_url`).
    pub callback_url: Option<String>,
    /// The health watch's record (`Store::set_health` alone writes it).
    pub health: crate::model::HealthWatch,
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

    /// The users placed on each shard (failed ones aside: their routes were undone), and how
    /// many queued users wait for a route (`no_route_capacity`).
    pub fn count_per_shard(users: &[UserRecord]) -> (std::collections::BTreeMap<&str, u32>, u32) {
        let mut on = std::collections::BTreeMap::new();
        let mut waiting = 0;
        for user in users {
            if let Some(shard) = user.shard.as_deref()
                && user.state != UserState::Failed
            {
                *on.entry(shard).or_default() += 1;
            }
            if user.state == UserState::Queued
                && user.error.as_deref() == Some(crate::model::NO_ROUTE_CAPACITY)
            {
                waiting += 1;
            }
        }
        (on, waiting)
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
            slot: 0,
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
            move_abandoned_at: None,
            callback_url: None,
            health: Default::default(),
            version: 0,
        }
    }

    /// After a teardown: the user holds nothing any more (no instance, claim, route
    /// resources, undo marker or move). Desired state, attempts, the error and the workspace
    /// (detached by then) stay.
    pub fn forget_placement(&mut self) {
        self.instance_id = None;
        self.slot = 0;
        self.claim = None;
        self.routing = Routing::default();
        self.teardown = None;
        self.moving = None;
        self.claimed_at = None;
        self.ready_at = None;
    }

    /// The instance a move is bringing the user to, once assigned.
    /// The slot the user holds on `instance`: its own instance's, or its move target's.
    pub fn slot_on(&self, instance: &InstanceId) -> u32 {
        match self.moving.as_ref().and_then(|m| m.target.as_ref()) {
            Some(target) if &target.instance == instance => target.slot,
            _ => self.slot,
        }
    }

    pub fn move_target(&self) -> Option<&InstanceId> {
        self.moving.as_ref().and_then(MoveProgress::target_instance)
    }
}

/// Every user row, in queue order (also the reconciler's snapshot, `generations.rs`).
pub(super) const SELECT_ALL: &str = "SELECT * FROM users ORDER BY requested_at, user_id";

/// The claim's half of handing a pre-wired spare's route to its user ($1 the instance, $2 the
/// user): only a complete warm route on the user's shard, only to a user with no route.
/// What [`Store::take_spare`] hands the spare to.
enum Taking<'a> {
    /// A queued user's claim, placed on `shard`.
    Claim {
        shard: &'a str,
        blank_workspace_gib: Option<u32>,
    },
    /// A migrating user's move target.
    Move,
}

/// In a claim's transaction ($1 the instance, $2 the user, $3 the tier's workspace size): a user
/// with no workspace yet takes the spare's blank one, attached where it is, unless a user's
/// workspace already is that volume (a claim rolled back before the volume was detached).
const TAKE_BLANK_WORKSPACE: &str = "UPDATE users SET
        workspace_volume_id = (SELECT blank_volume_id FROM instances WHERE instance_id = $1),
        workspace_token = 'sp-blank-' || (SELECT blank_volume_id FROM instances
                                          WHERE instance_id = $1),
        workspace_zone = (SELECT availability_zone FROM instances WHERE instance_id = $1),
        workspace_size_gib = $3,
        workspace_attached_to = $1
     WHERE user_id = $2 AND workspace_token IS NULL AND workspace_volume_id IS NULL
        AND EXISTS (SELECT 1 FROM instances WHERE instance_id = $1
                    AND blank_volume_id IS NOT NULL AND availability_zone IS NOT NULL)
        AND NOT EXISTS (SELECT 1 FROM users AS holder
                        WHERE holder.workspace_volume_id = (SELECT blank_volume_id FROM instances
                                                            WHERE instance_id = $1))";

const TAKE_WARM_ROUTE: &str = "UPDATE users SET
        listener_arn = (SELECT warm_listener_arn FROM instances WHERE instance_id = $1),
        rule_priority = (SELECT warm_priority FROM instances WHERE instance_id = $1),
        rule_arn = (SELECT warm_rule_arn FROM instances WHERE instance_id = $1),
        target_group_arn = (SELECT warm_target_group_arn FROM instances WHERE instance_id = $1),
        prewired_route = 'warm'
     WHERE user_id = $2 AND listener_arn IS NULL AND rule_priority IS NULL AND rule_arn IS NULL
        AND target_group_arn IS NULL
        AND shard = (SELECT warm_shard FROM instances
                     WHERE instance_id = $1 AND warm_rule_arn IS NOT NULL
                        AND warm_target_group_arn IS NOT NULL AND warm_listener_arn IS NOT NULL
                        AND warm_priority IS NOT NULL)";

impl Store {
    pub async fn get_user(&self, user: &UserId) -> StoreResult<Option<UserRecord>> {
        let row = on_pool!(self, |pool| sqlx::query_as::<_, UserColumns>(
            "SELECT * FROM users WHERE user_id = $1"
        )
        .bind(user.as_str())
        .fetch_optional(pool)
        .await?);
        row.map(UserRecord::try_from).transpose()
    }

    pub async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        let rows = on_pool!(self, |pool| sqlx::query_as::<_, UserColumns>(SELECT_ALL)
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(UserRecord::try_from).collect()
    }

    /// Inserts a new user. An existing user id is a `Conflict` (the caller re-reads it).
    pub async fn insert_user(&self, user: &UserRecord) -> StoreResult<()> {
        let result = on_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO users (user_id, tier, route, state, secret_arn, attempts, requested_at,
                                created_at, updated_at, version, callback_url)
             VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8, 0, $9)",
        )
        .bind(user.user_id.as_str())
        .bind(&user.tier)
        .bind(&user.route)
        .bind(user.state.as_str())
        .bind(&user.secret_arn)
        .bind(user.requested_at)
        .bind(user.created_at)
        .bind(user.updated_at)
        .bind(&user.callback_url)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
        });
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
        // One builder text for both databases: `push_bind` writes each one's placeholder.
        let result = on_pool!(self, |pool| {
            let mut query = QueryBuilder::new("UPDATE users SET version = version + 1");
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
                slot,
                claim_step,
                command_id,
                command_sent_at,
                target_group_arn,
                listener_arn,
                shard,
                rule_priority,
                rule_arn,
                prewired_route,
                route_switched_at,
                teardown,
                move_instance_id,
                move_slot,
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
                move_abandoned_at,
            );
            query
                .push(" WHERE user_id = ")
                .push_bind(user.user_id.as_str())
                .push(" AND version = ")
                .push_bind(user.version);
            query
                .build()
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        });
        let changed = match result {
            Ok(changed) => changed,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!(
                    "user {}: {}",
                    user.user_id,
                    e.message()
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let applied = changed == 1;
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
        execute!(
            self,
            sqlx::query(
                "UPDATE users SET state = 'deleting', updated_at = $1, version = version + 1
                 WHERE user_id = $2 AND state <> 'deleting'",
            )
            .bind(now)
            .bind(user.as_str())
        );
        self.get_user(user).await
    }

    /// Puts a failed user back in the queue (a new PUT retries). Returns whether it applied.
    pub async fn requeue_failed(&self, user: &UserId, now: Millis) -> StoreResult<bool> {
        self.requeue_from(user, UserState::Failed, now).await
    }

    /// Asks a ready user to sleep (`ready` → `sleeping`). Returns whether it applied.
    pub async fn request_sleep(&self, user: &UserId, now: Millis) -> StoreResult<bool> {
        let changed = execute!(
            self,
            sqlx::query(
                "UPDATE users SET state = 'sleeping', updated_at = $1, version = version + 1
                 WHERE user_id = $2 AND state = 'ready'",
            )
            .bind(now)
            .bind(user.as_str())
        );
        Ok(changed == 1)
    }

    /// Wakes an asleep user (`asleep` → `queued`, at the back of the queue). Returns whether it
    /// applied.
    pub async fn wake(&self, user: &UserId, now: Millis) -> StoreResult<bool> {
        self.requeue_from(user, UserState::Asleep, now).await
    }

    /// Puts a user in `from` at the back of the queue with its attempts and error cleared.
    async fn requeue_from(&self, user: &UserId, from: UserState, now: Millis) -> StoreResult<bool> {
        let changed = execute!(
            self,
            sqlx::query(
                "UPDATE users SET state = 'queued', attempts = 0, error = NULL, requested_at = $1,
                    updated_at = $1, version = version + 1
                 WHERE user_id = $2 AND state = $3",
            )
            .bind(now)
            .bind(user.as_str())
            .bind(from.as_str())
        );
        Ok(changed == 1)
    }

    /// Deletes a user row if it still has `version`.
    pub async fn delete_user(&self, user: &UserRecord) -> StoreResult<bool> {
        let deleted = execute!(
            self,
            sqlx::query("DELETE FROM users WHERE user_id = $1 AND version = $2")
                .bind(user.user_id.as_str())
                .bind(user.version)
        );
        Ok(deleted == 1)
    }

    /// Atomically gives an `available` instance to a `queued` user, placed on `shard` (its own
    /// already, or the one `plan` chose with it): both change or neither does. Returns false if
    /// either has moved on (another pass, a DELETE) in the meantime.
    ///
    /// A pre-wired spare's route (target group, warm rule, priority) moves into the user's row in
    /// the same transaction when the spare was wired on the user's shard and the user has no
    /// route of its own (a woken user keeps its rule): the user's `prewired_route` becomes
    /// `warm`. Otherwise the spare keeps its warm route, which the pool then removes.
    pub async fn assign(
        &self,
        user: &UserId,
        instance: &InstanceId,
        shard: &str,
        now: Millis,
    ) -> StoreResult<bool> {
        self.claim_spare(user, instance, shard, None, now).await
    }

    /// [`Store::assign`], and with `blank_workspace_gib` a user with no workspace yet also
    /// takes the spare's blank workspace (ARCHITECTURE.md, "Blank workspaces") as its own, of
    /// that size, attached where it is; unless a user's workspace already is that volume.
    pub async fn claim_spare(
        &self,
        user: &UserId,
        instance: &InstanceId,
        shard: &str,
        blank_workspace_gib: Option<u32>,
        now: Millis,
    ) -> StoreResult<bool> {
        self.take_spare(
            Taking::Claim {
                shard,
                blank_workspace_gib,
            },
            "UPDATE users SET state = 'provisioning', instance_id = $1, claim_step = 'assigned',
                command_id = NULL, command_sent_at = NULL, error = NULL, claimed_at = $2,
                updated_at = $2, shard = $4, prewired_route = NULL, route_switched_at = NULL,
                version = version + 1
             WHERE user_id = $3 AND state = 'queued' AND instance_id IS NULL",
            user,
            instance,
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
            Taking::Move,
            "UPDATE users SET move_instance_id = $1, move_step = 'assigned',
                move_command_id = NULL, move_command_sent_at = NULL, updated_at = $2,
                version = version + 1
             WHERE user_id = $3 AND state = 'migrating' AND move_instance_id IS NULL",
            user,
            instance,
            now,
        )
        .await
    }

    /// One transaction: the spare goes `available` → `assigned` and `user_update` ($1 the
    /// instance, $2 now, $3 the user, $4 the shard) hands it to the user; false, with nothing
    /// changed, if either row was not in the expected state.
    ///
    /// SQLite has one writer at a time: the guarded UPDATE of the instance is the claim.
    /// PostgreSQL first locks the instance row with `FOR UPDATE SKIP LOCKED`, so a claim that
    /// finds the spare being taken by another transaction gives up at once instead of waiting
    /// for it; the user's UPDATE, guarded by its state, then waits for (and re-reads) a row
    /// another writer holds, and a failed guard rolls the instance back.
    async fn take_spare(
        &self,
        taking: Taking<'_>,
        user_update: &'static str,
        user: &UserId,
        instance: &InstanceId,
        now: Millis,
    ) -> StoreResult<bool> {
        let (shard, blank_workspace_gib) = match taking {
            Taking::Claim {
                shard,
                blank_workspace_gib,
            } => (Some(shard), blank_workspace_gib),
            Taking::Move => (None, None),
        };
        // The shared part: take the spare, then hand it to the user, both or neither.
        macro_rules! take_and_claim {
            ($tx:ident) => {{
                let taken = sqlx::query(
                    "UPDATE instances SET status = 'assigned', status_since = $1
                     WHERE instance_id = $2 AND status = 'available'
                       AND recycle_requested_at IS NULL",
                )
                .bind(now)
                .bind(&instance.0)
                .execute(&mut *$tx)
                .await?;
                if taken.rows_affected() != 1 {
                    $tx.rollback().await?;
                    return Ok(false);
                }
                let mut claim = sqlx::query(user_update)
                    .bind(&instance.0)
                    .bind(now)
                    .bind(user.as_str());
                if let Some(shard) = shard {
                    claim = claim.bind(shard);
                }
                if claim.execute(&mut *$tx).await?.rows_affected() != 1 {
                    $tx.rollback().await?;
                    return Ok(false);
                }
                if shard.is_some() {
                    let moved = sqlx::query(TAKE_WARM_ROUTE)
                        .bind(&instance.0)
                        .bind(user.as_str())
                        .execute(&mut *$tx)
                        .await?;
                    if moved.rows_affected() == 1 {
                        sqlx::query(
                            "UPDATE instances SET warm_shard = NULL, warm_listener_arn = NULL,
                                warm_priority = NULL, warm_target_group_arn = NULL,
                                warm_rule_arn = NULL
                             WHERE instance_id = $1",
                        )
                        .bind(&instance.0)
                        .execute(&mut *$tx)
                        .await?;
                    }
                }
                if let Some(size) = blank_workspace_gib {
                    sqlx::query(TAKE_BLANK_WORKSPACE)
                        .bind(&instance.0)
                        .bind(user.as_str())
                        .bind(i64::from(size))
                        .execute(&mut *$tx)
                        .await?;
                }
                $tx.commit().await?;
                Ok(true)
            }};
        }
        match &self.pool {
            Pool::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                take_and_claim!(tx)
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let locked = sqlx::query(
                    "SELECT instance_id FROM instances
                     WHERE instance_id = $1 AND status = 'available'
                       AND recycle_requested_at IS NULL
                     FOR UPDATE SKIP LOCKED",
                )
                .bind(&instance.0)
                .fetch_optional(&mut *tx)
                .await?;
                if locked.is_none() {
                    tx.rollback().await?;
                    return Ok(false);
                }
                take_and_claim!(tx)
            }
        }
    }

    /// Rule priorities in use on a listener, as recorded in the store.
    pub async fn used_priorities(&self, listener_arn: &str) -> StoreResult<Vec<u32>> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT rule_priority FROM users
                 WHERE listener_arn = $1 AND rule_priority IS NOT NULL
                 UNION ALL
                 SELECT warm_priority FROM instances
                 WHERE warm_listener_arn = $1 AND warm_priority IS NOT NULL",
            )
            .bind(listener_arn)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| Ok(r.try_get::<i64, _>("rule_priority")? as u32))
                .collect()
        })
    }

    /// The users placed on each shard, failed ones aside (their routes were undone).
    pub async fn users_per_shard(&self) -> StoreResult<Vec<(String, i64)>> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT shard, COUNT(*) AS n FROM users
                 WHERE shard IS NOT NULL AND state <> 'failed'
                 GROUP BY shard",
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| Ok((r.try_get("shard")?, r.try_get("n")?)))
                .collect()
        })
    }

    /// Places users on the configured shards (`(name, listener ARN)` pairs) at start-up: a user
    /// whose rule is on a shard's listener belongs to that shard, whatever it was called before
    /// (routed before shards existed, or a shard renamed); a claim in flight from before shards
    /// existed (no listener recorded yet) goes to the first shard, the only one such a deployment
    /// had. Returns how many rows changed.
    pub async fn place_routed_users(&self, shards: &[(String, String)]) -> StoreResult<u64> {
        let mut placed = 0;
        for (name, listener) in shards {
            placed += execute!(
                self,
                sqlx::query(
                    "UPDATE users SET shard = $1, version = version + 1
                     WHERE listener_arn = $2 AND (shard IS NULL OR shard <> $1)",
                )
                .bind(name)
                .bind(listener)
            );
        }
        if let Some((first, _)) = shards.first() {
            placed += execute!(
                self,
                sqlx::query(
                    "UPDATE users SET shard = $1, version = version + 1
                     WHERE shard IS NULL AND state NOT IN ('queued', 'failed')",
                )
                .bind(first)
            );
        }
        Ok(placed)
    }
}
