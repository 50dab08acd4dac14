"""A call streamed in real time into a real server, and viewers watching it from any instance:
what the shutdown tests (SIGTERM drain, SIGKILL) drive and observe. Every event a viewer gets
is kept with the monotonic time it arrived, and each socket's close code and reason."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

from clients.localserver import ServerProcess
from clients.simulator import FRAME_MS, load_wav

Event = dict[str, Any]


@dataclass
class Closed:
    """How a socket ended: the close frame the server sent (1006: none)."""

    code: int | None = None
    reason: str = ""


@dataclass
class Viewer:
    """An events socket: what it got (``at``: monotonic arrival) and how it closed."""

    events: list[Event] = field(default_factory=list)
    closed: Closed | None = None
    task: asyncio.Task[None] | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, match: Callable[[Event], bool], timeout_s: float) -> Event:
        """The first event so far or to come that ``match``es (a hang guard, not a latency)."""

        async def first() -> Event:
            while True:
                for e in self.events:
                    if match(e):
                        return e
                if self.closed is not None:
                    raise AssertionError(f"viewer closed {self.closed} before the event came")
                self._arrived.clear()
                await self._arrived.wait()

        return await asyncio.wait_for(first(), timeout_s)

    async def ended(self, timeout_s: float) -> Closed:
        assert self.task is not None
        await asyncio.wait_for(asyncio.shield(self.task), timeout_s)
        assert self.closed is not None
        return self.closed

    def finals(self) -> list[Event]:
        return [e for e in self.events if e["type"] == "transcript" and e["is_final"]]


async def watch(server: ServerProcess, call_id: str) -> Viewer:
    """A viewer of ``call_id`` on ``server``, connected before the call starts."""
    url = f"{server.ws}/v1/calls/{call_id}/events?wait_s=120"
    ws = await websockets.connect(url, max_size=None, additional_headers=server.auth)
    viewer = Viewer()

    async def listen() -> None:
        try:
            async for raw in ws:
                viewer.events.append({**json.loads(raw), "at": time.monotonic()})
                viewer._arrived.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            viewer.closed = _closed(ws)
            viewer._arrived.set()
            await ws.close()

    viewer.task = asyncio.create_task(listen())
    return viewer


async def stop_watching(*viewers: Viewer) -> None:
    for v in viewers:
        if v.task is not None:
            v.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await v.task


async def stream(server: ServerProcess, call_id: str, wav: Path, speed: float = 1.0) -> Closed:
    """Stream ``wav`` (stereo: rep, customer) over the native socket at ``speed`` x real time
    until it is sent (then ``stop``) or the server closes the socket; how it closed."""
    audio, rate = load_wav(wav)
    start = {"type": "start", "encoding": "pcm16", "sample_rate_hz": rate,
             "channels": audio.shape[1], "speakers": ["rep", "customer"][: audio.shape[1]]}  # fmt: skip
    url = f"{server.ws}/v1/calls/{call_id}/audio"
    step = rate * FRAME_MS // 1000
    async with websockets.connect(url, additional_headers=server.auth) as ws:
        try:
            await ws.send(json.dumps(start))
            assert json.loads(await ws.recv())["type"] == "started"
            t0 = time.monotonic()
            for i in range(0, len(audio), step):
                await asyncio.sleep(max(0.0, t0 + i / rate / speed - time.monotonic()))
                await ws.send(audio[i : i + step].astype("<i2").tobytes())
            await ws.send(json.dumps({"type": "stop"}))
            await ws.wait_closed()
        except websockets.ConnectionClosed:
            pass
        return _closed(ws)


async def refused(server: ServerProcess, call_id: str) -> Closed:
    """Open a native audio socket and send a start: how the server closed it."""
    url = f"{server.ws}/v1/calls/{call_id}/audio"
    start = {"type": "start", "encoding": "pcm16", "sample_rate_hz": 16000, "channels": 1,
             "speakers": ["customer"]}  # fmt: skip
    async with websockets.connect(url, additional_headers=server.auth) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(json.dumps(start))
            reply = await asyncio.wait_for(ws.recv(), 30)
            raise AssertionError(f"the server took the call: {reply!r}")
        return _closed(ws)


def _closed(ws: websockets.ClientConnection) -> Closed:
    rcvd = ws.protocol.close_rcvd
    return Closed(rcvd.code, rcvd.reason) if rcvd is not None else Closed(1006)
