// Broker's admin console: plain JS, no build step. Served from the binary at /admin.
"use strict";

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const child of children.flat()) node.append(child instanceof Node ? child : String(child));
  return node;
};
const patterns = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);
const when = (micros) => (micros ? new Date(micros / 1000).toLocaleString() : "");
const pretty = (value) => JSON.stringify(value, null, 2);

const session = {
  get token() { return sessionStorage.getItem("broker-admin-token"); },
  set token(t) { t ? sessionStorage.setItem("broker-admin-token", t) : sessionStorage.removeItem("broker-admin-token"); },
};

/** A JSON request with the session's token; throws an Error carrying `status` on failure. */
async function api(method, path, body) {
  const headers = {};
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    const err = new Error(data?.error ?? `${res.status} ${res.statusText}`);
    err.status = res.status;
    if (res.status === 401 && path !== "/login") signOut();
    throw err;
  }
  return data;
}

// ---- sign-in ----------------------------------------------------------------------------

$("#login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("#login-error").textContent = "";
  const body = { username: $("#login-username").value, password: $("#login-password").value };
  if (!$("#login-code-row").hidden) body.code = $("#login-code").value;
  try {
    const { jwt } = await api("POST", "/login", body);
    session.token = jwt;
    await start();
  } catch (err) {
    if (err.message === "two-factor code required") {
      $("#login-code-row").hidden = false;
      $("#login-code").focus();
    }
    $("#login-error").textContent = err.message;
  }
});

async function signOut() {
  session.token = null;
  stopTail();
  stopCharts();
  await fetch("/logout", { method: "POST" }).catch(() => {});
  $("#nav").hidden = true;
  $("#who").textContent = "";
  show("signin");
}
$("#denied-logout").addEventListener("click", signOut);

let me = null;
async function start() {
  if (!session.token) return show("signin");
  try {
    me = await api("GET", "/users/me");
  } catch {
    return show("signin");
  }
  $("#who").replaceChildren(`Signed in as ${me.username}`, el("button", { id: "logout", onclick: signOut }, "Sign out"));
  if (!me.admin) {
    $("#denied-name").textContent = me.username;
    return show("denied");
  }
  $("#nav").hidden = false;
  route();
}

// ---- pages ------------------------------------------------------------------------------

const PAGES = ["signin", "denied", "users", "channels", "presence", "server"];
function show(page) {
  for (const p of PAGES) $(`#${p}`).hidden = p !== page;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
}
function route() {
  if (!me?.admin) return;
  const page = location.hash.slice(1) || "users";
  show(page);
  if (page !== "channels") stopTail();
  if (page !== "server") stopCharts();
  ({ users: loadUsers, channels: loadChannels, presence: loadPresence, server: startCharts })[page]?.();
}
window.addEventListener("hashchange", route);

// ---- users ------------------------------------------------------------------------------

const userPages = { after: [""], index: 0, next: null };
async function loadUsers() {
  const search = encodeURIComponent($("#user-search").value);
  const after = encodeURIComponent(userPages.after[userPages.index]);
  const page = await api("GET", `/users?limit=20&search=${search}&after=${after}`);
  userPages.next = page.next;
  $("#user-prev").disabled = userPages.index === 0;
  $("#user-next").disabled = !page.next;
  $("#user-rows").replaceChildren(...page.items.map(userRow));
}
function userRow(u) {
  const read = el("input", { type: "text", value: u.read.join(", "), "aria-label": `read of ${u.username}` });
  const write = el("input", { type: "text", value: u.write.join(", "), "aria-label": `write of ${u.username}` });
  const admin = el("input", { type: "checkbox", "aria-label": `admin of ${u.username}` });
  admin.checked = u.admin;
  const act = (label, fn) => el("button", { onclick: () => fn().catch((e) => message(e.message)) }, label);
  return el("tr", { "data-user": u.username },
    el("td", {}, u.username), el("td", {}, admin), el("td", {}, read), el("td", {}, write),
    el("td", {}, u.totp ? "on" : ""),
    el("td", { class: u.revoked ? "revoked" : "active" }, u.revoked ? "revoked" : "active"),
    el("td", { class: "actions" },
      act("Save", async () => {
        await api("PATCH", `/users/${encodeURIComponent(u.username)}`, { admin: admin.checked, read: patterns(read.value), write: patterns(write.value) });
        message(`Saved ${u.username}`);
        await loadUsers();
      }),
      act("Reset password", async () => {
        const pw = prompt(`New password for ${u.username} (8 characters or more)`);
        if (!pw) return;
        await api("POST", `/users/${encodeURIComponent(u.username)}/password`, { new_password: pw });
        message(`Password of ${u.username} reset`);
      }),
      act(u.revoked ? "Restore" : "Revoke", async () => {
        await api("PATCH", `/users/${encodeURIComponent(u.username)}`, { revoked: !u.revoked });
        message(`${u.username} ${u.revoked ? "restored" : "revoked"}`);
        await loadUsers();
      }),
      u.totp ? act("Remove 2FA", async () => {
        await api("PATCH", `/users/${encodeURIComponent(u.username)}`, { totp: false });
        await loadUsers();
      }) : ""));
}
const message = (text) => { $("#users-message").textContent = text; };
let searchTimer;
$("#user-search").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => { userPages.after = [""]; userPages.index = 0; loadUsers(); }, 200);
});
$("#user-next").addEventListener("click", () => { userPages.after[++userPages.index] = userPages.next; loadUsers(); });
$("#user-prev").addEventListener("click", () => { userPages.index = Math.max(0, userPages.index - 1); loadUsers(); });
$("#create-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const body = {
    username: $("#new-username").value, password: $("#new-password").value,
    read: patterns($("#new-read").value), write: patterns($("#new-write").value), admin: $("#new-admin").checked,
  };
  try {
    await api("POST", "/users", body);
    message(`Created ${body.username}`);
    $("#new-username").value = ""; $("#new-password").value = "";
    await loadUsers();
  } catch (err) { message(err.message); }
});

// ---- channels ---------------------------------------------------------------------------

let currentChannel = null;
async function loadChannels() {
  const { channels } = await api("GET", "/channels");
  $("#channel-rows").replaceChildren(...channels.map((c) =>
    el("tr", { class: `clickable${c.channel === currentChannel ? " selected" : ""}`, "data-channel": c.channel, onclick: () => openChannel(c.channel) },
      el("td", {}, c.channel), el("td", {}, c.records), el("td", {}, c.events), el("td", {}, when(c.last_timestamp)))));
  startTail();
}
async function openChannel(channel) {
  currentChannel = channel;
  for (const tr of document.querySelectorAll("#channel-rows tr")) tr.classList.toggle("selected", tr.dataset.channel === channel);
  $("#channel-detail").hidden = false;
  $("#channel-title").textContent = channel;
  $("#history").hidden = true;
  const { items } = await api("GET", `/latest?channel=${encodeURIComponent(channel)}`);
  $("#latest").replaceChildren(...items.map((r) => el("div", { class: "latest-item" },
    el("div", { class: "event-name" }, el("a", { onclick: () => openHistory(channel, r.event) }, r.event), ` · id ${r.id} · ${when(r.timestamp)}${r.user ? ` · ${r.user}` : ""}`),
    el("pre", {}, pretty(r.data)))));
}
async function openHistory(channel, event) {
  const { items } = await api("GET", `/history/${encodeURIComponent(event)}?channel=${encodeURIComponent(channel)}&limit=1000`);
  $("#history").hidden = false;
  $("#history-event").textContent = event;
  const picked = [];
  const list = items.map((v) => el("li", { "data-id": v.id, onclick: (e) => {
    picked.push(v); if (picked.length > 2) picked.shift();
    for (const li of list) li.classList.toggle("picked", picked.some((p) => p.id === li.dataset.id));
    if (picked.length === 2) {
      const [a, b] = [...picked].sort((x, y) => Number(x.id) - Number(y.id));
      $("#diff").replaceChildren(...diffLines(pretty(a.data), pretty(b.data)));
    }
  } }, `id ${v.id} · ${when(v.timestamp)}${v.user ? ` · ${v.user}` : ""}`));
  $("#history-list").replaceChildren(...list);
  $("#diff").replaceChildren();
  if (items.length >= 2) { list[items.length - 2].click(); list[items.length - 1].click(); }
}
/** A line diff (longest common subsequence) of two texts, as spans. */
function diffLines(before, after) {
  const a = before.split("\n"), b = after.split("\n");
  const lcs = Array.from({ length: a.length + 1 }, () => new Array(b.length + 1).fill(0));
  for (let i = a.length - 1; i >= 0; i--)
    for (let j = b.length - 1; j >= 0; j--)
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) { out.push(el("span", {}, `  ${a[i]}\n`)); i++; j++; }
    else if (j < b.length && (i === a.length || lcs[i][j + 1] >= lcs[i + 1][j])) out.push(el("span", { class: "add" }, `+ ${b[j++]}`));
    else out.push(el("span", { class: "del" }, `- ${a[i++]}`));
  }
  return out;
}

// Live tail: every new record of every channel, with pause and a filter. Read with fetch, not
// EventSource: an EventSource only reports the event names it is told in advance.
let tail = null, paused = false;
const held = [];
function tailStatus(text, live = false) {
  $("#tail-status").textContent = text;
  $("#tail-status").className = live ? "badge live" : "badge";
}
function startTail() {
  if (tail) return;
  const control = new AbortController();
  tail = control;
  (async () => {
    let lastId = null;
    while (tail === control) {
      try {
        const headers = { Authorization: `Bearer ${session.token}` };
        if (lastId) headers["Last-Event-ID"] = lastId;
        // Resumed, everything is new; else the stream starts with a snapshot, and only what
        // follows its `$synced` is.
        let synced = lastId !== null;
        const res = await fetch("/events?envelope=true", { headers, signal: control.signal });
        if (!res.ok) throw new Error(`${res.status}`);
        await readEvents(res.body, (type, id, data) => {
          if (type === "$synced") { synced = true; return tailStatus("live", true); }
          if (type.startsWith("$") || !data) return;
          if (id) lastId = id;
          if (!synced) return;
          const r = JSON.parse(data);
          if (paused) held.push(r); else addTail(r);
        });
      } catch (err) {
        if (control.signal.aborted) return;
      }
      tailStatus("reconnecting");
      await new Promise((r) => setTimeout(r, 1000));
    }
  })();
}
/** Calls `onEvent(type, id, data)` for each event of an SSE body until it ends. */
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", type = "message", id = null, data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let nl;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, nl).replace(/\r$/, "");
      buffer = buffer.slice(nl + 1);
      if (line === "") {
        if (data.length) onEvent(type, id, data.join("\n"));
        type = "message"; data = [];
      } else if (line.startsWith("event:")) type = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      else if (line.startsWith("id:")) id = line.slice(3).trim();
    }
  }
}
function addTail(r) {
  const text = `${r.id}  ${r.channel}  ${r.event}  ${JSON.stringify(r.data)}`;
  const li = el("li", { "data-channel": r.channel, "data-event": r.event }, text);
  li.hidden = !matchesFilter(text);
  $("#tail").prepend(li);
  while ($("#tail").children.length > 500) $("#tail").lastChild.remove();
  if (r.channel === currentChannel) openChannel(currentChannel).catch(() => {});
  clearTimeout(channelsTimer);
  channelsTimer = setTimeout(() => loadChannels().catch(() => {}), 300);
}
let channelsTimer;
const matchesFilter = (text) => text.toLowerCase().includes($("#tail-filter").value.toLowerCase());
$("#tail-filter").addEventListener("input", () => {
  for (const li of $("#tail").children) li.hidden = !matchesFilter(li.textContent);
});
$("#tail-pause").addEventListener("click", () => {
  paused = !paused;
  $("#tail-pause").textContent = paused ? `Resume` : "Pause";
  if (!paused) { for (const r of held.splice(0)) addTail(r); }
});
$("#tail-clear").addEventListener("click", () => $("#tail").replaceChildren());
function stopTail() {
  tail?.abort();
  tail = null;
  tailStatus("off");
}

// ---- presence ---------------------------------------------------------------------------

async function loadPresence() {
  const { clients } = await api("GET", "/presence");
  const byChannel = new Map();
  for (const c of clients) for (const ch of c.channels) {
    if (!byChannel.has(ch)) byChannel.set(ch, []);
    byChannel.get(ch).push(c);
  }
  const sections = [...byChannel.keys()].sort().map((ch) => el("div", { class: "card" },
    el("h3", {}, `${ch} (${byChannel.get(ch).length})`),
    el("ul", {}, byChannel.get(ch).map((c) => el("li", {}, `${c.client_id}${c.user ? ` · ${c.user}` : ""} · since ${new Date(c.connected_at * 1000 || c.connected_at).toLocaleTimeString()}`)))));
  $("#presence-list").replaceChildren(...(sections.length ? sections : [el("p", { class: "hint" }, "Nobody is connected.")]));
}
$("#presence-refresh").addEventListener("click", loadPresence);

// ---- server -----------------------------------------------------------------------------

const CHARTS = [
  { id: "subscribers", title: "Subscribers", metric: "broker_subscribers", kind: "gauge" },
  { id: "inserts", title: "Inserts/s", metric: "broker_inserts_total", kind: "rate" },
  { id: "deliveries", title: "Deliveries/s", metric: "broker_deliveries_total", kind: "rate" },
  { id: "slow", title: "Slow-subscriber catch-ups/s", metric: "broker_slow_subscribers_total", kind: "rate" },
  { id: "latency", title: "Commit latency (ms, mean)", metric: "broker_store_commit_seconds", kind: "mean" },
];
const HISTORY = 60;
let chartTimer = null, lastSample = null;
const series = Object.fromEntries(CHARTS.map((c) => [c.id, []]));

function parseMetrics(text) {
  const values = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/);
    if (m && !m[2]) values[m[1]] = Number(m[3]);
  }
  return values;
}
async function sample() {
  const text = await fetch("/metrics").then((r) => r.text());
  const now = { at: performance.now(), values: parseMetrics(text) };
  if (lastSample) {
    const secs = (now.at - lastSample.at) / 1000;
    for (const c of CHARTS) {
      const v = now.values, p = lastSample.values;
      let y;
      if (c.kind === "gauge") y = v[c.metric] ?? 0;
      else if (c.kind === "rate") y = Math.max(0, ((v[c.metric] ?? 0) - (p[c.metric] ?? 0)) / secs);
      else {
        const n = (v[`${c.metric}_count`] ?? 0) - (p[`${c.metric}_count`] ?? 0);
        y = n > 0 ? (1000 * ((v[`${c.metric}_sum`] ?? 0) - (p[`${c.metric}_sum`] ?? 0))) / n : 0;
      }
      series[c.id].push(y);
      if (series[c.id].length > HISTORY) series[c.id].shift();
    }
    drawCharts();
  }
  lastSample = now;
  $("#charts").dataset.samples = String(Number($("#charts").dataset.samples ?? 0) + 1);
}
function drawCharts() {
  for (const c of CHARTS) {
    const canvas = $(`#chart-${c.id}`);
    const data = series[c.id];
    const ctx = canvas.getContext("2d");
    const w = (canvas.width = canvas.clientWidth * devicePixelRatio);
    const h = (canvas.height = canvas.clientHeight * devicePixelRatio);
    ctx.clearRect(0, 0, w, h);
    const max = Math.max(1, ...data) * 1.1;
    ctx.strokeStyle = "#d9dee7"; ctx.beginPath(); ctx.moveTo(0, h - 0.5); ctx.lineTo(w, h - 0.5); ctx.stroke();
    ctx.strokeStyle = "#2f6fed"; ctx.lineWidth = 2 * devicePixelRatio; ctx.beginPath();
    data.forEach((y, i) => {
      const x = (i / (HISTORY - 1)) * w, yy = h - (y / max) * (h - 4);
      i ? ctx.lineTo(x, yy) : ctx.moveTo(x, yy);
    });
    ctx.stroke();
    ctx.fillStyle = "#2f6fed";
    if (data.length === 1) ctx.fillRect(0, h - (data[0] / max) * (h - 4) - 2, 4, 4);
    const last = data[data.length - 1] ?? 0;
    $(`#now-${c.id}`).textContent = last >= 100 ? Math.round(last) : last.toFixed(c.kind === "gauge" ? 0 : 2);
  }
}
async function startCharts() {
  if (!$("#charts").children.length) {
    $("#charts").replaceChildren(...CHARTS.map((c) => el("div", { class: "chart" },
      el("h4", {}, c.title, el("span", { class: "now", id: `now-${c.id}` }, "")), el("canvas", { id: `chart-${c.id}` }))));
  }
  try {
    const info = await api("GET", "/server");
    const limits = Object.entries(info.limits).map(([k, v]) => `${k} ${v}`).join(", ");
    const rows = [["Version", info.version], ["Uptime", `${Math.floor(info.uptime_secs / 60)} min ${info.uptime_secs % 60} s`],
      ["Store", info.store.backend === "cluster" ? `cluster: ${info.store.nats.join(", ")}` : `embedded (${info.store.path})`], ["Limits", limits]];
    $("#server-info").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  } catch (err) {
    $("#server-info").replaceChildren(el("dt", {}, "Server"), el("dd", {}, err.message));
  }
  if (!chartTimer) {
    lastSample = null;
    await sample();
    chartTimer = setInterval(() => sample().catch(() => {}), 2000);
  }
}
function stopCharts() { clearInterval(chartTimer); chartTimer = null; }

start();
