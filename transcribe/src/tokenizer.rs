//! Whisper's vocabulary: token ids to text, the special tokens, and word splitting.
//!
//! Decoding needs only the id → token table and GPT-2's byte-level mapping, so the model
//! directory's own vocabulary is read directly (`vocabulary.txt`, `vocabulary.json` or
//! `tokenizer.json`) instead of pulling in a full tokenizer library. CTranslate2 takes prompts
//! as token strings, which this table also provides.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use crate::model::{io, read_json, ModelError};

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
    /// Reads the vocabulary of a model directory.
    pub fn load(dir: &Path, multilingual: bool) -> Result<Self, ModelError> {
        let tokens = read_tokens(dir)?;
        let index: HashMap<String, usize> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i))
            .collect();
        let path = dir.join("vocabulary.txt");
        let find = |name: &str| {
            index.get(name).copied().ok_or_else(|| ModelError::Corrupt {
                path: path.clone(),
                reason: format!("the vocabulary has no `{name}` token"),
            })
        };
        let eot = find("<|endoftext|>")?;
        let sot = find("<|startoftranscript|>")?;
        let sot_prev = find("<|startofprev|>")?;
        let no_timestamps = find("<|notimestamps|>")?;
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
            timestamp_begin: no_timestamps + 1,
            multilingual,
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

/// Reads the token table in id order from whichever vocabulary file the model ships.
fn read_tokens(dir: &Path) -> Result<Vec<String>, ModelError> {
    let txt = dir.join("vocabulary.txt");
    if txt.is_file() {
        let text = fs::read_to_string(&txt).map_err(io(&txt))?;
        return Ok(text.lines().map(str::to_owned).collect());
    }
    let corrupt = |path: &Path, reason: String| ModelError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let json = dir.join("vocabulary.json");
    if json.is_file() {
        return serde_json::from_value(read_json(&json, "vocabulary")?)
            .map_err(|e| corrupt(&json, format!("not a JSON list of tokens: {e}")));
    }
    let path = dir.join("tokenizer.json");
    let value = read_json(
        &path,
        "tokenizer (tokenizer.json, vocabulary.json or vocabulary.txt)",
    )?;
    let mut by_id: Vec<Option<String>> = Vec::new();
    let mut put = |id: u64, token: &str| {
        let id = id as usize;
        if by_id.len() <= id {
            by_id.resize(id + 1, None);
        }
        by_id[id] = Some(token.to_owned());
    };
    let vocab = value
        .pointer("/model/vocab")
        .and_then(|v| v.as_object())
        .ok_or_else(|| corrupt(&path, "no model.vocab table".into()))?;
    for (token, id) in vocab {
        if let Some(id) = id.as_u64() {
            put(id, token);
        }
    }
    if let Some(added) = value.get("added_tokens").and_then(|v| v.as_array()) {
        for entry in added {
            if let (Some(id), Some(token)) = (
                entry.get("id").and_then(|v| v.as_u64()),
                entry.get("content").and_then(|v| v.as_str()),
            ) {
                put(id, token);
            }
        }
    }
    by_id
        .into_iter()
        .enumerate()
        .map(|(id, t)| t.ok_or_else(|| corrupt(&path, format!("token id {id} is missing"))))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_mapping_round_trips_spaces_and_utf8() {
        // "Ġ" is U+0120, GPT-2's stand-in for a space (byte 0x20).
        assert_eq!(byte_decode("Ġhello"), b" hello");
        assert_eq!(byte_decode("Ċ"), b"\n");
        // "é" as two bytes 0xC3 0xA9, both printable in the mapping.
        assert_eq!(byte_decode("Ã©"), "é".as_bytes());
    }
}
