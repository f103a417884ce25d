//! `SqsQueue` against a real moto server: the queue conformance suite (at SQS's whole-second
//! time scale), dead-lettering after maxReceiveCount, stale receipts, a missing queue, and an
//! endpoint that goes away.

mod support;

use std::time::{Duration, Instant};

use callpipe_cloud::sqs::{create_queue_with_dlq, SqsQueue};
use callpipe_common::queue::conformance::{self, Timing};
use callpipe_common::queue::{Queue, QueueError};
use callpipe_common::ErrorKind;

use support::moto::Moto;

async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create queue {name}: {e:?}"))
        .queue_url
        .expect("a queue URL")
}

#[tokio::test]
async fn the_queue_passes_the_conformance_suite() {
    let moto = Moto::start();
    let sqs = moto.sqs().await;
    let url = create_queue(&sqs, "conformance").await;
    let started = Instant::now();
    conformance::queue(&SqsQueue::new(sqs, url), Timing::seconds()).await;
    eprintln!("queue conformance took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_message_received_too_often_lands_in_the_dead_letter_queue() {
    let moto = Moto::start();
    let sqs = moto.sqs().await;
    let (url, dlq_url) = create_queue_with_dlq(&sqs, "jobs", 2)
        .await
        .expect("create");
    assert!(url.ends_with("/jobs"), "{url}");
    assert!(dlq_url.ends_with("/jobs-dlq"), "{dlq_url}");
    let again = create_queue_with_dlq(&sqs, "jobs", 2)
        .await
        .expect("idempotent");
    assert_eq!(again, (url.clone(), dlq_url.clone()));

    let jobs = SqsQueue::new(sqs.clone(), url);
    let dead = SqsQueue::new(sqs, dlq_url);
    jobs.send("{\"poison\":true}").await.unwrap();
    let short = Duration::from_secs(1);
    for count in 1..=2 {
        let got = receive_within(&jobs, short, Duration::from_secs(5)).await;
        assert_eq!(got.len(), 1, "delivery {count}");
        assert_eq!(got[0].receive_count, count);
        // Not acknowledged: the visibility runs out and the message comes back.
    }
    tokio::time::sleep(short + Duration::from_millis(200)).await;
    let none = jobs
        .receive(10, short, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(
        none.is_empty(),
        "a third delivery would exceed maxReceiveCount: {none:?}"
    );
    let letters = receive_within(&dead, Duration::from_secs(30), Duration::from_secs(5)).await;
    assert_eq!(letters.len(), 1, "the message moved to the DLQ");
    assert_eq!(letters[0].body, "{\"poison\":true}");
}

/// Receives until something arrives or `within` passes.
async fn receive_within(
    queue: &SqsQueue,
    visibility: Duration,
    within: Duration,
) -> Vec<callpipe_common::queue::Received> {
    let until = Instant::now() + within;
    loop {
        let got = queue
            .receive(10, visibility, Duration::from_secs(1))
            .await
            .unwrap();
        if !got.is_empty() || Instant::now() > until {
            return got;
        }
    }
}

#[tokio::test]
async fn a_receipt_of_a_deleted_message_is_expired() {
    let moto = Moto::start();
    let sqs = moto.sqs().await;
    let url = create_queue(&sqs, "receipts").await;
    let queue = SqsQueue::new(sqs, url);
    queue.send("x").await.unwrap();
    let got = receive_within(&queue, Duration::from_secs(30), Duration::from_secs(5)).await;
    let receipt = &got[0].receipt;
    queue
        .extend(receipt, Duration::from_secs(60))
        .await
        .unwrap();
    queue.ack(receipt).await.unwrap();

    for err in [
        queue
            .extend(receipt, Duration::from_secs(60))
            .await
            .unwrap_err(),
        queue.release(receipt, Duration::ZERO).await.unwrap_err(),
    ] {
        assert!(
            matches!(err, QueueError::ReceiptExpired { .. }),
            "a receipt of a deleted message: {err}"
        );
        assert_eq!(err.kind(), ErrorKind::Transient);
    }
    queue
        .ack(receipt)
        .await
        .expect("acknowledging twice succeeds");
}

#[tokio::test]
async fn a_missing_queue_is_a_misconfiguration() {
    let moto = Moto::start();
    let sqs = moto.sqs().await;
    let url = format!("{}/123456789012/no-such-queue", moto.endpoint());
    let queue = SqsQueue::new(sqs, url.clone());
    for err in [
        queue.send("x").await.unwrap_err(),
        queue
            .receive(1, Duration::from_secs(1), Duration::ZERO)
            .await
            .unwrap_err(),
        queue.depth().await.unwrap_err(),
    ] {
        assert!(
            matches!(&err, QueueError::Misconfigured { queue, reason }
                if *queue == url && reason.contains("no such queue")),
            "{err}"
        );
        assert_eq!(err.kind(), ErrorKind::Environment);
    }
}

#[tokio::test]
async fn an_endpoint_that_is_down_fails_fast_and_transiently() {
    let mut moto = Moto::start();
    let sqs = moto.sqs().await;
    let url = create_queue(&sqs, "flaky").await;
    let queue = SqsQueue::new(sqs.clone(), url.clone());
    queue.send("before").await.unwrap();

    moto.stop();
    let started = Instant::now();
    let err = queue.send("during").await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, QueueError::Unavailable { .. }),
        "a refused connection is Unavailable: {err}"
    );
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(
        took < Duration::from_secs(10),
        "retries are bounded: gave up after {took:?}"
    );
    eprintln!("gave up after {took:?}: {err}");

    moto.start_again();
    // moto forgot the queue; recreated under the same name it has the same URL.
    assert_eq!(create_queue(&sqs, "flaky").await, url);
    queue.send("after").await.unwrap();
    let got = receive_within(&queue, Duration::from_secs(30), Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "after");
}
