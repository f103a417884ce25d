//! The queue workers' metrics and health, and the small HTTP server that exposes them.
//!
//! A `callpipe worker` process (one or more stages over queues) holds one [`WorkerMetrics`]
//! and one [`Health`], shares them as `Arc`s with its consumer tasks, and serves them with
//! [`router`] and [`serve`]:
//! - `GET /metrics`: Prometheus text exposition (format 0.0.4), for a scraper or the
//!   CloudWatch agent; the families are listed on [`WorkerMetrics`].
//! - `GET /healthz/live`: 200 while the process serves at all (a liveness probe restarts only
//!   a process that stopped answering).
//! - `GET /healthz/ready`: 200 while the worker takes work, 503 (with the reason) after an
//!   environment error such as a missing model or a full disk, so an orchestrator stops
//!   routing to it and replaces it, while the queue hands its messages to healthy workers.
//! - `GET /healthz`: both, as JSON.
//!
//! The metrics use the Prometheus project's `prometheus-client`: typed families with label
//! structs, one registry per worker (no process-global state, so tests stay independent).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;

use callpipe_common::messages::Stage;

/// Upper bounds of the job-duration buckets, in seconds: sub-second index jobs up to the
/// half-hour a long call can take to transcribe on a CPU.
const JOB_SECONDS_BUCKETS: [f64; 15] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0,
];

/// Why a message went back to the queue. Free-form reasons are folded into `other`, so a
/// caller's typo cannot grow the number of series without bound.
const RELEASE_REASONS: [&str; 4] = ["transient", "environment", "busy", "shutdown"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReleaseLabels {
    stage: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    stage: &'static str,
    /// `visible` (waiting) or `in_flight` (received, not yet deleted).
    state: &'static str,
}

fn stage(stage: Stage) -> StageLabels {
    StageLabels {
        stage: stage.as_str(),
    }
}

type F64Counter = Counter<f64, AtomicU64>;

/// A worker's metrics, by stage. Cheap to update from any task: each call is an atomic add
/// (plus a read lock on the family's map once the series exists).
///
/// | family | type | labels |
/// |---|---|---|
/// | `callpipe_messages_received_total` | counter | stage |
/// | `callpipe_messages_acked_total` | counter | stage |
/// | `callpipe_messages_released_total` | counter | stage, reason |
/// | `callpipe_calls_failed_total` | counter | stage |
/// | `callpipe_messages_malformed_total` | counter | stage |
/// | `callpipe_messages_skipped_total` | counter | stage |
/// | `callpipe_job_duration_seconds` | histogram | stage |
/// | `callpipe_audio_seconds_total` | counter | stage |
/// | `callpipe_engine_busy_seconds_total` | counter | |
/// | `callpipe_jobs_in_flight` | gauge | stage |
/// | `callpipe_queue_messages` | gauge | stage, state |
pub struct WorkerMetrics {
    registry: Registry,
    received: Family<StageLabels, Counter>,
    acked: Family<StageLabels, Counter>,
    released: Family<ReleaseLabels, Counter>,
    failed: Family<StageLabels, Counter>,
    malformed: Family<StageLabels, Counter>,
    skipped: Family<StageLabels, Counter>,
    job_seconds: Family<StageLabels, Histogram>,
    audio_seconds: Family<StageLabels, F64Counter>,
    engine_busy: F64Counter,
    /// The engine's running total as last reported, to turn totals into counter increments.
    engine_busy_last: Mutex<f64>,
    in_flight: Family<StageLabels, Gauge>,
    queue: Family<QueueLabels, Gauge>,
}

impl std::fmt::Debug for WorkerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerMetrics").finish_non_exhaustive()
    }
}

impl WorkerMetrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        // `Counter`s get `_total` appended by the encoder, so they are registered without it.
        let received = Family::default();
        registry.register(
            "callpipe_messages_received",
            "Queue messages received",
            received.clone(),
        );
        let acked = Family::default();
        registry.register(
            "callpipe_messages_acked",
            "Queue messages deleted after their output was durable",
            acked.clone(),
        );
        let released = Family::default();
        registry.register(
            "callpipe_messages_released",
            "Queue messages handed back for another try (transient, environment, busy, shutdown)",
            released.clone(),
        );
        let failed = Family::default();
        registry.register(
            "callpipe_calls_failed",
            "Calls recorded as permanently failed",
            failed.clone(),
        );
        let malformed = Family::default();
        registry.register(
            "callpipe_messages_malformed",
            "Queue messages that could not be read",
            malformed.clone(),
        );
        let skipped = Family::default();
        registry.register(
            "callpipe_messages_skipped",
            "Queue messages with nothing to do (duplicates, work already done)",
            skipped.clone(),
        );
        let job_seconds = Family::<StageLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(JOB_SECONDS_BUCKETS)
        });
        registry.register(
            "callpipe_job_duration_seconds",
            "Time from receiving a job to acknowledging it",
            job_seconds.clone(),
        );
        let audio_seconds = Family::default();
        registry.register(
            "callpipe_audio_seconds",
            "Seconds of call audio processed",
            audio_seconds.clone(),
        );
        let engine_busy = F64Counter::default();
        registry.register(
            "callpipe_engine_busy_seconds",
            "Seconds the transcription engine spent working",
            engine_busy.clone(),
        );
        let in_flight = Family::default();
        registry.register(
            "callpipe_jobs_in_flight",
            "Jobs being worked on now",
            in_flight.clone(),
        );
        let queue = Family::default();
        registry.register(
            "callpipe_queue_messages",
            "Messages in the stage's queue, as last sampled (visible: waiting; in_flight: received)",
            queue.clone(),
        );
        Arc::new(WorkerMetrics {
            registry,
            received,
            acked,
            released,
            failed,
            malformed,
            skipped,
            job_seconds,
            audio_seconds,
            engine_busy,
            engine_busy_last: Mutex::new(0.0),
            in_flight,
            queue,
        })
    }

    /// Creates a stage's counters at zero. A series that first appears at 1 hides that first
    /// event from `rate()`/`increase()`, so a worker calls this for the stages it runs.
    /// (`get_or_create` creates the series; the read guard it returns is dropped at once.)
    pub fn init_stage(&self, s: Stage) {
        let labels = stage(s);
        for family in [
            &self.received,
            &self.acked,
            &self.failed,
            &self.malformed,
            &self.skipped,
        ] {
            drop(family.get_or_create(&labels));
        }
        for reason in RELEASE_REASONS {
            drop(self.released.get_or_create(&ReleaseLabels {
                stage: s.as_str(),
                reason,
            }));
        }
        drop(self.job_seconds.get_or_create(&labels));
        drop(self.audio_seconds.get_or_create(&labels));
        drop(self.in_flight.get_or_create(&labels));
    }

    pub fn received(&self, s: Stage) {
        self.received.get_or_create(&stage(s)).inc();
    }

    pub fn acked(&self, s: Stage) {
        self.acked.get_or_create(&stage(s)).inc();
    }

    /// `kind` is `transient`, `environment`, `busy` or `shutdown` (anything else counts as
    /// `other`).
    pub fn released(&self, s: Stage, kind: &str) {
        let reason = RELEASE_REASONS
            .into_iter()
            .find(|r| *r == kind)
            .unwrap_or("other");
        self.released
            .get_or_create(&ReleaseLabels {
                stage: s.as_str(),
                reason,
            })
            .inc();
    }

    /// A permanent failure, recorded on the call.
    pub fn failed(&self, s: Stage) {
        self.failed.get_or_create(&stage(s)).inc();
    }

    pub fn malformed(&self, s: Stage) {
        self.malformed.get_or_create(&stage(s)).inc();
    }

    /// A duplicate delivery, or work already done.
    pub fn skipped(&self, s: Stage) {
        self.skipped.get_or_create(&stage(s)).inc();
    }

    pub fn job_finished(&self, s: Stage, seconds: f64) {
        self.job_seconds.get_or_create(&stage(s)).observe(seconds);
    }

    pub fn audio_processed(&self, s: Stage, seconds: f64) {
        if seconds.is_finite() && seconds > 0.0 {
            self.audio_seconds.get_or_create(&stage(s)).inc_by(seconds);
        }
    }

    /// Takes the engine's running total of busy seconds and adds what is new since the last
    /// call. A total smaller than the last one means the engine was restarted and began again
    /// from zero, so all of it is new.
    pub fn set_engine_busy_seconds(&self, seconds: f64) {
        if !seconds.is_finite() || seconds < 0.0 {
            return;
        }
        let mut last = self
            .engine_busy_last
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let delta = if seconds >= *last {
            seconds - *last
        } else {
            seconds
        };
        *last = seconds;
        if delta > 0.0 {
            self.engine_busy.inc_by(delta);
        }
    }

    /// Counts a job as in flight until the guard is dropped, so that every way out of the job
    /// (success, error, panic, cancellation) counts it out again.
    pub fn job_started(&self, s: Stage) -> InFlightGuard {
        let gauge = self.in_flight.get_or_create_owned(&stage(s));
        gauge.inc();
        InFlightGuard { gauge }
    }

    /// The queue's approximate counts, as the stage's consumer last sampled them.
    pub fn set_queue_depth(&self, s: Stage, visible: u64, in_flight: u64) {
        for (state, n) in [("visible", visible), ("in_flight", in_flight)] {
            self.queue
                .get_or_create(&QueueLabels {
                    stage: s.as_str(),
                    state,
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of every family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Holds one job in `callpipe_jobs_in_flight`; dropping it counts the job out.
#[must_use = "the job counts as in flight only while the guard is held"]
#[derive(Debug)]
pub struct InFlightGuard {
    gauge: Gauge,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Whether the worker is alive and whether it takes work.
///
/// Readiness starts false (the worker is loading models, connecting) and is set by the worker
/// once it can take work; an environment error clears it with a reason, and the consumers stop
/// receiving while it is clear.
#[derive(Debug)]
pub struct Health {
    live: AtomicBool,
    ready: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Health {
    /// Live, not yet ready.
    pub fn new() -> Arc<Self> {
        Arc::new(Health {
            live: AtomicBool::new(true),
            ready: AtomicBool::new(false),
            reason: Mutex::new(None),
        })
    }

    pub fn set_ready(&self) {
        // The reason goes first, so a reader that sees `ready` never sees a stale reason.
        *self.lock_reason() = None;
        self.ready.store(true, Ordering::Release);
    }

    /// An environment error: stop taking work, and say why on `/healthz`.
    pub fn set_unready(&self, reason: impl Into<String>) {
        let reason = reason.into();
        tracing::warn!(reason = %reason, "worker not ready");
        *self.lock_reason() = Some(reason);
        self.ready.store(false, Ordering::Release);
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Why the worker is not ready; `None` when it is, or has not been told yet.
    pub fn reason(&self) -> Option<String> {
        self.lock_reason().clone()
    }

    fn lock_reason(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // A panic while holding the lock leaves a plain Option behind: still valid.
        self.reason.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<WorkerMetrics>,
    health: Arc<Health>,
}

#[derive(Serialize)]
struct HealthBody {
    live: bool,
    ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// The health and metrics routes: `/healthz`, `/healthz/live`, `/healthz/ready`, `/metrics`.
pub fn router(metrics: Arc<WorkerMetrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(readiness))
        .route("/healthz/ready", get(readiness))
        .route("/healthz/live", get(liveness))
        .route("/metrics", get(render_metrics))
        .with_state(AppState { metrics, health })
}

async fn readiness(State(state): State<AppState>) -> Response {
    let health = &state.health;
    let ready = health.is_ready();
    let body = HealthBody {
        live: health.is_live(),
        ready,
        reason: (!ready).then(|| {
            health
                .reason()
                .unwrap_or_else(|| "starting: not ready yet".to_owned())
        }),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn liveness(State(state): State<AppState>) -> Response {
    let body = HealthBody {
        live: state.health.is_live(),
        ready: state.health.is_ready(),
        reason: None,
    };
    (StatusCode::OK, Json(body)).into_response()
}

async fn render_metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

/// Binds `listen` (`host:port`; port 0 picks a free one) and serves `router` on it until
/// `shutdown` completes, then lets open requests finish. Returns the bound address and the
/// server task; a bind failure names the address.
pub async fn serve(
    listen: &str,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}")))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "health and metrics server listening");
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(%addr, error = %e, "health and metrics server stopped");
        }
    });
    Ok((addr, task))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    /// The sample line for `name` whose labels contain all of `labels`, as its value.
    fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.rsplit_once(' '))
            .find(|(series, _)| {
                let (n, rest) = series.split_once('{').unwrap_or((series, ""));
                n == name && labels.iter().all(|l| rest.contains(l))
            })
            .map(|(_, value)| value.parse().unwrap())
    }

    #[test]
    fn counters_show_up_with_their_labels() {
        let m = WorkerMetrics::new();
        m.received(Stage::Ingest);
        m.received(Stage::Ingest);
        m.received(Stage::Transcribe);
        m.acked(Stage::Ingest);
        m.released(Stage::Transcribe, "busy");
        m.released(Stage::Transcribe, "made-up");
        m.failed(Stage::Index);
        m.malformed(Stage::Ingest);
        m.skipped(Stage::Index);
        m.audio_processed(Stage::Transcribe, 90.5);
        m.audio_processed(Stage::Transcribe, f64::NAN);
        let text = m.render();

        let value = |name, labels: &[&str]| sample(&text, name, labels);
        let ingest = r#"stage="ingest""#;
        let transcribe = r#"stage="transcribe""#;
        let index = r#"stage="index""#;
        assert_eq!(
            value("callpipe_messages_received_total", &[ingest]),
            Some(2.0)
        );
        assert_eq!(
            value("callpipe_messages_received_total", &[transcribe]),
            Some(1.0)
        );
        assert_eq!(value("callpipe_messages_acked_total", &[ingest]), Some(1.0));
        let busy = r#"reason="busy""#;
        let other = r#"reason="other""#;
        assert_eq!(
            value("callpipe_messages_released_total", &[transcribe, busy]),
            Some(1.0)
        );
        assert_eq!(
            value("callpipe_messages_released_total", &[transcribe, other]),
            Some(1.0)
        );
        assert_eq!(value("callpipe_calls_failed_total", &[index]), Some(1.0));
        assert_eq!(
            value("callpipe_messages_malformed_total", &[ingest]),
            Some(1.0)
        );
        assert_eq!(
            value("callpipe_messages_skipped_total", &[index]),
            Some(1.0)
        );
        assert_eq!(
            value("callpipe_audio_seconds_total", &[transcribe]),
            Some(90.5)
        );
        assert!(
            text.contains("# TYPE callpipe_messages_received_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# HELP callpipe_calls_failed_total "),
            "{text}"
        );
        // No series for what never happened.
        assert_eq!(value("callpipe_calls_failed_total", &[ingest]), None);
    }

    #[test]
    fn init_stage_creates_zero_series() {
        let m = WorkerMetrics::new();
        m.init_stage(Stage::Transcribe);
        let text = m.render();
        let t = r#"stage="transcribe""#;
        for name in [
            "callpipe_messages_received_total",
            "callpipe_messages_acked_total",
            "callpipe_calls_failed_total",
            "callpipe_messages_malformed_total",
            "callpipe_messages_skipped_total",
            "callpipe_audio_seconds_total",
            "callpipe_jobs_in_flight",
            "callpipe_job_duration_seconds_count",
        ] {
            assert_eq!(sample(&text, name, &[t]), Some(0.0), "{name}\n{text}");
        }
        for reason in RELEASE_REASONS {
            let reason = format!("reason=\"{reason}\"");
            let v = sample(&text, "callpipe_messages_released_total", &[t, &reason]);
            assert_eq!(v, Some(0.0));
        }
        assert_eq!(
            sample(&text, "callpipe_messages_received_total", &["ingest"]),
            None
        );
    }

    #[test]
    fn histogram_buckets_reach_half_an_hour() {
        let m = WorkerMetrics::new();
        m.job_finished(Stage::Transcribe, 0.05);
        m.job_finished(Stage::Transcribe, 400.0);
        m.job_finished(Stage::Transcribe, 5000.0);
        let text = m.render();
        let t = r#"stage="transcribe""#;
        let bucket = |le: &str| {
            let le = format!("le=\"{le}\"");
            sample(&text, "callpipe_job_duration_seconds_bucket", &[t, &le])
        };
        assert_eq!(bucket("0.1"), Some(1.0));
        assert_eq!(bucket("300"), Some(1.0));
        assert_eq!(bucket("600"), Some(2.0));
        assert_eq!(bucket("1800"), Some(2.0));
        assert_eq!(bucket("+Inf"), Some(3.0));
        assert_eq!(
            sample(&text, "callpipe_job_duration_seconds_count", &[t]),
            Some(3.0)
        );
        let sum = sample(&text, "callpipe_job_duration_seconds_sum", &[t]).unwrap();
        assert!((sum - 5400.05).abs() < 1e-6, "{sum}");
    }

    #[test]
    fn engine_busy_total_becomes_increments() {
        let m = WorkerMetrics::new();
        let busy = |m: &WorkerMetrics| {
            sample(&m.render(), "callpipe_engine_busy_seconds_total", &[]).unwrap()
        };
        m.set_engine_busy_seconds(10.0);
        m.set_engine_busy_seconds(25.5);
        assert_eq!(busy(&m), 25.5);
        m.set_engine_busy_seconds(25.5);
        m.set_engine_busy_seconds(f64::NAN);
        assert_eq!(busy(&m), 25.5);
        // The engine restarted: its total began again from zero.
        m.set_engine_busy_seconds(4.0);
        assert_eq!(busy(&m), 29.5);
    }

    #[test]
    fn in_flight_follows_the_guards() {
        let m = WorkerMetrics::new();
        let gauge = |m: &WorkerMetrics| {
            sample(
                &m.render(),
                "callpipe_jobs_in_flight",
                &[r#"stage="index""#],
            )
        };
        let a = m.job_started(Stage::Index);
        let b = m.job_started(Stage::Index);
        assert_eq!(gauge(&m), Some(2.0));
        drop(a);
        assert_eq!(gauge(&m), Some(1.0));
        // A job that panics is counted out too.
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _guard = m2.job_started(Stage::Index);
            panic!("job failed");
        })
        .join();
        assert_eq!(gauge(&m), Some(1.0));
        drop(b);
        assert_eq!(gauge(&m), Some(0.0));
    }

    #[test]
    fn queue_depth_is_by_state() {
        let m = WorkerMetrics::new();
        m.set_queue_depth(Stage::Transcribe, 12, 3);
        m.set_queue_depth(Stage::Transcribe, 7, 4);
        let text = m.render();
        let t = r#"stage="transcribe""#;
        let v = |state: &str| {
            let state = format!("state=\"{state}\"");
            sample(&text, "callpipe_queue_messages", &[t, &state])
        };
        assert_eq!(v("visible"), Some(7.0));
        assert_eq!(v("in_flight"), Some(4.0));
        assert!(text.contains("# TYPE callpipe_queue_messages gauge"));
    }

    #[test]
    fn health_starts_unready_and_keeps_the_reason() {
        let h = Health::new();
        assert!(h.is_live());
        assert!(!h.is_ready());
        assert_eq!(h.reason(), None);
        h.set_ready();
        assert!(h.is_ready());
        h.set_unready("model not found: /models/large-v3");
        assert!(!h.is_ready());
        assert_eq!(
            h.reason().as_deref(),
            Some("model not found: /models/large-v3")
        );
        h.set_ready();
        assert_eq!(h.reason(), None);
    }

    async fn get(router: &Router, uri: &str) -> (StatusCode, String, String) {
        let response = router
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    fn json(body: &str) -> serde_json::Value {
        serde_json::from_str(body).unwrap()
    }

    #[tokio::test]
    async fn healthz_follows_readiness() {
        let health = Health::new();
        let router = router(WorkerMetrics::new(), health.clone());

        let (status, _, body) = get(&router, "/healthz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            json(&body),
            serde_json::json!({"live": true, "ready": false, "reason": "starting: not ready yet"})
        );
        let (status, _, body) = get(&router, "/healthz/live").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json(&body)["live"], true);

        health.set_ready();
        for path in ["/healthz", "/healthz/ready"] {
            let (status, content_type, body) = get(&router, path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(content_type, "application/json");
            assert_eq!(
                json(&body),
                serde_json::json!({"live": true, "ready": true})
            );
        }

        health.set_unready("disk full: /var/lib/callpipe");
        for path in ["/healthz", "/healthz/ready"] {
            let (status, _, body) = get(&router, path).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
            assert_eq!(
                json(&body),
                serde_json::json!({"live": true, "ready": false,
                    "reason": "disk full: /var/lib/callpipe"})
            );
        }
        let (status, _, _) = get(&router, "/healthz/live").await;
        assert_eq!(status, StatusCode::OK, "an unready worker is still alive");

        let (status, _, _) = get(&router, "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn metrics_route_serves_the_text_format() {
        let metrics = WorkerMetrics::new();
        metrics.acked(Stage::Index);
        let router = router(metrics, Health::new());
        let (status, content_type, body) = get(&router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        assert_eq!(
            sample(
                &body,
                "callpipe_messages_acked_total",
                &[r#"stage="index""#]
            ),
            Some(1.0)
        );
    }

    /// One HTTP/1.1 request over a real socket, on a blocking thread.
    async fn raw_get(addr: SocketAddr, path: &str) -> String {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            response
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn serve_binds_answers_and_shuts_down() {
        let metrics = WorkerMetrics::new();
        metrics.received(Stage::Ingest);
        let health = Health::new();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr, task) = serve("127.0.0.1:0", router(metrics, health.clone()), async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        assert_ne!(addr.port(), 0);

        let response = raw_get(addr, "/healthz").await;
        assert!(response.starts_with("HTTP/1.1 503"), "{response}");
        health.set_ready();
        let response = raw_get(addr, "/healthz/ready").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let response = raw_get(addr, "/metrics").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains("callpipe_messages_received_total{stage=\"ingest\"} 1"));

        // A second server on the same address fails, naming it.
        let taken = addr.to_string();
        let err = serve(&taken, Router::new(), std::future::pending())
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&taken), "{err}");

        stop.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .expect("the server stops on shutdown")
            .unwrap();
    }
}
