//! MiniLM against the real all-MiniLM-L6-v2 weights, which `callpipe model install` puts in the
//! model store ($CALLPIPE_MODEL_DIR, else ~/.cache/callpipe/models). `scripts/test.sh` installs
//! it before the tests run; without it these tests fail rather than skip.

use std::path::PathBuf;
use std::sync::OnceLock;

use callpipe_index::embed::{Embedder, MiniLm};

const MODEL: &str = "all-minilm-l6-v2";

fn model_dir() -> PathBuf {
    let root = match std::env::var_os("CALLPIPE_MODEL_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .expect("HOME is set")
            .join("callpipe")
            .join("models"),
    };
    root.join(MODEL)
}

fn minilm() -> &'static MiniLm {
    static MODEL_ONCE: OnceLock<MiniLm> = OnceLock::new();
    MODEL_ONCE.get_or_init(|| {
        let dir = model_dir();
        assert!(
            dir.join("model.safetensors").is_file(),
            "{} is missing: run `callpipe model install` (scripts/test.sh does) before the tests",
            dir.display()
        );
        MiniLm::load(&dir, MODEL, 2).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
    })
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn matches_the_numpy_reference() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/minilm_reference.json")).unwrap();
    let sentences = fixture["sentences"].as_array().unwrap();
    let texts: Vec<&str> = sentences
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    // All at once, so the short sentences are padded to the long ones.
    let vectors = minilm().embed(&texts).unwrap();
    let mut worst = 0f32;
    for (sentence, vector) in sentences.iter().zip(&vectors) {
        let expected: Vec<f32> = sentence["vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let diff = max_abs_diff(vector, &expected);
        println!(
            "max abs diff {diff:.2e}  {} tokens  {:?}",
            sentence["tokens"],
            sentence["text"]
                .as_str()
                .unwrap()
                .chars()
                .take(50)
                .collect::<String>()
        );
        assert!(
            diff < 1e-4,
            "{:?}: max abs diff {diff} vs the reference",
            sentence["text"]
        );
        worst = worst.max(diff);
    }
    println!("worst max abs diff vs the numpy reference: {worst:.2e}");
}

#[test]
fn a_vector_does_not_depend_on_its_batch() {
    let short = "Can I speak to a manager?";
    let long = "I have been on hold for forty minutes, I was transferred three times, and every \
                person I spoke to asked me for my account number, my date of birth and the last \
                four digits of my card again, and nobody could tell me why my order was cancelled \
                or when the refund for it will arrive, so I would like to speak to someone who \
                can actually fix this today.";
    let model = minilm();
    let alone = &model.embed(&[short]).unwrap()[0];
    let batched = model.embed(&[long, short, "", long]).unwrap();
    let diff = max_abs_diff(alone, &batched[1]);
    println!("alone vs batched with a long text: max abs diff {diff:.2e}");
    assert!(diff < 1e-5, "max abs diff {diff}");
    assert!(max_abs_diff(&batched[0], &batched[3]) < 1e-5);
}

#[test]
fn many_texts_come_back_in_input_order() {
    // More than one sub-batch, lengths deliberately out of order.
    let texts: Vec<String> = (0..75)
        .map(|i| {
            let words = ["refund", "password", "invoice", "delivery", "upgrade"];
            let n = (i * 7) % 23;
            format!(
                "call {i}: {}",
                (0..n)
                    .map(|j| words[(i + j) % 5])
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let model = minilm();
    let all = model.embed(&refs).unwrap();
    assert_eq!(all.len(), texts.len());
    for (i, text) in refs.iter().enumerate().step_by(7) {
        let alone = &model.embed(&[text]).unwrap()[0];
        let diff = max_abs_diff(alone, &all[i]);
        assert!(diff < 1e-5, "text {i}: max abs diff {diff}");
    }
    assert!(model.embed(&[]).unwrap().is_empty());
}

#[test]
fn similar_complaints_are_closer_than_unrelated_ones() {
    let v = minilm()
        .embed(&[
            "I was charged twice on my card",
            "there is a duplicate payment on my credit card statement",
            "the router keeps dropping the wifi connection",
        ])
        .unwrap();
    let (related, unrelated) = (dot(&v[0], &v[1]), dot(&v[0], &v[2]));
    println!("cosine: related {related:.3}, unrelated {unrelated:.3}");
    assert!(related > unrelated + 0.2, "{related} vs {unrelated}");
}

#[test]
fn vectors_are_unit_length_and_384_wide() {
    let model = minilm();
    assert_eq!(model.dim(), 384);
    assert_eq!(model.model(), MODEL);
    let texts = ["", " ", "OK.", "?!", "a b c", &"word ".repeat(400)];
    for (text, v) in texts.iter().zip(model.embed(&texts).unwrap()) {
        assert_eq!(v.len(), 384);
        let norm = dot(&v, &v).sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{text:?}: norm {norm}");
    }
}
