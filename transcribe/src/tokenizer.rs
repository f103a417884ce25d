//! Whisper's vocabulary: token ids to text, the special tokens, and word splitting.
//!
//! Decoding needs only the id → token table and GPT-2's byte-level mapping, so the model
//! directory's own vocabulary is read directly (`vocabulary.json` or `vocabulary.txt`, the file
//! CTranslate2 reads, else `tokenizer.json`) instead of pulling in a full tokenizer library.
//! CTranslate2 takes prompts as token strings, which this table also provides.
//!
//! Every id read from a file is checked against the table's size before it is used, so a
//! hostile file is refused, naming it, instead of sizing an allocation.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::model::{io, read_json, ModelError};

/// The most tokens a vocabulary may hold. Whisper's have about 52 000; the bound keeps every id
/// within the engine's `i32` token lists and a corrupt file from sizing a huge table.
pub const MAX_TOKENS: usize = 1 << 20;

/// The largest `vocabulary.txt` read.
const MAX_VOCABULARY_BYTES: u64 = 64 << 20;

/// Timestamp tokens of a Whisper vocabulary: `<|0.00|>` to `<|30.00|>` in 0.02 s steps.
pub const TIMESTAMP_TOKENS: usize = 1501;

/// The vocabulary of one Whisper model.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    /// Token strings in id order, as CTranslate2 names them.
    tokens: Vec<String>,
    /// Token string → id.
    index: HashMap<String, usize>,
    /// The bytes each token stands for; empty for special tokens.
    bytes: Vec<Vec<u8>>,
    pub eot: usize,
    pub sot: usize,
    pub sot_prev: usize,
    pub no_timestamps: usize,
    /// The first timestamp token, `<|0.00|>`.
    pub timestamp_begin: usize,
    pub multilingual: bool,
    /// Ids that must never be generated besides the model's own list: task and
    /// sequence-control tokens.
    pub suppress: Vec<i32>,
}

impl Tokenizer {
    /// Reads the vocabulary of a model directory: the file CTranslate2 reads
    /// (`vocabulary.json`, else `vocabulary.txt`), else the ids of `tokenizer.json`. Every
    /// special token the decoding loop uses must be there, followed by the timestamp tokens.
    pub fn load(dir: &Path, multilingual: bool) -> Result<Self, ModelError> {
        let (tokens, path) = read_tokens(dir)?;
        // CTranslate2 keeps the first id of a token that appears twice; so does this table.
        let mut index: HashMap<String, usize> = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            index.entry(t.clone()).or_insert(i);
        }
        let corrupt = |reason: String| ModelError::Corrupt {
            path: path.clone(),
            reason,
        };
        let find = |name: &str| {
            index
                .get(name)
                .copied()
                .ok_or_else(|| corrupt(format!("the vocabulary has no `{name}` token")))
        };
        let eot = find("<|endoftext|>")?;
        let sot = find("<|startoftranscript|>")?;
        let sot_prev = find("<|startofprev|>")?;
        let no_timestamps = find("<|notimestamps|>")?;
        // The engine reads the no-speech probability from one of these.
        find("<|nospeech|>").or_else(|_| find("<|nocaptions|>"))?;
        let timestamp_begin = no_timestamps + 1;
        // The timestamp rules and the seek read any of the 1501 timestamps of a 30 s window.
        let timestamps = tokens.len().saturating_sub(timestamp_begin);
        if timestamps < TIMESTAMP_TOKENS {
            return Err(corrupt(format!(
                "{timestamps} timestamp tokens after `<|notimestamps|>`, Whisper has \
                 {TIMESTAMP_TOKENS}"
            )));
        }
        if !(eot < sot && sot < no_timestamps) {
            return Err(corrupt(format!(
                "special tokens out of Whisper's order (endoftext {eot}, startoftranscript \
                 {sot}, notimestamps {no_timestamps})"
            )));
        }
        let mut suppress = vec![
            find("<|transcribe|>")?,
            find("<|translate|>")?,
            sot,
            sot_prev,
        ];
        suppress.extend(find("<|startoflm|>").ok());
        suppress.extend(
            find("<|nospeech|>")
                .or_else(|_| find("<|nocaptions|>"))
                .ok(),
        );
        suppress.sort_unstable();
        let bytes = tokens
            .iter()
            .enumerate()
            .map(|(id, t)| {
                if id >= eot {
                    Vec::new()
                } else {
                    byte_decode(t)
                }
            })
            .collect();
        Ok(Tokenizer {
            bytes,
            eot,
            sot,
            sot_prev,
            no_timestamps,
            timestamp_begin,
            multilingual,
            // Every id is below MAX_TOKENS, so it fits.
            suppress: suppress.into_iter().map(|id| id as i32).collect(),
            tokens,
            index,
        })
    }

    /// The id of a token string.
    pub fn id(&self, token: &str) -> Option<usize> {
        self.index.get(token).copied()
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The token string CTranslate2 knows `id` by.
    pub fn token(&self, id: usize) -> &str {
        self.tokens.get(id).map(String::as_str).unwrap_or("")
    }

    pub fn is_timestamp(&self, id: usize) -> bool {
        id >= self.timestamp_begin
    }

    /// `<|en|>`-style language token, if the model has one for `code`.
    pub fn language_token(&self, code: &str) -> Option<String> {
        let token = format!("<|{code}|>");
        self.index.contains_key(&token).then_some(token)
    }

    /// Text of the ordinary tokens among `ids`; special and timestamp tokens are skipped.
    pub fn decode(&self, ids: &[usize]) -> String {
        let mut buf = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            if let Some(b) = self.bytes.get(id) {
                buf.extend_from_slice(b);
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Splits text tokens into words the way Whisper's word timing does: first into pieces
    /// that decode to whole characters, then joining pieces that do not start with a space or
    /// stand as punctuation. Returns each word with its token ids.
    pub fn split_words(&self, ids: &[usize]) -> Vec<(String, Vec<usize>)> {
        let mut pieces: Vec<(String, Vec<usize>)> = Vec::new();
        let mut current: Vec<usize> = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        for &id in ids {
            current.push(id);
            buf.extend_from_slice(self.bytes.get(id).map(Vec::as_slice).unwrap_or(&[]));
            // A piece ends once its bytes form whole UTF-8 characters.
            if std::str::from_utf8(&buf).is_ok() {
                pieces.push((
                    String::from_utf8(std::mem::take(&mut buf)).unwrap_or_default(),
                    std::mem::take(&mut current),
                ));
            }
        }
        if !current.is_empty() {
            pieces.push((String::from_utf8_lossy(&buf).into_owned(), current));
        }
        let mut words: Vec<(String, Vec<usize>)> = Vec::new();
        for (piece, tokens) in pieces {
            let starts_word =
                piece.starts_with(' ') || is_punctuation(piece.trim()) || words.is_empty();
            if starts_word {
                words.push((piece, tokens));
            } else if let Some((word, word_tokens)) = words.last_mut() {
                word.push_str(&piece);
                word_tokens.extend(tokens);
            }
        }
        words
    }
}

/// True for a non-empty string made only of ASCII punctuation (Python's `string.punctuation`).
fn is_punctuation(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_punctuation())
}

/// Reads the token table in id order from whichever vocabulary file the model ships, in the
/// order CTranslate2 looks for them; returns the table and the file it came from.
fn read_tokens(dir: &Path) -> Result<(Vec<String>, PathBuf), ModelError> {
    let corrupt = |path: &Path, reason: String| ModelError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let json = dir.join("vocabulary.json");
    let txt = dir.join("vocabulary.txt");
    let (tokens, path) = if json.is_file() {
        let tokens: Vec<String> = serde_json::from_value(read_json(&json, "vocabulary")?)
            .map_err(|e| corrupt(&json, format!("not a JSON list of tokens: {e}")))?;
        (tokens, json)
    } else if txt.is_file() {
        // Whisper's is about 0.5 MB; the cap keeps a mislabelled file from being read whole.
        let mut text = String::new();
        fs::File::open(&txt)
            .and_then(|f| f.take(MAX_VOCABULARY_BYTES + 1).read_to_string(&mut text))
            .map_err(io(&txt))?;
        if text.len() as u64 > MAX_VOCABULARY_BYTES {
            return Err(corrupt(
                &txt,
                format!("larger than {} MiB", MAX_VOCABULARY_BYTES >> 20),
            ));
        }
        (text.lines().map(str::to_owned).collect(), txt)
    } else {
        let path = dir.join("tokenizer.json");
        let value = read_json(
            &path,
            "tokenizer (vocabulary.json, vocabulary.txt or tokenizer.json)",
        )?;
        (tokens_of_tokenizer_json(&path, &value)?, path)
    };
    if tokens.is_empty() || tokens.len() > MAX_TOKENS {
        return Err(corrupt(
            &path,
            format!(
                "{} tokens (a vocabulary holds 1 to {MAX_TOKENS})",
                tokens.len()
            ),
        ));
    }
    Ok((tokens, path))
}

/// The id of every entry of a `tokenizer.json` (`model.vocab` and `added_tokens`), each checked
/// to be an integer below `limit`, and below [`MAX_TOKENS`] whatever the limit. Whisper's and
/// the embedding model's tokenizers share this check.
pub(crate) fn tokenizer_json_entries<'a>(
    path: &Path,
    value: &'a serde_json::Value,
    limit: u64,
) -> Result<Vec<(usize, &'a str)>, ModelError> {
    let corrupt = |reason: String| ModelError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let vocab = value
        .pointer("/model/vocab")
        .and_then(|v| v.as_object())
        .ok_or_else(|| corrupt("no model.vocab table".into()))?;
    let mut entries: Vec<(&str, &serde_json::Value)> =
        vocab.iter().map(|(t, id)| (t.as_str(), id)).collect();
    if let Some(added) = value.get("added_tokens") {
        let added = added
            .as_array()
            .ok_or_else(|| corrupt("added_tokens is not a list".into()))?;
        for entry in added {
            let token = entry
                .get("content")
                .and_then(|v| v.as_str())
                .ok_or_else(|| corrupt("an added token has no content".into()))?;
            let id = entry.get("id").unwrap_or(&serde_json::Value::Null);
            entries.push((token, id));
        }
    }
    let limit = limit.min(MAX_TOKENS as u64);
    entries
        .into_iter()
        .map(|(token, id)| match id.as_u64() {
            Some(n) if n < limit => Ok((n as usize, token)),
            _ => Err(corrupt(format!(
                "token {token:?} has id {id}, outside the vocabulary (0 to {})",
                limit.saturating_sub(1)
            ))),
        })
        .collect()
}

/// The token table of a `tokenizer.json`: its ids must run 0..n with none missing, so every
/// id is below the number of entries, which also bounds the table by the file's size.
fn tokens_of_tokenizer_json(
    path: &Path,
    value: &serde_json::Value,
) -> Result<Vec<String>, ModelError> {
    let count = value
        .pointer("/model/vocab")
        .and_then(|v| v.as_object())
        .map_or(0, |v| v.len())
        + value
            .get("added_tokens")
            .and_then(|v| v.as_array())
            .map_or(0, |v| v.len());
    let entries = tokenizer_json_entries(path, value, count as u64)?;
    let mut by_id: Vec<Option<String>> = vec![None; count];
    let mut len = 0;
    for (id, token) in entries {
        by_id[id] = Some(token.to_owned());
        len = len.max(id + 1);
    }
    by_id.truncate(len);
    by_id
        .into_iter()
        .enumerate()
        .map(|(id, t)| {
            t.ok_or_else(|| ModelError::Corrupt {
                path: path.to_owned(),
                reason: format!("token id {id} is missing"),
            })
        })
        .collect()
}

/// Checks a `tokenizer.json` that ships beside the vocabulary: every id it gives must be a
/// token of the model, below `vocab_size`.
pub(crate) fn check_tokenizer_json(path: &Path, vocab_size: u64) -> Result<(), ModelError> {
    let value = read_json(path, "tokenizer")?;
    tokenizer_json_entries(path, &value, vocab_size).map(|_| ())
}

/// GPT-2's byte-level BPE maps each byte to a printable character; this undoes it.
fn byte_decode(token: &str) -> Vec<u8> {
    token
        .chars()
        .filter_map(|c| {
            let c = c as u32;
            match c {
                0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff => Some(c as u8),
                // The other 68 bytes were shifted to U+0100.. in byte order.
                0x100..=0x143 => UNPRINTABLE.get((c - 0x100) as usize).copied(),
                _ => None,
            }
        })
        .collect()
}

/// The bytes GPT-2 remaps, in the order it assigns them code points from U+0100.
const UNPRINTABLE: [u8; 68] = {
    let mut out = [0u8; 68];
    let mut n = 0;
    let mut b = 0usize;
    while b < 256 {
        let printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
        if !printable {
            out[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    out
};

/// A Whisper-shaped vocabulary of `size` tokens (at least 1511): text tokens, the special
/// tokens in Whisper's order, then the 1501 timestamps. For tests.
#[cfg(test)]
pub(crate) fn fake_vocabulary(size: usize) -> Vec<String> {
    let specials = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        "<|en|>",
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nocaptions|>",
        "<|notimestamps|>",
    ];
    let text = size - specials.len() - TIMESTAMP_TOKENS;
    (0..text)
        .map(|i| format!("\u{120}w{i}"))
        .chain(specials.iter().map(|s| (*s).to_owned()))
        .chain((0..TIMESTAMP_TOKENS).map(|i| format!("<|{:.2}|>", i as f64 * 0.02)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fake_vocabulary_loads_and_finds_its_special_tokens() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(
            tmp.path().join("vocabulary.txt"),
            fake_vocabulary(1600).join("\n"),
        )
        .unwrap();
        let tok = Tokenizer::load(tmp.path(), false).unwrap();
        assert_eq!(tok.len(), 1600);
        assert_eq!(tok.eot, 1600 - 1510);
        assert_eq!(tok.timestamp_begin, tok.no_timestamps + 1);
        assert_eq!(tok.decode(&[0, tok.eot, 1]), " w0 w1");
    }

    #[test]
    fn tokenizer_json_ids_outside_the_table_are_refused_without_allocating() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("tokenizer.json");
        for id in [
            "1099511627776",        // 2^40: would size a table of a trillion entries
            "18446744073709551615", // u64::MAX: id + 1 overflows
            "-1",
            "1.5",
            "\"7\"",
        ] {
            let json = format!(r#"{{"model": {{"vocab": {{"a": 0, "b": {id}}}}}}}"#);
            fs::write(&path, json).unwrap();
            let err = Tokenizer::load(tmp.path(), false).unwrap_err().to_string();
            assert!(
                err.contains("tokenizer.json") && err.contains("outside the vocabulary"),
                "{id}: {err}"
            );
            let err = check_tokenizer_json(&path, 51864).unwrap_err().to_string();
            assert!(err.contains("tokenizer.json"), "{id}: {err}");
        }
        // A gap in the ids is refused too.
        fs::write(&path, r#"{"model": {"vocab": {"a": 0, "b": 1}}, "added_tokens": [{"id": 3, "content": "c"}]}"#).unwrap();
        let err = Tokenizer::load(tmp.path(), false).unwrap_err().to_string();
        assert!(err.contains("outside the vocabulary"), "{err}");
    }

    #[test]
    fn missing_special_tokens_or_timestamps_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vocabulary.json");
        let mut vocab = fake_vocabulary(1600);
        vocab.retain(|t| t != "<|startofprev|>");
        fs::write(&path, serde_json::to_vec(&vocab).unwrap()).unwrap();
        let err = Tokenizer::load(tmp.path(), false).unwrap_err().to_string();
        assert!(
            err.contains("vocabulary.json") && err.contains("startofprev"),
            "{err}"
        );

        let mut vocab = fake_vocabulary(1600);
        vocab.truncate(1600 - 10);
        fs::write(&path, serde_json::to_vec(&vocab).unwrap()).unwrap();
        let err = Tokenizer::load(tmp.path(), false).unwrap_err().to_string();
        assert!(err.contains("timestamp tokens"), "{err}");
    }

    #[test]
    fn byte_level_mapping_round_trips_spaces_and_utf8() {
        // "Ġ" is U+0120, GPT-2's stand-in for a space (byte 0x20).
        assert_eq!(byte_decode("Ġhello"), b" hello");
        assert_eq!(byte_decode("Ċ"), b"\n");
        // "é" as two bytes 0xC3 0xA9, both printable in the mapping.
        assert_eq!(byte_decode("Ã©"), "é".as_bytes());
    }
}
