//! Opening recordings: regular files only, and never more bytes than the limit.
//!
//! A path can name a fifo (opening it blocks until a writer comes), a device such as
//! `/dev/zero` (reading it never ends), a socket or a directory. None of them is a recording, so
//! each is refused with the kind of file it is before any read. The size in a file's metadata is
//! a hint: it is 0 for `/dev/zero` and changes while a file is written, so a limit is enforced on
//! the bytes actually read.

use std::fs::{File, FileType};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use symphonia::core::io::MediaSource;

use super::io_error;
use crate::error::IngestError;

/// Reads a whole recording into memory, for callers that need the bytes themselves (to hash
/// them into a revision, then decode them with [`Decoder::from_bytes`](super::Decoder)).
///
/// Refuses what is not a regular file ([`IngestError::NotRegularFile`]), an empty file
/// ([`IngestError::Empty`]) and more than `max_bytes` bytes ([`IngestError::TooLarge`]). At most
/// `max_bytes + 1` bytes are ever read, whatever the file's metadata says, so memory is bounded
/// by the limit even for a file that grows while it is read. Blocking: call it from a blocking
/// thread, not an async task.
pub fn read_recording(path: &Path, max_bytes: u64) -> Result<Vec<u8>, IngestError> {
    let (file, len) = open_regular(path)?;
    // Metadata may refuse early, saving a read of bytes that would be thrown away; it never
    // decides that a file fits.
    if len > max_bytes {
        return Err(IngestError::TooLarge {
            path: path.to_owned(),
            bytes: len,
            limit: max_bytes,
        });
    }
    let bytes = read_limited(path, file, max_bytes, len)?;
    if bytes.is_empty() {
        return Err(IngestError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// Reads `reader` to its end, refusing it once more than `max_bytes` have arrived. `size_hint`
/// only sizes the first allocation.
fn read_limited(
    path: &Path,
    reader: impl Read,
    max_bytes: u64,
    size_hint: u64,
) -> Result<Vec<u8>, IngestError> {
    let mut bytes = Vec::new();
    let hint = usize::try_from(size_hint.min(max_bytes)).unwrap_or(0);
    // A failed allocation is the machine's problem, not the file's: an I/O error of kind
    // OutOfMemory, which the retry logic classes as such, instead of an abort.
    bytes.try_reserve_exact(hint).map_err(|_| {
        let source = std::io::Error::new(
            std::io::ErrorKind::OutOfMemory,
            format!("cannot allocate {hint} bytes to read it"),
        );
        io_error(path, source)
    })?;
    let read = reader
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(path, e))? as u64;
    if read > max_bytes {
        return Err(IngestError::TooLarge {
            path: path.to_owned(),
            bytes: read,
            limit: max_bytes,
        });
    }
    Ok(bytes)
}

/// Opens `path` if it is a regular file, returning it with its size at opening.
///
/// The path is checked before opening, so a fifo is never opened (which would block) and a
/// device never touched; the opened file is checked again, in case the path was replaced in
/// between. On Unix the open itself does not block either (`O_NONBLOCK`, cleared once the file
/// is known to be regular) and never adopts a terminal (`O_NOCTTY`).
pub(super) fn open_regular(path: &Path) -> Result<(File, u64), IngestError> {
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, e))?;
    refuse_special(path, &meta.file_type())?;
    let file = open_nonblocking(path).map_err(|e| io_error(path, e))?;
    let meta = file.metadata().map_err(|e| io_error(path, e))?;
    refuse_special(path, &meta.file_type())?;
    restore_blocking(&file).map_err(|e| io_error(path, e))?;
    Ok((file, meta.len()))
}

fn refuse_special(path: &Path, file_type: &FileType) -> Result<(), IngestError> {
    if file_type.is_file() {
        return Ok(());
    }
    Err(IngestError::NotRegularFile {
        path: path.to_owned(),
        what: describe(file_type),
    })
}

fn describe(file_type: &FileType) -> &'static str {
    if file_type.is_dir() {
        return "directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "fifo";
        }
        if file_type.is_char_device() {
            return "character device";
        }
        if file_type.is_block_device() {
            return "block device";
        }
        if file_type.is_socket() {
            return "socket";
        }
    }
    "special file"
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    File::open(path)
}

/// Clears `O_NONBLOCK`: it means nothing for a regular file on a local disk, but a network or
/// FUSE file system may honour it and fail reads with `EAGAIN`.
#[cfg(unix)]
fn restore_blocking(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is an open descriptor owned by `file` for the duration of both calls, and
    // F_GETFL/F_SETFL only read and set its status flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(unix))]
fn restore_blocking(_file: &File) -> std::io::Result<()> {
    Ok(())
}

/// A file as it was when opened: reads end at the length it had then, so bytes appended while
/// it decodes are not read, and the size checked against the limit is the size decoded.
pub(super) struct Snapshot {
    file: File,
    len: u64,
    pos: u64,
}

impl Snapshot {
    pub(super) fn new(file: File, len: u64) -> Self {
        Snapshot { file, len, pos: 0 }
    }
}

impl Read for Snapshot {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let got = self.file.read(&mut buf[..want])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Seek for Snapshot {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        // The end is the snapshot's, not wherever the file has grown to since.
        let to = match to {
            SeekFrom::End(delta) => {
                let target = i128::from(self.len) + i128::from(delta);
                let target = u64::try_from(target).map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "seek before the start of the file",
                    )
                })?;
                SeekFrom::Start(target)
            }
            other => other,
        };
        self.pos = self.file.seek(to)?;
        Ok(self.pos)
    }
}

impl MediaSource for Snapshot {
    fn is_seekable(&self) -> bool {
        true
    }

    fn byte_len(&self) -> Option<u64> {
        Some(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_stream_stops_one_byte_past_the_limit() {
        // What /dev/zero looks like once opened: no size, no end.
        let err = read_limited(Path::new("zero"), std::io::repeat(0), 1000, 0).unwrap_err();
        match err {
            IngestError::TooLarge { bytes, limit, .. } => assert_eq!((bytes, limit), (1001, 1000)),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn the_size_hint_is_not_trusted() {
        let data = vec![7u8; 100];
        // A hint far below and far above the real size reads the same bytes.
        for hint in [0, 10, u64::MAX] {
            let bytes = read_limited(Path::new("f"), &data[..], 100, hint).unwrap();
            assert_eq!(bytes, data, "hint {hint}");
        }
        let err = read_limited(Path::new("f"), &data[..], 99, 10).unwrap_err();
        assert!(
            matches!(err, IngestError::TooLarge { bytes: 100, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_snapshot_ends_where_the_file_ended_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("growing.wav");
        std::fs::write(&path, [1u8; 10]).unwrap();
        let (file, len) = open_regular(&path).unwrap();
        let mut snapshot = Snapshot::new(file, len);
        // The file grows after it was opened.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &[2u8; 10]))
            .unwrap();
        let mut bytes = Vec::new();
        snapshot.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes, [1u8; 10]);
        assert_eq!(snapshot.seek(SeekFrom::End(-4)).unwrap(), 6);
        assert_eq!(snapshot.byte_len(), Some(10));
        assert!(snapshot.seek(SeekFrom::End(-11)).is_err());
    }
}
