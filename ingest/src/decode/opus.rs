//! Opus through libopus.
//!
//! symphonia demuxes Ogg Opus (and Opus in MKV/WebM) but has no Opus decoder, so packets go to
//! libopus, which can synthesize directly at 16 kHz: no 48 kHz intermediate and no resampling.

use symphonia::core::packet::Packet;

/// libopus decodes at one of its native rates; 16 kHz is the pipeline's working rate.
pub(super) const OPUS_OUTPUT_RATE: u32 = 16_000;
/// Opus timestamps (pre-skip, trims) count 48 kHz samples whatever the output rate.
pub(super) const OPUS_TIMEBASE_RATE: u32 = 48_000;
/// The longest Opus packet is 120 ms.
const MAX_PACKET_FRAMES: usize = (OPUS_OUTPUT_RATE as usize) * 120 / 1000;

pub(super) struct OpusDecoder {
    decoder: opus::Decoder,
    channels: usize,
    interleaved: Vec<f32>,
}

impl OpusDecoder {
    pub(super) fn new(channels: usize) -> Result<Self, String> {
        let layout = match channels {
            1 => opus::Channels::Mono,
            2 => opus::Channels::Stereo,
            n => return Err(format!("codec opus with {n} channels (multistream)")),
        };
        let decoder = opus::Decoder::new(OPUS_OUTPUT_RATE, layout)
            .map_err(|e| format!("codec opus: libopus refused to start: {e}"))?;
        Ok(OpusDecoder {
            decoder,
            channels,
            interleaved: vec![0.0; MAX_PACKET_FRAMES * channels],
        })
    }

    /// Decodes one packet into `planes`, applying the trims the container set on it (padding
    /// at the end; the pre-skip, which symphonia's Ogg reader leaves on the track, is dropped by
    /// the caller). Returns the frames written.
    pub(super) fn decode(
        &mut self,
        packet: &Packet,
        planes: &mut Vec<Vec<f32>>,
    ) -> Result<usize, String> {
        let frames = self
            .decoder
            .decode_float(&packet.data, &mut self.interleaved, false)
            .map_err(|e| format!("corrupt Opus packet: {e}"))?;
        // The trims come from the container (pre-skip, the last page's granule position) and can
        // be anything; they are clamped to the packet while still 64-bit.
        let scale = u64::from(OPUS_TIMEBASE_RATE / OPUS_OUTPUT_RATE);
        let clamp = |trim: u64| (trim / scale).min(frames as u64) as usize;
        let start = clamp(packet.trim_start.get());
        let end = frames - clamp(packet.trim_end.get());
        let kept = end.saturating_sub(start);
        planes.resize_with(self.channels, Vec::new);
        for (ch, plane) in planes.iter_mut().enumerate() {
            plane.clear();
            plane.extend(
                self.interleaved[start * self.channels..end.max(start) * self.channels]
                    .iter()
                    .skip(ch)
                    .step_by(self.channels),
            );
        }
        Ok(kept)
    }
}
