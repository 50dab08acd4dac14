"""The HTTP/WebSocket server: routes, authentication, and one ``CallSession`` per live call.

- ``WS /v1/calls/{call_id}/audio``   native audio in (see ``server.ingest``)
- ``WS /v1/twilio``                  Twilio Media Streams in
- ``WS /v1/calls/{call_id}/events``  the rep's event stream (stored history first, then live;
  an unknown call id closes with 4404 once ``wait_s`` passes without the call starting)
- ``GET /`` the rep's page; ``GET /healthz``; the REST API of ``server.api``; ``GET /v1/stats``

Every route checks who is asking (``server.auth``); ``/healthz`` tells only that the process
is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse
from starlette.types import Message
from starlette.websockets import WebSocketState

from server.api import build_router
from server.auth import Authenticator, twilio_signature_valid
from server.bus import Bus, Subscription
from server.clock import Clock, SystemClock
from server.ingest import (
    INVALID_PAYLOAD,
    POLICY_VIOLATION,
    ProtocolError,
    TwilioStarted,
    TwilioStopped,
    TwilioStream,
    decode_native_frame,
    native_decoder,
    parse_native_start,
)
from server.session import CallSession, Engines
from server.settings import Settings
from server.store import CallMeta, CallStore

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
CALL_ID_MAX = 128
VIEWER_WAIT_S = 300.0  # how long a viewer may wait for a call that has not started yet
VIEWER_WAIT_MAX_S = 3600.0
NOT_FOUND = 4404  # application close code: unknown call id (as HTTP 404)


@dataclass
class Runtime:
    settings: Settings
    engines: Engines
    store: CallStore
    bus: Bus
    auth: Authenticator
    clock: Clock = field(default_factory=SystemClock)
    sessions: dict[str, CallSession] = field(default_factory=dict)


def build_app(rt: Runtime) -> FastAPI:
    app = FastAPI(title="Cuecard", version="0.1.0", description="Live coaching for sales calls")
    app.state.runtime = rt

    async def require_token(request: Request) -> None:
        if not rt.auth.allows(request):
            raise HTTPException(
                401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"}
            )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/v1/stats", dependencies=[Depends(require_token)], tags=["operations"])
    async def stats() -> dict[str, Any]:
        """Load of this server: live calls, the time the Whisper thread has spent
        recognizing since start-up (its busy share of wall time is the ASR capacity used),
        and events that did not reach other instances (Redis bus; 0 on one instance)."""
        scheduler = rt.engines.scheduler
        return {
            "live_calls": len(rt.sessions),
            "asr_busy_s": round(scheduler.busy_s, 3),
            "asr_dropped_partials": scheduler.dropped_partials,
            "bus_dropped": rt.bus.dropped,
        }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return resources.files("clients").joinpath("web/index.html").read_text()

    async def admitted(ws: WebSocket) -> bool:
        """Accept the socket, then close it with 1008 unless the token is right: a close
        reason can only be sent on an accepted socket."""
        await ws.accept()
        if rt.auth.allows(ws):
            return True
        await ws.close(POLICY_VIOLATION, "missing or wrong token")
        return False

    @app.websocket("/v1/calls/{call_id}/audio")
    async def native_audio(ws: WebSocket, call_id: str) -> None:
        if await admitted(ws):
            await _native(rt, ws, call_id)

    @app.websocket("/v1/twilio")
    async def twilio(ws: WebSocket) -> None:
        await ws.accept()
        await _twilio(rt, ws)

    @app.websocket("/v1/calls/{call_id}/events")
    async def events(ws: WebSocket, call_id: str) -> None:
        if await admitted(ws):
            await _viewer(rt, ws, call_id)

    app.include_router(build_router(rt.store, auth=require_token, fallback=rt.engines.summarizer))
    from server import sources  # AudioHook and Vonage; imports this module, so not at the top

    sources.register(app, rt)
    return app


def _valid_call_id(call_id: str) -> bool:
    return 0 < len(call_id) <= CALL_ID_MAX and all(c.isalnum() or c in "-_." for c in call_id)


@dataclass(slots=True)
class _AudioCall:
    """What an audio socket has opened so far, so that one error path can end it."""

    label: str
    session: CallSession | None = None


async def _serve_audio(rt: Runtime, ws: WebSocket, call: _AudioCall, run: Awaitable[None]) -> None:
    """Run an audio socket's loop; a protocol error or a crash ends its call as interrupted
    (stored, summarized, handed off) and a protocol error closes the socket with its code."""
    try:
        await run
    except ProtocolError as err:
        log.warning("%s: closing audio socket: %s", call.label, err.reason)
        if call.session is not None:
            await _close_session(rt, call.session, "interrupted", err.reason)
        await _safe_close(ws, err.code, err.reason)
    except BaseException:
        if call.session is not None:
            await _close_session(rt, call.session, "interrupted", "server error")
        raise


async def _native(rt: Runtime, ws: WebSocket, call_id: str) -> None:
    call = _AudioCall(f"call {call_id}")
    await _serve_audio(rt, ws, call, _native_loop(rt, ws, call_id, call))


async def _native_loop(rt: Runtime, ws: WebSocket, call_id: str, call: _AudioCall) -> None:
    if not _valid_call_id(call_id):
        raise ProtocolError(POLICY_VIOLATION, "call id must be 1-128 of [A-Za-z0-9._-]")
    try:
        first = await asyncio.wait_for(ws.receive(), START_TIMEOUT_S)
    except TimeoutError:
        raise ProtocolError(POLICY_VIOLATION, "no start message within 10 s") from None
    if first["type"] == "websocket.disconnect":
        return
    start = parse_native_start(first.get("text", first.get("bytes")))
    decoder = native_decoder(start, rt.settings.max_frame_bytes)
    meta = CallMeta(call_id, "native", start.rep_id, rt.clock.now(), dict(start.prior))
    session = call.session = await _open_session(
        rt, meta, decoder.format.speakers, tuple(start.vocabulary)
    )
    await ws.send_json({"type": "started", "call_id": call_id})
    while True:
        msg = await _receive(ws, rt.settings.idle_timeout_s)
        if msg is None or msg["type"] == "websocket.disconnect":
            await _close_session(rt, session, "ended", "audio socket closed")
            return
        if msg.get("bytes") is not None:
            await session.feed(decode_native_frame(decoder, msg["bytes"]))
        elif _is_stop(msg.get("text")):
            await session.feed(decoder.flush())
            await _close_session(rt, session, "ended", "stop message")
            await _safe_close(ws, 1000, "call ended")  # the client may be gone already
            return
        else:
            raise ProtocolError(INVALID_PAYLOAD, 'text frames after start must be {"type":"stop"}')


async def _twilio(rt: Runtime, ws: WebSocket) -> None:
    """Twilio: nothing is ever sent back on this socket but the close frame."""
    if rt.settings.twilio_auth_token:
        url = rt.settings.public_url.rstrip("/") + "/v1/twilio"
        if not twilio_signature_valid(
            rt.settings.twilio_auth_token, url, ws.headers.get("x-twilio-signature")
        ):
            log.warning("twilio stream rejected: bad X-Twilio-Signature")
            await ws.close(POLICY_VIOLATION, "bad X-Twilio-Signature")
            return
    call = _AudioCall("twilio stream")
    await _serve_audio(rt, ws, call, _twilio_loop(rt, ws, call))


async def _twilio_loop(rt: Runtime, ws: WebSocket, call: _AudioCall) -> None:
    stream = TwilioStream()
    while True:
        session = call.session
        msg = await _receive(ws, rt.settings.idle_timeout_s)
        if msg is None or msg["type"] == "websocket.disconnect":
            if session is not None:
                await session.feed(stream.flush())
                await _close_session(rt, session, "ended", "twilio socket closed")
            return
        text = msg.get("text")
        if text is None:
            raise ProtocolError(INVALID_PAYLOAD, "twilio sends JSON text frames only")
        event = stream.feed(text)
        if isinstance(event, TwilioStarted):
            if not rt.settings.twilio_auth_token and not rt.auth.check(event.custom.get("token")):
                raise ProtocolError(POLICY_VIOLATION, "missing or wrong token parameter")
            call_id = event.custom.get("call_id") or event.call_sid
            if not _valid_call_id(call_id):
                raise ProtocolError(POLICY_VIOLATION, "callSid/call_id is not a valid call id")
            meta = CallMeta(call_id, "twilio", event.custom.get("rep_id"), rt.clock.now())
            call.session = await _open_session(rt, meta, event.speakers, event.vocabulary)
        elif isinstance(event, TwilioStopped):
            if session is not None:
                await session.feed(stream.flush())
                await _close_session(rt, session, "ended", event.reason)
                call.session = None
            await ws.close(1000, "stream stopped")
            return
        elif event is not None and session is not None:
            await session.feed(event)


async def _open_session(
    rt: Runtime, meta: CallMeta, speakers: tuple[Any, ...], vocabulary: tuple[str, ...] = ()
) -> CallSession:
    if meta.call_id in rt.sessions:
        raise ProtocolError(POLICY_VIOLATION, f"call {meta.call_id} is already streaming")
    session = CallSession(meta, speakers, rt.engines, rt.store, rt.bus, vocabulary)
    rt.sessions[meta.call_id] = session
    try:
        await session.start()
    except BaseException:
        rt.sessions.pop(meta.call_id, None)
        raise
    return session


async def _close_session(rt: Runtime, session: CallSession, state: Any, detail: str) -> None:
    try:
        await asyncio.shield(session.finish(state, detail))
    finally:
        rt.sessions.pop(session.call_id, None)


async def _receive(ws: WebSocket, idle_timeout_s: float) -> Message | None:
    """The next message, or None when the peer has been silent for ``idle_timeout_s``."""
    try:
        return await asyncio.wait_for(ws.receive(), idle_timeout_s)
    except TimeoutError:
        return None


def _is_stop(text: str | None) -> bool:
    if text is None:
        return False
    try:
        msg = json.loads(text)
    except json.JSONDecodeError:
        return False
    return isinstance(msg, dict) and msg.get("type") == "stop"


async def _safe_close(ws: WebSocket, code: int, reason: str) -> None:
    if ws.application_state != WebSocketState.DISCONNECTED:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await ws.close(code, reason)


async def _viewer(rt: Runtime, ws: WebSocket, call_id: str) -> None:
    """History from the store, then live events; durable events are never sent twice. The
    socket closes with 1000 when the call ends, 1013 if the viewer falls too far behind, and
    4404 "unknown call id '...'" when the call is neither stored nor live and does not start
    within ``?wait_s=`` seconds (default 300; 0: the call must exist already)."""
    wait_s = _wait_s(ws.query_params.get("wait_s"))
    if wait_s is None:
        await _safe_close(
            ws,
            POLICY_VIOLATION,
            f"wait_s must be a number of seconds in [0, {VIEWER_WAIT_MAX_S:g}]",
        )
        return
    sub = rt.bus.subscribe(call_id)
    sender = asyncio.create_task(_send_events(rt, ws, call_id, sub, wait_s))
    reader = asyncio.create_task(_viewer_messages(rt, ws, call_id))
    try:
        done, _ = await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
        if sender in done and sender.exception() is None:
            await _safe_close(ws, *sender.result())
    finally:
        for task in (sender, reader):
            task.cancel()
        for task in (sender, reader):
            # A viewer that goes away mid-send (OSError: uvicorn's ClientDisconnected) is
            # routine, not a server error.
            with contextlib.suppress(
                asyncio.CancelledError, WebSocketDisconnect, RuntimeError, OSError
            ):
                await task
        sub.close()


def _wait_s(raw: str | None) -> float | None:
    if raw is None:
        return VIEWER_WAIT_S
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if 0 <= value <= VIEWER_WAIT_MAX_S else None


async def _send_events(
    rt: Runtime, ws: WebSocket, call_id: str, sub: Subscription, wait_s: float
) -> tuple[int, str]:
    """Send the call's events; returns the close code and reason."""
    last_seq = 0
    try:
        stored = await rt.store.events(call_id)
        known = True
    except LookupError:
        stored, known = [], call_id in rt.sessions
    for old in stored:
        last_seq = max(last_seq, int(old.get("seq", 0)))
        await ws.send_json(old)
    if known and call_id not in rt.sessions and await _call_over(rt, call_id):
        return 1000, "call ended"  # a finished call: its history is all there is
    if not known:  # subscribed before the lookup, so a call starting meanwhile is not missed
        try:
            event = await asyncio.wait_for(sub.get(), wait_s)
        except TimeoutError:
            return NOT_FOUND, f"unknown call id {call_id!r}"
    else:
        event = await sub.get()
    while event is not None:
        if "seq" not in event or event["seq"] > last_seq:
            await ws.send_json(event)
        event = await sub.get()
    if sub.overflowed:
        return 1013, "viewer too slow: reconnect to resume"
    return 1000, "call ended"


async def _call_over(rt: Runtime, call_id: str) -> bool:
    try:
        return (await rt.store.get_call(call_id)).status != "live"
    except LookupError:
        return False


async def _viewer_messages(rt: Runtime, ws: WebSocket, call_id: str) -> None:
    """Messages from the rep's page (card actions) go to the live session, wherever it is."""
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return
        session = rt.sessions.get(call_id)
        text = msg.get("text")
        if text is None:
            continue
        try:
            payload = json.loads(text)
        except json.JSONDecodeError:
            await ws.send_json({"type": "error", "detail": "messages must be JSON"})
            continue
        # the call is live here, on another instance (the bus carries it there), or nowhere
        replies = await (session.act(payload) if session else rt.bus.act(call_id, payload))
        if replies is None:
            await ws.send_json({"type": "error", "detail": "call is not live"})
            continue
        for reply in replies:
            await ws.send_json(reply)
