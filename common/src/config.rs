//! Configuration: one TOML file plus `CALLPIPE_*` environment overrides.
//!
//! Every key has a default, so `callpipe` runs with no file at all. Each section is one
//! documented struct with `deny_unknown_fields`, so a typo fails at start-up with the key's
//! name instead of being silently ignored. Environment variables override the file:
//! `CALLPIPE_INGEST__MAX_DURATION_S=7200` sets `[ingest] max_duration_s`.

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::audio::Role;

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Decode, channel split, resample and VAD.
    pub ingest: IngestConfig,
    /// The CPU pool shared by every CPU-heavy step.
    pub pool: PoolConfig,
}

/// `[ingest]`: limits and the audio front end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest recording accepted, in bytes. Larger files fail before any decoding.
    pub max_file_bytes: u64,
    /// Longest recording accepted, in seconds. Checked against the header up front and against
    /// the decoded audio as it streams, so a header that lies cannot get past it.
    pub max_duration_s: f64,
    /// Roles of the left and right channels of a stereo recording.
    pub stereo_roles: [Role; 2],
    /// Voice activity detection.
    pub vad: VadConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_file_bytes: 2 * 1024 * 1024 * 1024,
            max_duration_s: 4.0 * 3600.0,
            stereo_roles: [Role::Agent, Role::Customer],
            vad: VadConfig::default(),
        }
    }
}

/// `[ingest.vad]`: how speech segments are found and shaped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VadConfig {
    /// Score in [0, 1] above which a 16 ms frame counts as speech.
    pub threshold: f32,
    /// Frames quieter than this RMS level (dBFS) are taken as silence without running the
    /// model. Call audio is mostly one party listening, so this skips a large share of frames.
    /// Set it to -120 to run the model on every frame.
    pub gate_dbfs: f32,
    /// Speech shorter than this (seconds) is dropped as a click or a cough.
    pub min_speech_s: f64,
    /// Silence shorter than this (seconds) between two speech stretches is bridged.
    pub merge_gap_s: f64,
    /// Padding added before and after each segment (seconds), so word onsets and trailing
    /// consonants are not clipped.
    pub pad_s: f64,
    /// Longest segment (seconds). Whisper sees at most 30 s at once; longer speech is split at
    /// its quietest point.
    pub max_segment_s: f64,
}

impl Default for VadConfig {
    fn default() -> Self {
        VadConfig {
            threshold: 0.5,
            gate_dbfs: -50.0,
            min_speech_s: 0.12,
            merge_gap_s: 0.5,
            pad_s: 0.15,
            max_segment_s: 30.0,
        }
    }
}

/// `[pool]`: the CPU pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Worker threads; 0 means one per available core.
    pub threads: usize,
}

/// A configuration that could not be loaded or is invalid. The message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("config: `{key}` {problem}")]
    Invalid { key: &'static str, problem: String },
}

impl Config {
    /// Defaults, then `file` if given, then `CALLPIPE_*` environment variables; validated.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError::Invalid {
                    key: "--config",
                    problem: format!("file {} does not exist", file.display()),
                });
            }
            figment = figment.merge(Toml::file(file));
        }
        // Only `SECTION__KEY` variables are config; others that share the prefix
        // (CALLPIPE_CONFIG naming the file, variables of scripts) are not.
        figment = figment.merge(
            Env::prefixed("CALLPIPE_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        let ingest = &self.ingest;
        if ingest.max_file_bytes == 0 {
            return invalid("ingest.max_file_bytes", "must be greater than 0");
        }
        if ingest.max_duration_s.is_nan() || ingest.max_duration_s <= 0.0 {
            return invalid("ingest.max_duration_s", "must be greater than 0");
        }
        let vad = &ingest.vad;
        if !(0.0..=1.0).contains(&vad.threshold) {
            return invalid("ingest.vad.threshold", "must be within [0, 1]");
        }
        if !(1.0..=30.0).contains(&vad.max_segment_s) {
            return invalid("ingest.vad.max_segment_s", "must be within [1, 30]");
        }
        for (key, value) in [
            ("ingest.vad.min_speech_s", vad.min_speech_s),
            ("ingest.vad.merge_gap_s", vad.merge_gap_s),
            ("ingest.vad.pad_s", vad.pad_s),
        ] {
            if !(0.0..=10.0).contains(&value) {
                return invalid(key, "must be within [0, 10] seconds");
            }
        }
        if !(-120.0..=0.0).contains(&vad.gate_dbfs) {
            return invalid("ingest.vad.gate_dbfs", "must be within [-120, 0]");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn file_and_env_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "callpipe.toml",
                "[ingest]\nmax_duration_s = 60\nstereo_roles = [\"customer\", \"agent\"]\n",
            )?;
            jail.set_env("CALLPIPE_INGEST__VAD__THRESHOLD", "0.7");
            jail.set_env("CALLPIPE_CONFIG", "callpipe.toml");
            jail.set_env("CALLPIPE_BIN", "/usr/local/bin/callpipe");
            let config = Config::load(Some(Path::new("callpipe.toml"))).unwrap();
            assert_eq!(config.ingest.max_duration_s, 60.0);
            assert_eq!(config.ingest.stereo_roles, [Role::Customer, Role::Agent]);
            assert_eq!(config.ingest.vad.threshold, 0.7);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("typo.toml", "[ingest]\nmax_duration = 60\n")?;
            let err = Config::load(Some(Path::new("typo.toml"))).unwrap_err();
            assert!(err.to_string().contains("max_duration"), "{err}");

            jail.create_file("bad.toml", "[ingest.vad]\nthreshold = 3.0\n")?;
            let err = Config::load(Some(Path::new("bad.toml"))).unwrap_err();
            assert!(err.to_string().contains("ingest.vad.threshold"), "{err}");
            Ok(())
        });
    }
}
