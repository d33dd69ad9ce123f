//! Slots of shared instances (ARCHITECTURE.md, "Shared tiers"): a tier of `slots_per_instance`
//! above 1 puts that many users on one instance, each holding `(instance_id, slot)` (or, moving
//! there, `(move_instance_id, move_slot)`; both unique, migration 0017).
//!
//! Owns: taking a slot (for a claim or a move) in one transaction with the instance's state, the
//! retirement of an instance its last user is leaving, and the slots that must be wiped before
//! anyone takes them (`slot_wipes`). Must not: hand out a slot someone holds, is moving to or left
//! unwiped; retire an instance another user holds or is moving to.
//!
//! Both databases: every statement that takes a slot or retires a shared instance first locks its
//! instance row (PostgreSQL: `SELECT … FOR UPDATE`, which waits; SQLite: the guarded UPDATE is the
//! transaction's first write, and SQLite has one writer), so the check that follows reads every
//! claim and leave committed before it (READ COMMITTED takes a new snapshot per statement).

use super::{Pool, Store, StoreError, StoreResult};
use crate::model::{InstanceId, Millis, SentCommand, UserId};
use sqlx::Row;

/// A slot a user left with something of theirs on it, until its wipe succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotWipe {
    pub instance_id: InstanceId,
    pub slot: u32,
    /// Whose container, network, volume and mount point it removes.
    pub user_id: UserId,
    /// The user's workspace, if the wipe must unmount it (detached by the daemon afterwards).
    pub volume_id: Option<String>,
    /// The wipe command, once sent.
    pub command: Option<SentCommand>,
    pub created_at: Millis,
}

/// What became of a shared instance a user left ([`Store::vacate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vacated {
    /// Another user holds it or moves to it (or it is no longer `assigned`): unchanged.
    Held,
    /// No start ever reached it: back in the pool, `initializing`.
    Returned,
    /// `terminating`: the caller terminates it.
    Retired,
}

/// Who takes a slot: a queued user's claim, or a migrating user's move.
#[derive(Debug, Clone, Copy)]
pub enum SlotTaker<'a> {
    Claim { shard: &'a str },
    Move,
}

const CLAIM_SLOT: &str = "UPDATE users SET state = 'provisioning', instance_id = $1, slot = $4,
        claim_step = 'assigned', command_id = NULL, command_sent_at = NULL, error = NULL,
        claimed_at = $2, updated_at = $2, shard = $5, prewired_route = NULL,
        route_switched_at = NULL, version = version + 1
     WHERE user_id = $3 AND state = 'queued' AND instance_id IS NULL";

const MOVE_SLOT: &str = "UPDATE users SET move_instance_id = $1, move_slot = $4,
        move_step = 'assigned', move_command_id = NULL, move_command_sent_at = NULL,
        updated_at = $2, version = version + 1
     WHERE user_id = $3 AND state = 'migrating' AND move_instance_id IS NULL
       AND (instance_id IS NULL OR instance_id <> $1)";

/// Whether anyone holds the slot, moves to it, or left it unwiped.
const SLOT_TAKEN: &str = "SELECT
        (SELECT COUNT(*) FROM users WHERE (instance_id = $1 AND slot = $2)
                                       OR (move_instance_id = $1 AND move_slot = $2))
      + (SELECT COUNT(*) FROM slot_wipes WHERE instance_id = $1 AND slot = $2) AS n";

impl Store {
    /// Gives `user` slot `slot` (of `slots`) of `instance`, a shared tier's instance that is
    /// `available` or already `assigned` to others, not asked to recycle: for a claim (the user
    /// is queued and holds nothing) or a move (the user is migrating to another instance than
    /// its own). One transaction; false, with nothing changed, when anything stands in the way.
    pub async fn take_slot(
        &self,
        taker: SlotTaker<'_>,
        user: &UserId,
        (instance, slot, slots): (&InstanceId, u32, u32),
        now: Millis,
    ) -> StoreResult<bool> {
        if slot >= slots {
            return Ok(false);
        }
        let (update, shard) = match taker {
            SlotTaker::Claim { shard } => (CLAIM_SLOT, Some(shard)),
            SlotTaker::Move => (MOVE_SLOT, None),
        };
        macro_rules! take {
            ($tx:ident) => {{
                // An `assigned` instance nobody holds any more is on its way out (its last
                // user's leave retires it, or the orphan rule); and a user whose own wipe is
                // pending there would have it remove the container it is about to start.
                let held = sqlx::query(
                    "UPDATE instances SET status = 'assigned',
                        status_since = CASE WHEN status = 'available' THEN $1 ELSE status_since END
                     WHERE instance_id = $2 AND recycle_requested_at IS NULL
                       AND (status = 'available'
                            OR (status = 'assigned' AND EXISTS (SELECT 1 FROM users
                                WHERE instance_id = $2 OR move_instance_id = $2)))
                       AND NOT EXISTS (SELECT 1 FROM slot_wipes
                                       WHERE instance_id = $2 AND user_id = $3)",
                )
                .bind(now)
                .bind(&instance.0)
                .bind(user.as_str())
                .execute(&mut *$tx)
                .await?;
                if held.rows_affected() != 1 {
                    $tx.rollback().await?;
                    return Ok(false);
                }
                let taken: i64 = sqlx::query(SLOT_TAKEN)
                    .bind(&instance.0)
                    .bind(i64::from(slot))
                    .fetch_one(&mut *$tx)
                    .await?
                    .try_get("n")?;
                if taken > 0 {
                    $tx.rollback().await?;
                    return Ok(false);
                }
                let mut query = sqlx::query(update)
                    .bind(&instance.0)
                    .bind(now)
                    .bind(user.as_str())
                    .bind(i64::from(slot));
                if let Some(shard) = shard {
                    query = query.bind(shard);
                }
                if query.execute(&mut *$tx).await?.rows_affected() != 1 {
                    $tx.rollback().await?;
                    return Ok(false);
                }
                $tx.commit().await?;
                Ok(true)
            }};
        }
        let result: StoreResult<bool> = match &self.pool {
            Pool::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                take!(tx)
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                lock_instance(&mut tx, instance).await?;
                take!(tx)
            }
        };
        // The unique indexes stand behind the check: a violation is a lost race, not an error.
        match result {
            Err(StoreError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {
                Ok(false)
            }
            other => other,
        }
    }

    /// What becomes of the shared, `assigned` `instance` as `leaving` goes: nothing while another
    /// user holds it or moves to it (the last of them decides); else it is retired
    /// (`terminating`), or, when the caller `may_return` it (not an instance lost or dying), no
    /// start ever reached it (`started_at`), nothing is left to wipe and nobody asked it to
    /// recycle, given back to the pool (`initializing`, for a fresh probe: its claims all
    /// rolled back before their starts).
    pub async fn vacate(
        &self,
        instance: &InstanceId,
        leaving: &UserId,
        may_return: bool,
        now: Millis,
    ) -> StoreResult<Vacated> {
        const VACATE: &str = "UPDATE instances SET status_since = $2,
                status = CASE WHEN $4 AND started_at IS NULL AND recycle_requested_at IS NULL
                                   AND NOT EXISTS (SELECT 1 FROM slot_wipes WHERE instance_id = $1)
                              THEN 'initializing' ELSE 'terminating' END
             WHERE instance_id = $1 AND status = 'assigned'
               AND NOT EXISTS (SELECT 1 FROM users
                               WHERE (instance_id = $1 OR move_instance_id = $1)
                                 AND user_id <> $3)
             RETURNING status";
        macro_rules! query {
            () => {
                sqlx::query_scalar::<_, String>(VACATE)
                    .bind(&instance.0)
                    .bind(now)
                    .bind(leaving.as_str())
                    .bind(may_return)
            };
        }
        let status = match &self.pool {
            Pool::Sqlite(pool) => query!().fetch_optional(pool).await?,
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                lock_instance(&mut tx, instance).await?;
                let status = query!().fetch_optional(&mut *tx).await?;
                tx.commit().await?;
                status
            }
        };
        Ok(match status.as_deref() {
            None => Vacated::Held,
            Some("initializing") => Vacated::Returned,
            Some(_) => Vacated::Retired,
        })
    }

    /// Records a slot to wipe (a second record of it is ignored).
    pub async fn add_slot_wipe(&self, wipe: &SlotWipe) -> StoreResult<()> {
        execute!(
            self,
            sqlx::query(
                "INSERT INTO slot_wipes (instance_id, slot, user_id, volume_id, created_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (instance_id, slot) DO NOTHING",
            )
            .bind(&wipe.instance_id.0)
            .bind(i64::from(wipe.slot))
            .bind(wipe.user_id.as_str())
            .bind(&wipe.volume_id)
            .bind(wipe.created_at)
        );
        Ok(())
    }

    /// Every slot to wipe, oldest first.
    pub async fn slot_wipes(&self) -> StoreResult<Vec<SlotWipe>> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT instance_id, slot, user_id, volume_id, command_id, sent_at, created_at
                 FROM slot_wipes ORDER BY created_at, instance_id, slot",
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    let user: String = r.try_get("user_id")?;
                    let sent_at: Option<Millis> = r.try_get("sent_at")?;
                    Ok(SlotWipe {
                        instance_id: InstanceId(r.try_get("instance_id")?),
                        slot: r.try_get::<i64, _>("slot")? as u32,
                        user_id: UserId::parse(&user).map_err(|e| {
                            StoreError::Corrupt(format!("slot wipe of {user:?}: {e}"))
                        })?,
                        volume_id: r.try_get("volume_id")?,
                        command: sent_at
                            .map(|sent_at| -> StoreResult<SentCommand> {
                                Ok(SentCommand {
                                    id: r.try_get("command_id")?,
                                    sent_at,
                                })
                            })
                            .transpose()?,
                        created_at: r.try_get("created_at")?,
                    })
                })
                .collect()
        })
    }

    /// Records the wipe command of a slot, before (without an id) and after it is sent.
    pub async fn set_slot_wipe_command(
        &self,
        instance: &InstanceId,
        slot: u32,
        command: &SentCommand,
    ) -> StoreResult<()> {
        execute!(
            self,
            sqlx::query(
                "UPDATE slot_wipes SET command_id = $3, sent_at = $4
                 WHERE instance_id = $1 AND slot = $2",
            )
            .bind(&instance.0)
            .bind(i64::from(slot))
            .bind(&command.id)
            .bind(command.sent_at)
        );
        Ok(())
    }

    /// Forgets a slot's wipe: it succeeded (the slot is free), or its instance is gone.
    pub async fn delete_slot_wipe(&self, instance: &InstanceId, slot: u32) -> StoreResult<()> {
        execute!(
            self,
            sqlx::query("DELETE FROM slot_wipes WHERE instance_id = $1 AND slot = $2")
                .bind(&instance.0)
                .bind(i64::from(slot))
        );
        Ok(())
    }
}

/// Locks an instance's row for the rest of the transaction (PostgreSQL), waiting for a writer
/// that holds it: what follows sees that writer's work.
async fn lock_instance(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    instance: &InstanceId,
) -> StoreResult<()> {
    sqlx::query("SELECT 1 FROM instances WHERE instance_id = $1 FOR UPDATE")
        .bind(&instance.0)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
