"""Webhook delivery of call summaries to the CRM (the hand-off that stores and enqueues them
is ``server.handoff.hand_off_call``).

``WebhookSender`` delivers off the audio path: ``enqueue`` never blocks (a bounded queue; when
it is full the delivery is dropped, counted in ``dropped`` and logged; the summary stays in the
store). A background task POSTs each summary to every URL with at most ``max_concurrent``
summaries in flight, retrying network errors, timeouts, 408/425/429 and 5xx with exponential
backoff (``base_delay_s * 2**(attempt-1)``, capped at ``max_delay_s``); other 4xx answers are
not retried (the receiver rejected the payload or the signature; retrying repeats it). Every
attempt is recorded with ``CallStore.record_delivery``, stamped by the injected ``Clock``
(as is ``sent_at``); the waits between attempts go through an injectable ``sleep``.

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
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from server.clock import Clock, SystemClock
from server.store import CallStatus, CallStore, DeliveryAttempt, DeliveryOutcome, StoreError

log = logging.getLogger("cuecard.webhooks")

EVENT_NAME = "call.summary"
SIGNATURE_HEADER = "X-Cuecard-Signature"
TIMESTAMP_HEADER = "X-Cuecard-Timestamp"
DELIVERY_HEADER = "X-Cuecard-Delivery"
EVENT_HEADER = "X-Cuecard-Event"
_RETRY_STATUS = frozenset({408, 425, 429})


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

    def delay_s(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (1-based)."""
        return float(min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))


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


@dataclass(frozen=True, slots=True)
class _Job:
    call_id: str
    delivery_id: str
    summary: Mapping[str, Any]
    call_status: CallStatus


class WebhookSender:
    """Bounded-queue webhook delivery. ``await start()`` once, ``enqueue`` per ended call,
    ``await aclose()`` at shutdown (``drain_timeout_s`` lets queued deliveries finish)."""

    def __init__(
        self,
        store: CallStore,
        opts: WebhookOptions,
        *,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.opts = opts
        self.dropped = 0
        self.outcomes: collections.Counter[str] = collections.Counter()  # attempts (/metrics)
        self._store = store
        self._clock = clock or SystemClock()
        self._sleep = sleep
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=opts.queue_size)
        self._client = httpx.AsyncClient(timeout=opts.timeout_s, transport=transport)
        self._slots = asyncio.Semaphore(opts.max_concurrent)
        self._jobs: set[asyncio.Task[None]] = set()
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="webhook-sender")

    def enqueue(
        self, call_id: str, summary: Mapping[str, Any], call_status: CallStatus = "ended"
    ) -> bool:
        """Queue the summary for every URL; False (and logged) if the queue is full."""
        if not self.opts.urls:
            return True
        try:
            self._queue.put_nowait(_Job(call_id, uuid.uuid4().hex, summary, call_status))
        except asyncio.QueueFull:
            self.dropped += 1
            log.error(
                "webhook queue full (%d): summary of call %s not delivered; it stays stored",
                self.opts.queue_size,
                call_id,
            )
            return False
        return True

    async def join(self) -> None:
        """Wait until every queued summary has been delivered or has failed for good."""
        await self._queue.join()

    async def aclose(self, drain_timeout_s: float = 0.0) -> None:
        if drain_timeout_s > 0 and self._worker is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.join(), drain_timeout_s)
        tasks = [t for t in (self._worker, *self._jobs) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._worker = None
        await self._client.aclose()

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            await self._slots.acquire()
            task = asyncio.create_task(self._job(job), name=f"webhook-{job.call_id}")
            self._jobs.add(task)
            task.add_done_callback(self._jobs.discard)

    async def _job(self, job: _Job) -> None:
        try:
            await asyncio.gather(*(self._deliver(job, url) for url in self.opts.urls))
        finally:
            self._slots.release()
            self._queue.task_done()

    async def _deliver(self, job: _Job, url: str) -> None:
        for attempt in range(1, self.opts.max_attempts + 1):
            sent_at = round(self._clock.now(), 3)
            body = json.dumps(
                {
                    "event": EVENT_NAME,
                    "delivery_id": job.delivery_id,
                    "call_id": job.call_id,
                    "call_status": job.call_status,
                    "attempt": attempt,
                    "sent_at": sent_at,
                    "summary": job.summary,
                },
                separators=(",", ":"),
            ).encode()
            status, error, retryable = await self._post(url, body, job.delivery_id, sent_at)
            ok = status is not None and 200 <= status < 300
            outcome: DeliveryOutcome = "delivered"
            if not ok:
                final = not retryable or attempt == self.opts.max_attempts
                outcome = "failed" if final else "retrying"
            await self._record(
                DeliveryAttempt(
                    job.call_id, job.delivery_id, url, attempt, sent_at, outcome, status, error
                )
            )
            if outcome == "delivered":
                return
            if outcome == "failed":
                log.error(
                    "webhook delivery %s of call %s to %s failed after %d attempt(s): %s",
                    job.delivery_id, job.call_id, url, attempt, error,
                )  # fmt: skip
                return
            await self._sleep(self.opts.delay_s(attempt))

    async def _post(
        self, url: str, body: bytes, delivery_id: str, sent_at: float
    ) -> tuple[int | None, str | None, bool]:
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
            return None, f"no answer within {self.opts.timeout_s:g} s (timeout)", True
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}", True
        code = resp.status_code
        if 200 <= code < 300:
            return code, None, False
        return code, f"HTTP {code} {resp.reason_phrase}", code in _RETRY_STATUS or code >= 500

    async def _record(self, attempt: DeliveryAttempt) -> None:
        self.outcomes[attempt.outcome] += 1
        try:
            await self._store.record_delivery(attempt)
        except StoreError as exc:
            log.error("could not record webhook attempt for call %s: %s", attempt.call_id, exc)
