//! `callpipe backfill` as a separate process against moto (S3, SQS) and redis-server, with the
//! job records in the data directory's metadata store: a kill and a rerun enqueue each object
//! version once, `--since`/`--until` select exactly, indexed calls are skipped, two backfills
//! share the lane's limit, a new upload goes before more backfill work, and bad input is named.

#[path = "../cloud/tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use serde_json::Value;

use callpipe_common::coord::Coordination as _;
use callpipe_common::messages::{IngestJob, StageMessage as _};
use support::moto::Moto;
use support::redis::RedisServer;

/// 0.25 s of 8 kHz 16-bit mono silence: a real WAV that ingest decodes in microseconds and
/// whose VAD finds no speech, so a call goes through every stage without engine time.
fn tiny_wav() -> Vec<u8> {
    let samples = 2000u32;
    let mut w = Vec::with_capacity(44 + 2 * samples as usize);
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + 2 * samples).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&8000u32.to_le_bytes());
    w.extend_from_slice(&16000u32.to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(2 * samples).to_le_bytes());
    w.resize(44 + 2 * samples as usize, 0);
    w
}

struct Env {
    moto: Moto,
    redis: RedisServer,
    dir: tempfile::TempDir,
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    /// name → (queue url, dead-letter queue url)
    queues: HashMap<&'static str, (String, String)>,
}

impl Env {
    async fn new() -> Env {
        let moto = Moto::start();
        let redis = RedisServer::start();
        let s3 = moto.s3().await;
        let sqs = moto.sqs().await;
        for bucket in ["archive", "recordings", "artifacts"] {
            s3.create_bucket().bucket(bucket).send().await.unwrap();
        }
        let mut queues = HashMap::new();
        for name in ["ingest", "transcribe", "index", "backfill"] {
            let urls = callpipe_cloud::sqs::create_queue_with_dlq(&sqs, &format!("bf-{name}"), 5)
                .await
                .unwrap();
            queues.insert(name, urls);
        }
        Env {
            moto,
            redis,
            dir: tempfile::tempdir().unwrap(),
            s3,
            sqs,
            queues,
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `callpipe` against this environment: S3/SQS on moto, Redis, the data directory's
    /// metadata store.
    fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_callpipe"));
        cmd.env_remove("CALLPIPE_CONFIG")
            .env("AWS_ENDPOINT_URL", self.moto.endpoint())
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("CALLPIPE_STORAGE__OBJECT_STORE", "s3")
            .env("CALLPIPE_STORAGE__ARTIFACTS_BUCKET", "artifacts")
            .env("CALLPIPE_STORAGE__RECORDINGS_BUCKET", "recordings")
            .env("CALLPIPE_STORAGE__S3_FORCE_PATH_STYLE", "true")
            .env("CALLPIPE_REDIS__URL", self.redis.url())
            .env("CALLPIPE_QUEUE__INGEST_URL", &self.queues["ingest"].0)
            .env(
                "CALLPIPE_QUEUE__TRANSCRIBE_URL",
                &self.queues["transcribe"].0,
            )
            .env("CALLPIPE_QUEUE__INDEX_URL", &self.queues["index"].0)
            .env("CALLPIPE_QUEUE__BACKFILL_URL", &self.queues["backfill"].0);
        cmd.arg("--data-dir").arg(self.data_dir()).args(args);
        cmd
    }

    fn output(&self, args: &[&str]) -> Output {
        self.cli(args).output().unwrap()
    }

    fn status(&self, job: &str) -> Value {
        let out = self.output(&["backfill", "status", job, "--json"]);
        assert!(
            out.status.success(),
            "status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    async fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .unwrap();
    }

    /// Every message of a queue: taken (and deleted), decoded as ingest jobs.
    async fn take_all(&self, queue: &str) -> Vec<IngestJob> {
        let mut out = Vec::new();
        loop {
            let got = self
                .sqs
                .receive_message()
                .queue_url(&self.queues[queue].0)
                .max_number_of_messages(10)
                .visibility_timeout(120)
                .send()
                .await
                .unwrap();
            let messages = got.messages.unwrap_or_default();
            if messages.is_empty() {
                return out;
            }
            for m in messages {
                out.push(IngestJob::decode(m.body().unwrap_or_default()).expect("an ingest job"));
                self.sqs
                    .delete_message()
                    .queue_url(&self.queues[queue].0)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    async fn coordination(&self) -> callpipe_cloud::redis::RedisCoordination {
        callpipe_cloud::redis::RedisCoordination::connect(callpipe_cloud::redis::RedisSettings {
            url: Some(self.redis.url()),
            ..Default::default()
        })
        .await
        .unwrap()
    }
}

/// A `callpipe` process with its stderr in a file.
struct Process {
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    fn spawn(env: &Env, name: &str, args: &[&str]) -> Process {
        let log = env.dir.path().join(format!("{name}.log"));
        let child = env
            .cli(args)
            .env("RUST_LOG", "info")
            .env("CALLPIPE_LOG_FORMAT", "json")
            .env("CALLPIPE_WORKER__LISTEN", "127.0.0.1:0")
            .env("CALLPIPE_WORKER__POLL_WAIT_S", "1")
            .env("CALLPIPE_TRANSCRIBE__REPLICAS", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Process {
            child: Some(child),
            log,
        }
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let until = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < until,
                "still running after {timeout:?}:\n{}",
                support::log_tail(&self.log)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn lines(&self) -> Vec<Value> {
        let Ok(file) = std::fs::File::open(&self.log) else {
            return Vec::new();
        };
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn job_of(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "backfill failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn counts_add_up(job: &Value) {
    let c = &job["counts"];
    let n = |k: &str| c[k].as_u64().unwrap();
    assert_eq!(
        n("listed"),
        n("enqueued")
            + n("skipped_indexed")
            + n("skipped_failed")
            + n("skipped_in_flight")
            + n("filtered"),
        "the counts add up: {c}"
    );
}

#[tokio::test]
async fn a_killed_backfill_resumes_and_enqueues_each_object_version_once() {
    let env = Env::new().await;
    let mut keys = Vec::new();
    for day in 1..=10 {
        for n in 0..30 {
            // Spaces, `+` and non-ASCII text in keys, exactly as customers write them.
            let key = match n % 3 {
                0 => format!("calls/2024/01/{day:02}/call {n:02}.wav"),
                1 => format!("calls/2024/01/{day:02}/a+b-{n:02}.wav"),
                _ => format!("calls/2024/01/{day:02}/ünï-{n:02}.wav"),
            };
            keys.push(key);
        }
        env.put(
            "archive",
            &format!("calls/2024/01/{day:02}/notes.txt"),
            b"x".to_vec(),
        )
        .await;
    }
    for key in &keys {
        env.put("archive", key, tiny_wav()).await;
    }
    let args = [
        "backfill",
        "s3://archive/calls/",
        "--rate",
        "60",
        "--json",
        "--job",
        "history",
    ];
    let mut first = Process::spawn(&env, "backfill-1", &args);
    // Kill it once some of it is enqueued.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let out = env.output(&["backfill", "status", "history", "--json"]);
        if out.status.success() {
            let s: Value = serde_json::from_slice(&out.stdout).unwrap();
            if s["job"]["counts"]["enqueued"].as_u64().unwrap_or(0) >= 60 {
                break;
            }
        }
        assert!(Instant::now() < until, "{}", support::log_tail(&first.log));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    first.kill9();
    let killed = env.status("history");
    assert_eq!(killed["job"]["state"], "running", "{killed}");
    assert_eq!(killed["job"]["survey"]["objects"], 300, "{killed}");
    counts_add_up(&killed["job"]);

    // The rerun, without a rate limit this time.
    let second = env.output(&[
        "backfill",
        "s3://archive/calls/",
        "--json",
        "--job",
        "history",
    ]);
    let done = job_of(&second);
    assert_eq!(done["job"]["state"], "done", "{done}");
    assert_eq!(done["job"]["pass"], 1, "the rerun resumed the same pass");
    counts_add_up(&done["job"]);
    let c = &done["job"]["counts"];
    assert_eq!(c["filtered"], 10, "the .txt files: {c}");
    assert_eq!(
        c["enqueued"].as_u64().unwrap() + c["skipped_in_flight"].as_u64().unwrap(),
        300,
        "every audio object enqueued, or found already in flight after the kill: {c}"
    );

    let jobs = env.take_all("backfill").await;
    let mut seen: HashMap<(String, Option<String>), usize> = HashMap::new();
    for j in &jobs {
        assert_eq!(j.lane, callpipe_common::Lane::Backfill);
        assert_eq!(j.backfill.as_deref(), Some("history/1"));
        *seen
            .entry((j.source.uri.clone(), j.source.etag.clone()))
            .or_default() += 1;
    }
    assert_eq!(jobs.len(), 300, "one message per object version");
    assert!(seen.values().all(|n| *n == 1), "none twice");
    for key in &keys {
        assert!(
            seen.keys()
                .any(|(uri, _)| *uri == format!("s3://archive/{key}")),
            "{key} enqueued with its key exactly"
        );
    }
    assert!(
        env.take_all("ingest").await.is_empty(),
        "nothing went to the ingest queue"
    );
    // No worker ran: every enqueued call still holds its place in the lane.
    let lane = env.coordination().await;
    assert_eq!(lane.occupancy("in-flight/backfill").await.unwrap(), 300);
    let status = env.status("history");
    assert_eq!(status["progress"]["lane_in_flight"], 300, "{status}");
}

#[tokio::test]
async fn since_and_until_select_exactly_and_indexed_calls_are_skipped() {
    let env = Env::new().await;
    for day in 1..=6 {
        for n in 0..3 {
            env.put(
                "archive",
                &format!("calls/2024/01/{day:02}/c{n}.wav"),
                tiny_wav(),
            )
            .await;
        }
    }
    // A timestamp in the file name wins over the folders.
    env.put(
        "archive",
        "calls/2024/01/01/20240104T101010-late.wav",
        tiny_wav(),
    )
    .await;
    // Index two of day 3 first, with `callpipe run` on the same data directory.
    let run = env
        .cli(&[
            "--threads",
            "1",
            "run",
            "--json",
            "s3://archive/calls/2024/01/03/c0.wav",
        ])
        .env("CALLPIPE_QUEUE__INGEST_URL", "")
        .env("CALLPIPE_QUEUE__TRANSCRIBE_URL", "")
        .env("CALLPIPE_QUEUE__INDEX_URL", "")
        .env("CALLPIPE_QUEUE__BACKFILL_URL", "")
        .env("CALLPIPE_REDIS__URL", "")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let dry = job_of(&env.output(&[
        "backfill",
        "s3://archive/calls/",
        "--since",
        "2024-01-03",
        "--until",
        "2024-01-04",
        "--dry-run",
        "--json",
    ]));
    assert_eq!(dry["counts"]["enqueued"], 6, "{dry}");
    assert_eq!(dry["counts"]["skipped_indexed"], 1, "{dry}");
    assert!(dry["audio_hours"].as_f64().unwrap() > 0.0, "{dry}");
    assert!(
        env.take_all("backfill").await.is_empty(),
        "a dry run enqueues nothing"
    );

    let out = job_of(&env.output(&[
        "backfill",
        "s3://archive/calls/",
        "--since",
        "2024-01-03",
        "--until",
        "2024-01-04",
        "--json",
    ]));
    assert_eq!(out["job"]["counts"]["skipped_indexed"], 1, "{out}");
    let mut sources: Vec<String> = env
        .take_all("backfill")
        .await
        .into_iter()
        .map(|j| j.source.uri)
        .collect();
    sources.sort();
    assert_eq!(
        sources,
        [
            "s3://archive/calls/2024/01/01/20240104T101010-late.wav",
            "s3://archive/calls/2024/01/03/c1.wav",
            "s3://archive/calls/2024/01/03/c2.wav",
            "s3://archive/calls/2024/01/04/c0.wav",
            "s3://archive/calls/2024/01/04/c1.wav",
            "s3://archive/calls/2024/01/04/c2.wav",
        ],
        "days 3 and 4 (a bare --until includes its day), less the indexed call"
    );
}

#[tokio::test]
async fn two_backfills_share_the_lane_limit_and_workers_drain_it() {
    let env = Env::new().await;
    for prefix in ["a", "b"] {
        for n in 0..12 {
            env.put(
                "archive",
                &format!("{prefix}/2024-02-0{}/c{n:02}.wav", 1 + n % 3),
                tiny_wav(),
            )
            .await;
        }
    }
    let limit = ["--max-in-flight", "5", "--json"];
    let mut a = Process::spawn(
        &env,
        "backfill-a",
        &[&["backfill", "s3://archive/a/"][..], &limit].concat(),
    );
    let mut b = Process::spawn(
        &env,
        "backfill-b",
        &[&["backfill", "s3://archive/b/"][..], &limit].concat(),
    );
    let lane = env.coordination().await;
    // No workers yet: together they fill the lane to the limit and stop there.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(lane.occupancy("in-flight/backfill").await.unwrap(), 5);
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let depth = env
        .sqs
        .get_queue_attributes()
        .queue_url(&env.queues["backfill"].0)
        .attribute_names(A::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&A::ApproximateNumberOfMessages]
        .clone();
    assert_eq!(depth, "5", "the lane's queue holds max_in_flight calls");

    // A worker drains the lane; the limit holds all the way.
    let worker = Process::spawn(
        &env,
        "worker",
        &["--threads", "1", "worker", "--stage", "all"],
    );
    let until = Instant::now() + Duration::from_secs(240);
    let mut peak = 0;
    let (mut a_done, mut b_done) = (None, None);
    while a_done.is_none() || b_done.is_none() {
        peak = peak.max(lane.occupancy("in-flight/backfill").await.unwrap());
        if a_done.is_none() {
            a_done = a.child.as_mut().unwrap().try_wait().unwrap();
        }
        if b_done.is_none() {
            b_done = b.child.as_mut().unwrap().try_wait().unwrap();
        }
        assert!(
            Instant::now() < until,
            "backfills not done:\n{}\n{}\n{}",
            support::log_tail(&a.log),
            support::log_tail(&b.log),
            support::log_tail(&worker.log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.child = None;
    b.child = None;
    assert!(
        a_done.unwrap().success() && b_done.unwrap().success(),
        "{a_done:?} {b_done:?}\n{}\n{}",
        support::log_tail(&a.log),
        support::log_tail(&b.log)
    );
    assert!(peak <= 5, "the lane never held more than the limit: {peak}");
    // Every call is indexed (worker logs), once.
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let indexed = worker
            .lines()
            .iter()
            .filter(|l| l["message"] == "indexed")
            .count();
        if indexed >= 24 {
            assert_eq!(indexed, 24, "each call once");
            break;
        }
        assert!(Instant::now() < until, "{}", support::log_tail(&worker.log));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(lane.occupancy("in-flight/backfill").await.unwrap(), 0);
    let listed: Value = {
        let out = env.output(&["backfill", "status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let jobs = listed.as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    for j in jobs {
        assert_eq!(j["job"]["state"], "done", "{j}");
        assert_eq!(j["progress"]["calls"]["indexed"], 12, "{j}");
    }
}

#[tokio::test]
async fn a_new_upload_goes_before_more_backfill_work() {
    let env = Env::new().await;
    for n in 0..40 {
        env.put(
            "archive",
            &format!("hist/2023-05-01/c{n:02}.wav"),
            tiny_wav(),
        )
        .await;
    }
    let worker = Process::spawn(
        &env,
        "worker",
        &["--threads", "1", "worker", "--stage", "all"],
    );
    let mut backfill = Process::spawn(
        &env,
        "backfill",
        &[
            "backfill",
            "s3://archive/hist/",
            "--max-in-flight",
            "3",
            "--json",
        ],
    );
    // Wait until backfill calls are flowing, then announce an upload on the ingest queue.
    let until = Instant::now() + Duration::from_secs(120);
    while !worker.lines().iter().any(|l| l["message"] == "indexed") {
        assert!(Instant::now() < until, "{}", support::log_tail(&worker.log));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.put("recordings", "new/just-ended.wav", tiny_wav())
        .await;
    let head = env
        .s3
        .head_object()
        .bucket("recordings")
        .key("new/just-ended.wav")
        .send()
        .await
        .unwrap();
    let job = IngestJob::new(
        callpipe_common::messages::SourceRef {
            uri: "s3://recordings/new/just-ended.wav".into(),
            version: None,
            etag: head.e_tag().map(|e| e.trim_matches('"').to_owned()),
            size: None,
            recorded_at_ms: None,
            modified_ms: None,
        },
        callpipe_common::Lane::Upload,
        false,
    );
    env.sqs
        .send_message()
        .queue_url(&env.queues["ingest"].0)
        .message_body(job.encode())
        .send()
        .await
        .unwrap();
    assert!(backfill.wait(Duration::from_secs(240)).success());
    let until = Instant::now() + Duration::from_secs(120);
    let lines = loop {
        let lines = worker.lines();
        if lines.iter().filter(|l| l["message"] == "indexed").count() >= 41 {
            break lines;
        }
        assert!(Instant::now() < until, "{}", support::log_tail(&worker.log));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let upload_id =
        callpipe_common::CallId::from_source("s3://recordings/new/just-ended.wav").to_string();
    let at = |l: &Value| l["timestamp"].as_str().unwrap_or_default().to_owned();
    let of = |message: &str, stage: &str, pick: &dyn Fn(&Value) -> bool| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l["message"] == message && l["span"]["stage"] == stage && pick(l))
            .map(at)
            .collect()
    };
    let upload_started = of("started", "ingest", &|l| {
        l["span"]["call_id"] == upload_id.as_str()
    });
    let upload_indexed = of("indexed", "index", &|l| {
        l["span"]["call_id"] == upload_id.as_str()
    });
    assert_eq!(
        (upload_started.len(), upload_indexed.len()),
        (1, 1),
        "the upload went through once"
    );
    let later_backfill: Vec<String> = of("started", "ingest", &|l| l["span"]["lane"] == "backfill")
        .into_iter()
        .filter(|t| *t > upload_started[0])
        .collect();
    assert!(
        !later_backfill.is_empty(),
        "backfill went on after the upload"
    );
    assert!(
        later_backfill.iter().all(|t| *t > upload_indexed[0]),
        "no backfill call started between the upload's ingest ({}) and its indexing ({}): {later_backfill:?}",
        upload_started[0],
        upload_indexed[0]
    );
}

#[tokio::test]
async fn bad_input_is_named() {
    let env = Env::new().await;
    let out = env.output(&["backfill", "s3://no-such-bucket/calls/", "--json"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-bucket"), "{stderr}");
    let jobs: Value =
        serde_json::from_slice(&env.output(&["backfill", "status", "--json"]).stdout).unwrap();
    assert_eq!(jobs[0]["job"]["state"], "failed", "{jobs}");
    assert!(jobs[0]["job"]["error"]
        .as_str()
        .unwrap()
        .contains("no-such-bucket"));

    let out = env.output(&["backfill", "s3://archive/x/", "--since", "someday"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("someday"));
    let out = env.output(&[
        "backfill",
        "s3://archive/x/",
        "--since",
        "2024-02-01",
        "--until",
        "2024-01-01",
    ]);
    assert!(!out.status.success());
    let out = env.output(&["backfill", "status", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    let out = env.output(&["backfill", "pause", "nope"]);
    assert!(!out.status.success());

    // An empty prefix is a job that is done at once.
    let empty = job_of(&env.output(&["backfill", "s3://archive/nothing-here/", "--json"]));
    assert_eq!(empty["job"]["state"], "done");
    assert_eq!(empty["job"]["counts"]["listed"], 0);
}

/// Credentials the bucket refuses (s3s-fs checks signatures; moto checks nothing): the command
/// fails naming the prefix and the refusal, and the job is not marked failed, since the right
/// permissions make a rerun continue it.
#[tokio::test]
async fn a_prefix_without_access_is_named_and_the_job_waits_for_permissions() {
    let env = Env::new().await;
    let s3s = support::s3s::S3sFs::start();
    std::fs::create_dir_all(s3s.root().join("locked/calls")).unwrap();
    std::fs::write(s3s.root().join("locked/calls/a.wav"), tiny_wav()).unwrap();
    let denied = env
        .cli(&[
            "backfill",
            "s3://locked/calls/",
            "--job",
            "locked",
            "--json",
        ])
        .env("AWS_ENDPOINT_URL_S3", s3s.endpoint())
        .env("AWS_ACCESS_KEY_ID", support::s3s::ACCESS)
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .output()
        .unwrap();
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(stderr.contains("s3://locked/calls/"), "{stderr}");
    assert!(
        stderr.contains("denied") || stderr.contains("credentials"),
        "{stderr}"
    );
    let status = env.status("locked");
    assert_eq!(status["job"]["state"], "running", "{status}");
    assert_eq!(status["job"]["counts"]["enqueued"], 0, "{status}");
}
