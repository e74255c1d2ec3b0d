//! The baseline: a bare WebSocket forwarder, as anyone would write it with
//! tokio-tungstenite. It pairs the two connections that ask for the same
//! `?pair=K`, splits each into its read and write halves, and runs one task
//! per direction that copies every data frame with its own `send` (write and
//! flush), parsing nothing. Same WebSocket library, read buffer size and TCP
//! settings as the server, so the difference is what the server does on top.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::Result;

/// The server's read buffer (server/src/http.rs): tungstenite zero-fills
/// its whole read buffer before each read, so a larger one would make this
/// baseline pay for something the server does not.
const READ_BUFFER_SIZE: usize = 512;

type Waiting = Arc<Mutex<HashMap<String, WebSocketStream<TcpStream>>>>;

/// Serves until killed.
pub(crate) async fn serve(listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let waiting = Waiting::default();
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(connection(stream, waiting.clone()));
    }
}

async fn connection(stream: TcpStream, waiting: Waiting) {
    let _ = stream.set_nodelay(true);
    let mut key = String::new();
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_SIZE);
    // The callback's signature is tungstenite's, large error type included.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        key = request.uri().query().unwrap_or_default().to_owned();
        Ok(response)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await else {
        return;
    };
    let other = {
        let mut waiting = waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match waiting.remove(&key) {
            Some(other) => other,
            None => {
                waiting.insert(key, ws);
                return;
            }
        }
    };
    let (a_tx, a_rx) = ws.split();
    let (b_tx, b_rx) = other.split();
    tokio::spawn(copy(a_rx, b_tx));
    tokio::spawn(copy(b_rx, a_tx));
}

async fn copy(
    mut from: impl Stream<Item = Result<Message, WsError>> + Unpin,
    mut to: impl Sink<Message, Error = WsError> + Unpin,
) {
    while let Some(Ok(message)) = from.next().await {
        match message {
            Message::Text(_) | Message::Binary(_) => {
                if to.send(message).await.is_err() {
                    break;
                }
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
    let _ = to.close().await;
}
