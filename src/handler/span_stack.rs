//! The calling thread's stack of entered spans (tracing's `enter`/`exit`), read by
//! every event and `log` record to say which span it was logged in.
//!
//! Const-initialised thread-local storage without a destructor: reading and writing
//! it never allocates, never registers a destructor, and works in signal handlers and
//! in other thread-locals' destructors (where tracing-subscriber's registry panics,
//! tracing#3239). The depth is fixed; entering deeper is counted
//! ([`depth_overflows`]) and the deeper spans are not shown as the current one.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// The deepest nesting of entered spans tracked per thread.
pub(crate) const MAX_DEPTH: usize = 64;

struct Stack {
    ids: [Cell<u64>; MAX_DEPTH],
    /// Entered spans, including those past `MAX_DEPTH` (counted, not stored).
    depth: Cell<usize>,
}

thread_local! {
    static STACK: Stack = const {
        Stack {
            ids: [const { Cell::new(0) }; MAX_DEPTH],
            depth: Cell::new(0),
        }
    };
}

/// Enters past [`MAX_DEPTH`], in any thread since the process started.
static DEPTH_OVERFLOWS: AtomicU64 = AtomicU64::new(0);

/// Enters past [`MAX_DEPTH`] so far.
pub(crate) fn depth_overflows() -> u64 {
    DEPTH_OVERFLOWS.load(Ordering::Relaxed)
}

/// The span the calling thread is in: the innermost entered one, if any.
pub(crate) fn current() -> Option<u64> {
    STACK
        .try_with(|stack| {
            let depth = stack.depth.get().min(MAX_DEPTH);
            let top = depth.checked_sub(1)?;
            stack.ids.get(top).map(Cell::get)
        })
        .ok()
        .flatten()
}

/// `id` is entered on this thread.
pub(crate) fn enter(id: u64) {
    let _ = STACK.try_with(|stack| {
        let depth = stack.depth.get();
        match stack.ids.get(depth) {
            Some(slot) => slot.set(id),
            None => {
                DEPTH_OVERFLOWS.fetch_add(1, Ordering::Relaxed);
            }
        }
        stack.depth.set(depth.saturating_add(1));
    });
}

/// `id` is exited on this thread. Usually the innermost; tracing allows exits out of
/// order, so otherwise the innermost entry of `id` is taken out and the ones above it
/// move down.
pub(crate) fn exit(id: u64) {
    let _ = STACK.try_with(|stack| {
        let depth = stack.depth.get();
        if depth == 0 {
            return;
        }
        if depth > MAX_DEPTH {
            // One of the untracked deeper spans (exits are usually in order).
            stack.depth.set(depth - 1);
            return;
        }
        let Some(at) = (0..depth)
            .rev()
            .find(|&i| stack.ids.get(i).map(Cell::get) == Some(id))
        else {
            return;
        };
        for i in at..depth - 1 {
            let above = stack.ids.get(i + 1).map_or(0, Cell::get);
            if let Some(slot) = stack.ids.get(i) {
                slot.set(above);
            }
        }
        stack.depth.set(depth - 1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enter_exit_in_and_out_of_order() {
        std::thread::spawn(|| {
            assert_eq!(current(), None);
            enter(1);
            enter(2);
            enter(3);
            assert_eq!(current(), Some(3));
            exit(2);
            assert_eq!(current(), Some(3));
            exit(3);
            assert_eq!(current(), Some(1));
            exit(1);
            assert_eq!(current(), None);
            exit(1); // unbalanced: ignored
            assert_eq!(current(), None);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn past_the_depth_is_counted_and_the_tracked_top_stays_current() {
        std::thread::spawn(|| {
            let before = depth_overflows();
            for id in 1..=(MAX_DEPTH as u64 + 3) {
                enter(id);
            }
            assert_eq!(depth_overflows() - before, 3);
            assert_eq!(current(), Some(MAX_DEPTH as u64));
            for id in (1..=(MAX_DEPTH as u64 + 3)).rev() {
                exit(id);
            }
            assert_eq!(current(), None);
        })
        .join()
        .unwrap();
    }
}
