"""Webhook delivery against real loopback HTTP receivers: signing, retries, timeouts."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from guidance.summary import BuiltinSummarizer
from server.clock import ManualClock, call_date_of
from server.handoff import hand_off_call
from server.sqlite_store import SqliteCallStore
from server.store import CallMeta, CallNotFound
from server.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookOptions,
    WebhookSender,
    sign,
    verify,
)

SECRET = "s3cret-shared-with-the-crm"
NOW = 1_800_000_000.0


class Receiver:
    """A real HTTP server on 127.0.0.1 answering each POST with the next scripted status."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((dict(self.headers), body))
                code = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(code)
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
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays.append(delay_s)


async def test_fails_twice_then_accepts(store: SqliteCallStore) -> None:
    """A receiver failing twice gets a third, accepted attempt after 1 s and 2 s backoff; every
    attempt is signed over its raw body and recorded."""
    sleeps = Sleeps()
    with Receiver([500, 503]) as rx:
        opts = WebhookOptions(urls=(rx.url,), secret=SECRET, base_delay_s=1.0, timeout_s=5.0)
        sender = WebhookSender(store, opts, clock=ManualClock(NOW), sleep=sleeps)
        await sender.start()
        assert sender.enqueue("c1", {"call_id": "c1", "outcome": "advanced"})
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
            sender.enqueue("c1", {"call_id": "c1"})
            await sender.join()
        await sender.aclose()
    attempts = await store.deliveries("c1")
    silent = [a for a in attempts if a.url == silent_url]
    assert [(a.attempt, a.outcome) for a in silent] == [
        (1, "retrying"), (2, "retrying"), (3, "failed")]  # fmt: skip
    assert all(a.status_code is None and "timeout" in (a.error or "") for a in silent)
    assert [a.outcome for a in attempts if a.url == rx.url] == ["delivered"]
    assert len(rx.requests) == 1
    assert f"to {silent_url} failed after 3 attempt(s)" in caplog.text


async def test_client_error_is_not_retried(store: SqliteCallStore) -> None:
    """A 401 (bad signature, wrong secret) fails at once: retrying would repeat it."""
    sleeps = Sleeps()
    with Receiver([401]) as rx:
        sender = WebhookSender(store, WebhookOptions(urls=(rx.url,), secret=SECRET), sleep=sleeps)
        await sender.start()
        sender.enqueue("c1", {})
        await sender.join()
        await sender.aclose()
    [a] = await store.deliveries("c1")
    assert (a.outcome, a.status_code, a.error) == ("failed", 401, "HTTP 401 Unauthorized")
    assert sleeps.delays == []


async def test_full_queue_drops_and_counts(store: SqliteCallStore) -> None:
    """enqueue never blocks: beyond queue_size it returns False and counts the drop."""
    opts = WebhookOptions(urls=("http://127.0.0.1:9/x",), secret=SECRET, queue_size=2)
    sender = WebhookSender(store, opts)  # not started: nothing drains the queue
    assert [sender.enqueue("c1", {}) for _ in range(3)] == [True, True, False]
    assert sender.dropped == 1
    await sender.aclose()


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
