"""Webhook delivery against real loopback HTTP receivers: signing, retries, timeouts,
durability across a restart, Retry-After, jitter, redelivery."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import date
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from guidance.summary import BuiltinSummarizer
from server.api import build_router
from server.clock import ManualClock, call_date_of
from server.handoff import hand_off_call
from server.sqlite_store import SqliteCallStore
from server.store import CallMeta, CallNotFound
from server.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookOptions,
    WebhookSender,
    backoff_s,
    retry_after_s,
    sign,
    verify,
)
from server.wire import to_wire

SECRET = "s3cret-shared-with-the-crm"
NOW = 1_800_000_000.0


class Receiver:
    """A real HTTP server on 127.0.0.1 answering each POST with the next scripted status
    (an int, or a status and headers to send)."""

    def __init__(self, statuses: list[int | tuple[int, dict[str, str]]]) -> None:
        self.statuses = statuses
        self.requests: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((dict(self.headers), body))
                answer = outer.statuses.pop(0) if outer.statuses else 200
                code, headers = answer if isinstance(answer, tuple) else (answer, {})
                self.send_response(code)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A loopback port that accepts connections but never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    finally:
        sock.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteCallStore]:
    s = await SqliteCallStore.open(tmp_path, clock=ManualClock(NOW))
    await s.open_call(CallMeta("c1", "native", started_at=NOW))
    try:
        yield s
    finally:
        await s.close()


class Sleeps:
    """An injected sleep that returns at once and keeps the delays asked for (``block``:
    never returns, like a wait a restart cuts short)."""

    def __init__(self, block: bool = False) -> None:
        self.delays: list[float] = []
        self.block = block

    async def __call__(self, delay_s: float) -> None:
        self.delays.append(delay_s)
        if self.block:
            await asyncio.Event().wait()


def top() -> float:
    """Jitter that always draws the top of the range: the capped exponential itself."""
    return 1.0


async def test_fails_twice_then_accepts(store: SqliteCallStore) -> None:
    """A receiver failing twice gets a third, accepted attempt after 1 s and 2 s backoff (at
    the top of the jitter); every attempt is signed over its raw body and recorded, after the
    pending record the delivery was queued with."""
    sleeps = Sleeps()
    with Receiver([500, 503]) as rx:
        opts = WebhookOptions(urls=(rx.url,), secret=SECRET, base_delay_s=1.0, timeout_s=5.0)
        sender = WebhookSender(store, opts, clock=ManualClock(NOW), sleep=sleeps, jitter=top)
        await sender.start()
        assert await sender.submit("c1", {"call_id": "c1", "outcome": "advanced"})
        await sender.join()
        await sender.aclose()
    assert sleeps.delays == [1.0, 2.0]
    assert len(rx.requests) == 3
    for i, (headers, body) in enumerate(rx.requests, start=1):
        assert headers[SIGNATURE_HEADER] == sign(SECRET, body)
        assert verify(SECRET, body, headers[SIGNATURE_HEADER], now=NOW + 10)
        payload = json.loads(body)
        assert payload["attempt"] == i and payload["call_status"] == "ended"
        assert payload["summary"] == {"call_id": "c1", "outcome": "advanced"}
        assert float(headers[TIMESTAMP_HEADER]) == payload["sent_at"] == NOW
    assert len({json.loads(b)["delivery_id"] for _, b in rx.requests}) == 1
    attempts = await store.deliveries("c1")
    assert [(a.attempt, a.outcome, a.status_code) for a in attempts] == [
        (0, "pending", None),
        (1, "retrying", 500),
        (2, "retrying", 503),
        (3, "delivered", 200),
    ]


async def test_url_that_never_answers(
    store: SqliteCallStore, silent_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A URL that never answers times out on every attempt; each is recorded and a clear
    error is logged; a healthy URL in the same config still gets the summary."""
    with Receiver([]) as rx:
        opts = WebhookOptions(
            urls=(silent_url, rx.url), secret=SECRET, max_attempts=3, timeout_s=0.2
        )
        sender = WebhookSender(store, opts, clock=ManualClock(NOW), sleep=Sleeps())
        await sender.start()
        with caplog.at_level(logging.ERROR, logger="cuecard.webhooks"):
            await sender.submit("c1", {"call_id": "c1"})
            await sender.join()
        await sender.aclose()
    attempts = await store.deliveries("c1")
    silent = [a for a in attempts if a.url == silent_url and a.attempt > 0]
    assert [(a.attempt, a.outcome) for a in silent] == [
        (1, "retrying"), (2, "retrying"), (3, "failed")]  # fmt: skip
    assert all(a.status_code is None and "timeout" in (a.error or "") for a in silent)
    assert [a.outcome for a in attempts if a.url == rx.url] == ["pending", "delivered"]
    assert len(rx.requests) == 1
    assert f"to {silent_url} failed after 3 attempt(s)" in caplog.text


async def test_client_error_is_not_retried(store: SqliteCallStore) -> None:
    """A 401 (bad signature, wrong secret) fails at once: retrying would repeat it."""
    sleeps = Sleeps()
    with Receiver([401]) as rx:
        sender = WebhookSender(store, WebhookOptions(urls=(rx.url,), secret=SECRET), sleep=sleeps)
        await sender.start()
        await sender.submit("c1", {})
        await sender.join()
        await sender.aclose()
    [_, a] = await store.deliveries("c1")
    assert (a.outcome, a.status_code, a.error) == ("failed", 401, "HTTP 401 Unauthorized")
    assert sleeps.delays == []


async def test_full_queue_keeps_the_delivery_pending(store: SqliteCallStore) -> None:
    """submit never blocks: beyond queue_size the delivery is counted as dropped from the
    queue but stays pending in the store, and the next start sends it."""
    with Receiver([]) as rx:
        opts = WebhookOptions(urls=(rx.url,), secret=SECRET, queue_size=2)
        sender = WebhookSender(store, opts)  # not started: nothing drains the queue
        ids = [await sender.submit("c1", {"n": i}) for i in range(3)]
        assert sender.dropped == 1
        await sender.aclose()
        assert [p.delivery_id for p in await store.pending_deliveries()] == ids
        again = WebhookSender(store, opts)
        await again.start()
        await again.join()
        await again.aclose()
    assert sorted(json.loads(b)["summary"]["n"] for _, b in rx.requests) == [0, 1, 2]
    assert await store.pending_deliveries() == []


def test_verify_rejects_tampering_and_replays() -> None:
    """verify fails for a changed body, a wrong secret, or a stale sent_at."""
    body = json.dumps({"sent_at": NOW, "summary": {}}).encode()
    sig = sign(SECRET, body)
    assert verify(SECRET, body, sig, now=NOW)
    assert not verify(SECRET, body.replace(b"{}", b"[]"), sig, now=NOW)
    assert not verify("other", body, sig, now=NOW)
    assert not verify(SECRET, body, sig, now=NOW + 301)


@pytest.mark.parametrize(
    "kw",
    [
        {"urls": ("ftp://crm.example/x",)},
        {"secret": ""},
        {"max_attempts": 0},
        {"base_delay_s": 10.0, "max_delay_s": 1.0},
        {"timeout_s": 0},
    ],
)
def test_bad_options_are_clear_errors(kw: dict[str, Any]) -> None:
    """Invalid webhook configuration fails at construction with ValueError."""
    args: dict[str, Any] = {"urls": ("https://crm.example/hook",), "secret": SECRET, **kw}
    with pytest.raises(ValueError):
        WebhookOptions(**args)


async def test_hand_off_stores_then_delivers(store: SqliteCallStore) -> None:
    """hand_off_call stores the summary (with its outcome) and POSTs the same JSON."""
    await store.append(
        "c1",
        {"type": "transcript", "utterance_id": "rep-0", "speaker": "rep", "is_final": True,
         "text": "I'll send you the proposal by Friday.", "start_s": 0.0, "end_s": 3.0},
    )  # fmt: skip
    with Receiver([]) as rx:
        sender = WebhookSender(store, WebhookOptions(urls=(rx.url,), secret=SECRET))
        await sender.start()
        summary = await hand_off_call(store, BuiltinSummarizer(), sender, "c1")
        await sender.join()
        await sender.aclose()
    stored = await store.get_summary("c1")
    assert stored is not None and stored["action_items"][0]["item"] == "send the proposal"
    assert stored["call_date"] == call_date_of(NOW).isoformat() == summary.call_date
    assert json.loads(rx.requests[0][1])["summary"] == stored
    assert (await store.get_call("c1")).outcome == "advanced"
    with pytest.raises(CallNotFound):
        await hand_off_call(store, BuiltinSummarizer(), None, "nope")


def test_call_date_is_local() -> None:
    """The call date is the local calendar date of its start."""
    assert call_date_of(NOW) == date.fromtimestamp(NOW)


async def test_retrying_delivery_is_resent_after_a_restart(store: SqliteCallStore) -> None:
    """A delivery that failed and was waiting to retry when its sender stopped is re-sent by
    the next sender on the same store: same delivery id and payload, the attempt count goes
    on, after what was left of its backoff (here all of it: no time passed)."""
    clock = ManualClock(NOW)
    with Receiver([503]) as rx:
        opts = WebhookOptions(urls=(rx.url,), secret=SECRET, base_delay_s=10.0)
        first = WebhookSender(store, opts, clock=clock, sleep=Sleeps(block=True), jitter=top)
        await first.start()
        delivery_id = await first.submit("c1", {"outcome": "advanced"}, "interrupted")
        for _ in range(500):  # until the first attempt is recorded (a hang guard, not a limit)
            if len(await store.deliveries("c1")) == 2:
                break
            await asyncio.sleep(0.01)
        await first.aclose()  # the process stops during the 10 s wait
        [pending] = await store.pending_deliveries()
        assert (pending.delivery_id, pending.attempts) == (delivery_id, 1)

        clock.advance(4.0)
        sleeps = Sleeps()
        second = WebhookSender(store, opts, clock=clock, sleep=sleeps, jitter=top)
        await second.start()
        await second.join()
        await second.aclose()
    assert sleeps.delays == [6.0]  # 10 s of backoff, 4 s of which passed during the restart
    bodies = [json.loads(b) for _, b in rx.requests]
    assert [(b["delivery_id"], b["attempt"], b["call_status"]) for b in bodies] == [
        (delivery_id, 1, "interrupted"), (delivery_id, 2, "interrupted")]  # fmt: skip
    assert bodies[0]["summary"] == bodies[1]["summary"] == {"outcome": "advanced"}
    assert [(a.attempt, a.outcome) for a in await store.deliveries("c1")] == [
        (0, "pending"), (1, "retrying"), (2, "delivered")]  # fmt: skip
    assert await store.pending_deliveries() == []


async def test_a_url_no_longer_configured_is_not_resumed(store: SqliteCallStore) -> None:
    """At start-up a pending delivery to a URL removed from the configuration is recorded
    failed, not sent."""
    await store.queue_delivery("c1", "d1", {"summary": {}}, ["http://127.0.0.1:9/old"], NOW)
    sender = WebhookSender(store, WebhookOptions(urls=("http://127.0.0.1:9/new",), secret=SECRET))
    await sender.start()
    await sender.join()
    await sender.aclose()
    last = (await store.deliveries("c1"))[-1]
    assert (last.outcome, last.error) == (
        "failed",
        "URL no longer configured (CUECARD_WEBHOOK_URLS)",
    )
    assert await store.pending_deliveries() == []


async def test_retry_after_is_honoured(store: SqliteCallStore) -> None:
    """429/503 with Retry-After wait what it asks (seconds or an HTTP date), at most
    max_delay_s; without it the jittered backoff applies."""
    later = formatdate(NOW + 30, usegmt=True)
    script: list[int | tuple[int, dict[str, str]]] = [
        (429, {"Retry-After": "7"}),
        (503, {"Retry-After": later}),
        (429, {"Retry-After": "99999"}),
        500,
    ]
    sleeps = Sleeps()
    with Receiver(script) as rx:
        opts = WebhookOptions(urls=(rx.url,), secret=SECRET, base_delay_s=2.0, max_delay_s=60.0)
        sender = WebhookSender(
            store, opts, clock=ManualClock(NOW), sleep=sleeps, jitter=lambda: 0.25
        )
        await sender.start()
        await sender.submit("c1", {})
        await sender.join()
        await sender.aclose()
    assert sleeps.delays == [7.0, 30.0, 60.0, 0.25 * 16.0]
    assert len(rx.requests) == 5


def test_backoff_is_full_jitter_within_bounds() -> None:
    """The wait after attempt n is jitter times min(max, base * 2**(n-1)): 0 at the bottom,
    the capped exponential at the top, never outside; Retry-After values parse or are None."""
    import random

    rng = random.Random(7)
    for attempt in range(1, 80):
        cap = min(300.0, 2.0 * 2 ** (attempt - 1))
        assert backoff_s(attempt, 2.0, 300.0, 0.0) == 0.0
        assert backoff_s(attempt, 2.0, 300.0, 1.0) == cap
        draws = [backoff_s(attempt, 2.0, 300.0, rng.random()) for _ in range(200)]
        assert all(0.0 <= d <= cap for d in draws)
        assert max(draws) - min(draws) > cap / 2  # spread over the range, not a constant
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError):
            backoff_s(1, 2.0, 300.0, bad)
    assert retry_after_s("120", NOW) == 120.0
    assert retry_after_s(formatdate(NOW + 90, usegmt=True), NOW) == 90.0
    assert retry_after_s(formatdate(NOW - 90, usegmt=True), NOW) == 0.0
    for junk in (None, "", "soon", "-5", "1.5e3"):
        assert retry_after_s(junk, NOW) is None


async def test_redeliver_endpoint(store: SqliteCallStore) -> None:
    """POST .../deliveries/redeliver re-sends the call's summary webhook with the same
    delivery id as a new series (attempt 1), to every URL or the body's url; 202; it is
    recorded; 404 unknown call, 409 live call, 422 a URL that is not configured."""

    def anyone() -> None:
        return None

    await store.close_call("c1", "ended")
    with Receiver([]) as a, Receiver([]) as b:
        opts = WebhookOptions(urls=(a.url, b.url), secret=SECRET)
        sender = WebhookSender(store, opts, clock=ManualClock(NOW))
        await sender.start()
        summary = await hand_off_call(store, BuiltinSummarizer(), sender, "c1")
        await sender.join()
        app = FastAPI()
        app.include_router(
            build_router(store, auth=lambda scope, per_call: anyone, webhooks=sender)
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            r = await c.post("/v1/calls/c1/deliveries/redeliver", json={"url": b.url})
            assert r.status_code == 202, r.text
            await sender.join()
            r2 = await c.post("/v1/calls/c1/deliveries/redeliver")
            assert r2.status_code == 202
            await sender.join()
            assert (await c.post("/v1/calls/nope/deliveries/redeliver")).status_code == 404
            bad = await c.post("/v1/calls/c1/deliveries/redeliver", json={"url": "http://x/"})
            assert bad.status_code == 422
            await store.open_call(CallMeta("live", "native", started_at=NOW))
            assert (await c.post("/v1/calls/live/deliveries/redeliver")).status_code == 409
            listed = (await c.get("/v1/calls/c1/deliveries")).json()
        await sender.aclose()
    first_id = json.loads(a.requests[0][1])["delivery_id"]
    assert r.json() == {"delivery_id": first_id, "urls": [b.url]}
    assert r2.json() == {"delivery_id": first_id, "urls": [a.url, b.url]}
    assert len(a.requests) == 2 and len(b.requests) == 3
    for _, body in [*a.requests, *b.requests]:
        payload = json.loads(body)
        assert payload["delivery_id"] == first_id and payload["attempt"] == 1
        assert payload["summary"] == to_wire(summary)
    b_rows = [(d["attempt"], d["outcome"]) for d in listed if d["url"] == b.url]
    assert b_rows == [(0, "pending"), (1, "delivered")] * 3
