//! On-call's drains (`drains`, migration 0015): created and cancelled by the API, their
//! progress written by the leader's reconciler (`reconcile::drains`); and the rolling upgrades
//! that start `outdated` drains (`rollouts`, migration 0016).

use super::{Store, StoreError, StoreResult};
use crate::model::{Drain, DrainSelector, DrainState, InstanceId, Millis, UserId};
use sqlx::Row;

/// The insert of a new drain (its `id` is ignored), returning its id.
macro_rules! insert_drain {
    ($drain:expr) => {{
        let (requested, failed_users) = progress_json($drain);
        sqlx::query_scalar(
            "INSERT INTO drains (selector, max_concurrent_moves, max_failures, state, moved, \
             failed, requested, failed_users, created_by, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(selector_json(&$drain.selector))
        .bind(i64::from($drain.max_concurrent_moves))
        .bind(i64::from($drain.max_failures))
        .bind($drain.state.as_str())
        .bind(i64::from($drain.moved))
        .bind(i64::from($drain.failed))
        .bind(requested)
        .bind(failed_users)
        .bind(&$drain.created_by)
        .bind($drain.created_at)
        .bind($drain.updated_at)
    }};
}

/// What a tier last rolled out to: its image and launch templates (`fingerprint`), and the
/// `outdated` drain that moved its users there, if it was a change.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub tier: String,
    pub fingerprint: String,
    pub drain_id: Option<i64>,
    pub updated_at: Millis,
}

const COLUMNS: &str = "id, selector, max_concurrent_moves, max_failures, state, moved, failed, \
                       requested, failed_users, created_by, created_at, updated_at";

impl Store {
    /// Records a new drain (its `id` is ignored); returns it with its id.
    pub async fn insert_drain(&self, drain: &Drain) -> StoreResult<Drain> {
        let id: i64 = on_pool!(self, |pool| insert_drain!(drain).fetch_one(pool).await?);
        Ok(Drain {
            id,
            ..drain.clone()
        })
    }

    /// What each tier last rolled out to (`rollouts`, migration 0016).
    pub async fn rollouts(&self) -> StoreResult<Vec<Rollout>> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT tier, fingerprint, drain_id, updated_at FROM rollouts ORDER BY tier",
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(Rollout {
                        tier: r.try_get("tier")?,
                        fingerprint: r.try_get("fingerprint")?,
                        drain_id: r.try_get("drain_id")?,
                        updated_at: r.try_get("updated_at")?,
                    })
                })
                .collect()
        })
    }

    /// Records that `tier` now runs `fingerprint`, in one transaction: with `drain` (its
    /// rollout), the tier's earlier rollout drain is cancelled if it still holds and `drain` is
    /// inserted. Returns `drain` with its id, and the drain it replaced (as cancelled).
    pub async fn record_rollout(
        &self,
        tier: &str,
        fingerprint: &str,
        drain: Option<&Drain>,
        now: Millis,
    ) -> StoreResult<(Option<Drain>, Option<Drain>)> {
        let cancel = format!(
            "UPDATE drains SET state = 'cancelled', updated_at = $2
             WHERE id = (SELECT drain_id FROM rollouts WHERE tier = $1)
               AND state IN ('active', 'paused')
             RETURNING {COLUMNS}"
        );
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let mut replaced = None;
            let mut inserted = None;
            if let Some(drain) = drain {
                // A write first: on SQLite the transaction holds the write lock from here on.
                let row = sqlx::query(sqlx::AssertSqlSafe(cancel))
                    .bind(tier)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                replaced = row.as_ref().map(drain_of).transpose()?;
                let id: i64 = insert_drain!(drain).fetch_one(&mut *tx).await?;
                inserted = Some(Drain {
                    id,
                    ..drain.clone()
                });
            }
            sqlx::query(
                "INSERT INTO rollouts (tier, fingerprint, drain_id, updated_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tier) DO UPDATE SET fingerprint = excluded.fingerprint,
                    drain_id = excluded.drain_id, updated_at = excluded.updated_at",
            )
            .bind(tier)
            .bind(fingerprint)
            .bind(inserted.as_ref().map(|d| d.id))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok((inserted, replaced))
        })
    }

    /// Every drain, newest first.
    pub async fn list_drains(&self) -> StoreResult<Vec<Drain>> {
        let sql = format!("SELECT {COLUMNS} FROM drains ORDER BY id DESC");
        on_pool!(self, |pool| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(pool)
                .await?;
            rows.iter().map(drain_of).collect()
        })
    }

    /// The drains that still hold their instances (`active` or `paused`), oldest first.
    pub async fn holding_drains(&self) -> StoreResult<Vec<Drain>> {
        let mut drains = self.list_drains().await?;
        drains.retain(|d| d.state.holds());
        drains.reverse();
        Ok(drains)
    }

    /// Writes a drain's progress, unless it was cancelled meanwhile (false then).
    pub async fn update_drain(&self, drain: &Drain) -> StoreResult<bool> {
        let (requested, failed_users) = progress_json(drain);
        let done = execute!(
            self,
            sqlx::query(
                "UPDATE drains SET state = $2, moved = $3, failed = $4, requested = $5,
                 failed_users = $6, updated_at = $7
                 WHERE id = $1 AND state <> 'cancelled'",
            )
            .bind(drain.id)
            .bind(drain.state.as_str())
            .bind(i64::from(drain.moved))
            .bind(i64::from(drain.failed))
            .bind(requested)
            .bind(failed_users)
            .bind(drain.updated_at)
        );
        Ok(done > 0)
    }

    /// Withdraws the moves a drain asked for that have not begun: each instance whose user is
    /// still `ready` on it loses its recycle request (a begun move has taken the request on),
    /// unless a user is moving off it already (a shared instance being emptied keeps it).
    pub async fn withdraw_moves(&self, requested: &[(UserId, InstanceId)]) -> StoreResult<()> {
        for (user, instance) in requested {
            execute!(
                self,
                sqlx::query(
                    "UPDATE instances SET recycle_requested_at = NULL
                     WHERE instance_id = $1 AND EXISTS (SELECT 1 FROM users
                         WHERE user_id = $2 AND state = 'ready' AND instance_id = $1)
                       AND NOT EXISTS (SELECT 1 FROM users
                         WHERE instance_id = $1 AND state = 'migrating')",
                )
                .bind(&instance.0)
                .bind(user.as_str())
            );
        }
        Ok(())
    }

    /// Cancels a drain that still holds its instances; the cancelled row, or None if there is
    /// no such drain or it had ended.
    pub async fn cancel_drain(&self, id: i64, now: Millis) -> StoreResult<Option<Drain>> {
        let done = execute!(
            self,
            sqlx::query(
                "UPDATE drains SET state = 'cancelled', updated_at = $2
                 WHERE id = $1 AND state IN ('active', 'paused')",
            )
            .bind(id)
            .bind(now)
        );
        if done == 0 {
            return Ok(None);
        }
        Ok(self.list_drains().await?.into_iter().find(|d| d.id == id))
    }
}

fn selector_json(selector: &DrainSelector) -> String {
    serde_json::to_string(selector).unwrap_or_else(|_| "{}".into())
}

/// `requested` as `[[user, instance], ...]` and `failed_users` as `[user, ...]`.
fn progress_json(drain: &Drain) -> (String, String) {
    let requested: Vec<(&str, &str)> = (drain.requested.iter())
        .map(|(user, instance)| (user.as_str(), instance.0.as_str()))
        .collect();
    let failed: Vec<&str> = drain.failed_users.iter().map(|u| u.as_str()).collect();
    (
        serde_json::to_string(&requested).unwrap_or_else(|_| "[]".into()),
        serde_json::to_string(&failed).unwrap_or_else(|_| "[]".into()),
    )
}

fn drain_of<R: Row>(row: &R) -> StoreResult<Drain>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let id: i64 = row.try_get("id")?;
    let corrupt =
        |what: &str, raw: &str| StoreError::Corrupt(format!("drain {id}: {what} {raw:?}"));
    let json = |column: &str| -> StoreResult<String> { Ok(row.try_get::<String, _>(column)?) };
    let selector_raw = json("selector")?;
    let selector: DrainSelector =
        serde_json::from_str(&selector_raw).map_err(|_| corrupt("selector", &selector_raw))?;
    let state_raw = json("state")?;
    let state = DrainState::parse(&state_raw).ok_or_else(|| corrupt("state", &state_raw))?;
    let requested_raw = json("requested")?;
    let pairs: Vec<(String, String)> =
        serde_json::from_str(&requested_raw).map_err(|_| corrupt("requested", &requested_raw))?;
    let requested = pairs
        .into_iter()
        .map(|(user, instance)| {
            let user = UserId::parse(&user).map_err(|_| corrupt("requested user", &user))?;
            Ok((user, InstanceId(instance)))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let failed_raw = json("failed_users")?;
    let names: Vec<String> =
        serde_json::from_str(&failed_raw).map_err(|_| corrupt("failed_users", &failed_raw))?;
    let failed_users = names
        .iter()
        .map(|u| UserId::parse(u).map_err(|_| corrupt("failed user", u)))
        .collect::<StoreResult<Vec<_>>>()?;
    let count = |column: &str| -> StoreResult<u32> { Ok(row.try_get::<i64, _>(column)? as u32) };
    Ok(Drain {
        id,
        selector,
        max_concurrent_moves: count("max_concurrent_moves")?,
        max_failures: count("max_failures")?,
        state,
        moved: count("moved")?,
        failed: count("failed")?,
        requested,
        failed_users,
        created_by: json("created_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
