"""A WebRTC softphone in Python (aiortc): one audio track per channel of a WAV, offered over
Cuecard's HTTP signalling (``POST /v1/calls/{call_id}/webrtc``).

``send_call`` plays each channel in real time (20 ms Opus frames: WebRTC has no faster than
real time), channel 0 named ``speakers[0]`` and so on, then closes the peer connection, which
ends the call on the server. ``connect`` does the offer and answer alone, for callers with
tracks of their own (the tests' silent track). No ICE servers: aiortc's default would ask a
public STUN server; loopback and a LAN need none.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import av
import httpx
import numpy as np
import numpy.typing as npt
import soxr
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

CONNECT_TIMEOUT_S = 30.0  # ICE and DTLS after the answer; loopback takes well under a second
RATE_HZ = 48_000
FRAME_SAMPLES = RATE_HZ // 50  # 20 ms
TIME_BASE = fractions.Fraction(1, RATE_HZ)


class SignallingRefused(Exception):
    """The server answered the offer with an error; ``status`` and ``detail`` say why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class WebRtcOptions:
    server: str = "http://127.0.0.1:8000"  # http(s)://; ws(s):// is read as http(s)://
    token: str = ""
    call_id: str = "webrtc-call"
    speakers: tuple[str, ...] = ("rep", "customer")  # one per track, in m-line order
    rep_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # more offer fields (prior, vocabulary)

    @property
    def http_base(self) -> str:
        base = self.server.rstrip("/")
        for ws, http in (("ws://", "http://"), ("wss://", "https://")):
            if base.startswith(ws):
                return http + base[len(ws) :]
        return base


class ArrayTrack(MediaStreamTrack):
    """Mono 16-bit samples at 48 kHz as a real-time audio track; silence once they are
    played (``played`` is set then), so the connection stays up until it is closed."""

    kind = "audio"

    def __init__(self, samples: npt.NDArray[np.int16]) -> None:
        super().__init__()
        self._samples = samples
        self._sent = 0
        self._t0: float | None = None
        self.played = asyncio.Event()

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._t0 is None:
            self._t0 = loop.time()
        wait_s = self._t0 + self._sent / RATE_HZ - loop.time()
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        chunk = self._samples[self._sent : self._sent + FRAME_SAMPLES]
        if len(chunk) < FRAME_SAMPLES:
            self.played.set()
            chunk = np.concatenate([chunk, np.zeros(FRAME_SAMPLES - len(chunk), np.int16)])
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE_HZ
        frame.pts = self._sent
        frame.time_base = TIME_BASE
        self._sent += FRAME_SAMPLES
        return frame


def channel_tracks(audio: npt.NDArray[np.int16], rate: int) -> list[ArrayTrack]:
    """One track per channel of ``audio`` (frames x channels), resampled to 48 kHz."""
    tracks = []
    for ch in range(audio.shape[1]):
        x = audio[:, ch].astype(np.float32) / 32768.0
        y = soxr.resample(x, rate, RATE_HZ) if rate != RATE_HZ else x
        tracks.append(ArrayTrack(np.clip(y * 32768.0, -32768, 32767).astype(np.int16)))
    return tracks


async def connect(tracks: Sequence[MediaStreamTrack], options: WebRtcOptions) -> RTCPeerConnection:
    """A peer connection sending ``tracks``, answered by the server; the caller closes it.
    ``SignallingRefused`` when the server refuses the offer (the connection is closed then)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        for track in tracks:
            pc.addTransceiver(track, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        answer = await post_offer(pc.localDescription.sdp, options)
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    except BaseException:
        await pc.close()
        raise
    return pc


async def connected(pc: RTCPeerConnection, timeout_s: float) -> None:
    """Wait until ``pc`` is connected; ``ConnectionError`` if it fails, closes or takes
    longer than ``timeout_s``."""
    changed = asyncio.Event()
    pc.on("connectionstatechange", changed.set)
    try:
        async with asyncio.timeout(timeout_s):
            while pc.connectionState not in ("connected", "failed", "closed"):
                changed.clear()
                await changed.wait()
    except TimeoutError:
        raise ConnectionError(
            f"peer connection still {pc.connectionState} after {timeout_s:g} s"
        ) from None
    if pc.connectionState != "connected":
        raise ConnectionError(f"peer connection {pc.connectionState}")


async def post_offer(sdp: str, options: WebRtcOptions) -> str:
    """POST the offer; the answer's SDP, or ``SignallingRefused``."""
    body = {"type": "offer", "sdp": sdp, "speakers": list(options.speakers), **options.extra}
    if options.rep_id is not None:
        body["rep_id"] = options.rep_id
    url = f"{options.http_base}/v1/calls/{quote(options.call_id, safe='')}/webrtc"
    headers = {"Authorization": f"Bearer {options.token}"}
    async with httpx.AsyncClient(timeout=30.0) as client:
        reply = await client.post(url, json=body, headers=headers)
    if reply.status_code != 200:
        try:
            detail = str(reply.json().get("detail"))
        except ValueError:
            detail = reply.text
        raise SignallingRefused(reply.status_code, detail)
    answer = reply.json()
    if answer.get("type") != "answer" or not isinstance(answer.get("sdp"), str):
        raise SignallingRefused(reply.status_code, f"not an answer: {answer!r}")
    return str(answer["sdp"])


async def send_call(audio: npt.NDArray[np.int16], rate: int, options: WebRtcOptions) -> None:
    """Play every channel of ``audio`` as a track of its own, in real time, then hang up."""
    if audio.shape[1] != len(options.speakers):
        raise ValueError(f"{audio.shape[1]} channel(s) but speakers {options.speakers}")
    tracks = channel_tracks(audio, rate)
    pc = await connect(tracks, options)
    try:
        await connected(pc, CONNECT_TIMEOUT_S)
        await asyncio.gather(*(t.played.wait() for t in tracks))
    finally:
        with contextlib.suppress(Exception):
            await pc.close()
