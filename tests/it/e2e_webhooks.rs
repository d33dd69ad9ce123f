//! Ready webhooks end to end (issue "See it live", Done-when bullet 2): moto, the real binary,
//! and a receiver on a loopback port. A PUT with a `callback_url` gets exactly one accepted,
//! signed POST per state the user enters (`ready`, then `asleep`); the receiver fails the first
//! attempts and the daemon is killed (SIGKILL) while the `ready` POST is still owed, and the
//! restarted daemon delivers it with the same event id: nothing is lost, nothing repeated.

use crate::daemon::{API_TOKEN, Daemon, daemon_env};
use crate::receiver::Receiver;
use crate::support::infra::Infra;
use crate::support::moto::Moto;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(90);
const SECRET: &str = "e2e-webhook-signing-key-0123456789abcdef";

#[tokio::test]
async fn e2e_a_callback_gets_one_signed_post_per_state_across_a_crash() {
    let moto = Moto::start().await;
    let sdk = moto.sdk_config().await;
    let infra = Infra::create(&sdk).await;
    let mut env = daemon_env(&moto, &infra);
    for (key, value) in [
        ("POOL_SPARE_COUNT", "1"),
        ("SPOTPOOL_WEBHOOK_SECRET", SECRET),
        ("SPOTPOOL_WEBHOOK_ALLOW_PRIVATE", "true"),
    ] {
        env.push((key.into(), value.into()));
    }
    let daemon = Daemon::start(&env).await;
    daemon.wait_available(1, DEADLINE).await;

    // The receiver is down at first: the `ready` POST stays owed.
    let receiver = Receiver::start().await;
    receiver.answer(503);
    let url = format!("{}/spotpool?token=receiver-side-secret", receiver.url);
    let body = serde_json::json!({ "callback_url": url }).to_string();
    let (status, doc) = daemon.put("ann", &body).await;
    assert_eq!(status, 202, "{doc}");
    assert_eq!(doc["callback_url"], format!("{}/spotpool?…", receiver.url));
    daemon.wait_state("ann", "ready", DEADLINE).await;
    let refused = receiver.wait_for(1, DEADLINE).await;
    assert_eq!(refused[0].status, 503);
    let ready_id = refused[0].header("spotpool-event-id").to_string();

    // A crash while it is owed; the receiver comes back; the restarted daemon delivers it.
    let dir = daemon.crash();
    let attempts_before = receiver.received().len();
    receiver.answer(200);
    let daemon = Daemon::start_in(dir, &env).await;
    let got = receiver.wait_for(attempts_before + 1, DEADLINE).await;
    let delivered = got.last().unwrap();
    assert_eq!(delivered.status, 200);
    assert_eq!(
        delivered.header("spotpool-event-id"),
        ready_id,
        "the same event"
    );
    assert_eq!(delivered.json()["state"], "ready");

    // Asleep: the next state, the next id.
    let (status, answer) = daemon
        .request("POST", "/v1/users/ann/sleep", Some(API_TOKEN), None)
        .await;
    assert_eq!(status, 202, "{answer}");
    daemon.wait_state("ann", "asleep", DEADLINE).await;
    let got = receiver.wait_for(attempts_before + 2, DEADLINE).await;
    let asleep = got.last().unwrap();
    assert_eq!(asleep.json()["state"], "asleep");
    assert_ne!(asleep.header("spotpool-event-id"), ready_id);

    // Every POST is signed with the key and a fresh time; exactly one accepted per state.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for post in &got {
        let t = post.verify(SECRET);
        assert!((now - 300..=now).contains(&t), "t={t}, now={now}");
        assert_eq!(post.path, "/spotpool");
    }
    let accepted: Vec<(String, String)> = got
        .iter()
        .filter(|post| post.status == 200)
        .map(|post| {
            (
                post.json()["state"].as_str().unwrap().to_string(),
                post.header("spotpool-event-id").to_string(),
            )
        })
        .collect();
    assert_eq!(accepted.len(), 2, "{accepted:?}");
    assert_eq!(accepted[0].0, "ready");
    assert_eq!(accepted[1].0, "asleep");
    // The journal says so (once the daemon has recorded the answer it got), and no more is
    // owed: nothing will be sent again.
    let delivered = || async {
        let text = daemon
            .client
            .get(format!(
                "{}/v1/events?follow=false&after=0&kind=webhook.*",
                daemon.base
            ))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.matches("event: webhook.delivered").count()
    };
    assert!(
        daemon
            .wait_for(DEADLINE, || async { delivered().await == 2 })
            .await
    );
    assert_eq!(
        receiver.received().len(),
        got.len(),
        "nothing more was sent"
    );
    // The receiver's token is never in the daemon's log.
    assert!(!daemon.log().contains("receiver-side-secret"));
    assert!(!daemon.log().contains(SECRET));
}
