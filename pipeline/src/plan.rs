//! The call plan artifact: what ingest hands transcription, by reference.
//!
//! It holds per channel the role, the speech segments and the 16 kHz audio the front end kept
//! around them (never the silence between), so the transcribe stage needs no access to the
//! customer's bucket (its task role has only the artifacts bucket) and does not decode the
//! recording a second time. Samples are stored as 16-bit integers: 32 KB per second of kept
//! audio per channel, half of what 32-bit floats took (a three-minute two-party call with half
//! its time spoken is about 6 MB, read once). Call audio is at most 16-bit to begin with (most
//! of it 8-bit mu-law), so the rounding adds noise 96 dB below full scale, far under any
//! recording's own; and `callpipe run` goes through the same plan, so a worker's transcript is
//! the same as `run`'s byte for byte. Halving the bytes was measured: through S3 and SQS on one
//! machine it moved `worker --stage all` from 0.90x to 1.04x of `run`'s throughput (README,
//! Benchmarks).
//!
//! Layout: `CPPLAN2\n`, a little-endian u32 header length, the JSON header, then each span's
//! samples as little-endian i16, in header order.

use serde::{Deserialize, Serialize};

use callpipe_common::audio::AudioSpan;
use callpipe_common::{Role, SpeechSegment};
use callpipe_transcribe::ChannelSpeech;

const MAGIC: &[u8; 8] = b"CPPLAN2\n";

/// Full scale of a stored sample.
const SCALE: f32 = 32767.0;

/// The object key of a revision's plan.
pub fn plan_key(call_id: &callpipe_common::CallId, revision: &callpipe_common::Revision) -> String {
    format!("plans/{call_id}/{revision}.plan")
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    channels: Vec<ChannelHeader>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ChannelHeader {
    channel: usize,
    role: Role,
    segments: Vec<SpeechSegment>,
    /// `(start, samples)` of each kept span, on the channel's 16 kHz timeline.
    spans: Vec<(usize, usize)>,
}

/// The plan's bytes.
pub fn encode(channels: &[ChannelSpeech]) -> Vec<u8> {
    let header = Header {
        channels: channels
            .iter()
            .map(|c| ChannelHeader {
                channel: c.channel,
                role: c.role,
                segments: c.segments.clone(),
                spans: c.spans.iter().map(|s| (s.start, s.samples.len())).collect(),
            })
            .collect(),
    };
    let json = serde_json::to_vec(&header).expect("a plan header serialises");
    let samples: usize = channels
        .iter()
        .flat_map(|c| &c.spans)
        .map(|s| s.samples.len())
        .sum();
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + json.len() + samples * 2);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    for span in channels.iter().flat_map(|c| &c.spans) {
        for sample in &span.samples {
            let q = (sample.clamp(-1.0, 1.0) * SCALE).round() as i16;
            out.extend_from_slice(&q.to_le_bytes());
        }
    }
    out
}

/// Reads a plan back. Anything inconsistent (a short body, spans past the data, a header that
/// does not parse) is an error naming what is wrong; nothing is trusted to size an allocation
/// beyond the bytes actually present.
pub fn decode(bytes: &[u8]) -> Result<Vec<ChannelSpeech>, String> {
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or("not a call plan (bad magic)")?;
    if rest.len() < 4 {
        return Err("call plan truncated in its header".into());
    }
    let (len, rest) = rest.split_at(4);
    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    if rest.len() < len {
        return Err("call plan truncated in its header".into());
    }
    let (json, mut data) = rest.split_at(len);
    let header: Header =
        serde_json::from_slice(json).map_err(|e| format!("call plan header: {e}"))?;
    let mut channels = Vec::with_capacity(header.channels.len());
    for c in header.channels {
        let mut spans = Vec::with_capacity(c.spans.len());
        for (start, n) in c.spans {
            let bytes = n
                .checked_mul(2)
                .filter(|b| *b <= data.len())
                .ok_or("call plan truncated in its audio")?;
            let (span, tail) = data.split_at(bytes);
            data = tail;
            let samples = span
                .chunks_exact(2)
                .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / SCALE)
                .collect();
            spans.push(AudioSpan { start, samples });
        }
        channels.push(ChannelSpeech {
            channel: c.channel,
            role: c.role,
            spans,
            segments: c.segments,
        });
    }
    if !data.is_empty() {
        return Err(format!("call plan has {} bytes past its audio", data.len()));
    }
    Ok(channels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_round_trip_within_a_quantum_and_reject_damage() {
        let channels = vec![
            ChannelSpeech {
                channel: 0,
                role: Role::Agent,
                spans: vec![
                    AudioSpan {
                        start: 160,
                        samples: vec![0.5, -0.25, f32::MIN_POSITIVE, 1.5, -1.0],
                    },
                    AudioSpan {
                        start: 16_000,
                        samples: vec![1.0; 5],
                    },
                ],
                segments: vec![SpeechSegment {
                    start_s: 0.01,
                    end_s: 1.3,
                }],
            },
            ChannelSpeech {
                channel: 1,
                role: Role::Customer,
                spans: vec![],
                segments: vec![],
            },
        ];
        let bytes = encode(&channels);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.len(), 2);
        for (a, b) in back[0].spans.iter().zip(&channels[0].spans) {
            assert_eq!((a.start, a.samples.len()), (b.start, b.samples.len()));
            for (x, y) in a.samples.iter().zip(&b.samples) {
                assert!(
                    (x - y.clamp(-1.0, 1.0)).abs() <= 0.5 / SCALE + 1e-7,
                    "{x} vs {y}"
                );
            }
        }
        // Decoding what was decoded changes nothing: a plan read twice gives the same audio.
        assert_eq!(decode(&encode(&back)).unwrap()[0].spans, back[0].spans);
        assert_eq!(back[0].segments, channels[0].segments);
        assert_eq!(back[1].role, Role::Customer);

        assert!(
            decode(&bytes[..bytes.len() - 1]).is_err(),
            "truncated audio"
        );
        assert!(decode(&bytes[..10]).is_err(), "truncated header");
        assert!(decode(b"RIFF....").is_err(), "not a plan");
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err(), "trailing bytes");
    }
}
