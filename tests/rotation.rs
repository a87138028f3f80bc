//! Rotation, names, retention and compression of `Output::file(..).rotate(..)`, and
//! the bad inputs of issue 10 (an unwritable directory, a disk that fills, a clock that
//! jumps back, retention 0). Time rotation runs on a fake clock
//! (`Rotation::clock`, test hooks), so nothing here waits for the hour to change.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use log::{Level, Log, Record};
use quelog::test_hooks::FakeClock;
use quelog::{
    ListenerConfig, Naming, Output, Overflow, QueueConfig, QueueHandler, QueueListener, Rotation,
    Stats,
};
use support::rotated::{files, names, seqs};

/// 2026-11-22T10:00:00Z.
const NOV_22_10H: i64 = 1_795_341_600;
const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

fn temp_dir(name: &str) -> PathBuf {
    support::common::temp_dir("rotation", name)
}

/// A queue whose producers wait for room (so under load nothing is dropped and every
/// record can be looked for), served by a listener writing `outputs`.
fn start(outputs: Vec<Output>) -> (QueueHandler, QueueListener) {
    let mut config = QueueConfig::default();
    config.capacity = 1 << 20;
    config.overflow = Overflow::Block {
        timeout: Duration::from_secs(10),
    };
    let handler = QueueHandler::new(&config).unwrap();
    let listener =
        QueueListener::start_outputs(&handler, outputs, ListenerConfig::default()).unwrap();
    (handler, listener)
}

fn log(handler: &QueueHandler, args: std::fmt::Arguments<'_>) {
    handler.log(
        &Record::builder()
            .level(Level::Info)
            .target("rotation")
            .args(args)
            .build(),
    );
}

/// Logs `seq <writer> <n>` for `n` in `range`, with a payload to fill files faster.
fn log_seqs(handler: &QueueHandler, writer: &str, range: std::ops::Range<u64>) {
    for n in range {
        log(handler, format_args!("seq {writer} {n} {:40}", "pad"));
    }
}

fn stop(listener: QueueListener) -> Stats {
    listener.stop().unwrap()
}

fn rotating(path: &Path, rotation: Rotation) -> Vec<Output> {
    vec![Output::file(path).rotate(rotation)]
}

/// Dated files of the day `stamp` in rotation order (no number first), then the
/// live file.
fn in_order(dir: &Path, live: &str) -> Vec<(String, Vec<u8>)> {
    let mut all: Vec<(String, Vec<u8>)> = files(dir).into_iter().collect();
    let rank = |name: &str| -> (u8, String, u64) {
        if name == live {
            return (1, String::new(), 0);
        }
        let base = name.trim_end_matches(".gz").trim_end_matches(".log");
        let mut parts = base.split('.').skip(1);
        let stamp = parts.next().unwrap_or_default().to_owned();
        let number = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        (0, stamp, number)
    };
    all.sort_by_key(|(name, _)| rank(name));
    all
}

#[test]
fn size_rotation_under_load_keeps_every_record_once_in_order_on_whole_lines() {
    let dir = temp_dir("load");
    let path = dir.join("app.log");
    let clock = FakeClock::at(NOV_22_10H);
    let (handler, listener) = start(rotating(&path, Rotation::size(64 << 10).clock(clock)));
    const PER_THREAD: u64 = 20_000;
    std::thread::scope(|scope| {
        for t in 0..4 {
            let handler = &handler;
            scope.spawn(move || log_seqs(handler, &format!("t{t}"), 0..PER_THREAD));
        }
    });
    let stats = stop(listener);
    assert_eq!(stats.dropped.total(), 0, "{stats:?}");
    assert_eq!(stats.written, 4 * PER_THREAD);
    let ordered = in_order(&dir, "app.log");
    assert!(ordered.len() > 20, "rotated into {} files", ordered.len());
    let mut next = std::collections::HashMap::new();
    for (name, content) in &ordered {
        assert!(content.ends_with(b"\n"), "{name} ends on a torn line");
        assert!(
            content.len() <= 64 << 10,
            "{name} is {} bytes",
            content.len()
        );
        for (writer, n) in seqs(content) {
            let expected = next.entry(writer.clone()).or_insert(0u64);
            assert_eq!(n, *expected, "{writer} out of order or doubled in {name}");
            *expected += 1;
        }
    }
    for t in 0..4 {
        assert_eq!(
            next.get(&format!("t{t}")),
            Some(&PER_THREAD),
            "t{t} lost records"
        );
    }
    assert_eq!(stats.rotation.rotations as usize, ordered.len() - 1);
    println!(
        "{} records checked across {} files",
        4 * PER_THREAD,
        ordered.len()
    );
}

#[test]
fn numbered_names_shift_like_logrotate_and_keep_the_newest() {
    let dir = temp_dir("numbers");
    let path = dir.join("app.log");
    let rotation = Rotation::size(4 << 10).naming(Naming::Numbers).keep(3);
    let (handler, listener) = start(rotating(&path, rotation));
    log_seqs(&handler, "a", 0..1000);
    let stats = stop(listener);
    assert_eq!(
        names(&dir),
        ["app.log", "app.log.1", "app.log.2", "app.log.3"]
    );
    // Newest to oldest: live, .1, .2, .3 hold consecutive runs of records.
    let all = files(&dir);
    let mut last_seen = u64::MAX;
    for name in ["app.log", "app.log.1", "app.log.2", "app.log.3"] {
        let records = seqs(&all[name]);
        let (first, last) = (records[0].1, records[records.len() - 1].1);
        assert!(last < last_seen && (last_seen == u64::MAX || last + 1 == last_seen));
        last_seen = first;
    }
    assert!(
        stats.rotation.removed > 0 && stats.rotation.rotations > 3,
        "{stats:?}"
    );
}

#[test]
fn daily_and_hourly_rotation_follow_the_clock_and_combine_with_a_size_cap() {
    let dir = temp_dir("daily");
    let path = dir.join("app.log");
    let clock = FakeClock::at(NOV_22_10H);
    let rotation = Rotation::daily().max_size(8 << 10).clock(clock.clone());
    let (handler, listener) = start(rotating(&path, rotation));
    log_seqs(&handler, "a", 0..10);
    listener.flush().unwrap();
    clock.advance(DAY);
    log_seqs(&handler, "b", 0..300);
    listener.flush().unwrap();
    clock.advance(DAY);
    log_seqs(&handler, "c", 0..1);
    stop(listener);
    let found = names(&dir);
    assert!(
        found.contains(&"app.2026-11-22.log".to_owned()),
        "{found:?}"
    );
    assert!(
        found.contains(&"app.2026-11-23.log".to_owned()),
        "{found:?}"
    );
    assert!(
        found.contains(&"app.2026-11-23.1.log".to_owned()),
        "{found:?}"
    );
    let all = files(&dir);
    assert_eq!(seqs(&all["app.2026-11-22.log"]).len(), 10);
    assert_eq!(seqs(&all["app.log"]), [("c".to_owned(), 0)]);

    let dir = temp_dir("hourly");
    let path = dir.join("app.log");
    let clock = FakeClock::at(NOV_22_10H + 59 * 60);
    let rotation = Rotation::hourly().clock(clock.clone());
    let (handler, listener) = start(rotating(&path, rotation));
    log_seqs(&handler, "a", 0..3);
    listener.flush().unwrap();
    clock.advance(60);
    log_seqs(&handler, "b", 0..3);
    stop(listener);
    assert_eq!(names(&dir), ["app.2026-11-22T10.log", "app.log"]);
}

#[test]
fn a_restart_rotates_yesterdays_file_and_on_request_any_file() {
    let dir = temp_dir("restart");
    let path = dir.join("app.log");
    std::fs::write(&path, "from before\n").unwrap();
    // Written "now" by the real clock; the fake one is a day later.
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + DAY;
    let clock = FakeClock::at(later);
    let (handler, listener) = start(rotating(&path, Rotation::daily().clock(clock.clone())));
    log_seqs(&handler, "a", 0..1);
    let stats = stop(listener);
    assert_eq!(stats.rotation.rotations, 1);
    assert_eq!(names(&dir).len(), 2);

    let dir = temp_dir("on-start");
    let path = dir.join("app.log");
    std::fs::write(&path, "from before\n").unwrap();
    let rotation = Rotation::size(1 << 20).rotate_on_start(true);
    let (handler, listener) = start(rotating(&path, rotation));
    log_seqs(&handler, "a", 0..1);
    let stats = stop(listener);
    assert_eq!(stats.rotation.rotations, 1);
    let all = files(&dir);
    assert_eq!(all.len(), 2);
    assert_eq!(seqs(&all["app.log"]).len(), 1);
}

#[test]
fn an_existing_name_is_never_overwritten() {
    let dir = temp_dir("no-overwrite");
    let path = dir.join("app.log");
    std::fs::write(dir.join("app.2026-11-22.log"), "someone's\n").unwrap();
    std::fs::write(dir.join("app.2026-11-22.2.log.gz"), "not even gzip").unwrap();
    let clock = FakeClock::at(NOV_22_10H);
    let (handler, listener) = start(rotating(&path, Rotation::size(100).clock(clock)));
    log_seqs(&handler, "a", 0..3);
    stop(listener);
    assert_eq!(
        std::fs::read(dir.join("app.2026-11-22.log")).unwrap(),
        b"someone's\n"
    );
    // Past the highest number of the day, so the order of names stays the order of
    // files.
    let found = names(&dir);
    assert!(
        found.contains(&"app.2026-11-22.3.log".to_owned()),
        "{found:?}"
    );
    assert!(
        !found.contains(&"app.2026-11-22.1.log".to_owned()),
        "{found:?}"
    );
}

/// Five old rotated files, three unrelated ones.
fn old_files(dir: &Path) {
    for day in 15..20 {
        std::fs::write(dir.join(format!("app.2026-11-{day}.log")), "old\n").unwrap();
    }
    for other in ["app.log.bak", "other.2026-11-15.log", "app.2026-11-15.txt"] {
        std::fs::write(dir.join(other), "not quelog's\n").unwrap();
    }
}

#[test]
fn retention_counts_right_at_start_up_and_at_each_rotation_and_spares_other_files() {
    let dir = temp_dir("keep");
    let path = dir.join("app.log");
    old_files(&dir);
    let clock = FakeClock::at(NOV_22_10H);
    let rotation = || Rotation::daily().keep(3).clock(clock.clone());
    // Start-up prunes to 3 at once (tracing-appender prunes nothing: tracing#2937).
    let (handler, listener) = start(rotating(&path, rotation()));
    listener.flush().unwrap();
    let rotated = |dir: &Path| {
        names(dir)
            .into_iter()
            .filter(|n| n.starts_with("app.2026"))
            .filter(|n| n.ends_with(".log"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        rotated(&dir),
        [
            "app.2026-11-17.log",
            "app.2026-11-18.log",
            "app.2026-11-19.log"
        ]
    );
    log_seqs(&handler, "a", 0..1);
    listener.flush().unwrap();
    clock.advance(DAY);
    log_seqs(&handler, "b", 0..1);
    let stats = stop(listener);
    assert_eq!(stats.rotation.removed, 3);
    assert_eq!(
        rotated(&dir),
        [
            "app.2026-11-18.log",
            "app.2026-11-19.log",
            "app.2026-11-22.log"
        ]
    );
    // A restart keeps 3 rotated files, not 2 (tracing#3496 deletes one too many).
    let (_, listener) = start(rotating(&path, rotation()));
    stop(listener);
    assert_eq!(rotated(&dir).len(), 3);
    for other in ["app.log.bak", "other.2026-11-15.log", "app.2026-11-15.txt"] {
        assert!(dir.join(other).exists(), "{other} was removed");
    }
}

#[test]
fn max_age_removes_old_files_but_a_clock_set_back_removes_nothing() {
    let dir = temp_dir("max-age");
    let path = dir.join("app.log");
    old_files(&dir);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Ten days back: every file is "from the future", none is old.
    let clock = FakeClock::at(now - 10 * DAY);
    let rotation = Rotation::size(1 << 20).max_age(Duration::from_secs(3600));
    let (_, listener) = start(rotating(&path, rotation.clone().clock(clock.clone())));
    assert_eq!(stop(listener).rotation.removed, 0);
    assert_eq!(names(&dir).len(), 9);
    clock.set(now + 2 * HOUR);
    let (_, listener) = start(rotating(&path, rotation.clock(clock)));
    assert_eq!(stop(listener).rotation.removed, 5);
    assert_eq!(names(&dir).len(), 4);
}

#[test]
fn a_clock_jump_back_neither_rotates_nor_names_a_file_older_than_one_there() {
    let dir = temp_dir("clock-back");
    let path = dir.join("app.log");
    let real_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let clock = FakeClock::at(real_now + 10 * DAY);
    let rotation = || {
        Rotation::daily()
            .max_size(2 << 10)
            .keep(50)
            .clock(clock.clone())
    };
    let (handler, listener) = start(rotating(&path, rotation()));
    log_seqs(&handler, "a", 0..100);
    listener.flush().unwrap();
    let before = stop(listener);
    let stamp_of = |name: &str| name.split('.').nth(1).unwrap_or_default().to_owned();
    let first: Vec<String> = names(&dir)
        .iter()
        .filter(|n| *n != "app.log")
        .map(|n| stamp_of(n))
        .collect();
    clock.advance(-2 * DAY);
    let (handler, listener) = start(rotating(&path, rotation()));
    log_seqs(&handler, "b", 0..100);
    let after = stop(listener);
    assert_eq!(after.rotation.removed, 0);
    assert!(after.rotation.rotations > 0 && before.rotation.rotations > 0);
    // Every rotated file carries the newest date: none from two days back.
    for name in names(&dir).iter().filter(|n| *n != "app.log") {
        assert_eq!(stamp_of(name), first[0], "{name}");
    }
    let total: usize = files(&dir).values().map(|c| seqs(c).len()).sum();
    assert_eq!(total, 200);
}

#[test]
fn a_dst_change_in_local_time_makes_no_two_files_collide() {
    let dir = temp_dir("dst");
    let path = dir.join("app.log");
    // Summer time (+2 h) at 00:30 UTC: 02:30 local. Clocks go back to +1 h at 01:00 UTC.
    let clock = FakeClock::at(NOV_22_10H - 10 * HOUR + HOUR / 2);
    clock.set_utc_offset(2 * 3600);
    let rotation = Rotation::hourly().local_time(true).clock(clock.clone());
    let (handler, listener) = start(rotating(&path, rotation));
    log_seqs(&handler, "summer", 0..3);
    listener.flush().unwrap();
    // 01:10 UTC, 02:10 local again: the repeated hour goes on in the same file.
    clock.advance(40 * 60);
    clock.set_utc_offset(3600);
    log_seqs(&handler, "winter", 0..3);
    listener.flush().unwrap();
    clock.advance(HOUR);
    log_seqs(&handler, "next", 0..3);
    let stats = stop(listener);
    assert_eq!(stats.rotation.rotations, 1);
    assert_eq!(names(&dir), ["app.2026-11-22T02.log", "app.log"]);
    assert_eq!(seqs(&files(&dir)["app.2026-11-22T02.log"]).len(), 6);

    // A zone that falls back at midnight (Chile's did): 23:30 on the 21st, midnight
    // (a rotation), then 23:00 on the 21st again for an hour, then the 22nd for real.
    let dir = temp_dir("dst-midnight");
    let path = dir.join("app.log");
    let clock = FakeClock::at(NOV_22_10H - 10 * HOUR - HOUR / 2);
    clock.set_utc_offset(0);
    let rotation = Rotation::daily().local_time(true).clock(clock.clone());
    let (handler, listener) = start(rotating(&path, rotation));
    log_seqs(&handler, "before", 0..3);
    listener.flush().unwrap();
    clock.advance(HOUR / 2);
    log_seqs(&handler, "midnight", 0..3);
    listener.flush().unwrap();
    clock.set_utc_offset(-3600);
    log_seqs(&handler, "repeated", 0..3);
    listener.flush().unwrap();
    clock.advance(2 * HOUR);
    log_seqs(&handler, "after", 0..3);
    let stats = stop(listener);
    assert_eq!(stats.rotation.rotations, 1);
    assert_eq!(names(&dir), ["app.2026-11-21.log", "app.log"]);
    assert_eq!(seqs(&files(&dir)["app.log"]).len(), 9);
}

#[test]
fn compression_gzips_rotated_files_off_the_listener_and_counts_them() {
    let dir = temp_dir("gzip");
    let path = dir.join("app.log");
    let clock = FakeClock::at(NOV_22_10H);
    let rotation = Rotation::size(16 << 10).compress(true).clock(clock);
    let (handler, listener) = start(rotating(&path, rotation));
    log_seqs(&handler, "a", 0..2000);
    let stats = stop(listener);
    let found = names(&dir);
    let rotated = found.iter().filter(|n| *n != "app.log");
    assert!(rotated.clone().all(|n| n.ends_with(".log.gz")), "{found:?}");
    assert_eq!(stats.rotation.compressed, stats.rotation.rotations);
    let records: Vec<u64> = in_order(&dir, "app.log")
        .iter()
        .flat_map(|(_, c)| seqs(c))
        .map(|(_, n)| n)
        .collect();
    assert_eq!(records, (0..2000).collect::<Vec<_>>());
}

#[test]
fn start_up_finishes_what_a_crash_left_of_a_compression() {
    let dir = temp_dir("gzip-recover");
    let path = dir.join("app.log");
    // A temporary, a plain file beside its complete .gz, and one not compressed yet.
    std::fs::write(dir.join(".app.log.gz-42.tmp"), "half").unwrap();
    std::fs::write(dir.join(".other.log.gz-42.tmp"), "not ours").unwrap();
    std::fs::write(dir.join("app.2026-11-20.log"), "seq x 0\n").unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, b"seq x 0\n").unwrap();
    std::fs::write(dir.join("app.2026-11-20.log.gz"), gz.finish().unwrap()).unwrap();
    std::fs::write(dir.join("app.2026-11-21.log"), "seq x 1\n").unwrap();
    let (_, listener) = start(rotating(&path, Rotation::daily().compress(true)));
    let stats = stop(listener);
    assert_eq!(stats.rotation.compressed, 1);
    assert_eq!(
        names(&dir),
        [
            ".other.log.gz-42.tmp",
            "app.2026-11-20.log.gz",
            "app.2026-11-21.log.gz",
            "app.log"
        ]
    );
    let all = files(&dir);
    assert_eq!(all["app.2026-11-21.log.gz"], b"seq x 1\n");
}

#[test]
fn keep_zero_keeps_no_rotated_file_and_goes_on() {
    let dir = temp_dir("keep-zero");
    let path = dir.join("app.log");
    let rotation = Rotation::size(1 << 10).keep(0).compress(true);
    let (handler, listener) = start(rotating(&path, rotation));
    log_seqs(&handler, "a", 0..200);
    let stats = stop(listener);
    assert_eq!(names(&dir), ["app.log"]);
    assert!(stats.rotation.rotations > 5 && stats.rotation.removed == stats.rotation.rotations);
    assert_eq!(stats.written, 200);
    assert_eq!(seqs(&files(&dir)["app.log"]).last().unwrap().1, 199);
}

#[test]
fn a_live_file_deleted_under_a_rotating_output_is_created_again() {
    let dir = temp_dir("deleted");
    let path = dir.join("app.log");
    let (handler, listener) = start(rotating(&path, Rotation::size(1 << 20)));
    log_seqs(&handler, "a", 0..10);
    listener.flush().unwrap();
    std::fs::remove_file(&path).unwrap();
    // Past the listener's 10 ms between checks, so it looks before the next batch.
    std::thread::sleep(Duration::from_millis(20));
    log_seqs(&handler, "b", 0..10);
    listener.flush().unwrap();
    let stats = stop(listener);
    assert_eq!(stats.detached_reopens, 1, "{stats:?}");
    assert_eq!(seqs(&files(&dir)["app.log"]).len(), 10);
}

#[path = "rotation/bad_input.rs"]
mod bad_input;
