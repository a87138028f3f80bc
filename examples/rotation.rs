//! Daily rotation with a size cap, `keep(7)` and gzip; and, with `--bench`, what a
//! rotation costs.
//!
//! ```text
//! cargo run --example rotation                      # ten simulated days
//! cargo run --release --example rotation -- --bench # the cost of a rotation
//! cargo run --release --example rotation -- --bench --samples 100000 --size-kib 256
//! ```
//!
//! The demo logs ten days' worth of records into `target/rotation-demo/app.log` with
//! `Rotation::daily().max_size(64 KiB).keep(7).compress(true)`. The days go by on a
//! fake clock (`Rotation::clock`, a test hook) so the demo takes a second, not ten
//! days; a real program leaves the clock out. It prints the directory afterwards: the
//! live `app.log` and the seven newest rotated files, gzipped, the busy days split in
//! `app.<day>.log.gz`, `app.<day>.1.log.gz`, ...
//!
//! `--bench` measures, with 2 producer threads logging as fast as they can into a ring
//! big enough for the whole run (so nothing is dropped):
//!
//! * how long the listener is busy with one rotation (`Stats::rotation.duration`: the
//!   sync before it, the rename, the directory syncs, the create, retention;
//!   compression is on its own thread), and
//! * the producers' per-call latency (p50, p99, p99.9, max) in a run that rotates
//!   every `--size-kib` KiB (default 1024) with `keep(4)` and compression, next to the
//!   same run without rotation. The calls are timed as in `examples/latency.rs`
//!   (fenced rdtsc on x86-64).

#[path = "support/bench.rs"]
mod bench;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Record};
use quelog::test_hooks::FakeClock;
use quelog::{Builder, Output, QueueHandler, Rotation, Stats};

const DAY: i64 = 24 * 3600;

fn demo_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn log(handler: &QueueHandler, day: i64, n: u64) {
    handler.log(
        &Record::builder()
            .level(Level::Info)
            .target("app::orders")
            .args(format_args!(
                "order {n} of day {day} shipped to warehouse {}",
                n % 7
            ))
            .build(),
    );
}

fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut found: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    let len = e.metadata().map_or(0, |m| m.len());
                    (e.file_name().to_string_lossy().into_owned(), len)
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn demo() -> Result<(), Box<dyn std::error::Error>> {
    let dir = demo_dir("rotation-demo");
    // 2026-11-13T09:00:00Z, then a day at a time.
    let clock = FakeClock::at(1_794_560_400);
    let rotation = Rotation::daily()
        .max_size(64 << 10)
        .keep(7)
        .compress(true)
        .clock(clock.clone());
    let (handler, listener) = Builder::new()
        .output(Output::file(dir.join("app.log")).rotate(rotation))
        .env_var(None)
        .build()?;
    for day in 0..10 {
        // Busy days (every third) write past the size cap.
        let records = if day % 3 == 0 { 2000 } else { 300 };
        for n in 0..records {
            log(&handler, day, n);
        }
        listener.flush()?;
        clock.advance(DAY);
    }
    let stats = listener.stop()?;
    println!("{}:", dir.display());
    for (name, len) in listing(&dir) {
        println!("  {name:32} {len:>8} bytes");
    }
    let r = stats.rotation;
    println!(
        "rotations {}, compressed {}, removed by keep(7) {}, failures {}/{}/{}",
        r.rotations, r.compressed, r.removed, r.failed, r.compression_failed, r.removal_failed
    );
    Ok(())
}

struct BenchSettings {
    samples: usize,
    size_kib: u64,
}

fn bench_settings() -> Result<BenchSettings, String> {
    let mut settings = BenchSettings {
        samples: 300_000,
        size_kib: 1024,
    };
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number: u64 = value.parse().map_err(|_| format!("{flag}: {value}?"))?;
        match flag.as_str() {
            "--samples" => settings.samples = number.max(1000) as usize,
            "--size-kib" => settings.size_kib = number.max(1),
            _ => return Err(format!("unknown flag {flag} (--samples N, --size-kib N)")),
        }
    }
    Ok(settings)
}

/// Two threads log `samples` records each, timing every call; the ticks of all calls.
fn timed_calls(handler: &QueueHandler, samples: usize) -> Vec<u64> {
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|t| {
                s.spawn(move || {
                    let mut ticks = Vec::with_capacity(samples);
                    for n in 0..samples as u64 {
                        let start = bench::ticks::now();
                        log(handler, t, n);
                        ticks.push(bench::ticks::now().wrapping_sub(start));
                    }
                    ticks
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("producer"))
            .collect()
    })
}

fn bench_run(rotate: Option<u64>, samples: usize, ticks_per_ns: f64) -> Result<Stats, String> {
    let dir = demo_dir("rotation-bench");
    let output = Output::file(dir.join("app.log"));
    let output = match rotate {
        Some(bytes) => output.rotate(Rotation::size(bytes).keep(4).compress(true)),
        None => output,
    };
    let (handler, listener) = Builder::new()
        .output(output)
        .capacity(256 << 20)
        // Tiny rotation sizes make the listener slow (several fsyncs per rotation):
        // let the final flush and stop wait for it.
        .shutdown_timeout(Duration::from_secs(600))
        .level(LevelFilter::Info)
        .env_var(None)
        .build()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let calls = timed_calls(&handler, samples);
    listener.flush().map_err(|e| e.to_string())?;
    let drained = started.elapsed();
    let stats = listener.stop().map_err(|e| e.to_string())?;
    let [p50, p99, p999, max] = bench::quantiles_ns(calls, ticks_per_ns, [0.5, 0.99, 0.999, 1.0]);
    let what = match rotate {
        Some(bytes) => format!("rotating every {} KiB", bytes >> 10),
        None => "no rotation".to_owned(),
    };
    println!(
        "{what:24} calls {:>7}  p50 {p50:>6.0} ns  p99 {p99:>7.0} ns  p99.9 {p999:>8.0} ns  max {:>7.1} us  dropped {}  all written in {drained:.2?}",
        2 * samples,
        max / 1000.0,
        stats.dropped.total()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(stats)
}

fn bench() -> Result<(), Box<dyn std::error::Error>> {
    let settings = bench_settings()?;
    let ticks_per_ns = bench::calibrate();
    println!(
        "timer: {}; empty pair {:.0} ns (not subtracted)",
        bench::ticks::NAME,
        bench::empty_ticks_pair_median() as f64 / ticks_per_ns
    );
    bench_run(None, settings.samples, ticks_per_ns)?;
    let stats = bench_run(
        Some(settings.size_kib << 10),
        settings.samples,
        ticks_per_ns,
    )?;
    let r = stats.rotation;
    let d = r.duration;
    println!(
        "listener busy per rotation ({} rotations, {} compressed): p50 {:.2?}  p99 {:.2?}  max {:.2?}",
        r.rotations, r.compressed, d.p50, d.p99, d.max
    );
    println!(
        "syncs {} (p50 {:.2?}, max {:.2?})",
        stats.syncs, stats.sync_latency.p50, stats.sync_latency.max
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "--bench") {
        bench()
    } else {
        demo()
    }
}
