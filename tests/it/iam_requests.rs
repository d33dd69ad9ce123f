//! The IAM requests of every AWS call the daemon makes (and of the instance's read of its user's
//! secret), as AWS authorizes them: one [`Request`] per resource the Service Authorization
//! Reference lists for the action, with the condition keys the call carries (tags on create,
//! market type, launch template, PassRole's target, resource tags, create actions). They are
//! built from the applied example root's own ARNs, and decided by `iam_policy` against the
//! policies Terraform applied, read from the Terraform state.
//!
//! [`check`] asserts that every call is allowed; that every request of [`must_deny`] (another
//! pool's resources, a create without the pool's tag or with extra tag keys, on-demand, another
//! launch template, PassRole elsewhere, another user's secret, ...) is denied, also by the Allow
//! statements alone; that removing any one condition from any statement changes a decision (an
//! Allow's lets a must-deny request through, a Deny's blocks an allowed call), so no condition
//! is untested; that every call the daemon made in the end-to-end run has a row here; that the
//! policy gaps of [`known_gaps`] are still open; and that `parliament` finds nothing but the
//! findings [`lint`] accepts, each for a stated reason.

use crate::iam_policy::{Context, Decision, Effect, Policy, Request, wildcard_match};
use serde_json::Value;
use spotpool::cloud::tags;
use std::collections::BTreeSet;
use std::path::Path;

/// What the example root created, from the Terraform state.
pub struct Deployment {
    partition: String,
    region: String,
    account: String,
    pool: String,
    secret_prefix: String,
    launch_template_id: String,
    /// The on-demand fallback's template (`on_demand_fallback`), if the module made one.
    on_demand_launch_template_id: Option<String>,
    subnet_ids: Vec<String>,
    security_group_id: String,
    vpc_id: String,
    /// Shard 0's listener.
    listener_arn: String,
    /// Every shard's listener (one ALB each) that carries the users' rules.
    shard_listener_arns: Vec<String>,
    queue_arn: String,
    instance_role_arn: String,
    instance_profile_arn: String,
    ami_id: String,
    /// The customer-managed KMS keys of the root and workspace volumes (none without them).
    kms_key_arns: Vec<String>,
    /// The ECR repository of `container_image`, if it is an ECR image (the daemon reads its
    /// tag's digest with DescribeImages).
    image_repository_arn: Option<String>,
    /// (policy name, document) of the daemon's managed policies.
    daemon_policies: Vec<(String, Value)>,
    /// (policy name, document) of the instance role's inline policies.
    instance_policies: Vec<(String, Value)>,
}

impl Deployment {
    /// Reads the outputs and the applied IAM policies of `terraform.tfstate`.
    pub fn from_state(state_file: &Path) -> Deployment {
        let text = std::fs::read_to_string(state_file)
            .unwrap_or_else(|err| panic!("reading {}: {err}", state_file.display()));
        let state: Value = serde_json::from_str(&text).expect("the Terraform state is JSON");
        let output = |name: &str| -> String {
            state["outputs"][name]["value"]
                .as_str()
                .unwrap_or_else(|| panic!("the state has no string output {name}"))
                .to_string()
        };
        let listener_arn = output("listener_arn");
        let fields: Vec<&str> = listener_arn.split(':').collect();
        let image_repository_arn = spotpool::image::ImageRef::parse(&output("container_image"))
            .expect("container_image is an image reference")
            .ecr()
            .map(|ecr| {
                format!(
                    "arn:{}:ecr:{}:{}:repository/{}",
                    fields[1], ecr.region, ecr.registry_id, ecr.repository
                )
            });
        let instance_role_arn = output("instance_role_arn");
        let instance_role = instance_role_arn.rsplit('/').next().unwrap().to_string();
        let policies = |resource_type: &str, keep: &dyn Fn(&Value) -> bool| {
            let mut out = Vec::new();
            for resource in state["resources"].as_array().expect("state resources") {
                if resource["mode"] != "managed" || resource["type"] != resource_type {
                    continue;
                }
                for instance in resource["instances"].as_array().into_iter().flatten() {
                    let attributes = &instance["attributes"];
                    if keep(attributes) {
                        let document = attributes["policy"].as_str().expect("a policy attribute");
                        out.push((
                            attributes["name"].as_str().unwrap_or_default().to_string(),
                            serde_json::from_str(document).expect("a policy is JSON"),
                        ));
                    }
                }
            }
            out
        };
        let daemon_policies = policies("aws_iam_policy", &|a| {
            a["name"].as_str().is_some_and(|n| n.contains("-daemon"))
        });
        let instance_policies = policies("aws_iam_role_policy", &|a| a["role"] == instance_role);
        let kms_key_arns = state["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["mode"] == "managed" && r["type"] == "aws_kms_key")
            .flat_map(|r| r["instances"].as_array().into_iter().flatten())
            .filter_map(|i| i["attributes"]["arn"].as_str().map(str::to_string))
            .collect();
        let shard_listener_arns: Vec<String> = state["outputs"]["shard_listener_arns"]["value"]
            .as_array()
            .expect("shard_listener_arns")
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        assert_eq!(shard_listener_arns.first(), Some(&listener_arn));
        // <name>-daemon, <name>-daemon-workspaces, and a routing policy for every 9 shards.
        assert_eq!(
            daemon_policies.len(),
            2 + shard_listener_arns.len().div_ceil(9),
            "the daemon's managed policies: {:?}",
            daemon_policies
                .iter()
                .map(|(name, _)| name)
                .collect::<Vec<_>>()
        );
        assert!(
            !instance_policies.is_empty(),
            "the instance role's policies"
        );
        Deployment {
            partition: fields[1].to_string(),
            region: output("region"),
            account: fields[4].to_string(),
            pool: output("pool"),
            secret_prefix: output("secret_prefix"),
            launch_template_id: output("launch_template_id"),
            on_demand_launch_template_id: state["outputs"]["on_demand_launch_template_id"]["value"]
                .as_str()
                .map(str::to_string),
            subnet_ids: state["outputs"]["subnet_ids"]["value"]
                .as_array()
                .expect("subnet_ids")
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect(),
            security_group_id: output("instance_security_group_id"),
            vpc_id: output("vpc_id"),
            listener_arn,
            shard_listener_arns,
            queue_arn: output("interruption_queue_arn"),
            instance_role_arn,
            instance_profile_arn: output("instance_profile_arn"),
            ami_id: output("ami_id"),
            kms_key_arns,
            image_repository_arn,
            daemon_policies,
            instance_policies,
        }
    }

    /// All of a role's policies as one: IAM evaluates them together.
    fn combined(policies: &[(String, Value)]) -> Policy {
        Policy {
            statements: policies
                .iter()
                .flat_map(|(_, document)| Policy::parse(document).statements)
                .collect(),
        }
    }

    fn ec2_arn(&self, resource: &str) -> String {
        let (partition, region, account) = (&self.partition, &self.region, &self.account);
        format!("arn:{partition}:ec2:{region}:{account}:{resource}")
    }

    /// Images and snapshots have no account in their ARN.
    fn ec2_global_arn(&self, resource: &str) -> String {
        format!("arn:{}:ec2:{}::{resource}", self.partition, self.region)
    }

    fn instance_arn(&self, id: &str) -> String {
        self.ec2_arn(&format!("instance/{id}"))
    }

    fn secret_arn(&self, name: &str) -> String {
        let (partition, region, account) = (&self.partition, &self.region, &self.account);
        format!("arn:{partition}:secretsmanager:{region}:{account}:secret:{name}-AbC123")
    }

    fn target_group_arn(&self, name: &str) -> String {
        let (partition, region, account) = (&self.partition, &self.region, &self.account);
        format!(
            "arn:{partition}:elasticloadbalancing:{region}:{account}:targetgroup/{name}/73e2d6bc24d8a067"
        )
    }

    fn rule_arn(&self, listener_arn: &str) -> String {
        format!(
            "{}/9683b2d02a6cabee",
            listener_arn.replace(":listener/", ":listener-rule/")
        )
    }

    /// The context every EC2 call carries.
    fn ec2(&self) -> Context {
        Context::new()
            .with("ec2:Region", &self.region)
            .with("aws:RequestedRegion", &self.region)
    }

    fn pool_tags(&self) -> Vec<(&'static str, String)> {
        vec![(tags::POOL, self.pool.clone())]
    }

    /// A user's resources: pool and user (`resource_tags` in `src/reconcile`).
    fn user_tags(&self) -> Vec<(&'static str, String)> {
        vec![
            (tags::POOL, self.pool.clone()),
            (tags::USER_ID, USER.into()),
        ]
    }

    fn workspace_tags(&self) -> Vec<(&'static str, String)> {
        let mut out = self.user_tags();
        out.push((tags::WORKSPACE, USER.into()));
        out
    }

    fn snapshot_tags(&self) -> Vec<(&'static str, String)> {
        let mut out = self.workspace_tags();
        out.push((tags::RELOCATION, "relocation-token".into()));
        out
    }

    /// The tags RunInstances puts on the instance and its root volume (`ec2.rs`).
    fn launch_tags(&self) -> Vec<(&'static str, String)> {
        vec![
            (tags::NAME, tags::NAME_VALUE.into()),
            (tags::POOL, self.pool.clone()),
            (tags::TIER, "default".into()),
            (tags::STATUS, "initializing".into()),
        ]
    }
}

const USER: &str = "alice";
const INSTANCE: &str = "i-0a1b2c3d4e5f60718";
const OTHER_INSTANCE: &str = "i-0ffeeddccbbaa9988";
const VOLUME: &str = "vol-0a1b2c3d4e5f60718";
const SNAPSHOT: &str = "snap-0a1b2c3d4e5f60718";
const OTHER_POOL: &str = "another-pool";

/// `aws:RequestTag/<key>` for each tag, and `aws:TagKeys`.
fn request_tags(context: Context, tags: &[(&str, String)]) -> Context {
    let keys: Vec<&str> = tags.iter().map(|(k, _)| *k).collect();
    let mut context = context.with_list("aws:TagKeys", &keys);
    for (key, value) in tags {
        context = context.with(&format!("aws:RequestTag/{key}"), value);
    }
    context
}

/// `<prefix>:ResourceTag/<key>` for each tag and each of the service's prefixes.
fn resource_tags(mut context: Context, prefixes: &[&str], tags: &[(&str, String)]) -> Context {
    for prefix in prefixes {
        for (key, value) in tags {
            context = context.with(&format!("{prefix}:ResourceTag/{key}"), value);
        }
    }
    context
}

/// The request of AddTags that tags a claimed spare's target group or rule for its user.
fn user_tag(context: Context) -> Context {
    request_tags(context, &[(tags::USER_ID, USER.into())])
}

fn replace_tag(
    tags: &[(&'static str, String)],
    key: &'static str,
    value: &str,
) -> Vec<(&'static str, String)> {
    let mut out: Vec<_> = tags.iter().filter(|(k, _)| *k != key).cloned().collect();
    out.push((key, value.to_string()));
    out
}

fn drop_tag(tags: &[(&'static str, String)], key: &str) -> Vec<(&'static str, String)> {
    tags.iter().filter(|(k, _)| *k != key).cloned().collect()
}

/// One AWS call: its IAM action name (as `calls_made` spells it), what it is for, and every
/// authorization AWS makes for it.
pub struct Call {
    pub name: &'static str,
    pub what: &'static str,
    pub requests: Vec<Request>,
}

fn call(name: &'static str, what: &'static str, requests: Vec<Request>) -> Call {
    Call {
        name,
        what,
        requests,
    }
}

/// A request that must be denied, and why.
pub struct Denied {
    pub why: &'static str,
    pub request: Request,
    /// Must stay denied even next to a policy that allows everything (the instance role's Deny
    /// statements promise that).
    pub despite_allow_all: bool,
}

fn deny(why: &'static str, request: Request) -> Denied {
    Denied {
        why,
        request,
        despite_allow_all: false,
    }
}

impl Deployment {
    /// RunInstances from the spot template with the given instance and root-volume contexts:
    /// every resource AWS authorizes for it, PassRole and the tags at launch.
    fn run_instances(&self, instance: Context, volume: Context) -> Vec<Request> {
        let template = self.ec2_arn(&format!("launch-template/{}", self.launch_template_id));
        let from_template = |context: Context| context.with("ec2:LaunchTemplate", &template);
        let tagging = |context: &Context| {
            // TagSpecifications are authorized as CreateTags with the same request tags.
            context.clone().with("ec2:CreateAction", "RunInstances")
        };
        let subnet = &self.subnet_ids[0];
        let mut requests = vec![
            Request::new(
                "ec2:RunInstances",
                &self.instance_arn("*"),
                instance.clone(),
            ),
            Request::new(
                "ec2:RunInstances",
                &self.ec2_arn("volume/*"),
                volume.clone(),
            ),
            Request::new(
                "ec2:RunInstances",
                &self.ec2_arn("network-interface/*"),
                from_template(self.ec2())
                    .with("ec2:Subnet", &self.ec2_arn(&format!("subnet/{subnet}")))
                    .with("ec2:Vpc", &self.ec2_arn(&format!("vpc/{}", self.vpc_id))),
            ),
            Request::new(
                "ec2:RunInstances",
                &self.ec2_arn(&format!("security-group/{}", self.security_group_id)),
                from_template(self.ec2()),
            ),
            Request::new(
                "ec2:RunInstances",
                &self.ec2_arn(&format!("subnet/{subnet}")),
                from_template(self.ec2()),
            ),
            Request::new(
                "ec2:RunInstances",
                &self.ec2_global_arn(&format!("image/{}", self.ami_id)),
                from_template(self.ec2()).with("ec2:IsLaunchTemplateResource", "true"),
            ),
            Request::new("ec2:RunInstances", &template, from_template(self.ec2())),
            Request::new(
                "ec2:RunInstances",
                &self.ec2_arn("spot-instances-request/*"),
                from_template(self.ec2()),
            ),
            Request::new(
                "iam:PassRole",
                &self.instance_role_arn,
                Context::new()
                    .with("iam:PassedToService", "ec2.amazonaws.com")
                    .with("iam:AssociatedResourceArn", &self.instance_arn(INSTANCE)),
            ),
        ];
        requests.push(Request::new(
            "ec2:CreateTags",
            &self.instance_arn("*"),
            tagging(&instance),
        ));
        requests.push(Request::new(
            "ec2:CreateTags",
            &self.ec2_arn("volume/*"),
            tagging(&volume),
        ));
        requests
    }

    /// `requests` (a launch from the spot template) from the template `template_id` instead.
    fn retemplated(&self, template_id: &str, requests: Vec<Request>) -> Vec<Request> {
        let spot = self.ec2_arn(&format!("launch-template/{}", self.launch_template_id));
        let other = self.ec2_arn(&format!("launch-template/{template_id}"));
        requests
            .into_iter()
            .map(|mut request| {
                if request.resource == spot {
                    request.resource = other.clone();
                }
                if request.context.get("ec2:LaunchTemplate").is_some() {
                    request.context = request.context.with("ec2:LaunchTemplate", &other);
                }
                request
            })
            .collect()
    }

    /// An on-demand fallback launch from `template_id`: the spot launch's requests with the
    /// on-demand market and no spot request.
    fn run_on_demand(&self, template_id: &str, launch: &[(&str, String)]) -> Vec<Request> {
        let requests = self.run_instances(
            self.launch_instance(launch, "on-demand"),
            self.launch_volume(launch),
        );
        self.retemplated(template_id, requests)
            .into_iter()
            .filter(|r| !r.resource.contains(":spot-instances-request/"))
            .collect()
    }

    /// With an on-demand template: on-demand only from it, spot never from it.
    fn on_demand_must_deny(&self) -> Vec<Denied> {
        let Some(template) = &self.on_demand_launch_template_id else {
            return Vec::new();
        };
        let launch = self.launch_tags();
        let instance = |template: &str, context: Context| {
            let request = Request::new("ec2:RunInstances", &self.instance_arn("*"), context);
            self.retemplated(template, vec![request]).remove(0)
        };
        let other_pool = replace_tag(&launch, tags::POOL, OTHER_POOL);
        vec![
            deny(
                "a spot launch from the on-demand template",
                instance(template, self.launch_instance(&launch, "spot")),
            ),
            deny(
                "an on-demand launch from the on-demand template tagged for another pool",
                instance(template, self.launch_instance(&other_pool, "on-demand")),
            ),
            deny(
                "an on-demand launch from a template that is not the pool's",
                instance(
                    "lt-0fedcba9876543210",
                    self.launch_instance(&launch, "on-demand"),
                ),
            ),
        ]
    }

    /// The instance resource of a spot launch from the template.
    fn launch_instance(&self, launch_tags: &[(&str, String)], market: &str) -> Context {
        let template = self.ec2_arn(&format!("launch-template/{}", self.launch_template_id));
        request_tags(self.ec2(), launch_tags)
            .with("ec2:InstanceMarketType", market)
            .with("ec2:LaunchTemplate", &template)
            .with("ec2:IsLaunchTemplateResource", "false")
            .with("ec2:InstanceProfile", &self.instance_profile_arn)
            .with("ec2:InstanceType", "t3.small")
            .with("ec2:MetadataHttpTokens", "required")
    }

    /// The root volume of a launch from the template.
    fn launch_volume(&self, launch_tags: &[(&str, String)]) -> Context {
        let template = self.ec2_arn(&format!("launch-template/{}", self.launch_template_id));
        request_tags(self.ec2(), launch_tags)
            .with("ec2:LaunchTemplate", &template)
            .with("ec2:IsLaunchTemplateResource", "true")
            .with("ec2:Encrypted", "true")
            .with("ec2:VolumeType", "gp3")
    }

    /// An existing instance of a pool (resource tags under both EC2 prefixes).
    fn pool_instance(&self, pool: &str) -> Context {
        let tags = [
            (tags::POOL, pool.to_string()),
            (tags::STATUS, "available".into()),
        ];
        resource_tags(self.ec2(), &["aws", "ec2"], &tags)
    }

    fn existing(&self, tags: &[(&str, String)]) -> Context {
        resource_tags(self.ec2(), &["aws", "ec2"], tags)
    }

    /// A new workspace volume (`ebs.rs` CreateVolume): the volume and its tagging.
    fn create_volume(&self, tags: &[(&str, String)]) -> Context {
        request_tags(self.ec2(), tags)
            .with("ec2:Encrypted", "true")
            .with("ec2:VolumeType", "gp3")
            .with("ec2:AvailabilityZone", &format!("{}a", self.region))
    }

    fn secret(&self, tags: &[(&str, String)]) -> Context {
        resource_tags(Context::new(), &["aws", "secretsmanager"], tags)
    }

    fn elb(&self, tags: &[(&str, String)]) -> Context {
        resource_tags(Context::new(), &["aws", "elasticloadbalancing"], tags)
    }

    /// A pre-wired spare's target group and rule before the claim's user is tagged on them:
    /// the pool's tag and the spare's instance.
    fn warm(&self, pool: &str) -> Context {
        self.elb(&[
            (tags::POOL, pool.to_string()),
            (tags::INSTANCE_ID, INSTANCE.into()),
        ])
    }

    /// A pre-wired spare's target group (`sp-warm-<instance id without i->`).
    fn warm_group_arn(&self) -> String {
        self.target_group_arn(&format!("sp-warm-{}", INSTANCE.trim_start_matches("i-")))
    }
}

impl Deployment {
    /// Rule writes the daemon makes on its shards' listeners, on listeners that are not one of
    /// them: another ALB's, and another listener of a shard's ALB (e.g. the HTTP:80 redirect
    /// next to a shard's HTTPS listener). All with the pool's tags, so only the listener
    /// scoping refuses them.
    fn rule_writes_off_the_shards(&self) -> Vec<Denied> {
        let shard = self.shard_listener_arns.last().expect("a shard");
        let (prefix, listener_id) = shard.rsplit_once('/').expect("a listener ARN");
        let foreign = [
            shard.replace(":listener/app/", ":listener/app/not-a-shard-"),
            format!("{prefix}/{}", listener_id.chars().rev().collect::<String>()),
        ];
        assert!(
            foreign
                .iter()
                .all(|arn| !self.shard_listener_arns.contains(arn)),
            "{foreign:?}"
        );
        let mut elb_tags = self.user_tags();
        elb_tags.push((tags::INSTANCE_ID, INSTANCE.into()));
        foreign
            .iter()
            .flat_map(|listener| {
                let rule = self.rule_arn(listener);
                [
                    deny(
                        "a rule on a listener that is not a shard's",
                        Request::new(
                            "elasticloadbalancing:CreateRule",
                            listener,
                            request_tags(Context::new(), &elb_tags),
                        ),
                    ),
                    deny(
                        "tagging a new rule on a listener that is not a shard's",
                        Request::new(
                            "elasticloadbalancing:AddTags",
                            &rule,
                            request_tags(Context::new(), &elb_tags)
                                .with("elasticloadbalancing:CreateAction", "CreateRule"),
                        ),
                    ),
                    deny(
                        "deleting a rule of a listener that is not a shard's",
                        Request::new(
                            "elasticloadbalancing:DeleteRule",
                            &rule,
                            self.elb(&elb_tags),
                        ),
                    ),
                    deny(
                        "changing a rule of a listener that is not a shard's",
                        Request::new(
                            "elasticloadbalancing:ModifyRule",
                            &rule,
                            self.elb(&elb_tags),
                        ),
                    ),
                    deny(
                        "the user's tag on a rule of a listener that is not a shard's",
                        Request::new(
                            "elasticloadbalancing:AddTags",
                            &rule,
                            user_tag(self.warm(&self.pool)),
                        ),
                    ),
                ]
            })
            .collect()
    }

    /// Every AWS call the daemon makes (`src/cloud/aws/`), as IAM sees it.
    pub fn daemon_calls(&self) -> Vec<Call> {
        let launch = self.launch_tags();
        let instance = self.instance_arn(INSTANCE);
        let ours = self.pool_instance(&self.pool);
        let volume = self.ec2_arn(&format!("volume/{VOLUME}"));
        let snapshot = self.ec2_global_arn(&format!("snapshot/{SNAPSHOT}"));
        let workspace = self.existing(&self.workspace_tags());
        let snapshot_context = self.existing(&self.snapshot_tags());
        let describe = |name: &'static str, what: &'static str| {
            call(name, what, vec![Request::new(name, "*", self.ec2())])
        };
        let everywhere = |name: &'static str, what: &'static str| {
            call(name, what, vec![Request::new(name, "*", Context::new())])
        };
        let retag = |keys: &[(&str, String)]| request_tags(ours.clone(), keys);
        let secret = self.secret_arn(&format!("{}{USER}", self.secret_prefix));
        let user_secret = self.secret(&self.user_tags());
        let group_name = spotpool::reconcile::target_group_name("r7x2");
        let group = self.target_group_arn(&group_name);
        let mut elb_tags = self.user_tags();
        elb_tags.push((tags::INSTANCE_ID, INSTANCE.into()));
        let our_group = self.elb(&elb_tags);
        // A user's rule is on its shard's listener: any shard's.
        let on_every_shard = |request: &dyn Fn(&str) -> Vec<Request>| -> Vec<Request> {
            self.shard_listener_arns
                .iter()
                .flat_map(|listener| request(listener))
                .collect()
        };
        let created = |action: &str| {
            request_tags(Context::new(), &elb_tags)
                .with("elasticloadbalancing:CreateAction", action)
        };
        let new_volume = self.ec2_arn("volume/*");
        let new_workspace = vec![
            Request::new(
                "ec2:CreateVolume",
                &new_volume,
                self.create_volume(&self.workspace_tags()),
            ),
            Request::new(
                "ec2:CreateTags",
                &new_volume,
                self.create_volume(&self.workspace_tags())
                    .with("ec2:CreateAction", "CreateVolume"),
            ),
        ];
        let mut relocation_copy = new_workspace.clone();
        relocation_copy[0].context = relocation_copy[0]
            .context
            .clone()
            .with("ec2:ParentSnapshot", &snapshot);
        relocation_copy.push(Request::new(
            "ec2:CreateVolume",
            &snapshot,
            snapshot_context.clone(),
        ));
        let mut calls = vec![
            describe(
                "ec2:DescribeInstances",
                "each pass lists the pool's instances",
            ),
            call(
                "ec2:RunInstances",
                "a spot launch from the pool's template",
                self.run_instances(
                    self.launch_instance(&launch, "spot"),
                    self.launch_volume(&launch),
                ),
            ),
            call(
                "ec2:RunInstances",
                "an on-demand fallback launch from the on-demand template",
                match &self.on_demand_launch_template_id {
                    Some(template) => self.run_on_demand(template, &launch),
                    None => Vec::new(),
                },
            ),
            call(
                "ec2:CreateTags",
                "a claim tags its instance for the user",
                vec![Request::new(
                    "ec2:CreateTags",
                    &instance,
                    retag(&[
                        (tags::STATUS, "assigned".into()),
                        (tags::USER_ID, USER.into()),
                    ]),
                )],
            ),
            call(
                "ec2:ModifyInstanceAttribute",
                "a first claim keeps the spare's blank workspace past the instance",
                vec![Request::new(
                    "ec2:ModifyInstanceAttribute",
                    &instance,
                    ours.clone(),
                )],
            ),
            call(
                "ec2:CreateTags",
                "a first claim tags the spare's blank workspace as the user's",
                vec![Request::new(
                    "ec2:CreateTags",
                    &volume,
                    request_tags(self.existing(&launch), &self.workspace_tags()),
                )],
            ),
            call(
                "ec2:CreateTags",
                "a probe marks a spare available",
                vec![Request::new(
                    "ec2:CreateTags",
                    &instance,
                    retag(&[(tags::STATUS, "available".into())]),
                )],
            ),
            call(
                "ec2:DeleteTags",
                "a returned instance loses its UserId",
                vec![Request::new(
                    "ec2:DeleteTags",
                    &instance,
                    ours.clone().with_list("aws:TagKeys", &[tags::USER_ID]),
                )],
            ),
            call(
                "ec2:TerminateInstances",
                "retiring a pool instance",
                vec![Request::new(
                    "ec2:TerminateInstances",
                    &instance,
                    ours.clone(),
                )],
            ),
            call(
                "iam:PassRole",
                "RunInstances passes the instance profile's role",
                self.run_instances(
                    self.launch_instance(&launch, "spot"),
                    self.launch_volume(&launch),
                )
                .into_iter()
                .filter(|r| r.action == "iam:PassRole")
                .collect(),
            ),
            call(
                "ssm:SendCommand",
                "the start, probe and stop scripts",
                vec![
                    Request::new(
                        "ssm:SendCommand",
                        &format!(
                            "arn:{}:ssm:{}::document/AWS-RunShellScript",
                            self.partition, self.region,
                        ),
                        Context::new(),
                    ),
                    Request::new(
                        "ssm:SendCommand",
                        &instance,
                        resource_tags(Context::new(), &["aws", "ssm"], &self.pool_tags()),
                    ),
                ],
            ),
            everywhere("ssm:GetCommandInvocation", "a command's status"),
            everywhere(
                "ssm:DescribeInstanceInformation",
                "whose SSM agents are online, before a probe",
            ),
            call(
                "secretsmanager:CreateSecret",
                "a new user's secret, tagged at creation",
                vec![
                    Request::new(
                        "secretsmanager:CreateSecret",
                        &secret,
                        request_tags(Context::new(), &self.user_tags()).with(
                            "secretsmanager:Name",
                            &format!("{}{USER}", self.secret_prefix),
                        ),
                    ),
                    // Tags in CreateSecret need TagResource too (the CreateSecret API reference).
                    Request::new(
                        "secretsmanager:TagResource",
                        &secret,
                        request_tags(Context::new(), &self.user_tags()),
                    ),
                ],
            ),
            call(
                "secretsmanager:PutSecretValue",
                "a rotation writes a new version",
                vec![Request::new(
                    "secretsmanager:PutSecretValue",
                    &secret,
                    user_secret.clone(),
                )],
            ),
            call(
                "secretsmanager:TagResource",
                "a claim binds the secret to its instance",
                vec![Request::new(
                    "secretsmanager:TagResource",
                    &secret,
                    request_tags(
                        user_secret.clone(),
                        &[(tags::INSTANCE_ARN, instance.clone())],
                    ),
                )],
            ),
            call(
                "secretsmanager:TagResource",
                "a re-created secret gets its tags back",
                vec![Request::new(
                    "secretsmanager:TagResource",
                    &secret,
                    request_tags(user_secret.clone(), &self.user_tags()),
                )],
            ),
            call(
                "secretsmanager:UntagResource",
                "a teardown unbinds the secret",
                vec![Request::new(
                    "secretsmanager:UntagResource",
                    &secret,
                    user_secret
                        .clone()
                        .with_list("aws:TagKeys", &[tags::INSTANCE_ARN]),
                )],
            ),
            call(
                "secretsmanager:DeleteSecret",
                "a release deletes the secret",
                vec![Request::new(
                    "secretsmanager:DeleteSecret",
                    &secret,
                    user_secret
                        .clone()
                        .with("secretsmanager:ForceDeleteWithoutRecovery", "true"),
                )],
            ),
            everywhere("secretsmanager:ListSecrets", "the orphan sweep"),
            call(
                "elasticloadbalancing:CreateTargetGroup",
                "a user's target group, tagged at creation",
                vec![
                    Request::new(
                        "elasticloadbalancing:CreateTargetGroup",
                        &group,
                        request_tags(Context::new(), &elb_tags),
                    ),
                    Request::new(
                        "elasticloadbalancing:AddTags",
                        &group,
                        created("CreateTargetGroup"),
                    ),
                ],
            ),
            call(
                "elasticloadbalancing:RegisterTargets",
                "the user's instance joins its group",
                vec![Request::new(
                    "elasticloadbalancing:RegisterTargets",
                    &group,
                    our_group.clone(),
                )],
            ),
            call(
                "elasticloadbalancing:DeregisterTargets",
                "the old instance leaves the group",
                vec![Request::new(
                    "elasticloadbalancing:DeregisterTargets",
                    &group,
                    our_group.clone(),
                )],
            ),
            call(
                "elasticloadbalancing:DeleteTargetGroup",
                "a teardown",
                vec![Request::new(
                    "elasticloadbalancing:DeleteTargetGroup",
                    &group,
                    our_group.clone(),
                )],
            ),
            call(
                "elasticloadbalancing:CreateRule",
                "the user's rule on its shard's listener, tagged at creation",
                on_every_shard(&|listener| {
                    vec![
                        Request::new(
                            "elasticloadbalancing:CreateRule",
                            listener,
                            request_tags(Context::new(), &elb_tags),
                        ),
                        Request::new(
                            "elasticloadbalancing:AddTags",
                            &self.rule_arn(listener),
                            created("CreateRule"),
                        ),
                    ]
                }),
            ),
            call(
                "elasticloadbalancing:DeleteRule",
                "a teardown",
                on_every_shard(&|listener| {
                    vec![Request::new(
                        "elasticloadbalancing:DeleteRule",
                        &self.rule_arn(listener),
                        our_group.clone(),
                    )]
                }),
            ),
            call(
                "elasticloadbalancing:ModifyRule",
                "sleep and wake switch the rule's action",
                on_every_shard(&|listener| {
                    vec![Request::new(
                        "elasticloadbalancing:ModifyRule",
                        &self.rule_arn(listener),
                        our_group.clone(),
                    )]
                }),
            ),
            call(
                "elasticloadbalancing:AddTags",
                "after ready, the user's UserId on the claimed spare's target group and rule",
                [Request::new(
                    "elasticloadbalancing:AddTags",
                    &self.warm_group_arn(),
                    user_tag(self.warm(&self.pool)),
                )]
                .into_iter()
                .chain(on_every_shard(&|listener| {
                    vec![Request::new(
                        "elasticloadbalancing:AddTags",
                        &self.rule_arn(listener),
                        user_tag(self.warm(&self.pool)),
                    )]
                }))
                .collect(),
            ),
            everywhere(
                "elasticloadbalancing:DescribeTargetGroups",
                "a group by name; the sweep",
            ),
            everywhere(
                "elasticloadbalancing:DescribeRules",
                "free priorities; the sweep",
            ),
            everywhere("elasticloadbalancing:DescribeTags", "the sweep"),
            everywhere(
                "elasticloadbalancing:DescribeTargetHealth",
                "a move waits for health",
            ),
            describe(
                "ec2:DescribeVolumes",
                "a workspace's state; the pool's workspaces",
            ),
            describe("ec2:DescribeSnapshots", "a relocation's snapshot"),
            describe("ec2:DescribeSubnets", "the subnets' zones"),
            describe(
                "ec2:DescribeInstanceTypes",
                "the vCPUs of the tiers' types (the quota check)",
            ),
            describe(
                "ec2:DescribeSpotPriceHistory",
                "the spot prices of the tiers' types, hourly (the cost)",
            ),
            everywhere(
                "servicequotas:GetServiceQuota",
                "the account's quotas, at start-up and hourly",
            ),
            everywhere(
                "elasticloadbalancing:DescribeAccountLimits",
                "GetServiceQuota's dependent action for ELB's quotas",
            ),
            call(
                "ec2:CreateVolume",
                "a new workspace, tagged at creation",
                new_workspace.clone(),
            ),
            call(
                "ec2:CreateVolume",
                "a relocation's copy, from the snapshot",
                relocation_copy,
            ),
            call(
                "ec2:AttachVolume",
                "a workspace joins the user's instance",
                vec![
                    Request::new("ec2:AttachVolume", &volume, workspace.clone()),
                    Request::new("ec2:AttachVolume", &instance, ours.clone()),
                ],
            ),
            call(
                "ec2:DetachVolume",
                "a workspace leaves an instance",
                vec![
                    Request::new("ec2:DetachVolume", &volume, workspace.clone()),
                    Request::new("ec2:DetachVolume", &instance, ours.clone()),
                ],
            ),
            call(
                "ec2:DeleteVolume",
                "a released user's workspace",
                vec![Request::new("ec2:DeleteVolume", &volume, workspace.clone())],
            ),
            call(
                "ec2:CreateSnapshot",
                "a relocation snapshots the workspace",
                vec![
                    Request::new(
                        "ec2:CreateSnapshot",
                        &self.ec2_global_arn("snapshot/*"),
                        request_tags(self.ec2(), &self.snapshot_tags())
                            .with("ec2:ParentVolume", &volume),
                    ),
                    Request::new("ec2:CreateSnapshot", &volume, workspace.clone()),
                    Request::new(
                        "ec2:CreateTags",
                        &self.ec2_global_arn("snapshot/*"),
                        request_tags(self.ec2(), &self.snapshot_tags())
                            .with("ec2:CreateAction", "CreateSnapshot"),
                    ),
                ],
            ),
            call(
                "ec2:DeleteSnapshot",
                "a relocation's snapshot once copied",
                vec![Request::new(
                    "ec2:DeleteSnapshot",
                    &snapshot,
                    snapshot_context.clone(),
                )],
            ),
            everywhere("cloudwatch:GetMetricData", "auto-sleep's request counts"),
            call(
                "sqs:ReceiveMessage",
                "the interruption feed",
                vec![Request::new(
                    "sqs:ReceiveMessage",
                    &self.queue_arn,
                    Context::new(),
                )],
            ),
            call(
                "sqs:DeleteMessage",
                "a stored interruption",
                vec![Request::new(
                    "sqs:DeleteMessage",
                    &self.queue_arn,
                    Context::new(),
                )],
            ),
        ];
        // Pinning the container image: its tag's digest, when it is in ECR.
        if let Some(repository) = &self.image_repository_arn {
            let request = Request::new("ecr:DescribeImages", repository, Context::new());
            calls.push(call(
                "ecr:DescribeImages",
                "the container image's digest",
                vec![request],
            ));
        }
        calls
    }

    /// Requests the daemon's policies must refuse.
    pub fn daemon_must_deny(&self) -> Vec<Denied> {
        let launch = self.launch_tags();
        let elsewhere = || {
            Context::new()
                .with("ec2:Region", "eu-west-3")
                .with("aws:RequestedRegion", "eu-west-3")
        };
        let instance = self.instance_arn(INSTANCE);
        let theirs = self.pool_instance(OTHER_POOL);
        let ours = self.pool_instance(&self.pool);
        let volume = self.ec2_arn(&format!("volume/{VOLUME}"));
        let new_volume = self.ec2_arn("volume/*");
        let snapshot = self.ec2_global_arn(&format!("snapshot/{SNAPSHOT}"));
        let new_snapshot = self.ec2_global_arn("snapshot/*");
        let workspace = self.workspace_tags();
        let root_volume = self.existing(&self.user_tags());
        let secret = self.secret_arn(&format!("{}{USER}", self.secret_prefix));
        let group = self.target_group_arn(&spotpool::reconcile::target_group_name("r7x2"));
        let rule = self.rule_arn(&self.listener_arn);
        let extra = |tags: &[(&'static str, String)]| replace_tag(tags, "Owner", "mallory");
        let run = |resource: String, context: Context| {
            Request::new("ec2:RunInstances", &resource, context)
        };
        let template = self.ec2_arn(&format!("launch-template/{}", self.launch_template_id));
        let closed = self.closed_gaps().into_iter().flat_map(|gap| {
            gap.requests
                .into_iter()
                .map(move |request| deny(gap.what, request))
        });
        closed
            .chain(self.rule_writes_off_the_shards())
            .chain(self.on_demand_must_deny())
            .chain([
                deny(
                    "DescribeInstances in another region",
                    Request::new("ec2:DescribeInstances", "*", elsewhere()),
                ),
                deny(
                    "DescribeVolumes in another region",
                    Request::new("ec2:DescribeVolumes", "*", elsewhere()),
                ),
                deny(
                    "a launch tagged for another pool",
                    run(
                        self.instance_arn("*"),
                        self.launch_instance(&replace_tag(&launch, tags::POOL, OTHER_POOL), "spot"),
                    ),
                ),
                deny(
                    "a launch without the pool's tag",
                    run(
                        self.instance_arn("*"),
                        self.launch_instance(&drop_tag(&launch, tags::POOL), "spot"),
                    ),
                ),
                deny(
                    "an on-demand launch from the spot template",
                    run(
                        self.instance_arn("*"),
                        self.launch_instance(&launch, "on-demand"),
                    ),
                ),
                deny(
                    "a root volume tagged for another pool",
                    run(
                        new_volume.clone(),
                        self.launch_volume(&replace_tag(&launch, tags::POOL, OTHER_POOL)),
                    ),
                ),
                deny(
                    "a root volume tagged as a workspace",
                    run(
                        new_volume.clone(),
                        self.launch_volume(&replace_tag(&launch, tags::WORKSPACE, USER)),
                    ),
                ),
                deny(
                    "a launch from another launch template",
                    run(
                        self.ec2_arn("launch-template/lt-0another00000000"),
                        self.ec2().with(
                            "ec2:LaunchTemplate",
                            &self.ec2_arn("launch-template/lt-0another00000000"),
                        ),
                    ),
                ),
                deny(
                    "a launch into another subnet",
                    run(
                        self.ec2_arn("subnet/subnet-0another0000000000"),
                        self.ec2().with("ec2:LaunchTemplate", &template),
                    ),
                ),
                deny(
                    "a launch into another security group",
                    run(
                        self.ec2_arn("security-group/sg-0another0000000000"),
                        self.ec2().with("ec2:LaunchTemplate", &template),
                    ),
                ),
                deny(
                    "tagging another pool's instance",
                    Request::new(
                        "ec2:CreateTags",
                        &instance,
                        request_tags(theirs.clone(), &[(tags::STATUS, "assigned".into())]),
                    ),
                ),
                deny(
                    "moving an instance to another pool by its tag",
                    Request::new(
                        "ec2:CreateTags",
                        &instance,
                        request_tags(ours.clone(), &[(tags::POOL, OTHER_POOL.into())]),
                    ),
                ),
                deny(
                    "deleting every tag of an instance (DeleteTags without keys)",
                    Request::new("ec2:DeleteTags", &instance, ours.clone()),
                ),
                deny(
                    "untagging another pool's instance",
                    Request::new(
                        "ec2:DeleteTags",
                        &instance,
                        theirs.clone().with_list("aws:TagKeys", &[tags::USER_ID]),
                    ),
                ),
                deny(
                    "terminating another pool's instance",
                    Request::new("ec2:TerminateInstances", &instance, theirs.clone()),
                ),
                deny(
                    "keeping a volume of another pool's instance",
                    Request::new("ec2:ModifyInstanceAttribute", &instance, theirs.clone()),
                ),
                deny(
                    "passing the instance role to another service",
                    Request::new(
                        "iam:PassRole",
                        &self.instance_role_arn,
                        Context::new().with("iam:PassedToService", "lambda.amazonaws.com"),
                    ),
                ),
                deny(
                    "passing another role to EC2",
                    Request::new(
                        "iam:PassRole",
                        &format!("arn:{}:iam::{}:role/admin", self.partition, self.account),
                        Context::new().with("iam:PassedToService", "ec2.amazonaws.com"),
                    ),
                ),
                deny(
                    "a command on another pool's instance",
                    Request::new(
                        "ssm:SendCommand",
                        &instance,
                        resource_tags(
                            Context::new(),
                            &["aws", "ssm"],
                            &[(tags::POOL, OTHER_POOL.into())],
                        ),
                    ),
                ),
                deny(
                    "a command on an untagged instance",
                    Request::new("ssm:SendCommand", &instance, Context::new()),
                ),
                deny(
                    "another SSM document",
                    Request::new(
                        "ssm:SendCommand",
                        &format!(
                            "arn:{}:ssm:{}::document/AWS-RunPowerShellScript",
                            self.partition, self.region
                        ),
                        Context::new(),
                    ),
                ),
                deny(
                    "a secret without the pool's tag",
                    Request::new(
                        "secretsmanager:CreateSecret",
                        &secret,
                        request_tags(Context::new(), &[(tags::USER_ID, USER.into())]),
                    ),
                ),
                deny(
                    "a secret tagged for another pool",
                    Request::new(
                        "secretsmanager:CreateSecret",
                        &secret,
                        request_tags(
                            Context::new(),
                            &replace_tag(&self.user_tags(), tags::POOL, OTHER_POOL),
                        ),
                    ),
                ),
                deny(
                    "a secret outside the prefix",
                    Request::new(
                        "secretsmanager:CreateSecret",
                        &self.secret_arn("prod/database"),
                        request_tags(Context::new(), &self.user_tags()),
                    ),
                ),
                deny(
                    "deleting a secret outside the prefix",
                    Request::new(
                        "secretsmanager:DeleteSecret",
                        &self.secret_arn("prod/database"),
                        Context::new(),
                    ),
                ),
                deny(
                    "a secret tag the daemon never writes",
                    Request::new(
                        "secretsmanager:TagResource",
                        &secret,
                        request_tags(
                            self.secret(&self.user_tags()),
                            &[("Owner", "mallory".into())],
                        ),
                    ),
                ),
                deny(
                    "tags on an existing target group",
                    Request::new(
                        "elasticloadbalancing:AddTags",
                        &group,
                        request_tags(self.elb(&self.user_tags()), &[("Owner", "mallory".into())]),
                    ),
                ),
                deny(
                    "the user's tag on another pool's target group",
                    Request::new(
                        "elasticloadbalancing:AddTags",
                        &self.warm_group_arn(),
                        user_tag(self.warm(OTHER_POOL)),
                    ),
                ),
                deny(
                    "another tag key next to UserId on a claimed spare's target group",
                    Request::new(
                        "elasticloadbalancing:AddTags",
                        &self.warm_group_arn(),
                        request_tags(
                            self.warm(&self.pool),
                            &[(tags::USER_ID, USER.into()), ("Owner", "mallory".into())],
                        ),
                    ),
                ),
                deny(
                    "moving a claimed spare's target group to another pool",
                    Request::new(
                        "elasticloadbalancing:AddTags",
                        &self.warm_group_arn(),
                        request_tags(self.warm(&self.pool), &[(tags::POOL, OTHER_POOL.into())]),
                    ),
                ),
                deny(
                    "the user's tag on a target group not named sp-*",
                    Request::new(
                        "elasticloadbalancing:AddTags",
                        &self.target_group_arn("prod-api"),
                        user_tag(self.warm(&self.pool)),
                    ),
                ),
                deny(
                    "a target group not named sp-*",
                    Request::new(
                        "elasticloadbalancing:CreateTargetGroup",
                        &self.target_group_arn("prod-api"),
                        request_tags(Context::new(), &self.user_tags()),
                    ),
                ),
                deny(
                    "a rule on another listener",
                    Request::new(
                        "elasticloadbalancing:CreateRule",
                        &self
                            .listener_arn
                            .replace(":listener/app/", ":listener/app/other-alb-"),
                        request_tags(Context::new(), &self.user_tags()),
                    ),
                ),
                deny(
                    "tags on an existing rule",
                    Request::new(
                        "elasticloadbalancing:AddTags",
                        &rule,
                        request_tags(self.elb(&self.user_tags()), &[("Owner", "mallory".into())]),
                    ),
                ),
                deny(
                    "the user's tag on another pool's rule",
                    Request::new(
                        "elasticloadbalancing:AddTags",
                        &rule,
                        user_tag(self.warm(OTHER_POOL)),
                    ),
                ),
                deny(
                    "another tag key next to UserId on a claimed spare's rule",
                    Request::new(
                        "elasticloadbalancing:AddTags",
                        &rule,
                        request_tags(
                            self.warm(&self.pool),
                            &[(tags::USER_ID, USER.into()), ("Owner", "mallory".into())],
                        ),
                    ),
                ),
                deny(
                    "changing a rule the pool did not create",
                    Request::new(
                        "elasticloadbalancing:ModifyRule",
                        &rule,
                        self.elb(&[("team", "web".into())]),
                    ),
                ),
                deny(
                    "a workspace tagged for another pool",
                    Request::new(
                        "ec2:CreateVolume",
                        &new_volume,
                        self.create_volume(&replace_tag(&workspace, tags::POOL, OTHER_POOL)),
                    ),
                ),
                deny(
                    "a volume not tagged as a workspace",
                    Request::new(
                        "ec2:CreateVolume",
                        &new_volume,
                        self.create_volume(&drop_tag(&workspace, tags::WORKSPACE)),
                    ),
                ),
                deny(
                    "a workspace with an extra tag key",
                    Request::new(
                        "ec2:CreateVolume",
                        &new_volume,
                        self.create_volume(&extra(&workspace)),
                    ),
                ),
                deny(
                    "an unencrypted workspace",
                    Request::new(
                        "ec2:CreateVolume",
                        &new_volume,
                        self.create_volume(&workspace)
                            .with("ec2:Encrypted", "false"),
                    ),
                ),
                deny(
                    "a workspace that is not gp3",
                    Request::new(
                        "ec2:CreateVolume",
                        &new_volume,
                        self.create_volume(&workspace).with("ec2:VolumeType", "io2"),
                    ),
                ),
                deny(
                    "a snapshot tagged for another pool",
                    Request::new(
                        "ec2:CreateSnapshot",
                        &new_snapshot,
                        request_tags(
                            self.ec2(),
                            &replace_tag(&self.snapshot_tags(), tags::POOL, OTHER_POOL),
                        ),
                    ),
                ),
                deny(
                    "a snapshot not tagged as a workspace",
                    Request::new(
                        "ec2:CreateSnapshot",
                        &new_snapshot,
                        request_tags(
                            self.ec2(),
                            &drop_tag(&self.snapshot_tags(), tags::WORKSPACE),
                        ),
                    ),
                ),
                deny(
                    "a snapshot with an extra tag key",
                    Request::new(
                        "ec2:CreateSnapshot",
                        &new_snapshot,
                        request_tags(self.ec2(), &extra(&self.snapshot_tags())),
                    ),
                ),
                deny(
                    "an extra tag key at CreateSnapshot",
                    Request::new(
                        "ec2:CreateTags",
                        &new_snapshot,
                        request_tags(self.ec2(), &extra(&self.snapshot_tags()))
                            .with("ec2:CreateAction", "CreateSnapshot"),
                    ),
                ),
                deny(
                    "retagging an existing workspace volume",
                    Request::new(
                        "ec2:CreateTags",
                        &volume,
                        request_tags(
                            self.existing(&workspace),
                            &[(tags::USER_ID, "mallory".into())],
                        ),
                    ),
                ),
                deny(
                    "tagging another pool's blank workspace",
                    Request::new(
                        "ec2:CreateTags",
                        &volume,
                        request_tags(
                            self.existing(&replace_tag(
                                &self.launch_tags(),
                                tags::POOL,
                                OTHER_POOL,
                            )),
                            &self.workspace_tags(),
                        ),
                    ),
                ),
                deny(
                    "an extra tag key on a blank workspace",
                    Request::new(
                        "ec2:CreateTags",
                        &volume,
                        request_tags(
                            self.existing(&self.launch_tags()),
                            &extra(&self.workspace_tags()),
                        ),
                    ),
                ),
                deny(
                    "retagging an existing snapshot",
                    Request::new(
                        "ec2:CreateTags",
                        &snapshot,
                        request_tags(
                            self.existing(&self.snapshot_tags()),
                            &[(tags::USER_ID, "mallory".into())],
                        ),
                    ),
                ),
                deny(
                    "attaching another pool's volume",
                    Request::new(
                        "ec2:AttachVolume",
                        &volume,
                        self.existing(&replace_tag(&workspace, tags::POOL, OTHER_POOL)),
                    ),
                ),
                deny(
                    "detaching a pool instance's root volume",
                    Request::new("ec2:DetachVolume", &volume, root_volume.clone()),
                ),
                deny(
                    "deleting a pool instance's root volume",
                    Request::new("ec2:DeleteVolume", &volume, root_volume.clone()),
                ),
                deny(
                    "attaching to another pool's instance",
                    Request::new("ec2:AttachVolume", &instance, theirs.clone()),
                ),
                deny(
                    "copying another pool's snapshot",
                    Request::new(
                        "ec2:CreateVolume",
                        &snapshot,
                        self.existing(&replace_tag(&self.snapshot_tags(), tags::POOL, OTHER_POOL)),
                    ),
                ),
                deny(
                    "deleting a pool snapshot that is no workspace's",
                    Request::new(
                        "ec2:DeleteSnapshot",
                        &snapshot,
                        self.existing(&self.user_tags()),
                    ),
                ),
                deny(
                    "another queue",
                    Request::new(
                        "sqs:ReceiveMessage",
                        &self.queue_arn.replace("-interruptions", "-orders"),
                        Context::new(),
                    ),
                ),
                deny(
                    "an ECR repository other than the container image's",
                    Request::new(
                        "ecr:DescribeImages",
                        &format!(
                            "arn:{}:ecr:{}:{}:repository/another-team/app",
                            self.partition, self.region, self.account
                        ),
                        Context::new(),
                    ),
                ),
            ])
            .collect()
    }

    /// The instance's own calls: reading its current user's secret (`start-container.sh`).
    pub fn instance_calls(&self) -> Vec<Call> {
        let instance = self.instance_arn(INSTANCE);
        let mut bound = self.user_tags();
        bound.push((tags::INSTANCE_ARN, instance.clone()));
        vec![call(
            "secretsmanager:GetSecretValue",
            "the start reads its user's secret",
            vec![Request::new(
                "secretsmanager:GetSecretValue",
                &self.secret_arn(&format!("{}{USER}", self.secret_prefix)),
                self.secret(&bound).with("ec2:SourceInstanceARN", &instance),
            )],
        )]
    }

    pub fn instance_must_deny(&self) -> Vec<Denied> {
        let me = Context::new().with("ec2:SourceInstanceARN", &self.instance_arn(INSTANCE));
        let secret = self.secret_arn(&format!("{}{USER}", self.secret_prefix));
        let bound_to = |instance: &str| {
            let mut tags = self.user_tags();
            tags.push((tags::INSTANCE_ARN, self.instance_arn(instance)));
            resource_tags(me.clone(), &["aws", "secretsmanager"], &tags)
        };
        let always = |why, request| Denied {
            why,
            request,
            despite_allow_all: true,
        };
        vec![
            always(
                "another user's secret",
                Request::new(
                    "secretsmanager:GetSecretValue",
                    &secret,
                    bound_to(OTHER_INSTANCE),
                ),
            ),
            always(
                "a secret bound to no instance",
                Request::new(
                    "secretsmanager:GetSecretValue",
                    &secret,
                    resource_tags(me.clone(), &["aws", "secretsmanager"], &self.user_tags()),
                ),
            ),
            always(
                "pointing a secret at itself",
                Request::new(
                    "secretsmanager:TagResource",
                    &secret,
                    request_tags(
                        bound_to(OTHER_INSTANCE),
                        &[(tags::INSTANCE_ARN, self.instance_arn(INSTANCE))],
                    ),
                ),
            ),
            always(
                "unbinding a secret",
                Request::new(
                    "secretsmanager:UntagResource",
                    &secret,
                    bound_to(INSTANCE).with_list("aws:TagKeys", &[tags::INSTANCE_ARN]),
                ),
            ),
            deny(
                "a secret outside the prefix",
                Request::new(
                    "secretsmanager:GetSecretValue",
                    &self.secret_arn("prod/database"),
                    bound_to(INSTANCE),
                ),
            ),
        ]
    }

    /// Requests the policies should refuse but allow today: each is asserted to be allowed, so
    /// the test says when a fix lands (then the request moves to the must-deny lists). None is
    /// open: the three this test found are closed and refused in [`Self::closed_gaps`].
    pub fn known_gaps(&self) -> Vec<Gap> {
        Vec::new()
    }

    /// The gaps this test found, closed in iam.tf: every request must be denied.
    pub fn closed_gaps(&self) -> Vec<Gap> {
        let other_secret = self.secret_arn(&format!("{}bob", self.secret_prefix));
        let theirs = replace_tag(&self.user_tags(), tags::POOL, OTHER_POOL);
        let launch = self.launch_tags();
        let no_template = |context: Context| context.without("ec2:LaunchTemplate");
        vec![
            Gap {
                what: "RunInstances without the launch template (any image, user data, instance type), \
                       because nothing requires ec2:LaunchTemplate",
                fix: "Ec2RunTaggedSpotInstances: ArnEquals ec2:LaunchTemplate = the pool's template ARN",
                requests: self
                    .run_instances(
                        no_template(self.launch_instance(&launch, "spot")),
                        no_template(self.launch_volume(&launch)),
                    )
                    .into_iter()
                    .filter(|r| !r.resource.contains(":launch-template/"))
                    .map(|r| Request {
                        context: no_template(r.context),
                        ..r
                    })
                    // RunInstances is refused when any of its resources is: the instance's is.
                    .filter(|r| r.action == "ec2:RunInstances" && r.resource.contains(":instance/"))
                    .collect(),
            },
            Gap {
                what: "writing, binding or deleting another pool's secret under the same secret_prefix \
                       (the default openclaw/ is shared by every pool of an account)",
                fix: "SecretsManageUnderPrefix and SecretsTagUnderPrefix: StringEquals \
                      aws:ResourceTag/spotpool:pool = pool (or a per-pool default prefix)",
                requests: vec![
                    Request::new(
                        "secretsmanager:PutSecretValue",
                        &other_secret,
                        self.secret(&theirs),
                    ),
                    Request::new(
                        "secretsmanager:DeleteSecret",
                        &other_secret,
                        self.secret(&theirs),
                    ),
                    Request::new(
                        "secretsmanager:TagResource",
                        &other_secret,
                        request_tags(
                            self.secret(&theirs),
                            &[(tags::INSTANCE_ARN, self.instance_arn(INSTANCE))],
                        ),
                    ),
                    // Retagging another pool's secret as ours, to manage it afterwards.
                    Request::new(
                        "secretsmanager:TagResource",
                        &other_secret,
                        request_tags(self.secret(&theirs), &[(tags::POOL, self.pool.clone())]),
                    ),
                    // A new secret with a tag key the daemon never sets.
                    Request::new(
                        "secretsmanager:TagResource",
                        &other_secret,
                        request_tags(
                            Context::new(),
                            &[
                                (tags::POOL, self.pool.clone()),
                                ("Owner", "mallory".to_string()),
                            ],
                        ),
                    ),
                    // Tagging a secret of no pool under the prefix without claiming it.
                    Request::new(
                        "secretsmanager:TagResource",
                        &other_secret,
                        request_tags(Context::new(), &[(tags::USER_ID, "bob".to_string())]),
                    ),
                ],
            },
            Gap {
                what: "another pool's sp-* target groups (the name prefix is the only scope)",
                fix: "ElbTargetGroups: StringEquals aws:ResourceTag/spotpool:pool = pool for \
                      Register/Deregister/DeleteTargetGroup, aws:RequestTag/spotpool:pool for Create",
                requests: vec![
                    Request::new(
                        "elasticloadbalancing:DeleteTargetGroup",
                        &self.target_group_arn("sp-bob"),
                        self.elb(&theirs),
                    ),
                    Request::new(
                        "elasticloadbalancing:CreateTargetGroup",
                        &self.target_group_arn("sp-bob"),
                        Context::new(),
                    ),
                ],
            },
        ]
    }
}

/// A request the policies allow but should not, with the proposed fix.
pub struct Gap {
    pub what: &'static str,
    pub fix: &'static str,
    pub requests: Vec<Request>,
}

fn show(request: &Request) -> String {
    format!(
        "{} on {} with {:?}",
        request.action, request.resource, request.context
    )
}

impl Deployment {
    /// The daemon's use of the volumes' customer-managed keys: EC2 calls KMS with the daemon's
    /// credentials when it creates, attaches or copies an encrypted volume (`kms:ViaService` is
    /// EC2), and the grants it creates are for AWS resources. None without such a key.
    pub fn kms_calls(&self) -> Vec<Call> {
        let via_ec2 = || Context::new().with("kms:ViaService", &self.ec2_via_service());
        let mut calls = Vec::new();
        for key in &self.kms_key_arns {
            calls.push(call(
                "kms:CreateGrant",
                "EC2 attaching an encrypted volume for the daemon",
                vec![Request::new(
                    "kms:CreateGrant",
                    key,
                    via_ec2().with("kms:GrantIsForAWSResource", "true"),
                )],
            ));
            for action in [
                "kms:GenerateDataKeyWithoutPlaintext",
                "kms:Decrypt",
                "kms:DescribeKey",
            ] {
                calls.push(call(
                    "kms:use",
                    "EC2 creating an encrypted volume for the daemon",
                    vec![Request::new(action, key, via_ec2())],
                ));
            }
        }
        calls
    }

    /// The keys used any other way: directly, for a grant to a principal, or another key.
    pub fn kms_must_deny(&self) -> Vec<Denied> {
        let via_ec2 = || Context::new().with("kms:ViaService", &self.ec2_via_service());
        let mut denied = Vec::new();
        for key in &self.kms_key_arns {
            denied.extend([
                deny(
                    "decrypting with the key directly, not through EC2",
                    Request::new("kms:Decrypt", key, Context::new()),
                ),
                deny(
                    "a grant for a principal, not an AWS resource",
                    Request::new(
                        "kms:CreateGrant",
                        key,
                        via_ec2().with("kms:GrantIsForAWSResource", "false"),
                    ),
                ),
                deny(
                    "a grant made directly, not through EC2",
                    Request::new(
                        "kms:CreateGrant",
                        key,
                        Context::new().with("kms:GrantIsForAWSResource", "true"),
                    ),
                ),
                deny(
                    "another key, through EC2",
                    Request::new("kms:Decrypt", &format!("{key}-other"), via_ec2()),
                ),
            ]);
        }
        denied
    }

    fn ec2_via_service(&self) -> String {
        format!("ec2.{}.amazonaws.com", self.region)
    }
}

/// The checks of this module's doc, all failures at once.
pub fn check(deployment: &Deployment, calls_made: &BTreeSet<String>) {
    let mut failures = Vec::new();
    let roles = [
        (
            "daemon",
            Deployment::combined(&deployment.daemon_policies),
            [deployment.daemon_calls(), deployment.kms_calls()]
                .into_iter()
                .flatten()
                .collect(),
            [deployment.daemon_must_deny(), deployment.kms_must_deny()]
                .into_iter()
                .flatten()
                .collect(),
        ),
        (
            "instance",
            Deployment::combined(&deployment.instance_policies),
            deployment.instance_calls(),
            deployment.instance_must_deny(),
        ),
    ];
    let allow_all = Policy::parse(&serde_json::json!({
        "Statement": [{"Sid": "AllowAll", "Effect": "Allow", "Action": "*", "Resource": "*"}]
    }));
    for (role, policy, calls, denied) in &roles {
        let sids: BTreeSet<&str> = policy.statements.iter().map(|s| s.sid.as_str()).collect();
        assert_eq!(
            sids.len(),
            policy.statements.len(),
            "{role}: Sids are not unique"
        );
        for call in calls {
            for request in &call.requests {
                let decision = policy.evaluate(request);
                if !decision.is_allowed() {
                    failures.push(format!(
                        "{role}: {} ({}) is refused ({decision:?}): {}",
                        call.name,
                        call.what,
                        show(request)
                    ));
                }
            }
        }
        for case in denied {
            let decision = policy.evaluate(&case.request);
            let alone = policy.allows_only().evaluate(&case.request);
            if decision.is_allowed() {
                failures.push(format!(
                    "{role}: must be denied, but {decision:?}: {}: {}",
                    case.why,
                    show(&case.request)
                ));
            } else if alone.is_allowed() {
                failures.push(format!(
                    "{role}: only a Deny statement refuses {} ({alone:?}): {}",
                    case.why,
                    show(&case.request)
                ));
            }
            if case.despite_allow_all {
                let mut wider = policy.clone();
                wider.statements.extend(allow_all.statements.clone());
                if wider.evaluate(&case.request).is_allowed() {
                    failures.push(format!(
                        "{role}: {} is allowed next to a policy that allows everything: {}",
                        case.why,
                        show(&case.request)
                    ));
                }
            }
        }
        failures.extend(untested_conditions(role, policy, calls, denied));
    }
    let table: BTreeSet<&str> = roles[0].2.iter().map(|c| c.name).collect();
    for made in calls_made {
        if !table.contains(made.as_str()) {
            failures.push(format!(
                "the daemon made {made}, which has no request context in \
                iam_requests::daemon_calls: add its authorizations (and must-deny cases)"
            ));
        }
    }
    for gap in deployment.known_gaps() {
        let daemon = &roles[0].1;
        if gap.requests.iter().all(|r| daemon.evaluate(r).is_allowed()) {
            eprintln!(
                "known IAM gap, still open: {} (proposed: {})",
                gap.what, gap.fix
            );
        } else {
            failures.push(format!(
                "the known gap \"{}\" is closed now: move its requests to \
                daemon_must_deny and drop it from known_gaps",
                gap.what
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "IAM evaluation found {} problems:\n- {}",
        failures.len(),
        failures.join("\n- ")
    );
}

/// One failure per condition whose removal changes no decision: an Allow statement's must let
/// some must-deny request through (judged by the Allow statements alone, so a Deny does not
/// hide it), a Deny statement's must block some allowed call.
fn untested_conditions(
    role: &str,
    policy: &Policy,
    calls: &[Call],
    denied: &[Denied],
) -> Vec<String> {
    let mut failures = Vec::new();
    for statement in &policy.statements {
        for condition in &statement.conditions {
            let mutated =
                policy.without_condition(&statement.sid, &condition.operator, &condition.key);
            let noticed = match statement.effect {
                Effect::Allow => {
                    let allows = mutated.allows_only();
                    denied
                        .iter()
                        .any(|case| allows.evaluate(&case.request).is_allowed())
                }
                Effect::Deny => calls
                    .iter()
                    .flat_map(|c| &c.requests)
                    .any(|request| matches!(mutated.evaluate(request), Decision::ExplicitDeny(_))),
            };
            if !noticed {
                failures.push(format!(
                    "{role}: statement {} still decides every case the same without its condition \
                     {} {{{}: {:?}}}: the condition is untested (add a must-deny request that only it refuses)",
                    statement.sid, condition.operator, condition.key, condition.values
                ));
            }
        }
    }
    failures
}

/// `parliament` (duo-labs' IAM linter) on each applied policy, written to `dir`. Two kinds of
/// findings are accepted, for the reasons given; any other fails.
pub fn lint(deployment: &Deployment, dir: &Path) {
    let roles = [
        (
            &deployment.daemon_policies,
            Deployment::combined(&deployment.daemon_policies),
        ),
        (
            &deployment.instance_policies,
            Deployment::combined(&deployment.instance_policies),
        ),
    ];
    let mut failures = Vec::new();
    let mut accepted = 0;
    for (policies, combined) in &roles {
        for (name, document) in policies.iter() {
            let path = dir.join(format!("{name}.json"));
            std::fs::write(&path, serde_json::to_string_pretty(document).unwrap()).unwrap();
            // parliament refuses --file when stdin is not a terminal: the policy goes on stdin.
            let output = std::process::Command::new("parliament")
                .arg("--json")
                .stdin(std::fs::File::open(&path).unwrap())
                .output()
                .unwrap_or_else(|err| {
                    panic!(
                        "running parliament ({err}): it is installed by \
                    scripts/test.sh (pip install {PARLIAMENT})"
                    )
                });
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success() || !stdout.trim().is_empty(),
                "parliament failed on {}: {}",
                path.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
                let finding: Value = serde_json::from_str(line)
                    .unwrap_or_else(|err| panic!("parliament printed {line:?}: {err}"));
                if finding_is_accepted(&finding, combined) {
                    accepted += 1;
                } else {
                    failures.push(format!("{name}: {finding}"));
                }
            }
        }
    }
    eprintln!("parliament: {accepted} accepted findings");
    assert!(
        failures.is_empty(),
        "parliament found:\n{}",
        failures.join("\n")
    );
}

/// The parliament release scripts/lib.sh installs (its findings depend on its IAM data).
pub const PARLIAMENT: &str = "parliament==1.6.4";

/// - `RESOURCE_MISMATCH`: the policies split an action's resource types over statements on
///   purpose (each type gets its own conditions); accepted when another statement of the same
///   role names the action on a resource of the missing format, or the format is a Network Load
///   Balancer's (the pool has an ALB only).
/// - `UNKNOWN_CONDITION_FOR_ACTION` for `elasticloadbalancing:CreateAction` on `AddTags`: the
///   Service Authorization Reference lists the key for AddTags (parliament's own IAM data does,
///   without a resource type, which its check does not look at).
fn finding_is_accepted(finding: &Value, combined: &Policy) -> bool {
    match finding["issue"].as_str() {
        Some("RESOURCE_MISMATCH") => finding["detail"].as_array().is_some_and(|details| {
            details.iter().all(|detail| {
                let (Some(action), Some(format)) = (
                    detail["action"].as_str(),
                    detail["required_format"].as_str(),
                ) else {
                    return false;
                };
                format.contains("/net/")
                    || combined.statements.iter().any(|s| {
                        !s.not_action
                            && !s.not_resource
                            && s.actions.iter().any(|a| a.eq_ignore_ascii_case(action))
                            && s.resources.iter().any(|r| wildcard_match(format, r))
                    })
            })
        }),
        Some("UNKNOWN_CONDITION_FOR_ACTION") => {
            finding["detail"]
                == "Unknown condition elasticloadbalancing:CreateAction for action elasticloadbalancing:AddTags"
        }
        _ => false,
    }
}
