"""Genesys AudioHook end to end: the reference client against the real server and Whisper."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
import websockets

from clients.audiohook import (
    AudioHookClient,
    AudioHookOptions,
    connect,
    media_entry,
    replay,
    upgrade_headers,
)
from clients.callgen import Turn, render
from server.audiohook import PROBE_ID
from tests.conftest import ServerProcess, start_server, stop_server

pytestmark = [pytest.mark.model, pytest.mark.slow]

API_KEY = "test-audiohook-key"
SECRET = b"a client secret of thirty-two b."
SCRIPT = (
    Turn("rep", "Good morning, thanks for joining the call today."),
    Turn("customer", "Thanks. We want to improve how our support team handles tickets."),
)


@pytest.fixture(scope="module")
def signed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    keys = json.dumps({API_KEY: base64.b64encode(SECRET).decode()})
    srv = start_server(tmp_path_factory.mktemp("audiohook"), CUECARD_AUDIOHOOK_KEYS=keys)
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def stereo() -> tuple[np.ndarray, int]:
    call = render(SCRIPT)
    pcm = np.clip(call.stereo() * 32768.0, -32768, 32767).astype(np.int16)
    return pcm, 16000


def options(server: ServerProcess, **over: Any) -> AudioHookOptions:
    base = AudioHookOptions(server=server.ws, api_key=API_KEY, client_secret=SECRET, speed=0)
    return dataclasses.replace(base, **over)


async def watched(server: ServerProcess, call_id: str, run: Awaitable[Any]) -> list[dict[str, Any]]:
    """The call's events from its viewer socket, while ``run`` streams the call."""
    url = f"{server.ws}/v1/calls/{call_id}/events"
    events: list[dict[str, Any]] = []
    async with websockets.connect(url, additional_headers=server.auth) as ws:

        async def listen() -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                async for raw in ws:
                    events.append(json.loads(raw))

        listener = asyncio.create_task(listen())
        try:
            await run
            await asyncio.wait_for(listener, 60)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
    return events


def finals(events: list[dict[str, Any]], speaker: str) -> list[dict[str, Any]]:
    return [
        e for e in events if e["type"] == "transcript" and e["is_final"] and e["speaker"] == speaker
    ]


def text_of(events: list[dict[str, Any]], speaker: str) -> str:
    return " ".join(e["text"].lower() for e in finals(events, speaker))


@pytest.mark.parametrize(
    ("channels", "fmt"),
    [(("external", "internal"), "PCMU"), (("internal", "external"), "L16")],
)
async def test_a_stereo_call_is_transcribed_per_side_in_either_channel_order(
    signed_server: ServerProcess, stereo: tuple[np.ndarray, int], channels: Any, fmt: Any
) -> None:
    """external is the customer, internal the rep, whatever order the channels come in."""
    opts = options(signed_server, channels=channels, format=fmt)
    events = await watched(signed_server, opts.conversation_id, replay(*stereo, opts))
    rep, customer = text_of(events, "rep"), text_of(events, "customer")
    assert "morning" in rep and "improve" in customer
    assert "improve" not in rep and "morning" not in customer
    assert events[-1]["type"] == "status" and events[-1]["state"] == "ended"


async def test_a_pause_moves_later_words_by_the_paused_time(
    signed_server: ServerProcess, stereo: tuple[np.ndarray, int]
) -> None:
    """After a 5 s pause between the turns, the customer's words are stamped 5 s later."""
    plain = options(signed_server)
    before = await watched(signed_server, plain.conversation_id, replay(*stereo, plain))
    paused = options(signed_server, pause_at_s=3.8, pause_s=5.0)
    after = await watched(signed_server, paused.conversation_id, replay(*stereo, paused))
    shift = finals(after, "customer")[0]["start_s"] - finals(before, "customer")[0]["start_s"]
    assert shift == pytest.approx(5.0, abs=0.3)
    assert finals(after, "rep")[0]["start_s"] == pytest.approx(
        finals(before, "rep")[0]["start_s"], abs=0.3
    )


async def test_the_probe_opens_and_closes_and_creates_no_call(signed_server: ServerProcess) -> None:
    """Conversation id of zeros: opened with one offered entry, closed, and no call stored."""
    opts = options(signed_server, conversation_id=PROBE_ID)
    client = await connect(opts)
    offered = [media_entry(["external", "internal"]), media_entry(["external"])]
    opened = await client.open(PROBE_ID, opts.organization_id, offered)
    assert opened["parameters"]["media"] == [offered[0]]
    closed = await client.close()
    assert (closed["seq"], closed["clientseq"]) == (2, 2)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {signed_server.token}"}) as h:
        assert (await h.get(f"{signed_server.http}/v1/calls/{PROBE_ID}")).status_code == 404


async def test_ping_update_discarded_and_a_client_error_keep_the_call_going(
    signed_server: ServerProcess,
) -> None:
    """pong answers ping with its seq; update, discarded and error are taken; close -> closed."""
    opts = options(signed_server)

    async def session() -> None:
        client = await connect(opts)
        await client.open(opts.conversation_id, opts.organization_id, [media_entry(["external"])])
        await client.audio(b"\xff" * 1600, 1600)
        ping = await client.send("ping", {})
        pong = await client.expect("pong")
        assert pong["clientseq"] == ping["seq"] and pong["parameters"] == {}
        await client.send("update", {"language": "en-GB"})
        await client.send("discarded", {"start": client.position, "discarded": "PT1S"})
        await client.send("error", {"code": 500, "message": "client trouble"})
        await client.audio(b"\xff" * 1600, 1600)
        closed = await client.close()
        assert closed["clientseq"] == client.seq

    events = await watched(signed_server, opts.conversation_id, session())
    assert events[-1]["state"] == "ended"
    assert events[-1]["audio_s"] == pytest.approx(1.4, abs=0.05)  # 0.2 + 1 s discarded + 0.2


async def refused(client: AudioHookClient) -> tuple[dict[str, Any], int | None]:
    """The server's disconnect, our close, its closed; then the socket's close code."""
    disconnect = await client.recv()
    await client.send("close", {"reason": "disconnect"})
    closed = await client.recv()
    assert closed["type"] == "closed"
    code, _ = await client.closed_by_server()
    return disconnect, code


async def test_a_bad_signature_is_refused_with_disconnect_unauthorized(
    signed_server: ServerProcess,
) -> None:
    client = await connect(options(signed_server, bad_signature=True))
    disconnect, code = await refused(client)
    assert disconnect["type"] == "disconnect" and code == 1008
    assert disconnect["parameters"] == {
        "reason": "unauthorized",
        "info": "signature does not verify",
    }


async def test_a_replayed_upgrade_is_refused(signed_server: ServerProcess) -> None:
    """The same signed headers a second time: unauthorized, the nonce was used."""
    opts = options(signed_server)
    url = f"{signed_server.ws}/v1/audiohook"
    headers = upgrade_headers(opts, "/v1/audiohook", url.split("//")[1].split("/")[0])
    first = AudioHookClient(
        await websockets.connect(url, additional_headers=headers), opts.session_id
    )
    await first.open(PROBE_ID, opts.organization_id, [media_entry(["internal"])])
    await first.close()
    again = AudioHookClient(
        await websockets.connect(url, additional_headers=headers), opts.session_id
    )
    disconnect, _ = await refused(again)
    assert disconnect["parameters"]["reason"] == "unauthorized"
    assert "replayed" in disconnect["parameters"]["info"]


async def test_without_configured_keys_the_bearer_token_is_required(server: ServerProcess) -> None:
    opts = AudioHookOptions(server=server.ws, token=server.token)
    good = await connect(opts)
    await good.open(PROBE_ID, opts.organization_id, [media_entry(["external"])])
    await good.close()
    bad = await connect(AudioHookOptions(server=server.ws, token="wrong"))
    disconnect, code = await refused(bad)
    assert disconnect["parameters"]["reason"] == "unauthorized" and code == 1008


def _open(c: AudioHookClient, conv: str, org: str) -> str:
    params = {
        "organizationId": org,
        "conversationId": conv,
        "participant": {},
        "media": [media_entry(["external", "internal"])],
    }
    c.seq += 1
    body = {"version": "2", "id": c.session_id, "type": "open", "seq": c.seq, "serverseq": 0}
    return json.dumps({**body, "position": "PT0S", "parameters": params})


ORG = "d7934305-0972-4844-938e-9060eef73d05"
MALFORMED: list[tuple[str, list[Any], str]] = [
    ("not JSON", ["{oops"], "not JSON"),
    ("unknown type", [lambda c, _: json.dumps({"version": "2", "type": "hello"})], "hello"),
    ("wrong seq", ["OPEN", "OPENED", lambda c, _: _ping(c, seq=9)], "out of order"),
    ("wrong version", [lambda c, _: _ping(c, version="1")], "version"),
    ("audio before open", [b"\xff" * 320], "audio before"),
    ("odd audio frame", ["OPEN", "OPENED", b"\xff" * 3], "whole number"),
    ("bad close", ["OPEN", "OPENED", lambda c, _: _ping(c, type="close")], "bad 'close'"),
    (
        "audio while paused",
        ["OPEN", "OPENED", lambda c, _: _ping(c, type="paused"), b"\xff" * 4],
        "paused",
    ),
]


def _ping(c: AudioHookClient, **over: Any) -> str:
    c.seq += 1
    body = {
        "version": "2",
        "id": c.session_id,
        "type": "ping",
        "seq": c.seq,
        "serverseq": c.serverseq,
    }
    return json.dumps({**body, "position": "PT0S", "parameters": {}, **over})


@pytest.mark.parametrize(("name", "steps", "needle"), MALFORMED, ids=[m[0] for m in MALFORMED])
async def test_malformed_messages_get_disconnect_with_a_reason_and_other_calls_go_on(
    signed_server: ServerProcess,
    stereo: tuple[np.ndarray, int],
    name: str,
    steps: list[Any],
    needle: str,
) -> None:
    """A broken session is told why (disconnect, reason error) and its call ends interrupted,
    while a call streaming at the same time is transcribed to the end."""
    good = options(signed_server)
    running = asyncio.create_task(
        watched(signed_server, good.conversation_id, replay(*stereo, good))
    )
    try:
        opts = options(signed_server)
        client = await connect(opts)
        for step in steps:
            if step == "OPEN":
                await client.send_raw(_open(client, opts.conversation_id, opts.organization_id))
            elif step == "OPENED":
                assert (await client.recv())["type"] == "opened"
            elif isinstance(step, bytes):
                await client.ws.send(step)
            else:
                await client.send_raw(step(client, opts) if callable(step) else step)
        disconnect, code = await refused(client)
        assert disconnect["type"] == "disconnect" and disconnect["parameters"]["reason"] == "error"
        assert needle in disconnect["parameters"]["info"] and code in (1007, 1009)
    finally:
        events = await running
    assert "morning" in text_of(events, "rep") and "improve" in text_of(events, "customer")
    if "OPENED" in steps:  # the broken session's call: its history ends interrupted
        history = await watched(signed_server, opts.conversation_id, asyncio.sleep(0))
        assert history[-1]["type"] == "status" and history[-1]["state"] == "interrupted"


async def test_a_socket_dropped_without_close_ends_the_call_interrupted(
    signed_server: ServerProcess, stereo: tuple[np.ndarray, int]
) -> None:
    """Hanging up mid-call: what was said is transcribed, the call ends interrupted, and the
    server takes the next session."""
    opts = options(signed_server, drop_at_s=4.0)
    events = await watched(signed_server, opts.conversation_id, replay(*stereo, opts))
    assert "morning" in text_of(events, "rep")
    assert events[-1]["type"] == "status" and events[-1]["state"] == "interrupted"
    probe_opts = options(signed_server, conversation_id=PROBE_ID)
    probe = await connect(probe_opts)
    await probe.open(PROBE_ID, probe_opts.organization_id, [media_entry(["internal"])])
    await probe.close()


def test_cuecard_simulate_audiohook_streams_a_wav(server: ServerProcess, tmp_path: Path) -> None:
    """``cuecard simulate --audiohook`` replays a stereo WAV as AudioHook (token mode here)."""
    sf.write(str(tmp_path / "c.wav"), render(SCRIPT).stereo(), 16000, subtype="PCM_16")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUECARD_")}
    argv = ["simulate", str(tmp_path / "c.wav"), "--audiohook", "--json", "--speed", "0"]
    argv += ["--server", server.ws, "--token", server.token]
    out = subprocess.run(
        [sys.executable, "-m", "server.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert "morning" in text_of(events, "rep") and "improve" in text_of(events, "customer")
