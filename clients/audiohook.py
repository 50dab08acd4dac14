"""A reference Genesys AudioHook (Monitor, protocol version 2) client: what Genesys Cloud does
when it streams a call to ``/v1/audiohook``, and the ways it can go wrong.

``connect`` opens the socket with the upgrade headers Genesys sends (``Audiohook-*``,
``X-API-KEY``) and, given a client secret, the HTTP message signature over them (``bad_signature``
signs with the wrong secret). ``AudioHookClient`` keeps ``seq``/``serverseq`` and the media
position, checks that the server's ``seq`` counts up and that every reply names the session,
and sends the protocol's messages: ``open``, ``ping``, ``update``, ``paused``/``resumed``,
``discarded``, ``error``, ``close``, audio frames, and (``send_raw``) anything at all.
``replay`` streams a stereo call (channel 0 = rep, 1 = customer) as Genesys would, in the
order of the offered ``channels`` (``external`` = customer, ``internal`` = agent), with an
optional pause, and closes (or, with ``drop_at_s``, hangs up without a close).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np
import soxr
import websockets
from websockets.asyncio.client import ClientConnection

from audio.codec import mulaw_encode
from server.audiohook import PROBE_ID, format_duration
from server.audiohook_auth import sign

RATE_HZ = 8000
FRAME_MS = 20
Channel = Literal["external", "internal"]
Format = Literal["PCMU", "L16"]


@dataclass(frozen=True, slots=True)
class AudioHookOptions:
    server: str = "ws://127.0.0.1:8000"
    conversation_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    organization_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    api_key: str = ""
    client_secret: bytes = b""  # empty: unsigned, with ``token`` as Authorization: Bearer
    token: str = ""
    bad_signature: bool = False
    channels: tuple[Channel, ...] = ("external", "internal")
    format: Format = "PCMU"
    speed: float = 1.0  # 0: as fast as the socket takes it
    pause_at_s: float | None = None  # replay: send 'paused' here ...
    pause_s: float = 0.0  # ... and 'resumed' after this much media time, sent as no audio
    drop_at_s: float | None = None  # replay: hang up here without a close transaction

    @property
    def probe(self) -> bool:
        return self.conversation_id == PROBE_ID


def media_entry(channels: Sequence[Channel], fmt: Format = "PCMU") -> dict[str, Any]:
    return {"type": "audio", "format": fmt, "channels": list(channels), "rate": RATE_HZ}


def upgrade_headers(options: AudioHookOptions, path: str, authority: str) -> dict[str, str]:
    headers = {
        "Audiohook-Organization-Id": options.organization_id,
        "Audiohook-Session-Id": options.session_id,
        "Audiohook-Correlation-Id": str(uuid.uuid4()),
        "X-API-KEY": options.api_key,
    }
    if not options.client_secret and options.token:
        headers["Authorization"] = f"Bearer {options.token}"
    if options.client_secret:
        values = {
            "@request-target": path,
            "@authority": authority,
            **{k.lower(): v for k, v in headers.items()},
        }
        secret = (
            b"wrong" + options.client_secret if options.bad_signature else options.client_secret
        )
        nonce = secrets.token_urlsafe(18)
        headers.update(sign(values, options.api_key, secret, int(time.time()), nonce))
    return headers


async def connect(options: AudioHookOptions) -> AudioHookClient:
    path = "/v1/audiohook"
    url = options.server.rstrip("/") + path
    headers = upgrade_headers(options, path, urlsplit(url).netloc)
    ws = await websockets.connect(url, additional_headers=headers, max_size=None)
    return AudioHookClient(ws, options.session_id)


class AudioHookClient:
    def __init__(self, ws: ClientConnection, session_id: str) -> None:
        self.ws = ws
        self.session_id = session_id
        self.seq = 0
        self.serverseq = 0
        self.frames = 0  # media position in 8 kHz sample frames
        self.received: list[dict[str, Any]] = []

    @property
    def position(self) -> str:
        return format_duration(self.frames / RATE_HZ)

    async def send(self, kind: str, parameters: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        msg = {
            "version": "2",
            "id": self.session_id,
            "type": kind,
            "seq": self.seq,
            "serverseq": self.serverseq,
            "position": self.position,
            "parameters": parameters,
        }
        await self.ws.send(json.dumps(msg))
        return msg

    async def send_raw(self, text: str) -> None:
        await self.ws.send(text)

    async def recv(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """The server's next message; its ``seq`` must be the next one."""
        async with asyncio.timeout(timeout_s):
            raw = await self.ws.recv()
        msg = json.loads(raw)
        # before it has read our first message the server knows no session id: all zeros
        ids = (self.session_id, PROBE_ID) if msg.get("type") == "disconnect" else (self.session_id,)
        if msg.get("seq") != self.serverseq + 1 or msg.get("id") not in ids:
            raise AssertionError(f"server message out of order or for another session: {msg}")
        self.serverseq = msg["seq"]
        self.received.append(msg)
        return msg

    async def expect(self, kind: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """Messages until one of ``kind`` (a ``disconnect`` when another is expected fails)."""
        while True:
            msg = await self.recv(timeout_s)
            if msg["type"] == kind:
                return msg
            if msg["type"] == "disconnect":
                raise AssertionError(f"disconnected: {msg['parameters']}")

    async def open(
        self,
        conversation_id: str,
        organization_id: str,
        media: list[dict[str, Any]],
        **extra: Any,
    ) -> dict[str, Any]:
        participant = {"id": str(uuid.uuid4()), "ani": "+15555550100", "aniName": "", "dnis": ""}
        params = {
            "organizationId": organization_id,
            "conversationId": conversation_id,
            "participant": participant,
            "media": media,
            "language": "en-US",
            **extra,
        }
        await self.send("open", params)
        return await self.expect("opened")

    async def audio(self, data: bytes, frames: int) -> None:
        await self.ws.send(data)
        self.frames += frames

    async def close(self, reason: str = "end") -> dict[str, Any]:
        await self.send("close", {"reason": reason})
        closed = await self.expect("closed")
        await self.ws.close()
        return closed

    async def closed_by_server(self) -> tuple[int | None, str]:
        """Wait for the server to hang up; its close code and reason."""
        try:
            while True:
                async with asyncio.timeout(30.0):
                    await self.ws.recv()
        except websockets.ConnectionClosed:
            pass
        return self.ws.close_code, self.ws.close_reason or ""


def encode_call(stereo: np.ndarray, rate: int, channels: Sequence[Channel], fmt: Format) -> bytes:
    """int16 (n, 2) rep/customer audio -> 8 kHz interleaved bytes in ``channels`` order."""
    pcm = stereo.astype(np.float32) / 32768.0
    sides = {"internal": pcm[:, 0], "external": pcm[:, 1] if pcm.shape[1] > 1 else pcm[:, 0]}
    tracks = [soxr.resample(sides[c], rate, RATE_HZ).astype(np.float32) for c in channels]
    n = min(len(t) for t in tracks)
    if fmt == "PCMU":
        columns = [np.frombuffer(mulaw_encode(t[:n]), np.uint8) for t in tracks]
        return np.stack(columns, 1).reshape(-1).tobytes()
    ints = np.stack([np.clip(t[:n] * 32768.0, -32768, 32767) for t in tracks], 1)
    return ints.astype("<i2").reshape(-1).tobytes()


async def replay(stereo: np.ndarray, rate: int, options: AudioHookOptions) -> AudioHookClient:
    """Stream a call over AudioHook as Genesys does: open, audio in 20 ms frames (with the
    optional pause), close. Returns the client (``received``: what the server sent)."""
    client = await connect(options)
    offered = [media_entry(options.channels, options.format)]
    offered += [media_entry([c], options.format) for c in options.channels if len(offered) < 3]
    opened = await client.open(options.conversation_id, options.organization_id, offered)
    chosen = opened["parameters"]["media"][0]
    data = encode_call(stereo, rate, chosen["channels"], chosen["format"])
    width = len(chosen["channels"]) * (1 if chosen["format"] == "PCMU" else 2)
    step = RATE_HZ * FRAME_MS // 1000
    t0 = time.monotonic()
    paused = False
    for i in range(0, len(data) // width, step):
        at_s = client.frames / RATE_HZ
        if options.drop_at_s is not None and at_s >= options.drop_at_s:
            await client.ws.close()
            return client
        if options.pause_at_s is not None and not paused and at_s >= options.pause_at_s:
            paused = True
            await _pause(client, options.pause_s)
        if options.speed > 0:
            await asyncio.sleep(max(0.0, t0 + at_s / options.speed - time.monotonic()))
        frame = data[i * width : (i + step) * width]
        await client.audio(frame, len(frame) // width)
    await client.close()
    return client


async def _pause(client: AudioHookClient, pause_s: float) -> None:
    """``paused``, ``pause_s`` of media time without audio, ``resumed`` saying so."""
    start = client.position
    await client.send("paused", {})
    client.frames += int(pause_s * RATE_HZ)
    await client.send("resumed", {"start": start, "discarded": format_duration(pause_s)})
