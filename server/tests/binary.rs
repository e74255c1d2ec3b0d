//! The `webrtc-p2p-server` binary as a user runs it: the address line on
//! stdout, `/healthz`, SIGTERM, and the README's flags table.

mod common;

use std::process::Stdio;

use common::Raw;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_webrtc-p2p-server");

/// Starts the binary on a free port and returns it with its address.
async fn spawn(flags: &[&str]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the server");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    let mut stdout = BufReader::new(stdout);
    tokio::time::timeout(common::PATIENCE, stdout.read_line(&mut line))
        .await
        .expect("address in time")
        .expect("read stdout");
    let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected: {line:?}")).to_owned();
    (child, addr)
}

async fn http_get(addr: &str, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

#[tokio::test]
async fn the_binary_prints_its_address_serves_healthz_and_closes_with_1001_on_sigterm() {
    let (mut child, addr) = spawn(&[]).await;
    let health = http_get(&addr, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("ok\n"), "{health}");

    let mut client = Raw::connect(&format!("ws://{addr}/ws")).await;
    client.ok("init", json!([])).await;
    let pid = child.id().expect("pid").to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill");
    assert!(killed.success());
    assert_eq!(client.closed().await, (Some(1001), "server shutting down".into()));
    let status = tokio::time::timeout(common::PATIENCE, child.wait()).await.expect("exit in time").expect("wait");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn readme_lists_every_flag_with_its_environment_variable_and_default() {
    let help = Command::new(BIN).arg("--help").output().await.expect("--help");
    let help = String::from_utf8(help.stdout).expect("utf-8");
    let readme = include_str!("../../README.md");
    let mut flags = 0;
    // clap's long help: `--flag <VALUE>`, later `[env: NAME=]`, `[default: V]`.
    for block in help.split("\n      --").skip(1) {
        let flag = block.split_whitespace().next().expect("flag name");
        if matches!(flag, "help" | "version") {
            continue;
        }
        let field = |key: &str| block.split(&format!("[{key}: ")).nth(1).and_then(|r| r.split(']').next());
        let env = field("env").map(|e| e.trim_end_matches('=')).unwrap_or_else(|| panic!("--{flag} has no env twin"));
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `--{flag}` |")))
            .unwrap_or_else(|| panic!("README's flags table lacks --{flag}"));
        assert!(row.contains(&format!("`{env}`")), "README row for --{flag} lacks {env}: {row}");
        if let Some(default) = field("default") {
            assert!(row.contains(&format!("`{default}`")), "README row for --{flag} lacks default {default}: {row}");
        }
        flags += 1;
    }
    assert!(flags >= 12, "parsed only {flags} flags from --help");
}
