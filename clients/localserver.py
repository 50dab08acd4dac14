"""A real ``cuecard serve`` (and ``redis-server``) on a free loopback port, as a child process:
what the benchmarks and the tests run the product against. No fakes: the same entry point a
user starts."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120.0
OUTPUT_LINES = 10_000


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


@dataclass(frozen=True)
class ServerProcess:
    proc: subprocess.Popen[str]
    port: int
    token: str
    data_dir: Path
    # the lines it printed or logged so far (the last OUTPUT_LINES of them)
    output: deque[str] = field(default_factory=lambda: deque(maxlen=OUTPUT_LINES))

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> dict[str, str]:
        """The static (admin) token's ``Authorization`` header: it is refused as ``?token=``."""
        return {"Authorization": f"Bearer {self.token}"}


def start_server(data_dir: Path, token: str = "test-token", **env: str) -> ServerProcess:
    """``cuecard serve`` in a subprocess on a free loopback port; waits until it listens. Its
    output goes to stderr, prefixed ``[server]``."""
    environ = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "CUECARD_DATA_DIR": str(data_dir),
        "CUECARD_TOKEN": token,
        "CUECARD_PORT": "0",
        "CUECARD_HOST": "127.0.0.1",
        "CUECARD_IDLE_TIMEOUT_S": "10",
        # tests and benchmarks replay audio as fast as the socket takes it (speed 0)
        "CUECARD_MAX_AUDIO_SPEED": "0",
        "CUECARD_MAX_MESSAGES_PER_S": "0",
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
    deadline = time.monotonic() + START_TIMEOUT_S
    lines = []
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            output = deque(lines, maxlen=OUTPUT_LINES)
            server = ServerProcess(proc, int(m.group(1)), token, data_dir, output)
            _drain_in_background(server)
            return server
    proc.kill()
    raise RuntimeError("server did not start:\n" + "".join(lines))


def _drain_in_background(server: ServerProcess) -> None:
    def drain() -> None:
        assert server.proc.stdout is not None
        for line in server.proc.stdout:
            server.output.append(line)
            sys.stderr.write("[server] " + line)

    threading.Thread(target=drain, daemon=True).start()


def stop_server(server: ServerProcess) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
