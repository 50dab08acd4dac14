"""The HTTP/WebSocket server: routes, authentication, and one ``CallSession`` per live call.

- ``WS /v1/calls/{call_id}/audio``   native audio in (see ``server.ingest``)
- ``WS /v1/twilio``                  Twilio Media Streams in
- ``WS /v1/calls/{call_id}/events``  the rep's event stream (stored history first, then live;
  an unknown call id closes with 4404 once ``wait_s`` passes without the call starting)
- ``GET /`` the rep's page; ``GET /healthz``; the REST API of ``server.api``; ``GET /v1/stats``
- ``GET /livez``, ``/readyz``, ``/metrics``: ``server.ops``

Every route checks who is asking and that the token's scope and call allow it
(``server.auth``, ``server.access``; the table is in docs/api.md, "Authentication");
``/healthz`` tells only that the process is up. What a peer may send is bounded
(``server.limits``, the ``CUECARD_*`` limit settings): every audio socket reads through ``server.sockets.next_message`` (text size, message rate, a
timeout), counts its audio against the source's pace, and ends its call with the true reason
(``EndState``): ``ended`` (stop message or a normal close), ``interrupted`` (dropped, broken
protocol), ``timed_out``, ``limit_exceeded``, ``server_shutdown`` (the drain, ``server.drain``;
while the server drains, a new call is refused with 1013 "server shutting down"). A call id is
checked before any work, and an ended call's id is refused, never reopened. Every close goes
through ``close_socket``, which cuts the reason to the 123 bytes a close frame holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, WebSocket
from fastapi.responses import HTMLResponse

from server.access import AccessRefused, Authenticator, subprotocol
from server.api import build_router
from server.auth import Forbidden, Grant, Scope, Unauthenticated
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
    SHUTTING_DOWN,
    AudioSocket,
    audio_seconds,
    close_socket,
    dropped,
    next_message,
    now_s,
)
from server.store import CallMeta, CallStore, StoreError
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
    drain_by: float | None = None  # draining: the loop time by which every call must be finished
    _stop: asyncio.Future[None] | None = field(default=None, repr=False)

    def stopping(self) -> asyncio.Future[None]:
        """Done once the shutdown drain asks every audio socket to end its call
        (``server.drain``)."""
        if self._stop is None:
            self._stop = asyncio.get_running_loop().create_future()
        return self._stop

    def audio_socket(self, label: str) -> AudioSocket:
        """A new audio socket's state: this runtime's limits and drain signal."""
        return AudioSocket(label, self.guard(), stop=self.stopping())

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

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        return {"ok": True}

    admin = Depends(rt.auth.requirement("admin", per_call=False))

    @app.get("/v1/stats", dependencies=[admin], tags=["operations"])
    async def stats() -> dict[str, Any]:
        """Load of this server: live calls, the time the Whisper workers have spent
        recognizing since start-up (worker-seconds: over wall time times ``asr_workers`` it is
        the ASR capacity used),
        events that did not reach other instances (Redis bus; 0 on one instance), and the
        asyncio tasks running in the server."""
        scheduler = rt.engines.scheduler
        return {
            "live_calls": len(rt.sessions),
            "asr_busy_s": round(scheduler.busy_s, 3),
            "asr_workers": scheduler.options.workers,
            "asr_dropped_partials": scheduler.dropped_partials,
            "bus_dropped": rt.bus.dropped,
            "tasks": len(asyncio.all_tasks()),  # a leak shows as a count that keeps growing
        }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        body = resources.files("clients").joinpath("web/index.html").read_text()
        return HTMLResponse(body, headers=SECURITY)  # the pages' CSP, nosniff, no framing

    @app.websocket("/v1/calls/{call_id}/audio")
    async def native_audio(ws: WebSocket, call_id: str) -> None:
        if await admitted(rt, ws, "audio:write", call_id):
            await _native(rt, ws, call_id)

    @app.websocket("/v1/twilio")
    async def twilio(ws: WebSocket) -> None:
        await ws.accept()
        await _twilio(rt, ws)

    @app.websocket("/v1/calls/{call_id}/events")
    async def events(ws: WebSocket, call_id: str) -> None:
        if grant := await admitted(rt, ws, "events:read", call_id):
            await serve_viewer(rt, ws, call_id, grant)

    app.include_router(
        build_router(
            rt.store,
            auth=rt.auth.requirement,
            fallback=rt.engines.summarizer,
            webhooks=rt.engines.webhooks,
        )
    )
    from server import sources  # AudioHook and Vonage; imports this module, so not at the top

    sources.register(app, rt)
    from server import pages  # /manager and the pages' scripts

    pages.register(app, rt)
    from server import ops  # /livez, /readyz, /metrics

    ops.register(app, rt, auth=rt.auth.requirement("admin", per_call=False))
    from server import webrtc  # WebRTC and the softphone page (imports this module too)

    webrtc.register(app, rt)
    return app


async def admitted(rt: Runtime, ws: WebSocket, scope: Scope, call_id: str) -> Grant | None:
    """Accept the socket (selecting the ``cuecard.bearer`` subprotocol when it was offered),
    then close it with 1008 and the reason unless its token allows ``scope`` on ``call_id``:
    a close reason can only be sent on an accepted socket."""
    await ws.accept(subprotocol=subprotocol(ws))
    try:
        return rt.auth.authorize(ws, scope, call_id)
    except (Unauthenticated, Forbidden) as err:
        await close_socket(ws, POLICY_VIOLATION, str(err))
        return None


async def _serve_audio(rt: Runtime, ws: WebSocket, call: AudioSocket, run: Awaitable[None]) -> None:
    """Run an audio socket's loop; a protocol error or a crash ends its call (stored,
    summarized, handed off) with the error's end state, and a protocol error closes the
    socket with its code and reason."""
    try:
        await run
    except ProtocolError as err:
        if not isinstance(err, AccessRefused):  # (that is logged where refused, rate-limited)
            log.warning("%s: closing audio socket: %s", call.label, err.reason)
        await _end(rt, call, err.end_state, err.reason)
        await close_socket(ws, err.code, err.reason)
    except BaseException:
        await _end(rt, call, "interrupted", "server error")
        raise


async def _native(rt: Runtime, ws: WebSocket, call_id: str) -> None:
    call = rt.audio_socket(f"call {call_id}")
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
    if rt.auth.twilio is not None:  # signed over the URL with its one-use nonce and ts
        query = ws.scope.get("query_string", b"").decode("latin-1")
        signature = ws.headers.get("x-twilio-signature")
        refusal = rt.auth.twilio.refusal(query, signature, rt.clock.now())
        if refusal is not None:
            rt.auth.refused(ws, refusal)
            await close_socket(ws, POLICY_VIOLATION, refusal)
            return
    call = rt.audio_socket("twilio stream")
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
            call.session = await _open_twilio(rt, ws, event)
        elif isinstance(event, TwilioStopped):
            if call.session is not None:
                await call.session.feed(stream.flush())
                await _end(rt, call, "ended", event.reason)
            await close_socket(ws, 1000, "stream stopped")
            return
        elif event is not None and call.session is not None:
            call.guard.audio(audio_seconds(event, 2), now_s())
            await call.session.feed(event)


async def _open_twilio(rt: Runtime, ws: WebSocket, event: TwilioStarted) -> CallSession:
    """Without ``CUECARD_TWILIO_AUTH_TOKEN`` (no signed upgrade) the start's ``token``
    parameter must allow ``audio:write`` on the call."""
    call_id = event.custom.get("call_id") or event.call_sid
    if not valid_call_id(call_id):
        raise ProtocolError(POLICY_VIOLATION, f"callSid/call_id: {CALL_ID_RULE}")
    if rt.auth.twilio is None:
        try:
            rt.auth.authorize(ws, "audio:write", call_id, event.custom.get("token") or "")
        except (Unauthenticated, Forbidden) as err:
            raise AccessRefused(f"token parameter: {err}") from None
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
    if rt.draining:  # its socket loop sees the drain's stop next and closes with 1013
        raise LimitExceeded(TRY_AGAIN_LATER, SHUTTING_DOWN)
    if call_id in rt.sessions:
        raise ProtocolError(POLICY_VIOLATION, f"call {call_id} is already streaming")
    if len(rt.sessions) >= rt.settings.max_calls:
        rt.engines.metrics.refused("capacity")
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
    except StoreError as exc:  # Redis down: no new call until the store is back
        raise ProtocolError(TRY_AGAIN_LATER, f"call storage unavailable: {exc}") from exc
    if record.status == "live":  # another instance streams it (or a dead one left it live)
        raise ProtocolError(POLICY_VIOLATION, f"call {call_id} is already streaming")
    raise ProtocolError(POLICY_VIOLATION, f"call id {call_id} was used by an ended call")


async def _end(rt: Runtime, call: AudioSocket, state: EndState, detail: str) -> None:
    """End the socket's call, if one is open (once)."""
    session, call.session = call.session, None
    if session is not None:
        await _close_session(rt, session, state, detail)


async def _close_session(rt: Runtime, session: CallSession, state: EndState, detail: str) -> None:
    """Finish the call (within the drain's deadline when the server is draining)."""
    try:
        await asyncio.shield(session.finish(state, detail, by=rt.drain_by))
    finally:
        rt.sessions.pop(session.call_id, None)
