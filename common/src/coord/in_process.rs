//! The embedded coordination store: leases, markers and counters in one process's memory.
//!
//! Everything sits behind one `std::sync::Mutex` (each operation is a few map look-ups, never
//! held across an `.await`). Expiry is checked lazily against `tokio::time::Instant`, so tests
//! can run under paused time; expired entries are also swept in bulk now and then, so keys
//! that are never touched again do not pile up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{CoordError, Coordination, Lease};

/// Fewest operations between two sweeps of expired entries; between sweeps, at least as many
/// operations as there are entries, so sweeping costs O(1) per operation on average.
const MIN_SWEEP_INTERVAL: usize = 1024;

/// [`Coordination`] for a single process: the in-process pipeline and tests.
///
/// Clones share one store. Fencing tokens come from a single counter for the whole store, so
/// they grow per key for the life of the process without remembering every key ever leased.
/// The counter starts from the wall clock in microseconds, as the Redis implementation's
/// tokens do, so tokens of `callpipe run` and of the workers compare sensibly in the stores'
/// conditional writes (a `run --force` after the workers indexed a call is the newer writer).
#[derive(Debug, Clone, Default)]
pub struct InProcessCoordination {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    last_token: u64,
    /// Token and expiry of each lease.
    leases: HashMap<String, (u64, Deadline)>,
    markers: HashMap<String, Deadline>,
    /// Value and expiry (fixed at creation) of each counter.
    counters: HashMap<String, (i64, Deadline)>,
    /// Each admission set's members and their expiries.
    sets: HashMap<String, HashMap<String, Deadline>>,
    ops_since_sweep: usize,
}

/// When an entry expires; `None` for never (a counter with ttl zero, or a ttl too large to add
/// to the clock).
type Deadline = Option<Instant>;

fn deadline(now: Instant, ttl: Duration) -> Deadline {
    now.checked_add(ttl)
}

fn live(deadline: Deadline, now: Instant) -> bool {
    deadline.is_none_or(|d| d > now)
}

impl InProcessCoordination {
    pub fn new() -> Self {
        Self::default()
    }

    /// Locks the state and sweeps expired entries when enough operations have passed.
    fn lock(&self, now: Instant) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.ops_since_sweep += 1;
        if state.ops_since_sweep >= MIN_SWEEP_INTERVAL.max(state.len()) {
            state.sweep(now);
        }
        state
    }

    /// The lease's entry if it is live and still carries the lease's token.
    fn held<'a>(state: &'a mut State, lease: &Lease, now: Instant) -> Option<&'a mut Deadline> {
        match state.leases.get_mut(&lease.key) {
            Some((token, until)) if *token == lease.token && live(*until, now) => Some(until),
            _ => None,
        }
    }
}

impl State {
    fn len(&self) -> usize {
        self.leases.len()
            + self.markers.len()
            + self.counters.len()
            + self.sets.values().map(HashMap::len).sum::<usize>()
    }

    /// The set's live members, with the expired ones dropped.
    fn set(&mut self, key: &str, now: Instant) -> &mut HashMap<String, Deadline> {
        let set = self.sets.entry(key.to_owned()).or_default();
        set.retain(|_, until| live(*until, now));
        set
    }

    fn sweep(&mut self, now: Instant) {
        self.leases.retain(|_, (_, until)| live(*until, now));
        self.markers.retain(|_, until| live(*until, now));
        self.counters.retain(|_, (_, until)| live(*until, now));
        for set in self.sets.values_mut() {
            set.retain(|_, until| live(*until, now));
        }
        self.sets.retain(|_, set| !set.is_empty());
        self.ops_since_sweep = 0;
    }
}

#[async_trait]
impl Coordination for InProcessCoordination {
    fn name(&self) -> &str {
        "in-process"
    }

    async fn acquire(&self, key: &str, ttl: Duration) -> Result<Option<Lease>, CoordError> {
        let now = Instant::now();
        let mut state = self.lock(now);
        if let Some((_, until)) = state.leases.get(key) {
            if live(*until, now) {
                return Ok(None);
            }
        }
        let clock_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        state.last_token = (state.last_token + 1).max(clock_us);
        let token = state.last_token;
        state
            .leases
            .insert(key.to_owned(), (token, deadline(now, ttl)));
        Ok(Some(Lease {
            key: key.to_owned(),
            token,
            ttl,
        }))
    }

    async fn renew(&self, lease: &Lease) -> Result<bool, CoordError> {
        let now = Instant::now();
        let mut state = self.lock(now);
        Ok(match Self::held(&mut state, lease, now) {
            Some(until) => {
                *until = deadline(now, lease.ttl);
                true
            }
            None => false,
        })
    }

    async fn release(&self, lease: &Lease) -> Result<(), CoordError> {
        let now = Instant::now();
        let mut state = self.lock(now);
        if Self::held(&mut state, lease, now).is_some() {
            state.leases.remove(&lease.key);
        }
        Ok(())
    }

    async fn holds(&self, lease: &Lease) -> Result<bool, CoordError> {
        let now = Instant::now();
        let mut state = self.lock(now);
        Ok(Self::held(&mut state, lease, now).is_some())
    }

    async fn set_marker(&self, key: &str, ttl: Duration) -> Result<(), CoordError> {
        let now = Instant::now();
        let mut state = self.lock(now);
        state.markers.insert(key.to_owned(), deadline(now, ttl));
        Ok(())
    }

    async fn has_marker(&self, key: &str) -> Result<bool, CoordError> {
        let now = Instant::now();
        let state = self.lock(now);
        Ok(state
            .markers
            .get(key)
            .is_some_and(|until| live(*until, now)))
    }

    async fn add(&self, key: &str, by: i64, ttl: Duration) -> Result<i64, CoordError> {
        let now = Instant::now();
        let mut state = self.lock(now);
        let fresh = || {
            let until = if ttl.is_zero() {
                None
            } else {
                deadline(now, ttl)
            };
            (0, until)
        };
        let entry = state.counters.entry(key.to_owned()).or_insert_with(fresh);
        if !live(entry.1, now) {
            *entry = fresh();
        }
        // Saturating, like a rate limit would want, rather than a panic or a wrap.
        entry.0 = entry.0.saturating_add(by);
        Ok(entry.0)
    }

    async fn admit(
        &self,
        key: &str,
        members: &[String],
        limit: u64,
        ttl: Duration,
    ) -> Result<usize, CoordError> {
        let now = Instant::now();
        let mut state = self.lock(now);
        let set = state.set(key, now);
        let mut taken = 0;
        for member in members {
            if let Some(until) = set.get_mut(member) {
                *until = deadline(now, ttl);
            } else if (set.len() as u64) < limit {
                set.insert(member.clone(), deadline(now, ttl));
            } else {
                break;
            }
            taken += 1;
        }
        Ok(taken)
    }

    async fn retire(&self, key: &str, member: &str) -> Result<bool, CoordError> {
        let now = Instant::now();
        let mut state = self.lock(now);
        Ok(state.set(key, now).remove(member).is_some())
    }

    async fn admitted(&self, key: &str, members: &[String]) -> Result<Vec<bool>, CoordError> {
        let now = Instant::now();
        let mut state = self.lock(now);
        let set = state.set(key, now);
        Ok(members.iter().map(|m| set.contains_key(m)).collect())
    }

    async fn occupancy(&self, key: &str) -> Result<u64, CoordError> {
        let now = Instant::now();
        let mut state = self.lock(now);
        Ok(state.set(key, now).len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn passes_the_coordination_conformance_suite() {
        let store = InProcessCoordination::new();
        super::super::conformance::coordination(&store, Duration::from_millis(300)).await;
        // A second run on the same store: the suite's keys do not collide.
        super::super::conformance::coordination(&store, Duration::from_millis(300)).await;
    }

    #[tokio::test]
    async fn passes_the_conformance_suite_in_real_time() {
        let store = InProcessCoordination::default();
        super::super::conformance::coordination(&store, Duration::from_millis(40)).await;
    }

    #[tokio::test]
    async fn clones_share_one_store() {
        let a = InProcessCoordination::new();
        let b = a.clone();
        let lease = a.acquire("k", Duration::from_secs(60)).await.unwrap();
        assert!(b
            .acquire("k", Duration::from_secs(60))
            .await
            .unwrap()
            .is_none());
        assert!(b.holds(&lease.unwrap()).await.unwrap());
    }

    #[tokio::test]
    async fn a_huge_ttl_never_expires_rather_than_panicking() {
        let store = InProcessCoordination::new();
        let lease = store.acquire("k", Duration::MAX).await.unwrap().unwrap();
        assert!(store.renew(&lease).await.unwrap());
        store.set_marker("k", Duration::MAX).await.unwrap();
        assert!(store.has_marker("k").await.unwrap());
        assert_eq!(store.add("k", 1, Duration::MAX).await.unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_swept_without_being_touched_again() {
        let store = InProcessCoordination::new();
        let ttl = Duration::from_secs(1);
        for i in 0..3 * MIN_SWEEP_INTERVAL {
            let key = format!("short/{i}");
            store.set_marker(&key, ttl).await.unwrap();
            store.add(&key, 1, ttl).await.unwrap();
            store.acquire(&key, ttl).await.unwrap();
        }
        let kept = store
            .acquire("kept", Duration::from_secs(3600))
            .await
            .unwrap();
        tokio::time::sleep(ttl * 2).await;
        for _ in 0..4 * 3 * MIN_SWEEP_INTERVAL {
            store.has_marker("absent").await.unwrap();
        }
        let left = store.state.lock().unwrap().len();
        assert_eq!(left, 1, "only the live lease is left");
        assert!(store.holds(&kept.unwrap()).await.unwrap());
    }

    #[tokio::test]
    async fn counters_saturate_instead_of_overflowing() {
        let store = InProcessCoordination::new();
        store.add("c", i64::MAX, Duration::ZERO).await.unwrap();
        assert_eq!(store.add("c", 1, Duration::ZERO).await.unwrap(), i64::MAX);
    }
}
