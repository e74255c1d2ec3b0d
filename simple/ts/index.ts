/**
 * webrtc-p2p's browser client, bundled as the ES module `/webrtc-p2p.js`.
 *
 * # Layout
 * - `service.ts`: `SimpleService`, the WebSocket session and JSON-RPC peer;
 *   hands each group a `GroupHost` (server calls, knobs, link factory).
 * - `certificate.ts`: the one DTLS certificate a service's links share.
 * - `group.ts`: one group: members and owner, which peers get a link
 *   (topology), broadcast/unicast routing. Browser-free: links come from
 *   the host (unit tests: frontend/tests/*.unit.test.mjs).
 * - `outbox.ts`: per peer, the messages waiting while its link connects;
 *   the `Job` a message reports progress and its end to.
 * - `incoming.ts`: transfers being put back together, per path, and
 *   chunked replies meeting their relayed unicasts.
 * - `calls.ts`: DataChannel unicasts waiting for their reply (correlation by frame id).
 * - `link.ts`: `Link`, what a group routes by; `RtcLink`, one
 *   RTCPeerConnection + DataChannel with perfect negotiation.
 * - `transfer.ts`: large messages: cutting into chunks (`Slicer`), putting
 *   back together (`Assembly`), the chunk sizes and limits.
 * - `streams.ts`: one transfer to one peer: `ChannelTransfer` (fed to the
 *   DataChannel as it drains), `RelayTransfer` (relayed, 2 chunks unanswered).
 * - `payload.ts`: DataChannel frames and relayed bodies and chunks (client ↔ client).
 * - `wire.ts`: the server's messages, checked (client ↔ server).
 * - `capability.ts`: capability bits and the pair rule.
 * - `errors.ts`: `RpcError` and its codes (built on typings/ErrorCode.ts).
 *
 * The public contract is interfaces/api.d.ts.
 */
export { GroupCapability } from './capability';
export { ErrorCode, RpcError } from './errors';
export { MAX_BODY_BYTES } from './payload';
export { DEFAULT_MAX_MESSAGE_BYTES } from './transfer';
export { DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_UNICAST_TIMEOUT_MS, SimpleService } from './service';
export type {
  ConnectionState,
  Data,
  GroupId,
  IGroup,
  IRpcError,
  IService,
  IServiceInfo,
  LinkState,
  Received,
  SendOptions,
  ServiceOptions,
  UserId,
} from '../../interfaces/api';

// The runtime values above restate the contract's enums; tsc proves them
// equal, name for name and value for value, in both directions. (errors.ts
// builds on typings/ErrorCode.ts, generated from Rust: a code added there
// must be added to the contract too.)
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Proof<T extends true> = T;
/** An enum's or a const object's members as plain numbers. */
type Values<E> = { -readonly [K in keyof E]: `${E[K] & number}` extends `${infer N extends number}` ? N : never };
export type EnumsMatchContract = [
  Proof<
    Same<
      Values<typeof import('./capability').GroupCapability>,
      Values<typeof import('../../interfaces/api').GroupCapability>
    >
  >,
  Proof<Same<Values<typeof import('./errors').ErrorCode>, Values<typeof import('../../interfaces/api').ErrorCode>>>,
];

// The contract's chunk of a relayed transfer is the one generated from the
// Rust client's (typings/), member for member.
type Writable<T> = { -readonly [K in keyof T]: T[K] };
export type ChunksMatchProtocol = Proof<
  Same<Writable<import('../../interfaces/api').RelayChunk>, import('../../typings/RelayChunk').RelayChunk>
>;
