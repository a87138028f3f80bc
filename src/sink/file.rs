//! An append-only file, written a batch at a time and synced with `fdatasync`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::Sink;
use crate::error::Error;

/// Appends lines to a file, creating it and its parent directories.
///
/// A batch goes out in one `write(2)` in the common case. If a write fails part way
/// (disk full), the sink cuts the file back to where the batch started, so no torn
/// line is left between whole ones.
///
/// ```no_run
/// use quelog::FileSink;
/// let sink = FileSink::open("logs/app.log")?;
/// # Ok::<(), quelog::Error>(())
/// ```
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    file: File,
    /// File length after the last complete batch.
    len: u64,
}

impl FileSink {
    /// Opens (creating if needed) `path` for appending. A directory, a path under a
    /// file, or a path without permission is an [`Error::Open`].
    pub fn open(path: impl AsRef<Path>) -> Result<FileSink, Error> {
        let path = path.as_ref().to_path_buf();
        let file = open_append(&path).map_err(|source| Error::Open {
            path: path.clone(),
            source,
        })?;
        let len = file
            .metadata()
            .map_err(|source| Error::Open {
                path: path.clone(),
                source,
            })?
            .len();
        Ok(FileSink { path, file, len })
    }

    /// The path this sink writes to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    if file.metadata()?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            "is a directory",
        ));
    }
    Ok(file)
}

impl Sink for FileSink {
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        match self.file.write_all(batch) {
            Ok(()) => {
                self.len += batch.len() as u64;
                Ok(())
            }
            Err(error) => {
                // Best effort: a character device (/dev/full) cannot be cut, and that
                // is fine, nothing was appended to it either.
                let _ = self.file.set_len(self.len);
                Err(error)
            }
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.file = open_append(&self.path)?;
        self.len = self.file.metadata()?.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("quelog-file-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn creates_parents_and_appends() {
        let dir = temp_dir("append");
        let path = dir.join("a/b/app.log");
        let mut sink = FileSink::open(&path).unwrap();
        sink.write_batch(b"one\n").unwrap();
        sink.sync().unwrap();
        drop(sink);
        let mut sink = FileSink::open(&path).unwrap();
        sink.write_batch(b"two\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one\ntwo\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_directory_is_a_clear_error() {
        let dir = temp_dir("dir");
        std::fs::create_dir_all(&dir).unwrap();
        match FileSink::open(&dir) {
            Err(Error::Open { path, .. }) => assert_eq!(path, dir),
            other => panic!("expected Error::Open, got {other:?}"),
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_path_under_a_file_is_a_clear_error() {
        let dir = temp_dir("under");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("plain"), b"").unwrap();
        assert!(matches!(
            FileSink::open(dir.join("plain/app.log")),
            Err(Error::Open { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn disk_full_is_an_error_value() {
        let mut sink = FileSink::open("/dev/full").unwrap();
        let error = sink.write_batch(b"line\n").unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ENOSPC));
    }
}
