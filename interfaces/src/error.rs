//! The application errors, each mapped to exactly one JSON-RPC error code.

use jsonrpsee::types::{ErrorObject, ErrorObjectOwned};

/// Every application error of the protocol. `code()` is its wire code;
/// [`ErrorCode::from_code`] turns a received code back into the variant, so
/// Rust callers can `match` on what the server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ErrorCode {
    /// Any method but `init` before `init`.
    #[error("not initialized: call init first")]
    NotInitialized,
    /// A second `init` on the same connection.
    #[error("already initialized")]
    AlreadyInitialized,
    /// No such group, or it is gone.
    #[error("group not found")]
    GroupNotFound,
    /// The caller is not a member of that group.
    #[error("not a member of that group")]
    NotAMember,
    /// The target is not a member of that group. Also what a user outside
    /// all of the caller's groups looks like, so ids cannot be enumerated.
    #[error("user not found in that group")]
    UserNotFound,
    /// The group's capability forbids signalling between that pair.
    #[error("permission denied by the group's capability")]
    PermissionDenied,
    /// The target did not answer a relay in time.
    #[error("relay timed out: the target did not answer in time")]
    RelayTimeout,
    /// The target disconnected before answering a relay.
    #[error("peer gone: the target disconnected before answering")]
    PeerGone,
    /// Too many of the caller's requests in flight (or past its rate limit).
    #[error("busy: too many requests in flight")]
    Busy,
    /// Too many groups for a user, or members in a group; or a relay too
    /// large for its target.
    #[error("limit exceeded")]
    LimitExceeded,
    /// `resume` with a bad, expired or foreign ticket, or for a session that
    /// is over: the client starts afresh with `init`.
    #[error("resume failed: start afresh with init")]
    ResumeFailed,
    /// `init` on a server with an auth secret without a valid join token:
    /// missing, malformed, badly signed, of another algorithm, expired or
    /// not yet valid.
    #[error("unauthorized: no valid join token")]
    Unauthorized,
    /// The target answered a relay with something that is not a JSON-RPC
    /// response (no `jsonrpc`, both or neither of `result` and `error`, or
    /// an `error` that is not an object).
    #[error("invalid answer: the target's answer is not a JSON-RPC response")]
    InvalidAnswer,
    /// The caller cancelled the relay (`$/cancelRequest`) before the target
    /// answered. The code is LSP's, so that stock clients that cancel (such
    /// as vscode-jsonrpc) recognise it.
    #[error("request cancelled")]
    RequestCancelled,
}

impl ErrorCode {
    /// All variants, in code order.
    pub const ALL: [Self; 14] = [
        Self::NotInitialized,
        Self::AlreadyInitialized,
        Self::GroupNotFound,
        Self::NotAMember,
        Self::UserNotFound,
        Self::PermissionDenied,
        Self::RelayTimeout,
        Self::PeerGone,
        Self::Busy,
        Self::LimitExceeded,
        Self::ResumeFailed,
        Self::Unauthorized,
        Self::InvalidAnswer,
        Self::RequestCancelled,
    ];

    /// The JSON-RPC error code: -32001 to -32010, -32012 to -32014 (-32011
    /// is the clients' NoWebRtc), and LSP's -32800.
    pub const fn code(self) -> i32 {
        match self {
            Self::NotInitialized => -32001,
            Self::AlreadyInitialized => -32002,
            Self::GroupNotFound => -32003,
            Self::NotAMember => -32004,
            Self::UserNotFound => -32005,
            Self::PermissionDenied => -32006,
            Self::RelayTimeout => -32007,
            Self::PeerGone => -32008,
            Self::Busy => -32009,
            Self::LimitExceeded => -32010,
            Self::ResumeFailed => -32012,
            Self::Unauthorized => -32013,
            Self::InvalidAnswer => -32014,
            Self::RequestCancelled => -32800,
        }
    }

    /// The variant for a wire code, if it is one of ours.
    pub fn from_code(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.code() == code)
    }

    /// The error's name as the protocol page writes it (`GroupNotFound`, …),
    /// for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::NotInitialized => "NotInitialized",
            Self::AlreadyInitialized => "AlreadyInitialized",
            Self::GroupNotFound => "GroupNotFound",
            Self::NotAMember => "NotAMember",
            Self::UserNotFound => "UserNotFound",
            Self::PermissionDenied => "PermissionDenied",
            Self::RelayTimeout => "RelayTimeout",
            Self::PeerGone => "PeerGone",
            Self::Busy => "Busy",
            Self::LimitExceeded => "LimitExceeded",
            Self::ResumeFailed => "ResumeFailed",
            Self::Unauthorized => "Unauthorized",
            Self::InvalidAnswer => "InvalidAnswer",
            Self::RequestCancelled => "RequestCancelled",
        }
    }

    /// The code of a JSON-RPC error object, if it is one of ours.
    pub fn of(error: &ErrorObject<'_>) -> Option<Self> {
        Self::from_code(error.code())
    }
}

impl From<ErrorCode> for ErrorObjectOwned {
    fn from(e: ErrorCode) -> Self {
        ErrorObject::owned(e.code(), e.to_string(), None::<()>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_protocols_in_order() {
        let codes: Vec<i32> = ErrorCode::ALL.into_iter().map(ErrorCode::code).collect();
        let mut want: Vec<i32> = (1..=10).map(|i| -32000 - i).collect();
        want.extend([-32012, -32013, -32014, -32800]);
        assert_eq!(codes, want);
        for e in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(e.code()), Some(e));
            assert_eq!(format!("{e:?}"), e.name());
        }
        assert_eq!(ErrorCode::from_code(-32000), None);
        assert_eq!(ErrorCode::from_code(-32602), None);
    }

    #[test]
    fn error_object_carries_code_and_message() {
        let obj = ErrorObjectOwned::from(ErrorCode::GroupNotFound);
        assert_eq!(obj.code(), -32003);
        assert_eq!(obj.message(), "group not found");
        assert_eq!(ErrorCode::of(&obj), Some(ErrorCode::GroupNotFound));
    }
}
