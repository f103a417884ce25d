//! Reading a CTranslate2 `model.bin` without loading it.
//!
//! The file is little-endian: `u32` binary version, the spec name, `u32` spec revision, `u32`
//! variable count, then each variable (name, `u8` rank, `u32` dims, `u8` dtype, `u32` byte
//! count, data), then (binary version 3 on) a `u32` alias count and the alias pairs. Strings are
//! a `u16` length that counts a trailing NUL, then the bytes. Before binary version 4 a variable
//! gives its item size and element count instead of a dtype and byte count.
//!
//! Walking the variables checks that every tensor's shape is sane (every dimension > 0, no
//! overflow), that its byte count is exactly the shape's, and that its bytes lie within the
//! file, so a truncated or hostile file is caught at import rather than inside the engine,
//! which trusts these numbers when it allocates.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Seek, SeekFrom};

/// The newest binary version the linked CTranslate2 (4.x) reads.
const MAX_BINARY_VERSION: u32 = 6;
/// The oldest that carries a spec name (version 1 has none, so it cannot be told Whisper).
const MIN_BINARY_VERSION: u32 = 2;
/// Far more variables than any Whisper model has (large-v3: about 1300), few enough that a
/// corrupt count cannot make the walk take long.
const MAX_VARIABLES: u32 = 100_000;
/// CTranslate2 tensors have at most a handful of dimensions.
const MAX_RANK: u8 = 8;

/// What the header says.
#[derive(Debug, Clone, PartialEq)]
pub struct Ct2Header {
    pub binary_version: u32,
    pub spec: String,
    pub spec_revision: u32,
    /// Variable name → shape. Aliases are included, with their target's shape.
    pub variables: BTreeMap<String, Vec<u32>>,
    /// The values of scalar integer variables (`decoder/num_heads`, flags), which the engine
    /// reads as model attributes.
    pub scalars: BTreeMap<String, i64>,
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

/// Reads and checks the header and variable table of a `model.bin` of `file_len` bytes.
pub fn read_header(mut r: impl Read + Seek, file_len: u64) -> Result<Ct2Header, String> {
    let binary_version = read_u32(&mut r).map_err(eof)?;
    if !(1..=16).contains(&binary_version) {
        return Err(format!(
            "not a CTranslate2 model (binary version {binary_version})"
        ));
    }
    if !(MIN_BINARY_VERSION..=MAX_BINARY_VERSION).contains(&binary_version) {
        return Err(format!(
            "binary version {binary_version} is not supported (this build reads \
             {MIN_BINARY_VERSION} to {MAX_BINARY_VERSION})"
        ));
    }
    let spec = read_string(&mut r).map_err(eof)?;
    let spec_revision = read_u32(&mut r).map_err(eof)?;
    let count = read_u32(&mut r).map_err(eof)?;
    if count == 0 || count > MAX_VARIABLES {
        return Err(format!("implausible variable count {count}"));
    }
    let mut variables = BTreeMap::new();
    let mut scalars = BTreeMap::new();
    for _ in 0..count {
        let name = read_string(&mut r).map_err(eof)?;
        if name.is_empty() {
            return Err("a variable has an empty name".into());
        }
        let rank = read_u8(&mut r).map_err(eof)?;
        if rank > MAX_RANK {
            return Err(format!("variable {name}: implausible rank {rank}"));
        }
        let mut shape = Vec::with_capacity(rank as usize);
        for _ in 0..rank {
            shape.push(read_u32(&mut r).map_err(eof)?);
        }
        if shape.contains(&0) {
            return Err(format!(
                "variable {name}: shape {shape:?} has a zero dimension"
            ));
        }
        let (dtype, size, bytes) = if binary_version >= 4 {
            let dtype = read_u8(&mut r).map_err(eof)?;
            let size = item_size(dtype)
                .ok_or_else(|| format!("variable {name}: unknown dtype {dtype}"))?;
            let bytes = read_u32(&mut r).map_err(eof)? as u64;
            (Some(dtype), size, bytes)
        } else {
            let size = read_u8(&mut r).map_err(eof)? as u64;
            if ![1, 2, 4].contains(&size) {
                return Err(format!("variable {name}: unknown item size {size}"));
            }
            let elements = read_u32(&mut r).map_err(eof)? as u64;
            (None, size, elements * size)
        };
        let expected = shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .and_then(|n| n.checked_mul(size));
        if expected != Some(bytes) {
            return Err(format!(
                "variable {name}: {bytes} bytes do not match shape {shape:?} of {size}-byte items"
            ));
        }
        let pos = r.stream_position().map_err(|e| e.to_string())?;
        let end = pos.checked_add(bytes).filter(|&end| end <= file_len);
        let Some(end) = end else {
            return Err(format!(
                "truncated: variable {name} needs bytes up to {} but the file has {file_len}",
                pos.saturating_add(bytes)
            ));
        };
        let integer = matches!(dtype, Some(1..=3)) || (dtype.is_none() && size <= 4);
        if shape.is_empty() && integer {
            let mut buf = [0u8; 4];
            let raw = &mut buf[..bytes as usize];
            r.read_exact(raw).map_err(eof)?;
            let value = match raw.len() {
                1 => raw[0] as i8 as i64,
                2 => i16::from_le_bytes([raw[0], raw[1]]) as i64,
                _ => i32::from_le_bytes(buf) as i64,
            };
            scalars.insert(name.clone(), value);
        } else {
            r.seek(SeekFrom::Start(end)).map_err(|e| e.to_string())?;
        }
        if variables.insert(name.clone(), shape).is_some() {
            return Err(format!("variable {name} appears twice"));
        }
    }
    if binary_version >= 3 {
        let aliases = read_u32(&mut r).map_err(eof)?;
        if aliases > count {
            return Err(format!(
                "implausible alias count {aliases} for {count} variables"
            ));
        }
        let mut names = BTreeSet::new();
        for _ in 0..aliases {
            let alias = read_string(&mut r).map_err(eof)?;
            let target = read_string(&mut r).map_err(eof)?;
            let shape = variables
                .get(&target)
                .cloned()
                .ok_or_else(|| format!("alias {alias} names no variable ({target})"))?;
            if alias.is_empty() || variables.contains_key(&alias) || !names.insert(alias.clone()) {
                return Err(format!("alias `{alias}` clashes with another name"));
            }
            if let Some(&value) = scalars.get(&target) {
                scalars.insert(alias.clone(), value);
            }
            variables.insert(alias, shape);
        }
    }
    Ok(Ct2Header {
        binary_version,
        spec,
        spec_revision,
        variables,
        scalars,
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

/// A string of at most 64 KiB (its length is a `u16`), so a corrupt length cannot make a big
/// allocation. CTranslate2 refuses a zero length (there is no room for the NUL).
fn read_string(r: &mut impl Read) -> io::Result<String> {
    let mut b = [0; 2];
    r.read_exact(&mut b)?;
    let len = u16::from_le_bytes(b) as usize;
    if len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a string of length 0 (without its NUL)",
        ));
    }
    let mut buf = vec![0; len];
    r.read_exact(&mut buf)?;
    if buf.last() == Some(&0) {
        buf.pop();
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// One variable for [`write_model_bin`]: name, shape, CTranslate2 dtype id, and the data
/// (zeros of the shape's size when `None`).
#[cfg(test)]
pub struct TestVariable<'a> {
    pub name: &'a str,
    pub shape: Vec<u32>,
    pub dtype: u8,
    pub data: Option<Vec<u8>>,
}

/// Writes a minimal `model.bin` of float16 zeros (tests and fixtures).
#[cfg(test)]
pub fn write_model_bin(spec: &str, variables: &[(&str, Vec<u32>)]) -> Vec<u8> {
    let variables: Vec<TestVariable<'_>> = variables
        .iter()
        .map(|(name, shape)| TestVariable {
            name,
            shape: shape.clone(),
            dtype: 4,
            data: None,
        })
        .collect();
    write_model_bin_with(spec, &variables, &[])
}

/// Writes a `model.bin` with any variables and aliases (tests).
#[cfg(test)]
pub fn write_model_bin_with(
    spec: &str,
    variables: &[TestVariable<'_>],
    aliases: &[(&str, &str)],
) -> Vec<u8> {
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
    for v in variables {
        string(&mut out, v.name);
        out.push(v.shape.len() as u8);
        for d in &v.shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.push(v.dtype);
        let data = v.data.clone().unwrap_or_else(|| {
            let n: u64 = v.shape.iter().map(|&d| d as u64).product();
            vec![0u8; (n * item_size(v.dtype).unwrap_or(1)) as usize]
        });
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
    }
    out.extend_from_slice(&(aliases.len() as u32).to_le_bytes());
    for (alias, target) in aliases {
        string(&mut out, alias);
        string(&mut out, target);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn read(bytes: &[u8]) -> Result<Ct2Header, String> {
        read_header(Cursor::new(bytes), bytes.len() as u64)
    }

    #[test]
    fn reads_what_it_writes_and_rejects_truncation() {
        let bytes = write_model_bin(
            "WhisperSpec",
            &[
                ("encoder/conv1/weight", vec![4, 80, 3]),
                ("decoder/embeddings/weight", vec![51864, 2]),
            ],
        );
        let header = read(&bytes).unwrap();
        assert_eq!(header.spec, "WhisperSpec");
        assert_eq!(header.variables["encoder/conv1/weight"], [4, 80, 3]);

        let cut = &bytes[..bytes.len() - 100];
        let err = read(cut).unwrap_err();
        assert!(err.starts_with("truncated"), "{err}");
        let err = read(&bytes[..20]).unwrap_err();
        assert!(err.starts_with("truncated"), "{err}");
        let err = read(b"garbage!garbage!").unwrap_err();
        assert!(err.contains("not a CTranslate2 model"), "{err}");
    }

    #[test]
    fn a_shape_whose_size_overflows_is_refused() {
        // 65536^4 float32 elements wrap to 0 bytes in 64-bit arithmetic.
        let bytes = write_model_bin_with(
            "WhisperSpec",
            &[TestVariable {
                name: "encoder/conv1/weight",
                shape: vec![65536; 4],
                dtype: 0,
                data: Some(Vec::new()),
            }],
            &[],
        );
        let err = read(&bytes).unwrap_err();
        assert!(err.contains("do not match shape"), "{err}");
    }

    #[test]
    fn zero_dimensions_and_unknown_dtypes_are_refused() {
        let zero = write_model_bin_with(
            "WhisperSpec",
            &[TestVariable {
                name: "w",
                shape: vec![0, 80],
                dtype: 4,
                data: Some(Vec::new()),
            }],
            &[],
        );
        assert!(read(&zero).unwrap_err().contains("zero dimension"));
        let dtype = write_model_bin_with(
            "WhisperSpec",
            &[TestVariable {
                name: "w",
                shape: vec![2],
                dtype: 42,
                data: Some(vec![0; 2]),
            }],
            &[],
        );
        assert!(read(&dtype).unwrap_err().contains("unknown dtype 42"));
    }

    #[test]
    fn a_byte_count_past_the_end_is_truncation_not_a_panic() {
        let mut bytes = write_model_bin("WhisperSpec", &[("w", vec![2, 2])]);
        // Claim u32::MAX bytes for an 8-byte tensor: the shape check refuses it first.
        let at = bytes.len() - 4 - 8 - 4;
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(read(&bytes).unwrap_err().contains("do not match shape"));
    }

    #[test]
    fn scalars_are_read_and_aliases_checked() {
        let bytes = write_model_bin_with(
            "WhisperSpec",
            &[
                TestVariable {
                    name: "decoder/num_heads",
                    shape: vec![],
                    dtype: 2,
                    data: Some(6i16.to_le_bytes().to_vec()),
                },
                TestVariable {
                    name: "decoder/embeddings/weight",
                    shape: vec![4, 2],
                    dtype: 4,
                    data: None,
                },
            ],
            &[("decoder/projection/weight", "decoder/embeddings/weight")],
        );
        let header = read(&bytes).unwrap();
        assert_eq!(header.scalars["decoder/num_heads"], 6);
        assert_eq!(header.variables["decoder/projection/weight"], [4, 2]);

        let dangling = write_model_bin_with(
            "WhisperSpec",
            &[TestVariable {
                name: "a",
                shape: vec![1],
                dtype: 0,
                data: None,
            }],
            &[("b", "missing")],
        );
        assert!(read(&dangling).unwrap_err().contains("names no variable"));
    }

    #[test]
    fn random_bytes_never_panic() {
        let good = write_model_bin("WhisperSpec", &[("a", vec![3, 2]), ("b", vec![1])]);
        // Corrupt each byte in turn: every outcome is a value or an error.
        for i in 0..good.len() {
            for v in [0u8, 0xff, 0x7f] {
                let mut bytes = good.clone();
                bytes[i] = v;
                let _ = read(&bytes);
            }
        }
    }
}
