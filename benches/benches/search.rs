//! Search latency over an index of 100k synthetic segments: p50/p95/p99 of the whole hybrid
//! query (embed the query, BM25, exact kNN, fuse, resolve, context) and of each part.
//!
//! The segments are 2,000 calls × 50 units of text from a seeded generator: words drawn with
//! Zipf's law (s = 1) from a 5,000-word vocabulary whose head is function words and call-centre
//! terms, so term frequencies look like speech and a function word is in most segments. The
//! vectors are random unit vectors (the scan costs the same whatever the vectors hold). The query embedder
//! is the real MiniLM, so it needs `callpipe model install`.
//!
//! `cargo bench -p callpipe-benches --bench search` (`-- --segments N` to change the size)

use std::sync::Arc;
use std::time::{Duration, Instant};

use callpipe_common::ids::{CallId, Revision};
use callpipe_common::store::{
    CallRecord, CallStatus, Guard, KeywordIndex, MetadataStore, SearchFilter, SegmentDoc,
    SegmentKey, VectorDoc, VectorIndex, VectorSet,
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

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let segments: usize = args
        .iter()
        .position(|a| a == "--segments")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let dir = callpipe_benches::model_dir("all-minilm-l6-v2");
    let embedder: Arc<dyn Embedder> = Arc::new(
        MiniLm::load(&dir, "all-minilm-l6-v2", 1)
            .unwrap_or_else(|e| panic!("{e}: run `callpipe model install` first")),
    );
    let tmp = tempfile::tempdir().unwrap();
    let meta_path = tmp.path().join("metadata.db");
    let vec_path = tmp.path().join("vectors.db");

    // Build the index.
    let started = Instant::now();
    {
        let metadata = SqliteMetadata::open(&meta_path).unwrap();
        let vectors = DiskVectorIndex::open(&vec_path, embedder.dim(), embedder.model()).unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let vocabulary = zipf_vocabulary();
        for c in 0..segments.div_ceil(PER_CALL) {
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
            call.segments = PER_CALL as u32;
            let mut docs = Vec::with_capacity(PER_CALL);
            let mut vecs = Vec::with_capacity(PER_CALL);
            for i in 0..PER_CALL {
                let channel = (i % 2) as u32;
                let words = 6 + rng.below(30);
                let text: Vec<&str> = (0..words).map(|_| vocabulary.draw(&mut rng)).collect();
                let key = SegmentKey {
                    call_id: call.call_id.clone(),
                    revision: call.revision.clone(),
                    channel,
                    seq: (i / 2) as u32,
                };
                let role = call.channels[channel as usize];
                docs.push(SegmentDoc {
                    key: key.clone(),
                    role,
                    start_s: i as f64 * 5.0,
                    end_s: i as f64 * 5.0 + 4.5,
                    text: text.join(" "),
                    avg_logprob: -0.3,
                });
                vecs.push(VectorDoc {
                    key,
                    role,
                    source: source.clone(),
                    recorded_at_ms: call.recorded_at_ms,
                    call_duration_s: call.duration_s,
                    text: String::new(),
                    vector: rng.unit_vector(embedder.dim()),
                });
            }
            let batch = format!("bench-{}", call.call_id);
            let ids = vectors.insert(&batch, &vecs).await.unwrap();
            let set = VectorSet { batch, ids };
            metadata
                .commit_call(&call, &docs, &set, &Guard::none())
                .await
                .unwrap();
        }
    }
    println!(
        "built {segments} segments in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Open as `callpipe search` does: this loads every vector into memory.
    let started = Instant::now();
    let sqlite = Arc::new(SqliteMetadata::open(&meta_path).unwrap());
    let metadata: Arc<dyn MetadataStore> = sqlite.clone();
    let vectors: Arc<dyn VectorIndex> =
        Arc::new(DiskVectorIndex::open(&vec_path, embedder.dim(), embedder.model()).unwrap());
    println!(
        "open (load {} vectors): {:.0} ms",
        vectors.count(None).await.unwrap(),
        started.elapsed().as_secs_f64() * 1e3
    );
    let search = HybridSearch::new(
        embedder.clone(),
        metadata.clone(),
        vectors.clone(),
        sqlite.clone(),
        SearchSettings::default(),
    );

    let filters = [
        SearchFilter::default(),
        SearchFilter {
            role: Some(Role::Customer),
            from_ms: Some(1_600_000_000_000 + 500 * 3_600_000),
            ..Default::default()
        },
    ];
    let (mut total, mut embed, mut keyword, mut knn) = (vec![], vec![], vec![], vec![]);
    let mut filtered = vec![];
    for q in 0..QUERIES {
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
        sqlite.keyword_search(text, &filters[0], 50).await.unwrap();
        keyword.push(t.elapsed());

        let t = Instant::now();
        vectors.knn(&v[0], 50, &filters[0]).await.unwrap();
        knn.push(t.elapsed());
    }
    println!("{QUERIES} queries over {segments} segments, top 10, 50 candidates per list:");
    println!("  hybrid search            {}", percentiles(total));
    println!("  hybrid, role+date filter {}", percentiles(filtered));
    println!("  - embed the query        {}", percentiles(embed));
    println!("  - keyword (FTS5 BM25)    {}", percentiles(keyword));
    println!("  - kNN (exact scan)       {}", percentiles(knn));
}
