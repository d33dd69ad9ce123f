//! The Terraform a platform team applies, end to end: the example root
//! (`terraform/examples/basic`) applied against moto with `scripts/terraform_moto.sh`, with two
//! host-routed shards (two ALBs), the account prerequisites (the EC2 Spot service-linked role, a
//! customer-managed KMS key) and the daemon's own host; the real daemon started from its
//! `daemon_env` and `daemon_shards_toml` outputs, one user claimed (on a shard, by host) and
//! released, and `terraform destroy`. It needs `terraform` and the machine's provider mirror, and
//! fails (never skips) without them. The offline plans with a mocked provider
//! (`terraform/modules/spotpool/tests/`) cover what moto cannot show, e.g. an account that
//! already has the Spot role.

use crate::daemon::{API_TOKEN, Daemon, counter_by, test_settings};
use crate::iam_requests;
use crate::support::moto::Moto;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);
const SECRET_VALUE: &str = "sk-terraform-e2e-1234";
/// The applied state, in a state directory of `scripts/terraform_moto.sh`.
const STATE_FILE: &str = "terraform/examples/basic/terraform.tfstate";

/// `scripts/terraform_moto.sh` with `args`: whether it succeeded, its stdout and its stderr.
/// Panics when terraform or the provider mirror is missing.
async fn try_terraform_moto(args: &[&str]) -> (bool, String, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/terraform_moto.sh");
    let output = tokio::process::Command::new(&script)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|err| panic!("running {}: {err}", script.display()));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.code() == Some(3) {
        panic!(
            "this test needs terraform and the Terraform AWS provider mirror \
             (find / -xdev -name 'terraform-provider-aws_*'); CI machines have both:\n{stderr}"
        );
    }
    let stdout = String::from_utf8(output.stdout).expect("terraform output is UTF-8");
    (output.status.success(), stdout, stderr)
}

/// `scripts/terraform_moto.sh` with `args`; its stdout, or a panic with its stderr.
async fn terraform_moto(args: &[&str]) -> String {
    let (ok, stdout, stderr) = try_terraform_moto(args).await;
    assert!(ok, "terraform_moto.sh {args:?} failed:\n{stderr}");
    stdout
}

/// `action` (apply, plan or destroy) against `endpoint` with `state`, and `vars` as `-var`s.
async fn terraform_moto_with(action: &str, endpoint: &str, state: &str, vars: &[String]) -> String {
    let mut args = vec![action, endpoint, state];
    for var in vars {
        args.extend(["-var", var.as_str()]);
    }
    terraform_moto(&args).await
}

/// The statement of `policy` whose Sid is `sid`.
fn statement_by_sid<'a>(policy: &'a serde_json::Value, sid: &str) -> &'a serde_json::Value {
    policy["Statement"]
        .as_array()
        .expect("a Statement list")
        .iter()
        .find(|s| s["Sid"] == sid)
        .unwrap_or_else(|| panic!("no statement {sid} in {policy}"))
}

/// A policy element that is a string or a list of strings, as a set.
fn strings(value: &serde_json::Value) -> BTreeSet<String> {
    match value {
        serde_json::Value::String(one) => BTreeSet::from([one.clone()]),
        serde_json::Value::Array(list) => list
            .iter()
            .map(|v| v.as_str().expect("a string").to_string())
            .collect(),
        other => panic!("expected a string or a list, got {other}"),
    }
}

/// The Terraform working copy and state; removed on drop unless the test failed.
struct StateDir(PathBuf);

impl StateDir {
    fn new() -> StateDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("spotpool-terraform-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        StateDir(dir)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("temp dir path is UTF-8")
    }

    /// An output of the applied state, of any type (`terraform_moto.sh output` prints strings).
    fn output(&self, name: &str) -> serde_json::Value {
        let path = self.0.join(STATE_FILE);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
        let state: serde_json::Value = serde_json::from_str(&text).expect("the state is JSON");
        state["outputs"][name]["value"].clone()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("terraform state kept at {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `KEY=value` lines into pairs (the value may contain `=`).
fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("daemon_env line without '=': {line:?}"));
            (key.to_string(), value.to_string())
        })
        .collect()
}

/// The IAM actions of every Allow statement of a policy document.
fn allowed_actions(policy: &serde_json::Value) -> BTreeSet<String> {
    let mut actions = BTreeSet::new();
    for statement in policy["Statement"].as_array().expect("a Statement list") {
        if statement["Effect"] != "Allow" {
            continue;
        }
        match &statement["Action"] {
            serde_json::Value::String(action) => {
                actions.insert(action.clone());
            }
            serde_json::Value::Array(list) => {
                actions.extend(list.iter().filter_map(|a| a.as_str().map(String::from)));
            }
            other => panic!("unexpected Action {other}"),
        }
    }
    actions
}

/// The tag keys (`aws:TagKeys`, `ForAllValues:StringEquals`) each Allow statement naming
/// `action` on snapshots admits.
fn admitted_tag_keys(policy: &serde_json::Value, action: &str) -> Vec<BTreeSet<String>> {
    policy["Statement"]
        .as_array()
        .expect("a Statement list")
        .iter()
        .filter(|s| s["Effect"] == "Allow")
        .filter(|s| match &s["Action"] {
            serde_json::Value::String(a) => a == action,
            serde_json::Value::Array(list) => list.iter().any(|a| a == action),
            _ => false,
        })
        .filter(|s| s["Resource"].to_string().contains(":snapshot/"))
        .filter_map(|s| {
            let keys = &s["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"];
            match keys {
                serde_json::Value::String(key) => Some(BTreeSet::from([key.clone()])),
                serde_json::Value::Array(list) => Some(
                    list.iter()
                        .filter_map(|k| k.as_str().map(String::from))
                        .collect(),
                ),
                _ => None,
            }
        })
        .collect()
}

/// `service:Operation` (IAM spelling) of every AWS call the daemon counted in /metrics.
fn calls_made(metrics: &str) -> BTreeSet<String> {
    let label = |line: &str, name: &str| {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        let end = line[start..].find('"')? + start;
        Some(line[start..end].to_string())
    };
    metrics
        .lines()
        .filter(|line| line.starts_with("spotpool_aws_calls_total{"))
        .filter_map(|line| {
            let service = match label(line, "service")?.as_str() {
                "elbv2" => "elasticloadbalancing".to_string(),
                other => other.to_string(),
            };
            Some(format!("{service}:{}", label(line, "operation")?))
        })
        .collect()
}

#[tokio::test]
async fn terraform_example_root_applies_on_moto_serves_a_claim_and_destroys_cleanly() {
    // Fail loudly, before moto even starts, when the tools are missing.
    terraform_moto(&["check"]).await;
    let moto = Moto::start().await;
    let endpoint = moto.endpoint();
    let state = StateDir::new();

    // Two shards, host-routed (the example root's default routing): two ALBs, the users of
    // shard i at <route>.shard-<i>.users.example.test.
    let shard_vars = ["shard_count=2", "users_domain=users.example.test"];
    // moto, like a fresh account, has no EC2 Spot service-linked role: by default (the module
    // neither creates it nor may the daemon), the plan refuses, saying what to set, and nothing
    // is created.
    let mut refused_args = vec!["apply", endpoint.as_str(), state.path()];
    for var in shard_vars {
        refused_args.extend(["-var", var]);
    }
    let (ok, _, refusal) = try_terraform_moto(&refused_args).await;
    assert!(
        !ok,
        "a plan without the Spot service-linked role was applied"
    );
    assert!(
        refusal.contains("no EC2 Spot service-linked role")
            && refusal.contains("create_spot_service_linked_role = true"),
        "the refusal does not say what to do:\n{refusal}"
    );

    // The account prerequisites and the daemon's host, as a platform team would ask for them.
    let binary_uri = "s3://spotpool-artifacts/releases/spotpool";
    let vars: Vec<String> = shard_vars
        .iter()
        .chain(&[
            "create_spot_service_linked_role=true",
            "create_kms_key=true",
            "create_daemon_host=true",
            &format!("daemon_binary_s3_uri={binary_uri}"),
            "daemon_api_allowed_cidr_blocks=[\"10.20.0.0/24\"]",
            "daemon_tls=true",
            "on_demand_fallback=true",
        ])
        .map(|var| var.to_string())
        .collect();
    let started = Instant::now();
    let env_text = terraform_moto_with("apply", &endpoint, state.path(), &vars).await;
    eprintln!("terraform apply took {:?}", started.elapsed());
    // Applied state does not drift: a second plan is empty (no default_tags, no moto-dropped
    // attributes), so the local mode and a platform team's CI see a stable plan.
    terraform_moto_with("plan", &endpoint, state.path(), &vars).await;
    let output = |name: &'static str| {
        let dir = state.path().to_string();
        async move { terraform_moto(&["output", &dir, name]).await }
    };

    // The rendered environment has every setting the daemon needs, and no token.
    let infra_env = parse_env(&env_text);
    let settings: HashMap<&str, &str> = infra_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for key in [
        "AWS_REGION",
        "AWS_ENDPOINT_URL",
        "SPOTPOOL_POOL",
        "LAUNCH_TEMPLATE_ID",
        "SUBNET_IDS",
        "SECURITY_GROUP_ID",
        "VPC_ID",
        "INSTANCE_PROFILE_ARN",
        "CONTAINER_IMAGE",
        "CONTAINER_PRESET",
        "CONTAINER_PORT",
        "SECRET_PREFIX",
        "SPOTPOOL_INTERRUPTION_QUEUE_URL",
        "SPOTPOOL_WORKSPACE_SIZE_GIB",
        "SPOTPOOL_IDLE_SLEEP_AFTER",
    ] {
        assert!(
            settings.get(key).is_some_and(|v| !v.is_empty()),
            "daemon_env lacks {key}:\n{env_text}"
        );
    }
    assert!(
        !env_text.contains("TOKEN"),
        "daemon_env must not carry tokens:\n{env_text}"
    );
    assert_eq!(settings["AWS_ENDPOINT_URL"], endpoint);
    assert_eq!(settings["SUBNET_IDS"].split(',').count(), 2);
    // With shards, the listeners are the [[shard]] tables', not a single ALB_LISTENER_ARN.
    for key in ["ALB_LISTENER_ARN", "PUBLIC_BASE_URL"] {
        assert!(
            !settings.contains_key(key),
            "daemon_env has {key} next to the shards:\n{env_text}"
        );
    }

    let sdk = moto.sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&sdk);

    // The launch template is what the issue asks for: spot one-time/terminate, IMDSv2 with hop
    // limit 1, an encrypted gp3 root, the instance profile, the seed's tags, the user data.
    let versions = ec2
        .describe_launch_template_versions()
        .launch_template_id(settings["LAUNCH_TEMPLATE_ID"])
        .versions("$Default")
        .send()
        .await
        .expect("reading the launch template");
    let data = versions.launch_template_versions()[0]
        .launch_template_data()
        .expect("launch template data");
    let market = data.instance_market_options().expect("market options");
    assert_eq!(market.market_type().map(|m| m.as_str()), Some("spot"));
    let spot = market.spot_options().expect("spot options");
    assert_eq!(
        spot.spot_instance_type().map(|t| t.as_str()),
        Some("one-time")
    );
    assert_eq!(
        spot.instance_interruption_behavior().map(|b| b.as_str()),
        Some("terminate")
    );
    // The on-demand fallback's template: the same instances without the market options, which
    // RunInstances cannot remove; the daemon is told to use it.
    assert_eq!(settings["SPOTPOOL_ON_DEMAND_FALLBACK"], "true");
    let on_demand = ec2
        .describe_launch_template_versions()
        .launch_template_id(settings["ON_DEMAND_LAUNCH_TEMPLATE_ID"])
        .versions("$Default")
        .send()
        .await
        .expect("reading the on-demand launch template");
    let on_demand = on_demand.launch_template_versions()[0]
        .launch_template_data()
        .expect("on-demand launch template data");
    assert!(
        on_demand.instance_market_options().is_none(),
        "{on_demand:?}"
    );
    assert_eq!(on_demand.user_data(), data.user_data());
    assert_eq!(on_demand.image_id(), data.image_id());
    let metadata = data.metadata_options().expect("metadata options");
    assert_eq!(metadata.http_tokens().map(|t| t.as_str()), Some("required"));
    assert_eq!(metadata.http_put_response_hop_limit(), Some(1));
    let root = data.block_device_mappings()[0].ebs().expect("root volume");
    assert_eq!(root.volume_type().map(|t| t.as_str()), Some("gp3"));
    assert_eq!(root.encrypted(), Some(true));
    // ...under the created customer-managed key, which the workspaces use too.
    let key_arn = output("kms_key_arn").await;
    assert!(key_arn.contains(":key/"), "{key_arn}");
    assert_eq!(root.kms_key_id(), Some(key_arn.as_str()));
    assert_eq!(settings["SPOTPOOL_WORKSPACE_KMS_KEY_ID"], key_arn);
    assert_eq!(
        data.iam_instance_profile().and_then(|p| p.arn()),
        Some(settings["INSTANCE_PROFILE_ARN"])
    );
    let template_tags: HashMap<&str, &str> = data
        .tag_specifications()
        .iter()
        .filter(|spec| spec.resource_type().map(|t| t.as_str()) == Some("instance"))
        .flat_map(|spec| spec.tags())
        .filter_map(|tag| Some((tag.key()?, tag.value()?)))
        .collect();
    assert_eq!(
        template_tags.get("Name"),
        Some(&"openclaw-user-instance"),
        "{template_tags:?}"
    );
    assert_eq!(template_tags.get("spotpool:pool"), Some(&"spotpool"));
    let user_data = output("user_data").await;
    for needle in [
        "dnf install -y docker",
        "DOCKER-USER -d $METADATA_ADDRESS/32 -j DROP",
        "docker pull \"$IMAGE\"",
        "touch \"$READY_MARKER\"",
        "READY_MARKER='/var/lib/spotpool/ready'",
        // The warm responder on the preset's port and health path, the repository's program.
        "CONTAINER_PORT='18789'",
        "HEALTH_CHECK_PATH='/healthz'",
        "systemctl enable --now spotpool-warm.service",
        "server = ThreadingHTTPServer((args.bind, args.port), handler(args.health_path))",
    ] {
        assert!(user_data.contains(needle), "user data lacks {needle}");
    }
    let warm = user_data
        .find("systemctl enable --now spotpool-warm.service")
        .unwrap();
    assert!(
        warm < user_data.find("touch \"$READY_MARKER\"").unwrap(),
        "the warm responder must start before the readiness marker"
    );

    // The interruption queue: encrypted, with a dead-letter queue, and only the three EventBridge
    // rules may send to it.
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue_url = settings["SPOTPOOL_INTERRUPTION_QUEUE_URL"];
    let queue = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .expect("reading the interruption queue");
    let attributes: HashMap<&str, &str> = queue
        .attributes()
        .expect("queue attributes")
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    assert_eq!(attributes.get("SqsManagedSseEnabled"), Some(&"true"));
    assert_eq!(attributes.get("VisibilityTimeout"), Some(&"30"));
    let redrive: serde_json::Value =
        serde_json::from_str(attributes["RedrivePolicy"]).expect("a redrive policy");
    assert!(
        redrive["deadLetterTargetArn"]
            .as_str()
            .is_some_and(|arn| arn.ends_with(":spotpool-interruptions-dlq")),
        "{redrive}"
    );
    let queue_policy: serde_json::Value =
        serde_json::from_str(attributes["Policy"]).expect("a queue policy");
    let statement = &queue_policy["Statement"][0];
    assert_eq!(statement["Principal"]["Service"], "events.amazonaws.com");
    assert_eq!(
        statement["Condition"]["ArnEquals"]["aws:SourceArn"]
            .as_array()
            .map(Vec::len),
        Some(3),
        "{queue_policy}"
    );

    // Two shards: two ALBs in the one ALB security group, each with the listener that carries
    // its users' rules, answering 404 unless a user's rule matches.
    let shards = state.output("shards");
    let shards = shards.as_array().expect("a list of shards");
    assert_eq!(shards.len(), 2, "{shards:?}");
    let alb_group = output("alb_security_group_id").await;
    let mut albs = BTreeSet::new();
    for (i, shard) in shards.iter().enumerate() {
        assert_eq!(shard["name"], format!("shard-{i}"));
        assert_eq!(shard["routing"], "host");
        assert_eq!(shard["capacity"], 90);
        assert_eq!(shard["domain"], format!("shard-{i}.users.example.test"));
        assert_eq!(
            shard["wildcard_name"],
            format!("*.shard-{i}.users.example.test")
        );
        let listener_arn = shard["listener_arn"].as_str().unwrap();
        let listeners = elb
            .describe_listeners()
            .listener_arns(listener_arn)
            .send()
            .await
            .expect("reading the listener");
        let listener = &listeners.listeners()[0];
        assert_eq!(listener.load_balancer_arn(), shard["alb_arn"].as_str());
        assert_eq!(listener.port(), Some(80));
        let default = &listener.default_actions()[0];
        assert_eq!(
            default
                .fixed_response_config()
                .and_then(|c| c.status_code()),
            Some("404")
        );
        let described = elb
            .describe_load_balancers()
            .load_balancer_arns(shard["alb_arn"].as_str().unwrap())
            .send()
            .await
            .expect("reading the ALB");
        let alb = &described.load_balancers()[0];
        assert_eq!(alb.security_groups(), [alb_group.as_str()]);
        assert_eq!(alb.dns_name(), shard["alb_dns_name"].as_str());
        albs.insert(alb.load_balancer_name().unwrap().to_string());
    }
    assert_eq!(
        albs,
        BTreeSet::from(["spotpool".to_string(), "spotpool-s1".to_string()])
    );
    // The platform's DNS: one wildcard record per shard, pointing at its ALB.
    let records = state.output("shard_dns_records");
    for shard in shards {
        assert_eq!(
            records[shard["wildcard_name"].as_str().unwrap()],
            shard["alb_dns_name"]
        );
    }
    // The daemon's [[shard]] tables: one per shard, as the daemon reads them.
    let shards_toml = output("daemon_shards_toml").await;
    let tables: toml::Table = toml::from_str(&shards_toml).expect("daemon_shards_toml is TOML");
    let tables = tables["shard"].as_array().expect("[[shard]] tables");
    assert_eq!(tables.len(), 2, "{shards_toml}");
    for (table, shard) in tables.iter().zip(shards) {
        assert_eq!(table["name"].as_str(), shard["name"].as_str());
        assert_eq!(
            table["listener_arn"].as_str(),
            shard["listener_arn"].as_str()
        );
        assert_eq!(table["routing"].as_str(), Some("host"));
        assert_eq!(table["domain"].as_str(), shard["domain"].as_str());
        assert_eq!(table["capacity"].as_integer(), Some(90));
        assert!(table.get("base_url").is_none(), "{shards_toml}");
    }

    // The instances accept the container port from the ALB's group, and nothing else.
    let groups = ec2
        .describe_security_groups()
        .group_ids(settings["SECURITY_GROUP_ID"])
        .send()
        .await
        .expect("reading the instance security group");
    let ingress = groups.security_groups()[0].ip_permissions();
    assert_eq!(ingress.len(), 1, "{ingress:?}");
    assert_eq!(ingress[0].from_port(), Some(18789));
    assert_eq!(ingress[0].to_port(), Some(18789));
    assert!(ingress[0].ip_ranges().is_empty(), "{ingress:?}");
    assert_eq!(ingress[0].user_id_group_pairs().len(), 1, "{ingress:?}");

    // The Spot service-linked role was created (moto names it AWSServiceRoleForspot; AWS,
    // AWSServiceRoleForEC2Spot), and the key policy lets it use the key for spot launches, grants
    // only for AWS resources; the daemon role gets what its IAM policy grants, through EC2 only.
    let spot_role = output("spot_service_linked_role_arn").await;
    assert!(
        spot_role.contains(":role/aws-service-role/spot.amazonaws.com/AWSServiceRoleFor"),
        "{spot_role}"
    );
    let key_policy: serde_json::Value =
        serde_json::from_str(&output("kms_key_policy_json").await).expect("the key policy is JSON");
    let account = statement_by_sid(&key_policy, "AccountAdministersTheKeyAndIamPoliciesGrantIt");
    assert_eq!(
        account["Principal"]["AWS"],
        "arn:aws:iam::123456789012:root"
    );
    let spot_use = statement_by_sid(&key_policy, "SpotLaunchesUseTheKey");
    assert_eq!(spot_use["Principal"]["AWS"], spot_role.as_str());
    assert!(
        strings(&spot_use["Action"]).contains("kms:GenerateDataKey*"),
        "{spot_use}"
    );
    let spot_grant = statement_by_sid(&key_policy, "SpotLaunchesAttachPersistentResources");
    assert_eq!(spot_grant["Principal"]["AWS"], spot_role.as_str());
    assert_eq!(
        strings(&spot_grant["Action"]),
        BTreeSet::from(["kms:CreateGrant".to_string()])
    );
    assert_eq!(
        spot_grant["Condition"]["Bool"]["kms:GrantIsForAWSResource"],
        "true"
    );
    let daemon_role = output("daemon_role_arn").await;
    for sid in [
        "DaemonUsesTheKeyThroughEc2",
        "DaemonCreatesGrantsForEbsOnly",
    ] {
        let daemon_key = statement_by_sid(&key_policy, sid);
        assert_eq!(
            daemon_key["Principal"]["AWS"],
            daemon_role.as_str(),
            "{sid}"
        );
        assert_eq!(
            daemon_key["Condition"]["StringEquals"]["kms:ViaService"],
            "ec2.us-east-1.amazonaws.com",
            "{sid}"
        );
    }
    // The daemon's own KMS permissions: that key only, through EC2 only, grants only for AWS
    // resources.
    let daemon_policy: serde_json::Value =
        serde_json::from_str(&output("daemon_policy_json").await)
            .expect("the daemon policy is JSON");
    for sid in ["KmsUseKeyForEbs", "KmsGrantsForEbsOnly"] {
        let kms = statement_by_sid(&daemon_policy, sid);
        assert_eq!(
            strings(&kms["Resource"]),
            BTreeSet::from([key_arn.clone()]),
            "{sid}"
        );
        assert_eq!(
            kms["Condition"]["StringEquals"]["kms:ViaService"], "ec2.us-east-1.amazonaws.com",
            "{sid}"
        );
    }
    // On-demand launches: only from the on-demand template, only on-demand (the spot statement
    // stays bound to the spot template and the spot market).
    let template_arn =
        |id: &str| format!("arn:aws:ec2:us-east-1:123456789012:launch-template/{id}");
    let on_demand = statement_by_sid(&daemon_policy, "Ec2RunTaggedOnDemandInstances");
    assert_eq!(
        on_demand["Condition"]["StringEquals"]["ec2:InstanceMarketType"],
        "on-demand"
    );
    assert_eq!(
        on_demand["Condition"]["ArnEquals"]["ec2:LaunchTemplate"],
        template_arn(&output("on_demand_launch_template_id").await)
    );
    let spot = statement_by_sid(&daemon_policy, "Ec2RunTaggedSpotInstances");
    assert_eq!(
        spot["Condition"]["StringEquals"]["ec2:InstanceMarketType"],
        "spot"
    );
    assert_eq!(
        spot["Condition"]["ArnEquals"]["ec2:LaunchTemplate"],
        template_arn(&output("launch_template_id").await)
    );
    let grants = statement_by_sid(&daemon_policy, "KmsGrantsForEbsOnly");
    assert_eq!(
        grants["Condition"]["Bool"]["kms:GrantIsForAWSResource"],
        "true"
    );

    // The daemon host: the daemon role's instance profile, IMDSv2 with a hop limit of 1, its root
    // volume under the key, a user data with no settings nor tokens in it.
    let host_id = output("daemon_host_instance_id").await;
    let described = ec2
        .describe_instances()
        .instance_ids(&host_id)
        .send()
        .await
        .expect("reading the daemon host");
    let host = &described.reservations()[0].instances()[0];
    assert_eq!(
        host.iam_instance_profile().and_then(|p| p.arn()),
        Some(output("daemon_instance_profile_arn").await.as_str())
    );
    let host_metadata = host.metadata_options().expect("metadata options");
    assert_eq!(
        host_metadata.http_tokens().map(|t| t.as_str()),
        Some("required")
    );
    assert_eq!(host_metadata.http_put_response_hop_limit(), Some(1));
    let host_root = host.block_device_mappings()[0]
        .ebs()
        .and_then(|ebs| ebs.volume_id())
        .expect("a root volume");
    let volumes = ec2
        .describe_volumes()
        .volume_ids(host_root)
        .send()
        .await
        .unwrap();
    assert_eq!(volumes.volumes()[0].encrypted(), Some(true));
    assert_eq!(volumes.volumes()[0].kms_key_id(), Some(key_arn.as_str()));
    let attribute = ec2
        .describe_instance_attribute()
        .instance_id(&host_id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .expect("reading the daemon host's user data");
    let host_user_data = String::from_utf8(
        aws_smithy_types::base64::decode(
            attribute
                .user_data()
                .and_then(|u| u.value())
                .expect("user data"),
        )
        .expect("user data is base64"),
    )
    .expect("user data is UTF-8");
    let env_secret = output("daemon_env_secret_arn").await;
    let config_secret = output("daemon_config_secret_arn").await;
    let tokens_secret = output("daemon_tokens_secret_arn").await;
    let tls_secret = output("daemon_tls_secret_arn").await;
    for needle in [
        binary_uri,
        env_secret.as_str(),
        config_secret.as_str(),
        tokens_secret.as_str(),
        tls_secret.as_str(),
        "ExecStart=/usr/local/bin/spotpool serve",
        "OnFailure=spotpool-failed.service",
        "Requires=spotpool-config.service",
        "LoadCredential=tls-key:/etc/spotpool/tls/key.pem",
        "LoadCredential=config:/etc/spotpool/spotpool.toml",
    ] {
        assert!(
            host_user_data.contains(needle),
            "the host's user data lacks {needle}"
        );
    }
    for (key, value) in &infra_env {
        assert!(
            !host_user_data.contains(&format!("{key}={value}")),
            "the host's user data carries the setting {key}"
        );
    }

    // Its settings are in Secrets Manager: daemon_env, the listen address, the TLS files and the
    // shards' TOML file; the tokens' and the TLS bundle's secrets are left for the operator to
    // fill, so no token or key ever passes through Terraform.
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let host_env = secrets
        .get_secret_value()
        .secret_id(&env_secret)
        .send()
        .await
        .expect("reading the host's settings");
    let host_env = host_env.secret_string().expect("a string secret");
    let host_settings: HashMap<String, String> = parse_env(host_env).into_iter().collect();
    assert_eq!(host_settings["SPOTPOOL_LISTEN"], "0.0.0.0:7070");
    assert_eq!(
        host_settings["SPOTPOOL_TLS_CERT"],
        "/run/credentials/spotpool.service/tls-cert"
    );
    assert_eq!(
        host_settings["SPOTPOOL_TLS_KEY"],
        "/run/credentials/spotpool.service/tls-key"
    );
    assert_eq!(
        host_settings["SPOTPOOL_CONFIG"],
        "/run/credentials/spotpool.service/config"
    );
    let host_config = secrets
        .get_secret_value()
        .secret_id(&config_secret)
        .send()
        .await
        .expect("reading the host's TOML file");
    assert_eq!(host_config.secret_string(), Some(shards_toml.as_str()));
    for (key, value) in &host_settings {
        if !key.starts_with("SPOTPOOL_LISTEN")
            && !key.starts_with("SPOTPOOL_TLS_")
            && key != "SPOTPOOL_CONFIG"
        {
            assert_eq!(settings.get(key.as_str()), Some(&value.as_str()), "{key}");
        }
    }
    assert!(!host_env.contains("TOKEN") && !host_env.contains("AWS_SECRET_ACCESS_KEY"));
    for empty in [&tokens_secret, &tls_secret] {
        let read = secrets.get_secret_value().secret_id(empty).send().await;
        assert!(read.is_err(), "{empty} has a value Terraform put there");
    }
    // The host role reads exactly those secrets and the one binary object.
    let host_policy: serde_json::Value =
        serde_json::from_str(&output("daemon_host_policy_json").await).expect("JSON");
    assert_eq!(
        strings(&statement_by_sid(&host_policy, "ReadThisDaemonsSecrets")["Resource"]),
        BTreeSet::from([
            env_secret.clone(),
            config_secret.clone(),
            tokens_secret.clone(),
            tls_secret.clone()
        ])
    );
    let binary = statement_by_sid(&host_policy, "GetTheDaemonBinary");
    assert_eq!(
        strings(&binary["Action"]),
        BTreeSet::from(["s3:GetObject".to_string()])
    );
    assert_eq!(
        strings(&binary["Resource"]),
        BTreeSet::from(["arn:aws:s3:::spotpool-artifacts/releases/spotpool".to_string()])
    );

    // Its security group admits the API port from the allowed range only, never from a group
    // (the pool instances' least of all), and lets out HTTPS only.
    let host_group = output("daemon_host_security_group_id").await;
    assert_eq!(
        host.security_groups()
            .iter()
            .filter_map(|g| g.group_id())
            .collect::<Vec<_>>(),
        [host_group.as_str()]
    );
    let groups = ec2
        .describe_security_groups()
        .group_ids(&host_group)
        .send()
        .await
        .expect("reading the daemon host's security group");
    let group = &groups.security_groups()[0];
    let ingress = group.ip_permissions();
    assert_eq!(ingress.len(), 1, "{ingress:?}");
    assert_eq!(
        (ingress[0].from_port(), ingress[0].to_port()),
        (Some(7070), Some(7070))
    );
    assert!(ingress[0].user_id_group_pairs().is_empty(), "{ingress:?}");
    assert_eq!(
        ingress[0]
            .ip_ranges()
            .iter()
            .filter_map(|r| r.cidr_ip())
            .collect::<Vec<_>>(),
        ["10.20.0.0/24"]
    );
    let egress = group.ip_permissions_egress();
    assert_eq!(egress.len(), 1, "{egress:?}");
    assert_eq!(
        (
            egress[0].ip_protocol(),
            egress[0].from_port(),
            egress[0].to_port()
        ),
        (Some("tcp"), Some(443), Some(443))
    );
    assert_eq!(
        output("daemon_api_url").await,
        format!(
            "https://{}:7070",
            host.private_ip_address().expect("a private address")
        )
    );

    // The daemon, configured from the outputs alone plus tokens and test intervals: daemon_env,
    // and the [[shard]] tables of daemon_shards_toml in the file SPOTPOOL_CONFIG names (as the
    // daemon host does).
    let config = state.0.join("spotpool.toml");
    std::fs::write(&config, &shards_toml).expect("writing the daemon's TOML file");
    let mut env = infra_env.clone();
    env.extend(test_settings());
    env.push(("SPOTPOOL_CONFIG".to_string(), config.display().to_string()));
    let daemon = Daemon::start(&env).await;
    daemon.wait_available(2, DEADLINE).await;

    let body = format!(r#"{{"secrets":{{"OPENAI_API_KEY":"{SECRET_VALUE}"}}}}"#);
    let (status, doc) = daemon.put("alice", &body).await;
    assert!(status == 202 || status == 200, "{status} {doc}");
    let doc = daemon.wait_state("alice", "ready", DEADLINE).await;
    let route = doc["route"].as_str().unwrap();
    // Host routing: alice is https://<route>.shard-<i>.users.example.test/ on one of the
    // shards, through a rule on that shard's listener that matches her host and no path.
    let url = doc["url"].as_str().expect("a url");
    let shard = shards
        .iter()
        .find(|shard| url == format!("https://{route}.{}/", shard["domain"].as_str().unwrap()))
        .unwrap_or_else(|| panic!("{url} is on no shard's domain: {shards:?}"));
    let rules = elb
        .describe_rules()
        .listener_arn(shard["listener_arn"].as_str().unwrap())
        .send()
        .await
        .expect("reading the shard's rules");
    // A spare's warm rule may share the shard (its source-ip condition matches no client).
    let user_rules: Vec<_> = rules
        .rules()
        .iter()
        .filter(|rule| rule.is_default() != Some(true))
        .filter(|rule| {
            !rule
                .conditions()
                .iter()
                .any(|c| c.field() == Some("source-ip"))
        })
        .collect();
    assert_eq!(user_rules.len(), 1, "{user_rules:?}");
    let conditions = user_rules[0].conditions();
    assert_eq!(conditions.len(), 1, "{conditions:?}");
    assert_eq!(conditions[0].field(), Some("host-header"));
    let host = format!("{route}.{}", shard["domain"].as_str().unwrap());
    let hosts: Vec<&str> = conditions[0]
        .host_header_config()
        .map(|config| config.values().iter().map(String::as_str).collect())
        .unwrap_or_else(|| conditions[0].values().iter().map(String::as_str).collect());
    assert_eq!(hosts, [host.as_str()], "{conditions:?}");

    // The instance runs with the Terraform instance profile, in the Terraform network.
    let instance_id = doc["instance_id"].as_str().unwrap();
    let described = ec2
        .describe_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .unwrap();
    let instance = &described.reservations()[0].instances()[0];
    assert_eq!(instance.vpc_id(), Some(settings["VPC_ID"]));
    assert_eq!(
        instance.iam_instance_profile().and_then(|p| p.arn()),
        Some(settings["INSTANCE_PROFILE_ARN"])
    );

    // The user's workspace is encrypted under the key, as the daemon was told (daemon_env).
    let workspaces = ec2
        .describe_volumes()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag-key")
                .values(spotpool::cloud::tags::WORKSPACE)
                .build(),
        )
        .send()
        .await
        .expect("listing the workspaces");
    assert_eq!(workspaces.volumes().len(), 1, "{:?}", workspaces.volumes());
    assert_eq!(workspaces.volumes()[0].encrypted(), Some(true));
    assert_eq!(workspaces.volumes()[0].kms_key_id(), Some(key_arn.as_str()));

    // The daemon reads the queue Terraform made: an EC2 event put there (as EventBridge would;
    // moto's EC2 emits none) is consumed and deleted. The instance is no pool's, so nothing
    // else happens, but the daemon has now made both of its SQS calls.
    sqs.send_message()
        .queue_url(queue_url)
        .message_body(
            r#"{"version":"0","id":"5e3b6f9a-0c1d-4e2f-9a8b-7c6d5e4f3a2b",
                "detail-type":"EC2 Instance State-change Notification","source":"aws.ec2",
                "account":"123456789012","time":"2026-03-02T10:17:31Z","region":"us-east-1",
                "resources":["arn:aws:ec2:us-east-1:123456789012:instance/i-00000000000000001"],
                "detail":{"instance-id":"i-00000000000000001","state":"terminated"}}"#,
        )
        .send()
        .await
        .expect("publishing to the interruption queue");
    let consumed = daemon
        .wait_for(DEADLINE, || async {
            counter_by(
                &daemon.metrics().await,
                "spotpool_interruptions_received_total",
                "kind",
            )
            .get("state_change")
                == Some(&1.0)
        })
        .await;
    assert!(consumed, "the event was never read; log:\n{}", daemon.log());
    let emptied = daemon
        .wait_for(DEADLINE, || async {
            let out = sqs
                .get_queue_attributes()
                .queue_url(queue_url)
                .attribute_names(
                    aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages,
                )
                .attribute_names(
                    aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                )
                .send()
                .await
                .expect("reading the queue's counts");
            out.attributes()
                .is_some_and(|counts| counts.values().all(|count| count == "0"))
        })
        .await;
    assert!(
        emptied,
        "the event was never deleted; log:\n{}",
        daemon.log()
    );

    let (status, _) = daemon.delete("alice").await;
    assert_eq!(status, 202);
    let gone = daemon
        .wait_for(DEADLINE, || async { daemon.get("alice").await.0 == 404 })
        .await;
    assert!(gone, "alice never went away; log:\n{}", daemon.log());

    // Every AWS call the daemon made is allowed by the daemon's policies Terraform created
    // (daemon_policy_json is both of them as one document).
    let policy = daemon_policy;
    let allowed = allowed_actions(&policy);
    let made = calls_made(&daemon.metrics().await);
    assert!(
        made.len() >= 10,
        "too few calls counted to prove anything: {made:?}"
    );
    // Among them the interruption queue's calls and the workspace's whole life (the second
    // policy's statements): kept from the spare's blank, detached and deleted with alice.
    // (CreateVolume and AttachVolume, which a first claim no longer makes, are decided against
    // the same applied policies by `iam_requests`.)
    for call in [
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "ec2:ModifyInstanceAttribute",
        "ec2:DescribeVolumes",
        "ec2:DetachVolume",
        "ec2:DeleteVolume",
    ] {
        assert!(
            made.contains(call),
            "the daemon never made {call}: {made:?}"
        );
    }
    let missing: Vec<&String> = made.difference(&allowed).collect();
    assert!(
        missing.is_empty(),
        "the daemon's policies do not allow {missing:?}"
    );
    // Beyond action names: the applied daemon and instance policies against the resources and
    // condition keys of each call, must-deny requests, condition mutations, and parliament.
    let deployment = iam_requests::Deployment::from_state(&state.0.join(STATE_FILE));
    iam_requests::check(&deployment, &made);
    iam_requests::lint(&deployment, &state.0);
    // The tag keys a relocation puts on its snapshot (moto does not evaluate IAM conditions, so
    // the policy is read): every statement that limits the keys of CreateSnapshot or of
    // CreateTags on snapshots admits all of them.
    use spotpool::cloud::tags;
    let snapshot_keys = [tags::POOL, tags::USER_ID, tags::WORKSPACE, tags::RELOCATION];
    for action in ["ec2:CreateSnapshot", "ec2:CreateTags"] {
        let limits = admitted_tag_keys(&policy, action);
        assert!(!limits.is_empty(), "no tag-key limit on {action}");
        for admitted in limits {
            for key in snapshot_keys {
                assert!(
                    admitted.contains(key),
                    "{action} refuses tag {key}: {admitted:?}"
                );
            }
        }
    }

    // Stop the daemon, then drain the pool as docs/DEPLOY.md says: terminate the spares, which
    // live in the subnets and the security group that destroy removes.
    let (_, pool) = daemon
        .request("GET", "/v1/pool", Some(API_TOKEN), None)
        .await;
    drop(daemon);
    let spares: Vec<String> = pool["tiers"][0]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["instance_id"].as_str().map(String::from))
        .collect();
    assert!(!spares.is_empty(), "{pool}");
    ec2.terminate_instances()
        .set_instance_ids(Some(spares))
        .send()
        .await
        .expect("terminating the spares");

    let started = Instant::now();
    terraform_moto_with("destroy", &endpoint, state.path(), &vars).await;
    eprintln!("terraform destroy took {:?}", started.elapsed());

    let vpcs = ec2.describe_vpcs().send().await.unwrap();
    assert!(
        !vpcs
            .vpcs()
            .iter()
            .any(|vpc| vpc.vpc_id() == Some(settings["VPC_ID"])),
        "the VPC survived terraform destroy"
    );
    let balancers = elb.describe_load_balancers().send().await.unwrap();
    assert!(
        balancers.load_balancers().is_empty(),
        "the ALB survived terraform destroy: {:?}",
        balancers.load_balancers()
    );
    let templates = ec2.describe_launch_templates().send().await.unwrap();
    assert!(
        templates.launch_templates().is_empty(),
        "the launch template survived terraform destroy"
    );
    let host_after = ec2
        .describe_instances()
        .instance_ids(&host_id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        host_after.reservations()[0].instances()[0]
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str()),
        Some("terminated"),
        "the daemon host survived terraform destroy"
    );
}
