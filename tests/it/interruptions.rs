//! The interruption queue against moto, through the real SDK path: an SQS queue created in moto,
//! real-shaped EventBridge events sent to it, and the consumer (`AwsInterruptionQueue` under
//! `InterruptionConsumer`) reading them into the store.

use crate::support::moto::Moto;
use spotpool::cloud::aws::AwsInterruptionQueue;
use spotpool::cloud::{InterruptionQueue, Lifecycle};
use spotpool::interruption_feed::{InterruptionConsumer, NoticeKind, PollReport};
use spotpool::model::{InstanceId, Millis};
use spotpool::store::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The spot interruption warning as EC2 sends it through EventBridge (the shape of the EC2 User
/// Guide's example, with a concrete time).
const SPOT_WARNING: &str = r#"{
    "version": "0",
    "id": "0b5c7e3a-61b9-4a58-8e0c-2f8f9d1e4a11",
    "detail-type": "EC2 Spot Instance Interruption Warning",
    "source": "aws.ec2",
    "account": "123456789012",
    "time": "2026-03-02T10:15:30Z",
    "region": "us-east-1",
    "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-0a1b2c3d4e5f60718"],
    "detail": {
        "instance-id": "i-0a1b2c3d4e5f60718",
        "instance-action": "terminate"
    }
}"#;

const TERMINATED: &str = r#"{
    "version": "0",
    "id": "9d3f1c2e-5b7a-4e0d-8c6f-1a2b3c4d5e6f",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "123456789012",
    "time": "2026-03-02T10:17:31Z",
    "region": "us-east-1",
    "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-0a1b2c3d4e5f60718"],
    "detail": {
        "instance-id": "i-0a1b2c3d4e5f60718",
        "state": "terminated"
    }
}"#;

/// 2026-03-02T10:15:30Z in epoch milliseconds.
const WARNING_TIME: Millis = 1_772_446_530_000;

struct World {
    _moto: Moto,
    sdk: aws_config::SdkConfig,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl World {
    async fn start() -> World {
        let moto = Moto::start().await;
        let sdk = moto.sdk_config().await;
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let queue_url = sqs
            .create_queue()
            .queue_name("spotpool-interruptions")
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
                "30",
            )
            .send()
            .await
            .expect("creating the queue in moto")
            .queue_url()
            .expect("the new queue has a URL")
            .to_string();
        World {
            _moto: moto,
            sdk,
            sqs,
            queue_url,
        }
    }

    /// What EventBridge does: put the event in the queue.
    async fn publish(&self, body: &str) {
        self.sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .expect("sending to the queue");
    }

    /// Messages still in the queue, visible or in flight.
    async fn messages_left(&self) -> u64 {
        use aws_sdk_sqs::types::QueueAttributeName as Name;
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(Name::ApproximateNumberOfMessages)
            .attribute_names(Name::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("reading the queue's attributes");
        let attributes = out.attributes().expect("attributes");
        [
            Name::ApproximateNumberOfMessages,
            Name::ApproximateNumberOfMessagesNotVisible,
        ]
        .iter()
        .map(|name| {
            attributes
                .get(name)
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {name:?} in {attributes:?}"))
        })
        .sum()
    }

    fn queue(&self) -> AwsInterruptionQueue {
        AwsInterruptionQueue::new(&self.sdk, &self.queue_url).with_wait(Duration::from_secs(1))
    }

    async fn consumer(&self) -> (InterruptionConsumer, Store, Arc<Notify>) {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let wake = Arc::new(Notify::new());
        let consumer = InterruptionConsumer::new(
            Arc::new(self.queue()),
            store.clone(),
            wake.clone(),
            Arc::new(|| WARNING_TIME + 1_000),
        );
        (consumer, store, wake)
    }
}

#[tokio::test]
async fn interruption_events_sent_to_the_queue_are_stored_and_deleted() {
    let world = World::start().await;
    world.publish(SPOT_WARNING).await;
    world.publish(TERMINATED).await;
    // A message that is not an EC2 event must not block the queue.
    world.publish("this is not an event").await;
    assert_eq!(world.messages_left().await, 3);

    let (consumer, store, wake) = world.consumer().await;
    let mut total = PollReport::default();
    // SQS may hand out a batch in more than one receive.
    let deadline = Instant::now() + Duration::from_secs(30);
    while total.received < 3 {
        assert!(Instant::now() < deadline, "only {total:?} after 30 s");
        let report = consumer.poll_once().await.expect("polling moto");
        total.received += report.received;
        total.stored += report.stored;
        total.rejected += report.rejected;
        total.duplicates += report.duplicates;
        assert_eq!(report.kept + report.delete_failures, 0, "{report:?}");
    }
    assert_eq!((total.stored, total.rejected), (2, 1), "{total:?}");
    assert_eq!(world.messages_left().await, 0, "every message is deleted");
    tokio::time::timeout(Duration::from_secs(1), wake.notified())
        .await
        .expect("the reconciler was woken");

    let notices = store.list_unhandled_notices().await.unwrap();
    assert_eq!(notices.len(), 2, "{notices:?}");
    let instance = InstanceId("i-0a1b2c3d4e5f60718".into());
    assert_eq!(notices[0].notice.kind, NoticeKind::SpotInterruptionWarning);
    assert_eq!(
        notices[0].notice.event_id,
        "0b5c7e3a-61b9-4a58-8e0c-2f8f9d1e4a11"
    );
    assert_eq!(notices[0].notice.instance_id, instance);
    assert_eq!(notices[0].notice.event_time, WARNING_TIME);
    assert_eq!(
        notices[1].notice.kind,
        NoticeKind::StateChange(Lifecycle::Terminated)
    );
    assert_eq!(notices[1].notice.event_time, WARNING_TIME + 121_000);

    // EventBridge delivers at least once: the same event again is deleted, not stored twice.
    world.publish(SPOT_WARNING).await;
    let report = consumer.poll_once().await.expect("polling moto");
    assert_eq!((report.received, report.duplicates), (1, 1), "{report:?}");
    assert_eq!(world.messages_left().await, 0);
    assert_eq!(store.list_unhandled_notices().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_message_whose_notice_was_not_stored_stays_in_the_queue() {
    let world = World::start().await;
    world.publish(SPOT_WARNING).await;
    let (consumer, store, _wake) = world.consumer().await;
    store.close().await;
    consumer.poll_once().await.expect_err("the store is closed");
    assert_eq!(
        world.messages_left().await,
        1,
        "the message waits out its visibility timeout in the queue"
    );
}

#[tokio::test]
async fn a_long_poll_may_outlast_the_sdk_attempt_timeout() {
    let world = World::start().await;
    // The daemon's calls get an attempt timeout sized for calls that answer at once; a long poll
    // on an empty queue takes its whole wait, longer than that, and is still no error. (moto
    // checks its deadline once a second, so it may answer up to a second after the wait.)
    let sdk = world
        .sdk
        .to_builder()
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_millis(2500))
                .operation_timeout(Duration::from_secs(3))
                .build(),
        )
        .build();
    let queue = AwsInterruptionQueue::new(&sdk, &world.queue_url).with_wait(Duration::from_secs(4));
    let started = Instant::now();
    let messages = queue
        .receive()
        .await
        .expect("an empty long poll is no error");
    assert!(messages.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(3500),
        "moto answered after {:?}: it did not long-poll",
        started.elapsed()
    );
}

#[tokio::test]
async fn deleting_with_an_unknown_or_used_receipt_succeeds() {
    let world = World::start().await;
    world.publish(SPOT_WARNING).await;
    let queue = world.queue();
    let messages = queue.receive().await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].body, SPOT_WARNING);
    queue.delete(&messages[0].receipt).await.unwrap();
    queue.delete(&messages[0].receipt).await.unwrap();
    queue.delete("not-a-receipt").await.unwrap();
    assert_eq!(world.messages_left().await, 0);
}

#[tokio::test]
async fn a_missing_queue_is_an_error_not_an_empty_answer() {
    let world = World::start().await;
    let missing = world
        .queue_url
        .replace("spotpool-interruptions", "no-such-queue");
    let queue = AwsInterruptionQueue::new(&world.sdk, &missing).with_wait(Duration::from_secs(1));
    let error = queue.receive().await.unwrap_err();
    assert!(!error.kind.is_retryable(), "{error}");
}
