//! Standard error, written with `write(2)` on descriptor 2 directly: not through
//! `std::io::stderr()`, whose lock a user thread may be holding.

use std::io;

use super::Sink;

/// Writes lines to standard error. `sync` does nothing (a terminal or pipe has nothing
/// to make durable).
#[derive(Debug, Default, Clone, Copy)]
pub struct StderrSink;

impl StderrSink {
    /// A sink for standard error.
    pub fn new() -> StderrSink {
        StderrSink
    }
}

impl Sink for StderrSink {
    fn write_batch(&mut self, mut batch: &[u8]) -> io::Result<()> {
        while !batch.is_empty() {
            // SAFETY: writes from a live slice; the length is the slice's.
            let n = unsafe { libc::write(libc::STDERR_FILENO, batch.as_ptr().cast(), batch.len()) };
            if n < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            batch = batch.get(n as usize..).unwrap_or_default();
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}
