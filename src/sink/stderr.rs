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
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        write_all_fd(libc::STDERR_FILENO, batch)
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes all of `batch` to descriptor `fd`, retrying after EINTR and short writes.
pub(super) fn write_all_fd(fd: libc::c_int, mut batch: &[u8]) -> io::Result<()> {
    while !batch.is_empty() {
        // SAFETY: writes from a live slice; the length is the slice's.
        let n = unsafe { libc::write(fd, batch.as_ptr().cast(), batch.len()) };
        if n < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        batch = batch.get(n as usize..).unwrap_or_default();
    }
    Ok(())
}

/// Writes `parts` to standard error with one `writev(2)`, only if it can take them
/// now (`poll` with no wait says so): for lines that must never block their caller,
/// a producer after a stop or a stop that gave up, when standard error may be a pipe
/// nobody reads. At most `PIPE_BUF` (4096) bytes go out: a pipe that polls writable
/// has room for that many without blocking, and no more is promised. Async-signal-safe;
/// what cannot be written is dropped.
pub(crate) fn write_stderr_if_ready(parts: &[&[u8]]) {
    let mut poll = libc::pollfd {
        fd: libc::STDERR_FILENO,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one pollfd in a live local, zero timeout; async-signal-safe.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    if ready != 1 || poll.revents & libc::POLLOUT == 0 {
        return;
    }
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 8];
    let mut count = 0;
    let mut room = PIPE_BUF;
    for (slot, part) in iov.iter_mut().zip(parts) {
        let part = part.get(..room).unwrap_or(part);
        slot.iov_base = part.as_ptr().cast_mut().cast();
        slot.iov_len = part.len();
        room -= part.len();
        count += 1;
    }
    // SAFETY: every iovec points into a live slice for the duration of the call, and
    // writev only reads them. A short or failed write is ignored: there is nowhere left
    // to report it.
    unsafe { libc::writev(libc::STDERR_FILENO, iov.as_ptr(), count) };
}

/// Linux's `PIPE_BUF`: a write of at most this many bytes to a pipe is atomic.
const PIPE_BUF: usize = 4096;
