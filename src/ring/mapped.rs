//! The ring's slot bytes in memory of their own: an anonymous private mapping, so they
//! are the kernel's zero pages until a record first reaches them (a big ring costs RSS
//! as it is used, not up front), page-aligned (every slot on its own cache line). The
//! allocator cannot do this: a zeroed allocation aligned to 64 bytes is written with
//! zeros, every page of it.

use super::{Chunk, SLOT_BYTES};
use crate::sync::UnsafeCell;

/// `len` zeroed chunks, unmapped on drop. Under Miri (which has no `mmap`) a boxed
/// slice instead, freed as one.
pub(super) struct MappedChunks {
    chunks: std::ptr::NonNull<UnsafeCell<Chunk>>,
    len: usize,
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
                    return MappedChunks { chunks, len };
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
            }
        }
    }
}

impl std::ops::Deref for MappedChunks {
    type Target = [UnsafeCell<Chunk>];

    fn deref(&self) -> &[UnsafeCell<Chunk>] {
        // SAFETY: `chunks` points at `len` initialised chunks (zero pages are zero
        // bytes, a valid `Chunk` inside its `repr(transparent)` cell) that live until
        // drop; only shared references are handed out, and writes go through the
        // cells.
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
