//! The relay scenario: P pairs (A, B); each A keeps W relays in flight to its
//! B, each a full round trip A→server→B→server→A with an SDP-like `data`.
//! Against the forwarder the same frames travel the same way, only nobody
//! reads them in between.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::{Instant, sleep_until, timeout_at};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, ANSWER, Caller, OFFER, Ws};
use crate::procs::{Child, Plan, Target};
use crate::report::{Plot, Progress, Row, Section, fmt_k, median, quantile};
use crate::{Opts, Result, within};

/// How long after the measured window the stragglers may take to come back.
const GRACE: Duration = Duration::from_secs(5);

/// How long setting up one pair may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Pair keys for the forwarder, unique for the life of this process.
static NEXT_PAIR: AtomicUsize = AtomicUsize::new(0);

/// What one measured run gave.
#[derive(Debug, Clone)]
pub(crate) struct Measurement {
    /// Round trips completed per second of wall time.
    pub(crate) per_second: f64,
    /// Round trips per CPU-second of the processes under test.
    pub(crate) per_cpu_second: f64,
    /// Their threads' context switches per round trip.
    pub(crate) switches: f64,
    /// Round-trip latencies in µs, sorted.
    pub(crate) latencies: Vec<u32>,
}

impl Measurement {
    /// The `q` quantile of the latencies, in µs.
    pub(crate) fn quantile(&self, q: f64) -> f64 {
        quantile(&self.latencies, q)
    }

    /// One progress line: rates and median latency.
    pub(crate) fn summary(&self) -> String {
        format!("{:.0} rt/s, {:.0} rt/CPU-s, p50 {:.0} µs", self.per_second, self.per_cpu_second, self.quantile(0.5))
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "round_trips_per_s": self.per_second,
            "round_trips_per_cpu_s": self.per_cpu_second,
            "switches_per_round_trip": self.switches,
            "p50_us": self.quantile(0.5), "p90_us": self.quantile(0.9),
            "p99_us": self.quantile(0.99), "max_us": self.quantile(1.0),
        })
    }
}

/// A relay figure's medians over the rounds.
#[derive(Debug)]
pub(crate) struct Figures {
    pub(crate) per_second: f64,
    pub(crate) per_cpu_second: f64,
    pub(crate) switches: f64,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

impl Figures {
    pub(crate) fn of<'a>(runs: impl Iterator<Item = &'a Measurement>) -> Self {
        let runs: Vec<&Measurement> = runs.collect();
        let med = |f: &dyn Fn(&Measurement) -> f64| median(runs.iter().map(|m| f(m)).collect());
        Self {
            per_second: med(&|m| m.per_second),
            per_cpu_second: med(&|m| m.per_cpu_second),
            switches: med(&|m| m.switches),
            p50: med(&|m| m.quantile(0.5)),
            p90: med(&|m| m.quantile(0.9)),
            p99: med(&|m| m.quantile(0.99)),
            max: med(&|m| m.quantile(1.0)),
        }
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "round_trips_per_s": self.per_second,
            "round_trips_per_cpu_s": self.per_cpu_second,
            "cpu_us_per_round_trip": 1e6 / self.per_cpu_second,
            "switches_per_round_trip": self.switches,
            "p50_us": self.p50, "p90_us": self.p90, "p99_us": self.p99, "max_us": self.max,
        })
    }
}

/// Measures `pairs`×`window` against the server and the forwarder, `rounds`
/// times each, alternating which goes first.
pub(crate) async fn run(plan: &Plan, opts: &Opts, progress: &Progress, pairs: usize, window: usize) -> Result<Section> {
    let server = plan.start_server()?;
    let forwarder = plan.start_forwarder()?;
    let duration: Duration = opts.duration.into();
    let rounds = opts.rounds.max(1);
    let mut runs = Vec::new();
    for round in 0..rounds {
        let order =
            if round % 2 == 0 { [Target::Server, Target::Forwarder] } else { [Target::Forwarder, Target::Server] };
        for target in order {
            let child = match target {
                Target::Server => &server,
                Target::Forwarder => &forwarder,
            };
            let label = format!("relay P={pairs} W={window} {} round {}/{rounds}", target.name(), round + 1);
            let sides = Sides::one(child);
            let measured = measure(plan, &sides, target, pairs, window, duration, progress, &label).await?;
            progress.say(&format!("{label}: {}", measured.summary()));
            runs.push((target, measured));
        }
    }
    Ok(section(pairs, window, duration, &runs))
}

/// The table rows (medians over the rounds), the JSON line (every round
/// too) and the latency plot (every round's samples together).
fn section(pairs: usize, window: usize, duration: Duration, runs: &[(Target, Measurement)]) -> Section {
    let of = |target| runs.iter().filter(move |(t, _)| *t == target).map(|(_, m)| m);
    let (s, f) = (Figures::of(of(Target::Server)), Figures::of(of(Target::Forwarder)));
    let scenario = format!("relay P={pairs} W={window}");
    let ratio = |a: f64, b: f64| format!("{:.2}", a / b);
    let cpu_ratio = s.per_cpu_second / f.per_cpu_second;
    let mut per_cpu_second = Row::new(
        &scenario,
        "round trips / CPU-s",
        fmt_k(s.per_cpu_second),
        fmt_k(f.per_cpu_second),
        ratio(s.per_cpu_second, f.per_cpu_second),
    );
    if (pairs, window) == (32, 8) {
        per_cpu_second = per_cpu_second.target("≥ 1.0", cpu_ratio >= 1.0);
    }
    let mut rows = vec![
        Row::new(
            &scenario,
            "round trips/s",
            fmt_k(s.per_second),
            fmt_k(f.per_second),
            ratio(s.per_second, f.per_second),
        ),
        per_cpu_second,
        Row::new(
            &scenario,
            "CPU µs / round trip",
            format!("{:.1}", 1e6 / s.per_cpu_second),
            format!("{:.1}", 1e6 / f.per_cpu_second),
            ratio(f.per_cpu_second, s.per_cpu_second),
        ),
        Row::new(
            &scenario,
            "context switches / round trip",
            format!("{:.2}", s.switches),
            format!("{:.2}", f.switches),
            ratio(s.switches, f.switches),
        ),
    ];
    for (figure, a, b, limit) in [
        ("p50 µs", s.p50, f.p50, 1.2),
        ("p90 µs", s.p90, f.p90, f64::NAN),
        ("p99 µs", s.p99, f.p99, 1.5),
        ("max µs", s.max, f.max, f64::NAN),
    ] {
        let mut row = Row::new(&scenario, figure, format!("{a:.0}"), format!("{b:.0}"), ratio(a, b));
        if (pairs, window) == (1, 1) && !limit.is_nan() {
            row = row.target(&format!("≤ {limit:.1}"), a / b <= limit);
        }
        rows.push(row);
    }
    let rounds = |target| of(target).map(Measurement::json).collect::<Vec<_>>();
    let json = json!({
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
        "server_rounds": rounds(Target::Server),
        "forwarder_rounds": rounds(Target::Forwarder),
    });
    let merged = |target| {
        let mut all: Vec<u32> = of(target).flat_map(|m| m.latencies.iter().copied()).collect();
        all.sort_unstable();
        all
    };
    let plot = Plot { title: scenario, server: merged(Target::Server), forwarder: merged(Target::Forwarder) };
    Section { rows, json, plot: Some(plot) }
}

/// Where a run's clients connect, and which processes it charges.
#[derive(Debug)]
pub(crate) struct Sides<'a> {
    /// Where each caller (A) connects.
    pub(crate) a: &'a Child,
    /// Where each answerer (B) connects.
    pub(crate) b: &'a Child,
    /// The processes whose CPU time and context switches the run counts.
    pub(crate) charged: Vec<u32>,
}

impl<'a> Sides<'a> {
    /// Both ends on `child`, which alone is charged.
    pub(crate) fn one(child: &'a Child) -> Self {
        Self { a: child, b: child, charged: vec![child.pid] }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn measure(
    plan: &Plan,
    sides: &Sides<'_>,
    target: Target,
    pairs: usize,
    window: usize,
    duration: Duration,
    progress: &Progress,
    label: &str,
) -> Result<Measurement> {
    let mut set = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        set.push(within(SETUP_TIMEOUT, "setting up a pair", set_up(sides, target)).await??);
    }
    let warm_up = (duration / 5).max(Duration::from_millis(200));
    let t0 = Instant::now() + warm_up;
    let t1 = t0 + duration;
    let completed = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::with_capacity(pairs);
    let mut answerers = Vec::with_capacity(pairs);
    for (a, b, params) in set {
        answerers.push(tokio::spawn(answer(b)));
        callers.push(tokio::spawn(call(a, params, window, t0, t1, completed.clone())));
    }

    sleep_until(t0).await;
    let (counters0, done0) = (plan.counters_of(&sides.charged)?, completed.load(Ordering::Relaxed));
    let started = Instant::now();
    let mut tick = started;
    while tick + Duration::from_millis(500) < t1 {
        tick += Duration::from_millis(500);
        sleep_until(tick).await;
        let rate = (completed.load(Ordering::Relaxed) - done0) as f64 / started.elapsed().as_secs_f64();
        progress.say(&format!("{label}: {rate:.0} rt/s …"));
    }
    sleep_until(t1).await;
    let (counters1, done1) = (plan.counters_of(&sides.charged)?, completed.load(Ordering::Relaxed));
    let elapsed = started.elapsed().as_secs_f64();

    let mut latencies = Vec::new();
    for caller in callers {
        latencies.extend(within(GRACE * 2, "a caller finishing", caller).await???);
    }
    for answerer in answerers {
        answerer.abort();
    }
    latencies.sort_unstable();
    let round_trips = (done1 - done0) as f64;
    let used = counters1 - counters0;
    // CPU time has clock-tick resolution; a zero would make the ratio infinite.
    let cpu = used.cpu.max(1e-3);
    let per_round_trip = |n: u64| n as f64 / round_trips.max(1.0);
    Ok(Measurement {
        per_second: round_trips / elapsed,
        per_cpu_second: round_trips / cpu,
        switches: per_round_trip(used.switches),
        latencies,
    })
}

/// Connects a pair and returns A, B and the relay params A sends to B.
async fn set_up(sides: &Sides<'_>, target: Target) -> Result<(Ws, Ws, String)> {
    let pair = NEXT_PAIR.fetch_add(1, Ordering::Relaxed);
    let mut a = Caller::connect(&sides.a.url(pair)).await?;
    let mut b = Caller::connect(&sides.b.url(pair)).await?;
    let (group, to) = match target {
        Target::Server => {
            a.init().await?;
            let to = b.init().await?;
            let group = a.call("create", json!([])).await?;
            let group = group.as_str().ok_or("create returned no id")?.to_owned();
            b.call("join", json!([group])).await?;
            (group, to)
        }
        Target::Forwarder => (client::fake_id(2 * pair), client::fake_id(2 * pair + 1)),
    };
    Ok((a.ws, b.ws, format!(r#"["{group}","{to}",{OFFER}]"#)))
}

/// B: answers every relay with an answer of the same size, until aborted.
async fn answer(mut ws: Ws) -> Result<()> {
    while let Some(message) = ws.next().await {
        let Message::Text(text) = message? else { continue };
        if client::is_request(text.as_str())
            && let Some(id) = client::frame_id(text.as_str())
        {
            ws.send(Message::text(client::result(id, ANSWER))).await?;
        }
    }
    Ok(())
}

/// A: keeps `window` relays in flight until `t1`, then waits for the last
/// answers; returns the latencies (µs) of round trips completed in
/// `[t0, t1)`, which it also counts in `completed`.
async fn call(
    mut ws: Ws,
    params: String,
    window: usize,
    t0: Instant,
    t1: Instant,
    completed: Arc<AtomicU64>,
) -> Result<Vec<u32>> {
    let mut sent: HashMap<u64, Instant> = HashMap::with_capacity(window * 2);
    let mut next_id = 0;
    // Each frame with its own write, as a browser's `send` does.
    for _ in 0..window {
        next_id += 1;
        sent.insert(next_id, Instant::now());
        ws.send(Message::text(client::request(next_id, "relay", &params))).await?;
    }
    let mut latencies = Vec::new();
    let deadline = t1 + GRACE;
    while !sent.is_empty() {
        let message = match timeout_at(deadline, ws.next()).await {
            Ok(Some(message)) => message?,
            Ok(None) => return Err("a caller's connection closed".into()),
            Err(_) => return Err(format!("{} relays unanswered {GRACE:?} after the run", sent.len()).into()),
        };
        let Message::Text(text) = message else { continue };
        let text = text.as_str();
        if client::is_request(text) {
            continue;
        }
        if text.contains("\"error\"") {
            return Err(format!("a relay failed: {text}").into());
        }
        let Some(sent_at) = client::frame_id(text).and_then(|id| id.parse().ok()).and_then(|id| sent.remove(&id))
        else {
            continue;
        };
        let now = Instant::now();
        if now >= t0 && now < t1 {
            latencies.push(u32::try_from((now - sent_at).as_micros()).unwrap_or(u32::MAX));
            completed.fetch_add(1, Ordering::Relaxed);
        }
        if now < t1 {
            next_id += 1;
            sent.insert(next_id, now);
            ws.send(Message::text(client::request(next_id, "relay", &params))).await?;
        }
    }
    Ok(latencies)
}
