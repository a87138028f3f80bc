//! Thread names for the layouts, resolved on the listener (the producer path must not
//! call `thread::current()`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Thread names by kernel thread id, read from `/proc/self/task/<tid>/comm`. Entries
/// expire after a second, since thread ids are reused.
#[derive(Default)]
pub(crate) struct ThreadNames {
    names: HashMap<u32, (Option<String>, Instant)>,
}

impl ThreadNames {
    pub(crate) fn name(&mut self, thread_id: u32) -> Option<&str> {
        let now = Instant::now();
        let fresh = self
            .names
            .get(&thread_id)
            .is_some_and(|(_, at)| now.duration_since(*at) < Duration::from_secs(1));
        if !fresh {
            if self.names.len() > 4096 {
                self.names.clear();
            }
            let name = std::fs::read_to_string(format!("/proc/self/task/{thread_id}/comm"))
                .ok()
                .map(|s| s.trim_end().to_owned())
                .filter(|s| !s.is_empty());
            self.names.insert(thread_id, (name, now));
        }
        self.names
            .get(&thread_id)
            .and_then(|(name, _)| name.as_deref())
    }
}
