//! The producer path proper, for every kind of record: a `log` record, a tracing event,
//! a tracing span's bookkeeping. What the caller knows comes in a [`Capture`] and two
//! closures (one formats the message, one encodes the typed fields); the time, the
//! thread and the claim on the ring are done here, once, for all of them.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::message::MessageBuf;
use super::{clip, now_nanos, write_after_stop, Entered, QueueHandler, MAX_NAME_BYTES};
use crate::queue::Overflow;
use crate::record::fields::Encoder;
use crate::record::{self, Header, Kind, HEADER_LEN};
use crate::ring::ClaimError;
use crate::stats::Counters;

/// What a record is about, as the caller knows it.
pub(crate) struct Capture<'a> {
    pub(crate) level: log::Level,
    pub(crate) kind: Kind,
    pub(crate) target: &'a str,
    pub(crate) module: Option<&'a str>,
    pub(crate) file: Option<&'a str>,
    pub(crate) line: Option<u32>,
    /// `Some`: a macro's raw record ([`crate::record::args`]): the message closure
    /// encodes raw arguments, and `false` from it means "format on the caller".
    pub(crate) raw: Option<Raw>,
}

/// What a raw record says about its target.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Raw {
    /// The target is the callsite's module path (`target` is then empty).
    pub(crate) target_is_callsite: bool,
}

/// Block mode: claims retried with a short pause before the caller sleeps on the
/// listener's [`crate::wake::Room`] (a few microseconds in all), by one caller at a
/// time.
const BLOCK_SPINS: u32 = 16;

/// `spin_loop` hints between two of those claims.
const BLOCK_SPIN_PAUSES: u32 = 64;

/// The longest one sleep for room lasts before the caller looks again whether the
/// listener still runs and its own timeout has passed: the listener wakes sleepers
/// once it freed room, before it syncs or sleeps, and when it ends, so this is only a
/// second line of defence.
const MAX_ROOM_WAIT: Duration = Duration::from_millis(5);

impl QueueHandler {
    /// Captures one record and queues it: lock-free, allocation-free, bounded (see
    /// the module docs of [`crate::handler`]). `message` formats the message into the
    /// buffer it gets (`false`: formatting failed part way); `fields` encodes the typed
    /// fields into the room the message left. `false` only for a raw record the
    /// caller must format and log again: nothing was queued or counted.
    pub(crate) fn push(
        &self,
        what: &Capture<'_>,
        message: impl FnOnce(&mut MessageBuf<'_>) -> bool,
        fields: impl FnOnce(&mut Encoder<'_, MessageBuf<'_>>),
    ) -> bool {
        let shared = &*self.shared;
        let entered = Entered::new();
        let caller = &entered.0;
        let (timestamp_nanos, ticks) = super::clock::stamp();

        // Names first, so the message gets whatever room is left.
        let budget = shared.ring.max_payload() - HEADER_LEN;
        let mut target = clip(what.target, MAX_NAME_BYTES);
        let module = what.module.unwrap_or_default();
        let module_is_target = match what.raw {
            Some(raw) => raw.target_is_callsite,
            None => module == what.target,
        };
        // The source location only if some output prints it (JSON's `source`); the
        // module path no output prints, so only the flag saying it is the target.
        let source = shared.capture_source.load(Ordering::Relaxed);
        let mut module = if module_is_target || !source {
            ""
        } else {
            clip(module, MAX_NAME_BYTES)
        };
        let mut file = if source {
            clip(what.file.unwrap_or_default(), MAX_NAME_BYTES)
        } else {
            ""
        };
        let line = if source { what.line.unwrap_or(0) } else { 0 };
        if target.len() + module.len() + file.len() + 64 > budget {
            // A tiny ring: keep the target and as much message as fits.
            module = "";
            file = "";
            target = clip(target, budget / 2);
        }
        let room = budget - target.len() - module.len() - file.len();
        let limit = shared.max_message.min(room);

        let mut text = MessageBuf::new(&shared.scratch, limit);
        let formatted = message(&mut text);
        if what.raw.is_some() && !formatted {
            return false;
        }
        // The fields get what the message left of the record's room.
        let mut typed = MessageBuf::new(&shared.scratch, room - text.as_bytes().len());
        let mut encoder = Encoder::new(&mut typed);
        fields(&mut encoder);
        let fields_cut = encoder.cut();

        let mut flags = what.kind.flags();
        if text.truncated() {
            flags |= record::FLAG_TRUNCATED;
        }
        if module_is_target {
            flags |= record::FLAG_MODULE_IS_TARGET;
        }
        if caller.nested {
            flags |= record::FLAG_NESTED;
        }
        if !formatted {
            flags |= record::FLAG_FORMAT_ERROR;
        }
        let field_bytes = typed.as_bytes();
        if !field_bytes.is_empty() {
            flags |= record::FLAG_FIELDS;
        }
        if fields_cut {
            flags |= record::FLAG_FIELDS_CUT;
        }
        let bytes = text.as_bytes();
        let header = Header {
            timestamp_nanos,
            thread_id: caller.thread_id,
            line,
            message_len: bytes.len() as u32,
            message_full_len: text.produced(),
            target_len: target.len() as u16,
            module_len: module.len() as u16,
            file_len: file.len() as u16,
            level: record::level_to_u8(what.level),
            flags,
            raw: what.raw.is_some(),
            ticks,
            short: false,
        };
        let len = header.record_len() + field_bytes.len();
        let is_event = what.kind == Kind::Event;
        if crate::fork::forked(shared) && !shared.ring.is_closed() {
            // A forked child: no listener to read the ring (see `crate::fork`). Events
            // are written straight to the file; span bookkeeping has nobody to serve.
            if what.raw.is_some() {
                return false;
            }
            if is_event {
                let cut = text.truncated().then_some(bytes.len() as u64);
                crate::fork::write_formatted(
                    shared,
                    what.level,
                    target,
                    caller.thread_id,
                    if ticks { now_nanos() } else { timestamp_nanos },
                    bytes,
                    cut,
                    formatted,
                    field_bytes,
                );
            }
            return true;
        }

        let may_wait = !caller.nested && !caller.is_listener;
        // Warnings and errors may use the whole ring; the rest leave the reserve free.
        let reserve = if what.level <= log::Level::Warn {
            0
        } else {
            shared.reserve_slots
        };
        // `None` until the first failed claim; then `Some(None)` for no limit.
        let mut deadline: Option<Option<Instant>> = None;
        let mut spins = 0;
        // Block mode: whether this caller is the one spinning for room (see `Room`).
        let mut spinner = false;
        // Block mode: the ticket of the sleep this caller announced (see `Room`).
        let mut ticket: Option<u32> = None;
        loop {
            match shared.ring.try_claim_leaving(len, reserve) {
                Ok(mut claim) => {
                    if spinner {
                        shared.room.end_spin();
                    }
                    if ticket.is_some() {
                        shared.room.leave();
                    }
                    claim.write(header.encode().get(..header.len()).unwrap_or_default());
                    claim.write(target.as_bytes());
                    claim.write(module.as_bytes());
                    claim.write(file.as_bytes());
                    claim.write(bytes);
                    claim.write(field_bytes);
                    claim.publish();
                    shared.waker.wake_if_sleeping();
                    if text.truncated() && is_event {
                        Counters::add(&shared.counters.truncated, 1);
                    }
                    #[cfg(feature = "test-hooks")]
                    if what.raw.is_some() {
                        crate::test_hooks::RAW_QUEUED.fetch_add(1, Ordering::Relaxed);
                    }
                    return true;
                }
                Err(reason) => {
                    // Waiting makes sense only while a listener is draining: before one
                    // starts (this thread may be the one to start it), after it died or
                    // stopped, nobody will make room.
                    let blocking = match shared.overflow {
                        Overflow::Block { timeout } => may_wait.then_some(timeout),
                        Overflow::Drop => None,
                    };
                    if let Some(timeout) = blocking {
                        let now = Instant::now();
                        // `Duration::MAX` (or anything past the clock's range): no limit.
                        let until = *deadline.get_or_insert_with(|| now.checked_add(timeout));
                        let in_time = until.is_none_or(|until| now < until);
                        let draining = shared.listener_running.load(Ordering::Acquire);
                        if in_time && draining && reason != ClaimError::Closed {
                            shared.waker.wake_if_sleeping();
                            if spins < BLOCK_SPINS && (spinner || shared.room.start_spin()) {
                                // The listener frees slots as it reads: room is usually
                                // a moment away. One caller at a time, while nobody
                                // sleeps: more only take a core from the listener.
                                spinner = true;
                                spins += 1;
                                for _ in 0..BLOCK_SPIN_PAUSES {
                                    std::hint::spin_loop();
                                }
                                continue;
                            }
                            if spinner {
                                spinner = false;
                                shared.room.end_spin();
                            }
                            match ticket.take() {
                                // Announce the sleep, then try once more before it.
                                None => ticket = Some(shared.room.enter()),
                                Some(taken) => {
                                    let left = until.map_or(MAX_ROOM_WAIT, |until| {
                                        until.saturating_duration_since(now)
                                    });
                                    shared.room.wait(taken, left.min(MAX_ROOM_WAIT));
                                    shared.room.leave();
                                }
                            }
                            continue;
                        }
                    }
                    if spinner {
                        shared.room.end_spin();
                    }
                    if ticket.is_some() {
                        shared.room.leave();
                    }
                    if !is_event {
                        // Span bookkeeping is not a record: its loss is counted apart (the
                        // events of that span then show it as unknown).
                        Counters::add(&shared.counters.span_entries_lost, 1);
                        return true;
                    }
                    let counter = match reason {
                        // The caller formats it for standard error.
                        ClaimError::Closed if what.raw.is_some() => return false,
                        ClaimError::Closed => {
                            write_after_stop(what.level, target, bytes);
                            &shared.counters.dropped_after_stop
                        }
                        ClaimError::Contended => &shared.counters.dropped_contended,
                        // The message limit keeps records within the ring, so TooLarge
                        // cannot happen; if it did, the ring had no room for it.
                        ClaimError::Full | ClaimError::TooLarge => &shared.counters.dropped_full,
                    };
                    Counters::add(counter, 1);
                    return true;
                }
            }
        }
    }
}
