"""The heap trim: glibc's malloc_trim is found here (the Debian images are glibc) and runs in
a worker thread every period while the scope is open, and not after it closes."""

from __future__ import annotations

import asyncio

import pytest

from server import memory


def test_glibc_malloc_trim_is_found_and_callable() -> None:
    trim = memory.malloc_trim()
    assert trim is not None
    assert trim() in (0, 1)  # 1: memory was released, 0: there was none to release


async def test_trimming_runs_every_period_then_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(memory, "malloc_trim", lambda: lambda: calls.append(1))
    async with memory.trimming(every_s=0.01):
        for _ in range(500):  # a hang guard, not a timing assertion
            if len(calls) >= 3:
                break
            await asyncio.sleep(0.01)
    assert len(calls) >= 3
    seen = len(calls)
    await asyncio.sleep(0.05)
    assert len(calls) == seen  # the task is gone with the scope
