//! The ring's memory, resident only as it is used: the stamps in a zeroed allocation
//! ([`zeroed_slice`]), the slot bytes in an anonymous private mapping of their own,
//! page-aligned (every slot on its own cache line). Both are the kernel's zero pages
//! until a record first reaches them, so a big ring costs RSS as it is used, not up
//! front. The allocator cannot do this for the slots: a zeroed allocation aligned to
//! 64 bytes is written with zeros, every page of it.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Chunk, SLOT_BYTES};
use crate::sync::UnsafeCell;

/// The most bytes one [`MappedChunks::populate_upto`] call makes resident: bounded
/// work for the listener between two batches.
const POPULATE_STEP: usize = 2 << 20;

/// A boxed slice of `len` all-zero `T`s from the allocator's zeroed allocation: for a
/// ring of any size that is fresh zero pages from the kernel, so its memory becomes
/// resident only as records first reach it (a big ring costs RSS as it is used, not
/// up front).
///
/// # Safety
///
/// All-zero bytes must be a valid `T`, and `T` must not be zero-sized; `len` must be
/// at least 1.
pub(super) unsafe fn zeroed_slice<T>(len: usize) -> Box<[T]> {
    let Ok(layout) = std::alloc::Layout::array::<T>(len) else {
        std::alloc::handle_alloc_error(std::alloc::Layout::new::<T>());
    };
    // SAFETY: the layout has a non-zero size (the caller's promise).
    let memory = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if memory.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: `memory` is a fresh allocation from the global allocator with the layout
    // of `[T; len]`, which is what a boxed slice of that length frees with, and every
    // element is initialised (all-zero bytes are a valid `T`, the caller's promise).
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(memory, len)) }
}

/// `len` zeroed chunks, unmapped on drop. Under Miri (which has no `mmap`) a boxed
/// slice instead, freed as one.
pub(super) struct MappedChunks {
    chunks: std::ptr::NonNull<UnsafeCell<Chunk>>,
    len: usize,
    /// Bytes from the start already made resident by `populate_upto` (all of them
    /// once the kernel refused).
    populated: AtomicUsize,
}

impl MappedChunks {
    /// `len` (at least 1) zeroed chunks. A failed mapping ends the process like a
    /// failed allocation does.
    pub(super) fn zeroed(len: usize) -> MappedChunks {
        let bytes = len * SLOT_BYTES;
        #[cfg(not(miri))]
        {
            // SAFETY: a new private anonymous mapping: no file, no address hint; the
            // result is checked below.
            let memory = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    bytes,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if memory != libc::MAP_FAILED {
                if let Some(chunks) = std::ptr::NonNull::new(memory.cast()) {
                    return MappedChunks {
                        chunks,
                        len,
                        populated: AtomicUsize::new(0),
                    };
                }
            }
            let layout = std::alloc::Layout::array::<Chunk>(len)
                .unwrap_or_else(|_| std::alloc::Layout::new::<Chunk>());
            std::alloc::handle_alloc_error(layout)
        }
        #[cfg(miri)]
        {
            let _ = bytes;
            let boxed: Box<[UnsafeCell<Chunk>]> = (0..len)
                .map(|_| UnsafeCell::new(Chunk([0; SLOT_BYTES])))
                .collect();
            // SAFETY: `Box::into_raw` never returns null.
            let chunks = unsafe { std::ptr::NonNull::new_unchecked(Box::into_raw(boxed)) };
            MappedChunks {
                chunks: chunks.cast(),
                len,
                populated: AtomicUsize::new(bytes),
            }
        }
    }
}

impl MappedChunks {
    /// Makes the pages of the first `upto` bytes resident (at most [`POPULATE_STEP`]
    /// more per call) with `MADV_POPULATE_WRITE`, which faults them in without
    /// touching their contents, so producers writing there meanwhile are unaffected.
    /// The listener calls it ahead of the producers: they then never take the page
    /// fault of a slot's first use (a microsecond or two, in the log call), while the
    /// ring stays resident only as far as it is used. On a kernel without it (before
    /// 5.14), producers take the faults. The first `resident` bytes are known resident
    /// (producers wrote them: they lie before the tail) and are skipped: walking them
    /// again costs the listener about as much as faulting them in.
    pub(super) fn populate_upto(&self, resident: usize, upto: usize) {
        let total = self.len * SLOT_BYTES;
        // Whole steps only, so that `done` stays page-aligned whatever the page size.
        let resident = resident - resident % POPULATE_STEP;
        let done = self.populated.load(Ordering::Relaxed).max(resident);
        let want = upto.min(total);
        if done >= want {
            return;
        }
        // A multiple of the page size from a page-aligned start, or the end.
        let end = (done + POPULATE_STEP).min(total);
        // SAFETY: advice on pages inside our own mapping (`done..end` lies within
        // `total` bytes of it); MADV_POPULATE_WRITE never changes their contents.
        let result = unsafe {
            libc::madvise(
                self.chunks.as_ptr().cast::<u8>().add(done).cast(),
                end - done,
                libc::MADV_POPULATE_WRITE,
            )
        };
        let reached = if result == 0 { end } else { total };
        self.populated.store(reached, Ordering::Relaxed);
    }
}

impl MappedChunks {
    /// Makes every page resident now (see [`MappedChunks::populate_upto`]).
    pub(super) fn populate_all(&self) {
        let total = self.len * SLOT_BYTES;
        while self.populated.load(Ordering::Relaxed) < total {
            self.populate_upto(0, total);
        }
    }
}

/// Makes resident now the pages of the `len` bytes at `start`, memory of ours from
/// the allocator (its first and last pages are mapped: they hold its first and last
/// bytes), with `MADV_POPULATE_WRITE`, which leaves their contents alone. Best effort:
/// on a kernel without it the first writes take the faults.
pub(super) fn populate_bytes(start: *const u8, len: usize) {
    if len == 0 || cfg!(miri) {
        return;
    }
    // SAFETY: sysconf reads a constant.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096);
    let from = start as usize & !(page - 1);
    let to = start as usize + len;
    // SAFETY: advice on mapped pages of this process (see above); MADV_POPULATE_WRITE
    // never changes their contents.
    unsafe {
        libc::madvise(
            from as *mut libc::c_void,
            to - from,
            libc::MADV_POPULATE_WRITE,
        )
    };
}

impl std::ops::Deref for MappedChunks {
    type Target = [UnsafeCell<Chunk>];

    fn deref(&self) -> &[UnsafeCell<Chunk>] {
        // SAFETY: `chunks` points at `len` initialised chunks (zero bytes are a valid
        // `Chunk` in its `repr(transparent)` cell) that live until drop; only shared
        // references are handed out, and writes go through the cells.
        unsafe { std::slice::from_raw_parts(self.chunks.as_ptr(), self.len) }
    }
}

impl Drop for MappedChunks {
    fn drop(&mut self) {
        #[cfg(not(miri))]
        // SAFETY: unmaps exactly the mapping made in `zeroed`; nothing refers to it
        // any more (we are being dropped).
        unsafe {
            libc::munmap(self.chunks.as_ptr().cast(), self.len * SLOT_BYTES)
        };
        #[cfg(miri)]
        // SAFETY: `chunks` and `len` are the boxed slice `zeroed` leaked; nothing
        // refers to it any more (we are being dropped).
        drop(unsafe {
            Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                self.chunks.as_ptr(),
                self.len,
            ))
        });
    }
}

#[cfg(all(test, not(miri), not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn populating_starts_past_what_producers_wrote() {
        let chunks = MappedChunks::zeroed((16 << 20) / SLOT_BYTES);
        // 5 MiB written by producers: population starts at the 4 MiB step below, one
        // step per call, and never walks the first 4 MiB.
        chunks.populate_upto(5 << 20, 16 << 20);
        if chunks.populated.load(Ordering::Relaxed) == 16 << 20 {
            return; // A kernel without MADV_POPULATE_WRITE (before 5.14): nothing done.
        }
        assert_eq!(chunks.populated.load(Ordering::Relaxed), 6 << 20);
        chunks.populate_upto(5 << 20, 16 << 20);
        assert_eq!(chunks.populated.load(Ordering::Relaxed), 8 << 20);
        // Nothing written yet: from the start, as before.
        let fresh = MappedChunks::zeroed((16 << 20) / SLOT_BYTES);
        fresh.populate_upto(0, 16 << 20);
        assert_eq!(fresh.populated.load(Ordering::Relaxed), 2 << 20);
    }
}
