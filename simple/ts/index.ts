/**
 * webrtc-p2p's browser client, bundled as the ES module `/webrtc-p2p.js`.
 *
 * # Layout
 * - `service.ts`: `SimpleService`, the WebSocket session and JSON-RPC peer.
 * - `group.ts`: one group: members, links, broadcast/unicast routing.
 * - `link.ts`: one RTCPeerConnection + DataChannel, perfect negotiation.
 * - `payload.ts`: DataChannel frames and relayed bodies (client ↔ client).
 * - `wire.ts`: the server's messages, checked (client ↔ server).
 * - `capability.ts`: capability bits and the pair rule.
 * - `errors.ts`: `RpcError` and its codes.
 *
 * The public contract is interfaces/api.d.ts.
 */
export { GroupCapability } from './capability';
export { ErrorCode, RpcError } from './errors';
export { MAX_BODY_BYTES } from './payload';
export { DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_UNICAST_TIMEOUT_MS, SimpleService } from './service';
export type {
  Data,
  GroupId,
  IGroup,
  IRpcError,
  IService,
  IServiceInfo,
  LinkState,
  Received,
  ServiceOptions,
  UserId,
} from '../../interfaces/api';

// The runtime enums above restate the contract's; tsc proves them equal,
// member for member, in both directions.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Proof<T extends true> = T;
export type EnumsMatchContract = [
  Proof<Same<typeof import('./capability').GroupCapability, typeof import('../../interfaces/api').GroupCapability>>,
  Proof<Same<typeof import('./errors').ErrorCode, typeof import('../../interfaces/api').ErrorCode>>,
];

// And the protocol's application codes (typings/, generated from Rust) are
// these, by name and value.
type ProtocolCodes = typeof import('../../typings/ErrorCode').ErrorCode;
type OurCodes = typeof import('./errors').ErrorCode;
export type ErrorCodesMatchProtocol = Proof<
  Same<
    { [K in keyof ProtocolCodes]: ProtocolCodes[K] },
    { [K in keyof ProtocolCodes]: `${OurCodes[K]}` extends `${infer N extends number}` ? N : never }
  >
>;
