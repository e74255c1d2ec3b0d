//! The server's flags, each with an environment-variable twin. Defaults come
//! from [`Limits::DEFAULT`], where they are documented once.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use webrtc_p2p_simple::auth::TokenVerifier;
use webrtc_p2p_simple::ice::{DEFAULT_TURN_TTL, IceConfig, Turn};
use webrtc_p2p_simple::{Access, Limits};

const D: Limits = Limits::DEFAULT;

fn dur(d: std::time::Duration) -> humantime::Duration {
    d.into()
}

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The server's configuration (the binary's `Cli` adds its subcommands).
#[derive(Debug, Clone, Parser)]
#[command(name = "webrtc-p2p-server", version, about)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "WEBRTC_P2P_LISTEN", default_value = webrtc_p2p_interfaces::DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Log format.
    #[arg(long, env = "WEBRTC_P2P_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Largest frame or message in bytes; past it the connection closes with 1009.
    #[arg(long, env = "WEBRTC_P2P_MAX_MESSAGE_SIZE", default_value_t = D.max_message_size)]
    pub max_message_size: usize,

    /// How long a relay waits for the target's answer before RelayTimeout.
    #[arg(long, env = "WEBRTC_P2P_RELAY_TIMEOUT", default_value_t = dur(D.relay_timeout))]
    pub relay_timeout: humantime::Duration,

    /// A caller's relays in flight at once; past it, Busy.
    #[arg(long, env = "WEBRTC_P2P_MAX_RELAYS_IN_FLIGHT", default_value_t = D.max_relays_in_flight)]
    pub max_relays_in_flight: usize,

    /// Groups one user may be in; past it, LimitExceeded.
    #[arg(long, env = "WEBRTC_P2P_MAX_GROUPS_PER_USER", default_value_t = D.max_groups_per_user)]
    pub max_groups_per_user: usize,

    /// Members one group may have; past it, LimitExceeded.
    #[arg(long, env = "WEBRTC_P2P_MAX_MEMBERS_PER_GROUP", default_value_t = D.max_members_per_group)]
    pub max_members_per_group: usize,

    /// Time from connecting to init; past it the connection closes (1008).
    #[arg(long, env = "WEBRTC_P2P_INIT_TIMEOUT", default_value_t = dur(D.init_timeout))]
    pub init_timeout: humantime::Duration,

    /// Time without any frame or pong; past it the connection closes (1008).
    #[arg(long, env = "WEBRTC_P2P_IDLE_TIMEOUT", default_value_t = dur(D.idle_timeout))]
    pub idle_timeout: humantime::Duration,

    /// How often the server pings each connection.
    #[arg(long, env = "WEBRTC_P2P_PING_INTERVAL", default_value_t = dur(D.ping_interval))]
    pub ping_interval: humantime::Duration,

    /// Frames queued for one connection; a client that lets it fill is disconnected (1008).
    #[arg(long, env = "WEBRTC_P2P_MAX_QUEUED_FRAMES", default_value_t = D.max_queued_frames)]
    pub max_queued_frames: usize,

    /// Bytes queued for one connection (everything sent toward it); a client
    /// that lets it fill is disconnected (1008).
    #[arg(long, env = "WEBRTC_P2P_MAX_QUEUED_BYTES", default_value_t = D.max_queued_bytes)]
    pub max_queued_bytes: usize,

    /// Bytes the whole server may hold for its clients (queued frames, resume
    /// buffers, unwritten and half-read messages). A frame over 64 KiB that
    /// does not fit is refused (Busy); once spent, new connections get 503
    /// and a message over 64 KiB arriving closes with 1013. Smaller ones go on.
    #[arg(long, env = "WEBRTC_P2P_MAX_MEMORY", default_value_t = D.max_memory)]
    pub max_memory: usize,
    /// Requests in one batch; a longer batch gets one -32600.
    #[arg(long, env = "WEBRTC_P2P_MAX_BATCH_LEN", default_value_t = D.max_batch_len)]
    pub max_batch_len: usize,

    /// Messages one connection may send per --rate-window (a burst, or spread
    /// out); past it a request gets Busy and a notification is dropped. 0: no limit.
    #[arg(long, env = "WEBRTC_P2P_RATE_LIMIT", default_value_t = D.rate_limit)]
    pub rate_limit: u32,

    /// The window of --rate-limit; spent capacity comes back steadily over it.
    #[arg(long, env = "WEBRTC_P2P_RATE_WINDOW", default_value_t = dur(D.rate_window))]
    pub rate_window: humantime::Duration,

    /// Open WebSocket connections; past it an upgrade is refused with 503.
    #[arg(long, env = "WEBRTC_P2P_MAX_CONNECTIONS", default_value_t = D.max_connections)]
    pub max_connections: usize,

    /// Time to send a whole HTTP request head (after the TLS handshake, which
    /// has the same bound); past it the TCP connection is closed (slowloris).
    #[arg(long, env = "WEBRTC_P2P_HEADER_TIMEOUT", default_value_t = dur(D.header_timeout))]
    pub header_timeout: humantime::Duration,

    /// A browser origin allowed to open /ws, as `scheme://host[:port]`;
    /// repeat it (or comma-separate in the environment) for several. Others
    /// get 403. None given: every origin may.
    #[arg(long = "allowed-origin", env = "WEBRTC_P2P_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = crate::origin::parse)]
    pub allowed_origins: Vec<String>,

    /// Refuse (403) upgrades that carry no Origin header, i.e. non-browser
    /// clients; by default they may connect, as browsers always send one.
    #[arg(long, env = "WEBRTC_P2P_REQUIRE_ORIGIN")]
    pub require_origin: bool,

    /// How long a session whose connection dropped (no close frame from the
    /// client, or the idle timeout) waits to be resumed; only sessions whose
    /// client called `session`. 0: sessions end with their connection (v1).
    #[arg(long, env = "WEBRTC_P2P_RESUME_WINDOW", default_value_t = dur(D.resume_window))]
    pub resume_window: humantime::Duration,

    /// Bytes one resumable session keeps for replay (frames not yet known to
    /// have arrived, frames waiting to be written); past it the next resume
    /// says `replayed: false`. While suspended (and for what a resume sends
    /// again) it bounds what waits instead of --max-queued-bytes.
    #[arg(long, env = "WEBRTC_P2P_RESUME_BUFFER", default_value_t = D.resume_buffer)]
    pub resume_buffer: usize,

    /// The secret resume tickets are signed with; servers sharing it accept
    /// each other's tickets. Unset: a random one per process.
    #[arg(long, env = "WEBRTC_P2P_RESUME_SECRET", hide_env_values = true)]
    pub resume_secret: Option<String>,

    /// Redis URL (`redis://host:port`): nodes started with the same one are
    /// one service, their groups spanning nodes. Without it everything stays
    /// in this process's memory.
    #[arg(long, env = "WEBRTC_P2P_REDIS")]
    pub redis: Option<String>,

    /// With --redis: how long this node's heartbeat key lives without a
    /// refresh (refreshed every second): others take the node for stopped
    /// that long after its last beat. Longer tolerates a starved node
    /// (overloaded machine, a debugger) at the price of noticing a crash
    /// later. At least 2 s.
    #[arg(long, env = "WEBRTC_P2P_HEARTBEAT_TTL", default_value_t = dur(crate::cluster::HEARTBEAT_TTL))]
    pub heartbeat_ttl: humantime::Duration,

    /// PEM certificate chain; with --tls-key, serve wss:// and https:// only.
    #[arg(long, env = "WEBRTC_P2P_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "WEBRTC_P2P_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// The secret join tokens are signed with (HS256). Set, init requires a
    /// valid token, whose claims say who may create and join which groups.
    #[arg(long, env = "WEBRTC_P2P_AUTH_SECRET", hide_env_values = true, value_parser = non_empty, global = true)]
    pub auth_secret: Option<String>,

    /// A STUN server URL handed to clients (`stun:host:port`); repeatable
    /// (comma-separated in the environment).
    #[arg(long = "stun-url", env = "WEBRTC_P2P_STUN_URLS", value_delimiter = ',')]
    pub stun_urls: Vec<String>,

    /// A TURN server URL handed to clients with fresh credentials
    /// (`turn:host:3478?transport=udp`, `turns:…`); repeatable
    /// (comma-separated in the environment). Needs --turn-secret.
    #[arg(long = "turn-url", env = "WEBRTC_P2P_TURN_URLS", value_delimiter = ',', requires = "turn_secret")]
    pub turn_urls: Vec<String>,

    /// The TURN servers' shared secret (coturn: use-auth-secret,
    /// static-auth-secret): credentials are the TURN REST API's.
    #[arg(long, env = "WEBRTC_P2P_TURN_SECRET", hide_env_values = true, value_parser = non_empty, requires = "turn_urls")]
    pub turn_secret: Option<String>,

    /// How long TURN credentials last; clients fetch fresh ones before.
    #[arg(long, env = "WEBRTC_P2P_TURN_TTL", default_value_t = dur(DEFAULT_TURN_TTL))]
    pub turn_ttl: humantime::Duration,
}

/// A secret must not be empty: an empty one is a mistake, not a choice.
fn non_empty(s: &str) -> Result<String, String> {
    if s.is_empty() { Err("must not be empty".into()) } else { Ok(s.to_owned()) }
}

impl Config {
    /// The limits these flags set.
    pub fn limits(&self) -> Limits {
        Limits {
            max_message_size: self.max_message_size,
            relay_timeout: self.relay_timeout.into(),
            max_relays_in_flight: self.max_relays_in_flight,
            max_groups_per_user: self.max_groups_per_user,
            max_members_per_group: self.max_members_per_group,
            init_timeout: self.init_timeout.into(),
            idle_timeout: self.idle_timeout.into(),
            ping_interval: self.ping_interval.into(),
            max_queued_frames: self.max_queued_frames.max(1),
            max_queued_bytes: self.max_queued_bytes,
            max_batch_len: self.max_batch_len,
            rate_limit: self.rate_limit,
            rate_window: self.rate_window.into(),
            max_connections: self.max_connections,
            header_timeout: self.header_timeout.into(),
            resume_window: self.resume_window.into(),
            resume_buffer: self.resume_buffer,
            max_memory: self.max_memory,
        }
    }

    /// The join tokens and ICE servers these flags set.
    pub fn access(&self) -> Access {
        let turn = self
            .turn_secret
            .as_ref()
            .map(|secret| Turn::new(self.turn_urls.clone(), secret.as_bytes(), self.turn_ttl.into()));
        Access {
            tokens: self.auth_secret.as_ref().map(|secret| TokenVerifier::new(secret.as_bytes())),
            ice: IceConfig { stun_urls: self.stun_urls.clone(), turn },
        }
    }

    /// The configuration given by `flags` (and the environment), as if on the
    /// command line after the program name.
    pub fn from_flags<I, S>(flags: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(std::iter::once("webrtc-p2p-server".into()).chain(flags.into_iter().map(Into::into)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_protocols() {
        let config = Config::from_flags::<_, &str>([]).unwrap();
        assert_eq!(config.limits(), Limits::DEFAULT);
        assert_eq!(config.listen.to_string(), "127.0.0.1:3001");
    }

    #[test]
    fn durations_read_as_humans_write_them() {
        let config = Config::from_flags(["--relay-timeout", "250ms", "--idle-timeout", "1m"]).unwrap();
        assert_eq!(config.limits().relay_timeout, std::time::Duration::from_millis(250));
        assert_eq!(config.limits().idle_timeout, std::time::Duration::from_secs(60));
    }

    #[test]
    fn origins_repeat_and_tls_needs_both_files() {
        let config =
            Config::from_flags(["--allowed-origin", "https://a.example", "--allowed-origin", "http://b:8080"]).unwrap();
        assert_eq!(config.allowed_origins, ["https://a.example", "http://b:8080"]);
        assert!(!config.require_origin);
        assert!(Config::from_flags(["--tls-cert", "c.pem"]).is_err());
        assert!(Config::from_flags(["--tls-key", "k.pem"]).is_err());
        assert!(Config::from_flags(["--tls-cert", "c.pem", "--tls-key", "k.pem"]).is_ok());
    }

    #[test]
    fn turn_needs_url_and_secret_and_secrets_are_never_empty() {
        assert!(Config::from_flags(["--turn-url", "turn:t:3478"]).is_err());
        assert!(Config::from_flags(["--turn-secret", "s"]).is_err());
        assert!(Config::from_flags(["--auth-secret", ""]).is_err());
        let config = Config::from_flags([
            "--turn-url",
            "turn:a:3478",
            "--turn-url",
            "turns:b:5349",
            "--turn-secret",
            "s",
            "--stun-url",
            "stun:a:3478",
        ])
        .unwrap();
        assert_eq!(config.turn_urls, ["turn:a:3478", "turns:b:5349"]);
        assert_eq!(config.turn_ttl, dur(DEFAULT_TURN_TTL));
        let access = config.access();
        assert!(access.tokens.is_none());
        assert_eq!(access.ice.stun_urls, ["stun:a:3478"]);
        assert!(access.ice.turn.is_some());
    }
}
