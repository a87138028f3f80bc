//! `FileSink` against other programs and the kernel: a file truncated under it
//! (logrotate's `copytruncate`) while a write fails part way, and the directory
//! fsyncs that make a newly created file survive power loss.
//!
//! Both scenarios run in a child process (this binary re-executed with the test's
//! name as the filter, see `support/child.rs`): one sets a process-wide file size
//! limit, the other runs under `strace`.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use quelog::{FileSink, Sink};
use support::storm::child::{self, Run, Watch};

/// Where the child works: a directory the parent made (and removes).
const DIR_ENV: &str = "QUELOG_TEST_DIR";

/// In the parent: runs `command` (which re-executes this binary for `test_name`) under
/// a watchdog and asserts the child finished. In the child: runs `scenario` in the
/// directory the parent named, and returns `None`.
fn in_child(test_name: &str, command: Command, scenario: impl FnOnce(&Path)) -> Option<Run> {
    let watch = Watch {
        stall: Duration::from_secs(30),
        total: Duration::from_secs(90),
        stacks: true,
    };
    child::in_child(test_name, Some(command), watch, || {
        let dir = PathBuf::from(std::env::var(DIR_ENV).expect("the test directory"));
        scenario(&dir);
    })
}

fn test_dir(name: &str) -> PathBuf {
    support::common::temp_dir("file-sink", name)
}

// ---------------------------------------------------------------------------------
// A failed write after copytruncate

/// The child's file size limit (RLIMIT_FSIZE): a write crossing it stops there, and
/// the next one fails with EFBIG.
const FSIZE_LIMIT: u64 = 64 << 10;

/// `n` whole lines of `width` bytes each (newline included), numbered from `first`.
fn lines(first: usize, n: usize, width: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * width);
    for i in first..first + n {
        let mut line = format!("line {i:06} ").into_bytes();
        line.resize(width - 1, b'x');
        line.push(b'\n');
        out.extend_from_slice(&line);
    }
    out
}

fn limit_file_size(limit: u64) {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the live local it is given.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut current) };
    assert_eq!(got, 0, "getrlimit: {}", std::io::Error::last_os_error());
    let limit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: current.rlim_max,
    };
    // SAFETY: setrlimit reads the live local it is given; this child process is
    // single-purpose, nothing else in it writes large files.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &limit) };
    assert_eq!(set, 0, "setrlimit: {}", std::io::Error::last_os_error());
    // Past the limit the kernel sends SIGXFSZ (default: kill with a core); ignored, the
    // write fails with EFBIG instead, which is what a sink has to cope with.
    // SAFETY: SIG_IGN installs no handler code; nothing else here uses SIGXFSZ.
    let old = unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    assert_ne!(old, libc::SIG_ERR, "signal(SIGXFSZ)");
}

/// A batch that fails part way (the file size limit) right after another program cut
/// the file to nothing (copytruncate) must be cut back to where it started in the
/// file as it is now: no NUL bytes (the file extended back to a stale length), no torn
/// line.
#[test]
fn a_failed_write_after_copytruncate_leaves_whole_lines_only() {
    const NAME: &str = "a_failed_write_after_copytruncate_leaves_whole_lines_only";
    let dir = (child::scenario().is_none()).then(|| test_dir("copytruncate"));
    let mut command = child::self_test_command(NAME, NAME);
    if let Some(dir) = &dir {
        command.env(DIR_ENV, dir);
    }
    in_child(NAME, command, |dir| {
        limit_file_size(FSIZE_LIMIT);
        let path = dir.join("app.log");
        let mut sink = FileSink::open(&path).unwrap();
        // Most of the limit, so a cached length would run past what the file holds
        // after the truncation below.
        sink.write_batch(&lines(0, 600, 100)).unwrap(); // 60000 bytes
        sink.sync().unwrap();

        // logrotate's copytruncate: copy elsewhere, then cut to zero in place.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();

        let kept = lines(600, 100, 100); // 10000 bytes, fits
        sink.write_batch(&kept).unwrap();
        // 60000 bytes from offset 10000: the first 55536 land, then EFBIG.
        let error = sink.write_batch(&lines(700, 600, 100)).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EFBIG), "{error}");

        let content = std::fs::read(&path).unwrap();
        let nuls = content.iter().filter(|&&b| b == 0).count();
        assert_eq!(nuls, 0, "{nuls} NUL bytes in a {}-byte file", content.len());
        assert!(
            content.is_empty() || content.ends_with(b"\n"),
            "a torn last line: the file is {} bytes, ends with {:?}",
            content.len(),
            String::from_utf8_lossy(&content[content.len().saturating_sub(40)..])
        );
        assert!(
            content == kept,
            "the file should hold the last whole batch alone ({} bytes), holds {} bytes",
            kept.len(),
            content.len()
        );

        // And the sink goes on appending where the file now ends.
        let more = lines(2000, 3, 100);
        sink.write_batch(&more).unwrap();
        let ours = [kept, more].concat();
        assert_eq!(std::fs::read(&path).unwrap(), ours);

        // Another program fills the file to the limit; a batch that cannot write a byte
        // must leave the file as it is (nothing of it to cut back).
        let mut theirs = b"another program's line\n".repeat(FSIZE_LIMIT as usize / 23);
        theirs.truncate(FSIZE_LIMIT as usize - ours.len());
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&theirs)
            .unwrap();
        let error = sink.write_batch(&lines(3000, 1, 100)).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EFBIG), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), [ours, theirs].concat());
    });
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}

// ---------------------------------------------------------------------------------
// Directory fsyncs for what open creates

/// The syscalls of one process as `strace -f` wrote them, in order.
#[derive(Debug)]
enum Call {
    /// `mkdir`/`mkdirat` of this path succeeded.
    Mkdir(String),
    /// `openat` of this path succeeded with this descriptor.
    Open {
        path: String,
        fd: i32,
        create: bool,
        directory: bool,
    },
    /// `fsync`/`fdatasync` of this descriptor succeeded.
    Sync(i32),
}

/// The first quoted string in `args`, unescaped enough for plain paths.
fn quoted(args: &str) -> Option<String> {
    let start = args.find('"')? + 1;
    let len = args[start..].find('"')?;
    Some(args[start..start + len].to_owned())
}

/// Parses the lines of `strace -f -o` output this test asks for. A line split by a
/// thread switch (`<unfinished ...>` / `<... resumed>`) is skipped: the sink's calls
/// run on one thread, which strace does not interrupt while no other thread makes
/// system calls.
fn parse_trace(trace: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    for line in trace.lines() {
        // "1234 openat(AT_FDCWD, \"/p\", O_RDONLY|O_CLOEXEC) = 3"
        let line = line.trim_start_matches(|c: char| c.is_ascii_digit()).trim();
        let Some((call, result)) = line.rsplit_once(" = ") else {
            continue;
        };
        let Ok(result) = result
            .split_whitespace()
            .next()
            .unwrap_or("")
            .parse::<i32>()
        else {
            continue;
        };
        if result < 0 {
            continue;
        }
        // strace pads short calls with spaces up to its result column.
        let Some((name, args)) = call.trim_end().split_once('(') else {
            continue;
        };
        match name {
            "mkdir" | "mkdirat" => {
                if let Some(path) = quoted(args) {
                    calls.push(Call::Mkdir(path));
                }
            }
            "openat" | "open" => {
                if let Some(path) = quoted(args) {
                    calls.push(Call::Open {
                        path,
                        fd: result,
                        create: args.contains("O_CREAT"),
                        directory: args.contains("O_DIRECTORY"),
                    });
                }
            }
            "fsync" | "fdatasync" => {
                if let Ok(fd) = args.trim_end_matches(')').trim().parse() {
                    calls.push(Call::Sync(fd));
                }
            }
            _ => {}
        }
    }
    calls
}

/// Paths of the directories fsynced (through a descriptor opened with O_DIRECTORY on
/// them) after call number `after`.
fn dirs_synced_after(calls: &[Call], after: usize) -> Vec<&str> {
    let mut open: HashMap<i32, (&str, bool)> = HashMap::new();
    let mut synced = Vec::new();
    for (index, call) in calls.iter().enumerate() {
        match call {
            Call::Open {
                path,
                fd,
                directory,
                ..
            } => {
                open.insert(*fd, (path, *directory));
            }
            Call::Sync(fd) if index > after => {
                if let Some(&(path, true)) = open.get(fd) {
                    synced.push(path);
                }
            }
            _ => {}
        }
    }
    synced
}

/// The index of the first call matching `found`, or a panic showing the trace.
fn find(calls: &[Call], what: &str, found: impl Fn(&Call) -> bool) -> usize {
    calls
        .iter()
        .position(found)
        .unwrap_or_else(|| panic!("no {what} in the trace: {calls:#?}"))
}

/// Marks a point in the trace: the child creates a file of this name.
const MARK: &str = "quelog-trace-mark-reopen";

fn strace_installed() -> bool {
    Command::new("strace")
        .arg("-V")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Opening a `FileSink` where neither the file nor its directories exist fsyncs the
/// directory that holds each new entry, after creating it: the file's directory, and
/// the parent of every directory created on the way. Opening it again (everything
/// exists) fsyncs no directory.
#[test]
fn creating_the_file_and_its_directories_fsyncs_their_parents() {
    const NAME: &str = "creating_the_file_and_its_directories_fsyncs_their_parents";
    let parent = child::scenario().is_none();
    if parent && !strace_installed() {
        assert!(
            std::env::var_os("CI").is_none(),
            "strace is not installed, and CI is set: this test must run in CI"
        );
        // Straight to the descriptor: libtest captures `eprintln!` of passing tests.
        let _ = std::io::stderr()
            .write_all(format!("\n!!!!! {NAME}: skipped: strace not installed !!!!!\n").as_bytes());
        return;
    }
    let dir = parent.then(|| test_dir("dir-fsync"));
    let trace = dir.as_ref().map(|d| d.join("strace.out"));
    let mut command = Command::new("strace");
    if let (Some(dir), Some(trace)) = (&dir, &trace) {
        let inner = child::self_test_command(NAME, NAME);
        command
            .args(["-f", "-qq", "-s", "4096", "-o"])
            .arg(trace)
            .args(["-e", "trace=openat,open,mkdir,mkdirat,fsync,fdatasync"])
            .arg("--")
            .arg(inner.get_program())
            .args(inner.get_args())
            .env(child::SCENARIO_ENV, NAME)
            .env(DIR_ENV, dir);
    }
    in_child(NAME, command, |dir| {
        let path = dir.join("a/b/app.log");
        let mut sink = FileSink::open(&path).unwrap();
        sink.write_batch(b"one\n").unwrap();
        sink.sync().unwrap();
        drop(sink);
        std::fs::write(dir.join(MARK), b"").unwrap();
        let mut sink = FileSink::open(&path).unwrap();
        sink.write_batch(b"two\n").unwrap();
        sink.sync().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one\ntwo\n");
    });
    let (Some(dir), Some(trace)) = (dir, trace) else {
        return;
    };
    let text = std::fs::read_to_string(&trace).unwrap();
    let calls = parse_trace(&text);
    // What a failure shows of the trace: the calls on the test's paths, and syncs.
    let dir_text = dir.to_str().unwrap();
    let text = text
        .lines()
        .filter(|l| l.contains(dir_text) || l.contains("sync("))
        .collect::<Vec<_>>()
        .join("\n");
    let show = |p: &Path| p.to_str().unwrap().to_owned();
    let (a, b, file) = (dir.join("a"), dir.join("a/b"), dir.join("a/b/app.log"));

    // Each new entry, and the directory that must be fsynced after it appears.
    let made_a = find(
        &calls,
        "mkdir of a",
        |c| matches!(c, Call::Mkdir(p) if *p == show(&a)),
    );
    let made_b = find(
        &calls,
        "mkdir of a/b",
        |c| matches!(c, Call::Mkdir(p) if *p == show(&b)),
    );
    let made_file = find(
        &calls,
        "creating open of the file",
        |c| matches!(c, Call::Open { path, create: true, .. } if *path == show(&file)),
    );
    for (entry, made, holder) in [
        ("a", made_a, show(&dir)),
        ("a/b", made_b, show(&a)),
        ("app.log", made_file, show(&b)),
    ] {
        let synced = dirs_synced_after(&calls, made);
        assert!(
            synced.contains(&holder.as_str()),
            "no fsync of {holder} (holding the new {entry}) after creating it; \
             directories fsynced after: {synced:?}\n--- trace ---\n{text}"
        );
    }
    // Nothing was created the second time: no directory fsync at all.
    let mark = find(
        &calls,
        "the mark",
        |c| matches!(c, Call::Open { path, .. } if path.ends_with(MARK)),
    );
    let synced = dirs_synced_after(&calls, mark);
    assert!(
        synced.is_empty(),
        "opening an existing file fsynced {synced:?}\n--- trace ---\n{text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
