//! fork(): the child has no listener thread. Nothing in it may wait for one (flush,
//! guard drop, stop, `Overflow::Block`), and its records must still reach the file;
//! the parent goes on as before.
//!
//! The global `log` logger can be installed once per process, so every test runs its
//! scenario in a child process (this binary again, under a watchdog, see
//! `support/child.rs`). That child forks a grandchild with `libc::fork` and gives it a
//! few seconds: a grandchild that does not exit by then is killed and the test fails.
//! The grandchild reports a failure on standard error and with its exit status, and
//! ends with `libc::_exit` (no destructors, no atexit handlers of the test harness).

mod support;

use support::common::lines;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quelog::test_hooks::ListenerHooks;
use quelog::{Builder, Overflow};
use support::storm::child::{self, Run, Watch};

// ---------------------------------------------------------------------------------
// A counting allocator: the forked child's log calls allocate nothing either.

struct CountingAllocator;

thread_local! {
    /// This thread is in a measured window.
    static MEASURING: Cell<bool> = const { Cell::new(false) };
}

/// Heap calls made on a thread in a measured window.
static MEASURED: AtomicU64 = AtomicU64::new(0);

fn note() {
    if MEASURING.try_with(Cell::get).unwrap_or(false) {
        MEASURED.fetch_add(1, Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches
// only an atomic and a const thread-local, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Heap calls `f` made on this thread.
fn heap_calls(f: impl FnOnce()) -> u64 {
    let before = MEASURED.load(Relaxed);
    MEASURING.with(|m| m.set(true));
    f();
    MEASURING.with(|m| m.set(false));
    MEASURED.load(Relaxed) - before
}

// ---------------------------------------------------------------------------------
// Child processes

/// How long a forked grandchild may take before it counts as hung.
const GRANDCHILD_LIMIT: Duration = Duration::from_secs(5);

/// Runs `scenario` in a child process when called from the test `test_name`, and
/// returns what the child did (after asserting it succeeded); in the child, runs
/// `scenario` and returns `None`.
fn in_child(test_name: &str, scenario: impl FnOnce()) -> Option<Run> {
    let watch = Watch {
        stall: Duration::from_secs(30),
        total: Duration::from_secs(90),
        stacks: true,
    };
    child::in_child(test_name, None, watch, scenario)
}

/// `fork(2)`; panics if it fails.
fn fork() -> libc::pid_t {
    // SAFETY: fork has no memory-safety preconditions; the child only runs code that
    // is fine after a fork of a multi-threaded process (quelog's direct path, the
    // test's checks) and ends with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    pid
}

/// In the forked grandchild: runs `f` and ends the process with its status (101 if it
/// panicked), without running any destructor or atexit handler.
fn grandchild(f: impl FnOnce() -> i32) -> ! {
    let code = std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or(101);
    // SAFETY: `_exit` ends the process at once; async-signal-safe.
    unsafe { libc::_exit(code) }
}

/// A failure in the grandchild: says why on standard error, returns the status.
fn fail(code: i32, why: impl std::fmt::Display) -> i32 {
    eprintln!("forked child failed ({code}): {why}");
    code
}

fn getpid() -> libc::pid_t {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// Waits for the grandchild `pid` up to `limit`; kills it and returns `None` if it
/// has not ended by then.
fn wait_for(pid: libc::pid_t, limit: Duration) -> Option<libc::c_int> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waits for our own child, writing its status into a live local.
        let reaped = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if reaped == pid {
            return Some(status);
        }
        assert!(reaped >= 0, "waitpid: {}", std::io::Error::last_os_error());
        if start.elapsed() > limit {
            // SAFETY: kills and reaps our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Asserts that the grandchild `pid` exits with status 0 within [`GRANDCHILD_LIMIT`].
fn expect_clean_exit(pid: libc::pid_t, what: &str) {
    let started = Instant::now();
    let Some(status) = wait_for(pid, GRANDCHILD_LIMIT) else {
        panic!("{what}: the forked child {pid} hung; killed after {GRANDCHILD_LIMIT:?}");
    };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{what}: the forked child {pid} failed: status {status:#x} (exit {}), see its stderr",
        libc::WEXITSTATUS(status)
    );
    println!(
        "{what}: the forked child exited in {:.2?}",
        started.elapsed()
    );
}

fn log_path(name: &str) -> PathBuf {
    support::common::temp_log("fork", name)
}

/// The lines that end with `message`.
fn ending_with<'a>(lines: &'a [String], message: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter(|l| l.ends_with(message))
        .map(String::as_str)
        .collect()
}

/// The one line that ends with `message`; panics (showing the file) if there is not
/// exactly one.
fn exactly_once<'a>(lines: &'a [String], message: &str) -> &'a str {
    let found = ending_with(lines, message);
    assert_eq!(
        found.len(),
        1,
        "{} lines end with {message:?}; the file:\n{}",
        found.len(),
        lines.join("\n")
    );
    found[0]
}

fn install_global(handler: &quelog::QueueHandler) {
    log::set_boxed_logger(Box::new(handler.clone())).expect("first logger of the process");
    log::set_max_level(handler.level());
}

// ---------------------------------------------------------------------------------
// (a) install, log, fork: the child logs, flushes and drops the guard

#[test]
fn install_then_fork_the_child_logs_flushes_and_exits() {
    in_child("install_then_fork_the_child_logs_flushes_and_exits", || {
        let path = log_path("a");
        let guard = Builder::new().file(&path).install().expect("install");
        log::info!("parent before the fork");
        guard.flush().expect("parent flush before the fork");

        let pid = fork();
        if pid == 0 {
            grandchild(move || {
                let me = getpid();
                let before = guard.stats();
                let started = Instant::now();
                let heap = heap_calls(|| log::info!("from the forked child pid={me}"));
                if heap != 0 {
                    return fail(2, format!("the log call made {heap} heap calls"));
                }
                // Written synchronously: counted at once.
                let after = guard.stats();
                if after.enqueued != before.enqueued + 1 || after.written != before.written + 1 {
                    return fail(3, format!("counters before {before:?}, after {after:?}"));
                }
                if let Err(e) = guard.flush() {
                    return fail(4, format!("flush: {e}"));
                }
                drop(guard);
                if started.elapsed() > Duration::from_secs(2) {
                    return fail(5, format!("took {:?}", started.elapsed()));
                }
                0
            });
        }
        expect_clean_exit(pid, "install, log, fork");

        log::info!("parent after the fork");
        guard.flush().expect("parent flush after the fork");
        let lines = lines(&path);
        exactly_once(&lines, "parent before the fork");
        exactly_once(&lines, "parent after the fork");
        let child = exactly_once(&lines, &format!("from the forked child pid={pid}"));
        assert!(
            child.contains(&format!(" [{pid}] ")),
            "the child's record carries its own pid as thread id: {child}"
        );
        assert!(child.contains("  INFO ["), "{child}");

        let stats = guard.stop().expect("parent stop");
        assert_eq!(stats.dropped.total(), 0, "{stats:?}");
        assert_eq!(stats.enqueued, 2, "the parent's own records: {stats:?}");
        assert_eq!(stats.written, 2, "{stats:?}");
    });
}

// ---------------------------------------------------------------------------------
// (b) the recommended order: fork first, then install

#[test]
fn fork_then_install_the_child_gets_a_normal_listener() {
    in_child("fork_then_install_the_child_gets_a_normal_listener", || {
        let path = log_path("b");
        let pid = fork();
        if pid == 0 {
            let path = path.clone();
            grandchild(move || {
                let guard = match Builder::new().file(&path).install() {
                    Ok(guard) => guard,
                    Err(e) => return fail(2, format!("install: {e}")),
                };
                for i in 0..100 {
                    log::info!("child record {i}");
                }
                if let Err(e) = guard.flush() {
                    return fail(3, format!("flush: {e}"));
                }
                let listener = std::fs::read_dir("/proc/self/task")
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|task| {
                        std::fs::read_to_string(task.path().join("comm"))
                            .is_ok_and(|name| name.trim_end() == "quelog-listener")
                    });
                if !listener {
                    return fail(4, "no quelog-listener thread in the child");
                }
                match guard.stop() {
                    Ok(stats) if stats.written == 100 && stats.enqueued == 100 => 0,
                    Ok(stats) => fail(5, format!("{stats:?}")),
                    Err(e) => fail(6, format!("stop: {e}")),
                }
            });
        }
        expect_clean_exit(pid, "fork, then install");
        let lines = lines(&path);
        for i in 0..100 {
            let line = exactly_once(&lines, &format!("child record {i}"));
            // The listener writes `[name/tid]`; the direct path of a forked child
            // writes `[tid]` alone.
            assert!(line.contains(&format!("/{pid}] ")), "{line}");
        }

        // The parent, which never installed before the fork, installs now as usual.
        let parent_path = log_path("b-parent");
        let guard = Builder::new()
            .file(&parent_path)
            .install()
            .expect("install");
        log::info!("parent after the child");
        guard.flush().expect("flush");
        exactly_once(&self::lines(&parent_path), "parent after the child");
    });
}

// ---------------------------------------------------------------------------------
// (c) fork while other threads log hard

#[test]
fn fork_while_other_threads_log_hard_never_hangs_the_child() {
    in_child(
        "fork_while_other_threads_log_hard_never_hangs_the_child",
        || {
            let path = log_path("c");
            let (handler, listener) = Builder::new()
                .file(&path)
                .capacity(16 << 10)
                .build()
                .expect("build");
            install_global(&handler);
            // In an Option, so a forked child can drop it (the parent keeps its own).
            let mut listener = Some(listener);
            let stop = AtomicBool::new(false);
            let rounds = 16;
            std::thread::scope(|s| {
                for t in 0..3 {
                    let stop = &stop;
                    s.spawn(move || {
                        let mut i = 0u64;
                        while !stop.load(Relaxed) {
                            log::info!("hammer t={t} i={i} and some padding to take two slots");
                            i += 1;
                        }
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
                let mut held = None;
                for round in 0..rounds {
                    if round == rounds / 2 {
                        // From here on a claim stays open across the forks: the listener
                        // stops at it and the ring fills up.
                        let until = Instant::now() + Duration::from_secs(2);
                        while held.is_none() && Instant::now() < until {
                            held = quelog::test_hooks::hold_claim(&handler, 100);
                        }
                        println!("holding a claim: {}", held.is_some());
                    }
                    let pid = fork();
                    if pid == 0 {
                        grandchild(|| {
                            let me = getpid();
                            let started = Instant::now();
                            log::warn!("forked round={round} pid={me}");
                            let Some(listener) = listener.take() else {
                                return fail(4, "no listener");
                            };
                            if let Err(e) = listener.flush() {
                                return fail(2, format!("flush: {e}"));
                            }
                            // QueueListener's Drop: must not join the parent's thread.
                            drop(listener);
                            if started.elapsed() > Duration::from_secs(2) {
                                return fail(3, format!("took {:?}", started.elapsed()));
                            }
                            0
                        });
                    }
                    expect_clean_exit(pid, &format!("round {round}"));
                    std::thread::sleep(Duration::from_millis(10));
                }
                drop(held);
                stop.store(true, Relaxed);
            });
            let listener = listener.take().expect("the parent's listener");
            log::warn!("parent after the storm");
            // The storm overflowed the ring: the barrier says so, after writing the rest.
            match listener.flush() {
                Ok(()) | Err(quelog::Error::Dropped(_)) => {}
                Err(error) => panic!("parent flush: {error}"),
            }
            let stats = listener.stop().expect("parent stop");
            let lines = lines(&path);
            exactly_once(&lines, "parent after the storm");
            let pid_of = |line: &str| line.rsplit("pid=").next().unwrap_or_default().to_owned();
            for round in 0..rounds {
                let found: Vec<&String> = lines
                    .iter()
                    .filter(|l| l.contains(&format!("forked round={round} pid=")))
                    .collect();
                assert_eq!(found.len(), 1, "round {round}: {found:?}");
                let pid = pid_of(found[0]);
                assert!(found[0].contains(&format!(" [{pid}] ")), "{}", found[0]);
            }
            assert_eq!(
                stats.enqueued,
                stats.written + stats.filtered + stats.lost + stats.abandoned,
                "{stats:?}"
            );
            println!("parent: {stats:?}");
        },
    );
}

// ---------------------------------------------------------------------------------
// (d) Overflow::Block with a full ring

#[test]
fn block_mode_with_a_full_ring_never_waits_in_the_child() {
    in_child(
        "block_mode_with_a_full_ring_never_waits_in_the_child",
        || {
            let path = log_path("d");
            let hold = Arc::new(AtomicBool::new(false));
            let (handler, listener) = Builder::new()
                .file(&path)
                .capacity(1024)
                .overflow(Overflow::Block {
                    timeout: Duration::from_secs(3600),
                })
                .listener_hooks(ListenerHooks {
                    hold: Some(Arc::clone(&hold)),
                    ..ListenerHooks::default()
                })
                .build()
                .expect("build");
            install_global(&handler);
            log::info!("parent before the fork");
            listener.flush().expect("parent flush");
            // Fill the ring: the listener takes nothing, and claims nobody publishes
            // take every slot.
            hold.store(true, Relaxed);
            let slots = quelog::test_hooks::ring_slots(&handler);
            let held: Vec<_> = (0..slots)
                .map_while(|_| quelog::test_hooks::hold_claim(&handler, 1))
                .collect();
            assert!(quelog::test_hooks::hold_claim(&handler, 1).is_none());
            println!("holding {} of {slots} slots", held.len());

            let pid = fork();
            if pid == 0 {
                grandchild(|| {
                    let before = listener.stats();
                    let started = Instant::now();
                    for i in 0..50 {
                        log::info!("blocked child record {i}");
                    }
                    if started.elapsed() > Duration::from_secs(2) {
                        return fail(2, format!("50 log calls took {:?}", started.elapsed()));
                    }
                    if let Err(e) = listener.flush() {
                        return fail(3, format!("flush: {e}"));
                    }
                    match listener.stop() {
                        Ok(after) if after.written == before.written + 50 => 0,
                        Ok(after) => fail(4, format!("before {before:?}, after {after:?}")),
                        Err(e) => fail(5, format!("stop: {e}")),
                    }
                });
            }
            expect_clean_exit(pid, "Block with a full ring");

            drop(held);
            hold.store(false, Relaxed);
            log::info!("parent after the fork");
            listener.flush().expect("parent flush after the fork");
            let stats = listener.stop().expect("parent stop");
            let lines = lines(&path);
            exactly_once(&lines, "parent before the fork");
            exactly_once(&lines, "parent after the fork");
            for i in 0..50 {
                exactly_once(&lines, &format!("blocked child record {i}"));
            }
            assert_eq!(stats.dropped.total(), 0, "{stats:?}");
            assert_eq!(stats.written, 2, "{stats:?}");
        },
    );
}

// ---------------------------------------------------------------------------------
// (e) shutdown, Guard::stop and SIGTERM in the child

#[test]
fn stop_shutdown_and_sigterm_in_the_child() {
    let run = in_child("stop_shutdown_and_sigterm_in_the_child", || {
        let path = log_path("e");
        let guard = Builder::new()
            .file(&path)
            .handle_termination(true)
            .install()
            .expect("install");
        log::info!("parent before the fork");
        guard.flush().expect("parent flush");

        let pid = fork();
        if pid == 0 {
            grandchild(move || {
                log::info!("child before its stop");
                match quelog::shutdown() {
                    Ok(stats) if stats.written >= 2 => {}
                    Ok(stats) => return fail(2, format!("shutdown: {stats:?}")),
                    Err(e) => return fail(3, format!("shutdown: {e}")),
                }
                // Idempotent, as in the parent.
                if let Err(e) = guard.stop() {
                    return fail(4, format!("Guard::stop after shutdown: {e}"));
                }
                // Stopped: to standard error, as after a stop in the parent.
                log::info!("child after its stop");
                // The signal thread does not exist here: SIGTERM must end the child,
                // not vanish into signal-hook's pipe.
                // SAFETY: raises a signal in this process.
                unsafe { libc::raise(libc::SIGTERM) };
                std::thread::sleep(Duration::from_secs(2));
                fail(5, "SIGTERM was swallowed")
            });
        }
        let Some(status) = wait_for(pid, GRANDCHILD_LIMIT) else {
            panic!("the forked child {pid} hung; killed after {GRANDCHILD_LIMIT:?}");
        };
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGTERM,
            "the forked child should end by SIGTERM: status {status:#x} (exit {})",
            libc::WEXITSTATUS(status)
        );

        log::info!("parent after the fork");
        let stats = guard.stop().expect("parent stop");
        let lines = lines(&path);
        exactly_once(&lines, "parent before the fork");
        exactly_once(&lines, "parent after the fork");
        exactly_once(&lines, "child before its stop");
        assert!(ending_with(&lines, "child after its stop").is_empty());
        assert_eq!(stats.written, 2, "{stats:?}");
    });
    if let Some(run) = run {
        assert!(
            run.stderr
                .contains("quelog (stopped) INFO fork: child after its stop"),
            "the child's record after its stop goes to stderr:\n{}",
            run.describe()
        );
    }
}
