//! The conns scenario: N connections, each initialised, held idle; what each
//! costs the server in resident memory, and whether all stayed open. With
//! `resume`, each also calls `session`, so that the server keeps what a
//! resume needs for it (its resume buffer, trimmed by pongs).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{StreamExt, stream};
use serde_json::json;
use tokio::sync::watch;

use crate::client::{Caller, Ws};
use crate::procs::{self, Child, Plan, Target};
use crate::report::{Progress, Row, Section, fmt_kib};
use crate::{Result, within};

/// Connections being opened at once.
const CONCURRENCY: usize = 128;

/// How long one connection may take to open and initialise.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the connections are held, all open, before RSS is read.
const HOLD: Duration = Duration::from_secs(2);

/// Pair keys for the forwarder, apart from the relay scenario's.
const PAIR_BASE: usize = 1 << 40;

/// What holding N connections cost one process.
#[derive(Debug, Clone)]
struct Held {
    /// Connections opened.
    n: usize,
    /// Of those, still open at the end.
    open: usize,
    /// RSS before the first connection, KiB.
    rss_before_kib: u64,
    /// RSS with all connections held, KiB.
    rss_after_kib: u64,
    /// Seconds it took to open (and initialise) them all.
    open_seconds: f64,
}

impl Held {
    /// Resident bytes per held connection.
    fn bytes_per_conn(&self) -> f64 {
        (self.rss_after_kib.saturating_sub(self.rss_before_kib) * 1024) as f64 / self.n.max(1) as f64
    }
}

pub(crate) async fn run(plan: &Plan, progress: &Progress, n: usize, resume: bool) -> Result<Section> {
    // This side and the process under test each need a descriptor per connection.
    if let Some(limit) = procs::open_files_limit()
        && limit < n + 200
    {
        return Err(
            format!("conns {n}: the open-files limit is {limit}; raise it (ulimit -n) or use a smaller N").into()
        );
    }
    let server = plan.start_server()?;
    let on_server = hold(&server, Target::Server, n, resume, progress).await?;
    drop(server);
    let forwarder = plan.start_forwarder()?;
    let on_forwarder = hold(&forwarder, Target::Forwarder, n, false, progress).await?;
    drop(forwarder);
    Ok(section(&on_server, &on_forwarder, resume))
}

fn section(server: &Held, forwarder: &Held, resume: bool) -> Section {
    let scenario = format!("conns N={}{}", server.n, if resume { " (resume on)" } else { "" });
    let (s, f) = (server.bytes_per_conn(), forwarder.bytes_per_conn());
    let rows = vec![
        Row::new(&scenario, "RSS / connection", fmt_kib(s), fmt_kib(f), format!("{:.2}", s / f))
            .target("≤ 4 KiB", s <= 4096.0),
        Row::new(
            &scenario,
            "still open",
            format!("{}/{}", server.open, server.n),
            format!("{}/{}", forwarder.open, forwarder.n),
            String::new(),
        )
        .target("all", server.open == server.n),
        Row::new(
            &scenario,
            "seconds to open",
            format!("{:.1}", server.open_seconds),
            format!("{:.1}", forwarder.open_seconds),
            String::new(),
        ),
    ];
    let held = |h: &Held| {
        json!({
            "open": h.open, "rss_before_kib": h.rss_before_kib, "rss_after_kib": h.rss_after_kib,
            "bytes_per_conn": h.bytes_per_conn(), "open_seconds": h.open_seconds,
        })
    };
    let json = json!({
        "scenario": "conns", "n": server.n, "resume": resume, "server": held(server), "forwarder": held(forwarder),
    });
    Section { rows, json, plot: None }
}

async fn hold(child: &Child, target: Target, n: usize, resume: bool, progress: &Progress) -> Result<Held> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before_kib = procs::rss_kib(child.pid)?;
    let closed = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = watch::channel(false);
    let started = std::time::Instant::now();
    let mut opened = 0;
    let mut connecting = stream::iter(0..n).map(|i| open(child, target, i, resume)).buffer_unordered(CONCURRENCY);
    while let Some(ws) = connecting.next().await {
        tokio::spawn(keep(ws?, closed.clone(), stopped.clone()));
        opened += 1;
        if opened % 1000 == 0 {
            progress.say(&format!("conns {}: {opened}/{n} open", target.name()));
        }
    }
    let open_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(HOLD).await;
    let rss_after_kib = procs::rss_kib(child.pid)?;
    let fds = procs::open_fds(child.pid)?;
    let open = n - closed.load(Ordering::Relaxed);
    progress.say(&format!("conns {}: {open}/{n} open, {fds} descriptors in the process", target.name()));
    let _ = stop.send(true);
    Ok(Held { n, open: open.min(fds), rss_before_kib, rss_after_kib, open_seconds })
}

async fn open(child: &Child, target: Target, i: usize, resume: bool) -> Result<Ws> {
    within(CONNECT_TIMEOUT, "opening a connection", async {
        let mut caller = Caller::connect(&child.url(PAIR_BASE + i / 2)).await?;
        if target == Target::Server {
            caller.init().await?;
            if resume {
                caller.call("session", json!([])).await?;
            }
        }
        Ok(caller.ws)
    })
    .await?
}

/// Reads (and so answers pings) until the connection closes or `stop`.
async fn keep(mut ws: Ws, closed: Arc<AtomicUsize>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(_)) => {}
                _ => {
                    closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}
