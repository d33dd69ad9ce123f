//! An in-memory [`InterruptionQueue`]: messages, in-flight receipts, injected errors and a call
//! log, like [`super::FakeCloud`] for the `Cloud` port.
//!
//! Owns: the SQS behaviour the consumer relies on (a received message stays, invisible, until it
//! is deleted; an unknown or expired receipt deletes nothing and succeeds). Must not: sleep or
//! read the clock. A receive never waits: an empty queue answers an empty list at once, and the
//! test decides when the visibility timeout has passed ([`FakeQueue::expire_in_flight`]).

use crate::cloud::{CloudError, CloudErrorKind, CloudResult, InterruptionQueue, QueueMessage};
use std::collections::VecDeque;
use std::sync::Mutex;

/// At most this many messages per receive, as on SQS.
const MAX_MESSAGES: usize = 10;

#[derive(Debug, Clone)]
struct FakeMessage {
    message_id: String,
    body: String,
    /// The receipt of the receive that made it invisible; None while it is visible.
    in_flight: Option<String>,
    receives: u32,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    messages: Vec<FakeMessage>,
    fail_receive: VecDeque<CloudErrorKind>,
    fail_delete: VecDeque<CloudErrorKind>,
    calls: Vec<&'static str>,
}

/// The fake queue. Share it with `Arc` between the consumer and the test.
#[derive(Debug, Default)]
pub struct FakeQueue {
    state: Mutex<State>,
}

impl FakeQueue {
    pub fn new() -> FakeQueue {
        FakeQueue::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panicking test thread poisons the lock; the state itself is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts a message in the queue (what EventBridge does). Returns its message id.
    pub fn send(&self, body: &str) -> String {
        let mut state = self.lock();
        state.next_id += 1;
        let message_id = format!("msg-{}", state.next_id);
        state.messages.push(FakeMessage {
            message_id: message_id.clone(),
            body: body.to_string(),
            in_flight: None,
            receives: 0,
        });
        message_id
    }

    /// Messages not deleted yet, visible or in flight.
    pub fn len(&self) -> usize {
        self.lock().messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages received and neither deleted nor visible again yet.
    pub fn in_flight(&self) -> usize {
        self.lock()
            .messages
            .iter()
            .filter(|m| m.in_flight.is_some())
            .count()
    }

    /// How often the message with this body has been received.
    pub fn receives_of(&self, body: &str) -> u32 {
        self.lock()
            .messages
            .iter()
            .find(|m| m.body == body)
            .map_or(0, |m| m.receives)
    }

    /// The visibility timeout passes: every received but undeleted message is visible again,
    /// and its old receipt is void.
    pub fn expire_in_flight(&self) {
        for message in &mut self.lock().messages {
            message.in_flight = None;
        }
    }

    /// The next receive fails with `kind` (once per call of this).
    pub fn fail_next_receive(&self, kind: CloudErrorKind) {
        self.lock().fail_receive.push_back(kind);
    }

    /// The next delete fails with `kind` (once per call of this).
    pub fn fail_next_delete(&self, kind: CloudErrorKind) {
        self.lock().fail_delete.push_back(kind);
    }

    /// Every call so far, in order: "ReceiveMessage" or "DeleteMessage".
    pub fn calls(&self) -> Vec<&'static str> {
        self.lock().calls.clone()
    }
}

fn injected(operation: &'static str, kind: CloudErrorKind) -> CloudError {
    CloudError::new(kind, operation, "Injected", "injected by the test")
}

#[async_trait::async_trait]
impl InterruptionQueue for FakeQueue {
    async fn receive(&self) -> CloudResult<Vec<QueueMessage>> {
        let mut state = self.lock();
        state.calls.push("ReceiveMessage");
        if let Some(kind) = state.fail_receive.pop_front() {
            return Err(injected("ReceiveMessage", kind));
        }
        let mut out = Vec::new();
        let mut next_id = state.next_id;
        for message in state.messages.iter_mut() {
            if out.len() == MAX_MESSAGES {
                break;
            }
            if message.in_flight.is_some() {
                continue;
            }
            next_id += 1;
            let receipt = format!("receipt-{next_id}");
            message.in_flight = Some(receipt.clone());
            message.receives += 1;
            out.push(QueueMessage {
                message_id: message.message_id.clone(),
                receipt,
                body: message.body.clone(),
            });
        }
        state.next_id = next_id;
        Ok(out)
    }

    async fn delete(&self, receipt: &str) -> CloudResult<()> {
        let mut state = self.lock();
        state.calls.push("DeleteMessage");
        if let Some(kind) = state.fail_delete.pop_front() {
            return Err(injected("DeleteMessage", kind));
        }
        // An unknown or expired receipt deletes nothing, and succeeds (the port's contract).
        state
            .messages
            .retain(|m| m.in_flight.as_deref() != Some(receipt));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_received_message_stays_until_deleted_and_an_old_receipt_deletes_nothing() {
        let queue = FakeQueue::new();
        queue.send("a");
        let first = queue.receive().await.unwrap();
        assert_eq!(first.len(), 1);
        assert!(queue.receive().await.unwrap().is_empty(), "in flight");
        queue.expire_in_flight();
        let second = queue.receive().await.unwrap();
        assert_eq!(second[0].body, "a");
        assert_ne!(first[0].receipt, second[0].receipt);
        queue.delete(&first[0].receipt).await.unwrap();
        assert_eq!(queue.len(), 1, "an expired receipt deletes nothing");
        queue.delete(&second[0].receipt).await.unwrap();
        assert!(queue.is_empty());
        assert_eq!(queue.receives_of("a"), 0);
    }

    #[tokio::test]
    async fn a_receive_returns_at_most_ten() {
        let queue = FakeQueue::new();
        for i in 0..12 {
            queue.send(&i.to_string());
        }
        assert_eq!(queue.receive().await.unwrap().len(), 10);
        assert_eq!(queue.receive().await.unwrap().len(), 2);
    }
}
