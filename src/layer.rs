//! quelog as a `tracing_subscriber::Layer`: [`TracingLayer`], for programs whose
//! tracing goes through tracing-subscriber's registry, shared with other layers.

use tracing_core::span::{Attributes, Id, Record};
use tracing_core::subscriber::Interest;
use tracing_core::{Event, LevelFilter, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::handler::span_stack;
use crate::handler::QueueHandler;
use crate::stats::Counters;
use crate::subscriber;

/// quelog as a [`tracing_subscriber::Layer`], writing into a [`QueueHandler`]'s
/// queue, for a registry shared with other layers (OpenTelemetry, Sentry, metrics).
/// Get one from [`QueueHandler::tracing_layer`]; the `tracing-layer` feature (off by
/// default) brings it.
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let (handler, listener) = quelog::Builder::new().stderr(log::LevelFilter::Info).build()?;
/// let subscriber = tracing_subscriber::registry().with(handler.tracing_layer());
/// tracing::subscriber::with_default(subscriber, || {
///     let _span = tracing::info_span!("request", id = 7).entered();
///     tracing::info!(status = 200, "handled"); // request{id=7}: ...: handled status=200
/// });
/// listener.stop()?;
/// # Ok::<(), quelog::Error>(())
/// ```
///
/// # What it records
///
/// The same records as [`crate::TracingSubscriber`], so the same lines: a span's "new"
/// record (its name, its parent as the registry has it, its fields), "record" records
/// (fields recorded later, follows-from), a "close" record, and events carrying the
/// id of the span the registry says they are in; the listener rebuilds the chains.
/// Entering and leaving a span also keep quelog's own per-thread span stack, so `log`
/// records logged inside a span show its chain too.
///
/// # The registry's promises, not quelog's
///
/// With this layer the registry owns the spans, and its limits are yours; the built-in
/// [`crate::TracingSubscriber`] avoids them (its span table and per-thread span stack
/// need no thread-local destructor and serve any number of threads):
///
/// * The registry keeps per-thread state in thread-locals with destructors (its span
///   stacks, sharded-slab's thread ids). Spans created inside another thread-local's
///   destructor, once those are gone, can panic in the registry (tracing#3239).
/// * sharded-slab, under the registry's span storage, serves a fixed number of
///   threads alive at once (4096 by default); creating a span on one more panics.
/// * Creating a span allocates and takes locks in the registry; the event path goes
///   through the registry's thread-local span stack.
///
/// quelog's own part (capturing an event or a span record into the ring) is the
/// same lock-free, allocation-free path as the subscriber's.
///
/// # Span ids
///
/// The ids in the records are the registry's, and the registry hands a closed span's
/// id to a new span again (a slot's id comes back once its generation counter wraps,
/// after some thousands of spans in that slot). quelog's listener is fine with that:
/// the registry frees a span only after every layer's `on_close` returned, so this
/// layer's "close" record is in the ring before the "new" record of any span reusing
/// the id.
///
/// # Level
///
/// `enabled` and `register_callsite` answer by quelog's level and filter
/// ([`crate::Builder::filter`], `RUST_LOG`: per callsite, by target and level), which
/// makes them a filter for the whole stack when the layer is added as it is: tracing-subscriber
/// disables, for every layer, what one layer's `enabled` refuses. For other layers to
/// see more than quelog logs, add this one with a per-layer filter at quelog's level
/// (or stricter), such as `handler.tracing_layer().with_filter(LevelFilter::INFO)` for
/// a queue at `Info` (tracing-subscriber's `Layer::with_filter`): the filter then
/// decides for this layer alone, and what it lets through quelog takes.
#[derive(Debug, Clone)]
pub struct TracingLayer {
    handler: QueueHandler,
}

impl QueueHandler {
    /// A `tracing_subscriber::Layer` writing into this queue (the same queue as the
    /// `log` records this handler takes: one file, one order). See [`TracingLayer`].
    pub fn tracing_layer(&self) -> TracingLayer {
        TracingLayer {
            handler: self.clone(),
        }
    }
}

impl<S> Layer<S> for TracingLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        subscriber::interest(&self.handler, meta)
    }

    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        subscriber::enabled(&self.handler, meta)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(subscriber::level_hint(&self.handler))
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        // The registry decided the parent (explicit, or the current span), and with a
        // per-layer filter, skips the parents this layer does not see.
        let parent = ctx
            .span(id)
            .and_then(|span| span.parent())
            .map_or(0, |parent| parent.id().into_u64());
        Counters::add(&self.handler.shared.counters.spans_created, 1);
        subscriber::push_new_span(&self.handler, attrs, id.into_u64(), parent);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            subscriber::push_span_values(&self.handler, span.metadata(), id.into_u64(), values);
        }
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            subscriber::push_follows(
                &self.handler,
                span.metadata(),
                id.into_u64(),
                follows.into_u64(),
            );
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let span = ctx.event_span(event).map(|span| span.id().into_u64());
        subscriber::push_event(&self.handler, event, span);
    }

    fn on_enter(&self, id: &Id, _: Context<'_, S>) {
        span_stack::enter(id.into_u64());
    }

    fn on_exit(&self, id: &Id, _: Context<'_, S>) {
        span_stack::exit(id.into_u64());
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        Counters::add(&self.handler.shared.counters.spans_closed, 1);
        // The registry still holds the span here: it frees it after the last layer.
        if let Some(meta) = ctx.metadata(&id) {
            subscriber::push_close(&self.handler, meta, id.into_u64());
        }
    }
}
