//! webrtc-p2p's server: JSON-RPC 2.0 over WebSocket, relaying in both
//! directions, with the demo page and the client bundle embedded.
//!
//! # Layout
//! - `config`: `Config`, every flag and its environment variable.
//! - `http`: one TCP connection (TLS, HTTP/1.1 with a header timeout) and
//!   the routes: `/ws` upgrade (origin and connection cap checked),
//!   `/healthz`, `/metrics`, the embedded assets.
//! - `connection`: one WebSocket, served by one task that reads (each frame
//!   handed to simple's `Dispatch`), writes the connection's queue and
//!   pings, then cleans up on every exit path.
//! - `stream`: `Io`, the connection under tungstenite: follows the frames
//!   read (when tungstenite's buffers may be rebuilt small) and charges the
//!   memory budget.
//! - `cluster`: `NodeRouter`, the router the server runs with: in memory
//!   (the default), or `RedisRouter` with `--redis`, which makes the nodes
//!   sharing one Redis one service (groups, relays and notifications span
//!   nodes).
//! - `metrics`: the Prometheus figures behind `/metrics`, fed through
//!   simple's `Observer`.
//! - `origin`: the `--allowed-origin` policy.
//! - `tls`: the rustls acceptor for `--tls-cert`/`--tls-key`.
//! - `assets`: the embedded demo page and client bundle.
//! - here: `Server` (bind, accept loop, graceful shutdown) and `App`, the
//!   state every connection shares.
//!
//! The group logic (`Hub` over a `Router`), the dispatch, the JSON-RPC
//! framing and every limit (`Limits`) live in `webrtc-p2p-simple`; the
//! contract in `webrtc-p2p-interfaces`.
//!
//! # Example
//!
//! The server inside your own tokio program: flags as on the command line,
//! a port the OS picks, and your own shutdown signal (the binary uses
//! SIGTERM/SIGINT).
//!
//! ```
//! use webrtc_p2p_server::{Config, HubStats, Server};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let config = Config::from_flags(["--listen", "127.0.0.1:0", "--max-members-per-group", "16"])
//!     .expect("valid flags");
//! let server = Server::bind(config).await?;
//! println!("clients connect to ws://{}/ws", server.local_addr()?);
//! let hub = server.hub();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let serving = tokio::spawn(server.serve(async {
//!     let _ = stopped.await;
//! }));
//!
//! assert_eq!(hub.stats(), HubStats { users: 0, groups: 0 });
//! let _ = stop.send(());
//! serving.await.expect("the server task")?;
//! # Ok(())
//! # }
//! ```

mod assets;
pub mod cluster;
pub mod config;
mod connection;
mod http;
mod metrics;
mod origin;
mod stream;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jsonrpsee::core::server::{ConnectionId, Methods};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};
use webrtc_p2p_interfaces::SignalingServer;
use webrtc_p2p_simple::{Hub, Limits, LocalRouter, MemoryBudget, ResumeKey};

use crate::cluster::{NodeRouter, RedisRouter};

pub use config::{Config, LogFormat};
pub use webrtc_p2p_simple::HubStats;

/// Pause after a failed accept (typically out of file descriptors), so the
/// loop does not spin while connections close and free some.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What every connection shares: one pointer, so that each connection's
/// task keeps 8 bytes of it rather than a copy of every field (its task is
/// resident memory on idle connections too).
#[derive(Debug, Clone)]
pub(crate) struct App(Arc<Shared>);

impl std::ops::Deref for App {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`App`] points to.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Users and groups.
    pub(crate) hub: Hub<NodeRouter>,
    /// The `Signaling` method table jsonrpsee generated, bound to `hub`.
    pub(crate) methods: Methods,
    /// Flips to `true` once, when the server shuts down; every connection
    /// holds a receiver, which is how shutdown knows when all are closed.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Source of connection ids (logs and jsonrpsee's `ConnectionId`).
    next_connection: Arc<AtomicUsize>,
    /// The configuration the server runs with.
    pub(crate) config: Arc<Config>,
    /// The figures `/metrics` shows; also the connection cap's counter.
    pub(crate) metrics: Arc<metrics::Metrics>,
    /// Which browser origins may open `/ws`.
    pub(crate) origins: Arc<origin::OriginPolicy>,
    /// The bytes every connection holds for its client, against `--max-memory`.
    pub(crate) memory: Arc<MemoryBudget>,
}

impl Shared {
    pub(crate) fn next_connection_id(&self) -> ConnectionId {
        ConnectionId(self.next_connection.fetch_add(1, Ordering::Relaxed))
    }
}

/// Resolves once the server starts shutting down.
pub(crate) async fn stopping(mut shutdown: watch::Receiver<bool>) {
    // An error means the server is gone: stopping too.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// A bound server, ready to serve.
pub struct Server {
    listener: TcpListener,
    app: App,
    shutdown: watch::Sender<bool>,
    /// Set with `--tls-cert`/`--tls-key`: every connection is TLS.
    tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("app", &self.app)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds `config.listen` (and reads the TLS files, if any).
    pub async fn bind(config: Config) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        Self::from_listener(listener, config).await
    }

    /// Serves on an already bound listener; fails only on unreadable TLS
    /// files, or a `--redis` that cannot be reached.
    pub async fn from_listener(listener: TcpListener, config: Config) -> std::io::Result<Self> {
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
            _ => None,
        };
        let metrics = Arc::new(metrics::Metrics::new());
        let resume_key =
            config.resume_secret.as_deref().map_or_else(ResumeKey::random, |s| ResumeKey::new(s.as_bytes()));
        let router = match &config.redis {
            Some(url) => NodeRouter::Redis(
                RedisRouter::connect(
                    url,
                    config.relay_timeout.into(),
                    config.resume_window.into(),
                    config.heartbeat_ttl.into(),
                )
                .await
                .map_err(std::io::Error::other)?,
            ),
            None => NodeRouter::Local(LocalRouter::default()),
        };
        let hub = Hub::with_router(router, config.limits(), config.access(), metrics.clone(), resume_key);
        let methods = hub.clone().into_rpc().into();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let origins = Arc::new(origin::OriginPolicy::new(&config.allowed_origins, config.require_origin));
        let memory = Arc::new(MemoryBudget::new(config.max_memory));
        let app = App(Arc::new(Shared {
            hub,
            methods,
            shutdown: shutdown_rx,
            next_connection: Arc::default(),
            config: Arc::new(config),
            metrics,
            origins,
            memory,
        }));
        Ok(Self { listener, app, shutdown, tls })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle on the users and groups, for stats.
    pub fn hub(&self) -> Hub<NodeRouter> {
        self.app.hub.clone()
    }

    /// Serves until `signal` resolves, then stops accepting, closes every
    /// WebSocket with 1001 (their running requests answer first), lets HTTP
    /// requests in progress finish, and returns once every connection is
    /// closed (or the grace time is over).
    ///
    /// Our own accept loop rather than `axum::serve`, which has no timeout
    /// for reading a request head (slowloris) and no TLS.
    pub async fn serve(self, signal: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let Self { listener, app, shutdown, tls } = self;
        let router = http::router(app.clone());
        tokio::pin!(signal);
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
                () = &mut signal => break,
            };
            tokio::spawn(http::serve_connection(stream, app.clone(), router.clone(), tls.clone()));
        }
        drop(listener);
        info!("shutting down: closing connections");
        let hub = app.hub.clone();
        // Every connection holds a receiver (through `App`): once all are
        // dropped, every connection is closed.
        drop((app, router));
        let _ = shutdown.send(true);
        if tokio::time::timeout(Limits::SHUTDOWN_GRACE, shutdown.closed()).await.is_err() {
            warn!(open = shutdown.receiver_count(), "connections still open after the grace time");
        }
        // A cluster node's last messages to the others (the state of the
        // sessions it handed over) go out before the process ends.
        if tokio::time::timeout(Limits::SHUTDOWN_GRACE, hub.stop()).await.is_err() {
            warn!("messages to the other nodes still unsent after the grace time");
        }
        Ok(())
    }
}
