// hybrid-router live dashboard: reads /ui/events (server-sent events) with fetch() so that an
// ops key can go in an Authorization header; draws with DOM text nodes and small inline SVGs.
// No data is ever inserted as HTML.
"use strict";

const KEY = "hybrid-router-ops-key";
const SVG = "http://www.w3.org/2000/svg";
let controller = null;
let retryTimer = null;

function $(id) { return document.getElementById(id); }

function authHeaders() {
  const key = sessionStorage.getItem(KEY);
  return key ? { Authorization: "Bearer " + key } : {};
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

function fmt(v, digits, unit) {
  if (v === null || v === undefined) return "–";
  return Number(v).toFixed(digits) + (unit || "");
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  return (n / 2 ** 30).toFixed(1) + " GiB";
}

// A sparkline of one or two series (nulls are gaps drawn at 0).
function spark(series, alt, width, height) {
  const w = width || 120, h = height || 24;
  const s = svg("svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}`, class: "spark" });
  const all = series.concat(alt || []).filter((v) => v !== null);
  const max = Math.max(1e-9, ...all);
  const line = (data, cls) => {
    const step = data.length > 1 ? w / (data.length - 1) : w;
    const pts = data.map((v, i) => `${(i * step).toFixed(1)},${(h - 1 - ((v || 0) / max) * (h - 2)).toFixed(1)}`);
    const p = svg("polyline", { points: pts.join(" ") });
    if (cls) p.setAttribute("class", cls);
    s.appendChild(p);
  };
  line(series);
  if (alt) line(alt, "alt");
  return s;
}

function bar(value, max, cls, width) {
  const w = width || 160;
  const s = svg("svg", { width: w, height: 10 });
  s.appendChild(svg("rect", { width: w, height: 10, fill: "#eef0f4", rx: 2 }));
  const fill = svg("rect", { width: Math.max(2, max ? (value / max) * w : 0), height: 10, rx: 2 });
  fill.setAttribute("class", "fill " + (cls || ""));
  fill.setAttribute("fill", cls === "over" ? "#c62828" : cls === "near" ? "#b26a00"
    : cls === "cloud" ? "#8a4bd1" : cls === "refused" ? "#c62828" : "#2f6fd6");
  s.appendChild(fill);
  return s;
}

function barList(container, counts, classify) {
  container.replaceChildren();
  const entries = Object.entries(counts).sort((a, b) => b[1] - a[1]);
  if (!entries.length) { container.appendChild(el("span", "none", "muted")); return; }
  const max = Math.max(...entries.map((e) => e[1]));
  for (const [name, n] of entries) {
    const row = el("div");
    row.dataset.name = name;
    row.appendChild(bar(n, max, classify ? classify(name) : ""));
    row.appendChild(el("span", `${name}: ${n}`));
    container.appendChild(row);
  }
}

function cell(tr, content, cls) {
  const td = el("td", null, cls);
  if (content instanceof Node) td.appendChild(content); else td.textContent = content;
  tr.appendChild(td);
  return td;
}

function stack(...parts) {
  const d = el("div");
  for (const p of parts) d.appendChild(p instanceof Node ? p : el("div", p));
  return d;
}

function renderBackends(view) {
  const body = $("backends").querySelector("tbody");
  body.replaceChildren();
  for (const [name, b] of Object.entries(view.backends)) {
    const tr = el("tr");
    tr.dataset.backend = name;
    cell(tr, stack(el("b", name), el("div", `${b.type} · ${b.local ? "local" : "cloud"}`, "muted")));
    const probe = b.probe || {};
    cell(tr, b.healthy ? "healthy" : (probe.detail || "unhealthy"), b.healthy ? "ok" : "bad");
    cell(tr, b.breaker, b.breaker === "closed" ? "ok" : b.breaker === "open" ? "bad" : "warn");
    cell(tr, stack(el("span", fmt(b.rps, 2), "num rps"), spark(b.rps_series)), "num");
    cell(tr, fmt(b.error_rate * 100, 1, "%"), "num");
    cell(tr, stack(`${fmt(b.ttft_s.p50, 3, " s")} / ${fmt(b.ttft_s.p95, 3, " s")}`,
      spark(b.ttft_series)), "num");
    cell(tr, stack(`${fmt(b.tokens_per_s.p50, 1)} / ${fmt(b.tokens_per_s.p95, 1)}`,
      spark(b.tps_series)), "num");
    const queues = Object.entries(b.queues || {});
    const bounds = Object.entries(view.wait_bounds || {})
      .map(([route, s]) => `${route} ≤ ${fmt(s, 1, " s")}`).join(", ");
    cell(tr, queues.length ? stack(...queues.map(([model, q]) =>
      `${model}: ${q.in_flight}/${q.slots} busy, ${q.queued} queued, est. wait ` +
      `${fmt(q.estimated_wait_s, 2, " s")}`), el("span", "bounds: " + bounds, "muted")) : "–");
    if (probe.gpu_total_bytes || probe.gpu_free_bytes) {
      const used = (probe.gpu_total_bytes || 0) - (probe.gpu_free_bytes || 0);
      cell(tr, stack(`${bytes(used)} used, ${bytes(probe.gpu_free_bytes)} free`,
        bar(used, probe.gpu_total_bytes || used, "")));
    } else cell(tr, "–");
    const loaded = probe.loaded || [];
    cell(tr, loaded.length ? stack(...loaded.map((m) =>
      `${m.model}: ${bytes(m.size)} (${bytes(m.size_vram)} in VRAM), ctx ${m.context_length ?? "–"}`))
      : "–");
    body.appendChild(tr);
  }
}

function renderSummary(view) {
  const r = view.routing, t = view.totals;
  const win = r.rps_series.reduce((a, b) => a + b, 0);
  $("sum-requests").textContent = win;
  $("sum-rps").textContent = fmt(r.rps_series.slice(-10).reduce((a, b) => a + b, 0) / 10, 2);
  $("sum-spill").textContent = fmt(r.spill_rate * 100, 1, "%");
  $("sum-private-local").textContent = r.private_local;
  $("sum-private-refused").textContent = Object.values(r.private_refused).reduce((a, b) => a + b, 0);
  $("sum-waited").textContent = r.waited;
  $("sum-hedges").textContent = `${r.hedges} / ${r.continuations}`;
  $("sum-total").textContent = t.requests;
  const ready = $("ready");
  ready.textContent = view.ready ? "ready" : "not ready";
  ready.className = "badge " + (view.ready ? "ok" : "bad");
  $("updated").textContent = "updated " + new Date(view.time * 1000).toLocaleTimeString();
}

function renderRouting(view) {
  const r = view.routing;
  const chart = $("routing-chart");
  chart.replaceChildren(spark(r.rps_series, r.spill_series, 600, 90));
  const local = new Set(Object.entries(view.backends).filter(([, b]) => b.local).map(([n]) => n));
  barList($("by-backend"), r.by_backend, (n) => (local.has(n) ? "" : "cloud"));
  barList($("by-reason"), r.by_reason);
  barList($("private-refused"), r.private_refused, () => "refused");
}

function renderMoney(view) {
  const m = view.money;
  const body = $("spend").querySelector("tbody");
  body.replaceChildren();
  for (const s of m.spend_today) {
    const tr = el("tr");
    cell(tr, s.name);
    cell(tr, s.spent_usd === null ? "unknown" : "$" + s.spent_usd.toFixed(4), "num");
    cell(tr, s.cap_usd === null ? "no cap" : "$" + s.cap_usd.toFixed(2), "num");
    if (s.cap_usd && s.spent_usd !== null) {
      const ratio = s.spent_usd / s.cap_usd;
      cell(tr, bar(Math.min(s.spent_usd, s.cap_usd), s.cap_usd,
        ratio >= 1 ? "over" : ratio >= 0.8 ? "near" : "", 120));
    } else cell(tr, "");
    body.appendChild(tr);
  }
  $("local-tokens").textContent = m.local_tokens;
  $("local-value").textContent = "$" + m.local_value_usd.toFixed(4);
  const dl = $("store");
  dl.replaceChildren();
  for (const [k, v] of Object.entries(view.store)) {
    dl.appendChild(el("dt", k));
    dl.appendChild(el("dd", typeof v === "object" ? JSON.stringify(v) : v,
      k === "degraded" ? (v ? "bad" : "ok") : ""));
  }
}

function renderReplicas(view) {
  const body = $("replicas").querySelector("tbody");
  body.replaceChildren();
  for (const r of view.replicas || []) {
    const tr = el("tr");
    tr.dataset.replica = r.id;
    cell(tr, stack(el("b", r.id), el("div", r.self ? "this replica" : "", "muted")));
    cell(tr, r.store, r.store === "ok" ? "ok" : "bad");
    cell(tr, r.in_flight, "num");
    cell(tr, fmt(r.last_seen_s_ago, 1, " s ago"), "num");
    body.appendChild(tr);
  }
  const slots = $("shared-slots").querySelector("tbody");
  slots.replaceChildren();
  for (const s of view.shared_slots || []) {
    const tr = el("tr");
    cell(tr, s.backend);
    cell(tr, s.model);
    cell(tr, stack(`${s.in_flight} / ${s.slots ?? "–"}`,
      bar(s.in_flight, s.slots || Math.max(1, s.in_flight), "")), "num");
    cell(tr, s.queued, "num");
    slots.appendChild(tr);
  }
}

function renderDecisions(view) {
  const body = $("decisions").querySelector("tbody");
  body.replaceChildren();
  const local = new Set(Object.entries(view.backends).filter(([, b]) => b.local).map(([n]) => n));
  for (const d of view.decisions) {
    const tr = el("tr");
    tr.dataset.requestId = d.request_id;
    tr.dataset.privacy = d.privacy;
    tr.dataset.backend = d.backend || "";
    tr.dataset.reason = d.reason || "";
    tr.dataset.outcome = d.outcome;
    const classes = [];
    if (d.privacy === "private") classes.push("private");
    if (!d.backend) classes.push("refused");
    if (d.backend && !local.has(d.backend) && d.privacy !== "private") classes.push("spill");
    tr.className = classes.join(" ");
    cell(tr, new Date(d.time * 1000).toLocaleTimeString());
    cell(tr, d.dialect);
    cell(tr, d.model);
    cell(tr, d.privacy);
    cell(tr, d.route || "–");
    cell(tr, d.backend || "refused");
    cell(tr, d.reason || "–");
    cell(tr, d.outcome === "ok" ? "ok" : `${d.outcome} (${d.status})`, d.outcome === "ok" ? "ok" : "bad");
    cell(tr, fmt(d.latency_ms, 0, " ms"), "num");
    cell(tr, d.prompt_tokens === null ? "–" : `${d.prompt_tokens} → ${d.completion_tokens}`, "num");
    body.appendChild(tr);
  }
}

function render(view) {
  renderSummary(view);
  renderBackends(view);
  renderRouting(view);
  renderMoney(view);
  renderReplicas(view);
  renderDecisions(view);
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
}

function setConn(text, bad) {
  const c = $("conn");
  c.textContent = text;
  c.className = bad ? "bad" : "muted";
}

function reconnect(delay) {
  clearTimeout(retryTimer);
  retryTimer = setTimeout(connect, delay);
}

async function connect() {
  if (controller) controller.abort();
  const mine = (controller = new AbortController());
  try {
    const resp = await fetch("/ui/events", {
      headers: { Accept: "text/event-stream", ...authHeaders() }, signal: mine.signal,
      cache: "no-store",
    });
    if (!resp.ok) {
      let msg = `HTTP ${resp.status}`;
      try { msg += ": " + (await resp.json()).error.message; } catch (_) { /* not JSON */ }
      setConn(msg, true);
      if (resp.status !== 401 && resp.status !== 403) reconnect(5000);
      return;
    }
    setConn("live");
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const chunk = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = chunk.split("\n").filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).trimStart()).join("\n");
        if (data) render(JSON.parse(data));
      }
    }
    if (mine === controller) { setConn("reconnecting…"); reconnect(1000); }
  } catch (e) {
    if (mine !== controller || e.name === "AbortError") return;
    setConn("disconnected; retrying", true);
    reconnect(2000);
  }
}

async function explain(ev) {
  ev.preventDefault();
  const out = $("explain-out");
  let body;
  try { body = JSON.parse($("explain-body").value); } catch (e) {
    out.textContent = "not JSON: " + e.message; return;
  }
  const headers = { "Content-Type": "application/json", ...authHeaders() };
  if ($("explain-private").checked) headers["X-Privacy"] = "private";
  const resp = await fetch("/v1/router/explain", { method: "POST", headers, body: JSON.stringify(body) });
  const data = await resp.json();
  if (!resp.ok) { out.textContent = `HTTP ${resp.status}\n` + JSON.stringify(data, null, 2); return; }
  const lines = [`route ${data.route}, privacy ${data.privacy}, reason ${data.reason ?? "–"}`];
  for (const c of data.candidates) {
    lines.push(`  → ${c.backend} (${c.local ? "local" : "cloud"}, ${c.model_id}): ${c.reason}, ` +
      `est. wait ${c.estimated_wait_s}s`);
  }
  for (const e of data.excluded) lines.push(`  ✗ ${e.backend}: ${e.reason}`);
  if (data.error) lines.push("would fail: " + data.error.message);
  out.textContent = lines.join("\n") + "\n\n" + JSON.stringify(data, null, 2);
}

document.addEventListener("DOMContentLoaded", () => {
  $("key").value = sessionStorage.getItem(KEY) || "";
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = $("key").value.trim();
    if (v) sessionStorage.setItem(KEY, v); else sessionStorage.removeItem(KEY);
    connect();
  });
  $("explain-form").addEventListener("submit", explain);
  connect();
});
