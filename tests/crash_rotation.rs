//! Durable rotation: children that rotate (and compress) every few milliseconds are
//! killed with SIGKILL at random moments, again and again in one directory; across
//! every file left, no acknowledged (flushed) record is missing and no record appears
//! twice. And the fatal-signal drain, after rotations, writes into the live file.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quelog::test_hooks::ListenerHooks;
use quelog::{Builder, Naming, Output, Rotation, SyncPolicy};
use support::rotated::files;

const CHILD_ENV: &str = "QUELOG_ROTATION_CHILD";
const DIR_ENV: &str = "QUELOG_ROTATION_DIR";
const RUN_ENV: &str = "QUELOG_ROTATION_RUN";
const NAMING_ENV: &str = "QUELOG_ROTATION_NAMING";

/// Small files and compression: a rotation every few records' milliseconds. Numbered
/// names (every rotation renames every file) when the parent says so.
fn rotation() -> Rotation {
    let rotation = Rotation::size(8 << 10).compress(true);
    match std::env::var(NAMING_ENV).as_deref() {
        Ok("numbers") => rotation.naming(Naming::Numbers).keep(1000),
        _ => rotation,
    }
}

#[test]
fn child() {
    let Ok(scenario) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(DIR_ENV).expect("dir"));
    match scenario.as_str() {
        "log-and-ack" => child_log_and_ack(&dir),
        "start-and-stop" => drop(install(&dir, None)),
        "drain-after-rotations" => child_drain_after_rotations(&dir),
        other => panic!("unknown scenario {other}"),
    }
}

fn install(dir: &Path, held: Option<Arc<AtomicBool>>) -> quelog::Guard {
    Builder::new()
        .output(Output::file(dir.join("app.log")).rotate(rotation()))
        .sync(SyncPolicy::EveryBatch)
        .drain_on_crash(true)
        .listener_hooks(ListenerHooks {
            hold: held,
            die: None,
        })
        .install()
        .unwrap()
}

/// Two threads log `seq r<run>w<t> <n> ... end` and flush after every record, printing
/// each acknowledged one; a third logs without flushing. Until killed.
fn child_log_and_ack(dir: &Path) {
    let run: u64 = std::env::var(RUN_ENV).unwrap().parse().unwrap();
    let guard = install(dir, None);
    std::thread::scope(|s| {
        for t in 0..2 {
            let guard = &guard;
            s.spawn(move || {
                for n in 0u64.. {
                    log::info!(target: "crash", "seq r{run}w{t} {n} {:60} end", "");
                    guard.flush().expect("flush");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack r{run}w{t} {n}").unwrap();
                    out.flush().unwrap();
                }
            });
        }
        s.spawn(move || {
            for n in 0u64.. {
                log::info!(target: "crash", "seq r{run}w9 {n} {:200} end", "");
                std::thread::sleep(Duration::from_micros(100));
            }
        });
    });
}

/// Rotates a few times, then holds the listener, logs 100 records and aborts: the
/// crash drain writes them with the descriptor published after the last rotation.
fn child_drain_after_rotations(dir: &Path) {
    let held = Arc::new(AtomicBool::new(false));
    let guard = install(dir, Some(Arc::clone(&held)));
    for n in 0..1000 {
        log::info!(target: "crash", "before {n} {:40}", "");
    }
    guard.flush().unwrap();
    assert!(guard.stats().rotation.rotations >= 3);
    held.store(true, std::sync::atomic::Ordering::Release);
    std::thread::sleep(Duration::from_millis(20));
    for n in 0..100 {
        log::info!(target: "crash", "drained {n}");
    }
    std::mem::forget(guard);
    // SAFETY: ends the process with SIGABRT, on purpose.
    unsafe { libc::abort() }
}

fn command(scenario: &str, dir: &Path, run: u64) -> Command {
    let naming = if dir.ends_with("numbers") {
        "numbers"
    } else {
        "dates"
    };
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .env(NAMING_ENV, naming)
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, scenario)
        .env(DIR_ENV, dir)
        .env(RUN_ENV, run.to_string())
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    command
}

fn wait(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("child did not end within {limit:?}");
}

/// The whole records (`... end`) of every file in `dir`, by writer.
fn records(dir: &Path) -> std::collections::HashMap<String, Vec<u64>> {
    let mut found: std::collections::HashMap<String, Vec<u64>> = Default::default();
    for content in files(dir).values() {
        for line in String::from_utf8_lossy(content).lines() {
            if !line.ends_with(" end") {
                continue; // a line a kill tore (ended by the next start)
            }
            if let Some((writer, n)) = support::rotated::parse_seq(line) {
                found.entry(writer).or_default().push(n);
            }
        }
    }
    found
}

#[test]
fn sigkill_during_rotations_loses_no_acknowledged_record_and_doubles_none() {
    sigkill_during_rotations("dates");
}

#[test]
fn sigkill_during_numbered_rotations_loses_no_acknowledged_record_and_doubles_none() {
    sigkill_during_rotations("numbers");
}

/// Kills children logging into one directory (named `naming`) at random moments.
fn sigkill_during_rotations(naming: &str) {
    let dir = support::common::temp_dir("crash-rotation", "sigkill").join(naming);
    std::fs::create_dir_all(&dir).unwrap();
    let mut random = quelog::fuzzing::pseudo_random();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut below = |n: u64| (random() ^ seed) % n;
    let runs = 12;
    let acks: Arc<Mutex<std::collections::HashMap<String, u64>>> = Arc::default();
    for run in 0..runs {
        let mut child = command("log-and-ack", &dir, run).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = {
            let acks = Arc::clone(&acks);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    // The harness's "test child ... " may share the first line.
                    if let Some((_, rest)) = line.split_once("ack ") {
                        let (writer, n) = rest.split_once(' ').unwrap();
                        let n: u64 = n.parse().unwrap();
                        let mut acks = acks.lock().unwrap();
                        let top = acks.entry(writer.to_owned()).or_insert(0);
                        *top = (*top).max(n + 1);
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(40 + below(200)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        reader.join().unwrap();
    }
    // One clean start-up and stop finishes the compressions the kills cut short.
    let mut last = command("start-and-stop", &dir, runs).spawn().unwrap();
    assert!(wait(&mut last, Duration::from_secs(20)).success());
    let found = records(&dir);
    let acks = acks.lock().unwrap();
    let mut checked = 0;
    for (writer, seqs) in &found {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        let before = sorted.len();
        sorted.dedup();
        assert_eq!(before, sorted.len(), "{writer}: a record appears twice");
        if let Some(&acked) = acks.get(writer) {
            // Every acknowledged record, 0 up to the last acknowledged, is there.
            assert!(
                sorted.len() as u64 >= acked
                    && sorted.get(acked as usize - 1) == Some(&(acked - 1)),
                "{writer}: acknowledged up to {} but found {} records",
                acked - 1,
                sorted.len()
            );
            checked += acked;
        }
    }
    let names = support::rotated::names(&dir);
    let leftovers: Vec<&String> = names.iter().filter(|n| n.starts_with('.')).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let plain = names
        .iter()
        .filter(|n| !n.ends_with(".gz") && *n != "app.log")
        .count();
    assert_eq!(plain, 0, "rotated files left uncompressed: {names:?}");
    eprintln!(
        "SIGKILL during rotations ({naming}): {runs} runs, {} files, {checked} acknowledged \
         records checked, {} records in all, none twice (seed {seed})",
        names.len(),
        found.values().map(Vec::len).sum::<usize>()
    );
    assert!(
        checked >= runs,
        "the children acknowledged too little to mean anything"
    );
}

#[test]
fn the_crash_drain_writes_into_the_live_file_after_rotations() {
    let dir = support::common::temp_dir("crash-rotation", "drain");
    let mut child = command("drain-after-rotations", &dir, 0).spawn().unwrap();
    let status = wait(&mut child, Duration::from_secs(20));
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
    let live = std::fs::read_to_string(dir.join("app.log")).unwrap();
    let drained = live.lines().filter(|l| l.contains("drained ")).count();
    assert_eq!(drained, 100, "the drain wrote elsewhere:\n{live}");
    assert!(live.contains("the crash handler wrote 100 records"));
}
