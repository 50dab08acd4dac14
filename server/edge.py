"""The HTTP edge: how long a peer may take to send its request head, and how large it may be.

``cuecard serve`` runs uvicorn's h11 protocol (set explicitly, so an installed ``httptools``,
which has no size bound at all, never replaces it) through ``HttpProtocol``, which adds:

- a head timeout: a connection whose request head (a WebSocket upgrade's included) is not
  complete within ``CUECARD_HANDSHAKE_TIMEOUT_S`` of its first byte (or of the connection, when
  nothing came yet) is answered 408 when part of a head came, and closed. uvicorn's own
  ``timeout_keep_alive`` only runs between requests and stops at the first byte, so a slowloris
  trickle held a connection for good.
- bounds on the head, answered with a status and ``Connection: close`` at once: a request line
  over ``MAX_LINE_BYTES`` (a 10 kB call id, say) 414, a header line over ``MAX_LINE_BYTES`` or
  more than ``MAX_HEADERS`` headers 431, a head over ``MAX_HEAD_BYTES`` 431 (h11 bounds only a
  head still coming in, and uvicorn answered that with a bare 400). The line bounds are those of the websockets
  library that parses upgrades after h11 (``server.sockets.WebSocketProtocol``), so a head h11
  accepts is one websockets accepts too.

uvicorn's ``limit_concurrency`` is left unset on purpose: it counts WebSocket connections too
but refuses only plain HTTP (503), so a few hundred viewers would lock ``/healthz`` and the REST
API out while refusing no socket. Connection floods are bounded by the head timeout (a
connection that sends no complete head lives at most ``CUECARD_HANDSHAKE_TIMEOUT_S``) and the
work behind the sockets by ``CUECARD_MAX_CALLS`` and ``CUECARD_MAX_VIEWERS``; the listen
backlog stays uvicorn's 2048.

It overrides uvicorn internals (``H11Protocol.__init__``, ``connection_made``,
``data_received``, ``send_400_response``; not a public API): ``tests/test_edge.py`` fails if an
upgrade changes what it relies on.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

MAX_LINE_BYTES = 8192  # the request line or one header line (websockets' MAX_LINE_LENGTH)
MAX_HEADERS = 128  # websockets' MAX_NUM_HEADERS
MAX_HEAD_BYTES = 16_384  # the whole head (h11's default max_incomplete_event_size)


class HeadRefused(h11.RemoteProtocolError):
    """A request head over a bound; ``error_status_hint`` is the status that answers it."""


def head_refusal(request: h11.Request) -> HeadRefused | None:
    """Why ``request``'s head breaks the bounds (414 or 431), or None when it is within them."""
    # lines counted as websockets counts them: with their CRLF, as uvicorn re-sends them
    line = len(request.method) + len(b" ") + len(request.target) + len(b" HTTP/1.1\r\n")
    if line > MAX_LINE_BYTES:
        return HeadRefused(f"request line over {MAX_LINE_BYTES} bytes", error_status_hint=414)
    if len(request.headers) > MAX_HEADERS:
        return HeadRefused(f"more than {MAX_HEADERS} header fields", error_status_hint=431)
    head = line + len(b"\r\n")
    for name, value in request.headers:
        size = len(name) + len(b": ") + len(value) + len(b"\r\n")
        if size > MAX_LINE_BYTES:
            return HeadRefused(f"a header line over {MAX_LINE_BYTES} bytes", error_status_hint=431)
        head += size
    if head > MAX_HEAD_BYTES:  # h11's own bound holds only for a head that comes in pieces
        return HeadRefused(f"request head over {MAX_HEAD_BYTES} bytes", error_status_hint=431)
    return None


class BoundedConnection(h11.Connection):
    """h11's server connection, refusing a head over the line bounds, and keeping the last
    protocol error so that the answer can carry its status (uvicorn's handler drops it)."""

    def __init__(self) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            event = super().next_event()
            if isinstance(event, h11.Request) and (refusal := head_refusal(event)) is not None:
                raise refusal
        except h11.RemoteProtocolError as err:
            self.error = err
            raise
        return event


class HttpProtocol(H11Protocol):
    """uvicorn's h11 protocol with a head timeout and head bounds (the module docstring)."""

    head_timeout_s: ClassVar[float] = 10.0

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._bounded = BoundedConnection()
        self.conn = self._bounded
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # a head begins (a new one, on keep-alive)
            self._arm_head_timer()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            self._cancel_head_timer()  # the head is in (or the connection is done with)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """The answer to a head h11 or the bounds refused: its status (400, 414, 431) and
        what was wrong, then close."""
        err = self._bounded.error
        status = err.error_status_hint if err is not None else 400
        detail = str(err) if err is not None and str(err) else msg
        self._answer_and_close(status, detail)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:  # part of a head came: say why it is cut off
            detail = f"request head not complete within {self.head_timeout_s:g} s"
            self._answer_and_close(408, detail)
        else:
            self.transport.close()

    def _answer_and_close(self, status: int, detail: str) -> None:
        body = (detail + "\n").encode("ascii", "replace")
        phrase = {400: b"Bad Request", 408: b"Request Timeout", 414: b"URI Too Long",
                  431: b"Request Header Fields Too Large"}.get(status, b"Bad Request")  # fmt: skip
        head = b"HTTP/1.1 %d %s\r\n" % (status, phrase) + (
            b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n" % len(body)
        )
        # info, not warning: uvicorn already warns of a malformed head, and a flood of
        # refused heads must not flood the log
        self.logger.info("HTTP %d to %s: %s", status, _peer(self.client), detail)
        self.transport.write(head + body)
        self.transport.close()


def http_protocol(head_timeout_s: float) -> type[HttpProtocol]:
    """``HttpProtocol`` with this head timeout (uvicorn builds protocols from a class)."""

    class Configured(HttpProtocol):
        pass

    Configured.head_timeout_s = head_timeout_s
    return Configured


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a peer"
