//! Macro callsites: the `static` each `quelog::info!` (and friends) owns, and the
//! registry that lets a record name its callsite by a small index.
//!
//! A raw record ([`super::args`]) stores no format string, module path or file: the
//! listener reads them from the callsite. It must never follow a pointer read out of
//! the ring (a damaged frame could hold anything), so the record holds an index into
//! [`REGISTRY`], a fixed table of pointers to callsites that registered themselves;
//! the listener and the crash drain accept an index only if its entry is set.
//!
//! Registering is one CAS on the callsite's state, on its first enabled call: the
//! winner checks the format string once ([`super::args::scan`]), takes an index with
//! one `fetch_add` and publishes the entry; a caller that loses the CAS (another
//! thread is registering the same callsite right now) formats on the caller this once.
//! Bounded, lock-free, allocation-free: signal handlers may be the first to log.

use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

/// Callsites the registry holds. Past that, a callsite formats on the caller (as
/// `log::info!` does): correct, just not raw. 8192 pointers are 64 KiB of `.bss`,
/// touched (paged in) only as far as callsites register.
pub(crate) const CAPACITY: usize = 8192;

/// The state word: its low two bits say what the callsite does.
const STATE_NEW: u32 = 0;
const STATE_BUSY: u32 = 1;
const STATE_FALLBACK: u32 = 2;
const STATE_RAW: u32 = 3;
const STATE_KIND: u32 = 3;
/// Set with `STATE_RAW`: the format string has a `{:?}`.
const STATE_DEBUG: u32 = 4;
const STATE_INDEX_SHIFT: u32 = 3;

/// One macro callsite: its format string and location, and what its first use
/// decided. Built by the macros in a `static`; not for use by hand.
#[doc(hidden)]
#[derive(Debug)]
pub struct Callsite {
    format: &'static str,
    module_path: &'static str,
    file: &'static str,
    line: u32,
    state: AtomicU32,
}

/// How a registered callsite's arguments travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Registered {
    /// The callsite's index in the registry: what a raw record stores.
    pub(crate) index: u32,
    /// Some placeholder is `{:?}`: a non-raw argument must make the caller format.
    pub(crate) has_debug: bool,
}

static REGISTRY: [AtomicPtr<Callsite>; CAPACITY] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; CAPACITY];
static NEXT_INDEX: AtomicU32 = AtomicU32::new(0);

impl Callsite {
    /// A callsite for the format string `format`, at `module_path`, `file`, `line`.
    #[doc(hidden)]
    pub const fn new(
        format: &'static str,
        module_path: &'static str,
        file: &'static str,
        line: u32,
    ) -> Callsite {
        Callsite {
            format,
            module_path,
            file,
            line,
            state: AtomicU32::new(STATE_NEW),
        }
    }

    pub(crate) fn format(&self) -> &'static str {
        self.format
    }

    pub(crate) fn module_path(&self) -> &'static str {
        self.module_path
    }

    pub(crate) fn file(&self) -> &'static str {
        self.file
    }

    pub(crate) fn line(&self) -> u32 {
        self.line
    }

    /// The callsite's registration, registering it on first use (one CAS attempt);
    /// `None`: format on the caller (the format string needs it, the registry is full,
    /// or another thread is registering it this instant). `args` is how many
    /// arguments the call passes. Lock-free, bounded, allocation-free.
    pub(crate) fn registered(&'static self, args: usize) -> Option<Registered> {
        // Acquire: pairs with the release store below, so a record naming this index
        // is published (release) after the registry entry, and the listener's acquire
        // of the record sees the entry.
        let state = self.state.load(Ordering::Acquire);
        match state & STATE_KIND {
            STATE_RAW => Some(Registered {
                index: state >> STATE_INDEX_SHIFT,
                has_debug: state & STATE_DEBUG != 0,
            }),
            STATE_NEW => self.register(args),
            _ => None,
        }
    }

    #[cold]
    fn register(&'static self, args: usize) -> Option<Registered> {
        if self
            .state
            .compare_exchange(STATE_NEW, STATE_BUSY, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        let verdict = super::args::scan(self.format)
            .filter(|scan| scan.placeholders == args)
            .and_then(|scan| {
                let index = NEXT_INDEX.fetch_add(1, Ordering::Relaxed);
                let entry = REGISTRY.get(index as usize)?;
                entry.store(std::ptr::from_ref(self).cast_mut(), Ordering::Release);
                Some(Registered {
                    index,
                    has_debug: scan.has_debug,
                })
            });
        let state = match verdict {
            Some(registered) => {
                STATE_RAW
                    | (registered.index << STATE_INDEX_SHIFT)
                    | if registered.has_debug { STATE_DEBUG } else { 0 }
            }
            None => STATE_FALLBACK,
        };
        self.state.store(state, Ordering::Release);
        verdict
    }
}

/// The callsite registered at `index`, if one is: the only way from a record back to
/// a callsite. Any `index` is safe to ask about (a damaged record's included).
/// Async-signal-safe: one atomic load.
pub(crate) fn lookup(index: u32) -> Option<&'static Callsite> {
    let entry = REGISTRY.get(index as usize)?.load(Ordering::Acquire);
    // SAFETY: the registry only ever holds null or a pointer made from a
    // `&'static Callsite` in `register`, never freed or moved.
    unsafe { entry.as_ref() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_format_registers_once_and_is_found_by_index() {
        static SITE: Callsite = Callsite::new("a {} b {:?}", "m", "f.rs", 3);
        let first = SITE.registered(2).unwrap();
        assert!(first.has_debug);
        assert_eq!(SITE.registered(2), Some(first));
        let found = lookup(first.index).unwrap();
        assert!(std::ptr::eq(found, &SITE));
        assert_eq!((found.file(), found.line()), ("f.rs", 3));
    }

    #[test]
    fn formats_the_listener_cannot_reproduce_stay_on_the_caller() {
        static WIDTH: Callsite = Callsite::new("{:>5}", "m", "f.rs", 1);
        static NAMED: Callsite = Callsite::new("{x}", "m", "f.rs", 2);
        static COUNT: Callsite = Callsite::new("{} {}", "m", "f.rs", 3);
        assert_eq!(WIDTH.registered(1), None);
        assert_eq!(NAMED.registered(0), None);
        // The argument count disagrees with the placeholders: never raw.
        assert_eq!(COUNT.registered(1), None);
        assert_eq!(COUNT.registered(2), None, "the verdict is cached");
    }

    #[test]
    fn unregistered_indexes_are_refused() {
        assert!(lookup(u32::MAX).is_none());
        assert!(lookup(CAPACITY as u32 - 1).is_none());
    }
}
