//! quelog's `tracing_subscriber::Layer` ([`quelog::TracingLayer`]) in a registry next
//! to another layer, as an OpenTelemetry or Sentry layer would sit: both see every
//! event, and quelog's file has each event with its span chain.
//!
//! The `tracing-layer` feature is off by default; the crate's dev-dependency on itself
//! turns it on, so `cargo test` runs this suite (and without the feature it is empty).

#![cfg(feature = "tracing-layer")]

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use log::{LevelFilter, Log, Record};
use quelog::{Builder, QueueHandler, QueueListener, SyncPolicy};
use support::common::lines;
use tracing::field::{Field, Visit};
use tracing::{debug, info, info_span, Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

const THREADS: usize = 2;
const EVENTS: usize = 300;

/// A layer that counts what it sees, as another backend sharing the registry would.
#[derive(Clone, Default)]
struct Counting {
    seen: Arc<Seen>,
}

#[derive(Default)]
struct Seen {
    events: AtomicUsize,
    debug_events: AtomicUsize,
    /// "request handled" events whose span scope was outer > inner and whose `a` field
    /// came through.
    handled_in_chain: AtomicUsize,
    closed: AtomicUsize,
    /// The span chains of the events without a field `a`, root first.
    other_chains: Mutex<Vec<String>>,
}

/// Picks the `a` field of an event.
struct FieldA(Option<u64>);

impl Visit for FieldA {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "a" {
            self.0 = Some(value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "a" {
            self.0 = u64::try_from(value).ok();
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

impl<S> Layer<S> for Counting
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        self.seen.events.fetch_add(1, Ordering::Relaxed);
        if *event.metadata().level() == tracing::Level::DEBUG {
            self.seen.debug_events.fetch_add(1, Ordering::Relaxed);
        }
        let chain: Vec<&str> = ctx
            .event_span(event)
            .map(|span| span.scope().from_root().map(|s| s.name()).collect())
            .unwrap_or_default();
        let mut a = FieldA(None);
        event.record(&mut a);
        if a.0.is_some() {
            if chain == ["outer", "inner"] {
                self.seen.handled_in_chain.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            self.seen.other_chains.lock().unwrap().push(chain.join(":"));
        }
    }

    fn on_close(&self, _: tracing::span::Id, _: Context<'_, S>) {
        self.seen.closed.fetch_add(1, Ordering::Relaxed);
    }
}

fn quelog(name: &str, level: LevelFilter) -> (std::path::PathBuf, QueueHandler, QueueListener) {
    let path = support::common::temp_log("tracing_layer", name);
    let (handler, listener) = Builder::new()
        .file(&path)
        .sync(SyncPolicy::Never)
        .capacity(16 << 20)
        .level(level)
        .build()
        .unwrap();
    (path, handler, listener)
}

/// A `log` record straight to the handler (the global logger is not installed here).
fn log_record(handler: &QueueHandler, message: &str) {
    handler.log(
        &Record::builder()
            .level(log::Level::Info)
            .target("app::log")
            .args(format_args!("{message}"))
            .build(),
    );
}

#[test]
fn events_in_nested_spans_reach_quelog_with_their_chain_and_the_other_layer_too() {
    let (path, handler, listener) = quelog("nested.log", LevelFilter::Info);
    let counting = Counting::default();
    let subscriber = tracing_subscriber::registry()
        .with(handler.tracing_layer())
        .with(counting.clone());
    let dispatch = tracing::Dispatch::new(subscriber);

    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (dispatch, handler) = (&dispatch, &handler);
            s.spawn(move || {
                tracing::dispatcher::with_default(dispatch, || {
                    let outer = info_span!("outer", id = 1, thread = t);
                    let _outer = outer.clone().entered();
                    for i in 0..EVENTS {
                        // A span per event: the registry reuses the slots (and ids) of
                        // closed spans all along.
                        let inner = info_span!("inner", n = 2, late = tracing::field::Empty);
                        inner.record("late", i);
                        let _inner = inner.entered();
                        info!(a = i, b = "x", "request handled");
                        debug!(a = i, "below quelog's level: nobody sees it");
                    }
                    info!("in outer only");
                    log_record(handler, "a log record in outer");
                    drop(_outer);
                    info!(parent: &outer, "explicit parent, not entered");
                    let later = info_span!("later");
                    later.follows_from(&outer);
                    let _later = later.entered();
                    info!(parent: None, "a root event inside a span");
                });
            });
        }
    });

    let stats = listener.stop().unwrap();
    let lines = lines(&path);
    let events = THREADS * (EVENTS + 3) + THREADS; // + the log records
    assert_eq!(lines.len(), events, "{lines:#?}");
    assert_eq!(stats.dropped.total(), 0);
    for t in 0..THREADS {
        for i in 0..EVENTS {
            let want = format!(
                "outer{{id=1 thread={t}}}:inner{{n=2 late={i}}}: tracing_layer: request handled a={i} b=\"x\""
            );
            assert_eq!(
                lines.iter().filter(|l| l.ends_with(&want)).count(),
                1,
                "{want}"
            );
        }
        let outer = format!("outer{{id=1 thread={t}}}: ");
        for tail in [
            "tracing_layer: in outer only",
            "app::log: a log record in outer",
            "tracing_layer: explicit parent, not entered",
        ] {
            let want = format!("{outer}{tail}");
            assert!(lines.iter().any(|l| l.ends_with(&want)), "{want}");
        }
    }
    let root: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("a root event"))
        .collect();
    assert_eq!(root.len(), THREADS);
    assert!(root
        .iter()
        .all(|l| l.contains("] tracing_layer: a root event")));
    assert!(!lines.iter().any(|l| l.contains("nobody sees it")));

    // The other layer saw the same events (the `log` record is not tracing's), in the
    // same spans.
    let seen = &counting.seen;
    assert_eq!(seen.events.load(Ordering::Relaxed), THREADS * (EVENTS + 3));
    assert_eq!(seen.debug_events.load(Ordering::Relaxed), 0);
    assert_eq!(
        seen.handled_in_chain.load(Ordering::Relaxed),
        THREADS * EVENTS
    );
    let mut chains = seen.other_chains.lock().unwrap().clone();
    chains.sort();
    let mut want = Vec::new();
    for _ in 0..THREADS {
        want.extend(["", "outer", "outer"]);
    }
    want.sort();
    assert_eq!(chains, want);

    // quelog counted the registry's spans: outer, the inners and later, per thread.
    let spans = (THREADS * (EVENTS + 2)) as u64;
    assert_eq!(stats.spans.created, spans);
    assert_eq!(stats.spans.closed, spans);
    assert_eq!(seen.closed.load(Ordering::Relaxed) as u64, spans);
    assert_eq!(stats.spans.lost, 0);
}

#[test]
fn quelogs_level_filters_the_stack_unless_the_layer_has_its_own_filter() {
    // Added as it is, quelog's `enabled` is a global filter: the other layer misses
    // the debug events too.
    let (path, handler, listener) = quelog("global.log", LevelFilter::Info);
    let counting = Counting::default();
    let subscriber = tracing_subscriber::registry()
        .with(handler.tracing_layer())
        .with(counting.clone());
    tracing::subscriber::with_default(subscriber, || {
        let _span = info_span!("outer", id = 1).entered();
        info!(a = 1u64, "kept");
        debug!(a = 2u64, "filtered");
    });
    listener.stop().unwrap();
    assert_eq!(lines(&path).len(), 1);
    assert_eq!(counting.seen.events.load(Ordering::Relaxed), 1);

    // With a per-layer filter at quelog's level, the other layer gets everything and
    // quelog what its level takes.
    let (path, handler, listener) = quelog("filtered.log", LevelFilter::Info);
    let counting = Counting::default();
    let subscriber = tracing_subscriber::registry()
        .with(
            handler
                .tracing_layer()
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        )
        .with(counting.clone());
    tracing::subscriber::with_default(subscriber, || {
        let _span = info_span!("outer", id = 1).entered();
        let _debug_span = tracing::debug_span!("hidden", n = 2).entered();
        info!(a = 1u64, "kept");
        debug!(a = 2u64, "filtered");
    });
    let stats = listener.stop().unwrap();
    let lines = lines(&path);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    // The debug span is not quelog's: its event shows the chain quelog sees.
    assert!(
        lines[0].ends_with("outer{id=1}: tracing_layer: kept a=1"),
        "{}",
        lines[0]
    );
    assert_eq!(stats.spans.created, 1);
    assert_eq!(counting.seen.events.load(Ordering::Relaxed), 2);
    assert_eq!(counting.seen.debug_events.load(Ordering::Relaxed), 1);
}

/// Records the id of every span it sees created.
#[derive(Clone, Default)]
struct Ids(Arc<Mutex<Vec<u64>>>);

impl<S> Layer<S> for Ids
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        _: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _: Context<'_, S>,
    ) {
        self.0.lock().unwrap().push(id.into_u64());
    }
}

#[test]
fn registry_ids_reused_after_close_keep_each_event_in_its_own_span() {
    const SPANS: usize = 20_000;
    let (path, handler, listener) = quelog("reuse.log", LevelFilter::Info);
    let ids = Ids::default();
    let subscriber = tracing_subscriber::registry()
        .with(handler.tracing_layer())
        .with(ids.clone());
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..SPANS {
            let _job = info_span!("job", n = i).entered();
            info!("in job");
        }
    });
    let stats = listener.stop().unwrap();
    // One slot serves every span here; its generation wraps, so ids come back.
    let ids = ids.0.lock().unwrap();
    let distinct: HashSet<&u64> = ids.iter().collect();
    assert_eq!(ids.len(), SPANS);
    assert!(
        distinct.len() < SPANS,
        "no id was reused: the test tests nothing"
    );
    let lines = lines(&path);
    assert_eq!(lines.len(), SPANS);
    assert_eq!(stats.dropped.total() + stats.spans.lost, 0);
    for (i, line) in lines.iter().enumerate() {
        let want = format!("job{{n={i}}}: tracing_layer: in job");
        assert!(line.ends_with(&want), "{line}, want {want}");
    }
}
