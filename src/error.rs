//! The crate's error type: every failure the setup and control APIs can report.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// What went wrong. Producers never see errors: a record that cannot be queued is
/// dropped and counted in [`crate::Stats`]; errors are for setup and control calls.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A global `log` logger is already installed (by quelog or anyone else).
    AlreadyInstalled,
    /// A global default tracing subscriber is already set (by quelog or anyone else).
    /// Install with `Builder::tracing(false)` to leave tracing alone.
    TracingAlreadySet,
    /// A setting is out of range; the text says which and why.
    InvalidConfig(String),
    /// A directive of [`crate::Builder::filter`] is malformed.
    InvalidFilter {
        /// The directive as given (the whole filter if it has none).
        token: String,
        /// Why it is refused.
        reason: String,
    },
    /// A log file could not be opened or created.
    Open {
        /// The path as given.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The listener thread could not be started.
    Spawn(io::Error),
    /// This queue already has a running listener (one consumer per ring).
    AlreadyListening,
    /// The listener is not running (stopped, never started, or died), so the request
    /// cannot be served. Records are still counted.
    ListenerStopped,
    /// The call would wait for this very thread: `flush` from inside a log call (a
    /// `Display` or a signal handler that interrupted one) or on the listener thread.
    WouldDeadlock,
    /// The request did not complete in time.
    Timeout,
    /// A flush barrier found records logged before it (since the previous barrier)
    /// dropped instead of queued: everything else before it is written and synced,
    /// these are not. The counts say how many, and why.
    Dropped(crate::stats::Dropped),
    /// A sink failed to write or sync; the records it concerns are not durable.
    Sink {
        /// The kind of the underlying OS error.
        kind: io::ErrorKind,
        /// The OS error's text.
        message: String,
    },
}

impl Error {
    pub(crate) fn sink(error: &io::Error) -> Error {
        Error::Sink {
            kind: error.kind(),
            message: error.to_string(),
        }
    }

    /// A copy for the second and later waiters of one failed barrier.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Sink { kind, message } => Error::Sink {
                kind: *kind,
                message: message.clone(),
            },
            Error::Timeout => Error::Timeout,
            Error::Dropped(dropped) => Error::Dropped(*dropped),
            Error::WouldDeadlock => Error::WouldDeadlock,
            _ => Error::ListenerStopped,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::AlreadyInstalled => f.write_str("a global `log` logger is already installed"),
            Error::TracingAlreadySet => {
                f.write_str("a global default tracing subscriber is already set")
            }
            Error::InvalidConfig(why) => write!(f, "invalid quelog configuration: {why}"),
            Error::InvalidFilter { token, reason } => {
                write!(f, "invalid quelog filter directive {token:?}: {reason}")
            }
            Error::Open { path, source } => {
                write!(f, "cannot open log file {}: {source}", path.display())
            }
            Error::Spawn(e) => write!(f, "cannot start the quelog listener thread: {e}"),
            Error::AlreadyListening => f.write_str("this queue already has a running listener"),
            Error::ListenerStopped => f.write_str("the quelog listener is not running"),
            Error::WouldDeadlock => f.write_str(
                "flush called from inside a log call or on the listener thread would wait for itself",
            ),
            Error::Timeout => f.write_str("the quelog listener did not answer in time"),
            Error::Sink { message, .. } => write!(f, "log sink failed: {message}"),
            Error::Dropped(dropped) => write!(
                f,
                "{dropped} logged before this flush were dropped, not written"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Open { source, .. } | Error::Spawn(source) => Some(source),
            _ => None,
        }
    }
}
