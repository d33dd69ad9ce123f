//! A user's route on its shard (ARCHITECTURE.md, "Shards"): the claim's reservation of the
//! target group and the listener rule before anything is spent on the instance, the rule's
//! priority (read once per pass per listener), what a load balancer at its limits does to a claim
//! (the shard, or the region, is held at the users it has; the user waits, the instance goes back
//! to the pool), a user no shard has room for (`no_route_capacity`), and the shard gauges.

use super::{Reconciler, StepError, StepOutcome, StepResult, fatal, target_group_name};
use crate::cloud::{CloudError, CloudErrorKind, RuleAction, tags};
use crate::model::{
    ClaimStep, Event, InstanceId, Millis, NO_ROUTE_CAPACITY, RuleMatch, Shard, UserId, UserState,
    WARM_SOURCE_IP,
};
use crate::store::{StoreError, UserRecord};
use std::collections::BTreeMap;

impl Reconciler {
    /// The configured shard the user is placed on.
    fn shard_of(&self, user: &UserRecord) -> Result<Shard, StepError> {
        let name = user.shard.as_deref().unwrap_or_default();
        self.inner.config.shard(name).cloned().ok_or_else(|| {
            fatal(
                "Claim",
                "NoShard",
                format!("the user's shard {name:?} is not configured"),
            )
        })
    }

    /// What the user's rule matches on its shard (its path, without a configured shard).
    pub(super) fn rule_match_of(&self, user: &UserRecord) -> RuleMatch {
        match user
            .shard
            .as_deref()
            .and_then(|s| self.inner.config.shard(s))
        {
            Some(shard) => shard.rule_match(&user.route),
            None => RuleMatch::Path(super::route_path(&user.route)),
        }
    }

    /// The user's target group (`sp-<route>`, created if the row has none yet; AWS returns the
    /// existing one by name), recorded in `user`.
    pub(super) async fn ensure_target_group(
        &self,
        user: &mut UserRecord,
        instance: &InstanceId,
    ) -> Result<String, StepError> {
        if let Some(arn) = &user.routing.target_group_arn {
            return Ok(arn.clone());
        }
        let runtime = self.runtime(&user.tier);
        let container = &runtime.container;
        let mut group_tags = self.resource_tags(&user.user_id);
        group_tags.insert(tags::INSTANCE_ID.into(), instance.0.clone());
        let arn = self
            .inner
            .cloud
            .create_target_group(
                &target_group_name(&user.route),
                container.port,
                &container.health_check,
                &group_tags,
            )
            .await?;
        // (A crash before the step is saved loses the ARN; teardown then finds the group by its
        // deterministic name.)
        user.routing.target_group_arn = Some(arn.clone());
        Ok(arn)
    }

    /// The claim's route reservation: the target group (no target yet) and the rule forwarding
    /// to it on the user's shard, before the workspace and the container. A woken user kept its
    /// rule ("asleep" meanwhile): it is pointed at the new group.
    pub(super) async fn reserve_route(
        &self,
        mut user: UserRecord,
        instance: &InstanceId,
        now: Millis,
    ) -> StepOutcome {
        let group = self.ensure_target_group(&mut user, instance).await?;
        if !self
            .route_to_group(&mut user, &group, instance, now)
            .await?
        {
            return Ok(StepResult::Waiting);
        }
        self.save_claim_step(user, ClaimStep::RouteReserved, instance, now)
            .await
    }

    /// Makes the user's rule forward to `group`: the kept rule of a woken user is pointed at it;
    /// otherwise a rule is created at a free priority of the shard's listener. False when the
    /// row changed under us or the priority was taken meanwhile (next pass picks again).
    pub(super) async fn route_to_group(
        &self,
        user: &mut UserRecord,
        group: &str,
        instance: &InstanceId,
        now: Millis,
    ) -> Result<bool, StepError> {
        let inner = &self.inner;
        let cloud = &inner.cloud;
        if let Some(rule) = user.routing.rule_arn.clone() {
            let forward = RuleAction::Forward {
                target_group_arn: group.to_string(),
            };
            cloud.set_rule_action(&rule, &forward).await?;
            return Ok(true);
        }
        if user.routing.listener_arn.is_none() || user.routing.rule_priority.is_none() {
            let listener = self.shard_of(user)?.listener_arn;
            let priority = self.take_priority(&listener).await?;
            user.routing.listener_arn = Some(listener);
            user.routing.rule_priority = Some(priority);
            user.updated_at = now;
            match inner.store.update_user(user).await {
                Ok(true) => {}
                Ok(false) => return Ok(false),
                // Another process took the same priority first (the unique index decides).
                Err(StoreError::Conflict(why)) => {
                    tracing::debug!(user = %user.user_id, why, "rule priority taken meanwhile");
                    return Ok(false);
                }
                Err(error) => return Err(error.into()),
            }
        }
        let (Some(listener), Some(priority)) = (
            user.routing.listener_arn.clone(),
            user.routing.rule_priority,
        ) else {
            return Ok(false);
        };
        let condition = self.rule_match_of(user);
        let mut rule_tags = self.resource_tags(&user.user_id);
        rule_tags.insert(tags::INSTANCE_ID.into(), instance.0.clone());
        let created = self
            .create_or_adopt_rule(&listener, priority, &condition, group, &rule_tags)
            .await?;
        let Some(rule_arn) = created else {
            // Someone else's priority: forget it and pick another next time.
            user.routing.rule_priority = None;
            user.updated_at = now;
            inner.store.update_user(user).await?;
            return Ok(false);
        };
        user.routing.rule_arn = Some(rule_arn);
        Ok(true)
    }

    /// Creates a rule at `priority` forwarding `condition` to `group`. PriorityInUse: our own
    /// rule from before a crash (same priority, same condition) is adopted; `None` when the
    /// priority is someone else's (the caller gives it up and takes another next time). A load
    /// balancer at its limits is the error `RouteCapacity`. Shared by users' rules and spares'
    /// warm rules.
    pub(super) async fn create_or_adopt_rule(
        &self,
        listener: &str,
        priority: u32,
        condition: &RuleMatch,
        group: &str,
        rule_tags: &crate::cloud::Tags,
    ) -> Result<Option<String>, StepError> {
        let cloud = &self.inner.cloud;
        match cloud
            .create_rule(listener, priority, condition, group, rule_tags)
            .await
        {
            Ok(arn) => Ok(Some(arn)),
            Err(error) if error.kind == CloudErrorKind::Conflict => Ok(cloud
                .describe_rules(listener)
                .await?
                .into_iter()
                .find(|r| r.priority == Some(priority) && r.matches(condition))
                .map(|rule| rule.arn)),
            Err(error) => Err(error.into()),
        }
    }

    /// A load balancer (or the region) refused the user's route: the shard takes no more users
    /// than it holds now for `capacity_ttl` (or until users leave it), and the claim is undone
    /// with the instance back in the pool; the user waits as `no_route_capacity`.
    pub(super) async fn route_refused(
        &self,
        user_id: &UserId,
        error: CloudError,
    ) -> Result<(), StepError> {
        let shard = match self.inner.store.get_user(user_id).await? {
            Some(user) => user.shard,
            None => return Ok(()),
        };
        tracing::warn!(user = %user_id, shard = ?shard, error = %error, "a load balancer refused the route");
        // The mark first, so a failed undo still holds the shard; the user waits, or is
        // placed anew.
        self.hold_routes(shard.as_deref(), &error).await?;
        self.undo_for_route(user_id, error.to_string()).await
    }

    /// AWS refused a route that `shard` (or the region) was to hold: each takes no more routes
    /// (users and spares' warm routes) than it holds now, the refused one aside, for
    /// `capacity_ttl` or until routes leave it.
    pub(super) async fn hold_routes(
        &self,
        shard: Option<&str>,
        error: &CloudError,
    ) -> Result<(), StepError> {
        let region = error.code == "TooManyTargetGroups";
        metrics::counter!("spotpool_route_refusals_total", "code" => error.code.clone())
            .increment(1);
        let store = &self.inner.store;
        let mut held: BTreeMap<String, u32> = BTreeMap::new();
        for (name, n) in store
            .users_per_shard()
            .await?
            .into_iter()
            .chain(store.warm_routes_per_shard().await?)
        {
            if self.inner.config.shard(&name).is_some() {
                *held.entry(name).or_default() += n as u32;
            }
        }
        if let Some(n) = shard.and_then(|own| held.get_mut(own)) {
            *n = n.saturating_sub(1);
        }
        let until = self.now() + self.inner.config.capacity_ttl.as_millis() as Millis;
        let mut conditions = self.conditions();
        if region {
            conditions.region_mark = Some((held.values().sum(), until));
        } else if let Some(name) = shard {
            let routes = held.get(name).copied().unwrap_or(0);
            conditions
                .route_marks
                .insert(name.to_string(), (routes, until));
        }
        Ok(())
    }

    /// A queued user no shard has room for: it shows `no_route_capacity` (journalled once) and
    /// claims no instance until a shard has room.
    pub(super) async fn await_route(&self, user_id: &UserId, now: Millis) -> Result<(), StepError> {
        let Some(mut user) = self.inner.store.get_user(user_id).await? else {
            return Ok(());
        };
        if user.state != UserState::Queued || user.error.as_deref() == Some(NO_ROUTE_CAPACITY) {
            return Ok(());
        }
        user.error = Some(NO_ROUTE_CAPACITY.into());
        user.updated_at = now;
        if self.inner.store.update_user(&mut user).await? {
            metrics::counter!("spotpool_route_capacity_waits_total").increment(1);
            self.journal(now, Event::RouteCapacityExhausted, Some(user_id), None)
                .await?;
        }
        Ok(())
    }

    /// A user that showed `no_route_capacity` has room now: the label goes (it waits for a
    /// spare like anyone; the assign would clear it too).
    pub(super) async fn route_available(
        &self,
        user_id: &UserId,
        now: Millis,
    ) -> Result<(), StepError> {
        let Some(mut user) = self.inner.store.get_user(user_id).await? else {
            return Ok(());
        };
        if user.state == UserState::Queued && user.error.as_deref() == Some(NO_ROUTE_CAPACITY) {
            user.error = None;
            user.updated_at = now;
            self.inner.store.update_user(&mut user).await?;
        }
        Ok(())
    }

    /// A rule priority on `listener` no other claim of this pass gets. The unique index on
    /// (listener, priority) still decides against another process.
    pub(super) async fn take_priority(&self, listener: &str) -> Result<u32, StepError> {
        let mut books = self.inner.priority_books.lock().await;
        let book = self.read_book(&mut books, listener).await?;
        Ok(book.take())
    }

    /// A warm rule for `instance` that already exists on `listener` (priority, ARN): one a
    /// crash left unrecorded, or one an adopted spare had before this store knew it. From the
    /// same once-per-pass listing as the priorities.
    pub(super) async fn existing_warm_rule(
        &self,
        listener: &str,
        instance: &InstanceId,
    ) -> Result<Option<(u32, String)>, StepError> {
        let mut books = self.inner.priority_books.lock().await;
        let book = self.read_book(&mut books, listener).await?;
        Ok(book
            .warm
            .get(&crate::model::warm_path(&instance.0))
            .cloned())
    }

    /// `listener`'s book, read again (store and DescribeRules) once per pass.
    async fn read_book<'b>(
        &self,
        books: &'b mut std::collections::HashMap<String, PriorityBook>,
        listener: &str,
    ) -> Result<&'b mut PriorityBook, StepError> {
        let pass = self
            .inner
            .pass_seq
            .load(std::sync::atomic::Ordering::Relaxed);
        let book = books.entry(listener.to_string()).or_default();
        if book.pass != pass {
            let mut used: std::collections::BTreeSet<u32> = self
                .inner
                .store
                .used_priorities(listener)
                .await?
                .into_iter()
                .collect();
            let rules = self.inner.cloud.describe_rules(listener).await?;
            used.extend(rules.iter().filter_map(|r| r.priority));
            let warm = rules
                .iter()
                .filter(|r| r.source_ips.iter().any(|ip| ip == WARM_SOURCE_IP))
                .filter_map(|r| {
                    Some((
                        r.path_patterns.first()?.clone(),
                        (r.priority?, r.arn.clone()),
                    ))
                })
                .collect();
            *book = PriorityBook {
                pass,
                used,
                floor: 1,
                warm,
            };
        }
        Ok(book)
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
    /// The warm rules on the listener, by path (`/_warm/<instance>`): priority and ARN.
    warm: std::collections::HashMap<String, (u32, String)>,
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

/// `spotpool_shard_users{shard}`, `spotpool_shard_capacity{shard}` and
/// `spotpool_users_waiting_for_route` from the users' rows.
pub(super) fn export_shard_gauges(users: &[UserRecord], shards: &[Shard]) {
    let (on, waiting) = UserRecord::count_per_shard(users);
    for shard in shards {
        let name = shard.name.clone();
        let users = on.get(shard.name.as_str()).copied().unwrap_or(0);
        metrics::gauge!("spotpool_shard_capacity", "shard" => name.clone())
            .set(f64::from(shard.capacity));
        metrics::gauge!("spotpool_shard_users", "shard" => name).set(f64::from(users));
    }
    metrics::gauge!("spotpool_users_waiting_for_route").set(f64::from(waiting));
}
