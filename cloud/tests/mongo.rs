//! `MongoMetadata` against a real MongoDB-wire server (SecantusDB): the metadata conformance
//! suite, index setup and the readiness check, round trips per commit, a server that stops and
//! comes back, racing workers, and a password rotated in Secrets Manager.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callpipe_cloud::mongo::{MongoMetadata, MongoSettings};
use callpipe_common::audio::Role;
use callpipe_common::ids::{CallId, Revision};
use callpipe_common::store::{
    conformance, CallRecord, CallStatus, Guard, MetadataStore, SearchFilter, SegmentDoc,
    SegmentKey, StoreError, VectorSet,
};
use callpipe_common::ErrorKind;
use mongodb::bson::doc;
use mongodb::event::command::CommandEvent;
use mongodb::event::EventHandler;

use support::mongo::MongoServer;
use support::moto::Moto;

/// How long an operation on a dead server may take to fail (server selection gives up after
/// 3 s; a read is retried once).
const FAIL_WITHIN: Duration = Duration::from_secs(10);

/// A database name no other test uses.
fn fresh_database(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{test}_{nanos}_{}", N.fetch_add(1, Ordering::Relaxed))
}

fn settings(server: &MongoServer, database: &str) -> MongoSettings {
    MongoSettings {
        uri: server.uri(),
        secret_arn: String::new(),
        database: database.to_owned(),
    }
}

async fn connect(server: &MongoServer, database: &str) -> MongoMetadata {
    MongoMetadata::connect(settings(server, database), None)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}\n{}", server.uri(), server.log_tail()))
}

/// A store with its indexes, on a fresh database.
async fn ready_store(server: &MongoServer, test: &str) -> MongoMetadata {
    let store = connect(server, &fresh_database(test)).await;
    store.ensure_indexes().await.expect("ensure indexes");
    store
}

fn pending(n: u32, revision: &str) -> CallRecord {
    let mut call = CallRecord::pending(
        CallId::from_source(&format!("s3://calls/mongo-test/{n}.wav")),
        Revision::new(revision),
        format!("s3://calls/mongo-test/{n}.wav"),
        1_704_067_200_000 + i64::from(n),
    );
    call.duration_s = 60.0;
    call.channels = vec![Role::Agent, Role::Customer];
    call
}

fn indexed(mut call: CallRecord, segments: usize) -> CallRecord {
    call.status = CallStatus::Indexed;
    call.indexed_revision = Some(call.revision.clone());
    call.segments = segments as u32;
    call
}

fn segments(call: &CallRecord, count: usize, text: &str) -> Vec<SegmentDoc> {
    (0..count)
        .map(|i| SegmentDoc {
            key: SegmentKey {
                call_id: call.call_id.clone(),
                revision: call.revision.clone(),
                channel: (i % 2) as u32,
                seq: (i / 2) as u32,
            },
            role: if i % 2 == 0 {
                Role::Agent
            } else {
                Role::Customer
            },
            start_s: i as f64 * 1.5,
            end_s: i as f64 * 1.5 + 1.0,
            text: format!("{text} {i}"),
            avg_logprob: -0.25,
        })
        .collect()
}

fn vectors(batch: &str, count: usize) -> VectorSet {
    VectorSet {
        batch: batch.to_owned(),
        ids: (0..count).map(|i| format!("{batch}-v{i}")).collect(),
    }
}

#[tokio::test]
async fn mongodb_passes_the_metadata_conformance_suite() {
    let server = MongoServer::start();
    let store = ready_store(&server, "conformance").await;
    store
        .check_ready()
        .await
        .expect("ready after ensure_indexes");
    conformance::metadata_store(&store).await;
}

#[tokio::test]
async fn mongodb_passes_the_job_conformance_suite() {
    let server = MongoServer::start();
    let store = ready_store(&server, "jobs").await;
    conformance::job_store(&store, &store).await;
}

#[tokio::test]
async fn indexes_are_created_idempotently_and_checked_before_use() {
    let server = MongoServer::start();
    let store = connect(&server, &fresh_database("indexes")).await;

    let err = store
        .check_ready()
        .await
        .expect_err("a database without indexes is not ready");
    let shown = err.to_string();
    assert!(
        shown.contains("run `callpipe setup`")
            && shown.contains("calls.by_recorded_at")
            && shown.contains("vector_batches.by_call"),
        "{shown}"
    );

    store.ensure_indexes().await.expect("ensure indexes");
    store.ensure_indexes().await.expect("ensure indexes again");
    store
        .check_ready()
        .await
        .expect("ready after ensure_indexes");
}

/// Every command the driver sends, by name, from the moment the test starts counting.
#[derive(Clone, Default)]
struct Commands(Arc<Mutex<Vec<String>>>);

impl Commands {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[tokio::test]
async fn a_commit_costs_the_same_few_round_trips_for_10_or_500_segments() {
    let server = MongoServer::start();
    let commands = Commands::default();
    let seen = commands.clone();
    let store = MongoMetadata::connect_with(
        settings(&server, &fresh_database("round_trips")),
        None,
        move |options| {
            let seen = seen.clone();
            options.command_event_handler =
                Some(EventHandler::callback(move |event: CommandEvent| {
                    if let CommandEvent::Started(started) = event {
                        seen.0.lock().unwrap().push(started.command_name);
                    }
                }));
        },
    )
    .await
    .expect("connect");
    store.ensure_indexes().await.expect("ensure indexes");

    // A first commit, then one that supersedes it (one more batch update), for each size.
    let mut counts = Vec::new();
    for (n, size) in [(1, 10), (2, 500)] {
        let mut per_commit = Vec::new();
        for (revision, batch) in [("r1", "first"), ("r2", "second")] {
            let call = pending(n, revision);
            let segs = segments(&call, size, "word");
            let set = vectors(&format!("{batch}-{n}"), size);
            commands.take();
            store
                .commit_call(&indexed(call, size), &segs, &set, &Guard::none())
                .await
                .expect("commit");
            per_commit.push(commands.take());
        }
        assert_eq!(
            store
                .count_segments(Some(&pending(n, "r2").call_id))
                .await
                .unwrap(),
            size as u64
        );
        counts.push(per_commit);
    }
    let [small, large] = [&counts[0], &counts[1]];
    for (which, (s, l)) in ["first", "superseding"]
        .iter()
        .zip(small.iter().zip(large.iter()))
    {
        assert_eq!(
            s.len(),
            l.len(),
            "a {which} commit of 10 segments sent {s:?}, of 500 {l:?}"
        );
        assert!(
            s.len() <= 8,
            "a {which} commit sent {} commands: {s:?}",
            s.len()
        );
        assert_eq!(
            s.last().map(String::as_str),
            Some("commitTransaction"),
            "{s:?}"
        );
    }
}

/// Expects `Unavailable` (kind transient) within [`FAIL_WITHIN`].
async fn expect_unavailable<T: std::fmt::Debug>(
    what: &str,
    op: impl std::future::Future<Output = Result<T, StoreError>>,
) {
    let started = Instant::now();
    let result = tokio::time::timeout(FAIL_WITHIN * 3, op)
        .await
        .unwrap_or_else(|_| panic!("{what} on a stopped server hangs"));
    let elapsed = started.elapsed();
    match result {
        Err(e @ StoreError::Unavailable { .. }) => {
            assert_eq!(e.kind(), ErrorKind::Transient, "{what}: {e}");
            assert!(
                elapsed < FAIL_WITHIN,
                "{what} took {elapsed:?} to fail: {e}"
            );
            assert!(e.to_string().contains("mongodb"), "{what}: {e}");
        }
        other => panic!("{what} on a stopped server must be Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stopped_server_is_unavailable_quickly_and_used_again_after_its_restart() {
    let mut server = MongoServer::start();
    let store = ready_store(&server, "restart").await;
    let call = pending(1, "r1");
    store.put_call(&call, &Guard::none()).await.expect("put");

    server.stop();
    let segs = segments(&call, 4, "hello");
    let committed = indexed(call.clone(), 4);
    let set = vectors("b1", 4);
    let (none, all) = (Guard::none(), SearchFilter::default());
    // All at once: each waits out server selection on its own.
    futures::join!(
        expect_unavailable("get_call", store.get_call(&call.call_id)),
        expect_unavailable("put_call", store.put_call(&call, &none)),
        expect_unavailable(
            "commit_call",
            store.commit_call(&committed, &segs, &set, &none)
        ),
        expect_unavailable("list_calls", store.list_calls(None, &all, 10)),
        expect_unavailable("count_segments", store.count_segments(None)),
    );

    // Same port and data, same client: the driver finds the server again on its own.
    server.start_again();
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        match store.get_call(&call.call_id).await {
            Ok(got) => break got,
            Err(e) if Instant::now() < deadline => {
                assert_eq!(e.kind(), ErrorKind::Transient, "while reconnecting: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no reconnect within 20 s of the restart: {e}"),
        }
    };
    assert_eq!(got.as_ref(), Some(&call), "the record survived the restart");
    store
        .commit_call(&committed, &segs, &set, &Guard::none())
        .await
        .expect("commit after the restart");
    assert_eq!(store.count_segments(Some(&call.call_id)).await.unwrap(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_two_racing_commits_the_newer_token_wins_in_either_order() {
    let server = MongoServer::start();
    let database = fresh_database("race");
    // Two clients, two connection pools: the race is decided on the server, as between
    // workers.
    let a = Arc::new(connect(&server, &database).await);
    a.ensure_indexes().await.expect("ensure indexes");
    let b = Arc::new(connect(&server, &database).await);
    let guard = |token: u64| Guard {
        token: Some(token),
        modified_ms: Some(1_000),
    };
    let mut older_won_first = 0;
    for round in 0..12u32 {
        let base = pending(100 + round, "r1");
        a.put_call(&base, &guard(5)).await.expect("put");
        let mut old = indexed(base.clone(), 3);
        old.asr_model = Some("older-worker".into());
        let mut new = indexed(base.clone(), 2);
        new.asr_model = Some("newer-worker".into());
        let old_segs = segments(&old, 3, "older");
        let new_segs = segments(&new, 2, "newer");
        let old_set = vectors(&format!("old-{round}"), 3);
        let new_set = vectors(&format!("new-{round}"), 2);

        // Rounds alternate which commit starts first; a few start them sequentially so both
        // orders are certainly seen.
        let run_old = {
            let (a, old, old_segs, old_set) =
                (a.clone(), old.clone(), old_segs.clone(), old_set.clone());
            async move { a.commit_call(&old, &old_segs, &old_set, &guard(10)).await }
        };
        let run_new = {
            let (b, new, new_segs, new_set) =
                (b.clone(), new.clone(), new_segs.clone(), new_set.clone());
            async move { b.commit_call(&new, &new_segs, &new_set, &guard(11)).await }
        };
        let (old_result, new_result) = match round {
            0 => {
                let o = run_old.await;
                (o, run_new.await)
            }
            1 => {
                let n = run_new.await;
                (run_old.await, n)
            }
            r if r % 2 == 0 => {
                let (o, n) = tokio::join!(tokio::spawn(run_old), tokio::spawn(run_new));
                (o.unwrap(), n.unwrap())
            }
            _ => {
                let (n, o) = tokio::join!(tokio::spawn(run_new), tokio::spawn(run_old));
                (o.unwrap(), n.unwrap())
            }
        };

        let superseded = new_result
            .unwrap_or_else(|e| panic!("round {round}: the newer token's commit failed: {e}"));
        match old_result {
            // The older commit went first, and the newer one replaced it.
            Ok(_) => {
                older_won_first += 1;
                assert_eq!(superseded, std::slice::from_ref(&old_set), "round {round}");
            }
            Err(e) => {
                assert!(
                    matches!(
                        e,
                        StoreError::Superseded {
                            newer_revision: false,
                            ..
                        }
                    ),
                    "round {round}: the older token is refused as superseded: {e}"
                );
                assert!(superseded.is_empty(), "round {round}: {superseded:?}");
            }
        }
        let got = b.get_call(&base.call_id).await.unwrap().expect("the call");
        assert_eq!(
            got.asr_model.as_deref(),
            Some("newer-worker"),
            "round {round}"
        );
        assert_eq!(got.segments, 2, "round {round}");
        let texts: Vec<String> = a
            .segments(&base.call_id)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.text)
            .collect();
        assert_eq!(texts, ["newer 0", "newer 1"], "round {round}");

        // A late put from the older worker is refused too, and changes nothing.
        let mut late = base.clone();
        late.status = CallStatus::Failed;
        let err = a
            .put_call(&late, &guard(10))
            .await
            .expect_err("an older token's put");
        assert!(
            matches!(
                err,
                StoreError::Superseded {
                    newer_revision: false,
                    ..
                }
            ),
            "round {round}: {err}"
        );
        let again = a.get_call(&base.call_id).await.unwrap().expect("the call");
        assert_eq!(again.status, CallStatus::Indexed, "round {round}");
    }
    assert!(
        (1..12).contains(&older_won_first),
        "both orders were exercised ({older_won_first} of 12 rounds had the older commit first)"
    );
}

#[tokio::test]
async fn a_rotated_password_is_read_again_from_the_secret() {
    let moto = Moto::start();
    let aws = moto.sdk_config().await;
    let mut server = MongoServer::start();
    let admin = mongodb::Client::with_uri_str(server.uri()).await.unwrap();
    admin
        .database("admin")
        .run_command(doc! { "createUser": "callpipe", "pwd": "first", "roles": ["root"] })
        .await
        .expect("create the user");
    drop(admin);
    server.require_auth();

    let secrets = aws_sdk_secretsmanager::Client::new(&aws);
    let secret = |password: &str| {
        serde_json::json!({ "uri": server.uri_with("callpipe", password) }).to_string()
    };
    let arn = secrets
        .create_secret()
        .name("callpipe/mongodb")
        .secret_string(secret("first"))
        .send()
        .await
        .expect("create the secret")
        .arn
        .expect("an arn");
    let store = MongoMetadata::connect(
        MongoSettings {
            uri: String::new(),
            secret_arn: arn.clone(),
            database: fresh_database("rotation"),
        },
        Some(&aws),
    )
    .await
    .unwrap_or_else(|e| panic!("connect through the secret: {e}\n{}", server.log_tail()));
    let call = pending(1, "r1");
    store.put_call(&call, &Guard::none()).await.expect("put");

    // Rotate: a new password on the server and in the secret.
    let rotating = mongodb::Client::with_uri_str(server.uri_with("callpipe", "first"))
        .await
        .unwrap();
    rotating
        .database("admin")
        .run_command(doc! { "updateUser": "callpipe", "pwd": "second" })
        .await
        .expect("change the password");
    drop(rotating);
    secrets
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(secret("second"))
        .send()
        .await
        .expect("rotate the secret");
    // Open connections stay authenticated; a restart makes the client log in again.
    server.start_again();

    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        match store.get_call(&call.call_id).await {
            Ok(got) => break got,
            Err(e) if Instant::now() < deadline && e.kind() == ErrorKind::Transient => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the rotated password was not picked up: {e}"),
        }
    };
    assert_eq!(got, Some(call.clone()));
    store
        .put_call(&call, &Guard::none())
        .await
        .expect("writes work with the new password");

    // The old password is refused for good, as the deployment's problem: only the re-read
    // secret can have made the store work again.
    let stale = MongoMetadata::connect(
        MongoSettings {
            uri: server.uri_with("callpipe", "first"),
            secret_arn: String::new(),
            database: fresh_database("rotation"),
        },
        None,
    )
    .await
    .expect_err("the old password");
    assert!(
        matches!(stale, StoreError::Denied { .. }),
        "a refused password is Denied: {stale}"
    );
    assert!(
        !stale.to_string().contains("first@"),
        "the password stays out of errors: {stale}"
    );
}
