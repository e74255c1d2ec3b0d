//! The cluster scenarios: the relay and the join storm of `relay` and
//! `storm`, against two nodes (`--redis`) sharing one redis-server, with
//! every process of the service (both nodes and Redis) charged for CPU time.
//!
//! Relay, three ways, in the same rounds (their order turning each round):
//! - single node: a server without `--redis`, A and B on it;
//! - same node: A and B both on node 0 of the cluster;
//! - cross node: A on node 0, B on node 1.
//!
//! Storm: G groups × M members, the members of each group alternating
//! between the two nodes, against the same storm on the single node.

use serde_json::{Value, json};

use crate::procs::{Child, Plan, Target};
use crate::relay::{self, Figures, Measurement, Sides};
use crate::report::{Row, Section, fmt_k, median};
use crate::storm::{self, Storm};
use crate::{Opts, Result};

/// The ways a relay runs, in the order of the first round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Single,
    SameNode,
    CrossNode,
}

impl Way {
    const ALL: [Self; 3] = [Self::Single, Self::SameNode, Self::CrossNode];

    fn name(self) -> &'static str {
        match self {
            Self::Single => "single node",
            Self::SameNode => "same node",
            Self::CrossNode => "cross node",
        }
    }
}

/// The processes under test: a single server, and a two-node cluster.
#[derive(Debug)]
struct Service {
    single: Child,
    nodes: [Child; 2],
    redis: Child,
}

impl Service {
    fn start(plan: &Plan, opts: &Opts) -> Result<Self> {
        let redis = plan.start_redis(&opts.redis_server)?;
        let url = format!("redis://{}", redis.addr);
        let nodes = [plan.start_server_with(&["--redis", &url])?, plan.start_server_with(&["--redis", &url])?];
        Ok(Self { single: plan.start_server()?, nodes, redis })
    }

    fn cluster_pids(&self) -> Vec<u32> {
        vec![self.nodes[0].pid, self.nodes[1].pid, self.redis.pid]
    }

    fn sides(&self, way: Way) -> Sides<'_> {
        match way {
            Way::Single => Sides::one(&self.single),
            Way::SameNode => Sides { a: &self.nodes[0], b: &self.nodes[0], charged: self.cluster_pids() },
            Way::CrossNode => Sides { a: &self.nodes[0], b: &self.nodes[1], charged: self.cluster_pids() },
        }
    }
}

/// Every cluster figure: the relay at each of `shapes` (pairs, window),
/// then the storm of `groups` × `members`.
pub(crate) async fn run(
    plan: &Plan,
    opts: &Opts,
    progress: &crate::report::Progress,
    shapes: &[(usize, usize)],
    (groups, members): (usize, usize),
) -> Result<Vec<Section>> {
    let service = Service::start(plan, opts)?;
    let rounds = opts.rounds.max(1);
    let mut sections = Vec::new();
    for &(pairs, window) in shapes {
        let mut runs: Vec<(Way, Measurement)> = Vec::new();
        for round in 0..rounds {
            for k in 0..Way::ALL.len() {
                let way = Way::ALL[(round + k) % Way::ALL.len()];
                let label = format!("cluster relay P={pairs} W={window} {} round {}/{rounds}", way.name(), round + 1);
                let sides = service.sides(way);
                let measured =
                    relay::measure(plan, &sides, Target::Server, pairs, window, opts.duration.into(), progress, &label)
                        .await?;
                progress.say(&format!("{label}: {}", measured.summary()));
                runs.push((way, measured));
            }
        }
        sections.push(relay_section(pairs, window, &runs));
    }
    let mut storms: Vec<(Way, Storm)> = Vec::new();
    for round in 0..rounds {
        for way in if round % 2 == 0 { [Way::Single, Way::CrossNode] } else { [Way::CrossNode, Way::Single] } {
            let (urls, charged) = match way {
                Way::Single => (vec![service.single.url(0)], vec![service.single.pid]),
                _ => (service.nodes.iter().map(|node| node.url(0)).collect(), service.cluster_pids()),
            };
            let storm = storm::measure(plan, progress, &urls, &charged, groups, members).await?;
            progress.say(&format!("cluster storm {groups}×{members} {}: {:.2} s", way.name(), storm.seconds));
            storms.push((way, storm));
        }
    }
    sections.push(storm_section(groups, members, &storms));
    Ok(sections)
}

/// Rows comparing the ways: each row a figure of one way against another
/// (in the table's server and forwarder columns), and the ratio.
fn relay_section(pairs: usize, window: usize, runs: &[(Way, Measurement)]) -> Section {
    let of = |way: Way| Figures::of(runs.iter().filter(move |(w, _)| *w == way).map(|(_, m)| m));
    let (single, same, cross) = (of(Way::Single), of(Way::SameNode), of(Way::CrossNode));
    let scenario = format!("cluster relay P={pairs} W={window}");
    let row = |figure: &str, a: f64, b: f64, k: bool| {
        let show = |x: f64| if k { fmt_k(x) } else { format!("{x:.0}") };
        Row::new(&scenario, figure, show(a), show(b), format!("{:.2}", a / b))
    };
    let rows = vec![
        row("rt / CPU-s of all, same node vs single", same.per_cpu_second, single.per_cpu_second, true)
            .target("≥ 0.9", same.per_cpu_second >= 0.9 * single.per_cpu_second),
        row("rt / CPU-s of all, cross node vs single", cross.per_cpu_second, single.per_cpu_second, true)
            .target("≥ 0.5", cross.per_cpu_second >= 0.5 * single.per_cpu_second),
        row("p50 µs, cross node vs same node", cross.p50, same.p50, false).target("≤ 2.0", cross.p50 <= 2.0 * same.p50),
        row("p99 µs, cross node vs same node", cross.p99, same.p99, false),
        row("p50 µs, same node vs single", same.p50, single.p50, false),
        row("p99 µs, same node vs single", same.p99, single.p99, false),
        row("rt/s, same node vs single", same.per_second, single.per_second, true),
        row("rt/s, cross node vs single", cross.per_second, single.per_second, true),
    ];
    let rounds = |way: Way| runs.iter().filter(|(w, _)| *w == way).map(|(_, m)| m.json()).collect::<Vec<Value>>();
    let json = json!({
        "scenario": "cluster relay",
        "pairs": pairs,
        "window": window,
        "single_node": single.json(),
        "same_node": same.json(),
        "cross_node": cross.json(),
        "ratio": {
            "same_vs_single_round_trips_per_cpu_s": same.per_cpu_second / single.per_cpu_second,
            "cross_vs_single_round_trips_per_cpu_s": cross.per_cpu_second / single.per_cpu_second,
            "cross_vs_same_p50": cross.p50 / same.p50,
            "cross_vs_same_p99": cross.p99 / same.p99,
        },
        "single_node_rounds": rounds(Way::Single),
        "same_node_rounds": rounds(Way::SameNode),
        "cross_node_rounds": rounds(Way::CrossNode),
    });
    Section { rows, json, plot: None }
}

/// The storm over two nodes against the single node (medians over rounds).
fn storm_section(groups: usize, members: usize, storms: &[(Way, Storm)]) -> Section {
    let med = |way: Way, f: &dyn Fn(&Storm) -> f64| {
        median(storms.iter().filter(|(w, _)| *w == way).map(|(_, storm)| f(storm)).collect())
    };
    let seconds = |s: &Storm| s.seconds;
    let rate = |s: &Storm| s.relays as f64 / s.seconds;
    let cpu = |s: &Storm| s.server_cpu;
    let (cross, single) = (med(Way::CrossNode, &seconds), med(Way::Single, &seconds));
    let scenario = format!("cluster storm {groups}×{members}");
    let row = |figure: &str, f: &dyn Fn(&Storm) -> f64, show: &dyn Fn(f64) -> String| {
        let (a, b) = (med(Way::CrossNode, f), med(Way::Single, f));
        Row::new(&scenario, figure, show(a), show(b), format!("{:.2}", a / b))
    };
    let two = |x: f64| format!("{x:.2}");
    let mut signalled = row("s to all signalled, 2 nodes vs single", &seconds, &two);
    if (groups, members) == (200, 8) {
        signalled = signalled.target("< 2 s", cross < 2.0);
    }
    let rows = vec![
        signalled,
        row("relays/s, 2 nodes vs single", &rate, &fmt_k),
        row("server CPU s (all processes), 2 nodes vs single", &cpu, &two),
    ];
    let each = |way: Way| {
        storms
            .iter()
            .filter(|(w, _)| *w == way)
            .map(|(_, s)| json!({"seconds": s.seconds, "relays": s.relays, "server_cpu_s": s.server_cpu, "load_generator_cpu_s": s.bench_cpu}))
            .collect::<Vec<Value>>()
    };
    let json = json!({
        "scenario": "cluster storm", "groups": groups, "members": members,
        "two_nodes_seconds": cross, "single_node_seconds": single,
        "two_nodes_rounds": each(Way::CrossNode), "single_node_rounds": each(Way::Single),
    });
    Section { rows, json, plot: None }
}
