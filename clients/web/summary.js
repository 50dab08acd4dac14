// The summary of an ended call (guidance/summary.py's Summary as the wire carries it): outcome,
// overview, action items with due dates, objections and how they were handled, next steps,
// and the timeline of the lead score (from the call's score events) and of sentiment.
import {clock, esc, kindLabel, lineChart} from "/web/common.js";

const OUTCOME = {advanced: "Advanced", stalled: "Stalled", no_decision: "No decision"};
const HANDLING = {addressed: "addressed", unanswered: "not answered", reraised: "raised again later"};

function list(items, render, empty) {
  return items.length ? `<ul>${items.map((x) => `<li>${render(x)}</li>`).join("")}</ul>` : `<p class="muted">${empty}</p>`;
}

function due(a) {
  if (!a.due) return '<span class="muted">no due date</span>';
  return `due <time datetime="${esc(a.due)}">${esc(a.due)}</time>${a.due_text ? ` (“${esc(a.due_text)}”)` : ""}`;
}

function scoreTimeline(s, scores) {
  const points = scores.map((e, i) => [i, e.score]);
  const final = s.lead_score ?? (scores.length ? Math.round(scores.at(-1).score) : null);
  const chart = points.length ? lineChart(points, {
    lo: 0, hi: 100, mid: 50, dots: true, width: 320, height: 72,
    label: `Lead score over the call: ${points.map((p) => Math.round(p[1])).join(", ")}`,
  }) : "";
  const moves = scores.filter((e) => (e.reasons || []).length).map((e) =>
    `<li><span class="at">${clock(e.audio_end_s)}</span> ${Math.round(e.score)} ` +
    `(${e.delta >= 0 ? "+" : "−"}${Math.round(Math.abs(e.delta))}): ${esc(e.reasons.join("; "))}</li>`).join("");
  const reasons = (s.score_reasons || []).map((r) => `<li>${esc(r)}</li>`).join("");
  return `<h3>Lead score ${final ?? "–"}</h3>${chart}` +
    (reasons ? `<p>Why:</p><ul>${reasons}</ul>` : "") +
    (moves ? `<details><summary>Every change (${scores.filter((e) => (e.reasons || []).length).length})</summary><ul>${moves}</ul></details>` : "");
}

function sentimentTimeline(s) {
  const pts = (s.timeline || []).filter((p) => p.customer_sentiment !== null).map((p) => [p.start_s, p.customer_sentiment]);
  if (!pts.length) return "";
  const words = pts.map(([t, v]) => `${clock(t)} ${v > 0.2 ? "positive" : v < -0.2 ? "negative" : "neutral"}`);
  return `<h3>Customer sentiment over the call</h3>` +
    lineChart(pts, {lo: -1, hi: 1, mid: 0, dots: true, width: 320, height: 56, label: words.join(", ")}) +
    `<p class="muted">${esc(words.join(" · "))}</p>`;
}

export function renderSummary(s, scores) {
  const talk = (s.talk || []).map((t) => `${esc(t.speaker)} ${Math.round(100 * t.talk_share)} %`).join(" · ");
  return `<h2 id="summary-h">After the call: <span class="outcome">${esc(OUTCOME[s.outcome] || s.outcome)}</span></h2>` +
    `<p class="overview">${esc(s.overview)}</p>` +
    `<p class="muted">${clock(s.duration_s)} of audio${talk ? ` · talk ${talk}` : ""}</p>` +
    `<div class="summary-grid"><div><h3>Action items</h3>` +
    list(s.action_items || [], (a) => `<b>${esc(a.owner)}</b>: ${esc(a.item)} — ${due(a)}`, "None.") +
    `<h3>Objections</h3>` +
    list(s.objections || [], (o) => `<b>${esc(kindLabel(o.kind))}</b> <span class="at">${clock(o.start_s)}</span> ` +
      `“${esc(o.text)}” — <span class="handling">${esc(HANDLING[o.handling] || o.handling)}</span>` +
      (o.response ? `: rep said “${esc(o.response)}”` : ""), "None raised.") +
    `<h3>Next steps</h3>` +
    list(s.next_steps || [], (m) => `<span class="at">${clock(m.start_s)}</span> “${esc(m.text)}”`, "None agreed.") +
    `</div><div>${scoreTimeline(s, scores)}${sentimentTimeline(s)}</div></div>`;
}
