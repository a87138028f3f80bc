//! quelog as a `tracing` subscriber: [`TracingSubscriber`], capture on the caller for
//! tracing's events and spans (the same room as [`crate::QueueHandler`] for `log`).
//!
//! # What travels through the ring
//!
//! Events and spans go through the same ring as `log` records, with their fields
//! typed ([`crate::record::fields`]): integers, floats, bools and strings as such,
//! `Debug` values formatted on the caller into ring space, never the heap. A span is
//! records of its own: "new" (name, parent, fields), "record" (more fields, a
//! follows-from) and "close"; an event carries only its current span's id, and the
//! listener rebuilds the chain ([`crate::layout::Spans`]), so an event's cost does not
//! grow with span depth. A span record that finds no room in the ring is counted
//! ([`crate::Stats::spans`]), and the events inside that span show it as `?`.
//!
//! # The promises, where tracing allows them
//!
//! * Recording an event, entering and exiting a span: no lock, no allocation, no
//!   panic, bounded steps: the `log` producer path with a different front.
//! * Creating a span may allocate only while the span table grows past its
//!   preallocated size ([`crate::spans`]); cloning and closing never allocate. Span
//!   ids are never reused while a handle to the span is alive.
//! * The current span of each thread lives in const-initialised thread-local storage
//!   without a destructor ([`crate::handler::span_stack`]), so spans work inside
//!   thread-local destructors and on any number of threads (where
//!   tracing-subscriber's registry panics: tracing#3239, sharded-slab's thread limit).
//! * Reentrancy: a field whose `Debug` logs (through `tracing` or `log`) while an
//!   event is being recorded nests like a `log` call that logs: no `RefCell`, no lock.
//!
//! With the `tracing-layer` feature, `TracingLayer` records the same things
//! as a layer of tracing-subscriber's registry, for programs that share one with other
//! layers; the registry's limits then apply (see there).
//!
//! What is **not** signal-safe: tracing's macros register their callsite on first use,
//! which can take a lock and allocate. Use `log`'s macros in signal handlers; they
//! are safe through quelog, also while quelog is the tracing subscriber.

use std::num::NonZeroU64;

use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Current, Id, Record};
use tracing_core::subscriber::Interest;
use tracing_core::{Event, Level, LevelFilter, Metadata, Subscriber};

use crate::handler::capture::Capture;
use crate::handler::message::MessageBuf;
use crate::handler::span_stack;
use crate::handler::QueueHandler;
use crate::queue::Shared;
use crate::record::fields::Encoder;
use crate::record::Kind;
use crate::spans::Release;
use crate::stats::Counters;

/// The id handed out when the span table is full: never live, so events inside it
/// show an unknown span, and clones and closes of it do nothing.
const NO_SPAN: u64 = u64::MAX;

/// quelog's `tracing_core::Subscriber`, writing into a [`QueueHandler`]'s queue.
///
/// [`crate::Builder::install`] sets one as the global default dispatcher; to set it
/// yourself, get one from [`QueueHandler::tracing_subscriber`]:
///
/// ```
/// let (handler, listener) = quelog::Builder::new().stderr(log::LevelFilter::Info).build()?;
/// let dispatch = tracing_core::Dispatch::new(handler.tracing_subscriber());
/// tracing_core::dispatcher::with_default(&dispatch, || {
///     // tracing::info!(answer = 42, "hello") goes to quelog here
/// });
/// listener.stop()?;
/// # Ok::<(), quelog::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct TracingSubscriber {
    handler: QueueHandler,
}

impl QueueHandler {
    /// A tracing subscriber writing into this queue (the same queue as the `log`
    /// records this handler takes: one file, one order).
    pub fn tracing_subscriber(&self) -> TracingSubscriber {
        TracingSubscriber {
            handler: self.clone(),
        }
    }
}

/// tracing's level as `log`'s (the same five).
fn level(level: &Level) -> log::Level {
    match *level {
        Level::ERROR => log::Level::Error,
        Level::WARN => log::Level::Warn,
        Level::INFO => log::Level::Info,
        Level::DEBUG => log::Level::Debug,
        Level::TRACE => log::Level::Trace,
    }
}

// ---------------------------------------------------------------------------------
// What the subscriber and the layer ([`crate::TracingLayer`]) share: the level, and
// the records they queue. They differ only in where span ids, span metadata and the
// current span come from (quelog's span table and span stack, or the registry's).

/// Whether `handler`'s filter takes `meta` (its level and target).
pub(crate) fn enabled(handler: &QueueHandler, meta: &Metadata<'_>) -> bool {
    let shared = &handler.shared;
    let level = level(meta.level());
    level <= shared.level && shared.filter.enabled(level, meta.target())
}

/// The interest of a callsite: the filter never changes after the queue is built, so
/// tracing may cache this per callsite (a disabled event then costs tracing's own
/// check alone).
pub(crate) fn interest(handler: &QueueHandler, meta: &'static Metadata<'static>) -> Interest {
    if enabled(handler, meta) {
        Interest::always()
    } else {
        Interest::never()
    }
}

/// `handler`'s level as tracing's.
pub(crate) fn level_hint(handler: &QueueHandler) -> LevelFilter {
    match handler.level() {
        log::LevelFilter::Off => LevelFilter::OFF,
        log::LevelFilter::Error => LevelFilter::ERROR,
        log::LevelFilter::Warn => LevelFilter::WARN,
        log::LevelFilter::Info => LevelFilter::INFO,
        log::LevelFilter::Debug => LevelFilter::DEBUG,
        log::LevelFilter::Trace => LevelFilter::TRACE,
    }
}

/// Queues one record for `meta`: the message from `message`, the fields from
/// `fields`.
fn push(
    handler: &QueueHandler,
    meta: &Metadata<'_>,
    kind: Kind,
    message: impl FnOnce(&mut MessageBuf<'_>) -> bool,
    fields: impl FnOnce(&mut Encoder<'_, MessageBuf<'_>>),
) {
    let what = Capture {
        level: level(meta.level()),
        kind,
        target: meta.target(),
        module: meta.module_path(),
        file: meta.file(),
        line: meta.line(),
        raw: None,
    };
    handler.push(&what, message, fields);
}

/// The "new" record of span `id` (`parent` 0: a root span): its name, parent and
/// fields.
pub(crate) fn push_new_span(handler: &QueueHandler, attrs: &Attributes<'_>, id: u64, parent: u64) {
    let meta = attrs.metadata();
    push(
        handler,
        meta,
        Kind::SpanNew,
        |message| {
            fmt_write(message, meta.name());
            true
        },
        |encoder| {
            encoder.span_context(id);
            if parent != 0 {
                encoder.span_parent(parent);
            }
            attrs.record(&mut FieldVisitor {
                encoder,
                skip_message: false,
            });
        },
    );
}

/// A bookkeeping record about span `id`, created with `meta`: "record" or "close".
fn push_span(
    handler: &QueueHandler,
    meta: &Metadata<'_>,
    id: u64,
    kind: Kind,
    fields: impl FnOnce(&mut Encoder<'_, MessageBuf<'_>>),
) {
    push(
        handler,
        meta,
        kind,
        |_| true,
        |encoder| {
            encoder.span_context(id);
            fields(encoder);
        },
    );
}

/// The "record" record of span `id`: fields recorded after its creation.
pub(crate) fn push_span_values(
    handler: &QueueHandler,
    meta: &Metadata<'_>,
    id: u64,
    values: &Record<'_>,
) {
    push_span(handler, meta, id, Kind::SpanRecord, |encoder| {
        values.record(&mut FieldVisitor {
            encoder,
            skip_message: false,
        });
    });
}

/// The "record" record saying span `id` follows from span `follows`.
pub(crate) fn push_follows(handler: &QueueHandler, meta: &Metadata<'_>, id: u64, follows: u64) {
    push_span(handler, meta, id, Kind::SpanRecord, |encoder| {
        encoder.follows(follows)
    });
}

/// The "close" record of span `id`.
pub(crate) fn push_close(handler: &QueueHandler, meta: &Metadata<'_>, id: u64) {
    push_span(handler, meta, id, Kind::SpanClose, |_| {});
}

/// An event, logged inside span `span` (`None`: outside any).
pub(crate) fn push_event(handler: &QueueHandler, event: &Event<'_>, span: Option<u64>) {
    push(
        handler,
        event.metadata(),
        Kind::Event,
        |message| {
            let mut visitor = MessageVisitor {
                message,
                formatted: true,
            };
            event.record(&mut visitor);
            visitor.formatted
        },
        |encoder| {
            if let Some(span) = span {
                encoder.span_context(span);
            }
            event.record(&mut FieldVisitor {
                encoder,
                skip_message: true,
            });
        },
    );
}

// ---------------------------------------------------------------------------------
// The subscriber.

impl TracingSubscriber {
    fn shared(&self) -> &Shared {
        &self.handler.shared
    }

    /// The metadata a live span was created with.
    fn span_metadata(&self, id: u64) -> Option<&'static Metadata<'static>> {
        let address = self.shared().spans.data(NonZeroU64::new(id)?)?;
        // SAFETY: `new_span` stores the address of a `&'static Metadata<'static>` and
        // nothing else; `data` hands it back only while the span is live.
        Some(unsafe { &*(address as usize as *const Metadata<'static>) })
    }
}

impl Subscriber for TracingSubscriber {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        interest(&self.handler, meta)
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        enabled(&self.handler, meta)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(level_hint(&self.handler))
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let meta = attrs.metadata();
        let shared = self.shared();
        let Some(id) = shared
            .spans
            .create(meta as *const Metadata<'static> as usize as u64)
        else {
            Counters::add(&shared.counters.spans_refused, 1);
            return Id::from_u64(NO_SPAN);
        };
        let id = id.get();
        Counters::add(&shared.counters.spans_created, 1);
        let parent = match attrs.parent() {
            Some(parent) => parent.into_u64(),
            None if attrs.is_contextual() => span_stack::current().unwrap_or(0),
            None => 0,
        };
        push_new_span(&self.handler, attrs, id, parent);
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let id = span.into_u64();
        if let Some(meta) = self.span_metadata(id) {
            push_span_values(&self.handler, meta, id, values);
        }
    }

    fn record_follows_from(&self, span: &Id, follows: &Id) {
        let id = span.into_u64();
        if let Some(meta) = self.span_metadata(id) {
            push_follows(&self.handler, meta, id, follows.into_u64());
        }
    }

    fn event(&self, event: &Event<'_>) {
        let span = match event.parent() {
            Some(parent) => Some(parent.into_u64()),
            None if event.is_contextual() => span_stack::current(),
            None => None,
        };
        push_event(&self.handler, event, span);
    }

    fn enter(&self, span: &Id) {
        span_stack::enter(span.into_u64());
    }

    fn exit(&self, span: &Id) {
        span_stack::exit(span.into_u64());
    }

    fn clone_span(&self, id: &Id) -> Id {
        if self.shared().spans.clone_ref(id.into_non_zero_u64()) {
            id.clone()
        } else {
            // The reference was not taken (a stale id, a full count, or too many lost
            // races): hand out the id that is never live, so that dropping this clone
            // cannot release a reference it never had and close the span early.
            Id::from_u64(NO_SPAN)
        }
    }

    fn try_close(&self, id: Id) -> bool {
        let shared = self.shared();
        let handle = id.into_non_zero_u64();
        let id = handle.get();
        // Read before the release frees the slot.
        let meta = self.span_metadata(id);
        match shared.spans.release(handle) {
            Release::Closed => {
                Counters::add(&shared.counters.spans_closed, 1);
                if let Some(meta) = meta {
                    push_close(&self.handler, meta, id);
                }
                true
            }
            Release::StillOpen | Release::Unknown => false,
        }
    }

    fn current_span(&self) -> Current {
        match span_stack::current().and_then(|id| Some((id, self.span_metadata(id)?))) {
            Some((id, meta)) => Current::new(Id::from_u64(id), meta),
            None => Current::none(),
        }
    }
}

/// Appends `text` to the message buffer (cut if it does not fit).
fn fmt_write(message: &mut MessageBuf<'_>, text: &str) {
    let _ = std::fmt::Write::write_str(message, text);
}

/// Picks the `message` field of an event into the message buffer.
struct MessageVisitor<'m, 'p> {
    message: &'m mut MessageBuf<'p>,
    formatted: bool,
}

impl Visit for MessageVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            fmt_write(self.message, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            // The message is `format_args!(...)`: its Debug is its Display.
            self.formatted = self.message.format(&format_args!("{value:?}"));
        }
    }
}

/// Encodes the fields of an event or span, typed.
struct FieldVisitor<'e, 's, 'p> {
    encoder: &'e mut Encoder<'s, MessageBuf<'p>>,
    /// Events: the message went to the message buffer already.
    skip_message: bool,
}

impl FieldVisitor<'_, '_, '_> {
    fn wanted(&self, field: &Field) -> bool {
        !(self.skip_message && field.name() == "message")
    }
}

impl Visit for FieldVisitor<'_, '_, '_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.wanted(field) {
            self.encoder.f64(field.name(), value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.wanted(field) {
            self.encoder.i64(field.name(), value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.wanted(field) {
            self.encoder.u64(field.name(), value);
        }
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        if self.wanted(field) {
            self.encoder.i128(field.name(), value);
        }
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        if self.wanted(field) {
            self.encoder.u128(field.name(), value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.wanted(field) {
            self.encoder.bool(field.name(), value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.wanted(field) {
            self.encoder.str(field.name(), value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.wanted(field) {
            self.encoder.display(field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.wanted(field) {
            self.encoder.debug(field.name(), value);
        }
    }
}
