//! `GET /v1/events` on the fake (ARCHITECTURE.md, "Events"): a claim's events in order, resumed
//! after an id without a loss or a repeat, the service token's view (events about users only),
//! the filters, a cursor older than the journal's horizon (`event: reset`; `after=0` asks for
//! what is kept), and a live stream
//! that sees a claim as it happens.

use crate::world::{ADMIN_TOKEN, API_TOKEN, World};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct Sse {
    pub id: Option<i64>,
    pub event: String,
    pub data: serde_json::Value,
}

/// The events of an SSE text (comments skipped).
pub fn parse(text: &str) -> Vec<Sse> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let (mut id, mut event, mut data) = (None, String::from("message"), String::new());
        let mut any = false;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_string();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            } else {
                continue;
            }
            any = true;
        }
        if any {
            let data = serde_json::from_str(&data).unwrap_or(serde_json::Value::Null);
            out.push(Sse { id, event, data });
        }
    }
    out
}

fn get(uri: &str, token: &str, last_event_id: Option<i64>) -> Request<Body> {
    let mut builder = Request::builder()
        .uri(uri)
        .header("authorization", format!("Bearer {token}"));
    if let Some(id) = last_event_id {
        builder = builder.header("last-event-id", id.to_string());
    }
    builder.body(Body::empty()).unwrap()
}

/// Everything the stream has now (`follow=false`): the status and the events.
async fn events(
    world: &World,
    query: &str,
    token: &str,
    last: Option<i64>,
) -> (StatusCode, Vec<Sse>) {
    let uri = format!("/v1/events?follow=false&{query}");
    let response = world
        .router()
        .oneshot(get(&uri, token, last))
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .unwrap();
    (status, parse(&String::from_utf8_lossy(&bytes)))
}

fn kinds(events: &[Sse]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

#[tokio::test]
async fn a_claims_events_come_in_order_and_a_resume_repeats_and_loses_nothing() {
    let world = World::new(1, 10).await;
    world.ready_user("alice", "{}").await;
    let (status, all) = events(&world, "after=0&user=alice", API_TOKEN, None).await;
    assert_eq!(status, StatusCode::OK);
    let seen = kinds(&all);
    let ready = seen
        .iter()
        .position(|k| *k == "claim.ready")
        .expect("claim.ready");
    let assigned = seen
        .iter()
        .position(|k| *k == "claim.assigned")
        .expect("claim.assigned");
    assert!(assigned < ready, "{seen:?}");
    for event in &all {
        assert_eq!(event.data["user_id"], "alice", "{event:?}");
        assert_eq!(event.data["tier"], "default", "{event:?}");
        assert_eq!(event.data["kind"], event.event.as_str());
        assert_eq!(event.data["id"].as_i64(), event.id);
    }
    let ids: Vec<i64> = all.iter().map(|e| e.id.unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // Resumed after the third: exactly the rest, by Last-Event-ID or `after`.
    let cut = ids[2];
    let (_, rest) = events(&world, "user=alice", API_TOKEN, Some(cut)).await;
    assert_eq!(rest, all[3..].to_vec());
    let (_, rest) = events(&world, &format!("user=alice&after={cut}"), API_TOKEN, None).await;
    assert_eq!(rest, all[3..].to_vec());

    // The release's events follow, and only they, after the last id seen.
    let last = *ids.last().unwrap();
    world.delete_user("alice").await;
    world.run_until_quiet(30).await;
    let (_, newer) = events(&world, "user=alice", API_TOKEN, Some(last)).await;
    assert!(!newer.is_empty());
    assert!(newer.iter().all(|e| e.id.unwrap() > last), "{newer:?}");
    assert!(
        kinds(&newer).contains(&"release.done"),
        "{:?}",
        kinds(&newer)
    );
}

#[tokio::test]
async fn the_service_token_sees_events_about_users_only_and_filters_narrow_the_stream() {
    let world = World::new(1, 10).await;
    world.ready_user("alice", "{}").await;
    world.ready_user("bob", "{}").await;
    let (_, admin) = events(&world, "after=0", ADMIN_TOKEN, None).await;
    assert!(
        admin.iter().any(|e| e.data["user_id"].is_null()),
        "the admin token sees the pool's own events: {:?}",
        kinds(&admin)
    );
    let (_, service) = events(&world, "after=0", API_TOKEN, None).await;
    assert!(!service.is_empty());
    assert!(
        service.iter().all(|e| e.data["user_id"].is_string()),
        "{service:?}"
    );
    let users: Vec<&Sse> = admin
        .iter()
        .filter(|e| e.data["user_id"].is_string())
        .collect();
    assert_eq!(
        service.iter().collect::<Vec<_>>(),
        users,
        "the same entries, the same ids"
    );

    let (_, readies) = events(&world, "after=0&kind=claim.ready", API_TOKEN, None).await;
    let who: Vec<&str> = readies
        .iter()
        .map(|e| e.data["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(who, ["alice", "bob"]);
    let (_, claims) = events(
        &world,
        "after=0&kind=claim.*,release.done&user=bob",
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert!(!claims.is_empty());
    assert!(
        claims
            .iter()
            .all(|e| e.event.starts_with("claim.") && e.data["user_id"] == "bob")
    );

    // Bad filters are refused with the reason.
    for (query, code) in [
        ("user=Not%20A%20User", "invalid_user_id"),
        ("tier=nope", "unknown_tier"),
        ("kind=claim.", "invalid_kind"),
        ("after=-1", "invalid_after"),
    ] {
        let (status, body) = world
            .request(
                "GET",
                &format!("/v1/events?follow=false&{query}"),
                Some(API_TOKEN),
                "",
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
    }
    let (status, _) = world
        .request("GET", "/v1/events?follow=false", None, "")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_cursor_older_than_the_journal_keeps_gets_a_reset_first() {
    let world = World::new(1, 10).await;
    world.ready_user("alice", "{}").await;
    let (_, before) = events(&world, "after=0", ADMIN_TOKEN, None).await;
    let middle = before[before.len() / 2].id.unwrap();
    let middle_at = world.store.journal_since(middle - 1, 1).await.unwrap()[0].at;
    // Everything before `middle` goes.
    assert!(world.store.prune_journal(middle_at).await.unwrap() > 0);
    let horizon = world.store.journal_horizon().await.unwrap();
    assert!(horizon < middle, "{horizon} {middle}");
    let first = before[0].id.unwrap();
    let (_, resumed) = events(&world, "", ADMIN_TOKEN, Some(first)).await;
    assert_eq!(resumed[0].event, "reset", "{resumed:?}");
    assert_eq!(resumed[0].data["horizon"], horizon);
    assert_eq!(resumed[0].data["after"], first);
    let kept: Vec<Sse> = (before.into_iter())
        .filter(|e| e.id.unwrap() > horizon)
        .collect();
    assert_eq!(resumed[1..].to_vec(), kept);
    // A cursor within what is kept, or `after=0` (what is kept, by asking): no reset.
    let (_, within) = events(&world, "", ADMIN_TOKEN, Some(horizon)).await;
    assert_eq!(within, kept);
    let (_, all) = events(&world, "after=0", ADMIN_TOKEN, None).await;
    assert_eq!(all, kept);
}

#[tokio::test]
async fn a_live_stream_sees_a_claim_as_it_happens() {
    let world = World::new(1, 10).await;
    world.run_until_quiet(20).await;
    let response = world
        .router()
        .oneshot(get("/v1/events?user=carol", API_TOKEN, None))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    world.put_user("carol", "{}").await;
    world.run_until_quiet(30).await;
    let reader = async {
        let mut text = String::new();
        while !text.contains("event: claim.ready") {
            let frame = body.frame().await.expect("the stream stays open").unwrap();
            if let Ok(data) = frame.into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
        }
        text
    };
    // The hub reads the journal every 200 ms: the bound is for a broken stream only.
    let text = tokio::time::timeout(std::time::Duration::from_secs(20), reader)
        .await
        .expect("claim.ready reached the live stream");
    let seen = parse(&text);
    assert_eq!(seen.last().unwrap().event, "claim.ready");
    assert!(
        seen.iter().all(|e| e.data["user_id"] == "carol"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_replica_serves_a_bounded_number_of_streams_and_says_when_to_retry() {
    let world = World::new(0, 10).await;
    let max = spotpool::api::events::MAX_STREAMS;
    let mut open = Vec::new();
    for _ in 0..max {
        let response = world
            .router()
            .oneshot(get("/v1/events", API_TOKEN, None))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
    }
    let (status, headers, body) = world
        .request_with_headers("GET", "/v1/events", Some(API_TOKEN), "")
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "too_many_streams");
    assert!(headers.contains_key("retry-after"));
    // A client leaving frees its place.
    open.pop();
    let (status, _) = events(&world, "", API_TOKEN, None).await;
    assert_eq!(status, StatusCode::OK);
}
