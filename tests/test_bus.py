"""The event bus across server instances: two ``RedisBus`` on a real redis-server, then two real
servers sharing one Redis, a call streamed into one and watched (and acted on) from the other."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from clients.callgen import Turn, render
from clients.simulator import SimOptions, simulate
from server.bus import Event
from server.redis_bus import RedisBus
from server.store import StoreError
from tests.conftest import ServerProcess, free_port, start_server, stop_server


async def never_here(call_id: str, message: Event) -> list[Event] | None:
    return None


@pytest.fixture
async def buses(redis_url: str) -> AsyncIterator[tuple[RedisBus, RedisBus]]:
    prefix = f"t{os.urandom(4).hex()}:"
    a, b = RedisBus(redis_url, prefix=prefix), RedisBus(redis_url, prefix=prefix, act_timeout_s=0.5)

    async def a_serves_call_1(call_id: str, message: Event) -> list[Event] | None:
        return (
            [{"type": "echo", "call_id": call_id, "got": message}] if call_id == "call-1" else None
        )

    await a.start(a_serves_call_1)
    await b.start(never_here)
    try:
        yield a, b
    finally:
        await a.aclose()
        await b.aclose()


async def test_events_reach_viewers_on_every_instance_once(
    buses: tuple[RedisBus, RedisBus],
) -> None:
    """An event published on A reaches A's viewer directly and B's through Redis, each once,
    in order, and the end of the call ends both."""
    a, b = buses
    here, there, other_call = a.subscribe("call-1"), b.subscribe("call-1"), b.subscribe("call-2")
    for n in range(3):
        a.publish("call-1", {"type": "transcript", "n": n})
    a.end("call-1")
    for sub in (here, there):
        got = [await asyncio.wait_for(sub.get(), 5) for _ in range(4)]
        assert got == [{"type": "transcript", "n": n} for n in range(3)] + [None]
    assert here._queue.empty() and there._queue.empty()  # no echo of A's own messages
    assert other_call._queue.empty()
    assert a.dropped == b.dropped == 0


async def test_actions_go_to_the_instance_serving_the_call(
    buses: tuple[RedisBus, RedisBus],
) -> None:
    """A viewer's message on B for a call A serves is answered by A; for a call nobody serves
    the answer is None (after the timeout)."""
    _, b = buses
    replies = await b.act("call-1", {"type": "card_action", "card_id": "c1"})
    assert replies == [
        {"type": "echo", "call_id": "call-1", "got": {"type": "card_action", "card_id": "c1"}}
    ]
    assert await b.act("call-9", {"type": "card_action"}) is None


async def test_unreachable_redis_is_a_clear_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(StoreError, match=r"cannot reach Redis at redis://127\.0\.0\.1"):
        await RedisBus(url).start(never_here)


# -- two real servers sharing one Redis --------------------------------------------------------

SCRIPT = (
    Turn("rep", "Thanks for taking my call today.", rate_wpm=150),
    Turn("customer", "Honestly, the price is way too high for us."),
    Turn("rep", "I understand. Most teams see the cost come back within a quarter.", rate_wpm=150),
    Turn("customer", "Maybe, but I would need to see the numbers first."),
)


@pytest.fixture
async def two_servers(redis_url: str, tmp_path: Path) -> AsyncIterator[list[ServerProcess]]:
    url = redis_url.rsplit("/", 1)[0] + "/1"  # a database of its own: the servers' key prefix
    servers = [
        start_server(tmp_path / name, CUECARD_STORE=url, CUECARD_INSTANCE_ID=name)
        for name in ("a", "b")
    ]
    try:
        yield servers
    finally:
        for s in servers:
            stop_server(s)


@pytest.mark.model
@pytest.mark.slow
async def test_a_call_on_one_instance_is_watched_and_acted_on_from_another(
    two_servers: list[ServerProcess], tmp_path: Path
) -> None:
    """A viewer on B, connected before the call starts on A, gets the call live (partials
    too, which are never stored), dismisses a card on A through B, and sees the end."""
    a, b = two_servers
    wav = tmp_path / "call.wav"
    render(SCRIPT).write(wav)
    call_id = f"multi-{os.urandom(3).hex()}"
    seen: list[dict[str, Any]] = []
    events_url = f"{b.ws}/v1/calls/{call_id}/events?wait_s=60"
    async with websockets.connect(events_url, additional_headers=b.auth) as viewer:

        async def watch() -> None:
            async for raw in viewer:
                event = json.loads(raw)
                seen.append(event)
                if event["type"] == "card" and event["state"] == "issued":
                    await viewer.send(
                        json.dumps(
                            {"type": "card_action", "card_id": event["card_id"], "action": "used"}
                        )
                    )
                    await viewer.send(
                        json.dumps({"type": "card_action", "card_id": "nope", "action": "used"})
                    )

        watching = asyncio.create_task(watch())
        opts = SimOptions(server=a.ws, token=a.token, speed=1.0, call_id=call_id)
        streamed = await simulate(wav, opts)
        await asyncio.wait_for(watching, 60)
        assert (viewer.close_code, viewer.close_reason) == (1000, "call ended")

    finals = {
        (e["speaker"], e["text"]) for e in seen if e["type"] == "transcript" and e["is_final"]
    }
    assert finals == {
        (e["speaker"], e["text"])
        for e in streamed.events
        if e["type"] == "transcript" and e["is_final"]
    }
    assert {s for s, _ in finals} == {"rep", "customer"}
    assert any(e["type"] == "transcript" and not e["is_final"] for e in seen)  # bus only
    issued = [e for e in seen if e["type"] == "card" and e["state"] == "issued"]
    assert any(c["kind"] == "objection_price" for c in issued)
    used = {e["card_id"] for e in seen if e["type"] == "card" and e["state"] == "used"}
    assert used == {c["card_id"] for c in issued}  # applied on A, broadcast back to B
    assert any(
        e["type"] == "card_action_rejected" and e["card_id"] == "nope" for e in seen
    )  # the rejection came back to this viewer through the bus
    assert not any(
        e["type"] == "card_action_rejected" for e in streamed.events
    )  # ... and to this viewer only
    assert seen[-1]["type"] == "status" and seen[-1]["state"] == "ended"
    async with httpx.AsyncClient() as http:
        for s in (a, b):
            auth = {"Authorization": f"Bearer {s.token}"}
            stats = (await http.get(f"{s.http}/v1/stats", headers=auth)).json()
            assert (stats["live_calls"], stats["bus_dropped"]) == (0, 0)
