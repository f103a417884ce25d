//! Audio domain types shared by ingest and transcription.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The working sample rate of everything after decode: Whisper's input rate, and the rate of the
/// normalized per-channel audio the front end stores.
pub const SAMPLE_RATE: u32 = 16_000;

/// Who speaks on a channel.
///
/// Call recorders put each party on its own channel, so roles come from the channel layout and
/// need no diarization: by default left is the agent and right the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Agent,
    Customer,
    /// A mono recording: both parties on one channel.
    Mixed,
    /// A channel beyond the two that have conventional roles (conference bridges, multitrack
    /// recorders). It is kept and transcribed, identified by its index.
    Other,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Customer => "customer",
            Role::Mixed => "mixed",
            Role::Other => "other",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "agent" => Ok(Role::Agent),
            "customer" => Ok(Role::Customer),
            "mixed" => Ok(Role::Mixed),
            "other" => Ok(Role::Other),
            other => Err(format!(
                "unknown role `{other}` (expected agent, customer, mixed or other)"
            )),
        }
    }
}

/// Assigns a role to each channel of a recording.
///
/// Mono is [`Role::Mixed`]; stereo uses `stereo` (left, right); channels past the second are
/// [`Role::Other`].
pub fn role_for_channel(channel: usize, channel_count: usize, stereo: [Role; 2]) -> Role {
    match (channel_count, channel) {
        (1, _) => Role::Mixed,
        (_, 0) => stereo[0],
        (_, 1) => stereo[1],
        _ => Role::Other,
    }
}

/// A stretch of speech on one channel, in seconds from the start of the recording.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SpeechSegment {
    pub start_s: f64,
    pub end_s: f64,
}

impl SpeechSegment {
    pub fn duration_s(&self) -> f64 {
        self.end_s - self.start_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_follow_channel_layout() {
        let stereo = [Role::Agent, Role::Customer];
        assert_eq!(role_for_channel(0, 1, stereo), Role::Mixed);
        assert_eq!(role_for_channel(0, 2, stereo), Role::Agent);
        assert_eq!(role_for_channel(1, 2, stereo), Role::Customer);
        assert_eq!(role_for_channel(2, 4, stereo), Role::Other);
        let swapped = [Role::Customer, Role::Agent];
        assert_eq!(role_for_channel(0, 2, swapped), Role::Customer);
    }

    #[test]
    fn role_round_trips_through_str() {
        for role in [Role::Agent, Role::Customer, Role::Mixed, Role::Other] {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("caller".parse::<Role>().is_err());
    }
}

/// A stretch of one channel's 16 kHz audio that the front end kept: the speech and the padding
/// around it, not the silence between. Ingest produces it and transcription packs it, so it
/// lives here, where both stages meet.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AudioSpan {
    /// Where it starts in the channel, in 16 kHz samples from the start of the call.
    pub start: usize,
    pub samples: Vec<f32>,
}

impl AudioSpan {
    /// One past its last sample, in the channel's samples.
    pub fn end(&self) -> usize {
        self.start + self.samples.len()
    }
}
