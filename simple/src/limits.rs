//! Every limit of the server in one place, with its default documented once,
//! and the per-connection rate limiter. The server exposes each field of
//! [`Limits`] as a flag and an environment variable; its associated
//! constants are the fixed ones.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

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
    /// Bytes of frames waiting to be written to one connection: everything
    /// queued toward the client (relays, notifications, answers, batch
    /// answers). A frame that would take the queue past it disconnects the
    /// client as a slow consumer, unless the queue is empty (so one message
    /// of the size limit always fits). The socket's own write buffer holds
    /// at most one more message on top. Frames waiting for a resumable
    /// session's connection count here and toward `resume_buffer` alike;
    /// those waiting while it is suspended, and those a resume queues again,
    /// only toward `resume_buffer`. Default 4 MiB.
    pub max_queued_bytes: usize,
    /// Requests in one batch; a longer batch gets one -32600. Default 100.
    pub max_batch_len: usize,
    /// Messages (requests, notifications, batch elements, garbage; not
    /// answers to the server's calls) one connection may send per
    /// [`rate_window`](Self::rate_window), as a burst or spread out; past it
    /// a request gets Busy and a notification is dropped. 0 turns it off.
    /// Default 1,000: a browser joining a full 256-member mesh sends about
    /// that many offers and ICE candidates in its first seconds.
    pub rate_limit: u32,
    /// The window of [`rate_limit`](Self::rate_limit); spent capacity comes
    /// back steadily over it. Default 1 s.
    pub rate_window: Duration,
    /// Open WebSocket connections; past it an upgrade is refused with 503.
    /// Default 10,000 (each costs two file descriptors' worth of kernel
    /// buffers at most; raise `ulimit -n` to match).
    pub max_connections: usize,
    /// Time to send a whole HTTP request head (and to finish the TLS
    /// handshake before it); past it the TCP connection is closed, so a
    /// half-sent request (slowloris) cannot hold a socket. Default 10 s.
    pub header_timeout: Duration,
    /// How long a session whose connection dropped waits to be resumed
    /// (only sessions whose client called `session`); 0 turns resume off.
    /// Default 30 s.
    pub resume_window: Duration,
    /// Bytes one resumable session keeps for replay: frames written but not
    /// yet known to have arrived, and frames waiting to be written (also
    /// counted by `max_queued_bytes` while a connection serves it, not while
    /// it is suspended). Past it the oldest are dropped and the next resume
    /// says `replayed: false`. Default 256 KiB.
    pub resume_buffer: usize,
    /// Bytes the whole server may hold for its clients (frames waiting for
    /// them, what resumable sessions keep, what sockets still have to
    /// write, messages being read). A frame larger than 64 KiB that would
    /// take it past the budget is refused (Busy for a relay or an answer);
    /// once it is spent, new connections get 503 and a message over 64 KiB
    /// arriving closes its connection with 1013. Smaller frames always go
    /// on. Default 1 GiB.
    pub max_memory: usize,
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
        max_queued_bytes: 4 << 20,
        max_batch_len: 100,
        rate_limit: 1000,
        rate_window: Duration::from_secs(1),
        max_connections: 10_000,
        header_timeout: Duration::from_secs(10),
        resume_window: Duration::from_secs(30),
        resume_buffer: 256 << 10,
        max_memory: 1 << 30,
    };

    /// Frames written per flush at most, by the server's connections and the
    /// client's writer: enough to coalesce a burst into one syscall, few
    /// enough to keep pings and close frames timely. Fixed.
    pub const WRITE_BATCH: usize = 64;

    /// How long a closing connection waits for its last frames and its close
    /// frame to be written, and for the other end's close reply, before the
    /// socket is dropped (both ends). The server, its write side shut down,
    /// meanwhile reads and discards what the client still sends: dropping a
    /// socket with unread data makes the kernel send a reset, which destroys
    /// what the client has not read yet (the answers and the close frame).
    /// Fixed.
    pub const CLOSE_LINGER: Duration = Duration::from_secs(1);

    /// What a closing server connection reads and discards at most, in
    /// messages of the size limit: enough for the rest of an oversized frame
    /// that the close cut short (what conformance suites send). Fixed.
    pub const LINGER_MESSAGES: usize = 2;

    /// How long a server connection keeps reading after shutdown starts, so
    /// that answers already on their way (to relays waiting on this client,
    /// and to this client's own relays) still complete; it closes sooner
    /// once nothing waits either way. Fixed.
    pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);

    /// How long a shutting-down server waits for every connection to send
    /// its close frame. Fixed.
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

    /// The largest HTTP request head (hyper's buffer before the upgrade; its
    /// own default is ~400 KiB). An upgrade request is well under 4 KiB. Fixed.
    pub const MAX_REQUEST_HEAD: usize = 16 * 1024;

    /// A rate limiter for one new connection, or `None` when rate limiting is off.
    pub fn rate_limiter(&self) -> Option<RateLimiter> {
        RateLimiter::new(self.rate_limit, self.rate_window)
    }
}

/// A limit that refused something: a connection, a message or a call. The
/// server counts each under its [`name`](Self::name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// An upgrade past `max_connections` (503).
    Connections,
    /// An upgrade from an origin not allowed, or without one when required (403).
    Origin,
    /// A connection closed by `header_timeout`: a TLS handshake or an HTTP
    /// request head not finished in time (slowloris), or a keep-alive
    /// connection that sent no next request for that long (hyper does not
    /// tell the two apart).
    HeaderTimeout,
    /// A frame or message over `max_message_size` (close 1009).
    MessageSize,
    /// A client that let `max_queued_frames` fill (close 1008).
    QueuedFrames,
    /// No `init` within `init_timeout` (close 1008).
    InitTimeout,
    /// Silence past `idle_timeout` (close 1008).
    IdleTimeout,
    /// A batch longer than `max_batch_len` (-32600).
    BatchLen,
    /// A message past `rate_limit` (Busy, or a notification dropped).
    Rate,
    /// A relay past `max_relays_in_flight` (Busy).
    RelaysInFlight,
    /// A create or join past `max_groups_per_user` or
    /// `max_members_per_group` (LimitExceeded).
    GroupLimits,
    /// An upgrade, a relay, an answer or a message being read past
    /// `max_memory` (503, Busy, or close 1013).
    Memory,
}

impl Limit {
    /// Every limit, for metrics that list them all from the start.
    pub const ALL: [Self; 12] = [
        Self::Connections,
        Self::Origin,
        Self::HeaderTimeout,
        Self::MessageSize,
        Self::QueuedFrames,
        Self::InitTimeout,
        Self::IdleTimeout,
        Self::BatchLen,
        Self::Rate,
        Self::RelaysInFlight,
        Self::GroupLimits,
        Self::Memory,
    ];

    /// A short lowercase name, for metric labels and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Connections => "connections",
            Self::Origin => "origin",
            Self::HeaderTimeout => "header_timeout",
            Self::MessageSize => "message_size",
            Self::QueuedFrames => "queued_frames",
            Self::InitTimeout => "init_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::BatchLen => "batch_len",
            Self::Rate => "rate",
            Self::RelaysInFlight => "relays_in_flight",
            Self::GroupLimits => "group_limits",
            Self::Memory => "memory",
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One connection's message budget: `limit` messages per `window`, as a
/// burst or spread out (a token bucket, kept as GCRA's single "theoretical
/// arrival time" so that it is one atomic and needs no lock).
#[derive(Debug)]
pub struct RateLimiter {
    /// When the limiter was made; times are kept as nanoseconds since then.
    start: Instant,
    /// The budget one message costs: `window / limit`, in nanoseconds.
    cost: u64,
    /// The whole window in nanoseconds: how far ahead of now the budget may
    /// be spent.
    window: u64,
    /// Nanoseconds since `start` at which the budget spent so far is paid
    /// back; never behind "now" by more than it takes to refill.
    paid_until: AtomicU64,
}

impl RateLimiter {
    /// `limit` messages per `window`; `None` when `limit` or `window` is 0.
    pub fn new(limit: u32, window: Duration) -> Option<Self> {
        let window = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        if limit == 0 || window == 0 {
            return None;
        }
        Some(Self { start: Instant::now(), cost: (window / u64::from(limit)).max(1), window, paid_until: 0.into() })
    }

    /// Spends `messages` of the budget at `now` whatever is left, into debt
    /// if need be: what the server did on the connection's behalf (the
    /// notifications a join or leave sends to every other member). Its own
    /// messages are refused until the debt is paid back.
    pub fn charge(&self, messages: usize, now: Instant) {
        let now = u64::try_from(now.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX);
        let cost = self.cost.saturating_mul(u64::try_from(messages).unwrap_or(u64::MAX));
        let _ = self
            .paid_until
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |paid| Some(paid.max(now).saturating_add(cost)));
    }

    /// Spends one message's budget if there is any left at `now`.
    pub fn try_acquire(&self, now: Instant) -> bool {
        let now = u64::try_from(now.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX);
        self.paid_until
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |paid| {
                let paid = paid.max(now).saturating_add(self.cost);
                (paid - now <= self.window).then_some(paid)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_a_burst_and_comes_back_after_the_window() {
        let limiter = RateLimiter::new(5, Duration::from_secs(1)).unwrap();
        let now = Instant::now();
        assert_eq!((0..8).filter(|_| limiter.try_acquire(now)).count(), 5);
        assert!(!limiter.try_acquire(now + Duration::from_millis(100)), "a fifth of the window buys one");
        assert!(limiter.try_acquire(now + Duration::from_millis(200)));
        assert!(!limiter.try_acquire(now + Duration::from_millis(200)));
        let later = now + Duration::from_millis(1200);
        assert_eq!((0..8).filter(|_| limiter.try_acquire(later)).count(), 5, "a full window refills it all");
    }

    #[test]
    fn a_charge_puts_the_budget_into_debt_until_it_is_paid_back() {
        let limiter = RateLimiter::new(10, Duration::from_secs(1)).unwrap();
        let now = Instant::now();
        limiter.charge(25, now);
        assert!(!limiter.try_acquire(now + Duration::from_millis(1400)), "2.5 windows of debt");
        assert!(limiter.try_acquire(now + Duration::from_millis(1600)));
    }

    #[test]
    fn zero_turns_it_off() {
        assert!(RateLimiter::new(0, Duration::from_secs(1)).is_none());
        assert!(Limits { rate_limit: 0, ..Limits::DEFAULT }.rate_limiter().is_none());
    }
}
