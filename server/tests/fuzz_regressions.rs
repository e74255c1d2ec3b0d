//! The fuzz target's inputs on stable, at every test run: each file in
//! `server/fuzz/regressions/` (crashes the fuzzer found, and seeds for the
//! paths it should keep reaching) goes through the fuzz harness and, as raw
//! bytes, to a real server over TCP; then a bounded, seeded mutation of
//! them goes through the harness, a small fuzzer for machines without
//! nightly. The long runs are `cargo +nightly fuzz run --fuzz-dir server/fuzz frames`.

#[allow(dead_code, unreachable_pub)]
#[path = "../fuzz/src/lib.rs"]
mod harness;

mod common;

use std::path::PathBuf;

use common::{TestServer, WireClient};
use webrtc_p2p_simple::HubStats;

/// Mutated inputs per run: a few seconds in a debug build.
const MUTATIONS: usize = 3_000;

fn regressions() -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .expect("server/fuzz/regressions")
        .map(|entry| entry.expect("entry").path())
        .map(|path| {
            let bytes = std::fs::read(&path).expect("read");
            (path, bytes)
        })
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 10, "the regression inputs are missing from {}", dir.display());
    inputs
}

#[test]
fn every_regression_input_keeps_the_harness_invariants() {
    for (path, bytes) in regressions() {
        eprintln!("{}", path.display());
        harness::run(&bytes);
    }
}

#[tokio::test]
async fn every_regression_input_leaves_a_real_server_serving() {
    let server = TestServer::start().await;
    for (path, bytes) in regressions() {
        let Some((&mode, rest)) = bytes.split_first() else { continue };
        let mut client = WireClient::connect(server.addr, "").await;
        if mode % 2 == 0 {
            client.send_raw(rest).await;
        } else {
            client.send(true, common::opcode::TEXT, rest).await;
        }
        drop(client);
        let (mut bystander, _) = server.user().await;
        bystander.nothing_pending().await;
        assert!(bystander.ok("create", serde_json::json!([])).await.is_string(), "after {}", path.display());
    }
    server.settles_at(HubStats { users: 0, groups: 0 }).await;
}

/// Tokens that mean something to the decoder or the dispatcher.
const DICTIONARY: &[&[u8]] = &[
    br#"{"jsonrpc":"2.0","#,
    br#""id":1,"#,
    br#""id":"s1","#,
    br#""method":"relay","#,
    br#""method":"join","#,
    br#""params":["$G","$U","#,
    br#""result":"#,
    br#""error":{"code":1,"message":"x"}"#,
    b"null",
    b"[",
    b"]",
    b"{",
    b"}",
    b",",
    b"\"",
    b"\\u0000",
    b"-1e999",
    b"\x81\x85\x00\x00\x00\x00",
    b"\x88\x82\x00\x00\x00\x00\x03\xe8",
    b"\x89\x80\x00\x00\x00\x00",
    b"\x00\x80\x00\x00\x00\x00",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, others: &[(PathBuf, Vec<u8>)]) {
    for _ in 0..=rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(6) {
            0 if !input.is_empty() => {
                let at = at.min(input.len() - 1);
                input[at] ^= 1 << rng.below(8);
            }
            1 => {
                let token = DICTIONARY[rng.below(DICTIONARY.len())];
                input.splice(at..at, token.iter().copied());
            }
            2 => input.truncate(at),
            3 if at < input.len() => {
                let end = (at + rng.below(64)).min(input.len());
                input.drain(at..end);
            }
            4 => {
                let donor = &others[rng.below(others.len())].1;
                let from = rng.below(donor.len());
                let to = (from + rng.below(256)).min(donor.len());
                input.splice(at..at, donor[from..to].iter().copied());
            }
            _ => {
                let byte = rng.next() as u8;
                input.insert(at, byte);
            }
        }
    }
}

#[test]
fn seeded_mutations_of_the_regression_inputs_keep_the_harness_invariants() {
    let seeds = regressions();
    let mut rng = Rng(0x5EED_F00D_CAFE_BABE);
    for n in 0..MUTATIONS {
        let mut input = seeds[n % seeds.len()].1.clone();
        // Deep bombs are slow to copy around; their point is made by the seed.
        input.truncate(8 * 1024);
        mutate(&mut rng, &mut input, &seeds);
        let replay = input.clone();
        let outcome = std::panic::catch_unwind(move || harness::run(&input));
        if outcome.is_err() {
            let path = std::env::temp_dir().join(format!("webrtc-p2p-fuzz-crash-{n}"));
            let _ = std::fs::write(&path, &replay);
            panic!(
                "mutation {n} broke an invariant; input saved to {} (copy it into server/fuzz/regressions/)",
                path.display()
            );
        }
    }
}
