//! Streaming resampling of one channel to 16 kHz with rubato.
//!
//! rubato's synchronous FFT resampler is exact for rational ratios (8 → 16 kHz, 44.1 → 16 kHz)
//! and fast. Input arrives in packet-sized pieces of any length; this wrapper feeds rubato the
//! fixed chunks it wants, drops the filter's start-up delay so timestamps stay aligned with the
//! source, and flushes the tail so the output has exactly `ceil(input × ratio)` frames.

use rubato::audioadapter_buffers::direct::SequentialSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler as _};

use callpipe_common::SAMPLE_RATE;

/// Input frames per rubato call: large enough to amortise the FFT, small enough to keep the
/// pending buffer tiny.
const CHUNK_FRAMES: usize = 1024;

/// Resamples one channel from its source rate to 16 kHz, or passes it through.
pub struct ChannelResampler {
    fft: Option<Box<Fft<f32>>>,
    ratio: f64,
    pending: Vec<f32>,
    out: Vec<f32>,
    /// Output frames still to drop: the resampler's delay.
    skip: usize,
    frames_in: u64,
    frames_out: u64,
}

impl ChannelResampler {
    /// Fails only for rates rubato cannot relate to 16 kHz; the decoder has already rejected
    /// implausible ones.
    pub fn new(input_rate: u32) -> Result<Self, String> {
        let ratio = SAMPLE_RATE as f64 / input_rate as f64;
        if input_rate == SAMPLE_RATE {
            return Ok(ChannelResampler {
                fft: None,
                ratio,
                pending: Vec::new(),
                out: Vec::new(),
                skip: 0,
                frames_in: 0,
                frames_out: 0,
            });
        }
        let fft = Fft::<f32>::new(
            input_rate as usize,
            SAMPLE_RATE as usize,
            CHUNK_FRAMES,
            1,
            FixedSync::Input,
        )
        .map_err(|e| format!("cannot resample {input_rate} Hz to {SAMPLE_RATE} Hz: {e}"))?;
        let out = vec![0.0; fft.output_frames_max()];
        let skip = fft.output_delay();
        Ok(ChannelResampler {
            pending: Vec::with_capacity(fft.input_frames_max() * 2),
            fft: Some(Box::new(fft)),
            ratio,
            out,
            skip,
            frames_in: 0,
            frames_out: 0,
        })
    }

    /// Feeds source-rate samples; calls `emit` with 16 kHz samples as they become available.
    pub fn push(&mut self, input: &[f32], emit: &mut impl FnMut(&[f32])) {
        self.frames_in += input.len() as u64;
        let Some(fft) = self.fft.as_deref_mut() else {
            self.frames_out += input.len() as u64;
            emit(input);
            return;
        };
        self.pending.extend_from_slice(input);
        let need = fft.input_frames_next();
        let mut pos = 0;
        while self.pending.len() - pos >= need {
            let produced = run_chunk(fft, &self.pending[pos..pos + need], None, &mut self.out);
            pos += need;
            emit_trimmed(
                &self.out[..produced],
                &mut self.skip,
                &mut self.frames_out,
                u64::MAX,
                emit,
            );
        }
        self.pending.drain(..pos);
    }

    /// Flushes the filter tail. After this the total output is `ceil(input × ratio)` frames.
    pub fn finish(&mut self, emit: &mut impl FnMut(&[f32])) {
        let Some(fft) = self.fft.as_deref_mut() else {
            return;
        };
        let expected = (self.frames_in as f64 * self.ratio).ceil() as u64;
        let need = fft.input_frames_next();
        // The pending tail first, then silence until the delay line has drained.
        let mut tail = std::mem::take(&mut self.pending);
        let mut valid = tail.len();
        tail.resize(need, 0.0);
        let mut guard = 0;
        while self.frames_out < expected && guard < 64 {
            let produced = run_chunk(fft, &tail, Some(valid), &mut self.out);
            emit_trimmed(
                &self.out[..produced],
                &mut self.skip,
                &mut self.frames_out,
                expected,
                emit,
            );
            valid = 0;
            guard += 1;
        }
        tail.clear();
        self.pending = tail;
    }
}

fn run_chunk(fft: &mut Fft<f32>, input: &[f32], partial: Option<usize>, out: &mut [f32]) -> usize {
    let frames = input.len();
    let out_len = out.len();
    let adapter_in = SequentialSlice::new(input, 1, frames).expect("slice sized to one channel");
    let mut adapter_out =
        SequentialSlice::new_mut(out, 1, out_len).expect("slice sized to one channel");
    let indexing = partial.map(|n| Indexing::new().partial_len(n));
    // Buffer sizes come from the resampler's own input/output_frames queries, so this cannot
    // fail; if it ever did, emitting nothing is safer than aborting the file.
    match fft.process_into_buffer(&adapter_in, &mut adapter_out, indexing.as_ref()) {
        Ok((_, produced)) => produced,
        Err(e) => {
            tracing::error!(error = %e, "resampler rejected a chunk");
            0
        }
    }
}

fn emit_trimmed(
    chunk: &[f32],
    skip: &mut usize,
    frames_out: &mut u64,
    limit: u64,
    emit: &mut impl FnMut(&[f32]),
) {
    let dropped = (*skip).min(chunk.len());
    *skip -= dropped;
    let chunk = &chunk[dropped..];
    let room = limit.saturating_sub(*frames_out).min(chunk.len() as u64) as usize;
    if room > 0 {
        *frames_out += room as u64;
        emit(&chunk[..room]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resample_all(rate: u32, input: &[f32], piece: usize) -> Vec<f32> {
        let mut r = ChannelResampler::new(rate).unwrap();
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            r.push(chunk, &mut |s| out.extend_from_slice(s));
        }
        r.finish(&mut |s| out.extend_from_slice(s));
        out
    }

    fn sine(rate: u32, hz: f32, seconds: f32) -> Vec<f32> {
        let n = (rate as f32 * seconds) as usize;
        (0..n)
            .map(|i| (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin() * 0.5)
            .collect()
    }

    #[test]
    fn output_length_and_alignment_match_the_ratio() {
        for rate in [8000, 11025, 22050, 44100, 48000] {
            let input = sine(rate, 440.0, 1.3);
            let out = resample_all(rate, &input, 333);
            let expected = (input.len() as f64 * 16000.0 / rate as f64).ceil() as usize;
            assert_eq!(out.len(), expected, "rate {rate}");
            // The delay is removed: the output is a 440 Hz sine in phase with the input to within
            // one output sample (a one-sample shift of this sine moves it by at most 0.086).
            let reference = sine(16000, 440.0, 1.3);
            let err: f32 = out[1000..15000]
                .iter()
                .zip(&reference[1000..15000])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err < 0.086, "rate {rate}: max error {err}");
        }
    }

    #[test]
    fn passthrough_at_16k() {
        let input = sine(16000, 300.0, 0.5);
        assert_eq!(resample_all(16000, &input, 100), input);
    }
}
