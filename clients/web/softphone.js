// The softphone page (/softphone): see softphone.html and docs/api.md, "WebRTC".
// The token comes from the URL fragment (#token=…&call=ID&mode=ws&rep=ID), which browsers never
// send to the server; it goes out as a bearer header (WebRTC offer) or as the WebSockets'
// Sec-WebSocket-Protocol bearer (["cuecard.bearer", token]; the server selects cuecard.bearer).
const fragment = new URLSearchParams(location.hash.slice(1));
const token = fragment.get("token") || "";
const $ = (id) => document.getElementById(id);
const proto = location.protocol === "https:" ? "wss" : "ws";
const bearer = token ? ["cuecard.bearer", token] : [];
let live = null; // {stop(): void} of the running call
let captured = []; // the MediaStreamTracks it sends, stopped when it ends

function setState(kind, text) { $("state").dataset.state = kind; $("state").textContent = text; }
function esc(s) { return String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c])); }

$("call-id").value = fragment.get("call") || "soft-" + Math.random().toString(36).slice(2, 10);
$("rep-id").value = fragment.get("rep") || "";
if (fragment.get("mode") === "ws" || !window.RTCPeerConnection) $("mode").value = "ws";

async function listRemoteSources() {
  const keep = $("remote").value;
  const options = [["", "none (my microphone only)"]];
  if (navigator.mediaDevices.getDisplayMedia) options.push(["tab", "a tab's or the screen's audio (you pick it)"]);
  const devices = await navigator.mediaDevices.enumerateDevices();
  devices.filter((d) => d.kind === "audioinput" && d.deviceId !== "default" && d.deviceId !== "communications")
    .forEach((d, i) => options.push(["device:" + d.deviceId, "input: " + (d.label || "audio input " + (i + 1))]));
  $("remote").innerHTML = options.map(([v, t]) => `<option value="${esc(v)}">${esc(t)}</option>`).join("");
  if (options.some(([v]) => v === keep)) $("remote").value = keep;
}

async function captureSources() {
  const mic = await navigator.mediaDevices.getUserMedia({audio: true});
  const tracks = [mic.getAudioTracks()[0]];
  const choice = $("remote").value;
  if (choice === "tab") {
    const shared = await navigator.mediaDevices.getDisplayMedia({video: true, audio: true});
    shared.getVideoTracks().forEach((t) => t.stop());
    if (!shared.getAudioTracks().length) throw new Error("the shared tab or screen has no audio (tick 'share audio')");
    tracks.push(shared.getAudioTracks()[0]);
  } else if (choice.startsWith("device:")) {
    const other = await navigator.mediaDevices.getUserMedia({audio: {deviceId: {exact: choice.slice(7)}}});
    tracks.push(other.getAudioTracks()[0]);
  }
  return tracks;
}

function watchEvents(callId) {
  // the server's view of the call: its status (why it ended) and the final transcript lines
  const ws = new WebSocket(`${proto}://${location.host}/v1/calls/${encodeURIComponent(callId)}/events?wait_s=30`, bearer);
  ws.onmessage = (m) => {
    const e = JSON.parse(m.data);
    if (e.type === "transcript" && e.is_final) {
      const line = document.createElement("div");
      line.className = "line " + e.speaker;
      line.innerHTML = `<b>${esc(e.speaker)}</b> ${esc(e.text)}`;
      $("heard").appendChild(line);
    } else if (e.type === "status" && e.state !== "live" && e.state !== "degraded") {
      finish("ended", `ended: ${e.detail}`);
    }
  };
  return ws;
}

function iceGathered(pc, timeoutMs) {
  // no trickle: the offer carries its candidates (with STUN/TURN, what came in timeoutMs)
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, timeoutMs);
  });
}

async function startWebRtc(callId, tracks, speakers) {
  const config = await fetch("/v1/webrtc/config", {headers: {Authorization: `Bearer ${token}`}});
  const iceServers = config.ok ? (await config.json()).ice_servers : [];
  const pc = new RTCPeerConnection({iceServers});
  tracks.forEach((t) => pc.addTransceiver(t, {direction: "sendonly"}));
  pc.onconnectionstatechange = () => {
    const s = pc.connectionState;
    if (s === "connected") setState("connected", `connected (WebRTC, ${speakers.join(" + ")})`);
    else if (s === "failed") finish("failed", "failed: the WebRTC connection failed");
    else if (s !== "closed" && live) setState("connecting", `connection ${s}`);
  };
  await pc.setLocalDescription(await pc.createOffer());
  await iceGathered(pc, 5000);
  const body = {type: "offer", sdp: pc.localDescription.sdp, speakers};
  if ($("rep-id").value) body.rep_id = $("rep-id").value;
  const reply = await fetch(`/v1/calls/${encodeURIComponent(callId)}/webrtc`, {
    method: "POST", headers: {Authorization: `Bearer ${token}`, "Content-Type": "application/json"}, body: JSON.stringify(body)});
  const answer = await reply.json().catch(() => ({detail: reply.statusText}));
  if (!reply.ok) { pc.close(); throw Object.assign(new Error(answer.detail || reply.statusText), {status: reply.status}); }
  await pc.setRemoteDescription(answer);
  return {stop: () => pc.close()};
}

async function startSocket(callId, tracks, speakers) {
  let ctx;
  try { ctx = new AudioContext({sampleRate: 48000}); } catch (err) { ctx = new AudioContext(); }
  if (![8000, 16000, 48000].includes(ctx.sampleRate)) { ctx.close(); throw new Error(`this browser's audio runs at ${ctx.sampleRate} Hz; the WebSocket mode needs 8, 16 or 48 kHz`); }
  await ctx.resume();
  await ctx.audioWorklet.addModule("/softphone/pcm-worklet.js");
  const channels = tracks.length;
  const node = new AudioWorkletNode(ctx, "pcm16-sender", {channelCount: channels, channelCountMode: "explicit",
    channelInterpretation: channels > 1 ? "discrete" : "speakers", processorOptions: {channels}});
  const sources = tracks.map((t) => ctx.createMediaStreamSource(new MediaStream([t])));
  if (channels > 1) {
    const merger = ctx.createChannelMerger(channels);
    sources.forEach((s, i) => s.connect(merger, 0, i));
    merger.connect(node);
  } else sources[0].connect(node);
  const mute = ctx.createGain(); mute.gain.value = 0; node.connect(mute).connect(ctx.destination); // keeps it pulled
  const ws = new WebSocket(`${proto}://${location.host}/v1/calls/${encodeURIComponent(callId)}/audio`, bearer);
  ws.binaryType = "arraybuffer";
  const start = {type: "start", encoding: "pcm16", sample_rate_hz: ctx.sampleRate, channels, speakers};
  if ($("rep-id").value) start.rep_id = $("rep-id").value;
  ws.onopen = () => ws.send(JSON.stringify(start));
  ws.onmessage = (m) => {
    if (JSON.parse(m.data).type !== "started") return;
    setState("connected", `connected (WebSocket, ${speakers.join(" + ")}, ${ctx.sampleRate} Hz)`);
    node.port.onmessage = (e) => { if (ws.readyState === WebSocket.OPEN) ws.send(e.data); };
  };
  ws.onclose = (c) => { ctx.close(); if (c.code !== 1000) finish("refused", `closed ${c.code} ${c.reason}`); };
  return {stop: () => { node.port.onmessage = null; if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({type: "stop"})); }};
}

function finish(kind, text) {
  if (live) { live.stop(); live = null; }
  captured.forEach((t) => t.stop()); captured = [];
  setState(kind, text);
  $("start").disabled = false; $("hangup").disabled = true;
}

$("call").onsubmit = async (ev) => {
  ev.preventDefault();
  const callId = $("call-id").value;
  $("start").disabled = true; $("heard").innerHTML = "";
  setState("connecting", "asking for the microphone…");
  try {
    const tracks = captured = await captureSources();
    const speakers = ["rep", "customer"].slice(0, tracks.length);
    await listRemoteSources(); // labels are readable once the microphone is allowed
    setState("connecting", "connecting…");
    let mode = $("mode").value;
    const starter = mode === "webrtc" ? startWebRtc : startSocket;
    live = await starter(callId, tracks, speakers).catch(async (err) => {
      if (mode !== "webrtc" || err.status !== 404) throw err;
      mode = "ws"; // a server without the WebRTC route: the socket does the same job
      return startSocket(callId, tracks, speakers);
    });
    $("rep-page").href = `/#token=${encodeURIComponent(token)}&call=${encodeURIComponent(callId)}`;
    $("rep-page").hidden = false;
    $("hangup").disabled = false;
    watchEvents(callId);
  } catch (err) {
    finish(err.status ? "refused" : "failed", (err.status ? `refused (${err.status}): ` : "failed: ") + err.message);
  }
};
$("hangup").onclick = () => finish("ended", "ended: hung up");
if (navigator.mediaDevices) listRemoteSources().catch(() => {});
else setState("failed", "failed: this page needs https (or localhost) for the microphone");
