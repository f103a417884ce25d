//! The front end: one recording in, per-channel speech segments and the 16 kHz audio they
//! need out.
//!
//! Decoding is sequential (one demuxer, one codec state), but everything after it is per
//! channel: decoded packets are gathered into blocks of about half a second, and each block's
//! channels are resampled and run through VAD in parallel on the current rayon pool.
//!
//! When the caller keeps audio (transcription does, probing does not), each channel keeps only
//! what can still end up inside a speech segment: the samples within [`vad::speech_reach`] of
//! a frame VAD counts as speech. The rest is dropped as it streams, so a call holds its speech,
//! not its length; an hour of silence costs a few hundred kilobytes of frame scores. What a
//! call holds (the kept samples, and the encoded bytes when they are in memory) is counted
//! against [`FrontEndOptions::max_call_bytes`] before it is allocated.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use callpipe_common::audio::role_for_channel;
use callpipe_common::config::{IngestConfig, VadConfig};
use callpipe_common::{AudioSpan, Role, SpeechSegment, SAMPLE_RATE};

use crate::decode::{DecodeOptions, Decoder, RawFormat, SourceInfo};
use crate::error::IngestError;
use crate::resample::ChannelResampler;
use crate::vad::{self, Vad};

/// A kept buffer grows by at least this many samples (1 s) at a time, so short speech does not
/// reallocate at every resampler chunk.
const MIN_SPAN_GROWTH: usize = SAMPLE_RATE as usize;

/// What the front end does besides decoding.
#[derive(Debug, Clone)]
pub struct FrontEndOptions {
    pub decode: DecodeOptions,
    pub max_duration_s: f64,
    pub stereo_roles: [Role; 2],
    /// `None` skips VAD (decode and resample only).
    pub vad: Option<VadConfig>,
    /// Keep the 16 kHz audio that transcription needs: around the speech VAD finds, or the
    /// whole channel when VAD is off. Probing needs none.
    pub keep_audio: bool,
    /// Most bytes one call may hold: the kept audio of all its channels, plus the encoded
    /// recording when it is in memory ([`process_bytes`]).
    pub max_call_bytes: u64,
}

impl FrontEndOptions {
    pub fn from_config(config: &IngestConfig) -> Self {
        FrontEndOptions {
            decode: DecodeOptions {
                raw: None,
                max_file_bytes: config.max_file_bytes,
            },
            max_duration_s: config.max_duration_s,
            stereo_roles: config.stereo_roles,
            vad: Some(config.vad.clone()),
            keep_audio: false,
            max_call_bytes: config.max_call_memory_mb.saturating_mul(1 << 20),
        }
    }

    pub fn with_raw(mut self, raw: Option<RawFormat>) -> Self {
        self.decode.raw = raw;
        self
    }
}

/// A decoded call: the source's facts and one entry per channel.
#[derive(Debug, Clone)]
pub struct CallAudio {
    pub info: SourceInfo,
    /// Duration of the decoded audio (what is actually there, not what the header claims).
    pub duration_s: f64,
    pub truncated: bool,
    /// Both channels of a stereo file carry the same audio (a mono call stored as stereo): the
    /// difference between them is more than 40 dB below the signal. Transcription then uses
    /// one channel, as mixed speech, instead of transcribing the same words twice.
    pub mirrored: bool,
    pub channels: Vec<ChannelAudio>,
}

/// One channel of a call.
#[derive(Debug, Clone)]
pub struct ChannelAudio {
    pub channel: usize,
    pub role: Role,
    /// Speech segments; empty when VAD was skipped.
    pub segments: Vec<SpeechSegment>,
    /// The kept 16 kHz audio, when [`FrontEndOptions::keep_audio`] is set: ordered, disjoint
    /// spans, and each segment's samples ([`segment_samples`]) lie inside one of them. With VAD
    /// off, one span holds the whole channel.
    pub spans: Vec<AudioSpan>,
    /// The channel's length in 16 kHz samples, kept or not.
    pub total_samples: usize,
    /// VAD frames the model scored; the rest were gated as silence.
    pub vad_model_frames: u64,
}

impl ChannelAudio {
    pub fn speech_s(&self) -> f64 {
        self.segments.iter().map(SpeechSegment::duration_s).sum()
    }

    /// Samples kept over all spans.
    pub fn kept_samples(&self) -> usize {
        self.spans.iter().map(|s| s.samples.len()).sum()
    }

    /// The kept audio of the channel's samples `start..end`, if one span holds all of them.
    pub fn kept(&self, start: usize, end: usize) -> Option<&[f32]> {
        let i = self.spans.partition_point(|s| s.end() <= start);
        let span = self.spans.get(i)?;
        (span.start <= start && end <= span.end() && start <= end)
            .then(|| &span.samples[start - span.start..end - span.start])
    }
}

/// The channel samples a segment covers, `start..end`, clamped to `total` samples. Seconds
/// round outwards (floor, ceil), the same way the transcription stage packs them.
pub fn segment_samples(segment: &SpeechSegment, total: usize) -> (usize, usize) {
    let rate = SAMPLE_RATE as f64;
    let start = ((segment.start_s * rate).floor().max(0.0) as usize).min(total);
    let end = ((segment.end_s * rate).ceil().max(0.0) as usize).min(total);
    (start, end.max(start))
}

/// Runs the front end over a file on disk.
pub fn process_file(path: &Path, opts: &FrontEndOptions) -> Result<CallAudio, IngestError> {
    let decoder = Decoder::open(path, &opts.decode)?;
    process_within(decoder, opts, &CallMemory::new(opts.max_call_bytes))
}

/// Runs the front end over a recording held in memory. Its bytes count against the call's
/// memory budget for as long as it decodes.
pub fn process_bytes(
    name: &Path,
    bytes: Vec<u8>,
    opts: &FrontEndOptions,
) -> Result<CallAudio, IngestError> {
    let memory = CallMemory::new(opts.max_call_bytes);
    let held = bytes.len() as u64;
    let decoder = Decoder::from_bytes(name, bytes, &opts.decode)?;
    if !memory.take(held) {
        return Err(memory.exceeded(name));
    }
    process_within(decoder, opts, &memory)
}

/// Runs the front end over an opened decoder.
pub fn process(decoder: Decoder, opts: &FrontEndOptions) -> Result<CallAudio, IngestError> {
    process_within(decoder, opts, &CallMemory::new(opts.max_call_bytes))
}

/// The bytes one call holds, shared by its channels, which run on different threads.
struct CallMemory {
    limit: u64,
    held: AtomicU64,
}

impl CallMemory {
    fn new(limit: u64) -> Self {
        CallMemory {
            limit,
            held: AtomicU64::new(0),
        }
    }

    /// Counts `bytes` as held, or, when they would not fit, counts nothing and says so.
    fn take(&self, bytes: u64) -> bool {
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn left(&self) -> u64 {
        self.limit.saturating_sub(self.held.load(Ordering::Relaxed))
    }

    fn exceeded(&self, path: &Path) -> IngestError {
        IngestError::CallMemory {
            path: path.to_owned(),
            limit_bytes: self.limit,
        }
    }
}

/// Keeps the audio of one channel that can still end up inside a speech segment and drops
/// the rest as it streams.
///
/// Speech regions (hysteresis on the frame scores) are causal, so whether a frame is speech is
/// known as soon as it is scored. A sample is kept if it lies within `reach` of a speech frame;
/// until the frames that could claim it are scored, it waits in `pending`, which therefore
/// never holds more than `reach` plus a frame and a resampler chunk.
struct Keeper {
    /// Keep every sample (VAD off: the whole channel is one segment).
    keep_all: bool,
    on: u8,
    off: u8,
    reach: usize,
    in_speech: bool,
    /// Frames whose scores have been looked at.
    frames: usize,
    /// Samples seen so far.
    pos: usize,
    /// Samples `pending_start..pos`, not decided yet.
    pending: Vec<f32>,
    pending_start: usize,
    /// Samples before this are claimed by a speech frame.
    keep_until: usize,
    spans: Vec<AudioSpan>,
    over_budget: bool,
}

impl Keeper {
    fn new(vad: Option<&VadConfig>) -> Self {
        let (on, off) = vad.map_or((0, 0), vad::speech_levels);
        let reach = vad.map_or(0, vad::speech_reach);
        Keeper {
            keep_all: vad.is_none(),
            on,
            off,
            reach,
            in_speech: false,
            frames: 0,
            pos: 0,
            pending: Vec::new(),
            pending_start: 0,
            keep_until: 0,
            spans: Vec::new(),
            over_budget: false,
        }
    }

    /// Takes the next 16 kHz samples, with every frame score VAD has produced so far.
    fn push(&mut self, samples: &[f32], scores: &[u8], memory: &CallMemory) {
        if self.over_budget {
            return;
        }
        if self.keep_all {
            self.over_budget = !keep(&mut self.spans, self.pos, samples, memory);
            self.pos += samples.len();
            return;
        }
        // The pending samples count too: bounded by the config, but only a validated one.
        if !reserve_within(&mut self.pending, samples.len(), memory) {
            self.over_budget = true;
            return;
        }
        self.pending.extend_from_slice(samples);
        self.pos += samples.len();
        self.look_at(scores, memory);
        // A later speech frame can claim nothing before `horizon`; what is before
        // `keep_until` is claimed already. Both are settled now.
        let horizon = (self.frames * vad::FRAME).saturating_sub(self.reach);
        self.settle(horizon.max(self.keep_until), memory);
    }

    /// Looks at the scores not seen yet: each speech frame claims the samples within `reach`.
    fn look_at(&mut self, scores: &[u8], memory: &CallMemory) {
        for (i, &s) in scores.iter().enumerate().skip(self.frames) {
            // The same hysteresis as `vad::segments_from_scores`.
            self.in_speech = if self.in_speech {
                s >= self.off && s > 0
            } else {
                s >= self.on && s > 0
            };
            if self.in_speech {
                self.settle((i * vad::FRAME).saturating_sub(self.reach), memory);
                let claimed = ((i + 1) * vad::FRAME).saturating_add(self.reach);
                self.keep_until = self.keep_until.max(claimed);
            }
        }
        self.frames = self.frames.max(scores.len());
    }

    /// Decides every pending sample before `limit`: kept if claimed, dropped otherwise.
    fn settle(&mut self, limit: usize, memory: &CallMemory) {
        let limit = limit.min(self.pos);
        if limit <= self.pending_start || self.over_budget {
            return;
        }
        let kept_end = self.keep_until.clamp(self.pending_start, limit);
        let kept = &self.pending[..kept_end - self.pending_start];
        if !kept.is_empty() && !keep(&mut self.spans, self.pending_start, kept, memory) {
            self.over_budget = true;
            return;
        }
        self.pending.drain(..limit - self.pending_start);
        self.pending_start = limit;
    }

    /// Ends the stream, once VAD has scored its last frame: every sample is decided.
    fn end(&mut self, scores: &[u8], memory: &CallMemory) {
        if !self.keep_all {
            self.look_at(scores, memory);
            self.settle(self.pos, memory);
        }
    }

    /// The kept spans, each trimmed to the segments inside it; a span that holds none (speech
    /// VAD dropped as too short) goes. `None` when the call's budget ran out.
    fn into_spans(mut self, segments: &[SpeechSegment]) -> Option<Vec<AudioSpan>> {
        if self.over_budget {
            return None;
        }
        if self.keep_all {
            return Some(self.spans);
        }
        let total = self.pos;
        self.spans.retain_mut(|span| {
            let (start, end) = (span.start, span.end());
            let inside = segments
                .iter()
                .map(|s| segment_samples(s, total))
                .filter(|&(a, b)| a < end && b > start);
            let Some((first, last)) = inside.fold(None, |acc: Option<(usize, usize)>, (a, b)| {
                Some(acc.map_or((a, b), |(lo, hi)| (lo.min(a), hi.max(b))))
            }) else {
                return false;
            };
            let (first, last) = (first.max(start), last.min(end));
            // Trimming in place and shrinking returns the slack to the allocator, which
            // matters while the call waits for the engine.
            span.samples.truncate(last - start);
            span.samples.drain(..first - start);
            span.samples.shrink_to_fit();
            span.start = first;
            true
        });
        Some(self.spans)
    }
}

/// Appends `samples`, which start at channel sample `start`, to the last span if they continue
/// it, else to a new span. Growth is counted against the call's budget before it is allocated;
/// false (nothing appended) when it would not fit.
fn keep(spans: &mut Vec<AudioSpan>, start: usize, samples: &[f32], memory: &CallMemory) -> bool {
    if samples.is_empty() {
        return true;
    }
    if spans.last().is_none_or(|s| s.end() != start) {
        spans.push(AudioSpan {
            start,
            samples: Vec::new(),
        });
    }
    let Some(span) = spans.last_mut() else {
        return false;
    };
    if !reserve_within(&mut span.samples, samples.len(), memory) {
        if span.samples.is_empty() {
            spans.pop();
        }
        return false;
    }
    span.samples.extend_from_slice(samples);
    true
}

/// Makes room in `buf` for `extra` more samples, counting any growth against the call's
/// budget before allocating it; false (nothing allocated) when it would not fit.
fn reserve_within(buf: &mut Vec<f32>, extra: usize, memory: &CallMemory) -> bool {
    let Some(need) = buf.len().checked_add(extra) else {
        return false;
    };
    let cap = buf.capacity();
    if need <= cap {
        return true;
    }
    let bytes = |samples: usize| samples as u64 * std::mem::size_of::<f32>() as u64;
    // Grow geometrically like `Vec` would, but never past what the budget has left.
    let room = usize::try_from(memory.left() / bytes(1)).unwrap_or(usize::MAX);
    let wanted = need
        .max(cap.saturating_mul(2))
        .max(cap.saturating_add(MIN_SPAN_GROWTH))
        .min(cap.saturating_add(room))
        .max(need);
    // Another channel may take from the budget in between: then try the exact need.
    let Some(new_cap) = [wanted, need]
        .into_iter()
        .find(|&new_cap| memory.take(bytes(new_cap - cap)))
    else {
        return false;
    };
    buf.reserve_exact(new_cap - buf.len());
    true
}

/// One channel's resampler, VAD and kept audio.
struct ChannelPipeline {
    resampler: ChannelResampler,
    vad: Option<Vad>,
    keeper: Option<Keeper>,
    samples: usize,
}

/// What a channel's pipeline leaves when the stream ends.
struct ChannelResult {
    segments: Vec<SpeechSegment>,
    spans: Vec<AudioSpan>,
    total_samples: usize,
    model_frames: u64,
}

impl ChannelPipeline {
    fn push(&mut self, block: &[f32], memory: &CallMemory) {
        let (vad, keeper, samples) = (&mut self.vad, &mut self.keeper, &mut self.samples);
        self.resampler.push(block, &mut |out| {
            feed(vad, keeper, samples, out, memory);
        });
    }

    fn over_budget(&self) -> bool {
        self.keeper.as_ref().is_some_and(|k| k.over_budget)
    }

    /// `None` when the call's budget ran out.
    fn finish(mut self, memory: &CallMemory) -> Option<ChannelResult> {
        let (vad, keeper, samples) = (&mut self.vad, &mut self.keeper, &mut self.samples);
        self.resampler.finish(&mut |out| {
            feed(vad, keeper, samples, out, memory);
        });
        if let Some(vad) = self.vad.as_mut() {
            vad.flush();
        }
        if let Some(keeper) = self.keeper.as_mut() {
            let scores = self.vad.as_ref().map_or(&[][..], |v| v.scores());
            keeper.end(scores, memory);
        }
        let (segments, model_frames) = match self.vad {
            Some(vad) => {
                let frames = vad.model_frames();
                (vad.finish(), frames)
            }
            None => (Vec::new(), 0),
        };
        let spans = match self.keeper {
            Some(keeper) => keeper.into_spans(&segments)?,
            None => Vec::new(),
        };
        Some(ChannelResult {
            segments,
            spans,
            total_samples: self.samples,
            model_frames,
        })
    }
}

/// One resampled chunk: VAD first, so the keeper sees the scores of the frames it completes.
fn feed(
    vad: &mut Option<Vad>,
    keeper: &mut Option<Keeper>,
    count: &mut usize,
    out: &[f32],
    memory: &CallMemory,
) {
    *count += out.len();
    if let Some(vad) = vad.as_mut() {
        vad.push(out);
    }
    if let Some(keeper) = keeper.as_mut() {
        let scores = vad.as_ref().map_or(&[][..], |v| v.scores());
        keeper.push(out, scores, memory);
    }
}

/// The front end, with `memory` already holding what the caller counted (in-memory bytes).
fn process_within(
    mut decoder: Decoder,
    opts: &FrontEndOptions,
    memory: &CallMemory,
) -> Result<CallAudio, IngestError> {
    let info = decoder.info().clone();
    let path = decoder.path().to_owned();
    let too_long = |duration_s: f64| IngestError::TooLong {
        path: path.clone(),
        duration_s,
        limit_s: opts.max_duration_s,
    };
    let rate = decoder.output_rate();
    let channel_count = info.channels;
    let mut pipelines = (0..channel_count)
        .map(|_| {
            let resampler =
                ChannelResampler::new(rate).map_err(|reason| IngestError::Malformed {
                    path: path.clone(),
                    reason,
                })?;
            Ok(ChannelPipeline {
                resampler,
                vad: opts.vad.as_ref().map(Vad::new),
                keeper: opts.keep_audio.then(|| Keeper::new(opts.vad.as_ref())),
                samples: 0,
            })
        })
        .collect::<Result<Vec<_>, IngestError>>()?;

    let block_frames = (rate as usize / 2).max(1024);
    let max_frames = (opts.max_duration_s * rate as f64) as u64;
    let mut planes: Vec<Vec<f32>> = Vec::with_capacity(channel_count);
    let mut blocks: Vec<Vec<f32>> = (0..channel_count)
        .map(|_| Vec::with_capacity(block_frames + 8192))
        .collect();

    let flush = |pipelines: &mut Vec<ChannelPipeline>, blocks: &mut Vec<Vec<f32>>| {
        if pipelines.len() == 1 {
            pipelines[0].push(&blocks[0], memory);
        } else {
            pipelines
                .par_iter_mut()
                .zip(blocks.par_iter())
                .for_each(|(p, b)| p.push(b, memory));
        }
        blocks.iter_mut().for_each(Vec::clear);
        if pipelines.iter().any(ChannelPipeline::over_budget) {
            Err(memory.exceeded(&path))
        } else {
            Ok(())
        }
    };

    // Energy of left, right and their difference, to spot stereo files with one signal twice.
    let mut energy = [0.0f64; 3];
    while let Some(_frames) = decoder.next_into(&mut planes)? {
        for (block, plane) in blocks.iter_mut().zip(&planes) {
            block.extend_from_slice(plane);
        }
        if let [left, right] = planes.as_slice() {
            let mut e = [0.0f32; 3];
            for (&l, &r) in left.iter().zip(right) {
                e[0] += l * l;
                e[1] += r * r;
                e[2] += (l - r) * (l - r);
            }
            for (total, part) in energy.iter_mut().zip(e) {
                *total += part as f64;
            }
        }
        if decoder.decoded_frames() > max_frames {
            return Err(too_long(decoder.decoded_frames() as f64 / rate as f64));
        }
        if blocks[0].len() >= block_frames {
            flush(&mut pipelines, &mut blocks)?;
        }
    }
    if !blocks[0].is_empty() {
        flush(&mut pipelines, &mut blocks)?;
    }

    let decoded = decoder.decoded_frames();
    if decoded == 0 {
        return Err(IngestError::Malformed {
            path,
            reason: "no audio data".into(),
        });
    }

    let finished: Vec<_> = pipelines
        .into_par_iter()
        .map(|p| p.finish(memory))
        .collect::<Option<_>>()
        .ok_or_else(|| memory.exceeded(&path))?;
    let channels = finished
        .into_iter()
        .enumerate()
        .map(|(channel, result)| ChannelAudio {
            channel,
            role: role_for_channel(channel, channel_count, opts.stereo_roles),
            segments: result.segments,
            spans: result.spans,
            total_samples: result.total_samples,
            vad_model_frames: result.model_frames,
        })
        .collect();

    let signal = energy[0].max(energy[1]);
    let mirrored = channel_count == 2 && signal > 0.0 && energy[2] < signal * 1e-2;
    Ok(CallAudio {
        info,
        duration_s: decoded as f64 / rate as f64,
        truncated: decoder.truncated(),
        mirrored,
        channels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speech_config() -> VadConfig {
        VadConfig::default()
    }

    /// Feeds `scores` (one per frame) with samples equal to their own index, in pieces of
    /// `piece` samples, and returns the kept spans.
    fn run_keeper(scores: &[u8], piece: usize, limit: u64) -> (Keeper, CallMemory) {
        let memory = CallMemory::new(limit);
        let mut keeper = Keeper::new(Some(&speech_config()));
        let total = scores.len() * vad::FRAME;
        let samples: Vec<f32> = (0..total).map(|i| i as f32).collect();
        for (n, chunk) in samples.chunks(piece).enumerate() {
            let seen = ((n * piece + chunk.len()) / vad::FRAME).min(scores.len());
            keeper.push(chunk, &scores[..seen], &memory);
        }
        (keeper, memory)
    }

    #[test]
    fn keeps_only_audio_near_speech() {
        let reach = vad::speech_reach(&speech_config());
        let mut scores = vec![0u8; 2000];
        scores[1000..1100].fill(230);
        for piece in [100, 256, 2048, 7000] {
            let (keeper, _) = run_keeper(&scores, piece, u64::MAX);
            assert_eq!(keeper.spans.len(), 1, "piece {piece}");
            let span = &keeper.spans[0];
            assert_eq!(span.start, 1000 * vad::FRAME - reach, "piece {piece}");
            assert_eq!(span.end(), 1100 * vad::FRAME + reach, "piece {piece}");
            // Samples are their own index: the kept audio is the stream's, in place.
            assert!(span
                .samples
                .iter()
                .enumerate()
                .all(|(i, &s)| s == (span.start + i) as f32));
            assert!(keeper.pending.len() <= reach + vad::FRAME + piece);
        }
    }

    #[test]
    fn silence_keeps_nothing_and_speech_near_the_edges_is_clamped() {
        let (keeper, memory) = run_keeper(&[0u8; 5000], 4096, u64::MAX);
        assert!(keeper.spans.is_empty());
        // Only the samples still waiting for their frames' scores are held.
        let reach = vad::speech_reach(&speech_config());
        let bound = MIN_SPAN_GROWTH.max(2 * (reach + vad::FRAME + 4096));
        assert!(memory.held.load(Ordering::Relaxed) <= 4 * bound as u64);

        let mut scores = vec![0u8; 50];
        scores[0] = 255;
        scores[49] = 255;
        let (keeper, _) = run_keeper(&scores, 300, u64::MAX);
        assert_eq!(keeper.spans.len(), 1, "the reach bridges the two");
        assert_eq!(keeper.spans[0].start, 0);
        assert_eq!(keeper.spans[0].end(), 50 * vad::FRAME);
    }

    #[test]
    fn growth_stops_at_the_budget() {
        let scores = vec![230u8; 4000];
        let limit = 200_000;
        let (keeper, memory) = run_keeper(&scores, 2048, limit);
        assert!(keeper.over_budget);
        assert!(memory.held.load(Ordering::Relaxed) <= limit);
        let capacity: usize = keeper.spans.iter().map(|s| s.samples.capacity()).sum();
        assert!(capacity as u64 * 4 <= limit, "{capacity} samples allocated");
    }

    #[test]
    fn kept_looks_up_one_span() {
        let channel = ChannelAudio {
            channel: 0,
            role: Role::Mixed,
            segments: Vec::new(),
            spans: vec![
                AudioSpan {
                    start: 10,
                    samples: vec![1.0; 5],
                },
                AudioSpan {
                    start: 20,
                    samples: vec![2.0; 5],
                },
            ],
            total_samples: 30,
            vad_model_frames: 0,
        };
        assert_eq!(channel.kept(10, 15), Some(&[1.0; 5][..]));
        assert_eq!(channel.kept(21, 23), Some(&[2.0; 2][..]));
        assert_eq!(channel.kept(14, 21), None);
        assert_eq!(channel.kept(0, 3), None);
        assert_eq!(channel.kept_samples(), 10);
    }
}
