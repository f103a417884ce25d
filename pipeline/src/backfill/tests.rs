//! The job lifecycle over the embedded stores and in-process queue and coordination: the same
//! code paths as on SQS and Redis, which `tests/backfill.rs` drives end to end.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use callpipe_common::coord::{Coordination, InProcessCoordination};
use callpipe_common::messages::{IngestJob, StageMessage as _};
use callpipe_common::queue::{InProcessQueue, Queue};
use callpipe_common::store::JobState;
use callpipe_common::{CallId, Lane};
use callpipe_index::store::SqliteMetadata;
use tokio::sync::watch;

use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    backfill: Backfill,
    coord: Arc<InProcessCoordination>,
    queue: Arc<InProcessQueue>,
}

fn fixture(files: usize, max_in_flight: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("calls");
    for i in 0..files {
        let sub = root.join(format!("2024/01/{:02}", 1 + i % 3));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("call {i:03}+ü.wav")), b"RIFF").unwrap();
    }
    std::fs::write(root.join("notes.txt"), b"not audio").unwrap();
    let store = Arc::new(SqliteMetadata::open(&dir.path().join("metadata.db")).unwrap());
    let coord = Arc::new(InProcessCoordination::new());
    let queue = Arc::new(InProcessQueue::new("backfill", 10_000, 5));
    let backfill = Backfill {
        jobs: store.clone(),
        metadata: store,
        coord: coord.clone(),
        recordings: None,
        extensions: vec!["wav".into()],
        limits: Limits {
            max_in_flight,
            rate: 0.0,
            in_flight_ttl: Duration::from_secs(3600),
        },
    };
    Fixture {
        _dir: dir,
        root,
        backfill,
        coord,
        queue,
    }
}

fn definition(root: &std::path::Path) -> Definition {
    Definition {
        name: None,
        sources: vec![Source::Dir(root.to_owned())],
        since_ms: None,
        until_ms: None,
    }
}

/// Takes what the queue holds, as a worker would, and retires each call from the lane as its
/// outcome would; returns the sources.
async fn drain(f: &Fixture) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let got = f
            .queue
            .receive(10, Duration::from_secs(60), Duration::ZERO)
            .await
            .unwrap();
        if got.is_empty() {
            return out;
        }
        for m in got {
            let job = IngestJob::decode(&m.body).unwrap();
            assert_eq!(job.lane, Lane::Backfill);
            assert!(job
                .backfill
                .as_deref()
                .is_some_and(|t| t.starts_with("bf-")));
            let id = CallId::from_source(&job.source.uri).to_string();
            assert!(f
                .coord
                .retire(Lane::Backfill.in_flight_key(), &id)
                .await
                .unwrap());
            f.queue.ack(&m.receipt).await.unwrap();
            out.push(job.source.uri);
        }
    }
}

#[tokio::test]
async fn the_lane_stays_bounded_and_a_stopped_job_resumes_without_sending_twice() {
    let f = fixture(30, 7);
    let def = definition(&f.root);
    let (stop_tx, stop) = watch::channel(false);
    let job = f.backfill.open(&def, false).await.unwrap();
    assert_eq!((job.pass, job.state), (1, JobState::Running));
    let running = {
        let backfill = f.backfill.clone();
        let queue: Arc<dyn Queue> = f.queue.clone();
        tokio::spawn(async move { backfill.run(job, Sink::Queue(queue), stop, |_| {}).await })
    };
    let mut sent = Vec::new();
    // Let it fill the lane, check it holds there, then play the workers for two rounds.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let depth = f.queue.depth().await.unwrap();
        assert_eq!(
            depth.visible, 7,
            "the lane holds max_in_flight calls, no more"
        );
        sent.extend(drain(&f).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_tx.send(true).unwrap();
    let stopped = running.await.unwrap();
    assert!(
        stopped.is_err(),
        "a stop while waiting for places is reported"
    );
    let stored = f
        .backfill
        .jobs
        .get_job(&def.job_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.state,
        JobState::Running,
        "a stopped job resumes on the next run"
    );
    assert!(stored.counts.enqueued >= 14, "{:?}", stored.counts);

    // The rerun resumes the same pass; the 7 calls still in the queue are in flight.
    let job = f.backfill.open(&def, false).await.unwrap();
    assert_eq!(job.pass, 1);
    let (_keep, stop) = watch::channel(false);
    let running = {
        let backfill = f.backfill.clone();
        let queue: Arc<dyn Queue> = f.queue.clone();
        tokio::spawn(async move { backfill.run(job, Sink::Queue(queue), stop, |_| {}).await })
    };
    while !running.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        sent.extend(drain(&f).await);
    }
    let finished = running.await.unwrap().unwrap();
    sent.extend(drain(&f).await);
    let distinct: HashSet<&String> = sent.iter().collect();
    assert_eq!(sent.len(), 30, "every object once: {sent:?}");
    assert_eq!(distinct.len(), 30, "none twice");
    let c = finished.job.counts;
    assert_eq!(finished.job.state, JobState::Done);
    assert_eq!(c.listed, c.enqueued + c.skipped() + c.filtered, "{c:?}");
    assert_eq!(
        c.filtered, 0,
        "a directory walk keeps only audio: notes.txt is not listed"
    );
    assert_eq!(c.enqueued + c.skipped_in_flight, 30, "{c:?}");
    assert_eq!(finished.job.survey.map(|s| s.objects), Some(30));

    // Done: the same command starts pass 2, which lists everything again.
    let again = f.backfill.open(&def, false).await.unwrap();
    assert_eq!((again.pass, again.counts.listed), (2, 0));
}

#[tokio::test]
async fn pause_and_cancel_are_seen_by_the_running_job() {
    let f = fixture(20, 5);
    let def = definition(&f.root);
    let job = f.backfill.open(&def, false).await.unwrap();
    let (_keep, stop) = watch::channel(false);
    let running = {
        let backfill = f.backfill.clone();
        let queue: Arc<dyn Queue> = f.queue.clone();
        tokio::spawn(async move { backfill.run(job, Sink::Queue(queue), stop, |_| {}).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paused = f
        .backfill
        .set_state(&def.job_id(), JobState::Paused)
        .await
        .unwrap();
    assert_eq!(paused.state, JobState::Paused);
    let finished = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the job stops soon after a pause")
        .unwrap()
        .unwrap();
    assert_eq!(finished.job.state, JobState::Paused);
    let refused = f.backfill.open(&def, false).await.unwrap_err();
    assert!(refused.to_string().contains("resume"), "{refused}");
    let resumed = f.backfill.open(&def, true).await.unwrap();
    assert_eq!((resumed.state, resumed.pass), (JobState::Running, 1));
    let cancelled = f
        .backfill
        .set_state(&def.job_id(), JobState::Cancelled)
        .await
        .unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(f
        .backfill
        .set_state(&def.job_id(), JobState::Paused)
        .await
        .is_err());
    assert_eq!(f.backfill.open(&def, false).await.unwrap().pass, 2);
}

// Paused time: the run waits out a lease as long as a dead process's would last.
#[tokio::test(start_paused = true)]
async fn a_job_is_run_by_one_process_at_a_time() {
    let f = fixture(3, 5);
    let def = definition(&f.root);
    let job = f.backfill.open(&def, false).await.unwrap();
    let held = f
        .coord
        .acquire(&format!("backfill-job/{}", job.id), Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let (_keep, stop) = watch::channel(false);
    let queue: Arc<dyn Queue> = f.queue.clone();
    let err = f
        .backfill
        .run(job, Sink::Queue(queue), stop, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, BackfillError::Busy(_)), "{err}");
    f.coord.release(&held).await.unwrap();
}

#[test]
fn job_ids_are_stable_and_names_are_checked() {
    let def = definition(std::path::Path::new("/data/calls"));
    assert_eq!(def.job_id(), def.job_id());
    assert!(def.job_id().starts_with("bf-"));
    let other = Definition {
        since_ms: Some(1),
        ..def.clone()
    };
    assert_ne!(def.job_id(), other.job_id());
    assert!(Definition::check_name("history-2024").is_ok());
    assert!(Definition::check_name("a b").is_err());
    assert!(Definition::check_name("").is_err());
}
