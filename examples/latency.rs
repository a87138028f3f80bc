//! Per-call latency of quelog's producer path, next to the obvious alternatives.
//!
//! ```text
//! cargo run --release --example latency
//! cargo run --release --example latency -- --samples 50000   # quicker, noisier tail
//! cargo run --release --example latency -- --only quelog     # one design (profiling)
//! cargo run --release --example latency -- --filter \
//!   "warn,latency=info,latency::muted=off,hyper=warn,tokio=info,h2=error,app::db=debug,app::web=info,rustls=off,mio=error"
//! ```
//!
//! With `--filter`, two more quelog rows, on a handler built with those directives
//! (`Builder::filter`, `RUST_LOG` ignored): `q+filter on`, the same record (target
//! `latency`), which the filter passes; and `q+filter off`, the same record with
//! target `other::thing`, which no directive names (every directive is compared, the
//! default refuses it): the producer's whole cost of a record filtered out by target.
//! A record filtered out by level never reaches the handler: `log`'s macros stop at
//! `log::max_level()`, one atomic load.
//!
//! # What it measures
//!
//! One log call of a 3-argument record,
//! `"request {} took {} us from {}", id: u64, micros: u64, "10.0.0.1"`, from the
//! caller's point of view: building the `log::Record` (`Record::builder()` with
//! `format_args!`, what `log::info!` does after its level check) and calling
//! `log::Log::log` through a `&dyn Log`, as the macro does through the global logger.
//! The global logger can be installed once per process, so the handler is called
//! directly. Each design runs with 1 and with 2 producer threads (this is a 2-core
//! machine: at 2 threads quelog's listener competes with the producers for a core).
//!
//! * `quelog`: a [`quelog::QueueHandler`] from `Builder::new().file(tmp)
//!   .sync(SyncPolicy::Never).capacity(..).level(Info).build()`; its listener drains
//!   to a real temporary file (formats the timestamp, writes in batches) but never
//!   fsyncs, like the baselines. With the default settings the ring (128 MiB,
//!   `--capacity-mib`) holds every record of a run even if the listener never ran, so
//!   there are no drops. The drop count is printed per run anyway: a drop is not an
//!   enqueue, so with drops quelog's percentiles mix two different operations.
//! * `log::info!` and `quelog::info!`: the same record through the global logger,
//!   quelog installed once per process (`Builder::install`, the same settings): `log`'s
//!   macro formats the message on the caller; quelog's hands the three arguments over
//!   raw and the listener formats them (see the crate docs, "Formatting on the
//!   listener"). The `quelog` row is the first of them without the macro's level check
//!   and global logger lookup.
//! * `mutex-bufwriter`: `Mutex<BufWriter<File>>`, formats the line with `writeln!`
//!   under the lock (a `write(2)` of 8 KiB every ~80 records).
//! * `write(2)`: formats the line into a stack buffer and calls `libc::write` once per
//!   record on an `O_APPEND` file: no lock, no buffering.
//! * `fmt-only`: formats just the message into a stack buffer, no I/O: what any
//!   design that formats on the caller must pay at least.
//! * `no-op`: a `Log` that does nothing: the floor (record building, the virtual
//!   call, the timer).
//!
//! The baselines' lines carry a raw `SystemTime` timestamp, the level, the target and
//! the message, so every design reads the clock once per call like quelog does.
//!
//! # How it times
//!
//! On x86-64 each call is bracketed by `lfence; rdtsc; lfence` (the fences keep the
//! call's instructions from moving across the reads, which `Instant::now()` does not
//! promise) and the tick counts are converted to nanoseconds with a calibration
//! against `Instant` over ~100 ms; the TSC of this machine is invariant
//! (`constant_tsc`, `nonstop_tsc`). Elsewhere it falls back to `Instant`. Neither is
//! free: on this VM an empty fenced `rdtsc` pair costs ~22 ns and an `Instant` pair
//! ~27 ns, so the median of 200k empty pairs is measured and printed, and `p50-ovh`
//! is the p50 with it subtracted (the ratio columns use that). The other
//! percentiles are raw: their distance from p50 dwarfs the overhead.
//!
//! Each thread warms up (`--warmup` calls), then the threads start together, each
//! times `--samples` calls one by one (percentiles over all threads' samples), then
//! times another `--samples` calls as one block for throughput (calls per second per
//! thread, no per-call timer). `minflt` counts page faults the timed loops took.
//!
//! # How to read it
//!
//! The machine is shared and noisy: compare the rows of one run, not runs of
//! different days. The ratio columns divide each design's number by quelog's at the
//! same thread count (above 1: the design is slower than quelog; for throughput,
//! above 1: faster). `p50-ovh` is the number to hold against the aim of p50 <= 40 ns
//! for quelog; `quelog p50 - fmt-only p50` is what quelog adds to formatting the
//! message. The tail (p99.9, max) of every design includes preemption by other
//! threads and the hypervisor; quelog's includes its listener taking a core at 2
//! threads.

use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::{BufWriter, Write as _};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Barrier, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};
use quelog::SyncPolicy;

// ---------------------------------------------------------------------------------
// The timer.

#[path = "support/bench.rs"]
mod bench;
use bench::{
    calibrate, empty_pair_median, merge, quantiles_ns, thread_minflt, ticks, Settings, ThreadRun,
};

// ---------------------------------------------------------------------------------
// The log call under test.

/// One log call, as `log::info!` makes it after its level check.
#[inline(never)]
fn log_one(logger: &dyn Log, target: &str, id: u64, micros: u64, peer: &str) {
    logger.log(
        &Record::builder()
            .level(Level::Info)
            .target(target)
            .module_path_static(Some(module_path!()))
            .file_static(Some(file!()))
            .line(Some(line!()))
            .args(format_args!(
                "request {} took {} us from {}",
                id, micros, peer
            ))
            .build(),
    );
}

fn call(logger: &dyn Log, i: usize) {
    call_to(logger, module_path!(), i);
}

/// The record through `log::info!` and the global logger (`logger` is unused).
#[inline(never)]
fn call_log_macro(_: &dyn Log, i: usize) {
    let id = black_box(i as u64);
    let micros = black_box((i as u64 * 7919) % 100_000);
    let peer = black_box("10.0.0.1");
    log::info!("request {} took {} us from {}", id, micros, peer);
}

/// The record through `quelog::info!` (`logger` is unused).
#[inline(never)]
fn call_quelog_macro(_: &dyn Log, i: usize) {
    let id = black_box(i as u64);
    let micros = black_box((i as u64 * 7919) % 100_000);
    let peer = black_box("10.0.0.1");
    quelog::info!("request {} took {} us from {}", id, micros, peer);
}

/// [`call`] with a target no directive of the `--filter` example names.
fn call_filtered_out(logger: &dyn Log, i: usize) {
    call_to(logger, "other::thing", i);
}

fn call_to(logger: &dyn Log, target: &str, i: usize) {
    let id = black_box(i as u64);
    let micros = black_box((i as u64 * 7919) % 100_000);
    log_one(logger, black_box(target), id, micros, black_box("10.0.0.1"));
}

// ---------------------------------------------------------------------------------
// The baselines.

fn wall_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The baselines' line: raw wall-clock time, level, target, message. A macro because
/// one baseline writes to an `io::Write` and the other to a `fmt::Write`.
macro_rules! write_line {
    ($out:expr, $now:expr, $record:expr) => {
        writeln!(
            $out,
            "{}.{:09} {} {}: {}",
            $now / 1_000_000_000,
            $now % 1_000_000_000,
            $record.level(),
            $record.target(),
            $record.args()
        )
    };
}

/// The obvious logger: one lock around a buffered file.
struct MutexLogger {
    out: Mutex<BufWriter<File>>,
}

impl Log for MutexLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= Level::Info
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = wall_nanos();
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = write_line!(out, now, record);
    }

    fn flush(&self) {
        let _ = self
            .out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush();
    }
}

/// A fixed buffer on the stack that `write!` fills; what does not fit is cut.
struct StackBuf {
    bytes: [u8; 512],
    len: usize,
}

impl StackBuf {
    fn new() -> StackBuf {
        StackBuf {
            bytes: [0; 512],
            len: 0,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let take = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        if take < s.len() {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// Synchronous: one `write(2)` per record, no lock, no buffer.
struct WriteLogger {
    file: File,
}

impl Log for WriteLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= Level::Info
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = wall_nanos();
        let mut line = StackBuf::new();
        let _ = write_line!(line, now, record);
        let bytes = line.as_bytes();
        // SAFETY: `bytes` is a live, initialised slice for the duration of the call and
        // write(2) only reads it; the descriptor is owned by `self.file`, open while
        // `self` lives. A short write of a regular file is ignored (a benchmark).
        unsafe { libc::write(self.file.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
    }

    fn flush(&self) {}
}

/// Formats the message on the stack and throws it away.
struct FormatOnly;

impl Log for FormatOnly {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= Level::Info
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut message = StackBuf::new();
        let _ = message.write_fmt(*record.args());
        black_box(message.as_bytes());
    }

    fn flush(&self) {}
}

/// Does nothing: the floor of the measurement.
struct NoOp;

impl Log for NoOp {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        black_box(record);
    }

    fn flush(&self) {}
}

// ---------------------------------------------------------------------------------
// Running and reporting.

/// What one thread measured.
/// Runs `threads` producers on `logger`: warm-up, per-call timing, then a block for
/// throughput; the threads start each phase together.
fn measure(logger: &(dyn Log + Sync), threads: usize, settings: &Settings) -> Vec<ThreadRun> {
    measure_calls(logger, call, threads, settings)
}

/// [`measure`] of `call`.
fn measure_calls(
    logger: &(dyn Log + Sync),
    call: fn(&dyn Log, usize),
    threads: usize,
    settings: &Settings,
) -> Vec<ThreadRun> {
    let barrier = Barrier::new(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let base = t * 10_000_000;
                    // Nonzero, so every page is touched now, not in the timed loop.
                    let mut samples = vec![1u64; settings.samples];
                    for i in 0..settings.warmup {
                        call(logger, base + i);
                    }
                    barrier.wait();
                    let faults_before = thread_minflt();
                    for (i, sample) in samples.iter_mut().enumerate() {
                        let start = ticks::now();
                        call(logger, base + i);
                        *sample = ticks::now().wrapping_sub(start);
                    }
                    barrier.wait();
                    let begin = Instant::now();
                    for i in 0..settings.samples {
                        call(logger, base + settings.samples + i);
                    }
                    let elapsed = begin.elapsed();
                    let minflt = thread_minflt() - faults_before;
                    ThreadRun {
                        samples,
                        throughput: settings.samples as f64 / elapsed.as_secs_f64(),
                        minflt,
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("producer thread panicked"))
            .collect()
    })
}

/// One row of the table.
struct Row {
    design: &'static str,
    threads: usize,
    /// p50, p90, p99, p99.9, max, in ns.
    percentiles: [f64; 5],
    throughput: f64,
    minflt: u64,
    /// quelog only: records dropped, and written by the listener.
    dropped: Option<u64>,
}

fn summarise(
    design: &'static str,
    threads: usize,
    results: Vec<ThreadRun>,
    ticks_per_ns: f64,
) -> Row {
    let (all, throughput, minflt) = merge(results);
    Row {
        design,
        threads,
        percentiles: quantiles_ns(all, ticks_per_ns, [0.50, 0.90, 0.99, 0.999, 1.0]),
        throughput,
        minflt,
        dropped: None,
    }
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("quelog-latency-{}-{name}.log", std::process::id()))
}

/// quelog's rows: `design` is `quelog` (no filter), `q+filter on` or `q+filter off`
/// (the `--filter` directives, a record they pass or refuse).
fn run_quelog(
    design: &'static str,
    threads: usize,
    settings: &Settings,
    ticks_per_ns: f64,
) -> Result<Row, Box<dyn std::error::Error>> {
    let path = temp_path("quelog");
    let _ = std::fs::remove_file(&path);
    let mut builder = quelog::Builder::new()
        .file(&path)
        .sync(SyncPolicy::Never)
        .capacity(settings.capacity_mib << 20)
        .level(LevelFilter::Info)
        .env_var(None);
    let mut calls_fn: fn(&dyn Log, usize) = call;
    if design != "quelog" {
        builder = builder.filter(settings.filter.as_deref().unwrap_or("info"));
    }
    if design == "q+filter off" {
        calls_fn = call_filtered_out;
    }
    let (handler, listener) = builder.build()?;
    let results = measure_calls(&handler, calls_fn, threads, settings);
    let dropped = handler.stats().dropped.total();
    let stats = listener.stop()?;
    let mut calls = (threads * (settings.warmup + 2 * settings.samples)) as u64;
    if design == "q+filter off" {
        calls = 0;
    }
    if stats.written + dropped != calls {
        return Err(format!(
            "quelog accounting: {calls} calls, {} written, {dropped} dropped",
            stats.written
        )
        .into());
    }
    std::fs::remove_file(&path)?;
    let mut row = summarise(design, threads, results, ticks_per_ns);
    row.dropped = Some(dropped);
    Ok(row)
}

/// The global quelog logger for the macro rows, installed on first use.
static INSTALLED: Mutex<Option<quelog::Guard>> = Mutex::new(None);

/// A row of the macro designs (`log::info!` or `quelog::info!`) through the installed
/// logger.
fn run_macro(
    design: &'static str,
    threads: usize,
    settings: &Settings,
    ticks_per_ns: f64,
) -> Result<Row, Box<dyn std::error::Error>> {
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    if installed.is_none() {
        let path = temp_path("global");
        let _ = std::fs::remove_file(&path);
        let guard = quelog::Builder::new()
            .file(&path)
            .sync(SyncPolicy::Never)
            .capacity(settings.capacity_mib << 20)
            .level(LevelFilter::Info)
            .env_var(None)
            .tracing(false)
            .install()?;
        *installed = Some(guard);
    }
    let guard = installed.as_ref().ok_or("not installed")?;
    let call = if design == "quelog::info!" {
        call_quelog_macro
    } else {
        call_log_macro
    };
    let before = guard.stats();
    let results = measure_calls(&NoOp, call, threads, settings);
    guard.flush()?;
    let after = guard.stats();
    let dropped = after.dropped.total() - before.dropped.total();
    let calls = (threads * (settings.warmup + 2 * settings.samples)) as u64;
    if after.written - before.written + dropped != calls {
        return Err(format!("{design} accounting: {calls} calls").into());
    }
    let mut row = summarise(design, threads, results, ticks_per_ns);
    row.dropped = Some(dropped);
    Ok(row)
}

/// Stops the logger the macro rows installed, and removes its file.
fn stop_macro_logger() -> Result<(), Box<dyn std::error::Error>> {
    let guard = INSTALLED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(guard) = guard {
        guard.stop()?;
        let _ = std::fs::remove_file(temp_path("global"));
    }
    Ok(())
}

fn run_baseline(
    design: &'static str,
    threads: usize,
    settings: &Settings,
    ticks_per_ns: f64,
) -> Result<Row, Box<dyn std::error::Error>> {
    let path = temp_path(design);
    let open = || {
        OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
    };
    let results = match design {
        "mutex-bufwriter" => {
            let logger = MutexLogger {
                out: Mutex::new(BufWriter::new(open()?)),
            };
            let results = measure(&logger, threads, settings);
            logger.flush();
            results
        }
        "write(2)" => {
            // Truncate, then reopen for appending so whole lines never interleave.
            drop(open()?);
            let file = OpenOptions::new().append(true).open(&path)?;
            measure(&WriteLogger { file }, threads, settings)
        }
        "fmt-only" => measure(&FormatOnly, threads, settings),
        _ => measure(&NoOp, threads, settings),
    };
    let _ = std::fs::remove_file(&path);
    Ok(summarise(design, threads, results, ticks_per_ns))
}

fn print_table(rows: &[Row], overhead_ns: f64) {
    println!(
        "{:<16} {:>3} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10} {:>7} {:>7} {:>7} {:>6} {:>6}",
        "design",
        "thr",
        "p50",
        "p50-ovh",
        "p90",
        "p99",
        "p99.9",
        "max",
        "calls/s/t",
        "x p50",
        "x p99.9",
        "x tput",
        "minflt",
        "drops"
    );
    for row in rows {
        let quelog = rows
            .iter()
            .find(|r| r.design == "quelog" && r.threads == row.threads)
            .unwrap_or(row);
        let [p50, p90, p99, p999, max] = row.percentiles;
        let net = (p50 - overhead_ns).max(0.0);
        let quelog_net = (quelog.percentiles[0] - overhead_ns).max(f64::MIN_POSITIVE);
        println!(
            "{:<16} {:>3} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>10.3e} {:>7.2} {:>7.2} {:>7.2} {:>6} {:>6}",
            row.design,
            row.threads,
            p50,
            net,
            p90,
            p99,
            p999,
            max,
            row.throughput,
            net / quelog_net,
            p999 / quelog.percentiles[3],
            row.throughput / quelog.throughput,
            row.minflt,
            row.dropped.map_or("-".to_string(), |d| d.to_string()),
        );
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::from_args(128)?;
    let started = Instant::now();
    let ticks_per_ns = calibrate();
    let pair_ticks = empty_pair_median(|| {
        let start = ticks::now();
        ticks::now().wrapping_sub(start)
    });
    let instant_pair_ns = empty_pair_median(|| {
        let start = Instant::now();
        start.elapsed().as_nanos() as u64
    });
    let overhead_ns = pair_ticks as f64 / ticks_per_ns;
    println!("timer: {}", ticks::NAME);
    println!(
        "  {ticks_per_ns:.4} ticks/ns; empty pair (median) {pair_ticks} ticks = {overhead_ns:.1} ns \
         (Instant::now() pair: {instant_pair_ns} ns)"
    );
    println!(
        "record: \"request {{}} took {{}} us from {{}}\" (u64, u64, &str); {} warm-up + {} timed \
         + {} throughput calls per thread; quelog: SyncPolicy::Never, {} MiB ring",
        settings.warmup, settings.samples, settings.samples, settings.capacity_mib
    );
    println!("latencies in ns; x columns: this design / quelog at the same thread count\n");

    let mut rows = Vec::new();
    let wanted = |design: &str| settings.only.as_deref().is_none_or(|only| only == design);
    for threads in [1, 2] {
        if wanted("quelog") {
            rows.push(run_quelog("quelog", threads, &settings, ticks_per_ns)?);
        }
        if settings.filter.is_some() {
            for design in ["q+filter on", "q+filter off"] {
                rows.push(run_quelog(design, threads, &settings, ticks_per_ns)?);
            }
        }
        for design in ["log::info!", "quelog::info!"] {
            if wanted(design) {
                rows.push(run_macro(design, threads, &settings, ticks_per_ns)?);
            }
        }
        for design in ["mutex-bufwriter", "write(2)", "fmt-only", "no-op"] {
            if wanted(design) {
                rows.push(run_baseline(design, threads, &settings, ticks_per_ns)?);
            }
        }
    }
    stop_macro_logger()?;
    print_table(&rows, overhead_ns);
    println!("\ntotal {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
