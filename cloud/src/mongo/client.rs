//! The driver client behind the store: built from the connection string, rebuilt when a
//! rotated password makes the old one fail authentication.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use callpipe_common::config::redact_url;
use callpipe_common::store::StoreError;
use mongodb::bson::{doc, Document};
use mongodb::options::{ClientOptions, WriteConcern};
use mongodb::{Client, Collection, Database};

use super::docs::{BatchRow, SegmentRow, BACKFILL_JOBS, CALLS, SEGMENTS, VECTOR_BATCHES};
use super::error::{describe, is_authentication_failure, Failure};
use super::{MongoSettings, BACKEND};
use crate::secrets::{read_secret, secret_field, SecretError};

/// How long the driver looks for a usable server before an operation fails: a dead or
/// unreachable server is a quick `Unavailable`, not a hang.
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one TCP connect plus TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The bound on a whole operation, retries included: a server that accepts a request and never
/// answers it (the driver sets no socket timeout) still frees the caller.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Re-reads of the secret after authentication failures are at most this often, so a wrong
/// password does not turn every failed operation into a Secrets Manager call.
const REREAD_INTERVAL: Duration = Duration::from_secs(30);
/// The fields of a JSON secret that may hold the connection string, in order of preference.
const URI_FIELDS: &[&str] = &["uri", "connection_string", "connectionString", "url"];

/// Applied to the driver's options of every client built, the first and those rebuilt after a
/// rotation: command monitoring, pool sizes.
pub(super) type Adjust = Arc<dyn Fn(&mut ClientOptions) + Send + Sync>;

/// One client and the collections on it.
#[derive(Debug)]
pub(super) struct Handles {
    pub client: Client,
    pub db: Database,
    pub calls: Collection<Document>,
    pub segments: Collection<SegmentRow>,
    pub batches: Collection<BatchRow>,
    pub jobs: Collection<Document>,
}

/// The current client, and what it takes to build a new one.
pub(super) struct Connection {
    settings: MongoSettings,
    aws: Option<SdkConfig>,
    adjust: Adjust,
    /// Swapped whole when the secret is re-read; operations in flight keep the client they
    /// started with.
    current: RwLock<Arc<Handles>>,
    /// When the secret was last re-read after an authentication failure. Held across the
    /// re-read, so concurrent failures wait for one re-read instead of each making their own.
    reread: tokio::sync::Mutex<Option<Instant>>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Reads the connection string, builds the client and checks that the server answers and
    /// takes the credentials.
    pub async fn open(
        settings: MongoSettings,
        aws: Option<SdkConfig>,
        adjust: Adjust,
    ) -> Result<Connection, StoreError> {
        let what = format!("database {}", settings.database);
        let handles = bounded(&what, async {
            let uri = connection_string(&settings, aws.as_ref()).await?;
            let handles = build(&uri, &settings.database, &adjust).await?;
            ping(&handles).await?;
            Ok(handles)
        })
        .await?;
        Ok(Connection {
            settings,
            aws,
            adjust,
            current: RwLock::new(Arc::new(handles)),
            reread: tokio::sync::Mutex::new(None),
        })
    }

    pub fn database(&self) -> &str {
        &self.settings.database
    }

    fn current(&self) -> Arc<Handles> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Runs `op` on the current client. After an authentication failure, when the connection
    /// string comes from a secret, the secret is read again and `op` runs once more on a client
    /// built from it. `what` names the operation and call in the error.
    pub async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T, StoreError>
    where
        F: Fn(Arc<Handles>) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        bounded(what, async {
            let handles = self.current();
            match op(handles.clone()).await {
                Err(Failure::Driver(e))
                    if is_authentication_failure(&e) && !self.settings.secret_arn.is_empty() =>
                {
                    match self.rebuild(&handles).await? {
                        Some(fresh) => op(fresh).await,
                        None => Err(Failure::Driver(e)),
                    }
                }
                other => other,
            }
        })
        .await
    }

    /// A client built from a fresh read of the secret, or the one another operation built
    /// since `failed` failed; `None` when the secret was re-read too recently to try again.
    async fn rebuild(&self, failed: &Arc<Handles>) -> Result<Option<Arc<Handles>>, Failure> {
        let mut last = self.reread.lock().await;
        let current = self.current();
        if !Arc::ptr_eq(&current, failed) {
            return Ok(Some(current));
        }
        if last.is_some_and(|at| at.elapsed() < REREAD_INTERVAL) {
            return Ok(None);
        }
        *last = Some(Instant::now());
        tracing::info!(
            secret_arn = %self.settings.secret_arn,
            database = %self.settings.database,
            "mongodb refused the credentials; reading the connection string again"
        );
        let uri = connection_string(&self.settings, self.aws.as_ref()).await?;
        let fresh = Arc::new(build(&uri, &self.settings.database, &self.adjust).await?);
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh.clone();
        Ok(Some(fresh))
    }
}

/// Runs `op` within [`OPERATION_TIMEOUT`] and names its failure with `what`.
async fn bounded<T>(
    what: &str,
    op: impl Future<Output = Result<T, Failure>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(OPERATION_TIMEOUT, op).await {
        Ok(result) => result.map_err(|f| f.into_store(what)),
        Err(_) => Err(StoreError::Unavailable {
            backend: BACKEND,
            what: what.to_owned(),
            reason: format!("no answer within {OPERATION_TIMEOUT:?}"),
        }),
    }
}

async fn ping(handles: &Handles) -> Result<(), Failure> {
    handles.db.run_command(doc! { "ping": 1 }).await?;
    Ok(())
}

/// The connection string: `uri` as configured, or the secret `secret_arn` (a plain string, or
/// a JSON object with one of [`URI_FIELDS`]).
async fn connection_string(
    settings: &MongoSettings,
    aws: Option<&SdkConfig>,
) -> Result<String, Failure> {
    let denied = |reason: String| {
        Failure::Store(StoreError::Denied {
            backend: BACKEND,
            what: "connection string".into(),
            reason,
        })
    };
    match (settings.uri.is_empty(), settings.secret_arn.is_empty()) {
        (false, true) => return Ok(settings.uri.clone()),
        (true, true) => {
            return Err(denied(
                "neither mongodb.uri nor mongodb.secret_arn is set".into(),
            ))
        }
        (false, false) => {
            return Err(denied(
                "mongodb.uri and mongodb.secret_arn are both set; keep one".into(),
            ))
        }
        (true, false) => {}
    }
    let arn = &settings.secret_arn;
    let Some(aws) = aws else {
        return Err(denied(format!(
            "mongodb.secret_arn {arn} needs an AWS configuration to read it"
        )));
    };
    let secret = read_secret(aws, arn).await.map_err(|e| {
        let reason = e.to_string();
        Failure::Store(match e {
            SecretError::Unavailable { .. } => StoreError::Unavailable {
                backend: BACKEND,
                what: format!("connection string from {arn}"),
                reason,
            },
            _ => StoreError::Denied {
                backend: BACKEND,
                what: format!("connection string from {arn}"),
                reason,
            },
        })
    })?;
    URI_FIELDS
        .iter()
        .find_map(|field| secret_field(&secret, field))
        .map(|uri| uri.trim().to_owned())
        .ok_or_else(|| {
            denied(format!(
                "secret {arn} is a JSON object without a connection string (fields {})",
                URI_FIELDS.join(", ")
            ))
        })
}

/// A client for `uri` with callpipe's defaults where the URI sets nothing: short timeouts,
/// majority writes.
async fn build(uri: &str, database: &str, adjust: &Adjust) -> Result<Handles, Failure> {
    let mut options = ClientOptions::parse(uri).await.map_err(|e| {
        Failure::Store(StoreError::Denied {
            backend: BACKEND,
            what: format!("connection string {}", redact_url(uri)),
            reason: scrub(&describe(&e), uri),
        })
    })?;
    options
        .server_selection_timeout
        .get_or_insert(SERVER_SELECTION_TIMEOUT);
    options.connect_timeout.get_or_insert(CONNECT_TIMEOUT);
    options
        .app_name
        .get_or_insert_with(|| "callpipe".to_owned());
    // A commit acknowledged by one node of a replica set can be rolled back by a failover;
    // the pipeline deletes its message once the commit returns.
    options
        .write_concern
        .get_or_insert_with(WriteConcern::majority);
    adjust(&mut options);
    let client = Client::with_options(options)?;
    let db = client.database(database);
    Ok(Handles {
        calls: db.collection(CALLS),
        segments: db.collection(SEGMENTS),
        batches: db.collection(VECTOR_BATCHES),
        jobs: db.collection(BACKFILL_JOBS),
        db,
        client,
    })
}

/// `message` without the password of `uri`, should the driver quote it.
fn scrub(message: &str, uri: &str) -> String {
    let password = uri
        .split_once("://")
        .and_then(|(_, rest)| rest.rsplit_once('@'))
        .and_then(|(user_info, _)| user_info.split_once(':'))
        .map(|(_, password)| password)
        .filter(|p| !p.is_empty());
    match password {
        Some(p) => message.replace(p, "***"),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(uri: &str, secret_arn: &str) -> MongoSettings {
        MongoSettings {
            uri: uri.into(),
            secret_arn: secret_arn.into(),
            database: "callpipe".into(),
        }
    }

    #[tokio::test]
    async fn exactly_one_source_of_the_connection_string() {
        let uri = connection_string(&settings("mongodb://h/", ""), None)
            .await
            .unwrap();
        assert_eq!(uri, "mongodb://h/");
        for (uri, arn) in [("", ""), ("mongodb://h/", "arn:x"), ("", "arn:x")] {
            let err = connection_string(&settings(uri, arn), None)
                .await
                .expect_err("refused")
                .into_store("x");
            assert_eq!(err.kind(), callpipe_common::ErrorKind::Environment, "{err}");
        }
    }

    #[test]
    fn passwords_are_scrubbed_from_messages() {
        let uri = "mongodb://user:hunter2@h:27017/?tls=true";
        assert_eq!(scrub("bad hunter2 here", uri), "bad *** here");
        assert_eq!(scrub("plain", "mongodb://h/"), "plain");
    }
}
