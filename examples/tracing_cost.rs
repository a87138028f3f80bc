//! Per-event cost of a tracing event through quelog, next to tracing-subscriber's fmt.
//!
//! ```text
//! cargo run --release --example tracing_cost
//! cargo run --release --example tracing_cost -- --samples 50000          # quicker
//! cargo run --release --example tracing_cost -- --only quelog-layer       # one design
//! ```
//!
//! # What it measures
//!
//! One `info!(a = i, b = "x", "request handled")` (two fields and a message) inside
//! two entered spans, `outer{id=1}` and `inner{n=2}`, entered once per thread before
//! the timed loops, from the caller's point of view: the macro's checks, the dispatch
//! and everything the subscriber does before returning. Then the same event at
//! `debug!`, which every design filters out (level `Info`): the disabled cost. Each
//! design is its own `Dispatch`, set per thread with `dispatcher::with_default`, so
//! one process runs them all, with 1 and with 2 producer threads (a 2-core machine:
//! at 2 threads the background writers compete with the producers for a core).
//!
//! * `quelog`: [`quelog::TracingSubscriber`] (`handler.tracing_subscriber()`) on a
//!   queue from `Builder::new().file(tmp).sync(SyncPolicy::Never).capacity(..)
//!   .level(Info).build()`: its listener writes the lines to a real temporary file
//!   (span chains rebuilt on the listener), never fsyncs. The ring (256 MiB,
//!   `--capacity-mib`) holds every record of a run even if the listener never ran, so
//!   nothing is dropped; drops are printed anyway (a drop is not an enqueue).
//! * `quelog-layer`: [`quelog::TracingLayer`] in `tracing_subscriber::registry()`:
//!   the same queue design, with the registry owning the spans (its span ids, its
//!   thread-local span stack, `ctx.event_span`).
//! * `fmt+appender`: `registry().with(fmt::layer().with_writer(non_blocking))
//!   .with(LevelFilter::INFO)`, where `non_blocking` is tracing-appender's writer over
//!   the file, as its docs set it up: lossy (the default), 128 000 lines of channel.
//!   The event is formatted on the caller, copied into a `Vec` and sent to the
//!   appender's thread. Its dropped-line count is printed.
//! * `fmt+mutex`: the same fmt layer writing to a `Mutex<BufWriter<File>>`: formatted
//!   on the caller and written under the lock.
//! * `fmt+sink`: the same fmt layer writing to `io::sink()`: the formatting alone.
//!
//! All designs read the clock once per event (fmt's default timer, quelog's
//! timestamp) and print the span chain with its fields, the target, the message and
//! the fields, without colours.
//!
//! # How it times
//!
//! As `examples/latency.rs`: on x86-64 each call is bracketed by `lfence; rdtsc;
//! lfence`, converted to nanoseconds by a calibration against `Instant`; elsewhere
//! `Instant`. The median of an empty timer pair is printed and subtracted from p50
//! (`p50-ovh`, used by the ratio columns); the other percentiles are raw. Each thread
//! warms up (`--warmup` calls), then the threads start together, each times
//! `--samples` calls one by one (percentiles over all threads' samples), then times
//! another `--samples` calls in 10 blocks, without a per-call timer, for throughput:
//! `calls/s/t` is the median block's rate (a block the hypervisor or the other
//! designs' threads preempted does not count), averaged over the threads, and
//! `ns/call` its inverse. Then the same three phases for the disabled event.
//!
//! The time-stamp counter of this VM ticks in steps of about 10 ns, so the
//! percentiles move in such steps; for the disabled event (a couple of
//! nanoseconds) only `ns/call` says anything, and its `x p50` is left out.
//! `minflt` counts the page faults the two measured loops of the producer threads
//! took (quelog's ring is touched when it is built, not in the loops; the appender's
//! per-line `Vec`s fault in as the channel fills).
//!
//! # How to read it
//!
//! Compare the rows of one run. The `x` columns divide a design's number by quelog's
//! (the subscriber's) at the same thread count and event kind: above 1 the design is
//! slower (for throughput, faster). The disabled rows are tracing's own level check
//! (the global max level, which every design here sets to `Info`), before any
//! subscriber code runs: the same for all designs, their ratios noise around 1.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::{Barrier, Mutex};
use std::time::Instant;

use log::LevelFilter;
use quelog::{QueueHandler, QueueListener, SyncPolicy};
use tracing::{debug, info, info_span, Dispatch};
use tracing_subscriber::layer::SubscriberExt;

impl Settings {
    /// Calls per thread per event kind.
    fn calls(&self) -> usize {
        self.warmup + self.samples + self.samples / BLOCKS * BLOCKS
    }
}

// ---------------------------------------------------------------------------------
// The timer (as in examples/latency.rs).

#[path = "support/bench.rs"]
mod bench;
use bench::{
    calibrate, empty_ticks_pair_median as empty_pair_median, merge, quantiles_ns, thread_minflt,
    ticks, Settings, ThreadRun,
};

// ---------------------------------------------------------------------------------
// The events under test.

/// The event: two fields and a message, at a level every design takes.
#[inline(never)]
fn event(i: u64) {
    info!(a = black_box(i), b = "x", "request handled");
}

/// The same event at a level every design filters out.
#[inline(never)]
fn disabled(i: u64) {
    debug!(a = black_box(i), b = "x", "request handled");
}

// ---------------------------------------------------------------------------------
// Running.

/// What one thread measured for one event kind.
/// Throughput blocks per phase.
const BLOCKS: usize = 10;

/// Warm-up, per-call timing, then blocks for throughput; the threads start each
/// phase together.
fn phase(call: fn(u64), base: usize, settings: &Settings, barrier: &Barrier) -> ThreadRun {
    // Nonzero, so every page is touched now, not in the timed loop.
    let mut samples = vec![1u64; settings.samples];
    for i in 0..settings.warmup {
        call((base + i) as u64);
    }
    barrier.wait();
    let faults_before = thread_minflt();
    for (i, sample) in samples.iter_mut().enumerate() {
        let start = ticks::now();
        call((base + settings.warmup + i) as u64);
        *sample = ticks::now().wrapping_sub(start);
    }
    barrier.wait();
    let block = settings.samples / BLOCKS;
    let mut rates = [0.0f64; BLOCKS];
    for (b, rate) in rates.iter_mut().enumerate() {
        let first = base + settings.warmup + settings.samples + b * block;
        let begin = Instant::now();
        for i in first..first + block {
            call(i as u64);
        }
        *rate = block as f64 / begin.elapsed().as_secs_f64();
    }
    rates.sort_unstable_by(f64::total_cmp);
    ThreadRun {
        samples,
        throughput: rates[BLOCKS / 2],
        minflt: thread_minflt() - faults_before,
    }
}

/// Runs `threads` producers on `dispatch`, each inside its own `outer{id=1}` and
/// `inner{n=2}`: the enabled event, then the disabled one.
fn measure(
    dispatch: &Dispatch,
    threads: usize,
    settings: &Settings,
) -> (Vec<ThreadRun>, Vec<ThreadRun>) {
    let barrier = Barrier::new(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || {
                    tracing::dispatcher::with_default(dispatch, || {
                        let outer = info_span!("outer", id = 1);
                        let _outer = outer.enter();
                        let inner = info_span!("inner", n = 2);
                        let _inner = inner.enter();
                        let base = t * 10_000_000;
                        let enabled = phase(event, base, settings, barrier);
                        let disabled = phase(disabled, base, settings, barrier);
                        (enabled, disabled)
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("producer thread panicked"))
            .unzip()
    })
}

/// One row of the table.
struct Row {
    design: &'static str,
    threads: usize,
    disabled: bool,
    /// p50, p99, p99.9, max, in ns.
    percentiles: [f64; 4],
    throughput: f64,
    minflt: u64,
    /// Events dropped, for designs that count them.
    dropped: Option<u64>,
}

fn summarise(
    design: &'static str,
    threads: usize,
    disabled: bool,
    phases: Vec<ThreadRun>,
    ticks_per_ns: f64,
) -> Row {
    let (all, throughput, minflt) = merge(phases);
    Row {
        design,
        threads,
        disabled,
        percentiles: quantiles_ns(all, ticks_per_ns, [0.50, 0.99, 0.999, 1.0]),
        throughput,
        minflt,
        dropped: None,
    }
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "quelog-tracing-cost-{}-{name}.log",
        std::process::id()
    ))
}

fn create(path: &PathBuf) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
}

/// A queue as the quelog designs use it.
fn queue(
    path: &PathBuf,
    settings: &Settings,
) -> Result<(QueueHandler, QueueListener), quelog::Error> {
    quelog::Builder::new()
        .file(path)
        .sync(SyncPolicy::Never)
        .capacity(settings.capacity_mib << 20)
        .level(LevelFilter::Info)
        .build()
}

const DESIGNS: [&str; 5] = [
    "quelog",
    "quelog-layer",
    "fmt+appender",
    "fmt+mutex",
    "fmt+sink",
];

/// Runs one design at `threads`: its enabled and its disabled row.
fn run(
    design: &'static str,
    threads: usize,
    settings: &Settings,
    ticks_per_ns: f64,
) -> Result<[Row; 2], Box<dyn std::error::Error>> {
    let path = temp_path(design);
    let _ = std::fs::remove_file(&path);
    let fmt_layer = || tracing_subscriber::fmt::layer().with_ansi(false);
    let info = tracing_subscriber::filter::LevelFilter::INFO;
    let (enabled, disabled, dropped) = match design {
        "quelog" | "quelog-layer" => {
            let (handler, listener) = queue(&path, settings)?;
            let dispatch = if design == "quelog" {
                Dispatch::new(handler.tracing_subscriber())
            } else {
                Dispatch::new(tracing_subscriber::registry().with(handler.tracing_layer()))
            };
            let (enabled, disabled) = measure(&dispatch, threads, settings);
            drop(dispatch);
            let dropped = handler.stats().dropped.total();
            let stats = listener.stop()?;
            let calls = (threads * settings.calls()) as u64;
            if stats.written + dropped != calls || stats.spans.lost != 0 {
                return Err(format!(
                    "{design} accounting: {calls} events, {} written, {dropped} dropped, {} span records lost",
                    stats.written, stats.spans.lost
                )
                .into());
            }
            (enabled, disabled, Some(dropped))
        }
        "fmt+appender" => {
            let (writer, guard) = tracing_appender::non_blocking(create(&path)?);
            let errors = writer.error_counter();
            let dispatch = Dispatch::new(
                tracing_subscriber::registry()
                    .with(fmt_layer().with_writer(writer))
                    .with(info),
            );
            let (enabled, disabled) = measure(&dispatch, threads, settings);
            drop(dispatch);
            drop(guard); // waits for the appender's thread to write what it holds
            (enabled, disabled, Some(errors.dropped_lines() as u64))
        }
        "fmt+mutex" => {
            let writer = Mutex::new(BufWriter::new(create(&path)?));
            let dispatch = Dispatch::new(
                tracing_subscriber::registry()
                    .with(fmt_layer().with_writer(writer))
                    .with(info),
            );
            let (enabled, disabled) = measure(&dispatch, threads, settings);
            drop(dispatch); // flushes the BufWriter
            (enabled, disabled, None)
        }
        _ => {
            let dispatch = Dispatch::new(
                tracing_subscriber::registry()
                    .with(fmt_layer().with_writer(std::io::sink))
                    .with(info),
            );
            let (enabled, disabled) = measure(&dispatch, threads, settings);
            (enabled, disabled, None)
        }
    };
    let _ = std::fs::remove_file(&path);
    let mut enabled = summarise(design, threads, false, enabled, ticks_per_ns);
    enabled.dropped = dropped;
    let disabled = summarise(design, threads, true, disabled, ticks_per_ns);
    Ok([enabled, disabled])
}

// ---------------------------------------------------------------------------------
// Reporting.

fn print_table(rows: &[Row], overhead_ns: f64) {
    println!(
        "{:<13} {:<8} {:>3} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10} {:>7} {:>7} {:>7} {:>7} {:>6} {:>7}",
        "design",
        "event",
        "thr",
        "p50",
        "p50-ovh",
        "p99",
        "p99.9",
        "max",
        "calls/s/t",
        "x p50",
        "x p99.9",
        "x tput",
        "ns/call",
        "minflt",
        "drops"
    );
    let mut previous = None;
    for row in rows {
        if previous.is_some_and(|p| p != (row.threads, row.disabled)) {
            println!();
        }
        previous = Some((row.threads, row.disabled));
        let quelog = rows
            .iter()
            .find(|r| {
                r.design == "quelog" && r.threads == row.threads && r.disabled == row.disabled
            })
            .unwrap_or(row);
        let [p50, p99, p999, max] = row.percentiles;
        let net = (p50 - overhead_ns).max(0.0);
        let quelog_net = (quelog.percentiles[0] - overhead_ns).max(0.1);
        println!(
            "{:<13} {:<8} {:>3} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>10.3e} {:>7} {:>7.2} {:>7.2} {:>7.1} {:>6} {:>7}",
            row.design,
            if row.disabled { "disabled" } else { "info" },
            row.threads,
            p50,
            net,
            p99,
            p999,
            max,
            row.throughput,
            if row.disabled {
                "-".to_string()
            } else {
                format!("{:.2}", net.max(0.1) / quelog_net)
            },
            p999 / quelog.percentiles[2],
            row.throughput / quelog.throughput,
            1e9 / row.throughput,
            row.minflt,
            row.dropped.map_or("-".to_string(), |d| d.to_string()),
        );
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::from_args(256)?;
    let started = Instant::now();
    let ticks_per_ns = calibrate();
    let pair_ticks = empty_pair_median();
    let overhead_ns = pair_ticks as f64 / ticks_per_ns;
    println!("timer: {}", ticks::NAME);
    println!(
        "  {ticks_per_ns:.4} ticks/ns; empty pair (median) {pair_ticks} ticks = {overhead_ns:.1} ns"
    );
    println!(
        "event: info!(a = i, b = \"x\", \"request handled\") in outer{{id=1}}:inner{{n=2}}; \
         disabled: the same at debug!; per thread and kind {} warm-up + {} timed + {} \
         throughput calls; quelog: SyncPolicy::Never, {} MiB ring",
        settings.warmup, settings.samples, settings.samples, settings.capacity_mib
    );
    println!(
        "latencies in ns; x columns: this design / quelog (the subscriber) at the same \
         thread count and event; drops: quelog's dropped records, the appender's dropped lines\n"
    );

    let wanted = |design: &str| settings.only.as_deref().is_none_or(|only| only == design);
    let mut enabled = Vec::new();
    let mut disabled = Vec::new();
    for threads in [1, 2] {
        for design in DESIGNS {
            if wanted(design) {
                let [on, off] = run(design, threads, &settings, ticks_per_ns)?;
                enabled.push(on);
                disabled.push(off);
            }
        }
    }
    enabled.append(&mut disabled);
    print_table(&enabled, overhead_ns);
    println!("\ntotal {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
