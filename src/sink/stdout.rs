//! Standard output, written with `write(2)` on descriptor 1 directly: not through
//! `std::io::stdout()`, whose lock a user thread may be holding (and whose line
//! buffer would hold back what the listener wrote).

use std::io;

use super::Sink;

/// Writes lines to standard output (for containers, whose runtime collects it).
/// `sync` does nothing.
///
/// Lines go out with `write(2)`, not through `std::io::stdout()`: what the program
/// prints with `println!` is not interleaved inside a batch of lines, but may come
/// between two batches.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdoutSink;

impl StdoutSink {
    /// A sink for standard output.
    pub fn new() -> StdoutSink {
        StdoutSink
    }
}

impl Sink for StdoutSink {
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        super::stderr::write_all_fd(libc::STDOUT_FILENO, batch)
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}
