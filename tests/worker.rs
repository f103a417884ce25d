//! The distributed workers as separate processes against real local servers: moto for S3 and
//! SQS, redis-server for coordination. Recordings are uploaded with the AWS SDK, the bucket's
//! notifications feed the ingest queue, and the stages run as `callpipe worker` processes; the
//! index stage writes the embedded stores of one data directory.
//!
//! The tests named `cloud_stores_*` put the metadata in MongoDB (SecantusDB) and the vectors in
//! OpenSearch (the strict Serverless emulator of `callpipe-testkit`), created by
//! `callpipe setup`, and check them through the stores themselves as well as the CLI.
//!
//! Each test ends with every call indexed exactly once (one `indexed` log line per call across
//! the index workers), the expected failures recorded with their reasons, and nothing left in
//! the queues but what belongs in a dead-letter queue.

#[path = "../cloud/tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;

use callpipe_testkit::aoss::{StrictAoss, StrictAossOptions};
use support::mongo::MongoServer;
use support::moto::Moto;
use support::redis::RedisServer;

const MAX_RECEIVES: u32 = 3;
const VISIBILITY_S: u64 = 10;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sample(name: &str) -> Vec<u8> {
    let dir = root().join("samples");
    let path = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains(name))
        .unwrap_or_else(|| panic!("no sample named like {name}"));
    std::fs::read(path).unwrap()
}

/// A TCP proxy in front of moto that can be taken down: while down, every connection is cut
/// and new ones are closed at once, which is what a worker sees of an unreachable endpoint.
struct Proxy {
    port: u16,
    down: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(upstream: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&down);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if flag.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let flag = Arc::clone(&flag);
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let cut = async {
                        while !flag.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    };
                    tokio::select! {
                        _ = copy => {}
                        _ = cut => {
                            let _ = inbound.shutdown().await;
                        }
                    }
                });
            }
        });
        Proxy { port, down }
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

/// The buckets, queues and servers of one test, and the worker processes it starts.
struct Cluster {
    moto: Moto,
    redis: RedisServer,
    proxy: Proxy,
    dir: tempfile::TempDir,
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    /// stage → (queue url, dead-letter queue url)
    queues: HashMap<&'static str, (String, String)>,
    /// MongoDB and OpenSearch instead of the data directory's stores.
    cloud: Option<CloudStores>,
}

struct CloudStores {
    mongo: MongoServer,
    aoss: StrictAoss,
}

/// How long the emulator hides new documents from searches (Serverless: about 60 s).
const VISIBILITY_DELAY: Duration = Duration::from_secs(2);

impl Cluster {
    async fn new() -> Cluster {
        let moto = Moto::start();
        let redis = RedisServer::start();
        let moto_port: u16 = moto.endpoint().rsplit(':').next().unwrap().parse().unwrap();
        let proxy = Proxy::start(moto_port).await;
        let s3 = moto.s3().await;
        let sqs = moto.sqs().await;
        for bucket in ["recordings", "artifacts"] {
            s3.create_bucket().bucket(bucket).send().await.unwrap();
        }
        let mut queues = HashMap::new();
        for stage in ["ingest", "transcribe", "index"] {
            let urls = callpipe_cloud::sqs::create_queue_with_dlq(
                &sqs,
                &format!("callpipe-{stage}"),
                MAX_RECEIVES,
            )
            .await
            .unwrap();
            queues.insert(stage, urls);
        }
        // Uploads to the recordings bucket announce themselves on the ingest queue, as the
        // Terraform wires it.
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&queues["ingest"].0)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
            .clone();
        use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
        s3.put_bucket_notification_configuration()
            .bucket("recordings")
            .notification_configuration(
                NotificationConfiguration::builder()
                    .queue_configurations(
                        QueueConfiguration::builder()
                            .queue_arn(arn)
                            .events(Event::S3ObjectCreated)
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
        Cluster {
            moto,
            redis,
            proxy,
            dir: tempfile::tempdir().unwrap(),
            s3,
            sqs,
            queues,
            cloud: None,
        }
    }

    /// A cluster whose stores are MongoDB and OpenSearch, set up by `callpipe setup`.
    async fn with_cloud_stores() -> Cluster {
        let mut cluster = Cluster::new().await;
        let aoss = StrictAoss::start(StrictAossOptions {
            visibility_delay: VISIBILITY_DELAY,
            credentials: Some(("test".into(), "test".into())),
            region: Some("us-east-1".into()),
            port: 0,
        })
        .expect("starting the OpenSearch emulator");
        cluster.cloud = Some(CloudStores {
            mongo: MongoServer::start(),
            aoss,
        });
        let out = cluster.cli(&["setup"]).output().unwrap();
        assert!(
            out.status.success(),
            "callpipe setup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }

    /// `callpipe` with this cluster's backends in its environment.
    fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_callpipe"));
        cmd.env_remove("CALLPIPE_CONFIG")
            .env(
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.proxy.port),
            )
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("CALLPIPE_STORAGE__OBJECT_STORE", "s3")
            .env("CALLPIPE_STORAGE__ARTIFACTS_BUCKET", "artifacts")
            .env("CALLPIPE_STORAGE__RECORDINGS_BUCKET", "recordings")
            .env("CALLPIPE_STORAGE__S3_FORCE_PATH_STYLE", "true")
            .env("CALLPIPE_REDIS__URL", self.redis.url());
        if let Some(cloud) = &self.cloud {
            cmd.env("CALLPIPE_STORAGE__METADATA", "mongodb")
                .env("CALLPIPE_MONGODB__URI", cloud.mongo.uri())
                .env("CALLPIPE_MONGODB__DATABASE", "callpipe-test")
                .env("CALLPIPE_STORAGE__VECTOR_INDEX", "opensearch")
                .env("CALLPIPE_OPENSEARCH__ENDPOINT", cloud.aoss.endpoint());
        }
        // Global flags first: `args` may name a subcommand.
        cmd.arg("--data-dir").arg(self.data_dir()).args(args);
        cmd
    }

    fn search(&self, query: &str) -> Vec<Value> {
        let out = self.cli(&["search", "--json", query]).output().unwrap();
        assert!(
            out.status.success(),
            "search {query:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn worker(&self, stage: &str) -> Worker {
        let n = std::fs::read_dir(self.dir.path()).unwrap().count();
        let log = self.dir.path().join(format!("worker-{stage}-{n}.log"));
        let child = self
            .cli(&["--threads", "1", "worker", "--stage", stage])
            .env("RUST_LOG", "info")
            .env("CALLPIPE_LOG_FORMAT", "json")
            .env("CALLPIPE_QUEUE__INGEST_URL", &self.queues["ingest"].0)
            .env(
                "CALLPIPE_QUEUE__TRANSCRIBE_URL",
                &self.queues["transcribe"].0,
            )
            .env("CALLPIPE_QUEUE__INDEX_URL", &self.queues["index"].0)
            .env(
                "CALLPIPE_WORKER__VISIBILITY_TIMEOUT_S",
                VISIBILITY_S.to_string(),
            )
            .env("CALLPIPE_WORKER__LISTEN", "127.0.0.1:0")
            .env("CALLPIPE_WORKER__POLL_WAIT_S", "1")
            .env("CALLPIPE_WORKER__RETRY_BASE_S", "0.5")
            .env("CALLPIPE_WORKER__RETRY_MAX_S", "2")
            .env("CALLPIPE_WORKER__DRAIN_TIMEOUT_S", "30")
            .env("CALLPIPE_TRANSCRIBE__REPLICAS", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting a worker");
        Worker {
            child: Some(child),
            log,
        }
    }

    async fn upload(&self, key: &str, bytes: Vec<u8>) {
        self.s3
            .put_object()
            .bucket("recordings")
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .unwrap();
    }

    async fn send(&self, stage: &str, body: &str) {
        self.sqs
            .send_message()
            .queue_url(&self.queues[stage].0)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    /// Every call of the data directory, once the index worker has created it.
    fn calls(&self) -> Vec<Value> {
        if self.cloud.is_none() && !self.data_dir().join("metadata.db").exists() {
            return Vec::new();
        }
        let out = self.cli(&["calls", "list", "--json"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until `n` calls are indexed or failed.
    async fn settled(&self, n: usize, timeout: Duration, workers: &[&Worker]) -> Vec<Value> {
        let until = Instant::now() + timeout;
        loop {
            let calls = self.calls();
            let done = calls
                .iter()
                .filter(|c| c["status"] == "indexed" || c["status"] == "failed")
                .count();
            if done >= n {
                return calls;
            }
            if Instant::now() > until {
                let logs: Vec<String> = workers.iter().map(|w| w.tail()).collect();
                panic!(
                    "only {done} of {n} calls settled in {timeout:?}: {calls:#?}\n{}",
                    logs.join("\n---\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Visible plus in-flight messages.
    async fn depth(&self, url: &str) -> u64 {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap();
        [
            A::ApproximateNumberOfMessages,
            A::ApproximateNumberOfMessagesNotVisible,
        ]
        .iter()
        .map(|a| attrs[a].parse::<u64>().unwrap())
        .sum()
    }

    /// The bodies waiting in a dead-letter queue.
    async fn dead_letters(&self, stage: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let got = self
                .sqs
                .receive_message()
                .queue_url(&self.queues[stage].1)
                .max_number_of_messages(10)
                .visibility_timeout(60)
                .send()
                .await
                .unwrap();
            let messages = got.messages.unwrap_or_default();
            if messages.is_empty() {
                return out;
            }
            out.extend(messages.into_iter().filter_map(|m| m.body));
        }
    }

    /// Waits until the stage queues are empty (the workers acknowledged everything).
    async fn drained(&self, timeout: Duration) {
        let until = Instant::now() + timeout;
        loop {
            let mut left = 0;
            for stage in ["ingest", "transcribe", "index"] {
                left += self.depth(&self.queues[stage].0).await;
            }
            if left == 0 {
                return;
            }
            assert!(
                Instant::now() < until,
                "{left} messages left in the stage queues"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Cluster {
    /// A failed test keeps its directory (workers' logs, data) for a look.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            eprintln!("kept for inspection: {}", dir.keep().display());
        }
    }
}

struct Worker {
    child: Option<Child>,
    log: PathBuf,
}

impl Worker {
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

    fn tail(&self) -> String {
        format!("{}:\n{}", self.log.display(), support::log_tail(&self.log))
    }

    /// Log events with this message.
    fn events(&self, message: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| l["message"] == message)
            .collect()
    }

    async fn wait_for(&self, message: &str, timeout: Duration) -> Value {
        let until = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events(message).into_iter().next() {
                return e;
            }
            assert!(
                Instant::now() < until,
                "no `{message}` within {timeout:?}\n{}",
                self.tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn sigterm(&self) {
        let pid = self.child.as_ref().expect("running").id() as i32;
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }

    async fn exit_status(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let until = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < until,
                "still running after {timeout:?}\n{}",
                self.tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Calls indexed per call id, over the index workers' logs.
fn indexed_counts(workers: &[&Worker]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for w in workers {
        for e in w.events("indexed") {
            let id = e["span"]["call_id"].as_str().unwrap_or_default().to_owned();
            *counts.entry(id).or_insert(0) += 1;
        }
    }
    counts
}

fn search(data: &Path, query: &str) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_callpipe"))
        .env_remove("CALLPIPE_CONFIG")
        .arg("--data-dir")
        .arg(data)
        .args(["search", "--json", query])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn assert_exactly_once(calls: &[Value], workers: &[&Worker]) {
    let counts = indexed_counts(workers);
    for call in calls.iter().filter(|c| c["status"] == "indexed") {
        let id = call["call_id"].as_str().unwrap();
        assert_eq!(
            counts.get(id).copied().unwrap_or(0),
            1,
            "call {id} ({}) must be indexed exactly once: {counts:?}",
            call["source"]
        );
    }
}

/// A notification for an object as S3 sends it (key URL-encoded), for duplicates and for
/// objects that do not exist.
fn notification(key_encoded: &str, etag: &str) -> String {
    serde_json::json!({"Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "eventTime": "2026-12-01T10:00:00.000Z",
        "s3": {
            "bucket": {"name": "recordings"},
            "object": {"key": key_encoded, "size": 1, "eTag": etag, "sequencer": "0"}
        }
    }]})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_indexed_once_through_kills_duplicates_and_bad_input() {
    let cluster = Cluster::new().await;
    let mut ingest = [cluster.worker("ingest"), cluster.worker("ingest")];
    let mut transcribers = [cluster.worker("transcribe"), cluster.worker("transcribe")];
    let index = cluster.worker("index");

    // Keys as customers write them: spaces, `+`, unicode.
    let good = [
        ("2026/03/02/billing refund+1.wav", "billing"),
        ("2026/04/11/internet-outage é.wav", "internet"),
        ("2026/05/20/parcel.wav", "parcel"),
    ];
    for (key, name) in good {
        cluster.upload(key, sample(name)).await;
    }
    cluster
        .upload(
            "2026/07/01/corrupt.wav",
            b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk".to_vec(),
        )
        .await;
    // The same notification again (a redelivery S3 may make), a notification for an object
    // that does not exist, and a message that is not one at all.
    let head = cluster
        .s3
        .head_object()
        .bucket("recordings")
        .key("2026/05/20/parcel.wav")
        .send()
        .await
        .unwrap();
    let etag = head.e_tag.unwrap();
    cluster
        .send("ingest", &notification("2026/05/20/parcel.wav", &etag))
        .await;
    cluster
        .send("ingest", &notification("2026/08/01/missing.wav", "\"0\""))
        .await;
    cluster.send("ingest", "poison: not a notification").await;

    // kill -9 whichever transcribe worker first holds a call; its message comes back after
    // the visibility timeout and the other worker finishes the call.
    let until = Instant::now() + Duration::from_secs(120);
    let first = loop {
        if let Some(i) = (0..2).find(|&i| !transcribers[i].events("started").is_empty()) {
            break i;
        }
        assert!(
            Instant::now() < until,
            "no transcribe job started\n{}",
            transcribers[0].tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    transcribers[first].kill9();

    let workers = [
        &ingest[0],
        &ingest[1],
        &transcribers[0],
        &transcribers[1],
        &index,
    ];
    let calls = cluster.settled(5, Duration::from_secs(300), &workers).await;
    cluster.drained(Duration::from_secs(60)).await;

    let by_key = |k: &str| {
        calls
            .iter()
            .find(|c| c["source"] == format!("s3://recordings/{k}"))
            .unwrap_or_else(|| panic!("no call for {k}: {calls:#?}"))
    };
    for (key, _) in good {
        assert_eq!(by_key(key)["status"], "indexed", "{key}");
    }
    let corrupt = by_key("2026/07/01/corrupt.wav");
    assert_eq!(corrupt["status"], "failed");
    assert_eq!(corrupt["error"]["stage"], "ingest");
    assert!(corrupt["error"]["reason"]
        .as_str()
        .unwrap()
        .contains("corrupt.wav"));
    let missing = by_key("2026/08/01/missing.wav");
    assert_eq!(missing["status"], "failed");
    assert!(
        missing["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("missing.wav"),
        "{missing}"
    );
    assert_eq!(calls.len(), 5, "one record per call: {calls:#?}");
    assert_exactly_once(&calls, &[&index]);

    // The poison message went to the ingest DLQ after its receives; nothing else did.
    assert_eq!(
        cluster.dead_letters("ingest").await,
        ["poison: not a notification"]
    );
    assert!(cluster.dead_letters("transcribe").await.is_empty());
    assert!(cluster.dead_letters("index").await.is_empty());

    let hits = search(&cluster.data_dir(), "refund");
    assert!(
        hits.iter()
            .any(|h| h.to_string().contains("billing refund+1.wav")),
        "search finds the uploaded call: {hits:#?}"
    );
    ingest.iter_mut().for_each(Worker::kill9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_and_the_aws_endpoint_going_down_fail_no_call() {
    let mut cluster = Cluster::new().await;
    let ingest = cluster.worker("ingest");
    let transcribe = cluster.worker("transcribe");
    let index = cluster.worker("index");
    let keys = ["a/billing.wav", "a/outage.wav", "a/cancel.wav"];
    for (key, name) in keys.iter().zip(["billing", "internet", "subscription"]) {
        cluster.upload(key, sample(name)).await;
    }
    transcribe
        .wait_for("started", Duration::from_secs(120))
        .await;
    cluster.redis.stop();
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.redis.start_again();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.proxy.set_down(true);
    tokio::time::sleep(Duration::from_secs(6)).await;
    cluster.proxy.set_down(false);

    let workers = [&ingest, &transcribe, &index];
    let calls = cluster.settled(3, Duration::from_secs(300), &workers).await;
    cluster.drained(Duration::from_secs(60)).await;
    assert!(
        calls.iter().all(|c| c["status"] == "indexed"),
        "an outage fails no call: {calls:#?}"
    );
    assert_exactly_once(&calls, &[&index]);
    for stage in ["ingest", "transcribe", "index"] {
        assert!(cluster.dead_letters(stage).await.is_empty(), "{stage} DLQ");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_job_in_flight_and_exits_zero() {
    let cluster = Cluster::new().await;
    let ingest = cluster.worker("ingest");
    let mut transcribe = cluster.worker("transcribe");
    let index = cluster.worker("index");
    for (key, name) in [("t/one.wav", "billing"), ("t/two.wav", "parcel")] {
        cluster.upload(key, sample(name)).await;
    }
    transcribe
        .wait_for("started", Duration::from_secs(120))
        .await;
    let asked = Instant::now();
    transcribe.sigterm();
    let status = transcribe.exit_status(Duration::from_secs(45)).await;
    assert!(
        status.success(),
        "SIGTERM exits 0: {status:?}\n{}",
        transcribe.tail()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(40),
        "within the drain deadline"
    );
    // The call it held was finished before it exited, not abandoned.
    assert!(
        !transcribe.events("stopped").is_empty(),
        "it logs its orderly stop\n{}",
        transcribe.tail()
    );
    let again = cluster.worker("transcribe");
    let workers = [&ingest, &transcribe, &again, &index];
    let calls = cluster.settled(2, Duration::from_secs(300), &workers).await;
    cluster.drained(Duration::from_secs(60)).await;
    assert!(calls.iter().all(|c| c["status"] == "indexed"), "{calls:#?}");
    assert_exactly_once(&calls, &[&index]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_reads_an_s3_prefix_and_resumes() {
    let cluster = Cluster::new().await;
    cluster
        .upload("calls/2026-03-02T09-14-05_billing.wav", sample("billing"))
        .await;
    cluster
        .upload("calls/deeper/parcel.wav", sample("parcel"))
        .await;
    cluster
        .upload("calls/notes.txt", b"not a call".to_vec())
        .await;
    cluster
        .upload("elsewhere/cancel.wav", sample("subscription"))
        .await;
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_callpipe"))
            .env_remove("CALLPIPE_CONFIG")
            .env("AWS_ENDPOINT_URL", cluster.moto.endpoint())
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("CALLPIPE_STORAGE__S3_FORCE_PATH_STYLE", "true")
            .args(["--threads", "2", "--data-dir"])
            .arg(cluster.data_dir())
            .args(["run", "--json", "s3://recordings/calls/"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["calls_found"], 2, "{summary}");
    assert_eq!(summary["calls_indexed"], 2, "{summary}");
    let calls = cluster.calls();
    let billing = calls
        .iter()
        .find(|c| c["source"] == "s3://recordings/calls/2026-03-02T09-14-05_billing.wav")
        .expect("the billing call");
    // The recording time comes from the key's timestamp.
    assert_eq!(billing["recorded_at_ms"], 1_772_442_845_000i64);

    let out = run(&[]);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        summary["calls_skipped"], 2,
        "a rerun skips what is indexed: {summary}"
    );
}

/// The OpenSearch index the cluster's workers write, read directly.
async fn vector_index(cluster: &Cluster) -> callpipe_cloud::opensearch::OpenSearchIndex {
    let cloud = cluster.cloud.as_ref().expect("cloud stores");
    let aws = callpipe_cloud::aws::config_loader(Some("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .load()
        .await;
    callpipe_cloud::opensearch::OpenSearchIndex::new(
        &callpipe_cloud::opensearch::OpenSearchSettings {
            endpoint: cloud.aoss.endpoint(),
            index: "callpipe-segments".into(),
            region: None,
        },
        384,
        "all-MiniLM-L6-v2",
        &aws,
    )
    .expect("the vector index")
}

/// The (revision, count) of the documents OpenSearch shows for a call, once they are
/// visible.
async fn vector_revisions(
    index: &callpipe_cloud::opensearch::OpenSearchIndex,
    call_id: &str,
) -> HashMap<String, usize> {
    use callpipe_common::store::{SearchFilter, VectorIndex as _};
    let filter = SearchFilter {
        call_id: Some(callpipe_common::CallId::from_stored(call_id)),
        ..Default::default()
    };
    let mut query = vec![0.0f32; 384];
    query[0] = 1.0;
    let mut out = HashMap::new();
    for hit in index.knn(&query, 1000, &filter).await.expect("knn") {
        *out.entry(hit.key.revision.to_string()).or_insert(0) += 1;
    }
    out
}

/// Waits until OpenSearch shows exactly `want` (revision → documents) for the call.
async fn vectors_become(
    index: &callpipe_cloud::opensearch::OpenSearchIndex,
    call_id: &str,
    want: &HashMap<String, usize>,
) {
    let until = Instant::now() + VISIBILITY_DELAY * 10;
    loop {
        let got = vector_revisions(index, call_id).await;
        if &got == want {
            return;
        }
        assert!(
            Instant::now() < until,
            "call {call_id}: OpenSearch shows {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn indexed_call<'a>(calls: &'a [Value], source_end: &str) -> &'a Value {
    calls
        .iter()
        .find(|c| {
            c["source"]
                .as_str()
                .unwrap_or_default()
                .ends_with(source_end)
        })
        .unwrap_or_else(|| panic!("no call from {source_end}: {calls:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_stores_hold_each_call_once_and_reprocessing_leaves_only_the_new_revision() {
    let cluster = Cluster::with_cloud_stores().await;
    let ingest = cluster.worker("ingest");
    let transcribe = cluster.worker("transcribe");
    let index = cluster.worker("index");
    for (key, name) in [
        ("2026/03/billing.wav", "billing"),
        ("2026/04/internet outage+1.wav", "internet"),
        ("2026/05/parcel.wav", "parcel"),
    ] {
        cluster.upload(key, sample(name)).await;
    }
    let workers = [&ingest, &transcribe, &index];
    let calls = cluster.settled(3, Duration::from_secs(300), &workers).await;
    assert!(calls.iter().all(|c| c["status"] == "indexed"), "{calls:#?}");
    assert_exactly_once(&calls, &[&index]);
    cluster.drained(Duration::from_secs(60)).await;

    // OpenSearch holds each call's segments once, of its indexed revision.
    let vectors = vector_index(&cluster).await;
    for call in &calls {
        let id = call["call_id"].as_str().unwrap();
        let want = HashMap::from([(
            call["indexed_revision"].as_str().unwrap().to_owned(),
            call["segments"].as_u64().unwrap() as usize,
        )]);
        vectors_become(&vectors, id, &want).await;
    }

    // Search answers from both halves once the documents are visible: a paraphrase (no word
    // in common) and a rare word.
    tokio::time::sleep(VISIBILITY_DELAY).await;
    let hits = cluster.search("my home wifi keeps disconnecting at night");
    assert!(
        hits.first()
            .is_some_and(|h| h["call"]["source"].as_str().unwrap().contains("internet")),
        "paraphrase: {hits:#?}"
    );
    let hits = cluster.search("pharmacy");
    assert!(
        hits.first()
            .is_some_and(|h| h["call"]["source"].as_str().unwrap().contains("billing")),
        "rare word: {hits:#?}"
    );

    // A new upload of the billing key is a new revision: once it is indexed and the sweep has
    // run, OpenSearch holds only its documents.
    let billing = indexed_call(&calls, "billing.wav").clone();
    let id = billing["call_id"].as_str().unwrap().to_owned();
    let old_revision = billing["indexed_revision"].as_str().unwrap().to_owned();
    cluster
        .upload("2026/03/billing.wav", sample("subscription"))
        .await;
    let until = Instant::now() + Duration::from_secs(300);
    let renewed = loop {
        let calls = cluster.calls();
        let c = indexed_call(&calls, "billing.wav").clone();
        if c["status"] == "indexed" && c["indexed_revision"] != old_revision.as_str() {
            break c;
        }
        assert!(
            Instant::now() < until,
            "the new revision was not indexed: {c}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let new_revision = renewed["indexed_revision"].as_str().unwrap().to_owned();
    let gc = cluster
        .cli(&["gc", "--grace-s", "0", "--json"])
        .output()
        .unwrap();
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    let want = HashMap::from([(
        new_revision.clone(),
        renewed["segments"].as_u64().unwrap() as usize,
    )]);
    vectors_become(&vectors, &id, &want).await;

    // `--force` reprocesses the same revision: a new batch replaces the old one, no
    // duplicates.
    let run = cluster
        .cli(&[
            "run",
            "--json",
            "--force",
            "s3://recordings/2026/03/billing.wav",
        ])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let gc = cluster.cli(&["gc", "--grace-s", "0"]).output().unwrap();
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    vectors_become(&vectors, &id, &want).await;
    let calls = cluster.calls();
    assert_eq!(calls.len(), 3, "still three calls: {calls:#?}");
    let shown = cluster
        .cli(&["calls", "show", "--json", &id])
        .output()
        .unwrap();
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_going_down_for_a_while_fails_no_call() {
    let mut cluster = Cluster::with_cloud_stores().await;
    let ingest = cluster.worker("ingest");
    let transcribe = cluster.worker("transcribe");
    let index = cluster.worker("index");
    for (key, name) in [("d/billing.wav", "billing"), ("d/parcel.wav", "parcel")] {
        cluster.upload(key, sample(name)).await;
    }
    transcribe
        .wait_for("started", Duration::from_secs(120))
        .await;
    // OpenSearch refuses every request for a while (a throttled or unreachable collection).
    // (MongoDB going away and coming back is `cloud/tests/mongo.rs`'s restart test.)
    let cloud = cluster.cloud.as_mut().unwrap();
    // Shorter than the retries a message gets before its redrive (MAX_RECEIVES with the
    // workers' backoff), as an outage must be for no message to reach a dead-letter queue.
    cloud.aoss.pause();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cloud.aoss.resume();

    let workers = [&ingest, &transcribe, &index];
    let calls = cluster.settled(2, Duration::from_secs(300), &workers).await;
    cluster.drained(Duration::from_secs(60)).await;
    assert!(
        calls.iter().all(|c| c["status"] == "indexed"),
        "an outage of the stores fails no call: {calls:#?}"
    );
    assert_exactly_once(&calls, &[&index]);
    for stage in ["ingest", "transcribe", "index"] {
        assert!(cluster.dead_letters(stage).await.is_empty(), "{stage} DLQ");
    }
}
