//! Criterion micro-benchmarks of quelog's producer path, through the `log` facade as
//! an application calls it.
//!
//! ```text
//! cargo bench --manifest-path bench/Cargo.toml --bench producer
//! cargo bench --manifest-path bench/Cargo.toml --bench producer -- enabled   # one group
//! ```
//!
//! Setup: one quelog handler installed as the global `log` logger, `Overflow::Drop`,
//! a 256 MiB ring, its listener running and draining into a sink that discards the
//! bytes (so the listener's formatting runs, no file I/O). Every sample waits for the
//! listener to empty the ring before its timed loop (`QueueListener::flush`, outside
//! the timing), so the timed calls find room: each call measured is an enqueue, not a
//! drop. Should a sample still drop (a ring too small for criterion's iteration
//! count), the count is printed after the run; those numbers then mix in the cheaper
//! drop path.
//!
//! Groups: `disabled` (a `debug!` below the level: `log`'s one atomic load),
//! `enabled` (a record without arguments, the issue's 3-argument record, a record
//! longer than one slot), `contended` (the 3-argument record from 2 threads at once,
//! time per call on each), `clock` (what reading the time costs here), and
//! `raw_macros` (quelog's own `quelog::info!`).

use std::hint::black_box;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use quelog::{QueueHandler, QueueListener, Sink};

/// Bytes in, nothing out: the listener formats and batches as for a file.
struct Discard;

impl Sink for Discard {
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        black_box(batch);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Installed {
    handler: &'static QueueHandler,
    listener: QueueListener,
    /// Records dropped inside timed loops over the whole run: ring full, and claims
    /// that lost the race too often.
    full_while_timed: AtomicU64,
    contended_while_timed: AtomicU64,
}

fn installed() -> &'static Installed {
    static INSTALLED: OnceLock<Installed> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let (handler, listener) = quelog::Builder::new()
            .sink(Discard, log::LevelFilter::Trace)
            .capacity(256 << 20)
            .sync(quelog::SyncPolicy::Never)
            .level(log::LevelFilter::Info)
            .handle_termination(false)
            .build()
            .expect("quelog builds");
        let handler: &'static QueueHandler = Box::leak(Box::new(handler));
        log::set_logger(handler).expect("no other logger in this process");
        log::set_max_level(log::LevelFilter::Info);
        Installed {
            handler,
            listener,
            full_while_timed: AtomicU64::new(0),
            contended_while_timed: AtomicU64::new(0),
        }
    })
}

/// Calls timed between two waits for an empty ring: at most 6 slots each, they fit
/// in the ring several times over, whatever iteration count criterion asks for.
const CHUNK: u64 = 1 << 18;

/// Times `iters` calls of `call`, the ring emptied (untimed) before every
/// [`CHUNK`] of them; counts drops.
fn timed(iters: u64, call: impl Fn(u64)) -> Duration {
    let q = installed();
    let before = q.handler.stats().dropped;
    let mut elapsed = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let chunk = CHUNK.min(iters - done);
        let _ = q.listener.flush();
        let started = Instant::now();
        for i in done..done + chunk {
            call(black_box(i));
        }
        elapsed += started.elapsed();
        done += chunk;
    }
    count_drops(before);
    elapsed
}

fn count_drops(before: quelog::Dropped) {
    let q = installed();
    let after = q.handler.stats().dropped;
    q.full_while_timed
        .fetch_add(after.queue_full - before.queue_full, Ordering::Relaxed);
    q.contended_while_timed
        .fetch_add(after.contended - before.contended, Ordering::Relaxed);
}

fn three_args(i: u64) {
    log::info!("request {} handled in {} us by {}", i, i % 997, "worker-7");
}

/// About 300 bytes of message: more than one 64-byte slot.
const LONG: &str = "a message longer than one ring slot, so the record spans several slots and \
the producer claims them in one go: this is what a stack trace, a SQL statement or a request \
dump looks like to the logger; the listener reassembles it before laying out the line, and \
the caller pays for copying every byte of it into the ring";

fn disabled(c: &mut Criterion) {
    installed();
    c.bench_function("disabled/debug_below_level", |b| {
        b.iter_custom(|iters| {
            timed(iters, |i| {
                log::debug!("request {} handled in {} us by {}", i, i % 997, "worker-7")
            })
        })
    });
}

fn enabled(c: &mut Criterion) {
    installed();
    let mut group = c.benchmark_group("enabled");
    group.bench_function("no_args", |b| {
        b.iter_custom(|iters| timed(iters, |_| log::info!("request handled")))
    });
    group.bench_function("three_args", |b| {
        b.iter_custom(|iters| timed(iters, three_args))
    });
    group.bench_function("multi_slot_300_bytes", |b| {
        b.iter_custom(|iters| timed(iters, |i| log::info!("{} {}", i, black_box(LONG))))
    });
    group.finish();
}

fn contended(c: &mut Criterion) {
    installed();
    c.bench_function("contended/three_args_2_threads", |b| {
        b.iter_custom(|iters| {
            let q = installed();
            let before = q.handler.stats().dropped;
            let mut elapsed = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let chunk = CHUNK.min(iters - done);
                let _ = q.listener.flush();
                elapsed += two_threads(done..done + chunk);
                done += chunk;
            }
            count_drops(before);
            elapsed
        })
    });
}

/// Both threads make every call of `calls` at once; the slower thread's time.
fn two_threads(calls: std::ops::Range<u64>) -> Duration {
    let barrier = Barrier::new(2);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (barrier, calls) = (&barrier, calls.clone());
                scope.spawn(move || {
                    barrier.wait();
                    let started = Instant::now();
                    for i in calls {
                        three_args(black_box(i));
                    }
                    started.elapsed()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .max()
            .unwrap_or_default()
    })
}

fn clock(c: &mut Criterion) {
    let mut group = c.benchmark_group("clock");
    group.bench_function("instant_now", |b| b.iter(Instant::now));
    group.bench_function("system_time_now", |b| b.iter(SystemTime::now));
    group.finish();
}

fn raw_macros(c: &mut Criterion) {
    installed();
    let mut group = c.benchmark_group("raw_macros");
    group.bench_function("three_args", |b| {
        b.iter_custom(|iters| {
            timed(iters, |i| {
                quelog::info!("request {} handled in {} us by {}", i, i % 997, "worker-7")
            })
        })
    });
    group.finish();
}

fn report(_: &mut Criterion) {
    let q = installed();
    let full = q.full_while_timed.load(Ordering::Relaxed);
    let contended = q.contended_while_timed.load(Ordering::Relaxed);
    if full + contended > 0 {
        eprintln!(
            "producer: records dropped inside timed loops: {full} (ring full), {contended} (claim contended)"
        );
    } else {
        eprintln!("producer: no record dropped inside a timed loop");
    }
}

criterion_group! {
    name = producer;
    // Short: every sample's records are drained by the listener, outside the timing
    // but not outside the wall clock.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = disabled, enabled, contended, clock, raw_macros, report
}
criterion_main!(producer);
