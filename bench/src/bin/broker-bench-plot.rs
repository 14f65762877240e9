//! broker-bench-plot: draws PNG plots from broker-bench JSON results.
//!
//! `broker-bench-plot --out DIR results.json...` writes
//! - `latency-vs-subscribers.png`: insert→delivery p50 and p99 against subscribers, one pair
//!   of lines per server, from the light-load runs (one publisher at a fixed rate, no memory
//!   series);
//! - `memory-vs-connections.png`: server memory against idle subscribers, one line per run
//!   with a memory series (`--memory-step`);
//! - `rss-over-time-<label>.png`: server memory against time, one plot per hostile run (its
//!   `rss_series`: the soak, the stalled subscribers, the floods).
//!
//! Text is drawn with DejaVu Sans (Debian's fonts-dejavu-core), read at run time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use plotters::prelude::*;
use serde_json::Value;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws the benchmark plots.
#[derive(Debug, Parser)]
#[command(name = "broker-bench-plot", version)]
struct Args {
    /// Folder to write the PNG files into.
    #[arg(long)]
    out: PathBuf,
    /// broker-bench JSON result files.
    #[arg(required = true)]
    results: Vec<PathBuf>,
}

/// One named line: (x, y) points.
type Series = (String, Vec<(f64, f64)>);

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("broker-bench-plot: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<Vec<PathBuf>, String> {
    let font = std::fs::read(FONT).map_err(|e| {
        format!("cannot read the font {FONT} ({e}); install Debian's fonts-dejavu-core")
    })?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, font.leak())
        .map_err(|_| format!("{FONT} is not a usable font"))?;
    let mut results = Vec::new();
    for path in &args.results {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not broker-bench JSON: {e}", path.display()))?;
        results.push(value);
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let mut written = Vec::new();
    let latency = latency_series(&results);
    if !latency.is_empty() {
        let path = args.out.join("latency-vs-subscribers.png");
        draw(
            &path,
            "Insert → delivery latency at a fixed publish rate",
            "subscribers",
            "latency (ms)",
            &latency,
            Axes::LogLog,
        )?;
        written.push(path);
    }
    let memory = memory_series(&results);
    if !memory.is_empty() {
        let path = args.out.join("memory-vs-connections.png");
        draw(
            &path,
            "Server memory with idle subscribers",
            "idle subscribers",
            "resident memory (MiB)",
            &memory,
            Axes::Linear,
        )?;
        written.push(path);
    }
    for (label, points) in rss_series(&results) {
        let file: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = args.out.join(format!("rss-over-time-{file}.png"));
        draw(
            &path,
            &format!("Server memory over time: {label}"),
            "seconds",
            "resident memory (MiB)",
            &[(label.clone(), points)],
            Axes::Linear,
        )?;
        written.push(path);
    }
    if written.is_empty() {
        return Err("no fixed-rate runs, memory series or RSS series in these results".into());
    }
    Ok(written)
}

fn server(result: &Value) -> String {
    result["args"]["server_name"]
        .as_str()
        .unwrap_or("broker")
        .to_owned()
}

/// (subscribers, p50 ms, p99 ms) of one run.
type LatencyPoint = (f64, f64, f64);

/// p50 and p99 against subscribers, per server, from light-load runs (one publisher at a
/// fixed rate). Where a server was run at several rates, the rate it was run at most often
/// is drawn, so that every point of a line shares one rate.
fn latency_series(results: &[Value]) -> Vec<Series> {
    let mut by_run: BTreeMap<(String, u64), Vec<LatencyPoint>> = BTreeMap::new();
    for r in results {
        // Light-load runs only: one publisher, and not a memory series.
        if r["args"]["publishers"].as_u64() != Some(1)
            || r["args"]["memory_step"].as_u64().unwrap_or(0) > 0
        {
            continue;
        }
        let rate = r["args"]["rate"].as_f64().unwrap_or(0.0);
        let count = r["delivery_latency"]["count"].as_u64().unwrap_or(0);
        let (Some(subs), Some(p50), Some(p99)) = (
            r["subscribers_synced"].as_f64(),
            r["delivery_latency"]["p50_ms"].as_f64(),
            r["delivery_latency"]["p99_ms"].as_f64(),
        ) else {
            continue;
        };
        if rate > 0.0 && count > 0 {
            by_run
                .entry((server(r), rate.to_bits()))
                .or_default()
                .push((subs, p50, p99));
        }
    }
    let mut by_server: BTreeMap<String, Vec<LatencyPoint>> = BTreeMap::new();
    for ((name, _), points) in by_run {
        let kept = by_server.entry(name).or_default();
        if points.len() > kept.len() {
            *kept = points;
        }
    }
    let mut out = Vec::new();
    for (name, mut points) in by_server {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        out.push((
            format!("{name} p50"),
            points.iter().map(|p| (p.0, p.1)).collect(),
        ));
        out.push((
            format!("{name} p99"),
            points.iter().map(|p| (p.0, p.2)).collect(),
        ));
    }
    out
}

/// RSS (MiB) against idle subscribers, per run ("server (label)").
fn memory_series(results: &[Value]) -> Vec<Series> {
    let mut by_run: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in results {
        let name = format!(
            "{} ({})",
            server(r),
            r["args"]["label"].as_str().unwrap_or("run")
        );
        for point in r["memory_series"].as_array().into_iter().flatten() {
            if let (Some(n), Some(kib)) = (point["subscribers"].as_f64(), point["rss_kib"].as_f64())
            {
                by_run
                    .entry(name.clone())
                    .or_default()
                    .push((n, kib / 1024.0));
            }
        }
    }
    by_run
        .into_iter()
        .map(|(name, mut points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (name, points)
        })
        .collect()
}

/// RSS (MiB) against seconds, per hostile run (its label), from `rss_series`.
fn rss_series(results: &[Value]) -> Vec<Series> {
    let mut out = Vec::new();
    for r in results {
        let Some(series) = r["rss_series"].as_array() else {
            continue;
        };
        let points: Vec<(f64, f64)> = series
            .iter()
            .filter_map(|p| Some((p["t_s"].as_f64()?, p["rss_kib"].as_f64()? / 1024.0)))
            .collect();
        if points.len() >= 2 {
            let label = r["args"]["label"].as_str().unwrap_or("run");
            out.push((label.to_owned(), points));
        }
    }
    out
}

/// How a chart's axes are scaled.
#[derive(Clone, Copy)]
enum Axes {
    /// Both logarithmic (latency spans decades).
    LogLog,
    /// Both linear, from zero (memory grows in a straight line).
    Linear,
}

/// A line chart of `series`.
fn draw(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    axes: Axes,
) -> Result<(), String> {
    let all = || series.iter().flat_map(|(_, p)| p.iter());
    let bound = |f: fn(&(f64, f64)) -> f64, min: bool| {
        all()
            .map(f)
            .filter(|v| *v > 0.0)
            .fold(if min { f64::MAX } else { 0.0 }, |a, v| {
                if min { a.min(v) } else { a.max(v) }
            })
    };
    let (x_max, y_max) = (bound(|p| p.0, false), bound(|p| p.1, false));
    let root = BitMapBackend::new(path, (960, 600)).into_drawing_area();
    let text = Text {
        path,
        title,
        x_desc,
        y_desc,
        legend: match axes {
            Axes::LogLog => SeriesLabelPosition::UpperLeft,
            Axes::Linear => SeriesLabelPosition::LowerRight,
        },
    };
    match axes {
        Axes::LogLog => {
            let x = (bound(|p| p.0, true) * 0.8..x_max * 1.25).log_scale();
            let y = (bound(|p| p.1, true) * 0.5..y_max * 2.0).log_scale();
            chart(&root, &text, series, x, y)
        }
        Axes::Linear => chart(&root, &text, series, 0.0..x_max * 1.05, 0.0..y_max * 1.15),
    }
}

/// A chart's file, title, axis descriptions and legend corner.
struct Text<'a> {
    path: &'a Path,
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    legend: SeriesLabelPosition,
}

/// Draws `series` on `root` with the axes `x` and `y`.
fn chart<X, Y>(
    root: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    text: &Text<'_>,
    series: &[Series],
    x: X,
    y: Y,
) -> Result<(), String>
where
    X: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    Y: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    X::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
    Y::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let (path, title) = (text.path, text.title);
    let (x_desc, y_desc) = (text.x_desc, text.y_desc);
    let fail = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(12)
        .y_labels(16)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| fail(&e))?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(3),
            ))
            .map_err(|e| fail(&e))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
            });
        // Markers only where there are few points (a long series is a line).
        let markers = if points.len() <= 60 { points.len() } else { 0 };
        chart
            .draw_series(
                points[..markers]
                    .iter()
                    .map(|&p| Circle::new(p, 4, color.filled())),
            )
            .map_err(|e| fail(&e))?;
    }
    chart
        .configure_series_labels()
        .position(text.legend.clone())
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))
}
