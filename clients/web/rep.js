// The rep's page: pick a live call (or open /#token=…&call=ID), then watch it on the call's
// events socket. The socket reconnects by itself with backoff and resumes after the last
// stored event it saw (?after_seq=N), so a reconnect neither replays the call nor shows a
// line twice. &readonly=1 (the manager's click-through) shows the call without Used/Dismiss.
import {$, ApiError, api, clock, esc, fragment, openSocket, token} from "/web/common.js";
import {CallView} from "/web/repview.js";

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000];
const END_STATES = new Set(["ended", "interrupted", "timed_out", "limit_exceeded"]);
const callId = fragment.get("call") || "";
const readonly = fragment.get("readonly") === "1";

window.addEventListener("hashchange", () => location.reload());

/** One call's events socket, reopened until the call is over or the server refuses it. */
class Feed {
  constructor({onEvent, onOpen, onState, isOver}) {
    Object.assign(this, {onEvent, onOpen, onState, isOver});
    this.lastSeq = 0;
    this.attempt = 0;
    this.ws = null;
    this.over = false;
    this.ended = false; // a status event said the call ended
  }

  open() {
    const path = `/v1/calls/${encodeURIComponent(callId)}/events`;
    const ws = this.ws = openSocket(path, {after_seq: String(this.lastSeq)});
    this.onState("connecting", this.attempt ? `reconnecting (attempt ${this.attempt + 1})…` : "connecting…");
    let greeted = false;
    ws.onmessage = (m) => {
      if (!greeted) { greeted = true; this.attempt = 0; this.onState("live", "connected"); }
      const e = JSON.parse(m.data);
      if (typeof e.seq === "number") {
        if (e.seq <= this.lastSeq) return; // seen before this reconnect
        this.lastSeq = e.seq;
      }
      if (e.type === "status" && END_STATES.has(e.state)) this.ended = true;
      this.onEvent(e);
    };
    ws.onopen = () => { this.onOpen(); if (!greeted) this.onState("live", "connected"); };
    ws.onclose = (c) => this.closed(c);
  }

  async closed(c) {
    this.ws = null;
    const why = `closed ${c.code}${c.reason ? " " + c.reason : ""}`;
    // 1000 is the end of the call: said by a status event, else by the call's record
    if (c.code === 1000 && (this.ended || await this.isOver())) { this.over = true; this.onState("over", why); return; }
    if (c.code === 1008 || c.code === 4404) { this.over = true; this.onState("refused", why); return; }
    const wait = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)] * (0.8 + 0.4 * Math.random());
    this.attempt += 1;
    this.onState("down", `${why}; reconnecting in ${(wait / 1000).toFixed(1)} s`);
    setTimeout(() => this.open(), wait);
  }

  send(message) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }
}

function announce(text) {
  $("announce").textContent = text;
  if (document.hidden) {
    unseen += 1;
    document.title = `(${unseen}) Cuecard`;
  }
}
let unseen = 0;
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) { unseen = 0; document.title = callId ? `Cuecard · ${callId}` : "Cuecard"; }
});

function watch() {
  document.title = `Cuecard · ${callId}`;
  $("call-view").hidden = false;
  $("call-name").textContent = callId;
  $("esc-hint").hidden = readonly;
  if (readonly) document.body.classList.add("readonly");
  let record = null;
  const feed = new Feed({
    onEvent: (e) => {
      view.handle(e);
      if (e.type === "status") $("state").textContent = `${e.state}: ${e.detail}`;
      else if (e.type === "error" || e.type === "card_action_rejected") announce(`Not done: ${e.detail || e.reason}`);
    },
    onOpen: () => view.dropUnstored(),
    onState: (kind, text) => {
      $("conn").textContent = text;
      $("conn").dataset.kind = kind;
      if (kind === "live" || kind === "over") refreshRecord();
      if (kind === "over" && !view.summary) fetchSummary();
    },
    isOver: async () => {
      await refreshRecord();
      return record !== null && record.status !== "live";
    },
  });
  const view = new CallView({
    readonly,
    onAnnounce: announce,
    onAction: (cardId, action) => {
      if (!feed.send({type: "card_action", card_id: cardId, action})) announce("Not connected: the action was not sent");
    },
  });
  async function refreshRecord() {
    try { record = await api(`/v1/calls/${encodeURIComponent(callId)}`).then((d) => d.call); } catch { /* the timer falls back to audio time */ }
  }
  async function fetchSummary() {
    try { view.showSummary(await api(`/v1/calls/${encodeURIComponent(callId)}/summary`)); } catch { /* none */ }
  }
  setInterval(() => {
    let s = view.audioS;
    if (record) s = (record.ended_at ?? (feed.over ? record.started_at + s : Date.now() / 1000)) - record.started_at;
    $("timer").textContent = clock(s);
  }, 1000);
  document.addEventListener("keydown", (ev) => {
    if (ev.key !== "Escape" || readonly || ev.target.closest?.("input, textarea, select")) return;
    const top = view.openCards()[0];
    if (top) { ev.preventDefault(); view.onAction(top.card_id, "dismissed"); }
  });
  feed.open();
}

async function pick() {
  $("picker").hidden = false;
  $("to-list").hidden = true;
  $("join").onsubmit = (ev) => {
    ev.preventDefault();
    const id = $("call").value.trim();
    if (id) location.hash = new URLSearchParams({token, call: id}).toString();
  };
  const refresh = async () => {
    try {
      const {calls} = await api("/v1/calls", {status: "live", limit: 50});
      $("live-calls").innerHTML = calls.map((c) => {
        const href = `#${new URLSearchParams({token, call: c.call_id})}`;
        const ago = clock(Date.now() / 1000 - c.started_at);
        return `<li><a href="${esc(href)}">${esc(c.call_id)}</a> <span class="muted">rep ${esc(c.rep_id || "–")} · ${ago} · ${esc(c.source)}</span></li>`;
      }).join("");
      $("picker-msg").textContent = calls.length ? "" : "No live call right now; this list refreshes by itself.";
    } catch (err) {
      $("picker-msg").textContent = err instanceof ApiError && err.status === 401
        ? "The server wants a token: open this page as /#token=YOUR_TOKEN" : `Could not list calls: ${err.message}`;
    }
  };
  await refresh();
  setInterval(refresh, 5000);
}

$("to-list").href = `#${new URLSearchParams({token})}`;
if (callId) watch(); else pick();
