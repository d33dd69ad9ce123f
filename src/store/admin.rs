//! On-call's state: tier overrides (`PUT /v1/admin/pool/{tier}`) and the audit log.

use super::{Store, StoreResult};
use crate::model::Millis;
use crate::model::TierOverride;
use sqlx::Row;

/// One admin action: who did what to which target, when, and how it ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: Millis,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub outcome: String,
}

impl Store {
    pub async fn tier_overrides(&self) -> StoreResult<Vec<TierOverride>> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT tier, spare_count, max_instances, paused, container_image,
                    launch_template_version, updated_at, updated_by
                 FROM tier_overrides ORDER BY tier",
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(TierOverride {
                        tier: r.try_get("tier")?,
                        spare_count: r
                            .try_get::<Option<i64>, _>("spare_count")?
                            .map(|n| n as u32),
                        max_instances: r
                            .try_get::<Option<i64>, _>("max_instances")?
                            .map(|n| n as u32),
                        paused: r.try_get("paused")?,
                        container_image: r.try_get("container_image")?,
                        launch_template_version: r.try_get("launch_template_version")?,
                        updated_at: r.try_get("updated_at")?,
                        updated_by: r.try_get("updated_by")?,
                    })
                })
                .collect()
        })
    }

    /// Writes a tier's override if the stored one is still the one last read (`seen`: its
    /// `updated_at`, None if there was none); false if another writer came first.
    pub async fn put_tier_override(
        &self,
        o: &TierOverride,
        seen: Option<Millis>,
    ) -> StoreResult<bool> {
        let done = execute!(
            self,
            sqlx::query(
            "INSERT INTO tier_overrides (tier, spare_count, max_instances, paused, container_image,
                launch_template_version, updated_at, updated_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (tier) DO UPDATE SET spare_count = excluded.spare_count,
                max_instances = excluded.max_instances, paused = excluded.paused,
                container_image = excluded.container_image,
                launch_template_version = excluded.launch_template_version,
                updated_at = excluded.updated_at, updated_by = excluded.updated_by
             WHERE tier_overrides.updated_at = $9",
        )
        .bind(&o.tier)
        .bind(o.spare_count.map(i64::from))
        .bind(o.max_instances.map(i64::from))
        .bind(o.paused)
        .bind(&o.container_image)
        .bind(&o.launch_template_version)
        .bind(o.updated_at)
        .bind(&o.updated_by)
        .bind(seen)
        );
        Ok(done == 1)
    }

    /// Appends one admin action to the audit log.
    pub async fn audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        execute!(
            self,
            sqlx::query(
                "INSERT INTO audit_log (at, actor, action, target, detail, outcome)
             VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(entry.at)
            .bind(&entry.actor)
            .bind(&entry.action)
            .bind(&entry.target)
            .bind(&entry.detail)
            .bind(&entry.outcome)
        );
        Ok(())
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn audit_log(&self, limit: i64) -> StoreResult<Vec<AuditEntry>> {
        Ok(on_pool!(self, |pool| sqlx::query_as::<_, AuditEntry>(
            "SELECT id, at, actor, action, target, detail, outcome FROM audit_log
             ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(pool)
        .await?))
    }
}
