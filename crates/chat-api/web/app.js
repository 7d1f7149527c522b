/* The chat client served by chat-api at `/`.
 *
 * Plain ES2020, no dependencies, written for the page's Content-Security-Policy: no inline code,
 * no eval, no innerHTML with user content (every text goes in through textContent).
 *
 * - REST under ./api/v1 (relative URLs only, so the page works behind a proxy and a path prefix),
 *   bearer token from localStorage.
 * - One WebSocket (./api/v1/ws, ws: or wss: after the page), authenticated with an `identify`
 *   frame, pinged every half heartbeat; reconnects with exponential backoff and jitter; every
 *   `ready` (first connection, reconnect, after a 4008) refreshes the channel list and re-reads
 *   the open channel's latest page, merged into what is shown.
 * - Messages are keyed by id everywhere, so the POST answer and the `message_create` event of
 *   the same post (and a page re-read) never show a message twice.
 */
"use strict";

(() => {
  const API = "./api/v1";
  const TOKEN_KEY = "chat.token";
  const LAST_CHANNEL_KEY = "chat.lastChannel";
  const EMOJI = ["👍", "❤️", "😂", "🎉"];
  const PAGE_SIZE = 50;
  const MAX_CONTENT = 2000;
  const NEAR_TOP_PX = 300;
  const NEAR_BOTTOM_PX = 80;
  const PROBE_LIMIT = 50; // channels whose unread state is checked on (re)connect

  // ---------------------------------------------------------------------------------------
  // State

  const state = {
    token: null,
    me: null, // {id, name}
    channels: new Map(), // cid -> channel (MyChannel + {unread, unreadCount, latestId})
    channelOrder: [], // cids, oldest membership first
    openId: null, // open channel id
    openSeq: 0, // bumped on every channel switch, to drop stale answers
    messages: new Map(), // mid -> message of the open channel
    order: [], // mids of the open channel, ascending (ULIDs sort by time)
    elements: new Map(), // mid -> <li>
    deleted: new Set(), // mids deleted while the channel is open (a stale page must not revive them)
    hasMoreBefore: false,
    loadingOlder: false,
    loaded: false, // the open channel's first page is in
    pending: new Map(), // nonce -> {content, el, cid}
    editing: null, // mid being edited
    editDraft: "",
    preview: null, // channel shown in the join preview
    ackTimer: 0,
    ackInFlight: null,
  };

  // ---------------------------------------------------------------------------------------
  // DOM helpers

  const $ = (id) => document.getElementById(id);

  /** createElement with attributes/properties and children (strings become text nodes). */
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (value === undefined || value === null || value === false) continue;
        if (key === "class") el.className = value;
        else if (key === "text") el.textContent = value;
        else if (key === "dataset") Object.assign(el.dataset, value);
        else if (key in el && typeof value !== "string") el[key] = value;
        else el.setAttribute(key, value === true ? "" : String(value));
      }
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  const ui = {};
  function bindElements() {
    for (const id of [
      "nav-toggle", "connection-status", "me", "me-name", "logout", "error-region", "announcer",
      "register-view", "register-form", "register-name", "token-form", "token-input",
      "chat-view", "sidebar", "channel-list", "channel-list-empty",
      "create-channel-form", "create-channel-name", "create-channel-private",
      "join-form", "join-input", "join-preview", "join-preview-name", "join-preview-info",
      "join-button", "join-cancel",
      "channel-view", "channel-title", "channel-actions", "invite-link", "leave-channel",
      "invite-fallback", "invite-fallback-input",
      "messages", "no-channel", "load-older", "history-start", "message-list", "pending-list",
      "jump-latest", "composer", "composer-input",
    ]) {
      const el = $(id);
      if (!el) throw new Error(`missing #${id}`);
      ui[id.replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = el;
    }
    ui.composerButton = ui.composer.querySelector("button[type=submit]");
  }

  // ---------------------------------------------------------------------------------------
  // Errors and announcements

  let errorTimer = 0;
  function showError(message) {
    clearTimeout(errorTimer);
    const region = ui.errorRegion;
    region.replaceChildren(
      h("p", { class: "error-text", text: message }),
      h("button", { type: "button", class: "button-quiet", "aria-label": "Dismiss error", text: "Dismiss" }),
    );
    region.querySelector("button").addEventListener("click", clearError);
    errorTimer = setTimeout(clearError, 20000);
  }
  function clearError() {
    clearTimeout(errorTimer);
    ui.errorRegion.replaceChildren();
  }

  let announceTimer = 0;
  /** Polite screen-reader announcement (new messages, confirmations). */
  function announce(text) {
    const line = h("p", { text });
    ui.announcer.append(line);
    while (ui.announcer.childElementCount > 5) ui.announcer.firstElementChild.remove();
    clearTimeout(announceTimer);
    announceTimer = setTimeout(() => ui.announcer.replaceChildren(), 10000);
  }

  // ---------------------------------------------------------------------------------------
  // REST

  class ApiError extends Error {
    constructor(status, code, message, retryAfter) {
      super(message);
      this.status = status;
      this.code = code;
      this.retryAfter = retryAfter;
    }
  }

  async function api(method, path, body, options = {}) {
    const headers = { Accept: "application/json" };
    const token = options.token || state.token;
    if (token) headers.Authorization = `Bearer ${token}`;
    const init = { method, headers, credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(`${API}${path}`, init);
    } catch (err) {
      throw new ApiError(0, "network", "Cannot reach the server. Check your connection and try again.");
    }
    if (response.status === 204) return null;
    let data = null;
    const text = await response.text().catch(() => "");
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const err = data && data.error;
      const retryAfter = Number(response.headers.get("Retry-After")) || 0;
      let message = (err && err.message) || `The server answered ${response.status}.`;
      if (response.status === 429 && retryAfter) message += ` (retry in ${retryAfter} s)`;
      const error = new ApiError(response.status, (err && err.code) || "http_error", message, retryAfter);
      if (response.status === 401 && !options.token && state.token) {
        // The token no longer works (user gone, database reset): start over.
        logout("Your session is no longer valid; pick a name to start again.");
      }
      throw error;
    }
    return data;
  }

  /** Runs an action, showing its error (if any) in the error region. */
  async function attempt(action) {
    try {
      return await action();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401 && !state.token) return undefined;
      showError(err instanceof ApiError ? err.message : `Something went wrong: ${err && err.message}`);
      if (!(err instanceof ApiError)) console.error(err);
      return undefined;
    }
  }

  const enc = encodeURIComponent;

  // ---------------------------------------------------------------------------------------
  // Small utilities

  function randomNonce() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  const ULID_RE = /^[0-9A-HJKMNP-TV-Z]{26}$/i;

  /** A channel id from a raw id or an invite link (`…#channel=<id>`, or `?channel=`). */
  function parseChannelRef(text) {
    const value = text.trim();
    if (ULID_RE.test(value)) return value.toUpperCase();
    const match = /[#&?]channel=([0-9A-Za-z]{26})(?![0-9A-Za-z])/.exec(value);
    if (match && ULID_RE.test(match[1])) return match[1].toUpperCase();
    return null;
  }

  function hashChannel() {
    const match = /^#channel=([0-9A-Za-z]{26})$/.exec(location.hash);
    return match && ULID_RE.test(match[1]) ? match[1].toUpperCase() : null;
  }

  function inviteLink(cid) {
    return `${location.origin}${location.pathname}#channel=${cid}`;
  }

  function setHash(cid) {
    const hash = cid ? `#channel=${cid}` : "";
    if (location.hash !== hash) {
      history.replaceState(null, "", `${location.pathname}${location.search}${hash}`);
    }
  }

  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: "long", year: "numeric", month: "long", day: "numeric" });

  function sameDay(a, b) {
    return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
  }

  function charCount(text) {
    let n = 0;
    for (const _ of text) n += 1; // code points, as the server counts
    return n;
  }

  /** Text with http(s) links as <a> elements; everything else as text nodes. */
  function linkify(text) {
    const nodes = [];
    const re = /\bhttps?:\/\/[^\s<>"']+/gi;
    let last = 0;
    let match;
    while ((match = re.exec(text))) {
      let url = match[0];
      // Trailing punctuation is usually the sentence's, not the link's.
      const trimmed = url.replace(/[.,;:!?)\]]+$/, "");
      url = trimmed;
      if (match.index > last) nodes.push(document.createTextNode(text.slice(last, match.index)));
      nodes.push(h("a", { href: url, target: "_blank", rel: "noopener noreferrer nofollow", text: url }));
      last = match.index + url.length;
      re.lastIndex = last;
    }
    if (last < text.length) nodes.push(document.createTextNode(text.slice(last)));
    return nodes;
  }

  // ---------------------------------------------------------------------------------------
  // Session: register, restore, log out

  function setToken(token) {
    state.token = token;
    try {
      if (token) localStorage.setItem(TOKEN_KEY, token);
      else localStorage.removeItem(TOKEN_KEY);
    } catch {
      // Storage unavailable (private mode): the session lasts as long as the page.
    }
  }

  function remembered(key) {
    try {
      return localStorage.getItem(key);
    } catch {
      return null;
    }
  }

  function remember(key, value) {
    try {
      if (value) localStorage.setItem(key, value);
      else localStorage.removeItem(key);
    } catch {
      // Storage unavailable: nothing to remember.
    }
  }

  function storedToken() {
    return remembered(TOKEN_KEY);
  }

  async function register(event) {
    event.preventDefault();
    const name = ui.registerName.value.trim();
    if (!name) {
      showError("Enter a name.");
      ui.registerName.focus();
      return;
    }
    const button = ui.registerForm.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const registered = await attempt(() => api("POST", "/users", { name }));
      if (!registered) {
        ui.registerName.focus();
        return;
      }
      setToken(registered.token);
      clearError();
      ui.registerName.value = "";
      await startSession(registered.user);
    } finally {
      button.disabled = false;
    }
  }

  async function tokenLogin(event) {
    event.preventDefault();
    const token = ui.tokenInput.value.trim();
    if (!token) return;
    const me = await attempt(() => api("GET", "/users/me", undefined, { token }));
    if (!me) return;
    ui.tokenInput.value = "";
    setToken(token);
    clearError();
    await startSession(me);
  }

  function showRegister() {
    ui.chatView.hidden = true;
    ui.registerView.hidden = false;
    ui.logout.hidden = true;
    ui.me.hidden = true;
    ui.navToggle.hidden = true;
    setStatus("offline", "offline");
    document.title = "chat";
  }

  async function startSession(me) {
    state.me = { id: me.id, name: me.name };
    ui.meName.textContent = me.name;
    ui.me.hidden = false;
    ui.logout.hidden = false;
    ui.navToggle.hidden = false;
    ui.registerView.hidden = true;
    ui.chatView.hidden = false;
    renderChannelList();
    socket.start();
    await refreshChannels();
    const wanted = hashChannel();
    const last = remembered(LAST_CHANNEL_KEY);
    if (wanted) await routeTo(wanted);
    else if (!state.openId && last && state.channels.has(last)) await openChannel(last);
    else if (!state.openId) {
      setNavOpen(true);
      (ui.channelList.querySelector("button") || ui.createChannelName).focus();
    }
  }

  function logout(message) {
    socket.stop();
    setToken(null);
    remember(LAST_CHANNEL_KEY, null);
    state.me = null;
    state.channels.clear();
    state.channelOrder = [];
    closeChannel();
    hidePreview();
    renderChannelList();
    showRegister();
    if (message) showError(message);
    else clearError();
    ui.registerName.focus();
  }

  async function boot() {
    bindElements();
    wire();
    const token = storedToken();
    if (!token) {
      showRegister();
      ui.registerName.focus();
      return;
    }
    state.token = token;
    ui.registerView.hidden = true;
    setStatus("connecting", "connecting…");
    try {
      const me = await api("GET", "/users/me");
      await startSession(me);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return; // api() logged out
      // Server unreachable: keep the token, show the app, retry through the socket's backoff.
      showError(err.message);
      ui.chatView.hidden = false;
      ui.logout.hidden = false;
      ui.navToggle.hidden = false;
      socket.start();
    }
  }

  // ---------------------------------------------------------------------------------------
  // Channels

  function setChannels(list) {
    const old = state.channels;
    state.channels = new Map();
    state.channelOrder = [];
    for (const c of list) {
      const previous = old.get(c.id);
      state.channels.set(c.id, {
        ...c,
        unread: previous ? previous.unread : false,
        unreadCount: previous ? previous.unreadCount : 0,
        latestId: previous ? previous.latestId : null,
      });
      state.channelOrder.push(c.id);
    }
    renderChannelList();
    if (state.openId && !state.channels.has(state.openId)) {
      // No longer a member (left elsewhere, or removed while offline).
      const name = old.get(state.openId)?.name;
      closeChannel();
      if (name) announce(`You are no longer a member of ${name}.`);
    } else if (state.openId) {
      renderChannelHeader();
    }
    probeUnread();
  }

  function addChannel(channel, extra = {}) {
    if (state.channels.has(channel.id)) {
      Object.assign(state.channels.get(channel.id), { name: channel.name, kind: channel.kind });
    } else {
      state.channels.set(channel.id, {
        role: channel.owner_id === state.me?.id ? "owner" : "member",
        joined_at: new Date().toISOString(),
        last_read_id: null,
        ...channel,
        unread: false,
        unreadCount: 0,
        latestId: null,
        ...extra,
      });
      state.channelOrder.push(channel.id);
    }
    renderChannelList();
  }

  function removeChannel(cid) {
    if (!state.channels.delete(cid)) return;
    state.channelOrder = state.channelOrder.filter((id) => id !== cid);
    renderChannelList();
    if (state.openId === cid) closeChannel();
  }

  async function refreshChannels() {
    const data = await attempt(() => api("GET", "/users/me/channels"));
    if (data) setChannels(data.channels);
  }

  /** Marks channels with messages newer than the read marker (one small page each). */
  let probeSeq = 0;
  async function probeUnread() {
    const seq = ++probeSeq;
    const ids = state.channelOrder.slice(0, PROBE_LIMIT).filter((id) => id !== state.openId);
    const worker = async () => {
      while (ids.length && seq === probeSeq && state.token) {
        const cid = ids.shift();
        try {
          const page = await api("GET", `/channels/${cid}/messages?limit=1`);
          const channel = state.channels.get(cid);
          const latest = page && page.messages[0];
          if (!channel || !latest || seq !== probeSeq) continue;
          if (!channel.latestId || latest.id > channel.latestId) channel.latestId = latest.id;
          const read = channel.last_read_id;
          if (cid !== state.openId && latest.author.id !== state.me?.id && (!read || latest.id > read)) {
            channel.unread = true;
          }
          renderChannelItem(cid);
        } catch {
          // Unread markers are a nicety; a failed probe changes nothing.
        }
      }
    };
    await Promise.all([worker(), worker(), worker()]);
  }

  function renderChannelList() {
    const items = state.channelOrder.map((cid) => channelItem(state.channels.get(cid)));
    ui.channelList.replaceChildren(...items);
    ui.channelListEmpty.hidden = state.channelOrder.length > 0 || !state.me;
    updateTitle();
  }

  function renderChannelItem(cid) {
    const channel = state.channels.get(cid);
    const old = ui.channelList.querySelector(`li[data-channel-id="${cid}"]`);
    if (!channel || !old) return renderChannelList();
    const hadFocus = old.contains(document.activeElement);
    const item = channelItem(channel);
    old.replaceWith(item);
    if (hadFocus) item.querySelector("button").focus();
    updateTitle();
  }

  function channelItem(channel) {
    const open = channel.id === state.openId;
    const labelParts = [channel.name];
    if (channel.kind === "private") labelParts.push("(private)");
    if (channel.unread) labelParts.push(channel.unreadCount ? `(${channel.unreadCount} unread)` : "(unread)");
    return h("li", { dataset: { channelId: channel.id }, class: channel.unread ? "unread" : "" },
      h("button", {
        type: "button",
        class: "channel-button",
        "aria-current": open ? "page" : null,
        "aria-label": labelParts.join(" "),
      },
      h("span", { class: "channel-hash", "aria-hidden": "true", text: channel.kind === "private" ? "🔒" : "#" }),
      h("span", { class: "channel-name", text: channel.name }),
      channel.unread
        ? h("span", { class: "unread-badge", "aria-hidden": "true", text: channel.unreadCount ? String(channel.unreadCount) : "new" })
        : null));
  }

  function updateTitle() {
    const unread = state.channelOrder.filter((id) => state.channels.get(id)?.unread).length;
    const open = state.openId && state.channels.get(state.openId);
    const base = open ? `${open.kind === "private" ? "🔒" : "#"}${open.name} · chat` : "chat";
    document.title = unread ? `(${unread}) ${base}` : base;
  }

  async function createChannel(event) {
    event.preventDefault();
    const name = ui.createChannelName.value.trim();
    if (!name) {
      showError("Enter a channel name.");
      ui.createChannelName.focus();
      return;
    }
    const kind = ui.createChannelPrivate.checked ? "private" : "public";
    const button = ui.createChannelForm.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const channel = await attempt(() => api("POST", "/channels", { name, kind }));
      if (!channel) return;
      clearError();
      ui.createChannelName.value = "";
      ui.createChannelPrivate.checked = false;
      addChannel(channel, { role: "owner", joined_at: channel.created_at });
      announce(`Channel ${channel.name} created.`);
      await openChannel(channel.id, { focus: "composer" });
    } finally {
      button.disabled = false;
    }
  }

  async function leaveChannel() {
    const cid = state.openId;
    const channel = cid && state.channels.get(cid);
    if (!channel) return;
    const left = await attempt(() => api("DELETE", `/channels/${cid}/members/me`).then(() => true));
    if (!left) return;
    removeChannel(cid);
    announce(`You left ${channel.name}.`);
    setNavOpen(true);
    const first = ui.channelList.querySelector("button");
    (first || ui.createChannelName).focus();
  }

  // Join by link or id

  async function findChannel(event) {
    event.preventDefault();
    const cid = parseChannelRef(ui.joinInput.value);
    if (!cid) {
      showError("That is not a channel id or invite link.");
      ui.joinInput.focus();
      return;
    }
    await routeTo(cid);
  }

  /** Opens the channel if we are a member, otherwise shows its join preview. */
  async function routeTo(cid) {
    if (!state.me) return;
    if (state.channels.has(cid)) {
      hidePreview();
      await openChannel(cid, { focus: "title" });
      return;
    }
    const channel = await attempt(() => api("GET", `/channels/${cid}`));
    if (!channel) {
      if (hashChannel() === cid) setHash(state.openId);
      return;
    }
    if (state.channels.has(cid)) {
      // Joined meanwhile (another tab).
      hidePreview();
      await openChannel(cid, { focus: "title" });
      return;
    }
    showPreview(channel);
  }

  function showPreview(channel) {
    state.preview = channel;
    ui.joinPreviewName.textContent = `${channel.kind === "private" ? "🔒 " : "# "}${channel.name}`;
    ui.joinPreviewInfo.textContent = channel.kind === "private"
      ? "A private channel: only its owner can add you."
      : "A public channel. Join it to read and post.";
    ui.joinButton.disabled = false;
    ui.joinPreview.hidden = false;
    setNavOpen(true);
    ui.joinButton.focus();
  }

  function hidePreview() {
    state.preview = null;
    ui.joinPreview.hidden = true;
  }

  async function joinPreviewed() {
    const channel = state.preview;
    if (!channel) return;
    ui.joinButton.disabled = true;
    const joined = await attempt(() => api("PUT", `/channels/${channel.id}/members/me`).then(() => true));
    ui.joinButton.disabled = false;
    if (!joined) return;
    hidePreview();
    ui.joinInput.value = "";
    addChannel(channel, { role: "member" });
    announce(`You joined ${channel.name}.`);
    await openChannel(channel.id, { focus: "composer" });
  }

  // ---------------------------------------------------------------------------------------
  // The open channel

  function resetMessages() {
    state.messages.clear();
    state.order = [];
    state.elements.clear();
    state.deleted.clear();
    state.hasMoreBefore = false;
    state.loadingOlder = false;
    state.loaded = false;
    state.editing = null;
    state.editDraft = "";
    ui.messageList.replaceChildren();
    // Pending posts of other channels are kept in state.pending but not shown.
    ui.pendingList.replaceChildren(
      ...[...state.pending.values()].filter((p) => p.cid === state.openId).map((p) => p.el),
    );
    ui.loadOlder.hidden = true;
    ui.historyStart.hidden = true;
    ui.jumpLatest.hidden = true;
  }

  function closeChannel() {
    state.openId = null;
    state.openSeq += 1;
    resetMessages();
    setHash(null);
    renderChannelHeader();
    renderChannelList();
  }

  function renderChannelHeader() {
    const channel = state.openId && state.channels.get(state.openId);
    ui.noChannel.hidden = Boolean(channel);
    ui.channelActions.hidden = !channel;
    ui.inviteFallback.hidden = true;
    ui.composerInput.disabled = !channel;
    ui.composerButton.disabled = !channel;
    if (!channel) {
      ui.channelTitle.textContent = "No channel open";
      ui.inviteLink.dataset.link = "";
      ui.messages.setAttribute("aria-label", "Messages");
      return;
    }
    ui.channelTitle.textContent = channel.name;
    const link = inviteLink(channel.id);
    ui.inviteLink.dataset.link = link;
    ui.inviteLink.title = link;
    ui.inviteLink.hidden = false;
    ui.messages.setAttribute("aria-label", `Messages in ${channel.name}`);
    ui.composerInput.placeholder = channel.name.length > 24
      ? "Write a message"
      : `Message ${channel.kind === "private" ? "🔒" : "#"}${channel.name}`;
    updateTitle();
  }

  async function openChannel(cid, { focus } = {}) {
    const channel = state.channels.get(cid);
    if (!channel) return;
    if (state.openId !== cid) {
      state.openId = cid;
      state.openSeq += 1;
      resetMessages();
      ui.composerInput.value = "";
    }
    setHash(cid);
    remember(LAST_CHANNEL_KEY, cid);
    renderChannelHeader();
    renderChannelList();
    if (window.matchMedia("(max-width: 720px)").matches) setNavOpen(false);
    if (focus === "composer") ui.composerInput.focus();
    else if (focus === "title") ui.channelTitle.focus();
    await loadLatest();
  }

  /** Reads the latest page of the open channel and merges it into what is shown. */
  async function loadLatest() {
    const cid = state.openId;
    if (!cid) return;
    const seq = state.openSeq;
    const before = new Set(state.order); // what we had; anything added meanwhile came by event
    ui.messages.setAttribute("aria-busy", "true");
    let page;
    try {
      page = await api("GET", `/channels/${cid}/messages?limit=${PAGE_SIZE}`);
    } catch (err) {
      if (seq === state.openSeq) {
        ui.messages.setAttribute("aria-busy", "false");
        if (err.status === 403 || err.status === 404) {
          // Not (any longer) a member.
          showError(err.message);
          removeChannel(cid);
          return;
        }
        showError(err.message);
      }
      return;
    }
    if (seq !== state.openSeq) return;
    ui.messages.setAttribute("aria-busy", "false");
    const first = !state.loaded;
    const stick = first || isNearBottom();
    const messages = page.messages.slice().reverse(); // ascending
    const oldestInPage = messages.length ? messages[0].id : null;
    if (!first) {
      if (page.has_more_before && oldestInPage && state.order.length && state.order[state.order.length - 1] < oldestInPage) {
        // A gap between what we show and the new page: start again from the page.
        for (const mid of [...state.order]) removeMessage(mid, { quiet: true });
        state.hasMoreBefore = true;
      } else {
        // Messages in the page's range that we had before the request but the page lacks were
        // deleted while we were away.
        for (const mid of before) {
          if ((!oldestInPage || mid >= oldestInPage) && !page.messages.some((m) => m.id === mid)) {
            removeMessage(mid, { quiet: true });
          }
        }
      }
    } else {
      state.hasMoreBefore = page.has_more_before;
    }
    for (const message of messages) upsertMessage(message, { fromPage: true });
    state.loaded = true;
    updateHistoryEdge();
    if (stick) scrollToBottom();
    await fillViewport();
    scheduleAck();
  }

  /** Loads older pages while the list does not fill the scroll area. */
  async function fillViewport() {
    const seq = state.openSeq;
    let guard = 0;
    while (seq === state.openSeq && state.hasMoreBefore && !state.loadingOlder && guard < 10
      && ui.messages.scrollHeight <= ui.messages.clientHeight + NEAR_TOP_PX) {
      guard += 1;
      await loadOlder();
    }
  }

  async function loadOlder() {
    const cid = state.openId;
    if (!cid || state.loadingOlder || !state.hasMoreBefore || !state.order.length) return;
    const seq = state.openSeq;
    state.loadingOlder = true;
    ui.loadOlder.disabled = true;
    ui.loadOlder.textContent = "Loading older messages…";
    ui.messages.setAttribute("aria-busy", "true");
    try {
      const oldest = state.order[0];
      const page = await api("GET", `/channels/${cid}/messages?limit=${PAGE_SIZE}&before=${enc(oldest)}`);
      if (seq !== state.openSeq) return;
      // Keep what the reader sees in place: measure from the bottom, prepend, restore.
      const box = ui.messages;
      const fromBottom = box.scrollHeight - box.scrollTop;
      for (const message of page.messages) upsertMessage(message, { fromPage: true });
      state.hasMoreBefore = page.has_more_before;
      updateHistoryEdge();
      box.scrollTop = box.scrollHeight - fromBottom;
      if (page.messages.length) announce(`${page.messages.length} older messages loaded.`);
    } catch (err) {
      if (seq === state.openSeq) showError(err.message);
    } finally {
      if (seq === state.openSeq) {
        state.loadingOlder = false;
        ui.loadOlder.disabled = false;
        ui.loadOlder.textContent = "Load older messages";
        ui.messages.setAttribute("aria-busy", "false");
      }
    }
  }

  function updateHistoryEdge() {
    ui.loadOlder.hidden = !state.hasMoreBefore;
    ui.historyStart.hidden = state.hasMoreBefore || !state.loaded;
  }

  function isNearBottom() {
    const box = ui.messages;
    return box.scrollHeight - box.scrollTop - box.clientHeight < NEAR_BOTTOM_PX;
  }

  function scrollToBottom() {
    ui.messages.scrollTop = ui.messages.scrollHeight;
    ui.jumpLatest.hidden = true;
  }

  function onScroll() {
    if (!state.openId || !state.loaded) return;
    if (ui.messages.scrollTop < NEAR_TOP_PX && state.hasMoreBefore && !state.loadingOlder) loadOlder();
    if (isNearBottom()) {
      ui.jumpLatest.hidden = true;
      scheduleAck();
    }
  }

  // ---------------------------------------------------------------------------------------
  // Messages: model and rendering

  /** Index where `mid` belongs in state.order (binary search). */
  function insertionIndex(mid) {
    let lo = 0;
    let hi = state.order.length;
    while (lo < hi) {
      const mid2 = (lo + hi) >> 1;
      if (state.order[mid2] < mid) lo = mid2 + 1;
      else hi = mid2;
    }
    return lo;
  }

  /** Adds or updates a message of the open channel; returns true when it was new. */
  function upsertMessage(message, { fromPage = false } = {}) {
    if (message.channel_id !== state.openId) return false;
    if (state.deleted.has(message.id)) return false;
    const existing = state.messages.get(message.id);
    if (existing) {
      // A page may be older than an event we already applied: keep the later edit.
      if (fromPage && existing.edited_at && (!message.edited_at || message.edited_at < existing.edited_at)) {
        message = { ...message, content: existing.content, edited_at: existing.edited_at };
      }
      state.messages.set(message.id, message);
      renderMessage(message.id);
      return false;
    }
    state.messages.set(message.id, message);
    const index = insertionIndex(message.id);
    state.order.splice(index, 0, message.id);
    const el = h("li", { class: "message", dataset: { messageId: message.id } });
    state.elements.set(message.id, el);
    const next = state.order[index + 1];
    ui.messageList.insertBefore(el, next ? state.elements.get(next) : null);
    renderMessage(message.id);
    if (message.nonce) dropPending(message.nonce);
    return true;
  }

  function removeMessage(mid, { quiet = false } = {}) {
    const el = state.elements.get(mid);
    if (!state.messages.has(mid)) return;
    const message = state.messages.get(mid);
    state.messages.delete(mid);
    state.elements.delete(mid);
    state.order.splice(state.order.indexOf(mid), 1);
    if (el) {
      const hadFocus = el.contains(document.activeElement);
      const neighbour = el.nextElementSibling || el.previousElementSibling;
      el.remove();
      if (hadFocus) (neighbour?.querySelector("button") || ui.composerInput).focus();
    }
    if (state.editing === mid) state.editing = null;
    if (!quiet) announce(`Message from ${message.author.name} deleted.`);
  }

  function renderMessage(mid) {
    const message = state.messages.get(mid);
    const el = state.elements.get(mid);
    if (!message || !el) return;
    // Keep the focus on the same control across the rebuild.
    let focusKey = null;
    if (el.contains(document.activeElement)) {
      const active = document.activeElement;
      focusKey = active.dataset.action ? `${active.dataset.action}|${active.dataset.emoji || ""}` : active.tagName;
    }
    const own = message.author.id === state.me?.id;
    el.className = own ? "message own" : "message";
    el.replaceChildren(...messageBody(message, own));
    if (focusKey) {
      const [action, emoji] = focusKey.split("|");
      const target = emoji !== undefined
        ? el.querySelector(`[data-action="${action}"]${emoji ? `[data-emoji="${CSS.escape(emoji)}"]` : ""}`)
        : el.querySelector(focusKey.toLowerCase());
      (target || el.querySelector("button"))?.focus();
    }
  }

  function messageBody(message, own) {
    const created = new Date(message.created_at);
    const today = sameDay(created, new Date());
    const meta = h("div", { class: "message-meta" },
      h("span", { class: "message-author", text: message.author.name }),
      h("time", {
        datetime: message.created_at,
        title: dateTimeFormat.format(created),
        text: today ? timeFormat.format(created) : dateTimeFormat.format(created),
      }),
      message.edited_at
        ? h("span", { class: "message-edited", title: `edited ${dateTimeFormat.format(new Date(message.edited_at))}`, text: "(edited)" })
        : null);

    let content;
    if (state.editing === message.id) {
      content = editForm(message);
    } else {
      content = h("div", { class: "message-content" }, linkify(message.content));
    }

    const reactions = h("div", { class: "reactions", role: "group", "aria-label": "Reactions" });
    const shown = new Map();
    for (const r of message.reactions || []) shown.set(r.emoji, r);
    const emojis = [...EMOJI, ...[...shown.keys()].filter((e) => !EMOJI.includes(e))];
    for (const emoji of emojis) {
      const r = shown.get(emoji);
      const count = r ? r.count : 0;
      const mine = Boolean(r && r.user_ids && r.user_ids.includes(state.me?.id));
      reactions.append(h("button", {
        type: "button",
        class: count ? "reaction has-count" : "reaction",
        dataset: { action: "react", emoji },
        "aria-pressed": mine ? "true" : "false",
        "aria-label": `${emoji} ${count} ${count === 1 ? "reaction" : "reactions"}${mine ? ", including yours" : ""}`,
        title: mine ? "Remove your reaction" : "React",
      },
      h("span", { class: "reaction-emoji", "aria-hidden": "true", text: emoji }),
      h("span", { class: "reaction-count", "aria-hidden": "true", text: count ? String(count) : "" })));
    }

    const actions = own && state.editing !== message.id
      ? h("div", { class: "message-actions" },
        h("button", { type: "button", dataset: { action: "edit" }, "aria-label": "Edit message", text: "Edit" }),
        h("button", { type: "button", class: "button-danger", dataset: { action: "delete" }, "aria-label": "Delete message", text: "Delete" }))
      : null;

    return [meta, content, h("div", { class: "message-footer" }, reactions, actions)];
  }

  function editForm(message) {
    const id = `edit-${message.id}`;
    const textarea = h("textarea", { id, rows: 3 });
    textarea.value = state.editDraft;
    textarea.addEventListener("input", () => { state.editDraft = textarea.value; });
    textarea.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        cancelEdit();
      } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        saveEdit(message.id);
      }
    });
    const form = h("form", { class: "edit-form", novalidate: true },
      h("label", { for: id, class: "visually-hidden", text: "Edit message" }),
      textarea,
      h("div", { class: "button-row" },
        h("button", { type: "submit", class: "button-primary", dataset: { action: "save-edit" }, text: "Save" }),
        h("button", { type: "button", dataset: { action: "cancel-edit" }, text: "Cancel" })),
      h("p", { class: "hint", text: "Enter saves, Escape cancels." }));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      saveEdit(message.id);
    });
    return form;
  }

  function startEdit(mid) {
    const message = state.messages.get(mid);
    if (!message) return;
    const previous = state.editing;
    state.editing = mid;
    state.editDraft = message.content;
    if (previous && previous !== mid) renderMessage(previous);
    renderMessage(mid);
    const textarea = state.elements.get(mid)?.querySelector("textarea");
    if (textarea) {
      textarea.focus();
      textarea.setSelectionRange(textarea.value.length, textarea.value.length);
    }
  }

  function cancelEdit() {
    const mid = state.editing;
    state.editing = null;
    state.editDraft = "";
    if (mid) {
      renderMessage(mid);
      state.elements.get(mid)?.querySelector('[data-action="edit"]')?.focus();
    }
  }

  async function saveEdit(mid) {
    const message = state.messages.get(mid);
    if (!message) return;
    const content = state.editDraft;
    if (!content.trim()) {
      showError("A message cannot be empty; delete it instead.");
      return;
    }
    if (charCount(content) > MAX_CONTENT) {
      showError(`A message is at most ${MAX_CONTENT} characters.`);
      return;
    }
    if (content === message.content) {
      cancelEdit();
      return;
    }
    const cid = state.openId;
    const updated = await attempt(() => api("PATCH", `/channels/${cid}/messages/${mid}`, { content }));
    if (!updated) return;
    if (state.editing === mid) {
      state.editing = null;
      state.editDraft = "";
    }
    applyUpdate(updated);
    state.elements.get(mid)?.querySelector('[data-action="edit"]')?.focus();
    announce("Message edited.");
  }

  function applyUpdate(message) {
    const existing = state.messages.get(message.id);
    if (!existing) return;
    if (existing.edited_at && message.edited_at && message.edited_at < existing.edited_at) return;
    // Edits carry the reactions as they were read before the edit: keep ours, which events keep current.
    state.messages.set(message.id, { ...existing, content: message.content, edited_at: message.edited_at });
    renderMessage(message.id);
  }

  async function deleteMessage(mid) {
    const cid = state.openId;
    const done = await attempt(() => api("DELETE", `/channels/${cid}/messages/${mid}`).then(() => true));
    if (!done) return;
    if (state.openId === cid) {
      state.deleted.add(mid);
      removeMessage(mid, { quiet: true });
      announce("Message deleted.");
    }
  }

  function applyReaction(mid, userId, emoji, add) {
    const message = state.messages.get(mid);
    if (!message) return;
    const reactions = (message.reactions || []).map((r) => ({ ...r, user_ids: [...(r.user_ids || [])] }));
    let r = reactions.find((x) => x.emoji === emoji);
    if (add) {
      if (!r) {
        r = { emoji, count: 0, user_ids: [] };
        reactions.push(r);
      }
      if (r.user_ids.includes(userId)) return; // already counted (our own request, then its event)
      r.user_ids.push(userId);
      r.count += 1;
    } else {
      if (!r || !r.user_ids.includes(userId)) return;
      r.user_ids = r.user_ids.filter((u) => u !== userId);
      r.count = Math.max(0, r.count - 1);
      if (r.count === 0) reactions.splice(reactions.indexOf(r), 1);
    }
    state.messages.set(mid, { ...message, reactions });
    renderMessage(mid);
  }

  async function toggleReaction(mid, emoji) {
    const message = state.messages.get(mid);
    if (!message || !state.me) return;
    const r = (message.reactions || []).find((x) => x.emoji === emoji);
    const mine = Boolean(r && r.user_ids && r.user_ids.includes(state.me.id));
    const cid = state.openId;
    const method = mine ? "DELETE" : "PUT";
    const ok = await attempt(() => api(method, `/channels/${cid}/messages/${mid}/reactions/${enc(emoji)}`).then(() => true));
    if (ok && state.openId === cid) applyReaction(mid, state.me.id, emoji, !mine);
  }

  // ---------------------------------------------------------------------------------------
  // Posting

  function pendingElement(content, nonce) {
    return h("li", { class: "message own pending", dataset: { nonce } },
      h("div", { class: "message-meta" },
        h("span", { class: "message-author", text: state.me?.name || "" }),
        h("span", { class: "message-state", text: "sending…" })),
      h("div", { class: "message-content", text: content }));
  }

  function dropPending(nonce) {
    const pending = state.pending.get(nonce);
    if (!pending) return;
    state.pending.delete(nonce);
    pending.el.remove();
  }

  async function postMessage(event) {
    if (event) event.preventDefault();
    const cid = state.openId;
    if (!cid) return;
    const content = ui.composerInput.value;
    if (!content.trim()) return;
    if (charCount(content) > MAX_CONTENT) {
      showError(`A message is at most ${MAX_CONTENT} characters (this one has ${charCount(content)}).`);
      return;
    }
    const nonce = randomNonce();
    const el = pendingElement(content, nonce);
    state.pending.set(nonce, { content, el, cid });
    ui.pendingList.append(el);
    ui.composerInput.value = "";
    scrollToBottom();

    let message = null;
    let error = null;
    // Retried with the same nonce on network failures: the server answers a repeat with the
    // message it already has instead of posting twice.
    for (let tries = 0; tries < 3; tries += 1) {
      try {
        message = await api("POST", `/channels/${cid}/messages`, { content, nonce });
        break;
      } catch (err) {
        error = err;
        if (err.status !== 0) break;
        await new Promise((resolve) => setTimeout(resolve, 500 * 2 ** tries));
      }
    }
    if (message) {
      dropPending(nonce);
      if (state.openId === cid) {
        const stick = isNearBottom();
        upsertMessage(message);
        if (stick) scrollToBottom();
        scheduleAck();
      }
      noteLatest(cid, message.id);
      return;
    }
    dropPending(nonce);
    showError(error ? error.message : "The message was not sent.");
    // Give the text back if the box is still empty, so nothing typed is lost.
    if (state.openId === cid && !ui.composerInput.value) {
      ui.composerInput.value = content;
      ui.composerInput.focus();
    }
  }

  function composerKeydown(event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && !event.altKey && !event.ctrlKey && !event.metaKey) {
      event.preventDefault();
      postMessage();
    } else if (event.key === "ArrowUp" && !ui.composerInput.value) {
      // Up in an empty box edits one's last message.
      const last = [...state.order].reverse().find((mid) => state.messages.get(mid)?.author.id === state.me?.id);
      if (last) {
        event.preventDefault();
        startEdit(last);
      }
    }
  }

  // ---------------------------------------------------------------------------------------
  // Read markers

  function noteLatest(cid, mid) {
    const channel = state.channels.get(cid);
    if (channel && (!channel.latestId || mid > channel.latestId)) channel.latestId = mid;
  }

  function scheduleAck() {
    clearTimeout(state.ackTimer);
    state.ackTimer = setTimeout(ackIfSeen, 400);
  }

  async function ackIfSeen() {
    const cid = state.openId;
    const channel = cid && state.channels.get(cid);
    if (!channel || !state.loaded || document.visibilityState !== "visible" || !state.order.length) return;
    if (!isNearBottom()) return;
    const newest = state.order[state.order.length - 1];
    const wasUnread = channel.unread;
    if (wasUnread) {
      channel.unread = false;
      channel.unreadCount = 0;
      renderChannelItem(cid);
    }
    if (channel.last_read_id && channel.last_read_id >= newest) return;
    if (state.ackInFlight === `${cid}/${newest}`) return;
    state.ackInFlight = `${cid}/${newest}`;
    try {
      await api("PUT", `/channels/${cid}/ack/${newest}`);
      if (!channel.last_read_id || newest > channel.last_read_id) channel.last_read_id = newest;
    } catch {
      // Not worth an error message: the marker moves on the next message.
    } finally {
      if (state.ackInFlight === `${cid}/${newest}`) state.ackInFlight = null;
    }
  }

  // ---------------------------------------------------------------------------------------
  // WebSocket

  function setStatus(stateName, text) {
    ui.connectionStatus.dataset.state = stateName;
    ui.connectionStatus.textContent = text;
  }

  const socket = {
    ws: null,
    running: false,
    attempts: 0,
    retryTimer: 0,
    pingTimer: 0,
    pongDeadline: 0,
    heartbeatMs: 30000,
    everReady: false,
    identified: false,

    url() {
      const url = new URL(`${API}/ws`, location.href);
      url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
      url.hash = "";
      url.search = "";
      return url.href;
    },

    start() {
      this.running = true;
      this.attempts = 0;
      if (!this.ws) this.connect();
    },

    stop() {
      this.running = false;
      clearTimeout(this.retryTimer);
      this.stopPing();
      const ws = this.ws;
      this.ws = null;
      if (ws) {
        ws.onclose = null;
        ws.onmessage = null;
        ws.onerror = null;
        try { ws.close(1000, "bye"); } catch { /* already closed */ }
      }
      setStatus("offline", "offline");
    },

    connect() {
      clearTimeout(this.retryTimer);
      if (!this.running || !state.token) return;
      setStatus("connecting", this.attempts ? "reconnecting…" : "connecting…");
      let ws;
      try {
        ws = new WebSocket(this.url());
      } catch (err) {
        this.scheduleReconnect(null);
        return;
      }
      this.ws = ws;
      this.identified = false;
      ws.onopen = () => {
        ws.send(JSON.stringify({ op: "identify", token: state.token }));
      };
      ws.onmessage = (event) => {
        if (ws !== this.ws) return;
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch {
          return;
        }
        this.onFrame(frame);
      };
      ws.onerror = () => { /* onclose follows with the code */ };
      ws.onclose = (event) => {
        if (ws !== this.ws) return;
        this.ws = null;
        this.stopPing();
        this.onClose(event.code, event.reason);
      };
    },

    onFrame(frame) {
      switch (frame.op) {
        case "hello":
          this.heartbeatMs = Number(frame.data?.heartbeat_interval_ms) || 30000;
          this.startPing();
          break;
        case "ready":
          this.identified = true;
          this.attempts = 0;
          setStatus("live", "live");
          onReady(frame.data, this.everReady);
          this.everReady = true;
          break;
        case "pong":
          this.pongDeadline = 0;
          break;
        case "event":
          try {
            onEvent(frame.type, frame.data);
          } catch (err) {
            console.error("event", frame.type, err);
          }
          break;
        default:
          break;
      }
    },

    startPing() {
      this.stopPing();
      // Every half interval: the server closes a client silent for two intervals.
      const every = Math.max(1000, Math.min(this.heartbeatMs / 2, 25000));
      this.pingTimer = setInterval(() => {
        const ws = this.ws;
        if (!ws || ws.readyState !== WebSocket.OPEN) return;
        if (this.pongDeadline && Date.now() > this.pongDeadline) {
          // No pong for a whole interval: the connection is dead without knowing it.
          try { ws.close(4000, "no pong"); } catch { /* ignore */ }
          this.ws = null;
          this.stopPing();
          this.onClose(4000, "no pong");
          return;
        }
        ws.send(JSON.stringify({ op: "ping", nonce: Date.now() }));
        if (!this.pongDeadline) this.pongDeadline = Date.now() + this.heartbeatMs + 5000;
      }, every);
    },

    stopPing() {
      clearInterval(this.pingTimer);
      this.pingTimer = 0;
      this.pongDeadline = 0;
    },

    onClose(code) {
      if (!this.running) return;
      if (code === 4001) {
        // The token was refused: check it over HTTP (a 401 there logs out).
        api("GET", "/users/me").then(() => this.scheduleReconnect(code), () => {
          if (state.token) this.scheduleReconnect(code);
        });
        setStatus("offline", "offline: not authorized");
        return;
      }
      this.scheduleReconnect(code);
    },

    scheduleReconnect(code) {
      if (!this.running) return;
      clearTimeout(this.retryTimer);
      let delay;
      if (code === 4008 && this.attempts === 0) {
        // The server asks every session of an instance at once: spread the reconnects.
        delay = Math.random() * 1000;
      } else {
        const base = Math.min(30000, 1000 * 2 ** Math.min(this.attempts, 5));
        if (code === 4030 || code === 4029) delay = 30000 + Math.random() * 30000;
        else delay = base / 2 + Math.random() * (base / 2); // exponential backoff, jittered
      }
      this.attempts += 1;
      const seconds = Math.max(1, Math.round(delay / 1000));
      const why = code === 4008 ? "resyncing" : code === 4030 ? "too many open tabs" : "disconnected";
      setStatus(code === 4008 ? "connecting" : "offline", `${why}; reconnecting in ${seconds} s`);
      this.retryTimer = setTimeout(() => this.connect(), delay);
    },

    /** Reconnect now (the browser came back online, or the tab became visible). */
    nudge() {
      if (!this.running || this.ws) return;
      this.connect();
    },
  };

  function onReady(data, isReconnect) {
    if (data.user && state.me && data.user.id === state.me.id && data.user.name !== state.me.name) {
      state.me.name = data.user.name;
      ui.meName.textContent = data.user.name;
    }
    if (!state.me && data.user) {
      // Booted while the server was unreachable.
      startSession(data.user);
      return;
    }
    if (Array.isArray(data.channels)) setChannels(data.channels);
    if (state.openId && (state.loaded || isReconnect)) loadLatest();
    else if (!state.openId) {
      const wanted = hashChannel();
      if (wanted && state.channels.has(wanted)) openChannel(wanted);
    }
  }

  function onEvent(type, data) {
    switch (type) {
      case "message_create": {
        const cid = data.channel_id;
        noteLatest(cid, data.id);
        const fromMe = data.author?.id === state.me?.id;
        if (cid === state.openId && state.loaded) {
          const stick = isNearBottom() || fromMe;
          const isNew = upsertMessage(data);
          if (isNew) {
            if (stick) scrollToBottom();
            else if (!fromMe) ui.jumpLatest.hidden = false;
            if (!fromMe) announce(`${data.author.name}: ${data.content.slice(0, 200)}`);
            scheduleAck();
          }
          if (!isNew || document.visibilityState === "visible") break;
        } else if (cid === state.openId) {
          upsertMessage(data); // the first page is on its way; merged when it lands
          break;
        }
        if (!fromMe) {
          const channel = state.channels.get(cid);
          if (channel && (cid !== state.openId || document.visibilityState !== "visible")) {
            channel.unread = true;
            channel.unreadCount += 1;
            renderChannelItem(cid);
          }
        }
        break;
      }
      case "message_update":
        if (data.channel_id === state.openId) applyUpdate(data);
        break;
      case "message_delete":
        if (data.channel_id === state.openId) {
          state.deleted.add(data.id);
          removeMessage(data.id);
        }
        break;
      case "reaction_add":
      case "reaction_remove":
        if (data.channel_id === state.openId) {
          applyReaction(data.message_id, data.user_id, data.emoji, type === "reaction_add");
        }
        break;
      case "channel_create":
        addChannel(data, { role: "owner", joined_at: data.created_at });
        break;
      case "member_join":
        if (data.user?.id === state.me?.id) {
          if (!state.channels.has(data.channel_id)) {
            // Joined in another tab, or added by the owner: read the channel to list it.
            api("GET", `/channels/${data.channel_id}`)
              .then((channel) => {
                addChannel(channel, { role: "member" });
                announce(`You were added to ${channel.name}.`);
                if (state.preview?.id === channel.id) hidePreview();
              })
              .catch(() => refreshChannels());
          }
        } else if (data.channel_id === state.openId) {
          announce(`${data.user?.name} joined.`);
        }
        break;
      case "member_leave":
        if (data.user?.id === state.me?.id) {
          const name = state.channels.get(data.channel_id)?.name;
          const wasOpen = state.openId === data.channel_id;
          removeChannel(data.channel_id);
          if (wasOpen && name) announce(`You left ${name}.`);
        } else if (data.channel_id === state.openId) {
          announce(`${data.user?.name} left.`);
        }
        break;
      case "channel_ack": {
        const channel = state.channels.get(data.channel_id);
        if (!channel) break;
        if (!channel.last_read_id || data.message_id > channel.last_read_id) channel.last_read_id = data.message_id;
        if (!channel.latestId || channel.last_read_id >= channel.latestId) {
          if (channel.unread) {
            channel.unread = false;
            channel.unreadCount = 0;
            renderChannelItem(data.channel_id);
          }
        }
        break;
      }
      default:
        break;
    }
  }

  // ---------------------------------------------------------------------------------------
  // Invite link, navigation toggle

  async function copyInvite() {
    const link = ui.inviteLink.dataset.link;
    if (!link) return;
    let copied = false;
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(link);
        copied = true;
      }
    } catch {
      copied = false;
    }
    if (copied) {
      ui.inviteFallback.hidden = true;
      announce("Invite link copied.");
      const label = ui.inviteLink.textContent;
      ui.inviteLink.textContent = "Copied!";
      setTimeout(() => { ui.inviteLink.textContent = label === "Copied!" ? "Copy invite link" : label; }, 1500);
    } else {
      // No clipboard access (plain http, or refused): show the link selected, to copy by hand.
      ui.inviteFallbackInput.value = link;
      ui.inviteFallback.hidden = false;
      ui.inviteFallbackInput.focus();
      ui.inviteFallbackInput.select();
      announce("Copy the selected invite link.");
    }
  }

  function setNavOpen(open) {
    ui.chatView.classList.toggle("nav-open", open);
    ui.navToggle.setAttribute("aria-expanded", String(open));
    ui.navToggle.textContent = open ? "Close channels" : "Channels";
  }

  // ---------------------------------------------------------------------------------------
  // Wiring

  function wire() {
    document.querySelector(".skip-link")?.addEventListener("click", (event) => {
      event.preventDefault();
      (ui.composerInput.disabled ? ui.channelTitle : ui.composerInput).focus();
    });
    ui.registerForm.addEventListener("submit", register);
    ui.tokenForm.addEventListener("submit", tokenLogin);
    ui.logout.addEventListener("click", () => logout());
    ui.createChannelForm.addEventListener("submit", createChannel);
    ui.joinForm.addEventListener("submit", findChannel);
    ui.joinButton.addEventListener("click", joinPreviewed);
    ui.joinCancel.addEventListener("click", () => {
      hidePreview();
      if (hashChannel() && !state.channels.has(hashChannel())) setHash(state.openId);
      ui.joinInput.focus();
    });
    ui.leaveChannel.addEventListener("click", leaveChannel);
    ui.inviteLink.addEventListener("click", copyInvite);
    ui.navToggle.addEventListener("click", () => {
      const open = !ui.chatView.classList.contains("nav-open");
      setNavOpen(open);
      if (open) (ui.channelList.querySelector("button") || ui.createChannelName).focus();
    });
    ui.sidebar.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && ui.chatView.classList.contains("nav-open")
        && window.matchMedia("(max-width: 720px)").matches) {
        setNavOpen(false);
        ui.navToggle.focus();
      }
    });

    ui.channelList.addEventListener("click", (event) => {
      const item = event.target.closest("li[data-channel-id]");
      if (item && event.target.closest("button")) openChannel(item.dataset.channelId, { focus: "composer" });
    });

    ui.messages.addEventListener("scroll", onScroll, { passive: true });
    ui.loadOlder.addEventListener("click", () => loadOlder());
    ui.jumpLatest.addEventListener("click", () => {
      scrollToBottom();
      scheduleAck();
      ui.composerInput.focus();
    });
    ui.messages.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      const item = button.closest("li[data-message-id]");
      const mid = item && item.dataset.messageId;
      if (!mid) return;
      switch (button.dataset.action) {
        case "react": toggleReaction(mid, button.dataset.emoji); break;
        case "edit": startEdit(mid); break;
        case "delete": deleteMessage(mid); break;
        case "cancel-edit": cancelEdit(); break;
        default: break;
      }
    });

    ui.composer.addEventListener("submit", postMessage);
    ui.composerInput.addEventListener("keydown", composerKeydown);

    window.addEventListener("hashchange", () => {
      const cid = hashChannel();
      if (cid && state.me && cid !== state.openId) routeTo(cid);
    });
    window.addEventListener("online", () => socket.nudge());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") {
        socket.nudge();
        scheduleAck();
      }
    });
    window.addEventListener("storage", (event) => {
      // Logged out (or in as someone else) in another tab.
      if (event.key === TOKEN_KEY && event.newValue !== state.token) {
        if (!event.newValue) logout("You logged out in another tab.");
        else location.reload();
      }
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
