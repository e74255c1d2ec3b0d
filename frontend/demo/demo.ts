/**
 * The demo page: create a group or join one by its link (`/#<group id>`),
 * see every member and the state of the link to it, chat over `broadcast`,
 * ping a member over `unicast`.
 *
 * It imports the client exactly as any site would: from the server's
 * `/webrtc-p2p.js`.
 */
import { GroupCapability, SimpleService } from '/webrtc-p2p.js';
import type { IGroup, LinkState, UserId } from '/webrtc-p2p.js';

/** What a ping sends, and what the demo answers it with. */
const PING = 'ping';
const PONG = 'pong';
/** Ids are 32 hex digits; the first few tell members apart on screen. */
const SHORT_ID_CHARS = 8;
const GROUP_ID_PATTERN = /[0-9a-f]{32}/;

const STATE_LABELS: Record<LinkState, string> = {
  connecting: 'connecting',
  direct: 'direct',
  relayed: 'relayed',
  closed: 'no link',
};

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`the page has no #${id}`);
  return found as T;
}

const ui = {
  status: element<HTMLSpanElement>('status'),
  selfId: element<HTMLElement>('self-id'),
  banner: element<HTMLDivElement>('banner'),
  lobby: element<HTMLElement>('lobby'),
  createForm: element<HTMLFormElement>('create-form'),
  capability: element<HTMLSelectElement>('capability'),
  joinForm: element<HTMLFormElement>('join-form'),
  joinInput: element<HTMLInputElement>('join-input'),
  room: element<HTMLElement>('room'),
  groupMode: element<HTMLSpanElement>('group-mode'),
  shareLink: element<HTMLInputElement>('share-link'),
  copyLink: element<HTMLButtonElement>('copy-link'),
  leave: element<HTMLButtonElement>('leave'),
  memberCount: element<HTMLSpanElement>('member-count'),
  members: element<HTMLUListElement>('members'),
  messages: element<HTMLOListElement>('messages'),
  composer: element<HTMLFormElement>('composer'),
  messageInput: element<HTMLInputElement>('message-input'),
  send: element<HTMLButtonElement>('send'),
  chatScope: element<HTMLSpanElement>('chat-scope'),
};

const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
// A server with an auth secret wants a join token: the app that links here
// puts one in `?token=`.
const token = new URLSearchParams(location.search).get('token');
const service = new SimpleService(wsUrl, token === null ? {} : { token });
let self: UserId | undefined;
let group: IGroup | undefined;
/** The group's owner as last shown, to say when it changes. */
let shownOwner: UserId | undefined;
/** The last round-trip time measured to each member, shown beside it. */
const rtts = new Map<UserId, string>();

function short(id: UserId): string {
  return id.slice(0, SHORT_ID_CHARS);
}

/** A stable hue per member, so the same member has the same colour on every page. */
function hue(id: UserId): number {
  return parseInt(id.slice(0, 6), 16) % 360;
}

function setStatus(status: 'connecting' | 'online' | 'reconnecting…' | 'offline'): void {
  ui.status.textContent = status;
  ui.status.dataset['status'] = status;
  // Reconnecting looks like connecting: the page is waiting for the server.
  ui.status.className = `pill pill-${status === 'reconnecting…' ? 'connecting' : status}`;
}

function showBanner(text: string): void {
  ui.banner.textContent = text;
  ui.banner.hidden = false;
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function avatar(id: UserId): HTMLSpanElement {
  const badge = document.createElement('span');
  badge.className = 'avatar';
  badge.style.setProperty('--hue', String(hue(id)));
  badge.textContent = id.slice(0, 2).toUpperCase();
  return badge;
}

/** In a star (owner-only) group a member's broadcast reaches the owner alone: say so. */
function chatScope(current: IGroup): string {
  const mesh = (current.capability() & GroupCapability.BroadcastEveryone) !== 0;
  if (mesh) return 'broadcast to the group';
  return current.owner() === self ? 'reaches every member (star)' : 'reaches only the owner (star)';
}

function renderMembers(): void {
  const current = group;
  if (current === undefined) return;
  const owner = current.owner();
  if (shownOwner !== undefined && owner !== shownOwner) {
    addNotice(owner === self ? 'You are now the owner.' : `${short(owner)} is now the owner.`);
  }
  shownOwner = owner;
  ui.chatScope.textContent = chatScope(current);
  const members = current.members();
  ui.memberCount.textContent = String(members.length);
  ui.members.replaceChildren(
    ...members.map((member) => {
      const item = document.createElement('li');
      item.dataset['member'] = member;
      const who = document.createElement('div');
      who.className = 'who';
      const name = document.createElement('code');
      name.textContent = short(member);
      name.title = member;
      who.append(avatar(member), name);
      if (member === self) who.append(tag('you', 'tag-you'));
      if (member === current.owner()) who.append(tag('owner', 'tag-owner'));
      item.append(who);
      if (member !== self) {
        const state = current.linkState(member);
        const stateBadge = document.createElement('span');
        stateBadge.className = `state state-${state}`;
        stateBadge.dataset['state'] = state;
        stateBadge.textContent = STATE_LABELS[state];
        const ping = document.createElement('button');
        ping.type = 'button';
        ping.className = 'ping';
        ping.textContent = 'Ping';
        ping.disabled = state === 'closed';
        ping.addEventListener('click', () => void pingMember(member));
        const rtt = document.createElement('span');
        rtt.className = 'rtt';
        rtt.textContent = rtts.get(member) ?? '';
        const actions = document.createElement('div');
        actions.className = 'actions';
        actions.append(stateBadge, rtt, ping);
        item.append(actions);
      }
      return item;
    }),
  );
  if (members.length === 1) {
    const hint = document.createElement('li');
    hint.className = 'alone';
    hint.textContent = 'No one else yet: share the link above.';
    ui.members.append(hint);
  }
}

function tag(text: string, className: string): HTMLSpanElement {
  const span = document.createElement('span');
  span.className = `tag ${className}`;
  span.textContent = text;
  return span;
}

function addMessage(from: UserId, text: string): void {
  const item = document.createElement('li');
  item.className = from === self ? 'message mine' : 'message';
  item.append(avatar(from));
  const bubble = document.createElement('div');
  bubble.className = 'bubble';
  const author = document.createElement('span');
  author.className = 'from';
  author.textContent = from === self ? 'you' : short(from);
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = text;
  bubble.append(author, body);
  item.append(bubble);
  appendToLog(item);
}

function addNotice(text: string): void {
  const item = document.createElement('li');
  item.className = 'system';
  item.textContent = text;
  appendToLog(item);
}

function appendToLog(item: HTMLLIElement): void {
  ui.messages.append(item);
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

async function pingMember(member: UserId): Promise<void> {
  const current = group;
  if (current === undefined) return;
  rtts.set(member, '…');
  renderMembers();
  const started = performance.now();
  try {
    await current.unicast(member, PING);
    // The path it took: a DataChannel, or the server's relay.
    const path = current.linkState(member) === 'direct' ? 'direct' : 'relayed';
    rtts.set(member, `${(performance.now() - started).toFixed(1)} ms · ${path}`);
  } catch (error) {
    rtts.set(member, errorText(error));
  }
  renderMembers();
}

function enter(joined: IGroup): void {
  group = joined;
  shownOwner = undefined;
  rtts.clear();
  joined.onmessage = (from, data) => {
    if (typeof data === 'string') addMessage(from, data);
  };
  joined.onunicast = (_from, data) => (data === PING ? PONG : data);
  joined.onmemberjoin = (member) => {
    addNotice(`${short(member)} joined`);
    renderMembers();
  };
  joined.onmemberleave = (member) => {
    rtts.delete(member);
    addNotice(`${short(member)} left`);
    renderMembers();
  };
  joined.onlinkstatechange = () => renderMembers();

  if (location.hash !== `#${joined.id()}`) history.replaceState(null, '', `#${joined.id()}`);
  // Without `?token=`: a token is this user's own, not for sharing.
  ui.shareLink.value = `${location.origin}${location.pathname}${location.hash}`;
  const capability = joined.capability();
  ui.groupMode.textContent =
    (capability & (GroupCapability.BroadcastEveryone | GroupCapability.UnicastEveryone)) !== 0 ? 'full mesh' : 'owner only';
  ui.messages.replaceChildren();
  addNotice(joined.owner() === self ? 'You created the group. Share the link to invite people.' : 'You joined the group.');
  if ((capability & GroupCapability.BroadcastEveryone) === 0 && joined.owner() !== self) {
    addNotice('In this group members talk through the owner: your messages reach only the owner.');
  }
  ui.lobby.hidden = true;
  ui.room.hidden = false;
  renderMembers();
  ui.messageInput.focus();
}

function showLobby(): void {
  group = undefined;
  ui.room.hidden = true;
  ui.lobby.hidden = false;
}

async function joinFromHash(): Promise<void> {
  const id = GROUP_ID_PATTERN.exec(location.hash)?.[0];
  if (id === undefined || group?.id() === id) return;
  try {
    if (group !== undefined) await group.leave();
    enter(await service.joinGroup(id));
  } catch (error) {
    history.replaceState(null, '', location.pathname);
    showLobby();
    showBanner(`Could not join that group: ${errorText(error)}`);
  }
}

ui.createForm.addEventListener('submit', (event) => {
  event.preventDefault();
  ui.banner.hidden = true;
  service.createGroup(Number(ui.capability.value)).then(enter, (error: unknown) => {
    showBanner(`Could not create a group: ${errorText(error)}`);
  });
});

ui.joinForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const id = GROUP_ID_PATTERN.exec(ui.joinInput.value)?.[0];
  if (id === undefined) {
    showBanner('That is not a group link: it has no 32-digit group id.');
    return;
  }
  ui.banner.hidden = true;
  location.hash = id;
});

ui.copyLink.addEventListener('click', () => {
  ui.shareLink.select();
  void navigator.clipboard?.writeText(ui.shareLink.value).then(() => {
    ui.copyLink.textContent = 'Copied';
    setTimeout(() => (ui.copyLink.textContent = 'Copy'), 1500);
  });
});

ui.leave.addEventListener('click', () => {
  const current = group;
  if (current === undefined) return;
  history.replaceState(null, '', location.pathname);
  showLobby();
  current.leave().catch((error: unknown) => showBanner(`Leaving failed: ${errorText(error)}`));
});

ui.composer.addEventListener('submit', (event) => {
  event.preventDefault();
  const current = group;
  const text = ui.messageInput.value.trim();
  if (current === undefined || self === undefined || text === '') return;
  ui.messageInput.value = '';
  addMessage(self, text);
  current.broadcast(text).catch((error: unknown) => addNotice(`Not sent: ${errorText(error)}`));
});

window.addEventListener('hashchange', () => void joinFromHash());

// A dropped connection is resumed by the service itself: same id, same
// group, DataChannels untouched; the page only tells.
service.onconnectionstatechange = (state) => {
  if (state === 'reconnecting') setStatus('reconnecting…');
  else if (state === 'connected') setStatus('online');
};

service.onclose = () => {
  setStatus('offline');
  // Nothing can be sent any more: no "sent" bubble that then fails.
  ui.messageInput.disabled = true;
  ui.send.disabled = true;
  ui.messageInput.placeholder = 'Offline: the server is gone';
  showBanner('The connection to the server closed. Reload the page to reconnect.');
};

service.join().then(
  async (info) => {
    self = info.id();
    ui.selfId.textContent = short(self);
    ui.selfId.title = self;
    setStatus('online');
    if (GROUP_ID_PATTERN.test(location.hash)) await joinFromHash();
    else showLobby();
  },
  (error: unknown) => {
    setStatus('offline');
    showBanner(`Cannot reach the server: ${errorText(error)}`);
  },
);
