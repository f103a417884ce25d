//! The decoding loop's work bounds on audio that is nothing but noise, through the real engine.
//! The bounds are counted in decodes, not seconds, so the test does not depend on the machine.
//!
//! Needs the default model installed (`callpipe model install`; scripts/test.sh does it).

use callpipe_common::config::TranscribeConfig;
use callpipe_transcribe::engine::{
    max_passes_per_window, BatchItem, FallbackBudget, MAX_FALLBACKS_PER_WINDOW,
};
use callpipe_transcribe::model::ModelStore;
use callpipe_transcribe::Engine;

/// The default model, configured so that every decode fails the thresholds: a mean
/// log-probability is never above 0, so each one is "unsure", and none is judged silent. The
/// ladder has 20 fallback temperatures, more than a window may spend. Greedy search keeps each
/// decode cheap; the bounds do not depend on it.
fn always_failing_engine() -> Engine {
    let config = TranscribeConfig {
        temperatures: (0..=20).map(|i| i as f32 * 0.05).collect(),
        log_prob_threshold: 0.0,
        no_speech_threshold: 1.0,
        beam_size: 1,
        best_of: 1,
        word_timestamps: false,
        ..TranscribeConfig::default()
    };
    let (dir, _) = ModelStore::new(ModelStore::default_root())
        .resolve(&config.model)
        .unwrap_or_else(|e| {
            panic!("the default model is needed: run `callpipe model install` ({e})")
        });
    Engine::load(&dir, &config, 1).expect("loading the model")
}

/// Uniform white noise at a fixed seed (xorshift), so every run decodes the same audio.
fn white_noise(seconds: f64, seed: u64) -> Vec<f32> {
    let mut state = seed.max(1);
    (0..(seconds * 16_000.0) as usize)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.6
        })
        .collect()
}

#[test]
fn white_noise_is_decoded_within_the_work_bounds() {
    let engine = always_failing_engine();
    let mut mel = engine.log_mel();
    let (a, b) = (white_noise(8.0, 1), white_noise(5.0, 2));
    let pieces = [0usize];
    let item = |samples| BatchItem {
        samples,
        piece_starts: &pieces,
    };

    // Two windows of one call share its budget of 3 fallback decodes: the ladder would run 5
    // per pass of each window.
    let call = FallbackBudget::new(3, "noise-call");
    let before = engine.work();
    engine
        .transcribe_batch_budgeted(&mut mel, &[item(&a), item(&b)], None, &[&call, &call])
        .expect("noise decodes");
    let work = engine.work().since(&before);
    eprintln!("shared budget of 3: {work:?}");
    assert_eq!(call.left(), 0);
    assert_eq!(work.fallback_decodes, 3, "{work:?}");
    assert!(work.passes >= 2, "{work:?}");
    assert!(
        work.passes <= 2 * max_passes_per_window(1) as u64,
        "{work:?}"
    );

    // On its own, a window spends at most its own cap of the 20-step ladder.
    let before = engine.work();
    engine
        .transcribe_batch(&mut mel, &[item(&b)], None)
        .expect("noise decodes");
    let work = engine.work().since(&before);
    eprintln!("one window, default budget: {work:?}");
    assert!(work.passes <= max_passes_per_window(1) as u64, "{work:?}");
    assert!(
        work.fallback_decodes <= MAX_FALLBACKS_PER_WINDOW as u64,
        "{work:?}"
    );
    assert_eq!(
        work.fallback_decodes, MAX_FALLBACKS_PER_WINDOW as u64,
        "every decode fails, so the window spends all it may: {work:?}"
    );
}

#[test]
fn one_pass_decodes_each_window_once_and_batches_its_fallbacks() {
    let engine = always_failing_engine();
    let mut mel = engine.log_mel();
    let noise: Vec<Vec<f32>> = (0..3).map(|i| white_noise(6.0, 10 + i)).collect();
    let pieces = [0usize];
    let items: Vec<BatchItem<'_>> = noise
        .iter()
        .map(|samples| BatchItem {
            samples,
            piece_starts: &pieces,
        })
        .collect();
    // Three windows of one call, every decode failing: a budget of 7 runs the three together
    // at the first two fallback temperatures, then the one window still allowed alone.
    let call = FallbackBudget::new(7, "noise-call");
    let before = engine.work();
    let passes = engine
        .decode_pass(&mut mel, &items, None, &[&call, &call, &call])
        .expect("noise decodes");
    let work = engine.work().since(&before);
    eprintln!("{work:?}");
    assert_eq!(passes.len(), 3);
    assert_eq!(work.passes, 3, "one pass per window: {work:?}");
    assert_eq!(work.fallback_decodes, 7, "{work:?}");
    assert_eq!(call.left(), 0);
    // One encode for the batch, one for the subset of one: the full set reuses the batch's.
    assert_eq!(work.encodes, 3 + 1, "{work:?}");
}
