//! `bench`: measures the server (`target/release/webrtc-p2p-server`, run as a
//! separate process) and a bare WebSocket forwarder (this binary, run as
//! `bench forwarder`) with the same load generator and the same frames, so
//! that every figure can be read as a ratio to the forwarder's. Loopback only;
//! every loop is bounded in count and time.
//!
//!     cargo run --release -p webrtc-p2p-bench -- all
//!
//! # Layout
//! - `procs`: the processes under test, /proc readings (CPU, RSS), CPU
//!   pinning, the open-files limit.
//! - `client`: lean WebSocket and JSON-RPC helpers for the load generator.
//! - `forwarder`: the baseline, a bare forwarder that pairs two connections.
//! - `relay`, `conns`, `storm`, `mesh`: one scenario each.
//! - `cluster`: the relay and the storm again against two nodes sharing a
//!   redis-server (same node, cross node, single node in the same rounds).
//! - `report`: the progress line, the summary table, JSON lines, the SVG plot;
//!   each scenario hands it a `Section` (rows, a JSON line, maybe a plot).

mod client;
mod cluster;
mod conns;
mod forwarder;
mod mesh;
mod procs;
mod relay;
mod report;
mod storm;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// Benchmarks for webrtc-p2p's server, against a bare WebSocket forwarder.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    opts: Opts,
}

/// What every scenario shares.
#[derive(Debug, Clone, Args)]
pub(crate) struct Opts {
    /// The server binary under test (default: next to this one; built first
    /// when run by cargo and missing or older than this binary).
    #[arg(long, global = true)]
    server: Option<PathBuf>,

    /// Rounds per relay figure; server and forwarder alternate which goes
    /// first, and medians are reported.
    #[arg(long, global = true, default_value_t = 3)]
    pub(crate) rounds: usize,

    /// Measured time of one relay run (after a warm-up of a fifth of it).
    #[arg(long, global = true, default_value = "3s")]
    pub(crate) duration: humantime::Duration,

    /// JSON lines are appended here (default: target/bench/results.jsonl).
    #[arg(long, global = true)]
    results: Option<PathBuf>,

    /// The latency plot, server vs forwarder (default: target/bench/latency.svg).
    #[arg(long, global = true)]
    svg: Option<PathBuf>,

    /// Don't pin the server and the load generator to different CPUs.
    #[arg(long, global = true)]
    no_pin: bool,

    /// The redis-server binary the cluster scenarios start.
    #[arg(long, global = true, default_value = "redis-server")]
    pub(crate) redis_server: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every scenario at its issue-5 size: relay (1×1 and 32×8), conns
    /// (19,000), join storm (200×8), browser mesh (2, 4, 6, 8 pages), cluster.
    All {
        /// Connections held by `conns`.
        #[arg(long, default_value_t = 19_000)]
        conns: usize,
        /// Skip the browser mesh (it needs Chromium and frontend/node_modules).
        #[arg(long)]
        no_mesh: bool,
        /// Skip the cluster scenarios (they need redis-server).
        #[arg(long)]
        no_cluster: bool,
    },
    /// Round trips A→server→B→server→A: P pairs, W in flight per pair.
    Relay {
        /// Pairs of clients.
        #[arg(long, short = 'p', default_value_t = 32)]
        pairs: usize,
        /// Relays in flight per pair.
        #[arg(long, short = 'w', default_value_t = 8)]
        window: usize,
    },
    /// N connections, each initialised and held: server RSS per connection.
    Conns {
        /// How many connections.
        #[arg(long, short = 'n', default_value_t = 19_000)]
        n: usize,
        /// Each connection also calls `session`: a resumable session, whose
        /// resume buffer the server keeps (trimmed as pongs come back).
        #[arg(long)]
        resume: bool,
    },
    /// G groups × M members join at once and signal every pair.
    Storm {
        /// Groups.
        #[arg(long, short = 'g', default_value_t = 200)]
        groups: usize,
        /// Members per group.
        #[arg(long, short = 'm', default_value_t = 8)]
        members: usize,
    },
    /// Two nodes sharing a redis-server: relay same node, cross node and
    /// single node (P=1 W=1 and P=32 W=8, all processes charged for CPU),
    /// and a join storm with each group's members over both nodes.
    Cluster {
        /// Storm groups.
        #[arg(long, short = 'g', default_value_t = 200)]
        groups: usize,
        /// Storm members per group.
        #[arg(long, short = 'm', default_value_t = 8)]
        members: usize,
    },
    /// Time from the last join to a full mesh in headless Chromium (runs
    /// frontend's `mesh-timing` script).
    Mesh {
        /// Runs per group size.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
    },
    /// Runs the bare forwarder (the baseline) until killed; prints
    /// `listening on ADDR`.
    Forwarder {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Command::Forwarder { listen } = cli.command {
        return runtime()?.block_on(forwarder::serve(listen));
    }
    procs::raise_open_files_limit();
    let plan = procs::Plan::new(&cli.opts)?;
    // Pinned before the runtime starts, so that its threads inherit it.
    plan.pin_self();
    let mut out = report::Report::new(&cli.opts, &plan)?;
    let rt = runtime()?;
    let (opts, progress) = (&cli.opts, &out.progress);
    match cli.command {
        Command::All { conns, no_mesh, no_cluster } => rt.block_on(async {
            out.add(relay::run(&plan, opts, &out.progress, 1, 1).await?)?;
            out.add(relay::run(&plan, opts, &out.progress, 32, 8).await?)?;
            out.add(conns::run(&plan, &out.progress, conns, false).await?)?;
            out.add(storm::run(&plan, &out.progress, 200, 8).await?)?;
            if !no_mesh {
                out.add(mesh::run(&plan, &out.progress, 5).await?)?;
            }
            if !no_cluster {
                for section in cluster::run(&plan, opts, &out.progress, CLUSTER_SHAPES, (200, 8)).await? {
                    out.add(section)?;
                }
            }
            Ok::<_, Error>(())
        })?,
        Command::Relay { pairs, window } => {
            let section = rt.block_on(relay::run(&plan, opts, progress, pairs, window))?;
            out.add(section)?;
        }
        Command::Conns { n, resume } => out.add(rt.block_on(conns::run(&plan, progress, n, resume))?)?,
        Command::Storm { groups, members } => out.add(rt.block_on(storm::run(&plan, progress, groups, members))?)?,
        Command::Cluster { groups, members } => {
            for section in rt.block_on(cluster::run(&plan, opts, progress, CLUSTER_SHAPES, (groups, members)))? {
                out.add(section)?;
            }
        }
        Command::Mesh { repeats } => out.add(rt.block_on(mesh::run(&plan, progress, repeats))?)?,
        Command::Forwarder { .. } => unreachable!("handled above"),
    }
    out.finish()
}

/// The relay shapes (pairs, window) the cluster scenarios measure.
const CLUSTER_SHAPES: &[(usize, usize)] = &[(1, 1), (32, 8)];

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Waits at most `limit` for `future`, naming `what` in the error.
pub(crate) async fn within<T>(limit: Duration, what: &str, future: impl std::future::Future<Output = T>) -> Result<T> {
    tokio::time::timeout(limit, future).await.map_err(|_| format!("{what}: no result within {limit:?}").into())
}
