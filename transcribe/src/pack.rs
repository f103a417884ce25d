//! Packing speech segments into encoder windows, and mapping times back.
//!
//! Whisper always encodes 30 s. A call is mostly silence on each channel, so instead of
//! sliding over the whole channel, the speech segments the front end found are laid end to end
//! in windows of at most 30 s. Each window remembers where its pieces came from, so every
//! timestamp the model produces maps back to the call's timeline. This cuts the encoder passes
//! to about the speech time, and it keeps Whisper away from long silences, where it tends to
//! drop the speech that follows or hallucinate.
//!
//! A window is encoded once. When its decode stops before the end, what is left goes back
//! here as [`Fragment`]s, and [`pack_fragments`] lays the leftovers of a call's windows
//! together into as few new windows as they fit.

pub use callpipe_common::AudioSpan;
use callpipe_common::SpeechSegment;

use crate::mel::{HOP, WINDOW_SAMPLES};

/// Most samples a window may hold so that its content fits the 3000-frame encoder input.
pub const MAX_WINDOW_SAMPLES: usize = WINDOW_SAMPLES - HOP;
/// Silence put between two pieces (0.25 s): a clear pause where the model can end one segment
/// and start the next, so its timestamps fall on the right side of the seam.
pub const PIECE_GAP_SAMPLES: usize = crate::SAMPLE_RATE as usize / 4;

/// A contiguous stretch of one channel of the call inside a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Piece {
    pub channel: usize,
    /// Where the piece starts inside the window, in samples.
    pub window_start: usize,
    /// Where it starts in the channel, in samples.
    pub call_start: usize,
    pub len: usize,
    /// Passes this audio had before this window: 0 for speech seen for the first time.
    pub pass: usize,
}

/// Up to 30 s of a call's speech, ready for the encoder.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Window {
    pub samples: Vec<f32>,
    pub pieces: Vec<Piece>,
}

impl Window {
    /// Maps a start time inside the window (seconds) to the call's timeline. A time in the
    /// silence between two pieces moves forward to the start of the next piece.
    pub fn start_to_call(&self, t: f64) -> f64 {
        let sample = to_samples(t);
        match self.pieces.iter().find(|p| p.window_start + p.len > sample) {
            Some(p) => at(p, sample.saturating_sub(p.window_start)),
            None => self.pieces.last().map_or(0.0, |p| at(p, p.len)),
        }
    }

    /// Maps an end time inside the window to the call's timeline. A time in the silence
    /// between two pieces moves back to the end of the previous piece.
    pub fn end_to_call(&self, t: f64) -> f64 {
        let sample = to_samples(t);
        match self.pieces.iter().rev().find(|p| p.window_start < sample) {
            Some(p) => at(p, (sample - p.window_start).min(p.len)),
            None => self.pieces.first().map_or(0.0, |p| at(p, 0)),
        }
    }

    /// The piece a stretch of window time `[start, end]` (seconds) belongs to: the one holding
    /// its midpoint, or the nearest one.
    pub fn piece_of(&self, start: f64, end: f64) -> usize {
        let mid = to_samples((start + end) / 2.0);
        self.pieces
            .iter()
            .position(|p| mid < p.window_start + p.len)
            .map(|i| {
                // In the gap before piece i: whichever side is closer.
                let p = &self.pieces[i];
                if i > 0 && mid < p.window_start {
                    let prev = &self.pieces[i - 1];
                    if mid - (prev.window_start + prev.len) < p.window_start - mid {
                        return i - 1;
                    }
                }
                i
            })
            .unwrap_or(self.pieces.len().saturating_sub(1))
    }

    /// The channel of the piece where window time `t` falls (or the next piece, in a gap).
    pub fn channel_at(&self, t: f64) -> usize {
        let sample = to_samples(t);
        self.pieces
            .iter()
            .find(|p| p.window_start + p.len > sample)
            .or(self.pieces.last())
            .map_or(0, |p| p.channel)
    }

    /// Maps window time `t` to the call's timeline within piece `index`, clamped to it.
    pub fn to_call_in(&self, index: usize, t: f64) -> f64 {
        let Some(p) = self.pieces.get(index) else {
            return 0.0;
        };
        let offset = to_samples(t).saturating_sub(p.window_start).min(p.len);
        at(p, offset)
    }

    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / crate::SAMPLE_RATE as f64
    }

    /// Window sample offsets where its pieces start.
    pub fn piece_starts(&self) -> Vec<usize> {
        self.pieces.iter().map(|p| p.window_start).collect()
    }

    /// The audio from window sample `from` to the end, as fragments on the call's timeline
    /// (the gaps between pieces are dropped), each one pass further along. Pieces shorter
    /// than [`MIN_FRAGMENT_SAMPLES`] are not kept.
    pub fn rest_from(&self, from: usize) -> Vec<Fragment> {
        self.pieces
            .iter()
            .filter(|p| p.window_start + p.len > from)
            .filter_map(|p| {
                let skip = from.saturating_sub(p.window_start);
                let start = p.window_start + skip;
                let end = p.window_start + p.len;
                (end - start >= MIN_FRAGMENT_SAMPLES).then(|| Fragment {
                    channel: p.channel,
                    call_start: p.call_start + skip,
                    pass: p.pass + 1,
                    samples: self.samples[start..end].to_vec(),
                })
            })
            .collect()
    }
}

/// Least audio worth another pass (0.1 s): shorter than any word, and a pass costs a share of
/// a full encoder pass however little it holds.
pub const MIN_FRAGMENT_SAMPLES: usize = crate::SAMPLE_RATE as usize / 10;

/// Audio of one channel still to be transcribed, taken out of a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Fragment {
    pub channel: usize,
    /// Where it starts in the channel, in samples.
    pub call_start: usize,
    /// Passes it has had.
    pub pass: usize,
    pub samples: Vec<f32>,
}

/// Packs fragments into as few windows of at most `max_samples` as first-fit decreasing finds,
/// with [`PIECE_GAP_SAMPLES`] between pieces; inside a window, pieces keep call-time order so
/// the decoder hears the conversation in sequence. A fragment longer than a window is cut.
pub fn pack_fragments(fragments: Vec<Fragment>, max_samples: usize) -> Vec<Window> {
    let max_samples = max_samples.clamp(HOP, MAX_WINDOW_SAMPLES);
    let mut parts: Vec<Fragment> = Vec::with_capacity(fragments.len());
    for f in fragments {
        if f.samples.len() <= max_samples {
            parts.push(f);
            continue;
        }
        for (i, chunk) in f.samples.chunks(max_samples).enumerate() {
            parts.push(Fragment {
                call_start: f.call_start + i * max_samples,
                samples: chunk.to_vec(),
                ..f
            });
        }
    }
    parts.sort_by_key(|f| std::cmp::Reverse(f.samples.len()));
    // Bins of fragments, with the samples each would hold gaps included.
    let mut bins: Vec<(usize, Vec<Fragment>)> = Vec::new();
    for f in parts {
        let len = f.samples.len();
        match bins
            .iter_mut()
            .find(|(used, _)| used + PIECE_GAP_SAMPLES + len <= max_samples)
        {
            Some((used, members)) => {
                *used += PIECE_GAP_SAMPLES + len;
                members.push(f);
            }
            None => bins.push((len, vec![f])),
        }
    }
    bins.into_iter()
        .map(|(used, mut members)| {
            members.sort_by_key(|f| (f.call_start, f.channel));
            let mut w = Window {
                samples: Vec::with_capacity(used),
                pieces: Vec::with_capacity(members.len()),
            };
            for f in members {
                if !w.samples.is_empty() {
                    w.samples.resize(w.samples.len() + PIECE_GAP_SAMPLES, 0.0);
                }
                w.pieces.push(Piece {
                    channel: f.channel,
                    window_start: w.samples.len(),
                    call_start: f.call_start,
                    len: f.samples.len(),
                    pass: f.pass,
                });
                w.samples.extend_from_slice(&f.samples);
            }
            w
        })
        .collect()
}

fn at(p: &Piece, offset: usize) -> f64 {
    (p.call_start + offset) as f64 / crate::SAMPLE_RATE as f64
}

fn to_samples(t: f64) -> usize {
    (t.max(0.0) * crate::SAMPLE_RATE as f64).round() as usize
}

/// Packs `segments` of a channel into windows of at most `max_samples`, taking their audio
/// from `spans` (ordered and disjoint; the call's timeline is kept through each span's start).
///
/// Segments stay whole and in order, with [`PIECE_GAP_SAMPLES`] of silence between them; one
/// longer than a window (only when VAD is off or its cap was raised) is cut into window-sized
/// pieces. Segments are clamped to the audio the spans hold.
pub fn pack(
    channel: usize,
    spans: &[AudioSpan],
    segments: &[SpeechSegment],
    max_samples: usize,
) -> Vec<Window> {
    let max_samples = max_samples.clamp(HOP, MAX_WINDOW_SAMPLES);
    let rate = crate::SAMPLE_RATE as f64;
    let mut windows = Vec::new();
    let mut current = Window::default();
    for segment in segments {
        let start = (segment.start_s * rate).floor().max(0.0) as usize;
        let end = (segment.end_s * rate).ceil().max(0.0) as usize;
        // The front end puts each segment inside one span; should one straddle two, each part
        // is packed as its own piece.
        let first = spans.partition_point(|s| s.end() <= start);
        for span in spans[first..].iter().take_while(|s| s.start < end) {
            let mut at = start.max(span.start);
            let end = end.min(span.end());
            while at < end {
                let gap = if current.samples.is_empty() {
                    0
                } else {
                    PIECE_GAP_SAMPLES
                };
                let room = max_samples.saturating_sub(current.samples.len() + gap);
                let len = (end - at).min(max_samples);
                if len > room {
                    windows.push(std::mem::take(&mut current));
                    continue;
                }
                current.samples.resize(current.samples.len() + gap, 0.0);
                current.pieces.push(Piece {
                    channel,
                    window_start: current.samples.len(),
                    call_start: at,
                    len,
                    pass: 0,
                });
                let from = at - span.start;
                current
                    .samples
                    .extend_from_slice(&span.samples[from..from + len]);
                at += len;
            }
        }
    }
    if !current.samples.is_empty() {
        windows.push(current);
    }
    windows
}

/// Merges windows that are not full (typically each channel's last one) into shared windows,
/// largest first, so a call costs fewer encoder passes. Pieces keep their channel, so results
/// still map back to the right party; this needs word timings to split a segment that spans
/// two pieces.
pub fn merge_partial(mut windows: Vec<Window>, max_samples: usize) -> Vec<Window> {
    let max_samples = max_samples.clamp(HOP, MAX_WINDOW_SAMPLES);
    windows.sort_by_key(|w| std::cmp::Reverse(w.samples.len()));
    let mut out: Vec<Window> = Vec::with_capacity(windows.len());
    for w in windows {
        let fits = out
            .iter_mut()
            .find(|o| o.samples.len() + PIECE_GAP_SAMPLES + w.samples.len() <= max_samples);
        match fits {
            Some(o) => {
                o.samples.resize(o.samples.len() + PIECE_GAP_SAMPLES, 0.0);
                let shift = o.samples.len();
                o.samples.extend_from_slice(&w.samples);
                o.pieces.extend(w.pieces.into_iter().map(|p| Piece {
                    window_start: p.window_start + shift,
                    ..p
                }));
            }
            None => out.push(w),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seg(start_s: f64, end_s: f64) -> SpeechSegment {
        SpeechSegment { start_s, end_s }
    }

    /// A whole channel as one span.
    fn whole(samples: Vec<f32>) -> Vec<AudioSpan> {
        vec![AudioSpan { start: 0, samples }]
    }

    /// Only the audio of `segments` (outward to whole samples), as the front end keeps it:
    /// neighbours that touch share a span.
    fn kept(channel: &[f32], segments: &[SpeechSegment]) -> Vec<AudioSpan> {
        let mut spans: Vec<AudioSpan> = Vec::new();
        for s in segments {
            let a = ((s.start_s * 16_000.0).floor() as usize).min(channel.len());
            let b = ((s.end_s * 16_000.0).ceil() as usize).min(channel.len());
            match spans.last_mut() {
                Some(last) if last.end() >= a => {
                    let from = last.end();
                    last.samples.extend_from_slice(&channel[from..b.max(from)]);
                }
                _ => spans.push(AudioSpan {
                    start: a,
                    samples: channel[a..b].to_vec(),
                }),
            }
        }
        spans
    }

    #[test]
    fn packs_in_order_and_maps_back() {
        let rate = 16_000.0;
        let samples = whole((0..60 * 16_000).map(|i| i as f32).collect());
        let windows = pack(
            0,
            &samples,
            &[seg(1.0, 3.0), seg(10.0, 12.5), seg(40.0, 41.0)],
            MAX_WINDOW_SAMPLES,
        );
        assert_eq!(windows.len(), 1);
        let w = &windows[0];
        assert_eq!(
            w.samples.len(),
            (5.5 * rate) as usize + 2 * PIECE_GAP_SAMPLES
        );
        // The window's first sample is the call's sample at 1.0 s.
        assert_eq!(w.samples[0], 16_000.0);
        assert!((w.start_to_call(0.5) - 1.5).abs() < 1e-9);
        // 2.0-2.25 s is the gap: a start moves on to the second piece, an end back to the first.
        assert!((w.start_to_call(2.1) - 10.0).abs() < 1e-9);
        assert!((w.end_to_call(2.1) - 3.0).abs() < 1e-9);
        assert!((w.start_to_call(2.35) - 10.1).abs() < 1e-9);
        assert_eq!(w.piece_of(2.0, 2.1), 0);
        assert_eq!(w.piece_of(2.2, 2.4), 1);
        assert!((w.end_to_call(6.0) - 41.0).abs() < 1e-9);
        // Past the end clamps to the last piece.
        assert!((w.end_to_call(9.0) - 41.0).abs() < 1e-9);
    }

    #[test]
    fn splits_when_full_and_cuts_long_segments() {
        let samples = whole(vec![0.0f32; 100 * 16_000]);
        let windows = pack(
            1,
            &samples,
            &[seg(0.0, 20.0), seg(30.0, 45.0), seg(50.0, 95.0)],
            MAX_WINDOW_SAMPLES,
        );
        let lens: Vec<f64> = windows.iter().map(Window::duration_s).collect();
        assert_eq!(windows.len(), 4, "{lens:?}");
        assert!(windows
            .iter()
            .all(|w| w.samples.len() <= MAX_WINDOW_SAMPLES
                && w.pieces.iter().all(|p| p.channel == 1)));
    }

    #[test]
    fn partial_windows_of_two_channels_share_one() {
        let samples = whole((0..60 * 16_000).map(|i| i as f32).collect());
        let left = pack(
            0,
            &samples,
            &[seg(1.0, 5.0), seg(20.0, 24.0)],
            MAX_WINDOW_SAMPLES,
        );
        let right = pack(1, &samples, &[seg(6.0, 12.0)], MAX_WINDOW_SAMPLES);
        let merged = merge_partial(left.into_iter().chain(right).collect(), MAX_WINDOW_SAMPLES);
        assert_eq!(merged.len(), 1);
        let w = &merged[0];
        let channels: Vec<usize> = w.pieces.iter().map(|p| p.channel).collect();
        assert_eq!(channels, [0, 0, 1]);
        for p in &w.pieces {
            assert_eq!(w.samples[p.window_start] as usize, p.call_start);
        }
        // Two full windows stay apart.
        let long = pack(0, &samples, &[seg(0.0, 29.0)], MAX_WINDOW_SAMPLES);
        let other = pack(1, &samples, &[seg(30.0, 59.0)], MAX_WINDOW_SAMPLES);
        assert_eq!(
            merge_partial(long.into_iter().chain(other).collect(), MAX_WINDOW_SAMPLES).len(),
            2
        );
    }

    #[test]
    fn the_rest_of_a_window_repacks_on_the_call_timeline() {
        let samples = whole((0..60 * 16_000).map(|i| i as f32).collect());
        let a = pack(
            0,
            &samples,
            &[seg(1.0, 20.0), seg(30.0, 40.0)],
            MAX_WINDOW_SAMPLES,
        );
        let b = pack(1, &samples, &[seg(2.0, 27.0)], MAX_WINDOW_SAMPLES);
        // The decode of `a[0]` stopped 15 s in, in its first piece; `b[0]`'s 20 s in.
        let mut rest = a[0].rest_from(15 * 16_000);
        rest.extend(b[0].rest_from(20 * 16_000));
        let starts: Vec<(usize, usize, usize)> = rest
            .iter()
            .map(|f| (f.channel, f.call_start, f.samples.len()))
            .collect();
        assert_eq!(
            starts,
            [
                (0, 16 * 16_000, 4 * 16_000),
                (0, 30 * 16_000, 10 * 16_000),
                (1, 22 * 16_000, 5 * 16_000)
            ]
        );
        assert!(rest.iter().all(|f| f.pass == 1));
        // A stop inside the gap keeps only what follows it; one at the very end keeps nothing.
        assert_eq!(a[0].rest_from(a[0].samples.len()), []);
        let windows = pack_fragments(rest, MAX_WINDOW_SAMPLES);
        assert_eq!(windows.len(), 1, "19 s of leftovers share one window");
        let w = &windows[0];
        let order: Vec<usize> = w.pieces.iter().map(|p| p.call_start).collect();
        assert_eq!(
            order,
            [16 * 16_000, 22 * 16_000, 30 * 16_000],
            "call-time order"
        );
        for p in &w.pieces {
            assert_eq!(w.samples[p.window_start] as usize, p.call_start);
            assert_eq!(p.pass, 1);
        }
        assert!((w.start_to_call(0.0) - 16.0).abs() < 1e-9);
    }

    proptest! {
        #[test]
        fn fragments_pack_into_full_windows_without_loss(
            lens in proptest::collection::vec(1_600usize..700_000, 0..30)
        ) {
            let mut at = 0;
            let fragments: Vec<Fragment> = lens.iter().enumerate().map(|(i, &len)| {
                let f = Fragment {
                    channel: i % 2,
                    call_start: at,
                    pass: 1,
                    samples: (at..at + len).map(|s| s as f32).collect(),
                };
                at += len + 8_000;
                f
            }).collect();
            let total: usize = lens.iter().sum();
            let windows = pack_fragments(fragments, MAX_WINDOW_SAMPLES);
            let packed: usize = windows.iter().flat_map(|w| &w.pieces).map(|p| p.len).sum();
            prop_assert_eq!(packed, total);
            for w in &windows {
                prop_assert!(w.samples.len() <= MAX_WINDOW_SAMPLES);
                for p in &w.pieces {
                    prop_assert_eq!(w.samples[p.window_start] as usize, p.call_start);
                    prop_assert_eq!(w.samples[p.window_start + p.len - 1] as usize, p.call_start + p.len - 1);
                }
            }
            // First fit leaves at most one window half empty: the fragments of a second one
            // would have fitted into it.
            let half = (MAX_WINDOW_SAMPLES - PIECE_GAP_SAMPLES) / 2;
            let sparse = windows.iter().filter(|w| w.samples.len() <= half).count();
            prop_assert!(sparse <= 1, "{} half-empty windows", sparse);
        }

        #[test]
        fn every_speech_sample_lands_in_exactly_one_window(
            raw in proptest::collection::vec((0.0f64..5.0, 0.1f64..40.0), 0..20)
        ) {
            let mut t = 0.0;
            let mut segments = Vec::new();
            for (gap, len) in raw {
                t += gap;
                segments.push(seg(t, t + len));
                t += len;
            }
            let channel: Vec<f32> = (0..((t + 1.0) * 16_000.0) as usize).map(|i| i as f32).collect();
            let windows = pack(0, &whole(channel.clone()), &segments, MAX_WINDOW_SAMPLES);
            let total: usize = windows.iter().flat_map(|w| &w.pieces).map(|p| p.len).sum();
            let expected: usize = segments.iter().map(|s| {
                let a = ((s.start_s * 16_000.0).floor() as usize).min(channel.len());
                let b = ((s.end_s * 16_000.0).ceil() as usize).min(channel.len());
                b - a
            }).sum();
            prop_assert_eq!(total, expected);
            for w in &windows {
                prop_assert!(w.samples.len() <= MAX_WINDOW_SAMPLES);
                for p in &w.pieces {
                    // Samples are their own call index, so the mapping is checkable exactly.
                    prop_assert_eq!(w.samples[p.window_start] as usize, p.call_start);
                }
            }
            // Only the segments' audio, kept as spans, packs into the very same windows.
            let from_spans = pack(0, &kept(&channel, &segments), &segments, MAX_WINDOW_SAMPLES);
            prop_assert_eq!(from_spans, windows);
        }
    }

    #[test]
    fn spans_keep_call_time_and_clamp_segments_to_the_kept_audio() {
        // Two spans far apart: 10-12 s and 100-101 s, each sample its own call index.
        let span = |from: usize, to: usize| AudioSpan {
            start: from,
            samples: (from..to).map(|i| i as f32).collect(),
        };
        let spans = [span(160_000, 192_000), span(1_600_000, 1_616_000)];
        let windows = pack(
            2,
            &spans,
            &[seg(10.5, 11.0), seg(99.0, 100.5), seg(200.0, 201.0)],
            MAX_WINDOW_SAMPLES,
        );
        assert_eq!(windows.len(), 1);
        let w = &windows[0];
        let pieces: Vec<(usize, usize)> = w.pieces.iter().map(|p| (p.call_start, p.len)).collect();
        // The second segment starts before its span: clamped to it. The third has no audio.
        assert_eq!(pieces, [(168_000, 8_000), (1_600_000, 8_000)]);
        for p in &w.pieces {
            assert_eq!(w.samples[p.window_start] as usize, p.call_start);
            assert_eq!(
                w.samples[p.window_start + p.len - 1] as usize,
                p.call_start + p.len - 1
            );
        }
        assert!((w.start_to_call(0.0) - 10.5).abs() < 1e-9);
        assert!((w.end_to_call(w.duration_s()) - 100.5).abs() < 1e-9);
        // A segment across two touching spans becomes two pieces, nothing lost.
        let touching = [span(0, 16_000), span(16_000, 32_000)];
        let windows = pack(0, &touching, &[seg(0.5, 1.5)], MAX_WINDOW_SAMPLES);
        let total: usize = windows[0].pieces.iter().map(|p| p.len).sum();
        assert_eq!(total, 16_000);
        assert!(pack(0, &[], &[seg(0.0, 1.0)], MAX_WINDOW_SAMPLES).is_empty());
    }
}
