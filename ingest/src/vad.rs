//! Voice activity detection on one 16 kHz channel.
//!
//! The model is earshot (pure Rust, weights built in, 16 ms frames). Two things keep it cheap on
//! call audio, where each channel is silent while the other party talks:
//!
//! - an energy pre-gate: a frame whose RMS is below `gate_dbfs` is scored 0 without running the
//!   model;
//! - when speech resumes after gated frames, the detector is reset and primed with the frame
//!   before, so its context is the current audio and not whatever preceded the silence.
//!
//! Frame scores become segments: hysteresis, gap merging, a minimum length, padding, and a cap
//! of `max_segment_s` enforced by splitting at the quietest frame.

use callpipe_common::config::VadConfig;
use callpipe_common::{SpeechSegment, SAMPLE_RATE};

/// earshot's frame: 256 samples = 16 ms at 16 kHz.
pub const FRAME: usize = 256;
const FRAME_S: f64 = FRAME as f64 / SAMPLE_RATE as f64;
/// Once in speech, the score may dip this far below the threshold before speech ends, so a
/// single weak frame mid-word does not split a segment.
const HYSTERESIS: f32 = 0.15;

/// Streaming VAD state for one channel.
pub struct Vad {
    detector: Box<earshot::Detector>,
    config: VadConfig,
    gate_power: f32,
    frame: [f32; FRAME],
    prev_frame: [f32; FRAME],
    filled: usize,
    prev_gated: bool,
    /// One byte per frame (score × 255): what segment building and splitting need, at 1/1024 of
    /// the audio's size.
    scores: Vec<u8>,
    samples: u64,
    model_frames: u64,
}

impl Vad {
    pub fn new(config: &VadConfig) -> Self {
        let gate_rms = 10f32.powf(config.gate_dbfs / 20.0);
        Vad {
            detector: earshot::Detector::default_boxed(),
            config: config.clone(),
            gate_power: gate_rms * gate_rms,
            frame: [0.0; FRAME],
            prev_frame: [0.0; FRAME],
            filled: 0,
            prev_gated: true,
            scores: Vec::new(),
            samples: 0,
            model_frames: 0,
        }
    }

    /// Feeds 16 kHz samples.
    pub fn push(&mut self, mut samples: &[f32]) {
        self.samples += samples.len() as u64;
        while !samples.is_empty() {
            let take = (FRAME - self.filled).min(samples.len());
            for (dst, src) in self.frame[self.filled..self.filled + take]
                .iter_mut()
                .zip(&samples[..take])
            {
                // Resampling can overshoot full scale slightly; the model wants [-1, 1].
                *dst = src.clamp(-1.0, 1.0);
            }
            self.filled += take;
            samples = &samples[take..];
            if self.filled == FRAME {
                self.score_frame();
                self.filled = 0;
            }
        }
    }

    fn score_frame(&mut self) {
        let power = self.frame.iter().map(|s| s * s).sum::<f32>() / FRAME as f32;
        let score = if power < self.gate_power {
            self.prev_gated = true;
            0.0
        } else {
            if self.prev_gated {
                self.detector.reset();
                self.detector.predict_f32(&self.prev_frame);
                self.model_frames += 1;
                self.prev_gated = false;
            }
            self.model_frames += 1;
            self.detector.predict_f32(&self.frame)
        };
        self.prev_frame = self.frame;
        self.scores
            .push((score.clamp(0.0, 1.0) * 255.0).round() as u8);
    }

    /// How many frames the model actually scored (the rest were gated as silence).
    pub fn model_frames(&self) -> u64 {
        self.model_frames
    }

    /// The score of every frame so far (score × 255); frame `i` covers samples
    /// `i * FRAME .. (i + 1) * FRAME`.
    pub fn scores(&self) -> &[u8] {
        &self.scores
    }

    /// Scores the last, partial frame (padded with silence). Call it once the stream has
    /// ended, to see every score before [`Vad::finish`].
    pub fn flush(&mut self) {
        if self.filled > 0 {
            self.frame[self.filled..].fill(0.0);
            self.score_frame();
            self.filled = 0;
        }
    }

    /// Ends the stream and returns the speech segments.
    pub fn finish(mut self) -> Vec<SpeechSegment> {
        self.flush();
        let duration_s = self.samples as f64 / SAMPLE_RATE as f64;
        segments_from_scores(&self.scores, &self.config, duration_s)
    }
}

/// The scores at which speech starts and, once started, ends: a region runs from a frame
/// scoring at least `on` up to the first frame below `off` (or gated to 0). Regions depend
/// only on the frames so far, which is what lets the front end drop audio as it streams.
pub fn speech_levels(config: &VadConfig) -> (u8, u8) {
    let on = (config.threshold * 255.0).round() as u8;
    let off = ((config.threshold - HYSTERESIS).max(0.0) * 255.0).round() as u8;
    (on, off)
}

/// How far (in samples) audio around a speech frame can end up inside a segment: the padding,
/// plus a bridged pause, whose samples are all within a gap's length of the speech before it.
/// The capping and the minimum length only ever drop or shorten, so they add nothing.
pub fn speech_reach(config: &VadConfig) -> usize {
    // Casts saturate: an absurd (unvalidated) padding keeps everything, never too little.
    let pad = (config.pad_s.max(0.0) * SAMPLE_RATE as f64).ceil() as usize;
    // One extra sample each side absorbs the floor/ceil of seconds back to samples.
    pad.saturating_add(gap_frames(config).saturating_mul(FRAME))
        .saturating_add(1)
}

fn gap_frames(config: &VadConfig) -> usize {
    (config.merge_gap_s / FRAME_S).round() as usize
}

/// Turns per-frame scores into speech segments (see the module docs for the steps).
pub fn segments_from_scores(
    scores: &[u8],
    config: &VadConfig,
    duration_s: f64,
) -> Vec<SpeechSegment> {
    let (on, off) = speech_levels(config);

    // Raw regions in frames, with hysteresis.
    let mut regions: Vec<(usize, usize)> = Vec::new();
    let mut start = None;
    for (i, &s) in scores.iter().enumerate() {
        match start {
            None if s >= on && s > 0 => start = Some(i),
            Some(b) if s < off || s == 0 => {
                regions.push((b, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(b) = start {
        regions.push((b, scores.len()));
    }

    // Bridge short gaps, then drop blips.
    let gap = gap_frames(config);
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(regions.len());
    for r in regions {
        match merged.last_mut() {
            Some(last) if r.0 - last.1 <= gap => last.1 = r.1,
            _ => merged.push(r),
        }
    }
    let min = (config.min_speech_s / FRAME_S).round() as usize;
    merged.retain(|r| r.1 - r.0 >= min.max(1));

    // Padding may not take a whole segment. Validation keeps it far below that; the clamp is
    // here so that no config (NaN or infinite values included) can make the cap below cut
    // nothing. Padding past the call's length changes nothing, and keeps the times finite.
    let pad = config
        .pad_s
        .max(0.0)
        .min(((config.max_segment_s - FRAME_S) / 2.0).max(0.0))
        .min(duration_s.max(0.0));

    // Cap the length by splitting at the quietest frame in the back half of each window.
    let max = ((config.max_segment_s - 2.0 * pad) / FRAME_S)
        .floor()
        .max(1.0) as usize;
    let mut capped = Vec::with_capacity(merged.len());
    for (mut b, e) in merged {
        while e - b > max {
            // The cut lies in (b, b + max], so every piece is non-empty and the loop advances.
            let lo = b + (max / 2).max(1);
            let hi = b + max;
            let cut = (lo..hi).min_by_key(|&i| scores[i]).unwrap_or(hi);
            capped.push((b, cut));
            b = cut;
        }
        capped.push((b, e));
    }

    // Pad and convert to seconds. Neighbours that overlap after padding meet in the middle
    // rather than merging, which could break the length cap. They meet before the clamp to the
    // call, so the meeting point is the middle of the pause between them and never moves into
    // either one's speech.
    let mut out: Vec<SpeechSegment> = capped
        .iter()
        .map(|&(b, e)| SpeechSegment {
            start_s: b as f64 * FRAME_S - pad,
            end_s: e as f64 * FRAME_S + pad,
        })
        .collect();
    for i in 1..out.len() {
        if out[i].start_s < out[i - 1].end_s {
            let mid = (out[i].start_s + out[i - 1].end_s) / 2.0;
            out[i - 1].end_s = mid;
            out[i].start_s = mid;
        }
    }
    for s in &mut out {
        s.start_s = s.start_s.clamp(0.0, duration_s.max(0.0));
        s.end_s = s.end_s.min(duration_s);
    }
    out.retain(|s| s.end_s > s.start_s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VadConfig {
        VadConfig::default()
    }

    fn frames(seconds: f64) -> usize {
        (seconds / FRAME_S).round() as usize
    }

    #[test]
    fn bridges_short_gaps_and_drops_blips() {
        let mut scores = vec![0u8; frames(10.0)];
        scores[frames(1.0)..frames(2.0)].fill(230);
        scores[frames(2.2)..frames(3.0)].fill(230); // 0.2 s gap: bridged
        scores[frames(5.0)..frames(5.0) + 2].fill(230); // 32 ms blip: dropped
        let segs = segments_from_scores(&scores, &config(), 10.0);
        assert_eq!(segs.len(), 1, "{segs:?}");
        assert!((segs[0].start_s - (1.0 - 0.15)).abs() < 0.02);
        assert!((segs[0].end_s - (3.0 + 0.15)).abs() < 0.02);
    }

    #[test]
    fn caps_long_speech_at_the_quietest_frame() {
        let mut scores = vec![230u8; frames(70.0)];
        scores[frames(25.0)] = 140; // a dip, above the off-threshold: still speech
        let segs = segments_from_scores(&scores, &config(), 70.0);
        assert!(segs.len() >= 3, "{segs:?}");
        for s in &segs {
            assert!(s.duration_s() <= 30.0 + 1e-9, "{s:?}");
        }
        assert!(
            (segs[0].end_s - 25.0).abs() < 0.2,
            "split at the dip: {segs:?}"
        );
        for w in segs.windows(2) {
            assert!(w[0].end_s <= w[1].start_s + 1e-9);
        }
    }

    #[test]
    fn silence_gives_no_segments() {
        let mut vad = Vad::new(&config());
        vad.push(&vec![0.0; 16000 * 3]);
        assert_eq!(vad.model_frames(), 0, "the gate skips digital silence");
        assert!(vad.finish().is_empty());
    }
}
