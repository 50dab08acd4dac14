"""The coach's clock (``CallSession.transcribed_through_s``) with the real VAD and Whisper: it
follows what the VAD has seen and what the recognizer has finished, never the audio received."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from audio.chunk import SAMPLE_RATE_HZ, AudioChunk, Speaker
from clients.callgen import Turn, render
from server.bus import Bus
from server.engines import load_engines
from server.session import CallSession, Engines
from server.settings import Settings
from server.sqlite_store import SqliteCallStore
from server.store import CallMeta

pytestmark = pytest.mark.model
FRAME = SAMPLE_RATE_HZ // 50  # 20 ms


@pytest.fixture
async def engines_and_store(tmp_path: Path) -> AsyncIterator[tuple[Engines, SqliteCallStore]]:
    store = await SqliteCallStore.open(tmp_path)
    settings = Settings(data_dir=tmp_path)
    engines = await asyncio.get_running_loop().run_in_executor(None, load_engines, settings, store)
    try:
        yield engines, store
    finally:
        await engines.aclose()
        await store.close()


def frames(speaker: Speaker, samples: np.ndarray, start: int) -> list[AudioChunk]:
    return [
        AudioChunk(speaker, start + i, samples[i : i + FRAME])
        for i in range(0, len(samples), FRAME)
    ]


async def until(condition: Callable[[], bool]) -> None:
    """Wait for the pipeline (no wall-clock assertion: the bound only stops a hung test)."""
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the pipeline did not get there in 30 s")


async def test_the_coach_clock_waits_for_the_vad_and_for_the_final(
    engines_and_store: tuple[Engines, SqliteCallStore],
) -> None:
    engines, store = engines_and_store
    session = CallSession(CallMeta("clock", "native"), ("rep", "customer"), engines, store, Bus())
    quiet = np.zeros(2 * SAMPLE_RATE_HZ, np.float32)
    # Two seconds received before the pipeline runs: the VAD has seen none of it yet.
    for speaker in ("rep", "customer"):
        await session.feed(frames(speaker, quiet, 0))
    assert (session.audio_s, session.transcribed_through_s) == (2.0, 0.0)

    await session.start()
    await until(lambda: session.transcribed_through_s == 2.0)  # silence: settled at once

    words = render((Turn("customer", "Could you send me the proposal by Friday?", gap_s=0),))
    speech = words.customer
    n = len(speech)
    await session.feed(frames("rep", np.zeros(n, np.float32), 2 * SAMPLE_RATE_HZ))
    await session.feed(frames("customer", speech, 2 * SAMPLE_RATE_HZ))
    await until(lambda: session.progress.unsettled > 0)  # the VAD heard the customer start
    assert session.transcribed_through_s < 2.0 + words.utterances[0].start_s + 0.05
    assert session.audio_s == pytest.approx(2.0 + n / SAMPLE_RATE_HZ, abs=1e-3)

    tail = np.zeros(SAMPLE_RATE_HZ, np.float32)  # one second of silence ends the utterance
    end = 2 * SAMPLE_RATE_HZ + n
    await session.feed(frames("rep", tail, end))
    await session.feed(frames("customer", tail, end))
    await until(lambda: session.finals == 1)
    await until(lambda: session.transcribed_through_s == session.audio_s)  # the final is in
    await session.finish()
    [final] = [
        e for e in await store.events("clock") if e["type"] == "transcript" and e["is_final"]
    ]
    assert "proposal" in final["text"].lower()


async def test_a_finish_past_its_deadline_cuts_the_call_off_as_interrupted(
    engines_and_store: tuple[Engines, SqliteCallStore],
) -> None:
    """``finish(by=...)`` (the shutdown drain's deadline) with an utterance in flight and no
    time left: the chain is cancelled, the call ends ``interrupted`` without a summary, and a
    second finish does nothing."""
    engines, store = engines_and_store
    session = CallSession(CallMeta("cut", "native"), ("customer",), engines, store, Bus())
    await session.start()
    speech = render((Turn("customer", "We would need to run this by legal first.", gap_s=0),))
    await session.feed(frames("customer", speech.customer, 0))
    await until(lambda: session.progress.unsettled > 0)  # the utterance is in flight
    await session.finish("server_shutdown", "server shutting down", by=0.0)
    await session.finish("ended", "call ended")  # once per call
    events = await store.events("cut")
    statuses = [e for e in events if e["type"] == "status"]
    assert [s["state"] for s in statuses] == ["live", "interrupted"]
    assert "not finished within the shutdown drain" in statuses[-1]["detail"]
    assert not any(e["type"] == "summary" for e in events)
    assert (await store.get_call("cut")).status == "interrupted"
