//! quelog under the real logrotate (Debian package `logrotate`).
//!
//! A child process (this binary run again) logs from 4 threads with per-thread
//! sequence numbers, `Overflow::Block` so nothing is dropped, while the parent runs
//! `logrotate -f` ten times, 200 ms apart, with `rotate 100` so every rotated file
//! stays. Then every file is read back:
//!
//! * `create` + `postrotate kill -HUP` ([`quelog::Builder::reopen_on_sighup`]): every
//!   record exactly once, in per-thread order, every file whole lines; also with
//!   `compress` + `delaycompress` (read back with `gzip -dc`); and `create` without
//!   a signal, where quelog notices the rename itself.
//! * `copytruncate`: no NUL byte anywhere, records in per-thread order and never
//!   twice; what logrotate loses between its copy and its truncate (inherent) is
//!   measured and printed as `MEASURED` lines.
//!
//! Without logrotate the tests are skipped, with a message; with `CI` set they fail.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::common::temp_dir;

const DIR_ENV: &str = "QUELOG_LOGROTATE_DIR";
const HUP_ENV: &str = "QUELOG_LOGROTATE_HUP";
const THREADS: usize = 4;
const ROTATIONS: usize = 10;
const ROTATE_EVERY: Duration = Duration::from_millis(200);
/// How long the child logs after the last rotation, before the parent tells it to stop.
const AFTER_LAST: Duration = Duration::from_millis(100);
/// The longest the child logs if nobody tells it to stop.
const LOGGING_AT_MOST: Duration = Duration::from_secs(30);

/// The logging program: prints `READY`, logs until its standard input closes, stops
/// the logger, prints `COUNTS` (records per thread) and `STATS`.
#[test]
fn logging_child() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let guard = quelog::Builder::new()
        .file(PathBuf::from(dir).join("app.log"))
        .overflow(quelog::Overflow::Block {
            timeout: Duration::from_secs(10),
        })
        .reopen_on_sighup(std::env::var_os(HUP_ENV).is_some())
        .tracing(false)
        .install()
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopper = std::sync::Arc::clone(&stop);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        stopper.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    println!("READY");
    let started = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut seq = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && started.elapsed() < LOGGING_AT_MOST
                {
                    for _ in 0..8 {
                        log::info!("t{thread} {seq}");
                        seq += 1;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                seq
            })
        })
        .collect();
    let counts: Vec<String> = threads
        .into_iter()
        .map(|t| t.join().unwrap().to_string())
        .collect();
    let stats = guard.stop().unwrap();
    println!("COUNTS {}", counts.join(" "));
    println!("LOGGED_FOR {}", started.elapsed().as_secs_f64());
    println!(
        "STATS written={} dropped={} lost={} reopens={} detached_reopens={}",
        stats.written,
        stats.dropped.total(),
        stats.lost,
        stats.reopens,
        stats.detached_reopens
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `create` + `postrotate kill -HUP`.
    Create,
    /// The same with `compress` + `delaycompress`.
    CreateCompressed,
    /// `create` alone: quelog notices the rename itself ([`quelog::Sink::detached`]).
    CreateWithoutSignal,
    /// `copytruncate`.
    CopyTruncate,
}

impl Mode {
    fn signals(self) -> bool {
        matches!(self, Mode::Create | Mode::CreateCompressed)
    }
}

fn logrotate_installed() -> bool {
    Command::new("logrotate")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether to go on: logrotate is there, or (without CI) skip with a message.
fn have_logrotate(name: &str) -> bool {
    if std::env::var_os(DIR_ENV).is_some() {
        return false;
    }
    if logrotate_installed() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "logrotate is not installed, and CI is set: this test must run in CI"
    );
    // Straight to the descriptor: libtest captures `eprintln!` of passing tests.
    let _ = std::io::stderr()
        .write_all(format!("\n!!!!! {name}: skipped: logrotate not installed !!!!!\n").as_bytes());
    false
}

/// What the child reported and what the files hold.
struct Outcome {
    /// Records each thread logged.
    counts: Vec<u64>,
    /// The child's `STATS` line.
    stats: String,
    /// Per thread, the sequence numbers found, oldest file first.
    found: Vec<Vec<u64>>,
    /// quelog's own lines found.
    notices: Vec<String>,
    /// Files read, and how many of them end in a torn line.
    files: usize,
    torn_endings: usize,
    /// The files, oldest first, with their sequence numbers per thread (for the loss
    /// per rotation).
    per_file: Vec<Vec<Vec<u64>>>,
    /// How long each logrotate run took.
    runs: Vec<Duration>,
    /// How long the child logged, in seconds.
    logged_for: f64,
}

fn config(dir: &Path, mode: Mode, pid: u32) -> String {
    let how = match mode {
        Mode::Create => format!("create\n    postrotate\n        kill -HUP {pid}\n    endscript"),
        Mode::CreateCompressed => format!(
            "create\n    compress\n    delaycompress\n    postrotate\n        kill -HUP {pid}\n    endscript"
        ),
        Mode::CreateWithoutSignal => "create".to_owned(),
        Mode::CopyTruncate => "copytruncate".to_owned(),
    };
    let compress = if mode == Mode::CreateCompressed {
        ""
    } else {
        "nocompress\n    "
    };
    format!(
        "{}/app.log {{\n    rotate 100\n    missingok\n    {compress}{how}\n}}\n",
        dir.display()
    )
}

fn run(mode: Mode) -> Outcome {
    let dir = temp_dir("logrotate", &format!("{mode:?}"));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "logging_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_ENV, &dir)
        .envs(mode.signals().then_some((HUP_ENV, "1")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    // libtest prints its own lines first.
    let until = Instant::now() + Duration::from_secs(20);
    let mut ready = false;
    while let Ok(line) = lines_rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
        if line.contains("READY") {
            ready = true;
            break;
        }
    }
    if !ready {
        let _ = child.kill();
        panic!("the logging child did not start");
    }
    let conf = dir.join("logrotate.conf");
    std::fs::write(&conf, config(&dir, mode, child.id())).unwrap();
    let state = dir.join("logrotate.state");
    let mut runs = Vec::new();
    for _ in 0..ROTATIONS {
        std::thread::sleep(ROTATE_EVERY);
        let started = Instant::now();
        let output = Command::new("logrotate")
            .arg("-f")
            .arg("-s")
            .arg(&state)
            .arg(&conf)
            .output()
            .unwrap();
        runs.push(started.elapsed());
        assert!(
            output.status.success(),
            "logrotate failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::thread::sleep(AFTER_LAST);
    // Closing its standard input tells the child to stop.
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the logging child hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    reader.join().unwrap();
    let lines: Vec<String> = lines_rx.try_iter().collect();
    assert!(status.success(), "child: {status:?}\n{}", lines.join("\n"));
    let counts: Vec<u64> = lines
        .iter()
        .find_map(|l| l.strip_prefix("COUNTS "))
        .expect("COUNTS line")
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    let stats = lines
        .iter()
        .find_map(|l| l.strip_prefix("STATS "))
        .expect("STATS line")
        .to_owned();
    let logged_for = lines
        .iter()
        .find_map(|l| l.strip_prefix("LOGGED_FOR "))
        .expect("LOGGED_FOR line")
        .parse()
        .unwrap();
    let outcome = read_back(&dir, counts, stats, runs, logged_for);
    let _ = std::fs::remove_dir_all(dir);
    outcome
}

/// The files logrotate and quelog left, oldest first: `app.log.N[.gz]` by falling
/// N, then `app.log`.
fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut numbered: BTreeMap<u32, PathBuf> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let Some(rest) = name.strip_prefix("app.log.") else {
            continue;
        };
        if let Ok(n) = rest.trim_end_matches(".gz").parse() {
            numbered.insert(n, path);
        }
    }
    let mut files: Vec<PathBuf> = numbered.into_values().rev().collect();
    files.push(dir.join("app.log"));
    files
}

fn contents(path: &Path) -> Vec<u8> {
    if path.extension().is_some_and(|e| e == "gz") {
        let output = Command::new("gzip").arg("-dc").arg(path).output().unwrap();
        assert!(output.status.success(), "gzip -dc {}", path.display());
        output.stdout
    } else {
        std::fs::read(path).unwrap()
    }
}

fn read_back(
    dir: &Path,
    counts: Vec<u64>,
    stats: String,
    runs: Vec<Duration>,
    logged_for: f64,
) -> Outcome {
    let files = log_files(dir);
    let mut outcome = Outcome {
        counts,
        stats,
        found: vec![Vec::new(); THREADS],
        notices: Vec::new(),
        files: files.len(),
        torn_endings: 0,
        per_file: Vec::new(),
        runs,
        logged_for,
    };
    for path in &files {
        let bytes = contents(path);
        assert!(
            !bytes.contains(&0),
            "NUL bytes in {}: at {:?}",
            path.display(),
            bytes.iter().position(|b| *b == 0)
        );
        let text = String::from_utf8(bytes).expect("UTF-8");
        let whole = text.is_empty() || text.ends_with('\n');
        let mut in_file = vec![Vec::new(); THREADS];
        let lines: Vec<&str> = text.lines().collect();
        for (at, line) in lines.iter().enumerate() {
            if line.contains(" quelog: ") {
                outcome.notices.push((*line).to_owned());
                continue;
            }
            let parsed = line
                .rsplit_once("] app: ")
                .or_else(|| line.rsplit_once("] logrotate: "))
                .and_then(|(_, m)| m.strip_prefix('t'))
                .and_then(|m| m.split_once(' '))
                .and_then(|(t, s)| Some((t.parse::<usize>().ok()?, s.parse::<u64>().ok()?)));
            match parsed {
                Some((thread, seq)) if thread < THREADS => {
                    outcome.found[thread].push(seq);
                    in_file[thread].push(seq);
                }
                // A torn last line: the only kind allowed, and only where the caller
                // allows it (a copy taken while quelog was appending).
                _ if at + 1 == lines.len() && !whole => outcome.torn_endings += 1,
                _ => panic!("unreadable line in {}: {line:?}", path.display()),
            }
        }
        outcome.per_file.push(in_file);
    }
    outcome
}

#[test]
fn create_and_sighup_keeps_every_record_exactly_once() {
    if !have_logrotate("create_and_sighup_keeps_every_record_exactly_once") {
        return;
    }
    check_exactly_once(Mode::Create);
}

#[test]
fn create_compress_delaycompress_keeps_every_record_exactly_once() {
    if !have_logrotate("create_compress_delaycompress_keeps_every_record_exactly_once") {
        return;
    }
    check_exactly_once(Mode::CreateCompressed);
}

#[test]
fn create_without_a_signal_keeps_every_record_exactly_once() {
    if !have_logrotate("create_without_a_signal_keeps_every_record_exactly_once") {
        return;
    }
    check_exactly_once(Mode::CreateWithoutSignal);
}

fn check_exactly_once(mode: Mode) {
    let outcome = run(mode);
    assert_eq!(outcome.torn_endings, 0, "a file ends in a torn line");
    assert!(outcome.stats.contains(" dropped=0 "), "{}", outcome.stats);
    assert!(outcome.stats.contains(" lost=0 "), "{}", outcome.stats);
    if mode.signals() {
        // Every SIGHUP reached the child and was served (quelog may have noticed the
        // rename first; the reopen then opens the same new file).
        assert!(
            outcome.stats.contains(&format!(" reopens={ROTATIONS} ")),
            "{}",
            outcome.stats
        );
    } else {
        let followed = format!(" detached_reopens={ROTATIONS}");
        assert!(outcome.stats.ends_with(&followed), "{}", outcome.stats);
    }
    assert_eq!(
        outcome.files,
        ROTATIONS + 1,
        "one file per rotation, and the live one"
    );
    for (thread, (found, &count)) in outcome.found.iter().zip(&outcome.counts).enumerate() {
        let expected: Vec<u64> = (0..count).collect();
        assert!(
            *found == expected,
            "thread {thread}: {} records found of {count}, first difference at {:?}",
            found.len(),
            found.iter().zip(&expected).position(|(a, b)| a != b)
        );
    }
    let total: u64 = outcome.counts.iter().sum();
    let empty = outcome
        .per_file
        .iter()
        .filter(|f| f.iter().all(Vec::is_empty))
        .count();
    println!(
        "MEASURED logrotate {mode:?}: {total} records checked across {} files ({empty} without \
         records), each exactly once in per-thread order; {ROTATIONS} runs of `logrotate -f`, \
         {:.1?} the longest; child {}; {} notice lines",
        outcome.files,
        outcome.runs.iter().max().unwrap(),
        outcome.stats,
        outcome.notices.len()
    );
}

#[test]
fn copytruncate_writes_no_nul_bytes_and_the_loss_window_is_measured() {
    if !have_logrotate("copytruncate_writes_no_nul_bytes_and_the_loss_window_is_measured") {
        return;
    }
    let outcome = run(Mode::CopyTruncate);
    assert!(outcome.stats.contains(" dropped=0 "), "{}", outcome.stats);
    assert!(outcome.notices.is_empty(), "{:?}", outcome.notices);
    let mut lost_total = 0;
    for (thread, (found, &count)) in outcome.found.iter().zip(&outcome.counts).enumerate() {
        assert!(
            found.windows(2).all(|w| w[0] < w[1]),
            "thread {thread}: out of order or twice"
        );
        assert_eq!(
            found.last().copied(),
            count.checked_sub(1),
            "thread {thread}"
        );
        lost_total += count - found.len() as u64;
    }
    // What each rotation lost: the sequence numbers missing between one file's last
    // record of a thread and the next file's first.
    let mut per_rotation = Vec::new();
    for pair in outcome.per_file.windows(2) {
        let lost: u64 = (0..THREADS)
            .map(|t| match (pair[0][t].last(), pair[1][t].first()) {
                (Some(last), Some(first)) => first - last - 1,
                _ => 0,
            })
            .sum();
        per_rotation.push(lost);
    }
    let total: u64 = outcome.counts.iter().sum();
    let rate = total as f64 / outcome.logged_for;
    let max = per_rotation.iter().copied().max().unwrap_or(0);
    println!(
        "MEASURED logrotate CopyTruncate: {total} records logged ({rate:.0}/s), {} found across \
         {} files, {lost_total} lost in {ROTATIONS} rotations (per rotation: {per_rotation:?}; the \
         largest {max}, about {:.2} ms of logging); {} rotated copies end in a torn line; no NUL \
         byte; child {}",
        total - lost_total,
        outcome.files,
        max as f64 / rate * 1000.0,
        outcome.torn_endings,
        outcome.stats
    );
}
