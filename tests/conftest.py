"""Shared fixtures: seeded synthetic audio, espeak-ng calls, and a real server process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from audio.chunk import SAMPLE_RATE_HZ

REPO = Path(__file__).resolve().parents[1]
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_redis() -> Iterator[str]:
    """A real redis-server on a free loopback port, no persistence; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("redis-server exited at start-up") from None
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """One redis-server for the whole session (tests use key prefixes or databases of their
    own)."""
    with running_redis() as url:
        yield url


@dataclass(frozen=True)
class ServerProcess:
    proc: subprocess.Popen[str]
    port: int
    token: str
    data_dir: Path

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_server(data_dir: Path, token: str = "test-token", **env: str) -> ServerProcess:
    """``cuecard serve`` in a subprocess on a free loopback port; waits until it listens."""
    environ = {
        **os.environ,
        "CUECARD_DATA_DIR": str(data_dir),
        "CUECARD_TOKEN": token,
        "CUECARD_PORT": "0",
        "CUECARD_HOST": "127.0.0.1",
        "CUECARD_IDLE_TIMEOUT_S": "10",
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve"],
        cwd=REPO,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    lines = []
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            _drain_in_background(proc)
            return ServerProcess(proc, int(m.group(1)), token, data_dir)
    proc.kill()
    raise RuntimeError("server did not start:\n" + "".join(lines))


def _drain_in_background(proc: subprocess.Popen[str]) -> None:
    import threading

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stderr.write("[server] " + line)

    threading.Thread(target=drain, daemon=True).start()


def stop_server(server: ServerProcess) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path_factory.mktemp("server-data"))
    yield srv
    stop_server(srv)
