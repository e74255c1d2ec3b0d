//! A command-line group member with direct links: WebRTC DataChannels to the
//! browsers and other Rust members of its group, the server's relay where
//! P2P fails. It reads one command per line on stdin and prints one line
//! per event, so it works in a terminal and in scripts.
//!
//! ```text
//! cargo run --release -p webrtc-p2p-server &
//! cargo run -p webrtc-p2p-simple --example peer -- --url ws://127.0.0.1:3001/ws
//! ```
//!
//! Commands: `create [capability]`, `join <group>`, `members`, `links`,
//! `send <text>` (broadcast), `ask <member> <text>` (unicast; the reply is
//! printed when it comes), `leave`, `quit` (or end of input).
//!
//! Events, one per line (with `--json`, one JSON object per line with an
//! `event` field and the same words): `id <me>`, `created <group>`,
//! `joined <group>`, `left <group>`, `members <id>…` (the owner first),
//! `links <id>=<state>…`, `link <id> <state>` (a link changed:
//! `connecting`, `direct`, `relayed` or `closed`), `member-joined <id>`,
//! `member-left <id>`, `broadcast <from> <text>`, `unicast <from> <text>`,
//! `sent`, `reply <from> <text>`, `error <message>`, `bye`. Bytes show as
//! `<N bytes>`. Unicasts are answered with what they carried, or with
//! `--reply <text>`.

use std::io::Write as _;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use jsonrpsee::types::ErrorObjectOwned;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use webrtc_p2p_interfaces::{Capability, GroupId, UserId};
use webrtc_p2p_simple::client::payload::Body;
use webrtc_p2p_simple::client::rtc::{LinkState, RtcConfig};
use webrtc_p2p_simple::client::{Member, MemberHandler};

/// A group member on the command line: commands on stdin, events on stdout.
#[derive(Debug, Parser)]
struct Args {
    /// The server's WebSocket endpoint.
    #[arg(long, env = "WEBRTC_P2P_URL", default_value = "ws://127.0.0.1:3001/ws")]
    url: String,
    /// A group to join at start.
    #[arg(long)]
    group: Option<GroupId>,
    /// Print events as JSON lines.
    #[arg(long)]
    json: bool,
    /// Answer unicasts with this text instead of what they carried.
    #[arg(long)]
    reply: Option<String>,
    /// Speak no WebRTC: every link is relayed through the server.
    #[arg(long)]
    no_webrtc: bool,
    /// How long a link may stay `connecting` before it is relayed.
    #[arg(long, env = "WEBRTC_P2P_CONNECT_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    connect_timeout: Duration,
    /// Host candidate addresses (repeat the flag); default: the machine's.
    #[arg(long = "ice-address", env = "WEBRTC_P2P_ICE_ADDRESSES", value_delimiter = ',')]
    ice_addresses: Vec<IpAddr>,
    /// Exchange no ICE candidates (a test hook: every link ends up relayed).
    #[arg(long)]
    block_candidates: bool,
}

/// Writes events, one line each.
#[derive(Debug, Clone, Copy)]
struct Out {
    json: bool,
}

impl Out {
    /// One event: its words for the text form, its fields for JSON.
    fn event(self, event: &str, words: &[&str], fields: serde_json::Value) {
        let line = if self.json {
            let mut object = json!({ "event": event });
            if let (Some(object), serde_json::Value::Object(fields)) = (object.as_object_mut(), fields) {
                object.extend(fields);
            }
            object.to_string()
        } else {
            std::iter::once(event).chain(words.iter().copied()).collect::<Vec<_>>().join(" ")
        };
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }

    fn error(self, message: impl std::fmt::Display) {
        let message = message.to_string();
        self.event("error", &[&message], json!({ "message": message }));
    }

    /// `broadcast`, `unicast` and `reply`: who, and what.
    fn message(self, event: &str, from: UserId, body: &Body) {
        let from = from.to_string();
        let (shown, field) = match body {
            Body::Text(text) => (text.clone(), json!({ "from": from, "text": text })),
            Body::Bytes(bytes) => (format!("<{} bytes>", bytes.len()), json!({ "from": from, "bytes": bytes.len() })),
        };
        self.event(event, &[&from, &shown], field);
    }
}

/// Prints what arrives and answers unicasts.
#[derive(Debug)]
struct Printer {
    out: Out,
    reply: Option<String>,
}

impl MemberHandler for Printer {
    fn on_broadcast(&self, _group_id: GroupId, from: UserId, body: Body) {
        self.out.message("broadcast", from, &body);
    }

    async fn on_unicast(&self, _group_id: GroupId, from: UserId, body: Body) -> Result<Body, ErrorObjectOwned> {
        self.out.message("unicast", from, &body);
        Ok(self.reply.clone().map_or(body, Body::Text))
    }

    fn on_member_joined(&self, _group_id: GroupId, member: UserId) {
        let member = member.to_string();
        self.out.event("member-joined", &[&member], json!({ "member": member }));
    }

    fn on_member_left(&self, _group_id: GroupId, member: UserId) {
        let member = member.to_string();
        self.out.event("member-left", &[&member], json!({ "member": member }));
    }

    fn on_link_state(&self, _group_id: GroupId, member: UserId, state: LinkState) {
        let (member, state) = (member.to_string(), state.to_string());
        self.out.event("link", &[&member, &state], json!({ "member": member, "state": state }));
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let out = Out { json: args.json };
    let mut builder = Member::builder().rtc(RtcConfig {
        connect_timeout: args.connect_timeout,
        host_addresses: (!args.ice_addresses.is_empty()).then_some(args.ice_addresses),
        block_candidates: args.block_candidates,
        ..RtcConfig::default()
    });
    if args.no_webrtc {
        builder = builder.no_webrtc();
    }
    let member = Arc::new(builder.connect(&args.url, Printer { out, reply: args.reply }).await?);
    let id = member.id().to_string();
    out.event("id", &[&id], json!({ "id": id }));
    // The group this peer is in, for the commands that need one.
    let group: Arc<Mutex<Option<GroupId>>> = Arc::default();
    if let Some(id) = args.group {
        command(&member, &group, out, &format!("join {id}")).await;
    }

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let closed = member.closed();
    tokio::pin!(closed);
    loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(line) if line.trim() == "quit" => break,
                Some(line) => command(&member, &group, out, line.trim()).await,
                None => break,
            },
            reason = &mut closed => return Err(format!("the connection ended: {reason}").into()),
        }
    }
    member.close().await;
    out.event("bye", &[], json!({}));
    Ok(())
}

/// Runs one command line, printing its outcome.
async fn command(member: &Arc<Member>, current: &Arc<Mutex<Option<GroupId>>>, out: Out, line: &str) {
    let (verb, rest) = line.split_once(' ').map_or((line, ""), |(verb, rest)| (verb, rest.trim()));
    let group = *current.lock().unwrap_or_else(|e| e.into_inner());
    let set = |group: Option<GroupId>| *current.lock().unwrap_or_else(|e| e.into_inner()) = group;
    match (verb, group) {
        ("", _) => {}
        ("create" | "join", Some(group)) => out.error(format!("already in {group}: leave first")),
        ("create", None) => {
            let capability = match rest {
                "" => None,
                bits => match bits.parse().ok().and_then(Capability::from_bits) {
                    Some(capability) => Some(capability),
                    None => return out.error(format!("not a capability: {bits}")),
                },
            };
            match member.create(capability).await {
                Ok(group) => {
                    set(Some(group));
                    let group = group.to_string();
                    out.event("created", &[&group], json!({ "group": group }));
                }
                Err(e) => out.error(e),
            }
        }
        ("join", None) => match rest.parse::<GroupId>() {
            Ok(group) => match member.join(group).await {
                Ok(()) => {
                    set(Some(group));
                    let group = group.to_string();
                    out.event("joined", &[&group], json!({ "group": group }));
                }
                Err(e) => out.error(e),
            },
            Err(_) => out.error(format!("not a group id: {rest}")),
        },
        (_, None) => out.error("not in a group: create or join one first"),
        ("members", Some(group)) => {
            let members: Vec<String> = member.members(group).await.iter().map(UserId::to_string).collect();
            let words: Vec<&str> = members.iter().map(String::as_str).collect();
            out.event("members", &words, json!({ "members": members }));
        }
        ("links", Some(group)) => {
            let mut links = Vec::new();
            for other in member.members(group).await.into_iter().filter(|&m| m != member.id()) {
                links.push((other.to_string(), member.link_state(group, other).await.to_string()));
            }
            let words: Vec<String> = links.iter().map(|(m, s)| format!("{m}={s}")).collect();
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            out.event(
                "links",
                &words,
                json!({ "links": links.into_iter().map(|(m, s)| (m, s.into())).collect::<serde_json::Map<_, _>>() }),
            );
        }
        ("send", Some(group)) => match member.broadcast(group, rest).await {
            Ok(()) => out.event("sent", &[], json!({})),
            Err(e) => out.error(e),
        },
        ("ask", Some(group)) => {
            let (target, text) = rest.split_once(' ').unwrap_or((rest, ""));
            let Ok(target) = target.parse::<UserId>() else { return out.error(format!("not a user id: {target}")) };
            let (member, text) = (member.clone(), text.to_owned());
            // The reply is printed when it comes; other commands go on meanwhile.
            tokio::spawn(async move {
                match member.unicast(group, target, text).await {
                    Ok(reply) => out.message("reply", target, &reply),
                    Err(e) => out.error(e),
                }
            });
        }
        ("leave", Some(group)) => {
            let left = member.leave(group).await;
            set(None);
            match left {
                Ok(()) => {
                    let group = group.to_string();
                    out.event("left", &[&group], json!({ "group": group }));
                }
                Err(e) => out.error(e),
            }
        }
        (verb, Some(_)) => out.error(format!("unknown command: {verb}")),
    }
}
