//! The browser mesh: time from the last join to a full mesh of N = 2, 4, 6, 8
//! pages in headless Chromium. The browser set-up is frontend's: this runs
//! its `mesh-timing` script against the server binary under test, inside a
//! network namespace that has only loopback, and reads its summary lines.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Result;
use crate::procs::Plan;
use crate::report::{Progress, Row, Section};

/// The whole script's time limit (it runs 2 × repeats meshes per size).
const TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// One group size's figures, in ms.
#[derive(Debug, Clone)]
struct MeshTime {
    pages: usize,
    /// Median over the runs: everyone but the owner joins at once.
    all_at_once_ms: f64,
    /// Median over the runs: one member joins a meshed group of N - 1.
    late_joiner_ms: Option<f64>,
}

pub(crate) async fn run(plan: &Plan, progress: &Progress, repeats: usize) -> Result<Section> {
    let root = plan.target_dir.parent().ok_or("no repository root above target/")?.to_path_buf();
    if let Some(missing) = missing_prerequisite(&root) {
        progress.say(&format!("mesh: skipped: {missing}"));
        let rows = vec![Row::server_only("browser mesh", "skipped", missing.clone())];
        return Ok(Section { rows, json: json!({"scenario": "mesh", "skipped": missing}), plot: None });
    }
    progress.say("mesh: running frontend's mesh-timing in headless Chromium");
    let mut child = Command::new("unshare")
        .args(["-n", "sh", "-c", "ip link set lo up && exec \"$@\"", "sh", "npm", "--prefix", "frontend", "run"])
        .args(["--silent", "mesh-timing"])
        .current_dir(&root)
        .env("WEBRTC_P2P_SERVER_BIN", &plan.server)
        .env("REPEATS", repeats.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || BufReader::new(stdout).lines().map_while(|l| l.ok()).collect::<Vec<_>>());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("mesh-timing took longer than {TIMEOUT:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let lines = reader.join().map_err(|_| "reading mesh-timing's output failed")?;
    if !status.success() {
        return Err(format!("mesh-timing failed ({status}):\n{}", lines.join("\n")).into());
    }
    let times: Vec<MeshTime> = lines.iter().filter_map(|line| parse(line)).collect();
    if times.is_empty() {
        return Err(format!("mesh-timing printed no figures:\n{}", lines.join("\n")).into());
    }
    Ok(section(&times))
}

fn section(times: &[MeshTime]) -> Section {
    let rows = times
        .iter()
        .map(|t| {
            let row = Row::server_only(
                "browser mesh",
                format!("N={}: ms to full mesh", t.pages),
                format!("{:.0}", t.all_at_once_ms),
            );
            if t.pages == 8 { row.target("< 500 ms", t.all_at_once_ms < 500.0) } else { row }
        })
        .collect();
    let figures: Vec<Value> = times
        .iter()
        .map(|t| json!({"pages": t.pages, "all_at_once_ms": t.all_at_once_ms, "late_joiner_ms": t.late_joiner_ms}))
        .collect();
    Section { rows, json: json!({"scenario": "mesh", "median_ms": figures}), plot: None }
}

/// What keeps the browser scenario from running here, if anything.
fn missing_prerequisite(root: &Path) -> Option<String> {
    if !root.join("frontend/scripts/mesh-timing.mjs").exists() {
        return Some("frontend/scripts/mesh-timing.mjs is missing".into());
    }
    if !root.join("frontend/node_modules").exists() {
        return Some("frontend/node_modules is missing (npm --prefix frontend ci)".into());
    }
    let works = |program: &str, args: &[&str]| {
        Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    };
    if !works("unshare", &["-n", "true"]) {
        return Some("cannot make a loopback-only network namespace (unshare -n needs root)".into());
    }
    if !Path::new(&std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into())).exists() {
        return Some("no Chromium (apt-get install chromium)".into());
    }
    None
}

/// Reads `N=8  all join at once: median   170 ms   (…)   late joiner: median   130 ms   (…)`.
fn parse(line: &str) -> Option<MeshTime> {
    let rest = line.trim().strip_prefix("N=")?;
    let (pages, rest) = rest.split_once(char::is_whitespace)?;
    let mut medians = rest.split("median").skip(1).filter_map(|m| m.split_whitespace().next()?.parse::<f64>().ok());
    Some(MeshTime { pages: pages.parse().ok()?, all_at_once_ms: medians.next()?, late_joiner_ms: medians.next() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mesh_timing_summary_lines() {
        let line = "N=8  all join at once: median   170 ms   (min   150, max   500)   late joiner: median   130 ms   (min   120, max   140)";
        let t = parse(line).unwrap();
        assert_eq!((t.pages, t.all_at_once_ms, t.late_joiner_ms), (8, 170.0, Some(130.0)));
        assert!(parse("time to full mesh, 5 runs each").is_none());
    }
}
