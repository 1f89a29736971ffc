// The raftpy dashboard page: asks /api/cluster every 500 ms and draws what it says.
// Plain DOM and inline SVG, nothing to build. Every string from the cluster is set as text
// (textContent), never as markup: node addresses, errors and reasons come from the network.
"use strict";

const POLL_MS = 500;
const SVG_NS = "http://www.w3.org/2000/svg";
let lastOk = 0;

function el(tag, attrs, text) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS(SVG_NS, tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function dash(v) { return v === null || v === undefined ? "\u2013" : String(v); }

function seconds(v) {
  if (v === null || v === undefined) return "\u2013";
  if (v === 0) return "0";
  if (v < 0.001) return (v * 1e6).toFixed(0) + " \u00b5s";
  if (v < 1) return (v * 1000).toFixed(v < 0.01 ? 1 : 0) + " ms";
  return v.toFixed(2) + " s";
}

function rate(v) {
  if (v === null || v === undefined) return "\u2013";
  return v >= 100 ? v.toFixed(0) : v.toFixed(1);
}

function bytes(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

function clock(t) {
  return t ? new Date(t * 1000).toLocaleTimeString() : "\u2013";
}

// -- the members graph: the leader in the middle, arrows to those it replicates to ---------

function drawGraph(data) {
  const svg = document.getElementById("graph");
  svg.replaceChildren();
  const defs = el("svg:defs");
  const marker = el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
  marker.appendChild(el("svg:path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#8b93a5" }));
  defs.appendChild(marker);
  svg.appendChild(defs);

  const nodes = data.nodes.slice().sort((a, b) => (a.id ?? 1e18) - (b.id ?? 1e18));
  const leader = nodes.find((n) => n.alive && n.id === data.leader);
  const others = nodes.filter((n) => n !== leader);
  const cx = 210, cy = 170, r = 34, ring = 120;
  const pos = new Map();
  if (leader) pos.set(leader, [cx, cy]);
  // Followers on a ring around the leader; an even count starts off the vertical, so the
  // labels under each circle stay clear of the arrows.
  const offset = others.length % 2 === 0 ? Math.PI / Math.max(1, others.length) : 0;
  others.forEach((n, i) => {
    const a = -Math.PI / 2 + offset + (2 * Math.PI * i) / Math.max(1, others.length);
    pos.set(n, leader || others.length > 1
      ? [cx + ring * Math.cos(a), cy + ring * Math.sin(a)] : [cx, cy]);
  });
  const repl = new Map(data.replication.map((p) => [p.id, p]));
  if (leader) {
    for (const n of others) {
      const p = repl.get(n.id);
      if (!p) continue;
      const [x1, y1] = pos.get(leader), [x2, y2] = pos.get(n);
      const d = Math.hypot(x2 - x1, y2 - y1) || 1;
      const ux = (x2 - x1) / d, uy = (y2 - y1) / d;
      svg.appendChild(el("svg:line", {
        class: p.active === false || !n.alive ? "edge inactive" : "edge",
        x1: x1 + ux * (r + 4), y1: y1 + uy * (r + 4), x2: x2 - ux * (r + 6), y2: y2 - uy * (r + 6),
        "marker-end": "url(#arrow)" }));
      const lag = p.lag === null ? "" : "lag " + p.lag;
      svg.appendChild(el("svg:text", { class: "edge-label", x: (x1 + x2) / 2 + uy * 20,
        y: (y1 + y2) / 2 - ux * 14 + 4 }, lag));
    }
  }
  for (const n of nodes) {
    const [x, y] = pos.get(n);
    const role = n.alive ? (n.role || "unknown") : "dead";
    const g = el("svg:g", { class: "node", "data-id": dash(n.id), "data-alive": n.alive,
      "data-role": n.alive ? (n.role || "unknown") : "dead" });
    g.appendChild(el("svg:title", {}, n.address + (n.error ? " \u2013 " + n.error : "")));
    g.appendChild(el("svg:circle", { cx: x, cy: y, r: r }));
    g.appendChild(el("svg:text", { class: "name", x: x, y: y - 4 }, n.id === null ? "?" : "n" + n.id));
    const label = !n.alive ? "down" : n.member === false ? "not a member" : roleName(n, data, role);
    g.appendChild(el("svg:text", { x: x, y: y + 12 }, label));
    // A member never heard from is named by its address.
    g.appendChild(el("svg:text", { x: x, y: y + r + 16 }, n.id === null ? n.address : "term " + dash(n.term)));
    svg.appendChild(g);
  }
}

// -- charts --------------------------------------------------------------------------------

// The last minute at least, growing back to the first point with data (10 minutes at most).
function visibleFrom(series, keys) {
  const n = series.time.length;
  let first = n;
  for (const k of keys) {
    const i = series[k].findIndex((v) => v !== null);
    if (i >= 0 && i < first) first = i;
  }
  return Math.max(0, Math.min(first, n - Math.round(60 / series.step)));
}

function drawChart(svgId, allTimes, allLines, format, from, note) {
  const svg = document.getElementById(svgId);
  svg.replaceChildren();
  const times = allTimes.slice(from);
  const lines = allLines.map((l) => ({ ...l, values: l.values.slice(from) }));
  const W = 600, H = 140, left = 48, right = 8, top = 10, bottom = 20;
  let max = 0;
  for (const l of lines) for (const v of l.values) if (v !== null && v > max) max = v;
  const have = lines.some((l) => l.values.some((v) => v !== null));
  const top_ = max > 0 ? max * 1.1 : 1;
  const n = times.length;
  const x = (i) => left + ((W - left - right) * i) / Math.max(1, n - 1);
  const y = (v) => H - bottom - ((H - top - bottom) * v) / top_;
  svg.appendChild(el("svg:line", { class: "axis", x1: left, y1: H - bottom, x2: W - right, y2: H - bottom }));
  svg.appendChild(el("svg:line", { class: "axis", x1: left, y1: top, x2: W - right, y2: top }));
  svg.appendChild(el("svg:text", { x: 4, y: top + 10 }, format(top_)));
  svg.appendChild(el("svg:text", { x: 4, y: H - bottom }, format(0)));
  if (n) {
    const span = times[n - 1] - times[0];
    const label = span >= 90 ? Math.round(span / 60) + " min" : Math.round(span) + " s";
    svg.appendChild(el("svg:text", { x: left, y: H - 4 }, "\u2212" + label));
    svg.appendChild(el("svg:text", { x: W - right - 24, y: H - 4 }, "now"));
  }
  if (!have) {
    svg.appendChild(el("svg:text", { x: W / 2, y: H / 2, "text-anchor": "middle" },
      note || "no data yet"));
    return;
  }
  lines.forEach((l, k) => {
    // Runs of consecutive points with data; a gap (no answer) breaks the line.
    const runs = [];
    let run = [];
    l.values.forEach((v, i) => {
      if (v === null) { if (run.length) runs.push(run); run = []; } else run.push(i);
    });
    if (run.length) runs.push(run);
    const pt = (i) => x(i).toFixed(1) + " " + y(l.values[i]).toFixed(1);
    let d = "", area = "";
    for (const r of runs) {
      d += "M" + r.map(pt).join(" L") + " ";
      area += "M" + x(r[0]).toFixed(1) + " " + (H - bottom) + " L" + r.map(pt).join(" L") +
        " L" + x(r[r.length - 1]).toFixed(1) + " " + (H - bottom) + " Z ";
    }
    if (l.fill && area) svg.appendChild(el("svg:path", { class: "area", d: area }));
    svg.appendChild(el("svg:path", { class: "line " + (l.cls || ""), d: d }));
    // The legend sits on the time axis, between its two labels, clear of the lines.
    const lx = W / 2 - 40 * lines.length + 80 * k;
    svg.appendChild(el("svg:line", { class: "line " + (l.cls || ""), x1: lx, y1: H - 8, x2: lx + 16, y2: H - 8 }));
    svg.appendChild(el("svg:text", { x: lx + 20, y: H - 4 }, l.name));
  });
}

// -- tables ----------------------------------------------------------------------------------

function row(cells, cls) {
  const tr = el("tr", cls ? { class: cls } : {});
  for (const c of cells) {
    const td = typeof c === "object" && c !== null ? el("td", { class: c.cls }, c.text) : el("td", {}, dash(c));
    tr.appendChild(td);
  }
  return tr;
}

function drawReplication(data) {
  const body = document.querySelector("#replication tbody");
  body.replaceChildren();
  if (!data.replication.length) {
    body.appendChild(row([{ text: "no leader answering", cls: "bad" }, "", "", "", "", "", "", "", ""]));
  }
  for (const p of data.replication) {
    body.appendChild(row([
      p.id + (p.is_leader ? " (leader)" : ""), p.address, p.state, p.match, p.next,
      { text: dash(p.lag), cls: p.lag > 1000 ? "bad" : "" },
      p.lag_seconds === null ? null : seconds(p.lag_seconds), p.inflight,
      p.is_leader ? "(itself)" : p.last_contact === null ? (p.active === false ? { text: "not recently", cls: "bad" } : (p.active ? "recent" : null))
        : seconds(p.last_contact) + " ago",
    ], p.is_leader ? "leader" : (p.active === false ? "dead" : "")));
  }
}

// A learner reports itself a follower; the leader's membership says what it is.
function roleName(n, data, role) {
  return (data.members.learners || []).includes(n.id) && n.role === "follower"
    ? role.replace("follower", "learner") : role;
}

function drawNodes(data) {
  const body = document.querySelector("#nodes tbody");
  body.replaceChildren();
  for (const n of data.nodes) {
    const health = !n.alive ? { text: "not answering", cls: "bad" }
      : n.failed ? { text: "failed: " + n.failed, cls: "bad" }
      : n.disk_full ? { text: "disk full", cls: "bad" }
      : n.healthy === false ? { text: "unhealthy: " + dash(n.unhealthy_reason), cls: "bad" }
      : { text: "ok", cls: "ok" };
    const err = !n.alive ? n.error : n.last_error ? clock(n.last_error_time) + " " + n.last_error : null;
    body.appendChild(row([
      n.id, n.address, roleName(n, data, n.alive ? n.role : "(" + dash(n.role) + ")"), n.term,
      n.commit, n.applied,
      n.last_index, n.snapshot_index, n.fsync_p99 === null ? null : seconds(n.fsync_p99), health,
      { text: dash(err), cls: "error" },
    ], (n.alive ? "" : "dead") + (n.alive && n.id === data.leader ? " leader" : "")));
  }
}

function drawTransfers(data) {
  const box = document.getElementById("transfers");
  box.replaceChildren();
  if (!data.transfers.length) { box.appendChild(el("p", { class: "empty" }, "none in progress")); return; }
  for (const t of data.transfers) {
    const div = el("div", { class: "transfer" });
    const who = t.direction === "receive" ? "n" + t.node + " \u2190 n" + t.peer : "n" + t.node + " \u2192 n" + t.peer;
    div.appendChild(el("div", {}, who + ": snapshot at " + dash(t.index) + ", " + bytes(t.bytes_done) + " of " +
      bytes(t.size) + (t.seconds === null ? "" : " in " + t.seconds + " s")));
    const bar = el("progress", { max: 1 });
    if (t.progress !== null) bar.value = t.progress;
    div.appendChild(bar);
    box.appendChild(div);
  }
}

function drawElections(data) {
  const list = document.getElementById("elections");
  list.replaceChildren();
  if (!data.elections.length) { list.appendChild(el("li", { class: "empty" }, "none reported")); return; }
  for (const e of data.elections) {
    const leader = e.role !== "leader" && e.leader !== null ? ", leader n" + e.leader : "";
    const li = el("li", {}, clock(e.time) + "  n" + e.node + " \u2192 " + dash(e.role) + " in term " +
      dash(e.term) + leader + " ");
    li.appendChild(el("span", { class: "reason" }, "(" + dash(e.reason) + ")"));
    list.appendChild(li);
  }
}

function draw(data) {
  document.getElementById("leader").textContent = data.leader === null ? "none" : "n" + data.leader;
  document.getElementById("term").textContent = dash(data.term);
  const alive = data.nodes.filter((n) => n.alive).length;
  document.getElementById("member-count").textContent = alive + " / " + data.nodes.length + " up";
  document.getElementById("write-rate").textContent = rate(data.write_rate);
  const lat = data.latency;
  document.getElementById("latency").textContent = lat && lat.p50 !== null
    ? seconds(lat.p50) + " / " + seconds(lat.p99) : "\u2013";
  drawGraph(data);
  const s = data.series;
  const from = visibleFrom(s, ["write_rate", "latency_p50"]);
  drawChart("rate-chart", s.time, [{ name: "entries/s", values: s.write_rate, fill: true }],
    rate, from);
  drawChart("latency-chart", s.time, [
    { name: "p50", values: s.latency_p50, fill: true },
    { name: "p99", values: s.latency_p99, cls: "p99" },
  ], seconds, from, data.latency_reported ? "no writes yet"
    : "not reported by these nodes (they time no writes)");
  drawReplication(data);
  drawNodes(data);
  drawTransfers(data);
  drawElections(data);
}

async function poll() {
  const fresh = document.getElementById("freshness");
  try {
    const resp = await fetch("/api/cluster", { cache: "no-store" });
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    draw(await resp.json());
    lastOk = Date.now();
    fresh.textContent = "updated " + new Date().toLocaleTimeString();
    fresh.classList.remove("stale");
  } catch (e) {
    fresh.textContent = "dashboard server unreachable" + (lastOk ? " since " + new Date(lastOk).toLocaleTimeString() : "");
    fresh.classList.add("stale");
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
