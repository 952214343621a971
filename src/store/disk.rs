//! The file operations the log's writer makes on segment files, behind a small trait.
//!
//! [`OsDisk`] is the real file system. The trait exists so that tests can put the writer on a
//! disk that fails a chosen write or sync, runs out of space, and on a simulated crash keeps
//! only what was synced (`fault_disk.rs`): `kill -9` cannot test that, since the page cache
//! survives a killed process.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::Path;

/// Something to read a segment from.
pub(crate) trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// A segment file open for appending.
pub(crate) trait SegmentFile: Send {
    /// Appends some of `buf` at the end of the file (as `write(2)` on a file opened with
    /// `O_APPEND`): returns how much, which may be less than all of it.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// `fdatasync`: what was written is on the disk once it returns `Ok`.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts (or extends) the file to `len` bytes. Not durable until the next sync.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

/// The directory-level operations on segment files.
pub(crate) trait Disk: fmt::Debug + Send + Sync {
    /// The names of the files in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates `path`, which must not exist, open for appending. Its entry is not durable
    /// until the directory is synced.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
    /// Opens an existing file for appending.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
    /// Opens an existing file for reading from its start.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadSeek>>;
    /// The file's length in bytes.
    fn len(&self, path: &Path) -> io::Result<u64>;
    /// Removes `path`. Not durable until the directory is synced.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of `dir` (files created or removed in it) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// Appends all of `buf` to `file`, retrying short writes (a short write followed by an error
/// leaves the bytes written so far in the file).
pub(crate) fn write_all(file: &mut dyn SegmentFile, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match file.write(buf) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OsDisk;

impl SegmentFile for File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Write::write(self, buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}

impl Disk for OsDisk {
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(file))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        Ok(Box::new(OpenOptions::new().append(true).open(path)?))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadSeek>> {
        Ok(Box::new(File::open(path)?))
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}
