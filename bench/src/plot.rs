//! The SVG plots: throughput per backend over T, and caller latency percentiles per
//! backend (log scale). Text is laid out with plotters' built-in font metrics, so no
//! system font is needed.

use std::path::Path;

use plotters::prelude::*;

use crate::measure::RunResult;
use crate::report::row;

fn names(rows: &[RunResult]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for r in rows {
        if !names.contains(&r.backend) {
            names.push(r.backend.clone());
        }
    }
    names
}

fn color(index: usize) -> RGBColor {
    const COLORS: [RGBColor; 12] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
        RGBColor(0, 0, 0),
        RGBColor(100, 100, 255),
    ];
    COLORS[index % COLORS.len()]
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

/// Million calls per second against T, one line per backend.
pub fn throughput(rows: &[RunResult], threads: &[usize], path: &Path) -> PlotResult {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = rows.iter().map(|r| r.calls_per_s / 1e6).fold(1.0, f64::max) * 1.1;
    let max_t = threads.iter().copied().max().unwrap_or(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption("log calls per second (median of runs)", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.5f64..max_t + 0.5, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("producer threads T")
        .y_desc("million calls/s")
        .x_labels(threads.len().max(2) * 2)
        .x_label_formatter(&|x| {
            if threads.iter().any(|&t| (t as f64 - x).abs() < 1e-9) {
                format!("{x:.0}")
            } else {
                String::new()
            }
        })
        .draw()?;
    for (i, name) in names(rows).iter().enumerate() {
        let points: Vec<(f64, f64)> = threads
            .iter()
            .filter_map(|&t| row(rows, name, t).map(|r| (t as f64, r.calls_per_s / 1e6)))
            .collect();
        let style = color(i).stroke_width(2);
        chart
            .draw_series(LineSeries::new(points.clone(), style))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color(i).filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Caller latency p50, p99, p99.9 and max at one T, one line per backend, log scale.
pub fn latency(rows: &[RunResult], threads: usize, path: &Path) -> PlotResult {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let at_t: Vec<&RunResult> = rows.iter().filter(|r| r.threads == threads).collect();
    let top = at_t.iter().map(|r| r.max_ns).fold(1000.0, f64::max) * 2.0;
    let labels = ["p50", "p99", "p99.9", "max"];
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("caller latency at T={threads}, timer cost subtracted"),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.3f64..3.3, (5f64..top).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(4)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && (0.0..4.0).contains(&i) {
                labels[i as usize].to_string()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|ns| crate::report::duration(*ns))
        .y_desc("time per call (log scale)")
        .draw()?;
    for (i, name) in names(rows).iter().enumerate() {
        let Some(r) = row(rows, name, threads) else {
            continue;
        };
        let points: Vec<(f64, f64)> = [r.p50_ns, r.p99_ns, r.p999_ns, r.max_ns]
            .iter()
            .enumerate()
            .map(|(x, &ns)| (x as f64, ns.max(5.0)))
            .collect();
        let style = color(i).stroke_width(2);
        chart
            .draw_series(LineSeries::new(points.clone(), style))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color(i).filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
