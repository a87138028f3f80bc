//! How fast one listener drains: fills a ring with records while no listener runs,
//! then times a listener writing them all to a file (no fsync, so this is the
//! listener's own cost: pop, decode, format, buffer, write).
//!
//! ```text
//! cargo run --release --example drain_rate               # to a temporary file
//! cargo run --release --example drain_rate -- /dev/null  # the listener's CPU cost alone
//! ```

use std::time::Instant;

use log::{Level, LevelFilter, Log, Record};
use quelog::{FileSink, ListenerConfig, QueueConfig, QueueHandler, QueueListener, SyncPolicy};

const RECORDS: u64 = 1_000_000;

fn main() -> Result<(), quelog::Error> {
    let dir = std::env::temp_dir().join(format!("quelog-drain-{}", std::process::id()));
    let path = std::env::args_os()
        .nth(1)
        .map_or_else(|| dir.join("drain.log"), std::path::PathBuf::from);
    let handler = QueueHandler::new(&{
        let mut c = QueueConfig::default();
        c.capacity = 512 << 20;
        c
    })?;
    for id in 0..RECORDS {
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
    println!(
        "drained {} records ({} bytes) in {:.3} s: {:.2} M records/s, {:.0} MB/s (dropped before start: {queued})",
        stats.written,
        stats.bytes,
        elapsed.as_secs_f64(),
        stats.written as f64 / elapsed.as_secs_f64() / 1e6,
        stats.bytes as f64 / elapsed.as_secs_f64() / 1e6,
    );
    Ok(())
}
