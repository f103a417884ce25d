//! Searchable units: what one search result points at.
//!
//! A Whisper segment is often a clause, too short to carry meaning for an embedding and too
//! fragmented to read as a result. A unit is a segment, or several consecutive segments of one
//! speaker merged while nobody else speaks in between, capped in length so a result still
//! points at a moment and not at a monologue. Keys are deterministic, `(call_id, revision,
//! channel, seq)` with `seq` counting a channel's units in time order, so reprocessing the same
//! revision produces the same keys.

use callpipe_common::ids::{CallId, Revision};
use callpipe_common::store::{SegmentDoc, SegmentKey};
use callpipe_common::transcript::{Segment, Transcript};

/// How segments are merged into units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnitRules {
    /// A unit spans at most this many seconds.
    pub max_s: f64,
    /// A unit holds at most this many words.
    pub max_words: usize,
    /// Segments further apart than this (seconds) are not merged.
    pub max_gap_s: f64,
}

impl Default for UnitRules {
    fn default() -> Self {
        UnitRules {
            max_s: 20.0,
            max_words: 60,
            max_gap_s: 1.5,
        }
    }
}

/// The call's units, channel by channel, each channel's in time order.
pub fn units(
    call_id: &CallId,
    revision: &Revision,
    transcript: &Transcript,
    rules: &UnitRules,
) -> Vec<SegmentDoc> {
    let mut out = Vec::new();
    for channel in &transcript.channels {
        // Where the other parties start speaking: a unit never spans one of these.
        let mut others: Vec<f64> = transcript
            .channels
            .iter()
            .filter(|c| c.channel != channel.channel)
            .flat_map(|c| c.segments.iter().map(|s| s.start_s))
            .collect();
        others.sort_by(f64::total_cmp);
        let interrupted = |from: f64, to: f64| {
            let i = others.partition_point(|&t| t < from);
            others.get(i).is_some_and(|&t| t < to)
        };

        let mut segments: Vec<&Segment> = channel
            .segments
            .iter()
            .filter(|s| !s.text.trim().is_empty())
            .collect();
        segments.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));

        let mut open: Option<Open> = None;
        let mut seq = 0u32;
        let mut close = |unit: Open, out: &mut Vec<SegmentDoc>| {
            out.push(SegmentDoc {
                key: SegmentKey {
                    call_id: call_id.clone(),
                    revision: revision.clone(),
                    channel: channel.channel as u32,
                    seq,
                },
                role: channel.role,
                start_s: unit.start_s,
                end_s: unit.end_s,
                text: unit.text,
                avg_logprob: (unit.logprob_sum / unit.weight.max(1e-9)) as f32,
            });
            seq += 1;
        };
        for s in segments {
            let text = s.text.trim();
            let words = text.split_whitespace().count();
            if let Some(unit) = &mut open {
                let fits = s.start_s - unit.end_s <= rules.max_gap_s
                    && s.end_s - unit.start_s <= rules.max_s
                    && unit.words + words <= rules.max_words
                    && !interrupted(unit.end_s, s.start_s);
                if fits {
                    unit.add(s, text, words);
                    continue;
                }
                close(open.take().expect("open"), &mut out);
            }
            let mut unit = Open {
                start_s: s.start_s,
                ..Open::default()
            };
            unit.add(s, text, words);
            open = Some(unit);
        }
        if let Some(unit) = open {
            close(unit, &mut out);
        }
    }
    out
}

/// A unit being built.
#[derive(Debug, Default)]
struct Open {
    start_s: f64,
    end_s: f64,
    text: String,
    words: usize,
    /// Duration-weighted sum of the segments' mean log-probabilities.
    logprob_sum: f64,
    weight: f64,
}

impl Open {
    fn add(&mut self, s: &Segment, text: &str, words: usize) {
        if !self.text.is_empty() {
            self.text.push(' ');
        }
        self.text.push_str(text);
        self.end_s = self.end_s.max(s.end_s);
        self.words += words;
        let w = (s.end_s - s.start_s).max(0.01);
        self.logprob_sum += f64::from(s.avg_logprob) * w;
        self.weight += w;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callpipe_common::transcript::ChannelTranscript;
    use callpipe_common::Role;

    fn seg(start_s: f64, end_s: f64, text: &str) -> Segment {
        Segment {
            start_s,
            end_s,
            text: text.into(),
            avg_logprob: -0.5,
            no_speech_prob: 0.0,
            words: Vec::new(),
        }
    }

    fn transcript(agent: Vec<Segment>, customer: Vec<Segment>) -> Transcript {
        Transcript {
            language: "en".into(),
            language_probability: 1.0,
            model: "m".into(),
            channels: vec![
                ChannelTranscript {
                    channel: 0,
                    role: Role::Agent,
                    segments: agent,
                },
                ChannelTranscript {
                    channel: 1,
                    role: Role::Customer,
                    segments: customer,
                },
            ],
        }
    }

    #[test]
    fn merges_one_speakers_turn_but_not_across_the_other_party() {
        let t = transcript(
            vec![
                seg(0.0, 2.0, " Hello,"),
                seg(2.2, 4.0, " how can I help?"),
                seg(9.0, 11.0, " Sure."),
            ],
            vec![seg(4.5, 8.0, " I was charged twice."), seg(8.1, 8.5, "  ")],
        );
        let id = CallId::from_source("x");
        let rev = Revision::new("r");
        let u = units(&id, &rev, &t, &UnitRules::default());
        let texts: Vec<(&str, u32, u32)> = u
            .iter()
            .map(|d| (d.text.as_str(), d.key.channel, d.key.seq))
            .collect();
        assert_eq!(
            texts,
            [
                ("Hello, how can I help?", 0, 0),
                ("Sure.", 0, 1),
                ("I was charged twice.", 1, 0)
            ]
        );
        assert_eq!((u[0].start_s, u[0].end_s), (0.0, 4.0));
        assert_eq!(u[2].role, Role::Customer);
        // Deterministic: the same transcript gives the same keys.
        assert_eq!(u, units(&id, &rev, &t, &UnitRules::default()));
    }

    #[test]
    fn caps_length_and_gap() {
        let long: Vec<Segment> = (0..10)
            .map(|i| {
                seg(
                    f64::from(i) * 5.0,
                    f64::from(i) * 5.0 + 4.5,
                    " one two three",
                )
            })
            .collect();
        let t = transcript(long, vec![seg(100.0, 101.0, " a"), seg(110.0, 111.0, " b")]);
        let u = units(
            &CallId::from_source("x"),
            &Revision::new("r"),
            &t,
            &UnitRules::default(),
        );
        let agent: Vec<&SegmentDoc> = u.iter().filter(|d| d.key.channel == 0).collect();
        assert!(agent.iter().all(|d| d.end_s - d.start_s <= 20.0));
        assert_eq!(agent.len(), 3, "{agent:?}");
        // 9 s apart: not merged.
        assert_eq!(u.iter().filter(|d| d.key.channel == 1).count(), 2);
    }
}
