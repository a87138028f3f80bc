//! Gzip of rotated files on a thread of its own, so the listener's drain never waits
//! for it (log4rs compresses inline and stalls its writes for seconds).
//!
//! Crash-safe: the compressed copy is written under a hidden temporary name, synced,
//! renamed to `<rotated name>.gz` (never over an existing file), the directory synced,
//! and only then the original removed (and the directory synced again). A crash at any
//! point leaves the original, or a complete `.gz`, or both; at start-up
//! [`recover`] removes temporaries, removes an original whose `.gz` is complete, and
//! queues the originals still to compress.
//!
//! The thread takes the output's directory lock only to find and rename files, never
//! while compressing: with numbered names the listener may rename the file meanwhile,
//! so the file is found again by its inode.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;

use super::{sync_dir, Common};
use crate::stats::Counters;

/// How long dropping the sink waits for the compressions still queued.
const FINISH_WAIT: Duration = Duration::from_secs(2);

/// A rotated file to compress: its identity (device, inode) and its name when queued.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub(super) identity: (u64, u64),
    pub(super) path: PathBuf,
}

/// The compression thread of one output, started at the first job.
pub(super) struct Compressor {
    common: Arc<Common>,
    backlog: Vec<Job>,
    sender: Option<crossbeam_channel::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Compressor {
    pub(super) fn new(common: Arc<Common>) -> Compressor {
        Compressor {
            common,
            backlog: Vec::new(),
            sender: None,
            thread: None,
        }
    }

    /// Queues `job`; it is handed over at the next [`Compressor::pump`].
    pub(super) fn queue(&mut self, job: Job) {
        self.backlog.push(job);
    }

    /// Hands the queued jobs to the thread, starting it if needed. Called from the
    /// listener thread, so the compressor is born with its signal mask (all blocked).
    pub(super) fn pump(&mut self) {
        if self.backlog.is_empty() {
            return;
        }
        if self.sender.is_none() {
            let (sender, receiver) = crossbeam_channel::unbounded::<Job>();
            let common = Arc::clone(&self.common);
            let spawned = std::thread::Builder::new()
                .name("quelog-compress".into())
                .spawn(move || {
                    for job in receiver {
                        compress_one(&common, &job);
                    }
                });
            match spawned {
                Ok(thread) => {
                    self.sender = Some(sender);
                    self.thread = Some(thread);
                }
                Err(error) => {
                    // Left uncompressed; the next start-up queues them again.
                    let failed = self.backlog.len() as u64;
                    self.backlog.clear();
                    Counters::add(&self.common.counters.compression_errors, failed);
                    self.common
                        .note(format!("could not start compressing: {error}"));
                    return;
                }
            }
        }
        if let Some(sender) = &self.sender {
            for job in self.backlog.drain(..) {
                let _ = sender.send(job);
            }
        }
    }
}

impl Drop for Compressor {
    fn drop(&mut self) {
        self.pump();
        // Closing the channel ends the thread after the queued jobs; wait for them a
        // bounded time, then leave the rest to the next start-up.
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + FINISH_WAIT;
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

/// At start-up: removes the compressor's temporaries, removes an original whose `.gz`
/// is there (the `.gz` was synced before its rename, so it is complete), and returns
/// the rotated files still to compress, oldest first.
pub(super) fn recover(common: &Common) -> io::Result<Vec<Job>> {
    let names = &common.names;
    let _dir = common.lock_dir();
    for entry in std::fs::read_dir(&names.dir)? {
        let entry = entry?;
        if names.is_temp(&entry.file_name().to_string_lossy()) {
            std::fs::remove_file(entry.path())?;
        }
    }
    let files = names.list()?;
    let mut jobs = Vec::new();
    let mut removed = false;
    for file in files.iter().filter(|f| !f.compressed) {
        let twin = files.iter().any(|f| f.compressed && f.rank == file.rank);
        if twin {
            std::fs::remove_file(&file.path)?;
            removed = true;
        } else if let Ok(meta) = std::fs::metadata(&file.path) {
            jobs.push(Job {
                identity: (meta.dev(), meta.ino()),
                path: file.path.clone(),
            });
        }
    }
    if removed {
        sync_dir(&names.dir)?;
    }
    jobs.reverse();
    Ok(jobs)
}

/// Where the file of `identity` is now (numbered names move), if it is still there.
fn find(common: &Common, job: &Job) -> io::Result<Option<PathBuf>> {
    let same =
        |path: &PathBuf| std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == job.identity);
    if same(&job.path) {
        return Ok(Some(job.path.clone()));
    }
    let files = common.names.list()?;
    Ok(files
        .into_iter()
        .filter(|f| !f.compressed)
        .map(|f| f.path)
        .find(same))
}

fn compress_one(common: &Common, job: &Job) {
    let temp = common.names.temp(job.identity.1);
    match try_compress(common, job, &temp) {
        Ok(true) => Counters::add(&common.counters.compressed, 1),
        Ok(false) => {
            let _ = std::fs::remove_file(&temp);
        }
        Err(error) => {
            let _ = std::fs::remove_file(&temp);
            Counters::add(&common.counters.compression_errors, 1);
            common.note(format!(
                "compressing {} failed ({}); left uncompressed",
                job.path.display(),
                crate::listener::reason(&error)
            ));
        }
    }
}

/// `Ok(false)`: the file is gone (retention removed it meanwhile): nothing to do.
fn try_compress(common: &Common, job: &Job, temp: &PathBuf) -> io::Result<bool> {
    let source = {
        let _dir = common.lock_dir();
        match find(common, job)? {
            Some(path) => File::open(path)?,
            None => return Ok(false),
        }
    };
    let modified = source.metadata()?.modified()?;
    // A leftover of the same inode from an earlier attempt goes first.
    let _ = std::fs::remove_file(temp);
    let out = OpenOptions::new().write(true).create_new(true).open(temp)?;
    let mut encoder = GzEncoder::new(out, flate2::Compression::default());
    let mut reader = io::BufReader::with_capacity(64 << 10, source);
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        encoder.write_all(chunk.get(..n).unwrap_or_default())?;
    }
    let out = encoder.finish()?;
    // Its age is the original's, so `max_age` counts from the rotation.
    out.set_modified(modified)?;
    out.sync_all()?;
    drop(out);
    let _dir = common.lock_dir();
    let Some(current) = find(common, job)? else {
        return Ok(false);
    };
    let mut target = current.clone().into_os_string();
    target.push(".gz");
    super::naming::rename_no_replace(temp, &PathBuf::from(target))?;
    sync_dir(&common.names.dir)?;
    std::fs::remove_file(&current)?;
    sync_dir(&common.names.dir)?;
    Ok(true)
}
