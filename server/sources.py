"""The socket loops of two more call sources, on the app's routes (``register(app, rt)``):

- ``WS /v1/audiohook``  Genesys Cloud AudioHook Monitor (``server.audiohook``), authenticated
  by the upgrade's HTTP message signature against ``CUECARD_AUDIOHOOK_KEYS``
  (``server.audiohook_auth``), or when no keys are configured by a token with
  ``audio:write`` (``Authorization: Bearer``) on the call, the AudioHook ``conversationId``.
- ``WS /v1/vonage``     Vonage Voice WebSockets (``server.vonage``), authenticated by a token
  with ``audio:write`` on the call: a ``token`` header in the first message (the NCCO's
  ``headers``), else ``Authorization: Bearer`` on the upgrade.

An AudioHook session that breaks the protocol (or fails authentication) is answered with
``disconnect`` and a reason; the client then has ``CLOSE_GRACE_S`` for its ``close``, which is
answered with ``closed``, and the socket closes with the error's code either way. A call that
was open ends ``interrupted``. The shutdown drain finishes the call first (``server_shutdown``),
then sends ``disconnect`` (``completed``, "server shutting down") and closes with 1001. A Vonage error closes the socket with a code and a reason, as on
the native and Twilio sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from server.access import AccessRefused, subprotocol
from server.app import Runtime, _close_session, _end, _open_session, _serve_audio
from server.audiohook import AudioHookStream, Closing, DisconnectReason, Opening
from server.audiohook_auth import SignatureRefused, SignatureVerifier, parse_keys
from server.auth import Forbidden, Grant, Unauthenticated
from server.ingest import (
    INVALID_PAYLOAD,
    POLICY_VIOLATION,
    UNSUPPORTED_DATA,
    ProtocolError,
    split_vocabulary,
)
from server.limits import CALL_ID_RULE, valid_call_id
from server.sockets import (
    GOING_AWAY,
    SHUTTING_DOWN,
    AudioSocket,
    ShuttingDown,
    audio_seconds,
    close_socket,
    dropped,
    next_message,
    now_s,
    receive,
)
from server.store import CallMeta
from server.vonage import VonageStream

log = logging.getLogger(__name__)

CLOSE_GRACE_S = 5.0  # after our disconnect, how long the client has for its close


def register(app: FastAPI, rt: Runtime) -> None:
    keys = parse_keys(rt.settings.audiohook_keys)
    verifier = SignatureVerifier(keys, rt.clock.now) if keys else None

    @app.websocket("/v1/audiohook")
    async def audiohook(ws: WebSocket) -> None:
        await ws.accept(subprotocol=subprotocol(ws))
        await _audiohook(rt, ws, verifier)

    @app.websocket("/v1/vonage")
    async def vonage(ws: WebSocket) -> None:
        await ws.accept(subprotocol=subprotocol(ws))
        call = rt.audio_socket("vonage stream")
        await _serve_audio(rt, ws, call, _vonage_loop(rt, ws, call))


# -- AudioHook ------------------------------------------------------------------------------
def _refusal(
    rt: Runtime, ws: WebSocket, verifier: SignatureVerifier | None
) -> tuple[Grant | None, str | None]:
    """The upgrade's token grant (None: signed), and why it is not let in (or None)."""
    if verifier is None:
        try:  # the call is known at `open`: checked again then
            return rt.auth.authorize(ws, "audio:write", None), None
        except (Unauthenticated, Forbidden) as err:
            return None, str(err)
    headers = {k: ", ".join(ws.headers.getlist(k)) for k in ws.headers}
    raw_path = ws.scope.get("raw_path") or ws.scope["path"].encode()
    query = ws.scope.get("query_string", b"")
    target = raw_path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
    try:
        verifier.verify(headers, target)
    except SignatureRefused as err:
        return None, str(err)
    return None, None


async def _audiohook(rt: Runtime, ws: WebSocket, verifier: SignatureVerifier | None) -> None:
    stream = AudioHookStream(rt.settings.max_frame_bytes, ws.headers.get("audiohook-session-id"))
    grant, refusal = _refusal(rt, ws, verifier)
    if refusal is not None:
        if verifier is not None:  # (a token's refusal is logged already)
            rt.auth.refused(ws, f"audiohook signature: {refusal}")
        await _wind_down(ws, stream, "unauthorized", refusal, POLICY_VIOLATION)
        return
    call = rt.audio_socket("audiohook session")
    try:
        await _audiohook_loop(rt, ws, stream, call, grant)
    except ShuttingDown as err:  # the drain: the call is finished first, then let go
        await _end(rt, call, err.end_state, SHUTTING_DOWN)
        reason: DisconnectReason = "completed" if err.code == GOING_AWAY else "error"
        await _wind_down(ws, stream, reason, SHUTTING_DOWN, err.code)
    except ProtocolError as err:
        if not isinstance(err, AccessRefused):  # (that is logged where refused, rate-limited)
            log.warning("%s: disconnecting: %s", call.label, err.reason)
        try:
            await _wind_down(ws, stream, "error", err.reason, err.code)
        finally:
            await _end(rt, call, err.end_state, err.reason)
    except BaseException:
        await _end(rt, call, "interrupted", "server error")
        raise


async def _audiohook_loop(
    rt: Runtime, ws: WebSocket, stream: AudioHookStream, call: AudioSocket, grant: Grant | None
) -> None:
    """``open`` must come within ``start_timeout_s``, then any message (audio, ``ping``)
    at least every ``idle_timeout_s``."""
    s = rt.settings
    open_by = now_s() + s.start_timeout_s
    while True:
        if stream.opening is None:
            wait_s, silent = open_by - now_s(), f"no open message within {s.start_timeout_s:g} s"
        else:
            wait_s, silent = s.idle_timeout_s, f"no message for {s.idle_timeout_s:g} s"
        msg = await next_message(ws, call, wait_s, silent)
        if msg["type"] == "websocket.disconnect":
            detail = "audiohook socket closed without a close transaction"
            await _end(rt, call, "interrupted", detail)
            return
        if msg.get("bytes") is not None:
            chunks = stream.feed_audio(msg["bytes"])
            channels = len(stream.opening.speakers) if stream.opening else 1
            call.guard.audio(audio_seconds(chunks, channels), now_s())
            if call.session is not None:
                await call.session.feed(chunks)
            continue
        step = stream.feed_text(msg.get("text") or "")
        if step.note:
            log.info("%s: %s", call.label, step.note)
        if isinstance(step.event, Opening):
            await _open(rt, ws, stream, step.event, call, grant)
        for reply in step.replies:
            await ws.send_json(reply)
        while chunks := stream.silence():  # a pause or a discard: keep the timeline
            if call.session is not None:
                await call.session.feed(chunks)
        if isinstance(step.event, Closing):
            await _close(rt, ws, stream, call, step.event)
            return


def _check_headers(ws: WebSocket, opening: Opening) -> None:
    """The upgrade's (signed) headers name the same organization and session as ``open``."""
    pairs = (
        ("audiohook-organization-id", opening.organization_id),
        ("audiohook-session-id", opening.session_id),
    )
    for header, value in pairs:
        sent = ws.headers.get(header)
        if sent is not None and sent.strip().lower() != value.lower():
            raise ProtocolError(POLICY_VIOLATION, f"{header} header does not match 'open'")


async def _open(
    rt: Runtime,
    ws: WebSocket,
    stream: AudioHookStream,
    opening: Opening,
    call: AudioSocket,
    grant: Grant | None,
) -> None:
    _check_headers(ws, opening)
    if not opening.probe:  # the connection probe opens and closes, and is no call
        call_id = opening.conversation_id
        if not valid_call_id(call_id):  # pragma: no cover - a UUID always is
            raise ProtocolError(POLICY_VIOLATION, "conversationId is not a valid call id")
        if grant is not None and (refusal := grant.refusal("audio:write", call_id)):
            rt.auth.refused(ws, refusal)
            raise AccessRefused(refusal)
        custom = opening.custom
        rep_id = str(custom["rep_id"])[:200] if custom.get("rep_id") else None
        vocabulary = custom.get("vocabulary")
        names = split_vocabulary(vocabulary) if isinstance(vocabulary, str) else ()
        meta = CallMeta(call_id, "audiohook", rep_id, rt.clock.now())
        call.label = f"audiohook call {call_id}"
        call.session = await _open_session(rt, meta, opening.speakers, names)
    await ws.send_json(stream.opened())


async def _close(
    rt: Runtime, ws: WebSocket, stream: AudioHookStream, call: AudioSocket, closing: Closing
) -> None:
    """``closed`` at once (the client waits for it), then the call drains and ends."""
    tail = stream.flush()
    await ws.send_json(stream.closed())
    await close_socket(ws, 1000, "closed")
    session, call.session = call.session, None
    if session is not None:
        try:
            await session.feed(tail)
        finally:
            clean = closing.reason in ("end", "disconnect")
            detail = f"audiohook close ({closing.reason})"
            await _close_session(rt, session, "ended" if clean else "interrupted", detail)


async def _wind_down(
    ws: WebSocket, stream: AudioHookStream, reason: DisconnectReason, info: str, code: int
) -> None:
    """``disconnect``, then the client's close transaction (bounded), then the socket."""
    message = stream.disconnect(reason, info)
    if message is not None and ws.application_state == WebSocketState.CONNECTED:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await ws.send_json(message)
            await _await_close(ws, stream)
    await close_socket(ws, code, info)


async def _await_close(ws: WebSocket, stream: AudioHookStream) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLOSE_GRACE_S
    while (left := deadline - loop.time()) > 0:
        msg = await receive(ws, left)
        if msg is None or msg["type"] == "websocket.disconnect":
            return
        text = msg.get("text")
        if text is not None and isinstance(stream.feed_text(text).event, Closing):
            await ws.send_json(stream.closed())
            return


# -- Vonage ---------------------------------------------------------------------------------
async def _vonage_loop(rt: Runtime, ws: WebSocket, call: AudioSocket) -> None:
    stream = VonageStream(rt.settings.max_frame_bytes)
    wait_s = rt.settings.start_timeout_s
    silent = f"no websocket:connected message within {wait_s:g} s"
    first = await next_message(ws, call, wait_s, silent)
    if first["type"] == "websocket.disconnect":
        return
    if first.get("text") is None:
        raise ProtocolError(UNSUPPORTED_DATA, "first message must be JSON websocket:connected")
    started = stream.feed_text(first["text"])
    if started is None:  # pragma: no cover - the first message starts or raises
        raise ProtocolError(INVALID_PAYLOAD, "first message must be websocket:connected")
    if not valid_call_id(started.call_id):
        raise ProtocolError(POLICY_VIOLATION, f"call_id: {CALL_ID_RULE}")
    try:  # the first message's token, else the upgrade's
        rt.auth.authorize(ws, "audio:write", started.call_id, started.token or None)
    except (Unauthenticated, Forbidden) as err:
        raise AccessRefused(str(err)) from None
    meta = CallMeta(started.call_id, "vonage", started.rep_id, rt.clock.now())
    call.label = f"vonage call {started.call_id}"
    session = call.session = await _open_session(rt, meta, (started.speaker,), started.vocabulary)
    idle_s = rt.settings.idle_timeout_s
    while True:
        msg = await next_message(ws, call, idle_s, f"no audio for {idle_s:g} s")
        if msg["type"] == "websocket.disconnect":
            await session.feed(stream.flush())
            await _end(rt, call, *dropped(msg, "vonage socket closed"))
            return
        if msg.get("bytes") is not None:
            chunks = stream.feed_audio(msg["bytes"])
            call.guard.audio(audio_seconds(chunks, 1), now_s())
            await session.feed(chunks)
        else:
            stream.feed_text(msg.get("text") or "")
