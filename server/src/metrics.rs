//! `GET /metrics`: the server's figures in the Prometheus (OpenMetrics)
//! text format, one registry per server.
//!
//! Label values come from fixed tables only (never from what a client sent),
//! so no client can grow the number of series.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use webrtc_p2p_interfaces::ErrorCode;
use webrtc_p2p_simple::auth::AuthFailure;
use webrtc_p2p_simple::wire::code;
use webrtc_p2p_simple::{CloseReason, HubStats, Limit, Observer, RelayOutcome, ResumeFailure, SessionEvent};

type Labels = [(&'static str, &'static str); 1];

/// The label of an error code in `webrtc_p2p_errors_total`: the name of a
/// standard JSON-RPC code or of an [`ErrorCode`]; any other code (a relay
/// target's own, passed through) counts as `other`.
fn error_label(code: i32) -> &'static str {
    const STANDARD: [(i32, &str); 5] = [
        (code::PARSE_ERROR, "ParseError"),
        (code::INVALID_REQUEST, "InvalidRequest"),
        (code::METHOD_NOT_FOUND, "MethodNotFound"),
        (code::INVALID_PARAMS, "InvalidParams"),
        (code::INTERNAL_ERROR, "InternalError"),
    ];
    match STANDARD.iter().find(|(c, _)| *c == code) {
        Some((_, name)) => name,
        None => ErrorCode::from_code(code).map_or("other", ErrorCode::name),
    }
}

/// The close codes the server sends, and 1006 for a connection that ended
/// without a close frame.
const CLOSE_CODES: [u16; 9] = [1000, 1001, 1002, 1006, 1007, 1008, 1009, 1013, 4001];

fn close_label(code: u16) -> &'static str {
    match code {
        1000 => "1000",
        1001 => "1001",
        1002 => "1002",
        1006 => "1006",
        1007 => "1007",
        1008 => "1008",
        1009 => "1009",
        1012 => "1012",
        1013 => "1013",
        4001 => "4001",
        _ => "other",
    }
}

/// Every figure of one server.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    /// Open WebSocket connections; also what `--max-connections` counts.
    connections: Arc<AtomicUsize>,
    connections_gauge: Gauge,
    users: Gauge,
    groups: Gauge,
    relays_in_flight: Gauge,
    memory: Gauge,
    connections_total: Counter,
    /// By [`RelayOutcome::ALL`]'s order: counted on every relay, so each is
    /// held directly rather than looked up in its family.
    relays: Vec<Counter>,
    relay_seconds: Histogram,
    errors: Family<Labels, Counter>,
    /// By [`Limit::ALL`]'s order.
    refused: Vec<Counter>,
    closes: Family<Labels, Counter>,
    suspended: Counter,
    /// `replayed` false, then true.
    resumed: [Counter; 2],
    expired: Counter,
    /// By [`ResumeFailure::ALL`]'s order.
    resume_failures: Vec<Counter>,
    /// By [`AuthFailure::ALL`]'s order.
    auth_failures: Vec<Counter>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("webrtc_p2p");
        let connections_gauge = Gauge::default();
        registry.register("connections", "Open WebSocket connections", connections_gauge.clone());
        let connections_total = Counter::default();
        registry.register("connections_opened", "WebSocket connections opened", connections_total.clone());
        let users = Gauge::default();
        registry.register("users", "Initialised connections (users)", users.clone());
        let groups = Gauge::default();
        registry.register("groups", "Live groups", groups.clone());
        let relays_in_flight = Gauge::default();
        registry.register("relays_in_flight", "Relays waiting for their target's answer", relays_in_flight.clone());
        let memory = Gauge::default();
        registry.register("memory_bytes", "Bytes held for clients, counted against --max-memory", memory.clone());
        let relays = family(&mut registry, "relays", "Relays by how they ended");
        // 0.5 ms to ~16 s: loopback answers up to a relay timeout.
        let relay_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "relay_duration_seconds",
            "Time from a relay's start to its answer, timeout or the target's disconnect",
            relay_seconds.clone(),
        );
        let errors = family(&mut registry, "errors", "Error responses sent, by the name of their JSON-RPC code");
        let refused =
            family(&mut registry, "refused", "Messages, calls and connections refused, by the limit that refused them");
        let closes = family(&mut registry, "closes", "WebSocket connections closed, by close code");
        let auth_failures =
            family(&mut registry, "auth_failures", "Join tokens refused at init (Unauthorized), by reason");

        let suspended = Counter::default();
        registry.register(
            "sessions_suspended",
            "Sessions whose connection dropped, waiting to be resumed",
            suspended.clone(),
        );
        let resumed = Family::<Labels, Counter>::default();
        registry.register(
            "sessions_resumed",
            "Sessions resumed, by whether the messages in between were replayed",
            resumed.clone(),
        );
        let expired = Counter::default();
        registry.register(
            "sessions_expired",
            "Suspended sessions that ended as their resume window passed",
            expired.clone(),
        );
        let failures = Family::<Labels, Counter>::default();
        registry.register("resume_failures", "Resumes refused (ResumeFailed), by reason", failures.clone());

        // Every series exists from the start, so a rate() sees its first increase.
        let resumed =
            [false, true].map(|r| resumed.get_or_create_owned(&[("replayed", if r { "true" } else { "false" })]));
        let resume_failures =
            ResumeFailure::ALL.iter().map(|r| failures.get_or_create_owned(&[("reason", r.name())])).collect();
        let relays = RelayOutcome::ALL.iter().map(|o| relays.get_or_create_owned(&[("outcome", o.name())])).collect();
        let refused = Limit::ALL.iter().map(|l| refused.get_or_create_owned(&[("limit", l.name())])).collect();
        let auth_failures =
            AuthFailure::ALL.iter().map(|r| auth_failures.get_or_create_owned(&[("reason", r.name())])).collect();
        for code in CLOSE_CODES {
            let _ = closes.get_or_create(&[("code", close_label(code))]);
        }
        Self {
            registry,
            connections: Arc::default(),
            connections_gauge,
            users,
            groups,
            relays_in_flight,
            memory,
            connections_total,
            relays,
            relay_seconds,
            errors,
            refused,
            closes,
            suspended,
            resumed,
            expired,
            resume_failures,
            auth_failures,
        }
    }

    /// Takes a connection slot unless `max` are taken; the slot is given
    /// back when the returned guard drops.
    pub(crate) fn open_connection(&self, max: usize) -> Option<ConnectionSlot> {
        self.connections.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        self.connections_total.inc();
        Some(ConnectionSlot(self.connections.clone()))
    }

    pub(crate) fn refused(&self, limit: Limit) {
        if let Some(counter) = Limit::ALL.iter().position(|l| *l == limit).and_then(|at| self.refused.get(at)) {
            counter.inc();
        }
    }

    /// Counts a connection's close, and the limit behind it if any.
    pub(crate) fn closed(&self, reason: CloseReason) {
        self.closes.get_or_create(&[("code", close_label(reason.code))]).inc();
        let limit = match reason {
            CloseReason::MESSAGE_TOO_BIG => Limit::MessageSize,
            CloseReason::MEMORY => Limit::Memory,
            CloseReason::SLOW_CONSUMER => Limit::QueuedFrames,
            CloseReason::INIT_TIMEOUT => Limit::InitTimeout,
            CloseReason::IDLE_TIMEOUT => Limit::IdleTimeout,
            _ => return,
        };
        self.refused(limit);
    }

    /// The text exposition, with the gauges read now.
    pub(crate) fn render(&self, hub: HubStats, relays_in_flight: usize, memory: usize) -> String {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.connections_gauge.set(gauge(self.connections.load(Ordering::Acquire)));
        self.users.set(gauge(hub.users));
        self.groups.set(gauge(hub.groups));
        self.relays_in_flight.set(gauge(relays_in_flight));
        self.memory.set(gauge(memory));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Observer for Metrics {
    fn relay_done(&self, outcome: RelayOutcome, elapsed: Duration) {
        if let Some(counter) = RelayOutcome::ALL.iter().position(|o| *o == outcome).and_then(|at| self.relays.get(at)) {
            counter.inc();
        }
        match outcome {
            RelayOutcome::Answered
            | RelayOutcome::TargetError
            | RelayOutcome::Timeout
            | RelayOutcome::PeerGone
            | RelayOutcome::Cancelled => {
                self.relay_seconds.observe(elapsed.as_secs_f64());
            }
            RelayOutcome::Busy => self.refused(Limit::RelaysInFlight),
            RelayOutcome::Refused | RelayOutcome::Forwarded => {}
        }
    }

    fn error_sent(&self, code: i32) {
        self.errors.get_or_create(&[("error", error_label(code))]).inc();
        if code == ErrorCode::LimitExceeded.code() {
            self.refused(Limit::GroupLimits);
        }
    }

    fn refused(&self, limit: Limit) {
        Metrics::refused(self, limit);
    }

    fn session_event(&self, event: SessionEvent) {
        match event {
            SessionEvent::Suspended => {
                self.suspended.inc();
            }
            SessionEvent::Resumed { replayed } => {
                self.resumed[usize::from(replayed)].inc();
            }
            SessionEvent::Expired => {
                self.expired.inc();
            }
            SessionEvent::ResumeFailed(reason) => {
                if let Some(counter) =
                    ResumeFailure::ALL.iter().position(|r| *r == reason).and_then(|at| self.resume_failures.get(at))
                {
                    counter.inc();
                }
            }
        }
    }

    fn auth_failed(&self, reason: AuthFailure) {
        if let Some(counter) =
            AuthFailure::ALL.iter().position(|r| *r == reason).and_then(|at| self.auth_failures.get(at))
        {
            counter.inc();
        }
    }
}

/// A family of counters by one label, registered.
fn family(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let family = Family::default();
    registry.register(name, help, family.clone());
    family
}

/// An open connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_fixed_tables() {
        assert_eq!(error_label(-32009), "Busy");
        assert_eq!(error_label(-32001), "NotInitialized");
        assert_eq!(error_label(-32602), "InvalidParams");
        assert_eq!(error_label(42), "other");
        assert_eq!(error_label(-32013), "Unauthorized");
        assert_eq!(close_label(4000), "other");
    }

    #[test]
    fn slots_are_capped_and_given_back() {
        let metrics = Metrics::new();
        let a = metrics.open_connection(2).unwrap();
        let _b = metrics.open_connection(2).unwrap();
        assert!(metrics.open_connection(2).is_none());
        drop(a);
        assert!(metrics.open_connection(2).is_some());
    }
}
