"""``WS /v1/calls/{call_id}/events``: the rep's event stream. Stored history first, then live
events (durable ones never twice); the rep's card actions go back to the live session,
wherever it runs, from a token with ``cards:act`` on the call (the socket itself needs
``events:read`` on it, checked by ``server.app``; one without is answered with an ``error``
message and keeps viewing). Bounded: ``max_viewers_per_call`` sockets per call and
``max_viewers`` in all (this instance), each message at most ``max_viewer_message_bytes``, at
most ``max_messages_per_s``. The shutdown drain (``server.drain``) refuses new viewers with
1013 and closes the open ones with 1001.

Slow viewers are dropped, never allowed to grow memory or hold up the call: the bus queues at
most ``Bus.max_pending`` events per viewer (one more: 1013, ``server.bus``), and a send that
the viewer's socket does not take within ``viewer_send_timeout_s`` (a peer that stopped
reading, its TCP window and uvicorn's write buffer full) closes it with 1013 "viewer too
slow" (``server.sockets.WebSocketProtocol`` aborts it if even the close is not read). Either
way it can reconnect with ``?after_seq=`` and catch up from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from fastapi import WebSocket, WebSocketDisconnect

from server.auth import Grant
from server.bus import Subscription
from server.ingest import POLICY_VIOLATION, TRY_AGAIN_LATER, ProtocolError, json_object
from server.limits import CALL_ID_RULE, valid_call_id
from server.sockets import GOING_AWAY, SHUTTING_DOWN, close_socket, now_s
from server.store import StoreError

if TYPE_CHECKING:  # server.app registers this module's loop
    from server.app import Runtime

log = logging.getLogger(__name__)

VIEWER_WAIT_S = 300.0  # how long a viewer may wait for a call that has not started yet
VIEWER_WAIT_MAX_S = 3600.0
NOT_FOUND = 4404  # application close code: unknown call id (as HTTP 404)
TOO_SLOW = "viewer too slow: reconnect to resume"


class ViewerTooSlow(ProtocolError):
    """The viewer's socket took no data within ``viewer_send_timeout_s``."""

    def __init__(self) -> None:
        super().__init__(TRY_AGAIN_LATER, TOO_SLOW)


async def _send(rt: Runtime, ws: WebSocket, event: dict[str, Any]) -> None:
    """Send ``event``; ``ViewerTooSlow`` when the socket does not take it in time."""
    try:
        async with asyncio.timeout(rt.settings.viewer_send_timeout_s):
            await ws.send_json(event)
    except TimeoutError:
        raise ViewerTooSlow() from None


async def serve_viewer(rt: Runtime, ws: WebSocket, call_id: str, grant: Grant) -> None:
    """History from the store, then live events; durable events are never sent twice. The
    socket closes with 1000 when the call ends, 1013 if the viewer falls too far behind, stops
    reading, or the call has ``max_viewers_per_call`` (the server ``max_viewers``) already (or
    the server is draining), 1001 "going away" when the server drains (after the last final,
    the summary and the closing status of a call it served), 4404 "unknown call id '...'" when
    the call is neither stored nor live and does not start within ``?wait_s=`` seconds
    (default 300; 0: the call must exist already), and with the code of a limit its messages
    break.
    ``?after_seq=N`` (a reconnecting viewer's last ``seq``) starts the history after event N."""
    wait_s = _wait_s(ws.query_params.get("wait_s"))
    after_seq = _after_seq(ws.query_params.get("after_seq"))
    refusal = _viewer_refusal(rt, call_id, wait_s, after_seq)
    if refusal is not None:
        await close_socket(ws, *refusal)
        return
    assert wait_s is not None
    rt.viewers[call_id] = rt.viewers.get(call_id, 0) + 1
    sub = rt.bus.subscribe(call_id)
    assert after_seq is not None
    sender = asyncio.create_task(_send_events(rt, ws, call_id, sub, wait_s, after_seq))
    reader = asyncio.create_task(_viewer_messages(rt, ws, call_id, grant))
    try:
        done, _ = await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
        if (close := _closing(sender, done)) is not None:
            if close[1] == TOO_SLOW:
                log.warning("call %s: dropped a viewer that fell behind (%s)", call_id, TOO_SLOW)
            await close_socket(ws, *close)
    finally:
        for task in (sender, reader):
            task.cancel()
        for task in (sender, reader):
            # A viewer that goes away mid-send (OSError: uvicorn's ClientDisconnected) is
            # routine, not a server error.
            with contextlib.suppress(
                asyncio.CancelledError,
                WebSocketDisconnect,
                RuntimeError,
                OSError,
                ProtocolError,
                StoreError,
            ):
                await task
        sub.close()
        if (left := rt.viewers.pop(call_id, 1) - 1) > 0:
            rt.viewers[call_id] = left


def _closing(
    sender: asyncio.Task[tuple[int, str]], done: set[asyncio.Task[Any]]
) -> tuple[int, str] | None:
    """The close code and reason once ``done`` holds the sender (its result) or a task that
    raised a ``ProtocolError``; None when the viewer went away."""
    if sender in done and sender.exception() is None:
        return sender.result()
    for task in done:
        if isinstance(err := task.exception(), ProtocolError):
            return err.code, err.reason
        if isinstance(err, StoreError):  # the history cannot be read while the store is down
            return TRY_AGAIN_LATER, "call storage unavailable: reconnect with ?after_seq later"
    return None


def _viewer_refusal(
    rt: Runtime, call_id: str, wait_s: float | None, after_seq: int | None
) -> tuple[int, str] | None:
    if not valid_call_id(call_id):
        return POLICY_VIOLATION, CALL_ID_RULE
    if after_seq is None:
        return POLICY_VIOLATION, "after_seq must be a whole number >= 0"
    if wait_s is None:
        return POLICY_VIOLATION, f"wait_s must be a number of seconds in [0, {VIEWER_WAIT_MAX_S:g}]"
    if rt.draining:  # another instance (or this one restarted) serves the viewer
        return TRY_AGAIN_LATER, SHUTTING_DOWN
    if rt.viewers.get(call_id, 0) >= rt.settings.max_viewers_per_call:
        return TRY_AGAIN_LATER, "too many viewers on this call (CUECARD_MAX_VIEWERS_PER_CALL)"
    if sum(rt.viewers.values()) >= rt.settings.max_viewers:
        return TRY_AGAIN_LATER, "too many viewers on this server (CUECARD_MAX_VIEWERS)"
    return None


def _wait_s(raw: str | None) -> float | None:
    if raw is None:
        return VIEWER_WAIT_S
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if 0 <= value <= VIEWER_WAIT_MAX_S else None


def _after_seq(raw: str | None) -> int | None:
    if raw is None:
        return 0
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None


async def _send_events(
    rt: Runtime, ws: WebSocket, call_id: str, sub: Subscription, wait_s: float, after_seq: int
) -> tuple[int, str]:
    """Send the call's events after ``after_seq``; returns the close code and reason."""
    last_seq = after_seq
    try:
        stored = await rt.store.events(call_id, after_seq)
        known = True
    except LookupError:
        stored, known = [], call_id in rt.sessions
    for old in stored:
        last_seq = max(last_seq, int(old.get("seq", 0)))
        await _send(rt, ws, old)
    if known and call_id not in rt.sessions and await _call_over(rt, call_id):
        return 1000, "call ended"  # a finished call: its history is all there is
    if not known:  # subscribed before the lookup, so a call starting meanwhile is not missed
        try:
            async with asyncio.timeout(wait_s):
                event = await sub.get()
        except TimeoutError:
            return NOT_FOUND, f"unknown call id {call_id!r}"
    else:
        event = await sub.get()
    while event is not None:
        if "seq" not in event or event["seq"] > last_seq:
            await _send(rt, ws, event)
        event = await sub.get()
    if sub.overflowed:
        return TRY_AGAIN_LATER, TOO_SLOW
    if rt.draining:  # after the call's summary and closing status, if it was served here
        return GOING_AWAY, f"going away: {SHUTTING_DOWN}"
    return 1000, "call ended"


async def _call_over(rt: Runtime, call_id: str) -> bool:
    try:
        return (await rt.store.get_call(call_id)).status != "live"
    except LookupError:
        return False


async def _viewer_messages(rt: Runtime, ws: WebSocket, call_id: str, grant: Grant) -> None:
    """Messages from the rep's page (card actions) go to the live session, wherever it is,
    if the token has ``cards:act`` on the call; one over ``max_viewer_message_bytes`` or the
    message rate raises ``LimitExceeded``."""
    guard = rt.guard(viewer=True)
    refusal = grant.refusal("cards:act", call_id)
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return
        text = msg.get("text")
        guard.message(None if text is None else len(text.encode()), now_s())
        if text is None:
            continue
        try:
            payload = json_object(text)
        except ProtocolError:
            await _send(rt, ws, {"type": "error", "detail": "messages must be JSON objects"})
            continue
        if refusal is not None:  # a read-only viewer (a manager's, a dashboard's)
            await ws.send_json({"type": "error", "detail": f"card action refused: {refusal}"})
            continue
        session = rt.sessions.get(call_id)
        # the call is live here, on another instance (the bus carries it there), or nowhere
        replies = await (session.act(payload) if session else rt.bus.act(call_id, payload))
        if replies is None:
            await _send(rt, ws, {"type": "error", "detail": "call is not live"})
            continue
        for reply in replies:
            await _send(rt, ws, reply)
