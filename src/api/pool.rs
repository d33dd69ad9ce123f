//! `GET /v1/pool`: the container image and its pinned digest; per tier, the spare target,
//! counts by status and the instances.

use super::openapi::{InternalError, Unauthorized};
use super::{ApiError, AppState, rfc3339};
use crate::model::{InstanceStatus, VolumeCount, VolumeUse};
use crate::store::UserRecord;
use axum::Json;
use axum::extract::State;
use std::collections::{BTreeMap, HashMap};

/// The pool, per configured tier.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PoolDocument {
    /// This replica's role: `leader` runs the reconciler, `standby` serves the API only.
    pub role: super::openapi::Role,
    /// The first tier's image (each tier shows its own).
    pub image: ImageDocument,
    pub tiers: Vec<TierDocument>,
    /// Users' workspace volumes and their GiB by use (`attached`, `detached` between instances,
    /// `asleep`): what the pool pays for storage (docs/costs.md).
    pub workspaces: BTreeMap<VolumeUse, VolumeCount>,
    /// The load balancers users are routed through (ARCHITECTURE.md, "Shards").
    pub shards: Vec<ShardDocument>,
    /// Queued users no shard has room for (`no_route_capacity`).
    pub waiting_for_route: usize,
    /// What the pool itself costs (each tier has its own `cost`; docs/costs.md, "The live
    /// cost").
    pub cost: super::cost::PoolCostDocument,
}

/// One shard: a load balancer and how full it is.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ShardDocument {
    #[schema(examples("shard-0"))]
    pub name: String,
    pub listener_arn: String,
    /// `path` or `host`.
    #[schema(examples("host"))]
    pub routing: String,
    /// Users placed on it (failed ones aside).
    pub users: u32,
    /// Most users placed on it.
    pub capacity: u32,
}

/// The container image every spare runs: pinned by digest once resolved (docs/DEPLOY.md, "Image
/// pinning").
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ImageDocument {
    /// As configured (`CONTAINER_IMAGE`).
    #[schema(examples("ghcr.io/openclaw/openclaw:latest"))]
    pub configured: String,
    /// `sha256:...`; null while the image is unpinned (its registry could not be read yet):
    /// spares then run the configured tag.
    #[schema(required = true)]
    pub digest: Option<String>,
    /// When the digest was resolved (RFC 3339).
    #[schema(required = true, format = DateTime)]
    pub pinned_at: Option<String>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TierDocument {
    pub tier: String,
    /// The image its users' containers run.
    pub image: ImageDocument,
    /// The instance types it launches, most preferred first.
    pub instance_types: Vec<String>,
    /// Spares kept `available`, on top of queued users (a shared tier's: free slots). With
    /// `spare = "auto"`, the leader's current decision (`spare_auto` says why).
    pub spare_target: u32,
    /// `spare = "auto"`: the bounds and the current decision with what it was made from (null
    /// for a fixed count; a standby replica shows the decision the leader last stored).
    #[schema(required = true)]
    pub spare_auto: Option<SpareAutoDocument>,
    /// Most instances of the tier at once, all statuses.
    pub max_instances: u32,
    /// Users one instance serves (1: dedicated; ARCHITECTURE.md, "Shared tiers").
    pub slots_per_instance: u32,
    /// On-call paused its launching (`PUT /v1/admin/pool/{tier}`).
    pub paused: bool,
    /// What it costs, in US dollars (docs/costs.md, "The live cost").
    pub cost: super::cost::TierCostDocument,
    /// Instances of the tier by status.
    #[schema(schema_with = status_counts_schema)]
    pub counts: BTreeMap<&'static str, usize>,
    /// Users waiting for a spare.
    pub queued_users: usize,
    /// Why the tier launches nothing for now, if a cause outside the tier holds it back (an
    /// account quota); its queued users show the same `waiting_for`.
    #[schema(required = true)]
    pub launch_blocked: Option<TierConditionDocument>,
    pub instances: Vec<PoolInstanceDocument>,
}

/// A tier whose spares follow demand (ARCHITECTURE.md, "Spares that follow demand").
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SpareAutoDocument {
    pub min: u32,
    pub max: u32,
    /// On-call pinned the tier to this fixed count (`PUT /v1/admin/pool/{tier}` with
    /// `spare_count`; `"spare_count": null` unpins it): it is the spare target meanwhile, and
    /// the fields below are null.
    #[schema(required = true)]
    pub pinned: Option<u32>,
    /// The spares the demand asks for now; the target follows it up at once and down once the
    /// lower demand has lasted 15 minutes. Null before the first decision (a standby shows the
    /// leader's last stored one: its rate is the one of that decision).
    #[schema(required = true)]
    pub wanted: Option<u32>,
    /// Spare takings per hour, sign-ups and moves: the largest of the last minute's (from two
    /// on), quarter hour's and hour's.
    #[schema(required = true)]
    pub sign_ups_per_hour: Option<f64>,
    /// Launch to `available`, in seconds: measured from the tier's spares, or assumed (180 s)
    /// until one was.
    #[schema(required = true)]
    pub lead_time_seconds: Option<f64>,
    #[schema(required = true)]
    pub lead_time_measured: Option<bool>,
    /// Why the target is what it is, in a line.
    #[schema(required = true)]
    pub reason: Option<String>,
}

/// A cause that holds a tier's launches back.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TierConditionDocument {
    /// `quota_exceeded`: RunInstances answered that an account quota is used up
    /// (MaxSpotInstanceCountExceeded, VcpuLimitExceeded).
    #[schema(examples("quota_exceeded"))]
    pub cause: String,
    /// The cloud's message: the quota and the numbers.
    pub detail: String,
    /// Since when (RFC 3339).
    #[schema(format = DateTime)]
    pub since: String,
    /// When the daemon tries to launch again (RFC 3339).
    #[schema(format = DateTime)]
    pub retry_at: String,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PoolInstanceDocument {
    #[schema(examples("i-0123456789abcdef0"))]
    pub instance_id: String,
    pub status: InstanceStatus,
    /// The user holding it, if any; on a shared tier's instance, the one in its lowest slot
    /// (`users` lists every one).
    #[schema(required = true, value_type = Option<crate::model::UserId>)]
    pub user_id: Option<String>,
    /// Every user holding a slot of it, lowest slot first (at most one on a dedicated tier's).
    pub users: Vec<SlotHolderDocument>,
    #[schema(required = true)]
    pub instance_type: Option<String>,
    #[schema(required = true)]
    pub availability_zone: Option<String>,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub launched_at: String,
}

/// A user holding a slot of an instance.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SlotHolderDocument {
    #[schema(value_type = crate::model::UserId)]
    pub user_id: String,
    /// Its slot: the host port is the tier's container port plus the slot (0 on a dedicated
    /// tier's instance).
    #[schema(minimum = 0)]
    pub slot: u32,
}

/// The users holding each instance, lowest slot first.
fn slot_holders(users: &[UserRecord]) -> HashMap<&str, Vec<SlotHolderDocument>> {
    let mut holders: HashMap<&str, Vec<SlotHolderDocument>> = HashMap::new();
    for user in users {
        if let Some(instance) = &user.instance_id {
            holders
                .entry(instance.0.as_str())
                .or_default()
                .push(SlotHolderDocument {
                    user_id: user.user_id.to_string(),
                    slot: user.slot,
                });
        }
    }
    for on in holders.values_mut() {
        on.sort_by_key(|h| h.slot);
    }
    holders
}

/// `{"initializing": n, "available": n, "assigned": n, "terminating": n}`: every status, always.
fn status_counts_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    InstanceStatus::ALL
        .into_iter()
        .fold(ObjectBuilder::new(), |object, status| {
            object
                .property(
                    status.as_str(),
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                )
                .required(status.as_str())
        })
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .build()
}

/// Per tier: the spare target, the maximum, counts by status, queued users and the instances.
/// A tier's spare target and, for an auto tier, its decision as the leader made it.
fn spares_of(
    tier: &crate::plan::TierPolicy,
    configured: Option<&crate::plan::TierPolicy>,
    decisions: &HashMap<String, crate::reconcile::spares::AutoSpareState>,
) -> (u32, Option<SpareAutoDocument>) {
    let Some(bounds) = tier.spare_auto else {
        // An auto tier on-call pinned: the bounds it goes back to, and the pin.
        let pinned = configured
            .and_then(|c| c.spare_auto)
            .map(|bounds| SpareAutoDocument {
                min: bounds.min,
                max: bounds.max,
                pinned: Some(tier.spare_count),
                wanted: None,
                sign_ups_per_hour: None,
                lead_time_seconds: None,
                lead_time_measured: None,
                reason: None,
            });
        return (tier.spare_count, pinned);
    };
    let decision = decisions.get(&tier.name);
    let document = SpareAutoDocument {
        min: bounds.min,
        max: bounds.max,
        pinned: None,
        wanted: decision.map(|d| d.decision.wanted),
        sign_ups_per_hour: decision.map(|d| d.decision.rate_per_hour),
        lead_time_seconds: decision.map(|d| d.decision.lead_time as f64 / 1000.0),
        lead_time_measured: decision.map(|d| d.lead_time_measured),
        reason: decision.map(|d| d.decision.reason()),
    };
    let target = decision.map_or(tier.spare_count, |d| d.decision.target);
    (target, Some(document))
}

/// Each tier's image document, by the image as configured.
async fn image_documents(
    state: &AppState,
    tiers: &[crate::plan::TierPolicy],
) -> Result<HashMap<String, ImageDocument>, ApiError> {
    let mut images: HashMap<String, ImageDocument> = HashMap::new();
    for tier in tiers {
        let configured = &tier.runtime.container.image;
        if !images.contains_key(configured) {
            let pin = state.store.image_pin(configured).await?;
            let document = ImageDocument {
                configured: configured.clone(),
                digest: pin.as_ref().map(|p| p.digest.clone()),
                pinned_at: pin.map(|p| rfc3339(p.resolved_at)),
            };
            images.insert(configured.clone(), document);
        }
    }
    Ok(images)
}

/// The shards with their users, and the queued users no shard has room for.
fn shard_documents(state: &AppState, users: &[UserRecord]) -> (Vec<ShardDocument>, usize) {
    let (on, waiting_for_route) = UserRecord::count_per_shard(users);
    let shards = state
        .settings
        .shards
        .iter()
        .map(|shard| ShardDocument {
            name: shard.name.clone(),
            listener_arn: shard.listener_arn.clone(),
            routing: shard.routing.as_str().to_string(),
            users: on.get(shard.name.as_str()).copied().unwrap_or(0),
            capacity: shard.capacity,
        })
        .collect();
    (shards, waiting_for_route as usize)
}

#[utoipa::path(
    get,
    path = "/v1/pool",
    tag = "pool",
    operation_id = "get_pool",
    responses(
        (status = 200, description = "The pool.", body = PoolDocument),
        (status = 401, response = Unauthorized),
        (status = 500, response = InternalError),
    ),
    security(("bearer" = [])),
)]
pub async fn get_pool(State(state): State<AppState>) -> Result<Json<PoolDocument>, ApiError> {
    let instances = state.store.list_instances().await?;
    let users = state.store.list_users().await?;
    let holders = slot_holders(&users);
    let (effective, paused) = state.effective_tiers().await?;
    // The leader's decisions as it holds them; a standby's, as the leader last stored them.
    let decisions = match state.reconciler.get() {
        Some(reconciler) => reconciler.auto_spares(),
        None => (state.store.spare_decisions().await?.into_iter())
            .map(|s| {
                let state = crate::reconcile::spares::AutoSpareState {
                    decision: s.decision,
                    lead_time_measured: s.lead_time_measured,
                };
                (s.tier, state)
            })
            .collect(),
    };
    let now = (state.clock)();
    let conditions = state.store.tier_conditions().await?;
    let (prices, read_at) = state.store.spot_prices().await?;
    let (tier_costs, cost) = super::cost::documents(
        &state.settings.cost,
        (&prices, read_at),
        &effective,
        state.settings.shards.len(),
        (&instances, &users),
    );
    let images = image_documents(&state, &effective).await?;
    let configured = state.settings.tiers.get();
    let tiers: Vec<TierDocument> = effective
        .iter()
        .zip(tier_costs)
        .map(|(tier, cost)| {
            let of_tier: Vec<_> = instances.iter().filter(|i| i.tier == tier.name).collect();
            let counts = InstanceStatus::ALL
                .into_iter()
                .map(|s| (s.as_str(), of_tier.iter().filter(|i| i.status == s).count()))
                .collect();
            let configured = configured.iter().find(|c| c.name == tier.name);
            let (spare_target, spare_auto) = spares_of(tier, configured, &decisions);
            TierDocument {
                tier: tier.name.clone(),
                image: images[&tier.runtime.container.image].clone(),
                instance_types: tier.instance_types.clone(),
                spare_target,
                spare_auto,
                max_instances: tier.max_instances,
                slots_per_instance: tier.slots_per_instance,
                paused: paused.contains(&tier.name),
                cost,
                counts,
                queued_users: users
                    .iter()
                    .filter(|u| u.tier == tier.name && u.state == crate::model::UserState::Queued)
                    .count(),
                launch_blocked: conditions
                    .iter()
                    .find(|c| c.tier == tier.name && c.until > now)
                    .map(|c| TierConditionDocument {
                        cause: c.cause.clone(),
                        detail: c.detail.clone(),
                        since: rfc3339(c.since),
                        retry_at: rfc3339(c.until),
                    }),
                instances: of_tier
                    .iter()
                    .map(|i| {
                        let on =
                            (holders.get(i.instance_id.0.as_str()).cloned()).unwrap_or_default();
                        PoolInstanceDocument {
                            instance_id: i.instance_id.0.clone(),
                            status: i.status,
                            user_id: on.first().map(|h| h.user_id.clone()),
                            users: on,
                            instance_type: i.instance_type.clone(),
                            availability_zone: i.availability_zone.clone(),
                            launched_at: rfc3339(i.launched_at),
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    let workspaces = UserRecord::count_volumes(&users);
    let image = tiers[0].image.clone();
    let (shards, waiting_for_route) = shard_documents(&state, &users);
    Ok(Json(PoolDocument {
        role: super::openapi::Role::of(&state.health),
        image,
        tiers,
        workspaces,
        shards,
        waiting_for_route,
        cost,
    }))
}
