//! What the hub and the dispatch report, for the server's metrics: how each
//! relay ended (the wire cannot tell a target's own error from ours), each
//! error response sent, each message a limit refused, and what happened to
//! each resumable session. The server decides what to do with it.

use std::time::Duration;

use crate::auth::AuthFailure;
use crate::limits::Limit;

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
    /// RequestCancelled: the caller cancelled it (`$/cancelRequest`) first.
    Cancelled,
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
    pub const ALL: [Self; 8] = [
        Self::Answered,
        Self::TargetError,
        Self::Timeout,
        Self::PeerGone,
        Self::Cancelled,
        Self::Busy,
        Self::Refused,
        Self::Forwarded,
    ];

    /// A short lowercase name, for metric labels and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::TargetError => "target_error",
            Self::Timeout => "timeout",
            Self::PeerGone => "peer_gone",
            Self::Cancelled => "cancelled",
            Self::Busy => "busy",
            Self::Refused => "refused",
            Self::Forwarded => "forwarded",
        }
    }
}

/// Why a `resume` failed (each is ResumeFailed on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResumeFailure {
    /// Not a ticket at all.
    Malformed,
    /// Forged, altered, or signed by another server's key.
    Forged,
    /// Past its expiry.
    Expired,
    /// The session it names is over (its window passed, it closed) or
    /// unknown here.
    Gone,
}

impl ResumeFailure {
    /// Every reason, for metrics that list them all from the start.
    pub const ALL: [Self; 4] = [Self::Malformed, Self::Forged, Self::Expired, Self::Gone];

    /// A short lowercase name, for metric labels and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Forged => "forged",
            Self::Expired => "expired",
            Self::Gone => "gone",
        }
    }
}

/// What happened to a resumable session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionEvent {
    /// Its connection dropped: it waits for a resume.
    Suspended,
    /// A new connection took it over; `replayed` as `resume` answered.
    Resumed {
        /// Whether the messages in between were sent again.
        replayed: bool,
    },
    /// The resume window passed: it ended as in v1.
    Expired,
    /// A `resume` failed.
    ResumeFailed(ResumeFailure),
}

/// Told what happened, as it happens. Called on the tasks doing the work,
/// so every method must be quick and must not block. Each defaults to
/// ignoring it.
pub trait Observer: Send + Sync + std::fmt::Debug {
    /// A relay ended with `outcome`, `elapsed` after it started.
    fn relay_done(&self, _outcome: RelayOutcome, _elapsed: Duration) {}

    /// An error response with this JSON-RPC code was queued (each element
    /// of a batch on its own).
    fn error_sent(&self, _code: i32) {}

    /// `limit` refused a message.
    fn refused(&self, _limit: Limit) {}

    /// Something happened to a resumable session.
    fn session_event(&self, _event: SessionEvent) {}

    /// `init` refused a join token (`Unauthorized`).
    fn auth_failed(&self, _reason: AuthFailure) {}
}

/// The observer of a hub or dispatch nobody observes.
#[derive(Debug)]
pub(crate) struct Unobserved;

impl Observer for Unobserved {}
