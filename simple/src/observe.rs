//! What the hub reports about each relay, for the server's metrics. The hub
//! knows how a relay ended (the wire cannot tell a target's own error from
//! ours), so it says so here; the transport decides what to do with it.

use std::time::Duration;

/// How a `relay` ended, as its caller saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayOutcome {
    /// The target answered with a result.
    Answered,
    /// The target answered with an error, passed through to the caller.
    TargetError,
    /// RelayTimeout: the target did not answer in time.
    Timeout,
    /// PeerGone: the target disconnected before answering.
    PeerGone,
    /// Busy: the caller had too many relays in flight.
    Busy,
    /// Refused before reaching anyone: not initialised, no such group, not
    /// a member, no such target, or not allowed by the capability.
    Refused,
    /// Sent as a notification: forwarded (or dropped), nobody waits.
    Forwarded,
}

impl RelayOutcome {
    /// Every outcome, for metrics that list them all from the start.
    pub const ALL: [Self; 7] =
        [Self::Answered, Self::TargetError, Self::Timeout, Self::PeerGone, Self::Busy, Self::Refused, Self::Forwarded];

    /// A short lowercase name, for metric labels and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::TargetError => "target_error",
            Self::Timeout => "timeout",
            Self::PeerGone => "peer_gone",
            Self::Busy => "busy",
            Self::Refused => "refused",
            Self::Forwarded => "forwarded",
        }
    }
}

/// Told about every relay once it ended. Called on the relay's own task, so
/// it must be quick and must not block.
pub trait RelayObserver: Send + Sync + std::fmt::Debug {
    /// A relay ended with `outcome`, `elapsed` after it started.
    fn relay_done(&self, outcome: RelayOutcome, elapsed: Duration);
}

/// The observer of a hub nobody observes.
#[derive(Debug)]
pub(crate) struct Unobserved;

impl RelayObserver for Unobserved {
    fn relay_done(&self, _: RelayOutcome, _: Duration) {}
}
