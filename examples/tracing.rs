//! A span-heavy program logging through quelog as its tracing subscriber: a few worker
//! threads, nested spans with fields, an `#[instrument]`ed function, `log` records
//! inside spans, and a check at the end that every event reached the file once.
//!
//! ```text
//! cargo run --release --example tracing
//! ```

use std::time::Instant;

use tracing::{info, info_span, instrument, warn};

const WORKERS: usize = 3;
const JOBS: u64 = 2_000;

#[instrument(level = "info", skip(payload), fields(len = payload.len()))]
fn handle(job: u64, payload: &str) -> u64 {
    let checksum = payload.bytes().map(u64::from).sum::<u64>() ^ job;
    info!(checksum, ok = true, "job handled");
    checksum
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("quelog-tracing-{}", std::process::id()));
    let path = dir.join("app.log");
    let guard = quelog::Builder::new()
        .file(&path)
        .level(log::LevelFilter::Info)
        .install()?;

    let started = Instant::now();
    std::thread::scope(|s| {
        for worker in 0..WORKERS {
            std::thread::Builder::new()
                .name(format!("worker-{worker}"))
                .spawn_scoped(s, move || {
                    let _outer = info_span!("worker", id = worker).entered();
                    for job in 0..JOBS {
                        let _inner = info_span!("job", n = job, kind = "demo").entered();
                        handle(job, "payload bytes");
                        if job % 500 == 0 {
                            log::info!("a log record inside spans, job {job}");
                        }
                    }
                    warn!(worker, "worker done");
                })
                .expect("spawn");
        }
    });
    let elapsed = started.elapsed();
    let stats = guard.stop()?;
    let text = std::fs::read_to_string(&path)?;
    let lines: Vec<&str> = text.lines().collect();
    let handled = lines.iter().filter(|l| l.contains("job handled")).count();
    let from_log = lines.iter().filter(|l| l.contains("a log record")).count();
    println!("a few lines:");
    for line in lines.iter().filter(|l| l.contains("job handled")).take(2) {
        println!("  {line}");
    }
    if let Some(line) = lines.iter().find(|l| l.contains("a log record")) {
        println!("  {line}");
    }
    println!(
        "{WORKERS} workers x {JOBS} jobs in {elapsed:.2?}: {handled} events, {from_log} log records \
         in the file; spans created {}, closed {}, lost {}; records written {}, dropped {}",
        stats.spans.created,
        stats.spans.closed,
        stats.spans.lost,
        stats.written,
        stats.dropped.total()
    );
    let expected = (WORKERS as u64) * JOBS;
    let _ = std::fs::remove_dir_all(&dir);
    // Every event is in the file or counted as dropped, and nothing is in the file twice.
    if handled as u64 + stats.dropped.total() < expected || handled as u64 > expected {
        return Err(format!("{handled} events in the file, {expected} logged").into());
    }
    Ok(())
}
