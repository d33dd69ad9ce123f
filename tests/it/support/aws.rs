//! The AWS API as the tests see it: a client straight to moto (never through a fault proxy) and
//! the checks that the daemon's resources in AWS are exactly those of its users.

use std::collections::{HashMap, HashSet};

/// A volume as DescribeVolumes shows it.
#[derive(Debug, Clone)]
pub struct Volume {
    pub id: String,
    pub zone: String,
    pub state: String,
    pub size_gib: i32,
    pub encrypted: bool,
    pub attached_to: Vec<String>,
    pub tags: HashMap<String, String>,
}

/// The ELB calls that change something (issue 13's list), for counting a claim's.
pub const ELB_MUTATING: [&str; 7] = [
    "CreateTargetGroup",
    "CreateRule",
    "ModifyRule",
    "DeleteRule",
    "DeleteTargetGroup",
    "AddTags",
    "SetRulePriorities",
];

/// EC2, ELBv2 and Secrets Manager clients for checking what the daemon did.
pub struct Aws {
    pub ec2: aws_sdk_ec2::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
}

impl Aws {
    pub fn new(sdk: &aws_config::SdkConfig) -> Aws {
        Aws {
            ec2: aws_sdk_ec2::Client::new(sdk),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(sdk),
            secrets: aws_sdk_secretsmanager::Client::new(sdk),
        }
    }

    /// DescribeInstances of one instance.
    async fn describe_one(&self, id: &str) -> aws_sdk_ec2::types::Instance {
        let out = self
            .ec2
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .unwrap();
        out.reservations()[0].instances()[0].clone()
    }

    pub async fn instance_tags_and_state(&self, id: &str) -> (HashMap<String, String>, String) {
        let instance = &self.describe_one(id).await;
        let tags = tag_map(instance.tags().iter().map(|t| (t.key(), t.value())));
        let state = instance
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_default();
        (tags, state)
    }

    /// Pool instances still pending or running with the `Status` tag `status`.
    pub async fn live_instances_tagged(&self, status: &str) -> usize {
        use aws_sdk_ec2::types::Filter;
        let out = self
            .ec2
            .describe_instances()
            .filters(Filter::builder().name("tag:Status").values(status).build())
            .filters(alive())
            .send()
            .await
            .unwrap();
        out.reservations().iter().map(|r| r.instances().len()).sum()
    }

    /// The availability zone EC2 placed the instance in.
    pub async fn instance_zone(&self, id: &str) -> String {
        let out = self
            .ec2
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .unwrap();
        out.reservations()[0].instances()[0]
            .placement()
            .and_then(|p| p.availability_zone())
            .expect("an instance has a zone")
            .to_string()
    }

    /// The workspace volumes EBS holds for `user` (tagged `UserId` and `spotpool:workspace`).
    pub async fn workspace_volumes(&self, user: &str) -> Vec<Volume> {
        use aws_sdk_ec2::types::Filter;
        let out = self
            .ec2
            .describe_volumes()
            .filters(Filter::builder().name("tag:UserId").values(user).build())
            .filters(
                Filter::builder()
                    .name("tag-key")
                    .values("spotpool:workspace")
                    .build(),
            )
            .send()
            .await
            .unwrap();
        out.volumes()
            .iter()
            .map(|v| Volume {
                id: v.volume_id().unwrap_or_default().to_string(),
                zone: v.availability_zone().unwrap_or_default().to_string(),
                state: v
                    .state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                size_gib: v.size().unwrap_or_default(),
                encrypted: v.encrypted().unwrap_or_default(),
                attached_to: v
                    .attachments()
                    .iter()
                    .filter(|a| {
                        a.state().map(|s| s.as_str()) == Some("attached")
                            || a.state().map(|s| s.as_str()) == Some("attaching")
                    })
                    .filter_map(|a| a.instance_id().map(String::from))
                    .collect(),
                tags: tag_map(v.tags().iter().map(|t| (t.key(), t.value()))),
            })
            .collect()
    }

    /// The device, volume and DeleteOnTermination of each EBS mapping of an instance.
    pub async fn block_devices(&self, id: &str) -> Vec<(String, String, bool)> {
        self.describe_one(id)
            .await
            .block_device_mappings()
            .iter()
            .filter_map(|m| {
                let ebs = m.ebs()?;
                Some((
                    m.device_name()?.to_string(),
                    ebs.volume_id()?.to_string(),
                    ebs.delete_on_termination()?,
                ))
            })
            .collect()
    }

    /// Terminates an instance behind the daemon's back (EC2 reclaiming it).
    pub async fn terminate(&self, id: &str) {
        self.ec2
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await
            .expect("terminating an instance");
    }

    pub async fn target_group_arn(&self, name: &str) -> Option<String> {
        match self.elb.describe_target_groups().names(name).send().await {
            Ok(out) => out
                .target_groups()
                .first()
                .and_then(|g| g.target_group_arn())
                .map(String::from),
            Err(_) => None,
        }
    }

    /// The health check of a target group: (path, interval, timeout, healthy threshold,
    /// unhealthy threshold).
    /// The group's health check, (path, interval, timeout, healthy and unhealthy thresholds), and
    /// its matcher's HTTP codes.
    pub async fn health_check_and_codes(
        &self,
        group_arn: &str,
    ) -> ((String, i32, i32, i32, i32), String) {
        let out = self
            .elb
            .describe_target_groups()
            .target_group_arns(group_arn)
            .send()
            .await
            .unwrap();
        let group = &out.target_groups()[0];
        let codes = group
            .matcher()
            .and_then(|m| m.http_code())
            .unwrap_or_default();
        (
            (
                group.health_check_path().unwrap_or_default().to_string(),
                group.health_check_interval_seconds().unwrap_or_default(),
                group.health_check_timeout_seconds().unwrap_or_default(),
                group.healthy_threshold_count().unwrap_or_default(),
                group.unhealthy_threshold_count().unwrap_or_default(),
            ),
            codes.to_string(),
        )
    }

    pub async fn targets(&self, group_arn: &str) -> Vec<String> {
        let targets = self.target_ports(group_arn).await;
        targets.into_iter().map(|(id, _)| id).collect()
    }

    /// (instance, port) of every target of the group.
    pub async fn target_ports(&self, group_arn: &str) -> Vec<(String, i32)> {
        let out = self
            .elb
            .describe_target_health()
            .target_group_arn(group_arn)
            .send()
            .await
            .unwrap();
        out.target_health_descriptions()
            .iter()
            .filter_map(|d| d.target())
            .map(|t| {
                (
                    t.id().unwrap_or_default().to_string(),
                    t.port().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// (path patterns, forwarded target groups) of every non-default rule on the listener.
    pub async fn rules(&self, listener: &str) -> Vec<(Vec<String>, Vec<String>)> {
        self.rule_conditions(listener)
            .await
            .into_iter()
            .map(|(conditions, groups)| {
                let values = conditions.into_iter().flat_map(|(_, v)| v).collect();
                (values, groups)
            })
            .collect()
    }

    /// Waits (up to 30 s, polling) until every warm rule on `listener` belongs to a spare and
    /// every warm target group has its rule: a spare that a move, or a claim that could not use
    /// its route, took keeps its warm route until the daemon's next pass deletes it (`Unwire`),
    /// and a spare being wired has its group a moment before its rule.
    async fn wait_for_unwired_non_spares(&self, listener: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let mut spares = self.instances_with_status("available").await;
            spares.extend(self.instances_with_status("initializing").await);
            let rules = self.rules(listener).await;
            let warm_of_non_spares = rules.iter().any(|(paths, _)| {
                paths
                    .iter()
                    .filter_map(|p| p.strip_prefix("/_warm/"))
                    .any(|instance| !spares.iter().any(|s| s == instance))
            });
            let groups = self.elb.describe_target_groups().send().await.unwrap();
            let warm_group_without_rule = groups.target_groups().iter().any(|g| {
                let arn = g.target_group_arn().unwrap_or_default();
                g.target_group_name()
                    .is_some_and(|name| name.starts_with("sp-warm-"))
                    && !rules.iter().any(|(_, to)| to.iter().any(|t| t == arn))
            });
            let settled = !warm_of_non_spares && !warm_group_without_rule;
            if settled || std::time::Instant::now() > deadline {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// The live pool instances whose `Status` tag is `status`.
    pub async fn instances_with_status(&self, status: &str) -> Vec<String> {
        let out = self
            .ec2
            .describe_instances()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("tag:Status")
                    .values(status)
                    .build(),
            )
            .filters(alive())
            .send()
            .await
            .unwrap();
        let mut ids: Vec<String> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| i.instance_id().map(String::from))
            .collect();
        ids.sort();
        ids
    }

    /// The tags of a load balancer resource (target group or rule).
    pub async fn elb_tags(&self, arn: &str) -> HashMap<String, String> {
        let out = self
            .elb
            .describe_tags()
            .resource_arns(arn)
            .send()
            .await
            .unwrap();
        tag_map(
            out.tag_descriptions()
                .iter()
                .flat_map(|d| d.tags())
                .map(|t| (t.key(), t.value())),
        )
    }

    /// The target group the rule of a path-routed user forwards to (its own `sp-<route>`, or
    /// the `sp-warm-<instance>` of the pre-wired spare it claimed).
    pub async fn user_target_group(&self, listener: &str, route: &str) -> Option<String> {
        let path = format!("/{route}/*");
        self.rules(listener)
            .await
            .into_iter()
            .find(|(paths, _)| paths.contains(&path))
            .and_then(|(_, groups)| groups.into_iter().next())
    }

    /// The users' rules on the listener: every rule but the spares' warm ones.
    pub async fn user_rules(&self, listener: &str) -> Vec<(Vec<String>, Vec<String>)> {
        self.rules(listener)
            .await
            .into_iter()
            .filter(|(paths, _)| !paths.iter().any(|p| p.starts_with("/_warm/")))
            .collect()
    }

    /// (conditions as (field, values), forwarded target groups) of every non-default rule on
    /// the listener.
    #[allow(clippy::type_complexity)]
    pub async fn rule_conditions(
        &self,
        listener: &str,
    ) -> Vec<(Vec<(String, Vec<String>)>, Vec<String>)> {
        let out = self
            .elb
            .describe_rules()
            .listener_arn(listener)
            .send()
            .await
            .unwrap();
        out.rules()
            .iter()
            .filter(|r| !r.is_default().unwrap_or(false))
            .map(|r| {
                let conditions = r
                    .conditions()
                    .iter()
                    .map(|c| {
                        let mut values: Vec<String> = c.values().to_vec();
                        if let Some(config) = c.path_pattern_config() {
                            values.extend(config.values().iter().cloned());
                        }
                        if let Some(config) = c.host_header_config() {
                            values.extend(config.values().iter().cloned());
                        }
                        if let Some(config) = c.source_ip_config() {
                            values.extend(config.values().iter().cloned());
                        }
                        values.dedup();
                        (c.field().unwrap_or_default().to_string(), values)
                    })
                    .collect();
                let groups = r
                    .actions()
                    .iter()
                    .filter_map(|a| a.target_group_arn().map(String::from))
                    .collect();
                (conditions, groups)
            })
            .collect()
    }

    pub async fn secret(&self, name: &str) -> Option<(String, HashMap<String, String>)> {
        let value = self
            .secrets
            .get_secret_value()
            .secret_id(name)
            .send()
            .await
            .ok()?;
        let described = self
            .secrets
            .describe_secret()
            .secret_id(name)
            .send()
            .await
            .ok()?;
        let tags = tag_map(described.tags().iter().map(|t| (t.key(), t.value())));
        Some((value.secret_string().unwrap_or_default().to_string(), tags))
    }
}

impl Aws {
    /// Asserts, through the AWS API, that the pool's resources are exactly those of the `ready`
    /// users (user id to instance document), and returns the number of spares:
    /// - each user holds one live instance tagged `Status=assigned` and `UserId=<user>`, the one
    ///   the API names; no instance serves two users; every other live instance of the pool is a
    ///   spare (`available` or `initializing`) tagged with no user;
    /// - each user has a rule `/<route>/*` on `listener` forwarding to one target group (its
    ///   own `sp-<route>`, or the `sp-warm-<instance>` of the pre-wired spare it claimed) with
    ///   only their instance registered;
    /// - every other target group and rule is a spare's warm route: `sp-warm-<spare>` holding
    ///   only that spare, and the rule `/_warm/<spare>` (source 192.0.2.1/32) forwarding to it;
    ///   nothing else exists;
    /// - each user has the secret `openclaw/<user>`, and no other `openclaw/` secret exists.
    ///
    /// `context` (e.g. a seed) goes in every failure message.
    pub async fn assert_resources_match_users(
        &self,
        listener: &str,
        ready: &HashMap<String, serde_json::Value>,
        context: &str,
    ) -> usize {
        self.wait_for_unwired_non_spares(listener).await;
        let instances = self
            .ec2
            .describe_instances()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("tag:spotpool:pool")
                    .values("spotpool")
                    .build(),
            )
            .filters(alive())
            .send()
            .await
            .unwrap();
        let mut holders: HashMap<String, String> = HashMap::new();
        let mut spares = 0;
        let mut spare_ids: HashSet<String> = HashSet::new();
        for instance in instances.reservations().iter().flat_map(|r| r.instances()) {
            let id = instance.instance_id().unwrap().to_string();
            let tags = tag_map(instance.tags().iter().map(|t| (t.key(), t.value())));
            let user = tags.get("UserId").cloned();
            match tags.get("Status").map(String::as_str) {
                Some("assigned") => {
                    let user = user.expect("an assigned instance names its user");
                    let Some(doc) = ready.get(&user) else {
                        panic!("instance {id} is held by {user:?}, who is not ready ({context})");
                    };
                    assert_eq!(doc["instance_id"], id, "{user}'s instance ({context})");
                    assert!(
                        !holders.values().any(|holder| *holder == user),
                        "{user} holds two instances ({context})"
                    );
                    assert!(holders.insert(id, user).is_none());
                }
                Some("available") | Some("initializing") => {
                    assert_eq!(user, None, "spare {id} is tagged with a user ({context})");
                    spares += 1;
                    spare_ids.insert(id);
                }
                other => panic!("instance {id} left with Status {other:?} ({context})"),
            }
        }
        assert_eq!(
            holders.len(),
            ready.len(),
            "one instance per ready user: {holders:?} ({context})"
        );

        let groups = self.elb.describe_target_groups().send().await.unwrap();
        let mut unexplained: HashMap<String, String> = groups
            .target_groups()
            .iter()
            .filter_map(|g| Some((g.target_group_arn()?.into(), g.target_group_name()?.into())))
            .collect();
        let mut rules = self.rules(listener).await;
        for (user, doc) in ready {
            let route = doc["route"].as_str().unwrap();
            let path = format!("/{route}/*");
            let Some(at) = rules.iter().position(|(paths, _)| paths.contains(&path)) else {
                panic!("{user}: no rule ({context})");
            };
            let (_, forwards) = rules.remove(at);
            assert_eq!(
                forwards.len(),
                1,
                "{user}'s rule forwards to {forwards:?} ({context})"
            );
            assert!(
                unexplained.remove(&forwards[0]).is_some(),
                "{user}'s rule forwards to an unknown or shared group ({context})"
            );
            assert_eq!(
                self.targets(&forwards[0]).await,
                vec![doc["instance_id"].as_str().unwrap().to_string()],
                "{user}'s targets ({context})"
            );
            assert!(
                self.secret(&format!("openclaw/{user}")).await.is_some(),
                "{user}: no secret ({context})"
            );
        }
        // What is left is the spares' warm routes.
        for (paths, forwards) in &rules {
            let spare = paths
                .iter()
                .find_map(|p| p.strip_prefix("/_warm/"))
                .unwrap_or_else(|| panic!("leaked rule {paths:?} ({context})"));
            assert!(
                paths.iter().any(|p| p == "192.0.2.1/32"),
                "warm rule {paths:?} lacks its source condition ({context})"
            );
            if !spare_ids.contains(spare) {
                let (tags, state) = self.instance_tags_and_state(spare).await;
                panic!("warm rule of {spare}, not a spare: {state}, {tags:?} ({context})");
            }
            assert_eq!(forwards.len(), 1, "{spare}'s warm rule ({context})");
            let name = unexplained
                .remove(&forwards[0])
                .unwrap_or_else(|| panic!("{spare}'s warm rule forwards to an unknown group"));
            assert_eq!(name, format!("sp-warm-{}", spare.trim_start_matches("i-")));
            assert_eq!(
                self.targets(&forwards[0]).await,
                vec![spare.to_string()],
                "{spare}'s warm targets ({context})"
            );
        }
        assert!(
            unexplained.is_empty(),
            "leaked target groups {unexplained:?} ({context})"
        );
        let secrets = self.secrets.list_secrets().send().await.unwrap();
        let secret_names: HashSet<&str> = secrets
            .secret_list()
            .iter()
            .filter_map(|s| s.name())
            .filter(|name| name.starts_with("openclaw/"))
            .collect();
        assert_eq!(
            secret_names.len(),
            ready.len(),
            "leaked secrets {secret_names:?} ({context})"
        );
        spares
    }
}

/// Any service's tags as a map, from their (key, value) pairs.
fn tag_map<'a>(
    pairs: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>,
) -> HashMap<String, String> {
    pairs
        .map(|(key, value)| {
            (
                key.unwrap_or_default().to_string(),
                value.unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The filter for instances that are pending or running.
fn alive() -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name("instance-state-name")
        .values("pending")
        .values("running")
        .build()
}
