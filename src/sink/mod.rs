//! Where formatted lines go. A sink is owned by the listener thread and called only
//! from it, so it may block, allocate and take locks; it must not assume anything about
//! the producers.

mod file;
pub(crate) mod rotation;
mod stderr;
mod stdout;

pub use file::FileSink;
pub use rotation::{Naming, Rotation};
pub(crate) use stderr::write_stderr_if_ready;
pub use stderr::StderrSink;
pub use stdout::StdoutSink;

use std::io;
use std::os::fd::RawFd;

/// A destination for formatted records.
///
/// The listener hands each sink whole lines only, many at a time (`batch` is one or
/// more records, each ending in `\n`), then calls [`Sink::sync`] as the
/// [`crate::SyncPolicy`] says and whenever a `flush()` barrier needs it.
///
/// ```
/// use std::io;
/// use quelog::Sink;
///
/// /// Keeps everything in memory (a test double).
/// struct Memory(Vec<u8>);
///
/// impl Sink for Memory {
///     fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
///         self.0.extend_from_slice(batch);
///         Ok(())
///     }
///     fn sync(&mut self) -> io::Result<()> {
///         Ok(())
///     }
/// }
/// ```
pub trait Sink: Send {
    /// Writes `batch` (whole lines) completely, or fails. On failure the sink should
    /// leave no partial line behind if it can (the listener counts the batch as lost).
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()>;

    /// Makes everything written so far durable (for files: `fdatasync`).
    fn sync(&mut self) -> io::Result<()>;

    /// Reopens the destination (after rotation by another program, say). The listener
    /// calls it on a reopen request ([`crate::Guard::reopen`], SIGHUP with
    /// [`crate::Builder::reopen_on_sighup`]) once everything before the request is
    /// written and synced, and when [`Sink::detached`] says so. On failure the sink
    /// should keep writing where it wrote before. The default does nothing.
    fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Whether the file this sink writes was deleted, or renamed away, by another
    /// program since the sink opened it. The listener asks before writing a batch, at
    /// most every 10 ms and whenever a `flush()` barrier is due, and on `Some` syncs
    /// what it wrote there, calls [`Sink::reopen`] and writes a notice line first
    /// into the new file. Must be cheap (a `stat` or two) and never block for long.
    /// The default: `None`, never detached.
    fn detached(&self) -> Option<Detached> {
        None
    }

    /// Called after [`Sink::sync`] failed. Whatever was written since the last
    /// successful sync may be gone although it still reads back (Linux drops the dirty
    /// pages after reporting the error, and a retried sync "succeeds": fsyncgate), so
    /// the listener rewrites all of it next and syncs again. Get ready for that: the
    /// default calls [`Sink::reopen`]; [`FileSink`] also cuts the file back to its
    /// length at the last good sync, so the rewrite leaves no duplicate lines.
    fn prepare_rewrite(&mut self) -> io::Result<()> {
        self.reopen()
    }

    /// The file descriptor a fatal-signal drain (`Builder::drain_on_crash`) may
    /// append lines to with `write(2)`: [`FileSink`]'s file. The default is `None`.
    /// The descriptor must stay valid until the sink is dropped or reopened.
    fn raw_fd(&self) -> Option<RawFd> {
        None
    }

    /// Lines the sink has to say about itself (a rotation that failed, say): the
    /// listener moves them into `notices` before each write and writes them to this
    /// sink as `quelog` warnings in its layout. The default has none.
    fn take_notices(&mut self, notices: &mut Vec<String>) {
        let _ = notices;
    }
}

/// How a sink's file went away under it ([`Sink::detached`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Detached {
    /// Deleted (its link count is 0): what is written to it is gone once closed.
    Deleted,
    /// Renamed away (logrotate's `create` without a reopen): its path names another
    /// file, or nothing. What was written to it is in the renamed file.
    Renamed,
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        (**self).write_batch(batch)
    }
    fn sync(&mut self) -> io::Result<()> {
        (**self).sync()
    }
    fn reopen(&mut self) -> io::Result<()> {
        (**self).reopen()
    }
    fn detached(&self) -> Option<Detached> {
        (**self).detached()
    }
    fn prepare_rewrite(&mut self) -> io::Result<()> {
        (**self).prepare_rewrite()
    }
    fn raw_fd(&self) -> Option<RawFd> {
        (**self).raw_fd()
    }
    fn take_notices(&mut self, notices: &mut Vec<String>) {
        (**self).take_notices(notices)
    }
}
