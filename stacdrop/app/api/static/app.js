// stacdrop status page: fetches the JSON API and renders it with DOM nodes and textContent only, so no
// string from the API (file names, error messages) is ever parsed as HTML.
"use strict";

const REFRESH_MS = 5000;
const REQUEST_TIMEOUT_MS = 15000;
const TOKEN_KEY = "stacdrop.token";
const MIN_FOOTPRINT_DEG = 1; // tiny items still show on a 360-degree-wide map
let inFlight = false;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function token() { return localStorage.getItem(TOKEN_KEY) || ""; }

function headers(extra) {
  const h = Object.assign({ Accept: "application/json" }, extra || {});
  if (token()) h.Authorization = "Bearer " + token();
  return h;
}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.headers);
  // A hung request must not stop the refreshes (one refresh runs at a time).
  opts.signal = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
  const resp = await fetch(path, opts);
  let body = null;
  try { body = await resp.json(); } catch (_) { body = null; }
  if (!resp.ok) {
    let detail = body && body.detail !== undefined ? body.detail : resp.statusText;
    if (typeof detail !== "string") detail = JSON.stringify(detail);
    throw new Error(resp.status + ": " + detail);
  }
  return body;
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Number(seconds);
  if (s < 1) return (s * 1000).toFixed(0) + " ms";
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
}

function count(value) {
  if (value === null || value === undefined) return el("td", { class: "num muted", title: "unknown" }, "–");
  return el("td", { class: "num" }, value);
}

function rate(value) {
  return value === null || value === undefined ? el("td", { class: "num muted" }, "–") : el("td", { class: "num" }, Number(value).toFixed(2));
}

function fill(tableId, rows, columns, emptyText) {
  const tbody = document.querySelector("#" + tableId + " tbody");
  const trs = rows.map((row) => el("tr", { "data-id": row.id || row.queue }, ...columns(row)));
  if (!trs.length) trs.push(el("tr", {}, el("td", { class: "empty", colspan: 12 }, emptyText)));
  tbody.replaceChildren(...trs);
}

function sectionError(sectionId, error) {
  const p = document.querySelector("#" + sectionId + " .error");
  p.hidden = !error;
  p.textContent = error ? "could not load: " + error.message : "";
}

function notice(text, bad) {
  const p = document.getElementById("notice");
  p.hidden = !text;
  p.textContent = text || "";
  p.className = bad ? "notice bad" : "notice";
}

function stateCell(state) {
  return el("td", { class: "state state-" + state }, state);
}

function renderQueues(data) {
  fill("queues", data.queues, (q) => [
    el("td", {}, q.queue), count(q.ready), count(q.unacked), count(q.retrying),
    el("td", { class: q.dead ? "num nonzero" : "num" }, q.dead), count(q.consumers),
    rate(q.publish_rate), rate(q.ack_rate),
  ], "no queues");
}

function renderJobs(data) {
  fill("jobs", data.jobs, (j) => [
    el("td", {}, when(j.created_at)), el("td", {}, j.kind), el("td", {}, j.collection || ""),
    el("td", {}, el("code", {}, j.source_key)), el("td", {}, j.item_id || ""), stateCell(j.state),
    el("td", {}, j.stage + " / " + j.step), el("td", { class: "num" }, j.attempts),
    el("td", { class: "num" }, duration(j.duration_s)),
  ], "no jobs yet");
}

function renderFailed(data) {
  fill("failed", data.jobs, (j) => [
    el("td", {}, when(j.finished_at || j.updated_at)), el("td", {}, j.collection || ""),
    el("td", {}, el("code", {}, j.source_key)), el("td", {}, j.stage + " / " + j.step),
    el("td", {}, j.error_class || ""), el("td", { class: "reason" }, j.error || ""),
  ], "no failures");
}

async function replay(id, button) {
  if (!token()) {
    notice("Enter the API token (top right) to replay.", true);
    return;
  }
  button.disabled = true;
  try {
    const result = await api("/dead-letters/replay", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ids: [id], dry_run: false }),
    });
    const replayed = (result.replayed || []).length;
    notice(replayed ? "Replayed " + replayed + " dead letter (" + id + ")." : "Nothing replayed: " + id + " is gone.", !replayed);
    await refresh();
  } catch (error) {
    notice("Replay failed: " + error.message, true);
    button.disabled = false;
  }
}

function renderDead(data) {
  fill("dead-letters", data.dead_letters, (d) => {
    const button = el("button", { type: "button", class: "replay", "data-id": d.id }, "Replay");
    button.addEventListener("click", () => replay(d.id, button));
    return [
      el("td", {}, when(d.dead_at)), el("td", {}, d.queue), el("td", {}, d.collection || ""),
      el("td", {}, el("code", { title: d.job_id }, String(d.job_id || "").slice(0, 8))),
      el("td", {}, d.error_class), el("td", { class: "reason" }, d.error), el("td", { class: "num" }, d.attempts),
      el("td", {}, button),
    ];
  }, "no dead letters");
}

function drawGraticule() {
  const g = document.getElementById("graticule");
  const nodes = [];
  for (let lon = -150; lon <= 150; lon += 30) {
    nodes.push(svg("line", { x1: lon, y1: -90, x2: lon, y2: 90, class: lon === 0 ? "axis" : "" }));
    if (lon % 60 === 0) nodes.push(svg("text", { x: lon + 1, y: 87 }, Math.abs(lon) + "°" + (lon < 0 ? "W" : lon > 0 ? "E" : "")));
  }
  for (let lat = -60; lat <= 60; lat += 30) {
    nodes.push(svg("line", { x1: -180, y1: -lat, x2: 180, y2: -lat, class: lat === 0 ? "axis" : "" }));
    nodes.push(svg("text", { x: -178, y: -lat - 1 }, Math.abs(lat) + "°" + (lat < 0 ? "S" : lat > 0 ? "N" : "")));
  }
  g.replaceChildren(...nodes);
}

// Equirectangular: x = lon, y = -lat (SVG y grows downwards). A bbox crossing the antimeridian
// (west > east, as STAC allows) is drawn as two boxes.
function footprintBoxes(w, s, e, n) {
  const spans = w <= e ? [[w, e]] : [[w, 180], [-180, e]];
  return spans.map(([west, east]) => {
    const width = Math.max(east - west, MIN_FOOTPRINT_DEG);
    const height = Math.max(n - s, MIN_FOOTPRINT_DEG);
    return { x: (west + east) / 2 - width / 2, y: -((s + n) / 2) - height / 2, width, height };
  });
}

function renderFootprints(data) {
  const shapes = [];
  for (const f of data.features) {
    const [w, s, e, n] = (f.bbox || []).map(Number);
    if (![w, s, e, n].every(Number.isFinite)) continue;
    const p = f.properties || {};
    const label = (p.collection || "") + "/" + (p.item_id || "") + " · published " + when(p.finished_at);
    for (const box of footprintBoxes(w, s, e, n)) {
      shapes.push(svg("rect", Object.assign({ "data-job": p.job_id || "" }, box), svg("title", {}, label)));
    }
  }
  document.getElementById("footprints").replaceChildren(...shapes);
  const count = data.features.length;
  document.getElementById("map-caption").textContent = count
    ? "bounding boxes of the " + count + " latest published item" + (count === 1 ? "" : "s")
    : "no published items with a footprint yet";
}

async function load(sectionId, path, render) {
  try {
    render(await api(path));
    sectionError(sectionId, null);
    return true;
  } catch (error) {
    sectionError(sectionId, error);
    return false;
  }
}

async function refresh() {
  if (inFlight) return;
  inFlight = true;
  try {
    const results = await Promise.all([
      load("queues-section", "/queues", renderQueues),
      load("jobs-section", "/jobs?limit=50", renderJobs),
      load("failed-section", "/jobs?state=failed&limit=50", renderFailed),
      load("dead-section", "/dead-letters", renderDead),
      load("map-section", "/footprints?limit=50", renderFootprints),
    ]);
    const ok = results.every(Boolean);
    document.getElementById("refreshed").textContent =
      (ok ? "updated " : "partly updated ") + new Date().toLocaleTimeString() + " · every " + REFRESH_MS / 1000 + " s";
  } finally {
    inFlight = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const input = document.getElementById("token");
  input.value = token();
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
    notice(value ? "Token saved in this browser." : "Token removed.", false);
    refresh();
  });
  drawGraticule();
  refresh();
  setInterval(refresh, REFRESH_MS);
});
