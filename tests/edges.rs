//! Edges: waits without a time limit, a flush after drops, stops that must end although
//! a sink never returns or producers never pause, `Overflow::Block` with nobody to make
//! room, the books at a stop that gives up on a record, failing sinks, and the panic
//! hook after shutdown.
//!
//! Scenarios whose failure is a hang, and those that install the global logger (once
//! per process), run in a child process: this binary re-executed with the test's name
//! as the filter, under the watchdog of `support/child.rs`. The stuck-sink children
//! get a standard error that is a pipe nobody reads, so they report on standard output.
//! Children print `MEASURED ...` lines; the parent repeats them on its standard error.

mod support;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Record};
use quelog::{
    Builder, Error, ListenerConfig, Overflow, QueueConfig, QueueHandler, QueueListener, Sink, Stats,
};
use support::common::message;
use support::storm::child::{self, Run, Watch};

use quelog::test_hooks::{hold_claim, ListenerHooks};

fn listener_config(stop_grace: Option<Duration>, hooks: ListenerHooks) -> ListenerConfig {
    let mut config = ListenerConfig::default();
    if let Some(grace) = stop_grace {
        config.stop_grace = grace;
    }
    quelog::test_hooks::with_hooks(config, hooks)
}

// ---------------------------------------------------------------------------------
// Helpers

const DONE: &str = "SCENARIO DONE";

/// In the parent: runs the test `test_name` again in a child under the watchdog,
/// asserts it finished, and repeats its `MEASURED` lines. In the child: runs `scenario`.
fn in_child(test_name: &str, scenario: impl FnOnce()) -> Option<Run> {
    match child::scenario() {
        Some(name) if name == test_name => {
            scenario();
            // On a line of its own: libtest has printed "test name ... " without one.
            println!("\n{DONE}");
            None
        }
        // Another test's child; libtest filtered us in by mistake. Do nothing.
        Some(_) => None,
        None => {
            let watch = Watch {
                stall: Duration::from_secs(15),
                total: Duration::from_secs(40),
                stacks: true,
            };
            let run = child::run_watched(child::self_test_command(test_name, test_name), watch);
            for line in run.lines.iter().filter(|l| l.starts_with("MEASURED")) {
                eprintln!("{test_name}: {line}");
            }
            assert!(
                run.succeeded() && run.lines.iter().any(|l| l == DONE),
                "the child running {test_name} failed or hung:\n{}",
                run.describe()
            );
            Some(run)
        }
    }
}

/// A sink in memory whose writes and syncs fail while told to.
#[derive(Clone, Default)]
struct TestSink {
    out: Arc<Mutex<Vec<u8>>>,
    discard: bool,
    delay: Duration,
    fail_write: Arc<AtomicBool>,
    fail_sync: Arc<AtomicBool>,
}

impl Sink for TestSink {
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        std::thread::sleep(self.delay);
        if self.fail_write.load(Relaxed) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        if !self.discard {
            self.out.lock().unwrap().extend_from_slice(batch);
        }
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        match self.fail_sync.load(Relaxed) {
            true => Err(io::Error::from_raw_os_error(libc::EIO)),
            false => Ok(()),
        }
    }
}

impl TestSink {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }
    fn count(&self, needle: &str) -> usize {
        self.text().lines().filter(|l| l.contains(needle)).count()
    }
}

fn handler(capacity: usize, overflow: Overflow) -> QueueHandler {
    let mut config = QueueConfig::default();
    config.capacity = capacity;
    config.overflow = overflow;
    QueueHandler::new(&config).expect("handler")
}

fn start(handler: &QueueHandler, sinks: &[&TestSink], config: ListenerConfig) -> QueueListener {
    let sinks = sinks
        .iter()
        .map(|&s| (Box::new(s.clone()) as Box<dyn Sink>, LevelFilter::Trace))
        .collect();
    QueueListener::start(handler, sinks, config).expect("start the listener")
}

fn log_to(handler: &QueueHandler, args: std::fmt::Arguments<'_>) {
    handler.log(
        &Record::builder()
            .level(Level::Info)
            .target("edges")
            .args(args)
            .build(),
    );
}

/// The books of a queue as `key=value` words, for a child to report and
/// [`assert_books`] to check.
fn books(accepted: u64, s: &Stats) -> String {
    format!(
        "accepted={accepted} enqueued={} dropped={} written={} filtered={} lost={} abandoned={}",
        s.enqueued,
        s.dropped.total(),
        s.written,
        s.filtered,
        s.lost,
        s.abandoned
    )
}

/// Checks both identities of the crate docs on a [`books`] line; returns its numbers.
fn assert_books(line: &str) -> HashMap<&str, u64> {
    let n: HashMap<&str, u64> = line
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect();
    let get = |k: &str| *n.get(k).unwrap_or_else(|| panic!("no {k} in {line:?}"));
    assert_eq!(
        get("enqueued") + get("dropped"),
        get("accepted"),
        "records neither enqueued nor dropped: {line}"
    );
    assert_eq!(
        get("enqueued"),
        get("written") + get("filtered") + get("lost") + get("abandoned"),
        "enqueued records with no fate, or two: {line}"
    );
    n
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(10), "never: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

// ---------------------------------------------------------------------------------
// No time limit: `Duration::MAX`

#[test]
fn block_without_time_limit_waits_for_room_without_panicking() {
    in_child(
        "block_without_time_limit_waits_for_room_without_panicking",
        || {
            let hold = Arc::new(AtomicBool::new(true));
            let hooks = ListenerHooks {
                hold: Some(Arc::clone(&hold)),
                ..ListenerHooks::default()
            };
            let sink = TestSink::default();
            let guard = Builder::new()
                .shutdown_timeout(Duration::MAX)
                .capacity(1024)
                .overflow(Overflow::Block {
                    timeout: Duration::MAX,
                })
                .listener_hooks(hooks)
                .sink(sink.clone(), LevelFilter::Info)
                .install()
                .expect("install");
            let done = Arc::new(AtomicU64::new(0));
            let counted = Arc::clone(&done);
            let producer = std::thread::spawn(move || {
                for i in 0..50 {
                    log::info!("blocked {i}");
                    counted.fetch_add(1, Relaxed);
                }
            });
            // The listener takes nothing: the producer fills the 16 slots and waits.
            let mut seen = u64::MAX;
            while seen != done.load(Relaxed) {
                seen = done.load(Relaxed);
                std::thread::sleep(Duration::from_millis(200));
            }
            hold.store(false, Relaxed);
            let joined = producer.join();
            let flushed = guard.flush_timeout(Duration::MAX);
            let stats = guard.stop();
            println!("\nMEASURED waited after {seen} of 50 calls; producer {joined:?}; flush {flushed:?}");
            assert!(seen < 50, "the ring never filled");
            assert!(joined.is_ok(), "a log call panicked (see stderr)");
            assert!(flushed.is_ok(), "{flushed:?}");
            let stats = stats.expect("stop");
            assert_eq!((stats.written, stats.dropped.total()), (50, 0), "{stats:?}");
            assert_eq!(sink.count("blocked "), 50);
        },
    );
}

#[test]
fn flush_and_stop_without_time_limit_do_not_panic() {
    let sink = TestSink::default();
    let (handler, listener) = Builder::new()
        .shutdown_timeout(Duration::MAX)
        .overflow(Overflow::Block {
            timeout: Duration::MAX,
        })
        .sink(sink.clone(), LevelFilter::Info)
        .build()
        .expect("build");
    for i in 0..3 {
        log_to(&handler, format_args!("unlimited {i}"));
    }
    assert!(listener.flush_timeout(Duration::MAX).is_ok());
    assert!(listener.flush().is_ok());
    let stats = listener.stop().expect("stop");
    assert_eq!(stats.written, 3, "{stats:?}");
    assert_eq!(sink.count("unlimited "), 3);
}

// ---------------------------------------------------------------------------------
// flush() tells about drops; a stop does not fail for them

#[test]
fn flush_after_drops_reports_them_once_and_stop_still_succeeds() {
    in_child(
        "flush_after_drops_reports_them_once_and_stop_still_succeeds",
        || {
            let sink = TestSink {
                discard: true,
                ..TestSink::default()
            };
            let guard = Builder::new()
                .capacity(1024)
                .sink(sink, LevelFilter::Info)
                .install()
                .expect("install");
            for i in 0..100_000 {
                log::info!("flood {i}");
            }
            let answer = guard.flush();
            let stats = guard.stats();
            let again = guard.flush();
            let shut = quelog::shutdown();
            let stopped = guard.stop();
            println!(
                "\nMEASURED first flush {answer:?} with queue_full={}; second {again:?}",
                stats.dropped.queue_full
            );
            let Err(Error::Dropped(told)) = answer else {
                panic!("the first flush after drops answered {answer:?}");
            };
            assert!(told.queue_full > 0, "{stats:?}");
            assert_eq!(told.queue_full, stats.dropped.queue_full);
            assert_eq!(told, stats.dropped);
            assert!(again.is_ok(), "no drops since the last flush: {again:?}");
            let shut = shut.expect("shutdown after drops");
            assert_books(&books(100_000, &shut));
            assert_eq!(stopped.expect("Guard::stop after drops"), shut);
        },
    );
}

// ---------------------------------------------------------------------------------
// A sink that never returns: stderr is a pipe nobody reads

const STUCK_TIMEOUT: Duration = Duration::from_secs(1);
const STUCK_RECORDS: u64 = 2_500;

#[derive(Clone, Copy, PartialEq)]
enum Stuck {
    FlushThenStop,
    Drop,
    Sigterm,
}

/// What a child with an unread standard error did.
#[derive(Debug)]
struct Unread {
    /// `None`: killed after 20 s.
    status: Option<ExitStatus>,
    lines: Vec<String>,
    /// From SIGTERM to the end.
    after_signal: Option<Duration>,
}

impl Unread {
    /// The words after `prefix` of the line starting with it.
    fn words(&self, prefix: &str) -> Vec<&str> {
        let line = self.lines.iter().find_map(|l| l.strip_prefix(prefix));
        let line = line.unwrap_or_else(|| panic!("no {prefix:?} line: {self:#?}"));
        line.split_whitespace().collect()
    }

    /// `STOP Err(Timeout) 1001`: checks the answer, returns the milliseconds.
    fn timed(&self, prefix: &str, answer: &str) -> u64 {
        let words = self.words(prefix);
        assert_eq!(words.first(), Some(&answer), "{self:#?}");
        words.get(1).and_then(|ms| ms.parse().ok()).expect("ms")
    }

    fn assert_books(&self) {
        let line = self.words("BOOKS ").join(" ");
        assert!(
            assert_books(&line)["abandoned"] > 0,
            "nothing abandoned: {line}"
        );
    }
}

fn stuck_sink(test_name: &str, mode: Stuck) -> Option<Unread> {
    match child::scenario() {
        Some(name) if name == test_name => {
            stuck_child(mode);
            None
        }
        Some(_) => None,
        None => {
            let run = run_with_stderr_unread(test_name, mode == Stuck::Sigterm);
            eprintln!("{test_name}: MEASURED {run:?}");
            Some(run)
        }
    }
}

fn stuck_child(mode: Stuck) {
    // A panic message would block on the full pipe: say it on stdout.
    std::panic::set_hook(Box::new(|info| println!("\nPANIC {info}")));
    let builder = Builder::new()
        .stderr(LevelFilter::Info)
        .flush_on_panic(false)
        .handle_termination(mode == Stuck::Sigterm);
    let guard = builder
        .shutdown_timeout(STUCK_TIMEOUT)
        .install()
        .expect("install");
    // 500 KB of lines: the listener blocks in write(2) once the pipe holds 64 KiB.
    // Then more, that stay in the ring behind the stuck batch.
    let pad = "x".repeat(200);
    for i in 0..STUCK_RECORDS {
        if i == STUCK_RECORDS * 4 / 5 {
            std::thread::sleep(Duration::from_millis(200));
        }
        log::info!("stuck {i} {pad}");
    }
    let said = |r: Result<(), Error>| r.map_or_else(|e| format!("Err({e:?})"), |()| "Ok".into());
    let ms = |since: Instant| since.elapsed().as_millis();
    let start = Instant::now();
    match mode {
        Stuck::FlushThenStop => {
            println!("\nFLUSH {} {}", said(guard.flush()), ms(start));
            let start = Instant::now();
            println!("\nSTOP {} {}", said(guard.stop().map(drop)), ms(start));
        }
        Stuck::Drop => println!("\nSTOP {:?} {}", drop(guard), ms(start)),
        Stuck::Sigterm => {
            println!("\nREADY");
            std::thread::sleep(Duration::from_secs(30));
            return println!("\nNOT TERMINATED");
        }
    }
    let stats = quelog::shutdown().expect("the final counters");
    println!("\nBOOKS {}", books(STUCK_RECORDS, &stats));
}

/// Runs the test `test_name` in a child whose standard error is a pipe that is never
/// read (nor closed); with `sigterm_when_ready`, sends it SIGTERM once it says `READY`.
fn run_with_stderr_unread(test_name: &str, sigterm_when_ready: bool) -> Unread {
    let mut child = child::self_test_command(test_name, test_name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let _unread = child.stderr.take();
    let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        stdout
            .lines()
            .map_while(Result::ok)
            .try_for_each(|l| tx.send(l))
    });
    let start = Instant::now();
    let (mut lines, mut signalled) = (Vec::new(), None);
    let status = loop {
        while let Ok(line) = rx.try_recv() {
            if sigterm_when_ready && line == "READY" {
                // Time for the listener to get stuck in its write.
                std::thread::sleep(Duration::from_millis(300));
                // SAFETY: kill(2) on our own child, which we have not reaped yet.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                signalled = Some(Instant::now());
            }
            lines.push(line);
        }
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break Some(status);
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let after_signal = signalled.map(|at| at.elapsed());
    lines.extend(std::iter::from_fn(|| {
        rx.recv_timeout(Duration::from_millis(500)).ok()
    }));
    lines.retain(|l| {
        ["FLUSH", "STOP", "BOOKS", "PANIC", "READY", "NOT"]
            .iter()
            .any(|p| l.starts_with(p))
    });
    Unread {
        status,
        lines,
        after_signal,
    }
}

#[test]
fn flush_and_stop_give_up_on_a_stuck_sink_after_the_shutdown_timeout() {
    let name = "flush_and_stop_give_up_on_a_stuck_sink_after_the_shutdown_timeout";
    let Some(run) = stuck_sink(name, Stuck::FlushThenStop) else {
        return;
    };
    assert!(run.status.is_some_and(|s| s.success()), "{run:#?}");
    let flush_ms = run.timed("FLUSH ", "Err(Timeout)");
    assert!((800..4000).contains(&flush_ms), "flush took {flush_ms} ms");
    let stop_ms = run.timed("STOP ", "Err(Timeout)");
    assert!(stop_ms < 4000, "stop took {stop_ms} ms");
    run.assert_books();
}

#[test]
fn dropping_the_guard_gives_up_on_a_stuck_sink() {
    let Some(run) = stuck_sink("dropping_the_guard_gives_up_on_a_stuck_sink", Stuck::Drop) else {
        return;
    };
    assert!(run.status.is_some_and(|s| s.success()), "{run:#?}");
    let drop_ms = run.timed("STOP ", "()");
    assert!(drop_ms < 4000, "dropping the guard took {drop_ms} ms");
    run.assert_books();
}

#[test]
fn sigterm_ends_the_process_despite_a_stuck_sink() {
    let name = "sigterm_ends_the_process_despite_a_stuck_sink";
    let Some(run) = stuck_sink(name, Stuck::Sigterm) else {
        return;
    };
    let signal = run.status.and_then(|s| s.signal());
    assert_eq!(signal, Some(libc::SIGTERM), "{run:#?}");
    let took = run.after_signal.expect("SIGTERM was sent");
    assert!(
        took < Duration::from_secs(5),
        "ended {took:?} after SIGTERM"
    );
}

// ---------------------------------------------------------------------------------
// A stop while producers never pause

#[test]
fn stop_under_steady_load_returns_promptly_and_accounts_for_every_record() {
    in_child(
        "stop_under_steady_load_returns_promptly_and_accounts_for_every_record",
        || {
            let handler = handler(64 << 10, Overflow::Drop);
            // A slow sink: the ring is never empty while the producers run.
            let sink = TestSink {
                discard: true,
                delay: Duration::from_millis(5),
                ..TestSink::default()
            };
            let listener = start(&handler, &[&sink], ListenerConfig::default());
            let quit = Arc::new(AtomicBool::new(false));
            let producers: Vec<_> = (0..2)
                .map(|_| {
                    let (handler, quit) = (handler.clone(), Arc::clone(&quit));
                    std::thread::spawn(move || {
                        // Bounded, so a stop that waits for the producers to go quiet ends.
                        let start = Instant::now();
                        let mut accepted = 0u64;
                        while !quit.load(Relaxed) && start.elapsed() < Duration::from_secs(10) {
                            log_to(&handler, format_args!("steady {accepted}"));
                            accepted += 1;
                        }
                        accepted
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(300));
            let started = Instant::now();
            let stopped = listener.stop();
            let took = started.elapsed();
            quit.store(true, Relaxed);
            let accepted: u64 = producers.into_iter().map(|p| p.join().unwrap()).sum();
            let books = books(accepted, &handler.stats());
            println!("\nMEASURED stop took {took:.2?}: {books}");
            assert!(stopped.is_ok(), "{stopped:?}");
            assert!(took < Duration::from_secs(2), "stop took {took:?}");
            assert_books(&books);
        },
    );
}

// ---------------------------------------------------------------------------------
// Overflow::Block with nobody to make room

/// A 1 KiB ring in block mode (an hour) and what `setup` leaves serving it (kept alive
/// meanwhile); then 40 records, more than it holds: every call must return at once.
fn fill_blocking(setup: impl FnOnce(&QueueHandler) -> Option<QueueListener>) -> QueueHandler {
    let handler = handler(
        1024,
        Overflow::Block {
            timeout: Duration::from_secs(3600),
        },
    );
    let _listener = setup(&handler);
    let longest = (0..40)
        .map(|i| {
            let start = Instant::now();
            log_to(&handler, format_args!("fill {i}"));
            start.elapsed()
        })
        .max();
    println!(
        "\nMEASURED longest call {longest:.2?}, {:?}",
        handler.stats().dropped
    );
    assert!(longest < Some(Duration::from_secs(1)), "{longest:?}");
    handler
}

#[test]
fn block_mode_drops_at_once_before_a_listener_starts() {
    in_child("block_mode_drops_at_once_before_a_listener_starts", || {
        let handler = fill_blocking(|_| None);
        assert!(handler.stats().dropped.queue_full > 0);
        let sink = TestSink::default();
        let stats = start(&handler, &[&sink], ListenerConfig::default()).stop();
        let stats = stats.expect("stop");
        assert_books(&books(40, &stats));
        assert_eq!(stats.written as usize, sink.count("fill "), "{stats:?}");
    });
}

#[test]
fn block_mode_drops_at_once_after_the_listener_died() {
    in_child("block_mode_drops_at_once_after_the_listener_died", || {
        let handler = fill_blocking(|handler| {
            let die = Arc::new(AtomicBool::new(false));
            let hooks = ListenerHooks {
                hold: Some(Arc::new(AtomicBool::new(true))),
                die: Some(Arc::clone(&die)),
            };
            let listener = start(
                handler,
                &[&TestSink::default()],
                listener_config(None, hooks),
            );
            die.store(true, Relaxed);
            let flushed = || listener.flush_timeout(Duration::from_millis(10));
            wait_until("the listener died", || {
                matches!(flushed(), Err(Error::ListenerStopped))
            });
            Some(listener)
        });
        assert!(handler.stats().dropped.queue_full > 0);
    });
}

#[test]
fn block_mode_drops_at_once_after_a_stop() {
    in_child("block_mode_drops_at_once_after_a_stop", || {
        let handler = fill_blocking(|handler| {
            let listener = start(handler, &[&TestSink::default()], ListenerConfig::default());
            listener.stop().expect("stop");
            None
        });
        assert_eq!(handler.stats().dropped.after_stop, 40);
    });
}

// ---------------------------------------------------------------------------------
// The books at a stop, and failing sinks

#[test]
fn stop_writes_records_behind_an_interrupted_claim_and_counts_it_abandoned() {
    let handler = handler(64 << 10, Overflow::Drop);
    let sink = TestSink::default();
    let config = listener_config(Some(Duration::from_millis(200)), ListenerHooks::default());
    let listener = start(&handler, &[&sink], config);
    // A log call interrupted between claim and publish, for good; 50 records after it.
    let held = hold_claim(&handler, 50).expect("room for the claim");
    for i in 0..50 {
        log_to(&handler, format_args!("behind the claim {i}"));
    }
    std::thread::sleep(Duration::from_millis(50));
    let stats = listener.stop().expect("stop");
    drop(held);
    let behind = sink.count("behind the claim ");
    eprintln!("MEASURED {behind} in the sink; {}", books(51, &stats));
    assert_eq!(behind, 50);
    assert_eq!(stats.abandoned, 1, "{stats:?}");
    assert_books(&books(51, &stats));
}

#[test]
fn two_failing_sinks_count_each_record_lost_once() {
    let handler = handler(64 << 10, Overflow::Drop);
    let (a, b) = (TestSink::default(), TestSink::default());
    let hold = Arc::new(AtomicBool::new(true));
    let hooks = ListenerHooks {
        hold: Some(Arc::clone(&hold)),
        ..ListenerHooks::default()
    };
    let listener = start(&handler, &[&a, &b], listener_config(None, hooks));
    // Logged while the listener is held, so they make one batch.
    let batch = |name: &str, n: u32| {
        hold.store(true, Relaxed);
        for i in 0..n {
            log_to(&handler, format_args!("{name} {i}"));
        }
        hold.store(false, Relaxed);
        listener.flush()
    };
    // A fails to write ten records; B writes them, but its sync fails, and the rewrite's.
    a.fail_write.store(true, Relaxed);
    b.fail_sync.store(true, Relaxed);
    let crossed = batch("crossed", 10);
    // Both fail to write the same ten records.
    b.fail_sync.store(false, Relaxed);
    b.fail_write.store(true, Relaxed);
    let both = batch("both fail", 10);
    a.fail_write.store(false, Relaxed);
    b.fail_write.store(false, Relaxed);
    // Until both write again (records meanwhile are lost to a sink still backing off).
    let mut probes = 0;
    wait_until("both sinks write again", || {
        probes += 1;
        let _ = batch("recovered", 1);
        a.count("recovered ") > 0 && b.count("recovered ") > 0
    });
    let stats = listener.stop().expect("stop");
    // A record is written when both sinks wrote it: the same line in both.
    let (a_text, b_text) = (a.text(), b.text());
    let records = |text: &str| -> std::collections::HashSet<String> {
        let lines = text.lines().filter(|l| !l.contains("] quelog: "));
        lines.map(str::to_owned).collect()
    };
    let in_both = records(&a_text).intersection(&records(&b_text)).count() as u64;
    eprintln!(
        "MEASURED {}; {in_both} in both sinks",
        books(20 + probes, &stats)
    );
    assert!(crossed.is_err() && both.is_err(), "{crossed:?} {both:?}");
    assert!(
        a.count("crossed ") == 0 && b.count("crossed ") >= 10,
        "not crossed"
    );
    assert_eq!(stats.enqueued, 20 + probes, "{stats:?}");
    assert_eq!(
        stats.written + stats.filtered + stats.lost,
        stats.enqueued,
        "{stats:?}"
    );
    assert_eq!(stats.written, in_both, "{stats:?}");
}

#[test]
fn drop_notice_survives_a_failing_sink() {
    let handler = handler(1024, Overflow::Drop);
    let sink = TestSink::default();
    sink.fail_write.store(true, Relaxed);
    let hold = Arc::new(AtomicBool::new(true));
    let hooks = ListenerHooks {
        hold: Some(Arc::clone(&hold)),
        ..ListenerHooks::default()
    };
    let listener = start(&handler, &[&sink], listener_config(None, hooks));
    let flood = |round: u32| {
        for i in 0..100 {
            log_to(&handler, format_args!("round {round} {i}"));
        }
    };
    // Drops while the listener is held; the write that tells them fails.
    flood(1);
    hold.store(false, Relaxed);
    wait_until("a failed write", || handler.stats().write_errors > 0);
    // More drops, told by a batch inside the sink's 10 ms backoff (or by another failed
    // write, if this thread was slow).
    hold.store(true, Relaxed);
    flood(2);
    hold.store(false, Relaxed);
    let _ = listener.flush();
    let write_errors = handler.stats().write_errors;
    sink.fail_write.store(false, Relaxed);
    // Records the sink loses while it still backs off change no drop count.
    wait_until("the sink writes again", || {
        log_to(&handler, format_args!("after recovery"));
        let _ = listener.flush();
        std::thread::sleep(Duration::from_millis(10));
        sink.count("after recovery") > 0
    });
    let stats = listener.stop().expect("stop");
    let text = sink.text();
    let told: u64 = text
        .lines()
        .filter_map(|l| message(l).strip_suffix(" records dropped (queue full)"))
        .map(|n| n.parse::<u64>().expect("a count"))
        .sum();
    eprintln!(
        "MEASURED told {told} of queue_full={} (write errors while failing: {write_errors})",
        stats.dropped.queue_full
    );
    assert!(stats.dropped.queue_full > 0, "{stats:?}");
    assert_eq!(told, stats.dropped.queue_full, "the log:\n{text}");
}

// ---------------------------------------------------------------------------------
// The panic hook

#[test]
fn panic_hook_is_a_pass_through_after_shutdown() {
    let run = in_child("panic_hook_is_a_pass_through_after_shutdown", || {
        // The panics are on purpose; quelog's hook chains before this silent one.
        std::panic::set_hook(Box::new(|_| {}));
        let sink = TestSink::default();
        let guard = Builder::new()
            .sink(sink.clone(), LevelFilter::Info)
            .install()
            .expect("install");
        let before = guard.stats();
        let caught = std::panic::catch_unwind(|| {
            panic!("caught before shutdown");
        });
        assert!(caught.is_err());
        let after = guard.stats();
        let stopped = quelog::shutdown().expect("shutdown");
        let caught = std::panic::catch_unwind(|| {
            panic!("caught after shutdown");
        });
        assert!(caught.is_err());
        let later = quelog::shutdown().expect("the counters");
        println!(
            "\nMEASURED flushes {} -> {}; after_stop {} -> {}",
            before.flushes, after.flushes, stopped.dropped.after_stop, later.dropped.after_stop
        );
        let logged = sink.text().lines().any(|l| {
            l.contains(" ERROR [")
                && l.contains("] panic: ")
                && l.ends_with("caught before shutdown")
        });
        assert!(logged, "the panic is not in the log:\n{}", sink.text());
        assert_eq!(after.flushes, before.flushes + 1);
        assert_eq!(later.dropped.after_stop, stopped.dropped.after_stop);
        drop(guard);
    });
    if let Some(run) = run {
        assert!(!run.stderr.contains("quelog (stopped)"), "{}", run.stderr);
    }
}
