//! Reading a `model.safetensors` header without loading the tensors.
//!
//! The file is a little-endian `u64` header length `N`, then `N` bytes of JSON mapping each
//! tensor's name to its `dtype`, `shape` and `data_offsets` (`[begin, end)`, counted from the
//! first byte after the header), plus an optional `__metadata__` entry; then the tensor data.
//! The checks are the ones the `safetensors` crate makes when the embedder loads the file (the
//! tensors tile the data exactly, in order, and each one's size is its shape's, computed without
//! overflow), so a truncated or hostile file is caught at import rather than at first use.

use std::collections::BTreeMap;
use std::io::Read;

/// The format's own cap on the header, which also bounds what a corrupt length makes us read.
const MAX_HEADER: u64 = 100_000_000;

/// One tensor as the header describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    pub dtype: String,
    pub shape: Vec<u64>,
}

/// Bits per element of the safetensors dtypes; `None` for a name the format does not define.
fn item_bits(dtype: &str) -> Option<u64> {
    match dtype {
        "F64" | "I64" | "U64" | "C64" => Some(64),
        "F32" | "I32" | "U32" => Some(32),
        "F16" | "BF16" | "I16" | "U16" => Some(16),
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" => Some(8),
        "F6_E2M3" | "F6_E3M2" => Some(6),
        "F4" => Some(4),
        _ => None,
    }
}

/// Reads and checks the header of a safetensors file of `file_len` bytes. Returns the tensors
/// by name.
pub fn read_header(
    mut r: impl Read,
    file_len: u64,
) -> Result<BTreeMap<String, TensorEntry>, String> {
    let mut len_bytes = [0u8; 8];
    r.read_exact(&mut len_bytes).map_err(|_| {
        format!("truncated: {file_len} bytes, shorter than the 8-byte header length")
    })?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER {
        return Err(format!(
            "not a safetensors file (header length {header_len})"
        ));
    }
    // Both terms are bounded (the header by MAX_HEADER), so the sum cannot overflow.
    if 8 + header_len > file_len {
        return Err(format!(
            "truncated: the header needs {} bytes, the file has {file_len}",
            8 + header_len
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    r.read_exact(&mut header)
        .map_err(|e| format!("reading the header: {e}"))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| format!("header is not a JSON object: {e}"))?;

    let data_len = file_len - 8 - header_len;
    let mut tensors = BTreeMap::new();
    let mut spans: Vec<(u64, u64, String)> = Vec::with_capacity(header.len());
    for (name, entry) in header {
        if name == "__metadata__" {
            let strings = entry
                .as_object()
                .is_some_and(|m| m.values().all(|v| v.is_string()));
            if !strings {
                return Err("__metadata__ is not a map of strings".into());
            }
            continue;
        }
        let bad = |what: &str| format!("tensor {name}: {what}");
        let dtype = entry
            .get("dtype")
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad("no dtype"))?
            .to_owned();
        let bits = item_bits(&dtype).ok_or_else(|| bad(&format!("unknown dtype {dtype}")))?;
        let shape = entry
            .get("shape")
            .and_then(|v| v.as_array())
            .and_then(|dims| dims.iter().map(|d| d.as_u64()).collect::<Option<Vec<_>>>())
            .ok_or_else(|| bad("no shape"))?;
        let offsets = entry
            .get("data_offsets")
            .and_then(|v| v.as_array())
            .and_then(|o| o.iter().map(|d| d.as_u64()).collect::<Option<Vec<_>>>())
            .filter(|o| o.len() == 2)
            .ok_or_else(|| bad("no data_offsets"))?;
        let (begin, end) = (offsets[0], offsets[1]);
        if begin > end {
            return Err(bad(&format!("data_offsets [{begin}, {end}] run backwards")));
        }
        if end > data_len {
            return Err(format!(
                "truncated: tensor {name} ends at data byte {end}, the file holds {data_len}"
            ));
        }
        let bytes = shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .and_then(|n| n.checked_mul(bits))
            .filter(|b| b % 8 == 0)
            .map(|b| b / 8);
        if bytes != Some(end - begin) {
            return Err(bad(&format!(
                "{} bytes do not match shape {shape:?} of {dtype}",
                end - begin
            )));
        }
        spans.push((begin, end, name.clone()));
        tensors.insert(name, TensorEntry { dtype, shape });
    }
    if tensors.is_empty() {
        return Err("no tensors".into());
    }
    // The loader needs the tensors to tile the data: in order, no gap, no overlap, no tail.
    spans.sort();
    let mut at = 0u64;
    for (begin, end, name) in &spans {
        if *begin != at {
            return Err(format!(
                "tensor {name}: starts at data byte {begin}, the previous tensor ends at {at}"
            ));
        }
        at = *end;
    }
    if at != data_len {
        return Err(format!(
            "the tensors end at data byte {at}, but the file holds {data_len}"
        ));
    }
    Ok(tensors)
}

/// A safetensors file holding `tensors` (name, dtype, shape) filled with zeros; for tests.
#[cfg(test)]
pub(crate) fn write_safetensors(tensors: &[(&str, &str, Vec<u64>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut offset = 0u64;
    for (name, dtype, shape) in tensors {
        let bytes = shape.iter().product::<u64>() * item_bits(dtype).unwrap() / 8;
        header.insert(
            (*name).into(),
            serde_json::json!({
                "dtype": dtype,
                "shape": shape,
                "data_offsets": [offset, offset + bytes],
            }),
        );
        offset += bytes;
    }
    let header = serde_json::to_vec(&header).unwrap();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.resize(out.len() + offset as usize, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        write_safetensors(&[
            ("embeddings.word_embeddings.weight", "F32", vec![10, 4]),
            ("embeddings.position_ids", "I64", vec![1, 8]),
        ])
    }

    #[test]
    fn reads_names_and_shapes() {
        let bytes = sample();
        let tensors = read_header(&bytes[..], bytes.len() as u64).unwrap();
        assert_eq!(
            tensors["embeddings.word_embeddings.weight"].shape,
            vec![10, 4]
        );
        assert_eq!(tensors["embeddings.position_ids"].dtype, "I64");
    }

    #[test]
    fn rejects_truncation_anywhere() {
        let bytes = sample();
        for cut in [0, 5, 8, 20, bytes.len() - 1] {
            let err = read_header(&bytes[..cut], cut as u64).unwrap_err();
            assert!(err.contains("truncated"), "cut at {cut}: {err}");
        }
    }

    #[test]
    fn rejects_shapes_that_overflow_and_data_that_does_not_tile() {
        // 2^32 * 2^32 elements: 0 in wrapping arithmetic, which would match an empty tensor.
        let overflow = raw(
            r#"{"w": {"dtype": "F32", "shape": [4294967296, 4294967296],
            "data_offsets": [0, 0]}}"#,
            0,
        );
        let err = read_header(&overflow[..], overflow.len() as u64).unwrap_err();
        assert!(err.contains("do not match shape"), "{err}");

        let gap = raw(
            r#"{"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
            "b": {"dtype": "U8", "shape": [2], "data_offsets": [3, 5]}}"#,
            5,
        );
        let err = read_header(&gap[..], gap.len() as u64).unwrap_err();
        assert!(err.contains("starts at data byte 3"), "{err}");

        let tail = raw(
            r#"{"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}"#,
            9,
        );
        let err = read_header(&tail[..], tail.len() as u64).unwrap_err();
        assert!(err.contains("end at data byte 2"), "{err}");

        let dtype = raw(
            r#"{"a": {"dtype": "Q9", "shape": [2], "data_offsets": [0, 2]}}"#,
            2,
        );
        let err = read_header(&dtype[..], dtype.len() as u64).unwrap_err();
        assert!(err.contains("unknown dtype Q9"), "{err}");
    }

    #[test]
    fn corrupt_bytes_never_panic() {
        let good = sample();
        for i in 0..good.len().min(400) {
            for v in [0u8, 0xff, b'9', b'-'] {
                let mut bytes = good.clone();
                bytes[i] = v;
                let _ = read_header(&bytes[..], bytes.len() as u64);
            }
        }
    }

    /// A file with this header JSON and `data` zero bytes after it.
    fn raw(header: &str, data: usize) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.resize(out.len() + data, 0);
        out
    }

    #[test]
    fn rejects_a_size_that_does_not_match_the_shape() {
        let mut bytes = sample();
        let at = bytes.windows(6).position(|w| w == b"[10,4]").unwrap();
        bytes[at + 4] = b'5';
        let err = read_header(&bytes[..], bytes.len() as u64).unwrap_err();
        assert!(err.contains("do not match shape"), "{err}");
    }
}
