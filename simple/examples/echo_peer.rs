//! A Rust member in a group of browsers: it joins a group (or creates one),
//! prints what the others send it, answers every unicast with what it
//! carried, and greets each member with a broadcast. Browsers relay to it
//! through the server at once: it speaks their payloads, and no WebRTC
//! (`MemberBuilder::no_webrtc`; the `peer` example makes direct links).
//!
//! ```text
//! cargo run --release -p webrtc-p2p-server &
//! cargo run --example echo_peer -p webrtc-p2p-simple -- --url ws://127.0.0.1:3001/ws
//! ```
//!
//! then open the printed link in a browser: the page lists this member as
//! `relayed`, its chat shows the greeting and the terminal what you type, and
//! its ping button gets the echo. `--group <id>` joins an existing group
//! instead (the id after `#` in the demo page's address).
//!
//! Output, one event per line: `joined <group> as <id>`, then
//! `broadcast from <id>: <text>`, `unicast from <id>: <text>` (bytes are
//! shown as `<n> bytes`), `member joined: <id>`, `member left: <id>`.

use std::process::ExitCode;

use clap::Parser;
use jsonrpsee::types::ErrorObjectOwned;
use tokio::sync::mpsc;
use webrtc_p2p_interfaces::{GroupId, UserId};
use webrtc_p2p_simple::client::payload::Body;
use webrtc_p2p_simple::client::{Member, MemberHandler};

/// Joins or creates a group and echoes what its members send.
#[derive(Debug, Parser)]
struct Args {
    /// The server's WebSocket endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:3001/ws")]
    url: String,
    /// The group to join; without it a new group is created.
    #[arg(long)]
    group: Option<GroupId>,
    /// What this member broadcasts when it joins and to greet each newcomer.
    #[arg(long, default_value = "hello from the Rust echo peer")]
    greeting: String,
}

/// Prints what arrives and echoes unicasts; joins are handed to `main`,
/// which greets (a handler must return quickly, and a broadcast waits on
/// the network).
#[derive(Debug)]
struct Echo {
    /// Members to greet.
    joined: mpsc::UnboundedSender<UserId>,
}

impl MemberHandler for Echo {
    fn on_broadcast(&self, _group_id: GroupId, from: UserId, body: Body) {
        println!("broadcast from {from}: {}", show(&body));
    }

    async fn on_unicast(&self, _group_id: GroupId, from: UserId, body: Body) -> Result<Body, ErrorObjectOwned> {
        println!("unicast from {from}: {}", show(&body));
        Ok(body)
    }

    fn on_member_joined(&self, _group_id: GroupId, member: UserId) {
        println!("member joined: {member}");
        let _ = self.joined.send(member);
    }

    fn on_member_left(&self, _group_id: GroupId, member: UserId) {
        println!("member left: {member}");
    }
}

/// Text as it is, bytes by their count.
fn show(body: &Body) -> String {
    match body {
        Body::Text(text) => text.clone(),
        Body::Bytes(bytes) => format!("{} bytes", bytes.len()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_peer: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let (joined, mut newcomers) = mpsc::unbounded_channel();
    let member = Member::builder().no_webrtc().connect(&args.url, Echo { joined }).await?;
    let group = match args.group {
        Some(group) => {
            member.join(group).await?;
            group
        }
        None => member.create(None).await?,
    };
    println!("joined {group} as {}", member.id());
    if let Some(page) = demo_page(&args.url) {
        println!("demo page: {page}#{group}");
    }
    if member.members(group).await.len() > 1 {
        member.broadcast(group, args.greeting.as_str()).await?;
    }

    let closed = member.closed();
    tokio::pin!(closed);
    loop {
        tokio::select! {
            Some(newcomer) = newcomers.recv() => {
                member.broadcast(group, format!("{} (welcome, {newcomer})", args.greeting)).await?;
            }
            reason = &mut closed => return Err(format!("the connection ended: {reason}").into()),
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    member.leave(group).await?;
    member.close().await;
    Ok(())
}

/// The demo page of the server behind a `ws://HOST:PORT/ws` address.
fn demo_page(url: &str) -> Option<String> {
    let rest = url.strip_prefix("ws://").map(|r| ("http", r)).or(url.strip_prefix("wss://").map(|r| ("https", r)));
    let (scheme, rest) = rest?;
    Some(format!("{scheme}://{}/", rest.strip_suffix("/ws")?))
}
