"""The call simulator: streams a WAV into a running server as a softphone would.

Audio goes out in 20 ms frames at ``speed`` times real time, over the native protocol
(PCM16 at the file's rate) or, with ``twilio=True``, as Twilio Media Streams (mu-law 8 kHz,
one ``media`` message per track per 20 ms), with ``audiohook=True`` as Genesys AudioHook
(``clients.audiohook``: stereo PCMU 8 kHz, external = customer), with ``vonage=True`` as
Vonage WebSockets (the call mixed to one 16-bit channel, labelled ``speaker``), with
``webrtc=True`` as a WebRTC softphone (``clients.webrtc``: one Opus track per channel, always
in real time). A stereo file is channel 0 = rep, 1 = customer.
Meanwhile it listens on the call's events socket and hands every event, with ``received_s``
(seconds since the first audio frame was sent, on this process's monotonic clock), to
``on_event``. A paced replay (``speed`` > 0) also stamps each ``card`` with ``latency_s``:
``received_s - audio_end_s / speed``, REFERENCE.md's card latency (for a customer card, the
wall time from the end of the triggering utterance to the card reaching this socket).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import websockets

from audio.codec import mulaw_encode

FRAME_MS = 20
OnEvent = Callable[[dict[str, Any]], None]


def bearer(token: str) -> dict[str, str]:
    """The ``Authorization`` header for ``token`` (none for an empty one). The server takes
    ``?token=`` only from viewer tokens, so the reference clients always send the header."""
    return {"Authorization": f"Bearer {token}"} if token else {}


@dataclass(frozen=True, slots=True)
class SimOptions:
    server: str = "ws://127.0.0.1:8000"
    token: str = ""
    speed: float = 1.0  # 0 sends as fast as the socket takes it
    twilio: bool = False
    call_id: str = field(default_factory=lambda: f"sim-{uuid.uuid4().hex[:12]}")
    rep_id: str = "simulator"
    prior: dict[str, Any] = field(default_factory=dict)
    end_timeout_s: float = 30.0
    audiohook: bool = False  # Genesys AudioHook (call_id must be a UUID: the conversationId)
    vonage: bool = False  # Vonage WebSockets: one channel, the call mixed to mono
    api_key: str = ""  # AudioHook: the API key and its client secret (empty: ?token=)
    client_secret: bytes = b""
    speaker: str = "unknown"  # Vonage: who is on its one channel
    webrtc: bool = False  # WebRTC (aiortc): a track per channel, real time whatever ``speed``
    # Twilio with CUECARD_TWILIO_AUTH_TOKEN: the upgrade is signed over a fresh
    # ``public_url/v1/twilio?nonce=…&ts=…`` (as Twilio signs the TwiML's <Stream url>)
    twilio_auth_token: str = ""
    public_url: str = ""

    def __post_init__(self) -> None:
        if self.speed < 0:
            raise ValueError("speed must be >= 0")


@dataclass
class SimResult:
    call_id: str
    events: list[dict[str, Any]]
    audio_s: float
    close_code: int | None = None
    close_reason: str = ""


def load_wav(path: Path) -> tuple[np.ndarray, int]:
    """int16 frames (n, channels) and the sample rate."""
    audio, rate = sf.read(str(path), dtype="int16", always_2d=True)
    if audio.shape[1] > 2:
        raise ValueError(f"{path}: {audio.shape[1]} channels; expected mono or stereo")
    return audio, int(rate)


async def simulate(path: Path, options: SimOptions, on_event: OnEvent | None = None) -> SimResult:
    audio, rate = load_wav(path)
    result = SimResult(options.call_id, [], len(audio) / rate)
    t0: list[float] = []
    events_url = f"{options.server}/v1/calls/{options.call_id}/events"
    headers = bearer(options.token)
    async with websockets.connect(
        events_url, max_size=None, additional_headers=headers
    ) as events_ws:

        async def listen() -> None:
            # A close that is not 1000 (e.g. 1012 when the server shuts down) ends the
            # listening too: its code and reason are in the result.
            with contextlib.suppress(websockets.ConnectionClosedError):
                async for raw in events_ws:
                    event = json.loads(raw)
                    event["received_s"] = round(time.monotonic() - t0[0], 4) if t0 else 0.0
                    _stamp_latency(event, options.speed)
                    result.events.append(event)
                    if on_event is not None:
                        on_event(event)

        listener = asyncio.create_task(listen())
        try:
            if options.twilio:
                await _send_twilio(audio, rate, options, t0)
            elif options.audiohook:
                await _send_audiohook(audio, rate, options, t0)
            elif options.vonage:
                await _send_vonage(audio, rate, options, t0)
            elif options.webrtc:
                await _send_webrtc(audio, rate, options, t0)
            else:
                await _send_native(audio, rate, options, t0)
            async with asyncio.timeout(options.end_timeout_s):
                await listener
        except TimeoutError:
            pass
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        result.close_code = events_ws.close_code
        result.close_reason = events_ws.close_reason or ""
    return result


def _stamp_latency(event: dict[str, Any], speed: float) -> None:
    audio_end_s = event.get("audio_end_s")
    if event.get("type") == "card" and speed > 0 and isinstance(audio_end_s, int | float):
        event["latency_s"] = round(event["received_s"] - audio_end_s / speed, 4)


async def _pace(t0: list[float], sent_s: float, speed: float) -> None:
    if not t0:
        t0.append(time.monotonic())
    if speed > 0:
        delay = t0[0] + sent_s / speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


async def _send_native(audio: np.ndarray, rate: int, options: SimOptions, t0: list[float]) -> None:
    speakers = ["rep", "customer"] if audio.shape[1] == 2 else ["customer"]
    start = {
        "type": "start",
        "encoding": "pcm16",
        "sample_rate_hz": rate,
        "channels": audio.shape[1],
        "speakers": speakers,
        "rep_id": options.rep_id,
        "prior": options.prior,
    }
    url = f"{options.server}/v1/calls/{options.call_id}/audio"
    async with websockets.connect(url, additional_headers=bearer(options.token)) as ws:
        await ws.send(json.dumps(start))
        reply = json.loads(await ws.recv())
        if reply.get("type") != "started":
            raise RuntimeError(f"server refused the stream: {reply}")
        step = rate * FRAME_MS // 1000
        for i in range(0, len(audio), step):
            await _pace(t0, i / rate, options.speed)
            await ws.send(audio[i : i + step].astype("<i2").tobytes())
        await ws.send(json.dumps({"type": "stop"}))
        await ws.wait_closed()


async def _send_twilio(audio: np.ndarray, rate: int, options: SimOptions, t0: list[float]) -> None:
    pcm = audio.astype(np.float32) / 32768.0
    tracks = {"outbound": pcm[:, 0], "inbound": pcm[:, 1] if pcm.shape[1] == 2 else None}
    mulaw = {
        name: mulaw_encode(soxr.resample(x, rate, 8000).astype(np.float32))
        for name, x in tracks.items()
        if x is not None
    }
    stream_sid = "MZ" + uuid.uuid4().hex
    url, headers = f"{options.server}/v1/twilio", {}
    if options.twilio_auth_token:
        from server.auth import twilio_signature, twilio_stream_url

        signed = twilio_stream_url(options.public_url or options.server, time.time())
        url += signed[signed.index("?") :]
        headers = {"X-Twilio-Signature": twilio_signature(options.twilio_auth_token, signed)}
    async with websockets.connect(url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        start = {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": stream_sid,
            "start": {
                "accountSid": "AC" + "0" * 32,
                "streamSid": stream_sid,
                "callSid": "CA" + uuid.uuid4().hex,
                "tracks": list(mulaw),
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {
                    "rep_track": "outbound",
                    "call_id": options.call_id,
                    "rep_id": options.rep_id,
                    "token": options.token,
                },
            },
        }
        await ws.send(json.dumps(start))
        seq = 2
        n = max(len(v) for v in mulaw.values())
        for i in range(0, n, 160):
            await _pace(t0, i / 8000, options.speed)
            for track, data in mulaw.items():
                msg = {
                    "event": "media",
                    "sequenceNumber": str(seq),
                    "streamSid": stream_sid,
                    "media": {
                        "track": track,
                        "chunk": str(i // 160 + 1),
                        "timestamp": str(i // 8),
                        "payload": base64.b64encode(data[i : i + 160]).decode(),
                    },
                }
                seq += 1
                await ws.send(json.dumps(msg))
        await ws.send(
            json.dumps({"event": "stop", "sequenceNumber": str(seq), "streamSid": stream_sid})
        )
        await ws.wait_closed()


async def _send_audiohook(
    audio: np.ndarray, rate: int, options: SimOptions, t0: list[float]
) -> None:
    from clients.audiohook import AudioHookOptions, replay

    ah = AudioHookOptions(
        server=options.server,
        conversation_id=options.call_id,
        api_key=options.api_key,
        client_secret=options.client_secret,
        token=options.token,
        speed=options.speed,
    )
    t0.append(time.monotonic())
    await replay(audio if audio.shape[1] == 2 else np.repeat(audio, 2, axis=1), rate, ah)


async def _send_vonage(audio: np.ndarray, rate: int, options: SimOptions, t0: list[float]) -> None:
    """The call mixed to one channel at 16 kHz (8 kHz for an 8 kHz file), 20 ms per frame."""
    out_rate = 8000 if rate == 8000 else 16000
    mono = audio.astype(np.float32).mean(axis=1) / 32768.0
    pcm = np.clip(soxr.resample(mono, rate, out_rate) * 32768.0, -32768, 32767).astype("<i2")
    first = {
        "event": "websocket:connected",
        "content-type": f"audio/l16;rate={out_rate}",
        "call_id": options.call_id,
        "speaker": options.speaker,
        "rep_id": options.rep_id,
    }
    first["token"] = options.token  # the NCCO's headers, in Vonage's first message
    async with websockets.connect(f"{options.server}/v1/vonage") as ws:
        await ws.send(json.dumps(first))
        step = out_rate * FRAME_MS // 1000
        for i in range(0, len(pcm), step):
            await _pace(t0, i / out_rate, options.speed)
            await ws.send(pcm[i : i + step].tobytes())
        await ws.close()


async def _send_webrtc(audio: np.ndarray, rate: int, options: SimOptions, t0: list[float]) -> None:
    from clients.webrtc import WebRtcOptions, send_call  # aiortc is loaded only for this mode

    speakers = ("rep", "customer") if audio.shape[1] == 2 else ("customer",)
    rtc = WebRtcOptions(
        server=options.server,
        token=options.token,
        call_id=options.call_id,
        speakers=speakers,
        rep_id=options.rep_id,
        extra={"prior": options.prior} if options.prior else {},
    )
    t0.append(time.monotonic())
    await send_call(audio, rate, rtc)


def format_event(event: dict[str, Any]) -> str:
    """One line a person can read."""
    kind = event.get("type")
    at = f"{event.get('received_s', 0):7.2f}s"
    if kind == "transcript":
        mark = "FINAL  " if event.get("is_final") else "partial"
        return f"{at} {mark} {event['speaker']:<8} [{event['start_s']:6.2f}-{event['end_s']:6.2f}] {event['text']}"
    if kind == "insight":
        return f"{at} insight {event['speaker']:<8} {event['label']} ({event['confidence']:.2f}) sentiment {event['sentiment']:+.2f}"
    if kind == "card":
        latency = f" (latency {event['latency_s']:.2f} s)" if "latency_s" in event else ""
        return f"{at} CARD    {event.get('state', '')} {event.get('kind', '')}: {event.get('title', '')}{latency}"
    if kind == "score":
        return f"{at} SCORE   {event.get('score')} ({event.get('delta', 0):+}) {'; '.join(map(str, event.get('reasons', [])))}"
    if kind == "status":
        return f"{at} status  {event.get('state')}: {event.get('detail')}"
    if kind == "summary":
        return f"{at} SUMMARY {json.dumps(event)[:400]}"
    return f"{at} {kind} {json.dumps(event)[:200]}"
