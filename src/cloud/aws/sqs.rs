//! [`AwsInterruptionQueue`]: the [`InterruptionQueue`] port on SQS, the queue that EventBridge
//! fills with EC2 interruption events (`terraform/modules/spotpool/interruptions.tf`).
//!
//! Owns: every `aws_sdk_sqs` type. Errors go through [`call`] (in `errors`: classification and
//! per-call metrics), so `spotpool_aws_calls_total{service="sqs"}` counts these calls like any
//! other. Must not: parse the messages (that is `crate::interruption_feed`) or retry on its own.

use super::errors::{call, with_context};
use crate::cloud::{CloudErrorKind, CloudResult, InterruptionQueue, QueueMessage};
use std::time::Duration;

/// The longest long poll SQS allows, and the one the daemon uses.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// The most messages one ReceiveMessage returns.
const MAX_MESSAGES: i32 = 10;

/// [`InterruptionQueue`] on SQS.
#[derive(Debug, Clone)]
pub struct AwsInterruptionQueue {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    wait: Duration,
}

impl AwsInterruptionQueue {
    /// A client for `queue_url`, built from the same SDK config (credentials, region, endpoint,
    /// retry and timeouts) as every other client; see [`super::load_sdk_config`].
    pub fn new(sdk: &aws_config::SdkConfig, queue_url: &str) -> AwsInterruptionQueue {
        AwsInterruptionQueue {
            sqs: aws_sdk_sqs::Client::from_conf(
                aws_sdk_sqs::config::Builder::from(sdk)
                    .interceptor(super::AttemptCounter { retries: None })
                    .build(),
            ),
            queue_url: queue_url.to_string(),
            wait: MAX_WAIT,
        }
    }

    /// Sets the long poll's wait (whole seconds, at most 20). Tests use a short one.
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait.min(MAX_WAIT);
        self
    }

    /// The SDK's timeouts are sized for calls that answer at once; a long poll legitimately
    /// takes `wait` longer, so the receive gets that much more on top of them.
    fn receive_timeouts(&self) -> aws_config::timeout::TimeoutConfig {
        let mut builder = aws_config::timeout::TimeoutConfig::builder();
        let Some(base) = self.sqs.config().timeout_config() else {
            return builder.build();
        };
        if let Some(timeout) = base.operation_timeout() {
            builder = builder.operation_timeout(timeout + self.wait);
        }
        if let Some(timeout) = base.operation_attempt_timeout() {
            builder = builder.operation_attempt_timeout(timeout + self.wait);
        }
        if let Some(timeout) = base.connect_timeout() {
            builder = builder.connect_timeout(timeout);
        }
        if let Some(timeout) = base.read_timeout() {
            builder = builder.read_timeout(timeout + self.wait);
        }
        builder.build()
    }
}

#[async_trait::async_trait]
impl InterruptionQueue for AwsInterruptionQueue {
    async fn receive(&self) -> CloudResult<Vec<QueueMessage>> {
        let wait_seconds = i32::try_from(self.wait.as_secs()).unwrap_or(20);
        let output = call(
            "sqs",
            "ReceiveMessage",
            self.sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(MAX_MESSAGES)
                .wait_time_seconds(wait_seconds)
                .customize()
                .config_override(
                    aws_sdk_sqs::config::Builder::default().timeout_config(self.receive_timeouts()),
                )
                .send(),
        )
        .await
        .map_err(|err| with_context(err, "receiving from the interruption queue"))?;
        let mut messages = Vec::new();
        for message in output.messages() {
            // A message without a receipt could never be deleted; without a body there is
            // nothing to read. SQS always sends both.
            let Some(receipt) = message.receipt_handle() else {
                tracing::warn!(
                    message_id = message.message_id().unwrap_or_default(),
                    "interruption queue message without a receipt handle; it will come back"
                );
                continue;
            };
            messages.push(QueueMessage {
                message_id: message.message_id().unwrap_or_default().to_string(),
                receipt: receipt.to_string(),
                body: message.body().unwrap_or_default().to_string(),
            });
        }
        Ok(messages)
    }

    async fn delete(&self, receipt: &str) -> CloudResult<()> {
        let result = call(
            "sqs",
            "DeleteMessage",
            self.sqs
                .delete_message()
                .queue_url(&self.queue_url)
                .receipt_handle(receipt)
                .send(),
        )
        .await;
        match result {
            Ok(_) => Ok(()),
            // An expired receipt: the message was received again since, or is gone. Either way
            // it is not ours to delete any more; at worst it comes back as a duplicate.
            Err(err) if err.kind == CloudErrorKind::NotFound => Ok(()),
            Err(err) => Err(with_context(err, "deleting an interruption queue message")),
        }
    }
}
