//! The embedded queue: SQS's semantics in memory, bounded, for the in-process pipeline.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Queue, QueueDepth, QueueError, Received};

/// A bounded in-memory queue with visibility deadlines, receive counts and a dead-letter list.
///
/// `send` waits while `capacity` messages are waiting or in flight, so a fast stage cannot run
/// ahead of a slow one and memory stays flat. A message received `max_receives` times without
/// being acknowledged goes to [`InProcessQueue::dead_letters`] instead of coming back.
#[derive(Debug, Clone)]
pub struct InProcessQueue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    capacity: usize,
    max_receives: u32,
    state: Mutex<State>,
    /// Woken when a message becomes visible (sent, released) or leaves (acknowledged).
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    visible: VecDeque<Message>,
    /// Received or released with a delay: back in `visible` once `until` passes.
    hidden: HashMap<u64, (Message, Instant)>,
    dead: Vec<String>,
}

#[derive(Debug, Clone)]
struct Message {
    id: u64,
    body: String,
    receive_count: u32,
}

impl InProcessQueue {
    pub fn new(name: impl Into<String>, capacity: usize, max_receives: u32) -> Self {
        InProcessQueue {
            inner: Arc::new(Inner {
                name: name.into(),
                capacity: capacity.max(1),
                max_receives: max_receives.max(1),
                state: Mutex::new(State::default()),
                changed: Notify::new(),
            }),
        }
    }

    /// Bodies of messages that were received too often and given up on.
    pub fn dead_letters(&self) -> Vec<String> {
        self.inner.lock().dead.clone()
    }

    fn parse_receipt(&self, receipt: &str) -> Result<(u64, u32), QueueError> {
        let bad = || QueueError::Rejected {
            queue: self.inner.name.clone(),
            reason: format!("`{receipt}` is not a receipt of this queue"),
        };
        let (id, count) = receipt.split_once(':').ok_or_else(bad)?;
        Ok((
            id.parse().map_err(|_| bad())?,
            count.parse().map_err(|_| bad())?,
        ))
    }

    /// The hidden message a receipt names, if the receipt is still the current one.
    fn with_hidden<T>(
        &self,
        receipt: &str,
        f: impl FnOnce(&mut State, u64) -> T,
    ) -> Result<T, QueueError> {
        let (id, count) = self.parse_receipt(receipt)?;
        let mut state = self.inner.lock();
        state.expire(Instant::now(), self.inner.max_receives);
        match state.hidden.get(&id) {
            Some((m, _)) if m.receive_count == count => Ok(f(&mut state, id)),
            _ => Err(QueueError::ReceiptExpired {
                queue: self.inner.name.clone(),
            }),
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// Hidden messages whose deadline passed become visible again, or dead letters once they
    /// have been received `max_receives` times. Returns the earliest deadline still ahead.
    fn expire(&mut self, now: Instant, max_receives: u32) -> Option<Instant> {
        let due: Vec<u64> = self
            .hidden
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let (message, _) = self.hidden.remove(&id).expect("listed above");
            if message.receive_count >= max_receives {
                self.dead.push(message.body);
            } else {
                self.visible.push_back(message);
            }
        }
        self.hidden.values().map(|(_, until)| *until).min()
    }

    fn len(&self) -> usize {
        self.visible.len() + self.hidden.len()
    }
}

#[async_trait]
impl Queue for InProcessQueue {
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Received>, QueueError> {
        let give_up = Instant::now() + wait;
        loop {
            // Registered before looking, so a send between the look and the wait is not missed.
            let changed = self.inner.changed.notified();
            let now = Instant::now();
            let next_deadline = {
                let mut state = self.inner.lock();
                let next = state.expire(now, self.inner.max_receives);
                let mut out = Vec::new();
                while out.len() < max.clamp(1, 10) {
                    let Some(mut message) = state.visible.pop_front() else {
                        break;
                    };
                    message.receive_count += 1;
                    out.push(Received {
                        body: message.body.clone(),
                        receipt: format!("{}:{}", message.id, message.receive_count),
                        message_id: message.id.to_string(),
                        receive_count: message.receive_count,
                    });
                    state.hidden.insert(message.id, (message, now + visibility));
                }
                if !out.is_empty() {
                    return Ok(out);
                }
                next
            };
            if now >= give_up {
                return Ok(Vec::new());
            }
            let until = next_deadline.map_or(give_up, |d| d.min(give_up));
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn ack(&self, receipt: &str) -> Result<(), QueueError> {
        let (id, count) = self.parse_receipt(receipt)?;
        let mut state = self.inner.lock();
        if matches!(state.hidden.get(&id), Some((m, _)) if m.receive_count == count) {
            state.hidden.remove(&id);
        }
        drop(state);
        self.inner.changed.notify_waiters();
        Ok(())
    }

    async fn extend(&self, receipt: &str, visibility: Duration) -> Result<(), QueueError> {
        self.with_hidden(receipt, |state, id| {
            if let Some((_, until)) = state.hidden.get_mut(&id) {
                *until = Instant::now() + visibility;
            }
        })
    }

    async fn release(&self, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        self.with_hidden(receipt, |state, id| {
            if let Some((_, until)) = state.hidden.get_mut(&id) {
                *until = Instant::now() + delay;
            }
        })?;
        self.inner.changed.notify_waiters();
        Ok(())
    }

    async fn send(&self, body: &str) -> Result<(), QueueError> {
        loop {
            let changed = self.inner.changed.notified();
            {
                let mut state = self.inner.lock();
                state.expire(Instant::now(), self.inner.max_receives);
                if state.len() < self.inner.capacity {
                    let id = state.next_id;
                    state.next_id += 1;
                    state.visible.push_back(Message {
                        id,
                        body: body.to_owned(),
                        receive_count: 0,
                    });
                    drop(state);
                    self.inner.changed.notify_waiters();
                    return Ok(());
                }
            }
            // Full: wait for an acknowledgement (or poll, since an expiry notifies no one).
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let mut state = self.inner.lock();
        state.expire(Instant::now(), self.inner.max_receives);
        Ok(QueueDepth {
            visible: state.visible.len() as u64,
            in_flight: state.hidden.len() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_queue_conformance_suite() {
        let queue = InProcessQueue::new("test", 1000, 3);
        super::super::conformance::queue(&queue, super::super::conformance::Timing::fast()).await;
    }

    #[tokio::test]
    async fn a_message_received_too_often_becomes_a_dead_letter() {
        let queue = InProcessQueue::new("dlq", 10, 2);
        queue.send("poison").await.unwrap();
        for _ in 0..2 {
            let got = queue
                .receive(1, Duration::from_millis(10), Duration::from_secs(1))
                .await
                .unwrap();
            assert_eq!(got.len(), 1);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let none = queue
            .receive(1, Duration::from_secs(1), Duration::ZERO)
            .await
            .unwrap();
        assert!(none.is_empty());
        assert_eq!(queue.dead_letters(), ["poison"]);
    }

    #[tokio::test]
    async fn send_waits_while_the_queue_is_full() {
        let queue = InProcessQueue::new("bounded", 1, 5);
        queue.send("a").await.unwrap();
        let blocked = tokio::time::timeout(Duration::from_millis(100), queue.send("b")).await;
        assert!(blocked.is_err(), "a full queue must make send wait");
        let got = queue
            .receive(1, Duration::from_secs(5), Duration::ZERO)
            .await
            .unwrap();
        queue.ack(&got[0].receipt).await.unwrap();
        tokio::time::timeout(Duration::from_secs(1), queue.send("b"))
            .await
            .expect("room after an ack")
            .unwrap();
    }
}
