//! Reading a CTranslate2 `model.bin` without loading it.
//!
//! The file is little-endian: `u32` binary version, the spec name, `u32` spec revision, `u32`
//! variable count, then each variable (name, `u8` rank, `u32` dims, `u8` dtype, `u32` byte
//! count, data). Strings are a `u16` length that counts a trailing NUL, then the bytes. Walking
//! the variables checks that every tensor's bytes are present and match its shape, so a
//! truncated or corrupt download is caught at import rather than at first inference.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom};

/// What the header says.
#[derive(Debug, Clone, PartialEq)]
pub struct Ct2Header {
    pub binary_version: u32,
    pub spec: String,
    pub spec_revision: u32,
    /// Variable name → shape.
    pub variables: BTreeMap<String, Vec<u32>>,
}

/// Bytes per element of CTranslate2's dtype ids (float32, int8, int16, int32, float16,
/// bfloat16, float8 e4m3, float8 e5m2).
fn item_size(dtype: u8) -> Option<u64> {
    match dtype {
        0 | 3 => Some(4),
        1 | 6 | 7 => Some(1),
        2 | 4 | 5 => Some(2),
        _ => None,
    }
}

/// Reads and checks the header and variable table of a `model.bin`.
pub fn read_header(mut r: impl Read + Seek, file_len: u64) -> Result<Ct2Header, String> {
    let binary_version = read_u32(&mut r).map_err(eof)?;
    if !(1..=16).contains(&binary_version) {
        return Err(format!(
            "not a CTranslate2 model (binary version {binary_version})"
        ));
    }
    let spec = read_string(&mut r).map_err(eof)?;
    let spec_revision = read_u32(&mut r).map_err(eof)?;
    let count = read_u32(&mut r).map_err(eof)?;
    if count == 0 || count > 100_000 {
        return Err(format!("implausible variable count {count}"));
    }
    let mut variables = BTreeMap::new();
    for _ in 0..count {
        let name = read_string(&mut r).map_err(eof)?;
        let rank = read_u8(&mut r).map_err(eof)?;
        if rank > 8 {
            return Err(format!("variable {name}: implausible rank {rank}"));
        }
        let mut shape = Vec::with_capacity(rank as usize);
        for _ in 0..rank {
            shape.push(read_u32(&mut r).map_err(eof)?);
        }
        let dtype = read_u8(&mut r).map_err(eof)?;
        let size =
            item_size(dtype).ok_or_else(|| format!("variable {name}: unknown dtype {dtype}"))?;
        let bytes = read_u32(&mut r).map_err(eof)? as u64;
        let elements: u64 = shape.iter().map(|&d| d as u64).product();
        if elements * size != bytes {
            return Err(format!(
                "variable {name}: {bytes} bytes do not match shape {shape:?}"
            ));
        }
        let pos = r.stream_position().map_err(|e| e.to_string())?;
        if pos + bytes > file_len {
            return Err(format!(
                "truncated: variable {name} needs bytes up to {} but the file has {file_len}",
                pos + bytes
            ));
        }
        r.seek(SeekFrom::Current(bytes as i64))
            .map_err(|e| e.to_string())?;
        variables.insert(name, shape);
    }
    Ok(Ct2Header {
        binary_version,
        spec,
        spec_revision,
        variables,
    })
}

fn eof(e: io::Error) -> String {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        "truncated: the file ends inside its header".to_owned()
    } else {
        e.to_string()
    }
}

fn read_u8(r: &mut impl Read) -> io::Result<u8> {
    let mut b = [0; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_string(r: &mut impl Read) -> io::Result<String> {
    let mut b = [0; 2];
    r.read_exact(&mut b)?;
    let len = u16::from_le_bytes(b) as usize;
    let mut buf = vec![0; len];
    r.read_exact(&mut buf)?;
    if buf.last() == Some(&0) {
        buf.pop();
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Writes a minimal `model.bin` (tests and fixtures).
#[cfg(test)]
pub fn write_model_bin(spec: &str, variables: &[(&str, Vec<u32>)]) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&6u32.to_le_bytes());
    string(&mut out, spec);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(variables.len() as u32).to_le_bytes());
    for (name, shape) in variables {
        string(&mut out, name);
        out.push(shape.len() as u8);
        for d in shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.push(4); // float16
        let bytes: u32 = shape.iter().product::<u32>() * 2;
        out.extend_from_slice(&bytes.to_le_bytes());
        out.extend(std::iter::repeat_n(0u8, bytes as usize));
    }
    out.extend_from_slice(&0u32.to_le_bytes()); // no aliases
    out
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    #[test]
    fn reads_what_it_writes_and_rejects_truncation() {
        let bytes = write_model_bin(
            "WhisperSpec",
            &[
                ("encoder/conv1/weight", vec![4, 80, 3]),
                ("decoder/embeddings/weight", vec![51864, 2]),
            ],
        );
        let header = read_header(Cursor::new(&bytes), bytes.len() as u64).unwrap();
        assert_eq!(header.spec, "WhisperSpec");
        assert_eq!(header.variables["encoder/conv1/weight"], [4, 80, 3]);

        let cut = &bytes[..bytes.len() - 100];
        let err = read_header(Cursor::new(cut), cut.len() as u64).unwrap_err();
        assert!(err.starts_with("truncated"), "{err}");
        let err = read_header(Cursor::new(&bytes[..20]), 20).unwrap_err();
        assert!(err.starts_with("truncated"), "{err}");
        let err = read_header(Cursor::new(b"garbage!garbage!"), 16).unwrap_err();
        assert!(err.contains("not a CTranslate2 model"), "{err}");
    }
}
