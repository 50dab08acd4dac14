"""WebRTC ingest's sans-I/O parts: the tracks' timeline, the offer checks, the ICE setting."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from audio.chunk import SAMPLE_RATE_HZ, AudioChunk
from audio.codec import AudioFormatError
from audio.tracks import TimelineOptions, TrackFrame, TrackTimeline
from server.settings import Settings, SettingsError
from server.webrtc_offer import (
    OfferRefused,
    audio_tracks,
    media_sections,
    parse_ice_servers,
    parse_offer,
)

RATE = 48_000
FRAME = 960  # 20 ms at 48 kHz


def frame(pts: int | None, arrival_s: float, value: int = 1000, n: int = FRAME) -> TrackFrame:
    return TrackFrame(np.full(n, value, np.int16), RATE, pts, arrival_s)


def speech_start_s(chunks: list[AudioChunk]) -> float:
    """Audio time of the first clearly non-silent sample."""
    joined = np.concatenate([c.samples for c in chunks])
    first = int(np.flatnonzero(np.abs(joined) > 0.01)[0])
    return (chunks[0].start_sample + first) / SAMPLE_RATE_HZ


def total_s(chunks: list[AudioChunk]) -> float:
    return sum(len(c.samples) for c in chunks) / SAMPLE_RATE_HZ


def test_each_track_is_its_speaker_at_16khz_from_sample_zero() -> None:
    """Chunks carry their track's speaker and count 16 kHz samples from 0, without gaps."""
    tl = TrackTimeline(("rep", "customer"))
    rep = [c for i in range(50) for c in tl.feed(0, frame(i * FRAME, i * 0.02))]
    cust = [c for i in range(50) for c in tl.feed(1, frame(i * FRAME, i * 0.02))]
    rep += [c for c in tl.flush() if c.speaker == "rep"]
    assert {c.speaker for c in rep} == {"rep"} and {c.speaker for c in cust} == {"customer"}
    assert rep[0].start_sample == 0
    assert all(a.end_sample == b.start_sample for a, b in itertools.pairwise(rep))
    assert total_s(rep) == pytest.approx(1.0, abs=0.001)  # 50 x 20 ms, resampler tail included


def test_a_track_that_starts_later_is_placed_later_on_the_call_timeline() -> None:
    """The second track's first frame arrives 1.5 s after the first's: its audio starts there."""
    tl = TrackTimeline(("rep", "customer"))
    rep = [c for i in range(10) for c in tl.feed(0, frame(i * FRAME, 10.0 + i * 0.02))]
    cust = [c for i in range(10) for c in tl.feed(1, frame(i * FRAME, 11.5 + i * 0.02))]
    assert speech_start_s(rep) < 0.01
    assert speech_start_s(cust) == pytest.approx(1.5, abs=0.01)


def test_a_timestamp_gap_is_filled_with_silence() -> None:
    """Lost packets (RTP time jumps 400 ms as the wall clock does): later audio keeps its time."""
    tl = TrackTimeline(("rep",))
    before = [c for i in range(5) for c in tl.feed(0, frame(i * FRAME, i * 0.02))]
    after = tl.feed(0, frame(25 * FRAME, 0.5, value=20000))
    later = [*before, *after, *tl.flush()]
    loud = np.concatenate([c.samples for c in later])
    first_loud = int(np.flatnonzero(loud > 0.3)[0]) / SAMPLE_RATE_HZ
    assert first_loud == pytest.approx(0.5, abs=0.01)


def test_a_timestamp_jump_is_believed_only_as_far_as_the_wall_clock_allows() -> None:
    """A sender skipping an hour of RTP time 20 ms after its last frame adds about
    ``max_burst_s`` of silence, not an hour."""
    tl = TrackTimeline(("rep",), TimelineOptions(max_burst_s=1.0))
    tl.feed(0, frame(0, 0.0))
    jumped = tl.feed(0, frame(3600 * RATE, 0.02))
    assert 1.0 <= total_s(jumped) <= 1.1


def test_a_timestamp_that_goes_backwards_is_taken_as_contiguous() -> None:
    """A sender that restarted its clock: no silence, no overlap, the audio just follows."""
    tl = TrackTimeline(("rep",))
    first = [c for i in range(5) for c in tl.feed(0, frame(100 * FRAME + i * FRAME, i * 0.02))]
    again = [c for i in range(5) for c in tl.feed(0, frame(i * FRAME, 0.1 + i * 0.02))]
    chunks = [*first, *again, *tl.flush()]
    assert all(a.end_sample == b.start_sample for a, b in itertools.pairwise(chunks))
    assert total_s(chunks) == pytest.approx(10 * FRAME / RATE, abs=0.001)


def test_an_8khz_track_and_a_missing_timestamp() -> None:
    """A PCMU track (8 kHz) is resampled too; a frame without pts follows the previous one."""
    tl = TrackTimeline(("customer",))
    chunks = [
        c
        for i in range(10)
        for c in tl.feed(0, TrackFrame(np.full(160, 500, np.int16), 8000, None, i * 0.02))
    ]
    chunks += tl.flush()
    assert total_s(chunks) == pytest.approx(0.2, abs=0.001)


@pytest.mark.parametrize(
    ("frames", "needle"),
    [
        ([TrackFrame(np.zeros(441, np.int16), 44_100, 0, 0.0)], "44100 Hz unsupported"),
        (
            [frame(0, 0.0), TrackFrame(np.zeros(160, np.int16), 8000, 960, 0.02)],
            "rate changed",
        ),
        ([TrackFrame(np.zeros((480, 2), np.int16), RATE, 0, 0.0)], "mono"),
    ],
)
def test_unusable_frames_are_a_format_error(frames: list[TrackFrame], needle: str) -> None:
    tl = TrackTimeline(("rep",))
    with pytest.raises(AudioFormatError, match=needle):
        for f in frames:
            tl.feed(0, f)


def test_tracks_need_distinct_speakers() -> None:
    with pytest.raises(ValueError, match="its own speaker"):
        TrackTimeline(("rep", "rep"))


# -- the offer --------------------------------------------------------------------------------
def sdp(*sections: tuple[str, str]) -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0"]
    for i, (kind, direction) in enumerate(sections):
        lines += [f"m={kind} 9 UDP/TLS/RTP/SAVPF 111", f"a=mid:{i}", f"a={direction}"]
    return "\r\n".join(lines) + "\r\n"


def offer(sdp_text: str, speakers: list[str] | None = None, **extra: object) -> bytes:
    body = {
        "type": "offer",
        "sdp": sdp_text,
        "speakers": ["rep"] if speakers is None else speakers,
        **extra,
    }
    return json.dumps(body).encode()


def test_an_offer_names_one_speaker_per_sending_audio_mline() -> None:
    o = parse_offer(offer(sdp(("audio", "sendonly"), ("audio", "sendrecv")), ["rep", "customer"]))
    assert audio_tracks(o) == 2
    assert o.track_speakers == ("rep", "customer")


def test_media_sections_read_session_level_direction() -> None:
    text = "v=0\r\na=sendonly\r\nm=audio 9 RTP/AVP 0\r\nm=audio 9 RTP/AVP 0\r\na=inactive\r\n"
    assert [(s.kind, s.direction) for s in media_sections(text)] == [
        ("audio", "sendonly"),
        ("audio", "inactive"),
    ]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"not json", 400, "bad offer"),
        (offer(sdp(("audio", "sendonly")), type="answer"), 400, "type"),
        (offer(sdp(("audio", "sendonly")), []), 400, "speakers"),
        (offer(sdp(("audio", "sendonly")), ["rep", "rep"]), 400, "its own speaker"),
        (offer(sdp(("audio", "sendonly")), ["agent"]), 400, "speakers"),
        (offer(sdp(("audio", "sendonly")), token="x"), 400, "token"),
        (offer("hello"), 400, "invalid SDP offer: it must start with the line v=0"),
        (offer(sdp()), 400, "no audio track"),
        (offer(sdp(("video", "sendonly"))), 400, "m-line 1 is video"),
        (offer(sdp(("audio", "recvonly"))), 400, "sends nothing (a=recvonly)"),
        (
            offer(sdp(("audio", "sendonly"), ("audio", "sendonly"), ("audio", "sendonly"))),
            400,
            "3 audio track(s) and speakers names 1",
        ),
        (
            offer(sdp(("audio", "sendonly")), ["rep", "customer"]),
            400,
            "1 audio track(s) and speakers names 2",
        ),
    ],
)
def test_bad_offers_are_refused_with_a_reason(body: bytes, status: int, needle: str) -> None:
    with pytest.raises(OfferRefused) as err:
        audio_tracks(parse_offer(body))
    assert err.value.status == status
    assert needle in err.value.detail


# -- CUECARD_ICE_SERVERS ----------------------------------------------------------------------
def test_ice_servers_read_like_the_browsers_rtciceserver() -> None:
    text = json.dumps(
        [
            {"urls": "stun:stun.example.org:3478"},
            {"urls": ["turn:turn.example.org"], "username": "u", "credential": "p"},
        ]
    )
    servers = parse_ice_servers(text)
    assert [s.urls for s in servers] == [
        ("stun:stun.example.org:3478",),
        ("turn:turn.example.org",),
    ]
    assert servers[1].as_json() == {
        "urls": ["turn:turn.example.org"],
        "username": "u",
        "credential": "p",
    }
    assert parse_ice_servers("") == ()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{", "not JSON"),
        ('{"urls": "stun:x"}', "JSON list"),
        ('[{"url": "stun:x"}]', "entry 0 must be an object"),
        ('[{"urls": []}]', "urls must be"),
        ('[{"urls": "http://x"}]', "not a stun: or turn: URL"),
        ('[{"urls": "turn:x", "username": 5}]', "username must be a string"),
    ],
)
def test_a_bad_ice_servers_setting_stops_start_up(text: str, needle: str) -> None:
    with pytest.raises(SettingsError, match=f"CUECARD_ICE_SERVERS: .*{needle}"):
        Settings.from_env({"CUECARD_ICE_SERVERS": text})
