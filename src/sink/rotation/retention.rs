//! Retention: which rotated files go. Only files named as this output names its rotated
//! files are ever considered; the live file is not one of them, so `keep(n)` is `n`
//! rotated files beside the live one.

use std::io;
use std::time::{Duration, SystemTime};

use super::naming::Rotated;

/// How many rotated files to keep, and for how long.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Retention {
    pub(super) keep: Option<usize>,
    pub(super) max_age: Option<Duration>,
}

/// What one pruning did.
#[derive(Debug, Default)]
pub(super) struct Pruned {
    pub(super) removed: u64,
    pub(super) errors: Vec<io::Error>,
}

impl Retention {
    pub(super) fn is_unbounded(&self) -> bool {
        self.keep.is_none() && self.max_age.is_none()
    }

    /// Whether the rotated file at position `index` (0 = newest) goes: past `keep`, or
    /// last modified more than `max_age` before `now`. A file modified "after" `now`
    /// (the clock jumped back) is never too old.
    fn expired(&self, index: usize, file: &Rotated, now: SystemTime) -> bool {
        if self.keep.is_some_and(|keep| index >= keep) {
            return true;
        }
        let Some(max_age) = self.max_age else {
            return false;
        };
        let modified = std::fs::metadata(&file.path).and_then(|m| m.modified());
        match modified.map(|at| now.duration_since(at)) {
            Ok(Ok(age)) => age > max_age,
            // In the future, or unreadable: keep it.
            _ => false,
        }
    }

    /// Removes the rotated files beyond retention, counting a file and its compressed
    /// copy (both exist only for a moment) as one. `files` is newest first.
    pub(super) fn prune(&self, files: &[Rotated], now: SystemTime) -> Pruned {
        let mut pruned = Pruned::default();
        if self.is_unbounded() {
            return pruned;
        }
        let mut index = 0;
        let mut previous: Option<&Rotated> = None;
        for file in files {
            // The plain and the `.gz` of one rotation rank alike and are one file.
            if previous.is_some_and(|p| p.rank == file.rank) {
                let previous_gone =
                    previous.is_some_and(|p| std::fs::symlink_metadata(&p.path).is_err());
                if previous_gone {
                    remove(file, &mut pruned);
                }
                continue;
            }
            previous = Some(file);
            if self.expired(index, file, now) {
                remove(file, &mut pruned);
            }
            index += 1;
        }
        // No directory sync after removals: one undone by a power loss is done again
        // by the next start-up, and the listener is spared an fsync per rotation.
        pruned
    }
}

fn remove(file: &Rotated, pruned: &mut Pruned) {
    match std::fs::remove_file(&file.path) {
        Ok(()) => pruned.removed += 1,
        // Gone already (another process, or the compressor replaced it).
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => pruned.errors.push(error),
    }
}
