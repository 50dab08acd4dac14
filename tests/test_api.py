"""REST API over a real SQLite store through FastAPI's ASGI app, and the CLI commands."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from fastapi import FastAPI, Header, HTTPException

from guidance.cards import Card, Evidence
from guidance.score import Score
from guidance.summary import BuiltinSummarizer
from nlp.insight import Entity, Insight
from server.api import build_router
from server.calls_cli import register
from server.clock import ManualClock
from server.engines import load_configured_playbook
from server.handoff import hand_off_call
from server.settings import Settings, SettingsError
from server.sqlite_store import SqliteCallStore
from server.store import CallMeta, StoreError
from server.wire import Status, to_wire
from tests.conftest import ServerProcess

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


def ins(uid: str, text: str, label: str, start_s: float, *entities: Entity) -> dict[str, Any]:
    return to_wire(Insight(uid, "rep" if uid.startswith("rep") else "customer", True, text,
                           start_s, start_s + 2.0, label, 0.9, {label: 0.9}, entities, 0.2, None))  # fmt: skip


PROPOSAL = "I'll send you the proposal by Friday."
CARD = Card("card-1", "issued", "next_step", 50, "Confirm the date", "Agree who does what.",
            ("Shall we book it now?",), Evidence(PROPOSAL, "rep", 0.0, 2.0), 2.0,
            utterance_id="rep-0")  # fmt: skip


async def seed(store: SqliteCallStore) -> None:
    await store.open_call(CallMeta("c-old", "twilio", rep_id="ana", started_at=T0 - 86_400))
    await store.append("c-old", tr("customer-0", "This is too expensive for us.", 0.0))
    await store.append(
        "c-old", ins("customer-0", "This is too expensive for us.", "objection_price", 0.0)
    )
    await store.close_call("c-old", "ended")
    await hand_off_call(store, BuiltinSummarizer(), None, "c-old")

    await store.open_call(CallMeta("c-new", "native", rep_id="bo", started_at=T0))
    for e in [
        to_wire(Status("live", "audio stream open", 0.0)),
        tr("rep-0", PROPOSAL, 0.0),
        ins("rep-0", PROPOSAL, "next_step", 0.0, Entity("date", "by Friday", "2026-11-27", 27, 36)),
        to_wire(CARD),
        to_wire(Score(70.0, 5.0, ("next step agreed",), 2.0)),
    ]:
        await store.append("c-new", e)

    await store.open_call(CallMeta("c-live", "webrtc", rep_id="ana", started_at=T0 + 60))


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, SqliteCallStore]]:
    store = await SqliteCallStore.open(tmp_path, clock=ManualClock(T0 + 600))
    await seed(store)
    app = FastAPI()
    app.include_router(build_router(store, auth=lambda scope, per_call: check_token))
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
    huge = await c.get("/v1/calls", params={"offset": 2**63}, headers=AUTH)  # past SQLite's int
    assert huge.status_code == 422
    assert await ids(offset=2**62) == []


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
    assert body["cards"] == [{"seq": 4, **to_wire(CARD)}]
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
    app.include_router(build_router(store, auth=lambda scope, per_call: check_token))
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
    store = await SqliteCallStore.open(tmp_path, clock=ManualClock(T0 + 600))
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


def test_cli_reads_the_servers_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without flags the CLI opens the store the server was configured with."""
    monkeypatch.delenv("CUECARD_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", "/srv/xdg")
    monkeypatch.setenv("CUECARD_STORE", "redis://10.0.0.5:6379/2")
    a = _cli("calls")
    assert (a.data_dir, a.redis_url) == (Path("/srv/xdg/cuecard"), "redis://10.0.0.5:6379/2")
    monkeypatch.setenv("CUECARD_STORE", "sqlite")
    monkeypatch.setenv("CUECARD_DATA_DIR", "/srv/calls")
    a = _cli("summary", "c1")
    assert (a.data_dir, a.redis_url) == (Path("/srv/calls"), None)


# -- corrupt configuration and unknown call ids on a real server ----------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CUECARD_PORT": "abc"}, "CUECARD_PORT='abc' is not an integer"),
        ({"CUECARD_PORT": "70000"}, "CUECARD_PORT must be a TCP port"),
        ({"CUECARD_RETENTION_DAYS": "-1"}, "CUECARD_RETENTION_DAYS must be a number of days"),
        ({"CUECARD_RETENTION_DAYS": "nan"}, "CUECARD_RETENTION_DAYS='nan' is not a finite"),
        ({"CUECARD_RETENTION_DAYS": "a week"}, "CUECARD_RETENTION_DAYS='a week' is not"),
        ({"CUECARD_WEBHOOK_URLS": "not-a-url", "CUECARD_WEBHOOK_SECRET": "s"},
         "CUECARD_WEBHOOK_URLS: 'not-a-url' is not an http"),
        ({"CUECARD_WEBHOOK_URLS": "https://crm.example/hook, ftp://x/y",
          "CUECARD_WEBHOOK_SECRET": "s"}, "CUECARD_WEBHOOK_URLS: 'ftp://x/y'"),
        ({"CUECARD_WEBHOOK_URLS": "https://crm.example/hook"}, "CUECARD_WEBHOOK_SECRET must be"),
        ({"CUECARD_PLAYBOOK": "/no/such/playbook.yaml"},
         "CUECARD_PLAYBOOK='/no/such/playbook.yaml': no such file"),
        ({"CUECARD_LLM_BASE_URL": "localhost:11434"}, "CUECARD_LLM_BASE_URL='localhost:11434'"),
        ({"CUECARD_LLM_BASE_URL": "http://:80/v1"}, "CUECARD_LLM_BASE_URL="),
        ({"CUECARD_LLM_BASE_URL": "http://host:port/v1"}, "CUECARD_LLM_BASE_URL="),
        ({"CUECARD_IDLE_TIMEOUT_S": "0"}, "CUECARD_IDLE_TIMEOUT_S must be > 0"),
        ({"CUECARD_LONG_TURN_COMMIT_S": "1"}, "CUECARD_LONG_TURN_COMMIT_S=1.0 must be 0 (off)"),
        ({"CUECARD_STORE": "mysql://db"}, "CUECARD_STORE must be sqlite or a redis"),
        ({"CUECARD_PUBLIC_URL": "example.com"}, "CUECARD_PUBLIC_URL="),
        ({"CUECARD_WEBHOOK_URL": "https://crm.example/hook"},
         "CUECARD_WEBHOOK_URL is not a Cuecard setting (did you mean CUECARD_WEBHOOK_URLS?)"),
        ({"CUECARD_FROBNICATE": "1"}, "CUECARD_FROBNICATE is not a Cuecard setting"),
    ],
)  # fmt: skip
def test_malformed_setting_names_the_variable(env: dict[str, str], message: str) -> None:
    """Each malformed CUECARD_* value is a SettingsError whose one line names the variable."""
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_good_settings_parse() -> None:
    """Well-formed values are accepted; retention 0 keeps calls forever."""
    s = Settings.from_env({
        "CUECARD_PORT": "9000", "CUECARD_RETENTION_DAYS": "0.5",
        "CUECARD_WEBHOOK_URLS": "https://crm.example/hook, http://127.0.0.1:9/x",
        "CUECARD_WEBHOOK_SECRET": "s", "CUECARD_LLM_BASE_URL": "http://127.0.0.1:11434/v1",
    })  # fmt: skip
    assert s.port == 9000 and s.retention_s == 43_200.0
    assert s.webhook_urls == ("https://crm.example/hook", "http://127.0.0.1:9/x")
    assert Settings.from_env({}).retention_s is None
    assert Settings.from_env({"CUECARD_CACHE_DIR": "/tmp/models"}) == Settings()  # models' own


def test_invalid_playbook_file_names_the_variable(tmp_path: Path) -> None:
    """A playbook file that exists but is not valid YAML fails as CUECARD_PLAYBOOK."""
    bad = tmp_path / "playbook.yaml"
    bad.write_text("cards: [unclosed\n")
    with pytest.raises(SettingsError, match=r"^CUECARD_PLAYBOOK: playbook .*playbook\.yaml"):
        load_configured_playbook(Settings(playbook=str(bad), data_dir=tmp_path))


def _serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "CUECARD_DATA_DIR": str(tmp_path / "data"), "CUECARD_PORT": "0"}
    return subprocess.run([sys.executable, "-m", "server.cli", "serve"], cwd=REPO,
                          env={**environ, **env}, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CUECARD_PORT": "abc"}, "cuecard serve: CUECARD_PORT='abc' is not an integer"),
        ({"CUECARD_PLAYBOOK": "{playbook}"}, "cuecard serve: CUECARD_PLAYBOOK: playbook "),
    ],
)
def test_serve_with_corrupt_configuration_exits_with_one_line(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    """`cuecard serve` with a malformed variable prints one line naming it and exits 2."""
    bad = tmp_path / "playbook.yaml"
    bad.write_text("cards: [unclosed\n")
    out = _serve(tmp_path, **{k: v.format(playbook=bad) for k, v in env.items()})
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if " INFO " not in line]
    assert len(errors) == 1 and errors[0].startswith(message), out.stderr


@pytest.mark.model
async def test_unknown_call_id_on_a_real_server(server: ServerProcess) -> None:
    """Unknown call ids: REST answers 404 naming the id; the events socket closes with 4404
    and the same reason once wait_s passes; a malformed wait_s is refused with 1008."""
    async with httpx.AsyncClient(base_url=server.http) as c:
        r = await c.get(
            "/v1/calls/no-such-call", headers={"Authorization": f"Bearer {server.token}"}
        )
    assert r.status_code == 404 and r.json() == {"detail": "unknown call id 'no-such-call'"}
    base = f"{server.ws}/v1/calls/no-such-call/events?"
    for query, code, reason in [
        ("&wait_s=0", 4404, "unknown call id 'no-such-call'"),
        ("&wait_s=0.2", 4404, "unknown call id 'no-such-call'"),
        ("&wait_s=soon", 1008, "wait_s must be a number of seconds"),
    ]:
        async with websockets.connect(base + query, additional_headers=server.auth) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 30)
        assert ws.close_code == code and reason in (ws.close_reason or ""), query
