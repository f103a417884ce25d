//! Whisper's log-mel spectrogram, computed the way Whisper was trained on it.
//!
//! n_fft 400 (25 ms), hop 160 (10 ms), periodic Hann window, a centred STFT with reflect
//! padding, power spectrum, Slaney-scale mel filters (80 or 128 bins), `log10` floored at
//! 1e-10, clamped at `max − 8`, then `(x + 4) / 4`. Like faster-whisper's `FeatureExtractor`,
//! 160 zero samples are appended and the last STFT frame is dropped, so `n` samples give
//! `n / 160 + 1` frames. The tests hold it to reference values from that implementation.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

/// Samples per FFT window.
pub const N_FFT: usize = 400;
/// Samples between frames: 10 ms at 16 kHz.
pub const HOP: usize = 160;
/// Frames in one 30 s encoder window.
pub const WINDOW_FRAMES: usize = 3000;
/// Samples in one 30 s encoder window.
pub const WINDOW_SAMPLES: usize = WINDOW_FRAMES * HOP;
/// The mel bin counts Whisper models take: 80, or 128 for large-v3. Model validation refuses
/// any other, since the bin count sizes every feature buffer.
pub const SUPPORTED_MEL_BINS: [usize; 2] = [80, 128];
const N_BINS: usize = N_FFT / 2 + 1;

/// A log-mel extractor for one bin count. Build once; [`LogMel::compute`] reuses its buffers.
pub struct LogMel {
    n_mels: usize,
    /// Each filter's first FFT bin and its non-zero weights (the filters are sparse triangles).
    filters: Vec<(usize, Vec<f32>)>,
    window: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
    frame: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    power: Vec<f32>,
    padded: Vec<f32>,
}

impl std::fmt::Debug for LogMel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogMel")
            .field("n_mels", &self.n_mels)
            .finish()
    }
}

impl LogMel {
    pub fn new(n_mels: usize) -> Self {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        let window = (0..N_FFT)
            .map(|n| {
                (0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64).cos()) as f32
            })
            .collect();
        LogMel {
            n_mels,
            filters: mel_filters(n_mels),
            window,
            frame: fft.make_input_vec(),
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            fft,
            power: vec![0.0; N_BINS],
            padded: Vec::new(),
        }
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Frames that `samples` samples produce.
    pub fn frames_for(samples: usize) -> usize {
        samples / HOP + 1
    }

    /// Writes the log-mel of `samples` (16 kHz mono) into `out` as `[n_mels][row_len]`,
    /// row-major, and returns the number of content frames. Rows are zero-padded (or cut) to
    /// `row_len` frames, the way faster-whisper pads a window's features to 3000 frames.
    pub fn compute(&mut self, samples: &[f32], row_len: usize, out: &mut Vec<f32>) -> usize {
        let n_frames = Self::frames_for(samples.len());
        let kept = n_frames.min(row_len);
        out.clear();
        out.resize(self.n_mels * row_len, 0.0);
        if kept == 0 || self.n_mels == 0 {
            // Nothing to compute, and rows of no frames cannot be walked.
            return 0;
        }

        // Centre padding (reflect, edge excluded) around the signal plus its 160 trailing zeros.
        let pad = N_FFT / 2;
        let body = samples.len() + HOP;
        self.padded.clear();
        self.padded.reserve(body + 2 * pad);
        let at = |i: isize| -> f32 {
            // Reflect into [0, body); the body is the samples followed by zeros.
            let len = body as isize;
            let mut i = i;
            while i < 0 || i >= len {
                if i < 0 {
                    i = -i;
                }
                if i >= len {
                    i = 2 * (len - 1) - i;
                }
            }
            samples.get(i as usize).copied().unwrap_or(0.0)
        };
        for i in -(pad as isize)..(body + pad) as isize {
            self.padded.push(at(i));
        }

        let mut max = f32::NEG_INFINITY;
        for t in 0..kept {
            let start = t * HOP;
            for ((dst, &x), &w) in self
                .frame
                .iter_mut()
                .zip(&self.padded[start..start + N_FFT])
                .zip(&self.window)
            {
                *dst = x * w;
            }
            self.fft
                .process_with_scratch(&mut self.frame, &mut self.spectrum, &mut self.scratch)
                .expect("buffers are sized by the planner");
            for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
                *p = c.norm_sqr();
            }
            for (m, (first, weights)) in self.filters.iter().enumerate() {
                let energy: f32 = weights
                    .iter()
                    .zip(&self.power[*first..])
                    .map(|(w, p)| w * p)
                    .sum();
                let v = energy.max(1e-10).log10();
                max = max.max(v);
                out[m * row_len + t] = v;
            }
        }
        let floor = max - 8.0;
        for row in out.chunks_exact_mut(row_len) {
            for v in &mut row[..kept] {
                *v = (v.max(floor) + 4.0) / 4.0;
            }
        }
        kept
    }
}

/// Slaney-scale mel filterbank over the `N_FFT / 2 + 1` bins, as librosa and faster-whisper
/// build it (area-normalised triangles), reduced to each filter's non-zero span.
fn mel_filters(n_mels: usize) -> Vec<(usize, Vec<f32>)> {
    let sr = crate::SAMPLE_RATE as f64;
    let fft_freqs: Vec<f64> = (0..N_BINS).map(|i| i as f64 * sr / N_FFT as f64).collect();
    let (min_mel, max_mel) = (0.0, 45.245640471924965);
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    let freqs: Vec<f64> = (0..n_mels + 2)
        .map(|i| {
            let mel = min_mel + (max_mel - min_mel) * i as f64 / (n_mels + 1) as f64;
            if mel >= min_log_mel {
                min_log_hz * (logstep * (mel - min_log_mel)).exp()
            } else {
                f_sp * mel
            }
        })
        .collect();
    (0..n_mels)
        .map(|m| {
            let enorm = 2.0 / (freqs[m + 2] - freqs[m]);
            let weights: Vec<f32> = fft_freqs
                .iter()
                .map(|&f| {
                    let lower = (f - freqs[m]) / (freqs[m + 1] - freqs[m]);
                    let upper = (freqs[m + 2] - f) / (freqs[m + 2] - freqs[m + 1]);
                    (lower.min(upper).max(0.0) * enorm) as f32
                })
                .collect();
            let first = weights.iter().position(|&w| w > 0.0).unwrap_or(0);
            let last = weights.iter().rposition(|&w| w > 0.0).unwrap_or(first);
            (first, weights[first..=last].to_vec())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_count_follows_faster_whisper() {
        let mut mel = LogMel::new(80);
        let mut out = Vec::new();
        assert_eq!(mel.compute(&vec![0.0; 16_000], 3000, &mut out), 101);
        assert_eq!(out.len(), 80 * 3000);
        // Longer than a window: cut to the row length.
        assert_eq!(mel.compute(&vec![0.1; 40 * 16_000], 3000, &mut out), 3000);
        // Shorter than the FFT: still one frame, no panic.
        assert_eq!(mel.compute(&[0.5; 10], 3000, &mut out), 1);
        assert_eq!(mel.compute(&[], 3000, &mut out), 1);
        // Rows of no frames: nothing to compute, and no panic.
        assert_eq!(mel.compute(&[0.5; 1000], 0, &mut out), 0);
        assert!(out.is_empty());
    }

    #[test]
    fn filters_are_non_negative_and_within_the_spectrum() {
        for n in [80, 128] {
            let filters = mel_filters(n);
            assert_eq!(filters.len(), n);
            for (first, w) in &filters {
                assert!(first + w.len() <= N_BINS);
                assert!(w.iter().all(|&x| x >= 0.0));
            }
        }
    }
}
