//! Every limit of the server in one place, with its default documented once.
//! The server exposes each as a flag and an environment variable.

use std::time::Duration;

/// What one connection, user or group may use. [`Limits::DEFAULT`] holds the
/// protocol's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame or message accepted, in bytes; past it the connection
    /// closes with 1009. Default 1 MiB.
    pub max_message_size: usize,
    /// How long a relay waits for the target's answer (queueing to the target
    /// included) before the caller gets RelayTimeout. Default 10 s.
    pub relay_timeout: Duration,
    /// A caller's relays waiting for answers at once; past it, Busy. Default 256.
    pub max_relays_in_flight: usize,
    /// Groups one user may be in at once; past it, LimitExceeded. Default 256.
    pub max_groups_per_user: usize,
    /// Members one group may have; past it, LimitExceeded. Default 256.
    pub max_members_per_group: usize,
    /// Time from connecting to `init`; past it the connection closes. Default 10 s.
    pub init_timeout: Duration,
    /// Time without any frame (pongs included); past it the connection
    /// closes. Default 45 s.
    pub idle_timeout: Duration,
    /// How often the server pings each connection. Default 15 s.
    pub ping_interval: Duration,
    /// Frames waiting to be written to one connection; a client that lets its
    /// queue fill (it stopped reading) is disconnected. Default 1,024.
    pub max_queued_frames: usize,
    /// Requests in one batch; a longer batch gets one -32600. Default 100.
    pub max_batch_len: usize,
}

impl Limits {
    /// The protocol's defaults.
    pub const DEFAULT: Self = Self {
        max_message_size: 1 << 20,
        relay_timeout: Duration::from_secs(10),
        max_relays_in_flight: 256,
        max_groups_per_user: 256,
        max_members_per_group: 256,
        init_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(45),
        ping_interval: Duration::from_secs(15),
        max_queued_frames: 1024,
        max_batch_len: 100,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}
