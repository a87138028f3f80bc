//! quelog as the global tracing subscriber, through `Builder::install()`: typed
//! fields in the text layout, spans and their chains, reentrancy, a signal storm,
//! `log` and `tracing` together, filtering through tracing's callsite cache.
//!
//! `install` sets the global `log` logger and the global default tracing dispatcher,
//! each once per process, so every test runs its scenario in a child process: this
//! binary re-executes itself with the test's name as the filter (see
//! `support/child.rs`) under a watchdog that kills it when it stops making progress (a
//! hang is the failure) and prints its threads' stacks with gdb when it can.
//!
//! Each child prints a `MEASURED ...` line with its numbers; the parent repeats it
//! (visible with `--nocapture`).

mod support;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use support::common::{lines, temp_log};
use support::storm::child::{self, Run, Watch};
use tracing::{info_span, Span};

const SUITE: &str = "tracing";

/// Runs `scenario` in a child process when called from the test `test_name` in the
/// parent (and returns what the child did, after asserting it succeeded); in the child,
/// runs `scenario` and returns `None`.
fn in_child(test_name: &str, scenario: impl FnOnce()) -> Option<Run> {
    let watch = Watch {
        stall: Duration::from_secs(20),
        total: Duration::from_secs(50),
        stacks: true,
    };
    in_child_watched(test_name, watch, scenario)
}

fn in_child_watched(test_name: &str, watch: Watch, scenario: impl FnOnce()) -> Option<Run> {
    let run = child::in_child(test_name, None, watch, scenario)?;
    child::echo_measured(test_name, &run);
    Some(run)
}

/// Installs quelog (log logger and tracing dispatcher) writing a fresh file.
fn install(name: &str, level: log::LevelFilter) -> (quelog::Guard, PathBuf) {
    install_with(name, quelog::Builder::new().level(level))
}

fn install_with(name: &str, builder: quelog::Builder) -> (quelog::Guard, PathBuf) {
    let path = temp_log(SUITE, name);
    let guard = builder.file(&path).install().expect("install quelog");
    (guard, path)
}

/// Removes the directory `temp_log` made for `path` (only after a passing scenario: a
/// failing one panics before this and keeps its file).
fn remove_log(path: &Path) {
    if let Some(dir) = path.parent().and_then(Path::parent) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// What follows "] " on a line: the span chain, the target, the message, the fields.
fn body(line: &str) -> &str {
    line.split_once("] ").map_or(line, |(_, body)| body)
}

/// The index of the one line whose body is `expected`, or a panic showing the file.
fn expect_body(lines: &[String], expected: &str) -> usize {
    let found: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| body(line) == expected)
        .map(|(at, _)| at)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{} lines are {expected:?} (want exactly one); the file:\n{}",
        found.len(),
        lines.join("\n")
    );
    found[0]
}

/// Lines of records (not quelog's own notices).
fn record_lines(lines: &[String]) -> usize {
    lines.iter().filter(|l| !l.contains("] quelog: ")).count()
}

/// Stops quelog and checks the books: nothing dropped, everything enqueued written,
/// the file holds exactly the written records, every span created was closed and no
/// span bookkeeping was lost.
fn stop_and_account(guard: quelog::Guard, path: &Path) -> (quelog::Stats, Vec<String>) {
    let stats = guard.stop().expect("stop");
    let lines = lines(path);
    assert_eq!(stats.dropped.total(), 0, "{stats:?}");
    assert_eq!(stats.written, stats.enqueued, "{stats:?}");
    assert_eq!(stats.written as usize, record_lines(&lines), "{stats:?}");
    let spans = stats.spans;
    assert_eq!(spans.created, spans.closed, "{spans:?}");
    assert_eq!(
        (spans.refused, spans.lost, spans.leaked),
        (0, 0, 0),
        "{spans:?}"
    );
    (stats, lines)
}

/// Overflow::Block for the scenarios that log in bulk: a producer faster than the
/// listener waits instead of dropping, so every count is exact.
fn blocking() -> quelog::Overflow {
    quelog::Overflow::Block {
        timeout: Duration::from_secs(10),
    }
}

/// The calling thread's current span as the dispatcher answers it: name and id.
fn current() -> Option<(&'static str, tracing::Id)> {
    tracing::dispatcher::get_default(|dispatch| {
        let current = dispatch.current_span();
        Some((current.metadata()?.name(), current.id()?.clone()))
    })
}

// ---------------------------------------------------------------------------------
// 1. Typed fields in the text layout.

/// Read only through its `Debug`.
#[derive(Debug)]
#[allow(dead_code)]
struct Point {
    x: i32,
    y: i32,
}

struct Shown;

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("shown with Display")
    }
}

#[derive(Debug)]
struct Broke;

impl fmt::Display for Broke {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the disk broke")
    }
}

impl std::error::Error for Broke {}

/// A `Debug` over two lines, a `Display` with a CRLF: one record must stay one line.
struct TwoLines;

impl fmt::Debug for TwoLines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("first\nsecond")
    }
}

impl fmt::Display for TwoLines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a\r\nb")
    }
}

#[test]
fn typed_fields_land_in_the_text_layout() {
    in_child("typed_fields_land_in_the_text_layout", || {
        let (guard, path) = install("typed", log::LevelFilter::Info);
        let error = Broke;
        tracing::info!(
            target: "typed",
            int = -42i64,
            uint = u64::MAX,
            wide = i128::MIN,
            float = 2.5f64,
            nan = f64::NAN,
            yes = true,
            no = false,
            text = "say \"hi\" \\ and\nmore\ttab",
            debug = ?Point { x: 1, y: -2 },
            debug_str = ?"a \"q\"",
            display = %Shown,
            error = &error as &(dyn std::error::Error + 'static),
            "the message {}",
            7
        );
        tracing::warn!(
            target: "typed",
            pretty = ?TwoLines,
            shown = %TwoLines,
            "line one\nline two"
        );
        tracing::info!(target: "typed", only = 1u64);
        guard.flush().unwrap();
        let (stats, lines) = stop_and_account(guard, &path);
        assert_eq!(stats.written, 3, "{stats:?}");
        // Exactly three lines: the newlines and CRs inside were escaped.
        assert_eq!(lines.len(), 3, "{lines:?}");
        let first = expect_body(
            &lines,
            concat!(
                "typed: the message 7 int=-42 uint=18446744073709551615 ",
                "wide=-170141183460469231731687303715884105728 float=2.5 nan=NaN ",
                "yes=true no=false ",
                r#"text="say \"hi\" \\ and\nmore\ttab" "#,
                "debug=Point { x: 1, y: -2 } ",
                r#"debug_str="a \"q\"" "#,
                "display=shown with Display error=the disk broke"
            ),
        );
        assert!(lines[first].contains(" INFO ["), "{}", lines[first]);
        assert!(!lines[first].contains("message="), "{}", lines[first]);
        let second = expect_body(
            &lines,
            r"typed: line one\nline two pretty=first\nsecond shown=a\r\nb",
        );
        assert!(lines[second].contains(" WARN ["), "{}", lines[second]);
        // No message: the fields follow the target.
        expect_body(&lines, "typed: only=1");
        println!("MEASURED 3 events, 3 lines, {} bytes", stats.bytes);
        remove_log(&path);
    });
}

// ---------------------------------------------------------------------------------
// 2. Spans.

#[test]
fn spans_new_enter_exit_record_follows_from_clone_close() {
    in_child(
        "spans_new_enter_exit_record_follows_from_clone_close",
        || {
            let (guard, path) = install("spans", log::LevelFilter::Info);
            assert!(current().is_none());
            assert!(Span::current().is_none());

            let outer = info_span!("outer", a = 1);
            let inner = info_span!(
                parent: &outer,
                "inner",
                b = "two",
                late = tracing::field::Empty
            );
            {
                let _outer = outer.enter();
                assert_eq!(current(), Some(("outer", outer.id().unwrap())));
                let _inner = inner.enter();
                assert_eq!(current(), Some(("inner", inner.id().unwrap())));
                assert_eq!(Span::current().id(), inner.id());
                assert_eq!(Span::current().metadata().unwrap().name(), "inner");
                tracing::info!(answer = 42, "in both");
                log::info!("a log record in both");
                // A span created here has the current span as its parent.
                let contextual = info_span!("contextual", c = 3);
                contextual.in_scope(|| tracing::info!("in the contextual child"));
            }
            assert!(current().is_none());
            tracing::info!("outside again");

            // Span::record: later events show the field in the chain; follows_from adds
            // nothing to the chain and takes nothing from its fields.
            inner.record("late", 7);
            let other = info_span!("other");
            inner.follows_from(&other);
            inner.in_scope(|| tracing::info!("after record"));

            // Exits out of order: the one still entered stays current.
            let first = outer.clone().entered();
            let second = other.clone().entered();
            drop(first);
            assert_eq!(current(), Some(("other", other.id().unwrap())));
            drop(second);
            assert!(current().is_none());

            // Clones keep a span open: the original dropped, a clone still logs into it.
            let clone = inner.clone();
            drop(inner);
            tracing::info!(parent: &clone, "through the clone");

            // A closed span's id is dead: closing it again does nothing, also to the span
            // created next (which may reuse its slot).
            let gone = info_span!("gone");
            let gone_id = gone.id().unwrap();
            drop(gone);
            let next = info_span!("next", n = 1);
            let closed_again = tracing::dispatcher::get_default(|d| d.try_close(gone_id.clone()));
            assert!(!closed_again, "a closed span was closed twice");
            next.in_scope(|| tracing::info!("next is still open"));
            drop(next);

            // Nesting across threads through explicit parents.
            let request = info_span!("request", id = 9u64);
            std::thread::scope(|s| {
                for w in 0..3u64 {
                    let request = &request;
                    s.spawn(move || {
                        let worker = info_span!(parent: request, "worker", w);
                        let _entered = worker.enter();
                        assert_eq!(current(), Some(("worker", worker.id().unwrap())));
                        tracing::info!("working {w}");
                        tracing::info!(parent: request, "to the request from {w}");
                        tracing::info!(parent: None, "a root event from {w}");
                        log::info!("log in worker {w}");
                    });
                }
            });
            // A child outlives its parent's handles: the parent stays open for it, as
            // tracing-subscriber's registry keeps it, so the chain stays whole.
            let orphan = {
                let parent = info_span!(parent: &request, "short_parent", p = 1);
                info_span!(parent: &parent, "outliving_child")
            };
            std::thread::spawn(move || {
                orphan.in_scope(|| tracing::info!("the parent's handles are gone"))
            })
            .join()
            .unwrap();
            // A span moved to another thread and entered there.
            let moved = info_span!(parent: &request, "moved");
            std::thread::spawn(move || moved.in_scope(|| tracing::info!("entered elsewhere")))
                .join()
                .unwrap();

            // Ids are not reused while a handle is alive: hold a clone, drop the original,
            // create many spans (up to 5,001 alive at once, so the table grows past its
            // 4,096 preallocated slots, and reuses freed slots).
            let original = info_span!("held", k = 1u64);
            let held = original.clone();
            let held_id = held.id().unwrap();
            drop(original);
            let mut alive = VecDeque::new();
            let mut same_id = 0;
            for i in 0..20_000u64 {
                let span = info_span!("churn", i);
                if span.id().as_ref() == Some(&held_id) {
                    same_id += 1;
                }
                alive.push_back(span);
                if alive.len() > 5_000 {
                    alive.pop_front();
                }
            }
            drop(alive);
            assert_eq!(same_id, 0, "a new span got the id of a live one");
            tracing::info!(parent: &held, "the held span lives on");
            drop(held);
            drop((clone, outer, other, request));

            guard.flush().unwrap();
            let (stats, lines) = stop_and_account(guard, &path);
            let inner_chain = r#"outer{a=1}:inner{b="two"}"#;
            let both = expect_body(
                &lines,
                &format!("{inner_chain}: tracing: in both answer=42"),
            );
            let log_in_both = expect_body(
                &lines,
                &format!("{inner_chain}: tracing: a log record in both"),
            );
            assert!(both < log_in_both);
            expect_body(
                &lines,
                &format!("{inner_chain}:contextual{{c=3}}: tracing: in the contextual child"),
            );
            expect_body(&lines, "tracing: outside again");
            let recorded = r#"outer{a=1}:inner{b="two" late=7}: "#;
            expect_body(&lines, &format!("{recorded}tracing: after record"));
            expect_body(&lines, &format!("{recorded}tracing: through the clone"));
            expect_body(&lines, "next{n=1}: tracing: next is still open");
            for w in 0..3 {
                let worker = format!("request{{id=9}}:worker{{w={w}}}: ");
                expect_body(&lines, &format!("{worker}tracing: working {w}"));
                expect_body(
                    &lines,
                    &format!("request{{id=9}}: tracing: to the request from {w}"),
                );
                expect_body(&lines, &format!("tracing: a root event from {w}"));
                expect_body(&lines, &format!("{worker}tracing: log in worker {w}"));
            }
            expect_body(&lines, "request{id=9}:moved: tracing: entered elsewhere");
            expect_body(
            &lines,
            "request{id=9}:short_parent{p=1}:outliving_child: tracing: the parent's handles are gone",
        );
            expect_body(&lines, "held{k=1}: tracing: the held span lives on");
            // outer, inner, contextual, other, gone, next, request, 3 workers, moved, held,
            // 20,000 churn.
            assert_eq!(stats.spans.created, 20_014, "{:?}", stats.spans);
            println!(
            "MEASURED {} lines; spans created {} closed {}; 20000 spans created while one was held, \
             none got its id",
            lines.len(),
            stats.spans.created,
            stats.spans.closed
        );
            remove_log(&path);
        },
    );
}

// ---------------------------------------------------------------------------------
// 3. Reentrancy.

/// Debug calls of [`Loud`] and [`Deep`].
static LOUD_CALLS: AtomicU64 = AtomicU64::new(0);

/// A value whose `Debug` emits a tracing event and a `log` record.
struct Loud(&'static str);

impl fmt::Debug for Loud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = LOUD_CALLS.fetch_add(1, Relaxed) + 1;
        tracing::warn!(nested = n, "tracing from the Debug of {}", self.0);
        log::warn!("log from the Debug of {}", self.0);
        write!(f, "loud({})", self.0)
    }
}

/// `Debug` that emits an event whose field is `Deep(n - 1)`: `n` events nested.
struct Deep(u32);

impl fmt::Debug for Deep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        LOUD_CALLS.fetch_add(1, Relaxed);
        if self.0 > 0 {
            tracing::info!(inner = ?Deep(self.0 - 1), "level {}", self.0);
        }
        write!(f, "deep{}", self.0)
    }
}

#[test]
fn a_field_whose_debug_logs_through_tracing_and_log() {
    in_child("a_field_whose_debug_logs_through_tracing_and_log", || {
        let (guard, path) = install("loud", log::LevelFilter::Info);
        let around = info_span!("around", k = 1);
        let _around = around.enter();
        let start = Instant::now();
        // In a field, in the message, in a new span's fields, in Span::record.
        tracing::info!(value = ?Loud("a field"), "outer event");
        tracing::info!("outer message {:?}", Loud("the message"));
        let loud_span = info_span!(
            "loud_span",
            v = ?Loud("a span field"),
            late = tracing::field::Empty
        );
        loud_span.record("late", tracing::field::debug(Loud("a recorded field")));
        loud_span.in_scope(|| tracing::info!("inside the loud span"));
        drop(loud_span);
        // Three events nested inside the outermost one.
        tracing::info!(value = ?Deep(3), "outermost");
        let elapsed = start.elapsed();
        drop(_around);
        drop(around);
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
        // Each Debug ran once per use: 4 Loud, 4 Deep.
        assert_eq!(LOUD_CALLS.load(Relaxed), 8);

        guard.flush().unwrap();
        let (stats, lines) = stop_and_account(guard, &path);
        let chain = "around{k=1}";
        let at = |body: String| expect_body(&lines, &body);
        for (what, n) in [
            ("a field", 1),
            ("the message", 2),
            ("a span field", 3),
            ("a recorded field", 4),
        ] {
            let nested_tracing = at(format!(
                "{chain}: tracing: tracing from the Debug of {what} nested={n}"
            ));
            let nested_log = at(format!("{chain}: tracing: log from the Debug of {what}"));
            assert!(nested_tracing < nested_log);
        }
        let outer = at(format!("{chain}: tracing: outer event value=loud(a field)"));
        assert!(outer > at(format!("{chain}: tracing: log from the Debug of a field")));
        let message = at(format!("{chain}: tracing: outer message loud(the message)"));
        assert!(
            message
                > at(format!(
                    "{chain}: tracing: log from the Debug of the message"
                ))
        );
        at(format!(
            "{chain}:loud_span{{v=loud(a span field) late=loud(a recorded field)}}: tracing: inside the loud span"
        ));
        // Innermost first: a record is claimed once its fields are encoded.
        let deep: Vec<usize> = [
            format!("{chain}: tracing: level 1 inner=deep0"),
            format!("{chain}: tracing: level 2 inner=deep1"),
            format!("{chain}: tracing: level 3 inner=deep2"),
            format!("{chain}: tracing: outermost value=deep3"),
        ]
        .into_iter()
        .map(at)
        .collect();
        assert!(deep.windows(2).all(|w| w[0] < w[1]), "{lines:?}");
        assert_eq!(stats.written, 15, "{stats:?}");
        println!(
            "MEASURED 15 records (7 of them nested, 3 deep at most) in {elapsed:?}, 8 Debug calls"
        );
        remove_log(&path);
    });
}

/// Logs through tracing and `log` when dropped.
struct LogsOnDrop(&'static str);

impl Drop for LogsOnDrop {
    fn drop(&mut self) {
        tracing::warn!(
            panicking = std::thread::panicking(),
            "tracing from the drop of {}",
            self.0
        );
        log::warn!("log from the drop of {}", self.0);
    }
}

/// The guard drops first (the span exits and closes), then the value logs.
struct GuardThenValue {
    _entered: tracing::span::EnteredSpan,
    _value: LogsOnDrop,
}

/// Logs into its span as it drops; the span closes right after, with the field.
struct HoldsSpan {
    span: Span,
}

impl Drop for HoldsSpan {
    fn drop(&mut self) {
        tracing::info!(parent: &self.span, "the span holder drops");
        log::info!("log from the span holder");
    }
}

#[test]
fn a_drop_that_logs_while_a_span_closes() {
    let run = in_child("a_drop_that_logs_while_a_span_closes", || {
        let (guard, path) = install("drop", log::LevelFilter::Info);
        {
            let _before = LogsOnDrop("a value declared before the guard");
            let _entered = info_span!("scope", k = 1).entered();
            let _after = LogsOnDrop("a value declared after the guard");
        }
        {
            let _pair = GuardThenValue {
                _entered: info_span!("pair").entered(),
                _value: LogsOnDrop("the value beside the guard"),
            };
        }
        {
            let _holder = HoldsSpan {
                span: info_span!("held_by_a_struct", n = 2),
            };
        }
        // Unwinding through an entered span: the value logs inside it, the panic hook
        // quelog installed logs the panic inside it, then the guard exits and closes.
        let caught = std::panic::catch_unwind(|| {
            let _entered = info_span!("unwinding", u = 3).entered();
            let _value = LogsOnDrop("a value during unwinding");
            panic!("boom inside a span");
        });
        assert!(caught.is_err());
        tracing::info!("after the unwinding");

        guard.flush().unwrap();
        let (stats, lines) = stop_and_account(guard, &path);
        let at = |body: &str| expect_body(&lines, body);
        let tracing_after =
            at("scope{k=1}: tracing: tracing from the drop of a value declared after the guard panicking=false");
        let log_after =
            at("scope{k=1}: tracing: log from the drop of a value declared after the guard");
        let tracing_before = at(
            "tracing: tracing from the drop of a value declared before the guard panicking=false",
        );
        let log_before = at("tracing: log from the drop of a value declared before the guard");
        assert!(
            tracing_after < log_after && log_after < tracing_before && tracing_before < log_before
        );
        at("tracing: tracing from the drop of the value beside the guard panicking=false");
        at("tracing: log from the drop of the value beside the guard");
        at("held_by_a_struct{n=2}: tracing: the span holder drops");
        at("tracing: log from the span holder");
        at("unwinding{u=3}: tracing: tracing from the drop of a value during unwinding panicking=true");
        at("unwinding{u=3}: tracing: log from the drop of a value during unwinding");
        let hook = lines
            .iter()
            .filter(|l| {
                body(l).starts_with("unwinding{u=3}: panic: ") && l.contains("boom inside a span")
            })
            .count();
        assert_eq!(
            hook, 1,
            "the panic hook's record, inside the span: {lines:?}"
        );
        at("tracing: after the unwinding");
        assert_eq!(stats.spans.created, 4, "{:?}", stats.spans);
        println!(
            "MEASURED {} records, spans created {} closed {}",
            stats.written, stats.spans.created, stats.spans.closed
        );
        remove_log(&path);
    });
    if let Some(run) = run {
        // The default hook quelog chained to still reported the panic.
        assert!(
            run.stderr.contains("boom inside a span"),
            "{}",
            run.describe()
        );
    }
}

static TLS_DESTRUCTOR_RAN: AtomicBool = AtomicBool::new(false);
static TLS_CURRENT_WAS_RIGHT: AtomicBool = AtomicBool::new(false);
static THREAD_MAIN_RETURNED: AtomicBool = AtomicBool::new(false);

#[tracing::instrument]
fn instrumented_in_a_destructor(arg: u32) {
    tracing::info!("inside an instrumented function");
}

/// Creates, enters and closes spans in its destructor.
struct SpansAtThreadExit;

impl Drop for SpansAtThreadExit {
    fn drop(&mut self) {
        let span = info_span!("tls_dtor", phase = "exit");
        let entered = span.enter();
        let right = current().map(|(name, _)| name) == Some("tls_dtor")
            && Span::current().id() == span.id();
        TLS_CURRENT_WAS_RIGHT.store(right, Relaxed);
        tracing::warn!(
            main_returned = THREAD_MAIN_RETURNED.load(Relaxed),
            "an event in a span inside a thread-local destructor"
        );
        log::warn!("a log record in the destructor's span");
        instrumented_in_a_destructor(7);
        drop(entered);
        drop(span);
        TLS_DESTRUCTOR_RAN.store(true, Relaxed);
    }
}

thread_local! {
    static AT_THREAD_EXIT: SpansAtThreadExit = const { SpansAtThreadExit };
}

#[test]
fn a_span_in_a_thread_local_destructor_at_thread_exit() {
    in_child("a_span_in_a_thread_local_destructor_at_thread_exit", || {
        let (guard, path) = install("tls", log::LevelFilter::Info);
        std::thread::Builder::new()
            .name("exiting".into())
            .spawn(|| {
                // Registers the destructor first, so it runs after those of anything
                // the events below touch (destructors run in reverse order).
                AT_THREAD_EXIT.with(|_| {});
                let _entered = info_span!("thread_main").entered();
                tracing::info!("thread main returning");
                THREAD_MAIN_RETURNED.store(true, Relaxed);
            })
            .unwrap()
            .join()
            .expect("the exiting thread panicked");
        assert!(TLS_DESTRUCTOR_RAN.load(Relaxed));
        assert!(
            TLS_CURRENT_WAS_RIGHT.load(Relaxed),
            "current_span was wrong in the destructor"
        );
        guard.flush().unwrap();
        let (stats, lines) = stop_and_account(guard, &path);
        let main = expect_body(&lines, "thread_main: tracing: thread main returning");
        let chain = r#"tls_dtor{phase="exit"}"#;
        let event = expect_body(
            &lines,
            &format!(
                "{chain}: tracing: an event in a span inside a thread-local destructor main_returned=true"
            ),
        );
        expect_body(
            &lines,
            &format!("{chain}: tracing: a log record in the destructor's span"),
        );
        expect_body(
            &lines,
            &format!(
                "{chain}:instrumented_in_a_destructor{{arg=7}}: tracing: inside an instrumented function"
            ),
        );
        assert!(main < event);
        assert_eq!(stats.spans.created, 3, "{:?}", stats.spans);
        println!(
            "MEASURED {} records, 3 spans in a thread-local destructor",
            stats.written
        );
        remove_log(&path);
    });
}

#[test]
fn five_thousand_short_lived_threads_with_spans() {
    in_child("five_thousand_short_lived_threads_with_spans", || {
        const THREADS: u64 = 5_000;
        const AT_ONCE: u64 = 8;
        let (guard, path) = install_with(
            "threads",
            quelog::Builder::new()
                .level(log::LevelFilter::Info)
                .overflow(blocking()),
        );
        let start = Instant::now();
        for batch in 0..THREADS / AT_ONCE {
            let threads: Vec<_> = (0..AT_ONCE)
                .map(|k| {
                    let t = batch * AT_ONCE + k;
                    std::thread::spawn(move || {
                        let _entered = info_span!("short", t).entered();
                        tracing::info!("event from thread {t}");
                        log::info!("log from thread {t}");
                    })
                })
                .collect();
            for thread in threads {
                thread.join().expect("a short-lived thread panicked");
            }
        }
        let elapsed = start.elapsed();
        guard.flush().unwrap();
        let (stats, lines) = stop_and_account(guard, &path);
        let mut seen: HashMap<&str, u32> = HashMap::new();
        for line in &lines {
            *seen.entry(body(line)).or_default() += 1;
        }
        for t in 0..THREADS {
            for what in ["event", "log"] {
                let expected = format!("short{{t={t}}}: tracing: {what} from thread {t}");
                assert_eq!(
                    seen.get(expected.as_str()),
                    Some(&1),
                    "{expected:?} is not in the file exactly once"
                );
            }
        }
        assert_eq!(stats.written, 2 * THREADS, "{stats:?}");
        assert_eq!(stats.spans.created, THREADS, "{:?}", stats.spans);
        println!(
            "MEASURED {THREADS} threads ({AT_ONCE} at a time) in {elapsed:.2?}: {} records written, \
             spans created {} closed {}",
            stats.written, stats.spans.created, stats.spans.closed
        );
        remove_log(&path);
    });
}

#[test]
fn tracing_after_the_guard_is_gone_is_counted_like_log() {
    let run = in_child(
        "tracing_after_the_guard_is_gone_is_counted_like_log",
        || {
            let (guard, path) = install("after", log::LevelFilter::Info);
            tracing::info!("while running");
            let running = guard.stats();
            drop(guard);
            let start = Instant::now();
            tracing::warn!(n = 1, "tracing after the guard was dropped");
            log::warn!("log after the guard was dropped");
            let late = info_span!("late", k = 2);
            late.in_scope(|| tracing::info!("in a span after the guard was dropped"));
            drop(late);
            assert!(start.elapsed() < Duration::from_secs(1));
            // After the first stop, `shutdown` answers the live counters.
            let after = quelog::shutdown().expect("counters");
            assert_eq!(
                after.dropped.after_stop - running.dropped.after_stop,
                3,
                "{after:?}"
            );
            assert_eq!(after.dropped.total(), 3, "{after:?}");
            // The span's new and close records found the queue closed.
            assert_eq!(after.spans.lost, 2, "{:?}", after.spans);
            assert_eq!(after.spans.created, after.spans.closed, "{:?}", after.spans);
            let lines = lines(&path);
            expect_body(&lines, "tracing: while running");
            assert!(!lines.iter().any(|l| l.contains("after the guard")));
            println!(
                "MEASURED dropped after stop {}, span records lost {}",
                after.dropped.after_stop, after.spans.lost
            );
            remove_log(&path);
        },
    );
    if let Some(run) = run {
        for expected in [
            "quelog (stopped) WARN tracing: tracing after the guard was dropped",
            "quelog (stopped) WARN tracing: log after the guard was dropped",
            "quelog (stopped) INFO tracing: in a span after the guard was dropped",
        ] {
            assert!(
                run.stderr.lines().any(|l| l == expected),
                "missing on stderr: {expected}\n{}",
                run.describe()
            );
        }
    }
}

/// The stuck sink took its first batch.
static SINK_STUCK: AtomicBool = AtomicBool::new(false);
/// Lets the stuck sink return (at the end, so the listener thread can finish).
static SINK_RELEASE: AtomicBool = AtomicBool::new(false);

/// A sink that never returns from its first write until told to.
struct StuckSink;

impl quelog::Sink for StuckSink {
    fn write_batch(&mut self, _batch: &[u8]) -> std::io::Result<()> {
        SINK_STUCK.store(true, Relaxed);
        while !SINK_RELEASE.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A stop that runs out of time (a sink that does not return) abandons what is still
/// queued and counts it: records, not the span bookkeeping queued with them (spans
/// are not records, `Stats::spans`). After it, `enqueued + dropped` is every record
/// logged and `enqueued == written + filtered + lost + abandoned`.
#[test]
fn a_stop_that_times_out_counts_records_not_span_bookkeeping() {
    in_child(
        "a_stop_that_times_out_counts_records_not_span_bookkeeping",
        || {
            const QUEUED: u64 = 100;
            let guard = quelog::Builder::new()
                .sink(StuckSink, log::LevelFilter::Info)
                .level(log::LevelFilter::Info)
                .shutdown_timeout(Duration::from_millis(300))
                .install()
                .expect("install quelog");
            tracing::info!("the first record: the sink sticks on it");
            let deadline = Instant::now() + Duration::from_secs(10);
            while !SINK_STUCK.load(Relaxed) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(SINK_STUCK.load(Relaxed), "the sink never got a batch");
            // Each round queues a span's new and close records around one event.
            for i in 0..QUEUED {
                let _entered = info_span!("queued", i).entered();
                tracing::info!("queued behind the stuck sink {i}");
            }
            let stopped = guard.stop();
            assert!(
                matches!(stopped, Err(quelog::Error::Timeout)),
                "{stopped:?}"
            );
            let stats = quelog::shutdown().expect("the counters");
            SINK_RELEASE.store(true, Relaxed);
            assert_eq!(
                stats.enqueued + stats.dropped.total(),
                1 + QUEUED,
                "every record logged, and only records: {stats:?}"
            );
            assert_eq!(
                stats.enqueued,
                stats.written + stats.filtered + stats.lost + stats.abandoned,
                "{stats:?}"
            );
            assert_eq!(stats.abandoned, 1 + QUEUED, "{stats:?}");
            assert_eq!(stats.spans.created, QUEUED, "{:?}", stats.spans);
            println!(
                "MEASURED a stop given up after 300 ms: enqueued {}, abandoned {}, spans created {}",
                stats.enqueued, stats.abandoned, stats.spans.created
            );
        },
    );
}

// ---------------------------------------------------------------------------------
// 4. A signal storm whose handler logs with `log` while the thread emits tracing
// events inside spans.

const STORM: &str = "signal_storm_on_a_thread_in_tracing_spans";

/// How long the storm blows, at most, and the most loop rounds in it.
const STORM_LOAD: Duration = Duration::from_secs(2);
const STORM_MAX_ROUNDS: u64 = 150_000;

static EMITTED: AtomicU64 = AtomicU64::new(0);
static HANDLED: AtomicU64 = AtomicU64::new(0);
/// Signals handled while the emitting thread was inside a round's tracing calls.
static HANDLED_IN_TRACING: AtomicU64 = AtomicU64::new(0);
static IN_TRACING: AtomicBool = AtomicBool::new(false);
/// The emitting thread's kernel id, and signals handled on any other thread.
static EMITTER_TID: AtomicU64 = AtomicU64::new(0);
static HANDLED_ELSEWHERE: AtomicU64 = AtomicU64::new(0);

fn gettid() -> u64 {
    // SAFETY: gettid has no arguments and cannot fail; async-signal-safe.
    unsafe { libc::syscall(libc::SYS_gettid) as u64 }
}

/// Before `main`, in the storm's child only: blocks SIGALRM on the main thread, so
/// every thread (libtest's, the test's, quelog's listener) starts with it blocked, and
/// the process-directed SIGALRM of `setitimer` can land only on the thread that
/// unblocks it: the one emitting tracing events. (`tests/storm.rs` does the same from
/// its own `main`; under libtest a constructor is the place.)
#[used]
#[link_section = ".init_array"]
static BLOCK_SIGALRM_BEFORE_MAIN: extern "C" fn() = block_sigalrm_in_the_storm_child;

extern "C" fn block_sigalrm_in_the_storm_child() {
    // SAFETY: getenv before main reads the environment the loader set up; nothing
    // else runs yet.
    let value = unsafe { libc::getenv(c"QUELOG_TEST_SCENARIO".as_ptr()) };
    if value.is_null() {
        return;
    }
    // SAFETY: getenv returned a NUL-terminated string that lives as long as the
    // environment is not changed.
    if unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes() == STORM.as_bytes() {
        set_sigalrm_blocked(true);
    }
}

fn set_sigalrm_blocked(blocked: bool) {
    // SAFETY: all-zero is a valid sigset_t to hand to sigemptyset, which initialises it;
    // pthread_sigmask changes only this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGALRM);
        let how = if blocked {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

fn set_timer(interval_us: u64) {
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: interval_us as libc::suseconds_t,
    };
    let timer = libc::itimerval {
        it_interval: tv,
        it_value: tv,
    };
    // SAFETY: a live, initialised itimerval; the old value is not wanted.
    let rc = unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "setitimer: {}", std::io::Error::last_os_error());
}

/// The SIGALRM handler: one `log::warn!` (the signal-safe front; tracing's macros are
/// not, see the subscriber's docs).
fn on_alarm() {
    if gettid() != EMITTER_TID.load(Relaxed) {
        HANDLED_ELSEWHERE.fetch_add(1, Relaxed);
    }
    let inside = IN_TRACING.load(Relaxed);
    if inside {
        HANDLED_IN_TRACING.fetch_add(1, Relaxed);
    }
    log::warn!(target: "storm::signal", "alarm inside_tracing={}", inside);
    HANDLED.fetch_add(1, Relaxed);
}

/// One round: a span created and entered inside the long-lived one, an event in it, a
/// disabled event, the span exited and closed.
fn storm_round(i: u64) {
    IN_TRACING.store(true, Relaxed);
    {
        let span = info_span!("round", i);
        let _entered = span.enter();
        tracing::info!(i, kind = "storm", "event in spans");
        tracing::debug!("filtered out by the level");
    }
    IN_TRACING.store(false, Relaxed);
    EMITTED.fetch_add(1, Relaxed);
}

#[test]
fn signal_storm_on_a_thread_in_tracing_spans() {
    let watch = Watch {
        stall: Duration::from_secs(5),
        total: Duration::from_secs(40),
        stacks: true,
    };
    in_child_watched(STORM, watch, || {
        // The constructor blocked SIGALRM on every thread of this process.
        let (guard, path) = install("storm", log::LevelFilter::Info);
        // SAFETY: the action reads and bumps atomics and logs through quelog, whose
        // `log` path is async-signal-safe: that is what this test checks.
        let registered = unsafe { signal_hook::low_level::register(libc::SIGALRM, on_alarm) }
            .expect("register SIGALRM");
        let stop_monitor = std::sync::Arc::new(AtomicBool::new(false));
        // Spawned before this thread unblocks SIGALRM: the monitor keeps it blocked.
        let monitor = {
            let stop = std::sync::Arc::clone(&stop_monitor);
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    println!(
                        "PROGRESS {} handled={} in_tracing={}",
                        EMITTED.load(Relaxed),
                        HANDLED.load(Relaxed),
                        HANDLED_IN_TRACING.load(Relaxed)
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let storm = info_span!("storm", run = 1u64);
        let _storm = storm.enter();
        // Registers the callsites (which may lock and allocate) before the storm.
        storm_round(0);
        EMITTER_TID.store(gettid(), Relaxed);
        set_sigalrm_blocked(false);
        set_timer(50);
        let start = Instant::now();
        let mut i = 1;
        while i < STORM_MAX_ROUNDS && start.elapsed() < STORM_LOAD {
            storm_round(i);
            i += 1;
        }
        // SAFETY: a zeroed itimerval disarms the timer.
        unsafe { libc::setitimer(libc::ITIMER_REAL, &std::mem::zeroed(), std::ptr::null_mut()) };
        set_sigalrm_blocked(true);
        let elapsed = start.elapsed();
        drop(_storm);
        drop(storm);
        signal_hook::low_level::unregister(registered);
        stop_monitor.store(true, Relaxed);
        monitor.join().unwrap();
        println!("PATIENCE 20000");

        let emitted = EMITTED.load(Relaxed);
        let handled = HANDLED.load(Relaxed);
        let in_tracing = HANDLED_IN_TRACING.load(Relaxed);
        let stats = guard.stop().expect("stop");
        let lines = lines(&path);
        // Accounting: every event and every handler's record written or dropped.
        assert_eq!(
            stats.enqueued + stats.dropped.total(),
            emitted + handled,
            "{stats:?}"
        );
        assert_eq!(stats.written, stats.enqueued, "{stats:?}");
        assert_eq!(stats.written as usize, record_lines(&lines), "{stats:?}");
        let events = lines
            .iter()
            .filter(|l| body(l).contains("tracing: event in spans "))
            .count() as u64;
        let alarms = lines
            .iter()
            .filter(|l| body(l).contains("storm::signal: alarm "))
            .count() as u64;
        assert_eq!(events + alarms, stats.written, "{stats:?}");
        // Every event line carries its own round's chain (`?` only for a span whose
        // bookkeeping found the ring full, which is counted).
        let mut unknown = 0;
        for line in lines
            .iter()
            .filter(|l| body(l).contains("tracing: event in spans "))
        {
            let body = body(line);
            let i = body
                .rsplit_once(" i=")
                .and_then(|(_, rest)| rest.split(' ').next())
                .unwrap_or_else(|| panic!("no i= in {line}"));
            let expected = format!(
                "storm{{run=1}}:round{{i={i}}}: tracing: event in spans i={i} kind=\"storm\""
            );
            if body != expected {
                assert!(body.contains('?') && stats.spans.lost > 0, "{line}");
                unknown += 1;
            }
        }
        assert!(handled >= 1_000, "only {handled} signals handled");
        let elsewhere = HANDLED_ELSEWHERE.load(Relaxed);
        assert_eq!(
            elsewhere, 0,
            "signals handled on other threads than the emitter"
        );
        assert!(
            in_tracing >= 100,
            "only {in_tracing} signals landed inside tracing calls"
        );
        assert!(elapsed < STORM_LOAD + Duration::from_secs(1), "{elapsed:?}");
        println!(
            "MEASURED {emitted} rounds in {elapsed:.2?}, {handled} SIGALRM handled ({in_tracing} inside \
             a round's tracing calls, 0 on other threads): enqueued {} + dropped {} = attempted {}; written {} = {events} events + \
             {alarms} handler records; spans created {} closed {} lost {}; chains unknown {unknown}",
            stats.enqueued,
            stats.dropped.total(),
            emitted + handled,
            stats.written,
            stats.spans.created,
            stats.spans.closed,
            stats.spans.lost,
        );
        remove_log(&path);
    });
}

// ---------------------------------------------------------------------------------
// 5. `log` and `tracing` together.

#[test]
fn log_and_tracing_interleaved_each_land_once() {
    in_child("log_and_tracing_interleaved_each_land_once", || {
        const N: u64 = 2_000;
        let (guard, path) = install_with(
            "both",
            quelog::Builder::new()
                .level(log::LevelFilter::Info)
                .overflow(blocking()),
        );
        for i in 0..N {
            log::info!("from log {i}");
            tracing::info!("from tracing {i}");
        }
        {
            let _request = info_span!("request", id = 5).entered();
            let _step = info_span!("step", n = 2).entered();
            log::info!("a log record in two spans");
            log::warn!(target: "app::db", "a log record with its own target");
        }
        log::info!("a log record outside");
        guard.flush().unwrap();
        let (stats, lines) = stop_and_account(guard, &path);
        assert_eq!(stats.written, 2 * N + 3, "{stats:?}");
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (at, line) in lines.iter().enumerate() {
            assert!(seen.insert(body(line), at).is_none(), "twice: {line}");
        }
        let mut last = None;
        for i in 0..N {
            for front in ["log", "tracing"] {
                let expected = format!("tracing: from {front} {i}");
                let at = *seen
                    .get(expected.as_str())
                    .unwrap_or_else(|| panic!("missing: {expected}"));
                assert!(last < Some(at), "out of order: {expected}");
                last = Some(at);
            }
        }
        expect_body(
            &lines,
            "request{id=5}:step{n=2}: tracing: a log record in two spans",
        );
        expect_body(
            &lines,
            "request{id=5}:step{n=2}: app::db: a log record with its own target",
        );
        expect_body(&lines, "tracing: a log record outside");
        println!("MEASURED {N} log + {N} tracing records interleaved: each once, in order");
        remove_log(&path);
    });
}

/// `Builder::tracing(false)` leaves tracing alone; without it, `install` refuses a
/// process whose tracing dispatcher is taken and installs nothing, not even the
/// `log` logger.
#[test]
fn tracing_false_and_a_dispatcher_set_before() {
    in_child("tracing_false_and_a_dispatcher_set_before", || {
        let path = temp_log(SUITE, "opt-out");
        let (handler, listener) = quelog::Builder::new().file(&path).build().unwrap();
        let first = handler.tracing_subscriber();
        tracing::subscriber::set_global_default(first).expect("the first dispatcher");
        let refused = quelog::Builder::new().file(&path).install();
        assert!(
            matches!(refused, Err(quelog::Error::TracingAlreadySet)),
            "{refused:?}"
        );
        // The `log` logger was left free.
        let guard = quelog::Builder::new()
            .file(&path)
            .level(log::LevelFilter::Info)
            .tracing(false)
            .install()
            .expect("install with tracing(false)");
        // The dispatcher set first still serves tracing: into its own queue, which
        // writes the same file (appending).
        tracing::info!("through the first dispatcher");
        log::info!("through the installed log logger");
        guard.flush().unwrap();
        let stats = listener.stop().unwrap();
        assert_eq!(stats.written, 1, "{stats:?}");
        let installed = guard.stop().unwrap();
        assert_eq!(installed.written, 1, "{installed:?}");
        // Two queues, one record each, one file.
        let lines = lines(&path);
        assert_eq!(lines.len(), 2, "{lines:?}");
        expect_body(&lines, "tracing: through the first dispatcher");
        expect_body(&lines, "tracing: through the installed log logger");
        remove_log(&path);
    });
}

// ---------------------------------------------------------------------------------
// 6. Filtering through tracing's callsite cache.

use support::common::{Counted, COUNTED};

#[test]
fn filtered_events_are_never_evaluated() {
    in_child("filtered_events_are_never_evaluated", || {
        let (guard, path) = install("filter", log::LevelFilter::Warn);
        let mut all_disabled = true;
        for _ in 0..1_000 {
            tracing::info!(value = ?Counted, "filtered");
            tracing::debug!("filtered too {:?}", Counted);
            log::info!("filtered log {:?}", Counted);
            let span = info_span!("filtered_span", value = ?Counted);
            all_disabled &= span.is_disabled();
            span.in_scope(|| {});
        }
        assert_eq!(COUNTED.load(Relaxed), 0, "a filtered field was evaluated");
        assert!(all_disabled, "an info span below the level is enabled");
        // The max level hint reached tracing, and `log`'s max level is set.
        assert_eq!(
            tracing_core::LevelFilter::current(),
            tracing_core::LevelFilter::WARN
        );
        assert!(!tracing::level_enabled!(tracing::Level::INFO));
        assert!(tracing::level_enabled!(tracing::Level::WARN));
        assert!(!log::log_enabled!(log::Level::Info));
        tracing::warn!(value = ?Counted, "kept");
        assert_eq!(COUNTED.load(Relaxed), 1);
        guard.flush().unwrap();
        let (stats, lines) = stop_and_account(guard, &path);
        assert_eq!(lines.len(), 1, "{lines:?}");
        expect_body(&lines, "tracing: kept value=counted");
        assert_eq!(stats.spans.created, 0, "{:?}", stats.spans);
        println!(
            "MEASURED 4,000 filtered calls: 0 Debug calls, 0 spans; 1 warning kept, 1 Debug call"
        );
        remove_log(&path);
    });
}
