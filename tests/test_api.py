"""REST API over a real SQLite store through FastAPI's ASGI app, and the CLI commands."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Header, HTTPException

from guidance.summary import BuiltinSummarizer
from server.api import build_router
from server.calls_cli import register
from server.sqlite_store import SqliteCallStore
from server.store import CallMeta, StoreError
from server.webhooks import hand_off_call

TOKEN = "test-token"
T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC).timestamp()
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REPO = Path(__file__).resolve().parents[1]


def check_token(authorization: str | None = Header(default=None)) -> None:
    if authorization != f"Bearer {TOKEN}":
        raise HTTPException(401, "missing or wrong bearer token")


def tr(uid: str, text: str, start_s: float, *, final: bool = True) -> dict[str, Any]:
    return {"type": "transcript", "utterance_id": uid, "speaker": uid.split("-")[0],
            "is_final": final, "text": text, "start_s": start_s, "end_s": start_s + 2.0,
            "words": [{"text": text.split()[0], "start_s": start_s, "end_s": start_s + 0.3,
                       "probability": 0.9}]}  # fmt: skip


async def seed(store: SqliteCallStore) -> None:
    await store.open_call(CallMeta("c-old", "twilio", rep_id="ana", started_at=T0 - 86_400))
    await store.append("c-old", tr("customer-0", "This is too expensive for us.", 0.0))
    await store.close_call("c-old", "ended")
    await hand_off_call(store, BuiltinSummarizer(), None, "c-old")

    await store.open_call(CallMeta("c-new", "native", rep_id="bo", started_at=T0))
    for e in [
        {"type": "status", "state": "live"},
        tr("rep-0", "I'll send you the proposal by Friday.", 0.0),
        {"type": "insight", "utterance_id": "rep-0", "speaker": "rep", "is_final": True,
         "text": "I'll send you the proposal by Friday.", "label": "next_step",
         "confidence": 0.9, "scores": {"next_step": 0.9}, "sentiment": 0.2, "prosody": None,
         "entities": [{"kind": "date", "text": "by Friday", "value": "2026-11-27",
                       "start_char": 27, "end_char": 36}]},
        {"type": "card", "utterance_id": "rep-0", "title": "Confirm the date"},
        {"type": "score", "score": 70, "delta": 5, "reasons": ["next step agreed"]},
    ]:  # fmt: skip
        await store.append("c-new", e)

    await store.open_call(CallMeta("c-live", "webrtc", rep_id="ana", started_at=T0 + 60))


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, SqliteCallStore]]:
    store = await SqliteCallStore.open(tmp_path, clock=lambda: T0 + 600)
    await seed(store)
    app = FastAPI()
    app.include_router(build_router(store, auth=check_token))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c, store
    await store.close()


async def test_requests_without_token_get_401(client: tuple[httpx.AsyncClient, Any]) -> None:
    """Every route refuses a request without the bearer token."""
    c, _ = client
    for method, path in [
        ("GET", "/v1/calls"),
        ("GET", "/v1/calls/c-new"),
        ("GET", "/v1/calls/c-new/summary"),
        ("DELETE", "/v1/calls/c-new"),
    ]:
        r = await c.request(method, path)
        assert r.status_code == 401, path
    assert (await c.get("/v1/calls", headers={"Authorization": "Bearer nope"})).status_code == 401


async def test_list_calls_with_filters(client: tuple[httpx.AsyncClient, Any]) -> None:
    """Listing filters by time, rep, outcome, status and transcript text."""
    c, _ = client

    async def ids(**params: Any) -> list[str]:
        r = await c.get("/v1/calls", params=params, headers=AUTH)
        assert r.status_code == 200, r.text
        return [x["call_id"] for x in r.json()["calls"]]

    assert await ids() == ["c-live", "c-new", "c-old"]
    assert await ids(since="2026-11-21T00:00:00Z") == ["c-live", "c-new"]
    assert await ids(until="2026-11-21T10:00:00+00:00") == ["c-old"]
    assert await ids(rep="ana") == ["c-live", "c-old"]
    assert await ids(outcome="stalled") == ["c-old"]
    assert await ids(status="live") == ["c-live", "c-new"]
    assert await ids(q="proposal friday") == ["c-new"]
    assert await ids(limit=1, offset=2) == ["c-old"]
    bad = await c.get("/v1/calls", params={"outcome": "won"}, headers=AUTH)
    assert bad.status_code == 422


async def test_get_call_detail(client: tuple[httpx.AsyncClient, Any]) -> None:
    """A call comes back with its transcript, insights, cards, scores and statuses."""
    c, _ = client
    r = await c.get("/v1/calls/c-new", headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert body["call"]["rep_id"] == "bo" and body["call"]["status"] == "live"
    assert [t["utterance_id"] for t in body["transcript"]] == ["rep-0"]
    assert body["transcript"][0]["seq"] == 2
    assert body["insights"][0]["entities"][0]["value"] == "2026-11-27"
    assert body["cards"] == [{"seq": 4, "type": "card", "utterance_id": "rep-0",
                              "title": "Confirm the date"}]  # fmt: skip
    assert body["scores"][0]["score"] == 70 and body["statuses"][0]["state"] == "live"


async def test_unknown_call_is_404(client: tuple[httpx.AsyncClient, Any]) -> None:
    """Unknown call ids answer 404 with a message naming the id."""
    c, _ = client
    for method, path in [
        ("GET", "/v1/calls/zzz"),
        ("GET", "/v1/calls/zzz/summary"),
        ("GET", "/v1/calls/zzz/deliveries"),
        ("DELETE", "/v1/calls/zzz"),
    ]:
        r = await c.request(method, path, headers=AUTH)
        assert r.status_code == 404
        assert r.json() == {"detail": "unknown call id 'zzz'"}


async def test_summary_json_and_markdown(client: tuple[httpx.AsyncClient, Any]) -> None:
    """The stored summary comes back as JSON, and as Markdown by query or Accept header."""
    c, _ = client
    r = await c.get("/v1/calls/c-old/summary", headers=AUTH)
    assert r.status_code == 200
    assert r.json()["outcome"] == "stalled" and r.json()["objections"][0]["kind"] == "price"
    md = await c.get("/v1/calls/c-old/summary", params={"format": "markdown"}, headers=AUTH)
    assert md.headers["content-type"].startswith("text/markdown")
    assert md.text.startswith("# Call summary: c-old")
    md2 = await c.get("/v1/calls/c-old/summary", headers={**AUTH, "Accept": "text/markdown"})
    assert md2.text == md.text


async def test_summary_of_live_and_interrupted_calls(
    client: tuple[httpx.AsyncClient, SqliteCallStore],
) -> None:
    """A live call's summary is 409; an interrupted one is summarized from its events."""
    c, store = client
    r = await c.get("/v1/calls/c-new/summary", headers=AUTH)
    assert r.status_code == 409 and "live" in r.json()["detail"]
    assert await store.mark_live_calls_interrupted() == ["c-live", "c-new"]
    r = await c.get("/v1/calls/c-new/summary", headers=AUTH)
    assert r.status_code == 200
    item = r.json()["action_items"][0]
    assert (item["owner"], item["item"], item["due"]) == ("rep", "send the proposal", "2026-11-27")
    assert r.json()["lead_score"] == 70


async def test_delete_call(client: tuple[httpx.AsyncClient, Any]) -> None:
    """DELETE removes the call: it is gone from the list and its detail is 404."""
    c, _ = client
    r = await c.delete("/v1/calls/c-old", headers=AUTH)
    assert r.status_code == 204
    assert (await c.get("/v1/calls/c-old", headers=AUTH)).status_code == 404
    listed = (await c.get("/v1/calls", headers=AUTH)).json()["calls"]
    assert "c-old" not in [x["call_id"] for x in listed]


async def test_openapi_documents_the_routes(client: tuple[httpx.AsyncClient, Any]) -> None:
    """The OpenAPI schema names every route and the summary's fields."""
    c, _ = client
    doc = (await c.get("/openapi.json")).json()
    assert set(doc["paths"]) >= {
        "/v1/calls", "/v1/calls/{call_id}", "/v1/calls/{call_id}/summary",
        "/v1/calls/{call_id}/deliveries"}  # fmt: skip
    assert "delete" in doc["paths"]["/v1/calls/{call_id}"]
    assert "action_items" in doc["components"]["schemas"]["Summary"]["properties"]


class FailingStore(SqliteCallStore):
    async def list_calls(self, flt: Any) -> Any:
        raise StoreError("disk on fire")


async def test_store_failure_is_503(tmp_path: Path) -> None:
    """A store failure answers 503 with the reason, not a 500."""
    store = await FailingStore.open(tmp_path)
    app = FastAPI()
    app.include_router(build_router(store, auth=check_token))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get("/v1/calls", headers=AUTH)
    await store.close()
    assert r.status_code == 503 and "disk on fire" in r.json()["detail"]


def _cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cuecard")
    register(parser.add_subparsers(dest="cmd", required=True))
    return parser.parse_args(argv)


async def test_cli_calls_and_summary(tmp_path: Path) -> None:
    """`cuecard calls` lists stored calls; `cuecard summary` prints Markdown or JSON; an
    unknown id exits 2 with a message."""
    store = await SqliteCallStore.open(tmp_path, clock=lambda: T0 + 600)
    await seed(store)
    await store.close()
    script = (
        "import argparse, sys\n"
        "from server.calls_cli import register\n"
        "p = argparse.ArgumentParser(prog='cuecard')\n"
        "register(p.add_subparsers(dest='cmd', required=True))\n"
        "a = p.parse_args(sys.argv[1:])\n"
        "sys.exit(a.func(a))\n"
    )

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", script, *argv], cwd=REPO,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    d = str(tmp_path)
    out = run("calls", "--data-dir", d)
    assert out.returncode == 0
    assert [line.split()[0] for line in out.stdout.splitlines()] == ["c-live", "c-new", "c-old"]
    assert run("calls", "--data-dir", d, "-q", "expensive").stdout.split()[0] == "c-old"
    md = run("summary", "c-old", "--data-dir", d)
    assert md.returncode == 0 and md.stdout.startswith("# Call summary: c-old")
    missing = run("summary", "nope", "--data-dir", d)
    assert missing.returncode == 2 and "unknown call id 'nope'" in missing.stderr
    nodb = run("calls", "--data-dir", str(tmp_path / "empty"))
    assert nodb.returncode == 1 and "no call database" in nodb.stderr


def test_cli_arguments() -> None:
    """The subcommands parse their options and point at their handlers."""
    a = _cli("calls", "--data-dir", "/x", "--since", "2026-11-01", "--rep", "ana", "--json")
    assert (a.data_dir, a.rep, a.json) == (Path("/x"), "ana", True)
    assert a.since == datetime(2026, 11, 1).timestamp()
    s = _cli("summary", "c1", "--format", "json")
    assert (s.call_id, s.format, s.func.__name__) == ("c1", "json", "run_summary")
    with pytest.raises(SystemExit):
        _cli("calls", "--since", "yesterday-ish")
