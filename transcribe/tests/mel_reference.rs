//! The log-mel against faster-whisper's `FeatureExtractor` on real speech.
//! Reference values: tests/fixtures/mel/mel_reference.json (see make_reference.py there).

use std::path::PathBuf;

use callpipe_ingest::FrontEndOptions;
use callpipe_transcribe::mel::LogMel;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

#[test]
fn log_mel_matches_faster_whisper() {
    let reference: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("mel/mel_reference.json")).expect("reference file"),
    )
    .expect("reference JSON");
    let file = fixtures().join(reference["file"].as_str().unwrap());
    let start = reference["start_sample"].as_u64().unwrap() as usize;
    let count = reference["samples"].as_u64().unwrap() as usize;

    let mut opts = FrontEndOptions::from_config(&Default::default());
    opts.vad = None;
    opts.keep_audio = true;
    let call = callpipe_ingest::process_file(&file, &opts).expect("decoding the JFK clip");
    // A 16 kHz PCM file passes through the resampler untouched, so these are the file's samples.
    let audio = &call.channels[0].spans[0].samples[start..start + count];

    for n_mels in [80usize, 128] {
        let expected: Vec<Vec<f64>> =
            serde_json::from_value(reference[format!("mel{n_mels}")].clone()).unwrap();
        let frames = expected[0].len();
        let mut mel = LogMel::new(n_mels);
        let mut out = Vec::new();
        let got_frames = mel.compute(audio, frames, &mut out);
        assert_eq!(got_frames, frames, "{n_mels} bins: frame count");
        assert_eq!(expected.len(), n_mels);

        let mut max_err = 0.0f64;
        let mut sum_err = 0.0f64;
        for (m, row) in expected.iter().enumerate() {
            for (t, &want) in row.iter().enumerate() {
                let err = (out[m * frames + t] as f64 - want).abs();
                max_err = max_err.max(err);
                sum_err += err;
            }
        }
        let mean_err = sum_err / (n_mels * frames) as f64;
        eprintln!("{n_mels} bins: max abs error {max_err:.2e}, mean {mean_err:.2e}");
        // The reference is rounded to 5 decimals; measured: max 1.5e-5, mean 2.4e-6.
        assert!(max_err < 1e-4, "{n_mels} bins: max abs error {max_err}");
        assert!(mean_err < 1e-5, "{n_mels} bins: mean abs error {mean_err}");
    }
}
