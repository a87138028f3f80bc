//! Every way a process ends, in child processes (the global logger can be installed
//! only once per process): SIGKILL at random moments, fatal signals with the crash
//! drain, panics (unwinding and aborting), SIGTERM/SIGINT, and `std::process::exit`.
//!
//! The child is this test binary run again with `QUELOG_CHILD` set: the `child` test
//! below does nothing unless it is set.

mod support;
use support::common::no_core_dumps;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quelog::test_hooks::ListenerHooks;
use quelog::{Builder, Error, LevelFilter, Sink, SyncPolicy};

fn temp_dir(name: &str) -> std::path::PathBuf {
    support::common::temp_dir("crash", name)
}

const CHILD_ENV: &str = "QUELOG_CHILD";
const PATH_ENV: &str = "QUELOG_CHILD_PATH";
const LIB_ENV: &str = "QUELOG_CHILD_LIB";

// ---------------------------------------------------------------------------------
// The child side

#[test]
fn child() {
    let Ok(scenario) = std::env::var(CHILD_ENV) else {
        return;
    };
    let path = PathBuf::from(std::env::var(PATH_ENV).expect("path"));
    match scenario.as_str() {
        "sigkill" => child_sigkill(&path),
        "drain-abort" => child_fatal(&path, true, true, Fatal::Abort),
        "drain-segv" => child_fatal(&path, true, true, Fatal::NullWrite),
        "drain-live" => child_fatal(&path, true, false, Fatal::Abort),
        "drain-live-segv" => child_fatal(&path, true, false, Fatal::NullWrite),
        "no-drain-abort" => child_fatal(&path, false, true, Fatal::Abort),
        "drain-chase" => child_chase(&path),
        "resolved-fault" => child_resolved_fault(&path),
        "stack-overflow" => child_stack_overflow(&path),
        "longjmp-fault" => child_longjmp(&path, Fatal::NullWrite),
        "longjmp-raise" => child_longjmp(&path, Fatal::Abort),
        "panic-unwind" => child_panic(&path, true, false),
        "panic-unwind-no-hook" => child_panic(&path, false, false),
        "panic-abort" => child_panic(&path, true, true),
        "terminate" => child_terminate(&path, true),
        "terminate-unhandled" => child_terminate(&path, false),
        "exit-shutdown" => child_exit(&path, Exit::Shutdown),
        "exit-flush" => child_exit(&path, Exit::Flush),
        "exit-plain" => child_exit(&path, Exit::Plain),
        other => panic!("unknown scenario {other}"),
    }
}

/// Logs with `EveryRecord` from two threads that flush after every record and report
/// each acknowledged record on stdout, and a third that logs without flushing, until
/// the parent kills the process.
fn child_sigkill(path: &Path) {
    let guard = Builder::new()
        .file(path)
        .sync(SyncPolicy::EveryRecord)
        .install()
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..2 {
            let guard = &guard;
            s.spawn(move || {
                let pad = "p".repeat(40 + t * 90); // one and three ring slots
                for i in 0u64.. {
                    log::info!(target: "crash", "crash-test t={t} i={i} pad={pad}");
                    guard.flush().expect("flush");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {t} {i}").unwrap();
                    out.flush().unwrap();
                }
            });
        }
        s.spawn(|| {
            for j in 0u64.. {
                log::info!(target: "crash", "noise {j}");
                std::thread::sleep(Duration::from_micros(200));
            }
        });
    });
}

enum Fatal {
    Abort,
    NullWrite,
}

/// Logs 1000 records (some long) with the listener held back (or not), then dies of a
/// fatal signal.
fn child_fatal(path: &Path, drain: bool, hold: bool, fatal: Fatal) {
    no_core_dumps();
    let held = Arc::new(AtomicBool::new(hold));
    let guard = Builder::new()
        .file(path)
        .drain_on_crash(drain)
        .listener_hooks(ListenerHooks {
            hold: Some(held),
            die: None,
        })
        .install()
        .unwrap();
    // With a live listener: a pause of a few hundred microseconds somewhere, so the
    // crash meets the listener at a different point each time.
    let pause_at: u64 = std::env::var("QUELOG_PAUSE_AT").map_or(0, |v| v.parse().unwrap());
    for i in 0..1000 {
        if !hold && i == pause_at % 1000 {
            std::thread::sleep(Duration::from_micros(pause_at / 1000 * 50));
        }
        if i % 100 == 7 {
            let long = "L".repeat(3000);
            log::warn!(target: "crash", "crash-drain {i} {long}\ttab");
        } else {
            log::info!(target: "crash", "crash-drain {i}");
        }
    }
    std::mem::forget(guard);
    match fatal {
        // SAFETY: ends the process with SIGABRT, on purpose.
        Fatal::Abort => unsafe { libc::abort() },
        Fatal::NullWrite => {
            let null = std::hint::black_box(std::ptr::null_mut::<u8>());
            // SAFETY: none: this faults with SIGSEGV, on purpose, to test the drain.
            unsafe { std::ptr::write_volatile(null, 1) };
        }
    }
    unreachable!("still alive after the fatal signal");
}

fn null_write() {
    let null = std::hint::black_box(std::ptr::null_mut::<u8>());
    // SAFETY: none: this faults with SIGSEGV, on purpose, to test the drain.
    unsafe { std::ptr::write_volatile(null, 1) };
}

fn install_held(path: &Path, held: &Arc<AtomicBool>) -> quelog::Guard {
    Builder::new()
        .file(path)
        .drain_on_crash(true)
        .listener_hooks(ListenerHooks {
            hold: Some(Arc::clone(held)),
            die: None,
        })
        .install()
        .unwrap()
}

/// The listener held back, three threads log as fast as they can (the ring fills,
/// then they drop), and a fourth faults: the drain must end although every record it
/// frees makes room for another.
fn child_chase(path: &Path) {
    no_core_dumps();
    let held = Arc::new(AtomicBool::new(true));
    std::mem::forget(install_held(path, &held));
    for t in 0..3 {
        std::thread::spawn(move || {
            for i in 0u64.. {
                log::info!(target: "chase", "chase t={t} i={i}");
            }
        });
    }
    // Long enough for the ring to fill.
    std::thread::sleep(Duration::from_millis(300));
    let _ = std::thread::spawn(null_write).join();
    unreachable!("still alive after the fatal signal");
}

/// The page that [`unprotect_guard_page`] makes writable, and how often it did.
static GUARD_PAGE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static RESOLVED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// A SIGSEGV handler the way wasm runtimes, JITs and GCs have one: a fault on its
/// guard page is resolved (the page made writable) and the instruction re-executed;
/// any other fault is fatal (default action, as Rust's own handler does).
extern "C" fn unprotect_guard_page(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    let page = GUARD_PAGE.load(std::sync::atomic::Ordering::Relaxed);
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    if page != 0 && (page..page + page_size()).contains(&addr) {
        // SAFETY: `page` is a page we mapped; mprotect is async-signal-safe.
        unsafe {
            libc::mprotect(
                page as *mut libc::c_void,
                page_size(),
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        RESOLVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return;
    }
    // SAFETY: resets this signal's action to the default, from a zeroed struct.
    unsafe {
        let default: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, &default, std::ptr::null_mut());
    }
}

/// A previous SIGSEGV handler that resolves a real fault: the process and the logger
/// must go on as if quelog were not there.
fn child_resolved_fault(path: &Path) {
    no_core_dumps();
    // SAFETY: maps one fresh anonymous page, no access allowed.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            page_size(),
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(page, libc::MAP_FAILED);
    GUARD_PAGE.store(page as usize, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: installs a handler that only calls mprotect and sigaction, from a
    // zeroed struct (empty mask).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = unprotect_guard_page as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        assert_eq!(
            libc::sigaction(libc::SIGSEGV, &action, std::ptr::null_mut()),
            0
        );
    }
    let held = Arc::new(AtomicBool::new(true));
    let guard = install_held(path, &held);
    for i in 0..100 {
        log::info!(target: "resolved", "record {i}");
    }
    // SAFETY: a real fault on the PROT_NONE page, which the handler resolves.
    unsafe { std::ptr::write_volatile(page.cast::<u8>(), 42) };
    // SAFETY: the page is readable now.
    assert_eq!(unsafe { std::ptr::read_volatile(page.cast::<u8>()) }, 42);
    assert_eq!(RESOLVED.load(std::sync::atomic::Ordering::Relaxed), 1);
    for i in 100..200 {
        log::info!(target: "resolved", "record {i}");
    }
    held.store(false, std::sync::atomic::Ordering::Release);
    guard.flush().expect("flush after a resolved fault");
    drop(guard);
}

/// Unbounded recursion, 4 KiB of stack a frame.
fn recurse(depth: u64) -> u64 {
    let buf = std::hint::black_box([depth as u8; 4096]);
    if std::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(depth + 1) + u64::from(buf[0])
}

/// A real stack overflow in a spawned thread: Rust's handler (installed before
/// quelog's) reports it and aborts; the abort drains.
fn child_stack_overflow(path: &Path) {
    no_core_dumps();
    let held = Arc::new(AtomicBool::new(true));
    std::mem::forget(install_held(path, &held));
    for i in 0..100 {
        log::info!(target: "crash", "before the overflow {i}");
    }
    let _ = std::thread::Builder::new()
        .name("overflow".into())
        .spawn(|| recurse(0))
        .unwrap()
        .join();
    unreachable!("still alive after the stack overflow");
}

extern "C" fn fault_with_null_write() {
    null_write();
}

extern "C" fn raise_segv() {
    // SAFETY: sends SIGSEGV to this thread, on purpose.
    unsafe { libc::raise(libc::SIGSEGV) };
}

/// A previous SIGSEGV handler (C, from the library the parent compiled) that
/// siglongjmp()s out of a fault, real (`NullWrite`) or raised (`Abort` here stands for
/// `raise(SIGSEGV)`): the logger must go on working afterwards.
fn child_longjmp(path: &Path, how: Fatal) {
    no_core_dumps();
    let lib = std::ffi::CString::new(std::env::var(LIB_ENV).expect("library path")).unwrap();
    // SAFETY: loads the test's own library, which has no initialisers.
    let handle = unsafe { libc::dlopen(lib.as_ptr(), libc::RTLD_NOW) };
    assert!(!handle.is_null(), "dlopen");
    let symbol = |name: &std::ffi::CStr| {
        // SAFETY: looks up a symbol in a live handle.
        let address = unsafe { libc::dlsym(handle, name.as_ptr()) };
        assert!(!address.is_null(), "dlsym {name:?}");
        address
    };
    // SAFETY: the C file defines these two functions with these signatures.
    let (install, recover) = unsafe {
        (
            std::mem::transmute::<*mut libc::c_void, extern "C" fn() -> libc::c_int>(symbol(
                c"install_segv_recovery",
            )),
            std::mem::transmute::<*mut libc::c_void, extern "C" fn(extern "C" fn()) -> libc::c_int>(
                symbol(c"recover_from_segv"),
            ),
        )
    };
    assert_eq!(install(), 0, "install_segv_recovery");
    let held = Arc::new(AtomicBool::new(true));
    let guard = install_held(path, &held);
    for i in 0..50 {
        log::info!(target: "longjmp", "record {i}");
    }
    let fault: extern "C" fn() = match how {
        Fatal::NullWrite => fault_with_null_write,
        Fatal::Abort => raise_segv,
    };
    assert_eq!(recover(fault), 1, "the C handler jumped back");
    held.store(false, std::sync::atomic::Ordering::Release);
    for i in 50..100 {
        log::info!(target: "longjmp", "record {i}");
    }
    guard
        .flush_timeout(Duration::from_secs(5))
        .expect("flush after the C handler jumped out");
    // What the drain wrote (after a raise) is counted as the listener counts.
    let stats = guard.stats();
    assert_eq!((stats.enqueued, stats.written), (100, 100), "{stats:?}");
    drop(guard);
}

/// Keeps lines in memory until `sync`, which appends them to the file: what reaches
/// the file went through a sync (a flush barrier or a stop, with `SyncPolicy::Never`).
struct SyncGated {
    path: PathBuf,
    pending: Vec<u8>,
}

impl Sink for SyncGated {
    fn write_batch(&mut self, batch: &[u8]) -> std::io::Result<()> {
        self.pending.extend_from_slice(batch);
        Ok(())
    }
    fn sync(&mut self) -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(&self.pending)?;
        file.sync_data()?;
        self.pending.clear();
        Ok(())
    }
}

fn install_gated(path: &Path, flush_on_panic: bool, handle_termination: bool) -> quelog::Guard {
    Builder::new()
        .sink(
            SyncGated {
                path: path.to_owned(),
                pending: Vec::new(),
            },
            LevelFilter::Info,
        )
        .sync(SyncPolicy::Never)
        .flush_on_panic(flush_on_panic)
        .handle_termination(handle_termination)
        .install()
        .unwrap()
}

fn log_fifty() {
    for i in 0..50 {
        log::info!(target: "child", "record {i}");
    }
}

fn child_panic(path: &Path, hook: bool, abort: bool) {
    no_core_dumps();
    if abort {
        // What `panic = "abort"` does after the hooks: abort, no unwinding. Installed
        // before quelog's, so it runs after it.
        std::panic::set_hook(Box::new(|_| std::process::abort()));
    }
    let guard = install_gated(path, hook, false);
    // No destructor of ours will run: only the panic hook can flush.
    std::mem::forget(guard);
    log_fifty();
    panic!("the child panics on purpose");
}

fn child_terminate(path: &Path, handle: bool) {
    let guard = install_gated(path, true, handle);
    log_fifty();
    println!("ready");
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let _ = &guard;
    }
}

enum Exit {
    Shutdown,
    Flush,
    Plain,
}

fn child_exit(path: &Path, how: Exit) {
    assert!(matches!(quelog::shutdown(), Err(Error::ListenerStopped)));
    let guard = install_gated(path, true, false);
    log_fifty();
    match how {
        Exit::Shutdown => {
            let first = quelog::shutdown().unwrap();
            assert_eq!(first.written, 50);
            let again = quelog::shutdown().unwrap();
            assert_eq!(again.written, 50, "idempotent");
            assert!(matches!(guard.flush(), Err(Error::ListenerStopped)));
        }
        Exit::Flush => guard.flush().unwrap(),
        Exit::Plain => {}
    }
    // Runs no destructor: the guard is never dropped.
    std::process::exit(7);
}

// ---------------------------------------------------------------------------------
// The parent side

fn spawn(scenario: &str, path: &Path, dir: &Path) -> Child {
    spawn_with(scenario, path, dir, 0)
}

fn spawn_with(scenario: &str, path: &Path, dir: &Path, pause_at: u64) -> Child {
    command(scenario, path, dir)
        .env("QUELOG_PAUSE_AT", pause_at.to_string())
        .spawn()
        .unwrap()
}

fn command(scenario: &str, path: &Path, dir: &Path) -> Command {
    let stderr = std::fs::File::create(dir.join(format!("{scenario}.stderr"))).unwrap();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, scenario)
        .env(PATH_ENV, path)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    command
}

/// Waits for the child at most `limit`, killing it if it takes longer.
fn wait(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs a scenario to its end; returns its status and the lines of the log file.
fn run(scenario: &str) -> (ExitStatus, Vec<String>, PathBuf) {
    run_with(scenario, 0)
}

fn run_with(scenario: &str, pause_at: u64) -> (ExitStatus, Vec<String>, PathBuf) {
    let dir = temp_dir(scenario);
    let path = dir.join("app.log");
    let mut child = spawn_with(scenario, &path, &dir, pause_at);
    let status = wait(&mut child, Duration::from_secs(30));
    (status, read_lines(&path), dir)
}

fn read_lines(path: &Path) -> Vec<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.lines().map(str::to_owned).collect(),
        Err(_) => Vec::new(),
    }
}

fn stderr_of(dir: &Path, scenario: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{scenario}.stderr"))).unwrap_or_default()
}

/// Splits a text line into (timestamp, level, thread, target, message), checking its
/// shape; `None` if it is not a whole, well-formed line.
fn parse(
    line: &str,
) -> Option<(
    chrono::DateTime<chrono::FixedOffset>,
    &str,
    &str,
    &str,
    &str,
)> {
    let (stamp, rest) = line.split_once(' ')?;
    let stamp = chrono::DateTime::parse_from_rfc3339(stamp).ok()?;
    let (level, rest) = rest.trim_start().split_once(" [")?;
    if !["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level) {
        return None;
    }
    let (thread, rest) = rest.split_once("] ")?;
    let (target, message) = rest.split_once(": ")?;
    Some((stamp, level, thread, target, message))
}

fn messages_with_target<'a>(lines: &'a [String], target: &str) -> Vec<&'a str> {
    lines
        .iter()
        .map(|l| parse(l).unwrap_or_else(|| panic!("malformed line {l:?}")))
        .filter(|(_, _, _, t, _)| *t == target)
        .map(|(_, _, _, _, m)| m)
        .collect()
}

/// A small xorshift generator: the kill moments.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_record_and_tears_no_line() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rng = Rng(seed);
    let iterations = 24;
    let started = Instant::now();
    let (mut acked_total, mut lines_total, mut torn_tails) = (0usize, 0usize, 0usize);
    for iteration in 0..iterations {
        let dir = temp_dir("sigkill");
        let path = dir.join("app.log");
        let mut child = spawn("sigkill", &path, &dir);
        let stdout = child.stdout.take().unwrap();
        let acks = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let acks = Arc::clone(&acks);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    // The harness's "test child ... " may share the first line.
                    if let Some((_, rest)) = line.split_once("ack ") {
                        let (t, i) = rest.split_once(' ').unwrap();
                        acks.lock()
                            .unwrap()
                            .push((t.parse::<usize>().unwrap(), i.parse::<u64>().unwrap()));
                    }
                }
            })
        };
        // Let it start (exec and install take a few ms), then kill it at a random
        // moment.
        std::thread::sleep(Duration::from_millis(30 + rng.below(150)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        reader.join().unwrap(); // EOF: every ack the child wrote is read
        let acks = acks.lock().unwrap().clone();

        let bytes = std::fs::read(&path).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let mut lines: Vec<&str> = text.split('\n').collect();
        // After the last '\n' there is nothing, or the one torn line allowed.
        let tail = lines.pop().unwrap_or_default();
        if !tail.is_empty() {
            torn_tails += 1;
        }
        let mut next = [0u64; 2];
        for line in &lines {
            let (_, level, _, target, message) = parse(line).unwrap_or_else(|| {
                panic!("iteration {iteration} (seed {seed}): torn or malformed line {line:?}")
            });
            assert_eq!((level, target), ("INFO", "crash"), "{line}");
            if let Some(rest) = message.strip_prefix("crash-test t=") {
                let (t, rest) = rest.split_once(" i=").unwrap();
                let (i, pad) = rest.split_once(" pad=").unwrap();
                let (t, i) = (t.parse::<usize>().unwrap(), i.parse::<u64>().unwrap());
                assert_eq!(pad.len(), 40 + t * 90, "{line}");
                // Each thread's records in order, once, without gaps.
                assert_eq!(i, next[t], "iteration {iteration}: thread {t}");
                next[t] += 1;
            } else {
                assert!(message.starts_with("noise "), "{line}");
            }
        }
        for (t, i) in &acks {
            assert!(
                *i < next[*t],
                "iteration {iteration} (seed {seed}): acknowledged t={t} i={i} is not in the \
                 file (it has {} records of thread {t})",
                next[*t]
            );
        }
        acked_total += acks.len();
        lines_total += lines.len();
        let _ = std::fs::remove_dir_all(&dir);
    }
    eprintln!(
        "SIGKILL: {iterations} iterations in {:.1?} (seed {seed}): {acked_total} acknowledged \
         records checked, {lines_total} whole lines checked, {torn_tails} torn last lines",
        started.elapsed()
    );
    assert!(
        acked_total >= iterations,
        "the children acknowledged too little for the test to mean anything"
    );
}

fn check_drained(scenario: &str, signal: i32, name: &str) -> usize {
    check_drained_with(scenario, signal, name, 0)
}

fn check_drained_with(scenario: &str, signal: i32, name: &str, pause_at: u64) -> usize {
    let (status, lines, dir) = run_with(scenario, pause_at);
    assert_eq!(
        status.signal(),
        Some(signal),
        "{status:?}\n{}",
        stderr_of(&dir, scenario)
    );
    let messages = messages_with_target(&lines, "crash");
    assert_eq!(messages.len(), 1000, "{}", stderr_of(&dir, scenario));
    for (i, message) in messages.iter().enumerate() {
        if i % 100 == 7 {
            let long = "L".repeat(3000);
            assert_eq!(*message, format!("crash-drain {i} {long}\\ttab"));
        } else {
            assert_eq!(*message, format!("crash-drain {i}"));
        }
    }
    // The hand-computed UTC timestamps agree with the clock.
    let now = chrono::Utc::now();
    for line in &lines {
        let (stamp, ..) = parse(line).unwrap();
        let age = now.signed_duration_since(stamp);
        assert!(age.num_seconds().abs() < 120, "{line}");
    }
    let notices = messages_with_target(&lines, "quelog");
    assert_eq!(notices.len(), 1, "{notices:?}");
    let prefix = format!("fatal signal {signal} ({name}): the crash handler wrote ");
    let written: usize = notices[0]
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix(" records left in the queue"))
        .unwrap_or_else(|| panic!("{}", notices[0]))
        .parse()
        .unwrap();
    written
}

#[test]
fn fatal_signals_drain_the_queue_into_the_file() {
    // The listener held back: all 1000 records are the crash handler's.
    assert_eq!(check_drained("drain-abort", libc::SIGABRT, "SIGABRT"), 1000);
    assert_eq!(check_drained("drain-segv", libc::SIGSEGV, "SIGSEGV"), 1000);
    // The listener running: each record written once, by one or the other, wherever
    // the crash meets it.
    let mut by_handler = Vec::new();
    for (n, pause_at) in [0u64, 20_300, 60_600, 100_850, 140_990, 30_999]
        .iter()
        .enumerate()
    {
        let (scenario, signal, name) = if n % 2 == 0 {
            ("drain-live", libc::SIGABRT, "SIGABRT")
        } else {
            ("drain-live-segv", libc::SIGSEGV, "SIGSEGV")
        };
        by_handler.push(check_drained_with(scenario, signal, name, *pause_at));
    }
    eprintln!(
        "crash drain with a live listener, records of 1000 written by the crash handler: \
         {by_handler:?}"
    );

    // Control: without the drain, the held-back records die with the process.
    let (status, lines, _) = run("no-drain-abort");
    assert_eq!(status.signal(), Some(libc::SIGABRT));
    assert!(messages_with_target(&lines, "crash").is_empty());
}

#[test]
fn a_panic_flushes_before_unwinding_or_aborting() {
    for (scenario, signal) in [("panic-unwind", None), ("panic-abort", Some(libc::SIGABRT))] {
        let (status, lines, dir) = run(scenario);
        assert_eq!(status.signal(), signal, "{scenario}: {status:?}");
        if signal.is_none() {
            assert_eq!(status.code(), Some(101), "the test harness saw the panic");
        }
        let records = messages_with_target(&lines, "child");
        let want: Vec<String> = (0..50).map(|i| format!("record {i}")).collect();
        assert_eq!(records, want, "{scenario}: {}", stderr_of(&dir, scenario));
        let panics = messages_with_target(&lines, "panic");
        assert_eq!(panics.len(), 1, "{scenario}: {lines:?}");
        assert!(
            panics[0].contains("the child panics on purpose"),
            "{}",
            panics[0]
        );
        assert!(lines
            .iter()
            .any(|l| l.contains(" ERROR [") && l.contains("] panic: ")));
    }
    // Control: without the hook, nothing synced the records before the end.
    let (status, lines, _) = run("panic-unwind-no-hook");
    assert_eq!(status.code(), Some(101));
    assert!(lines.is_empty(), "{lines:?}");
}

#[test]
fn sigterm_and_sigint_drain_sync_and_end_by_the_signal() {
    for (scenario, signal, name) in [
        ("terminate", libc::SIGTERM, "SIGTERM"),
        ("terminate", libc::SIGINT, "SIGINT"),
        ("terminate-unhandled", libc::SIGTERM, "SIGTERM"),
    ] {
        let dir = temp_dir(scenario);
        let path = dir.join("app.log");
        let mut child = spawn(scenario, &path, &dir);
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (ready_tx, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                // The harness's "test child ... " may share the line.
                if line.is_ok_and(|l| l.contains("ready")) {
                    let _ = ready_tx.send(());
                }
            }
        });
        if ready.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{scenario}: the child never said ready");
        }
        // SAFETY: sends a signal to our own child, which is alive (not yet waited for).
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let status = wait(&mut child, Duration::from_secs(20));
        assert_eq!(
            status.signal(),
            Some(signal),
            "{scenario} {name}: {status:?}"
        );
        let lines = read_lines(&path);
        if scenario == "terminate-unhandled" {
            // Control: the default action kills at once; nothing was synced.
            assert!(lines.is_empty(), "{lines:?}");
            continue;
        }
        let records = messages_with_target(&lines, "child");
        let want: Vec<String> = (0..50).map(|i| format!("record {i}")).collect();
        assert_eq!(records, want, "{name}: {}", stderr_of(&dir, scenario));
        let notices = messages_with_target(&lines, "quelog");
        assert_eq!(
            notices,
            [format!(
                "received {name}: draining the log, then terminating"
            )]
        );
        eprintln!("{name}: status {status:?} (a shell shows {})", 128 + signal);
    }
}

#[test]
fn process_exit_after_shutdown_or_flush_keeps_the_records() {
    for scenario in ["exit-shutdown", "exit-flush", "exit-plain"] {
        let (status, lines, dir) = run(scenario);
        assert_eq!(
            status.code(),
            Some(7),
            "{scenario}: {status:?} {}",
            stderr_of(&dir, scenario)
        );
        let records = messages_with_target(&lines, "child");
        if scenario == "exit-plain" {
            // Control: `exit` runs no destructor, the guard never stopped the logger.
            assert!(records.is_empty(), "{records:?}");
        } else {
            let want: Vec<String> = (0..50).map(|i| format!("record {i}")).collect();
            assert_eq!(records, want, "{scenario}");
        }
    }
}

/// The crash handler's own line: `(signal, records it says it wrote)`.
fn notice(lines: &[String]) -> Vec<(i32, usize)> {
    messages_with_target(lines, "quelog")
        .iter()
        .map(|m| {
            let rest = m
                .strip_prefix("fatal signal ")
                .unwrap_or_else(|| panic!("{m}"));
            let (signal, rest) = rest.split_once(' ').unwrap();
            let (_, count) = rest
                .split_once("): the crash handler wrote ")
                .unwrap_or_else(|| panic!("{m}"));
            let count = count
                .strip_suffix(" records left in the queue")
                .unwrap_or_else(|| panic!("{m}"));
            (signal.parse().unwrap(), count.parse().unwrap())
        })
        .collect()
}

#[test]
fn the_drain_ends_while_other_threads_keep_logging() {
    let scenario = "drain-chase";
    let dir = temp_dir(scenario);
    let path = dir.join("app.log");
    let started = Instant::now();
    let mut child = spawn(scenario, &path, &dir);
    let status = wait(&mut child, Duration::from_secs(10));
    let took = started.elapsed();
    assert_eq!(
        status.signal(),
        Some(libc::SIGSEGV),
        "{status:?}\n{}",
        stderr_of(&dir, scenario)
    );
    let lines = read_lines(&path);
    // The listener was held back: every line is the crash handler's, and its count
    // says exactly how many records it wrote.
    let records = messages_with_target(&lines, "chase");
    let notices = notice(&lines);
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0], (libc::SIGSEGV, records.len()));
    assert!(
        lines.last().unwrap().contains("] quelog: fatal signal"),
        "{:?}",
        lines.last()
    );
    assert_eq!(lines.len(), records.len() + 1);
    // Each thread's records in order, once each.
    let mut last = [None::<u64>; 3];
    for message in &records {
        let rest = message.strip_prefix("chase t=").unwrap();
        let (t, i) = rest.split_once(" i=").unwrap();
        let (t, i): (usize, u64) = (t.parse().unwrap(), i.parse().unwrap());
        assert!(
            last[t].is_none_or(|l| l < i),
            "t={t}: {i} after {:?}",
            last[t]
        );
        last[t] = Some(i);
    }
    assert!(
        records.len() > 1000,
        "the ring was not full: {}",
        records.len()
    );
    eprintln!(
        "SIGSEGV with three threads logging: the drain wrote {} records, the child died \
         {took:.1?} after its start",
        records.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_fault_the_previous_handler_resolves_leaves_process_and_logger_alone() {
    let (status, lines, dir) = run("resolved-fault");
    assert_eq!(
        status.code(),
        Some(0),
        "{status:?}\n{}",
        stderr_of(&dir, "resolved-fault")
    );
    let records = messages_with_target(&lines, "resolved");
    let want: Vec<String> = (0..200).map(|i| format!("record {i}")).collect();
    assert_eq!(records, want);
    assert!(
        notice(&lines).is_empty(),
        "the crash handler drained: {lines:?}"
    );
}

#[test]
fn a_stack_overflow_is_reported_by_rust_and_drained_by_the_abort() {
    let (status, lines, dir) = run("stack-overflow");
    let stderr = stderr_of(&dir, "stack-overflow");
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}\n{stderr}");
    assert!(
        stderr.contains("thread 'overflow'") && stderr.contains("has overflowed its stack"),
        "{stderr}"
    );
    let records = messages_with_target(&lines, "crash");
    let want: Vec<String> = (0..100)
        .map(|i| format!("before the overflow {i}"))
        .collect();
    assert_eq!(records, want);
    assert_eq!(notice(&lines), [(libc::SIGABRT, 100)]);
}

/// Compiles the C side of the longjmp test; `None` (skip) without a C compiler.
fn segv_recovery_library() -> Option<PathBuf> {
    const SOURCE: &str = r#"
#include <setjmp.h>
#include <signal.h>
#include <string.h>

static sigjmp_buf recovery_point;
static volatile sig_atomic_t armed;

static void on_segv(int signal, siginfo_t *info, void *context) {
    (void)info;
    (void)context;
    if (armed) {
        armed = 0;
        siglongjmp(recovery_point, 1);
    }
    /* Not a fault we expected: let it be fatal. */
    struct sigaction fatal;
    memset(&fatal, 0, sizeof fatal);
    fatal.sa_handler = SIG_DFL;
    sigaction(signal, &fatal, 0);
}

int install_segv_recovery(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_segv;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    return sigaction(SIGSEGV, &action, 0);
}

/* Runs f; returns 1 if a SIGSEGV in it was recovered from with siglongjmp. */
int recover_from_segv(void (*f)(void)) {
    if (sigsetjmp(recovery_point, 1)) {
        return 1;
    }
    armed = 1;
    f();
    armed = 0;
    return 0;
}
"#;
    let dir = temp_dir("segv-recovery");
    let source = dir.join("segv_recovery.c");
    let library = dir.join("libsegv_recovery.so");
    std::fs::write(&source, SOURCE).unwrap();
    let compiled = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&library)
        .arg(&source)
        .status();
    match compiled {
        Ok(status) => {
            assert!(status.success(), "cc failed: {status:?}");
            Some(library)
        }
        Err(e) if std::env::var_os("CI").is_some() => panic!("no C compiler on CI: {e}"),
        Err(_) => {
            eprintln!("skipped: no C compiler");
            None
        }
    }
}

#[test]
fn a_previous_handler_that_longjmps_out_leaves_the_logger_working() {
    let Some(library) = segv_recovery_library() else {
        return;
    };
    for scenario in ["longjmp-fault", "longjmp-raise"] {
        let dir = temp_dir(scenario);
        let path = dir.join("app.log");
        let mut child = command(scenario, &path, &dir)
            .env(LIB_ENV, &library)
            .spawn()
            .unwrap();
        let status = wait(&mut child, Duration::from_secs(30));
        assert_eq!(
            status.code(),
            Some(0),
            "{scenario}: {status:?}\n{}",
            stderr_of(&dir, scenario)
        );
        let lines = read_lines(&path);
        let records = messages_with_target(&lines, "longjmp");
        let want: Vec<String> = (0..100).map(|i| format!("record {i}")).collect();
        assert_eq!(records, want, "{scenario}");
        let notices = notice(&lines);
        if scenario == "longjmp-fault" {
            // A real fault: the previous handler ran first and jumped out; nothing of
            // the ring was touched.
            assert!(notices.is_empty(), "{notices:?}");
        } else {
            // Raised: fatal as far as quelog can tell, drained first (the 50 records
            // logged before, the listener being held), then the previous handler
            // jumped out and the listener went on after the drain.
            assert_eq!(notices, [(libc::SIGSEGV, 50)]);
            let at = lines.iter().position(|l| l.contains("] quelog: ")).unwrap();
            assert_eq!(at, 50, "{lines:?}");
        }
    }
}
