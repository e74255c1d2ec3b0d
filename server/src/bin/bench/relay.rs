//! The relay scenario: P pairs (A, B); each A keeps W relays in flight to its
//! B, each a full round trip A→server→B→server→A with an SDP-like `data`.
//! Against the forwarder the same frames travel the same way, only nobody
//! reads them in between.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::time::{Instant, sleep_until, timeout_at};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, ANSWER, Caller, OFFER, Ws};
use crate::procs::{Child, Plan};
use crate::report::{Report, Target};
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
    /// Round trips per CPU-second of the process under test.
    pub(crate) per_cpu_second: f64,
    /// Round-trip latencies in µs, sorted.
    pub(crate) latencies: Vec<u32>,
}

impl Measurement {
    /// The `q` quantile of the latencies, in µs.
    pub(crate) fn quantile(&self, q: f64) -> f64 {
        quantile(&self.latencies, q)
    }
}

/// The `q` quantile of sorted `samples`.
pub(crate) fn quantile(samples: &[u32], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    f64::from(samples[rank - 1])
}

/// Measures `pairs`×`window` against the server and the forwarder, `rounds`
/// times each, alternating which goes first.
pub(crate) async fn run(plan: &Plan, opts: &Opts, out: &mut Report, pairs: usize, window: usize) -> Result<()> {
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
            let measured = measure(plan, child, target, pairs, window, duration, out, &label).await?;
            out.progress(&format!(
                "{label}: {:.0} rt/s, {:.0} rt/CPU-s, p50 {:.0} µs",
                measured.per_second,
                measured.per_cpu_second,
                measured.quantile(0.5)
            ));
            runs.push((target, measured));
        }
    }
    out.relay(pairs, window, duration, runs)
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    plan: &Plan,
    child: &Child,
    target: Target,
    pairs: usize,
    window: usize,
    duration: Duration,
    out: &Report,
    label: &str,
) -> Result<Measurement> {
    let mut set = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        set.push(within(SETUP_TIMEOUT, "setting up a pair", set_up(child, target)).await??);
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
    let (cpu0, done0) = (plan.cpu_seconds(child.pid)?, completed.load(Ordering::Relaxed));
    let started = Instant::now();
    let mut tick = started;
    while tick + Duration::from_millis(500) < t1 {
        tick += Duration::from_millis(500);
        sleep_until(tick).await;
        let rate = (completed.load(Ordering::Relaxed) - done0) as f64 / started.elapsed().as_secs_f64();
        out.progress(&format!("{label}: {rate:.0} rt/s …"));
    }
    sleep_until(t1).await;
    let (cpu1, done1) = (plan.cpu_seconds(child.pid)?, completed.load(Ordering::Relaxed));
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
    // CPU time has clock-tick resolution; a zero would make the ratio infinite.
    let cpu = (cpu1 - cpu0).max(1e-3);
    Ok(Measurement { per_second: round_trips / elapsed, per_cpu_second: round_trips / cpu, latencies })
}

/// Connects a pair and returns A, B and the relay params A sends to B.
async fn set_up(child: &Child, target: Target) -> Result<(Ws, Ws, String)> {
    let pair = NEXT_PAIR.fetch_add(1, Ordering::Relaxed);
    let mut a = Caller::connect(&child.url(pair)).await?;
    let mut b = Caller::connect(&child.url(pair)).await?;
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
    for _ in 0..window {
        next_id += 1;
        sent.insert(next_id, Instant::now());
        ws.feed(Message::text(client::request(next_id, "relay", &params))).await?;
    }
    ws.flush().await?;
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
