//! The front end: one recording in, per-channel 16 kHz audio and speech segments out.
//!
//! Decoding is sequential (one demuxer, one codec state), but everything after it is per
//! channel: decoded packets are gathered into blocks of about half a second, and each block's
//! channels are resampled and run through VAD in parallel on the current rayon pool. Memory is
//! one block plus, when the caller keeps it, the 16 kHz audio itself.

use std::path::Path;

use rayon::prelude::*;

use callpipe_common::audio::role_for_channel;
use callpipe_common::config::{IngestConfig, VadConfig};
use callpipe_common::{Role, SpeechSegment};

use crate::decode::{DecodeOptions, Decoder, RawFormat, SourceInfo};
use crate::error::IngestError;
use crate::resample::ChannelResampler;
use crate::vad::Vad;

/// What the front end does besides decoding.
#[derive(Debug, Clone)]
pub struct FrontEndOptions {
    pub decode: DecodeOptions,
    pub max_duration_s: f64,
    pub stereo_roles: [Role; 2],
    /// `None` skips VAD (decode and resample only).
    pub vad: Option<VadConfig>,
    /// Keep the 16 kHz audio of every channel in the result (transcription needs it; probing
    /// does not).
    pub keep_audio: bool,
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
    /// 16 kHz mono samples, when [`FrontEndOptions::keep_audio`] is set.
    pub samples: Vec<f32>,
    /// VAD frames the model scored; the rest were gated as silence.
    pub vad_model_frames: u64,
}

impl ChannelAudio {
    pub fn speech_s(&self) -> f64 {
        self.segments.iter().map(SpeechSegment::duration_s).sum()
    }
}

/// Runs the front end over a file on disk.
pub fn process_file(path: &Path, opts: &FrontEndOptions) -> Result<CallAudio, IngestError> {
    let decoder = Decoder::open(path, &opts.decode)?;
    process(decoder, opts)
}

/// Runs the front end over a recording held in memory.
pub fn process_bytes(
    name: &Path,
    bytes: Vec<u8>,
    opts: &FrontEndOptions,
) -> Result<CallAudio, IngestError> {
    let decoder = Decoder::from_bytes(name, bytes, &opts.decode)?;
    process(decoder, opts)
}

struct ChannelPipeline {
    resampler: ChannelResampler,
    vad: Option<Vad>,
    samples: Vec<f32>,
    keep: bool,
}

impl ChannelPipeline {
    fn push(&mut self, block: &[f32]) {
        let (vad, samples, keep) = (&mut self.vad, &mut self.samples, self.keep);
        self.resampler.push(block, &mut |out| {
            if let Some(vad) = vad.as_mut() {
                vad.push(out);
            }
            if keep {
                samples.extend_from_slice(out);
            }
        });
    }

    fn finish(mut self) -> (Vec<SpeechSegment>, Vec<f32>, u64) {
        let (vad, samples, keep) = (&mut self.vad, &mut self.samples, self.keep);
        self.resampler.finish(&mut |out| {
            if let Some(vad) = vad.as_mut() {
                vad.push(out);
            }
            if keep {
                samples.extend_from_slice(out);
            }
        });
        let (segments, model_frames) = match self.vad {
            Some(vad) => {
                let frames = vad.model_frames();
                (vad.finish(), frames)
            }
            None => (Vec::new(), 0),
        };
        (segments, self.samples, model_frames)
    }
}

/// Runs the front end over an opened decoder.
pub fn process(mut decoder: Decoder, opts: &FrontEndOptions) -> Result<CallAudio, IngestError> {
    let info = decoder.info().clone();
    let path = decoder.path().to_owned();
    let too_long = |duration_s: f64| IngestError::TooLong {
        path: path.clone(),
        duration_s,
        limit_s: opts.max_duration_s,
    };
    if let Some(claimed) = info.header_duration_s {
        if claimed > opts.max_duration_s {
            return Err(too_long(claimed));
        }
    }

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
                samples: Vec::new(),
                keep: opts.keep_audio,
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
            pipelines[0].push(&blocks[0]);
        } else {
            pipelines
                .par_iter_mut()
                .zip(blocks.par_iter())
                .for_each(|(p, b)| p.push(b));
        }
        blocks.iter_mut().for_each(Vec::clear);
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
            flush(&mut pipelines, &mut blocks);
        }
    }
    if !blocks[0].is_empty() {
        flush(&mut pipelines, &mut blocks);
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
        .map(ChannelPipeline::finish)
        .collect();
    let channels = finished
        .into_iter()
        .enumerate()
        .map(
            |(channel, (segments, samples, vad_model_frames))| ChannelAudio {
                channel,
                role: role_for_channel(channel, channel_count, opts.stereo_roles),
                segments,
                samples,
                vad_model_frames,
            },
        )
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
