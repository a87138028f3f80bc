//! A burst through the `log` facade with quelog's default settings: T threads each log
//! 200,000 records of `info!("request {} handled in {} us by {}", i, i % 997,
//! "worker-7")` as fast as they can, into a file with group commit (one fsync per
//! batch). Per overflow mode and thread count: calls per second, the share of records
//! kept (in the file, after the stop), and the caller's p50 and p99.9 (every 16th call
//! timed).
//!
//! ```text
//! cargo run --release --example burst                      # Drop and Block, T = 1, 2, 4
//! cargo run --release --example burst -- block 2           # one configuration
//! cargo run --release --example burst -- drop 1 1000000    # another burst size
//! ```
//!
//! Each configuration runs in a process of its own (the global logger is installed
//! once per process): the example re-runs itself. Block mode waits up to 10 s per
//! call, so it keeps everything. The machine is shared: compare rows of one run.

#[path = "support/bench.rs"]
mod bench;

use std::process::Command;
use std::time::{Duration, Instant};

use quelog::{Builder, Overflow};

const TIME_EVERY: u64 = 16;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let records: u64 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(200_000);
    if let (Some(mode), Some(threads)) = (args.first(), args.get(1)) {
        let threads = threads.parse().unwrap_or(1);
        run(mode == "block", threads, records);
        return;
    }
    let exe = std::env::current_exe().expect("the example's own path");
    println!("{records} records per thread, default settings (Overflow as shown)");
    println!(
        "{:<6} {:>2} {:>12} {:>8} {:>9} {:>11} {:>10}",
        "mode", "T", "calls/s", "kept", "p50", "p99.9", "peak RSS"
    );
    for mode in ["drop", "block"] {
        for threads in ["1", "2", "4"] {
            let status = Command::new(&exe)
                .args([mode, threads, &records.to_string()])
                .status();
            if !status.is_ok_and(|s| s.success()) {
                eprintln!("{mode} T={threads}: the child failed");
            }
        }
    }
}

/// One configuration: logs the burst, stops, prints one row.
fn run(block: bool, threads: usize, records: u64) {
    let dir = std::env::temp_dir().join(format!("quelog-burst-{}", std::process::id()));
    let path = dir.join("burst.log");
    let mut builder = Builder::new().file(&path);
    // To compare ring sizes: `BURST_CAPACITY_MIB=32 cargo run --release --example burst`.
    if let Some(mib) = std::env::var("BURST_CAPACITY_MIB")
        .ok()
        .and_then(|m| m.parse::<usize>().ok())
    {
        builder = builder.capacity(mib << 20);
    }
    if block {
        builder = builder.overflow(Overflow::Block {
            timeout: Duration::from_secs(10),
        });
    }
    let guard = builder.install().expect("install quelog");
    let ticks_per_ns = bench::calibrate();
    let started = Instant::now();
    let samples: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || {
                    let mut timed = Vec::with_capacity((records / TIME_EVERY) as usize + 1);
                    for i in 0..records {
                        if i % TIME_EVERY == 0 {
                            let t0 = bench::ticks::now();
                            log::info!("request {} handled in {} us by {}", i, i % 997, "worker-7");
                            timed.push(bench::ticks::now().wrapping_sub(t0));
                        } else {
                            log::info!("request {} handled in {} us by {}", i, i % 997, "worker-7");
                        }
                    }
                    timed
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect()
    });
    let calls_elapsed = started.elapsed();
    let stats = guard.stop().expect("stop");
    if std::env::var_os("BURST_STATS").is_some() {
        eprintln!("{stats:#?}");
    }
    let peak_rss = peak_rss_kib();
    let lines = count_lines(&path);
    let _ = std::fs::remove_dir_all(&dir);
    let emitted = records * threads as u64;
    let [p50, p999] = bench::quantiles_ns(samples.concat(), ticks_per_ns, [0.5, 0.999]);
    println!(
        "{:<6} {:>2} {:>11.2}M {:>7.2}% {:>6.0} ns {:>8.2} us {:>6.1} MiB   (written {}, dropped {}, {} lines)",
        if block { "block" } else { "drop" },
        threads,
        emitted as f64 / calls_elapsed.as_secs_f64() / 1e6,
        stats.written as f64 * 100.0 / emitted as f64,
        p50,
        p999 / 1e3,
        peak_rss as f64 / 1024.0,
        stats.written,
        stats.dropped.total(),
        lines,
    );
}

/// The process's peak resident set so far, in KiB.
fn peak_rss_kib() -> u64 {
    // SAFETY: `rusage` is plain integers, for which all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage into a live local.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    usage.ru_maxrss as u64
}

/// Lines in the file at `path`, read in pieces (not counted in the peak RSS anyway:
/// that was taken before).
fn count_lines(path: &std::path::Path) -> u64 {
    use std::io::Read;
    let Ok(mut file) = std::fs::File::open(path) else {
        return 0;
    };
    let mut buffer = vec![0u8; 1 << 16];
    let mut lines = 0;
    while let Ok(n) = file.read(&mut buffer) {
        if n == 0 {
            break;
        }
        lines += buffer[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
    lines
}
