//! Files moved under quelog: reopen on request (`QueueListener::reopen`,
//! `Guard::reopen`, SIGHUP) and files renamed away or deleted without one.

mod support;

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{LevelFilter, Log};
use quelog::test_hooks::ListenerHooks;
use quelog::{Builder, Error, Output, QueueHandler, Sink};
use support::common::{lines, message, temp_dir};

fn info(handler: &QueueHandler, text: &str) {
    handler.log(
        &log::Record::builder()
            .level(log::Level::Info)
            .target("app")
            .args(format_args!("{text}"))
            .build(),
    );
}

/// The messages of the records (not quelog's own lines) in the file at `path`.
fn records(path: &Path) -> Vec<String> {
    lines(path)
        .iter()
        .filter(|l| !l.contains(" quelog: "))
        .map(|l| message(l).to_owned())
        .collect()
}

/// quelog's own lines in the file at `path`.
fn notices(path: &Path) -> Vec<String> {
    lines(path)
        .into_iter()
        .filter(|l| l.contains(" quelog: "))
        .collect()
}

fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix} {i}")).collect()
}

/// The reproduction: ten records after `mv app.log app.log.1` all went to
/// `app.log.1`, `app.log` was never created again, and `flush()` said `Ok`.
#[test]
fn records_after_a_rename_go_to_the_path_again() {
    let dir = temp_dir("reopen", "rename");
    let path = dir.join("app.log");
    let (handler, listener) = Builder::new().output(Output::file(&path)).build().unwrap();
    for text in numbered("before", 3) {
        info(&handler, &text);
    }
    listener.flush().unwrap();
    std::fs::rename(&path, dir.join("app.log.1")).unwrap();
    // Longer than the listener's check interval (10 ms): the first batch looks.
    std::thread::sleep(Duration::from_millis(30));
    for text in numbered("after", 10) {
        info(&handler, &text);
    }
    listener.flush().unwrap();
    assert_eq!(records(&dir.join("app.log.1")), numbered("before", 3));
    assert_eq!(records(&path), numbered("after", 10));
    let told = notices(&path);
    assert!(
        told.len() == 1 && told[0].contains("renamed away"),
        "{told:?}"
    );

    // Without the pause: the records land on either side of the switch, each once and
    // in order, and the flush does not answer before the path is there again.
    std::fs::rename(&path, dir.join("app.log.2")).unwrap();
    for text in numbered("quick", 10) {
        info(&handler, &text);
    }
    listener.flush().unwrap();
    assert!(path.exists(), "flush answered Ok with app.log missing");
    let mut quick = records(&dir.join("app.log.2"));
    quick.retain(|m| m.starts_with("quick"));
    quick.extend(records(&path));
    assert_eq!(quick, numbered("quick", 10));
    let stats = listener.stop().unwrap();
    assert_eq!(stats.detached_reopens, 2);
    assert_eq!(stats.written, 23);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_deleted_file_is_created_again_with_a_notice() {
    let dir = temp_dir("reopen", "deleted");
    let path = dir.join("logs/app.log");
    let (handler, listener) = Builder::new().output(Output::file(&path)).build().unwrap();
    info(&handler, "gone with the file");
    listener.flush().unwrap();
    std::fs::remove_dir_all(dir.join("logs")).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    for text in numbered("kept", 5) {
        info(&handler, &text);
    }
    listener.flush().unwrap();
    assert_eq!(records(&path), numbered("kept", 5));
    let told = notices(&path);
    assert!(
        told.len() == 1 && told[0].contains("was deleted"),
        "{told:?}"
    );
    assert!(told[0].contains(" WARN "), "{told:?}");
    assert_eq!(listener.stop().unwrap().detached_reopens, 1);
    let _ = std::fs::remove_dir_all(dir);
}

/// What a sink was asked to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Write(usize),
    Sync,
    Reopen,
}

/// Records its calls; its reopen fails while `fail_reopen` is set.
#[derive(Clone, Default)]
struct Recording {
    calls: Arc<Mutex<Vec<Call>>>,
    fail_reopen: Arc<AtomicBool>,
}

impl Recording {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn reopens(&self) -> usize {
        self.calls().iter().filter(|c| **c == Call::Reopen).count()
    }
}

impl Sink for Recording {
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        let records = batch.iter().filter(|b| **b == b'\n').count();
        self.calls.lock().unwrap().push(Call::Write(records));
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        self.calls.lock().unwrap().push(Call::Sync);
        Ok(())
    }
    fn reopen(&mut self) -> io::Result<()> {
        if self.fail_reopen.load(Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(libc::EACCES));
        }
        self.calls.lock().unwrap().push(Call::Reopen);
        Ok(())
    }
}

/// `reopen()` is a barrier: every record logged before it is written and synced to
/// the old destination before the sink reopens, and the call returns after that.
#[test]
fn reopen_writes_and_syncs_what_came_before_then_reopens() {
    let sink = Recording::default();
    let (handler, listener) = Builder::new()
        .sync(quelog::SyncPolicy::Never)
        .sink(sink.clone(), LevelFilter::Trace)
        .build()
        .unwrap();
    for text in numbered("before", 50) {
        info(&handler, &text);
    }
    listener.reopen().unwrap();
    let calls = sink.calls();
    let reopen_at = calls
        .iter()
        .position(|c| *c == Call::Reopen)
        .expect("reopened");
    let written: usize = (calls[..reopen_at].iter())
        .map(|c| if let Call::Write(n) = c { *n } else { 0 })
        .sum();
    assert_eq!(written, 50, "{calls:?}");
    assert_eq!(calls[reopen_at - 1], Call::Sync, "{calls:?}");
    assert_eq!(listener.stats().reopens, 1);

    // A sink that cannot reopen: the answer says so, and so does a line in it.
    sink.fail_reopen.store(true, Ordering::Relaxed);
    match listener.reopen() {
        Err(Error::Sink { message, .. }) => assert!(message.contains("reopen failed"), "{message}"),
        other => panic!("expected a sink error, got {other:?}"),
    }
    let stats = listener.stop().unwrap();
    assert_eq!(stats.reopens, 2);
    assert_eq!(stats.written, 50);
    assert!(matches!(sink.calls().last(), Some(Call::Sync)));
}

/// SIGHUP sent to the process reaches a thread that runs the handler (not the
/// listener, which blocks every signal), and the listener reopens; after the stop,
/// SIGHUP is ignored instead of ending the process.
#[test]
fn sighup_asks_the_listener_to_reopen_until_the_stop() {
    let sink = Recording::default();
    let (handler, listener) = Builder::new()
        .sink(sink.clone(), LevelFilter::Trace)
        .reopen_on_sighup(true)
        .build()
        .unwrap();
    info(&handler, "before the signal");
    // SAFETY: sends SIGHUP to this process; quelog's handler is registered.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while sink.reopens() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        sink.reopens(),
        1,
        "SIGHUP did not reopen: {:?}",
        sink.calls()
    );
    let calls = sink.calls();
    let reopen_at = calls.iter().position(|c| *c == Call::Reopen).unwrap();
    assert!(calls[..reopen_at].contains(&Call::Write(1)), "{calls:?}");
    let stats = listener.stop().unwrap();
    assert_eq!(stats.reopens, 1);
    // SAFETY: as above; the handler now does nothing, the process must survive.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(sink.reopens(), 1);
}

const CRASH_CHILD_ENV: &str = "QUELOG_REOPEN_CRASH_DIR";

/// The child of the test below: reopens after a rename (with `Guard::reopen`), holds
/// the listener back, logs, and aborts: the crash drain writes what is queued.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CRASH_CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    support::common::no_core_dumps();
    let held = Arc::new(AtomicBool::new(false));
    let guard = Builder::new()
        .file(dir.join("app.log"))
        .drain_on_crash(true)
        .listener_hooks(ListenerHooks {
            hold: Some(Arc::clone(&held)),
            die: None,
        })
        .install()
        .unwrap();
    log::info!("before the rotation");
    guard.flush().unwrap();
    std::fs::rename(dir.join("app.log"), dir.join("app.log.1")).unwrap();
    guard.reopen().unwrap();
    held.store(true, Ordering::Release);
    for i in 0..5 {
        log::info!("drained {i}");
    }
    std::mem::forget(guard);
    // SAFETY: ends the process with SIGABRT, on purpose.
    unsafe { libc::abort() }
}

/// After a reopen the crash drain writes into the new file, not the closed old one.
#[test]
fn the_crash_drain_writes_to_the_reopened_file() {
    if std::env::var_os(CRASH_CHILD_ENV).is_some() {
        return;
    }
    let dir = temp_dir("reopen", "crash");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CRASH_CHILD_ENV, &dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the crash child hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
    assert_eq!(records(&dir.join("app.log.1")), ["before the rotation"]);
    assert_eq!(records(&dir.join("app.log")), numbered("drained", 5));
    let _ = std::fs::remove_dir_all(dir);
}
