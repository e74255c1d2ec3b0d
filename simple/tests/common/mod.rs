//! What the client tests share: a real server in the test's process.
// Each test binary compiles this module and uses what it needs of it.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use webrtc_p2p_server::{Config, Server};
use webrtc_p2p_simple::client::Progress;

/// A mebibyte.
pub const MIB: usize = 1024 * 1024;

/// Checks a send's progress reports: each further than the one before, all
/// with the same `total`, the last at it.
pub fn assert_progress_to(reports: &[Progress], total: u64) {
    assert!(!reports.is_empty(), "no progress reported");
    assert!(reports.iter().all(|p| p.total == total), "a total other than {total}: {reports:?}");
    assert!(reports.windows(2).all(|w| w[0].sent < w[1].sent), "not monotonic: {reports:?}");
    assert_eq!(reports.last().map(|p| p.sent), Some(total), "did not end at the total: {reports:?}");
}

/// A real server on 127.0.0.1:0, stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    /// Its WebSocket endpoint, `ws://addr/ws`.
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    /// Starts one with these flags besides `--listen 127.0.0.1:0`.
    pub async fn start(flags: &[&str]) -> Self {
        let config = Config::from_flags(["--listen", "127.0.0.1:0"].iter().chain(flags)).expect("flags");
        let server = Server::bind(config).await.expect("bind");
        let addr = server.local_addr().expect("bound address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        Self { addr, url: format!("ws://{addr}/ws"), stop: Some(stop), task }
    }

    /// Starts a graceful shutdown (every connection gets 1001).
    pub fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// The relay requests the server has seen, from its `/metrics`.
    pub async fn relays(&self) -> u64 {
        let mut stream = TcpStream::connect(self.addr).await.expect("connect to /metrics");
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.addr);
        stream.write_all(request.as_bytes()).await.expect("request /metrics");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read /metrics");
        let counts: Vec<u64> = response
            .lines()
            .filter(|line| line.starts_with("webrtc_p2p_relays_total{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
            .collect();
        assert!(!counts.is_empty(), "no webrtc_p2p_relays_total in /metrics:\n{response}");
        counts.iter().sum()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
