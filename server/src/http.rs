//! The HTTP side: one accepted TCP connection (TLS if configured, HTTP/1.1
//! with a header timeout and upgrades), and the routes: the WebSocket
//! upgrade at `/ws`, `/healthz`, `/metrics`, `/openrpc.json`, and the
//! embedded assets.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::debug;

use webrtc_p2p_simple::{Limit, Limits};

use crate::{App, assets, connection};

/// Read buffer per connection. tungstenite zero-fills its whole read buffer
/// before every read and keeps it for the connection's life, so its 128 KiB
/// default costs memory and time on every idle and busy connection alike.
/// Signaling frames are small (a relay is ~250 bytes, a few per read under
/// load); a larger one grows the buffer to fit and arrives in 512-byte
/// reads. Measured with the bench: 4 KiB -> 512 bytes took 3.5 KiB off each
/// idle connection and ~1 µs of server CPU off each relay round trip.
const READ_BUFFER_SIZE: usize = 512;

/// Frames written into tungstenite's buffer go to the socket once this much
/// is waiting (or at the next flush): bursts of small frames coalesce into
/// one write. tungstenite's own default.
const WRITE_BUFFER_SIZE: usize = 128 * 1024;

/// The longest WebSocket frame header a server writes (no mask).
const MAX_FRAME_HEADER: usize = 10;

/// What a client told to come back later waits, in seconds.
const RETRY_AFTER_SECS: &str = "5";

/// Serves one accepted TCP connection until it closes: the TLS handshake
/// (bounded by the header timeout too), then HTTP/1.1 requests, the last of
/// which may be a WebSocket upgrade.
pub(crate) async fn serve_connection(stream: TcpStream, app: App, router: Router, tls: Option<TlsAcceptor>) {
    // Signaling frames are small and latency matters more than packet count;
    // the writer already coalesces bursts into one flush.
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = tls else {
        return serve_http(stream, app, router).await;
    };
    let shutdown = app.shutdown.clone();
    let handshake = tokio::time::timeout(app.hub.limits().header_timeout, acceptor.accept(stream));
    let stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return debug!(error = %e, "TLS handshake failed"),
            Err(_) => return app.metrics.refused(Limit::HeaderTimeout),
        },
        () = crate::stopping(shutdown) => return,
    };
    serve_http(stream, app, router).await;
}

async fn serve_http<Io>(io: Io, app: App, router: Router)
where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    // The header timeout needs hyper's timer; it runs from the moment hyper
    // starts waiting for a request head (so also on an idle keep-alive
    // connection) until the head is complete.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(app.hub.limits().header_timeout)
        .max_buf_size(Limits::MAX_REQUEST_HEAD);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(router)).with_upgrades();
    tokio::pin!(conn);
    let shutdown = app.shutdown.clone();
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = crate::stopping(shutdown) => {
            // A request in progress is answered; an idle connection closes.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            app.metrics.refused(Limit::HeaderTimeout);
        }
        debug!(error = %e, "HTTP connection ended with an error");
    }
}

pub(crate) fn router(app: App) -> Router {
    Router::new()
        .route(webrtc_p2p_interfaces::WS_PATH, get(upgrade))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/openrpc.json", get(openrpc))
        .with_state(app)
        .merge(assets::router())
}

/// The WebSocket upgrade, done here rather than by axum's `WebSocketUpgrade`
/// so that the connection owns the raw stream under tungstenite: its closing
/// handshake shuts down the write side and drains what the client still
/// sends (axum's socket has no way to reach it).
async fn upgrade(State(app): State<App>, mut request: Request) -> Response {
    let Some(key) = websocket_key(request.method(), request.headers()).cloned() else {
        return (StatusCode::BAD_REQUEST, "not a WebSocket upgrade request\n").into_response();
    };
    if !app.origins.allows(request.headers().get(header::ORIGIN)) {
        app.metrics.refused(Limit::Origin);
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    if app.memory.is_spent() {
        app.metrics.refused(Limit::Memory);
        let retry = [(header::RETRY_AFTER, RETRY_AFTER_SECS)];
        return (StatusCode::SERVICE_UNAVAILABLE, retry, "server memory budget spent\n").into_response();
    }
    let Some(slot) = app.metrics.open_connection(app.hub.limits().max_connections) else {
        app.metrics.refused(Limit::Connections);
        let retry = [(header::RETRY_AFTER, RETRY_AFTER_SECS)];
        return (StatusCode::SERVICE_UNAVAILABLE, retry, "too many connections\n").into_response();
    };
    tokio::spawn(connection::serve(hyper::upgrade::on(&mut request), app, slot));
    let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes())).unwrap_or(HeaderValue::from_static(""));
    let headers = [
        (header::CONNECTION, HeaderValue::from_static("upgrade")),
        (header::UPGRADE, HeaderValue::from_static("websocket")),
        (header::SEC_WEBSOCKET_ACCEPT, accept),
    ];
    (StatusCode::SWITCHING_PROTOCOLS, headers).into_response()
}

/// The client's `Sec-WebSocket-Key` when the request is a valid RFC 6455
/// upgrade (the checks axum's extractor makes).
fn websocket_key<'a>(method: &Method, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
    let contains = |name: HeaderName, token: &str| {
        headers.get(name).and_then(|v| v.to_str().ok()).is_some_and(|v| v.to_ascii_lowercase().contains(token))
    };
    let equals = |name: HeaderName, value: &str| {
        headers.get(name).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
    };
    let valid = method == Method::GET
        && contains(header::CONNECTION, "upgrade")
        && equals(header::UPGRADE, "websocket")
        && equals(header::SEC_WEBSOCKET_VERSION, "13");
    valid.then(|| headers.get(header::SEC_WEBSOCKET_KEY)).flatten()
}

/// tungstenite's limits for one connection. permessage-deflate stays off
/// (never negotiated), so no small frame can inflate past the size limit:
/// what is read is what is counted. The write buffer holds at most one
/// whole frame past its flush threshold; past that a pong the client asked
/// for waits in tungstenite's single pending slot (a newer ping replaces
/// it), so pings from a client that never reads cost nothing more.
pub(crate) fn websocket_config(max: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_SIZE)
        .write_buffer_size(WRITE_BUFFER_SIZE)
        .max_write_buffer_size(WRITE_BUFFER_SIZE + max + MAX_FRAME_HEADER)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

async fn metrics(State(app): State<App>) -> Response {
    let body = app.metrics.render(app.hub.stats(), app.hub.relays_in_flight(), app.memory.used());
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

/// `GET /openrpc.json`: the protocol's OpenRPC document, readable from any origin.
async fn openrpc() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json"), (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
        webrtc_p2p_interfaces::OPENRPC,
    )
}
