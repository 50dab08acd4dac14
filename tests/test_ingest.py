"""Audio decoding and the native/Twilio protocol cores, with their errors."""

from __future__ import annotations

import base64
import itertools
import json

import numpy as np
import pytest

from audio.codec import AudioFormatError, ChannelDecoder, StreamFormat, decode_bytes, mulaw_encode
from server.ingest import (
    INVALID_PAYLOAD,
    MESSAGE_TOO_BIG,
    POLICY_VIOLATION,
    UNSUPPORTED_DATA,
    ProtocolError,
    TwilioStarted,
    TwilioStream,
    decode_native_frame,
    native_decoder,
    parse_native_start,
)
from tests.conftest import tone


def test_mulaw_round_trip_is_close() -> None:
    """mu-law encoding then decoding keeps a tone within G.711's quantisation error."""
    x = tone(0.1, amplitude=0.5)
    y = decode_bytes(mulaw_encode(x), "mulaw")
    assert np.max(np.abs(x - y)) < 0.02


def test_stereo_8k_is_split_and_resampled_on_one_timeline() -> None:
    """Interleaved stereo 8 kHz becomes two 16 kHz channels with matching sample stamps."""
    dec = ChannelDecoder(StreamFormat("pcm16", 8000, ("rep", "customer")), 1 << 20)
    frame = np.zeros((160, 2), dtype="<i2")
    frame[:, 1] = 1000
    chunks = [c for _ in range(50) for c in dec.feed(frame.tobytes())] + dec.flush()
    rep = sum(len(c.samples) for c in chunks if c.speaker == "rep")
    cus = [c for c in chunks if c.speaker == "customer"]
    assert rep == sum(len(c.samples) for c in cus) == pytest.approx(16000, abs=32)
    assert all(b.start_sample == a.end_sample for a, b in itertools.pairwise(cus))
    assert np.abs(np.concatenate([c.samples for c in chunks if c.speaker == "rep"])).max() < 1e-3


def test_frame_errors_are_named() -> None:
    """Half a sample frame and an oversized frame are refused with the reason."""
    dec = ChannelDecoder(StreamFormat("pcm16", 16000, ("rep", "customer")), 1000)
    with pytest.raises(AudioFormatError, match="whole number"):
        dec.feed(b"\x00" * 6)
    with pytest.raises(AudioFormatError, match="exceeds"):
        dec.feed(b"\x00" * 1004)


@pytest.mark.parametrize(
    ("message", "code", "needle"),
    [
        (b"\x00\x01", UNSUPPORTED_DATA, "JSON text"),
        ("not json", INVALID_PAYLOAD, "bad start message"),
        (
            '{"type":"start","encoding":"opus","sample_rate_hz":16000,"channels":1,"speakers":["rep"]}',
            INVALID_PAYLOAD,
            "encoding",
        ),
        (
            '{"type":"start","encoding":"pcm16","sample_rate_hz":44100,"channels":1,"speakers":["rep"]}',
            INVALID_PAYLOAD,
            "sample_rate_hz",
        ),
        (
            '{"type":"start","encoding":"pcm16","sample_rate_hz":8000,"channels":2,"speakers":["rep"]}',
            INVALID_PAYLOAD,
            "channel",
        ),
        (
            '{"type":"start","encoding":"pcm16","sample_rate_hz":8000,"channels":2,"speakers":["rep","rep"]}',
            INVALID_PAYLOAD,
            "own speaker",
        ),
    ],
)
def test_bad_start_messages(message: str | bytes, code: int, needle: str) -> None:
    """Each malformed start message gets its close code and a reason naming the field."""
    with pytest.raises(ProtocolError) as err:
        parse_native_start(message)
    assert err.value.code == code
    assert needle in err.value.reason


def test_native_oversized_frame_is_message_too_big() -> None:
    """A frame over the limit closes with 1009."""
    start = parse_native_start(
        '{"type":"start","encoding":"mulaw","sample_rate_hz":8000,"channels":1,"speakers":["customer"]}'
    )
    with pytest.raises(ProtocolError) as err:
        decode_native_frame(native_decoder(start, 100), b"\xff" * 101)
    assert err.value.code == MESSAGE_TOO_BIG


def twilio_start(**custom: str) -> str:
    return json.dumps(
        {
            "event": "start",
            "streamSid": "MZ1",
            "start": {
                "callSid": "CA1",
                "streamSid": "MZ1",
                "tracks": ["inbound", "outbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": custom,
            },
        }
    )


def twilio_media(track: str, timestamp_ms: int, payload: bytes) -> str:
    media = {
        "track": track,
        "timestamp": str(timestamp_ms),
        "payload": base64.b64encode(payload).decode(),
    }
    return json.dumps({"event": "media", "streamSid": "MZ1", "media": media})


def test_twilio_tracks_map_to_speakers_by_rep_track() -> None:
    """rep_track=outbound makes outbound the rep and inbound the customer."""
    s = TwilioStream()
    started = s.feed(twilio_start(rep_track="outbound"))
    assert isinstance(started, TwilioStarted)
    out = s.feed(twilio_media("outbound", 0, b"\xff" * 160))
    inn = s.feed(twilio_media("inbound", 0, b"\xff" * 160))
    assert isinstance(out, list) and isinstance(inn, list)
    assert {c.speaker for c in out} == {"rep"} and {c.speaker for c in inn} == {"customer"}


def test_twilio_gap_is_filled_to_keep_the_timeline() -> None:
    """A media message 100 ms late is preceded by 100 ms of silence on its track."""
    s = TwilioStream()
    s.feed(twilio_start(rep_track="inbound"))
    first = s.feed(twilio_media("inbound", 0, b"\xff" * 160))
    late = s.feed(twilio_media("inbound", 120, b"\xff" * 160))
    assert isinstance(first, list) and isinstance(late, list)
    total = sum(len(c.samples) for c in first + late) + sum(len(c.samples) for c in s.flush())
    assert total == pytest.approx(16 * 140, abs=40)


TRUNCATED_B64 = json.dumps(
    {"event": "media", "media": {"track": "inbound", "timestamp": "0", "payload": "//7+/v7+/"}}
)


@pytest.mark.parametrize(
    ("messages", "code", "needle"),
    [
        ([twilio_media("inbound", 0, b"\xff" * 160)], INVALID_PAYLOAD, "media before start"),
        ([twilio_start()], POLICY_VIOLATION, "rep_track"),
        ([twilio_start(rep_track="outbound"), TRUNCATED_B64], INVALID_PAYLOAD, "base64"),
        (["{nope"], INVALID_PAYLOAD, "not JSON"),
        (['{"event":"weird"}'], INVALID_PAYLOAD, "unknown event"),
        (
            [twilio_start(rep_track="outbound"), twilio_media("inbound", 0, b"\xff" * 4000)],
            MESSAGE_TOO_BIG,
            "too large",
        ),
    ],
)
def test_twilio_bad_input(messages: list[str], code: int, needle: str) -> None:
    """Twilio protocol violations are ProtocolErrors with a close code and a clear reason."""
    s = TwilioStream()
    with pytest.raises(ProtocolError) as err:
        for m in messages:
            s.feed(m)
    assert err.value.code == code
    assert needle in err.value.reason
