//! Thread names for the layouts, resolved on the listener (the producer path must not
//! call `thread::current()`).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long a name read from `/proc` is trusted: thread ids are reused.
const NAME_TTL: Duration = Duration::from_secs(1);

/// Thread names by kernel thread id, read from `/proc/self/task/<tid>/comm`. Entries
/// expire after a second, since thread ids are reused.
#[derive(Default)]
pub(crate) struct ThreadNames {
    names: HashMap<u32, (Option<Rc<str>>, Instant), BuildHasherDefault<TidHasher>>,
    /// The last answer, until it expires: runs of records from one thread skip the
    /// lookup.
    last: Option<(u32, Instant, Option<Rc<str>>)>,
}

impl ThreadNames {
    /// The name of thread `thread_id` as of `now` (the listener passes the start of
    /// its batch: one clock read per batch, not per record). Borrowed: a run of records
    /// from one thread costs a compare, no reference count.
    pub(crate) fn name(&mut self, thread_id: u32, now: Instant) -> Option<&str> {
        let kept = matches!(&self.last, Some((id, until, _)) if *id == thread_id && now < *until);
        if !kept {
            let fresh = self
                .names
                .get(&thread_id)
                .is_some_and(|(_, at)| now.saturating_duration_since(*at) < NAME_TTL);
            if !fresh {
                if self.names.len() > 4096 {
                    self.names.clear();
                }
                let name = std::fs::read_to_string(format!("/proc/self/task/{thread_id}/comm"))
                    .ok()
                    .map(|s| Rc::from(s.trim_end()))
                    .filter(|s: &Rc<str>| !s.is_empty());
                self.names.insert(thread_id, (name, now));
            }
            let (name, at) = self.names.get(&thread_id)?;
            self.last = Some((thread_id, *at + NAME_TTL, name.clone()));
        }
        self.last.as_ref().and_then(|(_, _, name)| name.as_deref())
    }
}

/// A hasher for thread ids, looked up once per record: one multiply (Fibonacci
/// hashing) instead of SipHash. The ids are the kernel's, not an attacker's.
#[derive(Default)]
pub(crate) struct TidHasher(u64);

impl Hasher for TidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8 | u64::from(byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}
