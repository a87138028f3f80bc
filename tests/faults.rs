//! Faults: disk full, fsync EIO (fsyncgate), sinks that panic, a listener that dies,
//! and the severity reserve. All in-process, through `QueueHandler` and
//! `QueueListener` (the global logger can be installed only once per process).

mod support;
use support::common::Memory;

use support::common::message;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Record};
use quelog::test_hooks::ListenerHooks;
use quelog::{
    Error, FileSink, ListenerConfig, QueueConfig, QueueHandler, QueueListener, Sink, SyncPolicy,
};

fn temp_log(name: &str) -> std::path::PathBuf {
    support::common::temp_log("faults", name)
}

fn log(handler: &QueueHandler, level: Level, args: std::fmt::Arguments<'_>) {
    handler.log(
        &Record::builder()
            .level(level)
            .target("faults")
            .args(args)
            .build(),
    );
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("utf-8")
}

fn handler_with(capacity: usize, reserve: f64) -> QueueHandler {
    QueueHandler::new(&{
        let mut c = QueueConfig::default();
        c.capacity = capacity;
        c.severity_reserve = reserve;
        c
    })
    .unwrap()
}

/// A queue of 64 KiB with the default severity reserve, served by a listener that
/// writes to `sink` alone.
fn start(sink: impl Sink + 'static, sync: SyncPolicy) -> (QueueHandler, QueueListener) {
    let handler = handler_with(64 << 10, 0.125);
    let listener = QueueListener::start(
        &handler,
        vec![(Box::new(sink), LevelFilter::Trace)],
        config(sync),
    )
    .unwrap();
    (handler, listener)
}

fn config(sync: SyncPolicy) -> ListenerConfig {
    let mut c = ListenerConfig::default();
    c.sync = sync;
    c
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

// ---------------------------------------------------------------------------------
// Disk full

#[test]
fn dev_full_loses_and_counts_without_blocking_or_panicking() {
    let (handler, listener) = start(FileSink::open("/dev/full").unwrap(), SyncPolicy::EveryBatch);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..4 {
            let handler = handler.clone();
            s.spawn(move || {
                for i in 0..5_000 {
                    log(&handler, Level::Info, format_args!("t{t} record {i}"));
                }
            });
        }
    });
    let logging = started.elapsed();
    match listener.flush() {
        Err(Error::Sink { kind, message }) => {
            assert_eq!(kind, io::ErrorKind::StorageFull);
            assert!(message.contains("No space left on device"), "{message}");
        }
        other => panic!("flush on /dev/full: {other:?}"),
    }
    let stats = listener.stop().unwrap();
    eprintln!("/dev/full: 20000 records logged in {logging:?}; {stats:?}");
    assert_eq!(stats.enqueued + stats.dropped.total(), 20_000, "{stats:?}");
    assert_eq!(stats.written, 0);
    assert_eq!(stats.lost, stats.enqueued, "{stats:?}");
    assert!(stats.write_errors >= 1);
    assert_eq!(stats.syncs, 0);
}

/// Fails the first `failures` writes with ENOSPC, then keeps lines in memory.
#[derive(Clone, Default)]
struct FullThenFree {
    failures: Arc<AtomicU32>,
    calls: Arc<AtomicU32>,
    lines: Memory,
}

impl Sink for FullThenFree {
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self
            .failures
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(enospc());
        }
        self.lines.write_batch(batch)
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn disk_full_then_space_again_writes_one_loss_line_then_everything_after() {
    let sink = FullThenFree::default();
    sink.failures.store(3, Ordering::Relaxed);
    let (handler, listener) = start(sink.clone(), SyncPolicy::EveryRecord);
    let mut errors = 0;
    for i in 0..60 {
        log(&handler, Level::Info, format_args!("record {i}"));
        match listener.flush() {
            Ok(()) => {}
            Err(Error::Sink { kind, message }) => {
                assert_eq!(kind, io::ErrorKind::StorageFull, "{message}");
                assert!(message.contains("No space left on device"), "{message}");
                errors += 1;
            }
            Err(other) => panic!("{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    let stats = listener.stop().unwrap();
    let out = text(&sink.lines.0.lock().unwrap());
    let lines: Vec<&str> = out.lines().collect();
    let notices: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("records lost"))
        .collect();
    assert_eq!(notices.len(), 1, "{out}");
    let lost = stats.lost;
    let expected = format!("quelog: {lost} records lost (No space left on device)");
    assert!(lines[0].ends_with(&expected), "{}", lines[0]);
    assert!(
        lines[0].contains(" ERROR [quelog/0] quelog: "),
        "{}",
        lines[0]
    );
    // Everything after the notice: the records from `lost` on, in order, once.
    let after: Vec<&str> = lines[1..].iter().map(|l| message(l)).collect();
    let want: Vec<String> = (lost..60).map(|i| format!("record {i}")).collect();
    assert_eq!(after, want);
    assert_eq!(stats.write_errors, 3);
    assert!(lost >= 3, "each failed write lost its record: {stats:?}");
    assert_eq!(stats.written + stats.lost, 60);
    assert!(errors >= 3, "every flush spanning a loss failed: {errors}");
    eprintln!(
        "disk full x3: {lost} records lost (3 failed writes + backoff), {errors} flushes \
         answered Err, {} sink calls; {stats:?}",
        sink.calls.load(Ordering::Relaxed)
    );
}

// ---------------------------------------------------------------------------------
// fsync EIO (fsyncgate)

/// A disk with a page cache. Writes go to the cache; a good sync makes the dirty part
/// durable; a failed sync (EIO) leaves a hole on the disk where the dirty part was and
/// marks the pages clean, as Linux does, so a retried sync "succeeds" and writes
/// nothing. `prepare_rewrite` cuts back to the last good sync, like `FileSink`.
#[derive(Default)]
struct Disk {
    cache: Vec<u8>,
    durable: Vec<u8>,
    /// Cache bytes from here on are dirty.
    dirty_from: usize,
    /// Length at the last good sync.
    synced_len: usize,
    failing_syncs: u32,
    reopens: u32,
}

#[derive(Clone, Default)]
struct FlakyDisk(Arc<Mutex<Disk>>);

impl Sink for FlakyDisk {
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        self.0.lock().unwrap().cache.extend_from_slice(batch);
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        let mut disk = self.0.lock().unwrap();
        let len = disk.cache.len();
        let from = disk.dirty_from;
        disk.durable.resize(len, 0);
        disk.dirty_from = len;
        if disk.failing_syncs > 0 {
            disk.failing_syncs -= 1;
            // The dirty pages never reached the disk: a hole of zeros stays there.
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let fresh = disk.cache[from..len].to_vec();
        disk.durable[from..len].copy_from_slice(&fresh);
        disk.synced_len = len;
        Ok(())
    }
    fn reopen(&mut self) -> io::Result<()> {
        self.0.lock().unwrap().reopens += 1;
        Ok(())
    }
    fn prepare_rewrite(&mut self) -> io::Result<()> {
        self.reopen()?;
        let mut disk = self.0.lock().unwrap();
        let keep = disk.synced_len;
        disk.cache.truncate(keep);
        disk.durable.truncate(keep);
        disk.dirty_from = keep;
        Ok(())
    }
}

#[test]
fn failed_sync_rewrites_everything_since_the_last_good_sync_and_flush_reports_it() {
    let disk = FlakyDisk::default();
    let (handler, listener) = start(disk.clone(), SyncPolicy::Never);
    // Durable before the failure.
    for i in 0..10 {
        log(&handler, Level::Info, format_args!("record {i}"));
    }
    listener.flush().unwrap();
    // Written, then the sync fails once.
    for i in 10..25 {
        log(&handler, Level::Info, format_args!("record {i}"));
    }
    disk.0.lock().unwrap().failing_syncs = 1;
    let failed = listener.flush();
    match &failed {
        Err(Error::Sink { message, .. }) => {
            assert!(message.contains("Input/output error"), "{message}");
            assert!(message.contains("rewritten and synced again"), "{message}");
        }
        other => panic!("the barrier over a failed sync must fail: {other:?}"),
    }
    // The next barrier writes and syncs the report line; nothing failed since.
    for i in 25..30 {
        log(&handler, Level::Info, format_args!("record {i}"));
    }
    listener.flush().unwrap();
    let stats = listener.stop().unwrap();

    let disk = disk.0.lock().unwrap();
    assert!(!disk.durable.contains(&0), "a hole was left on the disk");
    let out = text(&disk.durable);
    let lines: Vec<&str> = out.lines().collect();
    let records: Vec<&str> = lines
        .iter()
        .filter(|l| !l.contains("] quelog: "))
        .map(|l| message(l))
        .collect();
    let want: Vec<String> = (0..30).map(|i| format!("record {i}")).collect();
    assert_eq!(records, want, "every record durable exactly once, in order");
    let notices: Vec<&&str> = lines.iter().filter(|l| l.contains("] quelog: ")).collect();
    assert_eq!(notices.len(), 1, "{out}");
    let notice = message(notices[0]);
    assert!(
        notice.starts_with("sync failed (Input/output error); rewrote the ")
            && notice.ends_with(
                " bytes (15 records) written since the last good sync and synced them again"
            ),
        "{notice}"
    );
    assert_eq!(disk.reopens, 1);
    assert_eq!(stats.sync_errors, 1);
    assert_eq!(stats.sync_rewrites, 1);
    assert_eq!(stats.lost, 0);
    assert_eq!(stats.written, 30);
    eprintln!("fsync EIO once: {}\n{stats:?}", notices[0]);
}

#[test]
fn sync_that_keeps_failing_counts_the_records_lost_and_says_so_later() {
    let disk = FlakyDisk::default();
    let (handler, listener) = start(disk.clone(), SyncPolicy::Never);
    for i in 0..5 {
        log(&handler, Level::Info, format_args!("record {i}"));
    }
    listener.flush().unwrap();
    for i in 5..12 {
        log(&handler, Level::Info, format_args!("record {i}"));
    }
    // The sync fails, and so does the sync after the rewrite.
    disk.0.lock().unwrap().failing_syncs = 2;
    match listener.flush() {
        Err(Error::Sink { message, .. }) => {
            assert!(message.contains("not durable"), "{message}");
            assert!(message.contains("7 records"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // After the backoff, the sink works again: one line says what was lost.
    std::thread::sleep(Duration::from_millis(30));
    for i in 12..15 {
        log(&handler, Level::Info, format_args!("record {i}"));
    }
    listener.flush().unwrap();
    let stats = listener.stop().unwrap();
    let disk = disk.0.lock().unwrap();
    let out = text(&disk.durable);
    let lines: Vec<&str> = out.lines().collect();
    let got: Vec<&str> = lines.iter().map(|l| message(l)).collect();
    assert_eq!(
        got,
        [
            "record 0",
            "record 1",
            "record 2",
            "record 3",
            "record 4",
            "7 records lost (Input/output error)",
            "record 12",
            "record 13",
            "record 14"
        ]
    );
    assert_eq!(stats.sync_errors, 2);
    assert_eq!(stats.sync_rewrites, 0);
    assert_eq!(stats.lost, 7);
    assert_eq!(stats.written, 8);
    assert_eq!(stats.enqueued, stats.written + stats.lost);
}

// ---------------------------------------------------------------------------------
// Sinks that panic, a listener that dies

struct Panics;

impl Sink for Panics {
    fn write_batch(&mut self, _: &[u8]) -> io::Result<()> {
        panic!("boom in write_batch");
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_panicking_sink_is_reported_and_the_other_sinks_are_served() {
    let memory = Memory::default();
    let handler = handler_with(64 << 10, 0.125);
    let listener = QueueListener::start(
        &handler,
        vec![
            (Box::new(Panics), LevelFilter::Trace),
            (Box::new(memory.clone()), LevelFilter::Trace),
        ],
        config(SyncPolicy::EveryBatch),
    )
    .unwrap();
    for i in 0..100 {
        log(&handler, Level::Info, format_args!("record {i}"));
    }
    match listener.flush() {
        Err(Error::Sink { message, .. }) => {
            assert!(
                message.contains("sink panicked: boom in write_batch"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    for i in 100..200 {
        log(&handler, Level::Info, format_args!("record {i}"));
        if i % 20 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let stats = listener.stop().unwrap();
    let out = text(&memory.0.lock().unwrap());
    let got: Vec<&str> = out.lines().map(message).collect();
    let want: Vec<String> = (0..200).map(|i| format!("record {i}")).collect();
    assert_eq!(got, want, "the healthy sink got everything");
    assert!(stats.sink_panics >= 1, "{stats:?}");
    assert_eq!(stats.sink_panics, stats.write_errors);
    assert_eq!(stats.enqueued, 200);
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_dead_listener_fails_flushes_and_producers_keep_going() {
    let hold = Arc::new(AtomicBool::new(true));
    let die = Arc::new(AtomicBool::new(false));
    let handler = handler_with(64 << 10, 0.125);
    let listener = QueueListener::start(
        &handler,
        vec![(Box::new(Memory::default()), LevelFilter::Trace)],
        {
            quelog::test_hooks::with_hooks(
                ListenerConfig::default(),
                ListenerHooks {
                    hold: Some(hold.clone()),
                    die: Some(die.clone()),
                },
            )
        },
    )
    .unwrap();
    log(&handler, Level::Info, format_args!("before"));
    // A flush waits on the held listener; the listener dies under it.
    std::thread::scope(|s| {
        let waiting = s.spawn(|| listener.flush());
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !waiting.is_finished(),
            "the held listener cannot answer yet"
        );
        die.store(true, Ordering::Release);
        let started = Instant::now();
        let answer = waiting.join().unwrap();
        assert!(matches!(answer, Err(Error::ListenerStopped)), "{answer:?}");
        eprintln!(
            "flush answered {answer:?} {:?} after the death",
            started.elapsed()
        );
    });
    wait_for("flush to fail at once", || {
        matches!(listener.flush(), Err(Error::ListenerStopped))
    });
    // Producers never notice, beyond their records being dropped once the ring is full.
    let attempts = 20_000;
    for i in 0..attempts {
        log(&handler, Level::Info, format_args!("after death {i}"));
    }
    let stats = handler.stats();
    assert!(stats.dropped.queue_full > 0, "{stats:?}");
    assert!(matches!(listener.stop(), Err(Error::ListenerStopped)));
}

// ---------------------------------------------------------------------------------
// Severity reserve

/// Floods Debug with the listener held until the ring refuses it, logs `errors`
/// errors, then lets the listener drain. Returns the file's lines and the stats.
fn flood_then_errors(reserve: f64, errors: usize) -> (Vec<String>, quelog::Stats) {
    let path = temp_log("reserve.log");
    let hold = Arc::new(AtomicBool::new(true));
    let handler = QueueHandler::new(&{
        let mut c = QueueConfig::default();
        c.capacity = 64 << 10;
        c.severity_reserve = reserve; // 1024 slots; the reserve is 128 of them
        c.level = LevelFilter::Trace;
        c
    })
    .unwrap();
    let listener = QueueListener::start(
        &handler,
        vec![(Box::new(FileSink::open(&path).unwrap()), LevelFilter::Trace)],
        {
            quelog::test_hooks::with_hooks(
                ListenerConfig::default(),
                ListenerHooks {
                    hold: Some(hold.clone()),
                    die: None,
                },
            )
        },
    )
    .unwrap();
    let mut debug = 0;
    while handler.stats().dropped.queue_full < 100 {
        log(&handler, Level::Debug, format_args!("debug flood {debug}"));
        debug += 1;
    }
    for i in 0..errors {
        log(&handler, Level::Error, format_args!("error {i}"));
        // The flood goes on between errors.
        for _ in 0..10 {
            log(&handler, Level::Debug, format_args!("debug flood {debug}"));
            debug += 1;
        }
    }
    hold.store(false, Ordering::Release);
    let stats = listener.stop().unwrap();
    let lines = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    (lines, stats)
}

#[test]
fn a_debug_flood_never_pushes_out_an_error() {
    let (lines, stats) = flood_then_errors(0.125, 60);
    let errors: Vec<&str> = lines
        .iter()
        .filter(|l| l.contains(" ERROR ") && !l.contains("quelog"))
        .map(|l| message(l))
        .collect();
    let want: Vec<String> = (0..60).map(|i| format!("error {i}")).collect();
    assert_eq!(errors, want, "every error arrives");
    let debug = lines.iter().filter(|l| l.contains(" DEBUG ")).count() as u64;
    assert!(stats.dropped.queue_full >= 100 + 600, "{stats:?}");
    assert_eq!(stats.written, debug + 60);
    // The drops are reported in the file with their count.
    let reported: u64 = lines
        .iter()
        .filter_map(|l| l.strip_suffix(" records dropped (queue full)"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(reported, stats.dropped.queue_full);
    eprintln!(
        "reserve 1/8: 60/60 errors, {debug} debug written, {} dropped",
        stats.dropped.queue_full
    );

    // Control: without a reserve the same flood pushes the errors out.
    let (lines, _) = flood_then_errors(0.0, 60);
    let errors = lines
        .iter()
        .filter(|l| l.contains(" ERROR ") && !l.contains("quelog"))
        .count();
    assert!(
        errors < 60,
        "without a reserve, errors are dropped too ({errors})"
    );
}

/// Writes slowly, so producers outrun the listener.
#[derive(Clone, Default)]
struct Slow(Memory);

impl Sink for Slow {
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        std::thread::sleep(Duration::from_millis(2));
        self.0.write_batch(batch)
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn errors_arrive_while_two_threads_flood_debug_into_a_slow_sink() {
    let sink = Slow::default();
    let handler = QueueHandler::new(&{
        let mut c = QueueConfig::default();
        c.capacity = 64 << 10; // 1024 slots, 128 reserved
        c.level = LevelFilter::Trace;
        c
    })
    .unwrap();
    let listener = QueueListener::start(
        &handler,
        vec![(Box::new(sink.clone()), LevelFilter::Trace)],
        config(SyncPolicy::EveryBatch),
    )
    .unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2 {
            let handler = handler.clone();
            let stop = &stop;
            s.spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    log(&handler, Level::Debug, format_args!("flood t{t} {i}"));
                    i += 1;
                }
            });
        }
        for i in 0..200 {
            log(&handler, Level::Error, format_args!("error {i}"));
            // The reserve holds 128 errors: only a listener stalled for over 100 ms
            // could let them run out of room.
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let stats = listener.stop().unwrap();
    let out = text(&sink.0 .0.lock().unwrap());
    let errors: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(" ERROR ") && !l.contains("quelog"))
        .map(message)
        .collect();
    let want: Vec<String> = (0..200).map(|i| format!("error {i}")).collect();
    assert_eq!(errors, want);
    assert!(
        stats.dropped.queue_full > 0,
        "the flood filled the ring: {stats:?}"
    );
    eprintln!(
        "concurrent flood: 200/200 errors, {} debug written, {} debug dropped",
        stats.written - 200,
        stats.dropped.queue_full
    );
}
