//! The small file-system steps every part of the store shares: syncing a directory, replacing
//! a file atomically, sweeping leftover temp files, and the directory lock.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::Error;

/// The suffix of a file being written before it is renamed into place.
pub(super) const TMP_SUFFIX: &str = ".tmp";

/// Makes the directory's entries (files created, renamed or removed in it) durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::storage("fsync dir", dir, e))
}

/// Replaces `dir/name` with `bytes` so that a crash leaves either the old file or the new one:
/// write `name.tmp`, fsync it, rename it over `name`, fsync the directory.
pub(super) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), Error> {
    let path = dir.join(name);
    let tmp = tmp_path(&path);
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::storage("write", &tmp, e));
    }
    fs::rename(&tmp, &path).map_err(|e| Error::storage("rename", &path, e))?;
    sync_dir(dir)
}

/// `path` with [`TMP_SUFFIX`] appended.
fn tmp_path(path: &Path) -> PathBuf {
    let mut os = path.as_os_str().to_owned();
    os.push(TMP_SUFFIX);
    PathBuf::from(os)
}

/// Deletes the `*.tmp` files in `dir`: writes a crash cut short, never renamed into place.
pub(super) fn remove_tmp_files(dir: &Path) -> Result<(), Error> {
    let entries = fs::read_dir(dir).map_err(|e| Error::storage("list", dir, e))?;
    let mut removed = false;
    for entry in entries {
        let entry = entry.map_err(|e| Error::storage("list", dir, e))?;
        if entry.file_name().to_string_lossy().ends_with(TMP_SUFFIX) {
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| Error::storage("remove", &path, e))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Reads a whole file; `None` if it does not exist.
pub(super) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::storage("read", path, e)),
    }
}

/// Opens (creating) `dir/LOCK` and takes an exclusive lock on it, so that one process at a
/// time owns the directory. The lock lasts as long as the returned file is open.
pub(super) fn lock_dir(dir: &Path) -> Result<File, Error> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::storage("lock", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(Error::storage(
            "lock",
            &path,
            "another process (or another store in this one) holds the directory",
        )),
        Err(fs::TryLockError::Error(e)) => Err(Error::storage("lock", &path, e)),
    }
}
