//! Criterion benches of the audio front end on a committed synthetic call (stereo 8 kHz
//! G.711 mu-law, 37.7 s) and on JFK as 44.1 kHz stereo FLAC.
//!
//! `cargo bench -p callpipe-benches --bench frontend`

use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use callpipe_common::config::IngestConfig;
use callpipe_ingest::resample::ChannelResampler;
use callpipe_ingest::vad::Vad;
use callpipe_ingest::{process_file, FrontEndOptions};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(rel)
}

fn frontend(c: &mut Criterion) {
    let files = [
        ("call_8k_mulaw_stereo", fixture("calls/call_00.wav")),
        ("jfk_44k_flac_stereo", fixture("eval/audio/openai_jfk.flac")),
    ];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let mut group = c.benchmark_group("frontend");
    group.sample_size(20);
    for (name, path) in &files {
        let with_vad = FrontEndOptions::from_config(&IngestConfig::default());
        let duration = process_file(path, &with_vad).unwrap().duration_s;
        // Throughput in milliseconds of audio, so criterion's "elem/s" reads as ms per second.
        group.throughput(Throughput::Elements((duration * 1000.0) as u64));
        group.bench_with_input(
            BenchmarkId::new("decode_resample_vad", name),
            path,
            |b, p| b.iter(|| pool.install(|| process_file(p, &with_vad).unwrap())),
        );
        let mut no_vad = with_vad.clone();
        no_vad.vad = None;
        group.bench_with_input(BenchmarkId::new("decode_resample", name), path, |b, p| {
            b.iter(|| pool.install(|| process_file(p, &no_vad).unwrap()))
        });
    }
    group.finish();
}

fn stages(c: &mut Criterion) {
    // One minute of 8 kHz speech-like signal: a tone burst every other second.
    let input: Vec<f32> = (0..8000 * 60)
        .map(|i| {
            let t = i as f32 / 8000.0;
            if (t as u32).is_multiple_of(2) {
                (t * 2.0 * std::f32::consts::PI * 300.0).sin() * 0.3
            } else {
                0.0
            }
        })
        .collect();
    let mut group = c.benchmark_group("stages");
    group.throughput(Throughput::Elements(60_000));
    group.bench_function("resample_8k_to_16k_60s", |b| {
        b.iter(|| {
            let mut r = ChannelResampler::new(8000).unwrap();
            let mut n = 0usize;
            for chunk in input.chunks(160) {
                r.push(chunk, &mut |out| n += out.len());
            }
            r.finish(&mut |out| n += out.len());
            n
        })
    });
    let mut at_16k = Vec::new();
    let mut r = ChannelResampler::new(8000).unwrap();
    r.push(&input, &mut |out| at_16k.extend_from_slice(out));
    r.finish(&mut |out| at_16k.extend_from_slice(out));
    let config = IngestConfig::default().vad;
    group.bench_function("vad_60s_half_silence", |b| {
        b.iter(|| {
            let mut vad = Vad::new(&config);
            vad.push(&at_16k);
            vad.finish()
        })
    });
    group.finish();
}

criterion_group!(benches, frontend, stages);
criterion_main!(benches);
