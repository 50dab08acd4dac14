"""The sans-I/O limits: call ids, close reasons, the token bucket and a socket's guard (times
injected, never read), Twilio timestamp gaps; and property tests: random and mutated messages
never raise anything but ProtocolError out of the native, Twilio, Vonage and AudioHook cores or
the viewer's message parser."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.audiohook import AudioHookStream
from server.ingest import (
    INVALID_PAYLOAD,
    MESSAGE_TOO_BIG,
    POLICY_VIOLATION,
    LimitExceeded,
    ProtocolError,
    TimedOut,
    TwilioStream,
    close_reason,
    decode_native_frame,
    expect_stop,
    json_object,
    native_decoder,
    parse_native_start,
)
from server.limits import InputGuard, InputLimits, TokenBucket, valid_call_id
from server.settings import Settings, SettingsError
from server.vonage import VonageStream
from server.webrtc_offer import OfferRefused, audio_tracks, parse_offer
from tests.test_audiohook_core import Client
from tests.test_ingest import twilio_media, twilio_start

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- call ids and close reasons ------------------------------------------------------------
@pytest.mark.parametrize(
    "call_id", ["a", "c-42", "CA1234567890abcdef", "x.y_z-1", "..a", "a" * 128, "a..b"]
)
def test_valid_call_ids(call_id: str) -> None:
    """1-128 ASCII of [A-Za-z0-9._-] are call ids (dots inside included)."""
    assert valid_call_id(call_id)


@pytest.mark.parametrize(
    "call_id",
    ["", ".", "..", "a" * 129, "é", "саll", "a²", "a b", "a/b", "a\nb", "١٢٣", "ａ"],
)
def test_invalid_call_ids(call_id: str) -> None:
    """Empty, '.', '..', too long, non-ASCII letters or digits (Cyrillic look-alikes,
    superscripts, Arabic-Indic digits, full-width) and separators are refused."""
    assert not valid_call_id(call_id)


@pytest.mark.parametrize("text", ["é" * 100, "a" * 200, "x" + "€" * 60, "ok"])
def test_close_reasons_fit_123_bytes_at_a_character_boundary(text: str) -> None:
    """A reason is cut to at most 123 bytes of UTF-8, whole characters, a prefix of the text."""
    reason = close_reason(text)
    assert len(reason.encode()) <= 123 and text.startswith(reason)
    assert len(reason.encode()) > 120 or reason == text


def test_protocol_errors_carry_short_reasons_and_end_states() -> None:
    """Every ProtocolError's reason fits a close frame; limits and timeouts name their end."""
    assert len(ProtocolError(1007, "é" * 200).reason.encode()) <= 123
    assert ProtocolError(1007, "x").end_state == "interrupted"
    assert LimitExceeded(1009, "x").end_state == "limit_exceeded"
    assert TimedOut(1008, "x").end_state == "timed_out"


# -- token bucket and guard -----------------------------------------------------------------
def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    """A bucket of 5 at 1/s: five at once pass, the sixth waits a second, the bank is capped."""
    bucket = TokenBucket(1.0, 5.0)
    assert all(bucket.take(1.0, 0.0) for _ in range(5))
    assert not bucket.take(1.0, 0.0)
    assert not bucket.take(1.0, 0.5)
    assert bucket.take(1.0, 1.0)
    assert all(bucket.take(1.0, 100.0) for _ in range(5))  # 99 s banked only 5
    assert not bucket.take(1.0, 100.0)


def test_token_bucket_clock_stepping_back_refills_nothing() -> None:
    bucket = TokenBucket(1.0, 1.0)
    assert bucket.take(1.0, 10.0)
    assert not bucket.take(1.0, 5.0) and not bucket.take(1.0, 10.5)
    assert bucket.take(1.0, 11.0)


def test_token_bucket_big_cost_passes_on_a_full_bucket_and_leaves_debt() -> None:
    """A message worth more than the burst passes once on a full bucket; the debt is repaid
    at the rate before anything else passes."""
    bucket = TokenBucket(1.0, 2.0)
    assert bucket.take(5.0, 0.0)  # 8 s of mu-law in one 64 kB frame, say: 3 owed
    assert not bucket.take(0.1, 2.0)  # still 1 owed
    assert bucket.take(0.1, 3.5)


def test_zero_rate_is_no_limit() -> None:
    bucket = TokenBucket(0.0, 1.0)
    assert all(bucket.take(1e9, 0.0) for _ in range(100))


def test_guard_audio_pace() -> None:
    """Audio at 1x passes for ever; at 2x it is cut once the 5 s burst is spent, with a
    reason naming the setting."""
    guard = InputGuard(InputLimits(max_audio_speed=1.25, audio_burst_s=5.0))
    for i in range(3000):  # a minute of 20 ms frames, on time
        guard.audio(0.02, i * 0.02)
    fast = InputGuard(InputLimits(max_audio_speed=1.25, audio_burst_s=5.0))
    with pytest.raises(LimitExceeded) as err:
        for i in range(3000):
            fast.audio(0.02, i * 0.01)
    assert err.value.code == POLICY_VIOLATION and "CUECARD_MAX_AUDIO_SPEED" in err.value.reason
    # 2x against a refill of 1.25x: the 5 s burst lasts 5 / 0.75 = 6.7 s of wall time
    assert 6.0 < i * 0.01 < 7.5


def test_guard_message_rate_and_text_size() -> None:
    """200 messages a second pass; ten thousand tiny frames a second are cut; a text message
    over max_text_bytes is 1009."""
    guard = InputGuard(InputLimits(max_messages_per_s=200.0))
    for i in range(2000):
        guard.message(None, i * 0.005)
    flood = InputGuard(InputLimits(max_messages_per_s=200.0))
    with pytest.raises(LimitExceeded, match="CUECARD_MAX_MESSAGES_PER_S"):
        for i in range(10_000):
            flood.message(None, i * 0.0001)
    with pytest.raises(LimitExceeded) as err:
        InputGuard(InputLimits(max_text_bytes=100)).message(101, 0.0)
    assert err.value.code == MESSAGE_TOO_BIG


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"CUECARD_MAX_CALLS": "0"}, "CUECARD_MAX_CALLS must be > 0"),
        ({"CUECARD_MAX_AUDIO_SPEED": "-1"}, "CUECARD_MAX_AUDIO_SPEED must be >= 0"),
        ({"CUECARD_START_TIMEOUT_S": "0"}, "CUECARD_START_TIMEOUT_S"),
        ({"CUECARD_TWILIO_MAX_GAP_S": "soon"}, "CUECARD_TWILIO_MAX_GAP_S"),
    ],
)
def test_limit_settings_are_checked(env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError, match=needle):
        Settings.from_env(env)


def test_limit_settings_parse() -> None:
    s = Settings.from_env({"CUECARD_MAX_CALLS": "3", "CUECARD_MAX_MESSAGES_PER_S": "0"})
    assert s.max_calls == 3 and s.max_messages_per_s == 0


# -- Twilio gaps ----------------------------------------------------------------------------
def _samples(chunks: Any) -> int:
    return sum(len(c.samples) for c in chunks)


def test_twilio_packet_loss_over_512_ms_is_filled() -> None:
    """A 2 s gap (100 lost packets) is filled with 2 s of silence: the call goes on."""
    s = TwilioStream()
    s.feed(twilio_start(rep_track="inbound"))
    first = s.feed(twilio_media("inbound", 0, b"\xff" * 160))
    late = s.feed(twilio_media("inbound", 2020, b"\xff" * 160))
    total = _samples(first) + _samples(late) + _samples(s.flush())
    assert total == pytest.approx(16 * 2040, abs=64)


def test_twilio_jump_over_the_bound_is_refused_without_allocating() -> None:
    """A timestamp of 100,000,000 ms is a LimitExceeded naming the setting (nothing filled)."""
    s = TwilioStream(max_gap_ms=5000)
    s.feed(twilio_start(rep_track="inbound"))
    s.feed(twilio_media("inbound", 0, b"\xff" * 160))
    with pytest.raises(LimitExceeded) as err:
        s.feed(twilio_media("inbound", 100_000_000, b"\xff" * 160))
    assert "CUECARD_TWILIO_MAX_GAP_S" in err.value.reason
    assert s.feed(twilio_media("inbound", 5020, b"\xff" * 160))  # within the bound: filled


@pytest.mark.parametrize("stamp", ['"Infinity"', "1e400", '"NaN"', "[1]", '{"a": 1}', "null"])
def test_twilio_odd_timestamps_are_protocol_errors(stamp: str) -> None:
    s = TwilioStream()
    s.feed(twilio_start(rep_track="inbound"))
    msg = twilio_media("inbound", 0, b"\xff" * 160).replace('"0"', stamp)
    with pytest.raises(ProtocolError, match="timestamp"):
        s.feed(msg)


# -- deep JSON ------------------------------------------------------------------------------
DEEP = "[" * 8_000 + "]" * 8_000  # deeper than Python can parse, under every size limit


def test_deep_json_is_a_protocol_error_everywhere() -> None:
    """8k-deep nesting is 1007 from every JSON reader, never a RecursionError."""
    readers = [
        json_object,
        expect_stop,
        TwilioStream().feed,
        VonageStream(64_000).feed_text,
        AudioHookStream(64_000).feed_text,
        parse_native_start,
    ]
    for read in readers:
        with pytest.raises(ProtocolError) as err:
            read(DEEP)
        assert err.value.code == INVALID_PAYLOAD, read


# -- property tests -------------------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
NATIVE_START = {"type": "start", "encoding": "pcm16", "sample_rate_hz": 16000, "channels": 2,
                "speakers": ["rep", "customer"], "rep_id": "ana", "vocabulary": ["Acme"]}  # fmt: skip
TWILIO_START = json.loads(twilio_start(rep_track="outbound"))
TWILIO_MEDIA = json.loads(twilio_media("inbound", 20, b"\xff" * 160))
VONAGE_START = {"event": "websocket:connected", "content-type": "audio/l16;rate=16000",
                "call_id": "v-1", "speaker": "customer"}  # fmt: skip


def _mutate(base: dict[str, Any], data: st.DataObject) -> str:
    """``base`` with some fields replaced by random JSON, dropped, or nested messages; or its
    text cut or spliced with random characters."""
    msg: dict[str, Any] = json.loads(json.dumps(base))
    target = msg
    for _ in range(data.draw(st.integers(0, 3))):
        keys = [*target.keys(), "extra"]
        key = data.draw(st.sampled_from(keys))
        action = data.draw(st.sampled_from(["replace", "drop", "descend"]))
        if action == "drop":
            target.pop(key, None)
        elif action == "descend" and isinstance(target.get(key), dict):
            target = target[key]
        else:
            target[key] = data.draw(JSON)
    text = json.dumps(msg)
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(0, len(text)))
        text = text[:cut] + data.draw(st.text(max_size=8)) + text[cut + 1 :]
    return text


def _only_protocol_errors(feed: Any, *texts: str) -> None:
    for text in texts:
        try:
            feed(text)
        except ProtocolError as err:
            assert len(err.reason.encode()) <= 123
            return


@PROPERTY
@given(st.data())
def test_native_start_and_frames_raise_only_protocol_errors(data: st.DataObject) -> None:
    """A mutated start message, then random frames and text: ProtocolError or nothing."""
    try:
        start = parse_native_start(_mutate(NATIVE_START, data))
    except ProtocolError:
        return
    decoder = native_decoder(start, 4096)
    for frame in data.draw(st.lists(st.binary(max_size=5000), max_size=4)):
        try:
            decode_native_frame(decoder, frame)
        except ProtocolError:
            return
    _only_protocol_errors(expect_stop, data.draw(st.text(max_size=30)))


@PROPERTY
@given(st.data())
def test_twilio_messages_raise_only_protocol_errors(data: st.DataObject) -> None:
    """Mutated start and media messages, random JSON and text: ProtocolError or nothing."""
    stream = TwilioStream(max_gap_ms=5000)
    start = _mutate(TWILIO_START, data) if data.draw(st.booleans()) else json.dumps(TWILIO_START)
    media = [_mutate(TWILIO_MEDIA, data) for _ in range(data.draw(st.integers(0, 4)))]
    noise = [json.dumps(data.draw(JSON)), data.draw(st.text(max_size=40))]
    _only_protocol_errors(stream.feed, start, *media, *noise)


@PROPERTY
@given(st.data())
def test_vonage_messages_raise_only_protocol_errors(data: st.DataObject) -> None:
    stream = VonageStream(4096)
    _only_protocol_errors(stream.feed_text, _mutate(VONAGE_START, data))
    if stream.started is not None:
        try:
            stream.feed_audio(data.draw(st.binary(max_size=5000)))
        except ProtocolError:
            pass


@PROPERTY
@given(st.data())
def test_audiohook_messages_raise_only_protocol_errors(data: st.DataObject) -> None:
    """A mutated open, then a mutated ping, random JSON and audio: ProtocolError or nothing."""
    client, stream = Client(), AudioHookStream(4096)
    opening = json.loads(client.open())
    ping = json.loads(client.msg("ping"))
    texts = [_mutate(opening, data), _mutate(ping, data), json.dumps(data.draw(JSON))]
    _only_protocol_errors(stream.feed_text, *texts)
    if stream.opening is not None and stream.state == "preparing":
        stream.opened()
        try:
            stream.feed_audio(data.draw(st.binary(max_size=5000)))
        except ProtocolError:
            pass


WEBRTC_OFFER = {
    "type": "offer",
    "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendrecv\r\n",
    "speakers": ["rep", "customer"],
    "rep_id": "ana",
}


@PROPERTY
@given(st.data())
def test_webrtc_offers_are_answered_or_refused_with_a_status(data: st.DataObject) -> None:
    """A mutated offer body (fields, SDP lines) is parsed or refused with a 4xx and a short
    detail, never another exception."""
    offer = json.loads(json.dumps(WEBRTC_OFFER))
    if data.draw(st.booleans()):  # splice random lines into the SDP
        lines = offer["sdp"].split("\r\n")
        at = data.draw(st.integers(0, len(lines)))
        extra = data.draw(st.lists(st.text(max_size=30), max_size=3))
        offer["sdp"] = "\r\n".join([*lines[:at], *extra, *lines[at:]])
    body = _mutate(offer, data).encode()
    try:
        parsed = parse_offer(body)
        assert audio_tracks(parsed) == len(parsed.speakers)
    except OfferRefused as err:
        assert 400 <= err.status < 500 and err.detail


def test_the_unmutated_webrtc_offer_is_taken() -> None:
    """The offer property test is not vacuous: its base offer is a valid two-track offer."""
    assert audio_tracks(parse_offer(json.dumps(WEBRTC_OFFER).encode())) == 2


@PROPERTY
@given(st.one_of(st.text(max_size=60), JSON.map(json.dumps)))
def test_viewer_messages_parse_or_raise_protocol_error(text: str) -> None:
    """What the rep's page may send is a JSON object or a ProtocolError."""
    try:
        assert isinstance(json_object(text), dict)
    except ProtocolError as err:
        assert err.code == INVALID_PAYLOAD


def test_mutations_reach_the_media_path() -> None:
    """The Twilio property test is not vacuous: an unmutated start and media give audio."""
    stream = TwilioStream()
    stream.feed(json.dumps(TWILIO_START))
    payload = base64.b64decode(TWILIO_MEDIA["media"]["payload"])
    assert payload and stream.feed(json.dumps(TWILIO_MEDIA))
