"""The HTTP/WebSocket edge through a real server and raw sockets: a request head that never
completes is cut off after the handshake timeout, an oversized head is answered (414, 431) and
closed at once instead of hanging, viewers are bounded in total, and a viewer that stops
reading is dropped while the call and its other viewers go on. One server with small limits
serves the module."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from clients.localserver import ServerProcess, start_server, stop_server
from server.settings import Settings, SettingsError

pytestmark = pytest.mark.model  # the server loads its models

LIMITS = {
    "CUECARD_HANDSHAKE_TIMEOUT_S": "1",
    "CUECARD_MAX_VIEWERS": "3",
    "CUECARD_MAX_VIEWERS_PER_CALL": "2",
    "CUECARD_VIEWER_SEND_TIMEOUT_S": "1",
    "CUECARD_IDLE_TIMEOUT_S": "120",  # the live calls here send no audio
}
START = {"type": "start", "encoding": "pcm16", "sample_rate_hz": 16000, "channels": 1,
         "speakers": ["rep"]}  # fmt: skip
GUARD_S = 30.0  # only stops a hung test; no test asserts a duration


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("edge"), **LIMITS)
    yield server
    stop_server(server)


def upgrade_head(path: str, *extra: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
             *extra]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def exchange(srv: ServerProcess, head: bytes) -> bytes:
    """Send ``head``; everything the server answers until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    try:
        writer.write(head)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), GUARD_S)
    finally:
        writer.close()


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


async def test_slowloris_head_is_cut_off_after_the_handshake_timeout(srv: ServerProcess) -> None:
    """A head trickled a header at a time is answered 408 and closed, however long it goes on."""
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)

    async def trickle() -> None:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for i in range(1000):
            writer.write(b"X-Slow-%d: 1\r\n" % i)
            await writer.drain()
            await asyncio.sleep(0.2)

    trickling = asyncio.create_task(trickle())
    try:
        answer = await asyncio.wait_for(reader.read(), GUARD_S)
    finally:
        trickling.cancel()
        with pytest.raises((asyncio.CancelledError, ConnectionError)):
            await trickling
        writer.close()
    assert status_of(answer) == 408
    assert b"request head not complete" in answer


async def test_a_connection_that_sends_nothing_is_closed(srv: ServerProcess) -> None:
    """A TCP connection that never sends a byte is closed after the handshake timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    try:
        assert await asyncio.wait_for(reader.read(), GUARD_S) == b""
    finally:
        writer.close()


async def test_a_9kb_header_line_is_answered_431(srv: ServerProcess) -> None:
    """A header line over 8 kB is answered 431 and closed, on plain HTTP and on an upgrade."""
    big = "X-Big: " + "a" * 9000
    plain = await exchange(srv, f"GET /healthz HTTP/1.1\r\nHost: x\r\n{big}\r\n\r\n".encode())
    assert status_of(plain) == 431
    assert b"connection: close" in plain.lower()
    upgrade = await exchange(
        srv, upgrade_head("/v1/calls/c1/events", f"Authorization: Bearer {srv.token}", big)
    )
    assert status_of(upgrade) == 431


async def test_a_head_over_16kb_is_answered_431(srv: ServerProcess) -> None:
    """Many header lines, each short, past 16 kB in all: 431, not a bare 400."""
    lines = "".join(f"X-H{i}: {'b' * 1000}\r\n" for i in range(20))
    answer = await exchange(srv, f"GET /healthz HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode())
    assert status_of(answer) == 431


async def test_a_10kb_call_id_is_answered_414(srv: ServerProcess) -> None:
    """A 10 kB call id (the request line over 8 kB) gets 414 at once, on an upgrade or REST."""
    path = f"/v1/calls/{'c' * 10_000}/events"
    auth = f"Authorization: Bearer {srv.token}"
    assert status_of(await exchange(srv, upgrade_head(path, auth))) == 414
    rest = f"GET /v1/calls/{'c' * 10_000} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    assert status_of(await exchange(srv, rest)) == 414


async def test_heads_within_the_bounds_still_work(srv: ServerProcess) -> None:
    """A 7 kB header and keep-alive requests are served as before."""
    async with httpx.AsyncClient(base_url=srv.http) as c:
        for _ in range(3):  # one keep-alive connection
            r = await c.get("/healthz", headers={"X-Fine": "a" * 7000})
            assert r.status_code == 200


def events_url(srv: ServerProcess, call_id: str) -> str:
    return f"{srv.ws}/v1/calls/{call_id}/events"


async def live_call(srv: ServerProcess, call_id: str) -> Any:
    ws = await websockets.connect(
        f"{srv.ws}/v1/calls/{call_id}/audio", max_size=None, additional_headers=srv.auth
    )
    await ws.send(json.dumps(START))
    assert json.loads(await ws.recv())["type"] == "started"
    return ws


async def first_event(ws: Any) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(ws.recv(), GUARD_S)))


async def closed(ws: Any) -> tuple[int | None, str]:
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), GUARD_S)
    return ws.close_code, ws.close_reason or ""


async def test_viewers_in_total_are_bounded(srv: ServerProcess) -> None:
    """With CUECARD_MAX_VIEWERS=3 a fourth viewer (of a call with room) is refused with 1013;
    one leaving makes room."""
    a, b = await live_call(srv, "total-a"), await live_call(srv, "total-b")
    viewers = [
        await websockets.connect(events_url(srv, c), additional_headers=srv.auth)
        for c in ("total-a", "total-a")
    ]
    viewers.append(
        await websockets.connect(events_url(srv, "total-b"), additional_headers=srv.auth)
    )
    try:
        for v in viewers:
            assert (await first_event(v))["type"] == "status"
        async with websockets.connect(
            events_url(srv, "total-b"), additional_headers=srv.auth
        ) as refused:
            code, reason = await closed(refused)
        assert code == 1013
        assert "CUECARD_MAX_VIEWERS" in reason and "server" in reason
        await viewers.pop(0).close()
        for _ in range(100):  # the server sees the close a moment later
            async with websockets.connect(
                events_url(srv, "total-b"), additional_headers=srv.auth
            ) as again:
                try:
                    assert (await first_event(again))["type"] == "status"
                    break
                except websockets.ConnectionClosed:
                    await asyncio.sleep(0.1)
        else:
            raise AssertionError("the freed viewer slot was never reused")
    finally:
        for ws in (*viewers, a, b):
            await ws.close()


class RawViewer:
    """An events socket on a raw TCP socket with small buffers that never reads a byte: a
    viewer that stopped reading."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    async def connect(cls, srv: ServerProcess, call_id: str) -> RawViewer:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", srv.port))
        await loop.sock_sendall(
            sock, upgrade_head(f"/v1/calls/{call_id}/events", f"Authorization: Bearer {srv.token}")
        )
        head = b""
        while b"\r\n\r\n" not in head:  # the 101 and nothing more: the rest stays unread
            head += await asyncio.wait_for(loop.sock_recv(sock, 1), GUARD_S)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(sock)

    def flood_until_cut_off(self, guard_s: float) -> bool:
        """Send text frames that are not JSON (each answered with an error) and read nothing,
        until the server cuts the connection off (True) or ``guard_s`` passes (False)."""
        frames = b"\x81\x81\x00\x00\x00\x00x" * 512  # FIN text, masked (zero key), "x"
        pending, deadline = b"", time.monotonic() + guard_s
        while time.monotonic() < deadline:
            try:
                pending = pending or frames
                pending = pending[self.sock.send(pending) :]
            except BlockingIOError:  # the server is not reading: wait
                time.sleep(0.05)
            except (ConnectionResetError, BrokenPipeError):
                return True
        return False


async def test_a_viewer_that_stops_reading_is_dropped(
    srv: ServerProcess, capfd: pytest.CaptureFixture[str]
) -> None:
    """A viewer whose socket takes nothing (its window and the server's buffers full) is
    dropped as too slow and its slot freed; the call and its other viewer go on to the end."""
    audio = await live_call(srv, "slow-1")
    other = await websockets.connect(events_url(srv, "slow-1"), additional_headers=srv.auth)
    try:
        assert (await first_event(other))["type"] == "status"
        slow = await RawViewer.connect(srv, "slow-1")
        try:
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, slow.flood_until_cut_off, 120.0)
        finally:
            slow.sock.close()
        assert "call slow-1: dropped a viewer that fell behind" in capfd.readouterr().err
        # its slot is free again (2 per call): a new viewer gets the history
        async with websockets.connect(
            events_url(srv, "slow-1"), additional_headers=srv.auth
        ) as late:
            assert (await first_event(late))["type"] == "status"
        await audio.send(json.dumps({"type": "stop"}))
        events = []
        with pytest.raises(websockets.ConnectionClosedOK):
            while True:
                events.append(json.loads(await asyncio.wait_for(other.recv(), GUARD_S)))
        assert other.close_code == 1000
        assert any(e["type"] == "status" and e["state"] == "ended" for e in events)
    finally:
        await other.close()
        await audio.close()


@pytest.mark.parametrize(
    "name", ["CUECARD_HANDSHAKE_TIMEOUT_S", "CUECARD_MAX_VIEWERS", "CUECARD_VIEWER_SEND_TIMEOUT_S"]
)
def test_edge_settings_are_checked(name: str) -> None:
    """Each edge setting must be > 0; the message names the variable."""
    with pytest.raises(SettingsError, match=f"{name} must be > 0"):
        Settings.from_env({name: "0"})
    assert Settings.from_env({name: "7"}) is not None
