"""Shared fixtures: seeded synthetic audio, espeak-ng calls, and a real server process."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from audio.chunk import SAMPLE_RATE_HZ
from clients.localserver import (
    REPO,
    ServerProcess,
    free_port,
    running_redis,
    start_server,
    stop_server,
)

__all__ = ["REPO", "ServerProcess", "free_port", "running_redis", "start_server", "stop_server"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tone(seconds: float, hz: float = 220.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def noise(seconds: float, amplitude: float = 0.05, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * SAMPLE_RATE_HZ)) * amplitude).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE_HZ), np.float32)


@pytest.fixture(autouse=True)
async def no_pending_tasks() -> AsyncIterator[None]:
    """Fail any test that leaves an asyncio task running."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    leaked = [
        t for t in asyncio.all_tasks() - before if t is not asyncio.current_task() and not t.done()
    ]
    assert not leaked, f"test left tasks pending: {leaked}"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """One redis-server for the whole session (tests use key prefixes or databases of their
    own)."""
    with running_redis() as url:
        yield url


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path_factory.mktemp("server-data"))
    yield srv
    stop_server(srv)
