//! The event stream end to end (issue "See it live", Done-when bullet 1): moto, the real binary,
//! and an HTTP client on `GET /v1/events`. The service token's stream of a claimed user shows its
//! events up to `claim.ready` as they happen; reconnecting with the last id seen gives only the
//! newer ones (the release's); the service token never sees the pool's own events, which the
//! admin token does; `spotpool events` prints them a line each, and `spotpool status --watch`
//! draws the pool again with them.

use crate::daemon::{ADMIN_TOKEN, API_TOKEN, Daemon, daemon_env};
use crate::events::{Sse, parse};
use crate::support::infra::Infra;
use crate::support::moto::Moto;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(90);

/// What the stream at `path` has now (`follow=false`), with `last` as `Last-Event-ID`.
async fn read_all(daemon: &Daemon, path: &str, token: &str, last: Option<i64>) -> Vec<Sse> {
    let mut request = daemon
        .client
        .get(format!("{}{path}", daemon.base))
        .bearer_auth(token);
    if let Some(last) = last {
        request = request.header("last-event-id", last.to_string());
    }
    let response = request.send().await.expect("the stream answers");
    assert_eq!(response.status(), 200);
    parse(&response.text().await.unwrap())
}

#[tokio::test]
async fn e2e_a_stream_shows_a_claim_up_to_ready_and_a_resume_only_what_followed() {
    let moto = Moto::start().await;
    let sdk = moto.sdk_config().await;
    let infra = Infra::create(&sdk).await;
    let mut env = daemon_env(&moto, &infra);
    env.push(("POOL_SPARE_COUNT".into(), "1".into()));
    let daemon = Daemon::start(&env).await;
    daemon.wait_available(1, DEADLINE).await;

    // `spotpool status --watch`, started before the claim, draws the pool again with ann's
    // events under it.
    let mut watch = std::process::Command::new(crate::daemon::binary())
        .args(["status", "--watch"])
        .env_clear()
        .env("SPOTPOOL_URL", &daemon.base)
        .env("SPOTPOOL_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spotpool status --watch");
    let watched = crate::daemon::lines_of(watch.stdout.take().unwrap());

    // A live stream of ann's events, opened before her claim.
    let mut stream = daemon
        .client
        .get(format!("{}/v1/events?user=ann", daemon.base))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("the stream answers");
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let (status, doc) = daemon.put("ann", "{}").await;
    assert_eq!(status, 202, "{doc}");
    let mut text = String::new();
    let reading = async {
        while !text.contains("event: claim.ready") {
            let chunk = stream.chunk().await.expect("the stream reads");
            text.push_str(&String::from_utf8_lossy(
                &chunk.expect("the stream stays open"),
            ));
        }
    };
    tokio::time::timeout(DEADLINE, reading)
        .await
        .unwrap_or_else(|_| panic!("no claim.ready on the stream\nlog:\n{}", daemon.log()));
    drop(stream);
    let seen = parse(&text);
    let kinds: Vec<&str> = seen.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"claim.assigned"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"claim.ready"), "{kinds:?}");
    assert!(seen.iter().all(|e| e.data["user_id"] == "ann"), "{seen:?}");
    let last = seen.last().unwrap().id.expect("an id");

    // The watch drew the table again with ann's claim among the recent events.
    let mut drawn = Vec::new();
    let start = std::time::Instant::now();
    while !drawn
        .iter()
        .any(|l: &String| l.contains("claim.ready") && l.contains("user=ann"))
    {
        let left = DEADLINE.saturating_sub(start.elapsed());
        match watched.recv_timeout(left) {
            Ok(line) => drawn.push(line),
            Err(_) => panic!(
                "status --watch never showed claim.ready:\n{}",
                drawn.join("\n")
            ),
        }
    }
    assert!(drawn.iter().any(|l| l.starts_with("tier ")), "{drawn:?}");
    assert!(drawn.iter().any(|l| l == "recent events:"), "{drawn:?}");
    let _ = watch.kill();
    let _ = watch.wait();

    // The release, then a reconnect after the last id seen: only newer events, in order.
    let (status, _) = daemon.delete("ann").await;
    assert_eq!(status, 202);
    let released = daemon
        .wait_for(DEADLINE, || async { daemon.get("ann").await.0 == 404 })
        .await;
    assert!(released, "ann was not released\nlog:\n{}", daemon.log());
    let newer = read_all(
        &daemon,
        "/v1/events?user=ann&follow=false",
        API_TOKEN,
        Some(last),
    )
    .await;
    let ids: Vec<i64> = newer.iter().map(|e| e.id.unwrap()).collect();
    assert!(
        ids.first().is_some_and(|first| *first > last),
        "{ids:?} after {last}"
    );
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(newer.iter().any(|e| e.event == "release.done"), "{newer:?}");

    // The CLI prints them, a line each, and exits once caught up.
    let (code, out, err) = crate::e2e::cli(&daemon, ADMIN_TOKEN, &["events", "--user", "ann"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.iter().all(|l| l.contains(" user=ann ")), "{out}");
    for kind in ["claim.assigned", "claim.ready", "release.done"] {
        assert!(
            lines.iter().any(|l| l.contains(kind)),
            "{kind} missing:\n{out}"
        );
    }
    let (code, _, err) = crate::e2e::cli(&daemon, ADMIN_TOKEN, &["events", "--tier", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown_tier"), "{err}");

    // The service token: events about users only; the admin token sees the pool's own too.
    let service = read_all(&daemon, "/v1/events?after=0&follow=false", API_TOKEN, None).await;
    assert!(!service.is_empty());
    assert!(
        service.iter().all(|e| e.data["user_id"].is_string()),
        "{service:?}"
    );
    let admin = read_all(
        &daemon,
        "/v1/events?after=0&follow=false",
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert!(
        admin
            .iter()
            .any(|e| e.event == "leadership.acquired" && e.data["user_id"].is_null()),
        "{:?}",
        admin.iter().map(|e| &e.event).collect::<Vec<_>>()
    );
}
