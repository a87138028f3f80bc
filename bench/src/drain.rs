//! The listener's drain rate (the first target, what `examples/drain_rate`
//! measures): a ring filled while no listener runs, then one listener writing it all
//! to a real file without fsync.

use std::io;
use std::time::Instant;

use log::{Level, LevelFilter, Log, Record};
use quelog::{FileSink, ListenerConfig, QueueConfig, QueueHandler, QueueListener, SyncPolicy};
use serde::{Deserialize, Serialize};

/// Records queued before the listener starts.
pub const DRAIN_RECORDS: u64 = 1_000_000;

/// One drain run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DrainResult {
    pub written: u64,
    pub dropped_before_start: u64,
    /// Start to written, the final fsync left out (the listener's own rate).
    pub seconds: f64,
    pub records_per_s: f64,
    /// The final fsync at stop (the disk's part), seconds.
    #[serde(default)]
    pub final_sync_s: f64,
    /// Start to written and synced.
    #[serde(default)]
    pub records_per_s_synced: f64,
}

/// Fills a 512 MiB ring with [`DRAIN_RECORDS`] records, then times one listener
/// draining them into `path`, with and without the final fsync (as
/// `examples/drain_rate` reports it).
pub fn drain_rate(path: &std::path::Path) -> io::Result<DrainResult> {
    let handler = QueueHandler::new(&{
        let mut config = QueueConfig::default();
        config.capacity = 512 << 20;
        config
    })
    .map_err(io::Error::other)?;
    for i in 0..DRAIN_RECORDS {
        handler.log(
            &Record::builder()
                .level(Level::Info)
                .target("bench::drain")
                .module_path_static(Some("bench::drain"))
                .file_static(Some(file!()))
                .line(Some(line!()))
                .args(format_args!(
                    "request {} handled in {} us by {}",
                    i,
                    i % 997,
                    "worker-7"
                ))
                .build(),
        );
    }
    let dropped_before_start = handler.stats().dropped.total();
    let started = Instant::now();
    let listener = QueueListener::start(
        &handler,
        vec![(
            Box::new(FileSink::open(path).map_err(io::Error::other)?),
            LevelFilter::Trace,
        )],
        {
            let mut config = ListenerConfig::default();
            config.sync = SyncPolicy::Never;
            config
        },
    )
    .map_err(io::Error::other)?;
    let stats = listener.stop().map_err(io::Error::other)?;
    let with_sync = started.elapsed().as_secs_f64();
    let final_sync_s = stats.sync_latency.max.as_secs_f64();
    let seconds = (with_sync - final_sync_s).max(1e-9);
    Ok(DrainResult {
        written: stats.written,
        dropped_before_start,
        seconds,
        records_per_s: stats.written as f64 / seconds,
        final_sync_s,
        records_per_s_synced: stats.written as f64 / with_sync.max(1e-9),
    })
}
