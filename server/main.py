"""``cuecard serve``: build the runtime, serve it with uvicorn, shut down cleanly.

``serve`` is the app's lifespan: it builds the runtime (models, store; calls a killed server
left ``live`` are marked ``interrupted``, with a closing ``status`` event, and handed off:
summary stored, webhooks sent), runs the retention
purge as a background task for as long as the server runs (``server.retention``), and on the
way out cancels that task before it closes the runtime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from nlp.insight import Insight
from nlp.transcript import Transcript
from server.app import Runtime, build_app
from server.auth import Authenticator
from server.bus import Bus
from server.clock import SystemClock
from server.edge import MAX_HEAD_BYTES, http_protocol
from server.engines import load_engines, open_store
from server.handoff import call_events, hand_off_call
from server.retention import retention
from server.session import Engines
from server.settings import Settings
from server.sockets import WebSocketProtocol
from server.store import CallStore
from server.wire import Status, WireError, to_wire

log = logging.getLogger("cuecard")


async def build_runtime(settings: Settings) -> Runtime:
    clock = SystemClock()  # the one clock: stores, webhooks and the runtime read it
    store = await open_store(settings, clock)
    try:
        engines = await asyncio.get_running_loop().run_in_executor(
            None, load_engines, settings, store, clock
        )
    except BaseException:
        await store.close()
        raise
    if engines.webhooks is not None:
        await engines.webhooks.start()
    await mark_interrupted(store, engines)
    bus = Bus() if settings.store == "sqlite" else _redis_bus(settings.store)
    rt = Runtime(settings, engines, store, bus, Authenticator(settings.resolved_token()), clock)

    async def act_here(call_id: str, message: dict[str, Any]) -> list[dict[str, Any]] | None:
        session = rt.sessions.get(call_id)
        return None if session is None else await session.act(message)

    try:
        await bus.start(act_here)
    except BaseException:
        await close_runtime(rt)
        raise
    return rt


async def mark_interrupted(store: CallStore, engines: Engines) -> list[str]:
    """Calls a killed server left ``live`` become ``interrupted``; each gets a closing
    ``status`` event so its viewers and its history say so, and is then handed off like any
    ended call (summary of what was stored, stored, webhooks): the CRM hears of it too."""
    interrupted = await store.mark_live_calls_interrupted()
    for call_id in interrupted:
        try:
            events = await call_events(store, call_id)
        except WireError:  # a damaged history still gets its closing status
            log.exception("call %s: a stored event is unreadable", call_id)
            events = []
        audio_s = max((e.end_s for e in events if isinstance(e, Transcript | Insight)), default=0.0)
        status = Status("interrupted", "the server stopped during the call", audio_s)
        await store.append(call_id, to_wire(status))
        try:
            await hand_off_call(store, engines.summarizer, engines.webhooks, call_id, "interrupted")
        except Exception:  # the summary stays available on demand from the REST API
            log.exception("could not hand off interrupted call %s", call_id)
    if interrupted:
        log.warning(
            "marked %d call(s) interrupted by the last shutdown: %s",
            len(interrupted),
            ", ".join(interrupted),
        )
    return interrupted


async def close_runtime(rt: Runtime) -> None:
    for session in list(rt.sessions.values()):
        await session.finish("interrupted", "server shutting down")
    await rt.bus.aclose()
    await rt.engines.scheduler.stop()
    if rt.engines.webhooks is not None:
        await rt.engines.webhooks.aclose()
    rt.engines.nlp_executor.shutdown(wait=True)
    await rt.store.close()


def _redis_bus(url: str) -> Bus:
    from server.redis_bus import RedisBus  # lazy: redis is an extra (cuecard[redis])

    return RedisBus(url)


async def serve(settings: Settings, *, demo: bool = False) -> int:
    rt = await build_runtime(settings)
    try:
        async with retention(rt.store, settings.retention_s):
            return await _serve(rt, settings, demo)
    finally:
        await close_runtime(rt)


class _Server(uvicorn.Server):
    """uvicorn's server, except that SIGTERM is not raised again once it has stopped serving:
    with the default handler that would kill the process before ``serve``'s own shutdown
    (``close_runtime``: live calls finished and handed off, the store closed) could run.
    SIGINT still is (as KeyboardInterrupt it unwinds through that shutdown)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:  # uvicorn re-raises what it captured when this block exits
                self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]


async def _serve(rt: Runtime, settings: Settings, demo: bool) -> int:
    app = build_app(rt)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        # h11 with a head timeout and head bounds (server.edge); never httptools, unbounded
        http=http_protocol(settings.handshake_timeout_s),
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        ws=WebSocketProtocol,  # websockets-sansio; invalid UTF-8 closes with a reason
        log_level="warning",
        ws_max_size=1 << 20,
        lifespan="off",
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():  # noqa: ASYNC110 (uvicorn has no event)
        await asyncio.sleep(0.05)
    if serving.done():
        return 1
    port = server.servers[0].sockets[0].getsockname()[1] if server.servers else settings.port
    base = f"http://{settings.host}:{port}"
    token = settings.resolved_token()
    print(f"Cuecard is listening on {base}  (data: {settings.data_dir})", flush=True)
    page = f"{base}/#token={token}" + ("&call=demo" if demo else "")
    print(f"  rep's page:  {page}", flush=True)
    print(
        f"  simulate:    cuecard simulate FILE.wav --server ws://{settings.host}:{port}", flush=True
    )
    print(f"  API docs:    {base}/docs", flush=True)
    demo_task = asyncio.create_task(_demo(settings, port, token)) if demo else None
    try:
        await serving
    finally:
        if demo_task is not None:
            demo_task.cancel()
    return 0


async def _demo(settings: Settings, port: int, token: str) -> None:
    from websockets import ConnectionClosed

    from clients.callgen import DEMO_CALL, render
    from clients.simulator import SimOptions, format_event, simulate

    if shutil.which("espeak-ng") is None:
        print(
            "demo needs espeak-ng to speak its call: apt-get install -y espeak-ng", file=sys.stderr
        )
        return
    path = Path(settings.data_dir) / "demo-call.wav"
    if not path.exists():
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: render(DEMO_CALL).write(path)
        )
    print(f"demo: streaming {path} as a live call (rep on the left channel, customer on the right)")
    options = SimOptions(server=f"ws://{settings.host}:{port}", token=token, call_id="demo")
    try:
        await simulate(path, options, lambda e: print(format_event(e), flush=True))
    except ConnectionClosed as err:
        if err.rcvd is not None and err.rcvd.code == 1012:  # Ctrl-C or SIGTERM
            print("demo: stopped, the server is shutting down", flush=True)
        else:
            log.error("demo call failed: %s", err)
        return
    except Exception as err:  # the demo is a guest: it never takes the server down
        log.error("demo call failed: %s", err)
        return
    print(f"demo call done: see it at http://{settings.host}:{port}/v1/calls/demo (token needed)")
