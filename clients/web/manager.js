// The manager view (/manager#token=…): live and recent calls with rep, duration, lead score
// and its trend, open alerts (click through to the rep's page, read-only); the server's health
// from /v1/stats; call history search (q, rep, outcome, status) and per-card-kind Used/Dismiss
// rates from /v1/cards/stats. Everything is polled over the REST API with the bearer token.
import {$, ALERT_KINDS, ApiError, OPEN_STATES, api, clock, esc, kindLabel, lineChart, repPageUrl} from "/web/common.js";

const POLL_MS = 4000;
const RECENT = 20;
const LABELS = { // /v1/stats keys; a key the server adds later is shown under its own name
  live_calls: "Live calls",
  asr_busy_s: "ASR busy since start-up (s)",
  asr_dropped_partials: "Partial transcripts dropped (ASR busy)",
  bus_dropped: "Events lost between instances",
};
const details = new Map(); // call_id -> {count, detail}: refetched only when the call grew
let lastStats = null;

function duration(c) {
  return clock((c.ended_at ?? Date.now() / 1000) - c.started_at);
}

function callLink(c) {
  return `<a href="${esc(repPageUrl(c.call_id, true))}">${esc(c.call_id)}</a>`;
}

async function detailOf(c) {
  const known = details.get(c.call_id);
  if (known && known.count === c.event_count && known.status === c.status) return known.detail;
  const detail = await api(`/v1/calls/${encodeURIComponent(c.call_id)}`);
  details.set(c.call_id, {count: c.event_count, status: c.status, detail});
  return detail;
}

function scoreCell(scores) {
  if (!scores.length) return '<span class="muted">–</span>';
  const last = scores.at(-1);
  const first = scores[0];
  const trend = last.score - first.score;
  const word = Math.abs(trend) < 1 ? "flat" : trend > 0 ? `▲ +${Math.round(trend)}` : `▼ −${Math.round(-trend)}`;
  const chart = scores.length > 1 ? lineChart(scores.map((s, i) => [i, s.score]), {
    lo: 0, hi: 100, mid: 50, width: 90, height: 24, label: `Lead score trend, ${word} since the start`,
  }) : "";
  return `<b>${Math.round(last.score)}</b> <span class="muted">${word}</span>${chart}`;
}

function openAlerts(cards) {
  const latest = new Map();
  for (const c of cards) latest.set(c.card_id, c);
  return [...latest.values()].filter((c) => ALERT_KINDS.has(c.kind) && OPEN_STATES.has(c.state));
}

async function refreshCalls() {
  const {calls} = await api("/v1/calls", {limit: RECENT});
  calls.sort((a, b) => (a.status === "live" ? 0 : 1) - (b.status === "live" ? 0 : 1) || b.started_at - a.started_at);
  const rows = await Promise.all(calls.map(async (c) => {
    let score = '<span class="muted">–</span>', alerts = '<span class="muted">–</span>';
    try {
      const d = await detailOf(c);
      score = scoreCell(d.scores);
      if (c.status === "live") {
        const open = openAlerts(d.cards);
        alerts = open.length ? `${open.length}: ${open.map((a) => esc(a.title)).join(", ")}` : "none";
      }
    } catch (err) {
      score = `<span class="muted">${esc(err.message)}</span>`;
    }
    return `<tr class="${c.status === "live" ? "live" : ""}" data-call="${esc(c.call_id)}"><td>${callLink(c)}</td>` +
      `<td>${esc(c.rep_id || "–")}</td><td>${esc(c.status)}</td><td class="num">${duration(c)}</td>` +
      `<td>${score}</td><td>${alerts}</td></tr>`;
  }));
  $("calls").tBodies[0].innerHTML = rows.join("");
  $("no-calls").hidden = calls.length > 0;
}

function flatten(obj, prefix = "") {
  return Object.entries(obj).flatMap(([k, v]) => v !== null && typeof v === "object"
    ? flatten(v, `${prefix}${k} `) : [[`${prefix}${k}`, v]]);
}

async function refreshHealth() {
  let stats;
  try {
    stats = await api("/v1/stats");
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 403)) throw err;
    $("health").innerHTML = `<div class="stat"><span>Server health needs an admin token</span><b>—</b></div>`;
    return;
  }
  const now = performance.now() / 1000;
  const rows = flatten(stats).map(([k, v]) =>
    `<div class="stat"><span>${esc(LABELS[k] || kindLabel(k))}</span><b>${esc(typeof v === "number" ? +v.toFixed(3) : v)}</b></div>`);
  if (lastStats && typeof stats.asr_busy_s === "number" && now > lastStats.at) {
    const share = (100 * (stats.asr_busy_s - lastStats.busy)) / (now - lastStats.at);
    rows.unshift(`<div class="stat"><span>ASR busy share (last ${Math.round(now - lastStats.at)} s)</span><b>${Math.max(0, share).toFixed(0)} %</b></div>`);
  }
  lastStats = {at: now, busy: stats.asr_busy_s};
  $("health").innerHTML = rows.join("");
}

async function search(form) {
  const params = Object.fromEntries(new FormData(form));
  try {
    const {calls} = await api("/v1/calls", {...params, limit: 100});
    $("history").tBodies[0].innerHTML = calls.map((c) =>
      `<tr><td>${callLink(c)}</td><td>${esc(c.rep_id || "–")}</td>` +
      `<td>${esc(new Date(c.started_at * 1000).toLocaleString())}</td><td class="num">${duration(c)}</td>` +
      `<td>${esc(c.status)}</td><td>${esc(c.outcome ? kindLabel(c.outcome) : "–")}</td></tr>`).join("");
    $("history-msg").textContent = `${calls.length} call${calls.length === 1 ? "" : "s"}`;
  } catch (err) {
    $("history-msg").textContent = `Search failed: ${err.message}`;
  }
  await refreshKinds(params.rep || "");
}

async function refreshKinds(rep) {
  const stats = await api("/v1/cards/stats", {rep});
  $("kinds-scope").textContent = `${stats.calls} stored call${stats.calls === 1 ? "" : "s"}${rep ? ` of rep ${rep}` : ""}`;
  const pct = (x) => `${Math.round(100 * x)} %`;
  const bar = (x) => `<span class="bar-track" aria-hidden="true"><span class="bar-fill" style="width:${Math.round(100 * x)}%"></span></span>`;
  $("kinds").tBodies[0].innerHTML = stats.kinds.map((k) =>
    `<tr data-kind="${esc(k.kind)}"><td>${esc(kindLabel(k.kind))} <span class="muted">(${esc(k.group)})</span></td>` +
    `<td class="num">${k.shown}</td><td class="num">${k.used} · ${pct(k.use_rate)} ${bar(k.use_rate)}</td>` +
    `<td class="num">${k.dismissed} · ${pct(k.dismiss_rate)} ${bar(k.dismiss_rate)}</td></tr>`).join("");
}

async function tick() {
  try {
    await Promise.all([refreshCalls(), refreshHealth()]);
    $("msg").textContent = "";
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    $("msg").textContent = err instanceof ApiError && err.status === 401
      ? "The server wants a token: open this page as /manager#token=YOUR_TOKEN" : `Could not reach the server: ${err.message}`;
  }
}

$("search").onsubmit = (ev) => { ev.preventDefault(); search(ev.target); };
tick();
setInterval(tick, POLL_MS);
search($("search"));
setInterval(() => refreshKinds($("search").elements.rep.value.trim()).catch(() => {}), 30_000);
