//! What the bench tells: a progress line while it runs, a summary table at
//! the end, one JSON line per scenario appended to the results file, and an
//! SVG plot of the relay latency distributions (server vs forwarder).
//!
//! Scenarios hand back a [`Section`] (rows, a JSON line, maybe a plot) built
//! with the helpers here; this module knows none of them.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::procs::Plan;
use crate::{Opts, Result};

/// One line of the summary table.
#[derive(Debug)]
pub(crate) struct Row {
    scenario: String,
    figure: String,
    server: String,
    forwarder: String,
    ratio: String,
    target: String,
}

impl Row {
    /// A figure of `scenario`: the server's value, the forwarder's (empty
    /// when there is none) and their ratio (likewise).
    pub(crate) fn new(
        scenario: &str,
        figure: impl Into<String>,
        server: String,
        forwarder: String,
        ratio: String,
    ) -> Self {
        Self { scenario: scenario.into(), figure: figure.into(), server, forwarder, ratio, target: String::new() }
    }

    /// A figure measured on the server alone.
    pub(crate) fn server_only(scenario: &str, figure: impl Into<String>, server: String) -> Self {
        Self::new(scenario, figure, server, String::new(), String::new())
    }

    /// The target this figure is held to, and whether it was met.
    pub(crate) fn target(mut self, target: &str, met: bool) -> Self {
        self.target = format!("{target}: {}", if met { "met" } else { "NOT met" });
        self
    }
}

/// One panel of the latency plot: sorted samples in µs.
#[derive(Debug)]
pub(crate) struct Plot {
    pub(crate) title: String,
    pub(crate) server: Vec<u32>,
    pub(crate) forwarder: Vec<u32>,
}

/// What one scenario found.
#[derive(Debug)]
pub(crate) struct Section {
    /// Its lines of the summary table.
    pub(crate) rows: Vec<Row>,
    /// Its line in the results file (the run's context is added).
    pub(crate) json: Value,
    /// Its panel of the latency plot, if it has one.
    pub(crate) plot: Option<Plot>,
}

/// Progress lines on stderr.
#[derive(Debug)]
pub(crate) struct Progress {
    tty: bool,
}

impl Progress {
    /// Shows what is going on: one overwritten line on a terminal; in a log,
    /// only the lines that don't end in `…`.
    pub(crate) fn say(&self, line: &str) {
        if self.tty {
            eprint!("\r\x1b[K{line}");
            let _ = std::io::stderr().flush();
        } else if !line.ends_with('…') {
            eprintln!("{line}");
        }
    }
}

#[derive(Debug)]
pub(crate) struct Report {
    results: PathBuf,
    svg: PathBuf,
    /// Written into every JSON line: which code, how it ran.
    context: Value,
    rows: Vec<Row>,
    plots: Vec<Plot>,
    pub(crate) progress: Progress,
}

impl Report {
    pub(crate) fn new(opts: &Opts, plan: &Plan) -> Result<Self> {
        let dir = plan.target_dir.join("bench");
        std::fs::create_dir_all(&dir)?;
        let root = plan.target_dir.parent().unwrap_or(&plan.target_dir);
        let commit = std::process::Command::new("git")
            .args(["describe", "--always", "--dirty"])
            .current_dir(root)
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let context = json!({
            "time": time,
            "commit": commit,
            "pinned": plan.pin.is_some(),
            "cpus": plan.cpus,
        });
        Ok(Self {
            results: opts.results.clone().unwrap_or_else(|| dir.join("results.jsonl")),
            svg: opts.svg.clone().unwrap_or_else(|| dir.join("latency.svg")),
            context,
            rows: Vec::new(),
            plots: Vec::new(),
            progress: Progress { tty: std::io::stderr().is_terminal() },
        })
    }

    /// Takes in one scenario's findings; its JSON line is appended at once,
    /// so that a later failure loses nothing.
    pub(crate) fn add(&mut self, section: Section) -> Result<()> {
        let mut line = section.json;
        if let (Some(line), Some(context)) = (line.as_object_mut(), self.context.as_object()) {
            for (k, v) in context {
                line.insert(k.clone(), v.clone());
            }
        }
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.results)?;
        writeln!(file, "{line}")?;
        self.rows.extend(section.rows);
        self.plots.extend(section.plot);
        Ok(())
    }

    /// Prints the table and writes the plot.
    pub(crate) fn finish(self) -> Result<()> {
        if self.progress.tty {
            eprintln!();
        }
        let mut table = String::new();
        let header = ["scenario", "figure", "server", "forwarder", "ratio", "target"];
        let cells = |r: &Row| {
            [
                r.scenario.clone(),
                r.figure.clone(),
                r.server.clone(),
                r.forwarder.clone(),
                r.ratio.clone(),
                r.target.clone(),
            ]
        };
        let mut widths = header.map(|h| h.chars().count());
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(cells(row)) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: [String; 6]| {
            let mut out = String::from("|");
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                let pad = w - cell.chars().count();
                // Numbers right-aligned, words left.
                if (2..=4).contains(&i) {
                    let _ = write!(out, " {}{cell} |", " ".repeat(pad));
                } else {
                    let _ = write!(out, " {cell}{} |", " ".repeat(pad));
                }
            }
            out
        };
        let _ = writeln!(table, "{}", line(header.map(String::from)));
        let _ = writeln!(table, "|{}", widths.iter().map(|w| format!("{}|", "-".repeat(w + 2))).collect::<String>());
        let mut previous = "";
        for row in &self.rows {
            let mut cells = cells(row);
            // Each scenario's name on its first row only.
            if row.scenario == previous {
                cells[0].clear();
            }
            previous = &row.scenario;
            let _ = writeln!(table, "{}", line(cells));
        }
        println!("{table}");
        if !self.plots.is_empty() {
            std::fs::write(&self.svg, svg(&self.plots))?;
            println!("latency plot: {}", self.svg.display());
        }
        println!("results appended to: {}", self.results.display());
        Ok(())
    }
}

/// The median of `values` (NaN when there are none).
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// `12.3k` from 10,000 up, else a whole number.
pub(crate) fn fmt_k(x: f64) -> String {
    if x >= 10_000.0 { format!("{:.1}k", x / 1000.0) } else { format!("{x:.0}") }
}

/// Bytes as `1.23 KiB`.
pub(crate) fn fmt_kib(bytes: f64) -> String {
    format!("{:.2} KiB", bytes / 1024.0)
}

/// Percentile curves (x: percentile on a "nines" scale, y: µs on a log
/// scale), one panel per relay figure, server and forwarder in each.
fn svg(plots: &[Plot]) -> String {
    const W: f64 = 520.0;
    const H: f64 = 340.0;
    const LEFT: f64 = 64.0;
    const RIGHT: f64 = 16.0;
    const TOP: f64 = 36.0;
    const BOTTOM: f64 = 48.0;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{H}" font-family="sans-serif" font-size="12">"#,
        W * plots.len() as f64
    );
    let _ = write!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, plot) in plots.iter().enumerate() {
        let x0 = W * i as f64;
        let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        let n = plot.server.len().min(plot.forwarder.len()).max(2);
        // Up to 99.9%, or less when there are too few samples for it.
        let max_nines = (n as f64).log10().clamp(1.0, 3.0);
        let all = plot.server.iter().chain(&plot.forwarder);
        let lo = f64::from(all.clone().copied().min().unwrap_or(1).max(1));
        let hi = f64::from(all.copied().max().unwrap_or(10).max(2));
        let (llo, lhi) = (lo.log10().floor(), hi.log10().ceil().max(lo.log10().floor() + 1.0));
        let px = |nines: f64| x0 + LEFT + pw * nines / max_nines;
        let py = |us: f64| TOP + ph * (1.0 - (us.max(1.0).log10() - llo) / (lhi - llo));
        let _ = write!(
            out,
            r#"<text x="{}" y="20" text-anchor="middle" font-size="14">{}: round-trip latency</text>"#,
            x0 + LEFT + pw / 2.0,
            plot.title
        );
        let _ = write!(
            out,
            r##"<rect x="{}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>"##,
            x0 + LEFT
        );
        // y grid: 1, 2, 5 × 10^k µs
        let mut decade = llo;
        while decade < lhi {
            for m in [1.0, 2.0, 5.0] {
                let us = m * 10f64.powf(decade);
                let y = py(us);
                let _ = write!(
                    out,
                    r##"<line x1="{}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                    x0 + LEFT,
                    x0 + LEFT + pw,
                    x0 + LEFT - 6.0,
                    y + 4.0,
                    fmt_us(us)
                );
            }
            decade += 1.0;
        }
        // x grid: 0, 90, 99, 99.9 %
        for (nines, label) in [(0.0, "0"), (1.0, "90"), (2.0, "99"), (3.0, "99.9")] {
            if nines > max_nines {
                continue;
            }
            let x = px(nines);
            let _ = write!(
                out,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">{label}</text>"##,
                TOP + ph,
                TOP + ph + 16.0
            );
        }
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">percentile</text><text x="{}" y="{}" text-anchor="middle" transform="rotate(-90 {} {})">µs</text>"#,
            x0 + LEFT + pw / 2.0,
            H - 10.0,
            x0 + 16.0,
            TOP + ph / 2.0,
            x0 + 16.0,
            TOP + ph / 2.0
        );
        for (k, (samples, colour, name)) in
            [(&plot.forwarder, "#999999", "forwarder"), (&plot.server, "#1f5fbf", "server")].into_iter().enumerate()
        {
            if samples.is_empty() {
                continue;
            }
            let points: String = (0..=200)
                .map(|step| {
                    let nines = max_nines * f64::from(step) / 200.0;
                    let q = 1.0 - 10f64.powf(-nines);
                    format!("{:.1},{:.1} ", px(nines), py(quantile(samples, q)))
                })
                .collect();
            let _ = write!(out, r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>"#);
            let ly = TOP + 16.0 + 16.0 * k as f64;
            let _ = write!(
                out,
                r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"/><text x="{}" y="{}">{name}</text>"#,
                x0 + LEFT + 10.0,
                x0 + LEFT + 30.0,
                x0 + LEFT + 36.0,
                ly + 4.0
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

/// The `q` quantile of sorted `samples`.
pub(crate) fn quantile(samples: &[u32], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    f64::from(samples[rank - 1])
}

fn fmt_us(us: f64) -> String {
    if us >= 1000.0 { format!("{}k", us / 1000.0) } else { format!("{us}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn svg_is_one_well_formed_document() {
        let plot = Plot { title: "t".into(), server: (1..1000).collect(), forwarder: (1..900).collect() };
        let svg = svg(&[plot]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 2);
    }
}
