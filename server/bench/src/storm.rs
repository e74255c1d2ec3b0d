//! The join storm: G groups of M members. Owners create the groups first;
//! then, at one moment, every other member joins and the whole signaling
//! sequence runs as webrtc-p2p's clients run it: each member asks for the
//! member list and offers to everyone who joined before it (a `relay`
//! request, answered), and after the offer/answer both ends of the pair
//! trickle 4 ICE candidates as `relay` notifications. Each frame goes out
//! with its own write, as a browser sends it. Measured: time from the joins
//! to the moment every member has every answer and candidate.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt, stream};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, ANSWER, CANDIDATE, Caller, OFFER, Ws};
use crate::procs::Plan;
use crate::report::{Progress, Row, Section, fmt_k};
use crate::{Result, within};

/// Candidates each side of a pair trickles.
const CANDIDATES: usize = 4;

/// How long the whole storm may take before it counts as failed.
const STORM_TIMEOUT: Duration = Duration::from_secs(60);

/// Connections being set up at once.
const CONCURRENCY: usize = 64;

/// Request ids: `join`, `get_members`, then offers from here on.
const JOIN_ID: u64 = 1;
const MEMBERS_ID: u64 = 2;
const FIRST_OFFER_ID: u64 = 10;

/// What one storm gave.
#[derive(Debug, Clone)]
pub(crate) struct Storm {
    groups: usize,
    members: usize,
    /// Seconds from the joins to every pair signalled.
    pub(crate) seconds: f64,
    /// Relays (offers and candidates) in that time.
    pub(crate) relays: usize,
    /// CPU seconds the server (every process of it) used in that time.
    pub(crate) server_cpu: f64,
    /// CPU seconds this load generator used in that time (when it is near
    /// `seconds`, the load generator is what limits the figure).
    pub(crate) bench_cpu: f64,
}

impl Storm {
    fn section(&self) -> Section {
        let scenario = format!("storm {}×{}", self.groups, self.members);
        let mut signalled = Row::server_only(&scenario, "s to all signalled", format!("{:.2}", self.seconds));
        if (self.groups, self.members) == (200, 8) {
            signalled = signalled.target("< 0.5 s", self.seconds < 0.5);
        }
        let rate = self.relays as f64 / self.seconds;
        let rows = vec![
            signalled,
            Row::server_only(&scenario, "relays/s", fmt_k(rate)),
            Row::server_only(&scenario, "server CPU s", format!("{:.2}", self.server_cpu)),
            Row::server_only(&scenario, "load generator CPU s", format!("{:.2}", self.bench_cpu)),
        ];
        let json = json!({
            "scenario": "storm", "groups": self.groups, "members": self.members,
            "seconds": self.seconds, "relays": self.relays, "relays_per_s": rate,
            "server_cpu_s": self.server_cpu, "load_generator_cpu_s": self.bench_cpu,
        });
        Section { rows, json, plot: None }
    }
}

pub(crate) async fn run(plan: &Plan, progress: &Progress, groups: usize, members: usize) -> Result<Section> {
    let server = plan.start_server()?;
    let storm = measure(plan, progress, &[server.url(0)], &[server.pid], groups, members).await?;
    Ok(storm.section())
}

/// One storm: the k-th member of each group connects to `urls[k % len]`;
/// the processes in `charged` are the server whose CPU time counts.
pub(crate) async fn measure(
    plan: &Plan,
    progress: &Progress,
    urls: &[String],
    charged: &[u32],
    groups: usize,
    members: usize,
) -> Result<Storm> {
    let members = members.max(2);
    progress.say(&format!("storm {groups}×{members}: connecting"));
    let callers: Vec<(Caller, String)> = stream::iter(0..groups * members)
        .map(|n| async move {
            let mut caller = Caller::connect(&urls[n % members % urls.len()]).await?;
            let user = caller.init().await?;
            Ok::<_, crate::Error>((caller, user))
        })
        .buffered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let (go, ready) = watch::channel(false);
    let (stop, stopped) = watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::with_capacity(callers.len());
    let mut callers = callers.into_iter();
    for _ in 0..groups {
        let mut chunk: Vec<(Caller, String)> = callers.by_ref().take(members).collect();
        let group = chunk[0].0.call("create", json!([])).await?;
        let group = group.as_str().ok_or("create returned no id")?.to_owned();
        for (i, (caller, user)) in chunk.drain(..).enumerate() {
            let member = Member { group: group.clone(), user, owner: i == 0, size: members };
            let (ready, stopped, done) = (ready.clone(), stopped.clone(), done_tx.clone());
            tasks.push(tokio::spawn(async move {
                let result = member.run(caller.ws, ready, stopped, done.clone()).await;
                if let Err(e) = &result {
                    let _ = done.send(Err(e.to_string()));
                }
                result
            }));
        }
    }
    progress.say(&format!("storm {groups}×{members}: joining"));
    let cpu = |pid| plan.cpu_seconds(pid);
    let (server_cpu0, bench_cpu0) = (plan.counters_of(charged)?.cpu, cpu(std::process::id())?);
    let started = Instant::now();
    let _ = go.send(true);
    let total = groups * members;
    let mut last = started;
    let all_done = within(STORM_TIMEOUT, "the join storm", async {
        for _ in 0..total {
            match done_rx.recv().await {
                Some(Ok(at)) => last = last.max(at),
                Some(Err(e)) => return Err::<(), crate::Error>(format!("a member failed: {e}").into()),
                None => return Err("every member stopped".into()),
            }
        }
        Ok(())
    })
    .await;
    let (server_cpu1, bench_cpu1) = (plan.counters_of(charged)?.cpu, cpu(std::process::id())?);
    let _ = stop.send(true);
    for task in tasks {
        if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(5), task).await {
            return Err(e);
        }
    }
    all_done??;
    let pairs = groups * members * (members - 1) / 2;
    Ok(Storm {
        groups,
        members,
        seconds: (last - started).as_secs_f64(),
        relays: pairs * (1 + 2 * CANDIDATES),
        server_cpu: server_cpu1 - server_cpu0,
        bench_cpu: bench_cpu1 - bench_cpu0,
    })
}

/// One member's part in the storm.
#[derive(Debug)]
struct Member {
    group: String,
    user: String,
    owner: bool,
    size: usize,
}

impl Member {
    async fn run(
        self,
        mut ws: Ws,
        mut go: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
        done: tokio::sync::mpsc::UnboundedSender<Result<Instant, String>>,
    ) -> Result<()> {
        go.wait_for(|go| *go).await?;
        // The owner offers to nobody: everyone joined after it.
        let mut expected_answers = self.owner.then_some(0);
        let mut answers = 0;
        let mut candidates = 0;
        let mut offers: HashMap<u64, String> = HashMap::new();
        let mut next_id = FIRST_OFFER_ID;
        let mut finished = false;
        if !self.owner {
            ws.send(Message::text(client::request(JOIN_ID, "join", &json!([self.group]).to_string()))).await?;
        }
        loop {
            if !finished && expected_answers == Some(answers) && candidates == CANDIDATES * (self.size - 1) {
                finished = true;
                let _ = done.send(Ok(Instant::now()));
            }
            let message = tokio::select! {
                message = ws.next() => match message {
                    Some(message) => message?,
                    None => return Err("a member's connection closed".into()),
                },
                _ = stop.wait_for(|stop| *stop) => return Ok(()),
            };
            let Message::Text(text) = message else { continue };
            let mut frame: Value = serde_json::from_str(text.as_str())?;
            if let Some(error) = frame.get("error") {
                return Err(format!("a storm call failed: {error}").into());
            }
            if frame.get("method").is_some() {
                if frame["method"] != "relay" {
                    continue;
                }
                let from = frame["params"][1].as_str().ok_or("relay without a sender")?.to_owned();
                match client::frame_id(text.as_str()) {
                    // An offer: answer it, then trickle candidates.
                    Some(id) => {
                        ws.send(Message::text(client::result(id, ANSWER))).await?;
                        self.trickle(&mut ws, &from).await?;
                    }
                    None => candidates += 1,
                }
                continue;
            }
            match frame["id"].as_u64() {
                Some(JOIN_ID) => {
                    ws.send(Message::text(client::request(
                        MEMBERS_ID,
                        "get_members",
                        &json!([self.group]).to_string(),
                    )))
                    .await?;
                }
                Some(MEMBERS_ID) => {
                    let list = frame["result"].take();
                    let list = list.as_array().ok_or("get_members returned no list")?;
                    let me = list.iter().position(|u| *u == self.user).ok_or("not in my own group")?;
                    for earlier in &list[..me] {
                        let earlier = earlier.as_str().ok_or("odd member id")?;
                        next_id += 1;
                        offers.insert(next_id, earlier.to_owned());
                        let params = format!(r#"["{}","{earlier}",{OFFER}]"#, self.group);
                        ws.send(Message::text(client::request(next_id, "relay", &params))).await?;
                    }
                    expected_answers = Some(me);
                }
                Some(id) => {
                    let peer = offers.remove(&id).ok_or("an answer to no offer")?;
                    answers += 1;
                    self.trickle(&mut ws, &peer).await?;
                }
                None => return Err(format!("odd frame: {text}").into()),
            }
        }
    }

    /// Sends `CANDIDATES` candidates to `peer` as relay notifications.
    async fn trickle(&self, ws: &mut Ws, peer: &str) -> Result<()> {
        let params = format!(r#"["{}","{peer}",{CANDIDATE}]"#, self.group);
        for _ in 0..CANDIDATES {
            ws.send(Message::text(client::notification("relay", &params))).await?;
        }
        Ok(())
    }
}
