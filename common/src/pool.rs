//! The CPU pool: where decode, resample, VAD and inference run.
//!
//! Async code (queue consumers, object store I/O) lives on tokio; CPU-heavy work lives here, on a
//! dedicated rayon pool, so a long decode never stalls a heartbeat or a visibility extension.
//! [`CpuPool::run`] moves a closure onto the pool and hands the result back over a oneshot.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use tokio::sync::oneshot;
use tracing::Instrument as _;

/// Why a job on the pool produced no result.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("could not start the CPU pool: {0}")]
    Build(#[from] rayon::ThreadPoolBuildError),
    /// The job panicked. The panic is contained: the pool thread survives and the caller gets
    /// this error naming what panicked, instead of the process aborting.
    #[error("CPU job panicked: {0}")]
    Panicked(String),
}

impl PoolError {
    /// A pool that cannot start is this machine's problem; a job that panicked is taken as its
    /// input's (the same code runs other inputs fine), so the call is recorded, not retried.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            PoolError::Build(_) => crate::ErrorKind::Environment,
            PoolError::Panicked(_) => crate::ErrorKind::Permanent,
        }
    }
}

/// A rayon pool with an async front door. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CpuPool {
    pool: Arc<rayon::ThreadPool>,
}

impl CpuPool {
    /// A pool of `threads` workers; `0` means one per available core (which respects the
    /// process's CPU affinity, so `taskset -c 0` gives one).
    pub fn new(threads: usize) -> Result<Self, PoolError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("callpipe-cpu-{i}"))
            .build()?;
        Ok(CpuPool {
            pool: Arc::new(pool),
        })
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Runs `job` on the pool and awaits its result without blocking the async runtime.
    ///
    /// The caller's tracing span is carried onto the pool thread. If the caller is dropped
    /// before the job starts (a cancelled request, a shutdown), the job is skipped.
    pub async fn run<F, R>(&self, job: F) -> Result<R, PoolError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let span = tracing::Span::current();
        self.pool.spawn(move || {
            if tx.is_closed() {
                return;
            }
            let _entered = span.enter();
            let result = std::panic::catch_unwind(AssertUnwindSafe(job))
                .map_err(|payload| PoolError::Panicked(panic_message(payload.as_ref())));
            let _ = tx.send(result);
        });
        rx.instrument(tracing::Span::current())
            .await
            .unwrap_or_else(|_| Err(PoolError::Panicked("job dropped".to_owned())))
    }

    /// Runs `job` inside the pool from synchronous code, so nested rayon calls
    /// (`par_iter` over channels) use this pool rather than rayon's global one.
    pub fn install<F, R>(&self, job: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        self.pool.install(job)
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_off_the_runtime_and_returns() {
        let pool = CpuPool::new(1).unwrap();
        let name = pool
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("callpipe-cpu-0"));
    }

    #[tokio::test]
    async fn contains_panics() {
        let pool = CpuPool::new(1).unwrap();
        let err = pool.run(|| -> u8 { panic!("boom") }).await.unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        // The pool still works afterwards.
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }
}
