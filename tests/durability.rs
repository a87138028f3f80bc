//! Group commit: threads that flush at the same time share syncs, and a flush that
//! returns Ok has its records durable. Numbers (flushes vs syncs, sync latency) are
//! printed, not asserted on time: run with `--nocapture` to see them.

mod support;

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Record};
use quelog::{
    FileSink, ListenerConfig, QueueConfig, QueueHandler, QueueListener, Sink, Stats, SyncPolicy,
};

fn temp_log(name: &str) -> std::path::PathBuf {
    support::common::temp_log("durability", name)
}

fn log(handler: &QueueHandler, args: std::fmt::Arguments<'_>) {
    handler.log(
        &Record::builder()
            .level(Level::Info)
            .target("durability")
            .args(args)
            .build(),
    );
}

/// A disk whose sync takes `latency`: what was written before a sync started is
/// durable when it returns.
#[derive(Default)]
struct DiskState {
    written: Vec<u8>,
    durable_len: usize,
    syncs: u64,
}

#[derive(Clone)]
struct SlowDisk {
    state: Arc<Mutex<DiskState>>,
    latency: Duration,
}

impl Sink for SlowDisk {
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        self.state.lock().unwrap().written.extend_from_slice(batch);
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        let upto = self.state.lock().unwrap().written.len();
        std::thread::sleep(self.latency);
        let mut state = self.state.lock().unwrap();
        state.durable_len = upto;
        state.syncs += 1;
        Ok(())
    }
}

fn start(sink: Box<dyn Sink>, sync: SyncPolicy) -> (QueueHandler, QueueListener) {
    let handler = QueueHandler::new(&QueueConfig::default()).unwrap();
    let listener = QueueListener::start(&handler, vec![(sink, LevelFilter::Trace)], {
        let mut c = ListenerConfig::default();
        c.sync = sync;
        c
    })
    .unwrap();
    (handler, listener)
}

/// `threads` threads each log a record and flush, `rounds` times.
fn log_and_flush(
    handler: &QueueHandler,
    listener: &QueueListener,
    threads: usize,
    rounds: usize,
    after_ok: impl Fn(&str) + Sync,
) {
    std::thread::scope(|s| {
        for t in 0..threads {
            let after_ok = &after_ok;
            s.spawn(move || {
                for n in 0..rounds {
                    log(handler, format_args!("t{t} n{n}"));
                    listener.flush().expect("flush");
                    after_ok(&format!(": t{t} n{n}\n"));
                }
            });
        }
    });
}

#[test]
fn concurrent_flushes_share_syncs_and_each_ok_means_durable() {
    for policy in [SyncPolicy::EveryBatch, SyncPolicy::Never] {
        let state = Arc::new(Mutex::new(DiskState::default()));
        let disk = SlowDisk {
            state: Arc::clone(&state),
            latency: Duration::from_millis(2),
        };
        let (handler, listener) = start(Box::new(disk), policy);
        let (threads, rounds) = (4, 100);
        log_and_flush(&handler, &listener, threads, rounds, |line| {
            // Exact semantics: when flush returns Ok, the record is in the durable part.
            let state = state.lock().unwrap();
            let durable = &state.written[..state.durable_len];
            let needle = line.as_bytes();
            assert!(
                durable.windows(needle.len()).any(|w| w == needle),
                "{policy:?}: {line:?} acknowledged but not durable"
            );
        });
        let stats = listener.stop().unwrap();
        let flushes = (threads * rounds) as u64;
        assert_eq!(stats.flushes, flushes);
        assert_eq!(stats.written, flushes);
        assert_eq!(stats.syncs, state.lock().unwrap().syncs);
        assert!(
            stats.syncs < flushes,
            "{policy:?}: group commit must share syncs: {} syncs for {flushes} flushes",
            stats.syncs
        );
        eprintln!(
            "group commit, {policy:?}, {threads} threads, 2 ms disk: {flushes} flushes, {} syncs \
             ({:.2} flushes per sync)",
            stats.syncs,
            flushes as f64 / stats.syncs as f64
        );
    }
}

fn report(label: &str, stats: &Stats, elapsed: Duration) {
    let l = stats.sync_latency;
    eprintln!(
        "{label}: {} flushes, {} fdatasync calls ({:.2} flushes per sync) in {elapsed:.2?}; \
         sync latency p50 {:?}, p99 {:?}, max {:?} over {} syncs",
        stats.flushes,
        stats.syncs,
        stats.flushes as f64 / stats.syncs.max(1) as f64,
        l.p50,
        l.p99,
        l.max,
        l.count
    );
}

#[test]
fn real_file_flushes_vs_fdatasync_calls() {
    let mut results = Vec::new();
    for (threads, policy) in [
        (1, SyncPolicy::EveryBatch),
        (4, SyncPolicy::EveryBatch),
        (4, SyncPolicy::Never),
    ] {
        let path = temp_log("group.log");
        let (handler, listener) = start(Box::new(FileSink::open(&path).unwrap()), policy);
        let rounds = 200;
        let started = Instant::now();
        log_and_flush(&handler, &listener, threads, rounds, |_| {});
        let elapsed = started.elapsed();
        let stats = listener.stop().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), threads * rounds);
        assert_eq!(stats.flushes, (threads * rounds) as u64);
        assert!(stats.sync_latency.count >= stats.syncs);
        assert!(stats.sync_latency.max >= stats.sync_latency.p99);
        assert!(stats.sync_latency.p99 >= stats.sync_latency.p50);
        report(
            &format!(
                "FileSink in {}, {policy:?}, {threads} threads",
                env!("CARGO_TARGET_TMPDIR")
            ),
            &stats,
            elapsed,
        );
        results.push(stats);
    }
    // One thread: one sync per flush at most (a barrier can be answered by the
    // policy's sync). Four threads: shared.
    assert!(results[0].syncs <= results[0].flushes);
    assert!(results[1].syncs < results[1].flushes, "{:?}", results[1]);
    assert!(results[2].syncs < results[2].flushes, "{:?}", results[2]);
}

/// Group commit under load: a backlog drained in many batches of `max_batch` records
/// is synced once the listener has caught up (and every 1 MiB on the way), not once
/// per batch; and what it synced is everything.
#[test]
fn group_commit_syncs_a_backlog_once_it_has_caught_up() {
    let handler = QueueHandler::new(&{
        let mut c = QueueConfig::default();
        c.capacity = 16 << 20;
        c
    })
    .unwrap();
    // Queued before the listener starts: a backlog of 200 batches of 100 records.
    let records = 20_000;
    for n in 0..records {
        log(&handler, format_args!("backlog {n}"));
    }
    let state = Arc::new(Mutex::new(DiskState::default()));
    let disk = SlowDisk {
        state: Arc::clone(&state),
        latency: Duration::ZERO,
    };
    let listener = QueueListener::start(&handler, vec![(Box::new(disk), LevelFilter::Trace)], {
        let mut c = ListenerConfig::default();
        c.sync = SyncPolicy::EveryBatch;
        c.max_batch = 100;
        c
    })
    .unwrap();
    listener.flush().expect("flush");
    let stats = listener.stop().unwrap();
    assert_eq!(stats.written, records);
    let state = state.lock().unwrap();
    assert_eq!(state.durable_len, state.written.len(), "everything synced");
    // About 1 MB of lines: one sync when caught up (perhaps one on the way), one for
    // the flush, one at the stop; one per batch would be 200.
    assert!(stats.syncs <= 4, "{} syncs for 200 batches", stats.syncs);
}
