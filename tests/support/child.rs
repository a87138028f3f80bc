//! Running a scenario in a child process under a watchdog.
//!
//! The test binary (or example) re-executes itself with [`SCENARIO_ENV`] naming the
//! scenario. The child reports on its standard output, one line at a time:
//!
//! * `PROGRESS <n> <free text>`: its progress counter. The watchdog kills the child when
//!   `n` has not grown for [`Watch::stall`]. The free text of the last one is kept, so a
//!   hang can be reported with the numbers the child had reached.
//! * `PATIENCE <milliseconds>`: from now on, allow this long without progress (a child
//!   entering a phase that legitimately blocks for a while, like a final drain).
//! * anything else: kept in [`Run::lines`], and counts as progress.
//!
//! On a hang the watchdog prints where every thread of the child waits, with
//! `gdb -p PID -batch -ex 'thread apply all bt'` when gdb is installed, then kills it.
//!
//! Shared by `tests/storm.rs`, `tests/reentrancy.rs`, `tests/tracing.rs` and
//! `examples/storm.rs`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The environment variable that names the scenario a child process runs.
pub const SCENARIO_ENV: &str = "QUELOG_TEST_SCENARIO";

/// The scenario this process was started to run, if it is a child.
pub fn scenario() -> Option<String> {
    std::env::var(SCENARIO_ENV).ok().filter(|s| !s.is_empty())
}

/// A command that re-executes the current binary to run `scenario`.
pub fn self_command(scenario: &str) -> Command {
    let exe = std::env::current_exe().expect("path of the running test binary");
    let mut command = Command::new(exe);
    command.env(SCENARIO_ENV, scenario);
    command
}

/// A command that re-executes the current libtest binary to run only the test
/// `test_name`, as a child running `scenario`.
pub fn self_test_command(test_name: &str, scenario: &str) -> Command {
    let mut command = self_command(scenario);
    command.args([test_name, "--exact", "--nocapture", "--test-threads=1"]);
    command
}

/// How long a child may go without progress, and in all.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    /// Kill the child when its progress has not grown for this long.
    pub stall: Duration,
    /// Kill the child when it runs longer than this in all.
    pub total: Duration,
    /// On a hang, capture every thread's stack with gdb (when installed).
    pub stacks: bool,
}

/// How a watched child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It exited (or was killed by a signal) on its own.
    Exited(ExitStatus),
    /// The watchdog killed it: no progress for the stall limit.
    Stalled,
    /// The watchdog killed it: it ran past the total limit while still progressing.
    OutOfTime,
}

/// What a watched child did.
#[derive(Debug)]
pub struct Run {
    pub ending: Ending,
    /// Every stdout line that is neither `PROGRESS` nor `PATIENCE`.
    pub lines: Vec<String>,
    /// The free text of the last `PROGRESS` line.
    pub last_progress: Option<String>,
    /// The free text of the `PROGRESS` line at which progress last grew.
    pub progress_text: Option<String>,
    /// Highest progress value seen.
    pub progress: u64,
    /// Time from start to the last progress.
    pub progress_until: Duration,
    /// Time from start to the end.
    pub elapsed: Duration,
    /// The tail of the child's standard error.
    pub stderr: String,
    /// gdb's `thread apply all bt` on a hang.
    pub stacks: Option<String>,
}

impl Run {
    /// Whether it exited with status 0.
    pub fn succeeded(&self) -> bool {
        matches!(self.ending, Ending::Exited(status) if status.success())
    }

    /// Whether the watchdog had to kill it.
    pub fn hung(&self) -> bool {
        matches!(self.ending, Ending::Stalled | Ending::OutOfTime)
    }

    /// The first line starting with `prefix`, without the prefix.
    pub fn line_starting(&self, prefix: &str) -> Option<&str> {
        self.lines.iter().find_map(|l| l.strip_prefix(prefix))
    }

    /// Everything worth showing when an assertion about this run fails.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "ending: {:?} after {:.2?} (progress {} at {:.2?}: {}; last report: {})\n--- stdout ---\n{}\n--- stderr (tail) ---\n{}",
            self.ending,
            self.elapsed,
            self.progress,
            self.progress_until,
            self.progress_text.as_deref().unwrap_or("none"),
            self.last_progress.as_deref().unwrap_or("none"),
            self.lines.join("\n"),
            self.stderr,
        );
        if let Some(stacks) = &self.stacks {
            text.push_str("\n--- thread stacks (gdb) ---\n");
            text.push_str(stacks);
        }
        text
    }
}

/// Kills the child if the watcher unwinds before reaping it.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Most bytes of the child's stderr kept (the tail).
const STDERR_KEEP: usize = 64 << 10;

enum Event {
    Line(String),
    Eof,
}

/// Starts `command` and watches it until it exits or hangs.
pub fn run_watched(mut command: Command, watch: Watch) -> Run {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = Reaper(command.spawn().expect("spawn the child process"));
    let stdout = child.0.stdout.take().expect("piped stdout");
    let mut stderr_pipe = child.0.stderr.take().expect("piped stderr");

    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(line) => {
                    if tx.send(Event::Line(line)).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = tx.send(Event::Eof);
    });
    let stderr = Arc::new(Mutex::new(Vec::<u8>::new()));
    let stderr_writer = Arc::clone(&stderr);
    let stderr_thread = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stderr_pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            let mut kept = stderr_writer.lock().unwrap_or_else(|e| e.into_inner());
            kept.extend_from_slice(&chunk[..n]);
            if kept.len() > 2 * STDERR_KEEP {
                let cut = kept.len() - STDERR_KEEP;
                kept.drain(..cut);
            }
        }
    });

    let mut lines = Vec::new();
    let mut last_progress = None;
    let mut progress_text = None;
    let mut progress = 0u64;
    let mut progress_at = Instant::now();
    let mut progress_until = Duration::ZERO;
    let mut stall = watch.stall;
    let mut ending = None;
    while ending.is_none() {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Event::Line(line)) => {
                if let Some(rest) = line.strip_prefix("PROGRESS ") {
                    let (value, text) = rest.split_once(' ').unwrap_or((rest, ""));
                    let value: u64 = value.parse().unwrap_or(0);
                    if value > progress {
                        progress = value;
                        progress_at = Instant::now();
                        progress_until = start.elapsed();
                        progress_text = Some(text.to_owned());
                    }
                    last_progress = Some(text.to_owned());
                } else if let Some(millis) = line.strip_prefix("PATIENCE ") {
                    stall = Duration::from_millis(millis.trim().parse().unwrap_or(0));
                    progress_at = Instant::now();
                } else {
                    progress_at = Instant::now();
                    progress_until = start.elapsed();
                    lines.push(line);
                }
            }
            Ok(Event::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.0.wait().expect("wait for the child");
                ending = Some(Ending::Exited(status));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if ending.is_none() {
            if let Ok(Some(status)) = child.0.try_wait() {
                // Exited, but a grandchild may hold the pipe open: do not wait for EOF.
                ending = Some(Ending::Exited(status));
            } else if progress_at.elapsed() > stall {
                ending = Some(Ending::Stalled);
            } else if start.elapsed() > watch.total {
                ending = Some(Ending::OutOfTime);
            }
        }
    }
    let ending = ending.unwrap_or(Ending::Stalled);
    let mut stacks = None;
    if matches!(ending, Ending::Stalled | Ending::OutOfTime) {
        if watch.stacks {
            stacks = Some(thread_stacks(child.0.id()));
        }
        let _ = child.0.kill();
        let _ = child.0.wait();
    }
    // Lines the child printed just before it exited.
    while let Ok(Event::Line(line)) = rx.recv_timeout(Duration::from_millis(200)) {
        if !line.starts_with("PROGRESS ") && !line.starts_with("PATIENCE ") {
            lines.push(line);
        }
    }
    let _ = stderr_thread.join();
    let stderr = {
        let kept = stderr.lock().unwrap_or_else(|e| e.into_inner());
        let from = kept.len().saturating_sub(STDERR_KEEP);
        String::from_utf8_lossy(&kept[from..]).into_owned()
    };
    Run {
        ending,
        lines,
        last_progress,
        progress_text,
        progress,
        progress_until,
        elapsed: start.elapsed(),
        stderr,
        stacks,
    }
}

/// Where every thread of process `pid` is, per gdb, or why that could not be had.
/// Bounded: gdb gets 30 seconds.
pub fn thread_stacks(pid: u32) -> String {
    let spawned = Command::new("gdb")
        .args(["-p", &pid.to_string(), "-batch", "-nx", "-q"])
        .args(["-ex", "set pagination off", "-ex", "thread apply all bt"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut gdb = match spawned {
        Ok(gdb) => gdb,
        Err(e) => return format!("(no thread stacks: cannot run gdb: {e})"),
    };
    let mut out = gdb.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match gdb.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => {
                let _ = gdb.kill();
                let _ = gdb.wait();
                break;
            }
        }
    }
    reader.join().unwrap_or_default()
}

/// The frames gdb printed for threads that were inside a signal handler, innermost
/// first, at most `frames` per thread: the short story of a signal-handler deadlock.
pub fn handler_frames(stacks: &str, frames: usize) -> Vec<String> {
    let mut found = Vec::new();
    for thread in stacks.split("\nThread ").skip(1) {
        let lines: Vec<&str> = thread.lines().collect();
        let Some(at) = lines
            .iter()
            .position(|l| l.contains("<signal handler called>"))
        else {
            continue;
        };
        let mut story = vec![format!(
            "Thread {}",
            lines.first().copied().unwrap_or_default()
        )];
        for line in lines.iter().skip(1).take(at.min(frames)) {
            story.push(format!("    {}", short_frame(line)));
        }
        story.push("    <signal handler called>".to_owned());
        found.push(story.join("\n"));
    }
    found
}

/// `#3  0x... in crossbeam_channel::flavors::array::Channel<T>::start_send (...) at ...`
/// becomes `#3 crossbeam_channel::flavors::array::Channel<T>::start_send`.
fn short_frame(line: &str) -> String {
    let line = line.trim();
    let (number, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim_start();
    let rest = match rest.split_once(" in ") {
        Some((address, name)) if address.starts_with("0x") => name,
        _ => rest,
    };
    let name = rest.split(" (").next().unwrap_or(rest);
    format!("{number} {name}")
}

/// The line a scenario's child prints last when it finished.
pub const SCENARIO_DONE: &str = "SCENARIO DONE";

/// One test, two processes. In the parent: runs `command` (this test binary
/// re-executed to run only `test_name`, when `None`) under `watch`, asserts that the
/// child finished its scenario and exited 0, and returns what it did. In the child
/// (started for `test_name`): runs `body`, prints [`SCENARIO_DONE`], and returns
/// `None`. In a child started for another test: does nothing.
pub fn in_child(
    test_name: &str,
    command: Option<Command>,
    watch: Watch,
    body: impl FnOnce(),
) -> Option<Run> {
    match scenario() {
        Some(name) if name == test_name => {
            body();
            // On a line of its own: libtest has printed "test name ... " without one.
            println!("\n{SCENARIO_DONE}");
            None
        }
        Some(_) => None,
        None => {
            let command = command.unwrap_or_else(|| self_test_command(test_name, test_name));
            let run = run_watched(command, watch);
            assert!(
                run.succeeded() && run.lines.iter().any(|l| l == SCENARIO_DONE),
                "the child running {test_name} failed or hung:\n{}",
                run.describe()
            );
            Some(run)
        }
    }
}

/// Prints the `MEASURED ...` lines a child reported, prefixed with the test's name, so
/// `cargo test -- --nocapture` shows the numbers (libtest may have printed
/// "test name ... " on the same line in front of them).
pub fn echo_measured(test_name: &str, run: &Run) {
    for line in run
        .lines
        .iter()
        .filter_map(|l| l.find("MEASURED ").map(|at| &l[at..]))
    {
        println!("{test_name}: {line}");
    }
}
