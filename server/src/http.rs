//! The HTTP side: the WebSocket upgrade at `/ws`, `/healthz`, and the
//! embedded assets.

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;
use axum::routing::get;

use crate::{App, assets, connection};

/// Read buffer per connection. tungstenite zero-fills its whole read buffer
/// before every read and keeps it for the connection's life, so its 128 KiB
/// default costs memory and time on every idle and busy connection alike;
/// signaling frames are small, and larger ones still arrive (in more reads).
const READ_BUFFER_SIZE: usize = 4 * 1024;

pub(crate) fn router(app: App) -> Router {
    Router::new()
        .route(webrtc_p2p_interfaces::WS_PATH, get(upgrade))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(app)
        .merge(assets::router())
}

async fn upgrade(State(app): State<App>, ws: WebSocketUpgrade) -> Response {
    let max = app.config.max_message_size;
    ws.read_buffer_size(READ_BUFFER_SIZE)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| connection::serve(socket, app))
}
