//! What the latency examples share: their command line, the per-call timer (rdtsc with fences on x86-64,
//! `Instant` elsewhere), its calibration and overhead, and the thread's page-fault
//! count. Included by path (`#[path = "support/bench.rs"] mod bench;`).

#![allow(dead_code)]

use std::time::{Duration, Instant};

#[cfg(target_arch = "x86_64")]
pub mod ticks {
    use std::arch::x86_64::{_mm_lfence, _rdtsc};

    pub const NAME: &str = "rdtsc with lfence on both sides, calibrated against Instant";

    /// The time-stamp counter, with every earlier instruction finished before it is
    /// read and no later one started before.
    #[inline(always)]
    pub fn now() -> u64 {
        // SAFETY: lfence and rdtsc are baseline x86-64 instructions with no memory
        // operands and no preconditions.
        unsafe {
            _mm_lfence();
            let t = _rdtsc();
            _mm_lfence();
            t
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub mod ticks {
    use std::sync::OnceLock;
    use std::time::Instant;

    pub const NAME: &str = "Instant (no rdtsc on this architecture)";

    static BASE: OnceLock<Instant> = OnceLock::new();

    #[inline(always)]
    pub fn now() -> u64 {
        BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

/// Ticks per nanosecond of [`ticks::now`], measured against `Instant`.
pub fn calibrate() -> f64 {
    let (t0, c0) = (Instant::now(), ticks::now());
    while t0.elapsed() < Duration::from_millis(100) {
        std::hint::spin_loop();
    }
    let (c1, t1) = (ticks::now(), Instant::now());
    (c1 - c0) as f64 / (t1 - t0).as_nanos() as f64
}

/// Median cost of an empty timer pair, in ticks of that timer.
pub fn empty_pair_median(mut pair: impl FnMut() -> u64) -> u64 {
    let mut samples: Vec<u64> = (0..200_000).map(|_| pair()).collect();
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Median cost of an empty pair of [`ticks::now`] calls, in ticks.
pub fn empty_ticks_pair_median() -> u64 {
    empty_pair_median(|| {
        let start = ticks::now();
        ticks::now().wrapping_sub(start)
    })
}

/// Minor page faults of the calling thread so far.
pub fn thread_minflt() -> u64 {
    // SAFETY: `rusage` is plain integers, for which all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage into a live local.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } != 0 {
        return 0;
    }
    usage.ru_minflt as u64
}

/// Command-line settings.
pub struct Settings {
    pub samples: usize,
    pub warmup: usize,
    pub capacity_mib: usize,
    /// Run only this design (for profiling).
    pub only: Option<String>,
    /// quelog's filter directives (`Builder::filter`), for the filtered rows.
    pub filter: Option<String>,
}

impl Settings {
    /// From the command line, with quelog's ring at `capacity_mib` unless said.
    pub fn from_args(capacity_mib: usize) -> Result<Settings, String> {
        let mut settings = Settings {
            samples: 200_000,
            warmup: 20_000,
            capacity_mib,
            only: None,
            filter: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args.next().ok_or(format!("{flag} needs a value"))?;
            if flag == "--only" {
                settings.only = Some(value);
                continue;
            }
            if flag == "--filter" {
                settings.filter = Some(value);
                continue;
            }
            let value: usize = value
                .parse()
                .map_err(|_| format!("{flag}: not a number: {value}"))?;
            match flag.as_str() {
                "--samples" => settings.samples = value.max(1000),
                "--warmup" => settings.warmup = value,
                "--capacity-mib" => settings.capacity_mib = value,
                _ => {
                    return Err(format!(
                        "unknown flag {flag} (--samples N, --warmup N, --capacity-mib N, --only DESIGN, --filter DIRECTIVES)"
                    ))
                }
            }
        }
        Ok(settings)
    }
}

/// The values at quantiles `at` (0.5 for the median, 1.0 for the max) of `samples` in
/// ticks, in nanoseconds; nearest rank, so every value is one that was measured.
pub fn quantiles_ns<const N: usize>(
    mut samples: Vec<u64>,
    ticks_per_ns: f64,
    at: [f64; N],
) -> [f64; N] {
    samples.sort_unstable();
    at.map(|p| {
        let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len().max(1));
        samples
            .get(rank - 1)
            .map_or(0.0, |&t| t as f64 / ticks_per_ns)
    })
}

/// What one producer thread measured.
pub struct ThreadRun {
    /// Per-call ticks.
    pub samples: Vec<u64>,
    /// Calls per second in the untimed block.
    pub throughput: f64,
    /// Minor page faults during the measured loops.
    pub minflt: u64,
}

/// The threads' runs together: every sample, the mean per-thread throughput, and the
/// page faults summed.
pub fn merge(runs: Vec<ThreadRun>) -> (Vec<u64>, f64, u64) {
    let threads = runs.len().max(1) as f64;
    let throughput = runs.iter().map(|r| r.throughput).sum::<f64>() / threads;
    let minflt = runs.iter().map(|r| r.minflt).sum();
    let samples = runs.into_iter().flat_map(|r| r.samples).collect();
    (samples, throughput, minflt)
}
