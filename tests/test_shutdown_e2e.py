"""SIGTERM runs the server's own shutdown: a live call is finished and handed off before the
process exits, not left for the next start-up to find. Real server process, real socket."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import numpy as np
import pytest
import websockets

from server.sqlite_store import SqliteCallStore
from tests.conftest import noise, start_server

pytestmark = pytest.mark.model

CALL_ID = "terminated-mid-call"


async def test_sigterm_finishes_live_calls_before_the_process_exits(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = start_server(data)
    start = {"type": "start", "encoding": "pcm16", "sample_rate_hz": 16000, "channels": 1,
             "speakers": ["customer"]}  # fmt: skip
    pcm = (np.clip(noise(1.0, 0.02), -1, 1) * 32767).astype("<i2").tobytes()
    try:
        url = f"{srv.ws}/v1/calls/{CALL_ID}/audio"
        async with websockets.connect(url, additional_headers=srv.auth) as ws:
            await ws.send(json.dumps(start))
            assert json.loads(await ws.recv())["type"] == "started"
            await ws.send(pcm)
            srv.proc.send_signal(signal.SIGTERM)
            with pytest.raises(websockets.ConnectionClosed):
                while True:  # the server closes the stream as it shuts down
                    await ws.send(pcm)
                    await asyncio.sleep(0.05)
        code = await asyncio.to_thread(srv.proc.wait, 30)
    finally:
        if srv.proc.poll() is None:  # it did not exit: the assert below says so
            srv.proc.kill()
            srv.proc.wait()
    assert code == 0, "SIGTERM killed the process before its shutdown ran"
    store = await SqliteCallStore.open(data)
    try:
        call = await store.get_call(CALL_ID)
        statuses = [e for e in await store.events(CALL_ID) if e["type"] == "status"]
        summary = await store.get_summary(CALL_ID)
    finally:
        await store.close()
    assert call.status == "interrupted"
    assert statuses[-1]["state"] == "interrupted"
    # finished by this process (not marked by the next start-up), with its summary stored
    assert statuses[-1]["detail"] != "the server stopped during the call"
    assert summary is not None
