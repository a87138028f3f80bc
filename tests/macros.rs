//! quelog's macros against `log`'s: every case is logged once with `log::info!` (or
//! its level) and once with `quelog::info!`, from the same source line, and the two
//! lines must be the same bytes (the timestamp aside) in the text format, in JSON
//! lines with and without the source location, and in the crash drain's lines. The
//! raw-record counter tells which calls really went raw (formatted on the listener)
//! and which fell back to formatting on the caller.
//!
//! The global logger is installed once per process: the crash drain and the "another
//! logger" cases run in child processes (this binary again).

mod support;
use support::common::Memory;

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log::LevelFilter;
use quelog::test_hooks::{raw_records_queued, ListenerHooks};
use quelog::{Builder, Format, Output};
use support::storm::child::{self, in_child, Watch};

impl Memory {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// A type with `Display` only.
struct Shown(u32);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shown<{}>", self.0)
    }
}

/// A type with `Debug` only.
#[derive(Debug)]
#[allow(dead_code)]
struct Opaque {
    field: &'static str,
}

/// A `Display` that fails part way.
struct Failing;

impl fmt::Display for Failing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("half")?;
        Err(fmt::Error)
    }
}

/// A `Display` that panics part way.
struct Panicking;

impl fmt::Display for Panicking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("before the panic")?;
        panic!("a Display that panics");
    }
}

/// Logs one case with `log`'s macro, then with quelog's, on the same source line (so
/// `line!()` agrees), and checks whether quelog's went raw as `raw` says.
macro_rules! both {
    ($raw:expr, $mac:ident!($($args:tt)*)) => {{
        log::$mac!($($args)*);
        let before = raw_records_queued();
        quelog::$mac!($($args)*);
        let went_raw = raw_records_queued() - before == 1;
        assert_eq!(went_raw, $raw, "raw or not, line {}: {}", line!(), stringify!($($args)*));
    }};
}

/// Every case, each logged twice (see [`both`]). `raw`: whether raw records are
/// expected at all (not in a process where quelog is not the logger).
fn log_cases(raw: bool) {
    let (id, us, name) = (41u64, 997u64, "worker-7");
    both!(
        raw,
        info!("request {} handled in {} us by {}", id, us, name)
    );
    both!(
        raw,
        info!("request {} handled in {} us by {}", id, us, name,)
    );
    both!(raw, info!("a literal message"));
    both!(raw, info!("braces {{}} {{ {} }} }}{{", 5));
    for x in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        0.0,
        1e300,
        -1e300,
        1e-300,
        f64::MIN_POSITIVE,
        5e-324,
        f64::MAX,
        f64::MIN,
        0.1 + 0.2,
        1.5,
    ] {
        both!(raw, warn!("float {} debug {:?}", x, x));
    }
    for x in [
        1.1f32,
        f32::MAX,
        f32::MIN_POSITIVE,
        -0.0f32,
        f32::NAN,
        1e-45,
    ] {
        both!(raw, warn!("f32 {} debug {:?}", x, x));
    }
    both!(
        raw,
        error!(
            "ints {} {} {} {} {} {} {} {:?}",
            i128::MIN,
            u128::MAX,
            i64::MIN,
            u64::MAX,
            -7i8,
            65535u16,
            isize::MIN,
            usize::MAX
        )
    );
    let needs_escaping =
        "tab\there\nnew line \x1b[31m \"quoted\" back\\slash \u{7f} é 日本 \u{200b}";
    let owned = String::from(needs_escaping);
    both!(raw, info!("empty [{}] [{:?}]", "", ""));
    both!(
        raw,
        info!("str {} debug {:?}", needs_escaping, needs_escaping)
    );
    both!(
        raw,
        info!("String {} {:?} &String {}", owned, owned, &owned)
    );
    both!(
        raw,
        info!(
            "bool {} {:?} char {} {:?} {:?}",
            true, false, 'é', '\n', '\''
        )
    );
    both!(raw, debug!("display {} and {}", Shown(3), id));
    both!(raw, trace!(target: "custom::target", "targeted {}", id));
    both!(
        raw,
        info!(target: module_path!(), "target equal to the module {}", id)
    );
    both!(raw, info!(target: "", "empty target {}", id));
    both!(raw, info!("failing {} then {}", Failing, id));
    both!(raw, info!("panicking {} then {}", Panicking, id));
    // The caller formats these.
    both!(false, info!("debug-only {:?}", Opaque { field: "x" }));
    both!(false, info!("display at a debug {:?} {}", "s", Shown(1)));
    both!(
        false,
        info!("width [{:>8}] precision [{:.2}]", id, 1.0f64 / 3.0)
    );
    both!(false, info!("positional {1} {0}", id, us));
    both!(false, info!("named {n}", n = id));
    both!(false, info!("inline {id} and {}", us));
    let huge = "h".repeat(70_000);
    both!(false, info!("too long to stay raw {}", huge));
    let level = log::Level::Warn;
    both!(raw, log!(level, "runtime level {}", id));
    both!(
        raw,
        log!(target: "t", level, "runtime level and target {}", id)
    );
    both!(false, info!(answer = 42; "key-values {}", id));
    // Filtered out by quelog's filter: neither writes anything.
    both!(false, info!(target: "muted", "never written {}", id));
}

/// The lines of every pair must be equal but for the timestamp (`strip` removes it).
/// The panic hook's records (one per panicking `Display`: each macro formats it
/// once) are left out.
fn assert_pairs_equal(lines: &[String], strip: impl Fn(&str) -> &str, what: &str) {
    let lines: Vec<&String> = lines
        .iter()
        .filter(|l| !l.contains("a Display that panics"))
        .collect();
    assert!(
        lines.len() >= 2 && lines.len() % 2 == 0,
        "{what}: {lines:#?}"
    );
    for pair in lines.chunks(2) {
        assert_eq!(strip(pair[1]), strip(pair[0]), "{what}");
    }
}

fn without_text_timestamp(line: &str) -> &str {
    line.split_once(' ').expect("a timestamp").1
}

fn without_json_timestamp(line: &str) -> &str {
    // `{"timestamp":"2026-...Z",...`
    let after = line
        .strip_prefix("{\"timestamp\":\"")
        .expect("timestamp first");
    after.split_once("\",").expect("end of the timestamp").1
}

fn builder() -> Builder {
    Builder::new()
        .level(LevelFilter::Trace)
        .filter("trace,muted=off")
        .env_var(None)
        .tracing(false)
}

#[test]
fn same_lines_as_log_in_text_and_json() {
    if child::scenario().is_some() {
        return;
    }
    let (text, json, json_source) = (Memory::default(), Memory::default(), Memory::default());
    let guard = builder()
        .output(Output::sink(text.clone()))
        .output(Output::sink(json.clone()).format(Format::Json))
        .output(
            Output::sink(json_source.clone())
                .format(Format::Json)
                .source_location(true),
        )
        .install()
        .unwrap();
    log_cases(true);

    // A level `log` turned off: the arguments are not even evaluated.
    let evaluated = AtomicU32::new(0);
    let count = || evaluated.fetch_add(1, Ordering::Relaxed);
    log::set_max_level(LevelFilter::Warn);
    quelog::info!("off by max_level {}", count());
    log::set_max_level(LevelFilter::Trace);
    assert_eq!(evaluated.load(Ordering::Relaxed), 0);
    quelog::info!(target: "muted", "off by the filter, evaluated {}", count());
    assert_eq!(evaluated.load(Ordering::Relaxed), 1);

    guard.flush().unwrap();
    let text = text.lines();
    assert!(text.iter().any(|l| l.ends_with("by worker-7")), "{text:#?}");
    assert_pairs_equal(&text, without_text_timestamp, "text");
    assert_pairs_equal(&json.lines(), without_json_timestamp, "json");
    let json_source = json_source.lines();
    assert!(json_source[1].contains("\"line\":"), "{}", json_source[1]);
    assert_pairs_equal(&json_source, without_json_timestamp, "json with source");
    assert!(!text.iter().any(|l| l.contains("never written")));
    guard.stop().unwrap();
}

#[test]
fn same_lines_as_log_from_the_crash_drain() {
    let path = support::common::temp_log("macros", "crash");
    let _ = std::fs::remove_file(&path);
    let watch = Watch {
        stall: Duration::from_secs(20),
        total: Duration::from_secs(60),
        stacks: false,
    };
    let child_path = path.clone();
    let mut command = child::self_test_command(
        "same_lines_as_log_from_the_crash_drain",
        "same_lines_as_log_from_the_crash_drain",
    );
    command.env("QUELOG_MACROS_PATH", &child_path);
    let scenario = child::scenario();
    if scenario.as_deref() == Some("same_lines_as_log_from_the_crash_drain") {
        crash_child(Path::new(&std::env::var("QUELOG_MACROS_PATH").unwrap()));
    }
    if scenario.is_some() {
        return;
    }
    let run = child::run_watched(command, watch);
    assert!(!run.hung(), "{}", run.describe());
    let mut lines = support::common::lines(&path);
    let last = lines.pop().expect("the drain's own line");
    assert!(last.contains("fatal signal"), "{last}");
    assert_pairs_equal(&lines, without_text_timestamp, "crash drain");
    let _ = std::fs::remove_file(&path);
}

/// Logs every case with the listener held, then faults: the crash drain writes them.
fn crash_child(path: &Path) {
    support::common::no_core_dumps();
    let guard = builder()
        .file(path)
        .drain_on_crash(true)
        .listener_hooks(ListenerHooks {
            hold: Some(Arc::new(AtomicBool::new(true))),
            die: None,
        })
        .install()
        .unwrap();
    log_cases(true);
    std::mem::forget(guard);
    let null = std::hint::black_box(std::ptr::null_mut::<u8>());
    // SAFETY: none: this faults with SIGSEGV, on purpose, to run the drain.
    unsafe { std::ptr::write_volatile(null, 1) };
}

/// Keeps the message of every record it is given.
struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        // Like quelog: what a failing or panicking `Display` wrote stays.
        let mut line = format!("{} {}: ", record.level(), record.target());
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = fmt::write(&mut line, *record.args());
        }));
        self.0.lock().unwrap().push(line);
    }
    fn flush(&self) {}
}

#[test]
fn another_logger_gets_the_records() {
    static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));
    let watch = Watch {
        stall: Duration::from_secs(20),
        total: Duration::from_secs(60),
        stacks: false,
    };
    in_child("another_logger_gets_the_records", None, watch, || {
        log::set_logger(&CAPTURE).unwrap();
        log::set_max_level(LevelFilter::Trace);
        log_cases(false);
        let lines = CAPTURE.0.lock().unwrap();
        assert_eq!(lines.len() % 2, 0);
        assert!(lines.len() > 40);
        for pair in lines.chunks(2) {
            assert_eq!(pair[0], pair[1]);
        }
        assert!(lines
            .iter()
            .any(|l| l == "INFO macros: request 41 handled in 997 us by worker-7"));
    });
}

#[test]
fn same_lines_as_log_from_a_forked_child() {
    let watch = Watch {
        stall: Duration::from_secs(20),
        total: Duration::from_secs(60),
        stacks: false,
    };
    in_child("same_lines_as_log_from_a_forked_child", None, watch, || {
        let path = support::common::temp_log("macros", "fork");
        let _ = std::fs::remove_file(&path);
        let guard = builder().file(&path).install().unwrap();
        // SAFETY: the child only logs (quelog's direct path) and ends with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // The forked child writes each line itself: the macros hand the record to
            // `log` (the caller formats), never raw.
            let code = std::panic::catch_unwind(|| log_cases(false)).map_or(101, |()| 0);
            // SAFETY: ends the forked child at once; async-signal-safe.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child into a live local.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{status}"
        );
        guard.flush().unwrap();
        let lines = support::common::lines(&path);
        assert!(lines
            .iter()
            .any(|l| l.contains(&format!("[{pid}] macros: request"))));
        assert_pairs_equal(&lines, without_text_timestamp, "forked child");
        guard.stop().unwrap();
        let _ = std::fs::remove_file(&path);
    });
}

/// A handler given to `log::set_logger` by hand (no `Builder::install`) is found: the
/// macros go raw.
#[test]
fn a_handler_set_as_the_logger_by_hand_gets_raw_records() {
    let watch = Watch {
        stall: Duration::from_secs(20),
        total: Duration::from_secs(60),
        stacks: false,
    };
    in_child(
        "a_handler_set_as_the_logger_by_hand_gets_raw_records",
        None,
        watch,
        || {
            let text = Memory::default();
            let (handler, listener) = builder()
                .output(Output::sink(text.clone()))
                .build()
                .unwrap();
            let handler: &'static quelog::QueueHandler = Box::leak(Box::new(handler));
            log::set_logger(handler).unwrap();
            log::set_max_level(LevelFilter::Trace);
            log_cases(true);
            listener.flush().unwrap();
            assert_pairs_equal(&text.lines(), without_text_timestamp, "set by hand");
            listener.stop().unwrap();
        },
    );
}

/// Forwards to a quelog handler and counts: a logger around quelog must see every
/// record, so the macros do not go raw past it.
struct Wrapper {
    inner: quelog::QueueHandler,
    seen: AtomicU32,
}

impl log::Log for Wrapper {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }
    fn log(&self, record: &log::Record<'_>) {
        self.seen.fetch_add(1, Ordering::Relaxed);
        self.inner.log(record);
    }
    fn flush(&self) {}
}

#[test]
fn a_logger_wrapping_a_handler_sees_every_record() {
    let watch = Watch {
        stall: Duration::from_secs(20),
        total: Duration::from_secs(60),
        stacks: false,
    };
    in_child(
        "a_logger_wrapping_a_handler_sees_every_record",
        None,
        watch,
        || {
            let text = Memory::default();
            let (inner, listener) = builder()
                .output(Output::sink(text.clone()))
                .build()
                .unwrap();
            let wrapper: &'static Wrapper = Box::leak(Box::new(Wrapper {
                inner,
                seen: AtomicU32::new(0),
            }));
            log::set_logger(wrapper).unwrap();
            log::set_max_level(LevelFilter::Trace);
            log_cases(false);
            listener.flush().unwrap();
            let lines = text.lines();
            assert_pairs_equal(&lines, without_text_timestamp, "wrapped");
            // Both macros of every pair went through the wrapper (the muted pair too).
            let seen = wrapper.seen.load(Ordering::Relaxed) as usize;
            assert!(seen >= lines.len(), "{seen} < {}", lines.len());
            listener.stop().unwrap();
        },
    );
}
