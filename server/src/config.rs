//! The server's flags, each with an environment-variable twin. Defaults come
//! from [`Limits::DEFAULT`], where they are documented once.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};
use webrtc_p2p_simple::Limits;

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

/// webrtc-p2p signaling server: JSON-RPC 2.0 over WebSocket at /ws, the demo
/// page at /, the client bundle at /webrtc-p2p.js.
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

    /// Requests in one batch; a longer batch gets one -32600.
    #[arg(long, env = "WEBRTC_P2P_MAX_BATCH_LEN", default_value_t = D.max_batch_len)]
    pub max_batch_len: usize,
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
            max_batch_len: self.max_batch_len,
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
}
