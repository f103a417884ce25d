//! `RedisCoordination` against a real redis-server: the coordination conformance suite, racing
//! workers, a Redis that stops and comes back (fencing tokens included), passwords, and the
//! key prefix.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use callpipe_cloud::redis::{RedisCoordination, RedisSettings};
use callpipe_common::coord::{conformance, CoordError, Coordination};
use callpipe_common::ErrorKind;

use support::free_port;
use support::redis::RedisServer;

/// How long an operation on a dead Redis may take to fail (the command timeout is 2 s).
const FAIL_WITHIN: Duration = Duration::from_secs(5);

fn settings(server: &RedisServer) -> RedisSettings {
    RedisSettings {
        url: Some(server.url()),
        ..RedisSettings::default()
    }
}

async fn connect(server: &RedisServer) -> RedisCoordination {
    RedisCoordination::connect(settings(server))
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", server.url()))
}

#[tokio::test]
async fn redis_passes_the_conformance_suite() {
    let server = RedisServer::start();
    let redis = connect(&server).await;
    assert_eq!(redis.name(), server.url());
    conformance::coordination(&redis, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn of_two_racing_workers_exactly_one_wins() {
    let server = RedisServer::start();
    // Two clients, two connections: the race is decided on the server, as between workers.
    let a: Arc<dyn Coordination> = Arc::new(connect(&server).await);
    let b: Arc<dyn Coordination> = Arc::new(connect(&server).await);
    for round in 0..50 {
        let key = format!("race/{round}");
        let (ka, kb) = (key.clone(), key.clone());
        let (ca, cb) = (a.clone(), b.clone());
        let ta = tokio::spawn(async move { ca.acquire(&ka, Duration::from_secs(30)).await });
        let tb = tokio::spawn(async move { cb.acquire(&kb, Duration::from_secs(30)).await });
        let ra = ta.await.unwrap().expect("acquire a");
        let rb = tb.await.unwrap().expect("acquire b");
        let winner = match (ra, rb) {
            (Some(lease), None) | (None, Some(lease)) => lease,
            (ra, rb) => panic!("round {round}: exactly one must win, got {ra:?} and {rb:?}"),
        };
        // The loser's view: held by someone, and it can be taken once released.
        assert!(b.holds(&winner).await.unwrap() && a.holds(&winner).await.unwrap());
        a.release(&winner).await.unwrap();
        assert!(b
            .acquire(&key, Duration::from_secs(30))
            .await
            .unwrap()
            .is_some());
    }
}

/// Expects `Unavailable` (kind transient) within [`FAIL_WITHIN`].
async fn expect_unavailable<T: std::fmt::Debug>(
    what: &str,
    op: impl std::future::Future<Output = Result<T, CoordError>>,
) {
    let started = Instant::now();
    let result = tokio::time::timeout(FAIL_WITHIN * 2, op)
        .await
        .unwrap_or_else(|_| panic!("{what} on a stopped Redis hangs"));
    let elapsed = started.elapsed();
    match result {
        Err(e @ CoordError::Unavailable { .. }) => {
            assert_eq!(e.kind(), ErrorKind::Transient, "{what}: {e}");
            assert!(
                elapsed < FAIL_WITHIN,
                "{what} took {elapsed:?} to fail: {e}"
            );
        }
        other => panic!("{what} on a stopped Redis must be Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stopped_redis_is_unavailable_and_a_restarted_one_is_used_again() {
    let mut server = RedisServer::start();
    let redis = connect(&server).await;
    let ttl = Duration::from_secs(60);
    let before = redis.acquire("call/1", ttl).await.unwrap().expect("lease");
    redis.set_marker("done", ttl).await.unwrap();

    server.stop();
    // All at once: each waits out the command timeout on its own.
    futures::join!(
        expect_unavailable("acquire", redis.acquire("call/2", ttl)),
        expect_unavailable("renew", redis.renew(&before)),
        expect_unavailable("holds", redis.holds(&before)),
        expect_unavailable("release", redis.release(&before)),
        expect_unavailable("set_marker", redis.set_marker("m", ttl)),
        expect_unavailable("has_marker", redis.has_marker("done")),
        expect_unavailable("add", redis.add("c", 1, ttl)),
    );

    // Same port, same client: it reconnects on its own and reloads its scripts.
    server.start_again();
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        match redis.acquire("call/1", ttl).await {
            Ok(lease) => break lease,
            Err(e) if Instant::now() < deadline => {
                assert_eq!(e.kind(), ErrorKind::Transient, "while reconnecting: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no reconnect within 15 s of the restart: {e}"),
        }
    };
    let after = after.expect("the restart lost every lease, so the key is free");
    assert!(
        after.token > before.token,
        "fencing survives a restart that lost the fence counter: {} after {}",
        after.token,
        before.token
    );
    assert!(
        !redis.holds(&before).await.unwrap(),
        "the lease from before the restart is lost"
    );
    assert!(!redis.renew(&before).await.unwrap());
    assert!(
        !redis.has_marker("done").await.unwrap(),
        "no persistence: markers are gone"
    );
    assert_eq!(redis.add("c", 1, ttl).await.unwrap(), 1);
    // Everything else works again too.
    conformance::coordination(&redis, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn connecting_to_nothing_is_unavailable_quickly() {
    let port = free_port();
    let started = Instant::now();
    let result = RedisCoordination::connect(RedisSettings {
        url: Some(format!("redis://127.0.0.1:{port}")),
        ..RedisSettings::default()
    })
    .await;
    match result {
        Err(e @ CoordError::Unavailable { .. }) => {
            assert!(
                e.to_string().contains(&port.to_string()),
                "names the store: {e}"
            )
        }
        other => panic!("connect to a closed port must be Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < FAIL_WITHIN);
}

#[tokio::test]
async fn a_password_protected_redis_needs_the_password() {
    let password = "correct horse battery staple";
    let server = RedisServer::start_with_password(password);

    for (what, given) in [("no password", None), ("a wrong password", Some("wrong"))] {
        let started = Instant::now();
        let result = RedisCoordination::connect(RedisSettings {
            password: given.map(str::to_owned),
            ..settings(&server)
        })
        .await;
        match result {
            Err(e @ CoordError::Misconfigured { .. }) => {
                assert_eq!(e.kind(), ErrorKind::Environment, "{what}: {e}");
                assert!(
                    !e.to_string().contains(password),
                    "{what}: leaks the password: {e}"
                );
            }
            other => panic!("connect with {what} must be Misconfigured, got {other:?}"),
        }
        assert!(started.elapsed() < FAIL_WITHIN, "{what}: fails at once");
    }

    // The endpoint form, as a deployment configures it, with the password from the secret.
    let redis = RedisCoordination::connect(RedisSettings {
        url: None,
        endpoint: "127.0.0.1".to_owned(),
        port: server.port(),
        tls: false,
        password: Some(password.to_owned()),
        key_prefix: "callpipe:".to_owned(),
    })
    .await
    .expect("connect with the password");
    assert_eq!(redis.name(), server.url(), "the name has no credentials");
    assert!(!format!("{redis:?}").contains(password));
    let lease = redis
        .acquire("k", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("lease");
    assert!(redis.holds(&lease).await.unwrap());
}

#[tokio::test]
async fn tls_against_a_plaintext_server_fails_instead_of_hanging() {
    let server = RedisServer::start();
    let started = Instant::now();
    let result = RedisCoordination::connect(RedisSettings {
        url: None,
        endpoint: "127.0.0.1".to_owned(),
        port: server.port(),
        tls: true,
        ..RedisSettings::default()
    })
    .await;
    assert!(
        result.is_err(),
        "a TLS handshake with a plaintext server cannot succeed"
    );
    assert!(started.elapsed() < FAIL_WITHIN);
}

#[tokio::test]
async fn key_prefixes_keep_deployments_apart() {
    let server = RedisServer::start();
    let with_prefix = |prefix: &str| RedisSettings {
        key_prefix: prefix.to_owned(),
        ..settings(&server)
    };
    let staging = RedisCoordination::connect(with_prefix("staging:"))
        .await
        .unwrap();
    let prod = RedisCoordination::connect(with_prefix("prod:"))
        .await
        .unwrap();
    let ttl = Duration::from_secs(30);
    assert!(staging.acquire("call/1", ttl).await.unwrap().is_some());
    assert!(
        prod.acquire("call/1", ttl).await.unwrap().is_some(),
        "the same key under another prefix is another lease"
    );
    staging.set_marker("m", ttl).await.unwrap();
    assert!(!prod.has_marker("m").await.unwrap());
    assert_eq!(staging.add("c", 2, ttl).await.unwrap(), 2);
    assert_eq!(prod.add("c", 1, ttl).await.unwrap(), 1);
}
