"""The HTTP/WebSocket server: routes, authentication, and one ``CallSession`` per live call.

- ``WS /v1/calls/{call_id}/audio``   native audio in (see ``server.ingest``)
- ``WS /v1/twilio``                  Twilio Media Streams in
- ``WS /v1/calls/{call_id}/events``  the rep's event stream (stored history first, then live;
  an unknown call id closes with 4404 once ``wait_s`` passes without the call starting)
- ``GET /`` the rep's page; ``GET /healthz``; the REST API of ``server.api``; ``GET /v1/stats``

Every route checks who is asking (``server.auth``); ``/healthz`` tells only that the process
is up. What a peer may send is bounded (``server.limits``, the ``CUECARD_*`` limit settings):
every audio socket reads through ``server.sockets.next_message`` (text size, message rate, a
timeout), counts its audio against the source's pace, and ends its call with the true reason
(``EndState``): ``ended`` (stop message or a normal close), ``interrupted`` (dropped, broken
protocol), ``timed_out``, ``limit_exceeded``. A call id is checked before any work, and an
ended call's id is refused, never reopened. Every close goes through ``close_socket``, which
cuts the reason to the 123 bytes a close frame holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, WebSocket
from fastapi.responses import HTMLResponse

from server.api import build_router
from server.auth import Authenticator, twilio_signature_valid
from server.bus import Bus
from server.clock import Clock, SystemClock
from server.ingest import (
    INVALID_PAYLOAD,
    POLICY_VIOLATION,
    TRY_AGAIN_LATER,
    LimitExceeded,
    ProtocolError,
    TwilioStarted,
    TwilioStopped,
    TwilioStream,
    decode_native_frame,
    expect_stop,
    native_decoder,
    parse_native_start,
)
from server.limits import CALL_ID_RULE, InputGuard, InputLimits, valid_call_id
from server.pages import SECURITY
from server.session import CallSession, Engines
from server.settings import Settings
from server.sockets import (
    AudioSocket,
    audio_seconds,
    close_socket,
    dropped,
    next_message,
    now_s,
)
from server.store import CallMeta, CallStore
from server.viewers import serve_viewer
from server.wire import EndState

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    engines: Engines
    store: CallStore
    bus: Bus
    auth: Authenticator
    clock: Clock = field(default_factory=SystemClock)
    sessions: dict[str, CallSession] = field(default_factory=dict)
    viewers: dict[str, int] = field(default_factory=dict)  # events sockets open per call
    draining: bool = False  # SIGTERM: no new calls; /readyz fails

    def guard(self, *, viewer: bool = False) -> InputGuard:
        """The limits of one audio socket, or of one viewer's messages."""
        s = self.settings
        text_bytes, name = (
            (s.max_viewer_message_bytes, "CUECARD_MAX_VIEWER_MESSAGE_BYTES")
            if viewer
            else (s.max_text_bytes, "CUECARD_MAX_TEXT_BYTES")
        )
        limits = InputLimits(
            text_bytes, s.max_messages_per_s, s.max_audio_speed, s.audio_burst_s, name
        )
        return InputGuard(limits)


def build_app(rt: Runtime) -> FastAPI:
    app = FastAPI(
        title="Cuecard",
        version="0.1.0",
        description="Live coaching for sales calls",
        docs_url=None,  # /docs is server/pages.py's: Swagger UI from the package, no CDN
        redoc_url=None,
        max_body_size=rt.settings.max_body_bytes,  # more: 413
    )
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
        events that did not reach other instances (Redis bus; 0 on one instance), and the
        asyncio tasks running in the server."""
        scheduler = rt.engines.scheduler
        return {
            "live_calls": len(rt.sessions),
            "asr_busy_s": round(scheduler.busy_s, 3),
            "asr_dropped_partials": scheduler.dropped_partials,
            "bus_dropped": rt.bus.dropped,
            "tasks": len(asyncio.all_tasks()),  # a leak shows as a count that keeps growing
        }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        body = resources.files("clients").joinpath("web/index.html").read_text()
        return HTMLResponse(body, headers=SECURITY)  # the pages' CSP, nosniff, no framing

    async def admitted(ws: WebSocket) -> bool:
        """Accept the socket, then close it with 1008 unless the token is right: a close
        reason can only be sent on an accepted socket."""
        await ws.accept()
        if rt.auth.allows(ws):
            return True
        await close_socket(ws, POLICY_VIOLATION, "missing or wrong token")
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
            await serve_viewer(rt, ws, call_id)

    app.include_router(build_router(rt.store, auth=require_token, fallback=rt.engines.summarizer))
    from server import sources  # AudioHook and Vonage; imports this module, so not at the top

    sources.register(app, rt)
    from server import pages  # /manager and the pages' scripts

    pages.register(app, rt)
    from server import webrtc  # WebRTC and the softphone page (imports this module too)

    webrtc.register(app, rt)
    return app


async def _serve_audio(rt: Runtime, ws: WebSocket, call: AudioSocket, run: Awaitable[None]) -> None:
    """Run an audio socket's loop; a protocol error or a crash ends its call (stored,
    summarized, handed off) with the error's end state, and a protocol error closes the
    socket with its code and reason."""
    try:
        await run
    except ProtocolError as err:
        log.warning("%s: closing audio socket: %s", call.label, err.reason)
        await _end(rt, call, err.end_state, err.reason)
        await close_socket(ws, err.code, err.reason)
    except BaseException:
        await _end(rt, call, "interrupted", "server error")
        raise


async def _native(rt: Runtime, ws: WebSocket, call_id: str) -> None:
    call = AudioSocket(f"call {call_id}", rt.guard())
    await _serve_audio(rt, ws, call, _native_loop(rt, ws, call_id, call))


async def _native_loop(rt: Runtime, ws: WebSocket, call_id: str, call: AudioSocket) -> None:
    if not valid_call_id(call_id):
        raise ProtocolError(POLICY_VIOLATION, CALL_ID_RULE)
    wait_s = rt.settings.start_timeout_s
    first = await next_message(ws, call, wait_s, f"no start message within {wait_s:g} s")
    if first["type"] == "websocket.disconnect":
        return
    start = parse_native_start(first.get("text", first.get("bytes")))
    decoder = native_decoder(start, rt.settings.max_frame_bytes)
    meta = CallMeta(call_id, "native", start.rep_id, rt.clock.now(), dict(start.prior))
    session = call.session = await _open_session(
        rt, meta, decoder.format.speakers, tuple(start.vocabulary)
    )
    await ws.send_json({"type": "started", "call_id": call_id})
    idle_s = rt.settings.idle_timeout_s
    while True:
        msg = await next_message(ws, call, idle_s, f"no audio for {idle_s:g} s")
        if msg["type"] == "websocket.disconnect":
            await _end(rt, call, *dropped(msg))
            return
        if msg.get("bytes") is not None:
            chunks = decode_native_frame(decoder, msg["bytes"])
            call.guard.audio(audio_seconds(chunks, len(decoder.format.speakers)), now_s())
            await session.feed(chunks)
            continue
        expect_stop(msg.get("text") or "")
        await session.feed(decoder.flush())
        await _end(rt, call, "ended", "stop message")
        await close_socket(ws, 1000, "call ended")  # the client may be gone already
        return


async def _twilio(rt: Runtime, ws: WebSocket) -> None:
    """Twilio: nothing is ever sent back on this socket but the close frame."""
    if rt.settings.twilio_auth_token:
        url = rt.settings.public_url.rstrip("/") + "/v1/twilio"
        if not twilio_signature_valid(
            rt.settings.twilio_auth_token, url, ws.headers.get("x-twilio-signature")
        ):
            log.warning("twilio stream rejected: bad X-Twilio-Signature")
            await close_socket(ws, POLICY_VIOLATION, "bad X-Twilio-Signature")
            return
    call = AudioSocket("twilio stream", rt.guard())
    await _serve_audio(rt, ws, call, _twilio_loop(rt, ws, call))


async def _twilio_loop(rt: Runtime, ws: WebSocket, call: AudioSocket) -> None:
    """``start`` must come within ``start_timeout_s`` of the upgrade (``connected`` does not
    keep an unauthenticated socket open), then media at least every ``idle_timeout_s``."""
    stream = TwilioStream(round(rt.settings.twilio_max_gap_s * 1000))
    s = rt.settings
    start_by = now_s() + s.start_timeout_s
    while True:
        if call.session is None:
            wait_s, silent = start_by - now_s(), f"no start message within {s.start_timeout_s:g} s"
        else:
            wait_s, silent = s.idle_timeout_s, f"no media for {s.idle_timeout_s:g} s"
        msg = await next_message(ws, call, wait_s, silent)
        if msg["type"] == "websocket.disconnect":
            if call.session is not None:
                await call.session.feed(stream.flush())
                await _end(rt, call, *dropped(msg, "twilio socket closed"))
            return
        text = msg.get("text")
        if text is None:
            raise ProtocolError(INVALID_PAYLOAD, "twilio sends JSON text frames only")
        event = stream.feed(text)
        if isinstance(event, TwilioStarted):
            call.session = await _open_twilio(rt, event)
        elif isinstance(event, TwilioStopped):
            if call.session is not None:
                await call.session.feed(stream.flush())
                await _end(rt, call, "ended", event.reason)
            await close_socket(ws, 1000, "stream stopped")
            return
        elif event is not None and call.session is not None:
            call.guard.audio(audio_seconds(event, 2), now_s())
            await call.session.feed(event)


async def _open_twilio(rt: Runtime, event: TwilioStarted) -> CallSession:
    if not rt.settings.twilio_auth_token and not rt.auth.check(event.custom.get("token")):
        raise ProtocolError(POLICY_VIOLATION, "missing or wrong token parameter")
    call_id = event.custom.get("call_id") or event.call_sid
    if not valid_call_id(call_id):
        raise ProtocolError(POLICY_VIOLATION, f"callSid/call_id: {CALL_ID_RULE}")
    meta = CallMeta(call_id, "twilio", event.custom.get("rep_id"), rt.clock.now())
    return await _open_session(rt, meta, event.speakers, event.vocabulary)


async def _open_session(
    rt: Runtime, meta: CallMeta, speakers: tuple[Any, ...], vocabulary: tuple[str, ...] = ()
) -> CallSession:
    """A new call: its id valid and free (not live here, not stored: an ended call's id is
    never reused, so two calls are never merged), within ``max_calls``."""
    call_id = meta.call_id
    if not valid_call_id(call_id):
        raise ProtocolError(POLICY_VIOLATION, CALL_ID_RULE)
    if call_id in rt.sessions:
        raise ProtocolError(POLICY_VIOLATION, f"call {call_id} is already streaming")
    if len(rt.sessions) >= rt.settings.max_calls:
        raise LimitExceeded(
            TRY_AGAIN_LATER,
            f"server at capacity: {len(rt.sessions)} live calls (CUECARD_MAX_CALLS)",
        )
    session = CallSession(meta, speakers, rt.engines, rt.store, rt.bus, vocabulary)
    rt.sessions[call_id] = session  # held before the first await: one stream per id
    try:
        await _refuse_used_id(rt, call_id)
        await session.start()
    except BaseException:
        rt.sessions.pop(call_id, None)
        raise
    return session


async def _refuse_used_id(rt: Runtime, call_id: str) -> None:
    try:
        record = await rt.store.get_call(call_id)
    except LookupError:
        return
    if record.status == "live":  # another instance streams it (or a dead one left it live)
        raise ProtocolError(POLICY_VIOLATION, f"call {call_id} is already streaming")
    raise ProtocolError(POLICY_VIOLATION, f"call id {call_id} was used by an ended call")


async def _end(rt: Runtime, call: AudioSocket, state: EndState, detail: str) -> None:
    """End the socket's call, if one is open (once)."""
    session, call.session = call.session, None
    if session is not None:
        await _close_session(rt, session, state, detail)


async def _close_session(rt: Runtime, session: CallSession, state: EndState, detail: str) -> None:
    try:
        await asyncio.shield(session.finish(state, detail))
    finally:
        rt.sessions.pop(session.call_id, None)
