"""End to end through the real server process: espeak-ng calls in, transcripts out."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import websockets

from clients.callgen import RenderedCall, Turn, render
from clients.simulator import SimOptions, simulate
from tests.conftest import ServerProcess, noise

pytestmark = [pytest.mark.model, pytest.mark.slow]

SCRIPT = (
    Turn("rep", "Good morning, thanks for joining the call today."),
    Turn("customer", "Thanks. We want to improve how our support team handles tickets."),
    Turn("rep", "How many people are on the support team right now?"),
    Turn("customer", "There are about twelve people on the team."),
)


@pytest.fixture(scope="module")
def call(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RenderedCall]:
    rendered = render(SCRIPT)
    path = tmp_path_factory.mktemp("calls") / "call.wav"
    rendered.write(path)
    return path, rendered


def finals(events: list[dict[str, Any]], speaker: str) -> str:
    return " ".join(
        e["text"].lower()
        for e in events
        if e["type"] == "transcript" and e["is_final"] and e["speaker"] == speaker
    )


def check_both_sides(events: list[dict[str, Any]]) -> None:
    rep, customer = finals(events, "rep"), finals(events, "customer")
    assert "morning" in rep and "people" in rep
    assert "improve" in customer and ("twelve" in customer or "12" in customer)
    assert "improve" not in rep and "morning" not in customer


async def test_both_speakers_are_transcribed_on_their_channels(
    server: ServerProcess, call: tuple[Path, RenderedCall]
) -> None:
    """Each speaker's words come back as finals labelled with that speaker's channel."""
    result = await simulate(call[0], SimOptions(server=server.ws, token=server.token, speed=0))
    check_both_sides(result.events)
    assert result.events[-1] == {**result.events[-1], "type": "status", "state": "ended"}


async def test_one_final_per_utterance_and_no_partial_after_it(
    server: ServerProcess, call: tuple[Path, RenderedCall]
) -> None:
    """Every utterance id has exactly one final, stamped with words, and no partial after it."""
    result = await simulate(call[0], SimOptions(server=server.ws, token=server.token, speed=0))
    seen_final: set[str] = set()
    for e in (e for e in result.events if e["type"] == "transcript"):
        assert e["utterance_id"] not in seen_final, f"event after final: {e}"
        if e["is_final"]:
            seen_final.add(e["utterance_id"])
            assert e["words"] and e["start_s"] <= e["words"][0]["start_s"] + 0.01
            assert e["end_s"] >= e["start_s"]
    assert len(seen_final) >= len(SCRIPT)


async def test_every_final_gets_an_insight_for_both_speakers(
    server: ServerProcess, call: tuple[Path, RenderedCall]
) -> None:
    """Each final becomes an insight on the rep's socket with label, confidence, entities,
    sentiment and prosody measured on that utterance's own audio (female customer voice: higher
    pitch than the rep's)."""
    result = await simulate(call[0], SimOptions(server=server.ws, token=server.token, speed=0))
    finals_by_id = {
        e["utterance_id"]: e for e in result.events if e["type"] == "transcript" and e["is_final"]
    }
    insights = [e for e in result.events if e["type"] == "insight" and e["is_final"]]
    assert {i["utterance_id"] for i in insights} == set(finals_by_id)
    for i in insights:
        final = finals_by_id[i["utterance_id"]]
        assert (i["speaker"], i["text"]) == (final["speaker"], final["text"])
        assert i["label"] in i["scores"] and 0 < i["confidence"] <= 1
        assert -1 <= i["sentiment"] <= 1 and isinstance(i["entities"], list)
        assert i["prosody"]["energy_db"] < 0 and i["prosody"]["rate_wpm"] > 60
    pitch = {
        who: np.median([i["prosody"]["pitch_median_hz"] for i in insights if i["speaker"] == who])
        for who in ("rep", "customer")
    }
    assert pitch["customer"] > pitch["rep"] * 1.2


async def test_silence_and_noise_produce_no_text(server: ServerProcess, tmp_path: Path) -> None:
    """A customer channel of silence and low noise yields no customer transcript at all."""
    rendered = render((Turn("rep", "Hello, can you hear me? I will wait for you."),))
    quiet = np.concatenate([np.zeros(16000 * 2, np.float32), noise(3.0, 0.003, seed=3)])
    customer = np.zeros_like(rendered.rep)
    customer[: len(quiet)] = quiet[: len(customer)]
    path = tmp_path / "quiet.wav"
    sf.write(str(path), np.stack([rendered.rep, customer], axis=1), 16000, subtype="PCM_16")
    result = await simulate(path, SimOptions(server=server.ws, token=server.token, speed=0))
    assert finals(result.events, "rep")
    assert not [
        e for e in result.events if e["type"] == "transcript" and e["speaker"] == "customer"
    ]


async def test_twilio_replay_of_a_two_sided_call(
    server: ServerProcess, call: tuple[Path, RenderedCall]
) -> None:
    """The same call replayed as Twilio Media Streams (mu-law 8 kHz) is transcribed per side."""
    opts = SimOptions(server=server.ws, token=server.token, speed=0, twilio=True)
    result = await simulate(call[0], opts)
    check_both_sides(result.events)


async def close_of(ws: Any) -> tuple[int | None, str]:
    try:
        async for _ in ws:
            pass
    except websockets.ConnectionClosed:
        pass
    return ws.close_code, ws.close_reason or ""


START = {
    "type": "start",
    "encoding": "pcm16",
    "sample_rate_hz": 16000,
    "channels": 2,
    "speakers": ["rep", "customer"],
}


@pytest.mark.parametrize(
    ("first", "then", "code", "needle"),
    [
        ("{not json", None, 1007, "bad start message"),
        (json.dumps({**START, "encoding": "opus"}), None, 1007, "encoding"),
        (json.dumps(START), b"\x00" * 6, 1007, "whole number"),
        (json.dumps(START), b"\x00" * 80_000, 1009, "exceeds"),
        (json.dumps(START), "hello", 1007, "stop"),
    ],
)
async def test_native_bad_input_closes_with_code_and_reason(
    server: ServerProcess, first: str, then: bytes | str | None, code: int, needle: str
) -> None:
    """Malformed start, unknown encoding, wrong frame size, oversized frame, stray text."""
    url = f"{server.ws}/v1/calls/bad-{abs(hash(first + str(then))) % 10**8}/audio"
    async with websockets.connect(url, max_size=None, additional_headers=server.auth) as ws:
        await ws.send(first)
        if then is not None:
            assert json.loads(await ws.recv())["type"] == "started"
            await ws.send(then)
        got = await close_of(ws)
    assert got[0] == code and needle in got[1], got


@pytest.mark.parametrize(
    ("messages", "needle"),
    [
        (
            [json.dumps({"event": "media", "media": {"track": "inbound", "payload": "/w=="}})],
            "media before start",
        ),
        (["{bad"], "not JSON"),
    ],
)
async def test_twilio_bad_input_closes_with_reason(
    server: ServerProcess, messages: list[str], needle: str
) -> None:
    """A Twilio frame before start, or malformed JSON, closes the stream with the reason."""
    async with websockets.connect(f"{server.ws}/v1/twilio") as ws:
        for m in messages:
            await ws.send(m)
        code, reason = await close_of(ws)
    assert code == 1007 and needle in reason


async def test_every_endpoint_checks_the_token(server: ServerProcess) -> None:
    """Audio and events sockets refuse a missing or wrong token with 1008."""
    for path in ("/v1/calls/x/audio", "/v1/calls/x/events", "/v1/calls/x/events?token=wrong"):
        async with websockets.connect(server.ws + path) as ws:
            code, reason = await close_of(ws)
        assert code == 1008 and "token" in reason


async def test_every_rest_route_checks_the_token_and_stats_count_asr_work(
    server: ServerProcess, call: tuple[Path, RenderedCall]
) -> None:
    """Every route in the OpenAPI document answers 401 without the token; /v1/stats with it
    shows the Whisper thread's busy time growing with a call."""
    import httpx

    auth = {"Authorization": f"Bearer {server.token}"}
    async with httpx.AsyncClient(base_url=server.http, timeout=30) as http:
        paths = (await http.get("/openapi.json")).json()["paths"]
        assert "/v1/stats" in paths and "/v1/calls" in paths
        for path, methods in paths.items():
            for method in methods:
                r = await http.request(method, path.replace("{call_id}", "x"))
                assert r.status_code == 401, (method, path)
        before = (await http.get("/v1/stats", headers=auth)).json()
        await simulate(call[0], SimOptions(server=server.ws, token=server.token, speed=0))
        after = (await http.get("/v1/stats", headers=auth)).json()
    assert after["asr_busy_s"] > before["asr_busy_s"]
    assert after["live_calls"] == 0


async def test_bad_prior_and_unknown_card_action_leave_the_call_going(
    server: ServerProcess, call: tuple[Path, RenderedCall]
) -> None:
    """A prior with wrong types degrades the call (status says why) and a card action for an
    unknown card is rejected to its sender only; the call is transcribed to its end anyway."""
    opts = SimOptions(
        server=server.ws, token=server.token, speed=1.0, prior={"company_size": "huge"}
    )
    sim = asyncio.create_task(simulate(call[0], opts))
    url = f"{server.ws}/v1/calls/{opts.call_id}/events"
    rejection: dict[str, Any] = {}
    async with websockets.connect(url, additional_headers=server.auth) as ws:
        async for raw in ws:
            event = json.loads(raw)
            if event["type"] == "transcript" and not rejection:
                await ws.send(
                    json.dumps({"type": "card_action", "card_id": "card-999", "action": "used"})
                )
            elif event["type"] not in ("transcript", "insight", "card", "score", "status"):
                rejection = event
                break
    result = await sim
    assert "card-999" in json.dumps(rejection), rejection
    degraded = [e for e in result.events if e["type"] == "status" and e["state"] == "degraded"]
    assert degraded and "company_size" in degraded[0]["detail"]
    assert not any("card-999" in json.dumps(e) for e in result.events)
    check_both_sides(result.events)


async def test_socket_closed_mid_utterance_keeps_finals_and_other_calls_go_on(
    server: ServerProcess, call: tuple[Path, RenderedCall]
) -> None:
    """A stream cut mid-utterance ends its call with every final stored; a parallel call is unaffected."""
    path, rendered = call
    audio, rate = sf.read(str(path), dtype="int16")
    cut = int((rendered.utterances[2].start_s + 1.0) * rate)  # inside the rep's second turn
    call_id = "cut-mid-utterance"
    good = asyncio.create_task(
        simulate(path, SimOptions(server=server.ws, token=server.token, speed=0))
    )
    url = f"{server.ws}/v1/calls/{call_id}/audio"
    ws = await websockets.connect(url, additional_headers=server.auth)
    await ws.send(json.dumps(START))
    await ws.recv()
    for i in range(0, cut, 320):
        await ws.send(audio[i : i + 320].tobytes())
    ws.transport.abort()  # no stop message, no close handshake
    check_both_sides_partial = await good
    check_both_sides(check_both_sides_partial.events)
    await asyncio.sleep(1.0)
    async with websockets.connect(
        f"{server.ws}/v1/calls/{call_id}/events", additional_headers=server.auth
    ) as viewer:
        stored = [json.loads(m) async for m in viewer]
    assert "morning" in finals(stored, "rep") and "improve" in finals(stored, "customer")
    assert stored[-1]["type"] == "status" and stored[-1]["state"] in ("ended", "interrupted")
