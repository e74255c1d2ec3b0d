//! A mesh of Rust peers signalling through a running server, the way browsers
//! do with webrtc-p2p: one peer creates a group; every other one joins, lists
//! the members, relays an offer to each member who joined before it, gets the
//! answer back, and trickles ICE candidates as relay notifications. Then it
//! prints every pair and how long its signaling took.
//!
//! Only the signaling is real: there is no WebRTC stack here, so the
//! payloads merely have the shapes of `RTCSessionDescriptionInit` and
//! `RTCIceCandidateInit`.
//!
//! ```text
//! cargo run --release -p webrtc-p2p-server &
//! cargo run --release --example mesh -p webrtc-p2p-simple -- --url ws://127.0.0.1:3001/ws --peers 8
//! ```

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures_util::future::try_join_all;
use jsonrpsee::core::{RpcResult, async_trait};
use jsonrpsee::types::ErrorObject;
use serde_json::json;
use serde_json::value::{RawValue, to_raw_value};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use webrtc_p2p_interfaces::{GroupId, PeerServer, SignalingClient, UserId};
use webrtc_p2p_simple::Client;
use webrtc_p2p_simple::wire::code::INVALID_PARAMS;

/// ICE candidates each offerer trickles to each answerer.
const CANDIDATES: usize = 4;

/// How long the mesh may take to form before the example gives up.
const PATIENCE: Duration = Duration::from_secs(10);

/// Starts N Rust peers against a running server and signals a full mesh.
#[derive(Debug, Parser)]
struct Args {
    /// The server's WebSocket endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:3001/ws")]
    url: String,
    /// Peers in the mesh, the group's creator included.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(2..=256))]
    peers: u16,
}

/// An ICE candidate that reached its answerer.
#[derive(Debug)]
struct Candidate {
    /// Who received it: the answerer's index among the peers.
    to: usize,
    /// Who trickled it.
    from: UserId,
    /// When the answerer's handler got it.
    at: Instant,
}

/// One peer's side of signaling: answers offers, reports candidates.
#[derive(Debug)]
struct MeshPeer {
    /// This peer's index, for the report.
    index: usize,
    /// Where candidates are reported.
    candidates: mpsc::UnboundedSender<Candidate>,
}

#[async_trait]
impl PeerServer for MeshPeer {
    async fn on_relay(&self, _group_id: GroupId, from: UserId, data: Box<RawValue>) -> RpcResult<Box<RawValue>> {
        let signal: serde_json::Value = serde_json::from_str(data.get())
            .map_err(|e| ErrorObject::owned(INVALID_PARAMS, e.to_string(), None::<()>))?;
        if signal["type"] == "offer" {
            let answer = json!({"type": "answer", "sdp": "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\n"});
            return to_raw_value(&answer).map_err(|e| ErrorObject::owned(INVALID_PARAMS, e.to_string(), None::<()>));
        }
        if signal.get("candidate").is_some() {
            let _ = self.candidates.send(Candidate { to: self.index, from, at: Instant::now() });
            return Ok(RawValue::NULL.to_owned());
        }
        Err(ErrorObject::owned(INVALID_PARAMS, "neither an offer nor a candidate", None::<()>))
    }

    async fn member_joined(
        &self,
        _group_id: GroupId,
        _user_id: UserId,
        _info: Option<serde_json::Value>,
    ) -> RpcResult<()> {
        Ok(())
    }

    async fn member_left(&self, _group_id: GroupId, _user_id: UserId) -> RpcResult<()> {
        Ok(())
    }
}

/// One offer and its answer, seen from the offerer.
#[derive(Debug)]
struct Offer {
    from: UserId,
    to: UserId,
    sent: Instant,
    answered: Instant,
}

/// A connected, initialised peer.
#[derive(Debug)]
struct Peer {
    id: UserId,
    client: Arc<Client>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let (candidates_tx, mut candidates) = mpsc::unbounded_channel();
    let mut peers = Vec::with_capacity(args.peers.into());
    for index in 0..args.peers.into() {
        let handler = MeshPeer { index, candidates: candidates_tx.clone() };
        let client = Client::connect(&args.url, handler).await?;
        let id = client.init(None).await?;
        peers.push(Peer { id, client: Arc::new(client) });
    }
    let names: HashMap<UserId, usize> = peers.iter().enumerate().map(|(n, p)| (p.id, n)).collect();
    let owner = &peers[0];
    let group = owner.client.create(None).await?;
    println!("{} peers in group {group} at {}", peers.len(), args.url);

    // Everyone joins at once; each offers to the members who joined before
    // it, so every pair is signalled exactly once whatever the join order.
    let started = Instant::now();
    let joiners = peers[1..].iter().map(|peer| join_and_offer(peer, group));
    let offers: Vec<Offer> = try_join_all(joiners).await?.into_iter().flatten().collect();

    let mut trickled: HashMap<(UserId, usize), (usize, Instant)> = HashMap::new();
    let expected = offers.len() * CANDIDATES;
    for _ in 0..expected {
        let candidate = timeout(PATIENCE, candidates.recv())
            .await
            .map_err(|_| {
                format!("only {} of {expected} candidates arrived", trickled.values().map(|t| t.0).sum::<usize>())
            })?
            .ok_or("the peers' handlers are gone")?;
        let entry = trickled.entry((candidate.from, candidate.to)).or_insert((0, candidate.at));
        entry.0 += 1;
        entry.1 = entry.1.max(candidate.at);
    }
    let formed = started.elapsed();

    println!("{:<18} {:>10} {:>16}", "offerer → answerer", "answer", "+ 4 candidates");
    let mut slowest = Duration::ZERO;
    let mut links = Vec::with_capacity(offers.len());
    for offer in &offers {
        let (count, last) = trickled.get(&(offer.from, names[&offer.to])).copied().unwrap_or((0, offer.sent));
        if count != CANDIDATES {
            return Err(format!("{count} of {CANDIDATES} candidates for one pair").into());
        }
        let signalled = last - offer.sent;
        slowest = slowest.max(signalled);
        links.push((names[&offer.from], names[&offer.to], offer.answered - offer.sent, signalled));
    }
    links.sort();
    for (from, to, answer, signalled) in links {
        println!("peer {from:>2} → peer {to:>2}   {:>10} {:>16}", ms(answer), ms(signalled));
    }
    let n = peers.len();
    let want = n * (n - 1) / 2;
    println!(
        "{} of {want} links signalled (a full mesh of {n} peers) in {}; slowest pair {}",
        offers.len(),
        ms(formed),
        ms(slowest)
    );

    for peer in &peers {
        peer.client.close().await;
    }
    if offers.len() != want {
        return Err("the mesh is incomplete".into());
    }
    Ok(())
}

/// Joins, lists the members, and signals each member who joined earlier:
/// the offer as a relay request, the candidates as relay notifications.
async fn join_and_offer(peer: &Peer, group: GroupId) -> Result<Vec<Offer>, jsonrpsee::core::client::Error> {
    peer.client.join(group).await?;
    let members = peer.client.get_members(group, None).await?.ids();
    let earlier = members.iter().take_while(|&&m| m != peer.id).copied();
    try_join_all(earlier.map(|to| offer(peer, group, to))).await
}

async fn offer(peer: &Peer, group: GroupId, to: UserId) -> Result<Offer, jsonrpsee::core::client::Error> {
    let sdp = json!({"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"});
    let sent = Instant::now();
    let answer = peer.client.relay(group, to, to_raw_value(&sdp)?).await?;
    let answered = Instant::now();
    let answer: serde_json::Value = serde_json::from_str(answer.get())?;
    if answer["type"] != "answer" {
        return Err(jsonrpsee::core::client::Error::Custom(format!("not an answer: {answer}")));
    }
    for n in 0..CANDIDATES {
        let candidate = json!({
            "candidate": format!("candidate:{n} 1 udp 2122260223 127.0.0.1 {} typ host", 50_000 + n),
            "sdpMid": "0",
            "sdpMLineIndex": 0,
        });
        peer.client.relay_notification(group, to, candidate).await?;
    }
    Ok(Offer { from: peer.id, to, sent, answered })
}

/// A duration in milliseconds, as people read them.
fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}
