//! The backends under comparison: each one sets itself up on a file, runs
//! [`produce`] with its own log call, stops, and the file is fsynced.
//!
//! Adding one: write a function `fn(&Ctx) -> io::Result<RunResult>` like those below
//! and add a line to [`BACKENDS`].

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write as _};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::measure::{produce, summarize, sync_file, RunResult};

/// What a backend's run gets from the child's command line.
pub struct Ctx {
    pub threads: usize,
    pub records: u64,
    pub path: PathBuf,
    pub timer_ns: f64,
}

/// One backend: its name on the command line and in the table, and its run.
pub struct Backend {
    pub name: &'static str,
    /// What the table says about its setup.
    pub setup: &'static str,
    pub run: fn(&Ctx) -> io::Result<RunResult>,
}

/// Every backend, in the table's order.
pub const BACKENDS: &[Backend] = &[
    Backend {
        name: "quelog-default",
        setup: "quelog defaults: Overflow::Drop, default capacity, SyncPolicy::EveryBatch",
        run: quelog_default,
    },
    Backend {
        name: "quelog-block",
        setup: "quelog Overflow::Block (no timeout), group commit",
        run: quelog_block,
    },
    Backend {
        name: "quelog-block-nosync",
        setup: "quelog Overflow::Block, SyncPolicy::Never (stop still syncs)",
        run: quelog_block_nosync,
    },
    // quelog's raw-argument macros (issue 11 item 3); the targets check picks these
    // rows up by their names.
    Backend {
        name: "quelog-macro",
        setup: "quelog::info! (arguments captured raw, formatted on the listener), quelog defaults",
        run: quelog_macro,
    },
    Backend {
        name: "quelog-macro-block",
        setup: "quelog::info!, Overflow::Block (no timeout), group commit",
        run: quelog_macro_block,
    },
    Backend {
        name: "spdlog-async",
        setup: "spdlog-rs AsyncPoolSink (OverflowPolicy::Block, own 1-thread pool, default 8192 capacity) over FileSink",
        run: spdlog_async,
    },
    Backend {
        name: "mutex-bufwriter",
        setup: "`log` logger: Mutex<BufWriter<File>>, line formatted under the lock",
        run: mutex_bufwriter,
    },
    Backend {
        name: "write2",
        setup: "`log` logger: line formatted in a stack buffer, one write(2) per record (O_APPEND)",
        run: write_per_record,
    },
    Backend {
        name: "tracing-lossy",
        setup: "tracing-appender non_blocking (lossy, default 128k lines) + tracing-subscriber fmt",
        run: tracing_lossy,
    },
    Backend {
        name: "tracing-blocking",
        setup: "tracing-appender NonBlockingBuilder lossy(false) + tracing-subscriber fmt",
        run: tracing_blocking,
    },
    Backend {
        name: "slog-drop",
        setup: "slog-async (OverflowStrategy::Drop, default 128 channel) over slog-term PlainDecorator(File) + FullFormat",
        run: slog_drop,
    },
    Backend {
        name: "slog-block",
        setup: "slog-async (OverflowStrategy::Block) over slog-term PlainDecorator(File) + FullFormat",
        run: slog_block,
    },
];

/// The benchmark's record through the `log` facade.
#[inline(always)]
fn log_record(i: u64) {
    log::info!("request {} handled in {} us by {}", i, i % 997, "worker-7");
}

// ---------------------------------------------------------------------------------
// quelog

fn quelog_run(ctx: &Ctx, name: &str, builder: quelog::Builder) -> io::Result<RunResult> {
    quelog_run_with(ctx, name, builder, log_record)
}

fn quelog_run_with(
    ctx: &Ctx,
    name: &str,
    builder: quelog::Builder,
    record: fn(u64),
) -> io::Result<RunResult> {
    let guard = builder
        .file(&ctx.path)
        .level(log::LevelFilter::Info)
        .install()
        .map_err(io::Error::other)?;
    let produced = produce(ctx.threads, ctx.records, record);
    // stop() drains, writes and syncs (every policy syncs at shutdown).
    let stats = guard.stop().map_err(io::Error::other)?;
    let synced = sync_file(&ctx.path)?;
    let mut result = summarize(name, ctx.threads, produced, synced, ctx.timer_ns);
    result.reported_dropped = Some(stats.dropped.total());
    Ok(result)
}

fn quelog_default(ctx: &Ctx) -> io::Result<RunResult> {
    quelog_run(ctx, "quelog-default", quelog::Builder::new())
}

/// The benchmark's record through quelog's own macro (raw arguments).
#[inline(always)]
fn macro_record(i: u64) {
    quelog::info!("request {} handled in {} us by {}", i, i % 997, "worker-7");
}

fn quelog_macro(ctx: &Ctx) -> io::Result<RunResult> {
    quelog_run_with(ctx, "quelog-macro", quelog::Builder::new(), macro_record)
}

fn quelog_macro_block(ctx: &Ctx) -> io::Result<RunResult> {
    let builder = quelog::Builder::new().overflow(quelog::Overflow::Block {
        timeout: Duration::MAX,
    });
    quelog_run_with(ctx, "quelog-macro-block", builder, macro_record)
}

fn quelog_block(ctx: &Ctx) -> io::Result<RunResult> {
    let builder = quelog::Builder::new().overflow(quelog::Overflow::Block {
        timeout: Duration::MAX,
    });
    quelog_run(ctx, "quelog-block", builder)
}

fn quelog_block_nosync(ctx: &Ctx) -> io::Result<RunResult> {
    let builder = quelog::Builder::new()
        .overflow(quelog::Overflow::Block {
            timeout: Duration::MAX,
        })
        .sync(quelog::SyncPolicy::Never);
    quelog_run(ctx, "quelog-block-nosync", builder)
}

// ---------------------------------------------------------------------------------
// spdlog-rs

fn spdlog_async(ctx: &Ctx) -> io::Result<RunResult> {
    use spdlog::sink::{AsyncPoolSink, FileSink, OverflowPolicy};
    let file = FileSink::builder()
        .path(&ctx.path)
        .truncate(true)
        .build_arc()
        .map_err(io::Error::other)?;
    let pool = spdlog::ThreadPool::builder()
        .build_arc()
        .map_err(io::Error::other)?;
    let sink = AsyncPoolSink::builder()
        .sink(file)
        .overflow_policy(OverflowPolicy::Block)
        .thread_pool(pool.clone())
        .build_arc()
        .map_err(io::Error::other)?;
    let logger = spdlog::Logger::builder()
        .sink(sink)
        .build()
        .map_err(io::Error::other)?;
    let produced = produce(ctx.threads, ctx.records, |i| {
        spdlog::info!(logger: logger, "request {} handled in {} us by {}", i, i % 997, "worker-7");
    });
    // The pool's last owner joins its thread after the queued tasks; the file sink's
    // drop (with the last task) flushes its buffer.
    drop(logger);
    drop(pool);
    let synced = sync_file(&ctx.path)?;
    Ok(summarize(
        "spdlog-async",
        ctx.threads,
        produced,
        synced,
        ctx.timer_ns,
    ))
}

// ---------------------------------------------------------------------------------
// The two obvious `log` loggers.

fn wall_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The baselines' line: raw wall-clock time (no calendar formatting), level, target,
/// message.
macro_rules! write_line {
    ($out:expr, $record:expr) => {{
        let now = wall_nanos();
        writeln!(
            $out,
            "{}.{:09} {} {}: {}",
            now / 1_000_000_000,
            now % 1_000_000_000,
            $record.level(),
            $record.target(),
            $record.args()
        )
    }};
}

struct MutexLogger(Mutex<BufWriter<File>>);

impl log::Log for MutexLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
        let mut out = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = write_line!(out, record);
    }

    fn flush(&self) {
        let _ = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush();
    }
}

fn install_log(logger: &'static dyn log::Log) -> io::Result<()> {
    log::set_logger(logger).map_err(io::Error::other)?;
    log::set_max_level(log::LevelFilter::Info);
    Ok(())
}

fn mutex_bufwriter(ctx: &Ctx) -> io::Result<RunResult> {
    let logger: &'static MutexLogger = Box::leak(Box::new(MutexLogger(Mutex::new(
        BufWriter::new(File::create(&ctx.path)?),
    ))));
    install_log(logger)?;
    let produced = produce(ctx.threads, ctx.records, log_record);
    log::Log::flush(logger);
    let synced = sync_file(&ctx.path)?;
    Ok(summarize(
        "mutex-bufwriter",
        ctx.threads,
        produced,
        synced,
        ctx.timer_ns,
    ))
}

/// A fixed buffer that `write!` fills; what does not fit is cut.
struct StackBuf {
    bytes: [u8; 512],
    len: usize,
}

impl io::Write for StackBuf {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.bytes.len() - self.len;
        let n = data.len().min(room);
        self.bytes[self.len..self.len + n].copy_from_slice(&data[..n]);
        self.len += n;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct WriteLogger(File);

impl log::Log for WriteLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
        let mut buf = StackBuf {
            bytes: [0; 512],
            len: 0,
        };
        let _ = write_line!(buf, record);
        // SAFETY: the pointer and length describe `buf`'s initialized bytes, and the
        // descriptor is owned by `self.0`, open for the logger's whole life.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), buf.bytes.as_ptr().cast(), buf.len) };
    }

    fn flush(&self) {}
}

fn write_per_record(ctx: &Ctx) -> io::Result<RunResult> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&ctx.path)?;
    install_log(Box::leak(Box::new(WriteLogger(file))))?;
    let produced = produce(ctx.threads, ctx.records, log_record);
    let synced = sync_file(&ctx.path)?;
    Ok(summarize(
        "write2",
        ctx.threads,
        produced,
        synced,
        ctx.timer_ns,
    ))
}

// ---------------------------------------------------------------------------------
// tracing-appender

fn tracing_run(ctx: &Ctx, name: &str, lossy: bool) -> io::Result<RunResult> {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(lossy)
        .finish(File::create(&ctx.path)?);
    let dropped = writer.error_counter();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::set_global_default(subscriber).map_err(io::Error::other)?;
    let produced = produce(ctx.threads, ctx.records, |i| {
        tracing::info!("request {} handled in {} us by {}", i, i % 997, "worker-7");
    });
    // The guard's drop queues a shutdown behind the lines and waits (up to 1 s) for
    // the worker to write them.
    drop(guard);
    let synced = sync_file(&ctx.path)?;
    let mut result = summarize(name, ctx.threads, produced, synced, ctx.timer_ns);
    result.reported_dropped = Some(dropped.dropped_lines() as u64);
    Ok(result)
}

fn tracing_lossy(ctx: &Ctx) -> io::Result<RunResult> {
    tracing_run(ctx, "tracing-lossy", true)
}

fn tracing_blocking(ctx: &Ctx) -> io::Result<RunResult> {
    tracing_run(ctx, "tracing-blocking", false)
}

// ---------------------------------------------------------------------------------
// slog

fn slog_run(
    ctx: &Ctx,
    name: &str,
    overflow: slog_async::OverflowStrategy,
) -> io::Result<RunResult> {
    use slog::Drain as _;
    let decorator = slog_term::PlainDecorator::new(File::create(&ctx.path)?);
    let format = slog_term::FullFormat::new(decorator).build().fuse();
    let (drain, guard) = slog_async::Async::new(format)
        .overflow_strategy(overflow)
        .build_with_guard();
    let logger = slog::Logger::root(drain.fuse(), slog::o!());
    let produced = produce(ctx.threads, ctx.records, |i| {
        slog::info!(
            logger,
            "request {} handled in {} us by {}",
            i,
            i % 997,
            "worker-7"
        );
    });
    drop(logger);
    // Joins the worker after the records queued before it.
    drop(guard);
    let synced = sync_file(&ctx.path)?;
    Ok(summarize(name, ctx.threads, produced, synced, ctx.timer_ns))
}

fn slog_drop(ctx: &Ctx) -> io::Result<RunResult> {
    slog_run(ctx, "slog-drop", slog_async::OverflowStrategy::Drop)
}

fn slog_block(ctx: &Ctx) -> io::Result<RunResult> {
    slog_run(ctx, "slog-block", slog_async::OverflowStrategy::Block)
}
