//! Medians of the runs, the markdown tables and the targets check.

use std::fmt::Write as _;

use crate::backends::BACKENDS;
use crate::drain::DrainResult;
use crate::measure::RunResult;

/// Median of each field over the runs of one backend at one thread count (each
/// field on its own, so a row need not be one run).
pub fn median(runs: &[RunResult]) -> RunResult {
    fn mid(mut values: Vec<f64>) -> f64 {
        values.sort_by(f64::total_cmp);
        match values.len() {
            0 => 0.0,
            n if n % 2 == 1 => values[n / 2],
            n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
        }
    }
    let f = |get: fn(&RunResult) -> f64| mid(runs.iter().map(get).collect());
    let first = runs.first().cloned().unwrap_or_default();
    RunResult {
        backend: first.backend,
        threads: first.threads,
        emitted: first.emitted,
        in_file: f(|r| r.in_file as f64) as u64,
        bytes_per_record: f(|r| r.bytes_per_record),
        reported_dropped: first
            .reported_dropped
            .map(|_| f(|r| r.reported_dropped.unwrap_or(0) as f64) as u64),
        calls_per_s: f(|r| r.calls_per_s),
        calls_per_s_range: [
            runs.iter()
                .map(|r| r.calls_per_s)
                .fold(f64::INFINITY, f64::min),
            runs.iter().map(|r| r.calls_per_s).fold(0.0, f64::max),
        ],
        p50_ns: f(|r| r.p50_ns),
        p99_ns: f(|r| r.p99_ns),
        p999_ns: f(|r| r.p999_ns),
        max_ns: f(|r| r.max_ns),
        timer_ns: f(|r| r.timer_ns),
        synced_s: f(|r| r.synced_s),
        tail_s: f(|r| r.tail_s),
        peak_rss_kib: f(|r| r.peak_rss_kib as f64) as u64,
    }
}

/// Looks up the median row of `backend` at `threads`.
pub fn row<'a>(rows: &'a [RunResult], backend: &str, threads: usize) -> Option<&'a RunResult> {
    rows.iter()
        .find(|r| r.backend == backend && r.threads == threads)
}

fn millions(rate: f64) -> String {
    format!("{:.2}M", rate / 1e6)
}

/// Nanoseconds as ns below 10 us, as us below 1 ms, else ms.
pub fn duration(ns: f64) -> String {
    if ns < 10_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.1} us", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

fn kept(r: &RunResult) -> f64 {
    100.0 * r.in_file as f64 / r.emitted.max(1) as f64
}

fn names(rows: &[RunResult]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for r in rows {
        if !names.contains(&r.backend.as_str()) {
            names.push(&r.backend);
        }
    }
    names
}

/// The issue-style summary: one row per backend.
pub fn summary_table(rows: &[RunResult], threads: &[usize]) -> String {
    let mut out = String::from("| backend |");
    for t in threads {
        let _ = write!(out, " T={t} calls/s |");
    }
    let t1 = threads.first().copied().unwrap_or(1);
    let _ =
        writeln!(
        out,
        " kept at T={} | caller p50 T={t1} | p99.9 T={t1} | synced after T={t1} | peak RSS T={} |",
        threads.iter().map(|t| t.to_string()).collect::<Vec<_>>().join("/"),
        threads.last().copied().unwrap_or(1),
    );
    let _ = writeln!(
        out,
        "|---|{}---|---|---|---|---|",
        "---|".repeat(threads.len())
    );
    for name in names(rows) {
        let _ = write!(out, "| {name} |");
        for &t in threads {
            let cell = row(rows, name, t).map_or("-".into(), |r| millions(r.calls_per_s));
            let _ = write!(out, " {cell} |");
        }
        let kept: Vec<String> = threads
            .iter()
            .map(|&t| row(rows, name, t).map_or("-".into(), |r| format!("{:.0}%", kept(r).floor())))
            .collect();
        let first = row(rows, name, t1);
        let last = row(rows, name, threads.last().copied().unwrap_or(1));
        let _ = writeln!(
            out,
            " {} | {} | {} | {} | {} |",
            kept.join(" / "),
            first.map_or("-".into(), |r| duration(r.p50_ns)),
            first.map_or("-".into(), |r| duration(r.p999_ns)),
            first.map_or("-".into(), |r| format!("{:.2} s", r.synced_s)),
            last.map_or("-".into(), |r| format!(
                "{:.1} MiB",
                r.peak_rss_kib as f64 / 1024.0
            )),
        );
    }
    out
}

/// Every measured field, one row per backend and thread count.
pub fn full_table(rows: &[RunResult]) -> String {
    let mut out = String::from(
        "| backend | T | calls/s | runs' range | p50 | p99 | p99.9 | max | written+synced | after last call | in file / emitted | backend-reported drops | bytes/line | peak RSS |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {}-{} | {} | {} | {} | {} | {:.3} s | {:.3} s | {} / {} ({:.1}%) | {} | {:.0} | {:.1} MiB |",
            r.backend,
            r.threads,
            millions(r.calls_per_s),
            millions(r.calls_per_s_range[0]),
            millions(r.calls_per_s_range[1]),
            duration(r.p50_ns),
            duration(r.p99_ns),
            duration(r.p999_ns),
            duration(r.max_ns),
            r.synced_s,
            r.tail_s,
            r.in_file,
            r.emitted,
            kept(r),
            r.reported_dropped.map_or("-".into(), |d| d.to_string()),
            r.bytes_per_record,
            r.peak_rss_kib as f64 / 1024.0,
        );
    }
    out
}

/// The backends' setups, as a list.
pub fn setups(rows: &[RunResult]) -> String {
    let mut out = String::new();
    for name in names(rows) {
        if let Some(b) = BACKENDS.iter().find(|b| b.name == name) {
            let _ = writeln!(out, "- `{}`: {}", b.name, b.setup);
        }
    }
    out
}

/// One target of the issue, checked against this run.
pub struct Check {
    pub met: bool,
    pub text: String,
}

/// What `value(ours) / value(theirs)` must be for a target to be met.
#[derive(Clone, Copy)]
enum Bound {
    AtLeast(f64),
    AtMost(f64),
}

fn ratio_check(
    rows: &[RunResult],
    what: &str,
    ours: &str,
    theirs: &str,
    threads: &[usize],
    value: fn(&RunResult) -> f64,
    bound: Bound,
) -> Vec<Check> {
    let mut checks = Vec::new();
    for &t in threads {
        let (Some(a), Some(b)) = (row(rows, ours, t), row(rows, theirs, t)) else {
            continue;
        };
        let ratio = value(a) / value(b).max(1e-9);
        let (met, sign, bound) = match bound {
            Bound::AtLeast(b) => (ratio >= b, ">=", b),
            Bound::AtMost(b) => (ratio <= b, "<=", b),
        };
        checks.push(Check {
            met,
            text: format!(
                "{what} at T={t}: {ours} / {theirs} = {ratio:.2}x (target {sign} {bound:.2}x)"
            ),
        });
    }
    checks
}

/// The targets that this run can answer, each met or missed with its ratio.
pub fn targets(rows: &[RunResult], threads: &[usize], drain: Option<&DrainResult>) -> Vec<Check> {
    let mut checks = Vec::new();
    if let Some(d) = drain {
        checks.push(Check {
            met: d.records_per_s >= 8e6,
            text: format!(
                "one listener drains into a real file: {:.2}M records/s (target >= 8M/s)",
                d.records_per_s / 1e6
            ),
        });
    }
    let rate = |r: &RunResult| r.calls_per_s;
    // Lossless: through the `log` facade, and through quelog's own macro.
    for ours in ["quelog-block", "quelog-macro-block"] {
        checks.extend(ratio_check(
            rows,
            "lossless calls/s",
            ours,
            "spdlog-async",
            threads,
            rate,
            Bound::AtLeast(2.0),
        ));
        checks.extend(ratio_check(
            rows,
            "lossless calls/s",
            ours,
            "mutex-bufwriter",
            threads,
            rate,
            Bound::AtLeast(1.5),
        ));
        checks.extend(ratio_check(
            rows,
            "Block caller p99.9",
            ours,
            "spdlog-async",
            threads,
            |r| r.p999_ns,
            Bound::AtMost(1.0),
        ));
    }
    if let Some(r) = row(rows, "quelog-default", 1) {
        checks.push(Check {
            met: kept(r) >= 99.0,
            text: format!("default settings keep >= 99% at T=1: {:.1}% kept", kept(r)),
        });
    }
    for &t in threads.iter().filter(|&&t| t > 1) {
        if let (Some(q), Some(ta)) = (
            row(rows, "quelog-default", t),
            row(rows, "tracing-lossy", t),
        ) {
            let (ours, theirs) = (
                q.emitted - q.in_file.min(q.emitted),
                ta.emitted - ta.in_file.min(ta.emitted),
            );
            checks.push(Check {
                met: ours <= theirs,
                text: format!(
                    "default drops no more than tracing-appender lossy at T={t}: {ours} vs {theirs} dropped ({:.1}% vs {:.1}% kept)",
                    kept(q),
                    kept(ta)
                ),
            });
        }
    }
    for ours in ["quelog-default", "quelog-block", "quelog-macro"] {
        checks.extend(ratio_check(
            rows,
            "caller p50 (timer excluded)",
            ours,
            "spdlog-async",
            &threads[..1.min(threads.len())],
            |r| r.p50_ns,
            Bound::AtMost(0.25),
        ));
    }
    if let Some(r) = row(rows, "quelog-macro", 1) {
        checks.push(Check {
            met: r.p50_ns <= 25.0,
            text: format!(
                "raw-argument macro p50 at T=1: {:.0} ns (target <= 25 ns, timer excluded)",
                r.p50_ns
            ),
        });
    }
    let capacity_mib = quelog::QueueConfig::default().capacity as f64 / (1 << 20) as f64;
    for ours in [
        "quelog-default",
        "quelog-block",
        "quelog-block-nosync",
        "quelog-macro",
        "quelog-macro-block",
    ] {
        for &t in threads {
            let (Some(q), Some(base)) = (row(rows, ours, t), row(rows, "write2", t)) else {
                continue;
            };
            let extra = (q.peak_rss_kib as f64 - base.peak_rss_kib as f64) / 1024.0;
            checks.push(Check {
                met: extra <= capacity_mib + 8.0,
                text: format!(
                    "peak RSS of {ours} at T={t}: {extra:.1} MiB above the write(2) logger's process (target <= capacity {capacity_mib:.0} MiB + 8 MiB)"
                ),
            });
        }
    }
    checks
}

/// The checks as a markdown list.
pub fn targets_list(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let _ = writeln!(
            out,
            "- {} {}",
            if c.met { "**met**" } else { "**missed**" },
            c.text
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(backend: &str, threads: usize, calls_per_s: f64, p999_ns: f64) -> RunResult {
        RunResult {
            backend: backend.into(),
            threads,
            emitted: 100,
            in_file: 100,
            calls_per_s,
            p999_ns,
            ..RunResult::default()
        }
    }

    #[test]
    fn median_takes_each_field_on_its_own() {
        let runs = [
            result("q", 1, 3.0, 10.0),
            result("q", 1, 1.0, 30.0),
            result("q", 1, 2.0, 20.0),
        ];
        let m = median(&runs);
        assert_eq!((m.calls_per_s, m.p999_ns), (2.0, 20.0));
        assert_eq!(m.calls_per_s_range, [1.0, 3.0]);
        assert_eq!(median(&runs[..2]).calls_per_s, 2.0);
    }

    #[test]
    fn lossless_target_needs_twice_spdlog() {
        let check = |quelog: f64| {
            let rows = [
                result("quelog-block", 1, quelog, 1.0),
                result("spdlog-async", 1, 1e6, 1.0),
            ];
            targets(&rows, &[1], None)
                .into_iter()
                .find(|c| {
                    c.text
                        .starts_with("lossless calls/s at T=1: quelog-block / spdlog-async")
                })
                .map(|c| c.met)
        };
        assert_eq!(check(2.1e6), Some(true));
        assert_eq!(check(1.9e6), Some(false));
    }

    #[test]
    fn block_tail_target_is_an_upper_bound() {
        let check = |quelog_p999: f64| {
            let rows = [
                result("quelog-block", 2, 1e6, quelog_p999),
                result("spdlog-async", 2, 1e6, 8_000.0),
            ];
            targets(&rows, &[1, 2], None)
                .into_iter()
                .find(|c| c.text.starts_with("Block caller p99.9 at T=2"))
                .map(|c| c.met)
        };
        assert_eq!(check(7_000.0), Some(true));
        assert_eq!(check(9_000.0), Some(false));
    }

    #[test]
    fn counts_only_the_benchmark_lines() {
        let path = std::env::temp_dir().join(format!("quelog-bench-count-{}", std::process::id()));
        std::fs::write(
            &path,
            "a request 1 handled in 1 us by worker-7\n\
             quelog: 3 records dropped (queue full)\n\
             b request 2 handled in 2 us by worker-7\n\
             c request 3 handled in 3 us by worker-7",
        )
        .unwrap();
        let counted = crate::measure::count_records(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(counted, 3);
    }
}
