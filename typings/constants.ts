// Generated from the Rust constants by interfaces/src/typings.rs. Do not edit.

/** The error code a member without WebRTC answers an offer with (client to client). */
export const NO_WEBRTC = -32011;

/** The largest body a broadcast, unicast or reply may carry, in bytes. */
export const MAX_BODY_BYTES = 262138;
