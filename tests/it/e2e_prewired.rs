//! Issue 13's "done when", against moto through the real binary: pre-wired spares.
//!
//! The pool is warm and at its maximum (spare count = maximum, so no replacement is launched
//! while the claim runs). Every available spare has its own target group holding only itself
//! and a warm rule on the listener that no client can match. From a user's PUT to `ready`, the
//! daemon's `spotpool_aws_calls_total` grows by at most one ELB mutating call (the ModifyRule
//! that switches the spare's rule to the user's route), and the user's rule forwards to a target
//! group holding exactly the user's instance. The user's tag goes onto the group and the rule
//! with one AddTags after `ready` (the journal orders the two).

use crate::daemon::{Daemon, counter_by, daemon_env};
use crate::support::aws::{Aws, ELB_MUTATING};
use crate::support::infra::Infra;
use crate::support::moto::Moto;
use std::collections::BTreeMap;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(60);

fn elb_writes(metrics: &str) -> BTreeMap<String, f64> {
    counter_by(metrics, "spotpool_aws_calls_total", "operation")
        .into_iter()
        .filter(|(operation, _)| ELB_MUTATING.contains(&operation.as_str()))
        .collect()
}

fn delta(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>, op: &str) -> f64 {
    after.get(op).copied().unwrap_or(0.0) - before.get(op).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn e2e_a_warm_claim_makes_one_elb_write_and_routes_to_the_users_instance() {
    let moto = Moto::start().await;
    let sdk = moto.sdk_config().await;
    let infra = Infra::create(&sdk).await;
    let aws = Aws::new(&sdk);
    let mut env = daemon_env(&moto, &infra);
    env.push(("POOL_SPARE_COUNT".into(), "2".into()));
    env.push(("POOL_MAX_INSTANCES".into(), "2".into()));
    let daemon = Daemon::start(&env).await;
    daemon.wait_available(2, DEADLINE).await;

    // Every available spare sits behind the load balancer: its own group, its warm rule.
    let (_, pool) = daemon
        .request("GET", "/v1/pool", Some(crate::daemon::ADMIN_TOKEN), None)
        .await;
    let rules = aws.rule_conditions(&infra.listener_arn).await;
    let spares = aws.instances_with_status("available").await;
    assert_eq!(spares.len(), 2, "{pool}");
    for spare in &spares {
        let name = format!("sp-warm-{}", &spare[2..]);
        let group = aws
            .target_group_arn(&name)
            .await
            .unwrap_or_else(|| panic!("{spare}: no target group {name}"));
        assert_eq!(aws.targets(&group).await, vec![spare.clone()], "{name}");
        let warm = rules
            .iter()
            .find(|(_, groups)| groups == &vec![group.clone()])
            .unwrap_or_else(|| panic!("{spare}: no warm rule in {rules:?}"));
        let mut conditions = warm.0.clone();
        conditions.sort();
        assert_eq!(
            conditions,
            vec![
                ("path-pattern".to_string(), vec![format!("/_warm/{spare}")]),
                ("source-ip".to_string(), vec!["192.0.2.1/32".to_string()]),
            ]
        );
    }

    // Each spare was launched with a blank workspace, which goes with it.
    for spare in &spares {
        let devices = aws.block_devices(spare).await;
        assert!(
            devices
                .iter()
                .any(|(device, _, goes)| device == "/dev/sdg" && *goes),
            "{spare}: {devices:?}"
        );
    }

    // A claim: at most one ELB write between the PUT and `ready`.
    let all_before = counter_by(
        &daemon.metrics().await,
        "spotpool_aws_calls_total",
        "operation",
    );
    let before = elb_writes(&daemon.metrics().await);
    let (status, doc) = daemon.put("alice", r#"{"secrets":{"K":"v"}}"#).await;
    assert!(status == 200 || status == 202, "{status} {doc}");
    let ready = daemon.wait_state("alice", "ready", DEADLINE).await;
    let all_after = counter_by(
        &daemon.metrics().await,
        "spotpool_aws_calls_total",
        "operation",
    );
    let after = elb_writes(&daemon.metrics().await);
    let journal = journal(&daemon).await;
    let ready_at = journal
        .iter()
        .position(|(kind, user)| kind == "claim.ready" && user == "alice")
        .expect("claim.ready in the journal");
    let tagged_at = journal
        .iter()
        .position(|(kind, user)| kind == "claim.route_tagged" && user == "alice");
    // AddTags runs only after `ready`, in a later pass: if it ran before this read, the
    // journal shows it after the claim's end, and it is not part of the claim.
    let tags_after_ready = delta(&after, &before, "AddTags");
    assert!(tags_after_ready <= 1.0, "{before:?} -> {after:?}");
    if tags_after_ready > 0.0 {
        assert!(tagged_at.is_some_and(|t| t > ready_at), "{journal:?}");
    }
    let on_claim_path: f64 = ELB_MUTATING
        .iter()
        .map(|op| delta(&after, &before, op))
        .sum::<f64>()
        - tags_after_ready;
    assert_eq!(on_claim_path, 1.0, "{before:?} -> {after:?}");
    assert_eq!(delta(&after, &before, "ModifyRule"), 1.0);

    // The user's rule forwards to a group holding exactly the user's instance, the claimed
    // spare's own group.
    let instance = ready["instance_id"].as_str().unwrap().to_string();
    assert!(spares.contains(&instance), "claimed a warm spare");
    let route = ready["route"].as_str().unwrap();
    let group = aws
        .user_target_group(&infra.listener_arn, route)
        .await
        .expect("the user's rule");
    assert_eq!(aws.targets(&group).await, vec![instance.clone()]);
    assert_eq!(
        aws.target_group_arn(&format!("sp-warm-{}", &instance[2..]))
            .await
            .as_deref(),
        Some(group.as_str())
    );
    // The user's workspace is the spare's blank, kept where it is: no volume created or
    // attached on the claim path, and it now outlives the instance.
    for op in ["CreateVolume", "AttachVolume"] {
        assert_eq!(delta(&all_after, &all_before, op), 0.0, "{op}");
    }
    assert_eq!(
        delta(&all_after, &all_before, "ModifyInstanceAttribute"),
        1.0
    );
    let workspace = ready["workspace"]["volume_id"]
        .as_str()
        .unwrap()
        .to_string();
    let blank: Vec<_> = aws
        .block_devices(&instance)
        .await
        .into_iter()
        .filter(|(device, _, _)| device == "/dev/sdg")
        .collect();
    assert_eq!(
        blank,
        vec![("/dev/sdg".to_string(), workspace.clone(), false)]
    );
    let volumes = aws.workspace_volumes("alice").await;
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert_eq!(volumes[0].id, workspace);
    assert!(volumes[0].encrypted);

    // No instance was launched for the claim: the pool was at its maximum.
    assert_eq!(aws.instances_with_status("available").await.len(), 1);

    // Then, off the claim path, the user's tag on the group and the rule.
    let tagged = daemon
        .wait_for(DEADLINE, || async {
            aws.elb_tags(&group).await.get("UserId").map(String::as_str) == Some("alice")
        })
        .await;
    assert!(tagged, "the user's tag on its group");
}

/// The daemon's journal, oldest first: (kind, user).
async fn journal(daemon: &Daemon) -> Vec<(String, String)> {
    let url = format!("sqlite://{}", daemon.dir.join("spotpool.db").display());
    let store = spotpool::store::Store::open(&url).await.unwrap();
    store
        .journal_since(0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.user_id.unwrap_or_default()))
        .collect()
}
