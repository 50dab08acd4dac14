"""Publish/subscribe of a call's wire events to its viewers.

A viewer subscribes by call id, before or after the call's audio starts. Each subscription
has a bounded queue; a viewer that falls ``max_pending`` events behind is cut off (its
``overflowed`` flag is set and its socket closes with a clear reason) rather than making the
call wait or growing memory without bound.

``Bus`` is in-process: the embedded default, one server. ``server.redis_bus.RedisBus`` extends
it across server instances that share a Redis (chosen with ``CUECARD_STORE=redis://…``), so a
viewer may watch, and act on, a call that another instance is serving.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

Event = dict[str, Any]
# A viewer's message for a live call -> the replies for that viewer, or None when this
# instance does not serve the call.
ActionHandler = Callable[[str, Event], Awaitable[list[Event] | None]]


class Subscription:
    def __init__(self, bus: Bus, call_id: str, max_pending: int) -> None:
        self.call_id = call_id
        self.overflowed = False
        self._bus = bus
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(max_pending)

    def offer(self, event: Event | None) -> None:
        if self.overflowed:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            self._queue = asyncio.Queue(1)
            self._queue.put_nowait(None)

    async def get(self) -> Event | None:
        """The next event, or None when the call has ended or this viewer was cut off."""
        return await self._queue.get()

    def close(self) -> None:
        self._bus.unsubscribe(self)


class Bus:
    def __init__(self, max_pending: int = 2000) -> None:
        self._subs: defaultdict[str, set[Subscription]] = defaultdict(set)
        self._max_pending = max_pending
        self.dropped = 0  # messages that did not reach other instances (RedisBus)

    def subscribe(self, call_id: str) -> Subscription:
        sub = Subscription(self, call_id, self._max_pending)
        self._subs[call_id].add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.call_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.call_id]

    def publish(self, call_id: str, event: Event) -> None:
        for sub in list(self._subs.get(call_id, ())):
            sub.offer(event)

    def end(self, call_id: str) -> None:
        """The call is over: every current viewer's ``get`` returns None after its backlog."""
        for sub in list(self._subs.get(call_id, ())):
            sub.offer(None)

    def let_go(self) -> None:
        """Shutdown: every viewer of this instance is let go (its ``get`` returns None after
        its backlog). Nothing is published: other instances' viewers watch on."""
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub.offer(None)

    async def start(self, actions: ActionHandler) -> None:
        """Ready to carry events; ``actions`` answers viewers' messages for calls served here
        when they come from another instance (in-process there is none)."""

    async def act(self, call_id: str, message: Event) -> list[Event] | None:
        """Hand a viewer's message to the instance serving ``call_id``: its replies for the
        viewer, or None when no instance serves it (in-process: the caller already looked)."""
        return None

    async def aclose(self) -> None:
        """Stop carrying events (after the calls ended)."""
