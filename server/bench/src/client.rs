//! The load generator's side of a connection: connecting, the frames it
//! sends, telling frames apart without parsing them, and plain sequential
//! calls for setting up.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::Result;

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A relay's `data`: an SDP-like offer of about 100 bytes.
pub(crate) const OFFER: &str = r#"{"type":"offer","sdp":"v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"}"#;

/// The answer to [`OFFER`], the same size.
pub(crate) const ANSWER: &str = r#"{"type":"answer","sdp":"v=0\r\no=- 4611731400430051337 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"}"#;

/// An ICE candidate, as trickled after the offer and answer.
pub(crate) const CANDIDATE: &str =
    r#"{"candidate":"candidate:1 1 udp 2122260223 127.0.0.1 40231 typ host generation 0","sdpMid":"0"}"#;

/// Connects with a small read buffer (tungstenite's 128 KiB default would
/// cost the load generator 2.4 GB at 19,000 connections) and no Nagle delay.
pub(crate) async fn connect(url: &str) -> Result<Ws> {
    let config = WebSocketConfig::default().read_buffer_size(4 * 1024);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
    Ok(ws)
}

/// The id of a frame written by this tool or by the server: the text after
/// `"id":` up to the next `,` or `}` (ids here never hold either).
pub(crate) fn frame_id(text: &str) -> Option<&str> {
    let at = text.find("\"id\":")? + 5;
    let rest = &text[at..];
    let end = rest.find([',', '}'])?;
    Some(&rest[..end])
}

/// Whether a frame is a request or notification rather than a response.
pub(crate) fn is_request(text: &str) -> bool {
    text.contains("\"method\"")
}

/// A request frame with a numeric id.
pub(crate) fn request(id: u64, method: &str, params: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#)
}

/// A notification frame.
pub(crate) fn notification(method: &str, params: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","method":"{method}","params":{params}}}"#)
}

/// A result frame answering `id` (raw, as it came).
pub(crate) fn result(id: &str, result: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#)
}

/// A connection making one call at a time, for setting up.
#[derive(Debug)]
pub(crate) struct Caller {
    pub(crate) ws: Ws,
    next_id: u64,
}

impl Caller {
    pub(crate) async fn connect(url: &str) -> Result<Self> {
        Ok(Self { ws: connect(url).await?, next_id: 0 })
    }

    /// Calls `method` and returns its result; skips anything else that
    /// arrives meanwhile (member notifications).
    pub(crate) async fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        self.ws.send(Message::text(request(id, method, &params.to_string()))).await?;
        loop {
            let Some(message) = self.ws.next().await else { return Err(format!("{method}: connection closed").into()) };
            let Message::Text(text) = message? else { continue };
            if is_request(text.as_str()) {
                continue;
            }
            let mut response: Value = serde_json::from_str(text.as_str())?;
            if response["id"] != json!(id) {
                continue;
            }
            if let Some(error) = response.get("error") {
                return Err(format!("{method} failed: {error}").into());
            }
            return Ok(response["result"].take());
        }
    }

    /// `init`, returning the user id.
    pub(crate) async fn init(&mut self) -> Result<String> {
        let id = self.call("init", json!([])).await?;
        Ok(id.as_str().ok_or("init returned no id")?.to_owned())
    }
}

/// A random-looking 32-hex-digit id for the forwarder's frames (which nobody
/// checks), so that they are as long as the server's.
pub(crate) fn fake_id(n: usize) -> String {
    format!("{:032x}", (n as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_id_reads_string_and_number_ids() {
        assert_eq!(frame_id(r#"{"jsonrpc":"2.0","id":"s12","method":"relay","params":[]}"#), Some("\"s12\""));
        assert_eq!(frame_id(r#"{"jsonrpc":"2.0","id":7,"result":{"a":1}}"#), Some("7"));
        assert_eq!(frame_id(r#"{"jsonrpc":"2.0","id":7}"#), Some("7"));
        assert_eq!(frame_id(r#"{"jsonrpc":"2.0","method":"relay"}"#), None);
    }

    #[test]
    fn data_is_sdp_like_and_about_100_bytes() {
        for data in [OFFER, ANSWER, CANDIDATE] {
            assert!((90..=130).contains(&data.len()), "{} bytes", data.len());
            serde_json::from_str::<Value>(data).unwrap();
        }
    }
}
