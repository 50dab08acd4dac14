"""Webhook delivery of call summaries to the CRM (the hand-off that stores and submits them
is ``server.handoff.hand_off_call``).

Durable: ``submit`` first keeps the delivery in the store (its payload, and a ``pending``
attempt 0 per URL: ``CallStore.queue_delivery``), then queues it here; ``start`` re-queues
every delivery whose last record is ``pending`` or ``retrying`` (``pending_deliveries``), with
the same ``delivery_id`` and payload, continuing its attempt count, after what is left of its
backoff. So a restart, a crash or a full queue delays a delivery but never loses it. A pending
delivery to a URL no longer configured is recorded ``failed`` at start-up.

Off the audio path: the queue is bounded (when full the delivery stays pending in the store,
is counted in ``dropped`` and logged; the next start-up or a redelivery sends it); at most
``max_concurrent`` deliveries (one summary to one URL) are in flight. Network errors, timeouts,
408/425/429 and 5xx are retried up to ``max_attempts``; other 4xx answers are not (the
receiver rejected the payload or the signature; retrying repeats it). The wait before
attempt n + 1 is full jitter, uniform in [0, min(max_delay_s, base_delay_s * 2**(n-1))]
(``backoff_s``), except that a 429 or 503 with ``Retry-After`` (seconds or an HTTP date) waits
what it asks, at most ``max_delay_s``. Every attempt is recorded with
``CallStore.record_delivery``, stamped by the injected ``Clock`` (as is ``sent_at``); the waits
go through an injectable ``sleep`` and the jitter through an injectable ``jitter``.

``redeliver`` starts a new attempt series (attempt 1 again, same ``delivery_id`` and payload)
for some or all URLs, replacing a series in progress for them (``POST
/v1/calls/{id}/deliveries/redeliver``).

Signing (see docs/webhooks.md): ``X-Cuecard-Signature: sha256=<hex HMAC-SHA256 of the raw
body keyed with the shared secret>``. The body carries ``sent_at`` (epoch seconds), repeated in
``X-Cuecard-Timestamp``; being inside the signed body it cannot be altered, so a receiver that
rejects a ``sent_at`` older than 5 minutes and remembers ``delivery_id``s defeats replays.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import json
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from server.clock import Clock, SystemClock
from server.store import (
    CallStatus,
    CallStore,
    DeliveryAttempt,
    DeliveryOutcome,
    PendingDelivery,
    StoreError,
)

log = logging.getLogger("cuecard.webhooks")

EVENT_NAME = "call.summary"
SIGNATURE_HEADER = "X-Cuecard-Signature"
TIMESTAMP_HEADER = "X-Cuecard-Timestamp"
DELIVERY_HEADER = "X-Cuecard-Delivery"
EVENT_HEADER = "X-Cuecard-Event"
_RETRY_STATUS = frozenset({408, 425, 429})
_RETRY_AFTER_STATUS = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    urls: tuple[str, ...]
    secret: str
    max_attempts: int = 5
    base_delay_s: float = 2.0
    max_delay_s: float = 300.0
    timeout_s: float = 10.0
    queue_size: int = 256
    max_concurrent: int = 4

    def __post_init__(self) -> None:
        for url in self.urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"webhook URL must start with http:// or https://: {url!r}")
        if self.urls and not self.secret:
            raise ValueError("webhook secret must not be empty when webhook URLs are set")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError("need 0 <= base_delay_s <= max_delay_s")
        if self.timeout_s <= 0 or self.queue_size < 1 or self.max_concurrent < 1:
            raise ValueError("timeout_s, queue_size and max_concurrent must be positive")

    def delay_s(self, attempt: int, jitter: float, retry_after_s: float | None = None) -> float:
        """The wait after failed attempt ``attempt`` (1-based): what ``Retry-After`` asked
        (at most ``max_delay_s``), else ``backoff_s`` with ``jitter`` in [0, 1]."""
        if retry_after_s is not None:
            return min(self.max_delay_s, max(0.0, retry_after_s))
        return backoff_s(attempt, self.base_delay_s, self.max_delay_s, jitter)


def backoff_s(attempt: int, base_s: float, max_s: float, jitter: float) -> float:
    """Full jitter: ``jitter`` (uniform in [0, 1]) times the capped exponential
    ``min(max_s, base_s * 2**(attempt-1))``, so retries of many deliveries spread out."""
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be in [0, 1], got {jitter}")
    return jitter * float(min(max_s, base_s * 2.0 ** min(attempt - 1, 64)))


def retry_after_s(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delay-seconds or an HTTP date, counted from
    ``now``, epoch seconds), never negative; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT; a zone-less one is taken as such
        return None
    return max(0.0, when.timestamp() - now)


def sign(secret: str, body: bytes) -> str:
    """The ``X-Cuecard-Signature`` value for a raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(
    secret: str, body: bytes, signature: str, *, now: float, tolerance_s: float = 300.0
) -> bool:
    """Receiver side: the signature matches (constant time) and the body's ``sent_at`` is
    within ``tolerance_s`` of ``now``."""
    if not hmac.compare_digest(sign(secret, body), signature):
        return False
    try:
        sent_at = float(json.loads(body)["sent_at"])
    except (ValueError, KeyError, TypeError):
        return False
    return abs(now - sent_at) <= tolerance_s


@dataclass(frozen=True, slots=True, eq=False)
class _Job:
    """One delivery to one URL; compared by identity (a redelivery supersedes a job)."""

    call_id: str
    delivery_id: str
    url: str
    payload: Mapping[str, Any]  # call_status and summary, as the store keeps it
    done: int = 0  # attempts already made in this series
    wait_s: float = 0.0  # before the next attempt


class WebhookSender:
    """Durable, bounded webhook delivery. ``await start()`` once (it resumes what the store
    holds as pending), ``await submit(...)`` per ended call, ``await aclose()`` at shutdown
    (``drain_timeout_s`` lets queued deliveries finish)."""

    def __init__(
        self,
        store: CallStore,
        opts: WebhookOptions,
        *,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.opts = opts
        self.dropped = 0
        self.outcomes: collections.Counter[str] = collections.Counter()  # attempts (/metrics)
        self._store = store
        self._clock = clock or SystemClock()
        self._sleep = sleep
        self._jitter = jitter
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=opts.queue_size)
        self._client = httpx.AsyncClient(timeout=opts.timeout_s, transport=transport)
        self._slots = asyncio.Semaphore(opts.max_concurrent)
        self._held: dict[tuple[str, str], _Job] = {}  # (delivery_id, url): queued or running
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._jobs: set[asyncio.Task[None]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._resumer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start sending, and re-queue (in the background, as the queue has room) what the
        store holds as pending; a failure to read it is logged, and those deliveries wait
        for the next start."""
        if self._worker is not None:
            return
        self._worker = asyncio.create_task(self._run(), name="webhook-sender")
        try:
            pending = await self._store.pending_deliveries()
        except StoreError as exc:
            log.error("could not resume pending webhook deliveries: %s", exc)
            return
        if pending:
            log.info("re-queuing %d pending webhook delivery(ies) from the store", len(pending))
            self._resumer = asyncio.create_task(self._resume(pending), name="webhook-resume")

    async def _resume(self, pending: list[PendingDelivery]) -> None:
        for p in pending:
            if p.url not in self.opts.urls:
                error = "URL no longer configured (CUECARD_WEBHOOK_URLS)"
                at = round(self._clock.now(), 3)
                attempt = DeliveryAttempt(
                    p.call_id, p.delivery_id, p.url, p.attempts, at, "failed", None, error
                )
                await self._record(attempt)
                continue
            wait_s = 0.0
            if p.attempts > 0:  # what is left of the backoff the restart cut short
                elapsed_s = self._clock.now() - p.last_at
                wait_s = max(0.0, self.opts.delay_s(p.attempts, self._jitter()) - elapsed_s)
            job = _Job(p.call_id, p.delivery_id, p.url, p.payload, p.attempts, wait_s)
            key = (job.delivery_id, job.url)
            if key not in self._held:  # not submitted or redelivered meanwhile
                self._held[key] = job
                await self._queue.put(job)  # waits for room: start-up may hold many

    async def submit(
        self, call_id: str, summary: Mapping[str, Any], call_status: CallStatus = "ended"
    ) -> str | None:
        """Deliver the summary to every URL: kept in the store as pending first (a
        ``StoreError`` propagates and nothing is queued), then queued. Returns the delivery id
        (None without URLs)."""
        if not self.opts.urls:
            return None
        delivery_id = uuid.uuid4().hex
        payload = {"call_status": call_status, "summary": dict(summary)}
        urls = list(self.opts.urls)
        at = round(self._clock.now(), 3)
        await self._store.queue_delivery(call_id, delivery_id, payload, urls, at)
        for url in urls:
            self._put(_Job(call_id, delivery_id, url, payload))
        return delivery_id

    async def redeliver(
        self, call_id: str, summary: Mapping[str, Any], call_status: CallStatus, urls: list[str]
    ) -> str:
        """A new attempt series to ``urls`` of the call's latest delivery (same id, same
        payload), or a new delivery of ``summary`` if the call never had one; a series in
        progress to one of these URLs is cancelled and replaced. Returns the delivery id."""
        latest = await self._store.delivery_payload(call_id)
        if latest is None:
            delivery_id = uuid.uuid4().hex
            payload: Mapping[str, Any] = {"call_status": call_status, "summary": dict(summary)}
        else:
            delivery_id, payload = latest
        at = round(self._clock.now(), 3)
        await self._store.queue_delivery(call_id, delivery_id, dict(payload), urls, at)
        for url in urls:
            running = self._running.get((delivery_id, url))
            if running is not None:
                running.cancel()
            self._held.pop((delivery_id, url), None)
            self._put(_Job(call_id, delivery_id, url, payload))
        return delivery_id

    def _put(self, job: _Job) -> None:
        key = (job.delivery_id, job.url)
        if key in self._held:
            return  # already queued or in flight (resumed twice, or submitted meanwhile)
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.dropped += 1
            log.error(
                "webhook queue full (%d): delivery %s of call %s to %s stays pending in the "
                "store (sent at the next start-up, or: POST /v1/calls/%s/deliveries/redeliver)",
                self.opts.queue_size, job.delivery_id, job.call_id, job.url, job.call_id,
            )  # fmt: skip
            return
        self._held[key] = job

    async def join(self) -> None:
        """Wait until every queued delivery (the resumed ones included) has been delivered or
        has failed for good."""
        if self._resumer is not None:
            await self._resumer
        await self._queue.join()

    async def aclose(self, drain_timeout_s: float = 0.0) -> None:
        if drain_timeout_s > 0 and self._worker is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_timeout_s):
                    await self.join()
        tasks = [t for t in (self._resumer, self._worker, *self._jobs) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._worker = None
        await self._client.aclose()

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            key = (job.delivery_id, job.url)
            if self._held.get(key) is not job:  # superseded by a redelivery
                self._queue.task_done()
                continue
            await self._slots.acquire()
            task = asyncio.create_task(self._job(job), name=f"webhook-{job.call_id}")
            self._jobs.add(task)
            self._running[key] = task
            task.add_done_callback(self._jobs.discard)

    async def _job(self, job: _Job) -> None:
        key = (job.delivery_id, job.url)
        try:
            await self._deliver(job)
        finally:
            self._slots.release()
            self._queue.task_done()
            if self._held.get(key) is job:
                del self._held[key]
                self._running.pop(key, None)

    async def _deliver(self, job: _Job) -> None:
        attempt, wait_s = job.done, job.wait_s
        while True:
            if wait_s > 0:
                await self._sleep(wait_s)
            attempt += 1
            sent_at = round(self._clock.now(), 3)
            body = json.dumps(
                {
                    "event": EVENT_NAME,
                    "delivery_id": job.delivery_id,
                    "call_id": job.call_id,
                    "call_status": job.payload.get("call_status", "ended"),
                    "attempt": attempt,
                    "sent_at": sent_at,
                    "summary": job.payload.get("summary", {}),
                },
                separators=(",", ":"),
            ).encode()
            status, error, retryable, asked_s = await self._post(
                job.url, body, job.delivery_id, sent_at
            )
            ok = status is not None and 200 <= status < 300
            outcome: DeliveryOutcome = "delivered"
            if not ok:
                final = not retryable or attempt >= self.opts.max_attempts
                outcome = "failed" if final else "retrying"
            await self._record(
                DeliveryAttempt(
                    job.call_id, job.delivery_id, job.url, attempt, sent_at, outcome, status, error
                )
            )
            if outcome == "delivered":
                return
            if outcome == "failed":
                log.error(
                    "webhook delivery %s of call %s to %s failed after %d attempt(s): %s",
                    job.delivery_id, job.call_id, job.url, attempt, error,
                )  # fmt: skip
                return
            wait_s = self.opts.delay_s(attempt, self._jitter(), asked_s)

    async def _post(
        self, url: str, body: bytes, delivery_id: str, sent_at: float
    ) -> tuple[int | None, str | None, bool, float | None]:
        """Status, error, whether a retry may help, and the seconds ``Retry-After`` asks
        (429 and 503 only)."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "cuecard-webhooks/1",
            EVENT_HEADER: EVENT_NAME,
            DELIVERY_HEADER: delivery_id,
            TIMESTAMP_HEADER: f"{sent_at:.3f}",
            SIGNATURE_HEADER: sign(self.opts.secret, body),
        }
        try:
            resp = await self._client.post(url, content=body, headers=headers)
        except httpx.TimeoutException:
            return None, f"no answer within {self.opts.timeout_s:g} s (timeout)", True, None
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}", True, None
        code = resp.status_code
        if 200 <= code < 300:
            return code, None, False, None
        asked_s = None
        if code in _RETRY_AFTER_STATUS:
            asked_s = retry_after_s(resp.headers.get("retry-after"), self._clock.now())
        retryable = code in _RETRY_STATUS or code >= 500
        return code, f"HTTP {code} {resp.reason_phrase}", retryable, asked_s

    async def _record(self, attempt: DeliveryAttempt) -> None:
        self.outcomes[attempt.outcome] += 1
        try:
            await self._store.record_delivery(attempt)
        except StoreError as exc:
            log.error("could not record webhook attempt for call %s: %s", attempt.call_id, exc)
