use super::*;
use crate::cloud::CloudErrorKind;
use crate::cloud::fake_queue::FakeQueue;

// The three events as AWS documents them (EC2 User Guide: "Spot Instance interruption notices",
// "EC2 instance rebalance recommendations", "State change events for Amazon EC2 instances"),
// with a concrete time in place of the documents' placeholder.

const SPOT_WARNING: &str = r#"{
    "version": "0",
    "id": "12345678-1234-1234-1234-123456789012",
    "detail-type": "EC2 Spot Instance Interruption Warning",
    "source": "aws.ec2",
    "account": "123456789012",
    "time": "2021-11-11T21:29:54Z",
    "region": "us-east-2",
    "resources": ["arn:aws:ec2:us-east-2:123456789012:instance/i-1234567890abcdef0"],
    "detail": {
        "instance-id": "i-1234567890abcdef0",
        "instance-action": "terminate"
    }
}"#;

const REBALANCE: &str = r#"{
    "version": "0",
    "id": "12345678-1234-1234-1234-123456789013",
    "detail-type": "EC2 Instance Rebalance Recommendation",
    "source": "aws.ec2",
    "account": "123456789012",
    "time": "2021-11-11T21:27:10Z",
    "region": "us-east-2",
    "resources": ["arn:aws:ec2:us-east-2:123456789012:instance/i-1234567890abcdef0"],
    "detail": {
        "instance-id": "i-1234567890abcdef0"
    }
}"#;

fn state_change(id: &str, state: &str, time: &str) -> String {
    format!(
        r#"{{
   "id":"{id}",
   "detail-type":"EC2 Instance State-change Notification",
   "source":"aws.ec2",
   "account":"123456789012",
   "time":"{time}",
   "region":"us-east-1",
   "resources":[
      "arn:aws:ec2:us-east-1:123456789012:instance/i-1234567890abcdef0"
   ],
   "detail":{{
      "instance-id":"i-1234567890abcdef0",
      "state":"{state}"
   }}
}}"#
    )
}

/// 2021-11-11T21:29:54Z in epoch milliseconds.
const WARNING_TIME: Millis = 1_636_666_194_000;

fn instance() -> InstanceId {
    InstanceId("i-1234567890abcdef0".into())
}

// --- the parser ----------------------------------------------------------------------------

#[test]
fn the_detail_types_are_the_exact_eventbridge_strings() {
    assert_eq!(
        SPOT_INTERRUPTION_WARNING,
        "EC2 Spot Instance Interruption Warning"
    );
    assert_eq!(
        REBALANCE_RECOMMENDATION,
        "EC2 Instance Rebalance Recommendation"
    );
    assert_eq!(
        STATE_CHANGE_NOTIFICATION,
        "EC2 Instance State-change Notification"
    );
}

#[test]
fn a_spot_interruption_warning_becomes_a_notice() {
    assert_eq!(
        parse_event(SPOT_WARNING),
        Ok(InterruptionNotice {
            event_id: "12345678-1234-1234-1234-123456789012".into(),
            kind: NoticeKind::SpotInterruptionWarning,
            instance_id: instance(),
            event_time: WARNING_TIME,
        })
    );
}

#[test]
fn a_rebalance_recommendation_becomes_a_notice() {
    assert_eq!(
        parse_event(REBALANCE),
        Ok(InterruptionNotice {
            event_id: "12345678-1234-1234-1234-123456789013".into(),
            kind: NoticeKind::RebalanceRecommendation,
            instance_id: instance(),
            event_time: WARNING_TIME - 164_000,
        })
    );
}

#[test]
fn a_state_change_on_the_way_out_becomes_a_notice_with_its_state() {
    for (state, lifecycle) in [
        ("stopping", Lifecycle::Stopping),
        ("stopped", Lifecycle::Stopped),
        ("shutting-down", Lifecycle::ShuttingDown),
        ("terminated", Lifecycle::Terminated),
    ] {
        let body = state_change(
            "7bf73129-1428-4cd3-a780-95db273d1602",
            state,
            "2021-11-11T21:29:54Z",
        );
        let notice = parse_event(&body).unwrap();
        assert_eq!(notice.kind, NoticeKind::StateChange(lifecycle), "{state}");
        assert_eq!(notice.kind.state(), Some(lifecycle));
        assert_eq!(notice.instance_id, instance());
        assert_eq!(notice.event_id, "7bf73129-1428-4cd3-a780-95db273d1602");
        assert_eq!(notice.event_time, WARNING_TIME);
    }
}

#[test]
fn a_state_change_to_pending_or_running_is_ignored() {
    for state in ["pending", "running"] {
        let body = state_change("e-1", state, "2021-11-11T21:29:54Z");
        let rejected = parse_event(&body).unwrap_err();
        assert_eq!(rejected.reason(), "ignored_state", "{state}");
    }
}

#[test]
fn fractional_seconds_and_offsets_are_read_to_the_millisecond() {
    let body = state_change("e-1", "terminated", "2021-11-11T22:29:54.250+01:00");
    assert_eq!(parse_event(&body).unwrap().event_time, WARNING_TIME + 250);
}

#[test]
fn other_sources_and_detail_types_are_unknown_events() {
    let other_type = SPOT_WARNING.replace(
        "EC2 Spot Instance Interruption Warning",
        "EC2 Spot Instance Request Fulfillment",
    );
    let other_source = SPOT_WARNING.replace("\"aws.ec2\"", "\"my.app\"");
    let test_message = r#"{"Event":"s3:TestEvent"}"#;
    for body in [other_type.as_str(), other_source.as_str(), test_message] {
        let rejected = parse_event(body).unwrap_err();
        assert_eq!(rejected.reason(), "unknown_event", "{body}: {rejected}");
    }
}

#[test]
fn malformed_events_are_rejected_with_the_reason() {
    let without = |field: &str| {
        let mut event: serde_json::Value = serde_json::from_str(SPOT_WARNING).unwrap();
        event.as_object_mut().unwrap().remove(field);
        event.to_string()
    };
    let with_detail = |detail: serde_json::Value| {
        let mut event: serde_json::Value = serde_json::from_str(SPOT_WARNING).unwrap();
        event["detail"] = detail;
        event.to_string()
    };
    let cases = [
        ("not json".to_string(), "not JSON"),
        ("[1, 2]".to_string(), "not a JSON object"),
        ("".to_string(), "not JSON"),
        (without("id"), "no event id"),
        (without("time"), "no time"),
        (without("detail"), "no detail object"),
        (
            SPOT_WARNING.replace("2021-11-11T21:29:54Z", "yyyy-mm-ddThh:mm:ssZ"),
            "unreadable time",
        ),
        (
            SPOT_WARNING.replace("\"12345678-1234-1234-1234-123456789012\"", "\"\""),
            "unusable event id",
        ),
        (with_detail(serde_json::json!({})), "no detail.instance-id"),
        (
            with_detail(serde_json::json!({"instance-id": "i-xyz; rm -rf"})),
            "unusable instance id",
        ),
        (
            with_detail(serde_json::json!({"instance-id": 42})),
            "no detail.instance-id",
        ),
        (
            with_detail(serde_json::json!("i-1234567890abcdef0")),
            "no detail object",
        ),
        (
            state_change("e-1", "exploded", "2021-11-11T21:29:54Z"),
            "unknown state",
        ),
        (
            state_change("e-1", "terminated", "2021-11-11T21:29:54Z")
                .replace("\"state\"", "\"status\""),
            "without detail.state",
        ),
    ];
    for (body, expected) in cases {
        let rejected = parse_event(&body).unwrap_err();
        assert_eq!(rejected.reason(), "malformed", "{body}");
        assert!(
            rejected.to_string().contains(expected),
            "{body}: {rejected}"
        );
    }
}

#[test]
fn a_rejection_never_quotes_a_long_field_in_full() {
    let long = "x".repeat(10_000);
    let body = SPOT_WARNING.replace("2021-11-11T21:29:54Z", &long);
    let message = parse_event(&body).unwrap_err().to_string();
    assert!(message.len() < 200, "{message}");
}

#[test]
fn notice_kinds_round_trip_through_their_stored_form() {
    let mut kinds = vec![
        NoticeKind::SpotInterruptionWarning,
        NoticeKind::RebalanceRecommendation,
    ];
    kinds.extend(Lifecycle::ALL.map(NoticeKind::StateChange));
    for kind in kinds {
        let state = kind.state().map(Lifecycle::as_str);
        assert_eq!(NoticeKind::from_parts(kind.as_str(), state), Some(kind));
    }
    assert_eq!(NoticeKind::from_parts("state_change", None), None);
    assert_eq!(
        NoticeKind::from_parts("spot_interruption_warning", Some("terminated")),
        None
    );
    assert_eq!(NoticeKind::from_parts("other", None), None);
}

proptest::proptest! {
    #[test]
    fn the_parser_never_panics(body in ".{0,300}") {
        let _ = parse_event(&body);
    }

    #[test]
    fn the_parser_never_panics_on_mangled_events(cut in 0usize..600, junk in ".{0,20}") {
        let mut body: String = SPOT_WARNING.chars().take(cut).collect();
        body.push_str(&junk);
        let _ = parse_event(&body);
    }
}

// --- the consumer --------------------------------------------------------------------------

struct Setup {
    queue: Arc<FakeQueue>,
    store: Store,
    wake: Arc<Notify>,
    consumer: InterruptionConsumer,
}

const NOW: Millis = WARNING_TIME + 2_000;

async fn setup() -> Setup {
    let queue = Arc::new(FakeQueue::new());
    let store = Store::open("sqlite::memory:").await.unwrap();
    let wake = Arc::new(Notify::new());
    let clock: Clock = Arc::new(|| NOW);
    let consumer = InterruptionConsumer::new(queue.clone(), store.clone(), wake.clone(), clock);
    Setup {
        queue,
        store,
        wake,
        consumer,
    }
}

/// Whether the reconciler has a wake-up waiting (`notify_one` leaves a permit).
async fn was_woken(wake: &Notify) -> bool {
    tokio::time::timeout(Duration::from_millis(1), wake.notified())
        .await
        .is_ok()
}

#[tokio::test]
async fn a_message_is_deleted_only_after_its_notice_is_stored_and_the_reconciler_woken() {
    let s = setup().await;
    s.queue.send(SPOT_WARNING);
    let report = s.consumer.poll_once().await.unwrap();
    assert_eq!(
        report,
        PollReport {
            received: 1,
            stored: 1,
            ..PollReport::default()
        }
    );
    let stored = s.store.list_unhandled_notices().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].notice, parse_event(SPOT_WARNING).unwrap());
    assert_eq!(stored[0].received_at, NOW);
    assert_eq!(stored[0].handled_at, None);
    assert!(s.queue.is_empty());
    assert_eq!(s.queue.calls(), ["ReceiveMessage", "DeleteMessage"]);
    assert!(was_woken(&s.wake).await);
}

#[tokio::test]
async fn a_store_failure_leaves_the_message_in_the_queue_for_a_later_receive() {
    let s = setup().await;
    s.queue.send(SPOT_WARNING);
    s.store.close().await;
    let error = s.consumer.poll_once().await.unwrap_err();
    assert!(matches!(error, ConsumeError::Store(_)), "{error}");
    assert_eq!(s.queue.calls(), ["ReceiveMessage"], "nothing deleted");
    assert_eq!(s.queue.len(), 1);
    assert!(!was_woken(&s.wake).await);

    // The visibility timeout passes; a daemon with a working store gets the message again.
    s.queue.expire_in_flight();
    let healthy = setup().await;
    let consumer = InterruptionConsumer::new(
        s.queue.clone(),
        healthy.store.clone(),
        healthy.wake.clone(),
        Arc::new(|| NOW),
    );
    assert_eq!(consumer.poll_once().await.unwrap().stored, 1);
    assert!(s.queue.is_empty());
    assert_eq!(s.queue.receives_of(SPOT_WARNING), 0);
    assert_eq!(
        healthy.store.list_unhandled_notices().await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn a_duplicate_is_deleted_without_a_second_notice_or_wake_up() {
    let s = setup().await;
    s.queue.send(SPOT_WARNING);
    s.consumer.poll_once().await.unwrap();
    assert!(was_woken(&s.wake).await);
    // EventBridge delivers at least once: the same event again.
    s.queue.send(SPOT_WARNING);
    let report = s.consumer.poll_once().await.unwrap();
    assert_eq!((report.stored, report.duplicates), (0, 1));
    assert!(s.queue.is_empty());
    assert!(!was_woken(&s.wake).await);
    assert_eq!(s.store.list_unhandled_notices().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_failed_delete_brings_the_message_back_as_a_harmless_duplicate() {
    let s = setup().await;
    s.queue.send(REBALANCE);
    s.queue.fail_next_delete(CloudErrorKind::Transient);
    let report = s.consumer.poll_once().await.unwrap();
    assert_eq!((report.stored, report.delete_failures), (1, 1));
    assert_eq!(s.queue.len(), 1);
    s.queue.expire_in_flight();
    let report = s.consumer.poll_once().await.unwrap();
    assert_eq!((report.stored, report.duplicates), (0, 1));
    assert!(s.queue.is_empty());
    assert_eq!(s.store.list_unhandled_notices().await.unwrap().len(), 1);
}

#[test]
fn malformed_and_unknown_messages_are_deleted_and_counted() {
    // The metrics macros use the recorder of the thread that runs them: the whole test runs on
    // this thread, inside the local recorder's scope.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let s = setup().await;
            s.queue.send("not json at all");
            s.queue.send(r#"{"Event":"s3:TestEvent"}"#);
            s.queue.send(&state_change(
                "e-running",
                "running",
                "2021-11-11T21:29:54Z",
            ));
            s.queue.send(SPOT_WARNING);
            let report = s.consumer.poll_once().await.unwrap();
            assert_eq!(
                report,
                PollReport {
                    received: 4,
                    stored: 1,
                    rejected: 3,
                    ..PollReport::default()
                }
            );
            assert!(s.queue.is_empty(), "every message is deleted");
            assert_eq!(s.store.list_unhandled_notices().await.unwrap().len(), 1);
        })
    });
    let metrics = handle.render();
    for line in [
        r#"spotpool_interruption_messages_rejected_total{reason="malformed"} 1"#,
        r#"spotpool_interruption_messages_rejected_total{reason="unknown_event"} 1"#,
        r#"spotpool_interruption_messages_rejected_total{reason="ignored_state"} 1"#,
        r#"spotpool_interruptions_received_total{kind="spot_interruption_warning"} 1"#,
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_failed_receive_is_an_error_and_touches_nothing() {
    let s = setup().await;
    s.queue.send(SPOT_WARNING);
    s.queue.fail_next_receive(CloudErrorKind::Throttled);
    let error = s.consumer.poll_once().await.unwrap_err();
    assert!(matches!(error, ConsumeError::Receive(_)), "{error}");
    assert_eq!(s.queue.len(), 1);
    assert!(s.store.list_unhandled_notices().await.unwrap().is_empty());
    assert_eq!(s.consumer.poll_once().await.unwrap().stored, 1);
}

#[tokio::test]
async fn out_of_order_notices_are_listed_by_event_time() {
    let s = setup().await;
    // The termination arrives before the warning that preceded it.
    s.queue.send(&state_change(
        "e-terminated",
        "terminated",
        "2021-11-11T21:31:54Z",
    ));
    s.queue.send(SPOT_WARNING);
    s.queue.send(REBALANCE);
    assert_eq!(s.consumer.poll_once().await.unwrap().stored, 3);
    let kinds: Vec<NoticeKind> = s
        .store
        .list_unhandled_notices()
        .await
        .unwrap()
        .into_iter()
        .map(|stored| stored.notice.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            NoticeKind::RebalanceRecommendation,
            NoticeKind::SpotInterruptionWarning,
            NoticeKind::StateChange(Lifecycle::Terminated),
        ]
    );
}

#[tokio::test]
async fn the_loop_hands_notices_over_and_stops_on_shutdown() {
    let s = setup().await;
    s.queue.send(SPOT_WARNING);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let wake = s.wake.clone();
    let task = tokio::spawn(s.consumer.run_until_stopped(async {
        let _ = stopped.await;
    }));
    // The consumer wakes the reconciler once the notice is stored (the deadline only guards
    // against a hang).
    tokio::time::timeout(Duration::from_secs(10), wake.notified())
        .await
        .expect("the consumer never woke the reconciler");
    assert_eq!(s.store.list_unhandled_notices().await.unwrap().len(), 1);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the loop did not stop")
        .unwrap();
}

#[test]
fn the_loop_paces_empty_polls_and_backs_off_after_errors() {
    let empty = Ok(PollReport::default());
    let busy = Ok(PollReport {
        received: 3,
        stored: 3,
        ..PollReport::default()
    });
    assert_eq!(
        next_delay(&empty, 0, Duration::from_millis(200)),
        Duration::from_millis(800)
    );
    assert_eq!(
        next_delay(&empty, 0, Duration::from_secs(20)),
        Duration::ZERO
    );
    assert_eq!(next_delay(&busy, 0, Duration::ZERO), Duration::ZERO);
    let failed: Result<PollReport, ConsumeError> = Err(ConsumeError::Receive(CloudError::new(
        CloudErrorKind::Transient,
        "ReceiveMessage",
        "",
        "boom",
    )));
    assert_eq!(
        next_delay(&failed, 1, Duration::ZERO),
        Duration::from_secs(1)
    );
    assert_eq!(
        next_delay(&failed, 3, Duration::ZERO),
        Duration::from_secs(4)
    );
    assert_eq!(
        next_delay(&failed, 30, Duration::ZERO),
        Duration::from_secs(60)
    );
}
