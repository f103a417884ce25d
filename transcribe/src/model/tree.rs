//! Walking and copying a model directory without following links.
//!
//! An imported directory is listed first, by [`scan`], using each entry's own type (never the
//! type of what a link points to): a symbolic link, device, pipe or socket anywhere inside is
//! refused, naming it, so a link to `.` cannot make the copy loop and a link to `/etc/passwd`
//! cannot copy it into the store. [`copy`] then opens each listed file with `O_NOFOLLOW` and
//! checks that it is still a plain file, so a file swapped for a link between the two steps is
//! refused too.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use super::{io, FileSum, ModelError};

/// How deep a model directory may nest folders; the layouts use one level (`1_Pooling/`).
pub const MAX_DEPTH: usize = 4;
/// How many entries (files and folders) a model directory may hold; real ones hold a dozen.
pub const MAX_ENTRIES: usize = 1_000;

/// What [`scan`] found: folders and files, each by its `/`-separated path below the root.
#[derive(Debug)]
pub struct Listing {
    root: PathBuf,
    folders: Vec<String>,
    files: Vec<String>,
}

/// Lists the tree under `root` without following links. `root` itself may be a link to a
/// folder (it is what the caller named); nothing below it may be.
pub fn scan(root: &Path) -> Result<Listing, ModelError> {
    let meta = fs::metadata(root).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ModelError::Missing {
            path: root.to_owned(),
            what: "model directory",
        },
        _ => io(root)(e),
    })?;
    if !meta.is_dir() {
        return Err(ModelError::Missing {
            path: root.to_owned(),
            what: "model directory",
        });
    }
    let mut listing = Listing {
        root: root.to_owned(),
        folders: Vec::new(),
        files: Vec::new(),
    };
    walk(root, "", 0, &mut listing)?;
    Ok(listing)
}

fn walk(dir: &Path, prefix: &str, depth: usize, out: &mut Listing) -> Result<(), ModelError> {
    let refuse = |path: &Path, reason: &str| ModelError::NotImportable {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        if out.folders.len() + out.files.len() + entries.len() >= MAX_ENTRIES {
            return Err(refuse(
                &out.root,
                &format!("more than {MAX_ENTRIES} files and folders"),
            ));
        }
        entries.push(entry);
    }
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| refuse(&path, "its name is not UTF-8"))?;
        if name.contains('\\') {
            return Err(refuse(&path, "its name holds a backslash"));
        }
        // The entry's own type: a link is a link, whatever it points to.
        let kind = entry.file_type().map_err(io(&path))?;
        let relative = format!("{prefix}{name}");
        if kind.is_symlink() {
            return Err(refuse(
                &path,
                "it is a symbolic link; a model directory may hold only plain files and folders",
            ));
        } else if kind.is_dir() {
            if depth + 1 > MAX_DEPTH {
                return Err(refuse(
                    &path,
                    &format!("folders nest deeper than {MAX_DEPTH} levels"),
                ));
            }
            out.folders.push(relative.clone());
            walk(&path, &format!("{relative}/"), depth + 1, out)?;
        } else if kind.is_file() {
            out.files.push(relative);
        } else {
            return Err(refuse(
                &path,
                "it is not a plain file or folder (a device, pipe or socket)",
            ));
        }
    }
    Ok(())
}

/// Copies the listed tree into `to`, hashing each file, and returns the files in path order.
/// A top-level file named `skip` (the store's manifest) is left out.
pub fn copy(listing: &Listing, to: &Path, skip: &str) -> Result<Vec<FileSum>, ModelError> {
    for folder in &listing.folders {
        let dir = to.join(folder);
        fs::create_dir_all(&dir).map_err(io(&dir))?;
    }
    let mut files = Vec::with_capacity(listing.files.len());
    for name in &listing.files {
        if name == skip {
            continue;
        }
        let from = listing.root.join(name);
        let (bytes, blake3) = copy_hashing(&from, &to.join(name))?;
        files.push(FileSum {
            name: name.clone(),
            bytes,
            blake3,
        });
    }
    Ok(files)
}

/// The path of `name` (`/`-separated, from a manifest) below `dir`, or `None` when it is not
/// a plain relative path that stays inside `dir`.
pub fn relative_path(dir: &Path, name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.contains(['\\', '\0']) {
        return None;
    }
    let mut path = dir.to_owned();
    for part in name.split('/') {
        let mut components = Path::new(part).components();
        match (components.next(), components.next()) {
            (Some(Component::Normal(c)), None) if c == std::ffi::OsStr::new(part) => path.push(c),
            _ => return None,
        }
    }
    Some(path)
}

/// Opens `path` for reading without following a link at its last component.
fn open_no_follow(path: &Path) -> std::io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    options.open(path)
}

fn copy_hashing(from: &Path, to: &Path) -> Result<(u64, String), ModelError> {
    let mut input = open_no_follow(from).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            ModelError::NotImportable {
                path: from.to_owned(),
                reason: "it became a symbolic link during the import".into(),
            }
        } else {
            io(from)(e)
        }
    })?;
    if !input.metadata().map_err(io(from))?.is_file() {
        return Err(ModelError::NotImportable {
            path: from.to_owned(),
            reason: "it is no longer a plain file".into(),
        });
    }
    let mut output = File::create(to).map_err(io(to))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(io(from))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n]).map_err(io(to))?;
        total += n as u64;
    }
    output.sync_all().map_err(io(to))?;
    Ok((total, hasher.finalize().to_hex().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_stay_inside() {
        let dir = Path::new("/store/m");
        assert_eq!(
            relative_path(dir, "1_Pooling/config.json"),
            Some(PathBuf::from("/store/m/1_Pooling/config.json"))
        );
        for bad in [
            "",
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "./a",
            "a/.",
            "a\\b",
        ] {
            assert_eq!(relative_path(dir, bad), None, "{bad}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn links_and_pipes_are_refused_naming_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("model.bin"), b"x").unwrap();
        std::os::unix::fs::symlink(".", dir.join("sub/loop")).unwrap();
        let err = scan(&dir).unwrap_err().to_string();
        assert!(
            err.contains("sub/loop") && err.contains("symbolic link"),
            "{err}"
        );

        fs::remove_file(dir.join("sub/loop")).unwrap();
        let fifo = std::ffi::CString::new(dir.join("pipe").to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path; mkfifo only creates the node.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let err = scan(&dir).unwrap_err().to_string();
        assert!(
            err.contains("pipe") && err.contains("not a plain file"),
            "{err}"
        );
    }

    #[test]
    fn deep_or_huge_trees_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("deep");
        fs::create_dir_all(deep.join("a/b/c/d/e")).unwrap();
        let err = scan(&deep).unwrap_err().to_string();
        assert!(err.contains("deeper than 4"), "{err}");

        let wide = tmp.path().join("wide");
        fs::create_dir_all(&wide).unwrap();
        for i in 0..=MAX_ENTRIES {
            fs::write(wide.join(i.to_string()), b"").unwrap();
        }
        let err = scan(&wide).unwrap_err().to_string();
        assert!(err.contains("more than 1000"), "{err}");
    }
}
