//! Decoding: any recording in, planar f32 PCM out, one packet at a time.
//!
//! [`Decoder`] streams. It never holds more than one decoded packet, so memory does not grow
//! with the file. Containers and most codecs are symphonia's; Opus is libopus
//! ([`opus`]); headerless PCM and NIST SPHERE are cut into packets here and decoded by
//! symphonia's PCM decoder ([`raw`]).
//!
//! Bad input is an error naming the file, never a panic. A file that ends early (cut mid-frame,
//! or shorter than its header claims) decodes up to where its data ends and reports
//! [`Decoder::truncated`]. Header values are claims: arithmetic on them is checked, nothing is
//! allocated from them, and limits apply to the audio actually decoded.
//!
//! Chained streams (Ogg links one after another, `cat a.opus b.opus`) decode link by link while
//! each link keeps the first one's codec, rate and channels.
//!
//! Only regular files are opened ([`input`]): a fifo or `/dev/zero` would block or never end.

mod input;
mod opus;
mod raw;

use std::io::{BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use symphonia::core::codecs::audio::well_known::*;
use symphonia::core::codecs::audio::{
    AudioCodecId, AudioCodecParameters, AudioDecoder, AudioDecoderOptions,
};
use symphonia::core::codecs::CodecParameters;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, Track, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::packet::Packet;

pub use self::input::read_recording;
pub use self::raw::{RawEncoding, RawFormat};
use crate::error::IngestError;

/// More channels than this is a corrupt header, not a recording.
pub const MAX_CHANNELS: usize = 64;
/// Sample rates outside this range are corrupt headers (one test file claims 1,092,676 Hz).
pub const SAMPLE_RATE_RANGE: std::ops::RangeInclusive<u32> = 1_000..=384_000;
/// How many undecodable packets in a row end the file: a few are skipped (a damaged frame in a
/// long MP3), a run means the rest of the stream is garbage.
const MAX_CONSECUTIVE_BAD_PACKETS: u32 = 8;
/// Encoder priming of AAC-LC: 1024 frames of delay that ffmpeg, Apple and FDK encoders all
/// emit. MP4 records it in an edit list, which symphonia does not apply, so it is dropped here;
/// otherwise every timestamp of an M4A call would be 64 ms late at 16 kHz.
const AAC_PRIMING_FRAMES: usize = 1024;
/// Most samples (frames × channels) one packet may declare. Decoders size their output buffer
/// from the header's frames per packet before reading any audio, so a corrupt value (an MP4
/// claiming four billion) would be a multi-gigabyte allocation. FLAC's largest block at 64
/// channels still fits.
const MAX_PACKET_SAMPLES: u64 = 1 << 22;

/// What to decode and the limits that apply before any decoding.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// The layout of a headerless file. `None` means probe the container.
    pub raw: Option<RawFormat>,
    /// Files larger than this are refused unread.
    pub max_file_bytes: u64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            raw: None,
            max_file_bytes: u64::MAX,
        }
    }
}

/// What the container and codec say about the recording.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceInfo {
    /// Container: `wav`, `mp3`, `flac`, `ogg`, `isomp4`, `aiff`, `sphere`, `raw`, ...
    pub container: String,
    /// Codec: `pcm_s16le`, `pcm_mulaw`, `mp3`, `flac`, `vorbis`, `aac`, `opus`, ...
    pub codec: String,
    /// The stream's own sample rate (Opus always declares 48 kHz).
    pub sample_rate: u32,
    pub channels: usize,
    /// The duration the header claims, if it claims one. It is a hint, not a measurement: for
    /// codecs with a fixed size per sample (PCM, mu-law, A-law, SPHERE) a claim beyond what the
    /// file's bytes can hold is cut to that, so a WAV header claiming 4 GB of data in a 1 s file
    /// reads as about 1 s here, and the file decodes flagged [`Decoder::truncated`].
    pub header_duration_s: Option<f64>,
}

/// What a link of a chained stream must keep to be decoded as more of the same recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LinkFormat {
    codec: AudioCodecId,
    sample_rate: u32,
    channels: usize,
}

enum Packets {
    Container {
        reader: Box<dyn FormatReader>,
        track_id: u32,
    },
    Raw(raw::RawPackets),
}

enum Codec {
    Symphonia(Box<dyn AudioDecoder>),
    Opus(opus::OpusDecoder),
}

/// A streaming decoder over one recording.
pub struct Decoder {
    path: PathBuf,
    info: SourceInfo,
    packets: Packets,
    codec: Codec,
    output_rate: u32,
    /// The first link's format; a chained link in another format ends the decode.
    link_format: LinkFormat,
    /// Frames the current link's header claims, at the output rate.
    link_claimed_frames: Option<u64>,
    /// Frames decoded from the current link, at the output rate.
    link_decoded_frames: u64,
    /// Leading frames still to drop: encoder priming that neither container nor codec trims.
    skip_frames: usize,
    decoded_frames: u64,
    bad_in_a_row: u32,
    truncated: bool,
    finished: bool,
}

impl Decoder {
    /// Opens a recording on disk. Only regular files are opened: a fifo would block and a
    /// device such as `/dev/zero` never ends. The file is read as it was when opened; bytes
    /// appended later are not decoded, so `max_file_bytes` holds for a file still being written.
    pub fn open(path: &Path, opts: &DecodeOptions) -> Result<Self, IngestError> {
        let (file, len) = input::open_regular(path)?;
        check_size(path, len, opts)?;
        Self::from_source(path, Box::new(input::Snapshot::new(file, len)), len, opts)
    }

    /// Decodes a recording held in memory (an object store body, a fuzz input). `name` is used
    /// for the extension hint and in error messages.
    pub fn from_bytes(
        name: &Path,
        bytes: Vec<u8>,
        opts: &DecodeOptions,
    ) -> Result<Self, IngestError> {
        let len = bytes.len() as u64;
        check_size(name, len, opts)?;
        Self::from_source(name, Box::new(Cursor::new(bytes)), len, opts)
    }

    /// `source_len` is the size of the whole source in bytes: it bounds what a header may claim.
    fn from_source(
        path: &Path,
        mut source: Box<dyn ReadSeekSource>,
        source_len: u64,
        opts: &DecodeOptions,
    ) -> Result<Self, IngestError> {
        if let Some(format) = opts.raw {
            return Self::from_raw(path, "raw", format, Box::new(BufReader::new(source)), None);
        }

        let mut magic = [0u8; 8];
        let got = read_up_to(&mut source, &mut magic).map_err(|e| io_error(path, e))?;
        source
            .seek(SeekFrom::Start(0))
            .map_err(|e| io_error(path, e))?;
        if &magic[..got] == b"NIST_1A\n" {
            return Self::open_sphere(path, source, source_len);
        }

        let mss = MediaSourceStream::new(
            source.into_media_source(),
            MediaSourceStreamOptions::default(),
        );
        let mut hint = Hint::new();
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            hint.with_extension(ext);
        }
        let reader = symphonia::default::get_probe()
            .probe(
                &hint,
                mss,
                FormatOptions::default(),
                MetadataOptions::default(),
            )
            .map_err(|e| match e {
                SymphoniaError::Unsupported(_) => IngestError::Unsupported {
                    path: path.to_owned(),
                    what: "container: not a recognised audio format".into(),
                },
                other => open_error(path, other),
            })?;
        Self::from_container(path, reader, source_len)
    }

    fn from_container(
        path: &Path,
        reader: Box<dyn FormatReader>,
        source_len: u64,
    ) -> Result<Self, IngestError> {
        let malformed = |reason: &str| IngestError::Malformed {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let container = reader.format_info().short_name.to_owned();
        let track = reader
            .default_track(TrackType::Audio)
            .ok_or_else(|| malformed("no audio track"))?;
        let Some(CodecParameters::Audio(params)) = &track.codec_params else {
            return Err(malformed("no audio track"));
        };
        let params = params.clone();
        let sample_rate = params
            .sample_rate
            .ok_or_else(|| malformed("header gives no sample rate"))?;
        check_rate(path, sample_rate)?;
        let channels = params.channels.as_ref().map_or(0, |c| c.count());
        check_channels(path, channels)?;

        let (codec, codec_name, output_rate) = make_codec(path, &params, sample_rate, channels)?;

        // The claim is kept for spotting a cut file; what is reported is no more than the file
        // can hold.
        let bound_s = max_frames_in(&codec_name, &params, channels, source_len)
            .map(|frames| frames as f64 / sample_rate as f64);
        let link_claimed_frames = claimed_frames(&params, track, output_rate);
        let header_duration_s = link_claimed_frames
            .map(|f| f as f64 / output_rate as f64)
            .or_else(|| {
                let tb = track.time_base?;
                Some(tb.calc_duration(track.duration?)?.as_secs_f64())
            })
            .map(|claimed| bound_s.map_or(claimed, |bound| claimed.min(bound)));
        let skip_frames = priming_frames(&container, &params, track, output_rate);
        let track_id = track.id;

        Ok(Decoder {
            path: path.to_owned(),
            info: SourceInfo {
                container,
                codec: codec_name,
                sample_rate,
                channels,
                header_duration_s,
            },
            packets: Packets::Container { reader, track_id },
            codec,
            output_rate,
            link_format: LinkFormat {
                codec: params.codec,
                sample_rate,
                channels,
            },
            link_claimed_frames,
            link_decoded_frames: 0,
            skip_frames,
            decoded_frames: 0,
            bad_in_a_row: 0,
            truncated: false,
            finished: false,
        })
    }

    fn open_sphere(
        path: &Path,
        mut source: Box<dyn ReadSeekSource>,
        source_len: u64,
    ) -> Result<Self, IngestError> {
        let mut head = vec![0u8; raw::SPHERE_MAX_HEADER_READ];
        let got = read_up_to(&mut source, &mut head).map_err(|e| io_error(path, e))?;
        head.truncate(got);
        let header = raw::parse_sphere_header(&head).map_err(|reason| {
            if let Some(what) = reason.strip_prefix("unsupported ") {
                IngestError::Unsupported {
                    path: path.to_owned(),
                    what: what.to_owned(),
                }
            } else {
                IngestError::Malformed {
                    path: path.to_owned(),
                    reason,
                }
            }
        })?;
        let header_bytes = header.header_bytes as u64;
        source
            .seek(SeekFrom::Start(header_bytes))
            .map_err(|e| io_error(path, e))?;
        let claim = header.sample_count.map(|frames| RawClaim {
            frames,
            data_bytes: source_len.saturating_sub(header_bytes),
        });
        Self::from_raw(
            path,
            "sphere",
            header.format,
            Box::new(BufReader::new(source)),
            claim,
        )
    }

    fn from_raw(
        path: &Path,
        container: &str,
        format: RawFormat,
        reader: Box<dyn Read + Send + Sync>,
        claim: Option<RawClaim>,
    ) -> Result<Self, IngestError> {
        // Checked before anything is sized from them: the packet buffer is frames × channels.
        check_rate(path, format.sample_rate)?;
        check_channels(path, format.channels as usize)?;
        let frame_bytes = format.frame_bytes() as u64;
        let (remaining, claimed_frames, hint_frames) = match claim {
            Some(RawClaim { frames, data_bytes }) => {
                let implausible = || IngestError::Malformed {
                    path: path.to_owned(),
                    reason: format!("implausible sample count {frames} in header"),
                };
                let bytes = frames.checked_mul(frame_bytes).ok_or_else(implausible)?;
                // frame_bytes is at least 1: the channel count was checked above.
                let fits = data_bytes / frame_bytes;
                (Some(bytes), Some(frames), Some(frames.min(fits)))
            }
            None => (None, None, None),
        };
        let packets = raw::RawPackets::new(reader, &format, remaining);
        let params = format.codec_params();
        let decoder = symphonia::default::get_codecs()
            .make_audio_decoder(&params, &AudioDecoderOptions::default())
            .map_err(|e| open_error(path, e))?;
        let codec = match format.encoding {
            RawEncoding::MuLaw => "pcm_mulaw".to_owned(),
            RawEncoding::ALaw => "pcm_alaw".to_owned(),
            other => format!("pcm_{}", other.name()),
        };
        Ok(Decoder {
            path: path.to_owned(),
            info: SourceInfo {
                container: container.to_owned(),
                codec,
                sample_rate: format.sample_rate,
                channels: format.channels as usize,
                header_duration_s: hint_frames.map(|f| f as f64 / format.sample_rate as f64),
            },
            packets: Packets::Raw(packets),
            codec: Codec::Symphonia(decoder),
            output_rate: format.sample_rate,
            link_format: LinkFormat {
                codec: params.codec,
                sample_rate: format.sample_rate,
                channels: format.channels as usize,
            },
            link_claimed_frames: claimed_frames,
            link_decoded_frames: 0,
            skip_frames: 0,
            decoded_frames: 0,
            bad_in_a_row: 0,
            truncated: false,
            finished: false,
        })
    }

    pub fn info(&self) -> &SourceInfo {
        &self.info
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rate of the PCM [`Decoder::next_into`] produces. It is the stream's rate, except for
    /// Opus, which libopus synthesizes directly at 16 kHz.
    pub fn output_rate(&self) -> u32 {
        self.output_rate
    }

    /// Frames decoded so far, at [`Decoder::output_rate`].
    pub fn decoded_frames(&self) -> u64 {
        self.decoded_frames
    }

    /// Whether the data ended before the stream did: cut mid-frame, shorter than the header
    /// claims, or a chained link in another format that was not decoded. Final once
    /// [`Decoder::next_into`] has returned `None`.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Decodes the next packet into `planes`, one `Vec` per channel, replacing their contents.
    /// Returns the number of frames, or `None` at the end of the stream.
    ///
    /// The vectors are reused, so steady-state decoding does not allocate.
    pub fn next_into(&mut self, planes: &mut Vec<Vec<f32>>) -> Result<Option<usize>, IngestError> {
        if self.finished {
            return Ok(None);
        }
        loop {
            let decoded = match &mut self.packets {
                Packets::Container { reader, track_id } => match reader.next_packet() {
                    Ok(Some(packet)) if packet.track_id != *track_id => continue,
                    Ok(Some(packet)) => decode_packet(&mut self.codec, &packet, planes),
                    Ok(None) => return Ok(self.finish()),
                    // The container started a new stream: the next link of a chained file.
                    Err(SymphoniaError::ResetRequired) => {
                        if self.next_link() {
                            continue;
                        }
                        return Ok(self.finish());
                    }
                    Err(SymphoniaError::IoError(e)) if is_eof(&e) => {
                        self.truncated = true;
                        return Ok(self.finish());
                    }
                    Err(SymphoniaError::IoError(e)) => return Err(io_error(&self.path, e)),
                    // A demuxer error after good audio means the rest of the file is damaged:
                    // keep what decoded, flag it. Before any audio it is a malformed file.
                    Err(e) if self.decoded_frames > 0 => {
                        tracing::debug!(path = %self.path.display(), error = %e, "stream ends in damaged data");
                        self.truncated = true;
                        return Ok(self.finish());
                    }
                    Err(e) => return Err(open_error(&self.path, e)),
                },
                Packets::Raw(packets) => match packets.next() {
                    Ok(Some(bytes)) => {
                        let packet = Packet::new(
                            0,
                            symphonia::core::units::Timestamp::new(0),
                            symphonia::core::units::Duration::new(0),
                            bytes,
                        );
                        decode_packet(&mut self.codec, &packet, planes)
                    }
                    Ok(None) => {
                        self.truncated |= packets.partial_tail;
                        return Ok(self.finish());
                    }
                    Err(e) => return Err(io_error(&self.path, e)),
                },
            };
            let decoded = decoded.map(|frames| self.drop_priming(planes, frames));
            match decoded {
                Ok(0) => continue,
                Ok(frames) => {
                    if planes.len() != self.info.channels {
                        return Err(IngestError::Malformed {
                            path: self.path.clone(),
                            reason: format!(
                                "channel count changed mid-stream from {} to {}",
                                self.info.channels,
                                planes.len()
                            ),
                        });
                    }
                    self.bad_in_a_row = 0;
                    self.decoded_frames += frames as u64;
                    self.link_decoded_frames += frames as u64;
                    return Ok(Some(frames));
                }
                Err(DecodeFailure::Io(e)) if is_eof(&e) => {
                    self.truncated = true;
                    return Ok(self.finish());
                }
                Err(DecodeFailure::Io(e)) => return Err(io_error(&self.path, e)),
                Err(DecodeFailure::Corrupt(reason)) => {
                    self.bad_in_a_row += 1;
                    tracing::debug!(path = %self.path.display(), %reason, "skipping undecodable packet");
                    if self.bad_in_a_row >= MAX_CONSECUTIVE_BAD_PACKETS {
                        if self.decoded_frames == 0 {
                            return Err(IngestError::Malformed {
                                path: self.path.clone(),
                                reason: format!("no decodable audio ({reason})"),
                            });
                        }
                        self.truncated = true;
                        return Ok(self.finish());
                    }
                }
            }
        }
    }

    /// Moves on to the next link of a chained stream (`cat a.ogg b.ogg`): a fresh codec state
    /// for the new link's headers and trims. Returns whether decoding goes on. A link that cannot
    /// join the first (another codec, rate or channel count would need a second output format;
    /// broken codec headers) ends the decode there, keeping what was decoded and flagging the
    /// file truncated.
    fn next_link(&mut self) -> bool {
        self.end_link();
        let Packets::Container { reader, track_id } = &mut self.packets else {
            return false;
        };
        let Some(track) = reader.default_track(TrackType::Audio) else {
            return self.stop_at_link("it has no audio track");
        };
        let Some(CodecParameters::Audio(params)) = &track.codec_params else {
            return self.stop_at_link("it has no audio track");
        };
        let format = LinkFormat {
            codec: params.codec,
            sample_rate: params.sample_rate.unwrap_or(0),
            channels: params.channels.as_ref().map_or(0, |c| c.count()),
        };
        if format != self.link_format {
            let why = format!(
                "its format {format:?} is not the first's {:?}",
                self.link_format
            );
            return self.stop_at_link(&why);
        }
        let (codec, _, output_rate) =
            match make_codec(&self.path, params, format.sample_rate, format.channels) {
                Ok(made) => made,
                Err(e) => return self.stop_at_link(&e.to_string()),
            };
        let container = reader.format_info().short_name;
        self.skip_frames = priming_frames(container, params, track, output_rate);
        self.link_claimed_frames = claimed_frames(params, track, output_rate);
        self.link_decoded_frames = 0;
        *track_id = track.id;
        self.codec = codec;
        tracing::debug!(path = %self.path.display(), "decoding the next link of a chained stream");
        true
    }

    /// Ends the decode at a chained link that cannot be decoded; returns `false` for
    /// [`Decoder::next_link`].
    fn stop_at_link(&mut self, why: &str) -> bool {
        tracing::warn!(path = %self.path.display(), why, "chained stream: the rest is not decoded");
        self.truncated = true;
        false
    }

    fn drop_priming(&mut self, planes: &mut [Vec<f32>], frames: usize) -> usize {
        if self.skip_frames == 0 {
            return frames;
        }
        let drop = self.skip_frames.min(frames);
        self.skip_frames -= drop;
        for plane in planes.iter_mut() {
            plane.drain(..drop.min(plane.len()));
        }
        frames - drop
    }

    fn finish(&mut self) -> Option<usize> {
        self.finished = true;
        self.end_link();
        None
    }

    /// A link whose header claims more than its data held is a cut file. The slack absorbs
    /// codec priming and padding differences between container and decoder.
    fn end_link(&mut self) {
        if let Some(claimed) = self.link_claimed_frames {
            let slack = u64::from(self.output_rate / 20).max(2048);
            if self.link_decoded_frames.saturating_add(slack) < claimed {
                self.truncated = true;
            }
        }
    }
}

/// A sample count from a raw container's header (SPHERE) and the bytes after the header.
struct RawClaim {
    frames: u64,
    data_bytes: u64,
}

/// The decoder for one track, with the codec's name and the rate it produces: libopus for
/// Opus (at 16 kHz), symphonia for the rest (at the stream's rate).
fn make_codec(
    path: &Path,
    params: &AudioCodecParameters,
    sample_rate: u32,
    channels: usize,
) -> Result<(Codec, String, u32), IngestError> {
    if params.codec == CODEC_ID_OPUS {
        let decoder =
            opus::OpusDecoder::new(channels).map_err(|what| IngestError::Unsupported {
                path: path.to_owned(),
                what,
            })?;
        return Ok((
            Codec::Opus(decoder),
            "opus".to_owned(),
            opus::OPUS_OUTPUT_RATE,
        ));
    }
    // Decoders allocate their packet buffer from this header value up front.
    if let Some(frames) = params.max_frames_per_packet {
        let samples = frames.checked_mul(channels as u64);
        if samples.is_none_or(|s| s > MAX_PACKET_SAMPLES) {
            return Err(IngestError::Malformed {
                path: path.to_owned(),
                reason: format!("implausible {frames} frames per packet in header"),
            });
        }
    }
    let registry = symphonia::default::get_codecs();
    let Some(registered) = registry.get_audio_decoder(params.codec) else {
        return Err(IngestError::Unsupported {
            path: path.to_owned(),
            what: format!("codec {}", codec_name(params.codec)),
        });
    };
    let name = registered.codec.info.short_name.to_owned();
    let decoder = registry
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|e| match e {
            SymphoniaError::Unsupported(msg) => IngestError::Unsupported {
                path: path.to_owned(),
                what: format!("codec {name} variant ({msg})"),
            },
            other => open_error(path, other),
        })?;
    Ok((Codec::Symphonia(decoder), name, sample_rate))
}

/// Leading frames to drop, at the output rate. Codecs symphonia decodes gaplessly trim their
/// own delay from the packets. Two do not: AAC in MP4, whose delay lives in the unsupported edit
/// list, and Ogg Opus, whose pre-skip symphonia 0.6 records as the track's delay but never trims
/// from a packet, so without this every Opus link would start with 6.5 ms of decoder warm-up.
fn priming_frames(
    container: &str,
    params: &AudioCodecParameters,
    track: &Track,
    output_rate: u32,
) -> usize {
    if params.codec == CODEC_ID_AAC && container == "isomp4" && track.delay.is_none() {
        AAC_PRIMING_FRAMES
    } else if params.codec == CODEC_ID_OPUS && container == "ogg" {
        let pre_skip = track.delay.map_or(0, u64::from);
        let frames = rescale(pre_skip, opus::OPUS_TIMEBASE_RATE, output_rate);
        usize::try_from(frames).unwrap_or(usize::MAX)
    } else {
        0
    }
}

/// What the header claims the track holds, at the output rate: the frames to be played, so
/// without the Opus pre-skip that [`priming_frames`] drops.
fn claimed_frames(params: &AudioCodecParameters, track: &Track, output_rate: u32) -> Option<u64> {
    let sample_rate = params.sample_rate?;
    let mut frames = track.num_frames?;
    if params.codec == CODEC_ID_OPUS {
        frames = frames.saturating_sub(track.delay.map_or(0, u64::from));
    }
    Some(rescale(frames, sample_rate, output_rate))
}

/// The most frames `source_len` bytes can hold, for codecs with a fixed size per sample (PCM,
/// mu-law, A-law); `None` where the size varies. Bits are rounded down to whole bytes (at least
/// one), so for an odd width this still bounds, if loosely.
fn max_frames_in(
    codec_name: &str,
    params: &AudioCodecParameters,
    channels: usize,
    source_len: u64,
) -> Option<u64> {
    if !codec_name.starts_with("pcm") {
        return None;
    }
    let bits = params.bits_per_coded_sample.or(params.bits_per_sample)?;
    let frame_bytes = u64::from(bits / 8).max(1).checked_mul(channels as u64)?;
    source_len.checked_div(frame_bytes)
}

/// `frames` counted at `from` Hz, counted at `to` Hz instead. A header's frame count can be
/// anything up to `u64::MAX`, so the product is formed in 128 bits and the result saturates.
fn rescale(frames: u64, from: u32, to: u32) -> u64 {
    if from == to {
        return frames;
    }
    let scaled = u128::from(frames) * u128::from(to) / u128::from(from.max(1));
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

/// A packet that would not decode.
enum DecodeFailure {
    Io(std::io::Error),
    Corrupt(String),
}

fn decode_packet(
    codec: &mut Codec,
    packet: &Packet,
    planes: &mut Vec<Vec<f32>>,
) -> Result<usize, DecodeFailure> {
    match codec {
        Codec::Symphonia(decoder) => match decoder.decode(packet) {
            Ok(buf) => {
                let frames = buf.frames();
                buf.copy_to_vecs_planar::<f32>(planes);
                Ok(frames)
            }
            Err(SymphoniaError::IoError(e)) => Err(DecodeFailure::Io(e)),
            Err(e) => Err(DecodeFailure::Corrupt(e.to_string())),
        },
        Codec::Opus(decoder) => decoder
            .decode(packet, planes)
            .map_err(DecodeFailure::Corrupt),
    }
}

/// A byte source symphonia can read and this module can rewind.
trait ReadSeekSource: Read + Seek + Send + Sync {
    fn into_media_source(self: Box<Self>) -> Box<dyn MediaSource>;
}

impl<T: MediaSource + 'static> ReadSeekSource for T {
    fn into_media_source(self: Box<Self>) -> Box<dyn MediaSource> {
        self
    }
}

fn read_up_to(source: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn check_size(path: &Path, bytes: u64, opts: &DecodeOptions) -> Result<(), IngestError> {
    if bytes == 0 {
        return Err(IngestError::Empty {
            path: path.to_owned(),
        });
    }
    if bytes > opts.max_file_bytes {
        return Err(IngestError::TooLarge {
            path: path.to_owned(),
            bytes,
            limit: opts.max_file_bytes,
        });
    }
    Ok(())
}

fn check_rate(path: &Path, rate: u32) -> Result<(), IngestError> {
    if SAMPLE_RATE_RANGE.contains(&rate) {
        Ok(())
    } else {
        Err(IngestError::Malformed {
            path: path.to_owned(),
            reason: format!("implausible sample rate {rate} Hz in header"),
        })
    }
}

fn check_channels(path: &Path, channels: usize) -> Result<(), IngestError> {
    if (1..=MAX_CHANNELS).contains(&channels) {
        Ok(())
    } else {
        Err(IngestError::Malformed {
            path: path.to_owned(),
            reason: format!("implausible channel count {channels} in header"),
        })
    }
}

fn is_eof(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::UnexpectedEof
}

fn io_error(path: &Path, source: std::io::Error) -> IngestError {
    if source.kind() == std::io::ErrorKind::NotFound {
        IngestError::NotFound {
            path: path.to_owned(),
        }
    } else {
        IngestError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Maps a symphonia error met while opening a file (probing, reading headers).
fn open_error(path: &Path, e: SymphoniaError) -> IngestError {
    let path = path.to_owned();
    match e {
        SymphoniaError::IoError(e) if is_eof(&e) => IngestError::Malformed {
            path,
            reason: "file ends inside its header".into(),
        },
        SymphoniaError::IoError(source) => IngestError::Io { path, source },
        SymphoniaError::Unsupported(what) => IngestError::Unsupported {
            path,
            what: what.to_owned(),
        },
        SymphoniaError::DecodeError(reason) | SymphoniaError::LimitError(reason) => {
            IngestError::Malformed {
                path,
                reason: format!("malformed header ({reason})"),
            }
        }
        other => IngestError::Malformed {
            path,
            reason: other.to_string(),
        },
    }
}

/// Names for codecs a container can declare but no decoder here handles, so the error says
/// "unsupported codec g729" instead of a hex id.
fn codec_name(id: AudioCodecId) -> String {
    let known = [
        (CODEC_ID_AC3, "ac3"),
        (CODEC_ID_EAC3, "eac3"),
        (CODEC_ID_DCA, "dts"),
        (CODEC_ID_WMA, "wma"),
        (CODEC_ID_ATRAC3, "atrac3"),
        (CODEC_ID_SPEEX, "speex"),
        (CODEC_ID_MUSEPACK, "musepack"),
        (CODEC_ID_WAVPACK, "wavpack"),
        (CODEC_ID_MP1, "mp1"),
        (CODEC_ID_MP2, "mp2"),
        (symphonia::core::codecs::audio::CODEC_ID_NULL_AUDIO, "none"),
    ];
    known
        .iter()
        .find(|(known, _)| *known == id)
        .map_or_else(|| format!("id {id}"), |(_, name)| (*name).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescaling_a_header_count_saturates_instead_of_wrapping() {
        assert_eq!(rescale(48_000, 48_000, 16_000), 16_000);
        // u64::MAX is divisible by 3: exact, no wrap.
        assert_eq!(rescale(u64::MAX, 48_000, 16_000), u64::MAX / 3);
        assert_eq!(rescale(u64::MAX, 16_000, 48_000), u64::MAX);
        assert_eq!(rescale(u64::MAX, 0, 16_000), u64::MAX);
    }

    #[test]
    fn only_fixed_size_codecs_bound_the_claim() {
        let mut params = AudioCodecParameters::new();
        params.with_bits_per_sample(16);
        assert_eq!(max_frames_in("pcm_s16le", &params, 2, 4000), Some(1000));
        // 12 bits round down to one byte: a looser bound, never a tighter one.
        params.with_bits_per_coded_sample(12);
        assert_eq!(max_frames_in("pcm_s16le", &params, 1, 4000), Some(4000));
        assert_eq!(max_frames_in("flac", &params, 1, 4000), None);
        assert_eq!(max_frames_in("pcm_s16le", &params, 0, 4000), None);
    }
}
