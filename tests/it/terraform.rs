//! The Terraform a platform team applies, end to end: the example root
//! (`terraform/examples/basic`) applied against moto with `scripts/terraform_moto.sh`, the real
//! daemon started from its `daemon_env` output, one user claimed and released, and
//! `terraform destroy`. It needs `terraform` and the machine's provider mirror, and fails (never
//! skips) without them.

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

/// `scripts/terraform_moto.sh` with `args`; its stdout, or a panic with its stderr.
async fn terraform_moto(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/terraform_moto.sh");
    let output = tokio::process::Command::new(&script)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|err| panic!("running {}: {err}", script.display()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(3) {
        panic!(
            "this test needs terraform and the Terraform AWS provider mirror \
             (find / -xdev -name 'terraform-provider-aws_*'); CI machines have both:\n{stderr}"
        );
    }
    assert!(
        output.status.success(),
        "terraform_moto.sh {args:?} failed ({}):\n{stderr}",
        output.status
    );
    String::from_utf8(output.stdout).expect("terraform output is UTF-8")
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

    let started = Instant::now();
    let env_text = terraform_moto(&["apply", &endpoint, state.path()]).await;
    eprintln!("terraform apply took {:?}", started.elapsed());
    // Applied state does not drift: a second plan is empty (no default_tags, no moto-dropped
    // attributes), so the local mode and a platform team's CI see a stable plan.
    terraform_moto(&["plan", &endpoint, state.path()]).await;

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
        "ALB_LISTENER_ARN",
        "INSTANCE_PROFILE_ARN",
        "CONTAINER_IMAGE",
        "CONTAINER_PRESET",
        "CONTAINER_PORT",
        "PUBLIC_BASE_URL",
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
    let metadata = data.metadata_options().expect("metadata options");
    assert_eq!(metadata.http_tokens().map(|t| t.as_str()), Some("required"));
    assert_eq!(metadata.http_put_response_hop_limit(), Some(1));
    let root = data.block_device_mappings()[0].ebs().expect("root volume");
    assert_eq!(root.volume_type().map(|t| t.as_str()), Some("gp3"));
    assert_eq!(root.encrypted(), Some(true));
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
    let user_data = terraform_moto(&["output", state.path(), "user_data"]).await;
    for needle in [
        "dnf install -y docker",
        "DOCKER-USER -d $METADATA_ADDRESS/32 -j DROP",
        "docker pull \"$IMAGE\"",
        "touch \"$READY_MARKER\"",
        "READY_MARKER='/var/lib/spotpool/ready'",
    ] {
        assert!(user_data.contains(needle), "user data lacks {needle}");
    }

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

    // The listener answers 404 unless a user's rule matches.
    let listeners = elb
        .describe_listeners()
        .listener_arns(settings["ALB_LISTENER_ARN"])
        .send()
        .await
        .expect("reading the listener");
    let default = &listeners.listeners()[0].default_actions()[0];
    assert_eq!(
        default
            .fixed_response_config()
            .and_then(|c| c.status_code()),
        Some("404")
    );

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

    // The daemon, configured from the output alone plus tokens and test intervals.
    let mut env = infra_env.clone();
    env.extend(test_settings());
    let daemon = Daemon::start(&env).await;
    daemon.wait_available(2, DEADLINE).await;

    let body = format!(r#"{{"secrets":{{"OPENAI_API_KEY":"{SECRET_VALUE}"}}}}"#);
    let (status, doc) = daemon.put("alice", &body).await;
    assert!(status == 202 || status == 200, "{status} {doc}");
    let doc = daemon.wait_state("alice", "ready", DEADLINE).await;
    let route = doc["route"].as_str().unwrap();
    assert_eq!(
        doc["url"],
        format!("{}/{route}/", settings["PUBLIC_BASE_URL"])
    );

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
    let policy: serde_json::Value = serde_json::from_str(
        &terraform_moto(&["output", state.path(), "daemon_policy_json"]).await,
    )
    .expect("the daemon policy is JSON");
    let allowed = allowed_actions(&policy);
    let made = calls_made(&daemon.metrics().await);
    assert!(
        made.len() >= 10,
        "too few calls counted to prove anything: {made:?}"
    );
    // Among them the interruption queue's calls and the workspace's whole life (the second
    // policy's statements).
    for call in [
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "ec2:CreateVolume",
        "ec2:DescribeVolumes",
        "ec2:AttachVolume",
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
    terraform_moto(&["destroy", &endpoint, state.path()]).await;
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
}
