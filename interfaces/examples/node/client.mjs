// A webrtc-p2p member in Node.js: json-rpc-2.0 makes the calls and answers
// the server's, over the WebSocket built into Node 22 (Node 20: run it with
// --experimental-websocket). It speaks no WebRTC, so the others relay to it
// through the server; it answers each unicast in upper case.
// Usage: node client.mjs ws://127.0.0.1:3001/ws [GROUP_ID]  (no id: a new group)
import { JSONRPCClient, JSONRPCErrorException, JSONRPCServer, JSONRPCServerAndClient } from 'json-rpc-2.0';

const NO_WEBRTC = { signal: { webrtc: false } }; // sent to each member, so it relays to us at once
const [url, groupId] = process.argv.slice(2);
const ws = new WebSocket(url);
const rpc = new JSONRPCServerAndClient(
  new JSONRPCServer(),
  new JSONRPCClient((message) => ws.send(JSON.stringify(message))),
);
ws.onmessage = (event) => rpc.receiveAndSend(JSON.parse(event.data));
ws.onclose = () => rpc.rejectAllPendingRequests('connection closed');

rpc.addMethod('relay', ([, from, data]) => {
  if (data.signal?.description?.type === 'offer') throw new JSONRPCErrorException('no WebRTC here', -32011);
  if (data.broadcast) console.log(`${from}: ${JSON.stringify(data.broadcast)}`);
  const body = data.unicast;
  return body?.text !== undefined ? { text: body.text.toUpperCase() } : (body ?? null);
});
rpc.addMethod('member_joined', ([group, user]) => rpc.notify('relay', [group, user, NO_WEBRTC]));
rpc.addMethod('member_left', () => null);

await new Promise((resolve) => ws.addEventListener('open', resolve));
const me = await rpc.request('init', []);
const group = groupId ?? (await rpc.request('create', []));
await rpc.request('join', [group]); // joining again is harmless for the creator
console.log(`member ${me} of group ${group}`);
for (const member of await rpc.request('get_members', [group])) {
  if (member !== me) rpc.notify('relay', [group, member, NO_WEBRTC]);
}
