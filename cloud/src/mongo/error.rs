//! What a failed driver call means for the caller: try again, fix the deployment, or give up.

use callpipe_common::store::StoreError;
use mongodb::error::{
    Error as DriverError, ErrorKind as DriverErrorKind, WriteFailure, RETRYABLE_WRITE_ERROR,
    TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT,
};

use super::BACKEND;

/// Server codes for a node that cannot serve right now: stepping down, shutting down, not the
/// primary, timed out, or a transaction that lost a conflict (the SDAM and retryable-writes
/// specifications' lists, plus lock and rate-limit codes).
const TRANSIENT_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    24,    // LockTimeout
    46,    // LockBusy
    50,    // MaxTimeMSExpired
    64,    // WriteConcernFailed (wtimeout)
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    112,   // WriteConflict
    133,   // FailedToSatisfyReadPreference
    189,   // PrimarySteppedDown
    202,   // NetworkInterfaceExceededTimeLimit
    216,   // ElectionInProgress
    251,   // NoSuchTransaction
    262,   // ExceededTimeLimit
    462,   // IngressRequestRateLimitExceeded
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
    16500, // RequestRateTooLarge (throttled)
];

/// Server codes for credentials or permissions: the deployment's problem, not the call's.
const DENIED_CODES: &[i32] = &[
    11,   // UserNotFound
    13,   // Unauthorized
    18,   // AuthenticationFailed
    8000, // AtlasError: Atlas's refusals of an action to this user or tier
];

/// `AuthenticationFailed`: the password is wrong, perhaps rotated since it was read.
const AUTHENTICATION_FAILED: i32 = 18;

/// Duplicate key: another writer inserted the same `_id` first.
pub(super) const DUPLICATE_KEY: i32 = 11000;

/// Why an operation failed, before it is named for the caller.
#[derive(Debug)]
pub(super) enum Failure {
    /// The driver or the server refused.
    Driver(DriverError),
    /// The call's guard refused the write.
    Refused {
        newer_revision: bool,
        reason: String,
    },
    /// Another writer changed the call between this one's read and its conditional write; the
    /// operation starts again from the read.
    LostRace,
    /// A document without the layout this module writes, or a value it cannot store.
    Malformed(String),
    /// Already a public error (a secret that could not be read, a refused request).
    Store(StoreError),
}

impl From<DriverError> for Failure {
    fn from(e: DriverError) -> Self {
        Failure::Driver(e)
    }
}

impl Failure {
    /// Names the failure for the caller: `what` says which operation on which call.
    pub(super) fn into_store(self, what: &str) -> StoreError {
        let what = what.to_owned();
        match self {
            Failure::Driver(e) => driver_error(what, &e),
            Failure::Refused {
                newer_revision,
                reason,
            } => StoreError::Superseded {
                backend: BACKEND,
                what,
                reason,
                newer_revision,
            },
            Failure::LostRace => StoreError::Unavailable {
                backend: BACKEND,
                what,
                reason: "other writers kept changing the call; try again".into(),
            },
            Failure::Malformed(reason) => StoreError::Failed {
                backend: BACKEND,
                what,
                reason,
            },
            Failure::Store(e) => e,
        }
    }
}

/// Whether a server or driver error says the credentials were refused, so that a re-read of
/// the connection string (a rotated password) may fix it.
pub(super) fn is_authentication_failure(e: &DriverError) -> bool {
    matches!(*e.kind, DriverErrorKind::Authentication { .. })
        || server_code(e) == Some(AUTHENTICATION_FAILED)
}

/// Whether the whole transaction may be run again (a write conflict, a failover).
pub(super) fn is_transient_transaction_error(e: &DriverError) -> bool {
    e.contains_label(TRANSIENT_TRANSACTION_ERROR)
}

/// The server's error code, whether it came as a command error or a write error.
pub(super) fn server_code(e: &DriverError) -> Option<i32> {
    match &*e.kind {
        DriverErrorKind::Command(c) => Some(c.code),
        DriverErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        DriverErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
        DriverErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .and_then(|w| w.first())
            .map(|w| w.code)
            .or_else(|| m.write_concern_error.as_ref().map(|w| w.code)),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Unavailable,
    Denied,
    Failed,
}

fn classify(e: &DriverError) -> Class {
    if is_authentication_failure(e) {
        return Class::Denied;
    }
    if [
        RETRYABLE_WRITE_ERROR,
        TRANSIENT_TRANSACTION_ERROR,
        UNKNOWN_TRANSACTION_COMMIT_RESULT,
    ]
    .iter()
    .any(|label| e.contains_label(label))
    {
        return Class::Unavailable;
    }
    match &*e.kind {
        DriverErrorKind::Io(_)
        | DriverErrorKind::ConnectionPoolCleared { .. }
        | DriverErrorKind::ServerSelection { .. }
        | DriverErrorKind::DnsResolve { .. }
        | DriverErrorKind::Shutdown => Class::Unavailable,
        // The server cannot do what this module needs (sessions, transactions), or TLS is set
        // up wrong: the deployment's to fix.
        DriverErrorKind::InvalidTlsConfig { .. }
        | DriverErrorKind::IncompatibleServer { .. }
        | DriverErrorKind::SessionsNotSupported => Class::Denied,
        _ => match server_code(e) {
            Some(code) if TRANSIENT_CODES.contains(&code) => Class::Unavailable,
            Some(code) if DENIED_CODES.contains(&code) => Class::Denied,
            _ => Class::Failed,
        },
    }
}

/// One line about a driver error: the server's message and code where there is one, without
/// the driver's dump of the raw reply.
pub(super) fn describe(e: &DriverError) -> String {
    let text = match &*e.kind {
        DriverErrorKind::Write(WriteFailure::WriteError(w)) => {
            format!("{} (code {})", w.message, w.code)
        }
        DriverErrorKind::Write(WriteFailure::WriteConcernError(w)) => {
            format!("write concern: {} (code {})", w.message, w.code)
        }
        DriverErrorKind::InsertMany(m) => match (&m.write_errors, &m.write_concern_error) {
            (Some(errors), _) if !errors.is_empty() => {
                format!("{} (code {})", errors[0].message, errors[0].code)
            }
            (_, Some(w)) => format!("write concern: {} (code {})", w.message, w.code),
            _ => e.kind.to_string(),
        },
        kind => kind.to_string(),
    };
    // A server-selection error describes the whole topology; the head says enough.
    const MAX: usize = 600;
    if text.len() <= MAX {
        return text;
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn driver_error(what: String, e: &DriverError) -> StoreError {
    let reason = describe(e);
    match classify(e) {
        Class::Unavailable => StoreError::Unavailable {
            backend: BACKEND,
            what,
            reason,
        },
        Class::Denied => StoreError::Denied {
            backend: BACKEND,
            what,
            reason,
        },
        Class::Failed => StoreError::Failed {
            backend: BACKEND,
            what,
            reason,
        },
    }
}

#[cfg(test)]
mod tests {
    use callpipe_common::ErrorKind;

    use super::*;

    fn command_error(code: i32, name: &str) -> DriverError {
        // The driver builds these from a server reply; a reply is the public way to get one.
        let reply = mongodb::bson::doc! { "code": code, "codeName": name, "errmsg": "boom" };
        let command: mongodb::error::CommandError =
            mongodb::bson::from_document(reply).expect("a command error");
        DriverError::from(DriverErrorKind::Command(command))
    }

    fn kind_of(e: DriverError) -> ErrorKind {
        Failure::Driver(e).into_store("commit of call c1").kind()
    }

    #[test]
    fn errors_are_classed_by_whose_fault_they_are() {
        let io = DriverError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(kind_of(io), ErrorKind::Transient);
        assert_eq!(
            kind_of(command_error(10107, "NotWritablePrimary")),
            ErrorKind::Transient
        );
        assert_eq!(
            kind_of(command_error(112, "WriteConflict")),
            ErrorKind::Transient
        );
        let auth = command_error(18, "AuthenticationFailed");
        assert!(is_authentication_failure(&auth));
        assert_eq!(kind_of(auth), ErrorKind::Environment);
        assert_eq!(
            kind_of(command_error(13, "Unauthorized")),
            ErrorKind::Environment
        );
        assert_eq!(kind_of(command_error(2, "BadValue")), ErrorKind::Permanent);
    }

    #[test]
    fn a_failure_names_the_operation_and_call() {
        let e =
            Failure::Driver(command_error(11000, "DuplicateKey")).into_store("commit of call c1");
        let shown = e.to_string();
        assert!(
            shown.contains("mongodb") && shown.contains("call c1") && shown.contains("11000"),
            "{shown}"
        );
        let refused = Failure::Refused {
            newer_revision: true,
            reason: "older".into(),
        }
        .into_store("put of call c1");
        assert!(refused.is_newer_revision());
    }
}
