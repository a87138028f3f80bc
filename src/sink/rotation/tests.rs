use super::*;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("quelog-rot-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn open(path: &Path, rotation: Rotation) -> RotatingFileSink {
    RotatingFileSink::open(path.to_owned(), rotation, false, Arc::default()).unwrap()
}

#[test]
fn a_rewrite_after_a_failed_sync_skips_what_went_into_files_rotated_since() {
    let dir = temp_dir("rewrite");
    let path = dir.join("app.log");
    let mut sink = open(&path, Rotation::size(10).naming(Naming::Numbers));
    sink.write_batch(b"one\n").unwrap();
    // "two" fits, "three" goes to a new file: the first one is synced at the rotation.
    sink.write_batch(b"two\nthree\n").unwrap();
    // As the listener does after a failed sync: rewrite everything since the last
    // good one.
    sink.prepare_rewrite().unwrap();
    sink.write_batch(b"one\ntwo\nthree\n").unwrap();
    sink.sync().unwrap();
    assert_eq!(std::fs::read(dir.join("app.log.1")).unwrap(), b"one\ntwo\n");
    assert_eq!(std::fs::read(&path).unwrap(), b"three\n");
    assert!(
        !dir.join("app.log.2").exists(),
        "rewritten into another file"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_batch_is_split_only_between_lines() {
    let dir = temp_dir("split");
    let path = dir.join("app.log");
    let mut sink = open(&path, Rotation::size(8).naming(Naming::Numbers));
    // A line longer than the size gets a file of its own.
    sink.write_batch(b"a\nbb\nccccccccccc\nd\n").unwrap();
    sink.sync().unwrap();
    assert_eq!(std::fs::read(dir.join("app.log.2")).unwrap(), b"a\nbb\n");
    assert_eq!(
        std::fs::read(dir.join("app.log.1")).unwrap(),
        b"ccccccccccc\n"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"d\n");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn reopen_follows_the_live_path() {
    let dir = temp_dir("reopen");
    let path = dir.join("app.log");
    let mut sink = open(&path, Rotation::size(1 << 20));
    sink.write_batch(b"before\n").unwrap();
    std::fs::rename(&path, dir.join("moved")).unwrap();
    sink.reopen().unwrap();
    sink.write_batch(b"after\n").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"after\n");
    let _ = std::fs::remove_dir_all(dir);
}
