//! Signal storms: quelog survives them; the naive designs of `../shared/DESIGN.md`
//! deadlock under the very same load and watchdog (negative controls).
//!
//! Each storm runs in a child process of this binary (see `support/storm.rs`). The
//! binary has `harness = false`: the child's `main` must block the storm's signals
//! before any other thread exists, so that the process-directed `SIGALRM` of
//! `setitimer` can only land on producer threads; libtest's main thread would catch
//! them all. It prints libtest-style lines and a `test result:` summary.
//!
//! `QUELOG_STORM_SECS` lengthens the quelog storms for a soak (default 3 seconds).

mod support;

use std::time::{Duration, Instant};

use support::storm::{self, Backend, Storm};

/// Attempts a negative control gets to deadlock before the test says the harness lost
/// its teeth. The blocking-receiver control outlives one 8-second attempt about one time
/// in six (it deadlocked after 0 to 7.4 s in the runs measured); five attempts make a
/// false alarm a one-in-10^4 event or rarer, and cost time only when they are needed.
const CONTROL_ATTEMPTS: usize = 5;

/// How long one attempt of a control may run without deadlocking.
const CONTROL_BUDGET: Duration = Duration::from_secs(8);

fn quelog_load() -> Duration {
    let secs = std::env::var("QUELOG_STORM_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs.clamp(0.5, 3600.0))
}

fn survive(storm: Storm) -> Result<String, String> {
    let survived = storm::expect_survival(&storm)?;
    Ok(format!(
        "{} producers, {:.1?}: {} signals handled ({} SIGALRM, {} SIGUSR1; {} pthread_kill sent), \
         attempted {} = enqueued {} + dropped {} (queue full {}, contended {}, after stop {}); \
         written {} = lines in the file {}; truncated {}; 0 handlers on the listener",
        storm.producers,
        storm.load,
        survived.get("signals"),
        survived.get("alrm"),
        survived.get("usr1"),
        survived.get("sent"),
        survived.get("attempted"),
        survived.get("enqueued"),
        survived.get("dropped"),
        survived.get("queue_full"),
        survived.get("contended"),
        survived.get("after_stop"),
        survived.get("written"),
        survived.get("lines"),
        survived.get("truncated"),
    ))
}

/// The default ring (4 MiB), two producers: the storm of the issue.
fn quelog_survives_the_storm() -> Result<String, String> {
    let mut storm = Storm::new(Backend::Quelog);
    storm.load = quelog_load();
    survive(storm)
}

/// The smallest ring (16 slots) and four producers: the ring is full nearly all the
/// time, and signal handlers keep landing on producers that hold a claim, so wraps onto
/// interrupted slots happen for real. Every drop must be counted, nothing may spin.
fn quelog_survives_the_storm_with_a_tiny_ring() -> Result<String, String> {
    let mut storm = Storm::new(Backend::Quelog);
    storm.load = quelog_load();
    storm.producers = 4;
    storm.ring_bytes = 1024;
    survive(storm)
}

/// `Overflow::Block`: ordinary calls may wait for room (20 ms at most), but a handler
/// that interrupted a log call must not, or it would wait for its own thread.
fn quelog_survives_the_storm_in_block_mode() -> Result<String, String> {
    let mut storm = Storm::new(Backend::Quelog);
    storm.load = quelog_load();
    storm.producers = 3;
    storm.ring_bytes = 64 << 10;
    storm.block_ms = 20;
    survive(storm)
}

fn control(backend: Backend) -> Result<String, String> {
    let mut storm = Storm::new(backend);
    storm.load = CONTROL_BUDGET;
    let caught = storm::expect_deadlock(&storm, CONTROL_ATTEMPTS, true)?;
    let mut text = format!(
        "deadlocked as expected (attempt {}/{CONTROL_ATTEMPTS}): last progress of the slowest producer {:.2?} into the storm, \
         {} signals handled or stuck, {} log calls; watchdog fired after {:.2?}",
        caught.attempt, caught.after, caught.signals, caught.calls, caught.run.elapsed,
    );
    for miss in &caught.misses {
        text.push_str(&format!("\n    earlier: {miss}"));
    }
    if let Some(story) = caught.story.first() {
        text.push_str("\n    where (gdb, innermost first):\n    ");
        text.push_str(&story.replace('\n', "\n    "));
    } else if let Some(stacks) = &caught.run.stacks {
        match stacks.lines().next() {
            Some(why) if why.starts_with("(no thread stacks") => {
                text.push_str(&format!("\n    {why}"));
            }
            _ => text.push_str("\n    (gdb found no thread inside a signal handler)"),
        }
    }
    Ok(text)
}

/// Negative control: a `Mutex<Vec<String>>` logger. A handler that interrupts a thread
/// holding the mutex waits for it forever (or inside malloc).
fn control_mutex_logger_deadlocks() -> Result<String, String> {
    control(Backend::Mutex)
}

/// Negative control: crossbeam-channel `bounded` with `try_send` and a receiver blocked
/// in `recv()`: `try_send` -> `SyncWaker::notify` takes a mutex, and a handler on the
/// thread holding it waits forever.
fn control_crossbeam_blocking_receiver_deadlocks() -> Result<String, String> {
    control(Backend::ChannelBlocking)
}

/// Negative control: the same channel, receiver polling `try_recv` (no waker mutex). A
/// producer interrupted between its claim and its stamp stalls the ring; once another
/// producer fills it, everyone, the handler on the interrupted thread included, snoozes
/// in `start_send` for a stamp only the interrupted thread can write.
fn control_crossbeam_polling_receiver_hangs() -> Result<String, String> {
    control(Backend::ChannelPolling)
}

/// The failure path of the controls works: a "control" that does not deadlock (quelog
/// itself, for one short attempt) makes `expect_deadlock` fail saying the harness lost
/// its teeth, rather than pass.
fn harness_fails_when_a_control_survives() -> Result<String, String> {
    let mut storm = Storm::new(Backend::Quelog);
    storm.load = Duration::from_secs(1);
    match storm::expect_deadlock(&storm, 1, false) {
        Err(why) if why.contains("lost its teeth") => {
            Ok("a surviving control is reported as a failure".to_owned())
        }
        Err(why) => Err(format!("failed for another reason: {why}")),
        Ok(caught) => Err(format!(
            "quelog was reported deadlocked:\n{}",
            caught.run.describe()
        )),
    }
}

type Test = (&'static str, fn() -> Result<String, String>);

const TESTS: &[Test] = &[
    ("quelog_survives_the_storm", quelog_survives_the_storm),
    (
        "quelog_survives_the_storm_with_a_tiny_ring",
        quelog_survives_the_storm_with_a_tiny_ring,
    ),
    (
        "quelog_survives_the_storm_in_block_mode",
        quelog_survives_the_storm_in_block_mode,
    ),
    (
        "control_mutex_logger_deadlocks",
        control_mutex_logger_deadlocks,
    ),
    (
        "control_crossbeam_blocking_receiver_deadlocks",
        control_crossbeam_blocking_receiver_deadlocks,
    ),
    (
        "control_crossbeam_polling_receiver_hangs",
        control_crossbeam_polling_receiver_hangs,
    ),
    (
        "harness_fails_when_a_control_survives",
        harness_fails_when_a_control_survives,
    ),
];

fn main() {
    if let Some(spec) = support::storm::child::scenario() {
        storm::child_main(&spec);
    }

    // A small subset of libtest's command line: name filters, --skip, --exact, --list.
    let mut filters = Vec::new();
    let mut skips = Vec::new();
    let mut exact = false;
    let mut list = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--list" => list = true,
            "--exact" => exact = true,
            "--skip" => skips.extend(args.next()),
            "--test-threads" | "--color" | "--format" | "--logfile" | "-Z" => {
                let _ = args.next();
            }
            flag if flag.starts_with('-') => {}
            filter => filters.push(filter.to_owned()),
        }
    }
    let matches = |name: &str, pattern: &str| {
        if exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    };
    let selected: Vec<&Test> = TESTS
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| matches(name, f)))
        .filter(|(name, _)| !skips.iter().any(|s| matches(name, s)))
        .collect();
    if list {
        for (name, _) in &selected {
            println!("{name}: test");
        }
        return;
    }

    let start = Instant::now();
    println!("\nrunning {} tests", selected.len());
    let mut failed = Vec::new();
    for (name, test) in &selected {
        let begun = Instant::now();
        let outcome =
            std::panic::catch_unwind(test).unwrap_or_else(|_| Err("the test panicked".to_owned()));
        match outcome {
            Ok(note) => println!("test {name} ... ok ({:.1?})\n    {note}", begun.elapsed()),
            Err(why) => {
                println!("test {name} ... FAILED ({:.1?})", begun.elapsed());
                failed.push((name, why));
            }
        }
    }
    for (name, why) in &failed {
        println!("\n---- {name} ----\n{why}");
    }
    println!(
        "\ntest result: {}. {} passed; {} failed; 0 ignored; 0 measured; {} filtered out; finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        selected.len() - failed.len(),
        failed.len(),
        TESTS.len() - selected.len(),
        start.elapsed().as_secs_f64(),
    );
    if !failed.is_empty() {
        std::process::exit(101);
    }
}
