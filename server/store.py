"""The ``CallStore`` seam: where every call and everything it produced is kept.

Contract: ``append`` returns only once the event is durable (committed); the session calls it
before it publishes the event to any viewer, so nothing shown can be lost. Only final
transcripts and insights are appended (partials are never stored).

Implementations: ``server.sqlite_store.SqliteCallStore`` (embedded default) and
``server.redis_store.RedisCallStore`` (several server instances). Both raise ``CallNotFound``
for an unknown call id and ``StoreError`` when the backing storage is unusable.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

# ``live``, or how the call ended (``server.wire.EndState``)
CallStatus = Literal[
    "live", "ended", "interrupted", "timed_out", "limit_exceeded", "server_shutdown"
]
CALL_STATUSES: tuple[CallStatus, ...] = typing.get_args(CallStatus)
CallSource = Literal["native", "twilio", "audiohook", "vonage", "webrtc", "file"]

# ``pending``: queued, not sent yet (attempt 0); ``retrying``: this attempt failed, another follows
DeliveryOutcome = Literal["pending", "delivered", "retrying", "failed"]
DELIVERY_OUTCOMES: tuple[DeliveryOutcome, ...] = typing.get_args(DeliveryOutcome)


class StoreError(Exception):
    """The storage backend is unusable (corrupt file, unreachable server). A retry helps only
    after an operator fixes the backend."""


class CallNotFound(StoreError, LookupError):
    """No call with this id exists (never created, or deleted). A retry does not help."""

    def __init__(self, call_id: str) -> None:
        super().__init__(f"unknown call id {call_id!r}")
        self.call_id = call_id


@dataclass(frozen=True, slots=True)
class CallMeta:
    call_id: str
    source: CallSource
    rep_id: str | None = None
    started_at: float = 0.0  # wall-clock epoch seconds, from the server's Clock
    prior: dict[str, Any] = field(default_factory=dict)  # CRM fields for the lead score


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A stored call: its metadata, status and the summary's outcome once summarized."""

    call_id: str
    source: str
    rep_id: str | None
    started_at: float
    ended_at: float | None
    status: CallStatus
    outcome: str | None
    event_count: int
    has_summary: bool
    prior: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallFilter:
    """Which calls ``list_calls`` returns, newest first. ``text`` matches words of final
    transcripts (all words must occur in the call, case-insensitive)."""

    since: float | None = None  # started_at >= since, epoch seconds
    until: float | None = None  # started_at < until
    rep_id: str | None = None
    outcome: str | None = None  # the summary's outcome, e.g. "advanced"
    status: CallStatus | None = None
    text: str | None = None
    limit: int = 100
    offset: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= 1000:
            raise ValueError(f"limit must be in 1..1000, got {self.limit}")
        if self.offset < 0:
            raise ValueError(f"offset must be >= 0, got {self.offset}")


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """One POST of a webhook: what was sent where, and what came back."""

    call_id: str
    delivery_id: str  # the same for every attempt of one delivery (idempotency key)
    url: str
    attempt: int  # 1-based; 0 for the ``pending`` record made when the delivery is queued
    at: float  # wall-clock epoch seconds
    outcome: DeliveryOutcome
    status_code: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PendingDelivery:
    """A delivery to one URL whose last record is ``pending`` or ``retrying``: what a restart
    re-sends (the same ``delivery_id`` and payload)."""

    call_id: str
    delivery_id: str
    url: str
    payload: dict[str, Any]  # what ``queue_delivery`` kept: call_status and summary
    attempts: int  # attempts made so far in its series (0: never sent)
    last_at: float  # epoch seconds of its last record


class CallStore(Protocol):
    async def open_call(self, meta: CallMeta) -> None:
        """Create the call (status ``live``), or reopen it for a reconnecting stream."""

    async def append(self, call_id: str, event: dict[str, Any]) -> int:
        """Store one wire event; returns its sequence number once it is durable."""

    async def close_call(self, call_id: str, status: CallStatus) -> None: ...

    async def events(self, call_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        """The call's stored events in order, each with its ``seq``."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Return once the backing storage answers; raise ``StoreError`` when it does not
        (``/readyz``)."""

    async def get_call(self, call_id: str) -> CallRecord:
        """The call's record; raises ``CallNotFound``."""

    async def list_calls(self, flt: CallFilter) -> list[CallRecord]:
        """Calls matching ``flt``, newest first."""

    async def delete_call(self, call_id: str) -> None:
        """Remove the call and everything derived from it (events, summary, deliveries);
        raises ``CallNotFound``."""

    async def put_summary(self, call_id: str, summary: dict[str, Any]) -> None:
        """Store (or replace) the call's summary wire dict; its ``outcome`` becomes the call's."""

    async def get_summary(self, call_id: str) -> dict[str, Any] | None:
        """The stored summary, or None if not summarized yet; raises ``CallNotFound``."""

    async def record_delivery(self, attempt: DeliveryAttempt) -> None:
        """Keep one webhook attempt (ignored if the call was deleted meanwhile)."""

    async def deliveries(self, call_id: str) -> list[DeliveryAttempt]:
        """The call's webhook attempts in the order they were made."""

    async def queue_delivery(
        self, call_id: str, delivery_id: str, payload: dict[str, Any], urls: list[str], at: float
    ) -> None:
        """Keep what a delivery sends and, in the same write, a ``pending`` attempt 0 for each
        of ``urls`` (a new series: a redelivery keeps its ``delivery_id``); raises
        ``CallNotFound``."""

    async def delivery_payload(self, call_id: str) -> tuple[str, dict[str, Any]] | None:
        """The id and payload of the call's latest queued delivery, or None; raises
        ``CallNotFound``."""

    async def pending_deliveries(self) -> list[PendingDelivery]:
        """At start-up: every delivery (per URL) this process should resume, oldest first
        (Redis: those queued by this instance or by one whose heartbeat expired)."""

    async def purge_older_than(self, max_age_s: float) -> list[str]:
        """Delete every call that is not live and started more than ``max_age_s`` ago;
        returns their ids."""

    async def mark_live_calls_interrupted(self) -> list[str]:
        """At start-up: every call still ``live`` belonged to a dead process; mark it
        ``interrupted`` and return the ids."""

    async def mark_orphaned_calls_interrupted(self) -> list[str]:
        """While running: mark ``interrupted`` every live call of another instance that is
        dead (its heartbeat expired) and return the ids; each call is marked by one caller
        only, however many instances ask at once. Never this instance's own calls."""
