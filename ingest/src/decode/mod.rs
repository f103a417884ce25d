//! Decoding: any recording in, planar f32 PCM out, one packet at a time.
//!
//! [`Decoder`] streams. It never holds more than one decoded packet, so memory does not grow
//! with the file. Containers and most codecs are symphonia's; Opus is libopus
//! ([`opus`]); headerless PCM and NIST SPHERE are cut into packets here and decoded by
//! symphonia's PCM decoder ([`raw`]).
//!
//! Bad input is an error naming the file, never a panic. A file that ends early (cut mid-frame,
//! or shorter than its header claims) decodes up to where its data ends and reports
//! [`Decoder::truncated`].

mod opus;
mod raw;

use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use symphonia::core::codecs::audio::well_known::*;
use symphonia::core::codecs::audio::{AudioCodecId, AudioDecoder, AudioDecoderOptions};
use symphonia::core::codecs::CodecParameters;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::packet::Packet;

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
    /// The duration the header claims, if it claims one.
    pub header_duration_s: Option<f64>,
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
    header_frames: Option<u64>,
    /// Leading frames still to drop: encoder priming that neither container nor codec trims.
    skip_frames: usize,
    decoded_frames: u64,
    bad_in_a_row: u32,
    truncated: bool,
    finished: bool,
}

impl Decoder {
    /// Opens a recording on disk.
    pub fn open(path: &Path, opts: &DecodeOptions) -> Result<Self, IngestError> {
        let meta = std::fs::metadata(path).map_err(|source| io_error(path, source))?;
        if meta.is_dir() {
            return Err(IngestError::Unsupported {
                path: path.to_owned(),
                what: "input: it is a directory".into(),
            });
        }
        check_size(path, meta.len(), opts)?;
        let file = File::open(path).map_err(|source| io_error(path, source))?;
        Self::from_source(path, Box::new(file), opts)
    }

    /// Decodes a recording held in memory (an object store body, a fuzz input). `name` is used
    /// for the extension hint and in error messages.
    pub fn from_bytes(
        name: &Path,
        bytes: Vec<u8>,
        opts: &DecodeOptions,
    ) -> Result<Self, IngestError> {
        check_size(name, bytes.len() as u64, opts)?;
        Self::from_source(name, Box::new(Cursor::new(bytes)), opts)
    }

    fn from_source(
        path: &Path,
        mut source: Box<dyn ReadSeekSource>,
        opts: &DecodeOptions,
    ) -> Result<Self, IngestError> {
        if let Some(format) = opts.raw {
            let packets = raw::RawPackets::new(Box::new(BufReader::new(source)), &format, None);
            return Self::from_raw(path, "raw", format, packets, None);
        }

        let mut magic = [0u8; 8];
        let got = read_up_to(&mut source, &mut magic).map_err(|e| io_error(path, e))?;
        source
            .seek(SeekFrom::Start(0))
            .map_err(|e| io_error(path, e))?;
        if &magic[..got] == b"NIST_1A\n" {
            return Self::open_sphere(path, source);
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
        Self::from_container(path, reader)
    }

    fn from_container(path: &Path, reader: Box<dyn FormatReader>) -> Result<Self, IngestError> {
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

        let header_frames = track.num_frames;
        let header_duration_s = header_frames
            .map(|f| f as f64 / sample_rate as f64)
            .or_else(|| {
                let tb = track.time_base?;
                Some(tb.calc_duration(track.duration?)?.as_secs_f64())
            });
        let track_id = track.id;
        // Codecs symphonia decodes gaplessly trim their own delay from the packets; only AAC in
        // MP4, whose delay lives in the unsupported edit list, needs it here.
        let priming =
            if params.codec == CODEC_ID_AAC && container == "isomp4" && track.delay.is_none() {
                AAC_PRIMING_FRAMES
            } else {
                0
            };

        let (codec, codec_name, output_rate) = if params.codec == CODEC_ID_OPUS {
            let decoder =
                opus::OpusDecoder::new(channels).map_err(|what| IngestError::Unsupported {
                    path: path.to_owned(),
                    what,
                })?;
            (
                Codec::Opus(decoder),
                "opus".to_owned(),
                opus::OPUS_OUTPUT_RATE,
            )
        } else {
            let registry = symphonia::default::get_codecs();
            let Some(registered) = registry.get_audio_decoder(params.codec) else {
                return Err(IngestError::Unsupported {
                    path: path.to_owned(),
                    what: format!("codec {}", codec_name(params.codec)),
                });
            };
            let name = registered.codec.info.short_name.to_owned();
            let decoder = registry
                .make_audio_decoder(&params, &AudioDecoderOptions::default())
                .map_err(|e| match e {
                    SymphoniaError::Unsupported(msg) => IngestError::Unsupported {
                        path: path.to_owned(),
                        what: format!("codec {name} variant ({msg})"),
                    },
                    other => open_error(path, other),
                })?;
            (Codec::Symphonia(decoder), name, sample_rate)
        };

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
            header_frames: header_frames.map(|f| f * output_rate as u64 / sample_rate as u64),
            skip_frames: priming,
            decoded_frames: 0,
            bad_in_a_row: 0,
            truncated: false,
            finished: false,
        })
    }

    fn open_sphere(path: &Path, mut source: Box<dyn ReadSeekSource>) -> Result<Self, IngestError> {
        let mut head = vec![0u8; 16 * 1024];
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
        source
            .seek(SeekFrom::Start(header.header_bytes as u64))
            .map_err(|e| io_error(path, e))?;
        let frame_bytes = header.format.frame_bytes() as u64;
        let remaining = header.sample_count.map(|n| n * frame_bytes);
        let packets =
            raw::RawPackets::new(Box::new(BufReader::new(source)), &header.format, remaining);
        Self::from_raw(path, "sphere", header.format, packets, header.sample_count)
    }

    fn from_raw(
        path: &Path,
        container: &str,
        format: RawFormat,
        packets: raw::RawPackets,
        header_frames: Option<u64>,
    ) -> Result<Self, IngestError> {
        check_rate(path, format.sample_rate)?;
        check_channels(path, format.channels as usize)?;
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
                header_duration_s: header_frames.map(|f| f as f64 / format.sample_rate as f64),
            },
            packets: Packets::Raw(packets),
            codec: Codec::Symphonia(decoder),
            output_rate: format.sample_rate,
            header_frames,
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

    /// Whether the data ended before the stream did: cut mid-frame, or shorter than the header
    /// claims. Final once [`Decoder::next_into`] has returned `None`.
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
                    Ok(None) | Err(SymphoniaError::ResetRequired) => return Ok(self.finish()),
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
        if let Some(claimed) = self.header_frames {
            // A header that claims more than the data holds is a cut file. The slack absorbs
            // codec priming and padding differences between container and decoder.
            let slack = (self.output_rate as u64 / 20).max(2048);
            if self.decoded_frames + slack < claimed {
                self.truncated = true;
            }
        }
        None
    }
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
