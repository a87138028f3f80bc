//! The producer path allocates nothing, proved with a counting global allocator.
//!
//! The allocator counts every `alloc`, `alloc_zeroed`, `realloc` and `dealloc` made on
//! a thread while that thread's `MEASURING` flag is set, and separately every one made
//! while a signal handler of this test runs (the handler sets `IN_HANDLER`). The
//! flags are `const` thread-locals without destructors, so reading them inside the
//! allocator and inside a signal handler is itself allocation-free and safe. The
//! listener thread allocates as it pleases (it formats lines into `Vec`s); it is not
//! measured.
//!
//! One global logger per process: every test here shares one quelog install (a sink
//! that only counts), and a mutex runs them one at a time so the counter deltas are
//! theirs.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use support::storm::Pad;

struct CountingAllocator;

thread_local! {
    /// This thread is in a measured window.
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    /// A signal handler of this test is running on this thread.
    static IN_HANDLER: Cell<bool> = const { Cell::new(false) };
}

/// Heap calls on a thread in a measured window.
static MEASURED_ALLOCS: AtomicU64 = AtomicU64::new(0);
static MEASURED_FREES: AtomicU64 = AtomicU64::new(0);
/// Heap calls made inside this test's signal handler.
static HANDLER_ALLOCS: AtomicU64 = AtomicU64::new(0);
static HANDLER_FREES: AtomicU64 = AtomicU64::new(0);

fn note(allocation: bool) {
    let measuring = MEASURING.try_with(Cell::get).unwrap_or(false);
    let in_handler = IN_HANDLER.try_with(Cell::get).unwrap_or(false);
    let (measured, handler) = if allocation {
        (&MEASURED_ALLOCS, &HANDLER_ALLOCS)
    } else {
        (&MEASURED_FREES, &HANDLER_FREES)
    };
    if measuring {
        measured.fetch_add(1, Relaxed);
    }
    if in_handler {
        handler.fetch_add(1, Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches
// only atomics and const thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(true);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(true);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(true);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(false);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// What the sink saw: lines, the longest one, and the lines whose span chain is
/// [`TWO_SPANS`].
#[derive(Default)]
struct Seen {
    lines: AtomicU64,
    longest: AtomicU64,
    in_two_spans: AtomicU64,
}

/// The span chain of the tracing windows' events.
const TWO_SPANS: &[u8] = br#"outer{a=1}:inner{b="two"}: "#;

/// Counts lines instead of writing them: the test is about the producers, and a file
/// would make it slower without making it stronger.
struct CountingSink(Arc<Seen>);

impl quelog::Sink for CountingSink {
    fn write_batch(&mut self, batch: &[u8]) -> std::io::Result<()> {
        for line in batch.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            self.0.lines.fetch_add(1, Relaxed);
            self.0.longest.fetch_max(line.len() as u64, Relaxed);
            // The chain follows the "[thread] " part.
            let after_thread = line
                .windows(2)
                .position(|w| w == b"] ")
                .map_or(&[][..], |at| &line[at + 2..]);
            if after_thread.starts_with(TWO_SPANS) {
                self.0.in_two_spans.fetch_add(1, Relaxed);
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Installed {
    guard: quelog::Guard,
    seen: Arc<Seen>,
}

fn installed() -> &'static Installed {
    static INSTALLED: OnceLock<Installed> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let seen = Arc::new(Seen::default());
        let guard = quelog::Builder::new()
            .sink(CountingSink(Arc::clone(&seen)), log::LevelFilter::Info)
            .level(log::LevelFilter::Info)
            // A filter table to scan; its most verbose level is still `Info`.
            .filter("info,muted=off,muted::loud=warn,other::deep=warn,x=error")
            .env_var(None)
            .install()
            .expect("install quelog");
        Installed { guard, seen }
    })
}

/// One test at a time: the counters are global.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one measured window did.
#[derive(Debug)]
struct Window {
    calls: u64,
    allocs: u64,
    frees: u64,
    enqueued: u64,
    dropped: u64,
    truncated: u64,
    elapsed: Duration,
}

/// A barrier; drops (counted in the window) make it an error that says so, which is
/// expected here: the windows that log faster than the listener drains drop.
fn flush(guard: &quelog::Guard, when: &str) {
    match guard.flush() {
        Ok(()) | Err(quelog::Error::Dropped(_)) => {}
        Err(error) => panic!("flush {when}: {error}"),
    }
}

/// Runs `log_one(i)` for `i` in `0..calls` (stopping early after `time_limit`) with
/// this thread measured; then flushes so the listener has taken everything.
fn measure(calls: u64, time_limit: Duration, mut log_one: impl FnMut(u64)) -> Window {
    let env = installed();
    flush(&env.guard, "before");
    let before = env.guard.stats();
    MEASURED_ALLOCS.store(0, Relaxed);
    MEASURED_FREES.store(0, Relaxed);
    let start = Instant::now();
    let mut done = 0;
    MEASURING.with(|m| m.set(true));
    while done < calls {
        log_one(done);
        done += 1;
        // Checking the clock every 4096 calls keeps it off the profile.
        if done % 4096 == 0 && start.elapsed() > time_limit {
            break;
        }
    }
    MEASURING.with(|m| m.set(false));
    let elapsed = start.elapsed();
    let allocs = MEASURED_ALLOCS.load(Relaxed);
    let frees = MEASURED_FREES.load(Relaxed);
    flush(&env.guard, "after");
    let after = env.guard.stats();
    Window {
        calls: done,
        allocs,
        frees,
        enqueued: after.enqueued - before.enqueued,
        dropped: after.dropped.total() - before.dropped.total(),
        truncated: after.truncated - before.truncated,
        elapsed,
    }
}

/// Bounds of the million-call windows: the count, and a time limit for slow machines
/// (a debug build does a million short calls in about a second).
const CALLS: u64 = 1_000_000;
const TIME_LIMIT: Duration = Duration::from_secs(20);

fn assert_allocation_free(what: &str, window: &Window) {
    println!("{what}: {window:?}");
    assert_eq!(
        (window.allocs, window.frees),
        (0, 0),
        "{what}: the producer path touched the heap: {window:?}"
    );
    assert!(
        window.calls == CALLS || window.elapsed >= TIME_LIMIT,
        "{what}: stopped early: {window:?}"
    );
    assert!(
        window.calls >= CALLS / 10,
        "{what}: too few calls to mean anything: {window:?}"
    );
    assert_eq!(
        window.enqueued + window.dropped,
        window.calls,
        "{what}: every call is enqueued or dropped: {window:?}"
    );
    assert!(
        window.enqueued >= 1000,
        "{what}: the claim path was hardly exercised: {window:?}"
    );
}

/// The counter can fail: an allocation on the measured thread, or in the handler, is
/// seen.
#[test]
fn the_counting_allocator_sees_allocations_on_the_measured_thread() {
    let _serial = serial();
    let window = measure(10, TIME_LIMIT, |i| {
        std::hint::black_box(Box::new(i));
    });
    assert_eq!((window.allocs, window.frees), (10, 10), "{window:?}");
    // Not measured: another thread's allocations are not ours.
    MEASURED_ALLOCS.store(0, Relaxed);
    MEASURING.with(|m| m.set(true));
    std::thread::spawn(|| std::hint::black_box(vec![1u8; 100]))
        .join()
        .unwrap();
    MEASURING.with(|m| m.set(false));
    // Spawning allocates here (the thread's handle), but the vector is the other
    // thread's: a handful, not more.
    assert!(MEASURED_ALLOCS.load(Relaxed) > 0);
    HANDLER_ALLOCS.store(0, Relaxed);
    IN_HANDLER.with(|h| h.set(true));
    std::hint::black_box(String::from("in a handler"));
    IN_HANDLER.with(|h| h.set(false));
    assert_eq!(HANDLER_ALLOCS.swap(0, Relaxed), 1);
}

#[test]
fn short_messages_allocate_nothing() {
    let _serial = serial();
    let window = measure(CALLS, TIME_LIMIT, |i| {
        if i % 2 == 0 {
            log::info!("short {} {}", i, "message");
        } else {
            log::info!("a literal message");
        }
    });
    assert_allocation_free("short messages", &window);
}

#[test]
fn log_key_values_allocate_nothing() {
    let _serial = serial();
    let window = measure(CALLS, TIME_LIMIT, |i| {
        log::info!(user = "ann", attempts = i, ratio = 0.5, ok = true, tag:? = ("a", 1); "login {}", i);
    });
    assert_allocation_free("log records with key-values", &window);
}

#[test]
fn records_a_filter_passes_or_refuses_by_target_allocate_nothing() {
    let _serial = serial();
    let window = measure(CALLS, TIME_LIMIT, |i| {
        if i % 2 == 0 {
            log::info!(target: "muted::inner", "filtered out {}", i);
        } else {
            log::info!(target: "kept::inner", "kept {}", i);
        }
    });
    println!("filtered by target: {window:?}");
    assert_eq!((window.allocs, window.frees), (0, 0), "{window:?}");
    assert!(window.calls >= CALLS / 10, "{window:?}");
    assert_eq!(
        window.enqueued + window.dropped,
        window.calls / 2,
        "{window:?}"
    );
}

#[test]
fn records_longer_than_one_slot_allocate_nothing() {
    let _serial = serial();
    let window = measure(CALLS, TIME_LIMIT, |i| {
        log::info!("multi-slot {} {}", i, Pad(120));
    });
    assert_allocation_free("records longer than one 64-byte slot", &window);
    assert!(installed().seen.longest.load(Relaxed) > 120);
}

#[test]
fn records_longer_than_the_inline_buffer_allocate_nothing() {
    let _serial = serial();
    let window = measure(CALLS, TIME_LIMIT, |i| {
        log::info!("scratch {} {}", i, Pad(700));
    });
    assert_allocation_free("records longer than 512 bytes (scratch buffers)", &window);
    // They went through a scratch buffer whole, not cut at the inline size.
    assert_eq!(window.truncated, 0, "{window:?}");
    assert!(installed().seen.longest.load(Relaxed) > 700);
}

/// quelog's own macros, every way they go: raw on the stack (numbers, a float, a
/// `&str`, a bool), raw through the general path (a `Display` formatted on the caller,
/// a string too long for the stack record), a `{:?}`, and a format the caller formats
/// (through `log`). Each callsite registers itself on its first call, in the window.
#[test]
fn quelog_macros_allocate_nothing() {
    let _serial = serial();
    let long = "s".repeat(400);
    let window = measure(CALLS, TIME_LIMIT, |i| match i % 5 {
        0 => quelog::info!("raw {} {} {} {}", i, 0.5 * i as f64, "worker-7", i % 2 == 0),
        1 => quelog::info!("display {} {}", Pad(40), i),
        2 => quelog::info!(target: "kept::inner", "long {} {}", long.as_str(), i),
        3 => quelog::warn!("debug {:?} {:?}", "quoted\n", -1.5e300),
        _ => quelog::info!("caller formats [{:>8}]", i),
    });
    assert_allocation_free("quelog's macros", &window);
}

/// Signals handled by this test's handler.
static HANDLED: AtomicU64 = AtomicU64::new(0);

fn on_sigusr1() {
    IN_HANDLER.with(|h| h.set(true));
    let n = HANDLED.fetch_add(1, Relaxed);
    log::warn!(
        "in a signal handler: n={} pad={} flag={}",
        n,
        Pad((n % 3 * 100) as usize),
        true
    );
    IN_HANDLER.with(|h| h.set(false));
}

#[test]
fn signal_handlers_allocate_nothing() {
    let _serial = serial();
    installed();
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| {
        // SAFETY: the action sets a const thread-local, bumps an atomic and logs through
        // quelog: async-signal-safe, which is what this test checks.
        unsafe { signal_hook::low_level::register(libc::SIGUSR1, on_sigusr1) }
            .expect("register SIGUSR1");
    });
    HANDLER_ALLOCS.store(0, Relaxed);
    HANDLER_FREES.store(0, Relaxed);
    HANDLED.store(0, Relaxed);
    let env = installed();
    flush(&env.guard, "before");
    let before = env.guard.stats();
    // SAFETY: pthread_self has no preconditions.
    let target = unsafe { libc::pthread_self() };
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let stop = Arc::clone(&stop);
        let target = target as usize;
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(Relaxed) {
                // SAFETY: the target is the test thread, which joins this thread
                // before it returns, so the pthread_t stays valid.
                unsafe { libc::pthread_kill(target as libc::pthread_t, libc::SIGUSR1) };
                sent += 1;
                std::thread::sleep(Duration::from_micros(20));
            }
            sent
        })
    };
    // Logging in a loop while the signals land, some inside log calls.
    let window = measure(CALLS, Duration::from_secs(2), |i| {
        log::info!("interrupted {} {}", i, Pad((i % 4 * 60) as usize));
    });
    stop.store(true, Relaxed);
    let sent = killer.join().unwrap();
    let handled = HANDLED.load(Relaxed);
    println!("signals sent {sent}, handled {handled}; {window:?}");
    assert_eq!(
        (HANDLER_ALLOCS.load(Relaxed), HANDLER_FREES.load(Relaxed)),
        (0, 0),
        "the signal handler's log calls touched the heap"
    );
    assert!(handled >= 1000, "only {handled} signals handled");
    assert_eq!((window.allocs, window.frees), (0, 0), "{window:?}");
    // The handlers' records are enqueued or dropped too (counted once no signal can
    // come any more).
    flush(&env.guard, "after");
    let after = env.guard.stats();
    let accounted =
        (after.enqueued - before.enqueued) + (after.dropped.total() - before.dropped.total());
    assert_eq!(accounted, window.calls + handled);
}

/// quelog is also the tracing subscriber (`install` sets the global dispatcher): an
/// event with two fields inside two entered spans, with the enters and exits around
/// it, touches the heap as little as a `log` call. The spans are created before the
/// window (creating one may allocate, but only when the span table grows).
#[test]
fn tracing_events_in_two_entered_spans_allocate_nothing() {
    let _serial = serial();
    let env = installed();
    let outer = tracing::info_span!("outer", a = 1);
    let inner = tracing::info_span!(parent: &outer, "inner", b = "two");
    let one = |i: u64| {
        let _outer = outer.enter();
        let _inner = inner.enter();
        tracing::info!(n = i, flag = true, "an event in two spans");
    };
    // The first use registers the callsite (tracing may lock and allocate there).
    one(0);
    flush(&env.guard, "after the first event");
    let chained_before = env.seen.in_two_spans.load(Relaxed);
    let window = measure(CALLS, TIME_LIMIT, one);
    assert_allocation_free("tracing events in two entered spans", &window);
    // The events went through the subscriber, spans and fields included.
    let chained = env.seen.in_two_spans.load(Relaxed) - chained_before;
    assert_eq!(chained, window.enqueued, "{window:?}");
}

/// Creating, entering, exiting and closing a span per call, with an event inside:
/// no heap either while the span table has room (4,096 live spans preallocated;
/// here one is live at a time).
#[test]
fn tracing_spans_created_and_closed_in_the_window_allocate_nothing() {
    let _serial = serial();
    let env = installed();
    let one = |i: u64| {
        let span = tracing::info_span!("per_call", i);
        let _entered = span.enter();
        tracing::info!("an event in a fresh span");
    };
    one(0);
    let spans_before = env.guard.stats().spans;
    let window = measure(CALLS, TIME_LIMIT, one);
    assert_allocation_free("spans created, entered and closed", &window);
    let spans = env.guard.stats().spans;
    let created = spans.created - spans_before.created;
    assert_eq!(created, window.calls, "{spans:?}");
    assert_eq!(spans.closed - spans_before.closed, created, "{spans:?}");
    println!(
        "{created} spans created and closed; their bookkeeping records lost (ring full): {}",
        spans.lost - spans_before.lost
    );
}
