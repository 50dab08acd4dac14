"""Wire protocols that bring a call's audio in, as sans-I/O cores.

Native (``/v1/calls/{call_id}/audio``): the first message is JSON text declaring the stream
(``NativeStart``); then binary frames of interleaved audio; optionally ``{"type": "stop"}``.

Twilio Media Streams (``/v1/twilio``): JSON text ``connected``, ``start``, ``media``, ``mark``,
``dtmf``, ``stop``; base64 mu-law 8 kHz, one message per 20 ms per track. ``inbound`` and
``outbound`` tracks are mapped to rep/customer by ``start.customParameters.rep_track``; a
stream without it is rejected (closed, with the reason logged: Twilio shows no reason, and a
guessed speaker would put every coaching rule on the wrong side). Each track is placed on the
call's timeline by its ``timestamp``; a gap is filled with silence so both sides stay aligned.

Errors are ``ProtocolError(close_code, reason)``: the socket closes with that code and reason
(cut to the 123 bytes a close frame holds: ``close_reason``), and a call that was open ends with
the error's ``end_state``: ``interrupted`` for a broken protocol, ``limit_exceeded``
(``LimitExceeded``) for a message, rate or jump over a limit, ``timed_out`` (``TimedOut``) for
a peer that stayed silent too long. Every JSON message is read by ``json_object``, which turns
anything malformed (too deep included) into a ``ProtocolError``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from audio.chunk import AudioChunk, Speaker
from audio.codec import AudioFormatError, ChannelDecoder, StreamFormat
from guidance.errors import describe_validation
from server.wire import EndState

# RFC 6455 close codes used here
UNSUPPORTED_DATA = 1003
INVALID_PAYLOAD = 1007
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009

TRY_AGAIN_LATER = 1013

MAX_VOCABULARY = 50  # per-call recognizer hints; Whisper keeps about 48 tokens of them
CLOSE_REASON_MAX_BYTES = 123


def close_reason(text: str) -> str:
    """``text`` if it fits a close frame, else its longest prefix of whole characters that
    does (RFC 6455: 123 bytes of UTF-8; a longer reason makes the close itself fail)."""
    data = text.encode("utf-8", "replace")
    if len(data) <= CLOSE_REASON_MAX_BYTES:
        return text
    return data[:CLOSE_REASON_MAX_BYTES].decode("utf-8", "ignore")


class ProtocolError(Exception):
    """The peer broke the protocol; the stream ends with ``code`` and ``reason`` (at most 123
    bytes) and its call, if one was open, with ``end_state``."""

    end_state: ClassVar[EndState] = "interrupted"

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = close_reason(reason)


class LimitExceeded(ProtocolError):
    """The peer sent more than a limit allows (size, rate, capacity, a timestamp jump)."""

    end_state: ClassVar[EndState] = "limit_exceeded"


class TimedOut(ProtocolError):
    """The peer sent nothing (or not what was due) within a timeout."""

    end_state: ClassVar[EndState] = "timed_out"


def json_object(text: str) -> dict[str, Any]:
    """``text`` as a JSON object; anything else (not JSON, nested too deep to parse, not an
    object) raises ``ProtocolError`` 1007."""
    try:
        msg = json.loads(text)
    except json.JSONDecodeError as err:
        raise ProtocolError(INVALID_PAYLOAD, f"not JSON: {err.msg}") from err
    except RecursionError:
        raise ProtocolError(INVALID_PAYLOAD, "not JSON: nested too deep") from None
    if not isinstance(msg, dict):
        raise ProtocolError(INVALID_PAYLOAD, "message must be a JSON object")
    return msg


class CallDetails(BaseModel):
    """What a source's opening message may say about the call besides its audio (the native
    start, the WebRTC offer)."""

    model_config = ConfigDict(extra="forbid")

    rep_id: str | None = Field(default=None, max_length=200)
    prior: dict[str, Any] = Field(default_factory=dict)
    # names the recognizer is biased toward on this call (the account, its people, products)
    vocabulary: list[Annotated[str, Field(min_length=1, max_length=60)]] = Field(
        default_factory=list, max_length=MAX_VOCABULARY
    )


class NativeStart(CallDetails):
    """First message of a native stream."""

    type: Literal["start"]
    encoding: Literal["pcm16", "mulaw"]
    sample_rate_hz: Literal[8000, 16000, 48000]
    channels: Literal[1, 2]
    speakers: list[Literal["rep", "customer", "unknown"]] = Field(min_length=1, max_length=2)

    @model_validator(mode="after")
    def _speakers_match_channels(self) -> NativeStart:
        if len(self.speakers) != self.channels:
            raise ValueError(
                f"speakers lists {len(self.speakers)} names for {self.channels} channel(s)"
            )
        if len(set(self.speakers)) != len(self.speakers):
            raise ValueError("each channel needs its own speaker")
        return self

    def stream_format(self) -> StreamFormat:
        return StreamFormat(self.encoding, self.sample_rate_hz, tuple(self.speakers))


def parse_native_start(message: str | bytes | None) -> NativeStart:
    if not isinstance(message, str):
        raise ProtocolError(UNSUPPORTED_DATA, "first message must be a JSON text start message")
    try:
        return NativeStart.model_validate_json(message)
    except ValidationError as err:
        why = describe_validation(err, root="message")
        raise ProtocolError(INVALID_PAYLOAD, f"bad start message: {why}") from err


def native_decoder(start: NativeStart, max_frame_bytes: int) -> ChannelDecoder:
    return ChannelDecoder(start.stream_format(), max_frame_bytes)


def decode_native_frame(decoder: ChannelDecoder, frame: bytes) -> list[AudioChunk]:
    try:
        return decoder.feed(frame)
    except AudioFormatError as err:
        raise frame_error(err) from err


def frame_error(err: AudioFormatError) -> ProtocolError:
    """A frame the decoder refused: over ``max_frame_bytes`` is a limit (1009), anything else
    (not whole sample frames) a broken protocol (1007)."""
    if "exceeds" in str(err):
        return LimitExceeded(MESSAGE_TOO_BIG, f"{err} (CUECARD_MAX_FRAME_BYTES)")
    return ProtocolError(INVALID_PAYLOAD, str(err))


def expect_stop(text: str) -> None:
    """A native text frame after ``start``: ``{"type": "stop"}``, or a ``ProtocolError``."""
    try:
        msg = json_object(text)
    except ProtocolError:
        msg = {}
    if msg.get("type") != "stop":
        raise ProtocolError(INVALID_PAYLOAD, 'text frames after start must be {"type":"stop"}')


@dataclass(frozen=True, slots=True)
class TwilioStarted:
    call_sid: str
    stream_sid: str
    speakers: tuple[Speaker, ...]
    custom: dict[str, str]

    @property
    def vocabulary(self) -> tuple[str, ...]:
        """``customParameters.vocabulary``: comma-separated names for the recognizer."""
        return split_vocabulary(self.custom.get("vocabulary", ""))


def split_vocabulary(text: str) -> tuple[str, ...]:
    """Comma-separated names, trimmed, empty ones and anything past ``MAX_VOCABULARY`` left out."""
    names = (n.strip()[:60] for n in text.split(","))
    return tuple(n for n in names if n)[:MAX_VOCABULARY]


@dataclass(frozen=True, slots=True)
class TwilioStopped:
    reason: str


TwilioEvent = TwilioStarted | TwilioStopped | list[AudioChunk]

TWILIO_RATE_HZ = 8000
MAX_TWILIO_PAYLOAD_B64 = 4 * 1024  # 20 ms is 216 characters; allow long frames, not floods
TWILIO_MAX_GAP_MS = 5000


class TwilioStream:
    """One Twilio Media Streams socket: JSON text in, audio chunks out. A track whose
    ``media.timestamp`` runs ahead (lost packets) is filled with silence up to ``max_gap_ms``;
    a longer jump is a ``LimitExceeded`` (filling it would mean allocating what the peer
    claims); a timestamp behind the track (late or repeated) adds its audio where the track is."""

    def __init__(self, max_gap_ms: int = TWILIO_MAX_GAP_MS) -> None:
        self.started: TwilioStarted | None = None
        self.max_gap_ms = max_gap_ms
        self._decoders: dict[str, ChannelDecoder] = {}
        self._next_ms: dict[str, int] = {}

    def feed(self, text: str) -> TwilioEvent | None:
        msg = json_object(text)
        event = msg.get("event")
        if event in ("connected", "mark", "dtmf"):
            return None
        if event == "start":
            return self._start(msg)
        if event == "media":
            return self._media(msg)
        if event == "stop":
            return TwilioStopped("stop message")
        raise ProtocolError(INVALID_PAYLOAD, f"unknown event {shown(event)}")

    def flush(self) -> list[AudioChunk]:
        return [c for d in self._decoders.values() for c in d.flush()]

    def _start(self, msg: dict[str, Any]) -> TwilioStarted:
        if self.started is not None:
            raise ProtocolError(INVALID_PAYLOAD, "second start message")
        start = msg.get("start")
        if not isinstance(start, dict):
            raise ProtocolError(INVALID_PAYLOAD, "start message without a start object")
        custom = start.get("customParameters") or {}
        rep_track = custom.get("rep_track") if isinstance(custom, dict) else None
        if rep_track not in ("inbound", "outbound"):
            raise ProtocolError(
                POLICY_VIOLATION,
                "start.customParameters.rep_track must be 'inbound' or 'outbound' "
                '(add <Parameter name="rep_track" .../> to <Stream>)',
            )
        fmt = start.get("mediaFormat") or {}
        if not isinstance(fmt, dict) or (
            fmt and (fmt.get("encoding") != "audio/x-mulaw" or str(fmt.get("sampleRate")) != "8000")
        ):
            raise ProtocolError(UNSUPPORTED_DATA, f"unsupported mediaFormat {shown(fmt)}")
        other = "outbound" if rep_track == "inbound" else "inbound"
        roles: dict[str, Speaker] = {rep_track: "rep", other: "customer"}
        for track, speaker in roles.items():
            self._decoders[track] = ChannelDecoder(
                StreamFormat("mulaw", TWILIO_RATE_HZ, (speaker,)), MAX_TWILIO_PAYLOAD_B64
            )
            self._next_ms[track] = 0
        self.started = TwilioStarted(
            call_sid=str(start.get("callSid") or msg.get("streamSid") or ""),
            stream_sid=str(start.get("streamSid") or msg.get("streamSid") or ""),
            speakers=("rep", "customer"),
            custom={str(k): str(v) for k, v in custom.items()},
        )
        return self.started

    def _media(self, msg: dict[str, Any]) -> list[AudioChunk]:
        if self.started is None:
            raise ProtocolError(INVALID_PAYLOAD, "media before start")
        media = msg.get("media")
        if not isinstance(media, dict):
            raise ProtocolError(INVALID_PAYLOAD, "media message without a media object")
        track = media.get("track", "inbound")
        decoder = self._decoders.get(track) if isinstance(track, str) else None
        if decoder is None:
            raise ProtocolError(INVALID_PAYLOAD, f"unknown track {shown(track)}")
        payload = media.get("payload")
        if not isinstance(payload, str) or len(payload) > MAX_TWILIO_PAYLOAD_B64:
            raise LimitExceeded(MESSAGE_TOO_BIG, "media payload missing or too large")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as err:
            raise ProtocolError(
                INVALID_PAYLOAD, f"media payload is not valid base64: {err}"
            ) from err
        try:
            stamp_ms = int(media.get("timestamp", self._next_ms[track]))
        except (TypeError, ValueError, OverflowError) as err:
            raise ProtocolError(INVALID_PAYLOAD, "media.timestamp is not a number") from err
        chunks = self._fill(track, decoder, stamp_ms - self._next_ms[track])
        chunks += decoder.feed(data)
        self._next_ms[track] += len(data) * 1000 // TWILIO_RATE_HZ
        return chunks

    def _fill(self, track: str, decoder: ChannelDecoder, gap_ms: int) -> list[AudioChunk]:
        """Silence for lost packets, so the track stays on the call's timeline."""
        if gap_ms > self.max_gap_ms:
            raise LimitExceeded(
                POLICY_VIOLATION,
                f"media.timestamp jumps {gap_ms} ms ahead on {track}; at most "
                f"{self.max_gap_ms} ms is filled with silence (CUECARD_TWILIO_MAX_GAP_S)",
            )
        if gap_ms < 20:
            return []
        silence = np.full(gap_ms * TWILIO_RATE_HZ // 1000, 0xFF, dtype=np.uint8).tobytes()
        step = decoder.max_frame_bytes
        self._next_ms[track] += gap_ms
        return [
            c for i in range(0, len(silence), step) for c in decoder.feed(silence[i : i + step])
        ]


def shown(value: object) -> str:
    """A peer's value inside a reason: its repr, cut short (the reason is cut again to fit)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
