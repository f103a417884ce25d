//! Criterion bench of MiniLM (all-MiniLM-L6-v2 on candle) over 1000 call-transcript sentences
//! of 5–25 words, on 1 and 2 threads.
//!
//! - `sorted`: all 1000 in one `embed` call, which runs them in length-sorted sub-batches of 32
//!   (what indexing a whole call does).
//! - `batches_of_32`: 32 texts per `embed` call in arrival order, so each sub-batch pads to
//!   its own longest sentence.
//!
//! Needs the model in the store (`callpipe model install`).
//!
//! `cargo bench -p callpipe-benches --bench embed`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use callpipe_index::embed::{Embedder, MiniLm};

const MODEL: &str = "all-minilm-l6-v2";

/// `n` sentences of 5–25 words in the style of support-call transcripts, the same every run: a
/// seeded generator strings together clauses from agents' and customers' lines.
fn call_sentences(n: usize) -> Vec<String> {
    const CLAUSES: &[&str] = &[
        "thank you for calling support",
        "my name is Dana",
        "how can I help you today",
        "I was charged twice on my card",
        "the router keeps dropping the connection",
        "could you give me the account number",
        "I can see the charge from the fourteenth of March",
        "that is for the premium plan which renewed automatically",
        "I can refund it today",
        "it takes three to five business days",
        "the parcel was marked as delivered but nothing arrived",
        "I have been on hold for forty minutes",
        "let me check that for you",
        "can you confirm your date of birth",
        "I would like to cancel my subscription",
        "the technician will come on Thursday between nine and twelve",
        "is there anything else I can help with",
        "yes that works for me",
        "no I never got an email about it",
        "I will send you a confirmation by text message",
        "the password reset link has expired",
        "we had an outage in your area this morning",
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |bound: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % bound as u64) as usize
    };
    (0..n)
        .map(|_| {
            let target = 5 + next(21);
            let mut words: Vec<&str> = Vec::new();
            while words.len() < target {
                words.extend(CLAUSES[next(CLAUSES.len())].split(' '));
            }
            words.truncate(target);
            let mut sentence = words.join(" ");
            sentence.push(['.', '?', ','][next(3)]);
            sentence
        })
        .collect()
}

fn embed(c: &mut Criterion) {
    let dir = callpipe_benches::model_dir(MODEL);
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run `callpipe model install` first",
        dir.display()
    );
    let sentences = call_sentences(1000);
    let texts: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let mut group = c.benchmark_group("embed_minilm_1000_sentences");
    group.sample_size(10);
    group.throughput(Throughput::Elements(texts.len() as u64));
    for threads in [1, 2] {
        let model = MiniLm::load(&dir, MODEL, threads).unwrap();
        group.bench_function(BenchmarkId::new("sorted", threads), |b| {
            b.iter(|| model.embed(&texts).unwrap())
        });
        group.bench_function(BenchmarkId::new("batches_of_32", threads), |b| {
            b.iter(|| {
                texts
                    .chunks(32)
                    .map(|chunk| model.embed(chunk).unwrap().len())
                    .sum::<usize>()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, embed);
criterion_main!(benches);
