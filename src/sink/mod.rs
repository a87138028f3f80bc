//! Where formatted lines go. A sink is owned by the listener thread and called only
//! from it, so it may block, allocate and take locks; it must not assume anything about
//! the producers.

mod file;
mod stderr;

pub use file::FileSink;
pub use stderr::StderrSink;

use std::io;

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

    /// Reopens the destination (after rotation by another program, say). The default
    /// does nothing.
    fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }
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
}
