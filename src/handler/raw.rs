//! The producer path of quelog's macros ([`crate::macros`]): a record whose message
//! the listener formats. Everything of [`super::capture`] holds (no lock, no
//! allocation, bounded, signal-safe); what differs is the message section, raw
//! arguments ([`crate::record::args`]) instead of text.

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicPtr, Ordering};

use log::Metadata;

use super::capture::{Capture, Raw};
use super::message::MessageBuf;
use super::{clip, span_stack, Entered, QueueHandler, MAX_NAME_BYTES};
use crate::record::args::{self, Arg, ArgSink};
use crate::record::callsite::{Callsite, Registered};
use crate::record::fields::{Encoder, FieldSink};
use crate::record::{self, Header, Kind, HEADER_LEN, MAX_RAW_SECTION, SHORT_HEADER_LEN};

/// The largest record the fast path assembles on the stack; bigger ones (and those
/// with arguments formatted on the caller) take [`QueueHandler::push`].
const STACK_RECORD_BYTES: usize = 256;

/// A whole record assembled on the stack, header last (its first
/// [`SHORT_HEADER_LEN`] bytes are left for it: the short form), then copied into the
/// ring in one piece.
struct StackRecord {
    bytes: [MaybeUninit<u8>; STACK_RECORD_BYTES],
    len: usize,
}

impl StackRecord {
    fn new() -> StackRecord {
        StackRecord {
            bytes: [MaybeUninit::uninit(); STACK_RECORD_BYTES],
            len: SHORT_HEADER_LEN,
        }
    }

    fn write_at(&mut self, at: usize, bytes: &[u8]) -> bool {
        let Some(dst) = self.bytes.get_mut(at..at + bytes.len()) else {
            return false;
        };
        // SAFETY: `dst` is exactly `bytes.len()` in-bounds elements, and
        // `MaybeUninit<u8>` has the layout of `u8`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                dst.as_mut_ptr().cast::<u8>(),
                bytes.len(),
            )
        };
        true
    }

    /// The record, once its header is written.
    fn as_bytes(&self) -> &[u8] {
        let len = self.len.min(STACK_RECORD_BYTES);
        // SAFETY: the first `len` bytes are initialised: the header by
        // `write_at(0, ..)` before this is called, the rest by appends.
        unsafe { std::slice::from_raw_parts(self.bytes.as_ptr().cast::<u8>(), len) }
    }
}

impl ArgSink for StackRecord {
    fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    fn try_append(&mut self, bytes: &[u8]) -> bool {
        let fits = self.write_at(self.len, bytes);
        if fits {
            self.len += bytes.len();
        }
        fits
    }

    fn patch(&mut self, at: usize, bytes: &[u8]) {
        if at + bytes.len() <= self.len {
            self.write_at(at, bytes);
        }
    }

    /// Not on the fast path: a record with such an argument takes the general one.
    fn format_display(&mut self, _: &dyn std::fmt::Display) -> Option<bool> {
        None
    }
}

impl FieldSink for StackRecord {
    fn len(&self) -> usize {
        self.len
    }

    fn try_append(&mut self, bytes: &[u8]) -> bool {
        ArgSink::try_append(self, bytes)
    }

    fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len).max(SHORT_HEADER_LEN);
    }

    fn patch(&mut self, at: usize, bytes: &[u8]) {
        ArgSink::patch(self, at, bytes);
    }

    fn format(&mut self, _: std::fmt::Arguments<'_>) -> bool {
        false
    }
}

/// The target of the probe [`global_handler`] sends the global logger: only its
/// address matters (a `static` of its own, so no other string shares it). Any other
/// logger sees one `enabled` query for a target nobody names.
static PROBE: [u8; 13] = *b"quelog::probe";

thread_local! {
    /// The handler that answered this thread's probe (null: none did).
    static ANSWERED: Cell<*const QueueHandler> = const { Cell::new(std::ptr::null()) };
}

/// The handler found behind `log::logger()`, once found (the global logger is set
/// once per process and never changes after).
static FOUND: AtomicPtr<QueueHandler> = AtomicPtr::new(std::ptr::null_mut());

fn probe_target() -> &'static str {
    std::str::from_utf8(&PROBE).unwrap_or_default()
}

impl QueueHandler {
    /// Answers [`global_handler`]'s probe (from [`log::Log::enabled`]): `true` if
    /// `target` is the probe, after noting this handler for the calling thread.
    #[inline]
    pub(crate) fn answer_probe(&self, target: &str) -> bool {
        if !std::ptr::eq(target.as_ptr(), PROBE.as_ptr()) {
            return false;
        }
        let _ = ANSWERED.try_with(|answered| answered.set(self));
        true
    }
}

/// The quelog handler that is `log`'s global logger, if one is: installed by
/// [`crate::Builder::install`], or a [`QueueHandler`] given to `log::set_logger` (or
/// `set_boxed_logger`) by hand. A logger that wraps a handler is not it (its own
/// `log` must see the records; see the check below for the one kind it cannot tell). Lock-free, allocation-free, bounded: a load once
/// found; before that one `enabled` call on the global logger.
#[inline]
pub(crate) fn global_handler() -> Option<&'static QueueHandler> {
    if let Some(handler) = crate::global::installed_handler() {
        return Some(handler);
    }
    let found = FOUND.load(Ordering::Acquire);
    // SAFETY: `FOUND` only ever holds null or the address of the `'static` global
    // logger, checked below to be a `QueueHandler`; it is never freed (log's global
    // logger lives as long as the process).
    if let Some(handler) = unsafe { found.as_ref() } {
        return Some(handler);
    }
    let logger = log::logger();
    let _ = ANSWERED.try_with(|answered| answered.set(std::ptr::null()));
    let probe = Metadata::builder()
        .level(log::Level::Error)
        .target(probe_target())
        .build();
    logger.enabled(&probe);
    let answered = ANSWERED
        .try_with(|answered| answered.replace(std::ptr::null()))
        .unwrap_or(std::ptr::null());
    // The handler that answered must be the global logger itself, not one inside it:
    // the same address (a wrapper's first field may share its wrapper's) and the
    // size and alignment of a `QueueHandler` (read from the logger's vtable; a
    // wrapper with any state of its own is bigger). A stateless newtype around a
    // handler would pass for it: its `log` then does not see the macros' records.
    let global = std::ptr::from_ref(logger).cast::<()>();
    let same_shape = std::mem::size_of_val(logger) == std::mem::size_of::<QueueHandler>()
        && std::mem::align_of_val(logger) == std::mem::align_of::<QueueHandler>();
    if answered.is_null() || !std::ptr::eq(answered.cast::<()>(), global) || !same_shape {
        return None;
    }
    FOUND.store(answered.cast_mut(), Ordering::Release);
    // SAFETY: `answered` is the data pointer of `log::logger()`, a `&'static dyn Log`
    // whose `enabled` (quelog's) wrote its own `self` there: a `QueueHandler` that
    // lives for the rest of the process.
    unsafe { answered.as_ref() }
}

impl ArgSink for MessageBuf<'_> {
    fn len(&self) -> usize {
        FieldSink::len(self)
    }

    fn try_append(&mut self, bytes: &[u8]) -> bool {
        FieldSink::try_append(self, bytes)
    }

    fn patch(&mut self, at: usize, bytes: &[u8]) {
        FieldSink::patch(self, at, bytes);
    }

    fn format_display(&mut self, value: &dyn std::fmt::Display) -> Option<bool> {
        let completed = self.format(&format_args!("{value}"));
        (!self.truncated()).then_some(completed)
    }
}

impl QueueHandler {
    /// One macro record: `true` if it is dealt with (queued, dropped and counted, or
    /// refused by the filter, as [`log::Log::log`] would), `false` if the caller must
    /// format it and log it through `log` after all (see [`crate::macros`]).
    pub(crate) fn log_raw(
        &self,
        site: &'static Callsite,
        level: log::Level,
        target: Option<&str>,
        args: &[Arg<'_>],
    ) -> bool {
        let module = site.module_path();
        let full_target = target.unwrap_or(module);
        let metadata = Metadata::builder().level(level).target(full_target).build();
        if !log::Log::enabled(self, &metadata) {
            return true;
        }
        if crate::fork::forked(&self.shared) {
            // The child writes lines itself, from the formatted message.
            return false;
        }
        let Some(registered) = site.registered(args.len()) else {
            return false;
        };
        let target_is_callsite = target.is_none_or(|t| t == module);
        let target = if target_is_callsite { "" } else { full_target };
        if self.push_raw_on_stack(site, registered, level, target, target_is_callsite, args) {
            return true;
        }
        let what = Capture {
            level,
            kind: Kind::Event,
            target,
            module: None,
            file: None,
            line: None,
            raw: Some(Raw { target_is_callsite }),
        };
        let format_len = site.format().len();
        self.push(
            &what,
            |message| {
                let Some(bound) = args::encode(
                    message,
                    registered.index,
                    format_len,
                    registered.has_debug,
                    args,
                ) else {
                    return false;
                };
                // Never a message the caller would have cut, nor a section the crash
                // drain cannot copy.
                bound <= message.limit() && ArgSink::len(message) <= MAX_RAW_SECTION
            },
            |fields| {
                if let Some(span) = span_stack::current() {
                    fields.span_context(span);
                }
            },
        )
    }

    /// The fast path of a raw record: assembled on the stack and queued with one
    /// claim and one copy. `false` (nothing queued, nothing counted) for anything
    /// off the common case: an argument formatted on the caller, a record too big for
    /// the stack buffer, a ring that refuses the claim (full, contended, closed): the
    /// general path ([`QueueHandler::push`]) then does it, waits or counts the drop.
    #[inline]
    fn push_raw_on_stack(
        &self,
        site: &'static Callsite,
        registered: Registered,
        level: log::Level,
        target: &str,
        target_is_callsite: bool,
        args: &[Arg<'_>],
    ) -> bool {
        let shared = &*self.shared;
        let entered = Entered::new();
        let caller = &entered.0;
        let mut rec = StackRecord::new();
        let target = clip(target, MAX_NAME_BYTES);
        if !ArgSink::try_append(&mut rec, target.as_bytes()) {
            return false;
        }
        let section_start = rec.len;
        let format_len = site.format().len();
        let Some(bound) = args::encode(
            &mut rec,
            registered.index,
            format_len,
            registered.has_debug,
            args,
        ) else {
            return false;
        };
        let budget = shared.ring.max_payload() - HEADER_LEN;
        if bound > shared.max_message.min(budget.saturating_sub(target.len())) {
            return false;
        }
        let section_len = rec.len - section_start;
        let fields_start = rec.len;
        if let Some(span) = span_stack::current() {
            let mut fields = Encoder::new(&mut rec);
            fields.span_context(span);
            if fields.cut() {
                return false;
            }
        }
        let mut flags = Kind::Event.flags();
        if target_is_callsite {
            flags |= record::FLAG_MODULE_IS_TARGET;
        }
        if caller.nested {
            flags |= record::FLAG_NESTED;
        }
        if rec.len > fields_start {
            flags |= record::FLAG_FIELDS;
        }
        let (timestamp_nanos, ticks) = super::clock::stamp();
        let header = Header {
            timestamp_nanos,
            thread_id: caller.thread_id,
            line: 0,
            message_len: section_len as u32,
            message_full_len: section_len as u32,
            target_len: target.len() as u16,
            module_len: 0,
            file_len: 0,
            level: record::level_to_u8(level),
            flags,
            raw: true,
            ticks,
            short: true,
        };
        rec.write_at(0, &header.encode_short());
        let reserve = if level <= log::Level::Warn {
            0
        } else {
            shared.reserve_slots
        };
        let Ok(mut claim) = shared.ring.try_claim_leaving(rec.len, reserve) else {
            return false;
        };
        claim.write(rec.as_bytes());
        claim.publish();
        shared.waker.wake_if_sleeping();
        #[cfg(feature = "test-hooks")]
        crate::test_hooks::RAW_QUEUED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        true
    }
}
