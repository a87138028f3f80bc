//! A file that rotates: [`Rotation`] says when (size, hour, day, or a day with a size
//! cap), how rotated files are named ([`Naming`]), how many are kept and whether they
//! are compressed. The sink wraps a [`FileSink`] on the live path and replaces it at
//! each rotation, in the listener thread between two writes: producers never notice.
//!
//! A rotation: sync the live file; rename it to its rotated name (never over an
//! existing file) and sync the directory; create the live path again (the directory
//! is synced after the create); prune to the retention; hand the rotated file to the
//! compressor thread. Records written before the rotation are in the rotated file and
//! synced, those after in the new one; a batch is split only between lines, so every
//! file ends on a whole line.

mod clock;
#[cfg(feature = "compression")]
mod compress;
mod config;
mod naming;
mod retention;

use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use chrono::NaiveDateTime;

use super::file::sync_dir;
use super::{Detached, FileSink, Sink};
use crate::error::Error;
use crate::stats::{Counters, RotationCounters};
use config::Period;
pub use config::Rotation;
use naming::Names;
pub use naming::Naming;

/// The first pause after a failed rotation before the next attempt; it doubles up to
/// [`MAX_RETRY`]. Meanwhile the live file takes the records.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(10);

/// What the sink and its compressor share: the names, the directory lock (held only
/// to list and rename), the counters and the notices for the listener.
pub(super) struct Common {
    names: Names,
    dir_lock: Mutex<()>,
    counters: Arc<RotationCounters>,
    notes: Mutex<Vec<String>>,
}

impl Common {
    fn lock_dir(&self) -> MutexGuard<'_, ()> {
        self.dir_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn note(&self, text: String) {
        self.notes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(text);
    }
}

/// The rotating file sink [`crate::Output::file`]`.rotate(..)` opens.
pub(crate) struct RotatingFileSink {
    path: PathBuf,
    file: FileSink,
    /// The live file's length.
    len: u64,
    /// The start of the period the live file belongs to (hour or day); never goes back.
    period: NaiveDateTime,
    rotation: Rotation,
    local: bool,
    common: Arc<Common>,
    #[cfg(feature = "compression")]
    compressor: Option<compress::Compressor>,
    /// Bytes of successful writes since the last good sync: in the live file, and in
    /// files rotated (and synced) since. A rewrite after a failed sync skips the
    /// latter: they are durable where they are.
    unsynced_live: u64,
    unsynced_rotated: u64,
    skip_next: u64,
    /// The sync before a rotation failed: the next [`Sink::sync`] says so, and the
    /// listener rewrites (fsyncgate).
    pending_sync_error: Option<io::Error>,
    /// Renamed away, but the live path could not be created again: still writing to
    /// the rotated file, named this.
    stranded: Option<PathBuf>,
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl std::fmt::Debug for RotatingFileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatingFileSink")
            .field("path", &self.path)
            .field("rotation", &self.rotation)
            .finish_non_exhaustive()
    }
}

impl RotatingFileSink {
    /// Opens `path` to rotate as `rotation` says; `local_default` is the builder's
    /// local-time setting.
    pub(crate) fn open(
        path: PathBuf,
        rotation: Rotation,
        local_default: bool,
        counters: Arc<RotationCounters>,
    ) -> Result<RotatingFileSink, Error> {
        let file = FileSink::open(&path)?;
        let meta = std::fs::metadata(&path).map_err(|source| Error::Open {
            path: path.clone(),
            source,
        })?;
        let names = Names::new(&path, rotation.naming);
        let local = rotation.local_time.unwrap_or(local_default);
        let now = rotation.clock.now();
        let mut sink = RotatingFileSink {
            path,
            file,
            len: meta.len(),
            period: NaiveDateTime::MIN,
            local,
            common: Arc::new(Common {
                names,
                dir_lock: Mutex::new(()),
                counters,
                notes: Mutex::new(Vec::new()),
            }),
            #[cfg(feature = "compression")]
            compressor: None,
            rotation,
            unsynced_live: 0,
            unsynced_rotated: 0,
            skip_next: 0,
            pending_sync_error: None,
            stranded: None,
            retry_at: None,
            backoff: FIRST_RETRY,
        };
        // A non-empty live file belongs to the period it was last written in; the
        // newest rotated name bounds it from below, so a clock set back before this
        // start never names a file older than one already there.
        let written_at = meta.modified().ok().filter(|_| meta.len() > 0);
        let mut period = sink.period_of(written_at.unwrap_or(now));
        if let Ok(files) = sink.common.names.list() {
            let newest = files
                .first()
                .and_then(|f| naming::parse_stamp(&f.rank.stamp));
            period = period.max(newest.unwrap_or(NaiveDateTime::MIN));
        }
        sink.period = period;
        sink.start_up(now);
        if sink.rotation.on_start && sink.len > 0 {
            sink.rotate(now);
        }
        Ok(sink)
    }

    fn hourly(&self) -> bool {
        self.rotation.period == Some(Period::Hourly)
    }

    /// The start of the hour or day `at` is in, in UTC or local time.
    fn period_of(&self, at: SystemTime) -> NaiveDateTime {
        let offset = if self.local {
            self.rotation.clock.utc_offset_at(at)
        } else {
            0
        };
        clock::period_start(at, offset, self.hourly())
    }

    /// Start-up: finish or clean up what a crash left of compressions, and prune to
    /// the retention (counted as at a rotation).
    fn start_up(&mut self, now: SystemTime) {
        #[cfg(feature = "compression")]
        if self.compresses() {
            let mut compressor = compress::Compressor::new(Arc::clone(&self.common));
            match compress::recover(&self.common) {
                Ok(jobs) => jobs.into_iter().for_each(|job| compressor.queue(job)),
                Err(error) => self.failed_compression(&error),
            }
            self.compressor = Some(compressor);
        }
        let _dir = self.common.lock_dir();
        self.prune(now);
    }

    #[cfg(feature = "compression")]
    fn compresses(&self) -> bool {
        self.rotation.compress && self.rotation.retention.keep != Some(0)
    }

    #[cfg(feature = "compression")]
    fn failed_compression(&self, error: &io::Error) {
        Counters::add(&self.common.counters.compression_errors, 1);
        self.common.note(format!(
            "cleaning up compressed files failed ({})",
            crate::listener::reason(error)
        ));
    }

    /// Removes what retention says, with the directory lock held.
    fn prune(&self, now: SystemTime) {
        let retention = self.rotation.retention;
        if retention.is_unbounded() {
            return;
        }
        let names = &self.common.names;
        let counters = &self.common.counters;
        let pruned = match names.list() {
            Ok(files) => retention.prune(&files, now),
            Err(error) => retention::Pruned {
                removed: 0,
                errors: vec![error],
            },
        };
        Counters::add(&counters.removed, pruned.removed);
        Counters::add(&counters.removal_errors, pruned.errors.len() as u64);
        if let Some(error) = pruned.errors.first() {
            self.common.note(format!(
                "removing old rotated files of {} failed ({})",
                self.path.display(),
                crate::listener::reason(error)
            ));
        }
    }

    /// Hands queued compressions to the compressor thread.
    fn pump(&mut self) {
        #[cfg(feature = "compression")]
        if let Some(compressor) = &mut self.compressor {
            compressor.pump();
        }
    }

    /// How many bytes of `rest` go into the live file before a size rotation: all
    /// that fits, cut after a newline; 0 if nothing fits (rotate first); into an
    /// empty file at least its first line.
    fn fits(&self, rest: &[u8]) -> usize {
        let Some(max) = self.rotation.max_size else {
            return rest.len();
        };
        let room = max.saturating_sub(self.len);
        if rest.len() as u64 <= room {
            return rest.len();
        }
        let window = rest.get(..room as usize).unwrap_or(rest);
        if let Some(newline) = window.iter().rposition(|&b| b == b'\n') {
            return newline + 1;
        }
        if self.len > 0 {
            return 0;
        }
        rest.iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |newline| newline + 1)
    }

    /// Rotates unless a failed attempt is still backing off. Failures are counted and
    /// noted; the live file keeps taking records.
    fn rotate(&mut self, now: SystemTime) -> bool {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return false;
        }
        let common = Arc::clone(&self.common);
        let started = Instant::now();
        let result = self.try_rotate(now, &common);
        common.counters.latency.record(started.elapsed());
        match result {
            Ok(()) => {
                Counters::add(&common.counters.rotations, 1);
                self.pump();
                self.retry_at = None;
                self.backoff = FIRST_RETRY;
                true
            }
            Err(error) => {
                Counters::add(&common.counters.rotation_errors, 1);
                common.note(format!(
                    "rotating {} failed ({}); still writing to it, next attempt in {:?}",
                    self.path.display(),
                    crate::listener::reason(&error),
                    self.backoff
                ));
                self.retry_at = Instant::now().checked_add(self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_RETRY);
                false
            }
        }
    }

    fn try_rotate(&mut self, now: SystemTime, common: &Common) -> io::Result<()> {
        if let Err(error) = self.file.sync() {
            self.pending_sync_error = Some(copy_error(&error));
            return Err(error);
        }
        let dir = common.lock_dir();
        let names = &common.names;
        let rotated = match self.stranded.take() {
            Some(path) => path,
            None => {
                let target = self.rename_live(names)?;
                if let Err(error) = sync_dir(&names.dir) {
                    self.stranded = Some(target);
                    return Err(error);
                }
                target
            }
        };
        match FileSink::open(&self.path) {
            Ok(file) => self.file = file,
            Err(error) => {
                // Put it back if nobody took the live path meanwhile; else keep writing
                // into the rotated file and try creating the live path again later.
                let undone = naming::rename_no_replace(&rotated, &self.path)
                    .and_then(|()| sync_dir(&names.dir));
                if undone.is_err() {
                    self.stranded = Some(rotated);
                }
                return Err(io::Error::other(error.to_string()));
            }
        }
        self.len = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        self.unsynced_rotated += self.unsynced_live;
        self.unsynced_live = 0;
        self.period = self.period.max(self.period_of(now));
        self.prune(now);
        drop(dir);
        self.queue_compression(rotated);
        Ok(())
    }

    /// Queues the rotated file at `rotated` for compression, when this output
    /// compresses.
    fn queue_compression(&mut self, rotated: PathBuf) {
        #[cfg(feature = "compression")]
        if let Some(compressor) = &mut self.compressor {
            if let Ok(meta) = std::fs::metadata(&rotated) {
                use std::os::unix::fs::MetadataExt;
                compressor.queue(compress::Job {
                    identity: (meta.dev(), meta.ino()),
                    path: rotated,
                });
            }
        }
        #[cfg(not(feature = "compression"))]
        let _ = rotated;
    }

    /// Renames the live file to its rotated name, answering that name.
    fn rename_live(&self, names: &Names) -> io::Result<PathBuf> {
        match names.naming {
            Naming::Dates => {
                let stamp = naming::stamp(self.period, self.hourly());
                let files = names.list()?;
                let mut number = names.next_dated_number(&files, &stamp);
                // Someone else may take a name between the listing and the rename.
                for _ in 0..16 {
                    let target = names.dated(&stamp, number);
                    let compressed = gz(&target);
                    let free = std::fs::symlink_metadata(&compressed).is_err();
                    match free.then(|| naming::rename_no_replace(&self.path, &target)) {
                        Some(Ok(())) => return Ok(target),
                        Some(Err(error)) if error.kind() != io::ErrorKind::AlreadyExists => {
                            return Err(error)
                        }
                        _ => number += 1,
                    }
                }
                Err(io::ErrorKind::AlreadyExists.into())
            }
            Naming::Numbers => {
                // Oldest first, each one number up: no name is overwritten, and a crash
                // in between leaves at worst a gap in the numbers.
                for file in names.list()?.iter().rev() {
                    let number = u32::MAX - file.rank.order;
                    let mut target = names.numbered(number.saturating_add(1));
                    if file.compressed {
                        target = gz(&target);
                    }
                    naming::rename_no_replace(&file.path, &target)?;
                    sync_dir(&names.dir)?;
                }
                let target = names.numbered(1);
                naming::rename_no_replace(&self.path, &target)?;
                Ok(target)
            }
        }
    }

    fn time_due(&self, now: SystemTime) -> bool {
        self.rotation.period.is_some() && self.period_of(now) > self.period
    }
}

/// `path` with `.gz` after it.
fn gz(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".gz");
    PathBuf::from(name)
}

/// An `io::Error` like `error` (they are not `Clone`).
fn copy_error(error: &io::Error) -> io::Error {
    match error.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(error.kind(), error.to_string()),
    }
}

impl Sink for RotatingFileSink {
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        self.pump();
        // A rewrite after a failed sync: its start went to files rotated and synced
        // since, where it is durable already.
        let skip = std::mem::take(&mut self.skip_next).min(batch.len() as u64);
        let mut rest = batch.get(skip as usize..).unwrap_or_default();
        let now = self.rotation.clock.now();
        let (mut live_here, mut rotated_here) = (0, 0);
        if self.time_due(now) {
            // Nothing of this batch is written yet: no bytes to account for.
            self.rotate(now);
        }
        let mut rotated_for_piece = false;
        while !rest.is_empty() {
            let mut take = self.fits(rest);
            if take == 0 && !rotated_for_piece && self.rotate(now) {
                rotated_for_piece = true;
                rotated_here += live_here;
                live_here = 0;
                continue;
            }
            if take == 0 {
                take = rest.len();
            }
            let (piece, after) = rest.split_at(take.min(rest.len()));
            if let Err(error) = self.file.write_batch(piece) {
                self.len = std::fs::metadata(&self.path).map_or(self.len, |m| m.len());
                return Err(error);
            }
            self.len += piece.len() as u64;
            live_here += piece.len() as u64;
            rotated_for_piece = false;
            rest = after;
        }
        self.unsynced_live += live_here;
        self.unsynced_rotated += rotated_here;
        self.pump();
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.pump();
        if let Some(error) = self.pending_sync_error.take() {
            return Err(error);
        }
        self.file.sync()?;
        self.unsynced_live = 0;
        self.unsynced_rotated = 0;
        Ok(())
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.file.reopen()?;
        self.len = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if let Some(rotated) = self.stranded.take() {
            // The live path exists again: the rotation that could not create it is
            // done now, and its file is a rotated one like any other.
            let now = self.rotation.clock.now();
            self.unsynced_rotated += self.unsynced_live;
            self.unsynced_live = 0;
            self.period = self.period.max(self.period_of(now));
            let common = Arc::clone(&self.common);
            let dir = common.lock_dir();
            self.prune(now);
            drop(dir);
            self.queue_compression(rotated);
        }
        Ok(())
    }

    fn detached(&self) -> Option<Detached> {
        // Stranded, the live path is gone by this sink's own rotation, which creates
        // it again at its next attempt.
        if self.stranded.is_some() {
            return None;
        }
        self.file.detached()
    }

    fn prepare_rewrite(&mut self) -> io::Result<()> {
        self.file.prepare_rewrite()?;
        self.len = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        self.skip_next = self.unsynced_rotated;
        self.unsynced_rotated = 0;
        self.unsynced_live = 0;
        Ok(())
    }

    fn raw_fd(&self) -> Option<RawFd> {
        self.file.raw_fd()
    }

    fn take_notices(&mut self, notices: &mut Vec<String>) {
        let mut notes = self.common.notes.lock().unwrap_or_else(|p| p.into_inner());
        notices.append(&mut notes);
    }
}

#[cfg(test)]
mod tests;
