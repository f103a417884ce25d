//! Reading a `model.safetensors` header without loading the tensors.
//!
//! The file is a little-endian `u64` header length `N`, then `N` bytes of JSON mapping each
//! tensor's name to its `dtype`, `shape` and `data_offsets` (`[begin, end)`, counted from the
//! first byte after the header), plus an optional `__metadata__` entry; then the tensor data.
//! Checking every tensor's offsets against the file length and its shape catches a truncated or
//! corrupt download at import rather than at first inference.

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

/// Bytes per element of the safetensors dtypes; `None` for one this reader does not know,
/// whose size is then not checked against its shape.
fn item_size(dtype: &str) -> Option<u64> {
    match dtype {
        "F64" | "I64" | "U64" => Some(8),
        "F32" | "I32" | "U32" => Some(4),
        "F16" | "BF16" | "I16" | "U16" => Some(2),
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => Some(1),
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
    for (name, entry) in header {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: &str| format!("tensor {name}: {what}");
        let dtype = entry
            .get("dtype")
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad("no dtype"))?
            .to_owned();
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
        if let Some(size) = item_size(&dtype) {
            let elements = shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
            if elements.and_then(|n| n.checked_mul(size)) != Some(end - begin) {
                return Err(bad(&format!(
                    "{} bytes do not match shape {shape:?} of {dtype}",
                    end - begin
                )));
            }
        }
        tensors.insert(name, TensorEntry { dtype, shape });
    }
    if tensors.is_empty() {
        return Err("no tensors".into());
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
        let bytes = shape.iter().product::<u64>() * item_size(dtype).unwrap();
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
    fn rejects_a_size_that_does_not_match_the_shape() {
        let mut bytes = sample();
        let at = bytes.windows(6).position(|w| w == b"[10,4]").unwrap();
        bytes[at + 4] = b'5';
        let err = read_header(&bytes[..], bytes.len() as u64).unwrap_err();
        assert!(err.contains("do not match shape"), "{err}");
    }
}
