//! Small helpers every integration suite uses.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh, empty directory under cargo's per-target temporary directory (so test
/// runs leave nothing in `/tmp`), unique per process and call.
pub fn temp_dir(suite: &str, name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "quelog-{suite}-{}-{name}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test directory");
    dir
}

/// A path for a log file named `name` in a fresh directory (not created yet, so
/// the sink's own directory creation is exercised too).
pub fn temp_log(suite: &str, name: &str) -> PathBuf {
    temp_dir(suite, name).join("logs").join(name)
}

/// The message part of a text line: after "] target: ".
pub fn message(line: &str) -> &str {
    let after_thread = line.split_once("] ").expect("thread field").1;
    after_thread.split_once(": ").expect("target field").1
}

/// The lines of the file at `path` (none if it does not exist).
pub fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// How often [`Counted`] was formatted in this process.
pub static COUNTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A field value that counts its `Debug` calls in [`COUNTED`]: a record the filter
/// refuses must never format it.
pub struct Counted;

impl std::fmt::Debug for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        COUNTED.fetch_add(1, Ordering::Relaxed);
        f.write_str("counted")
    }
}

/// A sink that keeps every batch in memory, shared with the test through its clones.
#[derive(Clone, Default)]
pub struct Memory(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl quelog::Sink for Memory {
    fn write_batch(&mut self, batch: &[u8]) -> std::io::Result<()> {
        self.0.lock().unwrap().extend_from_slice(batch);
        Ok(())
    }
    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// For a child that is about to crash on purpose: no core file.
pub fn no_core_dumps() {
    let limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: sets this process's core size limit from a live local.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &limit) };
}
