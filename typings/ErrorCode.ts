// Generated from the Rust `ErrorCode` by interfaces/src/typings.rs. Do not edit.

/** The application error codes of the protocol (JSON-RPC `error.code`). */
export const ErrorCode = {
  /** not initialized: call init first. */
  NotInitialized: -32001,
  /** already initialized. */
  AlreadyInitialized: -32002,
  /** group not found. */
  GroupNotFound: -32003,
  /** not a member of that group. */
  NotAMember: -32004,
  /** user not found in that group. */
  UserNotFound: -32005,
  /** permission denied by the group's capability. */
  PermissionDenied: -32006,
  /** relay timed out: the target did not answer in time. */
  RelayTimeout: -32007,
  /** peer gone: the target disconnected before answering. */
  PeerGone: -32008,
  /** busy: too many requests in flight. */
  Busy: -32009,
  /** limit exceeded. */
  LimitExceeded: -32010,
  /** resume failed: start afresh with init. */
  ResumeFailed: -32012,
  /** unauthorized: no valid join token. */
  Unauthorized: -32013,
  /** invalid answer: the target's answer is not a JSON-RPC response. */
  InvalidAnswer: -32014,
  /** request cancelled. */
  RequestCancelled: -32800,
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];
