// `Group` without a browser: topology (which peers get a link), ownership,
// membership and routing, with stand-in links (unit.mjs) the test drives.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { fakeHost, id, linkedPeers, loadClient } from './unit.mjs';

let client;
before(async () => {
  client = await loadClient();
});

const [A, B, C, D] = [1, 2, 3, 4].map(id);

/** A's group, owned by `owner`, as A sees it after joining with `members`. */
function groupOf(host, { owner = A, capability = 10, members = [A, B, C] } = {}) {
  const group = new client.Group(id(0xabc), owner, capability, members, host);
  group.handOver();
  return group;
}

test('Everyone bits make a full mesh; Owner bits alone a star around the owner', () => {
  const { GroupCapability: Cap } = client;
  const mesh = fakeHost(B);
  groupOf(mesh, { capability: Cap.BroadcastEveryone, members: [A, B, C, D] });
  assert.deepEqual(linkedPeers(mesh), [A, C, D]);

  const spoke = fakeHost(B);
  groupOf(spoke, { capability: Cap.BroadcastOwner | Cap.UnicastOwner, members: [A, B, C, D] });
  assert.deepEqual(linkedPeers(spoke), [A]);

  const hub = fakeHost(A);
  groupOf(hub, { capability: Cap.UnicastOwner, members: [A, B, C, D] });
  assert.deepEqual(linkedPeers(hub), [B, C, D]);
});

test('of each pair the lower id is polite, so exactly one side opens the channel', () => {
  const host = fakeHost(B);
  groupOf(host, { members: [A, B, C] });
  assert.equal(host.links.get(A).options.polite, false);
  assert.equal(host.links.get(C).options.polite, true);
});

test('when the owner leaves, the earliest-joined member owns the group and the star moves to it', () => {
  const { GroupCapability: Cap } = client;
  const host = fakeHost(C);
  const group = groupOf(host, { owner: A, capability: Cap.BroadcastOwner, members: [A, B, C, D] });
  const left = [];
  group.onmemberleave = (member) => left.push(member);
  assert.deepEqual(linkedPeers(host), [A]);

  group.memberLeft(A);
  assert.equal(group.owner(), B);
  assert.deepEqual(group.members(), [B, C, D]);
  assert.deepEqual(left, [A]);
  assert.deepEqual(linkedPeers(host), [B], 'the link to the old owner closes, one to the new owner opens');
  assert.equal(group.linkState(A), 'closed');
});

test('joins and leaves update the member list once, and a departed member is not brought back by a late relay', async () => {
  const host = fakeHost(A);
  const group = groupOf(host, { members: [A, B] });
  const joined = [];
  group.onmemberjoin = (member) => joined.push(member);

  group.memberJoined(C);
  group.memberJoined(C);
  assert.deepEqual(joined, [C]);
  assert.deepEqual(group.members(), [A, B, C]);
  assert.deepEqual(linkedPeers(host), [B, C]);

  group.memberLeft(C);
  assert.deepEqual(group.members(), [A, B]);
  await group.onRelay(C, { broadcast: { text: 'late' } });
  assert.deepEqual(group.members(), [A, B], 'a relay from a member that left does not re-add it');

  // An offer that overtakes `member_joined` does add its sender.
  await group.onRelay(D, { signal: { candidate: { candidate: '' } } });
  assert.deepEqual(group.members(), [A, B, D]);
  assert.deepEqual(joined, [C, D]);

  group.setMembers([A, B, C]);
  assert.deepEqual(group.members(), [A, B, C], 'get_members supersedes what came before');
});

test('messages wait while a link connects, then go on the channel or through the server, in order', async () => {
  const { FrameKind, decodeFrame } = client;
  const host = fakeHost(A);
  const group = groupOf(host, { members: [A, B, C] });
  await group.broadcast('one');
  await group.broadcast(Uint8Array.of(2));
  assert.equal(host.links.get(B).sent.length, 0);
  assert.equal(host.notifications.filter((n) => n.method === 'relay').length, 0);

  host.links.get(B).setState('direct');
  const frames = host.links.get(B).sent.map((bytes) => decodeFrame(bytes.buffer));
  assert.deepEqual(
    frames.map((f) => [f.kind, f.body]),
    [
      [FrameKind.Broadcast, 'one'],
      [FrameKind.Broadcast, Uint8Array.of(2)],
    ],
  );

  host.links.get(C).setState('relayed');
  const relayed = host.notifications.filter((n) => n.method === 'relay').map((n) => n.params);
  assert.deepEqual(relayed, [
    [id(0xabc), C, { broadcast: { text: 'one' } }],
    [id(0xabc), C, { broadcast: { base64: 'Ag==' } }],
  ]);
});

test('a DataChannel unicast is settled by its reply from that peer only, and fails with PeerGone when the link dies', async () => {
  const { ErrorCode, FrameKind, decodeFrame, encodeFrame } = client;
  const host = fakeHost(A);
  const group = groupOf(host, { members: [A, B, C] });
  host.links.get(B).setState('direct');
  host.links.get(C).setState('direct');

  const answered = group.unicast(B, 'ping');
  const [request] = host.links.get(B).sent.map((bytes) => decodeFrame(bytes.buffer));
  assert.equal(request.kind, FrameKind.Request);
  // The same id from another peer is not the answer.
  host.links.get(C).deliver(encodeFrame({ kind: FrameKind.Reply, id: request.id, body: 'wrong' }));
  host.links.get(B).deliver(encodeFrame({ kind: FrameKind.Reply, id: request.id, body: 'pong' }));
  assert.equal(await answered, 'pong');

  const failed = group.unicast(C, 'ping');
  host.links.get(C).setState('relayed');
  await assert.rejects(failed, (error) => error.code === ErrorCode.PeerGone);
});

test('a DataChannel unicast without a reply rejects with RelayTimeout', async () => {
  const { ErrorCode } = client;
  const host = fakeHost(A, { unicastTimeoutMs: 20 });
  const group = groupOf(host, { members: [A, B] });
  host.links.get(B).setState('direct');
  await assert.rejects(group.unicast(B, 'ping'), (error) => error.code === ErrorCode.RelayTimeout);
});

test('an incoming unicast is answered by onunicast, within the capability', async () => {
  const { ErrorCode, GroupCapability: Cap, FrameKind, decodeFrame, encodeFrame } = client;
  const host = fakeHost(B);
  const group = groupOf(host, { owner: A, capability: Cap.UnicastOwner | Cap.BroadcastEveryone, members: [A, B, C] });
  group.onunicast = (from, data) => `${from === A ? 'owner' : 'other'}:${data}`;
  assert.deepEqual(await group.onRelay(A, { unicast: { text: 'hi' } }), { text: 'owner:hi' });
  await assert.rejects(group.onRelay(C, { unicast: { text: 'hi' } }), (error) => error.code === ErrorCode.PermissionDenied);

  host.links.get(A).setState('direct');
  host.links.get(A).deliver(encodeFrame({ kind: FrameKind.Request, id: 7, body: 'x' }));
  await new Promise((resolve) => setImmediate(resolve));
  const [reply] = host.links.get(A).sent.map((bytes) => decodeFrame(bytes.buffer));
  assert.deepEqual([reply.kind, reply.id, reply.body], [FrameKind.Reply, 7, 'owner:x']);
});

test('unicasts to non-members, to itself, or that the capability forbids are refused at once', async () => {
  const { ErrorCode, GroupCapability: Cap } = client;
  const host = fakeHost(B);
  const group = groupOf(host, { owner: A, capability: Cap.UnicastOwner | Cap.BroadcastOwner, members: [A, B, C] });
  await assert.rejects(group.unicast(D, 'x'), (error) => error.code === ErrorCode.UserNotFound);
  await assert.rejects(group.unicast(B, 'x'), (error) => error.code === ErrorCode.UserNotFound);
  await assert.rejects(group.unicast(C, 'x'), (error) => error.code === ErrorCode.PermissionDenied);
});

test('after leave, the links are closed, the host forgets the group and calls reject with NotAMember', async () => {
  const { ErrorCode } = client;
  const host = fakeHost(A);
  const group = groupOf(host, { members: [A, B, C] });
  const waiting = group.unicast(B, 'queued while connecting');
  await group.leave();
  assert.deepEqual(host.calls.at(-1), { method: 'leave', params: [id(0xabc)] });
  assert.deepEqual(linkedPeers(host), []);
  assert.equal(host.forgotten, 1);
  await assert.rejects(waiting, (error) => error.code === ErrorCode.PeerGone);
  await assert.rejects(group.broadcast('x'), (error) => error.code === ErrorCode.NotAMember);
});

test("get_members's answer does not undo a join or leave heard after it was asked (across nodes they can overtake it)", async () => {
  const [E, F] = [5, 6].map(id);
  const host = fakeHost(C);
  // C joined a group of A and B and asked for the members; before the
  // answer (read before D joined and B left) come D's join, B's leave and
  // an offer from F, who joined after D.
  const group = groupOf(host, { members: [A, C] });
  group.askingMembers();
  group.memberJoined(D);
  group.memberLeft(B);
  await group.onRelay(F, { signal: { candidate: { candidate: '' } } });
  group.setMembers([A, B, C]);
  assert.deepEqual(group.members(), [A, C, D, F], 'in join order, B gone');
  assert.deepEqual(linkedPeers(host), [A, D, F]);
  await group.onRelay(B, { broadcast: { text: 'late' } });
  assert.deepEqual(group.members(), [A, C, D, F], 'B stays gone');

  // What came before the question, the answer supersedes.
  group.memberJoined(E);
  group.askingMembers();
  group.setMembers([A, C, D, F]);
  assert.deepEqual(group.members(), [A, C, D, F]);
});
