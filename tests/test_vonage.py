"""Vonage WebSockets: the core's table, then calls through the real server and Whisper."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
import soxr
import websockets

from clients.callgen import Turn, render
from clients.simulator import SimOptions, simulate
from server.ingest import INVALID_PAYLOAD, POLICY_VIOLATION, UNSUPPORTED_DATA, ProtocolError
from server.vonage import VonageStream
from tests.conftest import ServerProcess

SCRIPT = (
    Turn("rep", "Good morning, thanks for joining the call today."),
    Turn("customer", "Thanks. We want to improve how our support team handles tickets."),
)


def connected(**over: Any) -> str:
    msg = {"event": "websocket:connected", "content-type": "audio/l16;rate=16000", "call_id": "v-1"}
    return json.dumps({**msg, **over})


def test_metadata_names_the_call_its_rate_and_speaker() -> None:
    s = VonageStream(64_000)
    started = s.feed_text(connected(speaker="customer", vocabulary="Northwind, Dana Kim"))
    assert started is not None
    assert (started.call_id, started.sample_rate_hz, started.speaker) == ("v-1", 16000, "customer")
    assert started.vocabulary == ("Northwind", "Dana Kim")
    assert s.feed_text(json.dumps({"event": "websocket:dtmf", "digit": "5"})) is None
    chunks = s.feed_audio(b"\x00\x01" * 320)
    assert [c.speaker for c in chunks] == ["customer"] and len(chunks[0].samples) == 320


def test_a_mono_call_without_a_speaker_header_stays_unknown() -> None:
    """No guess: the one channel is 'unknown' unless the NCCO names who is on it."""
    started = VonageStream(64_000).feed_text(connected(**{"content-type": "audio/l16;rate=8000"}))
    assert started is not None and (started.speaker, started.sample_rate_hz) == ("unknown", 8000)


@pytest.mark.parametrize(
    ("messages", "code", "needle"),
    [
        (["{nope"], INVALID_PAYLOAD, "not JSON"),
        ([json.dumps({"event": "websocket:dtmf"})], INVALID_PAYLOAD, "websocket:connected"),
        ([connected(**{"content-type": "audio/l16;rate=44100"})], UNSUPPORTED_DATA, "rate=8000"),
        ([connected(**{"content-type": "audio/opus"})], UNSUPPORTED_DATA, "content-type"),
        ([connected(speaker="both")], INVALID_PAYLOAD, "speaker"),
        ([connected(call_id="")], POLICY_VIOLATION, "call_id"),
        ([b"\x00\x00"], INVALID_PAYLOAD, "before"),
        ([connected(), b"\x00\x00\x00"], INVALID_PAYLOAD, "whole number"),
        ([connected(), "[1]"], INVALID_PAYLOAD, "JSON object"),
    ],
)
def test_bad_input_is_a_protocol_error(messages: list[Any], code: int, needle: str) -> None:
    s = VonageStream(64_000)
    with pytest.raises(ProtocolError) as err:
        for m in messages:
            s.feed_audio(m) if isinstance(m, bytes) else s.feed_text(m)
    assert err.value.code == code and needle in err.value.reason


@pytest.fixture(scope="module")
def call_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vonage") / "call.wav"
    render(SCRIPT).write(path)
    return path


def finals(events: list[dict[str, Any]], speaker: str) -> str:
    return " ".join(
        e["text"].lower()
        for e in events
        if e["type"] == "transcript" and e["is_final"] and e["speaker"] == speaker
    )


@pytest.mark.model
@pytest.mark.slow
async def test_a_mixed_vonage_call_is_transcribed_from_its_one_channel(
    server: ServerProcess, call_wav: Path
) -> None:
    """Both voices mixed to 16 kHz mono: both turns' words arrive as finals (labelled by the
    mixed-channel speaker decision, or 'unknown' when it is not sure), and the call ends."""
    opts = SimOptions(server=server.ws, token=server.token, speed=0, vonage=True)
    result = await simulate(call_wav, opts)
    text = " ".join(finals(result.events, who) for who in ("rep", "customer", "unknown"))
    assert "morning" in text and "improve" in text
    assert result.events[-1]["type"] == "status" and result.events[-1]["state"] == "ended"


@pytest.mark.model
@pytest.mark.slow
async def test_a_vonage_leg_named_customer_at_8khz_is_the_customer(
    server: ServerProcess, tmp_path: Path
) -> None:
    """An 8 kHz socket whose NCCO says speaker=customer yields customer finals."""
    call = render(SCRIPT[1:])
    path = tmp_path / "customer.wav"
    sf.write(str(path), soxr.resample(call.customer, 16000, 8000), 8000, subtype="PCM_16")
    opts = SimOptions(
        server=server.ws, token=server.token, speed=0, vonage=True, speaker="customer"
    )
    result = await simulate(path, opts)
    assert "improve" in finals(result.events, "customer")


@pytest.mark.model
@pytest.mark.slow
async def test_a_vonage_socket_without_the_token_is_refused(server: ServerProcess) -> None:
    async with websockets.connect(f"{server.ws}/v1/vonage") as ws:
        await ws.send(connected(call_id="v-no-token"))
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
    assert ws.close_code == POLICY_VIOLATION and "token" in (ws.close_reason or "")


@pytest.mark.model
@pytest.mark.slow
async def test_a_bad_first_message_closes_with_its_reason(server: ServerProcess) -> None:
    url = f"{server.ws}/v1/vonage"
    async with websockets.connect(url, additional_headers=server.auth) as ws:
        await ws.send(connected(**{"content-type": "audio/l16;rate=22050"}))
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
    assert ws.close_code == UNSUPPORTED_DATA and "rate" in (ws.close_reason or "")
