//! Segment shaping over the whole VAD config space: whatever the settings and the scores, it
//! ends, and its segments are ordered, inside the call and within the length cap; for the
//! settings validation accepts, no speech is lost, no segment is made of silence alone, and
//! short pauses are bridged.

use proptest::prelude::*;

use callpipe_common::config::{Config, VadConfig};
use callpipe_common::SpeechSegment;
use callpipe_ingest::vad::{segments_from_scores, speech_levels, FRAME};

const FRAME_S: f64 = FRAME as f64 / 16_000.0;
const EPS: f64 = 1e-9;

fn accepted(vad: &VadConfig) -> bool {
    let mut config = Config::default();
    config.ingest.vad = vad.clone();
    config.validate().is_ok()
}

/// A fraction in [0, 1], often exactly at either end, where the limits are.
fn fraction() -> impl Strategy<Value = f64> {
    prop_oneof![1 => Just(0.0), 1 => Just(1.0), 3 => 0.0..1.0f64]
}

/// Any config validation accepts, limits included.
fn valid_config() -> impl Strategy<Value = VadConfig> {
    (
        prop_oneof![1 => Just(1.0), 1 => Just(30.0), 3 => 1.0..=30.0f64],
        fraction(),
        fraction(),
        fraction(),
        prop_oneof![1 => Just(0.0f32), 1 => Just(1.0f32), 3 => 0.0..=1.0f32],
    )
        .prop_map(|(max_segment_s, p, m, g, threshold)| {
            let pad_s = p * (max_segment_s / 4.0);
            let speech_s = max_segment_s - 2.0 * pad_s;
            VadConfig {
                threshold,
                gate_dbfs: -50.0,
                min_speech_s: m * speech_s.min(10.0),
                merge_gap_s: g * (speech_s / 4.0).min(10.0),
                pad_s,
                max_segment_s,
            }
        })
}

fn wild_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -2.0..40.0f64,
        1 => Just(0.0),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(1e300),
    ]
}

/// Any values at all, valid or not.
fn any_config() -> impl Strategy<Value = VadConfig> {
    (
        wild_f64(),
        wild_f64(),
        wild_f64(),
        wild_f64(),
        prop_oneof![4 => -0.5..1.5f32, 1 => Just(f32::NAN)],
    )
        .prop_map(
            |(min_speech_s, merge_gap_s, pad_s, max_segment_s, threshold)| VadConfig {
                threshold,
                gate_dbfs: -50.0,
                min_speech_s,
                merge_gap_s,
                pad_s,
                max_segment_s,
            },
        )
}

/// Frame scores as runs: mostly silence and clear speech, with some in-between levels.
fn scores() -> impl Strategy<Value = (Vec<u8>, f64)> {
    let level = prop_oneof![4 => Just(0u8), 4 => Just(255u8), 2 => any::<u8>()];
    (
        proptest::collection::vec((level, 1usize..400), 0..40),
        1usize..=FRAME,
    )
        .prop_map(|(runs, last_frame_samples)| {
            let scores: Vec<u8> = runs
                .into_iter()
                .flat_map(|(level, len)| std::iter::repeat_n(level, len))
                .collect();
            // The last frame may be partial: the call ends inside it.
            let samples = (scores.len().max(1) - 1) * FRAME + last_frame_samples;
            let duration_s = if scores.is_empty() {
                0.0
            } else {
                samples as f64 / 16_000.0
            };
            (scores, duration_s)
        })
}

/// Holds for every config.
fn check_shape(
    segments: &[SpeechSegment],
    scores: &[u8],
    config: &VadConfig,
    duration_s: f64,
) -> Result<(), TestCaseError> {
    prop_assert!(segments.len() <= scores.len(), "more segments than frames");
    let cap = if config.max_segment_s.is_nan() {
        FRAME_S
    } else {
        config.max_segment_s.max(FRAME_S)
    };
    for s in segments {
        prop_assert!(
            0.0 <= s.start_s && s.start_s < s.end_s && s.end_s <= duration_s,
            "{s:?} outside [0, {duration_s}]"
        );
        prop_assert!(
            s.duration_s() <= cap + FRAME_S + EPS,
            "{s:?} longer than {cap}"
        );
    }
    for w in segments.windows(2) {
        prop_assert!(w[0].end_s <= w[1].start_s, "{:?} overlaps {:?}", w[0], w[1]);
    }
    let (on, _) = speech_levels(config);
    if !scores.iter().any(|&s| s >= on && s > 0) {
        prop_assert!(segments.is_empty(), "segments without speech");
    }
    Ok(())
}

/// A frame's stretch of the call, `[start, end]` in seconds.
fn frame_span(i: usize, duration_s: f64) -> (f64, f64) {
    (
        i as f64 * FRAME_S,
        ((i + 1) as f64 * FRAME_S).min(duration_s),
    )
}

/// Whether one segment holds all of `[a, b]`; segments are ordered, so only the first that
/// ends after `b` can.
fn covered(segments: &[SpeechSegment], (a, b): (f64, f64)) -> bool {
    let i = segments.partition_point(|s| s.end_s + EPS < b);
    segments.get(i).is_some_and(|s| s.start_s <= a + EPS)
}

/// What the unit tests check, generalised: holds for every config validation accepts.
fn check_accepted(
    segments: &[SpeechSegment],
    scores: &[u8],
    config: &VadConfig,
    duration_s: f64,
) -> Result<(), TestCaseError> {
    let (on, off) = speech_levels(config);
    let is_on = |s: u8| s >= on && s > 0;
    let is_speech = |s: u8| s >= off && s > 0;
    let min = frames(config.min_speech_s).max(1);
    let gap = frames(config.merge_gap_s);

    for s in segments {
        prop_assert!(
            s.duration_s() <= config.max_segment_s + EPS,
            "{s:?} over the cap"
        );
        // A segment is never cut out of silence alone: some speech frame lies inside it.
        let lo = (s.start_s / FRAME_S).floor() as usize;
        let hi = ((s.end_s / FRAME_S).ceil() as usize + 1).min(scores.len());
        let speech_inside = (lo.min(hi)..hi)
            .filter(|&i| is_speech(scores[i]))
            .any(|i| covered(std::slice::from_ref(s), frame_span(i, duration_s)));
        prop_assert!(speech_inside, "{s:?} holds no speech");
    }

    // No speech lost: a run of at least `min` clear speech frames is inside a segment.
    let mut i = 0;
    while i < scores.len() {
        let run = scores[i..].iter().take_while(|&&s| is_on(s)).count();
        if run >= min {
            for f in i..i + run {
                prop_assert!(
                    covered(segments, frame_span(f, duration_s)),
                    "frame {f} of a {run}-frame run is lost: {segments:?}"
                );
            }
        }
        i += run.max(1);
    }

    // Blips are dropped: speech spread over fewer than `min` frames gives nothing.
    let first = scores.iter().position(|&s| is_speech(s));
    let last = scores.iter().rposition(|&s| is_speech(s));
    if let (Some(first), Some(last)) = (first, last) {
        if last + 1 - first < min {
            prop_assert!(segments.is_empty(), "a blip became {segments:?}");
        }
    }

    // Short pauses are bridged: speech runs that each start clearly, with pauses of at most
    // `gap` frames between them, spanning at least `min` frames and fitting in the cap, are
    // one segment, padded by `pad_s` on both sides.
    if let (Some(first), Some(last)) = (first, last) {
        let inner = &scores[first..=last];
        // Then each run of speech frames is one region of the hysteresis.
        let runs_start_clearly = (0..inner.len()).all(|k| {
            let starts_run = is_speech(inner[k]) && (k == 0 || !is_speech(inner[k - 1]));
            !starts_run || is_on(inner[k])
        });
        let longest_pause = inner
            .split(|&s| is_speech(s))
            .map(<[u8]>::len)
            .max()
            .unwrap_or(0);
        let span_s = (last + 1 - first) as f64 * FRAME_S;
        if runs_start_clearly
            && longest_pause <= gap
            && last + 1 - first >= min
            && span_s + 2.0 * config.pad_s <= config.max_segment_s - FRAME_S
        {
            prop_assert_eq!(segments.len(), 1, "{:?}", segments);
            let expected_start = (first as f64 * FRAME_S - config.pad_s).max(0.0);
            let expected_end = ((last + 1) as f64 * FRAME_S + config.pad_s).min(duration_s);
            prop_assert!(
                (segments[0].start_s - expected_start).abs() < EPS,
                "{segments:?}"
            );
            prop_assert!(
                (segments[0].end_s - expected_end).abs() < EPS,
                "{segments:?}"
            );
        }
    }
    Ok(())
}

fn frames(seconds: f64) -> usize {
    (seconds / FRAME_S).round() as usize
}

/// An accepted config and one utterance made for it: up to three stretches of clear speech
/// with pauses no longer than `merge_gap_s`, short enough in all to fit one segment, between
/// stretches of silence.
fn one_utterance() -> impl Strategy<Value = (VadConfig, Vec<u8>, f64)> {
    valid_config()
        .prop_flat_map(|config| {
            let speech = ((config.max_segment_s - 2.0 * config.pad_s) / FRAME_S).floor() as usize;
            let run = 1..=(speech / 8).max(1);
            let pause = 0..=frames(config.merge_gap_s);
            (
                Just(config),
                0usize..200,
                proptest::collection::vec((run, pause), 1..=3),
                0usize..200,
                1usize..=FRAME,
            )
        })
        .prop_map(|(config, lead, parts, tail, last_frame_samples)| {
            let mut scores = vec![0u8; lead];
            for (i, &(run, pause)) in parts.iter().enumerate() {
                if i > 0 {
                    scores.extend(std::iter::repeat_n(0, pause));
                }
                scores.extend(std::iter::repeat_n(255, run));
            }
            scores.extend(std::iter::repeat_n(0, tail));
            let duration_s = ((scores.len() - 1) * FRAME + last_frame_samples) as f64 / 16_000.0;
            (config, scores, duration_s)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn an_utterance_with_short_pauses_is_one_padded_segment(
        (config, scores, duration_s) in one_utterance(),
    ) {
        prop_assert!(accepted(&config));
        let segments = segments_from_scores(&scores, &config, duration_s);
        check_shape(&segments, &scores, &config, duration_s)?;
        check_accepted(&segments, &scores, &config, duration_s)?;
        let first = scores.iter().position(|&s| s > 0).unwrap();
        let last = scores.iter().rposition(|&s| s > 0).unwrap();
        if last + 1 - first >= frames(config.min_speech_s).max(1) {
            prop_assert_eq!(segments.len(), 1, "{:?}", segments);
            let start = (first as f64 * FRAME_S - config.pad_s).max(0.0);
            let end = ((last + 1) as f64 * FRAME_S + config.pad_s).min(duration_s);
            prop_assert!((segments[0].start_s - start).abs() < EPS, "{segments:?}");
            prop_assert!((segments[0].end_s - end).abs() < EPS, "{segments:?}");
        } else {
            prop_assert!(segments.is_empty(), "a blip became {segments:?}");
        }
    }

    #[test]
    fn any_config_ends_with_well_formed_segments(
        config in any_config(),
        (scores, duration_s) in scores(),
    ) {
        let segments = segments_from_scores(&scores, &config, duration_s);
        check_shape(&segments, &scores, &config, duration_s)?;
        if accepted(&config) {
            check_accepted(&segments, &scores, &config, duration_s)?;
        }
    }

    #[test]
    fn accepted_configs_keep_speech_and_only_speech(
        config in valid_config(),
        (scores, duration_s) in scores(),
    ) {
        prop_assert!(accepted(&config), "the generator made a rejected config: {config:?}");
        let segments = segments_from_scores(&scores, &config, duration_s);
        check_shape(&segments, &scores, &config, duration_s)?;
        check_accepted(&segments, &scores, &config, duration_s)?;
    }
}

#[test]
fn padding_that_fills_the_cap_no_longer_hangs() {
    // Rejected by validation, and harmless here: it used to loop, pushing empty pieces, until
    // memory ran out.
    let config = VadConfig {
        pad_s: 0.5,
        max_segment_s: 1.0,
        ..VadConfig::default()
    };
    assert!(!accepted(&config));
    let scores = vec![230u8; 10_000];
    let duration_s = scores.len() as f64 * FRAME_S;
    let segments = segments_from_scores(&scores, &config, duration_s);
    assert!(!segments.is_empty());
    for s in &segments {
        assert!(s.duration_s() <= 1.0 + EPS, "{s:?}");
    }
    for w in segments.windows(2) {
        assert!(w[0].end_s <= w[1].start_s);
    }
    // The speech is all still there.
    let covered: f64 = segments.iter().map(SpeechSegment::duration_s).sum();
    assert!(
        (covered - duration_s).abs() < 1e-6,
        "{covered} of {duration_s}"
    );
}
