"""Scoped tokens through a real server: every route checks scope and call, the transports
(header, Sec-WebSocket-Protocol, ?token= for viewer tokens only), Twilio's one-use signed
stream URLs, the refusal log, the start-up banner and the loopback-only fallback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import numpy as np
import pytest
import soundfile as sf
import websockets

from clients.localserver import ServerProcess, start_server, stop_server
from clients.simulator import SimOptions, simulate
from server.access import QUERY_REFUSED
from server.auth import Scope, mint, twilio_signature, twilio_stream_url
from tests.test_ingest import twilio_media, twilio_start

pytestmark = pytest.mark.model

START = {"type": "start", "encoding": "pcm16", "sample_rate_hz": 16000, "channels": 1,
         "speakers": ["rep"]}  # fmt: skip
SILENCE_100MS = bytes(3200)
TWILIO_TOKEN = "twilio-account-auth-token"
PUBLIC_URL = "wss://cuecard.example"


def token_for(srv: ServerProcess, scopes: str, call: str, ttl_s: float = 3600) -> str:
    """A JWT signed with the server's generated secret (its data dir's jwt_secret)."""
    secret = (srv.data_dir / "jwt_secret").read_text().strip()
    names: list[Scope] = [s for s in ("audio:write", "events:read", "cards:act", "admin")
                          if s in scopes.split(",")]  # fmt: skip
    return mint(secret, "HS256", "ana", names, call, ttl_s, time.time())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def close_of(ws: Any) -> tuple[int | None, str]:
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 60)
    return ws.close_code, ws.close_reason or ""


async def stream_short_call(srv: ServerProcess, call_id: str) -> None:
    """One second of silence over the native socket (admin token), stopped cleanly."""
    url = f"{srv.ws}/v1/calls/{call_id}/audio"
    async with websockets.connect(url, additional_headers=srv.auth) as ws:
        await ws.send(json.dumps(START))
        assert json.loads(await ws.recv())["type"] == "started"
        for _ in range(10):
            await ws.send(SILENCE_100MS)
        await ws.send(json.dumps({"type": "stop"}))
        assert (await close_of(ws))[0] == 1000


@pytest.fixture(scope="module")
def call_id(server: ServerProcess) -> str:
    """A stored, ended call."""
    call = f"auth-{uuid.uuid4().hex[:8]}"
    asyncio.run(stream_short_call(server, call))
    return call


async def test_a_viewer_token_cannot_send_audio(server: ServerProcess) -> None:
    """A viewer token on the audio socket closes 1008 naming the missing scope."""
    viewer = token_for(server, "events:read,cards:act", "v-audio")
    url = f"{server.ws}/v1/calls/v-audio/audio"
    async with websockets.connect(url, additional_headers=bearer(viewer)) as ws:
        assert await close_of(ws) == (1008, "token lacks the audio:write scope")
    audio = token_for(server, "audio:write", "other-call")
    async with websockets.connect(url, additional_headers=bearer(audio)) as ws:
        code, reason = await close_of(ws)
    assert code == 1008 and "token is for call 'other-call', not call 'v-audio'" in reason


async def test_a_viewer_token_reads_its_call_only(server: ServerProcess, call_id: str) -> None:
    """events:read on one call: its REST reads pass; another call, the list, the stats and
    DELETE answer 403 with the reason; no or an expired token answers 401."""
    viewer = bearer(token_for(server, "events:read,cards:act", call_id))
    other = bearer(token_for(server, "events:read", "someone-else"))
    async with httpx.AsyncClient(base_url=server.http, timeout=30) as c:
        for path in (f"/v1/calls/{call_id}", f"/v1/calls/{call_id}/summary",
                     f"/v1/calls/{call_id}/deliveries"):  # fmt: skip
            assert (await c.get(path, headers=viewer)).status_code == 200, path
            r = await c.get(path, headers=other)
            assert r.status_code == 403 and "'someone-else'" in r.json()["detail"], path
        for path in ("/v1/calls", "/v1/cards/stats"):
            r = await c.get(path, headers=viewer)
            assert r.status_code == 403 and "every call (*)" in r.json()["detail"]
        r = await c.get("/v1/stats", headers=viewer)
        assert r.status_code == 403 and "admin" in r.json()["detail"]
        r = await c.delete(f"/v1/calls/{call_id}", headers=viewer)
        assert r.status_code == 403 and "admin" in r.json()["detail"]
        assert (await c.get(f"/v1/calls/{call_id}")).status_code == 401
        expired = bearer(token_for(server, "events:read", call_id, ttl_s=1))
        await asyncio.sleep(0)  # (the server's leeway is 30 s; forge the expiry instead)
        secret = (server.data_dir / "jwt_secret").read_text().strip()
        claims = jwt.decode(expired["Authorization"][7:], secret, algorithms=["HS256"])
        claims["exp"] = int(time.time()) - 3600
        stale = bearer(jwt.encode(claims, secret, algorithm="HS256"))
        r = await c.get(f"/v1/calls/{call_id}", headers=stale)
        assert r.status_code == 401 and r.json()["detail"] == "token expired"
        assert r.headers["www-authenticate"] == "Bearer"
        manager = bearer(token_for(server, "events:read", "*"))
        assert (await c.get("/v1/calls", headers=manager)).status_code == 200
        assert (await c.get("/v1/cards/stats", headers=manager)).status_code == 200
        assert (await c.get("/v1/stats", headers=server.auth)).status_code == 200


async def test_a_viewer_socket_for_another_call_is_refused(
    server: ServerProcess, call_id: str
) -> None:
    viewer = token_for(server, "events:read", "someone-else")
    url = f"{server.ws}/v1/calls/{call_id}/events"
    async with websockets.connect(url, additional_headers=bearer(viewer)) as ws:
        code, reason = await close_of(ws)
    assert code == 1008 and f"not call '{call_id}'" in reason


async def test_the_events_socket_takes_a_sec_websocket_protocol_bearer(
    server: ServerProcess, call_id: str
) -> None:
    """A browser's ["cuecard.bearer", token]: the server selects cuecard.bearer (never the
    token) and streams the call's history; a viewer token as ?token= works the same."""
    viewer = token_for(server, "events:read,cards:act", call_id)
    url = f"{server.ws}/v1/calls/{call_id}/events?wait_s=0"
    async with websockets.connect(url, subprotocols=["cuecard.bearer", viewer]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "cuecard.bearer"
        by_protocol = [json.loads(m) async for m in ws]
    assert ws.close_code == 1000 and by_protocol[-1]["type"] == "status"
    async with websockets.connect(f"{url}&token={viewer}") as ws:
        by_query = [json.loads(m) async for m in ws]
    assert by_query == by_protocol


async def test_the_static_token_and_audio_tokens_are_refused_as_a_query(
    server: ServerProcess, call_id: str
) -> None:
    """?token= takes viewer tokens only: the admin token or an audio token there is refused
    with the reason (and a long-lived viewer token too)."""
    audio = token_for(server, "audio:write", "q-audio")
    long_lived = token_for(server, "events:read", call_id, ttl_s=7 * 86_400)
    for path, presented in [
        (f"/v1/calls/{call_id}/events", server.token),
        ("/v1/calls/q-audio/audio", server.token),
        ("/v1/calls/q-audio/audio", audio),
        (f"/v1/calls/{call_id}/events", long_lived),
    ]:
        async with websockets.connect(f"{server.ws}{path}?token={presented}") as ws:
            code, reason = await close_of(ws)
        assert (code, reason) == (1008, QUERY_REFUSED)
    async with httpx.AsyncClient(base_url=server.http) as c:
        r = await c.get("/v1/calls", params={"token": server.token})
    assert r.status_code == 401 and "viewer token" in r.json()["detail"]


async def test_a_card_action_needs_cards_act(server: ServerProcess) -> None:
    """A read-only viewer's card action is answered with the refusal; with cards:act it
    reaches the call (here: not live)."""
    call = f"never-{uuid.uuid4().hex[:6]}"
    url = f"{server.ws}/v1/calls/{call}/events?wait_s=30"
    action = json.dumps({"type": "card_action", "card_id": "card-1", "action": "used"})
    replies = []
    for scopes in ("events:read", "events:read,cards:act"):
        headers = bearer(token_for(server, scopes, call))
        async with websockets.connect(url, additional_headers=headers) as ws:
            await ws.send(action)
            replies.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
    assert replies == [
        {"type": "error", "detail": "card action refused: token lacks the cards:act scope"},
        {"type": "error", "detail": "call is not live"},
    ]


async def test_twilio_start_token_needs_audio_write_for_its_call(server: ServerProcess) -> None:
    """Without CUECARD_TWILIO_AUTH_TOKEN the start's token parameter must allow audio:write
    on the call it names."""
    viewer = token_for(server, "events:read", "tw-a")
    elsewhere = token_for(server, "audio:write", "tw-b")
    for presented, needle in [
        (viewer, "token lacks the audio:write scope"),
        (elsewhere, "token is for call 'tw-b', not call 'tw-a'"),
        ("wrong", "wrong token"),
    ]:
        async with websockets.connect(f"{server.ws}/v1/twilio") as ws:
            await ws.send(twilio_start(rep_track="inbound", token=presented, call_id="tw-a"))
            code, reason = await close_of(ws)
        assert code == 1008 and reason.startswith(f"token parameter: {needle}"), reason


async def test_refusals_are_logged_with_the_peer_and_never_the_token(
    server: ServerProcess,
) -> None:
    """A WARNING with the peer's address and the reason (from a loopback address of its own:
    the other tests' refusals from 127.0.0.1 share that peer's rate limit)."""
    presented = "not-the-token-" + uuid.uuid4().hex
    peer = f"127.0.{uuid.uuid4().int % 250 + 2}.{uuid.uuid4().int % 250 + 2}"
    transport = httpx.AsyncHTTPTransport(local_address=peer)
    async with httpx.AsyncClient(base_url=server.http, transport=transport) as c:
        for _ in range(3):
            assert (await c.get("/v1/calls", headers=bearer(presented))).status_code == 401
    needle = f"refused /v1/calls from {peer}: wrong token"
    for _ in range(200):
        if any(needle in line for line in server.output):
            break
        await asyncio.sleep(0.05)
    lines = [line for line in server.output if needle in line]
    assert lines and "WARNING" in lines[0]
    assert not any(presented in line for line in server.output)


# -- a server with no configured secret, on 0.0.0.0, with Twilio signatures ---------------
@pytest.fixture(scope="module")
def open_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """No CUECARD_TOKEN nor JWT secret (both generated), CUECARD_HOST=0.0.0.0."""
    srv = start_server(
        tmp_path_factory.mktemp("no-secret"),
        token="",
        CUECARD_HOST="0.0.0.0",
        CUECARD_TWILIO_AUTH_TOKEN=TWILIO_TOKEN,
        CUECARD_PUBLIC_URL=PUBLIC_URL,
    )
    yield srv
    stop_server(srv)


def test_without_a_configured_secret_the_server_binds_loopback_and_says_so(
    open_srv: ServerProcess,
) -> None:
    """CUECARD_HOST=0.0.0.0 with generated secrets: a WARNING, and 127.0.0.1 is bound."""
    text = "".join(open_srv.output)
    assert "WARNING" in text and "CUECARD_HOST=0.0.0.0 ignored: binding 127.0.0.1 only" in text
    assert "listening on http://127.0.0.1:" in text


def test_the_banner_links_viewer_tokens_and_never_prints_the_static_token(
    open_srv: ServerProcess,
) -> None:
    for _ in range(200):  # the lines after "listening on" arrive through a reader thread
        if any("API docs:" in line for line in open_srv.output):
            break
        time.sleep(0.05)
    static = (open_srv.data_dir / "token").read_text().strip()
    secret = (open_srv.data_dir / "jwt_secret").read_text().strip()
    text = "".join(open_srv.output)
    assert [line for line in open_srv.output if static in line] == []
    assert f"{static[:4]}…" in text
    assert f'--token "$(cat {open_srv.data_dir / "token"})"' in text
    page = re.search(r"rep's page:\s+http://\S+/#token=([\w.-]+)", text)
    manager = re.search(r"manager:\s+http://\S+/manager#token=([\w.-]+)", text)
    assert page and manager
    rep_claims = jwt.decode(page.group(1), secret, algorithms=["HS256"])
    assert rep_claims["scope"] == "events:read cards:act" and rep_claims["call"] == "*"
    assert rep_claims["exp"] - rep_claims["iat"] == 12 * 3600
    assert jwt.decode(manager.group(1), secret, algorithms=["HS256"])["scope"] == "events:read"


async def twilio_call(
    srv: ServerProcess, query: str, signature: str, call: str
) -> tuple[int | None, str]:
    url = f"{srv.ws}/v1/twilio?{query}"
    headers = {"X-Twilio-Signature": signature}
    async with websockets.connect(url, additional_headers=headers) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):  # a refusal closes at once
            await ws.send(json.dumps({"event": "connected", "protocol": "Call"}))
            await ws.send(twilio_start(rep_track="inbound", call_id=call))
            await ws.send(twilio_media("inbound", 0, b"\xff" * 160))
            await ws.send(json.dumps({"event": "stop", "streamSid": "MZ1"}))
        return await close_of(ws)


async def test_a_replayed_twilio_upgrade_is_refused(open_srv: ServerProcess) -> None:
    """A signed stream URL opens one stream; the same upgrade again, the old fixed URL, and
    a stale timestamp are refused with 1008 and the reason."""
    signed = twilio_stream_url(PUBLIC_URL, time.time())
    query, signature = signed.split("?", 1)[1], twilio_signature(TWILIO_TOKEN, signed)
    call = f"tw-{uuid.uuid4().hex[:8]}"
    assert await twilio_call(open_srv, query, signature, call) == (1000, "stream stopped")
    replayed = await twilio_call(open_srv, query, signature, call + "-again")
    assert replayed == (1008, "stream URL nonce already used (a replayed upgrade)")
    fixed = twilio_signature(TWILIO_TOKEN, PUBLIC_URL + "/v1/twilio")
    async with websockets.connect(
        f"{open_srv.ws}/v1/twilio", additional_headers={"X-Twilio-Signature": fixed}
    ) as ws:
        code, reason = await close_of(ws)
    assert code == 1008 and "needs ?nonce=" in reason
    stale = twilio_stream_url(PUBLIC_URL, time.time() - 3600)
    code, reason = await twilio_call(
        open_srv, stale.split("?", 1)[1], twilio_signature(TWILIO_TOKEN, stale), call + "-late"
    )
    assert code == 1008 and "outside the window" in reason


async def test_the_simulator_signs_its_twilio_upgrade(
    open_srv: ServerProcess, tmp_path: Path
) -> None:
    """`cuecard simulate --twilio` against a server with CUECARD_TWILIO_AUTH_TOKEN signs a
    fresh stream URL: the call streams and ends normally."""
    wav = tmp_path / "quiet.wav"
    sf.write(wav, np.zeros((8000, 2), "<i2"), 8000, subtype="PCM_16")
    static = (open_srv.data_dir / "token").read_text().strip()
    options = SimOptions(
        server=open_srv.ws,
        token=static,
        speed=0,
        twilio=True,
        twilio_auth_token=TWILIO_TOKEN,
        public_url=PUBLIC_URL,
    )
    result = await simulate(wav, options)
    statuses = [e for e in result.events if e["type"] == "status"]
    assert statuses and statuses[-1]["state"] == "ended", result.events
