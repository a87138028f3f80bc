//! Following files that other programs move: reopen requests (`Guard::reopen`,
//! `QueueListener::reopen`, SIGHUP), and files found deleted or renamed away under a
//! sink ([`crate::Sink::detached`]).
//!
//! A reopen request is a barrier: everything queued before it is written and synced
//! into the files open when it arrived (logrotate renamed them: the rotated files),
//! then every sink reopens its path, then the requester gets the answer. Records
//! logged after the request may land on either side, each exactly once.
//!
//! Without a request, the listener asks each sink whether its file went away, at most
//! every [`DETACHED_CHECK_INTERVAL`] and before any batch a flush barrier waits for
//! (so `flush()` never answers `Ok` for records that went into a deleted file it had
//! time to notice). A detached file is synced, its path reopened (created again if
//! needed), and the new file starts with a notice line saying what happened.

use std::time::{Duration, Instant};

use super::drive::Listener;
use super::durability::reason;
use crate::error::Error;
use crate::sink::Detached;
use crate::stats::Counters;

/// How often, at most, the listener looks for files deleted or renamed away while
/// records keep coming (a `fstat` and a `stat` per file sink). Records written in the
/// meantime go to the old file: whole and exactly once, in the renamed one; in a
/// deleted one, lost with it.
pub(super) const DETACHED_CHECK_INTERVAL: Duration = Duration::from_millis(10);

/// A reopen request waiting for the records queued before it.
pub(super) struct PendingReopen {
    /// Ring position: everything before it goes to the files open now.
    pub(super) upto: u64,
    /// Who waits for the answer; `None` for a signal's request.
    pub(super) ack: Option<crossbeam_channel::Sender<Result<(), Error>>>,
}

impl Listener<'_> {
    /// Takes a reopen request a signal handler left, as a barrier at the ring's tail.
    pub(super) fn take_signal_reopen(&mut self) {
        if self
            .shared
            .reopen_requested
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            self.pending_reopens.push(PendingReopen {
                upto: self.shared.ring.tail(),
                ack: None,
            });
        }
    }

    /// Whether a pending reopen's records have all been taken off the ring.
    pub(super) fn reopen_due(&self) -> bool {
        let position = self.consumer.position();
        self.pending_reopens.iter().any(|p| p.upto <= position)
    }

    /// Once the records before the due reopen requests are written and synced (the
    /// caller synced): reopens every sink and answers those requests. A sink that
    /// cannot reopen keeps its file and says so in it; the answer is the first such
    /// failure. Call with the writing bit held (the crash drain's descriptor changes).
    pub(super) fn serve_reopens(&mut self) {
        if !self.reopen_due() {
            return;
        }
        let counters = &self.shared.counters;
        let mut failure: Option<Error> = None;
        for index in 0..self.sinks.len() {
            let Some(slot) = self.sinks.get_mut(index) else {
                continue;
            };
            let Err(error) = slot.reopen(counters) else {
                continue;
            };
            let why = reason(&error);
            let text = format!("reopen failed ({why}); still writing to the file open before");
            self.notice(index, log::Level::Error, &text, false);
            failure.get_or_insert(Error::Sink {
                kind: error.kind(),
                message: format!("reopen failed ({why})"),
            });
        }
        Counters::add(&counters.reopens, 1);
        super::outputs::publish_crash_fd(self.shared, &self.sinks);
        let position = self.consumer.position();
        self.pending_reopens.retain(|pending| {
            if pending.upto > position {
                return true;
            }
            if let Some(ack) = &pending.ack {
                let answer = match &failure {
                    Some(error) => Err(error.duplicate()),
                    None => Ok(()),
                };
                let _ = ack.send(answer);
            }
            false
        });
    }

    /// Whether to look for detached files before writing this batch.
    pub(super) fn detached_check_due(&self, taken: usize) -> bool {
        (taken > 0 && self.last_detached_check.elapsed() >= DETACHED_CHECK_INTERVAL)
            || self.barrier_due()
    }

    /// Looks for sinks whose file was deleted or renamed away; syncs what went there,
    /// reopens their path, and puts a notice line first in what they write next. A
    /// failed reopen is the answer of the barriers waiting (the records go on into the
    /// old file), and is tried again at the next check. Call with the writing bit held.
    pub(super) fn follow_detached(&mut self) {
        self.last_detached_check = Instant::now();
        let counters = &self.shared.counters;
        let detached: Vec<(usize, Detached)> = (self.sinks.iter().enumerate())
            .filter_map(|(index, slot)| slot.detached(counters).map(|how| (index, how)))
            .collect();
        if detached.is_empty() {
            return;
        }
        // Renamed: the old file is the rotated one, and keeps what went into it.
        self.sync_all();
        for (index, how) in detached {
            let Some(slot) = self.sinks.get_mut(index) else {
                continue;
            };
            let what = match how {
                Detached::Deleted => "was deleted",
                Detached::Renamed => "was renamed away",
            };
            match slot.reopen(counters) {
                Ok(()) => {
                    Counters::add(&counters.detached_reopens, 1);
                    let text = match how {
                        Detached::Deleted => format!(
                            "the log file {what} while open; created it again (lines written \
                             after the deletion and before this one went with the deleted file)"
                        ),
                        Detached::Renamed => format!(
                            "the log file {what} while open (rotated); reopened its path (lines written after the rename and before this \
                             one are at the end of the renamed file)"
                        ),
                    };
                    self.notice(index, log::Level::Warn, &text, true);
                }
                Err(error) => self.fail(Error::Sink {
                    kind: error.kind(),
                    message: format!(
                        "the log file {what} while open, and reopening its path failed ({})",
                        reason(&error)
                    ),
                }),
            }
        }
        super::outputs::publish_crash_fd(self.shared, &self.sinks);
    }

    /// A line from quelog into sink `index`'s buffer: before what waits (`first`), or
    /// after it.
    fn notice(&mut self, index: usize, level: log::Level, text: &str, first: bool) {
        let mut line = Vec::new();
        if let Some(layout) = self.layout_of(index) {
            super::notice::push_notice(layout, level, text, &mut line);
        }
        if let Some(slot) = self.sinks.get_mut(index) {
            if first {
                slot.prepend_notice_bytes(&line);
            } else {
                slot.push_notice_bytes(&line);
            }
        }
    }
}

/// Registers the SIGHUP action of [`crate::Builder::reopen_on_sighup`]: it only sets
/// the queue's reopen flag and wakes the listener. The listener thread blocks every
/// asynchronous signal, so the kernel delivers a process-directed SIGHUP to another
/// thread, which runs this action and returns at once.
pub(crate) fn register_sighup(
    shared: &std::sync::Arc<crate::queue::Shared>,
) -> Result<signal_hook::SigId, Error> {
    let shared = std::sync::Arc::clone(shared);
    // SAFETY: the action is async-signal-safe: an atomic store and a `write(2)` to
    // the queue's eventfd (`Shared::request_reopen_from_signal`); it neither allocates
    // nor locks, and the `Arc` it holds is dropped by `unregister`, outside any handler.
    let registered = unsafe {
        signal_hook::low_level::register(signal_hook::consts::SIGHUP, move || {
            shared.request_reopen_from_signal()
        })
    };
    registered.map_err(|e| Error::InvalidConfig(format!("cannot handle SIGHUP: {e}")))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::Arc;

    use crate::{ListenerConfig, Output, QueueConfig, QueueHandler, QueueListener};

    /// The stop unregisters the SIGHUP action, and with it the queue it held.
    #[test]
    fn the_stop_unregisters_the_sighup_action() {
        let handler = QueueHandler::new(&QueueConfig::default()).unwrap();
        let mut listener = QueueListener::start_outputs(
            &handler,
            vec![Output::file("/dev/null")],
            ListenerConfig::default(),
        )
        .unwrap();
        listener.reopen_on_sighup().unwrap();
        assert!(Arc::strong_count(&handler.shared) > 2);
        listener.stop().unwrap();
        assert_eq!(Arc::strong_count(&handler.shared), 1);
    }
}
