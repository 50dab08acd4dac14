"""``cuecard serve``: build the runtime, serve it with uvicorn, drain and shut down cleanly.

``serve`` is the app's lifespan: it builds the runtime (models, store; calls a killed server
left ``live`` are marked ``interrupted``, with a closing ``status`` event, and handed off:
summary stored, webhooks sent), runs the retention purge and, with a Redis store, the reaper
(``reap_orphans``: every ``REAP_EVERY_S`` the live calls of instances whose heartbeat expired
are marked ``interrupted`` the same way, and their viewers on every instance are told) and
the heap trim (``server.memory``: freed memory given back after a burst of connections) as
background tasks for as long as the server runs. SIGTERM or SIGINT runs the drain
(``server.drain``, ``CUECARD_DRAIN_S``) while uvicorn still serves, so the sockets are closed
by the drain (1001 and a reason), not by uvicorn (1012); then uvicorn stops, the background
tasks are cancelled and the runtime closed. A second signal skips what is left of the drain."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from nlp.insight import Insight
from nlp.transcript import Transcript
from server.access import Authenticator
from server.app import Runtime, build_app
from server.auth import safe_host
from server.background import running
from server.bus import Bus
from server.clock import SystemClock
from server.drain import drain
from server.edge import MAX_HEAD_BYTES, http_protocol
from server.engines import load_engines, open_store
from server.handoff import call_events, hand_off_call
from server.memory import trimming
from server.retention import retention
from server.session import Engines
from server.settings import Settings
from server.sockets import WebSocketProtocol
from server.store import CallStore, StoreError
from server.wire import Status, WireError, to_wire

log = logging.getLogger("cuecard")

SHUTDOWN_GRACE_S = 1  # s: uvicorn's wait, after the drain, for connections it left open


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
    await mark_interrupted(store, engines)  # before the bus: no viewer can be watching yet
    bus = Bus() if settings.store == "sqlite" else _redis_bus(settings.store)
    auth = Authenticator.from_settings(settings, clock)
    rt = Runtime(settings, engines, store, bus, auth, clock)

    async def act_here(call_id: str, message: dict[str, Any]) -> list[dict[str, Any]] | None:
        session = rt.sessions.get(call_id)
        return None if session is None else await session.act(message)

    try:
        await bus.start(act_here)
    except BaseException:
        await close_runtime(rt)
        raise
    return rt


async def mark_interrupted(
    store: CallStore, engines: Engines, bus: Bus | None = None, *, orphans_only: bool = False
) -> list[str]:
    """Calls a killed server left ``live`` become ``interrupted`` (at start-up: this
    instance's and dead instances'; ``orphans_only``, while running: dead instances' only);
    each is handed off like any ended call (summary of what was stored, stored, shown,
    webhooks: the CRM hears of it too) and gets a closing ``status`` event, so its history
    says so; with ``bus``, its viewers on every instance get both, then the end."""
    find = (
        store.mark_orphaned_calls_interrupted if orphans_only else store.mark_live_calls_interrupted
    )
    interrupted = await find()
    for call_id in interrupted:
        try:
            events = await call_events(store, call_id)
        except WireError:  # a damaged history still gets its closing status
            log.exception("call %s: a stored event is unreadable", call_id)
            events = []
        audio_s = max((e.end_s for e in events if isinstance(e, Transcript | Insight)), default=0.0)
        try:
            summary = await hand_off_call(
                store, engines.summarizer, engines.webhooks, call_id, "interrupted"
            )
            await _append(store, bus, call_id, to_wire(summary))
        except Exception:  # the summary stays available on demand from the REST API
            log.exception("could not hand off interrupted call %s", call_id)
        status = Status("interrupted", "the server stopped during the call", audio_s)
        await _append(store, bus, call_id, to_wire(status))
        if bus is not None:
            bus.end(call_id)
    if interrupted:
        log.warning(
            "marked %d call(s) interrupted by %s: %s",
            len(interrupted),
            "a dead instance" if orphans_only else "the last shutdown",
            ", ".join(interrupted),
        )
    return interrupted


async def _append(store: CallStore, bus: Bus | None, call_id: str, wire: dict[str, Any]) -> None:
    """Store, then show (as the session emits)."""
    wire["seq"] = await store.append(call_id, wire)
    if bus is not None:
        bus.publish(call_id, wire)


REAP_EVERY_S = 10.0  # a third of the Redis heartbeat's TTL (server.redis_store)


async def reap_orphans(rt: Runtime, every_s: float = REAP_EVERY_S) -> None:
    """Every ``every_s``: the live calls of dead instances (SIGKILL, a lost host) are marked
    ``interrupted`` and handed off, and their viewers here and elsewhere told. Runs until
    cancelled; a failing pass is logged and retried at the next."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await mark_interrupted(rt.store, rt.engines, rt.bus, orphans_only=True)
        except StoreError:  # Redis away: the store logs the outage once; the next pass retries
            continue
        except Exception:  # a failing pass must not end the reaper
            log.exception("reaper: marking dead instances' calls failed; retrying")


@contextlib.asynccontextmanager
async def reaping(rt: Runtime) -> AsyncIterator[None]:
    """The reaper as a task for the ``async with`` block, when several instances may share
    the store (Redis); cancelled, awaited, when the block closes."""
    if rt.settings.store == "sqlite":
        yield
        return
    async with running(reap_orphans(rt), "cuecard-reaper"):
        yield


async def close_runtime(rt: Runtime) -> None:
    for session in list(rt.sessions.values()):
        await session.finish("interrupted", "server shutting down")
    await rt.bus.aclose()
    if rt.engines.webhooks is not None:
        await rt.engines.webhooks.aclose()
    await rt.engines.aclose()
    await rt.store.close()


def _redis_bus(url: str) -> Bus:
    from server.redis_bus import RedisBus  # lazy: redis is an extra (cuecard[redis])

    return RedisBus(url)


async def serve(settings: Settings, *, demo: bool = False) -> int:
    rt = await build_runtime(settings)
    try:
        async with retention(rt.store, settings.retention_s), reaping(rt), trimming():
            return await _serve(rt, settings, demo)
    finally:
        await close_runtime(rt)


class _Server(uvicorn.Server):
    """uvicorn's server, except for what a signal does. The first SIGTERM or SIGINT starts
    ``drain`` while uvicorn still serves (new calls are refused, live ones finished, their
    sockets closed with 1001); uvicorn's own shutdown (listeners closed, what is left closed
    with 1012) comes once the drain is over. A second signal stops at once. SIGTERM is not
    raised again once uvicorn has stopped: the default handler would kill the process before
    ``serve``'s own shutdown (``close_runtime``: the store closed) could run. SIGINT still is
    (as KeyboardInterrupt it unwinds through that shutdown)."""

    def __init__(self, config: uvicorn.Config, drain: Callable[[], Awaitable[None]]) -> None:
        super().__init__(config)
        self._drain = drain
        self._drain_asked = False
        self.draining: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_asked:  # a second signal: no more waiting
            super().handle_exit(sig, frame)
            return
        self._captured_signals.append(sig)
        self._drain_asked = True  # a signal handler: the drain starts at the next tick

    async def on_tick(self, counter: int) -> bool:
        if self._drain_asked and self.draining is None:
            self.draining = asyncio.create_task(self._drain_logged(), name="cuecard-drain")
        if self.draining is not None and self.draining.done():
            self.should_exit = True
        return await super().on_tick(counter)

    async def _drain_logged(self) -> None:
        try:
            await self._drain()
        except Exception:  # a failed drain still lets the process stop
            log.exception("the shutdown drain failed")

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:  # uvicorn re-raises what it captured when this block exits
                self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]


async def _serve(rt: Runtime, settings: Settings, demo: bool) -> int:
    host, warning = safe_host(settings.host, settings.secret_configured)
    if warning is not None:  # no secret was set up for a network: loopback only, loudly
        log.warning("NOT LISTENING ON %s: %s", settings.host, warning)
        settings = dataclasses.replace(settings, host=host)
    app = build_app(rt)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        # h11 with a head timeout and head bounds (server.edge); never httptools, unbounded
        http=http_protocol(settings.handshake_timeout_s),
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        ws=WebSocketProtocol,  # websockets-sansio; invalid UTF-8 closes with a reason
        log_level="warning",  # keeps uvicorn's access log off: it would print ?token= queries
        ws_max_size=1 << 20,
        lifespan="off",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
    server = _Server(config, lambda: drain(rt, settings.drain_s))
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():  # noqa: ASYNC110 (uvicorn has no event)
        await asyncio.sleep(0.05)
    if serving.done():
        return 1
    port = server.servers[0].sockets[0].getsockname()[1] if server.servers else settings.port
    for line in _banner(rt, settings, port, demo):
        print(line, flush=True)
    token = settings.resolved_token()
    demo_task = asyncio.create_task(_demo(settings, port, token)) if demo else None
    try:
        await serving
    finally:
        if demo_task is not None:
            demo_task.cancel()
        if server.draining is not None and not server.draining.done():  # a second signal
            server.draining.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server.draining
    return 0


def _banner(rt: Runtime, settings: Settings, port: int, demo: bool) -> list[str]:
    """The start-up lines: the pages' links carry fresh viewer tokens (12 h), never the
    static admin token, which is shown by its first characters and where it is kept."""
    base = f"http://{settings.host}:{port}"
    token = settings.resolved_token()
    kept = "CUECARD_TOKEN" if settings.token else str(settings.data_dir / "token")
    from_file = '"$CUECARD_TOKEN"' if settings.token else f'"$(cat {kept})"'
    call = "demo" if demo else "*"
    rep = rt.auth.mint_viewer("rep page", ("events:read", "cards:act"), call)
    manager = rt.auth.mint_viewer("manager page", ("events:read",), "*")
    mint_hint = "VIEWER_TOKEN (RS256: mint one with `cuecard token create --private-key …`)"
    return [
        f"Cuecard is listening on {base}  (data: {settings.data_dir})",
        f"  rep's page:  {base}/#token={rep or mint_hint}" + ("&call=demo" if demo else ""),
        f"  manager:     {base}/manager#token={manager or mint_hint}",
        f"  admin token: {token[:4]}… (in {kept}; never put it in a page's URL)",
        f"  simulate:    cuecard simulate FILE.wav --server ws://{settings.host}:{port}"
        f" --token {from_file}",
        f"  API docs:    {base}/docs",
    ]


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
        if err.rcvd is not None and err.rcvd.code in (1001, 1012):  # Ctrl-C or SIGTERM
            print("demo: stopped, the server is shutting down", flush=True)
        else:
            log.error("demo call failed: %s", err)
        return
    except Exception as err:  # the demo is a guest: it never takes the server down
        log.error("demo call failed: %s", err)
        return
    print(f"demo call done: see it at http://{settings.host}:{port}/v1/calls/demo (token needed)")
