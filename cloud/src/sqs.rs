//! SQS behind `callpipe-common`'s [`Queue`]: the stage queues of a distributed deployment.
//!
//! The trait is SQS's own model (receive with a visibility deadline, delete, change
//! visibility), so the mapping is one call per method. What this module adds:
//!
//! - durations become the whole seconds SQS counts in, rounded so a deadline is never shorter
//!   than asked (a zero delay stays zero: [`Queue::release`] with no delay is "visible now");
//! - every receive asks for `ApproximateReceiveCount`, which the workers' backoff and
//!   poison-message handling need;
//! - errors become [`QueueError`]s: throttling, 5xx and transport failures are `Unavailable`,
//!   a receipt SQS no longer accepts is `ReceiptExpired`, a missing queue or bad credentials
//!   `Misconfigured`, an invalid message `Rejected`;
//! - [`create_queue_with_dlq`] makes a queue with its dead-letter queue, for set-up scripts
//!   and tests.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::error::SdkError;
use aws_sdk_sqs::types::{
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use callpipe_common::queue::{Queue, QueueDepth, QueueError, Received};

use crate::aws::{self, Cause};

/// The most messages one SendMessageBatch takes.
const SEND_BATCH: usize = 10;

/// SQS's longest visibility timeout: 12 hours.
const MAX_VISIBILITY_S: u64 = 43_200;
/// SQS's longest long poll.
const MAX_WAIT_S: u64 = 20;

/// One SQS queue, named by its URL.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
}

impl SqsQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        SqsQueue {
            client,
            url: url.into(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn error<E>(&self, op: Op, err: &SdkError<E>) -> QueueError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        map_error(&self.url, op, err)
    }
}

#[async_trait]
impl Queue for SqsQueue {
    fn name(&self) -> &str {
        &self.url
    }

    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Received>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            // At least 1 s: a zero visibility would hand the message straight to the next
            // receiver, which is never what a consumer taking work means.
            .visibility_timeout(whole_seconds(visibility, 1, MAX_VISIBILITY_S))
            .wait_time_seconds(whole_seconds(wait, 0, MAX_WAIT_S))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| self.error(Op::Receive, &e))?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                Some(Received {
                    receipt: m.receipt_handle?,
                    body: m.body.unwrap_or_default(),
                    message_id: m.message_id.unwrap_or_default(),
                    receive_count,
                })
            })
            .collect())
    }

    async fn ack(&self, receipt: &str) -> Result<(), QueueError> {
        let result = self
            .client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await;
        match result.map_err(|e| self.error(Op::Ack, &e)) {
            Ok(_) => Ok(()),
            // SQS (and moto) accept a repeated delete with the same receipt. A receipt it no
            // longer accepts at all belongs to a message already deleted or handed to another
            // consumer; either way there is nothing left for this one to delete, and the
            // trait's contract is that acknowledging a message that is gone succeeds.
            Err(QueueError::ReceiptExpired { .. }) => {
                tracing::warn!(queue = %self.url, "ack of a receipt SQS no longer accepts");
                Ok(())
            }
            Err(other) => Err(other),
        }
    }

    async fn extend(&self, receipt: &str, visibility: Duration) -> Result<(), QueueError> {
        self.change_visibility(receipt, whole_seconds(visibility, 0, MAX_VISIBILITY_S))
            .await
    }

    async fn release(&self, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        self.change_visibility(receipt, whole_seconds(delay, 0, MAX_VISIBILITY_S))
            .await
    }

    async fn send(&self, body: &str) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| self.error(Op::Send, &e))?;
        Ok(())
    }

    async fn send_batch(&self, bodies: &[String]) -> Vec<Result<(), QueueError>> {
        let mut out = Vec::with_capacity(bodies.len());
        for chunk in bodies.chunks(SEND_BATCH) {
            let entries: Result<Vec<_>, _> = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                })
                .collect();
            let sent = match entries {
                Ok(entries) => self
                    .client
                    .send_message_batch()
                    .queue_url(&self.url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|e| self.error(Op::Send, &e)),
                Err(e) => Err(QueueError::Rejected {
                    queue: self.url.clone(),
                    reason: format!("batch entry: {e}"),
                }),
            };
            match sent {
                Err(e) => out.extend(chunk.iter().map(|_| Err(e.clone()))),
                Ok(output) => {
                    let mut results: Vec<Result<(), QueueError>> = vec![Ok(()); chunk.len()];
                    for failed in output.failed() {
                        let Some(slot) = failed
                            .id()
                            .parse::<usize>()
                            .ok()
                            .and_then(|i| results.get_mut(i))
                        else {
                            continue;
                        };
                        let reason = format!(
                            "{}: {}",
                            failed.code(),
                            failed.message().unwrap_or("refused")
                        );
                        // The sender's fault (a body SQS refuses) will not pass on a retry;
                        // anything else is the service's and may.
                        *slot = Err(if failed.sender_fault() {
                            QueueError::Rejected {
                                queue: self.url.clone(),
                                reason,
                            }
                        } else {
                            QueueError::Unavailable {
                                queue: self.url.clone(),
                                reason,
                            }
                        });
                    }
                    out.extend(results);
                }
            }
        }
        out
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| self.error(Op::Other, &e))?;
        let count = |name: QueueAttributeName| {
            output
                .attributes()
                .and_then(|a| a.get(&name))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        Ok(QueueDepth {
            visible: count(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }
}

impl SqsQueue {
    async fn change_visibility(&self, receipt: &str, seconds: i32) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(seconds)
            .send()
            .await
            .map_err(|e| self.error(Op::ChangeVisibility, &e))?;
        Ok(())
    }
}

/// Creates (or finds: CreateQueue with the same attributes is idempotent) queue `name` and its
/// dead-letter queue `{name}-dlq`, with a redrive policy that moves a message there once it
/// has been received `max_receive_count` times. Returns both URLs, the queue's first.
pub async fn create_queue_with_dlq(
    client: &Client,
    name: &str,
    max_receive_count: u32,
) -> Result<(String, String), QueueError> {
    let dlq_name = format!("{name}-dlq");
    let dlq_url = client
        .create_queue()
        .queue_name(&dlq_name)
        .send()
        .await
        .map_err(|e| map_error(&dlq_name, Op::Other, &e))?
        .queue_url
        .ok_or_else(|| QueueError::Rejected {
            queue: dlq_name.clone(),
            reason: "CreateQueue returned no queue URL".into(),
        })?;
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| map_error(&dlq_url, Op::Other, &e))?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| QueueError::Rejected {
            queue: dlq_url.clone(),
            reason: "GetQueueAttributes returned no QueueArn".into(),
        })?;
    let policy = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": max_receive_count.max(1).to_string(),
    });
    let url = client
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::RedrivePolicy, policy.to_string())
        .send()
        .await
        .map_err(|e| map_error(name, Op::Other, &e))?
        .queue_url
        .ok_or_else(|| QueueError::Rejected {
            queue: name.to_owned(),
            reason: "CreateQueue returned no queue URL".into(),
        })?;
    Ok((url, dlq_url))
}

/// `d` in whole seconds, rounded up (a deadline is never shorter than asked), within
/// `[min, max]`.
fn whole_seconds(d: Duration, min: u64, max: u64) -> i32 {
    let up = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    up.clamp(min, max) as i32
}

/// Which call failed: a receipt error means different things to different calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Receive,
    Send,
    Ack,
    ChangeVisibility,
    Other,
}

fn map_error<E>(queue: &str, op: Op, err: &SdkError<E>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let queue = queue.to_owned();
    let failure = aws::describe(err);
    let (code, status) = match failure.cause {
        Cause::Service { code, status } => (code, status),
        Cause::Transport => {
            return QueueError::Unavailable {
                queue,
                reason: failure.detail,
            }
        }
        Cause::Config => {
            return QueueError::Misconfigured {
                queue,
                reason: format!(
                    "the request could not be made (region, credentials or endpoint): {}",
                    failure.detail
                ),
            }
        }
    };
    let receipt_call = matches!(op, Op::Ack | Op::ChangeVisibility);
    match code.as_str() {
        "NonExistentQueue" | "QueueDoesNotExist" | "QueueDeletedRecently" => {
            QueueError::Misconfigured {
                queue,
                reason: format!("no such queue: {}", failure.detail),
            }
        }
        // The receipt is stale: the deadline passed (and the message may have been received
        // again), or the message was deleted. SQS says so with these codes, or with
        // InvalidParameterValue and a message about the receipt handle.
        "ReceiptHandleIsInvalid" | "MessageNotInflight" if receipt_call => {
            QueueError::ReceiptExpired { queue }
        }
        "InvalidParameterValue"
            if receipt_call && failure.detail.to_ascii_lowercase().contains("receipt") =>
        {
            QueueError::ReceiptExpired { queue }
        }
        code if aws::is_access_error(code, status) => QueueError::Misconfigured {
            queue,
            reason: format!(
                "access denied (check the credentials and the queue policy): {}",
                failure.detail
            ),
        },
        code if aws::is_transient_service_error(code, status) || code == "OverLimit" => {
            QueueError::Unavailable {
                queue,
                reason: failure.detail,
            }
        }
        // InvalidMessageContents, InvalidParameterValue (a body over the size limit),
        // UnsupportedOperation, and whatever else SQS refuses for this request.
        _ => QueueError::Rejected {
            queue,
            reason: failure.detail,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::ZERO, 0, 20), 0);
        assert_eq!(whole_seconds(Duration::ZERO, 1, 20), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1), 0, 20), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1500), 0, 20), 2);
        assert_eq!(whole_seconds(Duration::from_secs(2), 0, 20), 2);
        assert_eq!(whole_seconds(Duration::from_secs(60), 0, 20), 20);
        assert_eq!(
            whole_seconds(Duration::from_secs(u64::MAX), 0, MAX_VISIBILITY_S),
            43_200
        );
    }
}
