//! S3 event notifications, as the ingest queue receives them, turned into the objects to ingest.
//!
//! A bucket configured to notify the ingest queue (SQS) on `s3:ObjectCreated:*` sends one of
//! three bodies, and this module reads all of them:
//! - the event itself, `{"Records":[{"eventName":"ObjectCreated:Put","s3":{...}}, ...]}`, one
//!   or more records per message;
//! - the same JSON as a string in an SNS envelope (`{"Type":"Notification","Message":"..."}`),
//!   when the bucket notifies a topic that the queue subscribes to without raw delivery;
//! - the `s3:TestEvent` S3 sends once when the notification is configured, which carries no
//!   object and is skipped.
//!
//! Records other than `ObjectCreated:*` (a delete, a restore) are reported as skipped, not as
//! errors, so that a bucket sending more events than ingest wants costs nothing but a log line.
//!
//! S3 writes object keys URL-encoded in form style (`+` for a space, `%XX` for UTF-8 bytes,
//! `/` included), so `a b+c.wav` arrives as `a+b%2Bc.wav`; [`decode_key`] undoes exactly that.
//!
//! [`is_notification`] tells these bodies from callpipe's own ingest message (which has `"v"`)
//! without building the events, so one queue can carry both.
//!
//! Everything here is pure parsing: no I/O, no clock.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

use callpipe_common::messages::SourceRef;
use callpipe_common::ErrorKind;

/// What one queue message asks ingest to do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Notification {
    /// The objects created, in the order of the records.
    pub created: Vec<S3Object>,
    /// Why other records (or the whole message) were passed over, one line each:
    /// `"s3:TestEvent"`, `"ObjectRemoved:Delete on s3://b/k"`.
    pub skipped: Vec<String>,
}

/// One created object, as the notification describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Object {
    pub bucket: String,
    /// The key as the uploader wrote it (decoded).
    pub key: String,
    pub size: Option<u64>,
    /// Without the quotes S3 puts around ETags elsewhere.
    pub etag: Option<String>,
    /// The version id, on a versioned bucket.
    pub version: Option<String>,
    /// When S3 saw the upload (ms since the epoch). This is the upload time, not the call's.
    pub event_time_ms: Option<i64>,
    /// S3's per-key ordering token: of two events for one key, the one with the greater
    /// sequencer (compared as hex strings of equal length) is the later.
    pub sequencer: Option<String>,
}

impl S3Object {
    /// `s3://bucket/key`, the key unescaped: the call's source URI.
    pub fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// The object as an ingest job names it. The event time is the upload's, so it orders
    /// revisions (`modified_ms`) but is not the call's time: ingest prefers the call time in
    /// the name or the object.
    pub fn source_ref(&self) -> SourceRef {
        SourceRef {
            uri: self.uri(),
            version: self.version.clone(),
            etag: self.etag.clone(),
            size: self.size,
            recorded_at_ms: None,
            modified_ms: self.event_time_ms,
        }
    }
}

/// Why a queue message is not a notification this module can read. Each message names the
/// part that was wrong, never the whole body (which may be large, and is in the queue anyway).
#[derive(Debug, thiserror::Error)]
pub enum S3EventError {
    #[error("S3 notification is not JSON: {source}")]
    NotJson {
        #[source]
        source: serde_json::Error,
    },

    /// Valid JSON, but neither S3 records, an SNS envelope nor a test event.
    #[error("not an S3 notification: {what}")]
    Shape { what: String },

    /// An SNS envelope that is not a notification (a subscription confirmation) or has no
    /// message in it.
    #[error("SNS envelope: {reason}")]
    Sns { reason: String },

    /// A record without a field that is needed, or with one of the wrong type.
    #[error("S3 notification record {index}: {reason}")]
    Record { index: usize, reason: String },

    #[error("S3 notification record {index}: key {key:?}: {source}")]
    Key {
        index: usize,
        key: String,
        #[source]
        source: KeyError,
    },
}

impl S3EventError {
    /// A message that cannot be read now never will be.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Permanent
    }
}

/// Why an encoded key could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// `%` not followed by two hex digits; `at` is the byte offset of the `%`.
    #[error("invalid %-escape at byte {at}")]
    InvalidEscape { at: usize },
    #[error("escapes do not decode to UTF-8")]
    NotUtf8,
}

impl KeyError {
    /// A key that does not decode will not decode on a retry.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Permanent
    }
}

/// Decodes a key the way S3 encodes it in notifications: `+` is a space, `%XX` a byte, and the
/// bytes are UTF-8. Every other character stands for itself.
pub fn decode_key(raw: &str) -> Result<String, KeyError> {
    // Nothing to undo is the common case: keep it a plain copy.
    if !raw.contains(['+', '%']) {
        return Ok(raw.to_owned());
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|&b| hex_value(b));
                let lo = bytes.get(i + 2).and_then(|&b| hex_value(b));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err(KeyError::InvalidEscape { at: i }),
                }
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| KeyError::NotUtf8)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether a queue body is an S3 notification (records, an SNS notification or a test event)
/// rather than callpipe's own ingest message. Only the three keys are read; nothing is built.
pub fn is_notification(body: &str) -> bool {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(rename = "Records")]
        records: Option<IgnoredAny>,
        #[serde(rename = "Type", borrow)]
        kind: Option<Cow<'a, str>>,
        #[serde(rename = "Event", borrow)]
        event: Option<Cow<'a, str>>,
    }
    serde_json::from_str::<Probe>(body).is_ok_and(|p| {
        p.records.is_some()
            || p.kind.as_deref() == Some("Notification")
            || p.event.as_deref() == Some(TEST_EVENT)
    })
}

const TEST_EVENT: &str = "s3:TestEvent";

/// Reads a queue message body: S3 records, the same inside an SNS envelope, or a test event.
pub fn parse_notification(body: &str) -> Result<Notification, S3EventError> {
    let value: Value =
        serde_json::from_str(body).map_err(|source| S3EventError::NotJson { source })?;
    parse_value(value, true)
}

fn parse_value(value: Value, allow_sns: bool) -> Result<Notification, S3EventError> {
    let Value::Object(mut top) = value else {
        return Err(S3EventError::Shape {
            what: format!("a JSON {}, not an object", json_type(&value)),
        });
    };
    if let Some(records) = top.remove("Records") {
        let Value::Array(records) = records else {
            return Err(S3EventError::Shape {
                what: format!("Records is a {}, not an array", json_type(&records)),
            });
        };
        let mut out = Notification::default();
        for (index, record) in records.into_iter().enumerate() {
            parse_record(index, record, &mut out)?;
        }
        return Ok(out);
    }
    if let Some(kind) = top.get("Type") {
        if !allow_sns {
            // S3 never wraps twice; a nested envelope is someone else's message.
            return Err(S3EventError::Sns {
                reason: "the Message is itself an SNS envelope".into(),
            });
        }
        if kind.as_str() != Some("Notification") {
            return Err(S3EventError::Sns {
                reason: format!("Type is {kind}, not \"Notification\""),
            });
        }
        let Some(Value::String(message)) = top.remove("Message") else {
            return Err(S3EventError::Sns {
                reason: "no Message string".into(),
            });
        };
        let inner: Value = serde_json::from_str(&message).map_err(|e| S3EventError::Sns {
            reason: format!("Message is not JSON: {e}"),
        })?;
        return parse_value(inner, false);
    }
    match top.get("Event").and_then(Value::as_str) {
        Some(TEST_EVENT) => Ok(Notification {
            created: Vec::new(),
            skipped: vec![TEST_EVENT.to_owned()],
        }),
        Some(other) => Err(S3EventError::Shape {
            what: format!("unknown Event {other:?}"),
        }),
        None => {
            // Name a few keys (sorted, whatever map serde_json was built with): enough to
            // recognise the message, never its contents.
            let mut keys: Vec<&str> = top.keys().map(String::as_str).collect();
            keys.sort_unstable();
            if keys.len() > 6 {
                keys.truncate(6);
                keys.push("...");
            }
            Err(S3EventError::Shape {
                what: format!(
                    "an object with keys [{}] and no Records, SNS Type or Event",
                    keys.join(", ")
                ),
            })
        }
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

// The record as S3 writes it, with only the fields ingest reads. Unknown fields are allowed on
// purpose: the format is S3's, and it adds fields (userIdentity, responseElements, ...).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    event_name: Option<String>,
    event_time: Option<String>,
    s3: Option<S3Entity>,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: Option<BucketEntity>,
    object: Option<ObjectEntity>,
}

#[derive(Deserialize)]
struct BucketEntity {
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectEntity {
    key: Option<String>,
    size: Option<u64>,
    e_tag: Option<String>,
    version_id: Option<String>,
    sequencer: Option<String>,
}

fn parse_record(index: usize, record: Value, out: &mut Notification) -> Result<(), S3EventError> {
    let record: Record = serde_json::from_value(record).map_err(|e| S3EventError::Record {
        index,
        reason: e.to_string(),
    })?;
    let missing = |what: &str| S3EventError::Record {
        index,
        reason: format!("no {what}"),
    };
    let event = record.event_name.ok_or_else(|| missing("eventName"))?;
    let s3 = record.s3;
    let bucket = s3
        .as_ref()
        .and_then(|s| s.bucket.as_ref())
        .and_then(|b| b.name.as_deref())
        .filter(|name| !name.is_empty());
    let object = s3.as_ref().and_then(|s| s.object.as_ref());
    let raw_key = object
        .and_then(|o| o.key.as_deref())
        .filter(|key| !key.is_empty());

    // S3 writes the name without the `s3:` of the configuration; accept both.
    let created = event
        .strip_prefix("s3:")
        .unwrap_or(&event)
        .starts_with("ObjectCreated:");
    if !created {
        // A record that is passed over needs no bucket or key; name them when they are there.
        let reason = match (bucket, raw_key) {
            (Some(bucket), Some(raw)) => {
                let key = decode_key(raw)
                    .map(Cow::Owned)
                    .unwrap_or(Cow::Borrowed(raw));
                format!("{event} on s3://{bucket}/{key}")
            }
            _ => event,
        };
        out.skipped.push(reason);
        return Ok(());
    }

    let bucket = bucket.ok_or_else(|| missing("s3.bucket.name"))?.to_owned();
    let raw_key = raw_key.ok_or_else(|| missing("s3.object.key"))?;
    let key = decode_key(raw_key).map_err(|source| S3EventError::Key {
        index,
        key: raw_key.to_owned(),
        source,
    })?;
    let object = object.expect("a key implies an object");
    let event_time_ms = record
        .event_time
        .as_deref()
        .and_then(|time| parse_event_time(index, time));
    out.created.push(S3Object {
        bucket,
        key,
        size: object.size,
        etag: object
            .e_tag
            .as_deref()
            .map(|tag| tag.trim_matches('"').to_owned())
            .filter(|tag| !tag.is_empty()),
        version: object.version_id.clone().filter(|v| !v.is_empty()),
        event_time_ms,
        sequencer: object.sequencer.clone().filter(|s| !s.is_empty()),
    });
    Ok(())
}

/// RFC 3339 as S3 writes it (`2024-06-01T12:00:00.123Z`), or the same without an offset, which
/// older moto releases wrote and which is UTC there too. An unreadable time is only logged: it
/// is informational, and losing it must not lose the recording.
fn parse_event_time(index: usize, time: &str) -> Option<i64> {
    if let Ok(ts) = time.parse::<jiff::Timestamp>() {
        return Some(ts.as_millisecond());
    }
    if let Ok(civil) = time.parse::<jiff::civil::DateTime>() {
        if let Ok(ts) = jiff::tz::Offset::UTC.to_timestamp(civil) {
            return Some(ts.as_millisecond());
        }
    }
    tracing::warn!(
        record = index,
        event_time = time,
        "S3 notification eventTime is not RFC 3339; ignored"
    );
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What moto 5.2.5 put on an SQS queue for `put_object(Key="a b+c.wav")` on bucket `calls`
    /// (received verbatim).
    const MOTO_PUT: &str = r#"{"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1", "eventTime": "2026-12-02T03:02:40.625Z", "eventName": "ObjectCreated:Put", "s3": {"s3SchemaVersion": "1.0", "configurationId": "NV9Fb9f11TYMezGFAPd7kbyOr3mwtxp2YmMFjI8tqSqQhdFlEH", "bucket": {"name": "calls", "arn": "arn:aws:s3:::calls"}, "object": {"key": "a+b%2Bc.wav", "size": 8, "eTag": "800831a7d9b11cd59cfdfa4acf2243d8"}}}]}"#;

    /// moto 5.2.5, key `2024/06/é/x.wav`: it encodes `/` too (Python's `quote_plus`).
    const MOTO_PUT_NESTED: &str = r#"{"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1", "eventTime": "2026-12-02T03:02:40.631Z", "eventName": "ObjectCreated:Put", "s3": {"s3SchemaVersion": "1.0", "configurationId": "NV9Fb9f11TYMezGFAPd7kbyOr3mwtxp2YmMFjI8tqSqQhdFlEH", "bucket": {"name": "calls", "arn": "arn:aws:s3:::calls"}, "object": {"key": "2024%2F06%2F%C3%A9%2Fx.wav", "size": 3, "eTag": "900150983cd24fb0d6963f7d28e17f72"}}}]}"#;

    /// moto 5.2.5, `delete_object(Key="a b+c.wav")`.
    const MOTO_DELETE: &str = r#"{"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1", "eventTime": "2026-12-02T03:02:40.636Z", "eventName": "ObjectRemoved:Delete", "s3": {"s3SchemaVersion": "1.0", "configurationId": "NV9Fb9f11TYMezGFAPd7kbyOr3mwtxp2YmMFjI8tqSqQhdFlEH", "bucket": {"name": "calls", "arn": "arn:aws:s3:::calls"}, "object": {"key": "a+b%2Bc.wav", "size": 8, "eTag": "800831a7d9b11cd59cfdfa4acf2243d8"}}}]}"#;

    /// moto 5.2.5's test event on the queue.
    const MOTO_TEST_EVENT: &str = r#"{"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-12-02T03:02:40.582Z", "Bucket": "calls"}"#;

    /// moto 5.2.5, the put of `a b+c.wav` through an SNS topic to an SQS subscription
    /// (Signature, SigningCertURL and UnsubscribeURL left out for length).
    const MOTO_SNS_PUT: &str = r#"{
  "Message": "{\"Records\": [{\"eventVersion\": \"2.1\", \"eventSource\": \"aws:s3\", \"awsRegion\": \"us-east-1\", \"eventTime\": \"2026-12-02T03:02:40.626Z\", \"eventName\": \"ObjectCreated:Put\", \"s3\": {\"s3SchemaVersion\": \"1.0\", \"configurationId\": \"tnrWnCUW4EFsOSwlqAcf4NoxhWApWULmJQ6v94O8rTrtCs8Zo0\", \"bucket\": {\"name\": \"calls\", \"arn\": \"arn:aws:s3:::calls\"}, \"object\": {\"key\": \"a+b%2Bc.wav\", \"size\": 8, \"eTag\": \"800831a7d9b11cd59cfdfa4acf2243d8\"}}}]}",
  "MessageId": "1f25bc5b-5394-4492-ab20-3ec6100e033d",
  "SignatureVersion": "2",
  "Timestamp": "2026-12-02T03:02:40.626Z",
  "TopicArn": "arn:aws:sns:us-east-1:123456789012:uploads",
  "Type": "Notification"
}"#;

    /// The shape of the AWS documentation's example (notification-content-structure), with a
    /// versioned object and a second record.
    const AWS_DOCS_TWO_RECORDS: &str = r#"{
  "Records": [
    {
      "eventVersion": "2.2",
      "eventSource": "aws:s3",
      "awsRegion": "us-west-2",
      "eventTime": "1970-01-01T00:00:00.000Z",
      "eventName": "ObjectCreated:Put",
      "userIdentity": {"principalId": "AIDAJDPLRKLG7UEXAMPLE"},
      "requestParameters": {"sourceIPAddress": "127.0.0.1"},
      "responseElements": {
        "x-amz-request-id": "C3D13FE58DE4C810",
        "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"
      },
      "s3": {
        "s3SchemaVersion": "1.0",
        "configurationId": "testConfigRule",
        "bucket": {
          "name": "amzn-s3-demo-bucket",
          "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
          "arn": "arn:aws:s3:::amzn-s3-demo-bucket"
        },
        "object": {
          "key": "HappyFace.jpg",
          "size": 1024,
          "eTag": "d41d8cd98f00b204e9800998ecf8427e",
          "versionId": "096fKKXTRTtl3on89fVO.nfljtsv6qko",
          "sequencer": "0055AED6DCD90281E5"
        }
      }
    },
    {
      "eventVersion": "2.2",
      "eventSource": "aws:s3",
      "eventTime": "2024-06-01T12:30:00.250Z",
      "eventName": "ObjectCreated:CompleteMultipartUpload",
      "s3": {
        "bucket": {"name": "amzn-s3-demo-bucket"},
        "object": {"key": "calls/2024-06-01/agent+7/%C3%A9t%C3%A9.wav", "size": 52428800,
                   "eTag": "\"5d1b8a4f0c9e-7\"", "sequencer": "0055AED6DCD90281E6"}
      }
    }
  ]
}"#;

    /// The AWS documentation's test event.
    const AWS_DOCS_TEST_EVENT: &str = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2014-10-13T15:57:02.089Z","Bucket":"amzn-s3-demo-bucket","RequestId":"5582815E1AEA5ADF","HostId":"8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE"}"#;

    fn ms(rfc3339: &str) -> i64 {
        rfc3339.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn moto_put_decodes_plus_and_escapes() {
        let n = parse_notification(MOTO_PUT).unwrap();
        assert!(n.skipped.is_empty());
        assert_eq!(
            n.created,
            vec![S3Object {
                bucket: "calls".into(),
                key: "a b+c.wav".into(),
                size: Some(8),
                etag: Some("800831a7d9b11cd59cfdfa4acf2243d8".into()),
                version: None,
                event_time_ms: Some(ms("2026-12-02T03:02:40.625Z")),
                sequencer: None,
            }]
        );
        assert_eq!(n.created[0].uri(), "s3://calls/a b+c.wav");
    }

    #[test]
    fn moto_nested_key_decodes_slashes_and_utf8() {
        let n = parse_notification(MOTO_PUT_NESTED).unwrap();
        assert_eq!(n.created.len(), 1);
        assert_eq!(n.created[0].key, "2024/06/é/x.wav");
        assert_eq!(n.created[0].uri(), "s3://calls/2024/06/é/x.wav");
    }

    #[test]
    fn sns_envelope_is_unwrapped() {
        let n = parse_notification(MOTO_SNS_PUT).unwrap();
        assert!(n.skipped.is_empty());
        assert_eq!(n.created.len(), 1);
        assert_eq!(n.created[0].uri(), "s3://calls/a b+c.wav");
        assert_eq!(
            n.created[0].event_time_ms,
            Some(ms("2026-12-02T03:02:40.626Z"))
        );
    }

    #[test]
    fn test_events_are_skipped() {
        for body in [MOTO_TEST_EVENT, AWS_DOCS_TEST_EVENT] {
            let n = parse_notification(body).unwrap();
            assert!(n.created.is_empty());
            assert_eq!(n.skipped, vec!["s3:TestEvent".to_owned()]);
        }
        // SNS delivers the test event in an envelope as well.
        let wrapped = serde_json::json!({"Type": "Notification", "Message": MOTO_TEST_EVENT});
        let n = parse_notification(&wrapped.to_string()).unwrap();
        assert_eq!(n.skipped, vec!["s3:TestEvent".to_owned()]);
    }

    #[test]
    fn other_events_are_skipped_with_their_name() {
        let n = parse_notification(MOTO_DELETE).unwrap();
        assert!(n.created.is_empty());
        assert_eq!(
            n.skipped,
            vec!["ObjectRemoved:Delete on s3://calls/a b+c.wav"]
        );
    }

    #[test]
    fn several_records_keep_their_order_and_fields() {
        let n = parse_notification(AWS_DOCS_TWO_RECORDS).unwrap();
        assert_eq!(n.created.len(), 2);
        let first = &n.created[0];
        assert_eq!(first.uri(), "s3://amzn-s3-demo-bucket/HappyFace.jpg");
        assert_eq!(first.size, Some(1024));
        assert_eq!(
            first.version.as_deref(),
            Some("096fKKXTRTtl3on89fVO.nfljtsv6qko")
        );
        assert_eq!(first.sequencer.as_deref(), Some("0055AED6DCD90281E5"));
        assert_eq!(first.event_time_ms, Some(0));
        let second = &n.created[1];
        assert_eq!(second.key, "calls/2024-06-01/agent 7/été.wav");
        assert_eq!(
            second.etag.as_deref(),
            Some("5d1b8a4f0c9e-7"),
            "quotes are stripped"
        );
        assert_eq!(second.version, None);
        assert_eq!(second.event_time_ms, Some(1_717_245_000_250));
    }

    #[test]
    fn mixed_records_split_into_created_and_skipped() {
        let body = serde_json::json!({"Records": [
            {"eventName": "ObjectRemoved:DeleteMarkerCreated",
             "s3": {"bucket": {"name": "b"}, "object": {"key": "old.wav"}}},
            {"eventName": "ObjectCreated:Copy",
             "s3": {"bucket": {"name": "b"}, "object": {"key": "new.wav"}}},
            {"eventName": "ObjectRestore:Completed"},
        ]});
        let n = parse_notification(&body.to_string()).unwrap();
        assert_eq!(n.created.len(), 1);
        assert_eq!(n.created[0].uri(), "s3://b/new.wav");
        assert_eq!(n.created[0].size, None);
        assert_eq!(n.created[0].event_time_ms, None);
        assert_eq!(
            n.skipped,
            vec![
                "ObjectRemoved:DeleteMarkerCreated on s3://b/old.wav",
                "ObjectRestore:Completed"
            ]
        );
    }

    #[test]
    fn event_time_without_offset_is_utc_and_garbage_is_dropped() {
        let record = |time: &str| {
            serde_json::json!({"Records": [{"eventName": "ObjectCreated:Put", "eventTime": time,
                "s3": {"bucket": {"name": "b"}, "object": {"key": "k"}}}]})
            .to_string()
        };
        let at = |time| parse_notification(&record(time)).unwrap().created[0].event_time_ms;
        // Older moto releases: local time without an offset, six fraction digits.
        assert_eq!(at("2024-06-01T12:30:00.250000"), Some(1_717_245_000_250));
        assert_eq!(at("2024-06-01T14:30:00.250+02:00"), Some(1_717_245_000_250));
        assert_eq!(at("yesterday"), None);
    }

    #[test]
    fn source_ref_carries_identity_not_upload_time() {
        let n = parse_notification(AWS_DOCS_TWO_RECORDS).unwrap();
        let source = n.created[0].source_ref();
        assert_eq!(source.uri, "s3://amzn-s3-demo-bucket/HappyFace.jpg");
        assert_eq!(
            source.version.as_deref(),
            Some("096fKKXTRTtl3on89fVO.nfljtsv6qko")
        );
        assert_eq!(
            source.etag.as_deref(),
            Some("d41d8cd98f00b204e9800998ecf8427e")
        );
        assert_eq!(source.size, Some(1024));
        assert_eq!(source.recorded_at_ms, None);
    }

    #[test]
    fn errors_name_what_was_wrong() {
        let err = |body: &str| parse_notification(body).unwrap_err().to_string();
        assert!(err("not json").contains("not JSON"), "{}", err("not json"));
        assert!(err("[1,2]").contains("a JSON array"));
        let other = err(r#"{"v":1,"source":{"uri":"s3://b/k"},"lane":"batch"}"#);
        assert!(
            other.contains("keys [lane, source, v] and no Records"),
            "{other}"
        );
        assert!(err(r#"{"Records":{}}"#).contains("Records is a object"));
        assert!(err(r#"{"Event":"s3:Other"}"#).contains("unknown Event \"s3:Other\""));
        assert!(err(r#"{"Type":"SubscriptionConfirmation","Message":"x"}"#)
            .contains("SubscriptionConfirmation"));
        assert!(err(r#"{"Type":"Notification"}"#).contains("no Message"));
        assert!(err(r#"{"Type":"Notification","Message":"hello"}"#).contains("not JSON"));
        let nested = serde_json::json!({"Type": "Notification",
            "Message": serde_json::json!({"Type": "Notification", "Message": "{}"}).to_string()});
        assert!(err(&nested.to_string()).contains("itself an SNS envelope"));

        let one = |record: Value| err(&serde_json::json!({"Records": [record]}).to_string());
        assert_eq!(
            one(serde_json::json!({"eventName": "ObjectCreated:Put",
                "s3": {"object": {"key": "k"}}})),
            "S3 notification record 0: no s3.bucket.name"
        );
        assert_eq!(
            one(serde_json::json!({"eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "b"}, "object": {}}})),
            "S3 notification record 0: no s3.object.key"
        );
        assert_eq!(
            one(serde_json::json!({"s3": {}})),
            "S3 notification record 0: no eventName"
        );
        assert!(one(serde_json::json!({"eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "b"}, "object": {"key": "k", "size": "big"}}}))
        .starts_with("S3 notification record 0: invalid type: string \"big\""));
        assert_eq!(
            one(serde_json::json!({"eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "b"}, "object": {"key": "a%2"}}})),
            "S3 notification record 0: key \"a%2\": invalid %-escape at byte 1"
        );
        let e = parse_notification("{").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Permanent);
    }

    #[test]
    fn notifications_are_told_from_ingest_messages() {
        for body in [
            MOTO_PUT,
            MOTO_SNS_PUT,
            MOTO_TEST_EVENT,
            AWS_DOCS_TWO_RECORDS,
        ] {
            assert!(is_notification(body), "{body}");
        }
        for body in [
            r#"{"v":1,"source":{"uri":"s3://b/k"},"lane":"batch"}"#,
            r#"{"Type":"SubscriptionConfirmation"}"#,
            r#"{"Event":"s3:Other"}"#,
            "[]",
            "",
            "Records",
        ] {
            assert!(!is_notification(body), "{body}");
        }
    }

    #[test]
    fn key_decoding_table() {
        let ok = [
            ("plain.wav", "plain.wav"),
            ("a+b%2Bc.wav", "a b+c.wav"),
            ("%C3%A9t%C3%A9", "été"),
            ("%c3%a9", "é"),
            ("100%25", "100%"),
            ("%2F%2f", "//"),
            ("++", "  "),
            ("été raw", "été raw"),
            ("", ""),
        ];
        for (raw, want) in ok {
            assert_eq!(decode_key(raw).as_deref(), Ok(want), "{raw}");
        }
        let bad = [
            ("%", KeyError::InvalidEscape { at: 0 }),
            ("a%2", KeyError::InvalidEscape { at: 1 }),
            ("a%zz", KeyError::InvalidEscape { at: 1 }),
            ("ab%+1", KeyError::InvalidEscape { at: 2 }),
            ("%C3", KeyError::NotUtf8),
            ("%FF%FE", KeyError::NotUtf8),
        ];
        for (raw, want) in bad {
            assert_eq!(decode_key(raw), Err(want), "{raw}");
        }
    }

    /// Encodes like S3 (and Python's `quote_plus`): unreserved ASCII as is, space as `+`,
    /// every other byte as `%XX`.
    fn s3_encode(key: &str, lower_hex: bool) -> String {
        let mut out = String::new();
        for &b in key.as_bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    out.push(b as char)
                }
                b' ' => out.push('+'),
                _ if lower_hex => out.push_str(&format!("%{b:02x}")),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }

    proptest! {
        #[test]
        fn decode_inverts_s3_encoding(key in "\\PC{0,40}", lower in any::<bool>()) {
            prop_assert_eq!(decode_key(&s3_encode(&key, lower)), Ok(key));
        }

        #[test]
        fn decode_never_panics(raw in "[%+a-fA-F0-9zé/ ]{0,24}") {
            let _ = decode_key(&raw);
        }
    }
}
