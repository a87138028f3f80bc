//! The signal storm: producer threads logging in a loop while `SIGALRM` (from
//! `setitimer`) and `SIGUSR1` (from `pthread_kill`) interrupt them, and both signal
//! handlers log a multi-argument record with `log::warn!`.
//!
//! Every storm runs in a child process (the binary re-executes itself, see
//! [`child`]) under a watchdog that kills it when some producer stops making progress.
//! The same storm runs against quelog and against three naive designs (the negative
//! controls of `../shared/DESIGN.md`): a `Mutex<Vec<String>>` logger, a
//! crossbeam-channel bounded channel whose receiver blocks in `recv()`, and the same
//! channel whose receiver only polls `try_recv`. The controls must deadlock; quelog must
//! not, and must account for every record.
//!
//! The child's main thread must be the process's main thread with `SIGALRM` and
//! `SIGUSR1` blocked before any other thread exists, so the process-directed `SIGALRM`
//! can only land on producers: [`child_main`] must be called first thing in `main`
//! (`tests/storm.rs` has `harness = false` for this; `examples/storm.rs` is a plain
//! `main`).
//!
//! Shared by `tests/storm.rs` and `examples/storm.rs`.

#![allow(dead_code)]

#[path = "child.rs"]
pub mod child;

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::os::unix::thread::JoinHandleExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use child::{Ending, Run, Watch};

/// The logger under the storm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Negative control: `Mutex<Vec<String>>`, a `String` formatted per record.
    Mutex,
    /// Negative control: crossbeam-channel `bounded`, fixed 64-byte messages,
    /// `try_send` everywhere, the receiver thread blocks in `recv()`.
    ChannelBlocking,
    /// Negative control: the same channel, the receiver only polls `try_recv` and sleeps.
    ChannelPolling,
    /// quelog, installed with `Builder::install`, writing a file.
    Quelog,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Mutex => "mutex",
            Backend::ChannelBlocking => "channel-blocking",
            Backend::ChannelPolling => "channel-polling",
            Backend::Quelog => "quelog",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Backend::Mutex => "Mutex logger",
            Backend::ChannelBlocking => "crossbeam (blocking receiver)",
            Backend::ChannelPolling => "crossbeam (polling receiver)",
            Backend::Quelog => "quelog",
        }
    }

    fn parse(name: &str) -> Option<Backend> {
        [
            Backend::Mutex,
            Backend::ChannelBlocking,
            Backend::ChannelPolling,
            Backend::Quelog,
        ]
        .into_iter()
        .find(|b| b.name() == name)
    }
}

/// Most producer threads.
pub const MAX_PRODUCERS: usize = 4;

/// One storm: the load and the logger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storm {
    pub backend: Backend,
    /// Producer threads, 1 to [`MAX_PRODUCERS`].
    pub producers: usize,
    /// How long the producers log under signals.
    pub load: Duration,
    /// `setitimer(ITIMER_REAL)` interval, microseconds.
    pub timer_us: u64,
    /// Pause between two rounds of `pthread_kill(SIGUSR1)` at every producer, microseconds.
    pub kill_pause_us: u64,
    /// Most log calls per producer (the load also ends at `load`).
    pub max_calls: u64,
    /// quelog: bytes of ring.
    pub ring_bytes: usize,
    /// quelog: `Overflow::Block` with this timeout in milliseconds; 0 means `Overflow::Drop`.
    pub block_ms: u64,
    /// Controls: capacity of the bounded channel.
    pub channel_capacity: usize,
}

impl Storm {
    /// The storm of the issue: 2 producers, `SIGALRM` every 30 us, `SIGUSR1` rounds
    /// every 50 us.
    pub fn new(backend: Backend) -> Storm {
        Storm {
            backend,
            producers: 2,
            load: Duration::from_secs(3),
            timer_us: 30,
            kill_pause_us: 50,
            max_calls: 20_000_000,
            ring_bytes: 4 << 20,
            block_ms: 0,
            channel_capacity: 64,
        }
    }

    /// The scenario string a child decodes.
    pub fn encode(&self) -> String {
        format!(
            "storm backend={} producers={} load_ms={} timer_us={} kill_pause_us={} max_calls={} ring_bytes={} block_ms={} channel_capacity={}",
            self.backend.name(),
            self.producers,
            self.load.as_millis(),
            self.timer_us,
            self.kill_pause_us,
            self.max_calls,
            self.ring_bytes,
            self.block_ms,
            self.channel_capacity,
        )
    }

    /// Parses [`Storm::encode`]'s output; `None` if `spec` is not a storm.
    pub fn decode(spec: &str) -> Option<Storm> {
        let rest = spec.strip_prefix("storm ")?;
        let mut words: HashMap<&str, &str> = HashMap::new();
        for word in rest.split_whitespace() {
            let (key, value) = word.split_once('=')?;
            words.insert(key, value);
        }
        let number = |key: &str| -> Option<u64> { words.get(key)?.parse().ok() };
        Some(Storm {
            backend: Backend::parse(words.get("backend")?)?,
            producers: (number("producers")? as usize).clamp(1, MAX_PRODUCERS),
            load: Duration::from_millis(number("load_ms")?),
            timer_us: number("timer_us")?.max(1),
            kill_pause_us: number("kill_pause_us")?,
            max_calls: number("max_calls")?,
            ring_bytes: number("ring_bytes")? as usize,
            block_ms: number("block_ms")?,
            channel_capacity: (number("channel_capacity")? as usize).max(1),
        })
    }
}

// ---------------------------------------------------------------------------------
// Parent side
// ---------------------------------------------------------------------------------

/// The watchdog of every storm: no producer may go this long without completing a log
/// call. The controls deadlock for good; quelog's producers complete thousands of calls
/// per second even on a loaded 2-core machine.
pub const STALL: Duration = Duration::from_secs(3);

/// Runs `storm` in a child process of the current binary under the watchdog.
pub fn run(storm: &Storm, stacks: bool) -> Run {
    let watch = Watch {
        stall: STALL,
        // The load, the final drain and the verification of the file, with room.
        total: storm.load + Duration::from_secs(60),
        stacks,
    };
    child::run_watched(child::self_command(&storm.encode()), watch)
}

/// `key=value` words of a line, numbers only.
pub fn fields(text: &str) -> HashMap<String, u64> {
    text.split_whitespace()
        .filter_map(|word| {
            let (key, value) = word.split_once('=')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// A control caught deadlocking by the watchdog.
#[derive(Debug)]
pub struct Caught {
    /// 1-based attempt that hung.
    pub attempt: usize,
    /// Time into the storm when the slowest producer last completed a log call (to the
    /// 50 ms of the progress reports).
    pub after: Duration,
    /// Signals whose handler started before the watchdog fired.
    pub signals: u64,
    /// Log calls the producers completed before the watchdog fired.
    pub calls: u64,
    /// What earlier attempts did instead of hanging.
    pub misses: Vec<String>,
    /// The frames above `<signal handler called>` per thread, when gdb ran.
    pub story: Vec<String>,
    pub run: Run,
}

/// Runs a negative control up to `attempts` times; `Ok` with the first hang, `Err`
/// saying what happened when it never hung: the harness lost its teeth.
pub fn expect_deadlock(storm: &Storm, attempts: usize, stacks: bool) -> Result<Caught, String> {
    let mut misses = Vec::new();
    for attempt in 1..=attempts {
        let run = run(storm, stacks);
        if run.hung() {
            // When the slowest producer last completed a call; what had happened by the
            // time the watchdog fired (the handlers that started before everything froze).
            let at_progress = fields(run.progress_text.as_deref().unwrap_or_default());
            let numbers = fields(run.last_progress.as_deref().unwrap_or_default());
            let story = run
                .stacks
                .as_deref()
                .map(|s| child::handler_frames(s, 12))
                .unwrap_or_default();
            return Ok(Caught {
                attempt,
                after: Duration::from_millis(at_progress.get("ms").copied().unwrap_or(0)),
                signals: numbers.get("signals").copied().unwrap_or(0),
                calls: numbers.get("calls").copied().unwrap_or(0),
                misses,
                story,
                run,
            });
        }
        misses.push(match run.ending {
            Ending::Exited(status) if status.success() => format!(
                "attempt {attempt}: survived {:.1?} ({})",
                storm.load,
                run.line_starting("SURVIVED ").unwrap_or("no summary")
            ),
            _ => format!(
                "attempt {attempt}: ended without hanging: {:?}\n{}",
                run.ending,
                run.describe()
            ),
        });
    }
    Err(format!(
        "the negative control '{}' never deadlocked in {attempts} attempts of {:.1?}: the storm harness lost its teeth \
         (it no longer reproduces the deadlocks of ../shared/DESIGN.md), so a passing quelog storm proves nothing.\n{}",
        storm.backend.title(),
        storm.load,
        misses.join("\n")
    ))
}

/// quelog's numbers after a storm it survived.
#[derive(Debug)]
pub struct Survived {
    pub numbers: HashMap<String, u64>,
    pub run: Run,
}

impl Survived {
    pub fn get(&self, key: &str) -> u64 {
        self.numbers.get(key).copied().unwrap_or(0)
    }
}

/// Runs quelog under `storm`; `Err` with everything known when it hung, crashed, or
/// could not account for every record.
pub fn expect_survival(storm: &Storm) -> Result<Survived, String> {
    let run = run(storm, true);
    let Some(result) = run.line_starting("RESULT ") else {
        return Err(format!("quelog storm gave no RESULT\n{}", run.describe()));
    };
    let numbers = fields(result);
    let get = |key: &str| numbers.get(key).copied();
    let mut wrong = Vec::new();
    if !run.succeeded() {
        wrong.push(format!("child did not exit cleanly: {:?}", run.ending));
    }
    match (get("attempted"), get("enqueued"), get("dropped")) {
        (Some(attempted), Some(enqueued), Some(dropped)) if attempted == enqueued + dropped => {}
        other => wrong.push(format!("attempted != enqueued + dropped: {other:?}")),
    }
    match (get("enqueued"), get("written"), get("lines")) {
        (Some(enqueued), Some(written), Some(lines)) if enqueued == written && written == lines => {
        }
        other => wrong.push(format!(
            "enqueued, written, lines in file differ: {other:?}"
        )),
    }
    for zero in [
        "problems",
        "on_listener",
        "on_other_thread",
        "lost",
        "filtered",
    ] {
        if get(zero) != Some(0) {
            wrong.push(format!("{zero} = {:?}, expected 0", get(zero)));
        }
    }
    if get("listener_blocks_signals") != Some(1) {
        wrong.push("the listener thread does not block SIGALRM and SIGUSR1".to_owned());
    }
    if get("signals").unwrap_or(0) < 100 {
        wrong.push(format!(
            "only {:?} signals were handled: the storm did not happen",
            get("signals")
        ));
    }
    if wrong.is_empty() {
        Ok(Survived { numbers, run })
    } else {
        Err(format!("{}\n{}", wrong.join("\n"), run.describe()))
    }
}

// ---------------------------------------------------------------------------------
// Child side
// ---------------------------------------------------------------------------------

const PRODUCER_TARGET: &str = "storm::producer";
const SIGNAL_TARGET: &str = "storm::signal";

/// Set to end the signal sources; then the producers.
static STOP_SIGNALS: AtomicBool = AtomicBool::new(false);
static STOP_PRODUCERS: AtomicBool = AtomicBool::new(false);
static STOP_MONITOR: AtomicBool = AtomicBool::new(false);

/// Log calls each producer completed.
static CALLS: [AtomicU64; MAX_PRODUCERS] = [const { AtomicU64::new(0) }; MAX_PRODUCERS];
/// A producer reached `max_calls` and stopped: it no longer counts for progress.
static FINISHED: [AtomicBool; MAX_PRODUCERS] = [const { AtomicBool::new(false) }; MAX_PRODUCERS];
/// Kernel thread ids of the producers (0: not started).
static PRODUCER_TIDS: [AtomicU32; MAX_PRODUCERS] = [const { AtomicU32::new(0) }; MAX_PRODUCERS];
/// Kernel thread id of quelog's listener (0: none).
static LISTENER_TID: AtomicU32 = AtomicU32::new(0);

/// Handlers entered, by signal: [SIGALRM, SIGUSR1].
static ENTERED: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
/// Handlers whose log call returned.
static HANDLED: AtomicU64 = AtomicU64::new(0);
/// Numbers the handler records, unique per record.
static HANDLER_SEQ: AtomicU64 = AtomicU64::new(0);
/// Handlers that ran on the listener thread / on any thread but a producer.
static ON_LISTENER: AtomicU64 = AtomicU64::new(0);
static ON_OTHER: AtomicU64 = AtomicU64::new(0);
/// `pthread_kill` calls made.
static SENT: AtomicU64 = AtomicU64::new(0);

/// Milliseconds since the load started, for the progress lines.
static LOAD_START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn gettid() -> u32 {
    // SAFETY: gettid takes no arguments and cannot fail; async-signal-safe.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// Formats into a fixed array: no allocation, usable where malloc may be held.
struct StackText<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> StackText<N> {
    fn new() -> Self {
        StackText {
            bytes: [0; N],
            len: 0,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl<const N: usize> fmt::Write for StackText<N> {
    /// Keeps what fits and drops the rest silently.
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let take = text.len().min(N - self.len);
        self.bytes[self.len..self.len + take].copy_from_slice(&text.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// Writes all of `bytes` to standard output with `write(2)`: no lock, no allocation.
fn raw_stdout(bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: writes from a live slice, its own length.
        let n = unsafe { libc::write(libc::STDOUT_FILENO, rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            return;
        }
        rest = &rest[n as usize..];
    }
}

/// `n` characters of `x`, written without allocating.
pub struct Pad(pub usize);

impl fmt::Display for Pad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const XS: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
        let mut left = self.0;
        while left > 0 {
            let take = left.min(XS.len());
            f.write_str(&XS[..take])?;
            left -= take;
        }
        Ok(())
    }
}

/// Pad of a producer record by its sequence number: mostly short records, some longer
/// than one 64-byte slot, a few longer than the 512-byte inline buffer.
fn pad_for(seq: u64) -> usize {
    match seq % 64 {
        7 | 23 | 39 | 55 => 150,
        63 => 700,
        _ => 0,
    }
}

fn produce(id: usize, max_calls: u64) {
    let unblock = signal_set(&[libc::SIGALRM, libc::SIGUSR1]);
    // SAFETY: changes this thread's mask with a live, initialised set.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &unblock, std::ptr::null_mut()) };
    PRODUCER_TIDS[id].store(gettid(), Relaxed);
    let mut seq = 0u64;
    while !STOP_PRODUCERS.load(Relaxed) && seq < max_calls {
        match pad_for(seq) {
            0 => log::info!(target: PRODUCER_TARGET, "p={} s={} k={}", id, seq, "short"),
            pad => log::info!(target: PRODUCER_TARGET, "p={} s={} pad={}", id, seq, Pad(pad)),
        }
        seq += 1;
        CALLS[id].store(seq, Relaxed);
    }
    FINISHED[id].store(true, Relaxed);
}

/// Both signal handlers: async-signal-safe as long as the logger is.
fn on_signal(which: usize) {
    let entered = ENTERED[which].fetch_add(1, Relaxed) + 1;
    let tid = gettid();
    if tid == LISTENER_TID.load(Relaxed) {
        ON_LISTENER.fetch_add(1, Relaxed);
    }
    if !PRODUCER_TIDS.iter().any(|t| t.load(Relaxed) == tid) {
        ON_OTHER.fetch_add(1, Relaxed);
    }
    let n = HANDLER_SEQ.fetch_add(1, Relaxed);
    let name = if which == 0 { "ALRM" } else { "USR1" };
    log::warn!(target: SIGNAL_TARGET, "sig={} n={} tid={} entered={}", name, n, tid, entered);
    HANDLED.fetch_add(1, Relaxed);
}

fn signal_set(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: all-zero is a valid sigset_t to hand to sigemptyset, which initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live local; sigemptyset/sigaddset only write it.
    unsafe {
        libc::sigemptyset(&mut set);
        for &signal in signals {
            libc::sigaddset(&mut set, signal);
        }
    }
    set
}

fn set_timer(interval_us: u64) {
    let tv = libc::timeval {
        tv_sec: (interval_us / 1_000_000) as libc::time_t,
        tv_usec: (interval_us % 1_000_000) as libc::suseconds_t,
    };
    let timer = libc::itimerval {
        it_interval: tv,
        it_value: tv,
    };
    // SAFETY: a live, initialised itimerval; the old value is not wanted.
    let rc = unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "setitimer: {}", std::io::Error::last_os_error());
}

/// The monitor: one progress line every 50 ms, formatted on the stack and written with
/// `write(2)`, so a control that deadlocked inside malloc or a lock cannot stop it.
/// Progress is the call count of the slowest producer still running.
fn monitor(producers: usize) {
    while !STOP_MONITOR.load(Relaxed) {
        let mut slowest = u64::MAX;
        let mut calls = 0;
        for id in 0..producers {
            let c = CALLS[id].load(Relaxed);
            calls += c;
            if !FINISHED[id].load(Relaxed) {
                slowest = slowest.min(c);
            }
        }
        if slowest == u64::MAX {
            slowest = calls;
        }
        let alrm = ENTERED[0].load(Relaxed);
        let usr1 = ENTERED[1].load(Relaxed);
        let ms = LOAD_START.get().map_or(0, |s| s.elapsed().as_millis());
        let mut line = StackText::<256>::new();
        let _ = writeln!(
            line,
            "PROGRESS {slowest} ms={ms} calls={calls} signals={} alrm={alrm} usr1={usr1} handled={} sent={}",
            alrm + usr1,
            HANDLED.load(Relaxed),
            SENT.load(Relaxed),
        );
        raw_stdout(line.as_bytes());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn killer(targets: Vec<libc::pthread_t>, pause: Duration) {
    // Wake up on time: the default 50 us timer slack would halve the signal rate.
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer, affects this thread only.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
    while !STOP_SIGNALS.load(Relaxed) {
        for &target in &targets {
            // SAFETY: every target is a producer that is joined only after this thread
            // is, so the pthread_t stays valid.
            unsafe { libc::pthread_kill(target, libc::SIGUSR1) };
            SENT.fetch_add(1, Relaxed);
        }
        std::thread::sleep(pause);
    }
}

/// The logger of a negative control that formats into a `String` under a mutex.
struct MutexLogger(std::sync::Mutex<Vec<String>>);

impl log::Log for MutexLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lines.push(format!(
            "{} {}: {}",
            record.level(),
            record.target(),
            record.args()
        ));
        if lines.len() >= 4096 {
            lines.clear();
        }
    }

    fn flush(&self) {}
}

/// The logger of the channel controls: a fixed 64-byte message, `try_send`, never
/// blocking on the caller and never allocating.
struct ChannelLogger(crossbeam_channel::Sender<[u8; 64]>);

impl log::Log for ChannelLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let mut text = StackText::<64>::new();
        let _ = write!(text, "{} {}", record.level(), record.args());
        let _ = self.0.try_send(text.bytes);
    }

    fn flush(&self) {}
}

/// What the child must do after the load, per backend.
enum Installed {
    Control,
    Quelog { guard: quelog::Guard, path: PathBuf },
}

fn install(storm: &Storm) -> Installed {
    match storm.backend {
        Backend::Mutex => {
            let logger = Box::new(MutexLogger(std::sync::Mutex::new(Vec::new())));
            log::set_boxed_logger(logger).expect("install the mutex logger");
            log::set_max_level(log::LevelFilter::Info);
            Installed::Control
        }
        Backend::ChannelBlocking | Backend::ChannelPolling => {
            let (tx, rx) = crossbeam_channel::bounded::<[u8; 64]>(storm.channel_capacity);
            let polling = storm.backend == Backend::ChannelPolling;
            // Spawned from the main thread, so it starts with the signals blocked.
            std::thread::Builder::new()
                .name("control-receiver".into())
                .spawn(move || {
                    if polling {
                        loop {
                            match rx.try_recv() {
                                Ok(_) => {}
                                Err(crossbeam_channel::TryRecvError::Empty) => {
                                    std::thread::sleep(Duration::from_micros(50));
                                }
                                Err(crossbeam_channel::TryRecvError::Disconnected) => return,
                            }
                        }
                    } else {
                        while rx.recv().is_ok() {}
                    }
                })
                .expect("spawn the receiver");
            log::set_boxed_logger(Box::new(ChannelLogger(tx))).expect("install the channel logger");
            log::set_max_level(log::LevelFilter::Info);
            Installed::Control
        }
        Backend::Quelog => {
            let dir = std::env::temp_dir().join(format!("quelog-storm-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let path = dir.join("storm.log");
            let mut builder = quelog::Builder::new()
                .file(&path)
                .capacity(storm.ring_bytes)
                .level(log::LevelFilter::Info);
            if storm.block_ms > 0 {
                builder = builder.overflow(quelog::Overflow::Block {
                    timeout: Duration::from_millis(storm.block_ms),
                });
            }
            let guard = builder.install().expect("install quelog");
            LISTENER_TID.store(find_listener_tid(), Relaxed);
            Installed::Quelog { guard, path }
        }
    }
}

/// The kernel thread id of the thread named `quelog-listener`, waiting up to a second
/// for it to name itself.
fn find_listener_tid() -> u32 {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                if comm.trim_end() == "quelog-listener" {
                    if let Some(tid) = task.file_name().to_str().and_then(|s| s.parse().ok()) {
                        return tid;
                    }
                }
            }
        }
        if Instant::now() > deadline {
            return 0;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether thread `tid` of this process blocks `SIGALRM` and `SIGUSR1`, per
/// `/proc/self/task/<tid>/status`.
fn blocks_storm_signals(tid: u32) -> bool {
    let status =
        std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap_or_default();
    let Some(mask) = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
    else {
        return false;
    };
    let bit = |signal: libc::c_int| 1u64 << (signal - 1);
    mask & bit(libc::SIGALRM) != 0 && mask & bit(libc::SIGUSR1) != 0
}

/// Runs the storm this process was started for, prints its result, and exits. Call it
/// first thing in `main`, before any other thread exists.
pub fn child_main(spec: &str) -> ! {
    let Some(storm) = Storm::decode(spec) else {
        eprintln!("not a storm scenario: {spec}");
        std::process::exit(2);
    };
    // Let gdb attach when Yama restricts ptrace to ancestors.
    // SAFETY: PR_SET_PTRACER takes plain integers.
    unsafe {
        libc::prctl(
            libc::PR_SET_PTRACER,
            libc::PR_SET_PTRACER_ANY as libc::c_ulong,
        )
    };
    // Every thread spawned from here on starts with the storm's signals blocked; the
    // producers unblock them for themselves.
    let block = signal_set(&[libc::SIGALRM, libc::SIGUSR1]);
    // SAFETY: changes this thread's mask with a live, initialised set.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &block, std::ptr::null_mut()) };

    let installed = install(&storm);
    for (index, signal) in [libc::SIGALRM, libc::SIGUSR1].into_iter().enumerate() {
        // SAFETY: the action only touches atomics and logs through the installed
        // logger; whether that logger is async-signal-safe is what the storm tests.
        unsafe { signal_hook::low_level::register(signal, move || on_signal(index)) }
            .expect("register a signal handler");
    }

    let monitor = std::thread::spawn(move || monitor(storm.producers));
    let producers: Vec<JoinHandle<()>> = (0..storm.producers)
        .map(|id| {
            let max_calls = storm.max_calls;
            std::thread::Builder::new()
                .name(format!("producer-{id}"))
                .spawn(move || produce(id, max_calls))
                .expect("spawn a producer")
        })
        .collect();
    while PRODUCER_TIDS[..storm.producers]
        .iter()
        .any(|t| t.load(Relaxed) == 0)
    {
        std::thread::yield_now();
    }
    let _ = LOAD_START.set(Instant::now());
    let targets = producers.iter().map(|p| p.as_pthread_t()).collect();
    let pause = Duration::from_micros(storm.kill_pause_us);
    let killer = std::thread::spawn(move || killer(targets, pause));
    set_timer(storm.timer_us);

    std::thread::sleep(storm.load);

    STOP_SIGNALS.store(true, Relaxed);
    // SAFETY: zeroed itimerval disarms the timer.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &std::mem::zeroed(), std::ptr::null_mut()) };
    let _ = killer.join();
    STOP_PRODUCERS.store(true, Relaxed);
    for producer in producers {
        let _ = producer.join();
    }
    STOP_MONITOR.store(true, Relaxed);
    let _ = monitor.join();
    // The last numbers, then time for the final drain and the file check.
    let calls: u64 = CALLS.iter().map(|c| c.load(Relaxed)).sum();
    let alrm = ENTERED[0].load(Relaxed);
    let usr1 = ENTERED[1].load(Relaxed);
    println!("PATIENCE 30000");
    let summary = format!(
        "calls={calls} signals={} alrm={alrm} usr1={usr1} handled={} sent={} on_listener={} on_other_thread={}",
        alrm + usr1,
        HANDLED.load(Relaxed),
        SENT.load(Relaxed),
        ON_LISTENER.load(Relaxed),
        ON_OTHER.load(Relaxed),
    );
    match installed {
        Installed::Control => {
            println!("SURVIVED {summary}");
            std::process::exit(0);
        }
        Installed::Quelog { guard, path } => {
            let listener_blocks = blocks_storm_signals(LISTENER_TID.load(Relaxed));
            let stats = guard.stop().expect("stop quelog");
            let check = check_log_file(&path);
            let attempted = calls + HANDLED.load(Relaxed);
            let mut problems = check.problems;
            if ON_LISTENER.load(Relaxed) != 0 {
                problems.push("a signal handler ran on the listener thread".to_owned());
            }
            let reported = check.reported_drops;
            let dropped_in_ring = stats.dropped.queue_full + stats.dropped.contended;
            if reported != dropped_in_ring {
                problems.push(format!(
                    "the log reports {reported} dropped records, the counters {dropped_in_ring}"
                ));
            }
            println!(
                "RESULT {summary} attempted={attempted} enqueued={} written={} dropped={} queue_full={} contended={} after_stop={} truncated={} lost={} filtered={} lines={} producer_lines={} signal_lines={} reported_drops={reported} listener_blocks_signals={} problems={}",
                stats.enqueued,
                stats.written,
                stats.dropped.total(),
                stats.dropped.queue_full,
                stats.dropped.contended,
                stats.dropped.after_stop,
                stats.truncated,
                stats.lost,
                stats.filtered,
                check.producer_lines + check.signal_lines,
                check.producer_lines,
                check.signal_lines,
                u64::from(listener_blocks),
                problems.len(),
            );
            for problem in problems.iter().take(20) {
                println!("PROBLEM {problem}");
            }
            if problems.is_empty() {
                let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
            } else {
                println!("LOG FILE KEPT {}", path.display());
            }
            std::process::exit(if problems.is_empty() { 0 } else { 1 });
        }
    }
}

/// One line of quelog's text format, split into its parts.
#[derive(Debug, PartialEq, Eq)]
pub struct Line<'a> {
    pub level: &'a str,
    pub thread_name: Option<&'a str>,
    pub tid: u32,
    pub target: &'a str,
    pub message: &'a str,
}

/// Parses `2026-11-22T04:14:35.123456Z  INFO [name/4242] target: message`, or says what
/// is wrong with it.
pub fn parse_line(line: &str) -> Result<Line<'_>, String> {
    let bytes = line.as_bytes();
    if bytes.len() < 36 {
        return Err("too short".to_owned());
    }
    let stamp_ok = bytes[..27].iter().enumerate().all(|(at, &b)| match at {
        4 | 7 => b == b'-',
        10 => b == b'T',
        13 | 16 => b == b':',
        19 => b == b'.',
        26 => b == b'Z',
        _ => b.is_ascii_digit(),
    });
    if !stamp_ok {
        return Err("bad timestamp".to_owned());
    }
    let level = match &line[27..33] {
        " ERROR" => "ERROR",
        "  WARN" => "WARN",
        "  INFO" => "INFO",
        " DEBUG" => "DEBUG",
        " TRACE" => "TRACE",
        _ => return Err("bad level".to_owned()),
    };
    let rest = line[33..].strip_prefix(" [").ok_or("no thread")?;
    let (thread, rest) = rest.split_once("] ").ok_or("unterminated thread")?;
    let (thread_name, tid) = match thread.rsplit_once('/') {
        Some((name, tid)) => (Some(name), tid),
        None => (None, thread),
    };
    let tid = tid.parse().map_err(|_| "bad thread id")?;
    let (target, message) = rest.split_once(": ").ok_or("no target")?;
    Ok(Line {
        level,
        thread_name,
        tid,
        target,
        message,
    })
}

/// What the log file of a quelog storm holds.
#[derive(Debug, Default)]
pub struct FileCheck {
    pub producer_lines: u64,
    pub signal_lines: u64,
    /// Sum of quelog's own "N records dropped" notices.
    pub reported_drops: u64,
    pub problems: Vec<String>,
}

const CUT_MARKER: &str = " [quelog: message cut at ";

/// Reads the storm's log file back: every line well formed, every producer's sequence
/// strictly increasing, every signal record unique and from a producer thread.
pub fn check_log_file(path: &Path) -> FileCheck {
    let mut check = FileCheck::default();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            check
                .problems
                .push(format!("cannot read {}: {e}", path.display()));
            return check;
        }
    };
    let tids: Vec<u32> = PRODUCER_TIDS.iter().map(|t| t.load(Relaxed)).collect();
    let mut last_seq: [Option<u64>; MAX_PRODUCERS] = [None; MAX_PRODUCERS];
    let mut handler_numbers = HashSet::new();
    let problem = |check: &mut FileCheck, number: usize, why: String, line: &str| {
        let shown: String = line.chars().take(200).collect();
        check
            .problems
            .push(format!("line {}: {why}: {shown}", number + 1));
    };
    if !text.is_empty() && !text.ends_with('\n') {
        check
            .problems
            .push("the file ends in a torn line".to_owned());
    }
    for (number, line) in text.lines().enumerate() {
        let parsed = match parse_line(line) {
            Ok(parsed) => parsed,
            Err(why) => {
                problem(&mut check, number, why, line);
                continue;
            }
        };
        match parsed.target {
            PRODUCER_TARGET => {
                check.producer_lines += 1;
                match check_producer_message(parsed.message) {
                    Ok((id, seq)) => {
                        if tids.get(id) != Some(&parsed.tid) {
                            problem(&mut check, number, "wrong thread id".to_owned(), line);
                        }
                        if last_seq[id].is_some_and(|last| seq <= last) {
                            problem(
                                &mut check,
                                number,
                                format!("sequence of producer {id} not increasing"),
                                line,
                            );
                        }
                        last_seq[id] = Some(seq);
                    }
                    Err(why) => problem(&mut check, number, why, line),
                }
            }
            SIGNAL_TARGET => {
                check.signal_lines += 1;
                let numbers = fields(parsed.message);
                let (Some(&n), Some(&tid)) = (numbers.get("n"), numbers.get("tid")) else {
                    problem(&mut check, number, "bad signal record".to_owned(), line);
                    continue;
                };
                let sig_ok = parsed.message.starts_with("sig=ALRM ")
                    || parsed.message.starts_with("sig=USR1 ");
                if !sig_ok || parsed.level != "WARN" {
                    problem(&mut check, number, "bad signal record".to_owned(), line);
                }
                if !handler_numbers.insert(n) {
                    problem(
                        &mut check,
                        number,
                        "duplicate signal record".to_owned(),
                        line,
                    );
                }
                if u64::from(parsed.tid) != tid || !tids.contains(&parsed.tid) {
                    problem(
                        &mut check,
                        number,
                        "handler not on a producer".to_owned(),
                        line,
                    );
                }
                if parsed.thread_name == Some("quelog-listener") {
                    problem(
                        &mut check,
                        number,
                        "handler on the listener".to_owned(),
                        line,
                    );
                }
            }
            "quelog" => {
                let dropped = parsed
                    .message
                    .strip_suffix(" records dropped (queue full)")
                    .or_else(|| parsed.message.strip_suffix(" records dropped (contended)"))
                    .and_then(|n| n.parse::<u64>().ok());
                match dropped {
                    Some(n) => check.reported_drops += n,
                    None => problem(&mut check, number, "unexpected notice".to_owned(), line),
                }
            }
            _ => problem(&mut check, number, "unknown target".to_owned(), line),
        }
    }
    check
}

/// `p=<id> s=<seq> k=short` or `p=<id> s=<seq> pad=<x * n>`, possibly cut.
fn check_producer_message(message: &str) -> Result<(usize, u64), String> {
    let (message, cut) = match message.find(CUT_MARKER) {
        Some(at) => (&message[..at], true),
        None => (message, false),
    };
    let mut words = message.splitn(3, ' ');
    let id: usize = words
        .next()
        .and_then(|w| w.strip_prefix("p="))
        .and_then(|w| w.parse().ok())
        .filter(|&id| id < MAX_PRODUCERS)
        .ok_or("bad producer id")?;
    let seq: u64 = words
        .next()
        .and_then(|w| w.strip_prefix("s="))
        .and_then(|w| w.parse().ok())
        .ok_or("bad sequence number")?;
    let body = words.next().unwrap_or_default();
    let ok = match pad_for(seq) {
        0 => body == "k=short",
        pad => body.strip_prefix("pad=").is_some_and(|xs| {
            xs.bytes().all(|b| b == b'x') && (xs.len() == pad || (cut && xs.len() < pad))
        }),
    };
    if ok {
        Ok((id, seq))
    } else {
        Err("bad producer message body".to_owned())
    }
}
