"""The shutdown drain (SIGTERM, SIGINT): the server stops taking calls and lets the live ones
finish properly before the process exits, all within ``CUECARD_DRAIN_S``.

``drain(rt, budget_s)``, in order:

1. ``rt.draining``: new audio sockets are refused with 1013 "server shutting down", WebRTC
   offers with 503, new viewers with 1013; ``/readyz`` fails.
2. ``rt.stopping()`` is set: every audio socket's read (``server.sockets.next_message``, the
   WebRTC tracks) stops, and its own error path ends its call ``server_shutdown``: the audio is
   closed, the utterance in flight gets its final, the summary is stored and shown, the
   webhook enqueued, the closing status stored and sent, and then the socket closes with 1001
   "going away" (AudioHook: ``disconnect`` ``completed`` first). The call's viewers here get
   that last final, the summary and the status, then 1001; viewers on other instances get
   them over the bus and then 1000 "call ended". A call not finished by ``CALLS_SHARE`` of the
   budget is cut off (``CallSession.finish``'s deadline) and ends ``interrupted``; one whose
   socket never reached its finish (stuck behind a full audio queue) is finished from here.
3. Every viewer still open here (of calls served elsewhere, or waiting for one) is let go
   (``Bus.let_go``): it closes with 1001 and reconnects to another instance.
4. The webhook deliveries queued meanwhile get what is left of the budget; the rest stay in
   the store for a restart to re-queue.

No clock but the event loop's: the budget is a deadline in loop time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from server.app import Runtime, _close_session
from server.sockets import SHUTTING_DOWN

log = logging.getLogger("cuecard.drain")

CALLS_SHARE = 0.8  # of the budget, the calls' deadline; the rest is for viewers and webhooks
POLL_S = 0.05  # the sessions and viewers are plain dicts: their emptying is polled


async def drain(rt: Runtime, budget_s: float) -> None:
    """Finish every live call of ``rt`` and let its viewers go within ``budget_s``."""
    if budget_s <= 0:
        raise ValueError(f"budget_s must be > 0, got {budget_s}")
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + budget_s
    rt.draining = True
    rt.drain_by = start + budget_s * CALLS_SHARE
    stop = rt.stopping()
    if not stop.done():
        stop.set_result(None)
    live = len(rt.sessions)
    log.warning("draining: %d live call(s), %g s (CUECARD_DRAIN_S)", live, budget_s)
    await _until(lambda: not rt.sessions, (rt.drain_by + end) / 2)
    stuck = list(rt.sessions.values())
    if stuck:  # their finish is past its deadline: it cuts them off at once
        log.warning("drain: finishing %d call(s) as interrupted", len(stuck))
        detail = f"{SHUTTING_DOWN}: not finished within the drain"
        closing = [_close_session(rt, s, "interrupted", detail) for s in stuck]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(end):
                await asyncio.gather(*closing)
    rt.bus.let_go()
    await _until(lambda: not rt.viewers, end)
    if rt.engines.webhooks is not None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(end):
                await rt.engines.webhooks.join()
    log.warning(
        "drained in %.1f s: %d call(s) ended by their sockets, %d by the drain, %d viewer(s) left",
        loop.time() - start,
        live - len(stuck),
        len(stuck),
        sum(rt.viewers.values()),
    )


async def _until(done: Callable[[], bool], deadline: float) -> None:
    loop = asyncio.get_running_loop()
    while not done() and loop.time() < deadline:  # noqa: ASYNC110 (plain dicts, no event)
        await asyncio.sleep(POLL_S)
