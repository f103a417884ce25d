//! Helpers shared by the ingest integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use callpipe_common::config::IngestConfig;
use callpipe_ingest::FrontEndOptions;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

pub fn eval_dir() -> PathBuf {
    fixtures().join("eval")
}

pub fn manifest() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(eval_dir().join("manifest.json")).expect("eval manifest");
    serde_json::from_str(&text).expect("manifest is JSON")
}

pub fn options() -> FrontEndOptions {
    FrontEndOptions::from_config(&IngestConfig::default())
}

/// The bytes of an eval file.
pub fn eval_audio(name: &str) -> Vec<u8> {
    std::fs::read(eval_dir().join("audio").join(name)).expect("eval audio file")
}

/// A canonical 44-byte WAV header for 16-bit PCM, with the data chunk's size as given (which
/// need not match the samples that follow).
pub fn wav_header(rate: u32, channels: u16, data_bytes: u32) -> Vec<u8> {
    let block_align = channels * 2;
    let mut h = Vec::with_capacity(44);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&data_bytes.saturating_add(36).to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&channels.to_le_bytes());
    h.extend_from_slice(&rate.to_le_bytes());
    h.extend_from_slice(&(rate * u32::from(block_align)).to_le_bytes());
    h.extend_from_slice(&block_align.to_le_bytes());
    h.extend_from_slice(&16u16.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data_bytes.to_le_bytes());
    h
}

/// `seconds` of a 440 Hz tone as interleaved 16-bit PCM.
pub fn tone_s16(rate: u32, channels: u16, seconds: f64) -> Vec<u8> {
    let frames = (rate as f64 * seconds) as usize;
    let mut out = Vec::with_capacity(frames * channels as usize * 2);
    for i in 0..frames {
        let t = i as f64 / rate as f64;
        let s = ((2.0 * std::f64::consts::PI * 440.0 * t).sin() * 8000.0) as i16;
        for _ in 0..channels {
            out.extend_from_slice(&s.to_le_bytes());
        }
    }
    out
}

/// The Ogg page checksum: CRC-32, polynomial 0x04c11db7, unreflected, no final xor, computed
/// with the checksum field zeroed.
pub fn ogg_crc(bytes: &[u8]) -> u32 {
    let mut crc = 0u32;
    for &b in bytes {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Where each Ogg page of `bytes` starts and how long it is, up to the first damaged page.
pub fn ogg_pages(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut pages = Vec::new();
    let mut at = 0;
    while bytes.len() >= at + 27 && &bytes[at..at + 4] == b"OggS" {
        let segments = bytes[at + 26] as usize;
        let Some(table) = bytes.get(at + 27..at + 27 + segments) else {
            break;
        };
        let len = 27 + segments + table.iter().map(|&l| l as usize).sum::<usize>();
        if bytes.len() < at + len {
            break;
        }
        pages.push(at..at + len);
        at += len;
    }
    pages
}

/// Recomputes the checksum of one Ogg page after its bytes were changed, so a reader takes the
/// change for what the muxer wrote instead of dropping the page as corrupt.
pub fn fix_ogg_crc(page: &mut [u8]) {
    page[22..26].fill(0);
    let crc = ogg_crc(page);
    page[22..26].copy_from_slice(&crc.to_le_bytes());
}

/// One Ogg page holding whole packets.
pub fn ogg_page(
    header_type: u8,
    granule: u64,
    serial: u32,
    seq: u32,
    packets: &[&[u8]],
) -> Vec<u8> {
    let mut lacing = Vec::new();
    for p in packets {
        lacing.extend(std::iter::repeat_n(255u8, p.len() / 255));
        lacing.push((p.len() % 255) as u8);
    }
    assert!(lacing.len() <= 255, "too many packets for one page");
    let mut page = Vec::new();
    page.extend_from_slice(b"OggS");
    page.push(0);
    page.push(header_type);
    page.extend_from_slice(&granule.to_le_bytes());
    page.extend_from_slice(&serial.to_le_bytes());
    page.extend_from_slice(&seq.to_le_bytes());
    page.extend_from_slice(&[0; 4]);
    page.push(lacing.len() as u8);
    page.extend_from_slice(&lacing);
    for p in packets {
        page.extend_from_slice(p);
    }
    fix_ogg_crc(&mut page);
    page
}

/// A complete Ogg Opus stream of `seconds` of a tone, encoded here with libopus: 20 ms packets,
/// one page each.
pub fn ogg_opus(serial: u32, channels: u8, seconds: f64) -> Vec<u8> {
    const PRE_SKIP: u16 = 312;
    const FRAME: usize = 960; // 20 ms at 48 kHz
    let layout = if channels == 1 {
        opus::Channels::Mono
    } else {
        opus::Channels::Stereo
    };
    let mut encoder = opus::Encoder::new(48_000, layout, opus::Application::Voip).unwrap();
    let frames = (48_000.0 * seconds) as usize;
    // The decoder drops the first PRE_SKIP samples, so the packets cover those too.
    let packets = (frames + PRE_SKIP as usize).div_ceil(FRAME);

    let mut head = b"OpusHead".to_vec();
    head.push(1);
    head.push(channels);
    head.extend_from_slice(&PRE_SKIP.to_le_bytes());
    head.extend_from_slice(&48_000u32.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes());
    head.push(0);
    let mut tags = b"OpusTags".to_vec();
    tags.extend_from_slice(&4u32.to_le_bytes());
    tags.extend_from_slice(b"test");
    tags.extend_from_slice(&0u32.to_le_bytes());

    let mut out = ogg_page(0x02, 0, serial, 0, &[&head]);
    out.extend(ogg_page(0, 0, serial, 1, &[&tags]));
    let mut pcm = vec![0f32; FRAME * channels as usize];
    let mut packet = vec![0u8; 4000];
    for k in 0..packets {
        for (i, frame) in pcm.chunks_mut(channels as usize).enumerate() {
            let t = (k * FRAME + i) as f32 / 48_000.0;
            frame.fill((2.0 * std::f32::consts::PI * 440.0 * t).sin() * 0.3);
        }
        let len = encoder.encode_float(&pcm, &mut packet).unwrap();
        let last = k + 1 == packets;
        // A granule position counts every sample decoded so far, pre-skip included; the last
        // one marks where playback ends, trimming the final packet.
        let granule = if last {
            (PRE_SKIP as usize + frames) as u64
        } else {
            ((k + 1) * FRAME) as u64
        };
        let header_type = if last { 0x04 } else { 0 };
        out.extend(ogg_page(
            header_type,
            granule,
            serial,
            k as u32 + 2,
            &[&packet[..len]],
        ));
    }
    out
}
