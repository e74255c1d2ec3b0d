//! What one client can make the server hold or do, and what it hears when
//! the server has had enough: memory bounded in bytes whatever a client
//! sends or leaves unread, the close frame heard after every close the
//! server starts, and fan-out charged to whoever causes it.
//!
//! Memory is measured as the server binary's resident set (`VmRSS` from
//! `/proc/PID/status`), so these clients' own memory is not in it.

mod common;

use std::time::{Duration, Instant};

use common::{WireClient, opcode};

/// How long any attack below may run at most, whatever its count says.
const ATTACK_TIME: Duration = Duration::from_secs(5);

/// A client-side masking key (clients must mask; its value is irrelevant).
const MASK: Option<[u8; 4]> = Some([1, 2, 3, 4]);

fn text_frame(payload: &[u8]) -> Vec<u8> {
    WireClient::encode(true, 0, opcode::TEXT, MASK, payload)
}

/// Finding 7: after a 1009 the answers already queued and the close frame
/// reach the client, rather than a TCP reset that destroys them. Each trial
/// queues ~50 KB of answers, then sends one frame over the 1 MiB limit
/// (what conformance suites send) before reading anything.
#[tokio::test]
async fn answers_and_the_close_frame_survive_a_1009_in_100_of_100_trials() {
    let (_server, addr) = common::spawn_binary(&[]).await;
    const ANSWERS: usize = 50;
    let id = "x".repeat(1000);
    let mut requests = Vec::new();
    for n in 0..ANSWERS {
        let request = format!(r#"{{"jsonrpc":"2.0","id":"{id}{n}","method":"no_such_method"}}"#);
        requests.extend(text_frame(request.as_bytes()));
    }
    requests.extend(text_frame(&vec![b' '; (1 << 20) + 100_000]));
    let started = Instant::now();
    let mut lost = Vec::new();
    for trial in 0..100 {
        assert!(started.elapsed() < Duration::from_secs(60), "100 trials take too long");
        let mut client = WireClient::connect(addr, "").await;
        client.send_raw(&requests).await;
        let mut answers = 0;
        let code = loop {
            match client.frame().await {
                Some(frame) if frame.opcode == opcode::TEXT => answers += 1,
                Some(frame) if frame.opcode == opcode::CLOSE => {
                    break Some(u16::from_be_bytes([frame.payload[0], frame.payload[1]]));
                }
                Some(_) => {}
                None => break None,
            }
        };
        if answers != ANSWERS || code != Some(1009) {
            lost.push((trial, answers, code));
        }
    }
    assert!(lost.is_empty(), "trials that lost answers or the close frame (trial, answers, code): {lost:?}");
}
