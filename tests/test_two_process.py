"""Two real ``cuecard serve`` processes share one real redis-server; a call streams into A at
1x and is watched from B (and from A). SIGKILL A mid-call: nothing a viewer saw is lost from
the store, and B's viewer is told the call was ``interrupted`` (B's reaper). SIGTERM A
mid-call: A drains, every viewer gets the last final, the summary and ``server_shutdown``,
the audio socket closes with 1001, and A exits 0 within ``CUECARD_DRAIN_S``."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from clients.callgen import render
from server.redis_store import RedisCallStore
from tests.conftest import ServerProcess, start_server, stop_server
from tests.live_call import Event, Viewer, stop_watching, stream, watch
from tests.test_bus import SCRIPT

pytestmark = [pytest.mark.model, pytest.mark.slow]

DRAIN_S = 10.0
# B's reaper runs every 10 s and A's heartbeat lives 30 s: a hang guard well past both
REAPED_WITHIN_S = 120.0


@pytest.fixture
async def instances(
    redis_url: str, tmp_path: Path
) -> AsyncIterator[tuple[str, ServerProcess, ServerProcess]]:
    url = redis_url.rsplit("/", 1)[0] + "/2"  # a database of its own
    tag = os.urandom(3).hex()
    env = {"CUECARD_STORE": url, "CUECARD_DRAIN_S": str(DRAIN_S)}
    a = start_server(tmp_path / "a", CUECARD_INSTANCE_ID=f"a-{tag}", **env)
    try:
        b = start_server(tmp_path / "b", CUECARD_INSTANCE_ID=f"b-{tag}", **env)
    except BaseException:
        stop_server(a)
        raise
    try:
        yield url, a, b
    finally:
        for s in (a, b):
            if s.proc.poll() is None:
                stop_server(s)


def is_final(e: Event) -> bool:
    return e["type"] == "transcript" and e["is_final"]


async def mid_utterance(viewer: Viewer) -> None:
    """Return once a final was seen and a later utterance is under way (its partial)."""
    first = await viewer.wait_for(is_final, 90)
    await viewer.wait_for(lambda e: e["type"] == "transcript" and e["at"] > first["at"], 60)


async def stored(url: str, call_id: str) -> tuple[Any, list[Event], Any]:
    store = await RedisCallStore.open(url, instance_id=f"reader-{os.urandom(3).hex()}")
    try:
        return (
            await store.get_call(call_id),
            await store.events(call_id),
            await store.get_summary(call_id),
        )
    finally:
        await store.close()


async def test_sigkill_loses_nothing_seen_and_the_other_instance_says_interrupted(
    instances: tuple[str, ServerProcess, ServerProcess], tmp_path: Path
) -> None:
    """SIGKILL A mid-call: every final a viewer saw (on B, or from A itself) is in the store,
    and B's viewer gets the summary and ``interrupted``, then the end."""
    url, a, b = instances
    wav = tmp_path / "call.wav"
    render(SCRIPT).write(wav)
    call_id = f"killed-{os.urandom(3).hex()}"
    on_b, on_a = await watch(b, call_id), await watch(a, call_id)
    try:
        audio = asyncio.create_task(stream(a, call_id, wav))
        await mid_utterance(on_b)
        a.proc.kill()
        await asyncio.to_thread(a.proc.wait, 30)
        assert (await asyncio.wait_for(audio, 30)).code == 1006  # no close frame: killed
        await on_b.wait_for(
            lambda e: e["type"] == "status" and e["state"] != "live", REAPED_WITHIN_S
        )
        closed_b = await on_b.ended(30)
    finally:
        await stop_watching(on_a, on_b)
    call, events, summary = await stored(url, call_id)
    by_seq = {e["seq"]: e for e in events}
    for seen in (*on_b.finals(), *on_a.finals()):
        assert by_seq[seen["seq"]]["text"] == seen["text"]  # nothing seen is lost
    assert on_b.finals(), "the viewer saw no final before the kill"
    assert call.status == "interrupted" and summary is not None
    assert [e["type"] for e in on_b.events[-2:]] == ["summary", "status"]
    assert on_b.events[-1]["state"] == "interrupted"
    assert closed_b.code == 1000


async def test_sigterm_drains_the_call_and_every_viewer_sees_it_end(
    instances: tuple[str, ServerProcess, ServerProcess], tmp_path: Path
) -> None:
    """SIGTERM A mid-utterance: the audio socket closes with 1001 and a reason; the viewers on
    A and on B get that utterance's final, the summary and ``server_shutdown`` (A's then 1001,
    B's 1000); A exits 0 within CUECARD_DRAIN_S and a margin; the call is stored that way."""
    url, a, b = instances
    wav = tmp_path / "call.wav"
    render(SCRIPT).write(wav)
    call_id = f"drained-{os.urandom(3).hex()}"
    on_b, on_a = await watch(b, call_id), await watch(a, call_id)
    try:
        audio = asyncio.create_task(stream(a, call_id, wav))
        await mid_utterance(on_b)
        signalled = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(a.proc.wait, DRAIN_S + 30)
        exited_s = time.monotonic() - signalled
        sent = await asyncio.wait_for(audio, 30)
        closed_a, closed_b = await on_a.ended(30), await on_b.ended(30)
    finally:
        await stop_watching(on_a, on_b)
        if a.proc.poll() is None:
            a.proc.kill()
    assert code == 0
    assert exited_s < DRAIN_S + 15  # the drain's own deadline, plus start-up of the exit
    assert sent.code == 1001 and sent.reason, sent
    assert (closed_a.code, closed_b.code) == (1001, 1000), (closed_a, closed_b)
    call, events, summary = await stored(url, call_id)
    assert call.status == "server_shutdown" and summary is not None
    stored_finals = [e["text"] for e in events if is_final(e)]
    for viewer in (on_a, on_b):
        assert [e["type"] for e in viewer.events[-2:]] == ["summary", "status"]
        assert viewer.events[-1]["state"] == "server_shutdown"
        assert any(e["at"] > signalled for e in viewer.finals())  # the in-flight one's final
        assert [e["text"] for e in viewer.finals()] == stored_finals
