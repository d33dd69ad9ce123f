//! `GET /v1/pool`: per tier, the spare target, counts by status and the instances.

use super::{ApiError, AppState, rfc3339};
use crate::model::InstanceStatus;
use axum::Json;
use axum::extract::State;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, serde::Serialize)]
pub struct PoolDocument {
    pub tiers: Vec<TierDocument>,
}

#[derive(Debug, serde::Serialize)]
pub struct TierDocument {
    pub tier: String,
    pub spare_target: u32,
    pub max_instances: u32,
    pub counts: BTreeMap<&'static str, usize>,
    pub queued_users: usize,
    pub instances: Vec<PoolInstanceDocument>,
}

#[derive(Debug, serde::Serialize)]
pub struct PoolInstanceDocument {
    pub instance_id: String,
    pub status: InstanceStatus,
    pub user_id: Option<String>,
    pub instance_type: Option<String>,
    pub availability_zone: Option<String>,
    pub launched_at: String,
}

pub async fn get_pool(State(state): State<AppState>) -> Result<Json<PoolDocument>, ApiError> {
    let instances = state.store.list_instances().await?;
    let users = state.store.list_users().await?;
    let holders: HashMap<&str, &str> = users
        .iter()
        .filter_map(|u| {
            u.instance_id
                .as_ref()
                .map(|i| (i.0.as_str(), u.user_id.as_str()))
        })
        .collect();
    let tiers = state
        .settings
        .tiers
        .iter()
        .map(|tier| {
            let of_tier: Vec<_> = instances.iter().filter(|i| i.tier == tier.name).collect();
            let counts = InstanceStatus::ALL
                .into_iter()
                .map(|s| (s.as_str(), of_tier.iter().filter(|i| i.status == s).count()))
                .collect();
            TierDocument {
                tier: tier.name.clone(),
                spare_target: tier.spare_count,
                max_instances: tier.max_instances,
                counts,
                queued_users: users
                    .iter()
                    .filter(|u| u.tier == tier.name && u.state == crate::model::UserState::Queued)
                    .count(),
                instances: of_tier
                    .iter()
                    .map(|i| PoolInstanceDocument {
                        instance_id: i.instance_id.0.clone(),
                        status: i.status,
                        user_id: holders.get(i.instance_id.0.as_str()).map(|u| u.to_string()),
                        instance_type: i.instance_type.clone(),
                        availability_zone: i.availability_zone.clone(),
                        launched_at: rfc3339(i.launched_at),
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(Json(PoolDocument { tiers }))
}
