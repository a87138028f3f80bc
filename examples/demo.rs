//! The main job: quelog under the kinds of load that freeze other loggers, with every
//! record accounted for.
//!
//! ```text
//! cargo run --release --example demo
//! ```
//!
//! Installs quelog as the global logger writing `logs/demo.log`, then runs four
//! worker threads that log with per-thread sequence numbers while:
//! * a value whose `Drop` logs is dropped every 1000 records,
//! * an argument whose `Display` logs is formatted every 1000 records,
//! * a signal thread fires SIGUSR1 at the workers every 50 us, and the handler logs.
//!
//! Then it drops the guard (drain, sync, join), reads the file back and checks that
//! every record attempted is either in the file or counted as dropped, that each
//! worker's records are in order, and exits non-zero if not. The workers use
//! `Overflow::Block`, so they wait for room; signal handlers and nested calls never
//! wait (they could be waiting for their own thread), so those drop when the ring is
//! full, and are counted.
//!
//! For the naive designs deadlocking under the same storm, see
//! `cargo run --release --example storm`.

use std::fmt;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WORKERS: usize = 4;
const RECORDS_PER_WORKER: u64 = 250_000;
const LOG_PATH: &str = "logs/demo.log";

/// Log calls made, by kind (each passes the Info level filter).
static WORKER_RECORDS: AtomicU64 = AtomicU64::new(0);
static DROP_RECORDS: AtomicU64 = AtomicU64::new(0);
static DISPLAY_RECORDS: AtomicU64 = AtomicU64::new(0);
static SIGNAL_RECORDS: AtomicU64 = AtomicU64::new(0);

/// Logs when dropped.
struct Noisy(u64);

impl Drop for Noisy {
    fn drop(&mut self) {
        DROP_RECORDS.fetch_add(1, Ordering::Relaxed);
        log::info!("drop of Noisy({}) logs too", self.0);
    }
}

/// Logs while it is being formatted as another record's argument.
struct Chatty(u64);

impl fmt::Display for Chatty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        DISPLAY_RECORDS.fetch_add(1, Ordering::Relaxed);
        log::info!(
            "display of Chatty({}) logs from inside another log call",
            self.0
        );
        write!(f, "chatty-{}", self.0)
    }
}

fn main() {
    let started = Instant::now();
    let _ = std::fs::remove_file(LOG_PATH);
    let guard = match quelog::Builder::new()
        .file(LOG_PATH)
        .level(log::LevelFilter::Info)
        .sync(quelog::SyncPolicy::EveryBatch)
        .capacity(8 << 20)
        .overflow(quelog::Overflow::Block {
            timeout: Duration::from_secs(1),
        })
        .install()
    {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("demo: cannot start quelog: {error}");
            std::process::exit(2);
        }
    };

    // The handler logs: that is the point. Only async-signal-safe work in it: an
    // atomic add and a log call with integer arguments.
    let handler = || {
        let n = SIGNAL_RECORDS.fetch_add(1, Ordering::Relaxed);
        log::warn!("signal handler logs: SIGUSR1 number {} (tid {})", n, 0);
    };
    // SAFETY: the closure does only async-signal-safe work (see above; quelog's
    // producer path is async-signal-safe by contract).
    let signal_id =
        unsafe { signal_hook::low_level::register(signal_hook::consts::SIGUSR1, handler) };
    let signal_id = match signal_id {
        Ok(id) => id,
        Err(error) => {
            eprintln!("demo: cannot register SIGUSR1: {error}");
            std::process::exit(2);
        }
    };

    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            std::thread::Builder::new()
                .name(format!("worker-{worker}"))
                .spawn(move || {
                    for seq in 0..RECORDS_PER_WORKER {
                        if seq % 1000 == 999 {
                            WORKER_RECORDS.fetch_add(1, Ordering::Relaxed);
                            log::info!("worker {worker} seq {seq} arg {}", Chatty(seq));
                            drop(Noisy(seq));
                        } else {
                            WORKER_RECORDS.fetch_add(1, Ordering::Relaxed);
                            log::info!("worker {worker} seq {seq} value {}", seq * 31);
                        }
                    }
                })
                .expect("spawn worker")
        })
        .collect();

    // Fire SIGUSR1 at the workers until they finish.
    let targets: Vec<libc::pthread_t> = workers.iter().map(|w| w.as_pthread_t()).collect();
    let done = Arc::new(AtomicBool::new(false));
    let signaller = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !done.load(Ordering::Relaxed) {
                for &target in &targets {
                    // SAFETY: the targets are joined only after `done` is set and this
                    // thread is joined, so every pthread_t is alive here.
                    if unsafe { libc::pthread_kill(target, libc::SIGUSR1) } == 0 {
                        sent += 1;
                    }
                }
                std::thread::sleep(Duration::from_micros(50));
            }
            sent
        })
    };
    for worker in workers {
        // Workers can only stop by finishing their loop; a panic would be a bug.
        let _ = worker.join();
    }
    done.store(true, Ordering::Relaxed);
    let signals_sent = signaller.join().unwrap_or(0);
    signal_hook::low_level::unregister(signal_id);

    let stats = match guard.stop() {
        Ok(stats) => stats,
        Err(error) => {
            eprintln!("demo: stopping quelog failed: {error}");
            std::process::exit(1);
        }
    };
    let elapsed = started.elapsed();
    let ok = report(&stats, signals_sent, elapsed);
    std::process::exit(if ok { 0 } else { 1 });
}

/// Reads the file back, prints the summary, and says whether the accounting holds.
fn report(stats: &quelog::Stats, signals_sent: u64, elapsed: Duration) -> bool {
    let text = std::fs::read_to_string(LOG_PATH).unwrap_or_default();
    let mut in_file = 0u64;
    let mut notices = 0u64;
    let mut malformed = 0u64;
    let mut last_seq = [None::<u64>; WORKERS];
    let mut out_of_order = 0u64;
    for line in text.lines() {
        let Some((_, rest)) = line.split_once("] ") else {
            malformed += 1;
            continue;
        };
        if rest.starts_with("quelog: ") {
            notices += 1;
            continue;
        }
        in_file += 1;
        let Some(message) = rest.split_once(": ").map(|(_, m)| m) else {
            malformed += 1;
            continue;
        };
        let mut words = message.split(' ');
        if words.next() == Some("worker") {
            let worker: usize = words
                .next()
                .and_then(|w| w.parse().ok())
                .unwrap_or(usize::MAX);
            let seq: Option<u64> = words.nth(1).and_then(|s| s.parse().ok());
            match (last_seq.get_mut(worker), seq) {
                (Some(last), Some(seq)) => {
                    if last.is_some_and(|l| l >= seq) {
                        out_of_order += 1;
                    }
                    *last = Some(seq);
                }
                _ => malformed += 1,
            }
        }
    }

    let worker = WORKER_RECORDS.load(Ordering::Relaxed);
    let drops = DROP_RECORDS.load(Ordering::Relaxed);
    let displays = DISPLAY_RECORDS.load(Ordering::Relaxed);
    let signals = SIGNAL_RECORDS.load(Ordering::Relaxed);
    let attempted = worker + drops + displays + signals;
    let dropped = stats.dropped.total();
    let balanced = attempted == in_file + dropped && in_file == stats.written;
    let ok = balanced && out_of_order == 0 && malformed == 0;

    println!("quelog demo: {WORKERS} workers x {RECORDS_PER_WORKER} records to {LOG_PATH}");
    println!("  attempted           {attempted:>10}");
    println!("    worker records    {worker:>10}");
    println!("    from Drop         {drops:>10}");
    println!("    from Display      {displays:>10}   (nested inside another log call)");
    println!("    from SIGUSR1      {signals:>10}   ({signals_sent} signals sent)");
    println!("  written (file)      {in_file:>10}   (+ {notices} quelog notice lines)");
    println!("  written (stats)     {:>10}", stats.written);
    println!("  dropped             {dropped:>10}");
    println!("    queue full        {:>10}", stats.dropped.queue_full);
    println!("    contended         {:>10}", stats.dropped.contended);
    println!("    after stop        {:>10}", stats.dropped.after_stop);
    println!("  cut to size         {:>10}", stats.truncated);
    println!("  bytes written       {:>10}", stats.bytes);
    println!("  syncs (fdatasync)   {:>10}", stats.syncs);
    println!("  elapsed             {:>10.3} s", elapsed.as_secs_f64());
    println!(
        "  per-worker order    {}",
        if out_of_order == 0 { "ok" } else { "BROKEN" }
    );
    println!("  malformed lines     {malformed:>10}");
    println!(
        "  attempted == written + dropped: {}",
        if balanced { "yes" } else { "NO" }
    );
    ok
}
