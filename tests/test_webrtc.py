"""WebRTC ingest: real aiortc peers in this process (no ICE servers: loopback), the real server
with Whisper, and Debian's headless Chromium sending a WAV as its microphone from /softphone.

Nothing waits a guessed delay: each wait ends when the thing it waits for happens (a status
event, the page's state line) and its bound only keeps a broken run from hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import av
import httpx
import numpy as np
import pytest
import soundfile as sf
import soxr
import websockets
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from audio.chunk import SAMPLE_RATE_HZ, AudioChunk
from clients.callgen import RenderedCall, Turn, render
from clients.simulator import SimOptions, simulate
from clients.webrtc import ArrayTrack, SignallingRefused, WebRtcOptions, connect, connected
from server.limits import InputLimits
from server.webrtc import Negotiated, StreamOptions, close_peer, negotiate, stream_tracks
from server.webrtc_offer import OfferRefused, WebRtcOffer
from tests import chromium
from tests.conftest import ServerProcess

WAIT_S = 120.0  # upper bound for a loaded machine; each test passes as soon as its call is done
CHROMIUM_ARGS = [  # the page tests' flags, and a fake microphone
    *chromium.CHROMIUM_ARGS,
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


def tone(seconds: float, hz: float) -> np.ndarray:
    t = np.arange(int(seconds * 48_000)) / 48_000
    return (0.3 * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


class SilentTrack(MediaStreamTrack):
    """A track that is negotiated and never sends a frame."""

    kind = "audio"

    async def recv(self) -> av.AudioFrame:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def offer_of(tracks: list[MediaStreamTrack], speakers: list[str]) -> WebRtcOffer:
    """What an aiortc client would POST for ``tracks`` (its connection closed again)."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        for t in tracks:
            pc.addTransceiver(t, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        return WebRtcOffer(type="offer", sdp=pc.localDescription.sdp, speakers=speakers)  # type: ignore[arg-type]
    finally:
        await pc.close()


@contextlib.asynccontextmanager
async def peers(tracks: list[MediaStreamTrack], speakers: list[str]) -> AsyncIterator[Any]:
    """A client peer sending ``tracks`` and the server's side of it, both closed after."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    neg: Negotiated | None = None
    try:
        for t in tracks:
            client.addTransceiver(t, direction="sendonly")
        await client.setLocalDescription(await client.createOffer())
        body = WebRtcOffer(type="offer", sdp=client.localDescription.sdp, speakers=speakers)  # type: ignore[arg-type]
        neg = await negotiate(body, ())
        await client.setRemoteDescription(RTCSessionDescription(neg.answer_sdp, "answer"))
        yield client, neg
    finally:
        await client.close()
        if neg is not None:
            await close_peer(neg.pc)


def dominant_hz(chunks: list[AudioChunk]) -> float:
    x = np.concatenate([c.samples for c in chunks])
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE_HZ)[int(np.argmax(spectrum))])


# -- two aiortc peers in this process: negotiation and media, no server ------------------------
async def test_two_tracks_arrive_labelled_decoded_and_aligned_at_16khz() -> None:
    """Track 0 (440 Hz) is the rep, track 1 (880 Hz) the customer, both from audio time 0; the
    client closing its connection ends the stream ``ended``."""
    from audio.tracks import TrackTimeline

    tracks = [ArrayTrack(tone(1.0, 440)), ArrayTrack(tone(1.0, 880))]
    got: list[AudioChunk] = []

    async def feed(chunks: list[AudioChunk]) -> None:
        got.extend(chunks)

    async with peers(list(tracks), ["rep", "customer"]) as (client, neg):
        timeline = TrackTimeline(("rep", "customer"))
        opts = StreamOptions(WAIT_S, InputLimits())  # the server's default pace limit
        streaming = asyncio.create_task(stream_tracks(neg, timeline, feed, opts))
        await asyncio.wait_for(asyncio.gather(*(t.played.wait() for t in tracks)), WAIT_S)
        await client.close()
        outcome = await asyncio.wait_for(streaming, WAIT_S)
    assert outcome == ("ended", "the peer hung up")
    by = {s: [c for c in got if c.speaker == s] for s in ("rep", "customer")}
    assert dominant_hz(by["rep"]) == pytest.approx(440, abs=5)
    assert dominant_hz(by["customer"]) == pytest.approx(880, abs=5)
    for chunks in by.values():
        assert chunks[0].start_sample == 0
        loud = np.flatnonzero(np.abs(np.concatenate([c.samples for c in chunks])) > 0.1)
        assert loud[0] < 0.1 * SAMPLE_RATE_HZ  # the tone starts the track: no lead of its own


async def test_a_track_that_never_sends_ends_the_stream_timed_out() -> None:
    """The customer's track is negotiated and silent: after ``idle_s`` the stream ends
    ``timed_out``, saying which track never sent audio."""
    from audio.tracks import TrackTimeline

    async def feed(chunks: list[AudioChunk]) -> None:
        del chunks

    tracks = [ArrayTrack(tone(30.0, 440)), SilentTrack()]
    async with peers(tracks, ["rep", "customer"]) as (client, neg):
        await connected(client, WAIT_S)  # the rep's audio flows before the idle clock starts
        opts = StreamOptions(2.0)
        timeline = TrackTimeline(("rep", "customer"))
        outcome = await asyncio.wait_for(stream_tracks(neg, timeline, feed, opts), WAIT_S)
    assert outcome[0] == "timed_out"
    assert outcome[1].startswith("no audio on the customer track within 2 s")


class HandFedTrack(MediaStreamTrack):
    """A track whose first frame the test hands over (``arrive``); a second read ends it.
    It counts its reads."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.reading = asyncio.Event()  # set while the first read waits
        self._next: asyncio.Future[av.AudioFrame] | None = None

    async def recv(self) -> av.AudioFrame:
        self.reads += 1
        if self.reads > 1:
            raise MediaStreamError
        self._next = asyncio.get_running_loop().create_future()
        self.reading.set()
        return await self._next

    def arrive(self) -> None:
        frame = av.AudioFrame.from_ndarray(tone(0.02, 440).reshape(1, -1), "s16", "mono")
        frame.sample_rate = 48_000
        assert self._next is not None
        self._next.set_result(frame)


async def test_a_track_reader_cancelled_as_its_frame_arrives_stops_reading() -> None:
    """The call ends (another track's outcome, or shutdown) and cancels a track's reader in
    the very loop iteration its frame arrives: the reader still stops and the track is not
    read again. (With Python 3.11's ``asyncio.wait_for`` around ``recv`` the reader got the
    frame and lost the cancel: it went on reading a live track, and the call never ended.)"""
    from aiortc import RTCPeerConnection

    from audio.tracks import TrackTimeline
    from server.webrtc import _read

    async def feed(chunks: list[AudioChunk]) -> None:
        del chunks

    track = HandFedTrack()
    pc = RTCPeerConnection()
    try:
        neg = Negotiated(pc, [track], "")
        opts = StreamOptions(WAIT_S)
        reader = asyncio.create_task(_read(neg, TrackTimeline(("rep",)), 0, feed, opts))
        await track.reading.wait()
        track.arrive()
        reader.cancel()
        await asyncio.wait({reader})
        assert reader.cancelled()
        assert track.reads == 1
    finally:
        await pc.close()


class FastTrack(ArrayTrack):
    """Audio sent about ten times faster than real time (RTP says 20 ms, each 2 ms apart)."""

    async def recv(self) -> av.AudioFrame:
        await asyncio.sleep(0.002)
        self._t0 = -math.inf  # never wait for the real-time schedule
        return await super().recv()


async def test_a_track_faster_than_real_time_ends_the_stream_limit_exceeded() -> None:
    """Past the audio burst, a track sending far faster than real time ends the stream
    ``limit_exceeded``."""
    from audio.tracks import TrackTimeline

    async def feed(chunks: list[AudioChunk]) -> None:
        del chunks

    limits = InputLimits(max_audio_speed=1.25, audio_burst_s=0.5)
    async with peers([FastTrack(tone(30.0, 440))], ["rep"]) as (_, neg):
        outcome = await asyncio.wait_for(
            stream_tracks(neg, TrackTimeline(("rep",)), feed, StreamOptions(WAIT_S, limits)),
            WAIT_S,
        )
    assert outcome[0] == "limit_exceeded"
    assert outcome[1].startswith("rep track: audio faster than 1.25x real time")


async def test_sdp_that_aiortc_cannot_use_is_refused_and_leaves_nothing_running() -> None:
    """Missing ICE credentials, no common codec: 400 with the reason; the autouse fixture
    fails the test if the peer connection left a task behind."""
    good = await offer_of([SilentTrack()], ["rep"])
    no_ice = re.sub(r"a=ice-(ufrag|pwd):.*\r\n", "", good.sdp)
    speex = re.sub(r"(m=audio \d+ \S+) [\d ]+", r"\1 111", good.sdp)
    speex = re.sub(r"a=(rtpmap|fmtp|rtcp-fb):\d+ .*\r\n", "", speex)
    speex = speex.replace("a=mid:0\r\n", "a=mid:0\r\na=rtpmap:111 speex/16000\r\n")
    for sdp, needle in ((no_ice, "invalid SDP offer: ICE"), (speex, "no common audio codec")):
        with pytest.raises(OfferRefused) as err:
            await negotiate(good.model_copy(update={"sdp": sdp}), ())
        assert err.value.status == 400 and needle in err.value.detail


# -- through the real server -------------------------------------------------------------------
SCRIPT = (
    Turn("rep", "Thanks for taking my call today, this is Sam from Acme.", rate_wpm=140),
    Turn("customer", "Honestly, the price is way too high for us right now."),
)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def heard_share(events: list[dict[str, Any]], speaker: str, script: str) -> float:
    """The share of the words of ``script`` that ``speaker``'s final transcripts contain."""
    said = words(script)
    finals = [e for e in events if e["type"] == "transcript" and e["is_final"]]
    heard = set().union(*(words(e["text"]) for e in finals if e["speaker"] == speaker))
    return len(said & heard) / len(said)


async def history(server: ServerProcess, call_id: str) -> list[dict[str, Any]]:
    """The stored events of a call that has ended (its events socket closes after them)."""
    url = f"{server.ws}/v1/calls/{quote(call_id)}/events?wait_s=0"
    async with websockets.connect(url, additional_headers=server.auth) as ws:
        return [json.loads(m) async for m in ws]


async def watch_until_over(server: ServerProcess, call_id: str) -> list[dict[str, Any]]:
    """Every event of the call, from before it starts until its socket closes."""
    url = f"{server.ws}/v1/calls/{quote(call_id)}/events?wait_s=60"
    async with websockets.connect(url, max_size=None, additional_headers=server.auth) as ws:
        return [json.loads(m) async for m in ws]


def said_by(call: RenderedCall, speaker: str) -> str:
    return " ".join(u.text for u in call.utterances if u.speaker == speaker)


def end_status(events: list[dict[str, Any]]) -> dict[str, Any]:
    return [e for e in events if e["type"] == "status"][-1]


@pytest.mark.model
@pytest.mark.slow
async def test_a_two_track_webrtc_call_is_transcribed_per_speaker(
    server: ServerProcess, tmp_path: Path
) -> None:
    """An aiortc softphone sends the rep and the customer as two Opus tracks: each side's
    words come back under its own speaker, at the script's audio times, the customer's price
    objection becomes a card on the customer's words, and hanging up ends the call."""
    call = render(SCRIPT)
    call.write(tmp_path / "call.wav")
    opts = SimOptions(server=server.ws, token=server.token, webrtc=True, call_id="rtc-two")
    result = await asyncio.wait_for(simulate(tmp_path / "call.wav", opts), WAIT_S)
    assert result.close_code == 1000
    for speaker in ("rep", "customer"):
        assert heard_share(result.events, speaker, said_by(call, speaker)) >= 0.5
    finals = [e for e in result.events if e["type"] == "transcript" and e["is_final"]]
    for spoken in call.utterances:  # one timeline: each side's words where they were said
        mine = [f for f in finals if f["speaker"] == spoken.speaker]
        assert min(abs(f["start_s"] - spoken.start_s) for f in mine) < 0.5
    cards = [e for e in result.events if e["type"] == "card" and e["kind"] == "objection_price"]
    assert cards and cards[0]["evidence"]["speaker"] == "customer"
    status = end_status(result.events)
    assert (status["state"], status["detail"]) == ("ended", "the peer hung up")


def offer_body(sdp: str, speakers: list[str]) -> dict[str, Any]:
    return {"type": "offer", "sdp": sdp, "speakers": speakers}


@pytest.mark.model
@pytest.mark.slow
async def test_bad_offers_get_a_4xx_json_reason_and_open_no_call(server: ServerProcess) -> None:
    """Each bad request is answered at once with a status and ``detail``; none creates a call."""
    good = await offer_of([SilentTrack(), SilentTrack()], ["rep", "customer"])
    no_ice = re.sub(r"a=ice-(ufrag|pwd):.*\r\n", "", good.sdp)
    auth = {"Authorization": f"Bearer {server.token}"}
    cases: list[tuple[str, dict[str, Any], Any, int, str]] = [
        ("bad%20id%21", auth, offer_body(good.sdp, good.speakers), 400, "call id must be"),
        ("rtc-bad-1", {}, offer_body(good.sdp, good.speakers), 401, "missing token"),
        ("rtc-bad-2", auth, "{not json", 400, "bad offer"),
        ("rtc-bad-3", auth, offer_body("v=1 nonsense", ["rep"]), 400, "invalid SDP offer"),
        ("rtc-bad-4", auth, offer_body(no_ice, ["rep", "customer"]), 400, "ICE username"),
        ("rtc-bad-5", auth, offer_body("v=0\r\ns=-\r\n", ["rep"]), 400, "no audio track"),
        ("rtc-bad-6", auth, offer_body(good.sdp, ["rep"]), 400, "2 audio track(s)"),
    ]
    async with httpx.AsyncClient(base_url=server.http, timeout=WAIT_S) as http:
        for call_id, headers, body, status, needle in cases:
            content = body if isinstance(body, str) else json.dumps(body)
            headers = {**headers, "Content-Type": "application/json"}
            reply = await http.post(f"/v1/calls/{call_id}/webrtc", content=content, headers=headers)
            assert reply.status_code == status, (call_id, reply.text)
            assert needle in reply.json()["detail"], (call_id, reply.text)
            if status == 400 and call_id != "bad%20id%21":
                found = await http.get(f"/v1/calls/{call_id}", headers=auth)
                assert found.status_code == 404
        stats = (await http.get("/v1/stats", headers=auth)).json()
        config = await http.get("/v1/webrtc/config", headers=auth)
        assert (await http.get("/v1/webrtc/config")).status_code == 401
    assert stats["live_calls"] == 0
    assert config.json() == {"ice_servers": []}  # none configured: host candidates only


@pytest.mark.model
@pytest.mark.slow
async def test_a_silent_track_ends_the_call_timed_out_and_its_id_stays_taken(
    server: ServerProcess,
) -> None:
    """A call whose one track never sends media ends ``timed_out`` after the server's idle
    timeout with a reason naming the track; while it is live a second offer for its id is 409."""
    watching = asyncio.create_task(watch_until_over(server, "rtc-silent"))
    opts = WebRtcOptions(server.http, server.token, "rtc-silent", speakers=("rep",))
    pc = await connect([SilentTrack()], opts)
    try:
        with pytest.raises(SignallingRefused) as again:
            await connect([SilentTrack()], opts)
        events = await asyncio.wait_for(watching, WAIT_S)
    finally:
        await pc.close()
    assert again.value.status == 409 and "already streaming" in again.value.detail
    status = end_status(events)
    assert status["state"] == "timed_out"
    assert status["detail"].startswith("no audio on the rep track within")


# -- Chromium: /softphone ----------------------------------------------------------------------
MIC_SCRIPT = (Turn("rep", "Thanks for taking my call today, this is Sam from Acme.", rate_wpm=140),)


@pytest.fixture
def mic_wav(tmp_path: Path) -> tuple[Path, RenderedCall]:
    """The rep's words as the fake microphone's file (48 kHz mono, as a capture device)."""
    call = render(MIC_SCRIPT, lead_s=1.0, tail_s=2.0)
    path = tmp_path / "mic.wav"
    sf.write(str(path), soxr.resample(call.rep, SAMPLE_RATE_HZ, 48_000), 48_000, subtype="PCM_16")
    return path, call


@contextlib.asynccontextmanager
async def chromium(mic: Path) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is not installed: apt-get install -y chromium (make test does it)"
    args = [*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={mic}%noloop"]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=exe, headless=True, args=args)
        try:
            page = await browser.new_page()
            page.set_default_timeout(WAIT_S * 1000)
            yield page
        finally:
            await browser.close()


async def softphone_call(
    server: ServerProcess, mic: Path, call_id: str, mode: str, second_input: bool
) -> tuple[list[dict[str, Any]], str]:
    """Open /softphone, start, wait for the rep's words on the page, hang up; the call's
    events and the page's final state line."""
    from playwright.async_api import expect

    watching = asyncio.create_task(watch_until_over(server, call_id))
    async with chromium(mic) as page:
        await page.goto(f"{server.http}/softphone#token={server.token}&call={call_id}&mode={mode}")
        if second_input:  # the other party on a second (fake) capture device
            await page.locator("#remote option", has_text="Fake Audio Input 2").wait_for(
                state="attached"
            )
            await page.select_option("#remote", label="input: Fake Audio Input 2")
        await page.click("#start")
        await expect(page.locator("#state")).to_have_attribute("data-state", "connected")
        await page.locator("#heard .rep").first.wait_for()
        await page.click("#hangup")
        events = await asyncio.wait_for(watching, WAIT_S)
        ended = f"ended: {end_status(events)['detail']}"  # the page shows the server's reason
        await expect(page.locator("#state")).to_have_text(ended)
        return events, ended


@pytest.mark.model
@pytest.mark.slow
async def test_softphone_sends_the_microphone_over_webrtc(
    server: ServerProcess, mic_wav: tuple[Path, RenderedCall]
) -> None:
    """Chromium's microphone (a WAV) goes out as a WebRTC track from /softphone: the rep's
    words come back, and Hang up ends the call ``ended``."""
    path, call = mic_wav
    events, state = await softphone_call(server, path, "soft-rtc", "webrtc", second_input=False)
    assert heard_share(events, "rep", said_by(call, "rep")) >= 0.5
    assert not [e for e in events if e.get("speaker") == "customer"]
    assert end_status(events)["state"] == "ended"
    assert state == "ended: the peer hung up"


@pytest.mark.model
@pytest.mark.slow
async def test_softphone_fallback_sends_two_inputs_as_pcm16_over_the_native_socket(
    server: ServerProcess, mic_wav: tuple[Path, RenderedCall]
) -> None:
    """Without WebRTC (mode=ws) the page's AudioWorklet streams 16-bit PCM over
    /v1/calls/{id}/audio; a second input device is the customer's channel."""
    path, call = mic_wav
    events, state = await softphone_call(server, path, "soft-ws", "ws", second_input=True)
    for speaker in ("rep", "customer"):  # both fake devices play the same file
        assert heard_share(events, speaker, said_by(call, "rep")) >= 0.5
    assert state == "ended: stop message"


@pytest.mark.model
@pytest.mark.slow
async def test_softphone_shows_why_the_server_refused(
    server: ServerProcess, mic_wav: tuple[Path, RenderedCall]
) -> None:
    """A call id the server cannot take, or a wrong token: the page says so, no call starts."""
    from playwright.async_api import expect

    async with chromium(mic_wav[0]) as page:
        for fragment, shown in (
            (f"token={server.token}&call=bad%20id!", r"refused \(400\): call id must be"),
            ("token=wrong&call=soft-no-token", r"refused \(401\): wrong token"),
        ):
            await page.goto(f"{server.http}/softphone#{fragment}")
            await page.reload()  # a new fragment alone does not reload the page
            await page.click("#start")
            await expect(page.locator("#state")).to_have_text(re.compile(shown))
            await expect(page.locator("#state")).to_have_attribute("data-state", "refused")
