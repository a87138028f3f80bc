//! The child's side: T producer threads, every 16th call timed, and what one run
//! reports back to the parent.

use std::hint::black_box;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One call in this many is bracketed by an `Instant` pair.
pub const SAMPLE_EVERY: u64 = 16;

/// The message every backend logs, with `i`, `i % 997` and `"worker-7"`.
pub const NEEDLE: &str = " handled in ";

/// What a child measured in one run of one backend at one thread count.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunResult {
    pub backend: String,
    pub threads: usize,
    /// Log calls made (threads x records).
    pub emitted: u64,
    /// Lines of the benchmark's message found in the file (filled in by the parent).
    pub in_file: u64,
    /// The file's size over `in_file`: how much each backend writes per record.
    pub bytes_per_record: f64,
    /// What the backend itself says it dropped, where it says (quelog, tracing-appender).
    pub reported_dropped: Option<u64>,
    /// Log calls per second: `emitted` over the time from the threads' start to the
    /// last thread's last call.
    pub calls_per_s: f64,
    /// The lowest and highest `calls_per_s` of the runs behind a median row.
    pub calls_per_s_range: [f64; 2],
    /// Caller latency percentiles in ns, the timer's own cost subtracted.
    pub p50_ns: f64,
    pub p99_ns: f64,
    pub p999_ns: f64,
    pub max_ns: f64,
    /// Median cost of an empty `Instant` pair, subtracted from every sample.
    pub timer_ns: f64,
    /// Seconds from the threads' start until the backend stopped and the file was
    /// fsynced.
    pub synced_s: f64,
    /// Of that, seconds after the last call (draining, writing, syncing).
    pub tail_s: f64,
    /// Peak resident set of the child, KiB (`wait4`'s `ru_maxrss`; parent fills in).
    pub peak_rss_kib: u64,
}

/// What [`produce`] timed.
pub struct Produced {
    pub started: Instant,
    pub finished: Instant,
    /// Raw sample durations, ns (timer cost not yet subtracted).
    pub samples: Vec<u64>,
    pub emitted: u64,
}

/// Median of 100,000 empty `Instant::now()` / `elapsed()` pairs, in ns.
pub fn timer_cost_ns() -> f64 {
    let mut pairs: Vec<u64> = (0..100_000)
        .map(|_| {
            let t0 = Instant::now();
            black_box(());
            t0.elapsed().as_nanos() as u64
        })
        .collect();
    pairs.sort_unstable();
    pairs[pairs.len() / 2] as f64
}

/// Runs `emit(i)` for i in 0..records on each of `threads` threads, started together;
/// every [`SAMPLE_EVERY`]th call is timed.
pub fn produce<F: Fn(u64) + Sync>(threads: usize, records: u64, emit: F) -> Produced {
    let barrier = Barrier::new(threads + 1);
    let per_thread = (records / SAMPLE_EVERY + 1) as usize;
    // Each thread reads the clock itself after the barrier: the main thread may be
    // scheduled late, on 2 cores.
    let (started, finished, samples) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (barrier, emit) = (&barrier, &emit);
                scope.spawn(move || {
                    // Allocated before the start so the timed loop never grows it.
                    let mut samples = Vec::with_capacity(per_thread);
                    barrier.wait();
                    let started = Instant::now();
                    for i in 0..records {
                        if i % SAMPLE_EVERY == 0 {
                            let t0 = Instant::now();
                            emit(i);
                            samples.push(t0.elapsed().as_nanos() as u64);
                        } else {
                            emit(i);
                        }
                    }
                    (started, Instant::now(), samples)
                })
            })
            .collect();
        barrier.wait();
        let (mut first, mut last) = (None::<Instant>, None::<Instant>);
        let mut all = Vec::with_capacity(per_thread * threads);
        for worker in workers {
            if let Ok((started, finished, samples)) = worker.join() {
                first = Some(first.map_or(started, |f| f.min(started)));
                last = Some(last.map_or(finished, |l| l.max(finished)));
                all.extend(samples);
            }
        }
        let now = Instant::now();
        (first.unwrap_or(now), last.unwrap_or(now), all)
    });
    Produced {
        started,
        finished,
        samples,
        emitted: threads as u64 * records,
    }
}

/// Fills the timing fields of a result from what [`produce`] timed and when the
/// backend was stopped and its file synced.
pub fn summarize(
    backend: &str,
    threads: usize,
    produced: Produced,
    synced: Instant,
    timer_ns: f64,
) -> RunResult {
    let mut samples: Vec<u64> = produced
        .samples
        .iter()
        .map(|&ns| ns.saturating_sub(timer_ns as u64))
        .collect();
    samples.sort_unstable();
    let at = |q: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let index = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[index] as f64
    };
    let producing = produced.finished - produced.started;
    RunResult {
        backend: backend.to_owned(),
        threads,
        emitted: produced.emitted,
        calls_per_s: produced.emitted as f64 / producing.as_secs_f64().max(1e-9),
        p50_ns: at(0.50),
        p99_ns: at(0.99),
        p999_ns: at(0.999),
        max_ns: samples.last().copied().unwrap_or(0) as f64,
        timer_ns,
        synced_s: (synced - produced.started).as_secs_f64(),
        tail_s: synced
            .saturating_duration_since(produced.finished)
            .as_secs_f64(),
        ..RunResult::default()
    }
}

/// fsyncs the file at `path` through a new descriptor (fsync covers the inode, not
/// the descriptor): what the bench does after every backend's own shutdown.
pub fn sync_file(path: &Path) -> std::io::Result<Instant> {
    std::fs::File::open(path)?.sync_all()?;
    Ok(Instant::now())
}

/// Lines of `path` that hold the benchmark's message.
pub fn count_records(path: &Path) -> std::io::Result<u64> {
    use std::io::BufRead as _;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut line = Vec::with_capacity(512);
    let mut count = 0;
    let needle = NEEDLE.as_bytes();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(count);
        }
        if line.windows(needle.len()).any(|w| w == needle) {
            count += 1;
        }
    }
}

/// A generous bound on one child; a child past it is killed and the run reported
/// as failed.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(120);
