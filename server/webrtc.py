"""WebRTC ingest: a browser softphone (or any WebRTC peer) sends the call's audio tracks.

Routes (``register(app, rt)``):

- ``POST /v1/calls/{call_id}/webrtc``  the offer ``{"type": "offer", "sdp": ..., "speakers":
  ["rep", "customer"]}`` (one speaker per audio m-line, in m-line order; ``rep_id``,
  ``prior``, ``vocabulary`` as in a native start), answered ``{"type": "answer", "sdp": ...}``
  once ICE gathering is done (no trickle). The token (``Authorization: Bearer``) needs
  ``audio:write`` on the call. Refusals are JSON ``{"detail": ...}``: 400 malformed offer,
  invalid SDP, no audio, a non-audio or non-sending m-line, tracks and speakers that do not
  match, no common codec, a bad call id; 401 no or an invalid token; 403 a token without
  ``audio:write`` on the call; 409 the call id is streaming or was used by an ended call;
  413 a body over 128 kB; 503 the server is at ``CUECARD_MAX_CALLS`` or shutting down.
- ``GET /v1/webrtc/config``  the ICE servers the page should use (``CUECARD_ICE_SERVERS``);
  a token with ``audio:write`` (on any call).
- ``GET /softphone``  the browser softphone (``clients/web/softphone.html``, its scripts
  under ``/softphone/``): WebRTC, or 16-bit PCM from an AudioWorklet over the native socket.

Media: aiortc decodes each track (Opus 48 kHz, or G.722/PCMU/PCMA) and the call's
``audio.tracks.TrackTimeline`` puts every track on one timeline and resamples it to 16 kHz with
the project's resampler; the chunks enter the call's ``CallSession`` like any socket's.

A call ends ``ended`` when every track has ended (the peer closed the connection or stopped
its tracks), ``timed_out`` when a track has sent nothing for ``idle_timeout_s`` (the detail
says whether it never sent anything: ICE or DTLS never got through, or a dead track),
``limit_exceeded`` when a track sends audio faster than ``CUECARD_MAX_AUDIO_SPEED`` allows
(WebRTC is real time; a flood is no softphone), and ``interrupted`` for audio that cannot be
decoded. The shutdown drain stops reading the tracks: the peer connection is closed and the
call finished ``server_shutdown`` (its utterances final, its summary written); while the server
drains, an offer is refused with 503 "server shutting down". A shutdown without the drain
cancels the call's task: the peer connection is closed and the server's shutdown finishes the
call (``interrupted``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources

import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.exceptions import InvalidAccessError, InvalidStateError, OperationError
from aiortc.mediastreams import MediaStreamError
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from audio.chunk import AudioChunk
from audio.codec import AudioFormatError
from audio.tracks import TimelineOptions, TrackFrame, TrackTimeline
from server.app import Runtime, _close_session, _open_session
from server.auth import Forbidden, Unauthenticated
from server.ingest import LimitExceeded, ProtocolError
from server.limits import CALL_ID_RULE, InputGuard, InputLimits, valid_call_id
from server.session import CallSession
from server.sockets import SHUTTING_DOWN
from server.store import CallMeta
from server.webrtc_offer import (
    IceServer,
    OfferRefused,
    WebRtcOffer,
    audio_tracks,
    parse_ice_servers,
    parse_offer,
)
from server.wire import EndState

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 128 * 1024
SCRIPTS = ("softphone.js", "pcm-worklet.js")  # clients/web/, served under /softphone/
PAGE_HEADERS = {  # the page holds no data; the token stays in the URL fragment
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
}
CLOSE_TIMEOUT_S = 5.0  # closing a peer connection: DTLS alert and transports, normally ms
# at shutdown the event loop is cancelling aiortc's own tasks too, and a close can wait on them
# until its timeout: the process is ending, so it gets only this long
SHUTDOWN_CLOSE_S = 0.5
Outcome = tuple[EndState, str]
Feed = Callable[[list[AudioChunk]], Awaitable[None]]  # CallSession.feed in the server


def register(app: FastAPI, rt: Runtime) -> None:
    calls = WebRtcCalls(rt, parse_ice_servers(rt.settings.ice_servers))
    app.state.webrtc = calls

    @app.post(
        "/v1/calls/{call_id}/webrtc",
        tags=["audio"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": WebRtcOffer.model_json_schema()}},
            }
        },
    )
    async def webrtc_offer(call_id: str, request: Request) -> JSONResponse:
        """A WebRTC offer for the call's audio, answered by the server (see ``docs/api.md``)."""
        if (refused := _refused(rt, request, call_id)) is not None:
            return refused
        try:
            sdp = await calls.answer(call_id, await _body(request))
        except OfferRefused as err:
            log.info("call %r: webrtc offer refused: %s", call_id[:128], err.detail)
            return JSONResponse({"detail": err.detail}, err.status)
        return JSONResponse({"type": "answer", "sdp": sdp})

    @app.get("/v1/webrtc/config", tags=["audio"])
    async def webrtc_config(request: Request) -> JSONResponse:
        """The ICE servers a softphone should use (``CUECARD_ICE_SERVERS``; none on a LAN)."""
        if (refused := _refused(rt, request, None)) is not None:
            return refused
        return JSONResponse({"ice_servers": [s.as_json() for s in calls.ice_servers]})

    @app.get("/softphone", response_class=HTMLResponse, include_in_schema=False)
    async def softphone() -> HTMLResponse:
        return HTMLResponse(_asset("softphone.html"), headers=PAGE_HEADERS)

    @app.get("/softphone/{name}", include_in_schema=False)
    async def softphone_script(name: str) -> Response:
        if name not in SCRIPTS:
            return JSONResponse({"detail": f"no softphone file {name!r}"}, 404)
        return Response(_asset(name), media_type="text/javascript", headers=PAGE_HEADERS)


def _refused(rt: Runtime, request: Request, call_id: str | None) -> JSONResponse | None:
    """401/403 unless the token allows ``audio:write`` on ``call_id`` (None: on some call)."""
    try:
        rt.auth.authorize(request, "audio:write", call_id)
    except Unauthenticated as err:
        return JSONResponse({"detail": str(err)}, 401, headers={"WWW-Authenticate": "Bearer"})
    except Forbidden as err:
        return JSONResponse({"detail": str(err)}, 403)
    return None


def _asset(name: str) -> str:
    return resources.files("clients").joinpath(f"web/{name}").read_text()


async def _body(request: Request) -> bytes:
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > MAX_BODY_BYTES:
            raise OfferRefused(413, f"the offer is over {MAX_BODY_BYTES // 1024} kB")
    return bytes(body)


@dataclass(slots=True)
class Negotiated:
    """An answered offer: the peer connection and its remote audio tracks in m-line order."""

    pc: RTCPeerConnection
    tracks: list[MediaStreamTrack]
    answer_sdp: str


async def negotiate(offer: WebRtcOffer, ice_servers: tuple[IceServer, ...]) -> Negotiated:
    """Answer ``offer`` (non-trickle: the answer carries the gathered candidates). The peer
    connection is closed again before any ``OfferRefused`` leaves."""
    n_tracks = audio_tracks(offer)
    servers = [RTCIceServer(list(s.urls), s.username, s.credential) for s in ice_servers]
    pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))  # [] : no STUN lookups
    try:
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
        except OperationError as err:
            raise OfferRefused(
                400, f"no common audio codec ({err}): offer opus, G722, PCMU or PCMA"
            ) from err
        except (ValueError, InvalidAccessError, InvalidStateError) as err:
            raise OfferRefused(400, f"invalid SDP offer: {err}") from err
        tracks = [t.receiver.track for t in pc.getTransceivers() if t.kind == "audio"]
        if len(tracks) != n_tracks:  # pragma: no cover - aiortc makes one per m-line
            raise OfferRefused(400, "invalid SDP offer: its audio m-lines could not be read")
        await pc.setLocalDescription(await pc.createAnswer())
        return Negotiated(pc, tracks, pc.localDescription.sdp)
    except BaseException:
        await close_peer(pc)
        raise


async def close_peer(pc: RTCPeerConnection, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout_s):
            await pc.close()


@dataclass
class WebRtcCalls:
    """The live WebRTC calls of this server: each runs in a task of its own after the answer."""

    rt: Runtime
    ice_servers: tuple[IceServer, ...]
    timeline: TimelineOptions = field(default_factory=TimelineOptions)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def answer(self, call_id: str, body: bytes) -> str:
        """The answer's SDP; the call is live from here on."""
        if not valid_call_id(call_id):
            raise OfferRefused(400, CALL_ID_RULE)
        if self.rt.draining:
            raise OfferRefused(503, SHUTTING_DOWN)
        offer = parse_offer(body)
        audio_tracks(offer)  # before any peer connection or call exists
        if call_id in self.rt.sessions:
            raise OfferRefused(409, f"call {call_id} is already streaming")
        neg = await negotiate(offer, self.ice_servers)
        meta = CallMeta(call_id, "webrtc", offer.rep_id, self.rt.clock.now(), dict(offer.prior))
        try:
            session = await _open_session(
                self.rt, meta, offer.track_speakers, tuple(offer.vocabulary)
            )
        except ProtocolError as err:  # the id is taken (live or ended), or no capacity
            await close_peer(neg.pc)
            raise OfferRefused(503 if isinstance(err, LimitExceeded) else 409, err.reason) from err
        except BaseException:
            await close_peer(neg.pc)
            raise
        timeline = TrackTimeline(offer.track_speakers, self.timeline)
        task = asyncio.create_task(self._run(neg, session, timeline), name=f"webrtc-{call_id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return neg.answer_sdp

    async def _run(self, neg: Negotiated, session: CallSession, timeline: TrackTimeline) -> None:
        outcome: Outcome = ("interrupted", "server error")
        try:
            opts = StreamOptions(self.rt.settings.idle_timeout_s, self.rt.guard().limits)
            outcome = await _unless_stopped(
                stream_tracks(neg, timeline, session.feed, opts), self.rt.stopping()
            )
            await session.feed(timeline.flush())
        except asyncio.CancelledError:  # shutdown without the drain: close_runtime finishes it
            await close_peer(neg.pc, SHUTDOWN_CLOSE_S)
            raise
        except AudioFormatError as err:
            outcome = ("interrupted", f"unusable audio: {err}")
        except Exception:
            log.exception("call %s: webrtc media failed", session.call_id)
        await close_peer(neg.pc)
        log.info("call %s: webrtc call over: %s", session.call_id, outcome[1])
        await _close_session(self.rt, session, *outcome)


async def _unless_stopped(streaming: Awaitable[Outcome], stop: asyncio.Future[None]) -> Outcome:
    """The call's outcome, or ``server_shutdown`` when the drain's ``stop`` comes first (the
    tracks stop being read; what was read is in the call)."""
    task = asyncio.ensure_future(streaming)
    try:
        waits: set[asyncio.Future[Outcome] | asyncio.Future[None]] = {task, stop}
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})  # cancelled: ours (if we are) is still raised
    if task.cancelled():
        return "server_shutdown", SHUTTING_DOWN
    return task.result()


@dataclass(frozen=True, slots=True)
class StreamOptions:
    idle_s: float = 30.0  # a track silent this long ends the call
    limits: InputLimits | None = None  # each track's audio pace (max_audio_speed); None: free

    def __post_init__(self) -> None:
        if not self.idle_s > 0:
            raise ValueError("idle_s must be > 0")


async def stream_tracks(
    neg: Negotiated, timeline: TrackTimeline, feed: Feed, opts: StreamOptions
) -> Outcome:
    """Read every track into ``feed`` until they have all ended (``ended``), one is silent
    for ``idle_s`` (``timed_out``) or sends faster than real time allows
    (``limit_exceeded``); returns the call's closing state and why."""
    readers = [
        asyncio.create_task(_read(neg, timeline, i, feed, opts)) for i in range(len(neg.tracks))
    ]
    try:
        pending = set(readers)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if (outcome := task.result()) is not None:
                    return outcome
        return "ended", "the peer hung up"  # closed its connection, or ended every track
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


async def _read(
    neg: Negotiated, timeline: TrackTimeline, index: int, feed: Feed, opts: StreamOptions
) -> Outcome | None:
    """One track until it ends (None), or the outcome that ends the call."""
    loop = asyncio.get_running_loop()
    track, speaker = neg.tracks[index], timeline.speakers[index]
    guard = InputGuard(opts.limits) if opts.limits is not None else None
    while True:
        try:  # asyncio.timeout, not wait_for: 3.11's drops a cancel that meets a frame
            async with asyncio.timeout(opts.idle_s):
                frame = await track.recv()
        except MediaStreamError:
            return None
        except TimeoutError:
            state = neg.pc.connectionState
            how = "" if state == "connected" else f"; connection {state}"
            within = "for" if timeline.started(index) else "within"
            return "timed_out", f"no audio on the {speaker} track {within} {opts.idle_s:g} s{how}"
        if not isinstance(frame, av.AudioFrame):  # pragma: no cover - audio m-lines only
            continue
        now_s = loop.time()
        if guard is not None:
            try:
                guard.audio(frame.samples / frame.sample_rate, now_s)
            except LimitExceeded as err:
                return "limit_exceeded", f"{speaker} track: {err.reason}"
        await feed(timeline.feed(index, track_frame(frame, now_s)))


def track_frame(frame: av.AudioFrame, arrival_s: float) -> TrackFrame:
    """A decoded frame (16-bit, packed, any channel count) as the timeline's mono frame."""
    if frame.format.name != "s16":
        raise AudioFormatError(f"decoded audio is {frame.format.name}, expected s16")
    channels = len(frame.layout.channels)
    pcm = frame.to_ndarray().reshape(-1, channels)
    mono = pcm[:, 0] if channels == 1 else pcm.astype("i4").sum(axis=1) // channels
    pts = None
    if frame.pts is not None and frame.time_base is not None:
        pts = int(frame.pts * frame.time_base * frame.sample_rate)  # RTP clock -> samples
    return TrackFrame(mono.astype("<i2"), frame.sample_rate, pts, arrival_s)
