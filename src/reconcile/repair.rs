//! On-call's repair: a full pass plus an orphan sweep, planned (dry run) or taken.
//!
//! An orphan is a resource tagged for this pool that no desired state accounts for:
//! - a listener rule or target group whose path or name belongs to no user;
//! - a secret whose ARN no user row records and whose `UserId` tag names no user;
//! - an instance tagged with a `UserId` that no user row holds;
//! - a workspace volume that no user row records and whose `UserId` tag names no user, detached;
//! - a workspace snapshot that no relocation in progress records or carries the token of.
//!
//! Resources that carry a creation time (instances, secrets, volumes, snapshots) must also be
//! older than the orphan grace, because a PUT writes the secret a moment before it inserts the user's row. Target
//! groups and rules have no creation time and need none: the sweep lists the cloud first and
//! reads the users after, and a claim only creates them for a user whose row already exists, so
//! a listed one that matches no row read afterwards can only be left over.
//!
//! The sweep never touches anything without the pool's tag, and never retries: a failed delete
//! is reported and the next repair tries again.

use super::observe::Planned;
use super::{ReconcileError, Reconciler, StepError, route_path, target_group_name};
use crate::cloud::{CloudError, CloudSnapshot, CloudVolume, PoolResource, tags};
use crate::model::{Event, InstanceId, Millis, warm_path, warm_target_group_name};
use crate::plan::Action;
use crate::store::UserRecord;
use std::collections::HashSet;

/// How long a repair waits for the loop's pass in flight to finish.
const PASS_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a repair waits for its own pass's actions before it sweeps and answers (they go on).
const ACTIONS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What a repair found and did.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct RepairReport {
    pub dry_run: bool,
    /// The pass's actions: planned on a dry run, taken otherwise.
    pub pass_actions: Vec<PlannedAction>,
    /// Why the pass failed, if it did (the sweep still runs).
    #[schema(required = true)]
    pub pass_error: Option<String>,
    /// Every orphan found, with what happened to it.
    pub orphans: Vec<Orphan>,
}

/// One action of a reconcile pass, as a repair reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct PlannedAction {
    /// What: `launch`, `send_probe`, `check_probe`, `terminate`, `forget`, `assign`,
    /// `advance_claim`, `release`, `recover`, `begin_move`, `assign_move`, `advance_move`,
    /// `advance_sleep`, `relocate_workspace` or `advance_relocation`.
    pub action: String,
    /// The user it is for, if any.
    #[schema(required = true)]
    pub user_id: Option<String>,
    /// The instance it acts on, if any.
    #[schema(required = true)]
    pub instance_id: Option<String>,
    /// The rest: a launch's offering, a termination's reason.
    #[schema(required = true)]
    pub detail: Option<String>,
}

impl From<&Action> for PlannedAction {
    fn from(action: &Action) -> PlannedAction {
        PlannedAction {
            action: action.kind().to_string(),
            user_id: action.user().map(ToString::to_string),
            instance_id: action.instance().map(ToString::to_string),
            detail: action.detail(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Orphan {
    pub kind: OrphanKind,
    /// The instance id or the ARN.
    pub id: String,
    /// The target group's or secret's name, the rule's path, or the instance's `UserId` tag.
    pub name: String,
    pub reason: String,
    /// `planned` (dry run), `deleted`, or `failed: <why>`.
    pub result: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrphanKind {
    Rule,
    TargetGroup,
    Secret,
    Instance,
    Volume,
    Snapshot,
}

impl OrphanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OrphanKind::Rule => "rule",
            OrphanKind::TargetGroup => "target_group",
            OrphanKind::Secret => "secret",
            OrphanKind::Instance => "instance",
            OrphanKind::Volume => "volume",
            OrphanKind::Snapshot => "snapshot",
        }
    }
}

impl Reconciler {
    /// Runs a full pass and an orphan sweep; with `dry_run`, only plans both. Holds the pass
    /// lock throughout, so the loop's own passes wait.
    pub async fn repair(&self, dry_run: bool) -> Result<RepairReport, ReconcileError> {
        // A pass slowed by AWS (throttling, rate-limit waits) must not hold an admin call
        // forever: wait a while for the pass lock, then answer busy.
        let lock = self.inner.pass_lock.clone();
        let Ok(turn) = tokio::time::timeout(PASS_LOCK_WAIT, lock.lock_owned()).await else {
            return Err(ReconcileError::Busy(PASS_LOCK_WAIT));
        };
        let mut report = RepairReport {
            dry_run,
            pass_actions: Vec::new(),
            pass_error: None,
            orphans: Vec::new(),
        };
        if dry_run {
            match self.observe_and_plan(true).await {
                Ok(Planned { actions, .. }) => report.pass_actions = describe(&actions),
                Err(error) => report.pass_error = Some(error.to_string()),
            }
        } else {
            match self.observe_and_plan(false).await {
                Ok(Planned { actions, .. }) => {
                    report.pass_actions = describe(&actions);
                    // The actions run in a task of their own that keeps the pass lock: a pass
                    // slowed by AWS (launches waiting for the RunInstances bucket, say) goes on
                    // after the answer instead of holding the admin call, and is never cut off
                    // part-way.
                    let this = self.clone();
                    let mut actions = tokio::spawn(async move {
                        let _turn = turn;
                        this.execute(actions, None).await;
                    });
                    if tokio::time::timeout(ACTIONS_WAIT, &mut actions)
                        .await
                        .is_err()
                    {
                        report.pass_error = Some(format!(
                            "the pass's actions were still running after {} s; they go on in the \
                             background (the journal shows their outcome)",
                            ACTIONS_WAIT.as_secs()
                        ));
                    }
                }
                Err(error) => report.pass_error = Some(error.to_string()),
            }
        }
        let mut orphans = self.find_orphans().await.map_err(|e| match e {
            StepError::Cloud(e) => ReconcileError::Observe(e),
            StepError::Store(e) => ReconcileError::Store(e),
        })?;
        for orphan in &mut orphans {
            orphan.result = if dry_run {
                "planned".into()
            } else {
                match self.delete_orphan(orphan).await {
                    Ok(()) => "deleted".into(),
                    Err(error) => format!("failed: {error}"),
                }
            };
        }
        report.orphans = orphans;
        Ok(report)
    }

    /// Lists the pool's resources, then reads the users (in that order; see the module docs)
    /// and returns what no user accounts for, in deletion order: rules before the target groups
    /// they point at, instances last.
    async fn find_orphans(&self) -> Result<Vec<Orphan>, StepError> {
        let inner = &self.inner;
        let cloud = &inner.cloud;
        let mut rules = Vec::new();
        for shard in &inner.config.policy.shards {
            rules.extend(cloud.list_pool_rules(&shard.listener_arn).await?);
        }
        let groups = cloud.list_pool_target_groups().await?;
        let secrets = cloud.list_pool_secrets().await?;
        let instances = cloud.describe_pool_instances().await?;
        let volumes = cloud.list_pool_volumes(None).await?;
        let snapshots = cloud.list_pool_snapshots(None).await?;
        let now = self.now();
        let grace = inner.config.policy.orphan_grace;

        let users = inner.store.list_users().await?;
        let ledger = inner.store.list_instances().await?;
        let user_ids: HashSet<&str> = users.iter().map(|u| u.user_id.as_str()).collect();
        let Owned {
            paths,
            group_names,
            recorded,
        } = Owned::of(&users, &ledger);
        let held: HashSet<&InstanceId> = users
            .iter()
            .filter_map(|u| u.instance_id.as_ref())
            .collect();

        let old_enough = |created: Option<Millis>| created.is_none_or(|at| now - at >= grace);
        let orphan = |kind, r: &PoolResource, reason: &str| Orphan {
            kind,
            id: r.arn.clone(),
            name: r.name.clone(),
            reason: reason.to_string(),
            result: String::new(),
        };
        let mut out = Vec::new();
        for rule in &rules {
            if !paths.contains(&rule.name) && !recorded.contains(rule.arn.as_str()) {
                out.push(orphan(OrphanKind::Rule, rule, "no user has this route"));
            }
        }
        for group in &groups {
            if !group_names.contains(&group.name) && !recorded.contains(group.arn.as_str()) {
                out.push(orphan(
                    OrphanKind::TargetGroup,
                    group,
                    "no user has this route",
                ));
            }
        }
        for secret in &secrets {
            let owner_exists = secret
                .tags
                .get(tags::USER_ID)
                .is_some_and(|u| user_ids.contains(u.as_str()));
            if !owner_exists
                && !recorded.contains(secret.arn.as_str())
                && old_enough(secret.created_at)
            {
                out.push(orphan(
                    OrphanKind::Secret,
                    secret,
                    "no user records this secret",
                ));
            }
        }
        for instance in &instances {
            let Some(user) = &instance.user_id else {
                continue;
            };
            // An instance an action still works on (a claim rolling back untags it, then frees
            // its user's row) is left to the next sweep.
            let in_flight = inner
                .in_flight
                .is_busy(&super::execute::instance_key(&instance.id));
            if !instance.lifecycle.is_gone()
                && !held.contains(&instance.id)
                && !in_flight
                && old_enough(Some(instance.launched_at))
            {
                out.push(Orphan {
                    kind: OrphanKind::Instance,
                    id: instance.id.0.clone(),
                    name: user.clone(),
                    reason: format!("tagged for user {user}, who does not hold it"),
                    result: String::new(),
                });
            }
        }
        out.extend(orphan_volumes(&volumes, &users, |at| old_enough(Some(at))));
        out.extend(orphan_snapshots(&snapshots, &users, |at| {
            old_enough(Some(at))
        }));
        Ok(out)
    }

    async fn delete_orphan(&self, orphan: &Orphan) -> Result<(), StepError> {
        let cloud = &self.inner.cloud;
        let now = self.now();
        let result: Result<(), CloudError> = match orphan.kind {
            OrphanKind::Rule => cloud.delete_rule(&orphan.id).await,
            OrphanKind::TargetGroup => cloud.delete_target_group(&orphan.id).await,
            OrphanKind::Secret => cloud.delete_secret(&orphan.id).await,
            OrphanKind::Volume => cloud.delete_volume(&orphan.id).await,
            OrphanKind::Snapshot => cloud.delete_snapshot(&orphan.id).await,
            OrphanKind::Instance => {
                match self
                    .retire_instance(&InstanceId(orphan.id.clone()), now)
                    .await
                {
                    Ok(()) => Ok(()),
                    Err(StepError::Cloud(error)) => Err(error),
                    Err(error) => return Err(error),
                }
            }
        };
        metrics::counter!("spotpool_orphans_deleted_total", "kind" => orphan.kind.as_str(), "outcome" => if result.is_ok() { "ok" } else { "error" })
            .increment(1);
        result?;
        let instance = (orphan.kind == OrphanKind::Instance).then(|| InstanceId(orphan.id.clone()));
        let description = format!(
            "{} {} ({}): {}",
            orphan.kind.as_str(),
            orphan.id,
            orphan.name,
            orphan.reason
        );
        self.journal(
            now,
            Event::OrphanDeleted { description },
            None,
            instance.as_ref(),
        )
        .await
    }
}

/// The workspace volumes no user accounts for: only a volume whose user is gone and no row
/// records, never one still attached (its instance is on its way out; the next repair finds it
/// detached), and only past the grace (`old_enough` of its creation time).
fn orphan_volumes(
    volumes: &[CloudVolume],
    users: &[UserRecord],
    old_enough: impl Fn(Millis) -> bool,
) -> Vec<Orphan> {
    let user_ids: HashSet<&str> = users.iter().map(|u| u.user_id.as_str()).collect();
    let recorded: HashSet<&str> = users
        .iter()
        .filter_map(|u| u.workspace.as_ref())
        .flat_map(|w| {
            [
                w.volume_id.as_deref(),
                w.relocation.as_ref().and_then(|r| r.volume_id.as_deref()),
            ]
        })
        .flatten()
        .collect();
    volumes
        .iter()
        .filter_map(|volume| {
            let owner = volume.tags.get(tags::USER_ID).cloned().unwrap_or_default();
            let orphaned = !user_ids.contains(owner.as_str())
                && !recorded.contains(volume.id.as_str())
                && volume.attachment.is_none()
                && old_enough(volume.created_at);
            orphaned.then(|| Orphan {
                kind: OrphanKind::Volume,
                id: volume.id.clone(),
                name: owner.clone(),
                reason: format!("the workspace of user {owner:?}, who no longer exists"),
                result: String::new(),
            })
        })
        .collect()
}

/// Snapshots no relocation in progress accounts for: neither recorded in one nor tagged with
/// its token (a CreateSnapshot whose answer was lost, or a twin left by one).
fn orphan_snapshots(
    snapshots: &[CloudSnapshot],
    users: &[UserRecord],
    old_enough: impl Fn(Millis) -> bool,
) -> Vec<Orphan> {
    let relocations: Vec<_> = users
        .iter()
        .filter_map(|u| u.workspace.as_ref()?.relocation.as_ref())
        .collect();
    snapshots
        .iter()
        .filter(|snapshot| {
            let token = snapshot.tags.get(tags::RELOCATION);
            !relocations.iter().any(|r| {
                r.snapshot_id.as_deref() == Some(snapshot.id.as_str())
                    || token == Some(&r.client_token)
            }) && old_enough(snapshot.created_at)
        })
        .map(|snapshot| {
            let owner = snapshot
                .tags
                .get(tags::USER_ID)
                .cloned()
                .unwrap_or_default();
            Orphan {
                kind: OrphanKind::Snapshot,
                id: snapshot.id.clone(),
                name: owner.clone(),
                reason: format!(
                    "a copy of {}, for user {owner:?}, that no relocation uses",
                    snapshot.volume_id
                ),
                result: String::new(),
            }
        })
        .collect()
}

fn describe(actions: &[Action]) -> Vec<PlannedAction> {
    actions.iter().map(PlannedAction::from).collect()
}

/// What the store accounts for on the load balancers and in Secrets Manager: the users' route
/// paths and target-group names, and every ARN a user row or a spare's warm route records. A
/// spare's warm route is the pool's while its ledger row lives (`Unwire` removes it before the
/// row goes): its names cover a part created just before a crash.
struct Owned<'a> {
    paths: HashSet<String>,
    group_names: HashSet<String>,
    recorded: HashSet<&'a str>,
}

impl<'a> Owned<'a> {
    fn of(users: &'a [UserRecord], ledger: &'a [crate::store::InstanceRecord]) -> Owned<'a> {
        let mut paths: HashSet<String> = users.iter().map(|u| route_path(&u.route)).collect();
        let mut group_names: HashSet<String> =
            users.iter().map(|u| target_group_name(&u.route)).collect();
        for row in ledger {
            paths.insert(warm_path(&row.instance_id.0));
            group_names.insert(warm_target_group_name(&row.instance_id.0));
        }
        let recorded = users
            .iter()
            .flat_map(|u| {
                [
                    &u.routing.rule_arn,
                    &u.routing.target_group_arn,
                    &u.secret_arn,
                ]
            })
            .chain(
                ledger
                    .iter()
                    .flat_map(|r| [&r.warm.rule_arn, &r.warm.target_group_arn]),
            )
            .filter_map(|arn| arn.as_deref())
            .collect();
        Owned {
            paths,
            group_names,
            recorded,
        }
    }
}
