//! `--tls-cert`/`--tls-key`: the same server over `wss://` and `https://`,
//! with a self-signed certificate made here.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{PATIENCE, TestServer, metric};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};
use tokio_tungstenite::tungstenite::Message;

/// A certificate for `localhost` and its key as PEM files, and the
/// certificate for the client's trust store.
struct SelfSigned {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    der: Vec<u8>,
}

/// DER as a PEM block (RFC 7468: base64 in lines of 64).
fn pem(label: &str, der: &[u8]) -> String {
    let base64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> =
        base64.as_bytes().chunks(64).map(|line| std::str::from_utf8(line).expect("base64 is ASCII")).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

impl SelfSigned {
    fn new(name: &str) -> Self {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
        let dir = std::env::temp_dir().join(format!("webrtc-p2p-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, pem("CERTIFICATE", made.cert.der())).expect("write cert");
        std::fs::write(&key, pem("PRIVATE KEY", &made.signing_key.serialize_der())).expect("write key");
        Self { dir, cert, key, der: made.cert.der().to_vec() }
    }

    fn flags(&self) -> [String; 4] {
        let path = |p: &PathBuf| p.to_str().expect("utf-8 path").to_owned();
        ["--tls-cert".into(), path(&self.cert), "--tls-key".into(), path(&self.key)]
    }

    async fn connect(&self, server: &TestServer) -> TlsStream<TcpStream> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone().into()).expect("trust the certificate");
        let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(server.addr).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("name");
        TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("TLS handshake")
    }
}

impl Drop for SelfSigned {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn tls_server(cert: &SelfSigned, extra: &[&str]) -> TestServer {
    let flags = cert.flags();
    let mut all: Vec<&str> = flags.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    TestServer::with_flags(&all).await
}

#[tokio::test]
async fn with_a_certificate_the_server_speaks_wss_and_https_only() {
    let cert = SelfSigned::new("serve");
    let server = tls_server(&cert, &[]).await;

    // https://
    let mut https = cert.connect(&server).await;
    https.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(PATIENCE, https.read_to_string(&mut response)).await.expect("in time").unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok\n"), "{response}");

    // wss://
    let tls = cert.connect(&server).await;
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/ws", tls).await.expect("upgrade");
    ws.send(Message::text(r#"{"jsonrpc":"2.0","id":1,"method":"init"}"#)).await.unwrap();
    let answer = tokio::time::timeout(PATIENCE, ws.next()).await.expect("in time").expect("a frame").unwrap();
    let answer: serde_json::Value = serde_json::from_str(answer.to_text().unwrap()).unwrap();
    assert_eq!(answer["result"].as_str().map(str::len), Some(32), "{answer}");
    assert_eq!(server.hub.stats().users, 1);

    // Plain ws:// on the TLS port is refused, and harms nobody.
    assert!(tokio_tungstenite::connect_async(server.url()).await.is_err());
    ws.send(Message::text(r#"{"jsonrpc":"2.0","id":2,"method":"nope"}"#)).await.unwrap();
    let answer = tokio::time::timeout(PATIENCE, ws.next()).await.expect("in time").expect("a frame").unwrap();
    assert!(answer.to_text().unwrap().contains("-32601"), "{answer}");
}

#[tokio::test]
async fn a_tls_handshake_never_finished_is_closed_within_the_header_timeout() {
    let cert = SelfSigned::new("slow");
    let server = tls_server(&cert, &["--header-timeout", "300ms"]).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    let mut sink = [0u8; 64];
    while !matches!(
        tokio::time::timeout(PATIENCE, silent.read(&mut sink)).await.expect("closed in time"),
        Ok(0) | Err(_)
    ) {}
    assert!(started.elapsed() < Duration::from_secs(3), "closed after {:?}", started.elapsed());
    // The scrape itself is over TLS.
    let mut https = cert.connect(&server).await;
    https.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut scraped = String::new();
    https.read_to_string(&mut scraped).await.unwrap();
    assert_eq!(metric(&scraped, "webrtc_p2p_refused_total{limit=\"header_timeout\"}"), Some(1.0), "{scraped}");
}

#[tokio::test]
async fn unreadable_certificate_files_stop_the_server_from_starting() {
    let cert = SelfSigned::new("bad");
    std::fs::write(&cert.key, "not a key").unwrap();
    // Port 0: the default port may be taken (a server running beside the tests),
    // and the bind must not be what fails.
    let flags = cert.flags().into_iter().chain(["--listen".into(), "127.0.0.1:0".into()]);
    let config = webrtc_p2p_server::Config::from_flags(flags).unwrap();
    let error = webrtc_p2p_server::Server::bind(config).await.expect_err("a bad key");
    assert!(error.to_string().contains("private key"), "{error}");
}
