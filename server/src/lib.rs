//! webrtc-p2p's server: JSON-RPC 2.0 over WebSocket, relaying in both
//! directions, with the demo page and the client bundle embedded.
//!
//! # Layout
//! - `config`: `Config`, every flag and its environment variable.
//! - `http`: the HTTP routes: `/ws` upgrade, `/healthz`, the embedded assets.
//! - `connection`: one WebSocket: read loop, writer, cleanup.
//! - `assets`: the embedded demo page and client bundle.
//! - here: `Server` (bind, serve, graceful shutdown) and `App`, the state
//!   every connection shares.
//!
//! The group logic (`Hub`) and the JSON-RPC framing live in
//! `webrtc-p2p-simple`; the contract in `webrtc-p2p-interfaces`.

mod assets;
pub mod config;
mod connection;
mod http;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jsonrpsee::core::server::{ConnectionId, Methods};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};
use webrtc_p2p_interfaces::SignalingServer;
use webrtc_p2p_simple::Hub;

pub use config::{Config, LogFormat};
pub use webrtc_p2p_simple::HubStats;

/// How long shutdown waits for connections to send their close frames.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What every connection shares; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct App {
    /// Users and groups.
    pub(crate) hub: Hub,
    /// The `Signaling` method table jsonrpsee generated, bound to `hub`.
    pub(crate) methods: Methods,
    /// Flips to `true` once, when the server shuts down; every connection
    /// holds a receiver, which is how shutdown knows when all are closed.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Source of connection ids (logs and jsonrpsee's `ConnectionId`).
    next_connection: Arc<AtomicUsize>,
    /// The configuration the server runs with.
    pub(crate) config: Arc<Config>,
}

impl App {
    pub(crate) fn next_connection_id(&self) -> ConnectionId {
        ConnectionId(self.next_connection.fetch_add(1, Ordering::Relaxed))
    }
}

/// A bound server, ready to serve.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    app: App,
    shutdown: watch::Sender<bool>,
}

impl Server {
    /// Binds `config.listen`.
    pub async fn bind(config: Config) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        Ok(Self::from_listener(listener, config))
    }

    /// Serves on an already bound listener.
    pub fn from_listener(listener: TcpListener, config: Config) -> Self {
        let hub = Hub::new(config.limits());
        let methods = hub.clone().into_rpc().into();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let app =
            App { hub, methods, shutdown: shutdown_rx, next_connection: Arc::default(), config: Arc::new(config) };
        Self { listener, app, shutdown }
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle on the users and groups, for stats.
    pub fn hub(&self) -> Hub {
        self.app.hub.clone()
    }

    /// Serves until `signal` resolves, then closes every connection with
    /// 1001 and returns once they are closed (or the grace time is over).
    pub async fn serve(self, signal: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let Self { listener, app, shutdown } = self;
        let router = http::router(app.clone());
        let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
        let stop = async move {
            signal.await;
            let _ = stopped_tx.send(());
        };
        axum::serve(listener, router).with_graceful_shutdown(stop).await?;
        let _ = stopped_rx.await;
        info!("shutting down: closing connections");
        drop(app);
        let _ = shutdown.send(true);
        if tokio::time::timeout(SHUTDOWN_GRACE, shutdown.closed()).await.is_err() {
            warn!(open = shutdown.receiver_count(), "connections still open after the grace time");
        }
        Ok(())
    }
}
