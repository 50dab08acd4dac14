"""Redis going away mid-call: the call keeps coaching from memory, the store catches up in
order when Redis is back, the call ends (never wedged), REST answers 503 and ping raises
meanwhile, one WARNING and one INFO are logged. A real redis-server of the test's own
(append-only file, fsync always), killed with SIGKILL and restarted on the same port and
data; real models."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets
from fastapi import FastAPI

from audio.chunk import SAMPLE_RATE_HZ, AudioChunk
from clients.callgen import render
from server.api import build_router
from server.bus import Bus, Event
from server.engines import load_engines
from server.outbox import OutboxOptions, StoreOutbox
from server.redis_store import RedisCallStore
from server.session import CallSession, Engines
from server.settings import Settings
from server.store import CallMeta, StoreError
from tests.conftest import free_port, noise, start_server
from tests.test_stream_e2e import SCRIPT

FRAME = SAMPLE_RATE_HZ // 50  # 20 ms
CALL_ID = "outage-then-sigterm"


class RedisServer:
    """A redis-server on one port with an append-only file that survives a SIGKILL."""

    def __init__(self, data_dir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
        self.binary = binary
        self.port = free_port()
        self.dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.down = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(500):  # a hang guard: until it accepts connections
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                break
            except OSError:
                assert self.proc.poll() is None, "redis-server exited at start-up"
                time.sleep(0.02)
        self.down = False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.down = True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Shown(Bus):
    """The in-process bus, keeping what was published to the viewers (and when: Redis up or
    down)."""

    def __init__(self, redis: RedisServer) -> None:
        super().__init__()
        self.redis = redis
        self.events: list[tuple[Event, bool]] = []

    def publish(self, call_id: str, event: Event) -> None:
        self.events.append((dict(event), self.redis.down))
        super().publish(call_id, event)


@pytest.fixture
async def engines_and_store(
    tmp_path: Path, redis_server: RedisServer
) -> AsyncIterator[tuple[Engines, RedisCallStore]]:
    store = await RedisCallStore.open(redis_server.url, socket_timeout_s=2.0)
    settings = Settings(data_dir=tmp_path)
    loop = asyncio.get_running_loop()
    engines = await loop.run_in_executor(None, load_engines, settings, store)
    engines = replace(engines, outbox=OutboxOptions(patience_s=300.0))  # the test restarts it
    try:
        yield engines, store
    finally:
        await engines.aclose()
        await store.close()


@pytest.mark.model
async def test_redis_down_mid_call_then_back(
    engines_and_store: tuple[Engines, RedisCallStore],
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis is killed 2.5 s into a call and comes back after the audio ended: the audio was
    never held up, REST answered 503 and ping raised meanwhile, and then the call ends
    ``ended`` with every final stored in the order shown, its summary and closing status;
    everything shown with a seq is in the store; one WARNING, one INFO."""
    engines, store = engines_and_store
    caplog.set_level(logging.INFO, logger="server.redis_store")
    call = render(SCRIPT)
    bus = Shown(redis_server)
    session = CallSession(CallMeta("outage", "native"), ("rep", "customer"), engines, store, bus)
    await session.start()
    app = FastAPI()
    app.include_router(build_router(store, auth=lambda scope, per_call: lambda: None))
    rest = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    statuses: list[int] = []
    step = SAMPLE_RATE_HZ // 10  # 100 ms of audio every 100 ms: about real time
    t0 = time.monotonic()
    async with rest:
        for i in range(0, len(call.rep), step):
            if not redis_server.down and time.monotonic() - t0 >= 2.5:
                redis_server.kill()
                with pytest.raises(StoreError):
                    await store.ping()
                for path in ("/v1/calls", "/v1/calls/outage"):
                    r = await rest.get(path)
                    statuses.append(r.status_code)
                    assert "call storage unavailable" in r.json()["detail"]
            await session.feed(
                [AudioChunk(s, i + j, samples[i + j : i + j + FRAME])
                 for s, samples in (("rep", call.rep), ("customer", call.customer))
                 for j in range(0, min(step, len(call.rep) - i), FRAME)]
            )  # fmt: skip
            await asyncio.sleep(0.1)
        assert redis_server.down, "the call was too short to kill Redis in the middle of it"
        finishing = asyncio.create_task(session.finish())
        await asyncio.sleep(1.0)
        assert not finishing.done()  # its end waits for the store, held in memory
        redis_server.start()
        await asyncio.wait_for(finishing, 120)  # a hang guard
        assert (await rest.get("/v1/calls/outage")).status_code == 200
    assert statuses == [503, 503]

    record = await store.get_call("outage")
    assert record.status == "ended" and record.ended_at is not None and record.has_summary
    stored = await store.events("outage")
    assert [e["seq"] for e in stored] == list(range(1, len(stored) + 1))
    shown = [e for e, _ in bus.events if "seq" in e]
    assert shown == stored  # every durable event shown was stored first, in the same order
    finals = [e for e in stored if e["type"] == "transcript"]
    assert len(finals) >= len(SCRIPT) - 1 and all(e["is_final"] for e in finals)
    assert [e["type"] for e in stored[-2:]] == ["summary", "status"]
    assert stored[-1]["state"] == "ended"
    assert await store.get_summary("outage") == {k: v for k, v in stored[-2].items() if k != "seq"}

    details = [e.get("detail", "") for e, _ in bus.events if e["type"] == "status"]
    held = details.index("call storage unavailable: transcript and cards wait for it")
    back = details.index("call storage back")
    assert held < back
    after_back = [e for e, down in bus.events if "seq" in e and not down]
    assert any(e["type"] == "transcript" for e in after_back)

    lines = [
        (r.levelname, r.getMessage()) for r in caplog.records if r.name == "server.redis_store"
    ]
    assert [lvl for lvl, msg in lines if "is unavailable" in msg] == ["WARNING"]
    assert [lvl for lvl, msg in lines if "answers again" in msg] == ["INFO"]


@pytest.mark.model
async def test_sigterm_during_an_outage_exits_and_the_call_is_not_wedged(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A real server on the Redis store: with Redis killed mid-call, REST answers 503 (not
    500), a new call is refused with 1013, and SIGTERM still exits (within the outbox's patience, not hung); once Redis is
    back the call, still live in the store, is marked interrupted by the next start-up."""
    srv = start_server(tmp_path / "data", CUECARD_STORE=redis_server.url)
    start = {"type": "start", "encoding": "pcm16", "sample_rate_hz": 16000, "channels": 1,
             "speakers": ["customer"]}  # fmt: skip
    pcm = (np.clip(noise(0.2, 0.02), -1, 1) * 32767).astype("<i2").tobytes()
    headers = {"Authorization": f"Bearer {srv.token}"}
    try:
        url = f"{srv.ws}/v1/calls/{CALL_ID}/audio"
        async with (
            websockets.connect(url, additional_headers=headers) as ws,
            httpx.AsyncClient(headers=headers) as rest,
        ):
            await ws.send(json.dumps(start))
            assert json.loads(await ws.recv())["type"] == "started"
            for _ in range(10):
                await ws.send(pcm)
                await asyncio.sleep(0.2)
            redis_server.kill()
            for _ in range(10):  # the call goes on while Redis is down
                await ws.send(pcm)
                await asyncio.sleep(0.2)
            r = await rest.get(f"{srv.http}/v1/calls")
            assert r.status_code == 503 and "call storage unavailable" in r.json()["detail"]
            assert (await rest.get(f"{srv.http}/healthz")).status_code == 200
            other = f"{srv.ws}/v1/calls/another-call/audio"
            async with websockets.connect(
                other, additional_headers=headers
            ) as refused:  # no new call meanwhile
                await refused.send(json.dumps(start))
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await refused.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
            assert closed.value.rcvd.reason.startswith("call storage unavailable")
            viewer = f"{srv.ws}/v1/calls/{CALL_ID}/events"  # its history cannot be read
            async with websockets.connect(viewer, additional_headers=headers) as watching:
                with pytest.raises(websockets.ConnectionClosed) as shut:
                    while True:
                        await asyncio.wait_for(watching.recv(), 30)
            assert shut.value.rcvd is not None and shut.value.rcvd.code == 1013
            assert shut.value.rcvd.reason.startswith("call storage unavailable")
            t0 = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(websockets.ConnectionClosed):
                while True:
                    await ws.send(pcm)
                    await asyncio.sleep(0.05)
        code = await asyncio.to_thread(srv.proc.wait, 90)  # a hang guard: it used to hang
        took_s = time.monotonic() - t0
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()
    assert code == 0
    print(f"SIGTERM during the Redis outage: exited in {took_s:.1f} s")
    redis_server.start()
    store = await RedisCallStore.open(redis_server.url)
    try:
        assert (await store.get_call(CALL_ID)).status == "live"  # nothing could be stored
        assert await store.mark_live_calls_interrupted() == [CALL_ID]
    finally:
        await store.close()


async def test_outbox_holds_in_order_then_catches_up(redis_server: RedisServer) -> None:
    """The outbox on a real Redis store: inline while Redis answers; while it is down events
    wait (nothing shown), settle gives up after its patience, one event past the bound is
    lost and ``failed`` says so; once Redis is back the held events, then the steps, go out
    in order, each shown only with its seq."""
    store = await RedisCallStore.open(redis_server.url, socket_timeout_s=2.0)
    shown: list[dict[str, object]] = []
    held: list[bool] = []
    opts = OutboxOptions(max_events=3, base_delay_s=0.05, max_delay_s=0.2, patience_s=0.5)
    outbox = StoreOutbox("c1", store, shown.append, opts, on_hold=held.append)
    try:
        await store.open_call(CallMeta("c1", "native"))
        await outbox.put({"type": "score", "n": 0})
        assert shown == [{"type": "score", "n": 0, "seq": 1}] and outbox.waiting == 0
        redis_server.kill()
        for n in range(1, 5):
            await outbox.put({"type": "score", "n": n})
        assert shown == [{"type": "score", "n": 0, "seq": 1}] and held == [True]
        assert outbox.waiting == 3 and outbox.failed and outbox.lost == 1  # n=4: over the bound

        async def step() -> list[dict[str, object]]:
            await store.close_call("c1", "interrupted")
            return [{"type": "status", "state": "interrupted"}]

        outbox.then(step)
        assert await outbox.settle() is False  # down for the whole patience
        redis_server.start()
        assert await asyncio.wait_for(outbox.settle(), 60) is True  # a hang guard
    finally:
        await store.close()
    assert [(e.get("n"), e["seq"]) for e in shown] == [(0, 1), (1, 2), (2, 3), (3, 4), (None, 5)]
    assert held == [True, False]
    store = await RedisCallStore.open(redis_server.url)
    try:
        assert [e["seq"] for e in await store.events("c1")] == [1, 2, 3, 4, 5]
        assert (await store.get_call("c1")).status == "interrupted"
    finally:
        await store.close()
