//! What the bench tells: a progress line while it runs, a summary table at
//! the end, one JSON line per scenario appended to the results file, and an
//! SVG plot of the relay latency distributions (server vs forwarder).

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::conns::Held;
use crate::mesh::MeshTime;
use crate::procs::Plan;
use crate::relay::{Measurement, quantile};
use crate::storm::Storm;
use crate::{Opts, Result};

/// What a relay figure was measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// webrtc-p2p-server.
    Server,
    /// The bare forwarder.
    Forwarder,
}

impl Target {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Forwarder => "forwarder",
        }
    }
}

/// One line of the summary table.
#[derive(Debug)]
struct Row {
    scenario: String,
    figure: &'static str,
    server: String,
    forwarder: String,
    ratio: String,
    target: String,
}

/// One panel of the latency plot.
#[derive(Debug)]
struct Plot {
    title: String,
    server: Vec<u32>,
    forwarder: Vec<u32>,
}

#[derive(Debug)]
pub(crate) struct Report {
    results: PathBuf,
    svg: PathBuf,
    /// Written into every JSON line: which code, how it ran.
    context: Value,
    rows: Vec<Row>,
    plots: Vec<Plot>,
    tty: bool,
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
            tty: std::io::stderr().is_terminal(),
        })
    }

    /// Shows what is going on: one overwritten line on a terminal; in a log,
    /// only the lines that don't end in `…`.
    pub(crate) fn progress(&self, line: &str) {
        if self.tty {
            eprint!("\r\x1b[K{line}");
            let _ = std::io::stderr().flush();
        } else if !line.ends_with('…') {
            eprintln!("{line}");
        }
    }

    fn append(&self, mut line: Value) -> Result<()> {
        if let (Some(line), Some(context)) = (line.as_object_mut(), self.context.as_object()) {
            for (k, v) in context {
                line.insert(k.clone(), v.clone());
            }
        }
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.results)?;
        writeln!(file, "{line}")?;
        Ok(())
    }

    fn row(&mut self, scenario: &str, figure: &'static str, server: String, forwarder: String, ratio: String) {
        self.rows.push(Row { scenario: scenario.into(), figure, server, forwarder, ratio, target: String::new() });
    }

    fn target(&mut self, text: String) {
        if let Some(row) = self.rows.last_mut() {
            row.target = text;
        }
    }

    pub(crate) fn relay(
        &mut self,
        pairs: usize,
        window: usize,
        duration: Duration,
        runs: Vec<(Target, Measurement)>,
    ) -> Result<()> {
        let of = |target| runs.iter().filter(move |(t, _)| *t == target).map(|(_, m)| m);
        let figures = |target| {
            let ms: Vec<&Measurement> = of(target).collect();
            let med = |f: &dyn Fn(&Measurement) -> f64| median(ms.iter().map(|m| f(m)).collect());
            Figures {
                per_second: med(&|m| m.per_second),
                per_cpu_second: med(&|m| m.per_cpu_second),
                p50: med(&|m| m.quantile(0.5)),
                p90: med(&|m| m.quantile(0.9)),
                p99: med(&|m| m.quantile(0.99)),
                max: med(&|m| m.quantile(1.0)),
            }
        };
        let (s, f) = (figures(Target::Server), figures(Target::Forwarder));
        let scenario = format!("relay P={pairs} W={window}");
        let ratio = |a: f64, b: f64| format!("{:.2}", a / b);
        self.row(
            &scenario,
            "round trips/s",
            fmt_k(s.per_second),
            fmt_k(f.per_second),
            ratio(s.per_second, f.per_second),
        );
        self.row(
            &scenario,
            "round trips / CPU-s",
            fmt_k(s.per_cpu_second),
            fmt_k(f.per_cpu_second),
            ratio(s.per_cpu_second, f.per_cpu_second),
        );
        let cpu_ratio = s.per_cpu_second / f.per_cpu_second;
        if (pairs, window) == (32, 8) {
            self.target(format!("≥ 0.80: {}", met(cpu_ratio >= 0.8)));
        }
        self.row(
            &scenario,
            "CPU µs / round trip",
            format!("{:.1}", 1e6 / s.per_cpu_second),
            format!("{:.1}", 1e6 / f.per_cpu_second),
            ratio(f.per_cpu_second, s.per_cpu_second),
        );
        for (figure, a, b) in
            [("p50 µs", s.p50, f.p50), ("p90 µs", s.p90, f.p90), ("p99 µs", s.p99, f.p99), ("max µs", s.max, f.max)]
        {
            self.row(&scenario, figure, format!("{a:.0}"), format!("{b:.0}"), ratio(a, b));
            if (pairs, window) == (1, 1) && figure == "p50 µs" {
                self.target(format!("≤ 1.20: {}", met(a / b <= 1.2)));
            }
        }
        let per_round = |target| -> Vec<Value> {
            of(target)
                .map(|m| {
                    json!({
                        "round_trips_per_s": m.per_second,
                        "round_trips_per_cpu_s": m.per_cpu_second,
                        "p50_us": m.quantile(0.5), "p90_us": m.quantile(0.9),
                        "p99_us": m.quantile(0.99), "max_us": m.quantile(1.0),
                    })
                })
                .collect()
        };
        self.append(json!({
            "scenario": "relay",
            "pairs": pairs,
            "window": window,
            "duration_s": duration.as_secs_f64(),
            "rounds": runs.len() / 2,
            "server": s.json(),
            "forwarder": f.json(),
            "ratio": {
                "round_trips_per_s": s.per_second / f.per_second,
                "round_trips_per_cpu_s": cpu_ratio,
                "p50": s.p50 / f.p50, "p90": s.p90 / f.p90, "p99": s.p99 / f.p99, "max": s.max / f.max,
            },
            "server_rounds": per_round(Target::Server),
            "forwarder_rounds": per_round(Target::Forwarder),
        }))?;
        let merged = |target| {
            let mut all: Vec<u32> = of(target).flat_map(|m| m.latencies.iter().copied()).collect();
            all.sort_unstable();
            all
        };
        self.plots.push(Plot {
            title: format!("relay P={pairs} W={window}"),
            server: merged(Target::Server),
            forwarder: merged(Target::Forwarder),
        });
        Ok(())
    }

    pub(crate) fn conns(&mut self, server: &Held, forwarder: &Held) -> Result<()> {
        let scenario = format!("conns N={}", server.n);
        let (s, f) = (server.bytes_per_conn(), forwarder.bytes_per_conn());
        self.row(&scenario, "RSS / connection", fmt_kib(s), fmt_kib(f), format!("{:.2}", s / f));
        self.target(format!("≤ 4 KiB: {}", met(s <= 4096.0)));
        self.row(
            &scenario,
            "still open",
            format!("{}/{}", server.open, server.n),
            format!("{}/{}", forwarder.open, forwarder.n),
            String::new(),
        );
        self.target(format!("all: {}", met(server.open == server.n)));
        self.row(
            &scenario,
            "seconds to open",
            format!("{:.1}", server.open_seconds),
            format!("{:.1}", forwarder.open_seconds),
            String::new(),
        );
        let held = |h: &Held| {
            json!({
                "open": h.open, "rss_before_kib": h.rss_before_kib, "rss_after_kib": h.rss_after_kib,
                "bytes_per_conn": h.bytes_per_conn(), "open_seconds": h.open_seconds,
            })
        };
        self.append(json!({"scenario": "conns", "n": server.n, "server": held(server), "forwarder": held(forwarder)}))
    }

    pub(crate) fn storm(&mut self, storm: &Storm) -> Result<()> {
        let scenario = format!("storm {}×{}", storm.groups, storm.members);
        self.row(&scenario, "s to all signalled", format!("{:.2}", storm.seconds), String::new(), String::new());
        if (storm.groups, storm.members) == (200, 8) {
            self.target(format!("< 2 s: {}", met(storm.seconds < 2.0)));
        }
        let rate = storm.relays as f64 / storm.seconds;
        self.row(&scenario, "relays/s", fmt_k(rate), String::new(), String::new());
        self.row(&scenario, "server CPU s", format!("{:.2}", storm.server_cpu), String::new(), String::new());
        self.row(&scenario, "load generator CPU s", format!("{:.2}", storm.bench_cpu), String::new(), String::new());
        self.append(json!({
            "scenario": "storm", "groups": storm.groups, "members": storm.members,
            "seconds": storm.seconds, "relays": storm.relays, "relays_per_s": rate,
            "server_cpu_s": storm.server_cpu, "load_generator_cpu_s": storm.bench_cpu,
        }))
    }

    pub(crate) fn mesh(&mut self, times: &[MeshTime]) -> Result<()> {
        for t in times {
            self.row(
                "browser mesh",
                mesh_figure(t.pages),
                format!("{:.0}", t.all_at_once_ms),
                String::new(),
                String::new(),
            );
            if t.pages == 8 {
                self.target(format!("< 500 ms: {}", met(t.all_at_once_ms < 500.0)));
            }
        }
        let figures: Vec<Value> = times
            .iter()
            .map(|t| json!({"pages": t.pages, "all_at_once_ms": t.all_at_once_ms, "late_joiner_ms": t.late_joiner_ms}))
            .collect();
        self.append(json!({"scenario": "mesh", "median_ms": figures}))
    }

    pub(crate) fn mesh_skipped(&mut self, why: &str) {
        self.progress(&format!("mesh: skipped: {why}"));
        self.row("browser mesh", "skipped", why.to_owned(), String::new(), String::new());
    }

    /// Prints the table and writes the plot.
    pub(crate) fn finish(self) -> Result<()> {
        if self.tty {
            eprintln!();
        }
        let mut table = String::new();
        let header = ["scenario", "figure", "server", "forwarder", "ratio", "target"];
        let cells = |r: &Row| {
            [
                r.scenario.clone(),
                r.figure.into(),
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

fn mesh_figure(pages: usize) -> &'static str {
    match pages {
        2 => "N=2: ms to full mesh",
        4 => "N=4: ms to full mesh",
        6 => "N=6: ms to full mesh",
        8 => "N=8: ms to full mesh",
        _ => "N=?: ms to full mesh",
    }
}

/// A relay figure's medians over the rounds.
#[derive(Debug)]
struct Figures {
    per_second: f64,
    per_cpu_second: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Figures {
    fn json(&self) -> Value {
        json!({
            "round_trips_per_s": self.per_second,
            "round_trips_per_cpu_s": self.per_cpu_second,
            "cpu_us_per_round_trip": 1e6 / self.per_cpu_second,
            "p50_us": self.p50, "p90_us": self.p90, "p99_us": self.p99, "max_us": self.max,
        })
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn met(yes: bool) -> String {
    if yes { "met".into() } else { "NOT met".into() }
}

fn fmt_k(x: f64) -> String {
    if x >= 10_000.0 { format!("{:.1}k", x / 1000.0) } else { format!("{x:.0}") }
}

fn fmt_kib(bytes: f64) -> String {
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
