//! The queue conformance suite, run against [`super::InProcessQueue`] and SQS.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Queue, Received};

/// The suite's time scale: SQS counts visibility in whole seconds, the in-process queue does
/// not, so each backend runs the same steps at its own speed.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A visibility short enough to wait out in a test.
    pub short: Duration,
    /// How long a receive may take to see a message that is there (SQS spreads messages over
    /// servers, so one receive may miss some).
    pub settle: Duration,
}

impl Timing {
    pub fn fast() -> Self {
        Timing {
            short: Duration::from_millis(200),
            settle: Duration::from_secs(2),
        }
    }

    pub fn seconds() -> Self {
        Timing {
            short: Duration::from_secs(2),
            settle: Duration::from_secs(10),
        }
    }
}

/// Receives until `n` messages arrived or `settle` passed.
async fn receive_n(queue: &dyn Queue, n: usize, visibility: Duration, t: Timing) -> Vec<Received> {
    let until = tokio::time::Instant::now() + t.settle;
    let mut got = Vec::new();
    while got.len() < n && tokio::time::Instant::now() < until {
        let batch = queue
            .receive(n - got.len(), visibility, Duration::from_secs(1))
            .await
            .expect("receive");
        got.extend(batch);
    }
    got
}

/// Send, receive with deadline and count, invisibility, ack (twice), release, extend, depth.
/// `queue` must be empty.
pub async fn queue(queue: &dyn Queue, t: Timing) {
    let none = queue
        .receive(10, t.short, Duration::ZERO)
        .await
        .expect("receive on an empty queue");
    assert!(none.is_empty(), "the suite needs an empty queue");

    for body in [
        "{\"n\":1}",
        "{\"n\":2}",
        "{\"n\":3} with spaces and ünïcode",
    ] {
        queue.send(body).await.expect("send");
    }
    let long = t.settle * 6;
    let got = receive_n(queue, 3, long, t).await;
    assert_eq!(got.len(), 3, "every sent message is received");
    let mut by_body: BTreeMap<String, Received> =
        got.into_iter().map(|m| (m.body.clone(), m)).collect();
    assert!(
        by_body.contains_key("{\"n\":3} with spaces and ünïcode"),
        "bodies arrive intact"
    );
    assert!(
        by_body.values().all(|m| m.receive_count == 1),
        "first delivery counts 1"
    );

    // Received messages are invisible until their deadline.
    let hidden = queue
        .receive(10, long, Duration::from_secs(1))
        .await
        .expect("receive");
    assert!(
        hidden.is_empty(),
        "a received message is invisible to others"
    );

    // Ack deletes; a second ack of the same receipt succeeds.
    let first = by_body.remove("{\"n\":1}").expect("message 1");
    queue.ack(&first.receipt).await.expect("ack");
    queue
        .ack(&first.receipt)
        .await
        .expect("a repeated ack succeeds");

    // Release brings a message back at once, with its receive count raised.
    let second = by_body.remove("{\"n\":2}").expect("message 2");
    queue
        .release(&second.receipt, Duration::ZERO)
        .await
        .expect("release");
    let again = receive_n(queue, 1, t.short, t).await;
    assert_eq!(again.len(), 1, "a released message comes back");
    assert_eq!(again[0].body, "{\"n\":2}");
    assert_eq!(again[0].receive_count, 2, "redelivery raises the count");

    // Extend keeps the third hidden past its old deadline while the second (short visibility)
    // comes back on its own.
    let third = by_body
        .remove("{\"n\":3} with spaces and ünïcode")
        .expect("message 3");
    queue.extend(&third.receipt, long).await.expect("extend");
    tokio::time::sleep(t.short + Duration::from_millis(200)).await;
    let back = receive_n(queue, 1, long, t).await;
    assert_eq!(back.len(), 1, "an expired deadline redelivers");
    assert_eq!(
        back[0].body, "{\"n\":2}",
        "only the message that was not extended"
    );
    assert_eq!(back[0].receive_count, 3);
    queue.ack(&back[0].receipt).await.expect("ack");
    queue
        .ack(&third.receipt)
        .await
        .expect("ack of an extended message");

    let depth = queue.depth().await.expect("depth");
    assert_eq!(
        (depth.visible, depth.in_flight),
        (0, 0),
        "nothing left after every message is acknowledged"
    );

    // A batch of 23 (more than one SQS request's ten): one result per body, all delivered.
    let bodies: Vec<String> = (0..23).map(|i| format!("{{\"batch\":{i}}}")).collect();
    let results = queue.send_batch(&bodies).await;
    assert_eq!(results.len(), bodies.len(), "one result per body");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let got = receive_n(queue, bodies.len(), long, t).await;
    let mut received: Vec<String> = got.iter().map(|m| m.body.clone()).collect();
    received.sort();
    let mut sent = bodies.clone();
    sent.sort();
    assert_eq!(received, sent, "every batched message arrives once, intact");
    for m in &got {
        queue.ack(&m.receipt).await.expect("ack");
    }
}
