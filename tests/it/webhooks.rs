//! Ready webhooks on the fake (ARCHITECTURE.md, "Webhooks"): one signed POST per state a user
//! enters (`ready`, `asleep`, `failed`), each user's in order, retried with back-off and given
//! up after a day; a receiver's redirect is not followed; a name resolving to a private address
//! is refused at connect time; a deleted user's POST is dropped; the outbox outlives a restart.
//! Each test's receiver is a real HTTP server on a loopback port.

use crate::receiver::Receiver;
use crate::world::{API_TOKEN, WEBHOOK_SECRET, World};
use spotpool::model::{UserId, UserState};
use spotpool::webhook::{Attempt, Deliverer, WebhookSettings};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn body(url: &str) -> String {
    serde_json::json!({ "callback_url": url }).to_string()
}

async fn journal_kinds(world: &World, kind: &str) -> Vec<String> {
    let journal = world.store.journal_since(0, 100_000).await.unwrap();
    journal
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.message)
        .collect()
}

#[tokio::test]
async fn a_user_gets_one_signed_post_per_state_it_enters() {
    let world = World::new(1, 4).await;
    let receiver = Receiver::start().await;
    let url = format!("{}/hooks/alice?token=receiver-secret", receiver.url);
    let claimed = world.ready_user("alice", &body(&url)).await;
    assert_eq!(
        claimed["callback_url"],
        format!("{}/hooks/alice?…", receiver.url),
        "shown without its query"
    );

    assert_eq!(world.webhooks.deliver_due().await.unwrap(), 1);
    let got = receiver.wait_for(1, WAIT).await;
    let ready = &got[0];
    assert_eq!(ready.path, "/hooks/alice");
    let t = ready.verify(WEBHOOK_SECRET);
    assert_eq!(
        t,
        world.now.load(std::sync::atomic::Ordering::SeqCst) / 1000
    );
    assert_eq!(ready.header("content-type"), "application/json");
    let document = ready.json();
    assert_eq!(document["user_id"], "alice");
    assert_eq!(document["state"], "ready");
    assert_eq!(document["instance_id"], claimed["instance_id"]);
    assert_eq!(document["route"], claimed["route"]);
    let ready_id: i64 = ready.header("spotpool-event-id").parse().unwrap();
    // Delivered once: nothing more is due.
    assert_eq!(world.webhooks.deliver_due().await.unwrap(), 0);
    assert_eq!(
        journal_kinds(&world, "webhook.delivered").await.len(),
        1,
        "journalled"
    );

    // Asleep: one more, with the next id and no instance.
    let (status, answer) = world
        .request("POST", "/v1/users/alice/sleep", Some(API_TOKEN), "")
        .await;
    assert_eq!(status, 202, "{answer}");
    world.run_until_quiet(30).await;
    assert_eq!(world.user_state("alice").await, Some(UserState::Asleep));
    assert_eq!(world.webhooks.deliver_due().await.unwrap(), 1);
    let got = receiver.wait_for(2, WAIT).await;
    let asleep = &got[1];
    asleep.verify(WEBHOOK_SECRET);
    assert_eq!(asleep.json()["state"], "asleep");
    assert_eq!(asleep.json()["instance_id"], serde_json::Value::Null);
    let asleep_id: i64 = asleep.header("spotpool-event-id").parse().unwrap();
    assert!(asleep_id > ready_id);
    assert_eq!(world.webhooks.deliver_due().await.unwrap(), 0);
    assert_eq!(receiver.received().len(), 2, "exactly one POST per state");
}

#[tokio::test]
async fn a_failing_receiver_is_retried_with_back_off_in_order_and_given_up_after_a_day() {
    let world = World::new(1, 4).await;
    let receiver = Receiver::start().await;
    receiver.answer(503);
    let url = format!("{}/hooks", receiver.url);
    world.ready_user("alice", &body(&url)).await;
    let alice = UserId::parse("alice").unwrap();
    let due = world.store.due_webhooks(i64::MAX, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let Attempt::Retry(next) = world.webhooks.attempt(due[0].clone()).await.unwrap() else {
        panic!("a 503 is retried");
    };
    let now = world.now.load(std::sync::atomic::Ordering::SeqCst);
    assert!((4_000..=5_000).contains(&(next - now)), "{}", next - now);
    // Not before its time.
    assert_eq!(world.webhooks.deliver_due().await.unwrap(), 0);
    // Meanwhile the user falls asleep: that POST waits behind the first.
    world
        .request("POST", "/v1/users/alice/sleep", Some(API_TOKEN), "")
        .await;
    world.run_until_quiet(30).await;
    world.advance((next - world.now.load(std::sync::atomic::Ordering::SeqCst)).max(0));
    assert_eq!(
        world.webhooks.deliver_due().await.unwrap(),
        1,
        "the first only"
    );
    let backlog = world.store.webhook_backlog().await.unwrap();
    assert_eq!(backlog.pending, 2);
    // The receiver recovers: both, in order.
    receiver.answer(200);
    world.advance(60_000);
    world.webhooks.deliver_due().await.unwrap();
    world.webhooks.deliver_due().await.unwrap();
    let got = receiver.wait_for(4, WAIT).await;
    let states: Vec<String> = got
        .iter()
        .map(|r| r.json()["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["ready", "ready", "ready", "asleep"]);
    let delivered = journal_kinds(&world, "webhook.delivered").await;
    assert!(delivered[0].contains("after 3 attempt(s)"), "{delivered:?}");
    assert_eq!(world.store.webhook_backlog().await.unwrap().pending, 0);

    // A receiver down for a day: given up, and journalled with the cause.
    receiver.answer(500);
    world.put_user("alice", "").await;
    world.run_until_quiet(30).await;
    assert_eq!(world.user_state("alice").await, Some(UserState::Ready));
    let mut attempts = 0;
    loop {
        let due = world.store.due_webhooks(i64::MAX, 10).await.unwrap();
        let Some(hook) = due.first() else { break };
        assert_eq!(hook.user_id, alice);
        let now = world.now.load(std::sync::atomic::Ordering::SeqCst);
        world.advance((hook.next_attempt_at - now).max(0));
        attempts += 1;
        if world.webhooks.attempt(hook.clone()).await.unwrap() == Attempt::Abandoned {
            break;
        }
    }
    assert!(
        (45..=70).contains(&attempts),
        "{attempts} attempts in a day"
    );
    let abandoned = journal_kinds(&world, "webhook.abandoned").await;
    assert_eq!(abandoned.len(), 1);
    assert!(abandoned[0].contains("answered 500"), "{abandoned:?}");
    assert!(!abandoned[0].contains("/hooks"), "no path: {abandoned:?}");
    assert_eq!(world.store.webhook_backlog().await.unwrap().pending, 0);
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let world = World::new(1, 4).await;
    let receiver = Receiver::start().await;
    let url = format!("{}/redirect", receiver.url);
    world.ready_user("alice", &body(&url)).await;
    let due = world.store.due_webhooks(i64::MAX, 10).await.unwrap();
    let outcome = world.webhooks.attempt(due[0].clone()).await.unwrap();
    assert!(matches!(outcome, Attempt::Retry(_)), "{outcome:?}");
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/redirect", "/elsewhere is never asked");
}

/// The guard is at connect time: a callback whose name resolves to a private address (here
/// `localhost`, as a name in the VPC's DNS could) is never connected to.
#[tokio::test]
async fn a_name_resolving_to_a_private_address_is_refused_when_connecting() {
    let world = World::new(1, 4).await;
    // A bare listener that counts the connections made to it: none may be.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counting = tokio::spawn({
        let accepted = accepted.clone();
        async move {
            while listener.accept().await.is_ok() {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    world.ready_user("alice", "").await;
    let alice = UserId::parse("alice").unwrap();
    let guarded = Deliverer::new(
        world.store.clone(),
        WebhookSettings {
            secret: Some(spotpool::config::SecretString::new(WEBHOOK_SECRET)),
            allow_private: false,
        },
        Some(spotpool::webhook::client(false).unwrap()),
        world.state.clock.clone(),
        spotpool::api::webhook_render(world.state.clone()),
    );
    // Set as it could have been while the name still resolved to a public address.
    let url = format!("https://localhost:{port}/hook");
    world
        .store
        .set_callback_url(&alice, Some(&url), 0)
        .await
        .unwrap();
    world
        .request("POST", "/v1/users/alice/sleep", Some(API_TOKEN), "")
        .await;
    world.run_until_quiet(30).await;
    let due = world.store.due_webhooks(i64::MAX, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let outcome = guarded.attempt(due[0].clone()).await.unwrap();
    assert!(matches!(outcome, Attempt::Retry(_)), "{outcome:?}");
    let error = world.store.webhook_error(due[0].id).await.unwrap().unwrap();
    assert!(error.contains("no public address"), "{error}");
    assert!(
        !error.contains("127.0.0.1"),
        "no address in what is stored: {error}"
    );
    // An address literal is refused before any connect too: a row written with one (the
    // store does not check) is never sent.
    let bob = UserId::parse("bob").unwrap();
    world.ready_user("bob", "").await;
    let literal = format!("https://127.0.0.1:{port}/hook");
    world
        .store
        .set_callback_url(&bob, Some(&literal), 0)
        .await
        .unwrap();
    world
        .request("POST", "/v1/users/bob/sleep", Some(API_TOKEN), "")
        .await;
    world.run_until_quiet(30).await;
    let due: Vec<_> = (world.store.due_webhooks(i64::MAX, 10).await.unwrap())
        .into_iter()
        .filter(|hook| hook.user_id == bob)
        .collect();
    let outcome = guarded.attempt(due[0].clone()).await.unwrap();
    assert!(matches!(outcome, Attempt::Retry(_)), "{outcome:?}");
    let error = world.store.webhook_error(due[0].id).await.unwrap().unwrap();
    assert!(error.contains("is not public"), "{error}");
    // The same literal is reached when private targets are allowed: the listener counts.
    let allowed = world.webhooks.attempt(due[0].clone()).await.unwrap();
    assert!(matches!(allowed, Attempt::Retry(_)), "{allowed:?}");
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only the allowed attempt connected"
    );
    counting.abort();
}

/// Without a signing key nothing is sent: what the outbox holds waits (the backlog shows it)
/// and is given up a day after it was owed. A user deleted and created again does not get its
/// predecessor's POSTs.
#[tokio::test]
async fn without_a_key_nothing_is_sent_and_a_new_user_of_the_same_id_gets_none_of_the_old() {
    let world = World::new(1, 4).await;
    let receiver = Receiver::start().await;
    let url = format!("{}/hooks", receiver.url);
    world.ready_user("alice", &body(&url)).await;
    let off = Deliverer::new(
        world.store.clone(),
        WebhookSettings {
            secret: None,
            allow_private: true,
        },
        Some(spotpool::webhook::client(true).unwrap()),
        world.state.clock.clone(),
        spotpool::api::webhook_render(world.state.clone()),
    );
    assert!(!off.delivers() && world.webhooks.delivers());
    let due = world.store.due_webhooks(i64::MAX, 10).await.unwrap();
    assert!(matches!(
        off.attempt(due[0].clone()).await.unwrap(),
        Attempt::Retry(_)
    ));
    let error = world.store.webhook_error(due[0].id).await.unwrap().unwrap();
    assert!(error.contains("webhooks are off"), "{error}");
    world.advance(spotpool::webhook::GIVE_UP_AFTER);
    assert_eq!(
        off.attempt(due[0].clone()).await.unwrap(),
        Attempt::Abandoned
    );
    assert!(receiver.received().is_empty());

    // Bob's ready is owed; bob is deleted and PUT again before it goes out.
    world.ready_user("bob", &body(&url)).await;
    let owed = world.store.due_webhooks(i64::MAX, 10).await.unwrap();
    assert_eq!(owed.len(), 1);
    world.delete_user("bob").await;
    world.run_until_quiet(30).await;
    world.advance(1_000);
    world.put_user("bob", "{}").await;
    assert_eq!(
        world.webhooks.attempt(owed[0].clone()).await.unwrap(),
        Attempt::Gone
    );
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn a_deleted_users_post_is_dropped_and_the_outbox_outlives_a_restart() {
    let world = World::on_disk(1, 4).await;
    let receiver = Receiver::start().await;
    let url = format!("{}/hooks", receiver.url);
    world.ready_user("alice", &body(&url)).await;
    world.put_user("bob", &body(&url)).await;
    world.run_until_quiet(30).await;
    // A crash before any delivery: the restarted daemon delivers both.
    let restarted = world.restart().await;
    assert_eq!(restarted.store.webhook_backlog().await.unwrap().pending, 2);
    // Bob is deleted first: his is dropped, never sent.
    restarted.delete_user("bob").await;
    restarted.run_until_quiet(30).await;
    assert_eq!(restarted.user_state("bob").await, None);
    restarted.webhooks.deliver_due().await.unwrap();
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["user_id"], "alice");
    assert_eq!(restarted.store.webhook_backlog().await.unwrap().pending, 0);
    assert_eq!(restarted.webhooks.deliver_due().await.unwrap(), 0);
}
