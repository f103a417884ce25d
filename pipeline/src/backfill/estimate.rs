//! What `backfill status` and `--dry-run` estimate: audio hours from bytes, the engine's
//! measured speed, and rate and ETA from a pass's progress.

use serde::Serialize;

use callpipe_common::store::{BackfillJob, CallStatus, JobCalls, MetadataStore, SearchFilter};

/// Bytes per second of audio when nothing has been measured: 8 kHz 16-bit mono PCM, the
/// usual telephony recording (16 kB/s; stereo is twice that, compressed formats a fraction).
pub const DEFAULT_BYTES_PER_AUDIO_S: f64 = 16_000.0;

/// Audio seconds one transcribe worker does per wall second when no indexed call says
/// otherwise: the README's `callpipe run` figure on 2 threads (about 19 s of audio per
/// second, small.en int8), rounded down.
pub const DEFAULT_AUDIO_S_PER_WORKER_S: f64 = 15.0;

/// How many recent indexed calls the measured speed averages.
const SPEED_SAMPLE: usize = 200;

/// Bytes per audio second, from objects whose size and duration are both known; the default
/// when there are none.
pub fn bytes_per_audio_s(bytes: u64, audio_s: f64) -> (f64, bool) {
    if bytes > 0 && audio_s > 1.0 {
        (bytes as f64 / audio_s, true)
    } else {
        (DEFAULT_BYTES_PER_AUDIO_S, false)
    }
}

/// Audio seconds one worker transcribes per second, measured on the most recently recorded
/// indexed calls (their duration over their transcribe time), or the default.
pub async fn worker_speed(metadata: &dyn MetadataStore) -> (f64, bool) {
    let calls = metadata
        .list_calls(
            Some(CallStatus::Indexed),
            &SearchFilter::default(),
            SPEED_SAMPLE,
        )
        .await
        .unwrap_or_default();
    let (audio, busy) = calls
        .iter()
        .filter(|c| c.stage_times.transcribe_s > 0.0)
        .fold((0.0, 0.0), |(a, b), c| {
            (a + c.duration_s, b + c.stage_times.transcribe_s)
        });
    if audio > 60.0 && busy > 0.0 {
        (audio / busy, true)
    } else {
        (DEFAULT_AUDIO_S_PER_WORKER_S, false)
    }
}

/// A pass's progress, as `backfill status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub calls: JobCalls,
    /// Backfill calls in the pipeline now, all jobs together.
    pub lane_in_flight: u64,
    pub audio_hours_done: f64,
    /// Estimated from the bytes not yet indexed; `None` before the survey is done.
    pub audio_hours_left: Option<f64>,
    /// Calls indexed or failed per hour since the pass started.
    pub calls_per_hour: f64,
    /// Seconds until every surveyed call is done at that rate.
    pub eta_s: Option<f64>,
    /// Whether bytes per audio second were measured on this pass's calls.
    pub measured_bytes_per_audio_s: bool,
}

pub fn progress(job: &BackfillJob, calls: JobCalls, lane_in_flight: u64, now_ms: i64) -> Progress {
    let done = calls.indexed + calls.failed;
    // The indexed calls' share of the enqueued bytes, over their audio.
    let indexed_bytes = if job.counts.enqueued > 0 {
        job.counts.enqueued_bytes as f64 * calls.indexed as f64 / job.counts.enqueued as f64
    } else {
        0.0
    };
    let (per_s, measured) = bytes_per_audio_s(indexed_bytes as u64, calls.indexed_audio_s);
    let survey = job.survey;
    let left_objects = survey.map(|s| {
        s.objects
            .saturating_sub(job.counts.skipped())
            .saturating_sub(done)
    });
    let audio_hours_left = survey.map(|s| {
        let skipped_share = if job.counts.listed > 0 {
            job.counts.skipped() as f64 / job.counts.listed as f64
        } else {
            0.0
        };
        let bytes_left = (s.bytes as f64 * (1.0 - skipped_share) - indexed_bytes).max(0.0);
        bytes_left / per_s / 3600.0
    });
    let hours = ((now_ms - job.pass_started_at_ms).max(1) as f64) / 3_600_000.0;
    let calls_per_hour = done as f64 / hours;
    let eta_s = match (left_objects, calls_per_hour > 0.0) {
        (Some(0), _) => Some(0.0),
        (Some(left), true) => Some(left as f64 / calls_per_hour * 3600.0),
        _ => None,
    };
    Progress {
        audio_hours_done: calls.indexed_audio_s / 3600.0,
        calls,
        lane_in_flight,
        audio_hours_left,
        calls_per_hour,
        eta_s,
        measured_bytes_per_audio_s: measured,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callpipe_common::store::{Cursor, JobCounts, JobState, Survey};

    #[test]
    fn progress_adds_up() {
        let job = BackfillJob {
            id: "bf-1".into(),
            sources: vec![],
            since_ms: None,
            until_ms: None,
            pass: 1,
            state: JobState::Running,
            cursor: Cursor::default(),
            counts: JobCounts {
                listed: 100,
                skipped_indexed: 10,
                enqueued: 90,
                enqueued_bytes: 90 * 160_000,
                ..JobCounts::default()
            },
            survey: Some(Survey {
                objects: 200,
                bytes: 200 * 160_000,
            }),
            error: None,
            created_at_ms: 0,
            pass_started_at_ms: 0,
            updated_at_ms: 0,
            finished_at_ms: None,
            version: 1,
        };
        let calls = JobCalls {
            indexed: 45,
            failed: 5,
            in_progress: 3,
            indexed_audio_s: 45.0 * 10.0,
            failures: vec![],
        };
        let p = progress(&job, calls, 40, 3_600_000);
        assert!(p.measured_bytes_per_audio_s);
        assert!((p.audio_hours_done - 0.125).abs() < 1e-9);
        assert!((p.calls_per_hour - 50.0).abs() < 1e-9);
        // 200 surveyed, 10 skipped, 50 done: 140 left at 50 an hour.
        assert!((p.eta_s.unwrap() - 140.0 / 50.0 * 3600.0).abs() < 1e-6);
        // 90% of 32 MB not skipped, less the 7.2 MB indexed, at 16 kB/s.
        let left = (200.0 * 160_000.0 * 0.9 - 45.0 * 160_000.0) / 16_000.0 / 3600.0;
        assert!((p.audio_hours_left.unwrap() - left).abs() < 1e-9);
    }

    #[test]
    fn unmeasured_sizes_fall_back_to_telephony_pcm() {
        assert_eq!(
            bytes_per_audio_s(0, 0.0),
            (DEFAULT_BYTES_PER_AUDIO_S, false)
        );
        assert_eq!(bytes_per_audio_s(32_000, 2.0), (16_000.0, true));
    }
}
