"""SIGTERM drains the server: a live call is finished (its last final, its summary, a closing
``server_shutdown`` status) and its sockets closed with 1001 before the process exits, and a
new call during the drain is refused with 1013. Real server process, real sockets, SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from clients.callgen import render
from server.sqlite_store import SqliteCallStore
from tests.conftest import start_server
from tests.live_call import refused, stop_watching, stream, watch
from tests.test_bus import SCRIPT

pytestmark = [pytest.mark.model, pytest.mark.slow]

DRAIN_S = 20.0


class HeldReceiver:
    """A webhook receiver that holds every POST until ``release``: the drain waits for its
    deliveries, so it is still draining meanwhile."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.got = threading.Event()
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.bodies.append(json.loads(body))
                outer.got.set()
                outer.release.wait(60)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[HeldReceiver]:
    r = HeldReceiver()
    try:
        yield r
    finally:
        r.close()


async def test_sigterm_drains_live_calls_before_the_process_exits(
    tmp_path: Path, receiver: HeldReceiver
) -> None:
    """SIGTERM mid-utterance: the audio socket and the viewer close with 1001 after the last
    final, the summary and a ``server_shutdown`` status; meanwhile a new call gets 1013; the
    webhook says ``server_shutdown``; the process exits 0 with the call stored that way."""
    wav = tmp_path / "call.wav"
    render(SCRIPT).write(wav)
    data = tmp_path / "data"
    srv = start_server(
        data,
        CUECARD_DRAIN_S=str(DRAIN_S),
        CUECARD_WEBHOOK_URLS=receiver.url,
        CUECARD_WEBHOOK_SECRET="s3cret",
    )
    call_id = f"drained-{os.urandom(3).hex()}"
    try:
        viewer = await watch(srv, call_id)
        audio = asyncio.create_task(stream(srv, call_id, wav))
        first = await viewer.wait_for(lambda e: e["type"] == "transcript" and e["is_final"], 90)
        await viewer.wait_for(  # a later utterance is in flight
            lambda e: e["type"] == "transcript" and e["at"] > first["at"], 60
        )
        signalled = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        sent = await asyncio.wait_for(audio, 60)
        closed = await viewer.ended(60)
        # the drain now waits for the webhook, which the receiver holds: a new call is refused
        assert await asyncio.to_thread(receiver.got.wait, 30)
        new_call = await refused(srv, f"{call_id}-late")
        receiver.release.set()
        code = await asyncio.to_thread(srv.proc.wait, DRAIN_S + 20)
    finally:
        await stop_watching(viewer)
        if srv.proc.poll() is None:  # it did not exit: the assert below says so
            srv.proc.kill()
            srv.proc.wait()
    assert code == 0, "the process did not exit cleanly after the drain"
    assert sent.code == 1001 and sent.reason, sent
    assert new_call.code == 1013 and "shutting down" in new_call.reason, new_call
    assert closed.code == 1001 and closed.reason, closed
    tail = [e["type"] for e in viewer.events[-2:]]
    assert tail == ["summary", "status"]
    assert viewer.events[-1]["state"] == "server_shutdown"
    assert any(e["at"] > signalled for e in viewer.finals())  # the in-flight utterance's final
    assert [b["call_status"] for b in receiver.bodies] == ["server_shutdown"]

    store = await SqliteCallStore.open(data)
    try:
        call = await store.get_call(call_id)
        stored = await store.events(call_id)
        summary = await store.get_summary(call_id)
    finally:
        await store.close()
    assert call.status == "server_shutdown"
    assert stored[-1]["type"] == "status" and stored[-1]["state"] == "server_shutdown"
    assert summary is not None
    stored_finals = [e["text"] for e in stored if e["type"] == "transcript"]
    assert stored_finals == [e["text"] for e in viewer.finals()]


async def test_sigterm_drains_a_webrtc_call_and_refuses_offers_meanwhile(
    tmp_path: Path, receiver: HeldReceiver
) -> None:
    """A WebRTC call at SIGTERM ends ``server_shutdown`` with its summary (viewer: 1001 after
    them); an offer during the drain is answered 503 "server shutting down"."""
    from clients.simulator import load_wav
    from clients.webrtc import WebRtcOptions, send_call

    wav = tmp_path / "call.wav"
    render(SCRIPT).write(wav)
    data = tmp_path / "data"
    srv = start_server(
        data,
        CUECARD_DRAIN_S=str(DRAIN_S),
        CUECARD_WEBHOOK_URLS=receiver.url,
        CUECARD_WEBHOOK_SECRET="s3cret",
    )
    call_id = f"drained-rtc-{os.urandom(3).hex()}"
    audio, rate = load_wav(wav)
    options = WebRtcOptions(server=srv.http, token=srv.token, call_id=call_id)
    sending = asyncio.create_task(send_call(audio, rate, options))
    try:
        viewer = await watch(srv, call_id)
        await viewer.wait_for(lambda e: e["type"] == "transcript" and e["is_final"], 90)
        srv.proc.send_signal(signal.SIGTERM)
        closed = await viewer.ended(60)
        assert await asyncio.to_thread(receiver.got.wait, 30)  # the drain waits on it
        async with httpx.AsyncClient() as http:
            offer = await http.post(
                f"{srv.http}/v1/calls/{call_id}-late/webrtc",
                json={"type": "offer", "sdp": "v=0", "speakers": ["rep"]},
                headers={"Authorization": f"Bearer {srv.token}"},
            )
        receiver.release.set()
        code = await asyncio.to_thread(srv.proc.wait, DRAIN_S + 20)
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sending
        await stop_watching(viewer)
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()
    assert code == 0
    assert (offer.status_code, offer.json()["detail"]) == (503, "server shutting down")
    assert closed.code == 1001, closed
    assert [e["type"] for e in viewer.events[-2:]] == ["summary", "status"]
    assert viewer.events[-1]["state"] == "server_shutdown"
    store = await SqliteCallStore.open(data)
    try:
        call = await store.get_call(call_id)
    finally:
        await store.close()
    assert call.status == "server_shutdown" and call.has_summary


async def test_sigterm_finishes_an_audiohook_call_then_disconnects_it(tmp_path: Path) -> None:
    """An AudioHook session at SIGTERM: the call ends ``server_shutdown`` with its summary,
    then the server sends ``disconnect`` (``completed``), answers the client's ``close`` with
    ``closed`` and closes with 1001."""
    from clients.audiohook import AudioHookOptions, connect, encode_call, media_entry
    from clients.simulator import FRAME_MS, load_wav

    wav = tmp_path / "call.wav"
    render(SCRIPT).write(wav)
    stereo, rate = load_wav(wav)
    srv = start_server(tmp_path / "data", CUECARD_DRAIN_S=str(DRAIN_S))
    options = AudioHookOptions(server=srv.ws, token=srv.token)
    call_id = options.conversation_id
    try:
        viewer = await watch(srv, call_id)
        client = await connect(options)
        media = [media_entry(options.channels)]
        opened = await client.open(call_id, options.organization_id, media)
        chosen = opened["parameters"]["media"][0]
        data = encode_call(stereo, rate, chosen["channels"], chosen["format"])
        width, step = len(chosen["channels"]), 8000 * FRAME_MS // 1000

        async def send_audio() -> None:
            t0 = time.monotonic()
            for i in range(0, len(data) // width, step):
                await asyncio.sleep(max(0.0, t0 + client.frames / 8000 - time.monotonic()))
                frame = data[i * width : (i + step) * width]
                await client.audio(frame, len(frame) // width)

        sending = asyncio.create_task(send_audio())
        await viewer.wait_for(lambda e: e["type"] == "transcript" and e["is_final"], 90)
        srv.proc.send_signal(signal.SIGTERM)
        disconnect = await client.recv(60)
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        await client.send("close", {"reason": "disconnect"})
        closed_msg = await client.recv(30)
        code, reason = await client.closed_by_server()
        viewer_closed = await viewer.ended(30)
        exit_code = await asyncio.to_thread(srv.proc.wait, DRAIN_S + 20)
    finally:
        await stop_watching(viewer)
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()
    assert disconnect["type"] == "disconnect", disconnect
    assert disconnect["parameters"] == {"reason": "completed", "info": "server shutting down"}
    assert closed_msg["type"] == "closed"
    assert (code, reason) == (1001, "server shutting down")
    assert viewer_closed.code == 1001 and exit_code == 0
    assert [e["type"] for e in viewer.events[-2:]] == ["summary", "status"]
    assert viewer.events[-1]["state"] == "server_shutdown"
