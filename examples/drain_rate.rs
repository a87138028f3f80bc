//! How fast one listener drains: fills a ring with records while no listener runs,
//! then times a listener writing them all to a file (`SyncPolicy::Never`: no fsync
//! while draining, so this is the listener's own cost: pop, decode, format, buffer,
//! write). The stop syncs once at the end; the rate is given with and without it.
//!
//! ```text
//! cargo run --release --example drain_rate               # to a temporary file
//! cargo run --release --example drain_rate -- /dev/null  # the listener's CPU cost alone
//! DRAIN_RECORDS=100000 valgrind --tool=callgrind \
//!     --toggle-collect='quelog::listener::drive::run' target/release/examples/drain_rate
//! ```
//!
//! `DRAIN_RECORDS` sets how many records (default 1,000,000); under callgrind, the
//! instructions of `drive::run` divided by it are the listener's cost per record.

use std::time::Instant;

use log::{Level, LevelFilter, Log, Record};
use quelog::{FileSink, ListenerConfig, QueueConfig, QueueHandler, QueueListener, SyncPolicy};

fn main() -> Result<(), quelog::Error> {
    let records: u64 = std::env::var("DRAIN_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("quelog-drain-{}", std::process::id()));
    let path = std::env::args_os()
        .nth(1)
        .map_or_else(|| dir.join("drain.log"), std::path::PathBuf::from);
    let handler = QueueHandler::new(&{
        let mut c = QueueConfig::default();
        c.capacity = 512 << 20;
        c
    })?;
    for id in 0..records {
        handler.log(
            &Record::builder()
                .level(Level::Info)
                .target("bench::drain")
                .module_path_static(Some("bench::drain"))
                .file_static(Some(file!()))
                .line(Some(line!()))
                .args(format_args!(
                    "request {} took {} us from {}",
                    id,
                    id % 977,
                    "10.0.0.1"
                ))
                .build(),
        );
    }
    let queued = handler.stats().dropped.total();
    let started = Instant::now();
    let listener = QueueListener::start(
        &handler,
        vec![(Box::new(FileSink::open(&path)?), LevelFilter::Trace)],
        {
            let mut c = ListenerConfig::default();
            c.sync = SyncPolicy::Never;
            c
        },
    )?;
    let stats = listener.stop()?;
    if std::env::var_os("DRAIN_STATS").is_some() {
        eprintln!("{stats:#?}");
    }
    let elapsed = started.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    let final_sync = stats.sync_latency.max;
    let draining = elapsed.saturating_sub(final_sync);
    println!(
        "drained {} records ({} bytes) in {:.3} s: {:.2} M records/s, {:.0} MB/s \
         ({:.2} M records/s with the final fsync of {:.1} ms; dropped before start: {queued})",
        stats.written,
        stats.bytes,
        draining.as_secs_f64(),
        stats.written as f64 / draining.as_secs_f64() / 1e6,
        stats.bytes as f64 / draining.as_secs_f64() / 1e6,
        stats.written as f64 / elapsed.as_secs_f64() / 1e6,
        final_sync.as_secs_f64() * 1e3,
    );
    Ok(())
}
