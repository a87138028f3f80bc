//! The story in one run: the same signal storm against three naive loggers and against
//! quelog, each in a child process under a watchdog.
//!
//! ```text
//! cargo run --release --example storm            # about half a minute
//! cargo run --release --example storm -- 10      # quelog storms for 10 seconds
//! ```
//!
//! Two producer threads log in a loop; `setitimer` fires `SIGALRM` every 30 us and a
//! thread sends `SIGUSR1` to the producers with `pthread_kill` every 50 us; both signal
//! handlers log with `log::warn!`. A watchdog kills a child when a producer completes
//! no log call for 3 seconds and asks gdb where its threads are. The naive designs
//! deadlock (see `../shared/DESIGN.md`); quelog does not, and accounts for every record.
//!
//! The harness is the one `tests/storm.rs` uses.

#[path = "../tests/support/storm.rs"]
mod storm;

use std::time::Duration;

use storm::{Backend, Storm};

/// The frames of a stuck handler worth naming, innermost first: the locks and loops a
/// handler waits in, without the plumbing around them.
fn stuck_in(story: &str) -> String {
    let mut names: Vec<String> = Vec::new();
    for line in story.lines().skip(1) {
        let frame = line.trim();
        let Some((_, name)) = frame.split_once(' ') else {
            continue;
        };
        // Drop generic arguments, keep the last two path segments.
        let mut plain = String::new();
        let mut depth = 0;
        for c in name.chars() {
            match c {
                '<' => depth += 1,
                '>' => depth -= 1,
                _ if depth == 0 => plain.push(c),
                _ => {}
            }
        }
        let segments: Vec<&str> = plain.split("::").collect();
        let short = segments[segments.len().saturating_sub(2)..].join("::");
        let plumbing = [
            "syscall",
            "futex_wait",
            "sched_yield",
            "log_impl",
            "__private_api",
            "{impl#",
        ];
        if short.is_empty() || plumbing.iter().any(|p| plain.contains(p)) || names.contains(&short)
        {
            continue;
        }
        if short.contains("on_signal") {
            break;
        }
        names.push(short);
    }
    names.truncate(4);
    names.join(" <- ")
}

fn main() {
    if let Some(spec) = storm::child::scenario() {
        storm::child_main(&spec);
    }
    let quelog_secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);

    println!(
        "Signal storm: 2 producer threads logging in a loop, SIGALRM every 30 us (setitimer), \
         SIGUSR1 at each producer every 50 us (pthread_kill); both handlers log. \
         Watchdog: {:?} without a completed log call = deadlock.\n",
        storm::STALL
    );
    let mut rows = Vec::new();
    for backend in [
        Backend::Mutex,
        Backend::ChannelBlocking,
        Backend::ChannelPolling,
    ] {
        let mut storm = Storm::new(backend);
        storm.load = Duration::from_secs(8);
        eprintln!("running {} ...", backend.title());
        let row = match storm::expect_deadlock(&storm, 5, true) {
            Ok(caught) => {
                let verb = if backend == Backend::ChannelPolling {
                    "hung"
                } else {
                    "deadlocked"
                };
                let place = caught
                    .story
                    .first()
                    .map(|s| format!("; handler stuck in {}", stuck_in(s)))
                    .unwrap_or_default();
                let when = if caught.after < Duration::from_millis(50) {
                    "in the first 50 ms of the storm".to_owned()
                } else {
                    format!("{:.2} s into the storm", caught.after.as_secs_f64())
                };
                format!(
                    "{verb} after {} signals, {when} (attempt {}){place}",
                    caught.signals, caught.attempt,
                )
            }
            Err(why) => format!("did NOT deadlock: {}", why.lines().next().unwrap_or("")),
        };
        rows.push((backend.title(), row));
    }

    let mut storm = Storm::new(Backend::Quelog);
    storm.load = Duration::from_secs_f64(quelog_secs.clamp(0.5, 3600.0));
    eprintln!("running quelog ...");
    let row = match storm::expect_survival(&storm) {
        Ok(s) => format!(
            "0 deadlocks, {} signals, every record accounted for \
             (attempted {} = written {} + dropped {}; the file holds {} lines, all well formed, \
             per-thread sequences increasing; 0 handlers on the listener)",
            s.get("signals"),
            s.get("attempted"),
            s.get("written"),
            s.get("dropped"),
            s.get("lines"),
        ),
        Err(why) => format!("FAILED: {why}"),
    };
    rows.push((Backend::Quelog.title(), row));

    let width = rows.iter().map(|(title, _)| title.len()).max().unwrap_or(0) + 1;
    for (title, row) in &rows {
        println!("{:<width$} {row}", format!("{title}:"));
    }
}
