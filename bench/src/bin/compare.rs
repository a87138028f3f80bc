//! The comparison: quelog beside tracing-appender, slog-async, spdlog-rs and two
//! obvious `log` loggers, each backend and thread count in its own process.
//!
//! ```text
//! cargo run --release --manifest-path bench/Cargo.toml --bin compare
//! cargo run --release --manifest-path bench/Cargo.toml --bin compare -- \
//!     --records 100000 --runs 1 --threads 1,2 --only quelog-default,spdlog-async
//! ```
//!
//! Writes `bench/results/compare.md` (the tables and the targets check, ready to
//! paste into BENCHMARKS.md), `compare.json` (every run and the medians) and the SVG
//! plots, and prints the markdown.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use quelog_bench::backends::{Ctx, BACKENDS};
use quelog_bench::drain::{drain_rate, DrainResult};
use quelog_bench::measure::{count_records, timer_cost_ns, RunResult, CHILD_TIMEOUT};
use quelog_bench::{plot, report};

struct Args {
    records: u64,
    runs: usize,
    threads: Vec<usize>,
    only: Option<Vec<String>>,
    out: PathBuf,
    dir: PathBuf,
    drain: bool,
    /// Rewrite the generated part of the repository's BENCHMARKS.md.
    update: bool,
    child: Option<String>,
    file: Option<PathBuf>,
}

const USAGE: &str = "compare [--records N (200000)] [--runs R (3)] [--threads 1,2,4] \
[--only NAME,NAME] [--out DIR (bench/results)] [--dir TMPDIR] [--no-drain] \
[--update-benchmarks-md]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        records: 200_000,
        runs: 3,
        threads: vec![1, 2, 4],
        only: None,
        out: Path::new(env!("CARGO_MANIFEST_DIR")).join("results"),
        dir: std::env::temp_dir(),
        drain: true,
        update: false,
        child: None,
        file: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}\n{USAGE}");
        match flag.as_str() {
            "--records" => args.records = value()?.parse().map_err(|e| bad(&e))?,
            "--runs" => args.runs = value()?.parse().map_err(|e| bad(&e))?,
            "--threads" => {
                args.threads = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(&e))?
            }
            "--only" => args.only = Some(value()?.split(',').map(str::to_owned).collect()),
            "--out" => args.out = value()?.into(),
            "--dir" => args.dir = value()?.into(),
            "--no-drain" => args.drain = false,
            "--update-benchmarks-md" => args.update = true,
            "--child" => args.child = Some(value()?),
            "--file" => args.file = Some(value()?.into()),
            "--help" | "-h" => return Err(USAGE.into()),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    if args.records == 0 || args.runs == 0 || args.threads.is_empty() {
        return Err(format!(
            "records, runs and threads must be positive\n{USAGE}"
        ));
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let outcome = match &args.child {
        Some(name) => child(name, &args),
        None => parent(&args),
    };
    if let Err(e) = outcome {
        eprintln!("compare: {e}");
        std::process::exit(1);
    }
}

/// One backend at one thread count, in this process; the result as one JSON line.
fn child(name: &str, args: &Args) -> io::Result<()> {
    let path = args
        .file
        .clone()
        .ok_or_else(|| io::Error::other("--child needs --file"))?;
    let json = if name == "drain" {
        serde_json::to_string(&drain_rate(&path)?)
    } else {
        let backend = BACKENDS
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| io::Error::other(format!("no backend {name}")))?;
        let ctx = Ctx {
            threads: args.threads[0],
            records: args.records,
            path,
            timer_ns: timer_cost_ns(),
        };
        serde_json::to_string(&(backend.run)(&ctx)?)
    }
    .map_err(io::Error::other)?;
    writeln!(io::stdout(), "{json}")
}

/// Runs `compare --child name` and waits for it; its stdout and its `ru_maxrss`.
fn spawn_child(name: &str, threads: usize, records: u64, file: &Path) -> io::Result<(String, u64)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--child", name, "--threads", &threads.to_string()])
        .args(["--records", &records.to_string()])
        .arg("--file")
        .arg(file)
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id() as libc::pid_t;
    let started = Instant::now();
    let (status, rss_kib) = loop {
        let mut status = 0;
        // SAFETY: all-zero is a valid `rusage` (plain integers), filled in by wait4.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our own child, not yet reaped (std's `Child` never waited
        // on it); `status` and `usage` are valid for writes.
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid {
            break (status, usage.ru_maxrss as u64);
        }
        if reaped < 0 {
            return Err(io::Error::last_os_error());
        }
        if started.elapsed() > CHILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!("{name} T={threads} timed out")));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let mut stdout = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        io::Read::read_to_string(&mut pipe, &mut stdout)?;
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(io::Error::other(format!(
            "{name} T={threads} failed (status {status:#x})"
        )));
    }
    Ok((stdout, rss_kib))
}

fn parent(args: &Args) -> io::Result<()> {
    let selected: Vec<&str> = BACKENDS
        .iter()
        .map(|b| b.name)
        .filter(|name| {
            args.only
                .as_ref()
                .is_none_or(|only| only.iter().any(|o| o == name))
        })
        .collect();
    if let Some(unknown) = args
        .only
        .iter()
        .flatten()
        .find(|o| !BACKENDS.iter().any(|b| b.name == o.as_str()))
    {
        return Err(io::Error::other(format!("no backend {unknown}")));
    }
    let dir = args
        .dir
        .join(format!("quelog-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::create_dir_all(&args.out)?;
    let began = Instant::now();
    let mut runs: Vec<RunResult> = Vec::new();
    let mut drains: Vec<DrainResult> = Vec::new();
    // Runs that failed, or where the file and the backend's own drop count disagree.
    let mut mismatches: Vec<String> = Vec::new();
    // Run-major order: each backend's runs are spread over the whole session, so
    // a burst of load from elsewhere does not hit all runs of one backend.
    for run in 0..args.runs {
        if args.drain {
            let file = dir.join("drain.log");
            let (out, _) = spawn_child("drain", 1, 1, &file)?;
            let _ = std::fs::remove_file(&file);
            let d: DrainResult = serde_json::from_str(out.trim()).map_err(io::Error::other)?;
            eprintln!(
                "run {}/{} drain: {:.2}M records/s",
                run + 1,
                args.runs,
                d.records_per_s / 1e6
            );
            drains.push(d);
        }
        for name in &selected {
            for &threads in &args.threads {
                let file = dir.join(format!("{name}-{threads}.log"));
                let outcome =
                    spawn_child(name, threads, args.records, &file).and_then(|(out, rss)| {
                        serde_json::from_str::<RunResult>(out.trim())
                            .map(|r| (r, rss))
                            .map_err(io::Error::other)
                    });
                // A backend that fails or hangs is reported; the others still run.
                let (mut r, rss) = match outcome {
                    Ok(measured) => measured,
                    Err(e) => {
                        let note = format!("{name} T={threads} run {}: {e}", run + 1);
                        eprintln!("compare: {note}");
                        mismatches.push(note);
                        let _ = std::fs::remove_file(&file);
                        continue;
                    }
                };
                r.peak_rss_kib = rss;
                r.in_file = count_records(&file)?;
                r.bytes_per_record =
                    std::fs::metadata(&file)?.len() as f64 / r.in_file.max(1) as f64;
                let _ = std::fs::remove_file(&file);
                eprintln!(
                    "run {}/{} {name} T={threads}: {:.2}M calls/s, p50 {}, p99.9 {}, kept {}/{}, synced {:.2} s, {:.1} MiB",
                    run + 1,
                    args.runs,
                    r.calls_per_s / 1e6,
                    report::duration(r.p50_ns),
                    report::duration(r.p999_ns),
                    r.in_file,
                    r.emitted,
                    r.synced_s,
                    rss as f64 / 1024.0
                );
                if let Some(dropped) = r.reported_dropped {
                    if r.in_file + dropped != r.emitted {
                        let note = format!(
                            "{name} T={threads} run {}: {} lines in the file + {dropped} reported dropped != {} calls",
                            run + 1,
                            r.in_file,
                            r.emitted
                        );
                        eprintln!("compare: {note}");
                        mismatches.push(note);
                    }
                }
                runs.push(r);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut medians = Vec::new();
    for name in &selected {
        for &threads in &args.threads {
            let of: Vec<RunResult> = runs
                .iter()
                .filter(|r| r.backend == *name && r.threads == threads)
                .cloned()
                .collect();
            if !of.is_empty() {
                medians.push(report::median(&of));
            }
        }
    }
    let drain = (!drains.is_empty()).then(|| {
        let mut d = drains.clone();
        d.sort_by(|a, b| a.records_per_s.total_cmp(&b.records_per_s));
        d[d.len() / 2].clone()
    });
    let elapsed = began.elapsed();
    let markdown = render(args, &medians, drain.as_ref(), &mismatches, elapsed);
    print!("{markdown}");
    std::fs::write(args.out.join("compare.md"), &markdown)?;
    if args.update {
        update_benchmarks_md(&markdown)?;
    }
    let json = serde_json::json!({
        "machine": machine(),
        "command": command(args),
        "records_per_thread": args.records,
        "runs": runs,
        "medians": medians,
        "drain_runs": drains,
        "seconds": elapsed.as_secs_f64(),
    });
    std::fs::write(
        args.out.join("compare.json"),
        serde_json::to_string_pretty(&json).map_err(io::Error::other)?,
    )?;
    let plots = [
        (
            "throughput.svg",
            plot::throughput(&medians, &args.threads, &args.out.join("throughput.svg")),
        ),
        (
            "latency-t1",
            plot::latency(
                &medians,
                args.threads[0],
                &args.out.join(format!("latency-t{}.svg", args.threads[0])),
            ),
        ),
    ];
    let last = *args.threads.last().unwrap_or(&1);
    let last_plot = plot::latency(
        &medians,
        last,
        &args.out.join(format!("latency-t{last}.svg")),
    );
    for (name, outcome) in plots.into_iter().chain([("latency-last", last_plot)]) {
        if let Err(e) = outcome {
            eprintln!("compare: plot {name}: {e}");
        }
    }
    eprintln!(
        "compare: wrote {} ({:.0} s)",
        args.out.display(),
        elapsed.as_secs_f64()
    );
    Ok(())
}

const BEGIN: &str =
    "<!-- compare:begin (generated by the compare bench; edits here are overwritten) -->";
const END: &str = "<!-- compare:end -->";

/// Replaces what stands between [`BEGIN`] and [`END`] in the repository's
/// BENCHMARKS.md with this run's markdown; the prose around it stays.
fn update_benchmarks_md(markdown: &str) -> io::Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md");
    let text = std::fs::read_to_string(&path)?;
    let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        return Err(io::Error::other(format!(
            "{} lacks the compare markers",
            path.display()
        )));
    };
    if end < begin {
        return Err(io::Error::other("compare markers out of order"));
    }
    let updated = format!("{}{BEGIN}\n\n{markdown}\n{}", &text[..begin], &text[end..]);
    std::fs::write(&path, updated)?;
    eprintln!("compare: updated {}", path.display());
    Ok(())
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map_or("?".into(), |s| s.trim().to_owned())
}

fn machine() -> serde_json::Value {
    let cpuinfo = read_trimmed("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "?".into());
    serde_json::json!({
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": model,
        "kernel": read_trimmed("/proc/sys/kernel/osrelease"),
        "clocksource": read_trimmed("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        "loadavg_at_start": read_trimmed("/proc/loadavg"),
    })
}

fn command(args: &Args) -> String {
    let mut command =
        String::from("cargo run --release --manifest-path bench/Cargo.toml --bin compare");
    let threads = args
        .threads
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(",");
    if args.records != 200_000
        || args.runs != 3
        || threads != "1,2,4"
        || args.only.is_some()
        || !args.drain
    {
        command.push_str(" --");
        if args.records != 200_000 {
            command.push_str(&format!(" --records {}", args.records));
        }
        if args.runs != 3 {
            command.push_str(&format!(" --runs {}", args.runs));
        }
        if threads != "1,2,4" {
            command.push_str(&format!(" --threads {threads}"));
        }
        if let Some(only) = &args.only {
            command.push_str(&format!(" --only {}", only.join(",")));
        }
        if !args.drain {
            command.push_str(" --no-drain");
        }
    }
    command
}

fn render(
    args: &Args,
    medians: &[RunResult],
    drain: Option<&DrainResult>,
    mismatches: &[String],
    elapsed: Duration,
) -> String {
    let m = machine();
    let mut out = String::new();
    out.push_str(&format!(
        "Command: `{}` ({:.0} s)\n\nMachine: {} cores, {}, kernel {}, clocksource {}, load average at start {}.\n\n",
        command(args),
        elapsed.as_secs_f64(),
        m["cores"],
        m["cpu"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        m["clocksource"].as_str().unwrap_or("?"),
        m["loadavg_at_start"].as_str().unwrap_or("?"),
    ));
    out.push_str(&format!(
        "Each row: T threads x {} records, median of {} runs, one process per run. \
         Latency: every 16th call timed with an `Instant` pair, the median empty pair \
         ({:.0} ns here) subtracted.\n\n",
        args.records,
        args.runs,
        medians.first().map_or(0.0, |r| r.timer_ns)
    ));
    out.push_str(&report::summary_table(medians, &args.threads));
    out.push_str("\nEvery measurement:\n\n");
    out.push_str(&report::full_table(medians));
    if mismatches.is_empty() {
        out.push_str(
            "\nAccounting: in every run of a backend that counts its drops (quelog, tracing-appender), \
             lines in the file + drops reported = calls made.\n",
        );
    } else {
        out.push_str("\nFailed runs and accounting mismatches (lines in the file + drops reported != calls):\n\n");
        for m in mismatches {
            out.push_str(&format!("- {m}\n"));
        }
    }
    if let Some(d) = drain {
        out.push_str(&format!(
            "\nDrain rate (one listener, 1M queued records into a file, `SyncPolicy::Never`): {:.2}M records/s ({} written in {:.3} s, median of {} runs); {:.2}M records/s counting the final fsync at stop ({:.1} ms)\n",
            d.records_per_s / 1e6,
            d.written,
            d.seconds,
            args.runs,
            d.records_per_s_synced / 1e6,
            d.final_sync_s * 1e3
        ));
    }
    out.push_str("\nTargets of issue 11:\n\n");
    out.push_str(&report::targets_list(&report::targets(
        medians,
        &args.threads,
        drain,
    )));
    out.push_str("\nBackends:\n\n");
    out.push_str(&report::setups(medians));
    out
}
