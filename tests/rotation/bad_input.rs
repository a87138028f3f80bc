//! Bad input: a directory that becomes unwritable, a disk that fills during
//! rotations (blocks, then inodes). No panic, no hang; what cannot be done is counted
//! in `Stats::rotation` and said in the log.
//!
//! Both need a mount (a read-only bind mount, a small tmpfs), so they need root, as CI
//! has. Without root the unwritable directory is made with `chmod` instead, and the
//! full disk is skipped with a line saying so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{files, log_seqs, rotating, seqs, start, stop, temp_dir};
use quelog::Rotation;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn run(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// Something mounted on `dir` (or, without root, its mode changed) until dropped.
struct Mounted {
    dir: PathBuf,
    mounted: bool,
}

impl Mounted {
    /// `dir` made read-only: a read-only bind mount of itself (root), else mode 0555.
    /// Files opened before stay writable through their descriptors.
    fn read_only(dir: &Path) -> Mounted {
        let name = dir.to_str().unwrap();
        if is_root() {
            assert!(run("mount", &["--bind", name, name]), "bind mount");
            let remounted = run("mount", &["-o", "remount,bind,ro", name]);
            let guard = Mounted {
                dir: dir.to_owned(),
                mounted: true,
            };
            assert!(remounted, "read-only remount");
            return guard;
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        Mounted {
            dir: dir.to_owned(),
            mounted: false,
        }
    }

    /// A tmpfs with these options on `dir`; `None` without the right to mount.
    fn tmpfs(dir: &Path, options: &str) -> Option<Mounted> {
        let name = dir.to_str().unwrap();
        run("mount", &["-t", "tmpfs", "-o", options, "tmpfs", name]).then(|| Mounted {
            dir: dir.to_owned(),
            mounted: true,
        })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            let _ = run("umount", &["-l", self.dir.to_str().unwrap()]);
        } else {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755));
        }
    }
}

/// Every `seq` of `writer` across `dir`, sorted, to compare with what was logged.
fn all_seqs(dir: &Path, writer: &str) -> Vec<u64> {
    let mut found: Vec<u64> = files(dir)
        .values()
        .flat_map(|c| seqs(c))
        .filter(|(w, _)| w == writer)
        .map(|(_, n)| n)
        .collect();
    found.sort_unstable();
    found
}

fn text_of(dir: &Path) -> String {
    files(dir)
        .values()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect()
}

#[test]
fn an_unwritable_directory_fails_rotations_counts_and_says_so_and_loses_nothing() {
    let dir = temp_dir("unwritable").join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("app.log");
    let (handler, listener) = start(rotating(&path, Rotation::size(2 << 10)));
    log_seqs(&handler, "a", 0..100);
    listener.flush().unwrap();
    let before = listener.stats().rotation;
    let read_only = Mounted::read_only(&dir);
    log_seqs(&handler, "a", 100..300);
    listener.flush().unwrap();
    let during = listener.stats().rotation;
    assert!(during.failed > 0, "{during:?}");
    assert_eq!(during.rotations, before.rotations);
    drop(read_only);
    // Writable again: rotations resume after the backoff.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut n = 300;
    while listener.stats().rotation.rotations == during.rotations && Instant::now() < deadline {
        log_seqs(&handler, "a", n..n + 10);
        n += 10;
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = stop(listener);
    assert!(stats.rotation.rotations > during.rotations, "{stats:?}");
    assert_eq!((stats.lost, stats.written), (0, n));
    assert_eq!(all_seqs(&dir, "a"), (0..n).collect::<Vec<_>>());
    assert!(text_of(&dir).contains("quelog: rotating"), "no notice line");
}

#[test]
fn a_disk_that_fills_during_rotations_counts_and_recovers() {
    let dir = temp_dir("full").join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    let Some(mount) = Mounted::tmpfs(&dir, "size=256k") else {
        println!("skipped: cannot mount a tmpfs (needs root)");
        return;
    };
    let path = dir.join("app.log");
    let rotation = Rotation::size(16 << 10).compress(true);
    let (handler, listener) = start(rotating(&path, rotation));
    log_seqs(&handler, "a", 0..200);
    listener.flush().unwrap();
    // The live file so close to its size that the next record rotates first.
    let mut n = 200;
    loop {
        log_seqs(&handler, "a", n..n + 1);
        n += 1;
        listener.flush().unwrap();
        let live = std::fs::read(&path).unwrap();
        let line = live
            .iter()
            .rev()
            .skip(1)
            .position(|&b| b == b'\n')
            .unwrap_or(live.len());
        if live.len() + line + 1 > 16 << 10 {
            break;
        }
    }
    let rotations = listener.stats().rotation.rotations;
    // Fill what is left.
    let filler = dir.join("filler");
    let chunk = vec![b'x'; 4096];
    let mut file = std::fs::File::create(&filler).unwrap();
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
    drop(file);
    log_seqs(&handler, "a", n..n + 1000);
    // Losses are the flush's answer; nothing hangs or panics.
    assert!(listener.flush().is_err());
    let full = listener.stats();
    std::fs::remove_file(&filler).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    log_seqs(&handler, "a", 1200..1300);
    let again = listener.flush();
    assert!(again.is_ok(), "{again:?} {:?}", listener.stats());
    let stats = stop(listener);
    assert!(full.lost > 0 && full.write_errors > 0, "{full:?}");
    assert!(
        stats.rotation.compression_failed > 0,
        "{:?}",
        stats.rotation
    );
    assert!(full.rotation.rotations > rotations, "{full:?}");
    let text = text_of(&dir);
    assert!(text.contains("records lost (No space left on device)"));
    assert!(
        text.contains("quelog: compressing"),
        "no compression notice: {}",
        text.lines()
            .filter(|l| l.contains("quelog:"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The records after the disk had room again are all there.
    let found = all_seqs(&dir, "a");
    assert!((1200..1300).all(|n| found.binary_search(&n).is_ok()));
    drop(mount);

    // Out of inodes: the live path cannot be created again after the rename, so the
    // rotation is undone and the live file takes the records: none lost.
    let Some(_mount) = Mounted::tmpfs(&dir, "size=1m,nr_inodes=3") else {
        panic!("a second tmpfs could not be mounted");
    };
    let (handler, listener) = start(rotating(&path, Rotation::size(1 << 10)));
    // The root directory and the live file take two inodes; this takes the last.
    std::fs::write(dir.join("filler"), b"").unwrap();
    log_seqs(&handler, "b", 0..100);
    listener.flush().unwrap();
    let stats = stop(listener);
    assert!(
        stats.rotation.failed > 0 && stats.rotation.rotations == 0,
        "{stats:?}"
    );
    assert_eq!((stats.lost, stats.written), (0, 100));
    assert_eq!(all_seqs(&dir, "b"), (0..100).collect::<Vec<_>>());
    assert!(text_of(&dir).contains("quelog: rotating"));
}
