// What the rep's page shows of one call, fed one wire event at a time (server/wire.py):
// the transcript, the cue cards, the lead score and the live charts. The connection
// (rep.js) decides which events reach it: a durable event (one with a `seq`) exactly once.
import {$, ALERT_KINDS, OPEN_STATES, clock, esc, kindLabel, lineChart} from "/web/common.js";
import {renderSummary} from "/web/summary.js";

const SPEAKER = {rep: "Rep", customer: "Customer", unknown: "Unknown"};
const NEAR_BOTTOM_PX = 40;

export class CallView {
  constructor({readonly, onAction, onAnnounce}) {
    this.readonly = readonly;
    this.onAction = onAction;
    this.onAnnounce = onAnnounce;
    this.partials = new Map(); // utterance_id -> element of a line not final yet
    this.cards = new Map(); // card_id -> latest card event
    this.superseded = new Set(); // card ids the server replaced with a fresh card of the same key
    this.scores = [];
    this.talk = {rep: 0, customer: 0};
    this.talkSeries = [];
    this.pace = [];
    this.sentiment = [];
    this.audioS = 0;
    this.summary = null;
    const box = $("transcript");
    box.addEventListener("scroll", () => { if (nearBottom(box)) $("jump").hidden = true; });
    $("jump").onclick = () => { box.scrollTop = box.scrollHeight; $("jump").hidden = true; };
  }

  handle(e) {
    if (typeof e.audio_end_s === "number") this.audioS = Math.max(this.audioS, e.audio_end_s);
    if (e.type === "transcript") this.transcript(e);
    else if (e.type === "card") this.card(e);
    else if (e.type === "score") this.score(e);
    else if (e.type === "insight") this.insight(e);
    else if (e.type === "summary") this.showSummary(e);
    else if (e.type === "status") this.audioS = Math.max(this.audioS, e.audio_s || 0);
  }

  /** After a reconnect: what was only shown (partials, provisional cards) is not re-sent. */
  dropUnstored() {
    for (const el of this.partials.values()) el.remove();
    this.partials.clear();
    for (const [id, c] of this.cards) if (c.provisional) this.cards.delete(id);
    this.renderCards();
  }

  // -- transcript ---------------------------------------------------------------------------
  transcript(e) {
    const box = $("transcript");
    const stick = nearBottom(box);
    let el = this.partials.get(e.utterance_id);
    if (!el) {
      el = document.createElement("p");
      insertByTime(box, el, e.start_s);
      if (!e.is_final) this.partials.set(e.utterance_id, el);
    }
    el.className = `line ${e.speaker} ${e.is_final ? "final" : "partial"}`;
    el.dataset.start = e.start_s;
    if (e.is_final) {
      el.dataset.seq = e.seq ?? "";
      this.partials.delete(e.utterance_id);
    }
    const who = SPEAKER[e.speaker] || e.speaker;
    el.innerHTML = `<span class="who">${esc(who)}</span> <span class="at">${clock(e.start_s)}</span> ` +
      `<span class="text">${esc(e.text)}</span>` + (e.is_final ? "" : ' <span class="typing">(speaking…)</span>');
    if (stick) box.scrollTop = box.scrollHeight;
    else $("jump").hidden = false;
  }

  // -- cards --------------------------------------------------------------------------------
  card(e) {
    const fresh = !this.cards.has(e.card_id);
    if (fresh && e.state === "issued") {
      for (const [id, c] of this.cards) {
        // the server issues a new card for a key whose card went stale (card_ttl_s)
        if (id !== e.card_id && OPEN_STATES.has(c.state) && c.kind === e.kind && c.title === e.title) {
          this.superseded.add(id);
        }
      }
      this.onAnnounce(`New ${ALERT_KINDS.has(e.kind) ? "alert" : "card"}: ${e.title}`);
    }
    this.cards.set(e.card_id, e);
    this.renderCards();
  }

  isOpen(c) {
    return OPEN_STATES.has(c.state) && !this.superseded.has(c.card_id) && !this.summary;
  }

  /** Open cards, newest first (the trigger's audio time), the more important first on a tie. */
  openCards() {
    return [...this.cards.values()].filter((c) => this.isOpen(c))
      .sort((a, b) => (b.audio_end_s - a.audio_end_s) || (b.priority - a.priority));
  }

  renderCards() {
    const open = this.openCards();
    const past = [...this.cards.values()].filter((c) => !this.isOpen(c)).reverse();
    $("cards").innerHTML = open.map((c, i) => this.cardHtml(c, i === 0)).join("");
    $("past-cards").innerHTML = past.map((c) => this.cardHtml(c, false)).join("");
    $("past-n").textContent = past.length;
    $("no-cards").hidden = open.length > 0;
    $("cards").querySelectorAll("button[data-action]").forEach((b) => {
      b.onclick = () => this.onAction(b.dataset.card, b.dataset.action);
    });
  }

  cardHtml(c, top) {
    const alert = ALERT_KINDS.has(c.kind);
    const state = this.superseded.has(c.card_id) ? "replaced" : c.state;
    const tags = [alert ? "Alert" : "Card", kindLabel(c.kind)];
    if (c.provisional) tags.push("provisional");
    if (!this.isOpen(c)) tags.push(state);
    const track = (c.responses || []).map((r) => `<li>${esc(r)}</li>`).join("");
    const ev = c.evidence;
    const quote = ev ? `<blockquote><span class="sr-only">Said by </span><b>${esc(SPEAKER[ev.speaker] || ev.speaker)}</b> ` +
      `<span class="at">${clock(ev.start_s)}</span> “${esc(ev.quote)}”</blockquote>` : "";
    const buttons = this.readonly || !this.isOpen(c) ? "" :
      `<div class="actions"><button data-card="${esc(c.card_id)}" data-action="used">Used</button>` +
      `<button data-card="${esc(c.card_id)}" data-action="dismissed"${top ? ' aria-keyshortcuts="Escape"' : ""}>` +
      `Dismiss${top ? ' <kbd>Esc</kbd>' : ""}</button></div>`;
    const cls = `card ${alert ? "alert" : "cue"} ${esc(state)}${c.provisional ? " provisional" : ""}`;
    return `<article class="${cls}" id="card-${esc(c.card_id)}" data-kind="${esc(c.kind)}">` +
      `<p class="tags">${tags.map((t) => `<span class="tag">${esc(t)}</span>`).join(" ")}</p>` +
      `<h3>${esc(c.title)}</h3>${c.detail ? `<p class="detail">${esc(c.detail)}</p>` : ""}` +
      (track ? `<ul class="track" aria-label="Talk track">${track}</ul>` : "") + quote + buttons + "</article>";
  }

  // -- score and charts ---------------------------------------------------------------------
  score(e) {
    this.scores.push(e);
    $("score").textContent = Math.round(e.score);
    $("score-delta").innerHTML = delta(e.delta);
    $("score-trend").innerHTML = lineChart(this.scores.map((s, i) => [i, s.score]), {
      lo: 0, hi: 100, mid: 50, dots: true, height: 56,
      label: `Lead score trend: ${this.scores.map((s) => Math.round(s.score)).join(", ")}`,
    });
    const changes = this.scores.filter((s) => (s.reasons || []).length).slice(-3).reverse();
    $("reasons").innerHTML = changes.map((s) =>
      `<li>${delta(s.delta)} at <span class="at">${clock(s.audio_end_s)}</span>: ${esc(s.reasons.join(" · "))}</li>`).join("");
  }

  insight(e) {
    if (!e.is_final) return;
    const talkS = Math.max(0, e.end_s - e.start_s);
    if (e.speaker in this.talk) this.talk[e.speaker] += talkS;
    const total = this.talk.rep + this.talk.customer;
    if (total > 0) {
      const rep = Math.round((100 * this.talk.rep) / total);
      this.talkSeries.push([e.end_s, rep]);
      this.metric("talk", `Rep ${rep} % · Customer ${100 - rep} %`, this.talkSeries,
        {lo: 0, hi: 100, mid: 50, label: `Rep's share of talk time over the call, now ${rep} %`});
    }
    if (e.speaker === "rep") {
      const words = e.text.split(/\s+/).filter(Boolean).length;
      const wpm = e.prosody?.rate_wpm ?? (talkS > 0.5 ? (60 * words) / talkS : null);
      if (wpm) {
        this.pace.push([e.end_s, wpm]);
        this.metric("pace", `${Math.round(wpm)} words/min`, this.pace,
          {lo: 60, hi: 240, mid: 150, label: `Rep's pace per utterance, now ${Math.round(wpm)} words a minute`});
      }
    }
    if (e.speaker === "customer" && typeof e.sentiment === "number") {
      this.sentiment.push([e.end_s, e.sentiment]);
      const word = e.sentiment > 0.2 ? "positive" : e.sentiment < -0.2 ? "negative" : "neutral";
      const signed = `${e.sentiment >= 0 ? "+" : "−"}${Math.abs(e.sentiment).toFixed(2)}`;
      this.metric("sentiment", `${word} (${signed})`, this.sentiment,
        {lo: -1, hi: 1, mid: 0, label: `Customer sentiment per utterance, now ${word}`});
    }
  }

  metric(id, text, series, opts) {
    $(id).querySelector(".value").textContent = text;
    $(id).querySelector(".spark").innerHTML = lineChart(series, opts);
  }

  showSummary(s) {
    this.summary = s;
    const section = $("summary");
    section.innerHTML = renderSummary(s, this.scores);
    section.hidden = false;
    $("past").open = true; // the call is over: its cards are history now
    this.renderCards();
  }
}

function delta(d) {
  if (typeof d !== "number" || Math.abs(d) < 0.5) return '<span class="delta flat">= 0</span>';
  const up = d > 0;
  return `<span class="delta ${up ? "up" : "down"}">${up ? "▲ +" : "▼ −"}${Math.round(Math.abs(d))}</span>`;
}

function nearBottom(box) {
  return box.scrollHeight - box.scrollTop - box.clientHeight < NEAR_BOTTOM_PX;
}

/** Lines in the order they were spoken (a long turn's final can come after a short reply's). */
function insertByTime(box, el, startS) {
  let after = box.lastElementChild;
  while (after && Number(after.dataset.start) > startS) after = after.previousElementSibling;
  box.insertBefore(el, after ? after.nextSibling : box.firstChild);
}
