//! The installed global logger: [`crate::shutdown`], the panic hook, and the
//! termination signal thread ([`crate::Builder::handle_termination`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::error::Error;
use crate::handler::QueueHandler;
use crate::listener::QueueListener;
use crate::stats::Stats;

/// The logger [`crate::Builder::install`] installed.
#[derive(Debug)]
pub(crate) struct Installed {
    pub(crate) handler: QueueHandler,
    /// Taken out, once, by the first stop.
    listener: Mutex<Option<QueueListener>>,
    /// A stop began: the panic hook passes panics straight to the previous hook.
    stopped: AtomicBool,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// The handler [`crate::Builder::install`] made the global `log` logger, if it did:
/// where quelog's macros send their records. One acquire load.
#[inline]
pub(crate) fn installed_handler() -> Option<&'static QueueHandler> {
    INSTALLED.get().map(|installed| &installed.handler)
}

/// Installs `handler` as the global `log` logger, with `listener` serving it, and (with
/// `tracing`) as the global default tracing dispatcher. If either is taken already,
/// nothing is installed: the tracing side is checked first, and `log`'s is the one
/// that can be set only once. (Another thread setting a tracing dispatcher between the
/// check and the set is the one way to end half-installed: `log` then goes to quelog,
/// and the error says tracing did not.)
pub(crate) fn install(
    handler: QueueHandler,
    listener: QueueListener,
    tracing: bool,
) -> Result<&'static Installed, Error> {
    #[cfg(feature = "tracing")]
    if tracing && tracing_core::dispatcher::has_been_set() {
        let _ = listener.stop();
        return Err(Error::TracingAlreadySet);
    }
    #[cfg(not(feature = "tracing"))]
    let _ = tracing;
    if log::set_boxed_logger(Box::new(handler.clone())).is_err() {
        // Nothing was logged through it; stopping drains an empty ring.
        let _ = listener.stop();
        return Err(Error::AlreadyInstalled);
    }
    // `set_boxed_logger` succeeds once per process, so this is the first `set`.
    let installed = INSTALLED.get_or_init(|| Installed {
        handler,
        listener: Mutex::new(None),
        stopped: AtomicBool::new(false),
    });
    *installed
        .listener
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(listener);
    #[cfg(feature = "tracing")]
    if tracing {
        let dispatch = tracing_core::Dispatch::new(installed.handler.tracing_subscriber());
        if tracing_core::dispatcher::set_global_default(dispatch).is_err() {
            return Err(Error::TracingAlreadySet);
        }
    }
    Ok(installed)
}

/// Stops the installed logger: closes the queue, drains, syncs, joins, within the
/// shutdown timeout. Idempotent: once stopped, answers the final counters.
pub(crate) fn stop(installed: &Installed) -> Result<Stats, Error> {
    installed.stopped.store(true, Ordering::Release);
    if crate::fork::forked(&installed.handler.shared) {
        // A forked child: the listener thread does not exist here, and the mutex may
        // have been held by a parent thread at the fork (it stays locked in the
        // child). Touch neither (see `crate::fork`).
        return Ok(crate::fork::stop_global(&installed.handler.shared));
    }
    // Held while draining, so a second caller returns only once the first one is done.
    let mut slot = installed
        .listener
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let Some(mut listener) = slot.take() else {
        return Ok(installed.handler.stats());
    };
    // From now on log calls go to standard error (counted as dropped after stop).
    let timeout = installed.handler.shared.shutdown_timeout();
    listener.stop_within(timeout)
}

/// Stops the global logger that [`crate::Builder::install`] installed: drains the
/// queue, syncs, joins the listener, and returns the final counters. Log calls after
/// it go to standard error, as after dropping the [`crate::Guard`].
///
/// Call it before `std::process::exit`, which runs no destructors (the guard's
/// included), or records still in the queue are lost.
///
/// Idempotent: after the first stop (by this, [`crate::Guard::stop`] or dropping the
/// guard) it returns the final counters again. [`Error::ListenerStopped`] if no
/// logger was installed; [`Error::WouldDeadlock`] (the listener finishes on its own)
/// when called from inside a log call or on the listener thread. Not for signal
/// handlers: use [`crate::Builder::handle_termination`].
pub fn shutdown() -> Result<Stats, Error> {
    match INSTALLED.get() {
        Some(installed) => stop(installed),
        None => Err(Error::ListenerStopped),
    }
}

/// Chains a panic hook that logs the panic as an error record (target `panic`) and
/// flushes, at most the shutdown timeout, before the previous hook runs and the
/// thread unwinds (or the process aborts, with `panic = "abort"`). Once a stop began,
/// it passes panics straight to the previous hook: no record, no flush.
pub(crate) fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Some(installed) = INSTALLED.get() {
            if !installed.stopped.load(Ordering::Acquire) {
                log::error!(target: "panic", "{info}");
                // Returns at once on the listener thread and inside a log call; a
                // dropped record makes it an error, which changes nothing here.
                let _ = installed.handler.shared.flush_barrier(None);
            }
        }
        previous(info);
    }));
}

/// Starts the thread that turns SIGTERM and SIGINT into a drain, a sync and the
/// signal's default action. The signal handler itself (signal-hook's) only wakes the
/// thread.
pub(crate) fn handle_termination() -> Result<(), Error> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let previous = crate::fork::termination_actions();
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(|e| Error::InvalidConfig(format!("cannot handle SIGTERM/SIGINT: {e}")))?;
    // A forked child has no signal thread: it gets the previous actions back.
    crate::fork::restore_termination_in_children(previous);
    std::thread::Builder::new()
        .name("quelog-signals".into())
        .spawn(move || {
            let Some(signal) = signals.forever().next() else {
                return;
            };
            let name = signal_hook::low_level::signal_name(signal).unwrap_or("signal");
            log::warn!(target: "quelog", "received {name}: draining the log, then terminating");
            if let Some(installed) = INSTALLED.get() {
                // Bounded by the shutdown timeout; a timeout or drops are information
                // (counted, said on stderr), never a reason not to terminate.
                let _ = stop(installed);
            }
            // Restores the default action and raises: the process ends by the signal,
            // with the status a shell shows as 128 + its number.
            let _ = signal_hook::low_level::emulate_default_handler(signal);
            std::process::exit(128 + signal);
        })
        .map_err(Error::Spawn)?;
    Ok(())
}
