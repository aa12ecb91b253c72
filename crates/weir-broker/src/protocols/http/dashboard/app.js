// Weir dashboard: a hand-written single-page app over the admin API (/api/v1). No framework,
// no build step. Pages are chosen by the URL's hash (#/topics, #/groups/NAME, ...); every
// broker error is shown as its readable message.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const main = () => $("#main");
let refreshTimer = null;
let renderToken = 0;

// ---- helpers ---------------------------------------------------------------------------------

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  }[c]));
}

function enc(s) { return encodeURIComponent(s); }

// Calls the admin API (paths under /api/v1, or a whole /api/... path); a broker error becomes
// an Error with the broker's message.
async function api(path, options = {}) {
  const init = { method: options.method || "GET", headers: {} };
  if (options.body !== undefined) {
    init.body = JSON.stringify(options.body);
    init.headers["content-type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path.startsWith("/api/") ? path : "/api/v1" + path, init);
  } catch (e) {
    throw new Error("The broker cannot be reached (" + e.message + "). Is it running?");
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!response.ok) {
    const message = data && data.message ? data.message : (text || response.statusText);
    const code = data && data.error ? data.error.replace(/_/g, " ") : "HTTP " + response.status;
    const err = new Error(message.charAt(0).toUpperCase() + message.slice(1));
    err.code = code;
    throw err;
  }
  return data;
}

function showError(err) {
  const box = $("#error");
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  box.textContent = (err.code ? err.code.charAt(0).toUpperCase() + err.code.slice(1) + ": " : "") + err.message;
  box.hidden = false;
  $("#notice").hidden = true;
}

// The page a notice belongs to: it is hidden when the user goes elsewhere.
let noticeHash = "";

function showNotice(text) {
  noticeHash = location.hash;
  const box = $("#notice");
  box.textContent = text;
  box.hidden = !text;
  if (text) $("#error").hidden = true;
  if (text) setTimeout(() => { if (box.textContent === text) box.hidden = true; }, 6000);
}

function fmtNum(n) {
  if (n === null || n === undefined) return "–";
  if (typeof n === "number" && !Number.isInteger(n)) return n.toLocaleString("en-US", { maximumFractionDigits: 1 });
  return Number(n).toLocaleString("en-US");
}

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  let v = Number(n) || 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
}

function fmtRate(n) { return n >= 100 ? fmtNum(Math.round(n)) : fmtNum(Math.round(n * 10) / 10); }

// A short axis label: 12.3k, 4.5M.
function fmtShort(n) {
  const units = [[1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [v, u] of units) if (n >= v) return (n / v).toFixed(n >= 10 * v ? 0 : 1) + u;
  return n >= 10 ? n.toFixed(0) : String(Math.round(n * 10) / 10);
}

function fmtShortBytes(n) {
  const units = [[1 << 30, "GiB"], [1 << 20, "MiB"], [1 << 10, "KiB"]];
  for (const [v, u] of units) if (n >= v) return (n / v).toFixed(n >= 10 * v ? 0 : 1) + " " + u;
  return n.toFixed(0) + " B";
}

function fmtDuration(seconds) {
  seconds = Math.max(0, Math.floor(seconds));
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600);
  const m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
  if (d) return d + "d " + h + "h";
  if (h) return h + "h " + m + "m";
  if (m) return m + "m " + s + "s";
  return s + "s";
}

function fmtTime(ms) {
  if (!ms) return "–";
  return new Date(ms).toISOString().replace("T", " ").replace("Z", " UTC");
}

function fmtIn(ms) {
  const diff = (ms - Date.now()) / 1000;
  return diff <= 0 ? "due" : "in " + fmtDuration(diff);
}

function form(el) {
  const out = {};
  for (const input of el.querySelectorAll("input, select, textarea")) {
    if (input.name) out[input.name] = input.type === "checkbox" ? input.checked : input.value;
  }
  return out;
}

// Runs an action started by the user; errors go to the banner.
async function act(fn) {
  showError(null);
  try { await fn(); } catch (e) { showError(e); }
}

function confirmDialog(text) {
  return new Promise((resolve) => {
    const modal = $("#modal");
    $("#modal-text").textContent = text;
    modal.hidden = false;
    const done = (answer) => {
      modal.hidden = true;
      $("#modal-ok").onclick = null;
      $("#modal-cancel").onclick = null;
      resolve(answer);
    };
    $("#modal-ok").onclick = () => done(true);
    $("#modal-cancel").onclick = () => done(false);
  });
}

function params() {
  const hash = location.hash.replace(/^#/, "");
  const q = hash.indexOf("?");
  return new URLSearchParams(q >= 0 ? hash.slice(q + 1) : "");
}

// ---- charts ----------------------------------------------------------------------------------

const COLORS = ["#2a6fdb", "#e07b24", "#23854a", "#9b3dc8"];
const RATE = { axis: fmtShort, value: fmtRate };
const BYTE_RATE = { axis: (v) => fmtShortBytes(v) + "/s", value: (v) => fmtBytes(v) + "/s" };
const COUNT = { axis: fmtShort, value: fmtNum };

// A line chart as inline SVG over the last `spanMs`: `series` is
// [{name, points: [[t_ms, value], ...]}].
function lineChart(title, series, format, id, spanMs) {
  const W = 600, H = 170, L = 64, R = 8, T = 8, B = 20;
  const all = series.flatMap((s) => s.points);
  const tMax = all.length ? Math.max(...all.map((p) => p[0])) : Date.now();
  const tMin = tMax - spanMs;
  const peak = all.length ? Math.max(...all.map((p) => p[1])) : 0;
  const vMax = peak > 0 ? peak * 1.1 : 1;
  const x = (t) => L + (t - tMin) / (tMax - tMin) * (W - L - R);
  const y = (v) => T + (1 - v / vMax) * (H - T - B);
  let svg = `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}">`;
  for (let i = 0; i <= 3; i++) {
    const v = vMax * i / 3, yy = y(v);
    svg += `<line x1="${L}" x2="${W - R}" y1="${yy}" y2="${yy}" stroke="#e3e6ec"/>`;
    svg += `<text x="${L - 4}" y="${yy + 4}" font-size="10" text-anchor="end" fill="#6b7385">${esc(format.axis(v))}</text>`;
  }
  for (let i = 0; i <= 4; i++) {
    const t = tMin + spanMs * i / 4;
    const anchor = i === 0 ? "start" : i === 4 ? "end" : "middle";
    const label = i === 4 ? "now" : "-" + fmtDuration((tMax - t) / 1000);
    svg += `<text x="${x(t)}" y="${H - 4}" font-size="10" text-anchor="${anchor}" fill="#6b7385">${label}</text>`;
  }
  series.forEach((s, i) => {
    if (!s.points.length) return;
    const pts = s.points.filter((p) => p[0] >= tMin);
    const d = pts.map((p, j) => (j ? "L" : "M") + x(p[0]).toFixed(1) + " " + y(p[1]).toFixed(1)).join(" ");
    svg += `<path d="${d}" fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="1.8"/>`;
    if (pts.length <= 12) {
      for (const p of pts) svg += `<circle cx="${x(p[0]).toFixed(1)}" cy="${y(p[1]).toFixed(1)}" r="2.5" fill="${COLORS[i % COLORS.length]}"/>`;
    }
  });
  svg += "</svg>";
  const legend = series.map((s, i) => {
    const last = s.points.length ? s.points[s.points.length - 1][1] : 0;
    return `<span><i style="background:${COLORS[i % COLORS.length]}"></i>${esc(s.name)}: <b data-last="${esc(s.name)}">${esc(format.value(last))}</b></span>`;
  }).join("");
  return `<div class="chart" id="${esc(id)}" data-points="${all.length}" data-peak="${peak}"><h3>${esc(title)}</h3>${svg}<div class="legend">${legend}</div></div>`;
}

// ---- pages -----------------------------------------------------------------------------------

const pages = {};

// A replica not registered for this long (two default heartbeats and a little) is shown as
// stale: the name servers drop it from routes once `broker_expiry_ms` passes.
const STALE_MS = 65e3;

// The cluster as the name servers see it: each broker group's replicas with role, term,
// commit index and lag. `self` is this broker's (group name, node id).
function clusterView(c, self) {
  const servers = c.name_servers.map((n) => `<span class="badge ${n.answered ? "ok" : "warn"}" data-name-server="${esc(n.addr)}"
    title="${esc(n.error || "answered")}">${esc(n.addr)} ${n.answered ? "✓" : "✗ " + esc(n.error || "")}</span>`).join("");
  const groups = c.groups.map((g) => {
    const rows = g.replicas.map((r) => {
      const mine = g.broker_name === self[0] && r.node_id === self[1];
      const stale = r.last_seen_ms > STALE_MS;
      return `<tr data-node="${r.node_id}" data-role="${esc(r.role)}" class="${mine ? "self" : ""}${stale ? " stale" : ""}">
        <td class="num">${r.node_id}</td><td>${esc(r.addr)}${mine ? ` <span class="muted">(this broker)</span>` : ""}</td>
        <td><span class="badge role-${esc(r.role)}">${esc(r.role)}</span></td><td class="num">${fmtNum(r.term)}</td>
        <td class="num">${fmtNum(r.commit_index)}</td><td class="num hide-narrow">${fmtNum(r.applied_index)}</td>
        <td class="num lag">${r.lag === null ? "–" : fmtNum(r.lag)}</td>
        <td class="hide-narrow">${r.http_addr ? `<a href="http://${esc(r.http_addr)}/">dashboard</a>` : ""}</td>
        <td class="num hide-narrow">${stale ? `<span class="badge warn">stale</span> ` : ""}${fmtDuration(r.last_seen_ms / 1000)} ago</td></tr>`;
    }).join("");
    const topics = Object.keys(g.topics).length;
    return `<div class="broker-group" data-group="${esc(g.broker_name)}">
      <h3>Broker group ${esc(g.broker_name)} <span class="muted">· cluster ${esc(g.cluster)} · ${g.leader === null ? "no leader" : "leader: node " + g.leader} · ${fmtNum(topics)} topics</span></h3>
      <div class="table-wrap"><table class="replicas"><thead><tr><th class="num">Node</th><th>Address</th><th>Role</th><th class="num">Term</th>
      <th class="num">Commit index</th><th class="num hide-narrow">Applied</th><th class="num">Lag</th><th class="hide-narrow"></th><th class="num hide-narrow">Seen</th></tr></thead>
      <tbody>${rows}</tbody></table></div></div>`;
  }).join("");
  return `<h2>Cluster</h2>
    <div class="panel" id="cluster">
      <div class="row"><span class="muted">Name servers</span> ${servers || "–"}</div>
      ${groups || `<p class="muted">No broker group has registered yet.</p>`}
    </div>`;
}

pages.overview = async (token) => {
  const windowSec = Number(params().get("window") || 300);
  // Asked together (a standalone broker answers the cluster from its own name-server role).
  const [o, h, cluster] = await Promise.all([api("/overview"), api("/history?seconds=" + windowSec), api("/api/cluster")]);
  // A broker registered with name servers (or a replica) shows the cluster they see; a
  // standalone one, itself.
  const c = o.role === "broker" || o.node_id ? cluster : null;
  if (token !== renderToken) return;
  $("#broker-name").textContent = o.broker + " · " + o.cluster;
  const pts = (key) => h.samples.map((s) => [s.at_ms, s[key]]);
  // A young broker's charts span what it has (at least a minute), not the whole window.
  const have = h.samples.length ? h.samples[h.samples.length - 1].at_ms - h.samples[0].at_ms : 0;
  const span = Math.min(windowSec * 1000, Math.max(60e3, have));
  // The cards show the average of the last 10 seconds.
  const recent = h.samples.slice(-10);
  const avg = (key) => recent.reduce((sum, s) => sum + s[key], 0) / Math.max(1, recent.length);
  const card = (id, label, value, sub = "") =>
    `<div class="card" id="card-${id}"><div class="label">${esc(label)}</div><div class="value">${value}</div><div class="sub">${sub}</div></div>`;
  const windows = [[300, "5 min"], [900, "15 min"], [3600, "1 hour"]]
    .map(([s, name]) => `<option value="${s}" ${s === windowSec ? "selected" : ""}>${name}</option>`).join("");
  main().innerHTML = `
    <h1>Overview</h1>
    <div class="cards">
      ${card("broker", "Broker", esc(o.broker), esc(o.role) + (o.node_id ? " · node " + o.node_id : "") + " · v" + esc(o.version) +
        (o.name_servers.length ? "<br>name servers: " + o.name_servers.map(esc).join(", ") : ""))}
      ${card("uptime", "Uptime", fmtDuration(o.uptime_seconds))}
      ${card("disk", "Disk used", fmtBytes(o.disk_used_bytes), fmtBytes(o.disk_free_bytes) + " free of " + fmtBytes(o.disk_total_bytes))}
      ${card("log", "Commit log", fmtBytes(o.commit_log_bytes))}
      ${card("topics", "Topics", fmtNum(o.topics), fmtNum(o.queues) + " queues")}
      ${card("messages", "Messages stored", fmtNum(o.messages))}
      ${card("groups", "Consumer groups", fmtNum(o.groups))}
      ${card("delayed", "Delayed pending", fmtNum(o.delayed))}
      ${card("transactions", "Transactions pending", fmtNum(o.transactions))}
      ${card("dead-letters", "Dead letters", fmtNum(o.dead_letters))}
      ${card("rate-in", "Messages in /s", fmtRate(avg("messages_in")), fmtBytes(avg("bytes_in")) + "/s · last 10 s")}
      ${card("rate-out", "Messages out /s", fmtRate(avg("messages_out")), fmtBytes(avg("bytes_out")) + "/s · last 10 s")}
    </div>
    ${c ? clusterView(c, [o.broker, o.node_id]) : ""}
    <div class="row" style="margin-top:12px"><label>Chart window <select id="window">${windows}</select></label></div>
    <div class="charts">
      ${lineChart("Messages per second", [{ name: "in", points: pts("messages_in") }, { name: "out", points: pts("messages_out") }], RATE, "chart-messages", span)}
      ${lineChart("Bytes per second", [{ name: "in", points: pts("bytes_in") }, { name: "out", points: pts("bytes_out") }], BYTE_RATE, "chart-bytes", span)}
    </div>`;
  $("#window").onchange = (e) => { location.hash = "#/?window=" + e.target.value; };
  return 2000;
};

const TOPIC_PAGE = 50;

pages.topics = async (token) => {
  const p = params();
  const q = p.get("q") || "";
  const offset = Number(p.get("offset") || 0);
  const internal = p.get("internal") === "1";
  // Internal topics (%DLQ%g, %RETRY%g, ...) are shown on request only.
  const data = await api(`/topics?q=${enc(q)}&offset=${offset}&limit=${TOPIC_PAGE}` + (internal ? "" : "&internal=false"));
  if (token !== renderToken) return;
  const rows = data.topics.map((t) => `
    <tr class="clickable" data-topic="${esc(t.name)}">
      <td><a href="#/topics/${enc(t.name)}">${esc(t.name)}</a></td>
      <td class="num">${t.queue_count}</td>
      <td class="num">${fmtNum(t.messages)}</td>
      <td class="num topic-size" title="${fmtNum(t.bytes)} bytes">${fmtBytes(t.bytes)}</td>
      <td class="num">${fmtRate(t.rate)}</td>
      <td class="right"><button class="danger small" data-delete="${esc(t.name)}">Delete</button></td>
    </tr>`).join("");
  const link = (o) => `#/topics?q=${enc(q)}&offset=${o}${internal ? "&internal=1" : ""}`;
  const last = Math.min(offset + TOPIC_PAGE, data.total);
  main().innerHTML = `
    <h1>Topics</h1>
    <div class="panel">
      <form id="create-topic" class="inline">
        <label>New topic <input name="name" id="new-topic-name" required placeholder="orders" autocomplete="off"></label>
        <label>Queues <input name="queues" type="number" min="1" max="1024" value="4" style="width:90px"></label>
        <button class="primary" id="create-topic-button">Create topic</button>
      </form>
    </div>
    <form id="topic-filter" class="inline" style="margin-bottom:8px">
      <label>Filter <input name="q" value="${esc(q)}" placeholder="name contains…" autocomplete="off"></label>
      <label style="flex-direction:row;align-items:center;gap:4px"><input type="checkbox" name="internal" ${internal ? "checked" : ""}> internal topics</label>
      <button>Apply</button>
    </form>
    <div class="table-wrap"><table id="topics-table">
      <thead><tr><th>Name</th><th class="num">Queues</th><th class="num">Messages</th><th class="num">Size</th><th class="num">Msgs/s</th><th></th></tr></thead>
      <tbody>${rows || `<tr><td colspan="6" class="muted">No topics${q ? " match" : " yet"}.</td></tr>`}</tbody>
    </table></div>
    <div class="pager">
      <span class="muted" id="topics-range">${data.total ? offset + 1 : 0}–${last} of ${fmtNum(data.total)}</span>
      ${offset > 0 ? `<a href="${link(Math.max(0, offset - TOPIC_PAGE))}" id="topics-prev">‹ Previous</a>` : ""}
      ${last < data.total ? `<a href="${link(offset + TOPIC_PAGE)}" id="topics-next">Next ›</a>` : ""}
    </div>`;
  $("#create-topic").onsubmit = (e) => {
    e.preventDefault();
    act(async () => {
      const f = form(e.target);
      const t = await api("/topics", { method: "POST", body: { name: f.name.trim(), queues: Number(f.queues) || 0 } });
      showNotice(`Topic ${t.name} created with ${t.queue_count} queues.`);
      render();
    });
  };
  $("#topic-filter").onsubmit = (e) => {
    e.preventDefault();
    const f = form(e.target);
    location.hash = `#/topics?q=${enc(f.q)}${f.internal ? "&internal=1" : ""}`;
  };
  for (const b of main().querySelectorAll("[data-delete]")) {
    b.onclick = (e) => { e.stopPropagation(); deleteTopic(b.dataset.delete); };
  }
  for (const tr of main().querySelectorAll("tr[data-topic]")) {
    tr.onclick = () => { location.hash = "#/topics/" + enc(tr.dataset.topic); };
  }
  return 5000;
};

async function deleteTopic(name) {
  if (!await confirmDialog(`Delete topic "${name}" and all its messages? This cannot be undone.`)) return;
  await act(async () => {
    await api("/topics/" + enc(name), { method: "DELETE" });
    const list = "#/topics";
    if (location.hash !== list) location.hash = list; else render();
    showNotice(`Topic ${name} deleted.`);
  });
}

pages.topic = async (token, name) => {
  const [t, g] = await Promise.all([api("/topics/" + enc(name)), api("/topics/" + enc(name) + "/groups")]);
  if (token !== renderToken) return;
  const queues = t.queues.map((q) => `
    <tr><td>${q.queue_id}</td><td class="num">${fmtNum(q.min_offset)}</td><td class="num">${fmtNum(q.max_offset)}</td>
    <td class="num">${fmtNum(q.max_offset - q.min_offset)}</td><td class="num">${fmtRate(q.rate)}</td>
    <td><a href="#/messages?topic=${enc(name)}&queue=${q.queue_id}&offset=${Math.max(q.min_offset, q.max_offset - 20)}">browse</a></td></tr>`).join("");
  const groups = g.groups.map((x) => `
    <tr><td><a href="#/groups/${enc(x.group)}">${esc(x.group)}</a></td><td>${x.modes.map((m) => `<span class="badge">${esc(m)}</span>`).join("")}</td>
    <td class="num">${x.members}</td><td class="num">${fmtNum(x.lag)}</td></tr>`).join("");
  main().innerHTML = `
    <h1>Topic ${esc(name)}</h1>
    <div class="cards">
      <div class="card"><div class="label">Queues</div><div class="value" id="topic-queues">${t.queue_count}</div></div>
      <div class="card"><div class="label">Messages</div><div class="value" id="topic-messages">${fmtNum(t.messages)}</div></div>
      <div class="card"><div class="label">Size</div><div class="value" id="topic-size" title="${fmtNum(t.bytes)} bytes">${fmtBytes(t.bytes)}</div><div class="sub">in the commit log</div></div>
      <div class="card"><div class="label">Msgs/s</div><div class="value">${fmtRate(t.rate)}</div></div>
    </div>
    <h2>Queues</h2>
    <div class="table-wrap"><table id="queues-table"><thead><tr><th>Queue</th><th class="num">Min offset</th><th class="num">Max offset</th><th class="num">Messages</th><th class="num">Msgs/s</th><th></th></tr></thead><tbody>${queues}</tbody></table></div>
    <h2>Consumer groups</h2>
    <div class="table-wrap"><table id="topic-groups"><thead><tr><th>Group</th><th>Mode</th><th class="num">Members</th><th class="num">Lag</th></tr></thead>
    <tbody>${groups || `<tr><td colspan="4" class="muted">No group reads this topic.</td></tr>`}</tbody></table></div>
    <h2>Change</h2>
    <div class="panel row">
      <form id="add-queues" class="inline">
        <label>Total queues <input name="queues" type="number" min="${t.queue_count + 1}" value="${t.queue_count + 1}" style="width:100px"></label>
        <button class="primary">Add queues</button>
      </form>
      <a class="button" href="#/messages?topic=${enc(name)}"><button type="button">Send a message</button></a>
      <button class="danger" id="delete-topic">Delete topic</button>
    </div>`;
  $("#add-queues").onsubmit = (e) => {
    e.preventDefault();
    act(async () => {
      const r = await api(`/topics/${enc(name)}/queues`, { method: "POST", body: { queues: Number(form(e.target).queues) } });
      showNotice(`Topic ${name} now has ${r.queue_count} queues.`);
      render();
    });
  };
  $("#delete-topic").onclick = () => deleteTopic(name);
  return 5000;
};

// Body views: text, JSON pretty-printed, hex.
function bodyView(m, mode) {
  let bytes;
  if (m.body !== undefined) bytes = new TextEncoder().encode(m.body);
  else bytes = Uint8Array.from((m.body_hex || "").match(/../g) || [], (h) => parseInt(h, 16));
  if (mode === "hex") {
    const lines = [];
    for (let i = 0; i < bytes.length; i += 16) {
      const chunk = Array.from(bytes.slice(i, i + 16));
      lines.push(i.toString(16).padStart(6, "0") + "  " + chunk.map((b) => b.toString(16).padStart(2, "0")).join(" ").padEnd(48) +
        "  " + chunk.map((b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join(""));
    }
    return lines.join("\n");
  }
  if (m.body === undefined) return "(binary body: " + bytes.length + " bytes; see hex)";
  if (mode === "json") {
    try { return JSON.stringify(JSON.parse(m.body), null, 2); } catch (e) { return "(not JSON: " + e.message + ")\n\n" + m.body; }
  }
  return m.body;
}

function defaultMode(m) {
  if (m.body === undefined) return "hex";
  try { JSON.parse(m.body); return /^\s*[[{]/.test(m.body) ? "json" : "text"; } catch (_) { return "text"; }
}

function messageDetail(m, extraButtons = "") {
  const props = Object.entries(m.properties || {}).map(([k, v]) => `<span class="badge">${esc(k)}=${esc(v)}</span>`).join(" ") || "–";
  const mode = defaultMode(m);
  const html = `
    <div class="panel message-detail" data-id="${esc(m.id)}">
      <dl class="kv">
        <dt>Id</dt><dd class="msg-id">${esc(m.id)}</dd>
        <dt>Topic</dt><dd><a href="#/topics/${enc(m.topic)}">${esc(m.topic)}</a></dd>
        <dt>Stored at</dt><dd>queue ${m.queue_id}, offset ${m.queue_offset}; commit log ${m.commit_log_offset}</dd>
        <dt>Key</dt><dd class="msg-key">${esc(m.key) || "–"}</dd>
        <dt>Tag</dt><dd>${esc(m.tag) || "–"}</dd>
        <dt>Properties</dt><dd>${props}</dd>
        <dt>Born</dt><dd>${fmtTime(m.born_timestamp_ms)}</dd>
        <dt>Stored</dt><dd>${fmtTime(m.store_timestamp_ms)}</dd>
        ${m.deliver_at_ms ? `<dt>Deliver at</dt><dd>${fmtTime(m.deliver_at_ms)}</dd>` : ""}
        <dt>Body</dt><dd>${fmtNum(m.body_size)} bytes</dd>
      </dl>
      <div class="tabs" style="margin-top:8px">
        ${["text", "json", "hex"].map((v) => `<button type="button" data-view="${v}" class="${v === mode ? "active" : ""}">${v === "json" ? "JSON" : v.charAt(0).toUpperCase() + v.slice(1)}</button>`).join("")}
        ${extraButtons}
      </div>
      <pre class="body">${esc(bodyView(m, mode))}</pre>
    </div>`;
  return html;
}

function wireDetails(root, messages) {
  for (const panel of root.querySelectorAll(".message-detail")) {
    const m = messages.find((x) => x.id === panel.dataset.id);
    for (const b of panel.querySelectorAll("[data-view]")) {
      b.onclick = () => {
        panel.querySelectorAll("[data-view]").forEach((x) => x.classList.toggle("active", x === b));
        $("pre.body", panel).textContent = bodyView(m, b.dataset.view);
      };
    }
  }
}

function messageRows(messages) {
  return messages.map((m) => `
    <tr class="clickable" data-msg="${esc(m.id)}"><td>${m.queue_id}:${m.queue_offset}</td><td class="msg-key">${esc(m.key)}</td><td>${esc(m.tag)}</td>
    <td class="hide-narrow">${fmtTime(m.store_timestamp_ms)}</td><td class="wrap">${esc((m.body ?? "(binary)").slice(0, 80))}</td></tr>`).join("");
}

pages.messages = async (token) => {
  const p = params();
  const topic = p.get("topic") || "";
  const by = p.get("by") || (p.get("queue") !== null ? "position" : "id");
  main().innerHTML = `
    <h1>Messages</h1>
    <div class="panel">
      <div class="tabs" id="find-tabs">
        ${[["id", "By id"], ["key", "By key"], ["position", "By queue and offset"], ["time", "By time"]].map(([k, n]) =>
          `<button type="button" data-by="${k}" class="${k === by ? "active" : ""}">${n}</button>`).join("")}
      </div>
      <form id="find-form" class="inline"></form>
    </div>
    <div id="results"></div>
    <h2>Send a test message</h2>
    <div class="panel">
      <form id="send-form">
        <div class="row">
          <label>Topic <input name="topic" id="send-topic" required value="${esc(topic)}"></label>
          <label>Key <input name="key" id="send-key"></label>
          <label>Tag <input name="tag" id="send-tag"></label>
          <label>Delay (seconds) <input name="delay" type="number" min="0" value="0" style="width:110px"></label>
        </div>
        <label style="margin-top:8px">Properties (one name=value a line) <textarea name="properties" rows="2" style="min-height:44px"></textarea></label>
        <label style="margin-top:8px">Body <textarea name="body" id="send-body"></textarea></label>
        <div class="row" style="margin-top:8px"><button class="primary" id="send-button">Send</button><span id="send-result" class="muted"></span></div>
      </form>
    </div>`;
  const fields = {
    id: `<label style="flex:1">Message id <input name="id" id="find-id" style="min-width:300px" value="${esc(p.get("id") || "")}"></label>`,
    key: `<label>Topic <input name="topic" value="${esc(topic)}" id="find-topic"></label><label>Key <input name="key" id="find-key" value="${esc(p.get("key") || "")}"></label>`,
    position: `<label>Topic <input name="topic" value="${esc(topic)}" id="find-topic"></label><label>Queue <input name="queue" type="number" min="0" value="${esc(p.get("queue") || 0)}" style="width:80px"></label><label>Offset <input name="offset" type="number" min="0" value="${esc(p.get("offset") || 0)}" style="width:120px"></label>`,
    time: `<label>Topic <input name="topic" value="${esc(topic)}" id="find-topic"></label><label>Stored at or after (UTC) <input name="time" type="datetime-local" step="1" value="${esc(p.get("time") || new Date(Date.now() - 3600e3).toISOString().slice(0, 19))}"></label>`,
  };
  const findForm = $("#find-form");
  findForm.innerHTML = fields[by] + `<button class="primary" id="find-button">Find</button>`;
  for (const b of main().querySelectorAll("[data-by]")) {
    b.onclick = () => {
      const t = ($("#find-topic") || {}).value || topic;
      location.hash = `#/messages?by=${b.dataset.by}&topic=${enc(t)}`;
    };
  }
  const find = async (f) => {
    const results = $("#results");
    let messages = [];
    let note = "";
    if (by === "id") {
      messages = [await api("/messages/" + enc(f.id.trim()))];
    } else if (by === "key") {
      messages = (await api(`/messages?topic=${enc(f.topic)}&key=${enc(f.key)}`)).messages;
    } else if (by === "position") {
      const page = await api(`/topics/${enc(f.topic)}/queues/${Number(f.queue)}/messages?from=${Number(f.offset)}&max=20`);
      messages = page.messages;
      note = `Queue holds offsets ${page.min_offset}–${page.max_offset}. `;
      if (!messages.length) note += "No messages from this offset.";
    } else {
      const iso = new Date(f.time + "Z").toISOString();
      messages = (await api(`/messages?topic=${enc(f.topic)}&time=${enc(iso)}&max=50`)).messages;
      if (!messages.length) note = "No messages stored at or after that time.";
    }
    results.innerHTML = `<p class="muted" id="results-note">${esc(note)}${messages.length} found.</p>` +
      (messages.length === 1 ? messageDetail(messages[0]) :
        messages.length ? `<div class="table-wrap"><table id="results-table"><thead><tr><th>Queue:offset</th><th>Key</th><th>Tag</th><th class="hide-narrow">Stored</th><th>Body</th></tr></thead><tbody>${messageRows(messages)}</tbody></table></div><div id="detail"></div>` : "");
    wireDetails(results, messages);
    for (const tr of results.querySelectorAll("tr[data-msg]")) {
      tr.onclick = () => {
        const m = messages.find((x) => x.id === tr.dataset.msg);
        $("#detail").innerHTML = messageDetail(m);
        wireDetails($("#detail"), messages);
      };
    }
  };
  findForm.onsubmit = (e) => { e.preventDefault(); act(() => find(form(findForm))); };
  if ((by === "position" && topic) || (by === "id" && p.get("id")) || (by === "key" && p.get("key"))) {
    await act(() => find(form(findForm)));
  }
  $("#send-form").onsubmit = (e) => {
    e.preventDefault();
    act(async () => {
      const f = form(e.target);
      const properties = {};
      for (const line of f.properties.split("\n")) {
        if (!line.trim()) continue;
        const at = line.indexOf("=");
        if (at <= 0) throw new Error(`Property line "${line}" is not name=value`);
        properties[line.slice(0, at).trim()] = line.slice(at + 1).trim();
      }
      const r = await api(`/topics/${enc(f.topic.trim())}/messages`, {
        method: "POST",
        body: { key: f.key, tag: f.tag, properties, body: f.body, delay_ms: Math.round(Number(f.delay || 0) * 1000) },
      });
      $("#send-result").innerHTML = `Sent: <a href="#/messages?by=id&id=${enc(r.id)}" id="sent-id">${esc(r.id)}</a> to queue ${r.queue_id}` +
        (r.deliver_at_ms ? `, delivered ${esc(fmtTime(r.deliver_at_ms))}` : `, offset ${r.queue_offset}`);
    });
  };
  return 0;
};

const GROUP_PAGE = 50;

pages.groups = async (token) => {
  const p = params();
  const q = p.get("q") || "";
  const offset = Number(p.get("offset") || 0);
  const data = await api(`/groups?q=${enc(q)}&offset=${offset}&limit=${GROUP_PAGE}`);
  if (token !== renderToken) return;
  const rows = data.summaries.map((g) => `<tr class="clickable" data-group="${esc(g.group)}"><td><a href="#/groups/${enc(g.group)}">${esc(g.group)}</a></td>
    <td>${g.modes.map((m) => `<span class="badge">${esc(m)}</span>`).join("")}</td>
    <td class="num">${fmtNum(g.members)}</td><td class="num hide-narrow">${fmtNum(g.topics)}</td><td class="num">${fmtNum(g.total_lag)}</td></tr>`).join("");
  const link = (o) => `#/groups?q=${enc(q)}&offset=${o}`;
  const last = Math.min(offset + GROUP_PAGE, data.total);
  main().innerHTML = `<h1>Consumer groups</h1>
    <form id="group-filter" class="inline" style="margin-bottom:8px">
      <label>Filter <input name="q" value="${esc(q)}" placeholder="name contains…" autocomplete="off"></label>
      <button>Apply</button>
    </form>
    <div class="table-wrap"><table id="groups-table"><thead><tr><th>Group</th><th>Mode</th><th class="num">Members</th><th class="num hide-narrow">Topics</th><th class="num">Lag</th></tr></thead>
    <tbody>${rows || `<tr><td colspan="5" class="muted">No consumer groups${q ? " match" : " yet"}.</td></tr>`}</tbody></table></div>
    <div class="pager">
      <span class="muted" id="groups-range">${data.total ? offset + 1 : 0}–${last} of ${fmtNum(data.total)}</span>
      ${offset > 0 ? `<a href="${link(Math.max(0, offset - GROUP_PAGE))}" id="groups-prev">‹ Previous</a>` : ""}
      ${last < data.total ? `<a href="${link(offset + GROUP_PAGE)}" id="groups-next">Next ›</a>` : ""}
    </div>`;
  $("#group-filter").onsubmit = (e) => {
    e.preventDefault();
    location.hash = `#/groups?q=${enc(form(e.target).q)}`;
  };
  for (const tr of main().querySelectorAll("tr[data-group]")) tr.onclick = () => { location.hash = "#/groups/" + enc(tr.dataset.group); };
  return 5000;
};

pages.group = async (token, name) => {
  const [g, h] = await Promise.all([api("/groups/" + enc(name)), api("/groups/" + enc(name) + "/lag-history")]);
  if (token !== renderToken) return;
  const members = g.members.map((m) => `<tr data-protocol="${esc(m.protocol)}"><td class="wrap">${esc(m.member_id)}</td><td>${esc(m.client_id) || "–"}</td><td>${esc(m.client_addr)}</td>
    <td><span class="badge">${esc(m.protocol)}</span> ${esc(m.mode)}</td>
    <td class="wrap">${m.assigned.map((q) => esc(q.topic + ":" + q.queue_id)).join(", ") || "–"}</td></tr>`).join("");
  const queues = g.queues.map((q) => `<tr><td><a href="#/topics/${enc(q.topic)}">${esc(q.topic)}</a></td><td class="num">${q.queue_id}</td>
    <td>${esc(q.mode)}</td><td class="num committed">${q.committed_offset ?? (q.shared ? q.shared.low_water : "–")}</td>
    <td class="num">${fmtNum(q.max_offset)}</td><td class="num lag">${fmtNum(q.lag)}</td><td class="hide-narrow">${esc(q.owner || "–")}</td></tr>`).join("");
  const topics = [...new Set(g.queues.map((q) => q.topic))];
  // The chart spans the samples the broker has: at least 5 minutes, at most an hour.
  const lagPoints = h.samples.map((s) => [s.at_ms, s.lag]);
  const lagSpan = Math.min(3600e3, Math.max(300e3, lagPoints.length ? lagPoints[lagPoints.length - 1][0] - lagPoints[0][0] : 0));
  const live = g.members.length > 0;
  main().innerHTML = `<h1>Group ${esc(name)}</h1>
    <div class="cards">
      <div class="card"><div class="label">Mode</div><div class="value">${g.modes.map(esc).join(", ") || "–"}</div></div>
      <div class="card"><div class="label">Members</div><div class="value" id="group-members">${g.members.length}</div></div>
      <div class="card"><div class="label">Total lag</div><div class="value" id="group-lag">${fmtNum(g.total_lag)}</div></div>
    </div>
    <div class="charts">${lineChart("Total lag (sampled every 10 s, up to an hour)", [{ name: "lag", points: lagPoints }], COUNT, "chart-lag", lagSpan)}</div>
    <h2>Members</h2>
    <div class="table-wrap"><table id="group-members-table"><thead><tr><th>Member</th><th>Client id</th><th>Address</th><th>Protocol</th><th>Owns</th></tr></thead>
    <tbody>${members || `<tr><td colspan="5" class="muted">No live members.</td></tr>`}</tbody></table></div>
    <h2>Offsets</h2>
    <div class="table-wrap"><table id="group-queues"><thead><tr><th>Topic</th><th class="num">Queue</th><th>Mode</th><th class="num">Committed</th><th class="num">Max offset</th><th class="num">Lag</th><th class="hide-narrow">Owner</th></tr></thead>
    <tbody>${queues || `<tr><td colspan="7" class="muted">No offsets.</td></tr>`}</tbody></table></div>
    <h2>Reset offsets</h2>
    <div class="panel">
      ${live ? `<p class="badge warn" id="reset-warning">The group has ${g.members.length} live member(s); the broker refuses a reset until they stop.</p>` : ""}
      <form id="reset-form" class="inline">
        <label>Topic <select name="topic" id="reset-topic">${topics.map((t) => `<option>${esc(t)}</option>`).join("")}</select></label>
        <label>To <select name="to" id="reset-to"><option value="earliest">earliest</option><option value="latest">latest</option><option value="time">a time…</option></select></label>
        <label>Time (UTC) <input name="time" type="datetime-local" step="1" id="reset-time"></label>
        <button class="danger" id="reset-button">Reset</button>
      </form>
      <div id="reset-result" class="muted"></div>
    </div>
    <p><a href="#/dead-letters?group=${enc(name)}">Dead letters of ${esc(name)} ›</a></p>`;
  $("#reset-form").onsubmit = (e) => {
    e.preventDefault();
    act(async () => {
      const f = form(e.target);
      if (!f.topic) throw new Error("The group has no offsets on any topic to reset");
      let to = f.to;
      if (to === "time") {
        if (!f.time) throw new Error("Pick a time to reset to");
        to = new Date(f.time + "Z").toISOString();
      }
      if (!await confirmDialog(`Reset group "${name}" on topic "${f.topic}" to ${to}?`)) return;
      const r = await api(`/groups/${enc(name)}/reset`, { method: "POST", body: { topic: f.topic, to } });
      showNotice(`Offsets of ${name} on ${r.topic} reset: ` + r.offsets.map((o) => `queue ${o.queue_id} → ${o.offset}`).join(", "));
      render();
    });
  };
  return 5000;
};

pages["dead-letters"] = async (token) => {
  const p = params();
  const groupsData = await api("/groups");
  const dlq = await api("/topics?q=" + enc("%DLQ%"));
  if (token !== renderToken) return;
  const names = new Set(groupsData.groups);
  dlq.topics.forEach((t) => t.name.startsWith("%DLQ%") && names.add(t.name.slice(5)));
  const counts = Object.fromEntries(dlq.topics.map((t) => [t.name.slice(5), t.messages]));
  const group = p.get("group") || [...names].find((n) => counts[n]) || [...names][0] || "";
  const options = [...names].sort().map((n) => `<option ${n === group ? "selected" : ""} value="${esc(n)}">${esc(n)} (${fmtNum(counts[n] || 0)})</option>`).join("");
  let letters = { messages: [], min_offset: 0, max_offset: 0 };
  if (group) letters = await api(`/groups/${enc(group)}/dead-letters?max=100&from=${Number(p.get("from") || 0)}`);
  if (token !== renderToken) return;
  const rows = letters.messages.map((m) => `<tr class="clickable" data-msg="${esc(m.id)}">
    <td class="wrap">${esc(m.id)}</td><td>${esc((m.properties || {}).ORIGIN_TOPIC || "")}</td><td class="num">${esc((m.properties || {}).RECONSUME_TIMES || "")}</td>
    <td class="hide-narrow">${fmtTime(m.store_timestamp_ms)}</td><td class="wrap">${esc((m.body ?? "(binary)").slice(0, 60))}</td>
    <td><button data-resend="${esc(m.id)}">Resend</button></td></tr>`).join("");
  main().innerHTML = `<h1>Dead letters</h1>
    <div class="panel row">
      <label>Group <select id="dlq-group">${options || "<option value=''>no groups</option>"}</select></label>
      <button class="primary" id="resend-all" ${letters.messages.length ? "" : "disabled"}>Resend all</button>
      <span class="muted">Resending stores a copy in the group's retry topic; the group consumes it again as a message of its origin topic.</span>
    </div>
    <div class="table-wrap"><table id="dlq-table"><thead><tr><th>Id</th><th>Origin topic</th><th class="num">Failures</th><th class="hide-narrow">Stored</th><th>Body</th><th></th></tr></thead>
    <tbody>${rows || `<tr><td colspan="6" class="muted">${group ? `No dead letters for ${esc(group)}.` : "No groups."}</td></tr>`}</tbody></table></div>
    <div id="detail"></div>`;
  $("#dlq-group").onchange = (e) => { location.hash = "#/dead-letters?group=" + enc(e.target.value); };
  const resend = (id) => act(async () => {
    const r = await api(`/groups/${enc(group)}/dead-letters/${enc(id)}/resend`, { method: "POST" });
    showNotice(`Resent to group ${group}: copy ${r.ids[0]}`);
  });
  for (const b of main().querySelectorAll("[data-resend]")) b.onclick = (e) => { e.stopPropagation(); resend(b.dataset.resend); };
  for (const tr of main().querySelectorAll("tr[data-msg]")) {
    tr.onclick = () => {
      const m = letters.messages.find((x) => x.id === tr.dataset.msg);
      $("#detail").innerHTML = messageDetail(m, `<button type="button" class="primary" id="detail-resend">Resend</button>`);
      wireDetails($("#detail"), letters.messages);
      $("#detail-resend").onclick = () => resend(m.id);
    };
  }
  $("#resend-all").onclick = async () => {
    if (!await confirmDialog(`Resend all ${letters.messages.length} dead letters of group "${group}"?`)) return;
    act(async () => {
      const r = await api(`/groups/${enc(group)}/dead-letters/resend-all`, { method: "POST" });
      showNotice(`Resent ${r.resent} dead letters to group ${group}.`);
    });
  };
  return 0;
};

pages.pending = async (token) => {
  const [d, t] = await Promise.all([api("/delayed?max=100"), api("/transactions?max=100")]);
  if (token !== renderToken) return;
  const delayed = d.messages.map((m) => `<tr><td class="wrap">${esc(m.id)}</td><td><a href="#/topics/${enc(m.topic)}">${esc(m.topic)}</a>:${m.queue_id}</td>
    <td>${esc(m.key)}</td><td>${fmtTime(m.deliver_at_ms)}</td><td>${fmtIn(m.deliver_at_ms)}</td></tr>`).join("");
  const halves = t.half_messages.map((h) => `<tr><td class="wrap">${esc(h.transaction_id)}</td><td>${esc(h.producer_group)}</td>
    <td>${esc(h.topic)}:${h.queue_id}</td><td class="hide-narrow">${fmtTime(h.stored_at_ms)}</td><td class="num">${h.checks}</td><td>${h.next_check_in_ms ? "in " + fmtDuration(h.next_check_in_ms / 1000) : "due"}</td></tr>`).join("");
  main().innerHTML = `<h1>Delayed and transactional messages</h1>
    <div class="cards">
      <div class="card"><div class="label">Delayed pending</div><div class="value" id="delayed-count">${fmtNum(d.pending)}</div></div>
      <div class="card"><div class="label">Next due</div><div class="value">${d.messages.length ? fmtIn(d.messages[0].deliver_at_ms) : "–"}</div></div>
      <div class="card"><div class="label">Transactions pending</div><div class="value" id="transactions-count">${fmtNum(t.pending)}</div></div>
    </div>
    <h2>Delayed messages, soonest first${d.truncated ? " (first part of the delay log)" : ""}</h2>
    <div class="table-wrap"><table id="delayed-table"><thead><tr><th>Id</th><th>Goes to</th><th>Key</th><th>Due</th><th></th></tr></thead>
    <tbody>${delayed || `<tr><td colspan="5" class="muted">No delayed messages waiting.</td></tr>`}</tbody></table></div>
    <h2>Half messages awaiting a decision</h2>
    <div class="table-wrap"><table id="half-table"><thead><tr><th>Transaction</th><th>Producer group</th><th>Commits to</th><th class="hide-narrow">Stored</th><th class="num">Check-backs</th><th>Next check</th></tr></thead>
    <tbody>${halves || `<tr><td colspan="6" class="muted">No transactions waiting.</td></tr>`}</tbody></table></div>`;
  return 5000;
};

// ---- routing ---------------------------------------------------------------------------------

function route() {
  const path = location.hash.replace(/^#/, "").split("?")[0] || "/";
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) return ["overview", "overview"];
  if (parts[0] === "topics" && parts[1]) return ["topic", "topics", parts.slice(1).join("/")];
  if (parts[0] === "groups" && parts[1]) return ["group", "groups", parts.slice(1).join("/")];
  if (pages[parts[0]]) return [parts[0], parts[0]];
  return ["overview", "overview"];
}

async function render(quiet) {
  clearTimeout(refreshTimer);
  const token = ++renderToken;
  const [page, nav, arg] = route();
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === nav);
  let every = 0;
  try {
    every = await pages[page](token, arg);
    if (!quiet) showError(null);
  } catch (e) {
    if (token !== renderToken) return;
    showError(e);
    if (!quiet) main().innerHTML = `<p class="muted">This page could not be loaded.</p>`;
    every = 5000;
  }
  // Auto-refresh pages without forms being edited; never while the user types.
  if (every && token === renderToken) {
    refreshTimer = setTimeout(() => {
      const editing = document.activeElement && /INPUT|TEXTAREA|SELECT/.test(document.activeElement.tagName);
      if (!editing && $("#modal").hidden) render(true); else refreshTimer = setTimeout(() => render(true), every);
    }, every);
  }
}

window.addEventListener("hashchange", () => {
  if (noticeHash !== location.hash) $("#notice").hidden = true;
  showError(null);
  $("#nav").classList.remove("open");
  $("#menu-toggle").setAttribute("aria-expanded", "false");
  render();
});
$("#menu-toggle").onclick = () => {
  const open = $("#nav").classList.toggle("open");
  $("#menu-toggle").setAttribute("aria-expanded", String(open));
};
render();
