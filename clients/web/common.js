// Shared by the rep's page and the manager view: the token from the URL fragment (#token=…,
// which browsers never send to the server), REST calls (Authorization: Bearer) and sockets
// (Sec-WebSocket-Protocol: cuecard.bearer, TOKEN) with it, small DOM helpers and the
// inline-SVG charts. No library, no build step: the server serves these files as they are.

export const fragment = new URLSearchParams(location.hash.slice(1));
export const token = fragment.get("token") || "";

// guidance/playbook.py AlertKind: conversation dynamics (tests/test_web_page.py checks the list)
export const ALERT_KINDS = new Set([
  "talk_ratio", "monologue", "fast_speech", "customer_silence", "interruption",
  "unanswered_question", "no_next_step", "sentiment_drop",
]);
export const OPEN_STATES = new Set(["issued", "updated", "confirmed"]);

export const $ = (id) => document.getElementById(id);

export function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => (
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

export class ApiError extends Error {
  constructor(status, detail) { super(`${status} ${detail}`); this.status = status; this.detail = detail; }
}

/** GET a REST path with the bearer token; JSON back, or ApiError with the server's detail. */
export async function api(path, params = {}) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v != null));
  const qs = query.toString();
  const url = qs ? `${path}?${qs}` : path;
  const res = await fetch(url, {headers: {Authorization: `Bearer ${token}`}});
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail ?? detail; } catch { /* not JSON */ }
    throw new ApiError(res.status, typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return res.json();
}

/**
 * A WebSocket to `path` (+ `params` as its query) that carries the token as a
 * Sec-WebSocket-Protocol bearer: the browser offers ["cuecard.bearer", token] and the server
 * selects "cuecard.bearer", so the token is in no URL. Without a token, none is offered.
 */
export function openSocket(path, params = {}) {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const qs = new URLSearchParams(params).toString();
  const url = `${proto}://${location.host}${path}${qs ? `?${qs}` : ""}`;
  return token ? new WebSocket(url, ["cuecard.bearer", token]) : new WebSocket(url);
}

/** 75 -> "1:15"; 3725 -> "1:02:05". */
export function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${r}` : `${m}:${r}`;
}

export const kindLabel = (kind) => String(kind).replaceAll("_", " ");

/** The rep's page for a call, read-only (no Used/Dismiss): what the manager clicks through to. */
export function repPageUrl(callId, readonly) {
  const f = new URLSearchParams({token, call: callId});
  if (readonly) f.set("readonly", "1");
  return `/#${f}`;
}

/**
 * A small line chart as an inline SVG string: `points` are [x, y] pairs; y is clamped to
 * [lo, hi]; `mid` draws a dashed reference line (e.g. 50 % talk share, 0 sentiment). `label`
 * is what a screen reader hears; the chart has no meaning that is not also written next to it.
 */
export function lineChart(points, {lo, hi, mid = null, label, width = 240, height = 48, dots = false}) {
  const pad = 3;
  const xs = points.map((p) => p[0]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  const sx = (x) => pad + (x1 > x0 ? (x - x0) / (x1 - x0) : 1) * (width - 2 * pad);
  const sy = (y) => pad + (1 - (Math.min(hi, Math.max(lo, y)) - lo) / (hi - lo)) * (height - 2 * pad);
  const path = points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
  const ref = mid === null ? "" :
    `<line class="ref" x1="${pad}" x2="${width - pad}" y1="${sy(mid).toFixed(1)}" y2="${sy(mid).toFixed(1)}"/>`;
  const marks = dots ? points.map(([x, y]) => `<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="2.5"/>`).join("") : "";
  const line = points.length > 1 ? `<polyline points="${path}"/>` : marks ||
    (points.length ? `<circle cx="${sx(points[0][0]).toFixed(1)}" cy="${sy(points[0][1]).toFixed(1)}" r="2.5"/>` : "");
  return `<svg class="chart" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" ` +
    `role="img" aria-label="${esc(label)}"><title>${esc(label)}</title>${ref}${line}${points.length > 1 ? marks : ""}</svg>`;
}
