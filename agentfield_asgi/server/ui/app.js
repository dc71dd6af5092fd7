// Memory inspector for agentfield-asgi. Plain browser JavaScript: no build step, no CDN.
// Every URL is relative to this page (served at <mount>/ui/), so it works under any prefix.
"use strict";

(() => {
  const API = "../api/v1";
  const KEY_STORAGE = "agentfield-inspector.api-key";
  const SCOPE_ORDER = ["workflow", "session", "actor", "global"];
  const SCOPE_HEADERS = { workflow: "X-Workflow-ID", session: "X-Session-ID", actor: "X-Actor-ID" };
  const PAGE_SIZE = 200;
  const FEED_MAX = 300;
  const EARLIER_COUNT = 50; // changes from history shown when the page opens
  const RETRY_MIN_MS = 500;
  const RETRY_MAX_MS = 5000;
  const FLUSH_MS = 120; // coalesce bursts of events before re-reading keys

  const $ = (id) => document.getElementById(id);

  const state = {
    config: { allow_edit: false },
    selected: null, // {scope, scope_id}
    pattern: "",
    patternRe: null,
    cursor: null,
    records: new Map(), // key -> record of the selected scope id
    rows: new Map(), // key -> <tr>
    scopeCounts: new Map(), // "scope\u0000id" -> key count, to flash what changed
    lastEventId: "",
    source: null,
    everOpened: false,
    retryMs: RETRY_MIN_MS,
    retryTimer: null,
    pendingKeys: new Set(),
    flushTimer: null,
    scopesTimer: null,
    listToken: 0,
    earlierLoaded: false,
  };

  // ------------------------------------------------------------------ API key

  let apiKey = sessionStorage.getItem(KEY_STORAGE) || "";
  let keyPrompt = null; // one dialog at a time, however many requests were refused
  let keyDeclined = false; // after Cancel, wait for the "API key" button instead of asking again

  function askForKey(refused) {
    if (keyPrompt) return keyPrompt;
    keyPrompt = new Promise((resolve) => {
      const dialog = $("key-dialog");
      $("key-error").hidden = !refused;
      $("key-input").value = "";
      const done = (value) => {
        if (dialog.open) dialog.close();
        keyPrompt = null;
        keyDeclined = !value;
        if (value) {
          apiKey = value;
          sessionStorage.setItem(KEY_STORAGE, value);
        }
        resolve(value);
      };
      $("key-form").onsubmit = (e) => {
        e.preventDefault();
        done($("key-input").value.trim());
      };
      $("key-cancel").onclick = () => done(null);
      dialog.oncancel = (e) => {
        e.preventDefault();
        done(null);
      };
      dialog.showModal();
      $("key-input").focus();
    });
    return keyPrompt;
  }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error) || `HTTP ${status}`);
      this.status = status;
      this.body = body || {};
    }
  }

  // fetch() against the memory API: sends the key and the selected scope's id header;
  // on 401 asks for a key (once for all concurrent requests) and tries again.
  async function api(path, { method = "GET", body, scopeRef } = {}) {
    for (;;) {
      const usedKey = apiKey;
      const headers = { Accept: "application/json" };
      if (usedKey) headers["X-API-Key"] = usedKey;
      if (scopeRef && SCOPE_HEADERS[scopeRef.scope]) headers[SCOPE_HEADERS[scopeRef.scope]] = scopeRef.scope_id;
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const resp = await fetch(API + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
      if (resp.status === 401) {
        if (apiKey !== usedKey) continue; // a key arrived while this request was out
        setStatus("key needed");
        const key = keyDeclined ? null : await askForKey(Boolean(usedKey));
        if (!key) throw new ApiError(401, await readError(resp));
        restartStream();
        continue;
      }
      if (!resp.ok) throw new ApiError(resp.status, await readError(resp));
      const data = resp.status === 204 ? null : await resp.json();
      return { data, headers: resp.headers };
    }
  }

  async function readError(resp) {
    try {
      return await resp.json();
    } catch (_) {
      return { error: `HTTP ${resp.status}` };
    }
  }

  // ------------------------------------------------------------------ helpers

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name.startsWith("data-")) node.dataset[camel(name.slice(5))] = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) {
      if (child !== undefined && child !== null) node.append(child);
    }
    return node;
  }

  const camel = (s) => s.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
  const scopeKey = (scope, id) => `${scope}\u0000${id}`;
  const isSelected = (scope, id) => state.selected && state.selected.scope === scope && state.selected.scope_id === id;

  function pretty(value) {
    return JSON.stringify(value, null, 2);
  }

  function compact(value, max = 160) {
    const text = JSON.stringify(value);
    return text.length > max ? text.slice(0, max - 1) + "…" : text;
  }

  function shortTime(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso || "";
    const pad = (n, w = 2) => String(n).padStart(w, "0");
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
    const today = new Date().toDateString() === d.toDateString();
    return today ? time : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
  }

  // Glob -> RegExp with the server's meaning (* any run, ? one char, [abc] / [!abc] classes).
  function globToRegExp(glob) {
    let out = "^";
    for (let i = 0; i < glob.length; i++) {
      const c = glob[i];
      if (c === "*") out += ".*";
      else if (c === "?") out += ".";
      else if (c === "[") {
        let j = i + 1;
        const negate = glob[j] === "!" || glob[j] === "^";
        if (negate) j++;
        if (glob[j] === "]") j++;
        while (j < glob.length && glob[j] !== "]") j++;
        if (j >= glob.length) throw new Error(`unclosed '[' in pattern`);
        const body = glob.slice(i + 1 + (negate ? 1 : 0), j).replace(/[\\\]\[^]/g, "\\$&");
        out += (negate ? "[^" : "[") + body + "]";
        i = j;
      } else out += c.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&");
    }
    return new RegExp(out + "$", "s");
  }

  function flash(node) {
    node.classList.remove("flash");
    void node.offsetWidth; // restart the animation
    node.classList.add("flash");
  }

  function setStatus(text) {
    const badge = $("status");
    badge.textContent = text;
    badge.dataset.state = text.replace(/\s+/g, "-");
  }

  function showKeysError(message) {
    $("keys-error").textContent = message || "";
    $("keys-error").hidden = !message;
  }

  // ------------------------------------------------------------------ scopes

  async function loadScopes() {
    const { data } = await api("/memory/scopes?limit=1000");
    renderScopes(data);
    if (!state.selected && data.length) select(data[0].scope, data[0].scope_id);
  }

  function scheduleScopes() {
    if (state.scopesTimer) return;
    state.scopesTimer = setTimeout(() => {
      state.scopesTimer = null;
      loadScopes().catch(reportError);
    }, 300);
  }

  function renderScopes(summaries) {
    const box = $("scopes");
    const previous = state.scopeCounts;
    state.scopeCounts = new Map();
    box.replaceChildren();
    if (!summaries.length) {
      box.append(el("p", { class: "empty" }, "no keys stored yet"));
      return;
    }
    for (const scope of SCOPE_ORDER) {
      const items = summaries.filter((s) => s.scope === scope);
      if (!items.length) continue;
      const list = el("ul");
      for (const s of items) {
        const id = scopeKey(s.scope, s.scope_id);
        state.scopeCounts.set(id, s.keys);
        const button = el(
          "button",
          {
            type: "button",
            class: "scope-id" + (isSelected(s.scope, s.scope_id) ? " selected" : ""),
            "data-scope": s.scope,
            "data-scope-id": s.scope_id,
            title: `${s.scope} ${s.scope_id}`,
            onclick: () => select(s.scope, s.scope_id),
          },
          el("span", { class: "id", title: s.scope_id }, s.scope_id),
          el("span", { class: "count" }, String(s.keys)),
        );
        list.append(el("li", {}, button));
        if (previous.size && previous.get(id) !== s.keys) flash(button);
      }
      box.append(el("h3", {}, scope, el("span", { class: "count" }, String(items.length))), list);
    }
  }

  // ------------------------------------------------------------------ keys

  function select(scope, scopeId) {
    state.selected = { scope, scope_id: scopeId };
    for (const b of document.querySelectorAll(".scope-id")) {
      b.classList.toggle("selected", isSelected(b.dataset.scope, b.dataset.scopeId));
    }
    $("keys-title").textContent = scope === "global" ? "Keys · global" : `Keys · ${scope} ${scopeId}`;
    $("keys-title").title = $("keys-title").textContent;
    writeHash();
    applyFeedFilter();
    loadKeys().catch(reportError);
  }

  async function loadKeys({ more = false } = {}) {
    const sel = state.selected;
    if (!sel) return;
    const token = ++state.listToken;
    const query = new URLSearchParams({ scope: sel.scope, limit: String(PAGE_SIZE) });
    if (state.pattern) query.set("pattern", state.pattern);
    if (more && state.cursor) query.set("cursor", state.cursor);
    let resp;
    try {
      resp = await api(`/memory/list?${query}`, { scopeRef: sel });
    } catch (err) {
      if (token === state.listToken) showKeysError(err.message);
      throw err;
    }
    if (token !== state.listToken) return; // a newer selection or filter won
    showKeysError("");
    if (!more) {
      state.records.clear();
      state.rows.clear();
      $("keys").replaceChildren();
    }
    for (const record of resp.data) upsertRow(record, false);
    state.cursor = resp.headers.get("X-Next-Cursor");
    $("more").hidden = !state.cursor;
    updateEmpty();
  }

  function updateEmpty() {
    const empty = $("keys-empty");
    empty.hidden = state.rows.size > 0;
    empty.textContent = !state.selected
      ? "select a scope id on the left"
      : state.pattern
        ? `no keys match ${state.pattern}`
        : "no keys in this scope id";
  }

  function buildRow(record) {
    const actions = state.config.allow_edit
      ? el(
          "div",
          { class: "row-actions" },
          el("button", { type: "button", class: "edit", onclick: () => openEditor(record) }, "edit"),
          el("button", { type: "button", class: "delete", onclick: () => deleteKey(record) }, "delete"),
        )
      : null;
    return el(
      "tr",
      { "data-key": record.key, class: record.deleted ? "deleted" : "" },
      el("td", { class: "col-key" }, el("code", {}, record.key)),
      el("td", { class: "col-version" }, record.version === undefined ? "…" : String(record.version)),
      el("td", { class: "col-updated", title: record.updated_at || "" }, shortTime(record.updated_at)),
      el("td", { class: "col-value" }, el("pre", {}, pretty(record.data)), actions),
    );
  }

  function upsertRow(record, highlight) {
    state.records.set(record.key, record);
    const row = buildRow(record);
    const old = state.rows.get(record.key);
    if (old) old.replaceWith(row);
    else {
      // keep key order without re-rendering the table
      let before = null;
      for (const [key, tr] of state.rows) {
        if (key > record.key && (!before || key < before.dataset.key)) before = tr;
      }
      $("keys").insertBefore(row, before);
    }
    state.rows.set(record.key, row);
    if (highlight) flash(row);
  }

  // Re-read keys named by events, to show their new versions (coalesced per burst).
  function scheduleKeyRefresh(key) {
    state.pendingKeys.add(key);
    if (state.flushTimer) return;
    state.flushTimer = setTimeout(flushKeys, FLUSH_MS);
  }

  async function flushKeys() {
    state.flushTimer = null;
    const keys = [...state.pendingKeys];
    state.pendingKeys.clear();
    const sel = state.selected;
    if (!sel || !keys.length) return;
    if (keys.length > 25) return loadKeys().catch(reportError);
    await Promise.all(
      keys.map(async (key) => {
        try {
          const { data } = await api("/memory/get", { method: "POST", body: { key, scope: sel.scope }, scopeRef: sel });
          if (isSelected(sel.scope, sel.scope_id) && state.rows.has(key)) upsertRow(data, false);
        } catch (err) {
          if (!(err instanceof ApiError && err.status === 404)) reportError(err);
        }
      }),
    );
  }

  // ------------------------------------------------------------------ editing (--ui-allow-edit)

  let editing = null;

  function openEditor(record) {
    editing = record;
    $("edit-title").textContent = record ? "Edit key" : "New key";
    $("edit-key").value = record ? record.key : "";
    $("edit-key").readOnly = Boolean(record);
    $("edit-value").value = record ? pretty(record.data) : "";
    $("edit-error").hidden = true;
    $("edit-dialog").showModal();
  }

  async function saveEdit(e) {
    e.preventDefault();
    const sel = state.selected;
    const error = $("edit-error");
    let data;
    try {
      data = JSON.parse($("edit-value").value);
    } catch (err) {
      error.textContent = `not valid JSON: ${err.message}`;
      error.hidden = false;
      return;
    }
    // Compare-and-set: never overwrite a change made since the value was shown.
    const body = { key: $("edit-key").value, data, scope: sel.scope, if_version: editing ? editing.version : 0 };
    try {
      const { data: record } = await api("/memory/set", { method: "POST", body, scopeRef: sel });
      $("edit-dialog").close();
      upsertRow(record, true);
      updateEmpty();
    } catch (err) {
      error.textContent = err.status === 412 ? "the key changed meanwhile; reload it and try again" : err.message;
      error.hidden = false;
    }
  }

  async function deleteKey(record) {
    const sel = state.selected;
    if (!window.confirm(`Delete key "${record.key}" from ${sel.scope} ${sel.scope_id}?`)) return;
    try {
      await api("/memory/delete", {
        method: "POST",
        body: { key: record.key, scope: sel.scope, if_version: record.version },
        scopeRef: sel,
      });
    } catch (err) {
      showKeysError(err.status === 412 ? `"${record.key}" changed meanwhile; not deleted` : err.message);
    }
  }

  // ------------------------------------------------------------------ live feed

  function streamUrl() {
    const query = new URLSearchParams();
    if (apiKey) query.set("api_key", apiKey); // EventSource cannot send headers
    if (state.lastEventId) query.set("last_event_id", state.lastEventId);
    const qs = query.toString();
    return `${API}/memory/events/sse${qs ? "?" + qs : ""}`;
  }

  function connect() {
    clearTimeout(state.retryTimer);
    if (state.source) state.source.close();
    const source = new EventSource(streamUrl());
    state.source = source;
    setStatus(state.everOpened ? "reconnecting" : "connecting");
    source.onopen = () => {
      if (source !== state.source) return;
      state.retryMs = RETRY_MIN_MS;
      const reopened = state.everOpened;
      state.everOpened = true;
      setStatus("live");
      if (reopened) refreshAll(); // the replay covers the feed; re-read lists for counts
    };
    source.onmessage = (e) => {
      if (source === state.source) onEvent(e);
    };
    source.addEventListener("reset", (e) => {
      if (source !== state.source) return;
      // The stream goes on after the server's resume point, which may be lower than ours
      // (a replaced database starts its ids again): take it as the new watermark.
      state.lastEventId = e.lastEventId || "";
      let reason = "";
      try {
        reason = JSON.parse(e.data).reason;
      } catch (_) {
        /* no details */
      }
      addNotice(
        reason === "unknown_id"
          ? "the server does not know the last event seen (new database?); lists reloaded"
          : "events older than the server's retention were missed; lists reloaded",
      );
      refreshAll();
    });
    source.onerror = () => {
      if (source !== state.source) return;
      setStatus("reconnecting");
      // CONNECTING: the browser retries by itself and sends Last-Event-ID.
      if (source.readyState !== EventSource.CLOSED) return;
      // CLOSED: the server refused the stream (401, 503, ...): retry ourselves, resuming
      // from the last id through the query string.
      source.close();
      state.source = null;
      scheduleRecover();
    };
  }

  function restartStream() {
    if (state.source || state.retryTimer) connect();
  }

  function scheduleRecover() {
    clearTimeout(state.retryTimer);
    const delay = state.retryMs;
    state.retryMs = Math.min(RETRY_MAX_MS, state.retryMs * 2);
    state.retryTimer = setTimeout(recover, delay * (0.75 + Math.random() / 2));
  }

  async function recover() {
    state.retryTimer = null;
    try {
      await api("/memory/scopes?limit=1"); // asks for a key if that is what was missing
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return setStatus("key needed");
      return scheduleRecover(); // server still down
    }
    connect();
  }

  function newer(id, than) {
    if (!than) return true;
    try {
      return BigInt(id) > BigInt(than);
    } catch (_) {
      return id !== than;
    }
  }

  function onEvent(e) {
    if (e.lastEventId) {
      if (!newer(e.lastEventId, state.lastEventId)) return; // already shown (resume overlap)
      state.lastEventId = e.lastEventId;
    }
    let event;
    try {
      event = JSON.parse(e.data);
    } catch (_) {
      return;
    }
    addFeedItem(event);
    scheduleScopes(); // key counts may have changed
    if (!isSelected(event.scope, event.scope_id)) return;
    if (state.patternRe && !state.patternRe.test(event.key)) return;
    const old = state.records.get(event.key);
    if (event.action === "delete") {
      if (old) upsertRow({ ...old, deleted: true, updated_at: event.timestamp }, true);
      return;
    }
    upsertRow({ ...(old || {}), key: event.key, data: event.data, updated_at: event.timestamp, version: undefined, deleted: false }, true);
    updateEmpty();
    scheduleKeyRefresh(event.key);
  }

  function addFeedItem(event) {
    prependFeed(feedItem(event));
  }

  // The last changes made before the page opened, from history, under a mark that sets
  // them apart from the live ones; the stream then resumes right after the newest of them,
  // so nothing written meanwhile is missed or shown twice.
  async function loadEarlier() {
    if (state.earlierLoaded) return;
    const { data } = await api(`/memory/events/history?limit=${EARLIER_COUNT}`);
    state.earlierLoaded = true;
    if (!Array.isArray(data) || !data.length) return;
    const feed = $("feed");
    for (const event of data) {
      // oldest first: each goes above the one before, as live events do
      const item = feedItem(event);
      item.classList.add("earlier");
      feed.prepend(item);
      filterFeedItem(item);
    }
    const count = data.length === 1 ? "change" : `${data.length} changes`;
    feed.prepend(el("li", { class: "earlier-mark" }, `earlier: the last ${count} before this page opened`));
    const newest = String(data[data.length - 1].id);
    if (newer(newest, state.lastEventId)) state.lastEventId = newest;
  }

  function feedItem(event) {
    const agent = event.metadata && event.metadata.agent_id;
    const value = event.action === "delete" ? event.previous_data : event.data;
    const where = event.scope === "global" ? "global" : `${event.scope} ${event.scope_id}`;
    return el(
      "li",
      {
        class: `event ${event.action}`,
        "data-id": event.id,
        "data-key": event.key,
        "data-scope": event.scope,
        "data-scope-id": event.scope_id,
        title: `event ${event.id} at ${event.timestamp}`,
      },
      el("span", { class: "time" }, shortTime(event.timestamp)),
      el("span", { class: "action" }, event.action),
      el(
        "button",
        { type: "button", class: "where", title: where, onclick: () => select(event.scope, event.scope_id) },
        where,
      ),
      agent ? el("span", { class: "agent" }, agent) : null,
      el(
        "div",
        { class: "line" },
        el("code", { class: "key" }, event.key),
        el("span", { class: "value", title: compact(value, 4000) }, event.action === "delete" ? `was ${compact(value)}` : compact(value)),
      ),
    );
  }

  function addNotice(text) {
    prependFeed(el("li", { class: "notice" }, text));
  }

  function prependFeed(item) {
    const feed = $("feed");
    feed.prepend(item);
    while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
    filterFeedItem(item);
    flash(item);
  }

  function filterFeedItem(item) {
    const only = $("feed-selected-only").checked;
    item.hidden = only && item.dataset.scope !== undefined && !isSelected(item.dataset.scope, item.dataset.scopeId);
  }

  function applyFeedFilter() {
    for (const item of $("feed").children) filterFeedItem(item);
  }

  // ------------------------------------------------------------------ page state

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    const scope = params.get("scope");
    if (SCOPE_ORDER.includes(scope)) {
      state.selected = { scope, scope_id: scope === "global" ? "global" : params.get("id") || "" };
    }
    setPattern(params.get("pattern") || "");
    $("pattern").value = state.pattern;
  }

  function writeHash() {
    const params = new URLSearchParams();
    if (state.selected) {
      params.set("scope", state.selected.scope);
      if (state.selected.scope !== "global") params.set("id", state.selected.scope_id);
    }
    if (state.pattern) params.set("pattern", state.pattern);
    history.replaceState(null, "", `#${params}`);
  }

  function setPattern(pattern) {
    state.pattern = pattern.trim();
    try {
      state.patternRe = state.pattern ? globToRegExp(state.pattern) : null;
    } catch (_) {
      state.patternRe = null; // the server will say what is wrong with it
    }
  }

  function refreshAll() {
    loadScopes().catch(reportError);
    if (state.selected) loadKeys().catch(reportError);
  }

  function reportError(err) {
    if (err instanceof ApiError && err.status === 401) return; // already asked for a key
    if (err instanceof TypeError) return; // network down: the stream status says so
    console.warn("inspector:", err);
  }

  async function start() {
    try {
      const resp = await fetch("config.json", { cache: "no-store" });
      if (resp.ok) state.config = await resp.json();
    } catch (_) {
      /* defaults: read-only */
    }
    document.body.classList.toggle("can-edit", Boolean(state.config.allow_edit));
    $("mode").textContent = state.config.allow_edit ? "editing allowed" : "read-only";
    $("new-key").hidden = !state.config.allow_edit;

    $("filter-form").addEventListener("submit", (e) => e.preventDefault());
    let typing = null;
    $("pattern").addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => {
        setPattern($("pattern").value);
        writeHash();
        loadKeys().catch(reportError);
      }, 250);
    });
    $("refresh").addEventListener("click", refreshAll);
    $("more").addEventListener("click", () => loadKeys({ more: true }).catch(reportError));
    $("clear-feed").addEventListener("click", () => $("feed").replaceChildren());
    $("feed-selected-only").addEventListener("change", applyFeedFilter);
    $("key-button").addEventListener("click", async () => {
      if (await askForKey(false)) {
        await loadEarlier().catch(reportError);
        connect();
        refreshAll();
      }
    });
    $("new-key").addEventListener("click", () => state.selected && openEditor(null));
    $("edit-form").addEventListener("submit", saveEdit);
    $("edit-cancel").addEventListener("click", () => $("edit-dialog").close());

    readHash();
    if (state.selected) select(state.selected.scope, state.selected.scope_id);
    try {
      await loadScopes(); // asks for a key first when the server wants one
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return; // declined: the key button resumes
      reportError(err);
    }
    await loadEarlier().catch(reportError);
    connect();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
