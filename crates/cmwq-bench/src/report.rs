//! Results: statistics, the stdout table, goals and SVG plots.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One metric over the repetitions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stat {
    pub name: String,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub values: Vec<f64>,
}

impl Stat {
    pub fn new(name: &str, values: Vec<f64>) -> Stat {
        let mut v = values.clone();
        v.sort_by(f64::total_cmp);
        let median = if v.is_empty() {
            f64::NAN
        } else if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        Stat {
            name: name.to_string(),
            median,
            min: v.first().copied().unwrap_or(f64::NAN),
            max: v.last().copied().unwrap_or(f64::NAN),
            values,
        }
    }
}

/// All repetitions of one variant of one workload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VariantResult {
    pub workload: String,
    pub variant: String,
    pub pool: String,
    /// "ok", "timeout" or "error".
    pub status: String,
    pub reps_done: usize,
    pub metrics: Vec<Stat>,
    pub notes: Vec<String>,
    /// CPU used by other processes on the machine while the variant ran, in percent of all
    /// cores (from `/proc/stat` minus this benchmark's own CPU time): interference.
    #[serde(default)]
    pub other_cpu_pct: f64,
    /// Live pool threads over time (ms, threads) of the median repetition, downsampled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads_trace: Option<Vec<(f64, f64)>>,
}

impl VariantResult {
    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.median)
            .filter(|v| v.is_finite())
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Goal {
    pub workload: String,
    pub goal: String,
    pub variant: String,
    pub measured: String,
    pub met: bool,
}

fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 1000.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt_stat(s: &Stat) -> String {
    if s.values.len() <= 1 || s.min == s.max {
        fmt_num(s.median)
    } else {
        format!(
            "{} [{}-{}]",
            fmt_num(s.median),
            fmt_num(s.min),
            fmt_num(s.max)
        )
    }
}

/// A plain-text table of one workload's variants (also valid Markdown).
pub fn table(results: &[&VariantResult], columns: &[&str]) -> String {
    let mut rows: Vec<Vec<String>> = vec![];
    let mut header = vec!["variant".to_string(), "status".to_string()];
    header.extend(columns.iter().map(|c| c.to_string()));
    header.push("others' CPU %".into());
    rows.push(header);
    for r in results {
        let mut row = vec![
            r.variant.clone(),
            if r.status == "ok" {
                format!("ok ({})", r.reps_done)
            } else {
                format!("{} ({})", r.status.to_uppercase(), r.reps_done)
            },
        ];
        for c in columns {
            row.push(
                r.metrics
                    .iter()
                    .find(|s| s.name == *c)
                    .map(fmt_stat)
                    .unwrap_or_else(|| "-".into()),
            );
        }
        row.push(format!("{:.0}", r.other_cpu_pct));
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (n, row) in rows.iter().enumerate() {
        out.push('|');
        for (i, cell) in row.iter().enumerate() {
            out.push_str(&format!(" {cell:<w$} |", w = widths[i]));
        }
        out.push('\n');
        if n == 0 {
            out.push('|');
            for w in &widths {
                out.push_str(&format!("{}|", "-".repeat(w + 2)));
            }
            out.push('\n');
        }
    }
    out
}

/// Keeps at most `max` points, always including the peak of each bucket.
pub fn downsample(trace: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    if trace.len() <= max {
        return trace.to_vec();
    }
    let chunk = trace.len().div_ceil(max);
    trace
        .chunks(chunk)
        .map(|c| {
            c.iter()
                .copied()
                .fold((c[0].0, 0.0_f64), |acc, p| (acc.0, acc.1.max(p.1)))
        })
        .collect()
}

/// Writes an SVG line chart of live pool threads over time.
pub fn plot_threads(
    path: &Path,
    title: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    const COLORS: [RGBColor; 10] = [
        RGBColor(214, 39, 40),
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(0, 0, 0),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(23, 190, 207),
        RGBColor(127, 127, 127),
    ];
    // One very slow series would squeeze all others into the left edge: clip the time axis
    // at 4x the median series length (per-variant plots show the whole of each).
    let mut ends: Vec<f64> = series
        .iter()
        .filter_map(|s| s.1.last().map(|p| p.0))
        .collect();
    ends.sort_by(f64::total_cmp);
    let longest = ends.last().copied().unwrap_or(1.0).max(1.0);
    let median_end = ends.get(ends.len() / 2).copied().unwrap_or(longest);
    let xmax = longest.min(4.0 * median_end.max(1.0));
    let title = if xmax < longest {
        format!("{title} (time axis clipped)")
    } else {
        title.to_string()
    };
    let ymax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("time since first item queued (ms)")
        .y_desc("live pool threads")
        .draw()?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                pts.iter().copied().filter(|p| p.0 >= 0.0 && p.0 <= xmax),
                color.stroke_width(2),
            ))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .draw()?;
    root.present()?;
    Ok(())
}
