//! End-to-end behaviour of the core: handler -> ring -> listener -> file.
//!
//! These tests log through `QueueHandler` directly (`log::Log::log`), because the
//! global logger can be installed only once per process; `guard_lifecycle` is the one
//! test here that installs it.

mod support;
use support::common::Memory;

use support::common::lines;

use support::common::message;

use std::collections::HashMap;
use std::path::Path;

use std::time::Duration;

use log::{Level, LevelFilter, Log, Record};
use quelog::{
    Builder, Error, FileSink, ListenerConfig, Overflow, QueueConfig, QueueHandler, QueueListener,
    Sink, SyncPolicy,
};

fn temp_log(name: &str) -> std::path::PathBuf {
    support::common::temp_log("core", name)
}

fn log(handler: &QueueHandler, level: Level, args: std::fmt::Arguments<'_>) {
    handler.log(
        &Record::builder()
            .level(level)
            .target("core")
            .module_path_static(Some("core"))
            .file_static(Some(file!()))
            .line(Some(line!()))
            .args(args)
            .build(),
    );
}

/// Checks the shape of every line: RFC 3339 timestamp, level, thread, target.
fn assert_well_formed(line: &str) {
    let (stamp, rest) = line.split_once(' ').expect("timestamp");
    assert!(
        chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
        "bad timestamp in {line:?}"
    );
    let rest = rest.trim_start();
    let (level, rest) = rest.split_once(' ').expect("level");
    assert!(
        ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level),
        "bad level in {line:?}"
    );
    assert!(rest.starts_with('['), "bad thread in {line:?}");
    message(line);
}

/// Logs `per_thread` records from each of `threads` threads, tagged `t<i> <seq>`, and
/// returns how many each thread attempted.
fn log_from_threads(handler: &QueueHandler, threads: usize, per_thread: u64) {
    std::thread::scope(|s| {
        for t in 0..threads {
            let handler = handler.clone();
            s.spawn(move || {
                for seq in 0..per_thread {
                    log(
                        &handler,
                        Level::Info,
                        format_args!("t{t} {seq} pad={:>8}", seq * 7),
                    );
                }
            });
        }
    });
}

/// Per-thread sequences seen in the file, checking order and uniqueness.
fn sequences(path: &Path) -> HashMap<String, Vec<u64>> {
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    for line in lines(path) {
        assert_well_formed(&line);
        let msg = message(&line);
        if line.contains(" [quelog/0] quelog: ") {
            continue;
        }
        let mut parts = msg.split(' ');
        let thread = parts.next().unwrap().to_owned();
        let seq: u64 = parts.next().unwrap().parse().unwrap();
        let list = seen.entry(thread.clone()).or_default();
        if let Some(&last) = list.last() {
            assert!(
                seq > last,
                "{thread}: {seq} after {last}: out of order or duplicate"
            );
        }
        list.push(seq);
    }
    seen
}

#[test]
fn four_threads_block_mode_every_record_exactly_once_in_order() {
    let path = temp_log("block.log");
    let (handler, listener) = Builder::new()
        .file(&path)
        .capacity(64 << 10) // small enough that producers do hit a full ring
        .overflow(Overflow::Block {
            timeout: Duration::from_secs(60),
        })
        .build()
        .unwrap();
    log_from_threads(&handler, 4, 100_000);
    let stats = listener.stop().unwrap();
    assert_eq!(stats.dropped.total(), 0, "{stats:?}");
    assert_eq!(stats.enqueued, 400_000);
    assert_eq!(stats.written, 400_000);
    let seen = sequences(&path);
    assert_eq!(seen.len(), 4);
    for (thread, list) in seen {
        assert_eq!(list, (0..100_000).collect::<Vec<_>>(), "{thread}");
    }
}

#[test]
fn four_threads_drop_mode_accounts_for_every_record() {
    let path = temp_log("drop.log");
    let (handler, listener) = Builder::new()
        .file(&path)
        .capacity(16 << 10)
        .sync(SyncPolicy::EveryBatch)
        .build()
        .unwrap();
    log_from_threads(&handler, 4, 100_000);
    let stats = listener.stop().unwrap();
    let seen = sequences(&path);
    let in_file: u64 = seen.values().map(|l| l.len() as u64).sum();
    assert_eq!(in_file, stats.written);
    assert_eq!(stats.written + stats.dropped.total(), 400_000, "{stats:?}");
    if stats.dropped.total() > 0 {
        // The listener said so in the log itself.
        let reported: u64 = lines(&path)
            .iter()
            .filter(|l| l.contains(" quelog: ") && l.contains("records dropped"))
            .map(|l| {
                message(l)
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum();
        assert_eq!(reported, stats.dropped.total());
    }
}

#[test]
fn flush_returns_only_after_the_records_are_in_the_file() {
    let path = temp_log("flush.log");
    let (handler, listener) = Builder::new()
        .file(&path)
        .sync(SyncPolicy::Never)
        .build()
        .unwrap();
    for round in 0..20u64 {
        for i in 0..50u64 {
            log(&handler, Level::Info, format_args!("r{round} {i}"));
        }
        listener.flush().unwrap();
        // No sleeping, no retry: the barrier alone must make them visible.
        assert_eq!(lines(&path).len() as u64, (round + 1) * 50);
    }
    let stats = listener.stop().unwrap();
    assert!(stats.syncs >= 20, "each flush syncs: {stats:?}");
}

#[test]
fn records_logged_before_the_listener_starts_wait_in_the_ring() {
    let path = temp_log("early.log");
    let handler = QueueHandler::new(&{
        let mut c = QueueConfig::default();
        c.capacity = 1024;
        c
    })
    .unwrap();
    for i in 0..100 {
        log(&handler, Level::Info, format_args!("early {i}"));
    }
    let dropped = handler.stats().dropped.queue_full;
    assert!(dropped > 0);
    let listener = QueueListener::start(
        &handler,
        vec![(Box::new(FileSink::open(&path).unwrap()), LevelFilter::Trace)],
        ListenerConfig::default(),
    )
    .unwrap();
    let stats = listener.stop().unwrap();
    let all = lines(&path);
    // First the notice, with the exact count, then the records that fit.
    assert!(
        all[0].ends_with(&format!("quelog: {dropped} records dropped (queue full)")),
        "{}",
        all[0]
    );
    assert_eq!(all.len() as u64 - 1, 100 - dropped);
    assert_eq!(stats.written + stats.dropped.total(), 100);
    assert_eq!(message(&all[1]), "early 0");
}

#[test]
fn multi_slot_record_crossing_the_end_of_the_ring_arrives_intact() {
    let path = temp_log("wrap.log");
    let (handler, listener) = Builder::new()
        .file(&path)
        .capacity(1024) // 16 slots of 64 bytes
        .overflow(Overflow::Block {
            timeout: Duration::from_secs(30),
        })
        .build()
        .unwrap();
    // Records of 4-7 slots at every alignment: many of them straddle the array end.
    let mut expected = Vec::new();
    for i in 0..200usize {
        let body: String = (0..150 + (i * 13) % 200)
            .map(|j| char::from(b'a' + ((i + j) % 26) as u8))
            .collect();
        log(&handler, Level::Info, format_args!("{i} {body}"));
        expected.push(format!("{i} {body}"));
    }
    let stats = listener.stop().unwrap();
    assert_eq!(stats.dropped.total(), 0);
    let got: Vec<String> = lines(&path).iter().map(|l| message(l).to_owned()).collect();
    assert_eq!(got, expected);
}

#[test]
fn long_records_arrive_whole_up_to_the_limit_and_are_cut_visibly_past_it() {
    let path = temp_log("long.log");
    let (handler, listener) = Builder::new()
        .file(&path)
        .max_record(64 << 10)
        .build()
        .unwrap();
    let whole = "w".repeat(64 << 10);
    let too_long = "x".repeat(100_000);
    log(&handler, Level::Info, format_args!("{whole}"));
    log(&handler, Level::Info, format_args!("{too_long}"));
    let stats = listener.stop().unwrap();
    let all = lines(&path);
    assert_eq!(message(&all[0]), whole);
    assert!(all[1].ends_with(" [quelog: message cut at 65536 bytes]"));
    assert_eq!(stats.truncated, 1);
    assert_eq!(stats.written, 2);
}

#[test]
fn control_characters_and_invalid_utf8_cannot_break_lines() {
    let path = temp_log("escape.log");
    let (handler, listener) = Builder::new().file(&path).build().unwrap();
    let lossy = String::from_utf8_lossy(&[b'o', b'k', 0xff, 0xfe]);
    log(
        &handler,
        Level::Info,
        format_args!("forged\n2026-01-01T00:00:00.000000Z ERROR [1] x: y {lossy}"),
    );
    listener.stop().unwrap();
    let all = lines(&path);
    assert_eq!(all.len(), 1);
    assert!(all[0].contains("forged\\n2026-01-01"));
    assert!(all[0].ends_with("ok\u{fffd}\u{fffd}"));
}

#[test]
fn each_sink_has_its_own_level() {
    let path = temp_log("levels.log");
    let warnings = Memory::default();
    let (handler, listener) = Builder::new()
        .level(LevelFilter::Debug)
        .file(&path)
        .sink(warnings.clone(), LevelFilter::Warn)
        .build()
        .unwrap();
    log(&handler, Level::Debug, format_args!("debug"));
    log(&handler, Level::Info, format_args!("info"));
    log(&handler, Level::Warn, format_args!("warn"));
    log(&handler, Level::Error, format_args!("error"));
    log(
        &handler,
        Level::Trace,
        format_args!("trace: above the queue level"),
    );
    let stats = listener.stop().unwrap();
    assert_eq!(lines(&path).len(), 4);
    let memory = String::from_utf8(warnings.0.lock().unwrap().clone()).unwrap();
    let got: Vec<&str> = memory.lines().map(message).collect();
    assert_eq!(got, ["warn", "error"]);
    assert_eq!(stats.written, 4);
    assert_eq!(stats.filtered, 0);
}

#[test]
fn sync_policies_sync_as_documented() {
    let run = |policy: SyncPolicy| {
        let path = temp_log("sync.log");
        let (handler, listener) = Builder::new().file(&path).sync(policy).build().unwrap();
        for i in 0..200 {
            log(&handler, Level::Info, format_args!("{i}"));
            if i % 50 == 49 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let stats = listener.stop().unwrap();
        assert_eq!(stats.written, 200);
        stats.syncs
    };
    assert_eq!(run(SyncPolicy::EveryRecord), 200);
    let batches = run(SyncPolicy::EveryBatch);
    assert!((1..=200).contains(&batches), "{batches}");
    // Never: only the final sync at stop.
    assert_eq!(run(SyncPolicy::Never), 1);
}

#[test]
fn a_special_file_as_the_log_is_written_not_lost() {
    // `/dev/null` cannot be synced (EINVAL): the records are still written, not lost.
    let (handler, listener) = Builder::new().file("/dev/null").build().unwrap();
    for i in 0..100 {
        log(&handler, Level::Info, format_args!("{i}"));
    }
    listener.flush().unwrap();
    let stats = listener.stop().unwrap();
    assert_eq!(
        (stats.written, stats.lost, stats.sync_errors),
        (100, 0, 0),
        "{stats:?}"
    );
}

#[test]
fn bad_configuration_is_an_error_value() {
    let bad = |builder: Builder| match builder.build() {
        Err(Error::InvalidConfig(why)) => why,
        other => panic!("expected InvalidConfig, got {other:?}"),
    };
    let path = temp_log("bad.log");
    assert!(bad(Builder::new().file(&path).capacity(0)).contains("capacity"));
    assert!(bad(Builder::new().file(&path).capacity(usize::MAX)).contains("capacity"));
    assert!(bad(Builder::new().file(&path).max_record(1)).contains("max_record"));
    assert!(bad(Builder::new()).contains("no sink"));

    let dir = temp_log("a-directory");
    std::fs::create_dir_all(&dir).unwrap();
    assert!(matches!(
        Builder::new().file(&dir).build(),
        Err(Error::Open { .. })
    ));
    let under_file = dir.join("plain");
    std::fs::write(&under_file, b"").unwrap();
    let err = Builder::new()
        .file(under_file.join("x.log"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("cannot open log file"), "{err}");
}

#[test]
fn one_listener_per_queue_a_stop_is_final_and_flush_without_one_is_an_error() {
    let handler = QueueHandler::new(&QueueConfig::default()).unwrap();
    let sinks = || -> Vec<(Box<dyn Sink>, LevelFilter)> {
        vec![(Box::new(Memory::default()), LevelFilter::Trace)]
    };
    let listener = QueueListener::start(&handler, sinks(), ListenerConfig::default()).unwrap();
    assert!(matches!(
        QueueListener::start(&handler, sinks(), ListenerConfig::default()),
        Err(Error::AlreadyListening)
    ));
    listener.flush().unwrap();
    let again = QueueListener::start(&handler, sinks(), ListenerConfig::default());
    assert!(again.is_err());
    drop(listener);
    // A stop is final: the queue is closed, so the accounting is exact at once; later
    // records go to standard error and are counted as dropped after the stop.
    assert!(matches!(
        QueueListener::start(&handler, sinks(), ListenerConfig::default()),
        Err(Error::ListenerStopped)
    ));
    log(&handler, Level::Info, format_args!("after the stop"));
    assert_eq!(handler.stats().dropped.after_stop, 1);
}

/// The one test in this binary that installs the global logger.
#[test]
fn guard_lifecycle() {
    let path = temp_log("guard.log");
    let guard = Builder::new().file(&path).install().unwrap();
    // The first install took both the tracing dispatcher and the `log` logger; a
    // second one says which it found taken, and installs nothing.
    assert!(matches!(
        Builder::new().file(temp_log("second.log")).install(),
        Err(Error::TracingAlreadySet)
    ));
    assert!(matches!(
        Builder::new()
            .file(temp_log("third.log"))
            .tracing(false)
            .install(),
        Err(Error::AlreadyInstalled)
    ));
    for i in 0..1000 {
        log::info!("via the macro {i}");
    }
    log::debug!("below the default Info level");
    guard.flush().unwrap();
    assert_eq!(lines(&path).len(), 1000);
    for i in 0..500 {
        log::warn!("drained by the guard {i}");
    }
    let stats = guard.stop().unwrap();
    assert_eq!(stats.written, 1500);
    assert_eq!(lines(&path).len(), 1500);
    // After the stop: no panic, no hang, written to stderr instead (and counted as
    // `Dropped::after_stop`, see tests/reentrancy.rs for the count).
    log::error!("after the guard is gone");
    log::logger().flush(); // no listener: returns at once
    assert_eq!(lines(&path).len(), 1500);
}

#[test]
fn log_key_values_are_typed_fields_on_the_line() {
    let memory = Memory::default();
    let handler = QueueHandler::new(&QueueConfig::default()).unwrap();
    let listener = QueueListener::start(
        &handler,
        vec![(Box::new(memory.clone()), LevelFilter::Trace)],
        ListenerConfig::default(),
    )
    .unwrap();
    let attempts = 3;
    handler.log(
        &log::Record::builder()
            .level(Level::Info)
            .target("app")
            .args(format_args!("login"))
            .key_values(&[
                ("user", log::kv::Value::from("ann \"x\"")),
                ("attempts", log::kv::Value::from(attempts)),
                ("ratio", log::kv::Value::from(0.25)),
                ("ok", log::kv::Value::from(true)),
            ])
            .build(),
    );
    listener.stop().unwrap();
    let text = String::from_utf8(memory.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.trim_end()
            .ends_with(r#"app: login user="ann \"x\"" attempts=3 ratio=0.25 ok=true"#),
        "{text}"
    );
}
