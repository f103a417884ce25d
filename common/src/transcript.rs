//! What transcription produces and indexing consumes: per-channel segments with word timings,
//! all on the call's own timeline (seconds from the start of the recording).

use serde::{Deserialize, Serialize};

use crate::audio::Role;

/// The transcript of one recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// ISO 639-1 code of the spoken language (`en` for English-only models).
    pub language: String,
    /// How sure the detector was of `language`; 1.0 when the model fixes it.
    pub language_probability: f32,
    /// The model that produced it (its store name or directory).
    pub model: String,
    pub channels: Vec<ChannelTranscript>,
}

impl Transcript {
    /// All segments of all channels in time order, each with its channel's role.
    pub fn turns(&self) -> Vec<(&ChannelTranscript, &Segment)> {
        let mut turns: Vec<_> = self
            .channels
            .iter()
            .flat_map(|c| c.segments.iter().map(move |s| (c, s)))
            .collect();
        turns.sort_by(|a, b| a.1.start_s.total_cmp(&b.1.start_s));
        turns
    }

    /// The whole text, turns in time order.
    pub fn text(&self) -> String {
        let turns = self.turns();
        let texts: Vec<&str> = turns.iter().map(|(_, s)| s.text.trim()).collect();
        texts.join(" ")
    }
}

/// One channel's transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelTranscript {
    pub channel: usize,
    pub role: Role,
    pub segments: Vec<Segment>,
}

impl ChannelTranscript {
    pub fn text(&self) -> String {
        let texts: Vec<&str> = self.segments.iter().map(|s| s.text.trim()).collect();
        texts.join(" ")
    }
}

/// A stretch of transcribed speech.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub start_s: f64,
    pub end_s: f64,
    pub text: String,
    /// Mean log-probability of the decoded tokens: a confidence score.
    pub avg_logprob: f32,
    /// The model's probability that the window held no speech.
    pub no_speech_prob: f32,
    /// Empty when word timestamps were turned off.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub words: Vec<Word>,
}

/// A word with its timing; always inside its segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Word {
    pub start_s: f64,
    pub end_s: f64,
    /// As Whisper wrote it, with its leading space and punctuation.
    pub word: String,
    pub probability: f32,
}
