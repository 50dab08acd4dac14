"""A server killed with SIGKILL mid-call loses nothing a viewer saw; the restart marks the call
interrupted and applies retention. Real server processes, real models, real sockets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
import websockets

from clients.callgen import Turn, render
from server.sqlite_store import SqliteCallStore
from server.store import CallMeta
from tests.conftest import ServerProcess, start_server, stop_server
from tests.test_stream_e2e import SCRIPT as STREAM_SCRIPT
from tests.test_webhooks import Receiver

pytestmark = [pytest.mark.model, pytest.mark.slow]

SCRIPT = (  # the stream test's opening, then enough more to be killed in the middle of
    *STREAM_SCRIPT,
    Turn("rep", "And which tool do you use for tickets at the moment?"),
    Turn("customer", "We use a shared inbox, and it gets messy every Monday."),
    Turn("rep", "I see. Most teams like yours save a few hours every week with us."),
)
FINALS_BEFORE_KILL = 4
CALL_ID = "killed-mid-call"
DAY_S = 86_400.0


async def stream_until_killed(
    srv: ServerProcess, audio: np.ndarray, seen: list[dict[str, Any]]
) -> None:
    """Stream ``audio`` at 1.0x; SIGKILL the server once the viewer has seen enough finals."""
    events_url = f"{srv.ws}/v1/calls/{CALL_ID}/events"
    audio_url = f"{srv.ws}/v1/calls/{CALL_ID}/audio"
    enough = asyncio.Event()

    async def view() -> None:
        async with websockets.connect(events_url, max_size=None, additional_headers=srv.auth) as ws:
            async for raw in ws:
                event = json.loads(raw)
                if event["type"] == "transcript" and event["is_final"]:
                    seen.append(event)
                    if len(seen) >= FINALS_BEFORE_KILL:
                        enough.set()

    async def send() -> None:
        start = {"type": "start", "encoding": "pcm16", "sample_rate_hz": 16000, "channels": 2,
                 "speakers": ["rep", "customer"], "rep_id": "ana"}  # fmt: skip
        async with websockets.connect(audio_url, additional_headers=srv.auth) as ws:
            await ws.send(json.dumps(start))
            assert json.loads(await ws.recv())["type"] == "started"
            t0 = time.monotonic()
            for i in range(0, len(audio), 320):
                await asyncio.sleep(max(0.0, t0 + i / 16000 - time.monotonic()))
                await ws.send(audio[i : i + 320].tobytes())
        raise AssertionError("the whole call was streamed before the viewer saw enough finals")

    viewer = asyncio.create_task(view())
    sender = asyncio.create_task(send())
    try:
        await asyncio.wait_for(enough.wait(), timeout=120)
        os.kill(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait(30)
    finally:
        for task in (viewer, sender):
            task.cancel()
        await asyncio.gather(viewer, sender, return_exceptions=True)


async def seed_old_call(data_dir: Path) -> None:
    """An ended call from 90 days ago, written while no server runs."""
    store = await SqliteCallStore.open(data_dir)
    try:
        await store.open_call(CallMeta("ancient", "native", "ana", time.time() - 90 * DAY_S))
        await store.append("ancient", {"type": "transcript", "utterance_id": "rep-0",
                                       "speaker": "rep", "is_final": True, "text": "old call",
                                       "start_s": 0.0, "end_s": 1.0, "words": []})  # fmt: skip
        await store.close_call("ancient", "ended")
    finally:
        await store.close()


async def get_until(client: httpx.AsyncClient, path: str, status: int) -> httpx.Response:
    """GET ``path`` until it answers ``status`` (the start-up purge runs in the background)."""
    for _ in range(100):
        r = await client.get(path)
        if r.status_code == status:
            return r
        await asyncio.sleep(0.1)
    return r


async def test_sigkill_mid_call_keeps_every_final_a_viewer_saw(tmp_path: Path) -> None:
    """SIGKILL mid-call, restart: the call is interrupted, holds every final the viewer saw and
    is handed off (stored summary of what was stored, webhook saying "interrupted"); the
    restarted server purges calls older
    than CUECARD_RETENTION_DAYS."""
    rendered = render(SCRIPT)
    wav = tmp_path / "call.wav"
    rendered.write(wav)
    audio, _ = sf.read(str(wav), dtype="int16")
    data_dir = tmp_path / "data"

    seen: list[dict[str, Any]] = []
    first = start_server(data_dir)
    try:
        await stream_until_killed(first, audio, seen)
    finally:
        if first.proc.poll() is None:
            stop_server(first)
    assert first.proc.returncode == -signal.SIGKILL

    await seed_old_call(data_dir)
    with Receiver([]) as crm:
        second = start_server(
            data_dir,
            CUECARD_RETENTION_DAYS="30",
            CUECARD_WEBHOOK_URLS=crm.url,
            CUECARD_WEBHOOK_SECRET="s3cret",
        )
        try:
            headers = {"Authorization": f"Bearer {second.token}"}
            async with httpx.AsyncClient(base_url=second.http, headers=headers) as client:
                r = await client.get(f"/v1/calls/{CALL_ID}")
                assert r.status_code == 200, r.text
                body = r.json()
                summary = (await client.get(f"/v1/calls/{CALL_ID}/summary")).json()
                gone = await get_until(client, "/v1/calls/ancient", 404)
            stored = {t["utterance_id"]: t["text"] for t in body["transcript"]}
            statuses = [s["state"] for s in body["statuses"]]
            async with websockets.connect(
                f"{second.ws}/v1/calls/{CALL_ID}/events?wait_s=0", additional_headers=second.auth
            ) as ws:
                replay = [json.loads(m) async for m in ws]
            for _ in range(100):  # the hand-off is delivered in the background
                if crm.requests:
                    break
                await asyncio.sleep(0.1)
        finally:
            stop_server(second)

    assert body["call"]["status"] == "interrupted"
    [(_, hook)] = crm.requests
    delivered = json.loads(hook)
    assert (delivered["call_id"], delivered["call_status"]) == (CALL_ID, "interrupted")
    assert {k: v for k, v in delivered["summary"].items() if k != "type"} == summary
    assert body["call"]["has_summary"] and summary["engine"] == "builtin"
    assert summary["duration_s"] >= seen[-1]["end_s"] - 0.5
    assert len(seen) >= FINALS_BEFORE_KILL
    for final in seen:
        assert stored.get(final["utterance_id"]) == final["text"], final
    assert statuses[0] == "live" and statuses[-1] == "interrupted"
    assert replay[-1]["type"] == "status" and replay[-1]["state"] == "interrupted"
    assert gone.status_code == 404
