//! The coordination conformance suite, run against [`super::InProcessCoordination`] and Redis.
//!
//! One suite, one time scale: every wait is a multiple of the `ttl` the backend runs it with
//! (300 ms suits both a local Redis, which counts in milliseconds, and the in-process store
//! under paused time). Each assertion message names the rule it checks.
//!
//! Keys carry a per-run suffix, so the suite may run twice against the same store; they also
//! contain `/`, `:`, spaces and non-ASCII text, which every backend must keep intact.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use tokio::time::{sleep, sleep_until, Instant};

use super::{Coordination, Lease};

/// How many acquires of one key race in the "exactly one wins" rule.
const RACERS: usize = 16;

/// A prefix no earlier run of the suite used, in this process or another one.
fn run_prefix() -> String {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    format!("conformance/{nanos}-{run}/call 1:rev 2/ünï ☎")
}

/// Leases (exclusion, independence, renew, release, expiry, fencing), markers and counters.
///
/// `ttl` is the short time-to-live the suite waits out; the suite takes about `8 * ttl`.
pub async fn coordination(c: &dyn Coordination, ttl: Duration) {
    let base = run_prefix();
    leases(c, &format!("{base}/lease"), ttl).await;
    expired_leases(c, &format!("{base}/expiry"), ttl).await;
    racing_acquires(c, &format!("{base}/race"), ttl).await;
    markers(c, &format!("{base}/marker"), ttl).await;
    counters(c, &format!("{base}/counter"), ttl).await;
    namespaces(c, &format!("{base}/shared"), ttl).await;
    admission(c, &format!("{base}/admission"), ttl).await;
    racing_admissions(c, &format!("{base}/admission-race"), ttl).await;
}

async fn acquire(c: &dyn Coordination, key: &str, ttl: Duration) -> Option<Lease> {
    c.acquire(key, ttl).await.expect("acquire")
}

async fn leases(c: &dyn Coordination, key: &str, ttl: Duration) {
    let long = ttl * 20;
    let first = acquire(c, key, long)
        .await
        .expect("rule: acquire on a free key gives a lease");
    assert_eq!(
        (first.key.as_str(), first.ttl),
        (key, long),
        "rule: a lease names the key and ttl it was taken with"
    );
    assert!(
        c.holds(&first).await.expect("holds"),
        "rule: a fresh lease is held"
    );
    assert!(
        acquire(c, key, long).await.is_none(),
        "rule: a second acquire of a held key gives None"
    );
    let other = acquire(c, &format!("{key}/other"), long)
        .await
        .expect("rule: leases on other keys are independent");
    assert!(
        c.holds(&first).await.expect("holds"),
        "rule: taking another key leaves the first lease held"
    );
    c.release(&other).await.expect("release");

    // Renew: a lease with a short ttl, renewed every third of it, outlives the ttl twice over.
    let short = acquire(c, &format!("{key}/renewed"), ttl)
        .await
        .expect("rule: acquire on a free key gives a lease");
    let until = Instant::now() + ttl * 2 + ttl / 2;
    while Instant::now() < until {
        sleep(ttl / 3).await;
        assert!(
            c.renew(&short).await.expect("renew"),
            "rule: renew of a held lease returns true"
        );
    }
    assert!(
        c.holds(&short).await.expect("holds"),
        "rule: renew extends a lease past its ttl"
    );
    assert!(
        acquire(c, &short.key, ttl).await.is_none(),
        "rule: a renewed lease still excludes others past its first ttl"
    );
    c.release(&short).await.expect("release");

    // Release: the key is free at once, and the next holder's token is larger.
    c.release(&first).await.expect("release");
    assert!(
        !c.holds(&first).await.expect("holds"),
        "rule: a released lease is no longer held"
    );
    assert!(
        !c.renew(&first).await.expect("renew"),
        "rule: renew of a released lease returns false"
    );
    c.release(&first)
        .await
        .expect("rule: releasing a lease twice is not an error");
    let second = acquire(c, key, long)
        .await
        .expect("rule: after release, acquire succeeds");
    assert!(
        second.token > first.token,
        "rule: each new holder gets a larger token ({} after {})",
        second.token,
        first.token
    );
    c.release(&second).await.expect("release");
}

async fn expired_leases(c: &dyn Coordination, key: &str, ttl: Duration) {
    let old = acquire(c, key, ttl)
        .await
        .expect("rule: acquire on a free key gives a lease");
    sleep(ttl + ttl / 2).await;
    assert!(
        !c.holds(&old).await.expect("holds"),
        "rule: a lease left past its ttl is no longer held"
    );
    let new = acquire(c, key, ttl * 20)
        .await
        .expect("rule: an expired lease can be acquired by another");
    assert!(
        new.token > old.token,
        "rule: the holder after an expiry gets a larger token ({} after {})",
        new.token,
        old.token
    );
    assert!(
        !c.renew(&old).await.expect("renew"),
        "rule: renew of an expired lease taken by another returns false"
    );
    assert!(
        !c.holds(&old).await.expect("holds"),
        "rule: an expired lease taken by another is not held by its old holder"
    );
    c.release(&old).await.expect("release of a lost lease");
    assert!(
        c.holds(&new).await.expect("holds"),
        "rule: release of a lost lease leaves the new holder's lease in place"
    );
    assert!(
        acquire(c, key, ttl).await.is_none(),
        "rule: release of a lost lease does not free the key"
    );
    assert!(
        c.renew(&new).await.expect("renew"),
        "rule: the new holder can still renew after the old holder's release"
    );
    c.release(&new).await.expect("release");
}

async fn racing_acquires(c: &dyn Coordination, key: &str, ttl: Duration) {
    let won: Vec<Lease> = join_all((0..RACERS).map(|_| c.acquire(key, ttl * 20)))
        .await
        .into_iter()
        .filter_map(|r| r.expect("acquire"))
        .collect();
    assert_eq!(
        won.len(),
        1,
        "rule: of {RACERS} concurrent acquires of one key exactly one wins"
    );
    c.release(&won[0]).await.expect("release");
}

async fn markers(c: &dyn Coordination, key: &str, ttl: Duration) {
    assert!(
        !c.has_marker(key).await.expect("has_marker"),
        "rule: a marker never set is absent"
    );
    c.set_marker(key, ttl).await.expect("set_marker");
    assert!(
        c.has_marker(key).await.expect("has_marker"),
        "rule: a marker is present once set"
    );
    assert!(
        !c.has_marker(&format!("{key}/other"))
            .await
            .expect("has_marker"),
        "rule: markers on other keys are independent"
    );
    sleep(ttl + ttl / 2).await;
    assert!(
        !c.has_marker(key).await.expect("has_marker"),
        "rule: a marker is forgotten after its ttl"
    );
}

async fn counters(c: &dyn Coordination, key: &str, ttl: Duration) {
    let add =
        |k: String, by: i64, ttl: Duration| async move { c.add(&k, by, ttl).await.expect("add") };
    let forever = format!("{key}/forever");
    assert_eq!(
        add(forever.clone(), 1, Duration::ZERO).await,
        1,
        "rule: a new counter starts at 0"
    );
    assert_eq!(
        add(forever.clone(), 2, Duration::ZERO).await,
        3,
        "rule: add returns the running value"
    );
    assert_eq!(
        add(forever.clone(), -5, Duration::ZERO).await,
        -2,
        "rule: negative adds subtract, below zero too"
    );
    assert_eq!(
        add(forever.clone(), 0, Duration::ZERO).await,
        -2,
        "rule: adding 0 reads the value"
    );
    assert_eq!(
        add(format!("{key}/other"), 10, Duration::ZERO).await,
        10,
        "rule: counters on other keys are independent"
    );

    // A ttl counts from the counter's creation, not from its last add, and only the creating
    // add sets it.
    let windowed = format!("{key}/windowed");
    assert_eq!(add(windowed.clone(), 1, ttl).await, 1);
    let created_by = Instant::now();
    sleep(ttl / 2).await;
    assert_eq!(
        add(windowed.clone(), 1, ttl).await,
        2,
        "rule: a counter with a ttl counts up within its ttl"
    );
    assert_eq!(
        add(forever.clone(), 1, ttl).await,
        -1,
        "rule: add with a ttl on an existing counter keeps its value"
    );
    sleep_until(created_by + ttl + ttl / 5).await;
    assert_eq!(
        add(windowed.clone(), 1, ttl).await,
        1,
        "rule: a counter expires ttl after its creation and starts again at 0"
    );
    sleep(ttl).await;
    assert_eq!(
        add(forever, 1, ttl).await,
        0,
        "rule: a counter created with ttl zero never expires, whatever later adds pass"
    );
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix} {i}/ü")).collect()
}

async fn admission(c: &dyn Coordination, key: &str, ttl: Duration) {
    let long = ttl * 20;
    let calls = names("call", 5);
    assert_eq!(
        c.admit(key, &calls, 3, long).await.expect("admit"),
        3,
        "rule: admit takes members in order up to the limit"
    );
    assert_eq!(c.occupancy(key).await.expect("occupancy"), 3);
    assert_eq!(
        c.admit(key, &calls, 3, long).await.expect("admit"),
        3,
        "rule: members already admitted count as taken, and take no second place"
    );
    assert_eq!(
        c.admitted(key, &calls).await.expect("admitted"),
        vec![true, true, true, false, false],
        "rule: admitted tells members from non-members, in order"
    );
    assert!(
        c.retire(key, &calls[1]).await.expect("retire"),
        "rule: retiring a member says it was there"
    );
    assert!(
        !c.retire(key, &calls[1]).await.expect("retire"),
        "rule: retiring twice says it was not there the second time"
    );
    assert_eq!(
        c.admit(key, &calls[3..], 3, long).await.expect("admit"),
        1,
        "rule: a retired member frees exactly one place"
    );
    assert_eq!(
        c.admit(&format!("{key}/other"), &calls, 2, long)
            .await
            .expect("admit"),
        2,
        "rule: admission sets on other keys are independent"
    );
    assert_eq!(
        c.admit(key, &calls[4..], 0, long).await.expect("admit"),
        0,
        "rule: a limit of zero admits nothing new"
    );

    // Expiry: a member admitted with a short ttl frees its place on its own.
    let short = format!("{key}/short");
    assert_eq!(
        c.admit(&short, &calls[..2], 2, ttl).await.expect("admit"),
        2
    );
    sleep(ttl / 2).await;
    assert_eq!(
        c.admit(&short, &calls[..1], 2, ttl * 4)
            .await
            .expect("admit"),
        1,
        "rule: admitting a member again renews its expiry"
    );
    sleep(ttl * 3 / 4).await;
    assert_eq!(
        c.occupancy(&short).await.expect("occupancy"),
        1,
        "rule: a member expires ttl after its (last) admission"
    );
    assert_eq!(
        c.admitted(&short, &calls[..2]).await.expect("admitted"),
        vec![true, false],
        "rule: an expired member is not admitted"
    );
    assert!(
        !c.retire(&short, &calls[1]).await.expect("retire"),
        "rule: retiring an expired member says it was not there"
    );
    assert_eq!(
        c.admit(&short, &calls[1..3], 2, ttl).await.expect("admit"),
        1,
        "rule: an expired member's place is free again"
    );
}

/// Many producers admitting different members at once never overfill the set.
async fn racing_admissions(c: &dyn Coordination, key: &str, ttl: Duration) {
    let batches: Vec<Vec<String>> = (0..RACERS)
        .map(|r| names(&format!("racer {r}"), 3))
        .collect();
    let taken = join_all(batches.iter().map(|b| c.admit(key, b, 10, ttl * 20))).await;
    let total: usize = taken.into_iter().map(|t| t.expect("admit")).sum();
    assert_eq!(
        total, 10,
        "rule: racing admits fill the set exactly to its limit"
    );
    assert_eq!(c.occupancy(key).await.expect("occupancy"), 10);
}

/// Leases, markers and counters each have their own namespace.
async fn namespaces(c: &dyn Coordination, key: &str, ttl: Duration) {
    let lease = acquire(c, key, ttl * 20)
        .await
        .expect("rule: acquire on a free key gives a lease");
    assert!(
        !c.has_marker(key).await.expect("has_marker"),
        "rule: a lease is not a marker"
    );
    c.set_marker(key, ttl * 20).await.expect("set_marker");
    assert_eq!(
        c.add(key, 5, ttl * 20).await.expect("add"),
        5,
        "rule: a lease or marker key is a fresh counter"
    );
    assert!(
        c.holds(&lease).await.expect("holds"),
        "rule: markers and counters do not disturb a lease with the same key"
    );
    c.release(&lease).await.expect("release");
    assert!(
        c.has_marker(key).await.expect("has_marker"),
        "rule: releasing a lease leaves a marker with the same key"
    );
}
