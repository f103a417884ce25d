//! Search latency over an index of 100k synthetic segments: p50/p95/p99 of the whole hybrid
//! query (embed the query, BM25, exact kNN, fuse, resolve, context) and of each part.
//!
//! The segments are 2,000 calls × 50 units of text from a seeded generator: words drawn with
//! Zipf's law (s = 1) from a 5,000-word vocabulary whose head is function words and call-centre
//! terms, so term frequencies look like speech and a function word is in most segments. The
//! vectors are random unit vectors (the scan costs the same whatever the vectors hold). The query embedder
//! is the real MiniLM, so it needs `callpipe model install`.
//!
//! `cargo bench -p callpipe-benches --bench search` (`-- --segments N` to change the size).
//! With `-- --cloud` the same corpus is also written through the cloud stores' clients, to
//! SecantusDB (`CALLPIPE_SECANTUSD`, from `ensure_test_servers`) and testkit's strict
//! OpenSearch Serverless emulator, and searched there (`--cloud-queries N`, default 30: the
//! emulator scans every document for each query). It reports the bulk insert rate, the index
//! stage's store writes per call on either path, and search latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use callpipe_common::ids::{CallId, Revision};
use callpipe_common::store::{
    CallRecord, CallStatus, Guard, KeywordIndex, MetadataStore, SearchFilter, SegmentDoc,
    SegmentKey, VectorBatch, VectorDoc, VectorIndex, VectorSet,
};
use callpipe_common::Role;
use callpipe_index::embed::{Embedder, MiniLm};
use callpipe_index::search::{HybridSearch, SearchSettings};
use callpipe_index::store::{DiskVectorIndex, SqliteMetadata};

const PER_CALL: usize = 50;
const QUERIES: usize = 300;

const WORDS: &[&str] = &[
    "account",
    "address",
    "agent",
    "appointment",
    "balance",
    "bank",
    "billing",
    "broken",
    "cancel",
    "card",
    "charge",
    "charged",
    "confirm",
    "connection",
    "courier",
    "credit",
    "delivery",
    "discount",
    "dropping",
    "email",
    "engineer",
    "evening",
    "fee",
    "fiber",
    "internet",
    "invoice",
    "late",
    "login",
    "modem",
    "monday",
    "month",
    "number",
    "order",
    "outage",
    "package",
    "parcel",
    "password",
    "payment",
    "phone",
    "plan",
    "premium",
    "price",
    "refund",
    "renewal",
    "reset",
    "router",
    "service",
    "signal",
    "speed",
    "statement",
    "subscription",
    "technician",
    "thursday",
    "tracking",
    "transfer",
    "twice",
    "upgrade",
    "voucher",
    "warranty",
    "wifi",
    "the",
    "a",
    "my",
    "your",
    "is",
    "was",
    "and",
    "to",
    "for",
    "it",
    "on",
    "i",
    "you",
    "we",
    "can",
    "will",
    "please",
    "thank",
    "yes",
    "no",
];

const QUERY_TEXTS: &[&str] = &[
    "customer charged twice wants a refund",
    "router keeps dropping the connection in the evening",
    "parcel marked delivered but never arrived",
    "cancel my subscription before it renews",
    "password reset link expired",
    "technician appointment on thursday",
    "warranty",
    "voucher discount on the premium plan",
    "why is my bill higher this month",
    "fiber outage in my area",
];

/// Words with Zipf weights: rank r is drawn with probability proportional to 1 / r.
struct Vocabulary {
    words: Vec<String>,
    cumulative: Vec<f64>,
}

impl Vocabulary {
    fn draw(&self, rng: &mut Rng) -> &str {
        let total = *self.cumulative.last().expect("non-empty");
        let x = rng.next() as f64 / u64::MAX as f64 * total;
        let i = self.cumulative.partition_point(|&c| c < x);
        &self.words[i.min(self.words.len() - 1)]
    }
}

/// Function words first, then call-centre terms, then a long tail of rare tokens.
fn zipf_vocabulary() -> Vocabulary {
    let function = WORDS
        .iter()
        .filter(|w| w.len() <= 6 && FUNCTION.contains(w));
    let domain = WORDS.iter().filter(|w| !FUNCTION.contains(w));
    let mut words: Vec<String> = function.chain(domain).map(|w| w.to_string()).collect();
    words.extend((0..5000 - words.len()).map(|i| format!("w{i}")));
    let mut sum = 0.0;
    let cumulative = (1..=words.len())
        .map(|r| {
            sum += 1.0 / r as f64;
            sum
        })
        .collect();
    Vocabulary { words, cumulative }
}

const FUNCTION: &[&str] = &[
    "the", "a", "my", "your", "is", "was", "and", "to", "for", "it", "on", "i", "you", "we", "can",
    "will", "please", "thank", "yes", "no",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit_vector(&mut self, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim)
            .map(|_| (self.next() as f64 / u64::MAX as f64 - 0.5) as f32)
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }
}

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    format!(
        "p50 {:>7.2} ms  p95 {:>7.2} ms  p99 {:>7.2} ms",
        at(0.50).as_secs_f64() * 1e3,
        at(0.95).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3
    )
}

/// One synthetic call: its record (indexed), segments and vectors.
fn synthetic_call(
    c: usize,
    dim: usize,
    rng: &mut Rng,
    vocabulary: &Vocabulary,
) -> (CallRecord, Vec<SegmentDoc>, Vec<VectorDoc>) {
    let source = format!("s3://calls/{}/{c}.wav", 2020 + c % 5);
    let mut call = CallRecord::pending(
        CallId::from_source(&source),
        Revision::new("r1"),
        source.clone(),
        1_600_000_000_000 + c as i64 * 3_600_000,
    );
    call.duration_s = 60.0 + rng.below(1200) as f64;
    call.channels = vec![Role::Agent, Role::Customer];
    call.status = CallStatus::Indexed;
    call.indexed_revision = Some(call.revision.clone());
    call.segments = PER_CALL as u32;
    let mut docs = Vec::with_capacity(PER_CALL);
    let mut vecs = Vec::with_capacity(PER_CALL);
    for i in 0..PER_CALL {
        let channel = (i % 2) as u32;
        let words = 6 + rng.below(30);
        let text: Vec<&str> = (0..words).map(|_| vocabulary.draw(rng)).collect();
        let text = text.join(" ");
        let key = SegmentKey {
            call_id: call.call_id.clone(),
            revision: call.revision.clone(),
            channel,
            seq: (i / 2) as u32,
        };
        let role = call.channels[channel as usize];
        vecs.push(VectorDoc {
            key: key.clone(),
            role,
            source: source.clone(),
            recorded_at_ms: call.recorded_at_ms,
            call_duration_s: call.duration_s,
            text: text.clone(),
            vector: rng.unit_vector(dim),
        });
        docs.push(SegmentDoc {
            key,
            role,
            start_s: i as f64 * 5.0,
            end_s: i as f64 * 5.0 + 4.5,
            text,
            avg_logprob: -0.3,
        });
    }
    (call, docs, vecs)
}

/// Writes the corpus the way the index stage writes a call (begin the batch, insert its
/// vectors, commit), and returns the time each call's writes took and the time spent in the
/// vector inserts alone.
async fn build(
    metadata: &dyn MetadataStore,
    vectors: &dyn VectorIndex,
    segments: usize,
    dim: usize,
) -> (Vec<Duration>, Duration) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let vocabulary = zipf_vocabulary();
    let mut per_call = Vec::new();
    let mut inserting = Duration::ZERO;
    for c in 0..segments.div_ceil(PER_CALL) {
        let (call, docs, vecs) = synthetic_call(c, dim, &mut rng, &vocabulary);
        let t = Instant::now();
        let batch = VectorBatch::new(&call.call_id, &call.revision);
        metadata.begin_batch(&batch).await.unwrap();
        let i = Instant::now();
        let ids = vectors.insert(&batch.batch, &vecs).await.unwrap();
        inserting += i.elapsed();
        let set = VectorSet {
            batch: batch.batch,
            ids,
        };
        metadata
            .commit_call(&call, &docs, &set, &Guard::none())
            .await
            .unwrap();
        per_call.push(t.elapsed());
    }
    (per_call, inserting)
}

/// The query loop: the whole hybrid search, with and without filters, and each part.
async fn queries(
    label: &str,
    search: &HybridSearch,
    embedder: &dyn Embedder,
    keyword: &dyn KeywordIndex,
    vectors: &dyn VectorIndex,
    queries: usize,
    segments: usize,
) {
    let filters = [
        SearchFilter::default(),
        SearchFilter {
            role: Some(Role::Customer),
            from_ms: Some(1_600_000_000_000 + 500 * 3_600_000),
            ..Default::default()
        },
    ];
    let (mut total, mut embed, mut kw, mut knn) = (vec![], vec![], vec![], vec![]);
    let mut filtered = vec![];
    for q in 0..queries {
        let text = QUERY_TEXTS[q % QUERY_TEXTS.len()];
        let t = Instant::now();
        let hits = search.search(text, &filters[0], 10).await.unwrap();
        total.push(t.elapsed());
        assert_eq!(hits.len(), 10);

        let t = Instant::now();
        let hits = search.search(text, &filters[1], 10).await.unwrap();
        filtered.push(t.elapsed());
        assert!(hits.iter().all(|h| h.segment.role == Role::Customer));

        let t = Instant::now();
        let v = embedder.embed(&[text]).unwrap();
        embed.push(t.elapsed());

        let t = Instant::now();
        keyword
            .keyword_search(&callpipe_index::query::parse(text).keyword, &filters[0], 50)
            .await
            .unwrap();
        kw.push(t.elapsed());

        let t = Instant::now();
        vectors.knn(&v[0], 50, &filters[0]).await.unwrap();
        knn.push(t.elapsed());
    }
    println!(
        "{label}: {queries} queries over {segments} segments, top 10, 50 candidates per list:"
    );
    println!("  hybrid search            {}", percentiles(total));
    println!("  hybrid, role+date filter {}", percentiles(filtered));
    println!("  - embed the query        {}", percentiles(embed));
    println!("  - keyword                {}", percentiles(kw));
    println!("  - kNN                    {}", percentiles(knn));
}

fn flag<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let segments: usize = flag(&args, "--segments").unwrap_or(100_000);
    let cloud = args.iter().any(|a| a == "--cloud");
    let dir = callpipe_benches::model_dir("all-minilm-l6-v2");
    let embedder: Arc<dyn Embedder> = Arc::new(
        MiniLm::load(&dir, "all-minilm-l6-v2", 1)
            .unwrap_or_else(|e| panic!("{e}: run `callpipe model install` first")),
    );
    let dim = embedder.dim();
    let tmp = tempfile::tempdir().unwrap();
    let meta_path = tmp.path().join("metadata.db");
    let vec_path = tmp.path().join("vectors.db");

    let started = Instant::now();
    let (embedded_writes, _) = {
        let metadata = SqliteMetadata::open(&meta_path).unwrap();
        let vectors = DiskVectorIndex::open(&vec_path, dim, embedder.model()).unwrap();
        build(&metadata, &vectors, segments, dim).await
    };
    println!(
        "embedded: built {segments} segments in {:.1} s; writes per call ({PER_CALL} segments) {}",
        started.elapsed().as_secs_f64(),
        percentiles(embedded_writes)
    );

    // Open as `callpipe search` does: this loads every vector into memory.
    let started = Instant::now();
    let sqlite = Arc::new(SqliteMetadata::open(&meta_path).unwrap());
    let vectors: Arc<dyn VectorIndex> =
        Arc::new(DiskVectorIndex::open(&vec_path, dim, embedder.model()).unwrap());
    println!(
        "embedded: open (load {} vectors): {:.0} ms",
        vectors.count(None).await.unwrap(),
        started.elapsed().as_secs_f64() * 1e3
    );
    let search = HybridSearch::new(
        embedder.clone(),
        sqlite.clone(),
        vectors.clone(),
        sqlite.clone(),
        SearchSettings::default(),
    );
    let n = flag(&args, "--queries").unwrap_or(QUERIES);
    queries(
        "embedded (FTS5 BM25, exact scan)",
        &search,
        embedder.as_ref(),
        sqlite.as_ref(),
        vectors.as_ref(),
        n,
        segments,
    )
    .await;

    if cloud {
        cloud::run(
            embedder,
            segments,
            flag(&args, "--cloud-queries").unwrap_or(30),
        )
        .await;
    }
}

/// The cloud path: SecantusDB (MongoDB wire protocol) for the metadata, the strict OpenSearch
/// Serverless emulator for vectors and BM25, through the same clients the workers use.
mod cloud {
    use super::*;
    use callpipe_cloud::mongo::{MongoMetadata, MongoSettings};
    use callpipe_cloud::opensearch::{OpenSearchIndex, OpenSearchSettings};
    use callpipe_testkit::aoss::{StrictAoss, StrictAossOptions};

    /// `secantusd-py` on a free port, killed when dropped (with its data directory).
    struct Secantus {
        child: std::process::Child,
        port: u16,
        _data: tempfile::TempDir,
    }

    impl Secantus {
        fn start() -> Secantus {
            let binary = std::env::var("CALLPIPE_SECANTUSD").unwrap_or_else(|_| {
                panic!("set CALLPIPE_SECANTUSD (`source scripts/env.sh && ensure_test_servers`)")
            });
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let data = tempfile::tempdir().unwrap();
            let child = std::process::Command::new(&binary)
                .args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--storage-path",
                ])
                .arg(data.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
            let until = Instant::now() + Duration::from_secs(30);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < until, "SecantusDB did not start on {port}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Secantus {
                child,
                port,
                _data: data,
            }
        }
    }

    impl Drop for Secantus {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    pub async fn run(embedder: Arc<dyn Embedder>, segments: usize, n: usize) {
        let mongo = Secantus::start();
        let aoss = StrictAoss::start(StrictAossOptions {
            visibility_delay: Duration::ZERO,
            ..Default::default()
        })
        .unwrap();
        let aws = callpipe_cloud::aws::config_loader(Some("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                "bench", "bench", None, None, "bench",
            ))
            .load()
            .await;
        let metadata = Arc::new(
            MongoMetadata::connect(
                MongoSettings {
                    uri: format!("mongodb://127.0.0.1:{}/?directConnection=true", mongo.port),
                    secret_arn: String::new(),
                    database: "bench".into(),
                },
                None,
            )
            .await
            .unwrap(),
        );
        metadata.ensure_indexes().await.unwrap();
        let index = Arc::new(
            OpenSearchIndex::new(
                &OpenSearchSettings {
                    endpoint: aoss.endpoint(),
                    index: "bench-segments".into(),
                    region: None,
                },
                embedder.dim(),
                embedder.model(),
                &aws,
            )
            .unwrap(),
        );
        index.ensure_index().await.unwrap();

        let started = Instant::now();
        let (writes, inserting) =
            build(metadata.as_ref(), index.as_ref(), segments, embedder.dim()).await;
        println!(
            "cloud: built {segments} segments in {:.1} s; writes per call ({PER_CALL} segments) {}",
            started.elapsed().as_secs_f64(),
            percentiles(writes)
        );
        println!(
            "cloud: bulk insert into the emulator: {:.0} segments/s",
            segments as f64 / inserting.as_secs_f64()
        );
        let search = HybridSearch::new(
            embedder.clone(),
            metadata.clone(),
            index.clone(),
            index.clone(),
            SearchSettings::default(),
        );
        queries(
            "cloud (MongoDB + OpenSearch emulator)",
            &search,
            embedder.as_ref(),
            index.as_ref(),
            index.as_ref(),
            n,
            segments,
        )
        .await;
    }
}
