"""Rep feedback per card kind (shown, used, dismissed, no action) from the stored card events:
the tally, `GET /v1/cards/stats`, `cuecard card-stats`, and a real server the rep acted on."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from fastapi import FastAPI, Header, HTTPException

from clients.callgen import Turn, render
from clients.simulator import SimOptions, simulate
from guidance.cards import Card, Evidence
from guidance.playbook import ALERT_KINDS
from server.api import build_router
from server.calls_cli import register
from server.card_stats import tally
from server.clock import ManualClock
from server.sqlite_store import SqliteCallStore
from server.store import CallMeta
from server.wire import to_wire
from tests.conftest import ServerProcess

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC).timestamp()


def card(card_id: str, kind: str, state: str, *, provisional: bool = False) -> Card:
    evidence = Evidence("That is too expensive.", "customer", 1.0, 2.0)
    return Card(card_id, state, kind, 80, kind, "", ("Say this.",), evidence, 2.0,  # type: ignore[arg-type]
                provisional=provisional, utterance_id="customer-1")  # fmt: skip


# One call's stored card events, in order (provisional issues are never stored).
CALL_A = [
    card("card-1", "objection_price", "issued"),
    card("card-1", "objection_price", "updated"),
    card("card-1", "objection_price", "used"),
    card("card-2", "objection_price", "confirmed"),  # issued from a partial, confirmed
    card("card-2", "objection_price", "dismissed"),
    card("card-3", "objection_need", "withdrawn"),  # the final took it back: never counted
    card("card-4", "talk_ratio", "issued"),
    card("card-5", "question", "issued"),
    card("card-5", "question", "dismissed"),
    card("card-5", "question", "used"),  # the last action counts
]
CALL_B = [
    card("card-1", "objection_price", "issued"),
    card("card-1", "objection_price", "dismissed"),
    card("card-2", "question", "issued"),
]


def rows(stats: Any) -> dict[str, tuple[int, int, int, int]]:
    return {k.kind: (k.shown, k.used, k.dismissed, k.no_action) for k in stats.kinds}


def test_tally_counts_each_shown_card_once_with_the_reps_last_action() -> None:
    """Updates and confirmations do not count twice, withdrawn cards not at all, the rep's
    last action wins, alerts are counted in their own group."""
    stats = tally([CALL_A, CALL_B])
    assert stats.calls == 2
    assert rows(stats) == {
        "objection_price": (3, 1, 2, 0),
        "question": (2, 1, 0, 1),
        "talk_ratio": (1, 0, 0, 1),
    }
    price = next(k for k in stats.kinds if k.kind == "objection_price")
    assert price.dismiss_rate == pytest.approx(2 / 3, abs=1e-4) and price.group == "card"
    assert {k.kind for k in stats.kinds if k.group == "alert"} == {"talk_ratio"}
    assert "talk_ratio" in ALERT_KINDS
    assert stats.kinds[0].kind == "objection_price"  # most shown first


def check_token(authorization: str | None = Header(default=None)) -> None:
    if authorization != f"Bearer {TOKEN}":
        raise HTTPException(401, "missing or wrong bearer token")


async def seed(store: SqliteCallStore) -> None:
    for call_id, rep, started, events in [
        ("c-a", "ana", T0, CALL_A),
        ("c-b", "bo", T0 + 3600, CALL_B),
    ]:
        await store.open_call(CallMeta(call_id, "native", rep_id=rep, started_at=started))
        for e in events:
            await store.append(call_id, to_wire(e))
        await store.close_call(call_id, "ended")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    store = await SqliteCallStore.open(tmp_path, clock=ManualClock(T0 + 7200))
    await seed(store)
    app = FastAPI()
    app.include_router(build_router(store, auth=lambda scope, per_call: check_token))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as c:
        yield c
    await store.close()


async def test_card_stats_endpoint(client: httpx.AsyncClient) -> None:
    """`GET /v1/cards/stats` needs the token, counts every stored call, and filters by start
    time and rep."""
    assert (await client.get("/v1/cards/stats")).status_code == 401
    r = await client.get("/v1/cards/stats", headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert body["calls"] == 2
    price = next(k for k in body["kinds"] if k["kind"] == "objection_price")
    assert price == {"kind": "objection_price", "group": "card", "shown": 3, "used": 1,
                     "dismissed": 2, "no_action": 0, "dismiss_rate": 0.6667,
                     "use_rate": 0.3333}  # fmt: skip
    later = (await client.get("/v1/cards/stats", headers=AUTH,
                              params={"since": datetime.fromtimestamp(T0 + 60, UTC).isoformat()})).json()  # fmt: skip
    assert later["calls"] == 1 and {k["kind"] for k in later["kinds"]} == {
        "objection_price",
        "question",
    }
    ana = (await client.get("/v1/cards/stats", headers=AUTH, params={"rep": "ana"})).json()
    assert ana["calls"] == 1 and len(ana["kinds"]) == 3
    bad = await client.get("/v1/cards/stats", headers=AUTH, params={"since": "yesterday"})
    assert bad.status_code == 422
    doc = (await client.get("/openapi.json")).json()
    assert "/v1/cards/stats" in doc["paths"]


async def test_card_stats_cli(tmp_path: Path) -> None:
    """`cuecard card-stats` prints the same counts as a table or, with --json, one object."""
    store = await SqliteCallStore.open(tmp_path, clock=ManualClock(T0 + 7200))
    await seed(store)
    await store.close()
    parser = argparse.ArgumentParser(prog="cuecard")
    register(parser.add_subparsers(dest="cmd", required=True))

    def run(*argv: str) -> str:
        out = io.StringIO()
        args = parser.parse_args(["card-stats", "--data-dir", str(tmp_path), *argv])
        assert args.func(args, out) == 0
        return out.getvalue()

    as_json = json.loads(await asyncio.to_thread(run, "--json"))
    assert as_json["calls"] == 2
    assert {k["kind"]: k["dismissed"] for k in as_json["kinds"]} == {
        "objection_price": 2,
        "question": 0,
        "talk_ratio": 0,
    }
    table = await asyncio.to_thread(run, "--rep", "bo")
    assert table.splitlines()[0] == "1 calls"
    price = next(line for line in table.splitlines() if line.startswith("objection_price"))
    assert price.split()[2:] == ["1", "0", "1", "0", "100%"]


PRICE = "Honestly, the price is way too high for us."
AUTHORITY = "I need to check with my boss first."
ACTED_CALL = (
    Turn("rep", "Thanks for taking my call today. Can I show you our tool?", rate_wpm=140),
    Turn("customer", PRICE),
    Turn("rep", "I understand. Most teams see the cost come back within a quarter.", rate_wpm=140),
    Turn("customer", AUTHORITY, gap_s=2.0),
    Turn("rep", "Of course, who else should we bring in?", rate_wpm=140),
    Turn("customer", "Okay, go on.", gap_s=2.0),
)


@pytest.mark.model
@pytest.mark.slow
async def test_the_reps_actions_on_a_real_call_reach_the_stats(
    server: ServerProcess, tmp_path: Path
) -> None:
    """A rep who dismisses the first intent card and uses the next sees exactly that in
    `GET /v1/cards/stats` for their calls, and the CLI reading the same store agrees."""
    path = tmp_path / "acted.wav"
    render(ACTED_CALL).write(path)
    rep_id = f"rep-{uuid.uuid4().hex[:8]}"
    options = SimOptions(server=server.ws, token=server.token, speed=1.0, rep_id=rep_id)
    acted: dict[str, str] = {}

    async def act_as_rep() -> None:
        url = f"{server.ws}/v1/calls/{options.call_id}/events"
        async with websockets.connect(url, additional_headers=server.auth) as ws:
            async for raw in ws:
                e = json.loads(raw)
                if e["type"] != "card" or e["state"] not in ("issued", "confirmed"):
                    continue
                if e["provisional"] or e["kind"] in ALERT_KINDS or e["card_id"] in acted:
                    continue
                action = "dismissed" if not acted else "used"
                acted[e["card_id"]] = f"{e['kind']}:{action}"
                await ws.send(json.dumps({"type": "card_action", "card_id": e["card_id"],
                                          "action": action}))  # fmt: skip

    viewer = asyncio.create_task(act_as_rep())
    try:
        result = await simulate(path, options)
    finally:
        viewer.cancel()
        with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
            await viewer
    assert result.events[-1]["type"] == "status", result.events[-1]
    assert len(acted) >= 2, (acted, [e for e in result.events if e["type"] == "card"])
    expected: dict[str, dict[str, int]] = {}
    for kind_action in acted.values():
        kind, action = kind_action.split(":")
        expected.setdefault(kind, {"used": 0, "dismissed": 0})[action] += 1
    async with httpx.AsyncClient(base_url=server.http) as http:
        assert (await http.get("/v1/cards/stats", params={"rep": rep_id})).status_code == 401
        body = (await http.get("/v1/cards/stats", params={"rep": rep_id},
                               headers={"Authorization": f"Bearer {server.token}"})).json()  # fmt: skip
    assert body["calls"] == 1
    got = {k["kind"]: {"used": k["used"], "dismissed": k["dismissed"]} for k in body["kinds"]}
    for kind, counts in expected.items():
        assert got[kind] == counts, (got, acted)
    parser = argparse.ArgumentParser(prog="cuecard")
    register(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(["card-stats", "--data-dir", str(server.data_dir), "--rep", rep_id,
                              "--json"])  # fmt: skip
    out = io.StringIO()
    assert await asyncio.to_thread(args.func, args, out) == 0
    assert json.loads(out.getvalue()) == body
