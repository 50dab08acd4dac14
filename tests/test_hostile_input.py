"""Hostile input and limits through a real server: every case closes with a code and a reason
(at most 123 bytes), ends its call with its true reason, and leaves /healthz and other calls
alone. One server with small limits serves the module."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from websockets.frames import Frame, Opcode

from clients.localserver import ServerProcess, start_server, stop_server
from tests.test_ingest import twilio_media, twilio_start

pytestmark = pytest.mark.model

START = {"type": "start", "encoding": "pcm16", "sample_rate_hz": 16000, "channels": 1,
         "speakers": ["rep"]}  # fmt: skip
LIMITS = {
    "CUECARD_MAX_CALLS": "3",
    "CUECARD_MAX_VIEWERS_PER_CALL": "2",
    "CUECARD_MAX_TEXT_BYTES": "250000",
    "CUECARD_MAX_VIEWER_MESSAGE_BYTES": "200",
    "CUECARD_MAX_MESSAGES_PER_S": "30",
    "CUECARD_MAX_AUDIO_SPEED": "1.0",
    "CUECARD_AUDIO_BURST_S": "2",
    "CUECARD_START_TIMEOUT_S": "1.5",
    "CUECARD_IDLE_TIMEOUT_S": "2",
    "CUECARD_TWILIO_MAX_GAP_S": "5",
    "CUECARD_MAX_BODY_BYTES": "1000",
}
FRAME_100MS = np.zeros(1600, "<i2").tobytes()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("hostile"), **LIMITS)
    yield server
    stop_server(server)


def audio_url(srv: ServerProcess, call_id: str) -> str:
    return f"{srv.ws}/v1/calls/{call_id}/audio"


async def closed(ws: Any) -> tuple[int | None, str]:
    """Read until the server closes; its close code and reason."""
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 60)
    return ws.close_code, ws.close_reason or ""


async def started(srv: ServerProcess, call_id: str) -> Any:
    ws = await websockets.connect(
        audio_url(srv, call_id), additional_headers=srv.auth, max_size=None
    )
    await ws.send(json.dumps(START))
    assert json.loads(await ws.recv())["type"] == "started"
    return ws


async def ended(srv: ServerProcess, call_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stored call once it is no longer live, and its last status event."""
    async with httpx.AsyncClient(base_url=srv.http) as c:
        for _ in range(600):  # the bound only stops a hung test
            r = await c.get(
                f"/v1/calls/{call_id}", headers={"Authorization": f"Bearer {srv.token}"}
            )
            if r.status_code == 200 and r.json()["call"]["status"] != "live":
                body = r.json()
                return body["call"], body["statuses"][-1]
            await asyncio.sleep(0.1)
    raise AssertionError(f"call {call_id} never ended")


async def healthy(srv: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=srv.http) as c:
        assert (await c.get("/healthz")).json() == {"ok": True}


def fits(code_reason: tuple[int | None, str], code: int, needle: str) -> None:
    got_code, reason = code_reason
    assert got_code == code and needle in reason, code_reason
    assert len(reason.encode()) <= 123


async def normal_call(srv: ServerProcess, call_id: str, seconds: float = 2.0) -> None:
    """A well-behaved call at real-time pace, 100 ms frames, ended by stop."""
    ws = await started(srv, call_id)
    for _ in range(int(seconds * 10)):
        await ws.send(FRAME_100MS)
        await asyncio.sleep(0.1)
    await ws.send(json.dumps({"type": "stop"}))
    fits(await closed(ws), 1000, "call ended")
    call, status = await ended(srv, call_id)
    assert call["status"] == "ended" and status["state"] == "ended"


async def test_deep_json_and_invalid_utf8_close_with_reasons_while_another_call_goes_on(
    srv: ServerProcess,
) -> None:
    """100k-deep JSON after start and on /v1/twilio before auth, and a text frame of invalid
    UTF-8, close with 1007 and a reason; their calls end interrupted; a call streaming
    meanwhile ends normally and /healthz answers."""
    other = asyncio.create_task(normal_call(srv, "bystander", 3.0))
    deep = "[" * 100_000 + "]" * 100_000
    async with await started(srv, "deep-json") as ws:
        await ws.send(deep)
        fits(await closed(ws), 1007, 'must be {"type":"stop"}')
    async with websockets.connect(f"{srv.ws}/v1/twilio") as ws:
        await ws.send(deep)
        fits(await closed(ws), 1007, "nested too deep")
    async with await started(srv, "bad-utf8") as ws:
        ws.protocol.send_frame(Frame(Opcode.TEXT, b'{"type": "\xff\xfe"}'))
        ws.send_data()
        fits(await closed(ws), 1007, "not valid UTF-8")
    for call_id, detail in (("deep-json", "stop"), ("bad-utf8", "UTF-8")):
        call, status = await ended(srv, call_id)
        assert call["status"] == "interrupted" and status["state"] == "interrupted"
        assert detail in status["detail"]
    await other
    await healthy(srv)


async def test_close_reasons_built_from_client_input_fit_123_bytes(srv: ServerProcess) -> None:
    """Non-ASCII call ids, Twilio event and track names, and a long unknown call id on the
    events socket give reasons of at most 123 bytes (the close itself never fails)."""
    async with websockets.connect(audio_url(srv, "é" * 100), additional_headers=srv.auth) as ws:
        fits(await closed(ws), 1008, "call id must be")
    async with websockets.connect(f"{srv.ws}/v1/twilio") as ws:
        await ws.send(json.dumps({"event": "é" * 100}))
        fits(await closed(ws), 1007, "unknown event")
    async with websockets.connect(f"{srv.ws}/v1/twilio") as ws:
        await ws.send(twilio_start(rep_track="inbound", token=srv.token, call_id="tw-track"))
        await ws.send(twilio_media("ü" * 100, 0, b"\xff" * 160))
        fits(await closed(ws), 1007, "unknown track")
    long_id = "a" * 128
    async with websockets.connect(
        f"{srv.ws}/v1/calls/{long_id}/events?wait_s=0", additional_headers=srv.auth
    ) as ws:
        fits(await closed(ws), 4404, "unknown call id 'aaaa")
    async with websockets.connect(
        f"{srv.ws}/v1/calls/{'a' * 200}/events", additional_headers=srv.auth
    ) as ws:
        fits(await closed(ws), 1008, "call id must be")
    await healthy(srv)


@pytest.mark.parametrize("call_id", ["%2E%2E", "%2E", "a%C2%B2", "%D1%81all", "x" * 129])
async def test_bad_call_ids_are_refused_before_any_work(srv: ServerProcess, call_id: str) -> None:
    """'..', '.', superscripts, Cyrillic look-alikes and 129 characters are refused with 1008
    before the start message is even read; nothing is stored."""
    async with websockets.connect(audio_url(srv, call_id), additional_headers=srv.auth) as ws:
        fits(await closed(ws), 1008, "call id must be")
    async with httpx.AsyncClient(base_url=srv.http) as c:
        r = await c.get("/v1/calls", headers={"Authorization": f"Bearer {srv.token}"})
    assert all(not c["call_id"].startswith(("%", ".")) for c in r.json()["calls"])


async def test_an_ended_calls_id_is_refused_not_merged(srv: ServerProcess) -> None:
    """A second call with the id of an ended call is refused with 1008 and a reason; the
    stored call keeps only its own events."""
    await normal_call(srv, "used-once", 1.0)
    async with httpx.AsyncClient(base_url=srv.http) as c:
        auth = {"Authorization": f"Bearer {srv.token}"}
        before = (await c.get("/v1/calls/used-once", headers=auth)).json()["call"]["event_count"]
        async with websockets.connect(
            audio_url(srv, "used-once"), additional_headers=srv.auth
        ) as ws:
            await ws.send(json.dumps(START))
            fits(await closed(ws), 1008, "was used by an ended call")
        after = (await c.get("/v1/calls/used-once", headers=auth)).json()["call"]
    assert after["status"] == "ended" and after["event_count"] == before


async def test_handshake_and_idle_timeouts_close_with_a_reason(srv: ServerProcess) -> None:
    """No start (native), only 'connected' (Twilio, unauthenticated), and no audio after start
    each get a close frame with a reason; the idle call is stored timed_out."""
    async with websockets.connect(
        audio_url(srv, "never-starts"), additional_headers=srv.auth
    ) as ws:
        fits(await closed(ws), 1008, "no start message within 1.5 s")
    async with websockets.connect(f"{srv.ws}/v1/twilio") as ws:

        async def chatter() -> None:
            while True:
                await ws.send(json.dumps({"event": "connected", "protocol": "Call"}))
                await asyncio.sleep(0.3)

        task = asyncio.create_task(chatter())
        try:
            fits(await closed(ws), 1008, "no start message within 1.5 s")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    async with await started(srv, "goes-quiet") as ws:
        await ws.send(FRAME_100MS)
        fits(await closed(ws), 1008, "no audio for 2 s")
    call, status = await ended(srv, "goes-quiet")
    assert call["status"] == status["state"] == "timed_out"
    await healthy(srv)


async def test_flooding_sources_are_cut_and_stored_limit_exceeded(srv: ServerProcess) -> None:
    """Thousands of 2-byte frames (message rate) and 20 s of audio sent at once (audio pace)
    are cut with 1008 naming the setting, stored limit_exceeded, never as a normal end."""
    async with await started(srv, "tiny-frames") as ws:
        for _ in range(3000):
            await ws.send(b"\x00\x00")
        fits(await closed(ws), 1008, "CUECARD_MAX_MESSAGES_PER_S")
    async with await started(srv, "too-fast") as ws:
        for _ in range(40):  # 0.5 s frames: under the message rate
            await ws.send(FRAME_100MS * 5)
        fits(await closed(ws), 1008, "CUECARD_MAX_AUDIO_SPEED")
    for call_id in ("tiny-frames", "too-fast"):
        call, status = await ended(srv, call_id)
        assert call["status"] == status["state"] == "limit_exceeded", call_id
    await healthy(srv)


async def test_sizes_are_bounded(srv: ServerProcess) -> None:
    """A text message over CUECARD_MAX_TEXT_BYTES, a frame over the 64 kB frame limit and one
    over the 1 MiB WebSocket limit close with 1009 and end the call limit_exceeded; a request
    body over CUECARD_MAX_BODY_BYTES is 413."""
    async with websockets.connect(audio_url(srv, "long-start"), additional_headers=srv.auth) as ws:
        await ws.send(json.dumps({**START, "rep_id": "x" * 150, "prior": {"n": "y" * 300_000}}))
        fits(await closed(ws), 1009, "CUECARD_MAX_TEXT_BYTES")
    for call_id, frame, needle in (
        ("big-frame", b"\x00" * 80_000, "CUECARD_MAX_FRAME_BYTES"),
        ("huge-frame", b"\x00" * (2 << 20), ""),
    ):
        async with await started(srv, call_id) as ws:
            await ws.send(frame)
            code, _ = await closed(ws)
        assert code == 1009
        _call, status = await ended(srv, call_id)
        assert status["state"] == "limit_exceeded" and needle in status["detail"], call_id
    async with httpx.AsyncClient(base_url=srv.http) as c:
        r = await c.request(
            "DELETE",
            "/v1/calls/nobody",
            content=b"x" * 5000,
            headers={"Authorization": f"Bearer {srv.token}"},
        )
    assert r.status_code == 413
    await healthy(srv)


async def test_capacity_limits_refuse_with_1013(srv: ServerProcess) -> None:
    """One call over CUECARD_MAX_CALLS and one viewer over CUECARD_MAX_VIEWERS_PER_CALL are
    refused with 1013 and a reason; a viewer message over its limit is 1009."""
    calls = [await started(srv, f"cap-{i}") for i in range(3)]
    try:
        async with websockets.connect(
            audio_url(srv, "cap-over"), additional_headers=srv.auth
        ) as ws:
            await ws.send(json.dumps(START))
            fits(await closed(ws), 1013, "CUECARD_MAX_CALLS")
    finally:
        for ws in calls:
            await ws.send(json.dumps({"type": "stop"}))
            await closed(ws)
    url = f"{srv.ws}/v1/calls/watched/events"
    viewers = [await websockets.connect(url, additional_headers=srv.auth) for _ in range(2)]
    try:
        async with websockets.connect(url, additional_headers=srv.auth) as ws:
            fits(await closed(ws), 1013, "CUECARD_MAX_VIEWERS_PER_CALL")
        await viewers[0].send(json.dumps({"type": "card_action", "card_id": "c" * 300}))
        fits(await closed(viewers[0]), 1009, "CUECARD_MAX_VIEWER_MESSAGE_BYTES")
    finally:
        for ws in viewers:
            await ws.close()
    await healthy(srv)


async def test_twilio_gaps_are_filled_up_to_the_bound(srv: ServerProcess) -> None:
    """Packet loss of 2 s (over 512 ms) does not end the call: it ends by its stop message; a
    jump to 100,000,000 ms is refused with 1008 naming the setting, stored limit_exceeded."""
    for call_id, jump_ms in (("tw-loss", 2_000), ("tw-jump", 100_000_000)):
        async with websockets.connect(f"{srv.ws}/v1/twilio") as ws:
            await ws.send(twilio_start(rep_track="inbound", token=srv.token, call_id=call_id))
            for i in range(5):
                await ws.send(twilio_media("inbound", i * 20, b"\xff" * 160))
            await ws.send(twilio_media("inbound", 100 + jump_ms, b"\xff" * 160))
            if jump_ms < 5000:
                await ws.send(twilio_media("outbound", 0, b"\xff" * 160))
                await ws.send(json.dumps({"event": "stop", "streamSid": "MZ1"}))
            got = await closed(ws)
        _, status = await ended(srv, call_id)
        if call_id == "tw-loss":
            fits(got, 1000, "stream stopped")
            assert status["state"] == "ended" and status["detail"] == "stop message"
        else:
            fits(got, 1008, "CUECARD_TWILIO_MAX_GAP_S")
            assert status["state"] == "limit_exceeded"
    await healthy(srv)


async def test_a_reset_connection_ends_the_call_interrupted(srv: ServerProcess) -> None:
    """A TCP reset mid-call (no close frame) is stored interrupted, not ended."""
    ws = await started(srv, "reset")
    await ws.send(FRAME_100MS)
    ws.transport.abort()
    call, status = await ended(srv, "reset")
    assert call["status"] == "interrupted" and status["state"] == "interrupted"
    assert "without a close frame" in status["detail"]


def test_module_limits_are_settings() -> None:
    """Every limit this module sets is a documented setting."""
    api = (Path(__file__).parents[1] / "docs" / "api.md").read_text()
    assert all(name in api for name in LIMITS)
