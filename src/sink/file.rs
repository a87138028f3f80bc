//! An append-only file, written a batch at a time and synced with `fdatasync`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{Detached, Sink};
use crate::error::Error;

/// Appends lines to a file, creating it and its parent directories.
///
/// A batch goes out in one `write(2)` in the common case. If a write fails part way
/// (disk full), the sink cuts off the bytes that batch appended, so no torn line is
/// left between whole ones. A file that does not end in a newline when it is opened
/// (its last line was torn by a crash) gets one, so the next record starts on a line
/// of its own.
///
/// Other programs share the file: logrotate renames it, or copies and truncates it in
/// place (`copytruncate`). So the sink appends with `O_APPEND` and never trusts a
/// length it remembers: every cut reads the file's length first. Creating the file, or
/// directories on its path, fsyncs the directory that holds each new entry, so a file
/// whose records were synced does not vanish with a power loss.
///
/// After a failed sync ([`Sink::prepare_rewrite`]) it reopens the path and, if it is
/// still the same file, cuts it back to its length at the last good sync; the
/// listener then rewrites what followed. This assumes nobody else appended to the file
/// since that sync (quelog's crash drain aside, which is coordinated with the
/// listener).
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
    /// The file's length, read from it, just before the last successful sync (at open
    /// or on reopening another file: its length then).
    synced_len: u64,
    /// Bytes this sink appended since the last successful sync: with the file's length
    /// now, where its last synced byte is, even after another program truncated it.
    unsynced: u64,
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
            let mut meta = file.metadata()?;
            if meta.is_file() && meta.len() > 0 {
                let mut last = [0u8; 1];
                // Unreadable (opened write-only): leave it as it is.
                let readable = file.read_exact_at(&mut last, meta.len() - 1).is_ok();
                if readable && last != *b"\n" {
                    (&file).write_all(b"\n")?;
                    meta = file.metadata()?;
                }
            }
            Ok((file, meta))
        });
        let (file, meta) = opened.map_err(|source| Error::Open {
            path: path.clone(),
            source,
        })?;
        Ok(FileSink {
            path,
            file,
            synced_len: meta.len(),
            unsynced: 0,
            identity: (meta.dev(), meta.ino()),
            regular: meta.is_file(),
        })
    }

    /// The path this sink writes to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// After a write failed with `written` bytes of the batch appended: cuts them off,
    /// so no torn line stays. Best effort: the write's error is what gets reported.
    fn cut_back(&mut self, written: usize) {
        // Nothing appended, nothing to cut; and only a regular file can be cut (nothing
        // appended to /dev/full, say, stays anywhere).
        if written == 0 || !self.regular {
            return;
        }
        // The length now, not a remembered one: another program may have truncated the
        // file since (copytruncate), and cutting to a stale length would extend the
        // file with NUL bytes instead.
        if let Ok(meta) = self.file.metadata() {
            if let Some(len) = meta.len().checked_sub(written as u64) {
                if self.file.set_len(len).is_ok() {
                    self.unsynced = self.unsynced.saturating_sub(written as u64);
                }
            }
        }
    }

    /// [`Sink::reopen`], answering the new file's length.
    fn reopen_len(&mut self) -> io::Result<u64> {
        let file = open_append(&self.path)?;
        let meta = file.metadata()?;
        let identity = (meta.dev(), meta.ino());
        self.synced_len = if identity == self.identity {
            // The same file, possibly truncated since the last sync (copytruncate): its
            // synced part ends before what this sink appended since, wherever the
            // truncation left that. Never past the end: a cut must not extend it.
            let before_ours = meta.len().saturating_sub(self.unsynced);
            self.synced_len.min(before_ours)
        } else {
            // Another file (rotated): nothing in it is this sink's to cut.
            meta.len()
        };
        self.file = file;
        self.identity = identity;
        self.regular = meta.is_file();
        self.unsynced = 0;
        Ok(meta.len())
    }
}

/// Opens `path` for appending, creating it and any missing directories on its way;
/// the directory holding each entry created is fsynced after it.
fn open_append(path: &Path) -> io::Result<File> {
    let file = match open_with(path, Create::No) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => create(path)?,
        opened => opened?,
    };
    if file.metadata()?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            "is a directory",
        ));
    }
    Ok(file)
}

/// Whether [`open_with`] creates the file.
#[derive(Debug, Clone, Copy)]
enum Create {
    /// Only an existing file.
    No,
    /// Only a new file (`O_EXCL`): this call made it, so its entry needs a sync.
    New,
    /// Either (`O_CREAT`).
    Any,
}

fn open_with(path: &Path, create: Create) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.append(true);
    match create {
        Create::No => {}
        Create::New => {
            options.create_new(true);
        }
        Create::Any => {
            options.create(true);
        }
    }
    // Read too, to look at the last byte of an existing file; a file we may only
    // write to is opened for appending alone (and not looked at).
    match options.clone().read(true).open(path) {
        Err(error) if error.kind() == io::ErrorKind::PermissionDenied => options.open(path),
        opened => opened,
    }
}

/// Creates `path` (not there a moment ago) and the directories it needs.
fn create(path: &Path) -> io::Result<File> {
    let parent = parent_of(path);
    create_dirs(parent)?;
    match open_with(path, Create::New) {
        Ok(file) => {
            sync_dir(parent)?;
            Ok(file)
        }
        // Someone else created it meanwhile, or it is a symlink to a file yet to be
        // made (O_EXCL does not follow it): open it as it comes. Who made it syncs it.
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => open_with(path, Create::Any),
        Err(error) => Err(error),
    }
}

/// Creates the missing directories of `dir`, top-down, fsyncing the parent of each one
/// after creating it, so every new entry on the way is durable.
fn create_dirs(dir: &Path) -> io::Result<()> {
    // Deepest first: the directories on the way that do not exist.
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.as_os_str().is_empty() {
        match std::fs::metadata(at) {
            // Not a directory: creating or opening under it reports that.
            Ok(_) => break,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                missing.push(at);
                match at.parent() {
                    Some(parent) => at = parent,
                    None => break,
                }
            }
            Err(error) => return Err(error),
        }
    }
    for dir in missing.iter().rev() {
        match std::fs::create_dir(dir) {
            Ok(()) => sync_dir(parent_of(dir))?,
            // Created meanwhile by someone else, who syncs it.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// The directory holding `path`'s entry (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Makes the entries of directory `dir` durable: `fsync` on it.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)?;
    match dir.sync_all() {
        // A filesystem that cannot sync a directory says EINVAL; nothing more to do.
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        synced => synced,
    }
}

impl Sink for FileSink {
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        // Counted, not `write_all`: a failure must know how much of the batch landed.
        let mut written = 0;
        while let Some(rest) = batch.get(written..).filter(|rest| !rest.is_empty()) {
            match self.file.write(rest) {
                Ok(0) => {
                    self.cut_back(written);
                    return Err(io::ErrorKind::WriteZero.into());
                }
                Ok(n) => {
                    written += n;
                    self.unsynced += n as u64;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    self.cut_back(written);
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        if self.regular {
            // Read from the file (another program may have truncated it), and before
            // the sync: everything up to here was written before it began, so it is
            // what a successful sync makes durable.
            let len = self.file.metadata()?.len();
            self.file.sync_data()?;
            self.synced_len = len;
            self.unsynced = 0;
        }
        Ok(())
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.reopen_len().map(drop)
    }

    fn detached(&self) -> Option<Detached> {
        if !self.regular {
            return None;
        }
        if self.file.metadata().ok()?.nlink() == 0 {
            return Some(Detached::Deleted);
        }
        match std::fs::metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) != self.identity => Some(Detached::Renamed),
            Ok(_) => None,
            Err(error) if error.kind() == io::ErrorKind::NotFound => Some(Detached::Renamed),
            // Cannot tell (a permission changed on the way): keep writing where we are.
            Err(_) => None,
        }
    }

    fn prepare_rewrite(&mut self) -> io::Result<()> {
        let before = self.identity;
        // A fresh descriptor: the failed one may report the same error again, or
        // (since Linux 4.13) swallow the next one.
        let len = self.reopen_len()?;
        if self.identity == before && len > self.synced_len {
            self.file.set_len(self.synced_len)?;
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
    fn prepare_rewrite_after_copytruncate_cuts_back_to_the_real_synced_length() {
        let dir = temp_dir("copytruncate");
        let path = dir.join("app.log");
        let mut sink = FileSink::open(&path).unwrap();
        sink.write_batch(b"rotated away 1\nrotated away 2\n")
            .unwrap();
        sink.sync().unwrap();
        // logrotate's copytruncate cuts the file to nothing under the sink.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        sink.write_batch(b"durable\n").unwrap();
        sink.sync().unwrap();
        sink.write_batch(b"maybe lost\n").unwrap();
        // The last good sync left 8 bytes in the file, not the 38 the sink wrote in all.
        sink.prepare_rewrite().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"durable\n");
        sink.write_batch(b"maybe lost\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"durable\nmaybe lost\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn prepare_rewrite_after_a_reopen_keeps_the_new_files_own_lines() {
        let dir = temp_dir("reopened");
        let path = dir.join("app.log");
        let mut sink = FileSink::open(&path).unwrap();
        sink.write_batch(b"old\n").unwrap();
        sink.sync().unwrap();
        // Rotated, and the new file already has another program's lines when the sink
        // reopens: none of them are the sink's to cut.
        std::fs::rename(&path, dir.join("app.log.1")).unwrap();
        std::fs::write(&path, b"another program's line\n").unwrap();
        sink.reopen().unwrap();
        sink.write_batch(b"maybe lost\n").unwrap();
        sink.prepare_rewrite().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"another program's line\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn prepare_rewrite_after_a_truncate_since_the_last_sync_leaves_no_duplicate() {
        let dir = temp_dir("truncated-since");
        let path = dir.join("app.log");
        let mut sink = FileSink::open(&path).unwrap();
        sink.write_batch(b"copied away 1\ncopied away 2\n").unwrap();
        sink.sync().unwrap();
        // copytruncate after that sync: the remembered synced length (28) is stale.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        sink.write_batch(b"maybe lost\n").unwrap();
        // O_APPEND: the write went to the new end (offset 0), no hole of NUL bytes.
        assert_eq!(std::fs::read(&path).unwrap(), b"maybe lost\n");
        sink.prepare_rewrite().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        sink.write_batch(b"maybe lost\n").unwrap();
        sink.sync().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"maybe lost\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_deleted_or_renamed_file_is_detached_and_reopen_recreates_it() {
        let dir = temp_dir("detached");
        let path = dir.join("app.log");
        let mut sink = FileSink::open(&path).unwrap();
        assert_eq!(sink.detached(), None);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(sink.detached(), Some(Detached::Deleted));
        sink.reopen().unwrap();
        assert_eq!(sink.detached(), None);
        sink.write_batch(b"after delete\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"after delete\n");
        // Renamed with nothing in its place, then with a new file there (logrotate's
        // `create`).
        std::fs::rename(&path, dir.join("app.log.1")).unwrap();
        assert_eq!(sink.detached(), Some(Detached::Renamed));
        std::fs::write(&path, b"").unwrap();
        assert_eq!(sink.detached(), Some(Detached::Renamed));
        sink.reopen().unwrap();
        assert_eq!(sink.detached(), None);
        sink.write_batch(b"after rename\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"after rename\n");
        // Truncated in place (copytruncate) is not detached.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        assert_eq!(sink.detached(), None);
        assert_eq!(FileSink::open("/dev/null").unwrap().detached(), None);
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
