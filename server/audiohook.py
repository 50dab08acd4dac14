"""Genesys Cloud AudioHook Monitor (protocol version 2), server side, as a sans-I/O core.

Genesys dials ``/v1/audiohook``. Every text message is a JSON object with ``version`` "2",
``id`` (the AudioHook session id, the same in every message), ``type``, ``seq`` (1, 2, 3 ...
per side) and ``parameters``; a client message also carries ``serverseq`` (the last server
``seq`` it saw) and ``position`` (its media position, an ISO-8601 duration such as
``PT1.5S``); a server message carries ``clientseq`` (the last client ``seq`` we saw).

- ``open`` -> the app decides, then ``opened`` naming exactly one of the offered media entries,
  echoed unchanged: a two-channel entry if one is offered, else a one-channel one. Audio is
  ``PCMU`` or ``L16`` (16-bit little-endian, as the reference implementation sends it) at
  8000 Hz, interleaved in the order of the entry's ``channels``: ``external`` is the customer,
  ``internal`` the agent (the rep).
- The connection probe (``conversationId`` of zeros) opens and closes like any session and
  creates no call (``Opening.probe``).
- ``ping`` -> ``pong``; ``update``, ``error`` (the client's) are taken note of; ``paused`` /
  ``resumed`` and ``discarded`` move the media position on: the audio that was not sent is owed
  to the call's timeline as silence (``silence()``), so every later word keeps the time Genesys
  gives it.
- ``close`` -> the app ends the call, ``closed``.
- A malformed or out-of-order message raises ``ProtocolError``: the app answers with
  ``disconnect`` (reason ``error`` and the reason as ``info``; ``unauthorized`` for a refused
  signature), waits a little for the client's ``close``, answers ``closed`` and hangs up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from audio.chunk import AudioChunk, Speaker
from audio.codec import AudioFormatError, ChannelDecoder, StreamFormat
from guidance.errors import describe_validation
from server.ingest import (
    INVALID_PAYLOAD,
    MESSAGE_TOO_BIG,
    LimitExceeded,
    ProtocolError,
    frame_error,
    json_object,
    shown,
)

PROTOCOL_VERSION = "2"
PROBE_ID = "00000000-0000-0000-0000-000000000000"
RATE_HZ = 8000
MAX_TEXT_CHARS = 65_535
MAX_GAP_S = 3600  # a pause or discard longer than this is refused, not filled with silence
SUPPORTED_LANGUAGES = ("en-US",)
ROLES: dict[str, Speaker] = {"external": "customer", "internal": "rep"}

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DURATION = re.compile(r"^PT(\d+(?:\.\d*)?|\.\d+)S$")

StreamState = Literal["preparing", "active", "paused", "disconnecting", "closed"]
DisconnectReason = Literal["completed", "unauthorized", "error"]


def parse_duration(text: object) -> Decimal:
    """``PT1.5S`` -> Decimal seconds; anything else raises ``ValueError``."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 'PT1.5S'")
    try:
        return Decimal(match.group(1))
    except InvalidOperation as err:  # pragma: no cover - the pattern admits only numbers
        raise ValueError(f"{text!r} is not a duration") from err


def format_duration(seconds: float | Decimal) -> str:
    """Seconds -> the shortest ``PT…S`` that says them to the millisecond."""
    value = Decimal(str(round(float(seconds), 3))).normalize()
    text = format(value, "f")
    return f"PT{text}S"


def _duration(value: object) -> str:
    parse_duration(value)
    return str(value)


class _Params(BaseModel):
    model_config = ConfigDict(extra="allow")


class OpenParams(_Params):
    organizationId: str = Field(pattern=_UUID.pattern)
    conversationId: str = Field(pattern=_UUID.pattern)
    participant: dict[str, Any] | None = None
    media: list[Any] = Field(max_length=16)
    language: str | None = Field(default=None, max_length=64)
    supportedLanguages: bool | None = None
    customConfig: dict[str, Any] | None = None


class CloseParams(_Params):
    reason: Literal["end", "error", "disconnect", "reconnect"]


class SpanParams(_Params):
    """``discarded`` and ``resumed``: audio from ``start`` lasting ``discarded`` was not sent."""

    start: str
    discarded: str

    def end_s(self) -> Decimal:
        return parse_duration(self.start) + parse_duration(self.discarded)


class ErrorParams(_Params):
    code: int
    message: str = Field(max_length=4096)


class UpdateParams(_Params):
    language: str | None = Field(default=None, max_length=64)


class PingParams(_Params):
    rtt: str | None = None


PARAMS: dict[str, type[_Params]] = {
    "open": OpenParams,
    "close": CloseParams,
    "discarded": SpanParams,
    "resumed": SpanParams,
    "error": ErrorParams,
    "update": UpdateParams,
    "ping": PingParams,
    "paused": _Params,
}


@dataclass(frozen=True, slots=True)
class Opening:
    """A valid ``open``: the app opens the call (unless ``probe``), then sends ``opened()``."""

    session_id: str
    organization_id: str
    conversation_id: str
    speakers: tuple[Speaker, ...]
    media: dict[str, Any]  # the chosen entry, exactly as offered
    language: str | None
    custom: dict[str, Any]

    @property
    def probe(self) -> bool:
        return self.conversation_id == PROBE_ID


@dataclass(frozen=True, slots=True)
class Closing:
    """A ``close``: the app ends the call and sends ``closed()``."""

    reason: str


@dataclass(frozen=True, slots=True)
class Step:
    """What one client message asks of the app: messages to send, and a transaction."""

    replies: list[dict[str, Any]] = field(default_factory=list)
    event: Opening | Closing | None = None
    note: str = ""  # something worth a log line (a client's error, a language update)


def choose_media(offered: list[Any]) -> tuple[dict[str, Any], tuple[Speaker, ...]] | None:
    """The first two-channel entry we can decode, else the first one-channel one."""
    usable = []
    for entry in offered:
        speakers = _speakers_of(entry)
        if speakers is not None:
            usable.append((entry, speakers))
    usable.sort(key=lambda pair: -len(pair[1]))  # stable: offered order within a width
    return usable[0] if usable else None


def _speakers_of(entry: object) -> tuple[Speaker, ...] | None:
    if not isinstance(entry, dict):
        return None
    channels = entry.get("channels")
    if (
        entry.get("type") != "audio"
        or entry.get("format") not in ("PCMU", "L16")
        or entry.get("rate") != RATE_HZ
        or not isinstance(channels, list)
        or not 1 <= len(channels) <= 2
        or len(set(map(str, channels))) != len(channels)
        or not all(c in ROLES for c in channels)
    ):
        return None
    return tuple(ROLES[c] for c in channels)


class AudioHookStream:
    """One AudioHook socket: client text and audio in; replies, audio chunks and the
    open/close transactions out. Every server message gets the next ``seq``."""

    def __init__(self, max_frame_bytes: int, session_id: str | None = None) -> None:
        """``session_id``: the upgrade's ``Audiohook-Session-Id``, when it has one; else the
        first message names the session (until then, messages carry the all-zero id)."""
        self.max_frame_bytes = max_frame_bytes
        self.state: StreamState = "preparing"
        known = session_id is not None and _UUID.match(session_id) is not None
        self.session_id = session_id.lower() if session_id and known else PROBE_ID
        self._id_known = known
        self.opening: Opening | None = None
        self._seq = 0
        self._clientseq = 0
        self._decoder: ChannelDecoder | None = None
        self._frames = 0  # 8 kHz sample frames on the call's timeline (silence included)
        self._owed = 0  # sample frames of silence owed to the timeline
        self._want_languages = False

    @property
    def position_s(self) -> float:
        """The media position the audio (and silence) handed out so far reaches."""
        return (self._frames + self._owed) / RATE_HZ

    # -- client text ------------------------------------------------------------------
    def feed_text(self, text: str) -> Step:
        if self.state in ("disconnecting", "closed"):
            return self._after_end(text)
        msg = self._envelope(text)
        kind = msg["type"]
        params = self._params(kind, msg.get("parameters"))
        if isinstance(params, OpenParams):
            return Step(event=self._open(msg, params))
        if self.state == "preparing" and kind not in ("close", "ping", "error"):
            raise ProtocolError(INVALID_PAYLOAD, f"'{kind}' before 'open'")
        return self._dispatch(kind, params)

    def _dispatch(self, kind: str, params: _Params) -> Step:
        if isinstance(params, PingParams):
            return Step([self._message("pong", {})])
        if isinstance(params, CloseParams):
            self.state = "closed"
            return Step(event=Closing(params.reason))
        if isinstance(params, ErrorParams):
            return Step(note=f"client error {params.code}: {params.message}")
        if isinstance(params, UpdateParams):
            return Step(note=f"update: language {params.language}")
        if isinstance(params, SpanParams):
            # resumed or discarded: the audio picks up at start + discarded (a 'resumed'
            # while not paused, as some clients send, moves nothing on)
            self.state = "active"
            self._owe_until(params.end_s())
            return Step(note=f"{kind} {params.start} + {params.discarded}")
        self.state = "paused"  # 'paused', idempotent
        return Step(note="paused")

    def _envelope(self, text: str) -> dict[str, Any]:
        if len(text) > MAX_TEXT_CHARS:
            raise LimitExceeded(MESSAGE_TOO_BIG, f"text message of {len(text)} characters")
        msg = json_object(text)
        if msg.get("version") != PROTOCOL_VERSION:
            raise ProtocolError(
                INVALID_PAYLOAD, f"version must be '2', got {shown(msg.get('version'))}"
            )
        kind = msg.get("type")
        if not isinstance(kind, str) or kind not in PARAMS:
            raise ProtocolError(INVALID_PAYLOAD, f"'{kind}' is not an AudioHook client message")
        for name in ("seq", "serverseq"):
            if type(msg.get(name)) is not int or msg[name] < 0:
                raise ProtocolError(INVALID_PAYLOAD, f"{name} must be a non-negative integer")
        if msg["seq"] != self._clientseq + 1:
            raise ProtocolError(
                INVALID_PAYLOAD, f"seq {msg['seq']} out of order (expected {self._clientseq + 1})"
            )
        self._clientseq = msg["seq"]
        if msg["serverseq"] > self._seq:
            raise ProtocolError(
                INVALID_PAYLOAD, f"serverseq {msg['serverseq']} ahead of our seq {self._seq}"
            )
        try:
            parse_duration(msg.get("position"))
        except ValueError as err:
            raise ProtocolError(INVALID_PAYLOAD, f"position: {err}") from err
        self._check_id(msg.get("id"), kind)
        return msg

    def _check_id(self, session_id: object, kind: str) -> None:
        if not isinstance(session_id, str) or not _UUID.match(session_id):
            raise ProtocolError(INVALID_PAYLOAD, "id must be the session's UUID")
        if not self._id_known:  # the first message names the session
            self.session_id, self._id_known = session_id.lower(), True
        elif session_id.lower() != self.session_id:
            raise ProtocolError(INVALID_PAYLOAD, f"id {session_id} is not this session's id")

    def _params(self, kind: str, raw: object) -> _Params:
        try:
            params = PARAMS[kind].model_validate(raw)
            if isinstance(params, SpanParams):
                params.end_s()
            if isinstance(params, PingParams) and params.rtt is not None:
                parse_duration(params.rtt)
        except ValidationError as err:
            why = describe_validation(err, root="parameters")
            raise ProtocolError(INVALID_PAYLOAD, f"bad '{kind}' parameters: {why}") from err
        except ValueError as err:
            raise ProtocolError(INVALID_PAYLOAD, f"bad '{kind}' parameters: {err}") from err
        return params

    def _open(self, msg: dict[str, Any], params: OpenParams) -> Opening:
        if self.state != "preparing" or self.opening is not None:
            raise ProtocolError(INVALID_PAYLOAD, "second 'open'")
        chosen = choose_media(params.media)
        if chosen is None:
            raise ProtocolError(
                INVALID_PAYLOAD,
                "no offered media is usable (audio, PCMU or L16, 8000 Hz, external/internal)",
            )
        media, speakers = chosen
        fmt = StreamFormat("mulaw" if media["format"] == "PCMU" else "pcm16", RATE_HZ, speakers)
        self._decoder = ChannelDecoder(fmt, self.max_frame_bytes)
        self.opening = Opening(
            msg["id"],
            params.organizationId,
            params.conversationId.lower(),
            speakers,
            media,
            params.language,
            dict(params.customConfig or {}),
        )
        self._want_languages = bool(params.supportedLanguages)
        return self.opening

    def _after_end(self, text: str) -> Step:
        """After our ``disconnect`` only a ``close`` matters; after ``closed``, nothing."""
        if self.state == "closed":
            return Step()
        try:
            msg = json_object(text)
        except ProtocolError:
            return Step()
        if msg.get("type") == "close":
            if type(msg.get("seq")) is int:
                self._clientseq = msg["seq"]
            if not self._id_known and isinstance(msg.get("id"), str) and _UUID.match(msg["id"]):
                self.session_id, self._id_known = msg["id"].lower(), True
            self.state = "closed"
            return Step(event=Closing("disconnect"))
        return Step()

    # -- server messages --------------------------------------------------------------
    def opened(self) -> dict[str, Any]:
        if self.opening is None or self.state != "preparing":
            raise RuntimeError("opened() needs a pending open")
        self.state = "active"
        params: dict[str, Any] = {"media": [self.opening.media]}
        if self._want_languages:
            params["supportedLanguages"] = list(SUPPORTED_LANGUAGES)
        return self._message("opened", params)

    def closed(self) -> dict[str, Any]:
        self.state = "closed"
        return self._message("closed", {})

    def disconnect(self, reason: DisconnectReason, info: str) -> dict[str, Any] | None:
        """The ``disconnect`` to send, or None once the session is already ending."""
        if self.state in ("disconnecting", "closed"):
            return None
        self.state = "disconnecting"
        return self._message("disconnect", {"reason": reason, "info": info[:1000]})

    def _message(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        self._seq += 1
        return {
            "version": PROTOCOL_VERSION,
            "id": self.session_id,
            "type": kind,
            "seq": self._seq,
            "clientseq": self._clientseq,
            "parameters": params,
        }

    # -- audio ------------------------------------------------------------------------
    def feed_audio(self, data: bytes) -> list[AudioChunk]:
        """A binary frame: chunks for the call (none for a probe, or once the session ends)."""
        if self.state in ("disconnecting", "closed"):
            return []
        if self.state == "preparing" or self._decoder is None:
            raise ProtocolError(INVALID_PAYLOAD, "audio before 'opened'")
        if self.state == "paused":
            raise ProtocolError(INVALID_PAYLOAD, "audio while paused")
        if self._owed:
            raise RuntimeError("take silence() until [] before feeding audio on")
        try:
            chunks = self._decoder.feed(data)
        except AudioFormatError as err:
            raise frame_error(err) from err
        self._frames += len(data) // self._decoder.format.bytes_per_frame
        return chunks

    def silence(self) -> list[AudioChunk]:
        """The next piece (at most a frame's worth) of the silence owed to the timeline after
        a pause or a discard; [] once it is all handed out. Call until [] before feeding on."""
        if not self._owed or self._decoder is None:
            return []
        fmt = self._decoder.format
        frames = min(self._owed, self.max_frame_bytes // fmt.bytes_per_frame, RATE_HZ)
        fill = b"\xff" if fmt.encoding == "mulaw" else b"\x00"
        self._owed -= frames
        self._frames += frames
        return self._decoder.feed(fill * (frames * fmt.bytes_per_frame))

    def flush(self) -> list[AudioChunk]:
        return self._decoder.flush() if self._decoder is not None else []

    def _owe_until(self, end_s: Decimal) -> None:
        target = int(end_s * RATE_HZ)
        gap = target - self._frames - self._owed
        if gap > MAX_GAP_S * RATE_HZ:
            raise ProtocolError(INVALID_PAYLOAD, f"position jumps by more than {MAX_GAP_S} s")
        self._owed += max(0, gap)
