//! The listener must never close its file's descriptor under a crash drain that is
//! still writing with it: the number would be free for the next `open`, and the
//! drain's lines would land in whatever file got it.
//!
//! The log "file" is a FIFO that the parent does not read at first, so the drain (on
//! SIGABRT from a child thread) blocks in `write(2)` with the pipe full. Meanwhile the
//! listener thread ends (the test hook kills it, the way a bug would; it cannot take
//! the ring from the drain), and the child's main thread opens another file, which
//! takes the lowest free descriptor.
//! Then the parent reads the FIFO, the drain finishes, and the process dies by the
//! signal. The other file must hold none of the drain's lines.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quelog::test_hooks::ListenerHooks;

const CHILD_ENV: &str = "QUELOG_CRASH_FD_CHILD";
const RECORDS: usize = 3000;

#[test]
fn child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    support::common::no_core_dumps();
    let held = Arc::new(AtomicBool::new(true));
    let die = Arc::new(AtomicBool::new(false));
    let guard = quelog::Builder::new()
        .file(dir.join("fifo"))
        .drain_on_crash(true)
        .capacity(1 << 20)
        .shutdown_timeout(Duration::from_secs(20))
        .listener_hooks(ListenerHooks {
            hold: Some(held),
            die: Some(die.clone()),
        })
        .install()
        .unwrap();
    // About 300 KB of lines: far more than the pipe holds.
    let pad = "p".repeat(60);
    for i in 0..RECORDS {
        log::info!("drained record {i} {pad}");
    }
    std::thread::spawn(|| {
        // SAFETY: abort is always safe to call; it ends the process by SIGABRT.
        unsafe { libc::abort() }
    });
    // Let the drain start and fill the pipe.
    std::thread::sleep(Duration::from_millis(300));
    // The listener ends while the drain writes; its end waits 2 s for the drain.
    die.store(true, std::sync::atomic::Ordering::Release);
    std::thread::sleep(Duration::from_secs(3));
    let victim = std::fs::File::create(dir.join("victim")).unwrap();
    use std::os::fd::AsRawFd;
    println!("victim fd {}", victim.as_raw_fd());
    println!("READY");
    // The drain finishes once the parent reads; the signal then ends the process.
    std::thread::sleep(Duration::from_secs(30));
    drop((victim, guard));
    println!("STILL ALIVE");
}

#[test]
fn the_listener_never_closes_its_file_under_a_running_crash_drain() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = support::common::temp_dir("crash-fd", "fifo");
    let fifo = dir.join("fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path and a mode; the result is checked.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut report = Vec::new();
    loop {
        match lines_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line == "READY" => break,
            Ok(line) => report.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("the child hung before it was ready: {report:?}");
            }
        }
    }
    // Now drain the pipe: the crash drain finishes and the signal ends the child.
    let mut drained = String::new();
    std::fs::File::open(&fifo)
        .unwrap()
        .read_to_string(&mut drained)
        .unwrap();
    let status = child.wait().unwrap();
    let rest: Vec<String> = lines_rx.try_iter().collect();
    let victim = std::fs::read_to_string(dir.join("victim")).unwrap();
    let in_victim = victim.matches("drained record").count();
    let in_fifo = drained.matches("drained record").count();
    eprintln!(
        "{report:?}; records through the FIFO {in_fifo}, in the other file {in_victim}; \
         child ended {status:?} after {:.2?}",
        started.elapsed()
    );
    assert_eq!(
        in_victim, 0,
        "the drain wrote into a file that reused its descriptor"
    );
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{rest:?}");
    assert_eq!(in_fifo, RECORDS, "every record through the drain");
    assert!(drained.contains("the crash handler wrote 3000 records"));
    let _ = std::fs::remove_dir_all(dir);
}
