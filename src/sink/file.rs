//! An append-only file, written a batch at a time and synced with `fdatasync`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::Sink;
use crate::error::Error;

/// Appends lines to a file, creating it and its parent directories.
///
/// A batch goes out in one `write(2)` in the common case. If a write fails part way
/// (disk full), the sink cuts the file back to where the batch started, so no torn
/// line is left between whole ones. A file that does not end in a newline when it is
/// opened (its last line was torn by a crash) gets one, so the next record starts on
/// a line of its own.
///
/// After a failed sync ([`Sink::prepare_rewrite`]) it reopens the path and, if it is
/// still the same file, cuts it back to its length at the last good sync; the
/// listener then rewrites what followed. This assumes the sink is the file's only
/// writer (quelog's crash drain aside, which is coordinated with the listener).
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
    /// File length at the last successful sync (at open: the length then).
    synced_len: u64,
    /// Device and inode of the open file.
    identity: (u64, u64),
    /// A regular file. Anything else (`/dev/null`, a pipe, a terminal) has nothing to
    /// make durable, and `fdatasync` on it fails with EINVAL: sync is then a no-op.
    regular: bool,
}

impl FileSink {
    /// Opens (creating if needed) `path` for appending. A directory, a path under a
    /// file, or a path without permission is an [`Error::Open`].
    pub fn open(path: impl AsRef<Path>) -> Result<FileSink, Error> {
        let path = path.as_ref().to_path_buf();
        let opened = open_append(&path).and_then(|file| {
            let meta = file.metadata()?;
            let mut len = meta.len();
            if meta.is_file() && len > 0 {
                let mut last = [0u8; 1];
                // Unreadable (opened write-only): leave it as it is.
                let readable = file.read_exact_at(&mut last, len - 1).is_ok();
                if readable && last != *b"\n" {
                    (&file).write_all(b"\n")?;
                    len += 1;
                }
            }
            Ok((file, len, (meta.dev(), meta.ino()), meta.is_file()))
        });
        let (file, len, identity, regular) = opened.map_err(|source| Error::Open {
            path: path.clone(),
            source,
        })?;
        Ok(FileSink {
            path,
            file,
            len,
            synced_len: len,
            identity,
            regular,
        })
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
    // Read too, to look at the last byte of an existing file; a file we may only
    // write to is opened for appending alone (and not looked at).
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    let file = match options.clone().read(true).open(path) {
        Ok(file) => file,
        Err(_) => options.open(path)?,
    };
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
        if self.regular {
            self.file.sync_data()?;
        }
        self.synced_len = self.len;
        Ok(())
    }

    fn reopen(&mut self) -> io::Result<()> {
        let file = open_append(&self.path)?;
        let meta = file.metadata()?;
        self.file = file;
        self.len = meta.len();
        self.synced_len = self.synced_len.min(self.len);
        self.identity = (meta.dev(), meta.ino());
        self.regular = meta.is_file();
        Ok(())
    }

    fn prepare_rewrite(&mut self) -> io::Result<()> {
        let before = self.identity;
        // A fresh descriptor: the failed one may report the same error again, or
        // (since Linux 4.13) swallow the next one.
        self.reopen()?;
        if self.identity == before && self.len > self.synced_len {
            self.file.set_len(self.synced_len)?;
            self.len = self.synced_len;
        }
        Ok(())
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.file.as_raw_fd())
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
    fn a_torn_last_line_is_ended_at_open() {
        let dir = temp_dir("torn");
        let path = dir.join("app.log");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, b"whole\ntorn li").unwrap();
        let mut sink = FileSink::open(&path).unwrap();
        sink.write_batch(b"next\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"whole\ntorn li\nnext\n");
        drop(sink);
        // A file ending in a newline, or empty, is left alone.
        let mut sink = FileSink::open(&path).unwrap();
        sink.write_batch(b"again\n").unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"whole\ntorn li\nnext\nagain\n"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn prepare_rewrite_cuts_back_to_the_last_good_sync() {
        let dir = temp_dir("rewrite");
        let path = dir.join("app.log");
        let mut sink = FileSink::open(&path).unwrap();
        sink.write_batch(b"durable\n").unwrap();
        sink.sync().unwrap();
        sink.write_batch(b"maybe lost 1\nmaybe lost 2\n").unwrap();
        let old_fd = sink.raw_fd().unwrap();
        // As the listener does after a failed sync: cut back, rewrite, sync.
        sink.prepare_rewrite().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"durable\n");
        sink.write_batch(b"maybe lost 1\nmaybe lost 2\n").unwrap();
        sink.sync().unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"durable\nmaybe lost 1\nmaybe lost 2\n"
        );
        // The new descriptor is live; the old number may have been reused, so only
        // check the sink answers one.
        assert!(sink.raw_fd().is_some() && old_fd >= 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn prepare_rewrite_after_rotation_leaves_the_new_file_alone() {
        let dir = temp_dir("rotated");
        let path = dir.join("app.log");
        let mut sink = FileSink::open(&path).unwrap();
        sink.write_batch(b"old 1\nold 2\n").unwrap();
        sink.sync().unwrap();
        sink.write_batch(b"unsynced\n").unwrap();
        std::fs::rename(&path, dir.join("app.log.1")).unwrap();
        std::fs::write(&path, b"someone else\n").unwrap();
        sink.prepare_rewrite().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"someone else\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn special_files_have_nothing_to_sync() {
        // fdatasync on /dev/null fails with EINVAL; that is not a durability failure.
        let mut sink = FileSink::open("/dev/null").unwrap();
        sink.write_batch(b"line\n").unwrap();
        sink.sync().unwrap();
    }

    #[test]
    fn disk_full_is_an_error_value() {
        let mut sink = FileSink::open("/dev/full").unwrap();
        let error = sink.write_batch(b"line\n").unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ENOSPC));
    }
}
