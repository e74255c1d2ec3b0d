/**
 * The browser API of webrtc-p2p: what `SimpleService` (simple/ts/, served by
 * the server as the ES module `/webrtc-p2p.js`) promises its users.
 *
 * A service is one WebSocket session with the signaling server. Through it a
 * page creates or joins groups; inside a group every pair of members that the
 * group's capability lets talk opens an RTCPeerConnection with one
 * DataChannel, and `broadcast` / `unicast` travel over those channels. A pair
 * that cannot connect directly keeps talking through the server's `relay`
 * (same API; `linkState` says `'relayed'`).
 *
 * The wire protocol underneath is interfaces/README.md; the peer-to-peer
 * payloads (DataChannel frames, relayed messages) are documented at the end
 * of this file.
 */

import type { GroupId } from '../typings/GroupId';
import type { UserId } from '../typings/UserId';

/**
 * Ids are the wire's (typings/, generated from the Rust types): 32 lowercase
 * hex digits, a `UserId` from `init`, a `GroupId` from `create`.
 */
export type { GroupId, UserId };

/**
 * Who may talk to whom in a group, as bits. A pair of members may exchange a
 * kind of message when the capability has that kind's *Everyone* bit, or when
 * one of the two is the owner and it has that kind's *Owner* bit. Links
 * (RTCPeerConnections) exist between the pairs that some bit allows: a full
 * mesh when an Everyone bit is set, a star around the owner otherwise.
 *
 * Combine bits with `|`; the server accepts 1..=15 and defaults to
 * `BroadcastEveryone | UnicastEveryone` (10).
 */
export enum GroupCapability {
  /** Broadcasts travel between the owner and each member (both ways). */
  BroadcastOwner = 1,
  /** Broadcasts travel between any two members. */
  BroadcastEveryone = 2,
  /** Unicasts travel between the owner and each member (both ways). */
  UnicastOwner = 4,
  /** Unicasts travel between any two members. */
  UnicastEveryone = 8,
}

/**
 * The state of the link from this member to another one:
 * - `'connecting'`: negotiating P2P; messages wait in order until it settles;
 * - `'direct'`: the DataChannel is open and carries the messages;
 * - `'relayed'`: P2P failed, timed out or died, or the member has no WebRTC;
 *   messages go through the server;
 * - `'closed'`: no link: the member left, this member left, or the capability
 *   gives the pair nothing to exchange.
 */
export type LinkState = 'connecting' | 'direct' | 'relayed' | 'closed';

/**
 * What can be sent. Views are sent as the bytes they view (copied when the
 * call is made: the buffer may be reused at once). At most
 * `ServiceOptions.maxMessageBytes` (default 64 MiB) bytes, UTF-8 for a
 * string; more is `LimitExceeded`. Past `MAX_BODY_BYTES` a message travels
 * in chunks, on either path, and arrives whole.
 */
export type Data = ArrayBuffer | ArrayBufferView | string;

/** The largest body that travels in one piece: one DataChannel frame, one relay under the server's limit. */
export declare const MAX_BODY_BYTES: number;

/** The default `ServiceOptions.maxMessageBytes`: 64 MiB. */
export declare const DEFAULT_MAX_MESSAGE_BYTES: number;

/** Options of one `broadcast` or `unicast`. */
export interface SendOptions {
  /**
   * Called as the message is handed to the links: bytes so far and in
   * all, both counted over every target (a broadcast to 3 members of a
   * 1 MiB message has a total of 3 MiB). Monotonic; the last call has
   * `sent === total`.
   */
  readonly onprogress?: (sent: number, total: number) => void;
  /**
   * Cancels the send: the promise rejects with `signal.reason` (as `fetch`
   * does), no more of the message leaves, and receivers drop what they
   * hold of it. Parts that were complete stay delivered.
   */
  readonly signal?: AbortSignal;
}

/**
 * What arrives: a string stays a string; binary data arrives as a
 * `Uint8Array` that owns its buffer (offset 0, exactly the bytes sent).
 */
export type Received = string | Uint8Array;

/**
 * Every code an `RpcError` carries. The standard JSON-RPC codes and the
 * server's application codes (-32001..-32010, -32012..-32014,
 * -32800) keep their
 * wire meaning; the client raises the same codes for the same conditions it
 * detects itself (e.g. a unicast to a non-member is `UserNotFound`, a
 * DataChannel unicast that gets no answer in time is `RelayTimeout`).
 * `ConnectionClosed` is the only code that never travels: the WebSocket is
 * gone.
 */
export enum ErrorCode {
  ParseError = -32700,
  InvalidRequest = -32600,
  /** Also: the target of a unicast has no `onunicast` handler. */
  MethodNotFound = -32601,
  InvalidParams = -32602,
  /** Also: the target's `onunicast` threw; `message` is its message. */
  InternalError = -32603,
  /** The service's WebSocket is closed (by `close()` or by the network). */
  ConnectionClosed = -32000,
  NotInitialized = -32001,
  AlreadyInitialized = -32002,
  GroupNotFound = -32003,
  NotAMember = -32004,
  UserNotFound = -32005,
  PermissionDenied = -32006,
  RelayTimeout = -32007,
  PeerGone = -32008,
  Busy = -32009,
  LimitExceeded = -32010,
  /**
   * Never rejects a call of this API: it is what a member without WebRTC
   * (say, a Rust program) answers an offer with, so that the link to it is
   * `'relayed'` at once (see `RelayPayload`).
   */
  NoWebRtc = -32011,
  /**
   * A resume the server refused (bad, expired or foreign ticket, or the
   * session is over): the session has ended.
   */
  ResumeFailed = -32012,
  /**
   * `join()` on a server with an auth secret: the `token` option is
   * missing, malformed, badly signed, expired or not yet valid.
   * (`createGroup`/`joinGroup` that the token does not grant reject with
   * `PermissionDenied`.)
   */
  Unauthorized = -32013,
  /** The member answered a relay with something that is not a JSON-RPC response. */
  InvalidAnswer = -32014,
  /** A relay its caller cancelled with `$/cancelRequest` (LSP's code). */
  RequestCancelled = -32800,
}

/**
 * The one error type every promise of this API rejects with. `code` is an
 * `ErrorCode` (a number the server or a peer sent is kept even when this
 * version does not name it).
 */
export interface IRpcError extends Error {
  readonly name: 'RpcError';
  readonly code: ErrorCode | number;
  /** The `data` member of the JSON-RPC error object, when there was one. */
  readonly data?: unknown;
}

/** Facts about this session, valid after `IService.join()` resolved. */
export interface IServiceInfo {
  /** This session's user id. */
  id(): UserId;
}

/** Knobs of `new SimpleService(url, options)`; every one is optional. */
export interface ServiceOptions {
  /**
   * The join token an app's backend minted for this user (a JWT), for a
   * server with an auth secret: it says whether this user may create
   * groups, which groups it may join, and what other members are told about
   * it (`IGroup.memberInfo`). A server without an auth secret ignores it.
   */
  readonly token?: string;
  /**
   * Passed to every RTCPeerConnection; default `{ iceServers: [] }`. The
   * ICE servers the server hands out (STUN, and TURN with short-lived
   * credentials, fetched after `init` and refreshed before they expire) are
   * added to `iceServers`.
   */
  readonly rtcConfig?: RTCConfiguration;
  /** How long a link may stay `'connecting'` before it is relayed; default 10 000 ms. */
  readonly connectTimeoutMs?: number;
  /** How long a DataChannel unicast waits for its reply; default 10 000 ms. */
  readonly unicastTimeoutMs?: number;
  /**
   * The largest message this member sends or takes, in bytes; default
   * 64 MiB. A larger send is `LimitExceeded`; a larger incoming one is
   * refused (a unicast's sender gets `LimitExceeded`) before any of it is
   * held.
   */
  readonly maxMessageBytes?: number;
  /**
   * While reconnecting, the most of relayed messages (their JSON text, about
   * their size in bytes) that may wait for the server; default 4 MiB. Past
   * it, a `broadcast` or `unicast` that would go through the server is
   * `LimitExceeded` at once (nothing is dropped unsaid); DataChannel
   * messages, signalling, and the chunks of a large message (a few at a
   * time) are not counted.
   */
  readonly maxReconnectBufferBytes?: number;
  /**
   * Test hook: links to the peers for which this returns true exchange no
   * ICE candidates, so P2P genuinely fails and the link falls back to relay
   * after `connectTimeoutMs`.
   */
  readonly forceRelay?: (peer: UserId) => boolean;
}

/**
 * Where a service's connection to the server stands (from `join()` on).
 * `'reconnecting'`: the WebSocket dropped (or the server's node is stopping
 * and closed it with 1012) and the service is resuming the
 * session (same user id, same groups; nobody else is told), dialing at
 * once, then after 0.3, 1.2, 2.7 and 4.8 s, then every 7 s (each with up to
 * half of itself, at most 1 s, of jitter) until the server's resume window
 * is over; calls and relayed messages wait and then go, each once and in
 * order; DataChannels carry on. `'closed'`: the session is over (`onclose`
 * ran).
 */
export type ConnectionState = 'connected' | 'reconnecting' | 'closed';

export interface IService {
  /** Opens the WebSocket and calls `init`; resolves with this session's facts. */
  join(): Promise<IServiceInfo>;
  /**
   * Closes the session: every group is left (the server tells the others).
   * A closed service stays closed; make a new one to come back.
   */
  close(): void;
  /** This session's facts; throws `NotInitialized` before `join()` resolved. */
  info(): IServiceInfo;
  /** Creates a group owned by this session; default capability 10. */
  createGroup(capability?: GroupCapability | number): Promise<IGroup>;
  /** Joins a group by id; joining a group twice returns the same `IGroup`. */
  joinGroup(id: GroupId): Promise<IGroup>;
  /**
   * Called once when the session ends: by `close()`, or when a dropped
   * connection could not be resumed (the resume window passed, the server
   * refused). A drop that is resumed does not end it.
   */
  onclose: (() => void) | null;
  /** See `ConnectionState`. */
  readonly connectionState: ConnectionState;
  /** Called on every change of `connectionState`. */
  onconnectionstatechange: ((state: ConnectionState) => void) | null;
}

/**
 * A group as one member sees it. Handlers are plain properties (assign
 * `null` to remove); they are called with this member's view already
 * updated (`members()`, `linkState()`). Handlers set in the task that
 * `createGroup`/`joinGroup` resolved in (right after the `await`) miss
 * nothing: what other members send meanwhile is held until then.
 */
export interface IGroup {
  /** A broadcast from another member arrived. */
  onmessage: ((from: UserId, data: Received) => void) | null;
  /**
   * A unicast from another member arrived: return (or resolve) the reply.
   * A throw becomes an `InternalError` at the sender; no handler, a
   * `MethodNotFound`.
   */
  onunicast: ((from: UserId, data: Received) => Data | Promise<Data>) | null;
  /** A member joined (it is already in `members()`). */
  onmemberjoin: ((member: UserId) => void) | null;
  /** A member left or disconnected (it is no longer in `members()`). */
  onmemberleave: ((member: UserId) => void) | null;
  /** The link to `member` changed state. */
  onlinkstatechange: ((member: UserId, state: LinkState) => void) | null;

  id(): GroupId;
  capability(): GroupCapability | number;
  /** The owner: the creator, then the earliest-joined remaining member. */
  owner(): UserId;
  /** User ids in join order, this member included, the owner first. */
  members(): UserId[];
  /**
   * What the app's backend said about `member`: the `info` claim of its
   * join token (any JSON). `undefined` when it had none, for a non-member,
   * and on a server without join tokens.
   */
  memberInfo(member: UserId): unknown;
  /** The state of the link to `member` (`'closed'` for a non-member or itself). */
  linkState(member: UserId): LinkState;

  /**
   * Sends `data` to every member the capability lets this member broadcast
   * to; resolves once all of it is handed to every link (no delivery
   * receipt). Rejects with `PermissionDenied` when the capability lets this
   * member broadcast to no one while there are other members, with
   * `LimitExceeded` past `maxMessageBytes`, with `PeerGone` when a target
   * left before it had all of a chunked message (the others still get it),
   * and with `signal.reason` when aborted.
   */
  broadcast(data: Data, options?: SendOptions): Promise<void>;
  /**
   * Sends `data` to `target` and resolves with its `onunicast` reply (which
   * may be large too). Rejects with `UserNotFound` (not a member),
   * `PermissionDenied`, `LimitExceeded`, `RelayTimeout`, `PeerGone` (it
   * left, or its link died before the reply), `MethodNotFound`,
   * `InternalError`, `signal.reason` when aborted or, when the session is
   * gone, `ConnectionClosed`.
   */
  unicast(target: UserId, data: Data, options?: SendOptions): Promise<Received>;
  /**
   * Leaves the group and closes its links; later calls reject with
   * `NotAMember` (with `ConnectionClosed` once the session is gone).
   */
  leave(): Promise<void>;
}

/**
 * Peer-to-peer payloads: what two clients exchange. Not needed to use the
 * API; written down so that another client can interoperate (the Rust
 * client's `Member` speaks all of it: `simple::client::payload` through
 * the server, its links on DataChannels).
 *
 * Through the server, the `data` of a `relay` is one `RelayPayload`:
 * - an offer goes as a `relay` *request*
 *   `{"signal": {"description": {"type": "offer", "sdp": …}}}`; a peer that
 *   takes it answers `null` (its SDP answer follows as a signal of its own);
 * - every other signal goes as a `relay` *notification* (no reply):
 *   `{"signal": {"description": RTCSessionDescriptionInit}}` (answers),
 *   `{"signal": {"candidate": RTCIceCandidateInit}}`, or
 *   `{"signal": {"webrtc": false}}` (see below);
 * - a relayed broadcast is a notification `{"broadcast": Body}`;
 * - a relayed unicast is a request `{"unicast": Body}`, answered with a
 *   `Body` result or an error object (code as in `ErrorCode`);
 * - a `Body` is `{"text": string}` or `{"base64": string}` (standard
 *   alphabet, padded), at most `MAX_BODY_BYTES` decoded bytes.
 *
 * A message larger than `MAX_BODY_BYTES` is relayed as a *transfer*: chunks
 * `{"chunk": RelayChunk}`, each a `relay` *request*, with `seq` 0, 1, 2, …
 * in order; `seq` 0 also announces `kind`, `text` and the total `size`.
 * The receiver answers each with `null` once it holds the chunk; the sender
 * keeps at most 2 chunks of a transfer unanswered (so that what waits in
 * the server stays bounded, and a sender never looks like an abuser) and
 * stops at any error answer. Chunks carry at most 256 KiB (a relay stays
 * under the server's 1 MiB limit; this client sends 64 KiB, about 86 KiB
 * relayed, so a small message waits behind little). The receiver holds one
 * buffer of exactly `size` bytes (it refuses a `size` over its own
 * `maxMessageBytes` with `LimitExceeded`, and chunks past `size` or out of
 * order with `InvalidParams`), hands the message over once it is whole,
 * and drops a transfer that gets no chunk for 30 s. `{"abort": id}` (a
 * notification) drops transfer `id` of its sender at once.
 * - `kind: "broadcast"`: the last chunk is answered `null`.
 * - `kind: "unicast"`: the last chunk is answered as a relayed unicast is:
 *   with the reply `Body`, an error object, or, when the reply itself is
 *   larger than `MAX_BODY_BYTES`, `{"chunked": id}`: the reply is transfer
 *   `id` of `kind: "reply"` from the target (its chunks may arrive before
 *   that answer does). A small `{"unicast": Body}` may get such an answer
 *   too.
 * Transfer ids are chosen by the sender (unsigned 32-bit), unique among its
 * unfinished transfers to that receiver.
 *
 * A member that speaks no WebRTC (e.g. the Rust client's `Member` built
 * with `no_webrtc()`) still takes part, over the server: it answers every
 * offer with the error `{"code": -32011, "message": …}`
 * (`ErrorCode.NoWebRtc`), and sends
 * `{"signal": {"webrtc": false}}` to every member it may exchange messages
 * with, once, when either of them joins (the side of a pair that does not
 * open the DataChannel never offers, so the error alone would not reach
 * it). A link whose offer is answered with anything but `null` (any error,
 * any other result), or that receives `{"webrtc": false}`, is `'relayed'`
 * at once instead of at `connectTimeoutMs`.
 *
 * On a DataChannel (ordered, reliable, label `"webrtc-p2p"`) every message is
 * one binary frame: a 6-byte header, then the payload bytes.
 *   byte 0: kind — 0 broadcast, 1 unicast request, 2 unicast reply,
 *           3 unicast error (payload: UTF-8 JSON `{"code", "message"}`),
 *           4 transfer start, 5 transfer chunk, 6 transfer abort;
 *   byte 1: payload type — 0 UTF-8 text, 1 bytes;
 *   bytes 2..6: request id, unsigned 32-bit big-endian (0 for broadcasts),
 *           chosen by the requester and echoed by the reply; for kinds
 *           4..6, the transfer id (chosen by the sender).
 * A message larger than `MAX_BODY_BYTES` (kind 0, 1 or 2) is a transfer:
 * one start frame, a 15-byte header and no payload — byte 1 the payload
 * type, bytes 2..6 the transfer id, byte 6 the message's kind (0..2),
 * bytes 7..11 its request id, bytes 11..15 its size (both u32 big-endian) —
 * then chunk frames (kind 5, byte 1 zero) whose payloads, in order, add up
 * to the size (64 KiB each from this client; any size up to the channel's
 * limit is taken). The message counts as sent with its last chunk; a
 * request's reply timeout starts then. Frames of other messages may come
 * between the chunks, including chunks of other transfers. An abort frame
 * (kind 6) drops the transfer; a receiver refuses a size over its
 * `maxMessageBytes` (a request with an error frame `LimitExceeded`) and
 * drops a transfer that gets no chunk for 30 s or whose link leaves
 * 'direct'.
 *
 * A link has a second DataChannel, the *control channel*, for whole frames
 * (kinds 0..3): ordered, reliable, label `"webrtc-p2p-control"`, negotiated
 * out of band (`{negotiated: true, id: 2}`) by both sides — the side that
 * opens the main channel at once, the other once the main channel reached
 * it (a channel made before the offer is applied would make it offer
 * too). On an ordered channel a small message waits behind every chunk
 * queued before it; on a stream of its own SCTP sends it between two chunk
 * frames. Transfer frames (kinds 4..6) stay on the main channel. Two frames
 * of the link's own, header only (bytes 1..6 zero), switch a pair over:
 *   kind 7, hello: sent on the control channel once it is open, and once
 *           more in answer to the first hello received (the peer's first
 *           one may have come before its channel existed): "I take whole
 *           frames here";
 *   kind 8, moved: sent on the main channel, after the whole frames queued
 *           there, by a side that got a hello, before its first whole frame
 *           on the control channel: "my whole frames come there from now".
 *   kind 9, ack: sent on the control channel by a side that said hello,
 *           for each chunk frame it took in; bytes 2..6 its length in
 *           bytes (u32 big-endian). Never held back.
 * A receiver holds what arrives on the control channel (acks aside) until
 * the peer's moved frame arrives on the main one, so that frames stay in
 * send order. A peer without the control channel never says hello (data on
 * a stream it has no channel for is dropped), and gets everything on the
 * main channel. This client keeps the chunk bytes a peer that said hello
 * has not acked under a window (128 KiB to 4 MiB, about 40 ms of what the
 * peer acked lately): every queue between the pages stays short, so a
 * small message waits little and no burst overflows a buffer on the way
 * (a lost packet stalls the association for a retransmission timeout).
 */
export type RelayPayload =
  | { readonly signal: { readonly description: RTCSessionDescriptionInit } }
  | { readonly signal: { readonly candidate: RTCIceCandidateInit } }
  | { readonly signal: { readonly webrtc: false } }
  | { readonly broadcast: RelayBody }
  | { readonly unicast: RelayBody }
  | { readonly chunk: RelayChunk }
  | { readonly abort: number };

/** One chunk of a relayed transfer; `kind`, `text` and `size` only with `seq` 0. */
export interface RelayChunk {
  /** The transfer id, unsigned 32-bit, chosen by the sender. */
  readonly id: number;
  /** 0, 1, 2, … in sending order. */
  readonly seq: number;
  /** This chunk's bytes (standard alphabet, padded), at most 256 KiB decoded. */
  readonly base64: string;
  /** What the whole message is: a broadcast, a unicast request, or a unicast's reply. */
  readonly kind?: 'broadcast' | 'unicast' | 'reply';
  /** Whether the whole message's bytes are UTF-8 text (a `string` at the receiver). */
  readonly text?: boolean;
  /** The whole message's bytes. */
  readonly size?: number;
}

/** A message body inside a relayed payload. */
export type RelayBody = { readonly text: string } | { readonly base64: string };
