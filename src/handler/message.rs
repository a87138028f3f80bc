//! Formatting the message on the caller without touching the heap.
//!
//! Short messages (the common case) are formatted into an inline buffer on the stack.
//! A message that outgrows it moves into one of a few large scratch buffers that were
//! allocated when the queue was built, claimed with one CAS on a bitmap (bounded
//! attempts, no waiting). When every scratch buffer is in use (several threads logging
//! huge records at once) the message is cut at the inline size, flagged, and counted:
//! never silently.

use std::fmt;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of message formatted on the stack before a scratch buffer is needed. Small
/// enough for an alternate signal stack (`SIGSTKSZ` is 8 KiB on x86-64 Linux).
pub(crate) const INLINE_BYTES: usize = 512;

/// Attempts to claim a scratch buffer before giving up on it.
const SCRATCH_ATTEMPTS: u32 = 16;

/// Preallocated large buffers for long messages, at most 64 (one bitmap word).
pub(crate) struct ScratchPool {
    /// Bit `i` set: buffer `i` is owned by a caller.
    in_use: AtomicU64,
    /// Bits of buffers that exist; the others are permanently "in use".
    count: u32,
    buffer_len: usize,
    /// `count * buffer_len` bytes; buffer `i` starts at `i * buffer_len`.
    memory: Box<[std::cell::UnsafeCell<u8>]>,
}

// SAFETY: a byte range of `memory` is touched only by the holder of its bit in
// `in_use`, which the CAS in `acquire` hands to one caller at a time (acquire/release
// ordering on the bitmap orders one holder's writes before the next holder's).
unsafe impl Sync for ScratchPool {}

impl ScratchPool {
    pub(crate) fn new(count: usize, buffer_len: usize) -> ScratchPool {
        let count = count.min(64);
        let memory = (0..count * buffer_len)
            .map(|_| std::cell::UnsafeCell::new(0))
            .collect();
        ScratchPool {
            in_use: AtomicU64::new(0),
            count: count as u32,
            buffer_len,
            memory,
        }
    }

    /// Claims a free buffer, or `None` after a bounded number of attempts.
    fn acquire(&self) -> Option<ScratchBuf<'_>> {
        let mut taken = self.in_use.load(Ordering::Relaxed);
        for _ in 0..SCRATCH_ATTEMPTS {
            let free = !taken & self.existing();
            if free == 0 {
                return None;
            }
            let bit = free.trailing_zeros();
            match self.in_use.compare_exchange_weak(
                taken,
                taken | (1 << bit),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    let start = bit as usize * self.buffer_len;
                    let region = self.memory.get(start..start + self.buffer_len)?;
                    // SAFETY: the bit makes us the only holder of `region` until
                    // `ScratchBuf::drop` clears it; `UnsafeCell<u8>` has the layout of
                    // `u8`, and the region is in bounds (checked by `get`).
                    let bytes = unsafe {
                        std::slice::from_raw_parts_mut(
                            std::cell::UnsafeCell::raw_get(region.as_ptr()),
                            region.len(),
                        )
                    };
                    return Some(ScratchBuf {
                        pool: self,
                        bit,
                        bytes,
                    });
                }
                Err(now) => taken = now,
            }
        }
        None
    }

    fn existing(&self) -> u64 {
        if self.count >= 64 {
            u64::MAX
        } else {
            (1u64 << self.count) - 1
        }
    }
}

struct ScratchBuf<'p> {
    pool: &'p ScratchPool,
    bit: u32,
    bytes: &'p mut [u8],
}

impl Drop for ScratchBuf<'_> {
    fn drop(&mut self) {
        // Release: our writes to the buffer happen before the next holder's.
        self.pool
            .in_use
            .fetch_and(!(1u64 << self.bit), Ordering::Release);
    }
}

/// A message being formatted: inline bytes, then a scratch buffer if it grows.
pub(crate) struct MessageBuf<'p> {
    inline: [MaybeUninit<u8>; INLINE_BYTES],
    /// Bytes stored, in `inline` or, once claimed, in `scratch`.
    len: usize,
    /// The most bytes this record may carry.
    limit: usize,
    /// `INLINE_BYTES.min(limit)`: the fast path's bound.
    inline_limit: usize,
    /// Once truncated: bytes the caller produced before formatting stopped.
    produced: usize,
    truncated: bool,
    pool: &'p ScratchPool,
    scratch: Option<ScratchBuf<'p>>,
}

impl<'p> MessageBuf<'p> {
    pub(crate) fn new(pool: &'p ScratchPool, limit: usize) -> Self {
        MessageBuf {
            inline: [MaybeUninit::uninit(); INLINE_BYTES],
            len: 0,
            limit,
            inline_limit: INLINE_BYTES.min(limit),
            produced: 0,
            truncated: false,
            pool,
            scratch: None,
        }
    }

    /// Formats `args`. Returns `false` if a `Display` impl failed or panicked; what it
    /// produced before stays.
    pub(crate) fn format(&mut self, args: &fmt::Arguments<'_>) -> bool {
        if let Some(text) = args.as_str() {
            // A literal message: no formatting machinery at all.
            let _ = fmt::Write::write_str(self, text);
            return true;
        }
        // A `Display` that panics must not unwind through the logging call (it may
        // be a `Drop` during unwinding, where a second panic aborts).
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fmt::write(self, *args)));
        match result {
            Ok(Ok(())) => true,
            // We stop formatting with an error ourselves once the message is cut.
            Ok(Err(fmt::Error)) => self.truncated,
            Err(_panic) => false,
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match &self.scratch {
            Some(scratch) => scratch.bytes.get(..self.len).unwrap_or_default(),
            // SAFETY: the first `len` inline bytes were initialised by `write_str`, and
            // `len <= INLINE_BYTES` whenever no scratch buffer is held.
            None => unsafe {
                std::slice::from_raw_parts(self.inline.as_ptr().cast::<u8>(), self.len)
            },
        }
    }

    pub(crate) fn truncated(&self) -> bool {
        self.truncated
    }

    /// The most bytes this record's message may carry.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes the caller produced, saturated to `u32`.
    pub(crate) fn produced(&self) -> u32 {
        let produced = if self.truncated {
            self.produced
        } else {
            self.len
        };
        produced.min(u32::MAX as usize) as u32
    }

    fn capacity(&self) -> usize {
        match &self.scratch {
            Some(scratch) => scratch.bytes.len().min(self.limit),
            None => INLINE_BYTES.min(self.limit),
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        let start = self.len;
        match &mut self.scratch {
            Some(scratch) => {
                if let Some(dst) = scratch.bytes.get_mut(start..start + bytes.len()) {
                    dst.copy_from_slice(bytes);
                    self.len += bytes.len();
                }
            }
            None => {
                if let Some(dst) = self.inline.get_mut(start..start + bytes.len()) {
                    // SAFETY: `dst` is exactly `bytes.len()` in-bounds elements;
                    // `MaybeUninit<u8>` has the layout of `u8`.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            bytes.as_ptr(),
                            dst.as_mut_ptr().cast::<u8>(),
                            bytes.len(),
                        )
                    };
                    self.len += bytes.len();
                }
            }
        }
    }

    /// Moves the inline bytes into a scratch buffer, if one is free.
    fn grow(&mut self) {
        if self.scratch.is_some() || self.limit <= INLINE_BYTES {
            return;
        }
        let Some(scratch) = self.pool.acquire() else {
            return;
        };
        let inline = self.as_bytes();
        if let Some(dst) = scratch.bytes.get_mut(..inline.len()) {
            dst.copy_from_slice(inline);
            self.scratch = Some(scratch);
        }
    }
}

/// The typed fields are encoded into a `MessageBuf` too (inline, then scratch), whole
/// entries only: [`crate::record::fields::Encoder`] rolls back one that does not fit.
impl crate::record::fields::FieldSink for MessageBuf<'_> {
    fn len(&self) -> usize {
        self.len
    }

    fn try_append(&mut self, bytes: &[u8]) -> bool {
        if self.capacity() - self.len < bytes.len() {
            self.grow();
        }
        if self.capacity() - self.len < bytes.len() {
            return false;
        }
        self.append(bytes);
        true
    }

    fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        // An entry that did not fit was rolled back: the next one may still fit.
        self.truncated = false;
    }

    fn patch(&mut self, at: usize, bytes: &[u8]) {
        if at + bytes.len() > self.len {
            return;
        }
        match &mut self.scratch {
            Some(scratch) => {
                if let Some(dst) = scratch.bytes.get_mut(at..at + bytes.len()) {
                    dst.copy_from_slice(bytes);
                }
            }
            None => {
                if let Some(dst) = self.inline.get_mut(at..at + bytes.len()) {
                    for (d, b) in dst.iter_mut().zip(bytes) {
                        *d = MaybeUninit::new(*b);
                    }
                }
            }
        }
    }

    fn format(&mut self, args: fmt::Arguments<'_>) -> bool {
        MessageBuf::format(self, &args) && !self.truncated
    }
}

impl fmt::Write for MessageBuf<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Fast path, nearly every call: no scratch buffer yet and the piece fits inline.
        let end = self.len + text.len();
        if end <= self.inline_limit && self.scratch.is_none() {
            if let Some(dst) = self.inline.get_mut(self.len..end) {
                // SAFETY: `dst` is exactly `text.len()` in-bounds elements, and
                // `MaybeUninit<u8>` has the layout of `u8`.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        text.as_ptr(),
                        dst.as_mut_ptr().cast::<u8>(),
                        text.len(),
                    )
                };
                self.len = end;
                return Ok(());
            }
        }
        if self.truncated {
            self.produced = self.produced.saturating_add(text.len());
            return Err(fmt::Error);
        }
        if self.capacity() - self.len < text.len() {
            self.grow();
        }
        let room = self.capacity() - self.len;
        if room < text.len() {
            // Keep the longest prefix that fits and ends on a character boundary, and
            // stop the formatter: the rest would be thrown away anyway.
            let mut cut = room;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            self.produced = self.len.saturating_add(text.len());
            self.append(text.as_bytes().get(..cut).unwrap_or_default());
            self.truncated = true;
            return Err(fmt::Error);
        }
        self.append(text.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(pool: &ScratchPool, limit: usize, args: fmt::Arguments<'_>) -> (Vec<u8>, bool) {
        let mut buf = MessageBuf::new(pool, limit);
        buf.format(&args);
        (buf.as_bytes().to_vec(), buf.truncated())
    }

    #[test]
    fn short_message_stays_inline() {
        let pool = ScratchPool::new(0, 0);
        let (bytes, cut) = format(&pool, 1 << 16, format_args!("a={} b={}", 1, "two"));
        assert_eq!(bytes, b"a=1 b=two");
        assert!(!cut);
    }

    #[test]
    fn long_message_moves_to_scratch_and_arrives_whole() {
        let pool = ScratchPool::new(1, 1 << 16);
        let long = "x".repeat(10_000);
        let (bytes, cut) = format(&pool, 1 << 16, format_args!("{long}{}", "!"));
        assert_eq!(bytes.len(), 10_001);
        assert!(!cut);
        // The buffer went back to the pool.
        assert_eq!(pool.in_use.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn exhausted_pool_cuts_at_the_inline_size_and_says_so() {
        let pool = ScratchPool::new(1, 1 << 16);
        let _held = pool.acquire().unwrap();
        let long = "y".repeat(2_000);
        let (bytes, cut) = format(&pool, 1 << 16, format_args!("{long}"));
        assert_eq!(bytes.len(), INLINE_BYTES);
        assert!(cut);
    }

    #[test]
    fn cut_respects_the_limit_and_character_boundaries() {
        let pool = ScratchPool::new(2, 1 << 16);
        let text = "é".repeat(40_000); // 80 000 bytes
        let (bytes, cut) = format(&pool, 1001, format_args!("{text}"));
        assert!(cut);
        assert_eq!(bytes.len(), 1000); // 1001 would split a character
        assert!(std::str::from_utf8(&bytes).is_ok());
    }

    #[test]
    fn panicking_display_keeps_what_it_wrote() {
        struct Bad;
        impl fmt::Display for Bad {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("partial")?;
                panic!("display failed");
            }
        }
        let pool = ScratchPool::new(0, 0);
        let mut buf = MessageBuf::new(&pool, 1000);
        let ok = buf.format(&format_args!("{}", Bad));
        assert!(!ok);
        assert_eq!(buf.as_bytes(), b"partial");
    }

    #[test]
    fn every_scratch_buffer_can_be_claimed_then_none() {
        let pool = ScratchPool::new(3, 8);
        let a = pool.acquire().unwrap();
        let b = pool.acquire().unwrap();
        let c = pool.acquire().unwrap();
        assert!(pool.acquire().is_none());
        assert_ne!(a.bit, b.bit);
        assert_ne!(b.bit, c.bit);
        drop(b);
        assert!(pool.acquire().is_some());
    }
}
