"""Vonage Voice API WebSockets (``connect`` to a ``websocket`` endpoint) as a sans-I/O core.

Vonage dials ``/v1/vonage``. Its first message is JSON text: ``event`` ``websocket:connected``,
``content-type`` ``audio/l16;rate=8000`` or ``audio/l16;rate=16000``, and the endpoint's
``headers`` from the NCCO as top-level fields. Cuecard reads these headers:

- ``call_id`` (required): the call's id, the one the rep's page watches;
- ``speaker``: who is on the socket's one channel, ``rep``, ``customer`` or ``unknown`` (the
  default). A Vonage socket carries one mixed channel unless the NCCO connects a single leg, so
  Cuecard cannot know who speaks from the protocol alone: a socket on the customer's leg says
  ``customer``; a mixed conversation stays ``unknown``, and no rep/customer rule is applied to
  it (the call's other sources, or a speaker decision made later, may name its turns);
- ``rep_id``, ``vocabulary`` (comma-separated names), ``token`` (a token with ``audio:write``
  on the call, when the upgrade carries no ``Authorization`` header; never in the URL).

Then binary frames of 16-bit little-endian linear PCM, mono, 20 ms each (320 or 640 bytes).
Later text messages (``websocket:dtmf`` and the like) are read and ignored; anything that is
not a JSON object is a protocol error. Errors are ``ProtocolError``: the socket closes with
its code and reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from audio.chunk import AudioChunk, Speaker
from audio.codec import AudioFormatError, ChannelDecoder, StreamFormat
from server.ingest import (
    INVALID_PAYLOAD,
    MESSAGE_TOO_BIG,
    POLICY_VIOLATION,
    UNSUPPORTED_DATA,
    LimitExceeded,
    ProtocolError,
    frame_error,
    json_object,
    split_vocabulary,
)

RATES_HZ = (8000, 16000)
SPEAKERS: tuple[Speaker, ...] = ("rep", "customer", "unknown")
MAX_TEXT_CHARS = 16_384


@dataclass(frozen=True, slots=True)
class VonageStarted:
    call_id: str
    sample_rate_hz: int
    speaker: Speaker
    rep_id: str | None
    vocabulary: tuple[str, ...]
    token: str | None


def parse_content_type(value: object) -> int:
    """``audio/l16;rate=16000`` -> 16000; anything else raises ``ProtocolError``."""
    if not isinstance(value, str):
        raise ProtocolError(INVALID_PAYLOAD, "content-type missing from the first message")
    kind, *params = (p.strip().lower() for p in value.split(";"))
    rate = next((p.split("=", 1)[1] for p in params if p.startswith("rate=")), "")
    if kind != "audio/l16" or not rate.isdigit() or int(rate) not in RATES_HZ:
        raise ProtocolError(
            UNSUPPORTED_DATA, f"content-type {value!r}: need audio/l16;rate=8000 or 16000"
        )
    return int(rate)


class VonageStream:
    """One Vonage socket: the metadata message, then audio frames, to chunks of one speaker."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.started: VonageStarted | None = None
        self._decoder: ChannelDecoder | None = None

    def feed_text(self, text: str) -> VonageStarted | None:
        msg = _json_object(text)
        if self.started is not None:
            return None  # dtmf and other notifications: nothing for the call
        if msg.get("event") != "websocket:connected":
            raise ProtocolError(INVALID_PAYLOAD, "first message must be websocket:connected")
        rate = parse_content_type(msg.get("content-type"))
        speaker = msg.get("speaker", "unknown")
        if speaker not in SPEAKERS:
            raise ProtocolError(INVALID_PAYLOAD, "speaker must be rep, customer or unknown")
        call_id = msg.get("call_id")
        if not isinstance(call_id, str) or not call_id:
            raise ProtocolError(POLICY_VIOLATION, "headers.call_id is required")
        self._decoder = ChannelDecoder(
            StreamFormat("pcm16", rate, (speaker,)), self.max_frame_bytes
        )
        self.started = VonageStarted(
            call_id,
            rate,
            speaker,
            _text(msg, "rep_id"),
            _vocabulary(msg.get("vocabulary")),
            _text(msg, "token"),
        )
        return self.started

    def feed_audio(self, data: bytes) -> list[AudioChunk]:
        if self._decoder is None:
            raise ProtocolError(INVALID_PAYLOAD, "audio before the websocket:connected message")
        try:
            return self._decoder.feed(data)
        except AudioFormatError as err:
            raise frame_error(err) from err

    def flush(self) -> list[AudioChunk]:
        return self._decoder.flush() if self._decoder is not None else []


def _json_object(text: str) -> dict[str, Any]:
    if len(text) > MAX_TEXT_CHARS:
        raise LimitExceeded(MESSAGE_TOO_BIG, f"text message of {len(text)} characters")
    return json_object(text)


def _text(msg: dict[str, Any], name: str) -> str | None:
    value = msg.get(name)
    return str(value)[:200] if value not in (None, "") else None


def _vocabulary(value: object) -> tuple[str, ...]:
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return split_vocabulary(value) if isinstance(value, str) else ()
