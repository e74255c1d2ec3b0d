//! A Rust program as a group member: [`Client`] calls the server through the
//! `SignalingClient` stubs jsonrpsee generates from `interfaces/`, and answers
//! the `relay` requests the server sends it with the user's implementation of
//! the generated `PeerServer` trait.
//!
//! Underneath is jsonrpsee's stock client (ids, pending calls, timeouts) over
//! a WebSocket transport of ours (`transport`) that hands the server's
//! requests and notifications to the handler. Handlers run concurrently: each
//! one runs up to its first await as its frame is read (so relays from one
//! sender are seen in the order sent) and is spawned if still running, so a
//! slow handler never holds up the socket or the other handlers. A handler
//! must therefore not block the thread before its first await.
//!
//! To share a group with browsers, use [`Member`] instead: it speaks their
//! payloads ([`payload`]), makes WebRTC DataChannels to them and to other
//! Rust members ([`rtc`]) or, built without WebRTC, tells them so that they
//! relay to it at once, and hands their broadcasts and unicasts to a
//! [`MemberHandler`].
//! Messages larger than one relay go in chunks, up to
//! [`MemberBuilder::max_message_bytes`] (64 MiB by default), both ways: on
//! a direct link as DataChannel transfers (`rtc`), otherwise through the
//! server ([`transfer`]). [`Member::broadcast_with`] and
//! [`Member::unicast_with`] report their progress ([`SendOptions`]);
//! dropping a send's future cancels it at both ends, and
//! [`Member::receiving`] watches what is coming in.
//!
//! ```no_run
//! use jsonrpsee::core::{RpcResult, async_trait};
//! use serde_json::value::RawValue;
//! use webrtc_p2p_interfaces::{ErrorCode, GroupId, PeerServer, SignalingClient, UserId};
//! use webrtc_p2p_simple::client::{Client, app_error};
//!
//! /// Answers every relay with the data it was sent.
//! struct Echo;
//!
//! #[async_trait]
//! impl PeerServer for Echo {
//!     async fn on_relay(
//!         &self,
//!         _group_id: GroupId,
//!         _from: UserId,
//!         data: Box<RawValue>,
//!     ) -> RpcResult<Box<RawValue>> {
//!         Ok(data)
//!     }
//!     async fn member_joined(
//!         &self,
//!         _group_id: GroupId,
//!         _user_id: UserId,
//!         _info: Option<serde_json::Value>,
//!     ) -> RpcResult<()> {
//!         Ok(())
//!     }
//!     async fn member_left(&self, _group_id: GroupId, _user_id: UserId) -> RpcResult<()> {
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::connect("ws://127.0.0.1:3001/ws", Echo).await?;
//! let me = client.init(None).await?; // `Some(token)` on a server with an auth secret
//! let group = client.create(None).await?; // others join with this id
//! let ice_servers = client.session().await?.ice_servers; // for a WebRTC stack of your own
//!
//! for peer in client.get_members(group, None).await?.ids().into_iter().filter(|&m| m != me) {
//!     let offer = serde_json::value::to_raw_value(&serde_json::json!({"type": "offer", "sdp": "…"}))?;
//!     let _answer = client.relay(group, peer, offer).await?;
//!     // Fire-and-forget, as ICE candidates are trickled.
//!     client.relay_notification(group, peer, serde_json::json!({"candidate": "…"})).await?;
//! }
//!
//! // Application errors come back as `ErrorCode`s.
//! let error = client.join(GroupId::random()).await.unwrap_err();
//! assert_eq!(app_error(&error), Some(ErrorCode::GroupNotFound));
//!
//! println!("{}", client.close().await);
//! # Ok(())
//! # }
//! ```

mod member;
pub mod rtc;
pub mod transfer;
mod transport;

/// The relay payloads browsers and [`Member`] speak, from the contract.
pub use webrtc_p2p_interfaces::payload;

pub use member::{Member, MemberBuilder, MemberHandler, StartError};
pub use transfer::{Progress, Receiving, SendOptions};

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jsonrpsee::core::client::{
    BatchResponse, Client as RpcClient, ClientBuilder as RpcClientBuilder, ClientT, Error, IdKind,
};
use jsonrpsee::core::params::{ArrayParams, BatchRequestBuilder};
use jsonrpsee::core::traits::ToRpcParams;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use webrtc_p2p_interfaces::{ErrorCode, GroupId, PeerServer, UserId, method};

use crate::Limits;
use transport::{CLOSE_MARKER, Conn};

/// How long a call waits for its answer by default: longer than the server's
/// default relay timeout, so that a relay to a silent peer ends with the
/// server's `RelayTimeout` rather than a local timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(Limits::DEFAULT.relay_timeout.as_secs() + 5);

/// Handlers running at once by default; past it a request is answered `Busy`.
/// As many as the server lets one caller have relays in flight.
pub const DEFAULT_MAX_CONCURRENT_HANDLERS: usize = Limits::DEFAULT.max_relays_in_flight;

/// The application error a call failed with, if it failed with one: the
/// server's own (`GroupNotFound`, `RelayTimeout`, …) or one a peer's handler
/// answered a relay with.
pub fn app_error(error: &Error) -> Option<ErrorCode> {
    match error {
        Error::Call(object) => ErrorCode::of(object),
        _ => None,
    }
}

/// Why a connection ended, as [`Client::closed`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Disconnected {
    /// This side closed it: [`Client::close`], or the client was dropped.
    #[error("closed by this client")]
    Local,
    /// The server closed it with this close frame (code 1005 when the frame
    /// had none): 1001 when it shuts down, 1008 for a timeout or a slow
    /// consumer, 1009 for a message too big.
    #[error("closed by the server: {code} {reason}")]
    Server {
        /// The RFC 6455 close code.
        code: u16,
        /// The close frame's reason text.
        reason: String,
    },
    /// The connection failed, or the server hung up without a close frame.
    #[error("connection failed: {0}")]
    Failed(String),
}

/// Where the connection to the server stands, as
/// [`Client::connection_state`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connected since `connect`.
    Connected,
    /// The connection dropped (or the server's node is stopping and closed
    /// it with 1012) and the client is resuming the session (only once
    /// `session` gave it a ticket). Calls wait meanwhile.
    Reconnecting,
    /// Resumed on a new connection. `replayed: false`: the server could not
    /// send again everything in between, so what the client knows (members)
    /// may be stale; ask again (`get_members`).
    Resumed {
        /// Whether every message in between was sent again.
        replayed: bool,
    },
    /// Over: see [`Client::closed`].
    Closed,
}

/// The connection could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {url}: {source}")]
pub struct ConnectError {
    /// The address that was dialled.
    pub url: String,
    /// What went wrong: the TCP connection, or the WebSocket handshake.
    #[source]
    pub source: tungstenite::Error,
}

/// Settings for [`Client`]s; [`Client::connect`] uses the defaults.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    /// How long a call waits for its answer.
    request_timeout: Duration,
    /// Handlers running at once.
    max_concurrent_handlers: usize,
    /// Largest frame or message accepted from the server.
    max_message_size: usize,
    /// The join token [`Member`] sends with `init`.
    token: Option<String>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_concurrent_handlers: DEFAULT_MAX_CONCURRENT_HANDLERS,
            max_message_size: Limits::DEFAULT.max_message_size,
            token: None,
        }
    }
}

impl ClientBuilder {
    /// How long a call waits for its answer before failing with
    /// `Error::RequestTimeout`. Keep it above the server's relay timeout.
    /// Default [`DEFAULT_REQUEST_TIMEOUT`].
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How many of the handler's methods may run at once; a request past it
    /// is answered `Busy` and a notification past it is dropped. Default
    /// [`DEFAULT_MAX_CONCURRENT_HANDLERS`].
    pub fn max_concurrent_handlers(mut self, max: usize) -> Self {
        self.max_concurrent_handlers = max;
        self
    }

    /// The largest frame or message accepted from the server, in bytes.
    /// Default 1 MiB, the server's own default limit.
    pub fn max_message_size(mut self, max: usize) -> Self {
        self.max_message_size = max;
        self
    }

    /// The join token for a server with an auth secret, which [`Member`]
    /// sends with `init`. A bare [`Client`] calls `init` itself and passes
    /// its token there: `client.init(Some(token))`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Opens a WebSocket to `url` (e.g. `ws://127.0.0.1:3001/ws`) and serves
    /// the server's calls with `handler`. Call `init` next: the server closes
    /// connections that have not initialised within its init timeout.
    pub async fn connect(self, url: &str, handler: impl PeerServer) -> Result<Client, ConnectError> {
        let config = WebSocketConfig::default()
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size));
        // Signaling frames are small and latency-bound: no Nagle delay.
        let (socket, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
            .await
            .map_err(|source| ConnectError { url: url.to_owned(), source })?;
        let (sender, receiver, conn) =
            transport::split(socket, url, config, handler.into_rpc().into(), self.max_concurrent_handlers);
        let rpc = RpcClientBuilder::default()
            .request_timeout(self.request_timeout)
            // The receiver tells jsonrpsee's responses apart by their numeric ids.
            .id_format(IdKind::Number)
            .build_with_tokio(sender, receiver);
        Ok(Client { rpc, conn })
    }
}

/// One connection to the server, as a group member. Every `SignalingClient`
/// method works on it (`init`, `create`, `join`, `leave`, `get_members`,
/// `relay`), as do jsonrpsee's [`ClientT`] methods; a `relay` the server
/// sends is answered by the handler given to [`connect`](Self::connect).
///
/// Dropping it closes the connection cleanly, as [`close`](Self::close) does
/// without waiting.
#[derive(Debug)]
pub struct Client {
    /// jsonrpsee's stock client: ids, pending calls, timeouts.
    rpc: RpcClient,
    /// The connection under it, for closing and watching it.
    conn: Arc<Conn>,
}

impl Client {
    /// Connects with the default settings; see [`ClientBuilder::connect`].
    pub async fn connect(url: &str, handler: impl PeerServer) -> Result<Self, ConnectError> {
        ClientBuilder::default().connect(url, handler).await
    }

    /// Settings other than the defaults.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Sends `data` to `user_id` in `group_id` as a notification: no answer,
    /// no error from the target, and relays from one sender still arrive in
    /// the order sent. This is how ICE candidates are trickled. Resolves once
    /// the frame is queued.
    pub async fn relay_notification(
        &self,
        group_id: GroupId,
        user_id: UserId,
        data: impl Serialize,
    ) -> Result<(), Error> {
        let mut params = ArrayParams::new();
        params.insert(group_id)?;
        params.insert(user_id)?;
        params.insert(data)?;
        self.rpc.notification(method::RELAY, params).await
    }

    /// Resolves with the reason once the connection has ended, however it
    /// ended. The future does not borrow the client, so it can be spawned.
    pub fn closed(&self) -> impl Future<Output = Disconnected> + Send + 'static {
        self.conn.ended()
    }

    /// Where the connection stands, and every change of it. Once the client
    /// has called `session` (and the server resumes sessions), a dropped
    /// connection goes `Reconnecting`, then `Resumed` or `Closed`.
    pub fn connection_state(&self) -> tokio::sync::watch::Receiver<ConnectionState> {
        self.conn.connection_state()
    }

    /// Whether the connection is still open.
    pub fn is_connected(&self) -> bool {
        !self.conn.is_ended() && self.rpc.is_connected()
    }

    /// Closes the connection cleanly: every frame sent before this call is
    /// written, then the close frame, and the server's reply is awaited (at
    /// most a second). Calls still waiting fail; the server removes this user
    /// from its groups. Returns why the connection ended, which is
    /// [`Disconnected::Local`] unless it had ended already.
    pub async fn close(&self) -> Disconnected {
        // Through jsonrpsee's queue, behind everything handed to it before.
        if self.rpc.notification(CLOSE_MARKER, ArrayParams::new()).await.is_err() {
            // jsonrpsee has stopped: nothing is left to flush.
            self.conn.request_close();
        }
        match tokio::time::timeout(2 * Limits::CLOSE_LINGER, self.closed()).await {
            Ok(reason) => reason,
            Err(_) => self.conn.end(Disconnected::Local),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.conn.request_close();
    }
}

impl ClientT for Client {
    /// Sends a notification. `relay` sent this way is forwarded to the target
    /// as a notification; see also [`Client::relay_notification`].
    async fn notification<Params>(&self, method: &str, params: Params) -> Result<(), Error>
    where
        Params: ToRpcParams + Send,
    {
        if method == CLOSE_MARKER {
            return Err(Error::Custom(format!("{method} is reserved")));
        }
        self.rpc.notification(method, params).await
    }

    async fn request<R, Params>(&self, method: &str, params: Params) -> Result<R, Error>
    where
        R: DeserializeOwned,
        Params: ToRpcParams + Send,
    {
        self.rpc.request(method, params).await
    }

    async fn batch_request<'a, R>(&self, batch: BatchRequestBuilder<'a>) -> Result<BatchResponse<'a, R>, Error>
    where
        R: DeserializeOwned + fmt::Debug + 'a,
    {
        self.rpc.batch_request(batch).await
    }
}
