"""A call's durable events on their way to the store, in order; ``CallSession`` owns one.

Contract: an event ``put`` here is published (shown to viewers) only after ``CallStore.append``
returned for it, with its ``seq``, and events are stored and published in the order they
were put. While the store answers, ``put`` stores and publishes inline (the caller waits for
the commit, as it always did). When an append fails with ``StoreError`` (Redis unreachable,
an I/O error), that event and every later one wait here, in order, and one task retries the
oldest with capped full-jitter backoff until the store answers; then they go out in order
and ``put`` is inline again. ``then`` queues a step (the end of the call: summary, closing
status, close) that runs after everything put before it, retried the same way; the events a
step returns are stored and published next.

What the rep sees while the store is down: everything that is never stored keeps flowing
(partial transcripts, provisional cards, ``degraded`` statuses), and the session says once,
with a non-durable ``degraded`` status, that the transcript and cards are held; finals,
insights, cards and scores appear, in order, as soon as they are stored. Holding the cards
too keeps the store's promise that nothing shown can be lost (the summary and the card
statistics count the cards the rep saw); the coach keeps its state in memory meanwhile, so
coaching resumes where it was, not from scratch.

Bounded: beyond ``max_events`` waiting, an event is dropped (``lost``) and the call can no
longer be stored whole, so ``failed`` turns true and the session refuses more audio (the
call ends ``interrupted``; its end is stored when the store is back). Steps are not bounded
(three per call). ``settle`` waits for everything put to be stored, but gives up once the
store has been failing for ``patience_s`` while it waits, so a call ending during an outage
(or a SIGTERM then) does not hold its socket or the shutdown for longer; the task goes on in
the background and stores the end when the store is back. If the process stops first, the
call is still ``live`` in the store and the next start-up marks it ``interrupted``.

Appends are at least once: an append whose answer was lost in the outage may be retried
after the store applied it (a duplicate event, never a lost one).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from server.store import CallNotFound, CallStore, StoreError
from server.webhooks import backoff_s

log = logging.getLogger(__name__)
T = TypeVar("T")
Wire = dict[str, Any]
Step = Callable[[], Awaitable[list[Wire]]]


@dataclass(frozen=True, slots=True)
class OutboxOptions:
    max_events: int = 2000  # about half an hour of a busy call's durable events
    base_delay_s: float = 0.25
    max_delay_s: float = 5.0
    patience_s: float = 10.0  # how long ``settle`` waits on a failing store

    def __post_init__(self) -> None:
        if self.max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {self.max_events}")
        if not 0 < self.base_delay_s <= self.max_delay_s:
            raise ValueError("need 0 < base_delay_s <= max_delay_s")
        if self.patience_s < 0:
            raise ValueError(f"patience_s must be >= 0, got {self.patience_s}")


class StoreOutbox:
    def __init__(
        self,
        call_id: str,
        store: CallStore,
        publish: Callable[[Wire], None],
        opts: OutboxOptions,
        *,
        on_hold: Callable[[bool], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.call_id = call_id
        self.opts = opts
        self.lost = 0  # events dropped: the outbox was full, or the call was deleted
        self._store = store
        self._publish = publish
        self._on_hold = on_hold  # True when the store starts failing, False when it answers
        self._sleep = sleep
        self._jitter = jitter
        self._items: deque[Wire | Step] = deque()
        self._events = 0  # how many of the items are events (the bounded part)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()  # set on every change settle waits for
        self._down_since: float | None = None  # loop time of the first failure in a row

    @property
    def failed(self) -> bool:
        """Events were lost: the call cannot be stored whole any more."""
        return self.lost > 0

    @property
    def waiting(self) -> int:
        return len(self._items)

    async def put(self, wire: Wire) -> None:
        """Store ``wire`` then publish it, or hold it (in order) while the store fails."""
        async with self._lock:
            if not self._items:
                try:
                    await self._store_and_publish(wire)
                    return
                except CallNotFound:
                    self._lose("the call was deleted")
                    return
                except StoreError as exc:
                    self._failing(exc)
            if self._events >= self.opts.max_events:
                self._lose(f"{self.opts.max_events} events already wait for the store")
                return
            self._hold(wire)

    def then(self, step: Step) -> None:
        """Run ``step`` after everything put so far (retried while the store fails), then
        store and publish the events it returns."""
        self._hold(step)

    async def settle(self) -> bool:
        """Wait until everything is stored and published (True), or until the store has been
        failing for ``patience_s`` of this wait (False: the task goes on without us)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        while self._items:
            timeout = None
            if self._down_since is not None:
                timeout = max(start, self._down_since) + self.opts.patience_s - loop.time()
                if timeout <= 0:
                    return False
            self._changed.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
            except TimeoutError:
                continue
        return True

    def _hold(self, item: Wire | Step) -> None:
        self._items.append(item)
        self._events += isinstance(item, dict)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name=f"outbox-{self.call_id}")

    def _lose(self, why: str) -> None:
        if self.lost == 0:
            log.warning("call %s: events are being lost (%s)", self.call_id, why)
        self.lost += 1

    def _failing(self, exc: StoreError) -> None:
        # no log line here: the store logs the outage once for every call (server.redis_store)
        if self._down_since is None:
            self._down_since = asyncio.get_running_loop().time()
            self._changed.set()
            if self._on_hold is not None:
                self._on_hold(True)

    async def _store_and_publish(self, wire: Wire) -> None:
        wire["seq"] = await self._store.append(self.call_id, wire)
        self._publish(wire)

    async def _drain(self) -> None:
        """The one task that empties the outbox, oldest first; a step's events go next."""
        while self._items:
            head = self._items[0]
            if isinstance(head, dict):
                await self._retry(functools.partial(self._store_and_publish, head))
                self._items.popleft()
                self._events -= 1
            else:
                wires = await self._retry(head) or []
                self._items.popleft()
                self._items.extendleft(reversed(wires))
                self._events += len(wires)
            self._changed.set()

    async def _retry(self, op: Callable[[], Awaitable[T]]) -> T | None:
        """``op`` until the store answers; None (logged, counted) if the call is gone."""
        failures = 0
        while True:
            try:
                result = await op()
            except CallNotFound:
                self._lose("the call was deleted")
                return None
            except StoreError as exc:
                self._failing(exc)
                failures += 1
                o = self.opts  # never less than base_delay_s: no tight loop on a refused port
                wait_s = backoff_s(failures, o.base_delay_s, o.max_delay_s, self._jitter())
                await self._sleep(max(o.base_delay_s, wait_s))
                continue
            if self._down_since is not None:
                self._down_since = None
                self._changed.set()
                if self._on_hold is not None:
                    self._on_hold(False)
            return result
