/**
 * The demo page: create a group or join one by its link (`/#<group id>`),
 * see every member (with what the app's backend says of it) and the state of
 * the link to it, chat and send files over `broadcast` (with progress and
 * cancel), ping a member over `unicast`.
 *
 * It imports the client exactly as any site would: from the server's
 * `/webrtc-p2p.js`.
 */
import { DEFAULT_MAX_MESSAGE_BYTES, GroupCapability, SimpleService } from '/webrtc-p2p.js';
import type { IGroup, LinkState, UserId } from '/webrtc-p2p.js';

/** What a ping sends, and what the demo answers it with. */
const PING = 'ping';
const PONG = 'pong';
/** Ids are 32 hex digits; the first few tell members apart on screen. */
const SHORT_ID_CHARS = 8;
const GROUP_ID_PATTERN = /[0-9a-f]{32}/;
/**
 * A file travels as one binary broadcast: a 2-byte big-endian length, the
 * name in UTF-8, then the file's bytes. Chat messages are strings, so any
 * binary message is a file.
 */
const FILE_NAME_LENGTH_BYTES = 2;
const MAX_FILE_NAME_BYTES = 255;
/** The largest file the default message limit lets through, with its header. */
const MAX_FILE_BYTES = DEFAULT_MAX_MESSAGE_BYTES - FILE_NAME_LENGTH_BYTES - MAX_FILE_NAME_BYTES;
/** How often a transfer's progress is drawn at most: a 64 MiB file reports thousands of chunks. */
const PROGRESS_REDRAW_MS = 100;

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
  fileInput: element<HTMLInputElement>('file-input'),
  attach: element<HTMLLabelElement>('attach'),
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
/** Object URLs of the files received in this group, released when it is left. */
const fileUrls: string[] = [];

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
      const info = infoText(current, member);
      if (info !== undefined) {
        const said = document.createElement('span');
        said.className = 'info';
        said.textContent = info;
        said.title = JSON.stringify(current.memberInfo(member));
        who.append(said);
      }
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

/**
 * What the app's backend says of a member (its join token's `info`), in a
 * few words: a `name` when it has one, else the JSON. Nothing without tokens.
 */
function infoText(current: IGroup, member: UserId): string | undefined {
  const info = current.memberInfo(member);
  if (info === undefined || info === null) return undefined;
  if (typeof info === 'string') return info;
  const name = typeof info === 'object' ? (info as { name?: unknown }).name : undefined;
  return typeof name === 'string' ? name : JSON.stringify(info);
}

function tag(text: string, className: string): HTMLSpanElement {
  const span = document.createElement('span');
  span.className = `tag ${className}`;
  span.textContent = text;
  return span;
}

/** A message in the log: `from`'s avatar and a bubble holding `body`. */
function addBubble(from: UserId, ...body: HTMLElement[]): HTMLLIElement {
  const item = document.createElement('li');
  item.className = from === self ? 'message mine' : 'message';
  item.append(avatar(from));
  const bubble = document.createElement('div');
  bubble.className = 'bubble';
  const author = document.createElement('span');
  author.className = 'from';
  author.textContent = from === self ? 'you' : short(from);
  bubble.append(author, ...body);
  item.append(bubble);
  appendToLog(item);
  return item;
}

function addMessage(from: UserId, text: string): void {
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = text;
  addBubble(from, body);
}

function sizeText(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

function encodeFile(name: string, contents: Uint8Array): Uint8Array {
  let nameBytes = new TextEncoder().encode(name);
  // Cut at a character boundary: the decoder drops a split one.
  if (nameBytes.length > MAX_FILE_NAME_BYTES) nameBytes = new TextEncoder().encode(new TextDecoder().decode(nameBytes.subarray(0, MAX_FILE_NAME_BYTES)).replace(/\uFFFD$/, ''));
  const message = new Uint8Array(FILE_NAME_LENGTH_BYTES + nameBytes.length + contents.length);
  new DataView(message.buffer).setUint16(0, nameBytes.length);
  message.set(nameBytes, FILE_NAME_LENGTH_BYTES);
  message.set(contents, FILE_NAME_LENGTH_BYTES + nameBytes.length);
  return message;
}

function decodeFile(message: Uint8Array): { name: string; contents: Uint8Array } | undefined {
  if (message.length < FILE_NAME_LENGTH_BYTES) return undefined;
  const nameLength = new DataView(message.buffer, message.byteOffset).getUint16(0);
  const start = FILE_NAME_LENGTH_BYTES + nameLength;
  if (message.length < start) return undefined;
  const name = new TextDecoder().decode(message.subarray(FILE_NAME_LENGTH_BYTES, start));
  return { name, contents: message.subarray(start) };
}

/** A received file: its name as a download link, and its size. */
function addFile(from: UserId, name: string, contents: Uint8Array): void {
  const url = URL.createObjectURL(new Blob([contents as Uint8Array<ArrayBuffer>]));
  fileUrls.push(url);
  const link = document.createElement('a');
  link.className = 'file-name';
  link.href = url;
  link.download = name;
  link.textContent = name;
  const size = document.createElement('span');
  size.className = 'file-size';
  size.textContent = sizeText(contents.length);
  const file = document.createElement('span');
  file.className = 'file';
  file.dataset['bytes'] = String(contents.length);
  file.append(link, size);
  addBubble(from, file);
}

/**
 * Sends a file to the group: a bubble with a progress bar and a Cancel
 * button while it goes, then what became of it (`data-state` says it too).
 */
async function sendFile(current: IGroup, file: File): Promise<void> {
  if (self === undefined) return;
  if (file.size > MAX_FILE_BYTES) {
    addNotice(`${file.name} is ${sizeText(file.size)}: files up to ${sizeText(MAX_FILE_BYTES)} go.`);
    return;
  }
  const name = document.createElement('span');
  name.className = 'file-name';
  name.textContent = file.name;
  const bar = document.createElement('progress');
  bar.max = 1;
  bar.value = 0;
  const status = document.createElement('span');
  status.className = 'file-size';
  status.textContent = `${sizeText(file.size)} · reading…`;
  const cancel = document.createElement('button');
  cancel.type = 'button';
  cancel.className = 'cancel';
  cancel.textContent = 'Cancel';
  const transfer = document.createElement('span');
  transfer.className = 'file transfer';
  transfer.dataset['state'] = 'sending';
  transfer.append(name, bar, status, cancel);
  addBubble(self, transfer);

  const controller = new AbortController();
  cancel.addEventListener('click', () => controller.abort(new Error('cancelled')));
  let drawn = 0;
  const show = (sent: number, total: number): void => {
    transfer.dataset['sent'] = String(sent);
    transfer.dataset['total'] = String(total);
    const now = performance.now();
    if (sent < total && now - drawn < PROGRESS_REDRAW_MS) return;
    drawn = now;
    bar.value = total === 0 ? 1 : sent / total;
    status.textContent = `${sizeText(file.size)} · ${Math.floor(bar.value * 100)} %`;
  };
  const finish = (state: 'sent' | 'failed', text: string): void => {
    transfer.dataset['state'] = state;
    status.textContent = `${sizeText(file.size)} · ${text}`;
    cancel.remove();
  };
  try {
    const message = encodeFile(file.name, new Uint8Array(await file.arrayBuffer()));
    await current.broadcast(message, { onprogress: show, signal: controller.signal });
    bar.value = 1;
    finish('sent', current.members().length > 1 ? 'sent' : 'sent to no one yet');
  } catch (error) {
    finish('failed', `not sent: ${errorText(error)}`);
  }
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
  for (const url of fileUrls.splice(0)) URL.revokeObjectURL(url);
  joined.onmessage = (from, data) => {
    if (typeof data === 'string') {
      addMessage(from, data);
      return;
    }
    const file = decodeFile(data);
    if (file !== undefined) addFile(from, file.name, file.contents);
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

ui.fileInput.addEventListener('change', () => {
  const current = group;
  const file = ui.fileInput.files?.[0];
  // Cleared, so that choosing the same file again sends it again.
  ui.fileInput.value = '';
  if (current !== undefined && file !== undefined) void sendFile(current, file);
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
  ui.fileInput.disabled = true;
  ui.attach.classList.add('disabled');
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
