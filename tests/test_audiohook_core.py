"""The AudioHook protocol core and its upgrade signatures, without sockets: tables of messages."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from audio.chunk import SAMPLE_RATE_HZ
from audio.codec import mulaw_encode
from server.audiohook import (
    PROBE_ID,
    AudioHookStream,
    Closing,
    Opening,
    format_duration,
    parse_duration,
)
from server.audiohook_auth import SignatureRefused, SignatureVerifier, parse_keys, sign
from server.clock import ManualClock
from server.ingest import INVALID_PAYLOAD, MESSAGE_TOO_BIG, ProtocolError

SID = "1f0c6a52-8f2e-4d9e-9a43-0b6f3c1f7d10"
ORG = "d7934305-0972-4844-938e-9060eef73d05"
CONV = "4b2c87a9-9b49-4bd3-8a3a-3c8d2a8f5e61"


def entry(*channels: str, fmt: str = "PCMU", rate: int = 8000) -> dict[str, Any]:
    return {"type": "audio", "format": fmt, "channels": list(channels), "rate": rate}


class Client:
    """Builds client messages with the right seq, unless told otherwise."""

    def __init__(self) -> None:
        self.seq = 0

    def msg(self, kind: str, params: Any = None, **over: Any) -> str:
        self.seq += 1
        body = {
            "version": "2",
            "id": SID,
            "type": kind,
            "seq": self.seq,
            "serverseq": 0,
            "position": "PT0S",
            "parameters": {} if params is None else params,
        }
        return json.dumps({**body, **over})

    def open(self, media: list[Any] | None = None, conv: str = CONV, **extra: Any) -> str:
        params = {"organizationId": ORG, "conversationId": conv, "participant": {}, **extra}
        params["media"] = [entry("external", "internal")] if media is None else media
        return self.msg("open", params)


def opened_stream(media: list[Any] | None = None) -> tuple[AudioHookStream, Client, Opening]:
    s, c = AudioHookStream(64_000), Client()
    step = s.feed_text(c.open(media))
    assert isinstance(step.event, Opening)
    s.opened()
    return s, c, step.event


@pytest.mark.parametrize(
    ("channels", "speakers"),
    [
        (["external", "internal"], ("customer", "rep")),
        (["internal", "external"], ("rep", "customer")),
        (["external"], ("customer",)),
        (["internal"], ("rep",)),
    ],
)
def test_each_channel_order_maps_external_to_customer_and_internal_to_rep(
    channels: list[str], speakers: tuple[str, ...]
) -> None:
    """Audio loud on the first offered channel arrives as that channel's speaker only."""
    s, _, opening = opened_stream([entry(*channels)])
    assert opening.speakers == speakers
    loud = mulaw_encode((0.5 * np.sin(np.arange(1600) / 3)).astype(np.float32))
    quiet = b"\xff" * 1600
    frames = [loud, quiet][: len(channels)]
    data = np.stack([np.frombuffer(f, np.uint8) for f in frames], 1).reshape(-1).tobytes()
    energy = {c.speaker: float(np.abs(c.samples).mean()) for c in s.feed_audio(data)}
    assert energy[speakers[0]] > 0.1
    assert all(energy[sp] < 0.01 for sp in speakers[1:])


def test_opened_names_exactly_one_offered_entry_unchanged_preferring_two_channels() -> None:
    """Of mono and stereo offers the stereo one is chosen, echoed with its extra fields intact."""
    stereo = {**entry("internal", "external", fmt="L16"), "vendor": {"x": 1}}
    offers = [entry("external"), {"type": "video"}, stereo, entry("internal")]
    _, _, opening = opened_stream(offers)
    assert opening.speakers == ("rep", "customer")
    again = AudioHookStream(64_000)
    again.feed_text(Client().open(offers))
    opened = again.opened()
    assert opened["parameters"]["media"] == [stereo]
    assert (opened["type"], opened["seq"], opened["clientseq"], opened["id"]) == (
        "opened",
        1,
        1,
        SID,
    )


def test_ping_gets_pong_with_matching_clientseq_and_the_next_seq() -> None:
    """seq counts up per side; the pong's clientseq is the ping's seq."""
    s, c, _ = opened_stream()
    pong = s.feed_text(c.msg("ping", serverseq=1)).replies[0]
    assert (pong["type"], pong["seq"], pong["clientseq"]) == ("pong", 2, 2)
    closing = s.feed_text(c.msg("close", {"reason": "end"}, serverseq=2))
    assert isinstance(closing.event, Closing)
    closed = s.closed()
    assert (closed["type"], closed["seq"], closed["clientseq"]) == ("closed", 3, 3)


def test_probe_is_recognized_and_completes_open_and_close() -> None:
    """The all-zero conversation id is a probe: open, opened, close, closed, no call."""
    s, c = AudioHookStream(64_000), Client()
    opening = s.feed_text(c.open(conv=PROBE_ID)).event
    assert isinstance(opening, Opening) and opening.probe
    assert s.opened()["type"] == "opened"
    assert isinstance(s.feed_text(c.msg("close", {"reason": "end"})).event, Closing)


def test_supported_languages_are_listed_when_asked() -> None:
    s, c = AudioHookStream(64_000), Client()
    s.feed_text(c.open(supportedLanguages=True))
    assert s.opened()["parameters"]["supportedLanguages"] == ["en-US"]


@pytest.mark.parametrize("kind", ["resumed", "discarded"])
def test_pause_and_discard_keep_the_timeline(kind: str) -> None:
    """After 1 s of silence, a jump to 3 s is filled: a tone sent next starts at 3 s."""
    s, c, _ = opened_stream([entry("external")])
    chunks = s.feed_audio(b"\xff" * 8000)
    if kind == "resumed":
        s.feed_text(c.msg("paused", serverseq=1, position="PT1S"))
    s.feed_text(c.msg(kind, {"start": "PT1S", "discarded": "PT2S"}, serverseq=1))
    while piece := s.silence():
        chunks += piece
    tone = (0.5 * np.sin(np.arange(4000) / 2)).astype(np.float32)
    chunks += s.feed_audio(mulaw_encode(tone)) + s.flush()
    audio = np.concatenate([ch.samples for ch in chunks])
    assert [ch.start_sample for ch in chunks[1:]] == [ch.end_sample for ch in chunks[:-1]]
    onset = int(np.argmax(np.abs(audio) > 0.1))
    assert abs(onset - 3 * SAMPLE_RATE_HZ) < 0.01 * SAMPLE_RATE_HZ
    assert s.position_s == 3.5


def test_client_error_and_update_are_noted_not_answered() -> None:
    s, c, _ = opened_stream()
    assert s.feed_text(c.msg("error", {"code": 500, "message": "oops"})).replies == []
    step = s.feed_text(c.msg("update", {"language": "en-GB"}))
    assert step.replies == [] and "en-GB" in step.note


@pytest.mark.parametrize(
    ("messages", "code", "needle"),
    [
        (["{not json"], INVALID_PAYLOAD, "not JSON"),
        (["[1, 2]"], INVALID_PAYLOAD, "JSON object"),
        (["x" * 70_000], MESSAGE_TOO_BIG, "characters"),
        ([lambda c: c.msg("ping", version="1")], INVALID_PAYLOAD, "version"),
        ([lambda c: c.msg("hello")], INVALID_PAYLOAD, "not an AudioHook client message"),
        ([lambda c: c.msg("ping", seq=3)], INVALID_PAYLOAD, "out of order"),
        ([lambda c: c.msg("ping", seq="1")], INVALID_PAYLOAD, "seq must be"),
        ([lambda c: c.msg("ping", serverseq=5)], INVALID_PAYLOAD, "serverseq"),
        ([lambda c: c.msg("ping", position="1.5")], INVALID_PAYLOAD, "position"),
        ([lambda c: c.msg("ping", id="nope")], INVALID_PAYLOAD, "id must be"),
        ([lambda c: c.msg("open", {"media": []})], INVALID_PAYLOAD, "bad 'open' parameters"),
        ([lambda c: c.open([entry("external", rate=16000)])], INVALID_PAYLOAD, "no offered media"),
        ([lambda c: c.msg("update", {"language": "en"})], INVALID_PAYLOAD, "before 'open'"),
        ([lambda c: c.open(), lambda c: c.open()], INVALID_PAYLOAD, "second 'open'"),
        (
            [lambda c: c.open(), lambda c: c.msg("ping", id=CONV)],
            INVALID_PAYLOAD,
            "not this session's id",
        ),
        (
            [lambda c: c.open(), lambda c: c.msg("close", {"reason": "bye"})],
            INVALID_PAYLOAD,
            "bad 'close'",
        ),
        (
            [
                lambda c: c.open(),
                "OPENED",
                lambda c: c.msg("discarded", {"start": "1", "discarded": "PT1S"}),
            ],
            INVALID_PAYLOAD,
            "bad 'discarded'",
        ),
        (
            [
                lambda c: c.open(),
                "OPENED",
                lambda c: c.msg("discarded", {"start": "PT0S", "discarded": "PT99999S"}),
            ],
            INVALID_PAYLOAD,
            "jumps",
        ),
        ([b"\xff" * 160], INVALID_PAYLOAD, "audio before"),
        (
            [lambda c: c.open(), "OPENED", lambda c: c.msg("paused"), b"\xff" * 4],
            INVALID_PAYLOAD,
            "paused",
        ),
        ([lambda c: c.open(), "OPENED", b"\xff" * 3], INVALID_PAYLOAD, "whole number"),
        ([lambda c: c.open(), "OPENED", b"\xff" * 64_002], MESSAGE_TOO_BIG, "exceeds"),
    ],
)
def test_malformed_input_is_a_protocol_error_with_a_reason(
    messages: list[Any], code: int, needle: str
) -> None:
    """Each malformed message or frame raises ProtocolError naming what is wrong."""
    s, c = AudioHookStream(64_000), Client()
    with pytest.raises(ProtocolError) as err:
        for m in messages:
            if m == "OPENED":
                s.opened()
            elif isinstance(m, bytes):
                s.feed_audio(m)
            else:
                s.feed_text(m(c) if callable(m) else m)
    assert err.value.code == code and needle in err.value.reason


def test_after_disconnect_only_a_close_matters() -> None:
    """Once we sent disconnect, garbage is ignored, audio dropped, and close is answered."""
    s, c, _ = opened_stream()
    message = s.disconnect("error", "bad frame")
    assert message is not None and message["parameters"] == {"reason": "error", "info": "bad frame"}
    assert s.disconnect("error", "again") is None
    assert s.feed_text("{garbage").event is None and s.feed_audio(b"\xff" * 3) == []
    assert isinstance(s.feed_text(c.msg("close", {"reason": "disconnect"})).event, Closing)
    assert s.closed()["clientseq"] == c.seq


@pytest.mark.parametrize(("text", "seconds"), [("PT0S", 0), ("PT1.5S", 1.5), ("PT.25S", 0.25)])
def test_durations_round_trip(text: str, seconds: float) -> None:
    assert float(parse_duration(text)) == seconds
    assert parse_duration(format_duration(seconds)) == parse_duration(text)


# -- signatures ----------------------------------------------------------------------------
SECRET = b"0123456789abcdef0123456789abcdef"
NOW = 1_800_000_000


def signed(
    nonce: str = "n" * 22, created: int = NOW, secret: bytes = SECRET, **over: str
) -> dict[str, str]:
    headers = {
        "host": "cuecard.example:443",
        "audiohook-organization-id": ORG,
        "audiohook-session-id": SID,
        "audiohook-correlation-id": CONV,
        "x-api-key": "key-1",
    }
    values = {"@request-target": "/v1/audiohook", "@authority": headers["host"]}
    values.update({k: v for k, v in headers.items() if k != "host"})
    return {**headers, **sign(values, "key-1", secret, created, nonce), **over}


def verifier(clock: ManualClock) -> SignatureVerifier:
    return SignatureVerifier({"key-1": SECRET}, clock.now)


def test_a_signed_upgrade_verifies_once_and_its_replay_is_refused() -> None:
    v = verifier(ManualClock(NOW + 1))
    headers = signed()
    assert v.verify(headers, "/v1/audiohook") == "key-1"
    with pytest.raises(SignatureRefused, match="replayed"):
        v.verify(headers, "/v1/audiohook")


@pytest.mark.parametrize(
    ("headers", "target", "needle"),
    [
        (signed(secret=b"another secret"), "/v1/audiohook", "does not verify"),
        (signed(**{"audiohook-session-id": CONV}), "/v1/audiohook", "does not verify"),
        (signed(), "/v1/audiohook?x=1", "does not verify"),
        (signed(**{"x-api-key": "key-2"}), "/v1/audiohook", "keyid"),
        (signed(created=NOW - 60), "/v1/audiohook", "expired"),
        (signed(created=NOW + 60), "/v1/audiohook", "future"),
        (signed(nonce="short"), "/v1/audiohook", "nonce"),
        (signed(signature="sig1=:!!:"), "/v1/audiohook", "malformed"),
        ({k: v for k, v in signed().items() if k != "signature"}, "/v1/audiohook", "missing"),
        ({"host": "h"}, "/v1/audiohook", "X-API-KEY"),
    ],
)
def test_bad_signatures_are_refused_saying_why(
    headers: dict[str, str], target: str, needle: str
) -> None:
    with pytest.raises(SignatureRefused, match=needle):
        verifier(ManualClock(NOW)).verify(headers, target)


def test_a_signature_not_covering_every_audiohook_header_is_refused() -> None:
    values = {"@request-target": "/v1/audiohook", "x-api-key": "key-1"}
    headers = {"host": "h", "x-api-key": "key-1", **sign(values, "key-1", SECRET, NOW, "n" * 22)}
    with pytest.raises(SignatureRefused, match="must cover"):
        verifier(ManualClock(NOW)).verify(headers, "/v1/audiohook")


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("", True),
        ('{"k": "c2VjcmV0"}', True),
        ("not json", False),
        ("[]", False),
        ('{"k": ""}', False),
        ('{"k": "%%%"}', False),
    ],
)
def test_audiohook_keys_setting(text: str, ok: bool) -> None:
    if ok:
        parse_keys(text)
    else:
        with pytest.raises(ValueError):
            parse_keys(text)
