// demo/demo.ts
import { GroupCapability, SimpleService } from "/webrtc-p2p.js";
var PING = "ping";
var PONG = "pong";
var SHORT_ID_CHARS = 8;
var GROUP_ID_PATTERN = /[0-9a-f]{32}/;
var STATE_LABELS = {
  connecting: "connecting",
  direct: "direct",
  relayed: "relayed",
  closed: "no link"
};
function element(id) {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`the page has no #${id}`);
  return found;
}
var ui = {
  status: element("status"),
  selfId: element("self-id"),
  banner: element("banner"),
  lobby: element("lobby"),
  createForm: element("create-form"),
  capability: element("capability"),
  joinForm: element("join-form"),
  joinInput: element("join-input"),
  room: element("room"),
  groupMode: element("group-mode"),
  shareLink: element("share-link"),
  copyLink: element("copy-link"),
  leave: element("leave"),
  memberCount: element("member-count"),
  members: element("members"),
  messages: element("messages"),
  composer: element("composer"),
  messageInput: element("message-input")
};
var wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
var service = new SimpleService(wsUrl);
var self;
var group;
var rtts = /* @__PURE__ */ new Map();
function short(id) {
  return id.slice(0, SHORT_ID_CHARS);
}
function hue(id) {
  return parseInt(id.slice(0, 6), 16) % 360;
}
function setStatus(status) {
  ui.status.textContent = status;
  ui.status.dataset["status"] = status;
  ui.status.className = `pill pill-${status}`;
}
function showBanner(text) {
  ui.banner.textContent = text;
  ui.banner.hidden = false;
}
function errorText(error) {
  return error instanceof Error ? error.message : String(error);
}
function avatar(id) {
  const badge = document.createElement("span");
  badge.className = "avatar";
  badge.style.setProperty("--hue", String(hue(id)));
  badge.textContent = id.slice(0, 2).toUpperCase();
  return badge;
}
function renderMembers() {
  const current = group;
  if (current === void 0) return;
  const members = current.members();
  ui.memberCount.textContent = String(members.length);
  ui.members.replaceChildren(
    ...members.map((member) => {
      const item = document.createElement("li");
      item.dataset["member"] = member;
      const who = document.createElement("div");
      who.className = "who";
      const name = document.createElement("code");
      name.textContent = short(member);
      name.title = member;
      who.append(avatar(member), name);
      if (member === self) who.append(tag("you", "tag-you"));
      if (member === current.owner()) who.append(tag("owner", "tag-owner"));
      item.append(who);
      if (member !== self) {
        const state = current.linkState(member);
        const stateBadge = document.createElement("span");
        stateBadge.className = `state state-${state}`;
        stateBadge.dataset["state"] = state;
        stateBadge.textContent = STATE_LABELS[state];
        const ping = document.createElement("button");
        ping.type = "button";
        ping.className = "ping";
        ping.textContent = "Ping";
        ping.disabled = state === "closed";
        ping.addEventListener("click", () => void pingMember(member));
        const rtt = document.createElement("span");
        rtt.className = "rtt";
        rtt.textContent = rtts.get(member) ?? "";
        const actions = document.createElement("div");
        actions.className = "actions";
        actions.append(stateBadge, rtt, ping);
        item.append(actions);
      }
      return item;
    })
  );
  if (members.length === 1) {
    const hint = document.createElement("li");
    hint.className = "alone";
    hint.textContent = "No one else yet: share the link above.";
    ui.members.append(hint);
  }
}
function tag(text, className) {
  const span = document.createElement("span");
  span.className = `tag ${className}`;
  span.textContent = text;
  return span;
}
function addMessage(from, text) {
  const item = document.createElement("li");
  item.className = from === self ? "message mine" : "message";
  item.append(avatar(from));
  const bubble = document.createElement("div");
  bubble.className = "bubble";
  const author = document.createElement("span");
  author.className = "from";
  author.textContent = from === self ? "you" : short(from);
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  bubble.append(author, body);
  item.append(bubble);
  appendToLog(item);
}
function addNotice(text) {
  const item = document.createElement("li");
  item.className = "system";
  item.textContent = text;
  appendToLog(item);
}
function appendToLog(item) {
  ui.messages.append(item);
  ui.messages.scrollTop = ui.messages.scrollHeight;
}
async function pingMember(member) {
  const current = group;
  if (current === void 0) return;
  rtts.set(member, "…");
  renderMembers();
  const started = performance.now();
  try {
    await current.unicast(member, PING);
    rtts.set(member, `${(performance.now() - started).toFixed(1)} ms`);
  } catch (error) {
    rtts.set(member, errorText(error));
  }
  renderMembers();
}
function enter(joined) {
  group = joined;
  rtts.clear();
  joined.onmessage = (from, data) => {
    if (typeof data === "string") addMessage(from, data);
  };
  joined.onunicast = (_from, data) => data === PING ? PONG : data;
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
  if (location.hash !== `#${joined.id()}`) history.replaceState(null, "", `#${joined.id()}`);
  ui.shareLink.value = location.href;
  const capability = joined.capability();
  ui.groupMode.textContent = (capability & (GroupCapability.BroadcastEveryone | GroupCapability.UnicastEveryone)) !== 0 ? "full mesh" : "owner only";
  ui.messages.replaceChildren();
  addNotice(joined.owner() === self ? "You created the group. Share the link to invite people." : "You joined the group.");
  ui.lobby.hidden = true;
  ui.room.hidden = false;
  renderMembers();
  ui.messageInput.focus();
}
function showLobby() {
  group = void 0;
  ui.room.hidden = true;
  ui.lobby.hidden = false;
}
async function joinFromHash() {
  const id = GROUP_ID_PATTERN.exec(location.hash)?.[0];
  if (id === void 0 || group?.id() === id) return;
  try {
    if (group !== void 0) await group.leave();
    enter(await service.joinGroup(id));
  } catch (error) {
    history.replaceState(null, "", location.pathname);
    showLobby();
    showBanner(`Could not join that group: ${errorText(error)}`);
  }
}
ui.createForm.addEventListener("submit", (event) => {
  event.preventDefault();
  ui.banner.hidden = true;
  service.createGroup(Number(ui.capability.value)).then(enter, (error) => {
    showBanner(`Could not create a group: ${errorText(error)}`);
  });
});
ui.joinForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const id = GROUP_ID_PATTERN.exec(ui.joinInput.value)?.[0];
  if (id === void 0) {
    showBanner("That is not a group link: it has no 32-digit group id.");
    return;
  }
  ui.banner.hidden = true;
  location.hash = id;
});
ui.copyLink.addEventListener("click", () => {
  ui.shareLink.select();
  void navigator.clipboard?.writeText(ui.shareLink.value).then(() => {
    ui.copyLink.textContent = "Copied";
    setTimeout(() => ui.copyLink.textContent = "Copy", 1500);
  });
});
ui.leave.addEventListener("click", () => {
  const current = group;
  if (current === void 0) return;
  history.replaceState(null, "", location.pathname);
  showLobby();
  current.leave().catch((error) => showBanner(`Leaving failed: ${errorText(error)}`));
});
ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const current = group;
  const text = ui.messageInput.value.trim();
  if (current === void 0 || self === void 0 || text === "") return;
  ui.messageInput.value = "";
  addMessage(self, text);
  current.broadcast(text).catch((error) => addNotice(`Not sent: ${errorText(error)}`));
});
window.addEventListener("hashchange", () => void joinFromHash());
service.onclose = () => {
  setStatus("offline");
  showBanner("The connection to the server closed. Reload the page to reconnect.");
};
service.join().then(
  async (info) => {
    self = info.id();
    ui.selfId.textContent = short(self);
    ui.selfId.title = self;
    setStatus("online");
    if (GROUP_ID_PATTERN.test(location.hash)) await joinFromHash();
    else showLobby();
  },
  (error) => {
    setStatus("offline");
    showBanner(`Cannot reach the server: ${errorText(error)}`);
  }
);
