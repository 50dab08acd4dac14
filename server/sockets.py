"""The I/O side every audio socket loop shares: reading through the socket's limits, how a
close without a stop message ends a call, and the one way a socket is closed.

- ``AudioSocket``: what one audio socket has opened so far (its call, if any) and its limits
  (``server.limits.InputGuard``), so that one error path can end the call, and the server's
  ``stop`` (done once the shutdown drain begins).
- ``next_message``: the next ASGI message, counted against the limits; ``TimedOut`` when the
  peer stays silent; ``ShuttingDown`` once ``stop`` is done (the drain: the call ends
  ``server_shutdown``, the socket closes 1001; a socket with no call yet is refused, 1013).
- ``dropped(msg)``: the end state and detail of a call whose socket closed without a stop.
- ``close_socket``: close with a code and a reason cut to the 123 bytes a close frame holds,
  unless the socket is gone. Every close of ours goes through it.
- ``WebSocketProtocol``: uvicorn's ``websockets-sansio`` protocol (``cuecard serve`` runs it),
  except that a text frame of invalid UTF-8 is closed with 1007 and a reason rather than a
  logged traceback and no reason; an upgrade head websockets refuses (a line over 8 kB: 414,
  431) is answered and closed rather than left hanging (uvicorn never wrote that answer); and
  a peer that stops reading cannot hold its connection: a close frame is queued even when the
  write buffer is full, and a connection whose close (ours, or the keepalive's) is not
  acknowledged within uvicorn's ``close_timeout`` is aborted, where uvicorn's
  ``transport.close()`` waited for a full buffer to drain, i.e. for ever. It overrides methods
  of uvicorn's class (not a public API): ``tests/test_hostile_input.py`` and
  ``tests/test_edge.py`` fail if an upgrade changes what they rely on.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from fastapi import WebSocket, WebSocketDisconnect
from starlette.types import Message
from starlette.websockets import WebSocketState
from uvicorn._types import ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from audio.chunk import SAMPLE_RATE_HZ, AudioChunk
from server.ingest import (
    INVALID_PAYLOAD,
    POLICY_VIOLATION,
    TRY_AGAIN_LATER,
    ProtocolError,
    TimedOut,
    close_reason,
)
from server.limits import InputGuard
from server.session import CallSession
from server.wire import EndState

GOING_AWAY = 1001
SHUTTING_DOWN = "server shutting down"


class ShuttingDown(ProtocolError):
    """The server is draining (SIGTERM): the socket's call ends ``server_shutdown`` and the
    socket closes with 1001 "going away"; a socket with no call yet gets 1013 (try again:
    another instance)."""

    end_state = "server_shutdown"


@dataclass(slots=True)
class AudioSocket:
    """What an audio socket has opened so far, so that one error path can end it; ``stop``
    is the server's drain signal (``Runtime.stopping``)."""

    label: str
    guard: InputGuard
    session: CallSession | None = None
    stop: asyncio.Future[None] | None = None


async def next_message(ws: WebSocket, call: AudioSocket, timeout_s: float, silent: str) -> Message:
    """The socket's next message, checked against its limits (``LimitExceeded``);
    ``TimedOut(1008, silent)`` when none comes within ``timeout_s``; ``ShuttingDown`` when
    ``call.stop`` is done first (a message already received is still returned first)."""
    receiving = asyncio.ensure_future(ws.receive())
    waits: set[asyncio.Future[Message] | asyncio.Future[None]] = {receiving}
    if call.stop is not None:
        waits.add(call.stop)
    try:
        await asyncio.wait(waits, timeout=max(0.0, timeout_s), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not receiving.done():
            receiving.cancel()
    if not receiving.done() or receiving.cancelled():
        if call.stop is not None and call.stop.done():
            if call.session is None:
                raise ShuttingDown(TRY_AGAIN_LATER, SHUTTING_DOWN)
            raise ShuttingDown(GOING_AWAY, f"going away: {SHUTTING_DOWN}")
        raise TimedOut(POLICY_VIOLATION, silent)
    msg = receiving.result()
    if msg["type"] == "websocket.receive":
        text = msg.get("text")
        call.guard.message(None if text is None else len(text.encode()), now_s())
    return msg


async def receive(ws: WebSocket, timeout_s: float) -> Message | None:
    """The next message, or None when the peer has been silent for ``timeout_s``."""
    try:  # asyncio.timeout: 3.11's wait_for drops a cancel that meets a message
        async with asyncio.timeout(timeout_s):
            return await ws.receive()
    except TimeoutError:
        return None


def dropped(msg: Message, closed: str = "audio socket closed") -> tuple[EndState, str]:
    """How a call ends when its socket closes without a stop message: a normal close (1000,
    1001) ends it; 1009 (a frame over the server's WebSocket size limit) is a limit; anything
    else, a connection lost without a close frame included (1005, 1006), interrupts it."""
    code = msg.get("code", 1005)
    if code in (1000, 1001):
        return "ended", closed
    if code == 1009:
        return "limit_exceeded", "a frame over the WebSocket size limit"
    if code in (1005, 1006):
        return "interrupted", "connection lost without a close frame"
    return "interrupted", close_reason(msg.get("reason") or f"{closed} with code {code}")


def audio_seconds(chunks: list[AudioChunk], channels: int) -> float:
    """Seconds of the source's audio in ``chunks`` (16 kHz, ``channels`` side by side)."""
    return sum(len(c.samples) for c in chunks) / (SAMPLE_RATE_HZ * channels)


def now_s() -> float:
    """Monotonic seconds for the rate limits (the socket loops are the I/O side)."""
    return asyncio.get_running_loop().time()


async def close_socket(ws: WebSocket, code: int, reason: str) -> None:
    """Close with ``code`` and ``reason`` (cut to 123 bytes) unless the socket is gone."""
    if ws.application_state != WebSocketState.DISCONNECTED:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
            await ws.close(code, close_reason(reason))


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol; a text message of invalid UTF-8 closes the
    socket with 1007 "text frame is not valid UTF-8" (the app sees that disconnect); a refused
    upgrade head is answered; a peer that does not read is cut off (the module docstring)."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.handshake_initiated and self.conn.handshake_exc is not None:
            # websockets queued its 414/431 answer; uvicorn only writes it for a Request event
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.handshake_complete = self.close_sent = True
            self.transport.close()

    async def send(self, message: ASGISendEvent) -> None:
        if message["type"] == "websocket.close":
            # uvicorn waits for the write buffer to drain before any send; a close must not
            # wait for a peer that stopped reading (the frame queues behind what it has not read)
            self.writable.set()
            await super().send(message)
            self._abort_unless_closed()
        else:
            await super().send(message)

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        self._abort_unless_closed()

    def _abort_unless_closed(self) -> None:
        """A close of ours not completed within ``close_timeout`` aborts the connection: a
        peer that reads nothing would otherwise keep it (and its buffers) for good."""
        if self.close_sent and not self.disconnected:
            if self.close_timer is not None:
                self.close_timer.cancel()
            self.close_timer = self.loop.call_later(self.close_timeout, self.transport.abort)

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "text" and not self.close_sent:
            try:
                b"".join(self.frames).decode()
            except UnicodeDecodeError:
                self.frames = []
                self.conn.send_close(INVALID_PAYLOAD, "text frame is not valid UTF-8")
                self.handle_parser_exception()
                return
        super().send_receive_event_to_app()
