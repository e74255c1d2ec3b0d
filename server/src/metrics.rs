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
use webrtc_p2p_simple::wire::code;
use webrtc_p2p_simple::{CloseReason, HubStats, RelayObserver, RelayOutcome};

type Labels = [(&'static str, &'static str); 1];

/// What a limit refused; the `limit` label of `webrtc_p2p_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// An upgrade past `--max-connections` (503).
    Connections,
    /// An upgrade from an origin not allowed, or without one when required (403).
    Origin,
    /// A connection closed by `--header-timeout`: a TLS handshake or an
    /// HTTP request head not finished in time (slowloris), or a keep-alive
    /// connection that sent no next request for that long (hyper does not
    /// tell the two apart).
    HeaderTimeout,
    /// A frame or message over `--max-message-size` (close 1009).
    MessageSize,
    /// A client that let `--max-queued-frames` fill (close 1008).
    QueuedFrames,
    /// No `init` within `--init-timeout` (close 1008).
    InitTimeout,
    /// Silence past `--idle-timeout` (close 1008).
    IdleTimeout,
    /// A batch longer than `--max-batch-len` (-32600).
    BatchLen,
    /// A message past `--rate-limit` (Busy, or a notification dropped).
    Rate,
    /// A relay past `--max-relays-in-flight` (Busy).
    RelaysInFlight,
    /// A create or join past `--max-groups-per-user` or
    /// `--max-members-per-group` (LimitExceeded).
    GroupLimits,
}

impl Refused {
    const ALL: [Self; 11] = [
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
    ];

    const fn name(self) -> &'static str {
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
        }
    }
}

/// The error codes `webrtc_p2p_errors_total` tells apart; any other code
/// (a relay target's own, passed through) counts as `other`.
const STANDARD_CODES: [(i32, &str); 5] = [
    (code::PARSE_ERROR, "-32700"),
    (code::INVALID_REQUEST, "-32600"),
    (code::METHOD_NOT_FOUND, "-32601"),
    (code::INVALID_PARAMS, "-32602"),
    (code::INTERNAL_ERROR, "-32603"),
];
const APP_CODES: [&str; 10] =
    ["-32001", "-32002", "-32003", "-32004", "-32005", "-32006", "-32007", "-32008", "-32009", "-32010"];

fn code_label(code: i32) -> &'static str {
    if let Some((_, label)) = STANDARD_CODES.iter().find(|(c, _)| *c == code) {
        return label;
    }
    ErrorCode::from_code(code)
        .and_then(|e| ErrorCode::ALL.iter().position(|x| *x == e))
        .map_or("other", |at| APP_CODES[at])
}

/// The close codes the server sends.
const CLOSE_CODES: [u16; 6] = [1000, 1001, 1002, 1007, 1008, 1009];

fn close_label(code: u16) -> &'static str {
    match code {
        1000 => "1000",
        1001 => "1001",
        1002 => "1002",
        1007 => "1007",
        1008 => "1008",
        1009 => "1009",
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
    connections_total: Counter,
    /// By [`RelayOutcome::ALL`]'s order: counted on every relay, so each is
    /// held directly rather than looked up in its family.
    relays: Vec<Counter>,
    relay_seconds: Histogram,
    errors: Family<Labels, Counter>,
    /// By [`Refused::ALL`]'s order.
    refused: Vec<Counter>,
    closes: Family<Labels, Counter>,
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
        let relays = Family::<Labels, Counter>::default();
        registry.register("relays", "Relays by how they ended", relays.clone());
        // 0.5 ms to ~16 s: loopback answers up to a relay timeout.
        let relay_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "relay_duration_seconds",
            "Time from a relay's start to its answer, timeout or the target's disconnect",
            relay_seconds.clone(),
        );
        let errors = Family::<Labels, Counter>::default();
        registry.register("errors", "Error responses sent, by JSON-RPC code", errors.clone());
        let refused = Family::<Labels, Counter>::default();
        registry.register(
            "refused",
            "Messages, calls and connections refused, by the limit that refused them",
            refused.clone(),
        );
        let closes = Family::<Labels, Counter>::default();
        registry.register("closes", "WebSocket connections closed, by close code", closes.clone());

        // Every series exists from the start, so a rate() sees its first increase.
        let relays = RelayOutcome::ALL.iter().map(|o| relays.get_or_create_owned(&[("outcome", o.name())])).collect();
        let refused = Refused::ALL.iter().map(|l| refused.get_or_create_owned(&[("limit", l.name())])).collect();
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
            connections_total,
            relays,
            relay_seconds,
            errors,
            refused,
            closes,
        }
    }

    /// Takes a connection slot unless `max` are taken; the slot is given
    /// back when the returned guard drops.
    pub(crate) fn open_connection(&self, max: usize) -> Option<ConnectionSlot> {
        self.connections.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        self.connections_total.inc();
        Some(ConnectionSlot(self.connections.clone()))
    }

    pub(crate) fn refused(&self, limit: Refused) {
        if let Some(counter) = Refused::ALL.iter().position(|l| *l == limit).and_then(|at| self.refused.get(at)) {
            counter.inc();
        }
    }

    /// Counts a connection's close, and the limit behind it if any.
    pub(crate) fn closed(&self, reason: CloseReason) {
        self.closes.get_or_create(&[("code", close_label(reason.code))]).inc();
        let limit = match reason {
            CloseReason::MESSAGE_TOO_BIG => Refused::MessageSize,
            CloseReason::SLOW_CONSUMER => Refused::QueuedFrames,
            CloseReason::INIT_TIMEOUT => Refused::InitTimeout,
            CloseReason::IDLE_TIMEOUT => Refused::IdleTimeout,
            _ => return,
        };
        self.refused(limit);
    }

    /// Counts the error responses in a frame the server sends (a response or
    /// a batch of them).
    pub(crate) fn sent(&self, frame: &str) {
        if let Some(code) = error_code(frame) {
            self.error(code);
        }
    }

    pub(crate) fn error(&self, code: i32) {
        self.errors.get_or_create(&[("code", code_label(code))]).inc();
        if code == ErrorCode::LimitExceeded.code() {
            self.refused(Refused::GroupLimits);
        }
    }

    /// The text exposition, with the gauges read now.
    pub(crate) fn render(&self, hub: HubStats, relays_in_flight: usize) -> String {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.connections_gauge.set(gauge(self.connections.load(Ordering::Acquire)));
        self.users.set(gauge(hub.users));
        self.groups.set(gauge(hub.groups));
        self.relays_in_flight.set(gauge(relays_in_flight));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl RelayObserver for Metrics {
    fn relay_done(&self, outcome: RelayOutcome, elapsed: Duration) {
        if let Some(counter) = RelayOutcome::ALL.iter().position(|o| *o == outcome).and_then(|at| self.relays.get(at)) {
            counter.inc();
        }
        match outcome {
            RelayOutcome::Answered | RelayOutcome::TargetError | RelayOutcome::Timeout | RelayOutcome::PeerGone => {
                self.relay_seconds.observe(elapsed.as_secs_f64());
            }
            RelayOutcome::Busy => self.refused(Refused::RelaysInFlight),
            RelayOutcome::Refused | RelayOutcome::Forwarded => {}
        }
    }
}

/// An open connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The error code of a response frame the server built, if it is an error:
/// `{"jsonrpc":"2.0","id":<id>,"error":{"code":<n>,…`. Only the head is
/// read (the id is skipped, whatever it holds), so a relay's `data` or
/// result can never be taken for it. Batches (`[…]`) are counted element by
/// element where they are built, so they are not looked into here.
fn error_code(frame: &str) -> Option<i32> {
    let rest = frame.strip_prefix("{\"jsonrpc\":\"2.0\",\"id\":")?;
    let rest = skip_id(rest)?;
    let rest = rest.strip_prefix(",\"error\":{\"code\":")?;
    let end = rest.find(|c: char| c != '-' && !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// What follows a JSON id (a string, a number or null).
fn skip_id(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    if bytes.first() == Some(&b'"') {
        let mut escaped = false;
        for (at, b) in bytes.iter().enumerate().skip(1) {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => return text.get(at + 1..),
                _ => {}
            }
        }
        return None;
    }
    text.find(',').map(|at| &text[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_code_is_read_from_the_head_only() {
        for (frame, want) in [
            (r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32009,"message":"busy"}}"#, Some(-32009)),
            (
                r#"{"jsonrpc":"2.0","id":"a\",\"error\":{\"code\":1","error":{"code":-32700,"message":"x"}}"#,
                Some(-32700),
            ),
            (r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"x"}}"#, Some(-32600)),
            (r#"{"jsonrpc":"2.0","id":-1.5e3,"result":{"error":{"code":-32000}}}"#, None),
            (r#"{"jsonrpc":"2.0","id":"x","result":null}"#, None),
            ("[]", None),
        ] {
            assert_eq!(error_code(frame), want, "{frame}");
        }
    }

    #[test]
    fn labels_come_from_fixed_tables() {
        assert_eq!(code_label(-32009), "-32009");
        assert_eq!(code_label(-32001), "-32001");
        assert_eq!(code_label(-32602), "-32602");
        assert_eq!(code_label(42), "other");
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
