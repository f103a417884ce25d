//! Headerless PCM and NIST SPHERE.
//!
//! Neither has a container symphonia can probe, so the bytes are cut into fixed-size packets
//! here and decoded by symphonia's own PCM decoder: sample conversion (mu-law, A-law, 24-bit,
//! big-endian) stays in one well-tested place.

use std::io::Read;
use std::str::FromStr;

use symphonia::core::audio::Channels;
use symphonia::core::codecs::audio::well_known::*;
use symphonia::core::codecs::audio::{AudioCodecId, AudioCodecParameters};

/// How the samples of a headerless file are laid out. Raw PCM has no header, so the caller
/// must say; `callpipe probe --raw s16le:16000:1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFormat {
    pub encoding: RawEncoding,
    pub sample_rate: u32,
    pub channels: u16,
}

impl FromStr for RawFormat {
    type Err = String;

    /// Parses `ENCODING:RATE:CHANNELS`, e.g. `s16le:16000:1` or `mulaw:8000:2`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        let [encoding, rate, channels] = parts.as_slice() else {
            return Err(format!(
                "raw format `{s}` must be ENCODING:RATE:CHANNELS, e.g. s16le:16000:1"
            ));
        };
        let encoding = encoding.parse()?;
        let sample_rate = rate
            .parse()
            .map_err(|_| format!("raw sample rate `{rate}` is not a number"))?;
        let channels: u16 = channels
            .parse()
            .map_err(|_| format!("raw channel count `{channels}` is not a number"))?;
        if channels == 0 || channels > super::MAX_CHANNELS as u16 {
            return Err(format!(
                "raw channel count must be 1..={}",
                super::MAX_CHANNELS
            ));
        }
        Ok(RawFormat {
            encoding,
            sample_rate,
            channels,
        })
    }
}

/// Sample encodings of headerless audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawEncoding {
    U8,
    S8,
    S16Le,
    S16Be,
    S24Le,
    S32Le,
    F32Le,
    F64Le,
    MuLaw,
    ALaw,
}

impl RawEncoding {
    const ALL: [(&'static str, RawEncoding); 10] = [
        ("u8", RawEncoding::U8),
        ("s8", RawEncoding::S8),
        ("s16le", RawEncoding::S16Le),
        ("s16be", RawEncoding::S16Be),
        ("s24le", RawEncoding::S24Le),
        ("s32le", RawEncoding::S32Le),
        ("f32le", RawEncoding::F32Le),
        ("f64le", RawEncoding::F64Le),
        ("mulaw", RawEncoding::MuLaw),
        ("alaw", RawEncoding::ALaw),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, e)| *e == self)
            .map_or("?", |(n, _)| n)
    }

    pub fn bytes_per_sample(self) -> usize {
        match self {
            RawEncoding::U8 | RawEncoding::S8 | RawEncoding::MuLaw | RawEncoding::ALaw => 1,
            RawEncoding::S16Le | RawEncoding::S16Be => 2,
            RawEncoding::S24Le => 3,
            RawEncoding::S32Le | RawEncoding::F32Le => 4,
            RawEncoding::F64Le => 8,
        }
    }

    fn codec(self) -> (AudioCodecId, u32) {
        match self {
            RawEncoding::U8 => (CODEC_ID_PCM_U8, 8),
            RawEncoding::S8 => (CODEC_ID_PCM_S8, 8),
            RawEncoding::S16Le => (CODEC_ID_PCM_S16LE, 16),
            RawEncoding::S16Be => (CODEC_ID_PCM_S16BE, 16),
            RawEncoding::S24Le => (CODEC_ID_PCM_S24LE, 24),
            RawEncoding::S32Le => (CODEC_ID_PCM_S32LE, 32),
            RawEncoding::F32Le => (CODEC_ID_PCM_F32LE, 32),
            RawEncoding::F64Le => (CODEC_ID_PCM_F64LE, 64),
            RawEncoding::MuLaw => (CODEC_ID_PCM_MULAW, 16),
            RawEncoding::ALaw => (CODEC_ID_PCM_ALAW, 16),
        }
    }
}

impl FromStr for RawEncoding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        let alias = match lower.as_str() {
            "ulaw" | "mu-law" | "pcmu" => "mulaw",
            "a-law" | "pcma" => "alaw",
            other => other,
        };
        Self::ALL
            .iter()
            .find(|(name, _)| *name == alias)
            .map(|(_, e)| *e)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown raw encoding `{s}` (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

/// Frames per raw packet: 4096 keeps packets in the size range real codecs produce.
const RAW_PACKET_FRAMES: usize = 4096;

impl RawFormat {
    pub(super) fn codec_params(&self) -> AudioCodecParameters {
        let (codec, bits) = self.encoding.codec();
        let mut params = AudioCodecParameters::new();
        params
            .for_codec(codec)
            .with_sample_rate(self.sample_rate)
            .with_channels(Channels::Discrete(self.channels))
            .with_bits_per_sample(bits)
            .with_max_frames_per_packet(RAW_PACKET_FRAMES as u64);
        if matches!(self.encoding, RawEncoding::MuLaw | RawEncoding::ALaw) {
            params.with_bits_per_coded_sample(8);
        }
        params
    }

    pub(super) fn frame_bytes(&self) -> usize {
        self.encoding.bytes_per_sample() * self.channels as usize
    }
}

/// Cuts a byte stream into whole-frame packets.
pub(super) struct RawPackets {
    reader: Box<dyn Read + Send + Sync>,
    frame_bytes: usize,
    /// Bytes left to read when the header gives a sample count (SPHERE), else `None`.
    remaining: Option<u64>,
    buf: Vec<u8>,
    /// A trailing partial frame was dropped: the file was cut mid-sample.
    pub(super) partial_tail: bool,
}

impl RawPackets {
    pub(super) fn new(
        reader: Box<dyn Read + Send + Sync>,
        format: &RawFormat,
        remaining: Option<u64>,
    ) -> Self {
        // The caller has checked the channel count (1..=MAX_CHANNELS), so this buffer is at most
        // 4096 frames × 64 channels × 8 bytes, and a frame is never 0 bytes; `max(1)` keeps the
        // `%` in `next` defined regardless.
        let frame_bytes = format.frame_bytes().max(1);
        RawPackets {
            reader,
            frame_bytes,
            remaining,
            buf: vec![0; RAW_PACKET_FRAMES * frame_bytes],
            partial_tail: false,
        }
    }

    /// The next packet of whole frames, or `None` at the end.
    pub(super) fn next(&mut self) -> std::io::Result<Option<&[u8]>> {
        let want = match self.remaining {
            Some(0) => return Ok(None),
            // Compared as u64 first: a header's byte count need not fit a usize.
            Some(left) => left.min(self.buf.len() as u64) as usize,
            None => self.buf.len(),
        };
        let mut filled = 0;
        while filled < want {
            match self.reader.read(&mut self.buf[filled..want]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(left) = self.remaining.as_mut() {
            *left -= filled as u64;
            if filled < want {
                // The header promised more samples than the file holds.
                self.partial_tail = true;
                *left = 0;
            }
        }
        let whole = filled - filled % self.frame_bytes;
        if whole < filled {
            self.partial_tail = true;
        }
        if whole == 0 {
            return Ok(None);
        }
        Ok(Some(&self.buf[..whole]))
    }
}

/// How much of a SPHERE file is read to find the end of its header. The header is text; every
/// field this decoder reads comes well before this.
pub(super) const SPHERE_MAX_HEADER_READ: usize = 16 * 1024;

/// A parsed NIST SPHERE header: the layout of the samples that follow it.
#[derive(Debug, PartialEq)]
pub(super) struct SphereHeader {
    pub format: RawFormat,
    pub header_bytes: usize,
    pub sample_count: Option<u64>,
}

/// Parses a NIST SPHERE header (`NIST_1A`), the format of Switchboard/Fisher-era telephone
/// corpora. Only uncompressed PCM, mu-law and A-law are supported; shorten-compressed files are
/// reported as unsupported.
pub(super) fn parse_sphere_header(bytes: &[u8]) -> Result<SphereHeader, String> {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(SPHERE_MAX_HEADER_READ)]);
    let mut lines = text.lines();
    if lines.next() != Some("NIST_1A") {
        return Err("not a NIST SPHERE header".into());
    }
    let header_bytes: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .filter(|n| (16..=1 << 20).contains(n))
        .ok_or("SPHERE header size is missing or implausible")?;
    let (mut rate, mut channels, mut width, mut order, mut coding, mut count) =
        (None, 1u16, 2usize, "01".to_owned(), "pcm".to_owned(), None);
    for line in lines {
        if line.trim() == "end_head" {
            break;
        }
        let mut fields = line.split_whitespace();
        let (Some(key), Some(_ty), Some(value)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        match key {
            "sample_rate" => rate = value.parse::<u32>().ok(),
            "channel_count" => channels = value.parse().map_err(|_| "bad channel_count")?,
            "sample_n_bytes" => width = value.parse().map_err(|_| "bad sample_n_bytes")?,
            "sample_byte_format" => order = value.to_owned(),
            "sample_coding" => coding = value.to_owned(),
            "sample_count" => count = value.parse::<u64>().ok(),
            _ => {}
        }
    }
    let sample_rate = rate.ok_or("SPHERE header has no sample_rate")?;
    if coding.contains("shorten") || coding.contains("wavpack") || coding.contains("shortpack") {
        return Err(format!("unsupported codec SPHERE `{coding}` compression"));
    }
    let encoding = match (coding.as_str(), width, order.as_str()) {
        ("ulaw" | "mu-law", 1, _) => RawEncoding::MuLaw,
        ("alaw", 1, _) => RawEncoding::ALaw,
        ("pcm", 1, _) => RawEncoding::S8,
        ("pcm", 2, "10") => RawEncoding::S16Be,
        ("pcm", 2, _) => RawEncoding::S16Le,
        ("pcm", 4, "0123") => RawEncoding::S32Le,
        _ => {
            return Err(format!(
                "unsupported codec SPHERE {coding} with {width}-byte samples in byte order {order}"
            ))
        }
    };
    if channels == 0 || channels as usize > super::MAX_CHANNELS {
        return Err(format!("implausible SPHERE channel_count {channels}"));
    }
    Ok(SphereHeader {
        format: RawFormat {
            encoding,
            sample_rate,
            channels,
        },
        header_bytes,
        sample_count: count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_raw_format_specs() {
        let f: RawFormat = "s16le:16000:1".parse().unwrap();
        assert_eq!(f.encoding, RawEncoding::S16Le);
        assert_eq!((f.sample_rate, f.channels), (16000, 1));
        assert_eq!(
            "ulaw:8000:2".parse::<RawFormat>().unwrap().encoding,
            RawEncoding::MuLaw
        );
        assert!("s16le:16000".parse::<RawFormat>().is_err());
        assert!("s12:16000:1".parse::<RawFormat>().is_err());
        assert!("s16le:16000:0".parse::<RawFormat>().is_err());
    }

    #[test]
    fn parses_sphere_headers() {
        let mut header = b"NIST_1A\n   1024\nsample_rate -i 11025\nchannel_count -i 1\nsample_n_bytes -i 2\nsample_byte_format -s2 01\nsample_count -i 230000\nsample_coding -s3 pcm\nend_head\n".to_vec();
        header.resize(1024, b' ');
        let parsed = parse_sphere_header(&header).unwrap();
        assert_eq!(parsed.header_bytes, 1024);
        assert_eq!(parsed.format.encoding, RawEncoding::S16Le);
        assert_eq!(parsed.format.sample_rate, 11025);
        assert_eq!(parsed.sample_count, Some(230000));

        let shorten = b"NIST_1A\n   1024\nsample_rate -i 8000\nsample_coding -s26 pcm,embedded-shorten-v2.00\nend_head\n";
        let err = parse_sphere_header(shorten).unwrap_err();
        assert!(err.contains("shorten"), "{err}");
    }
}
