"""The event bus across server instances that share a Redis (Redis pub/sub).

Every instance delivers its own calls' events to its own viewers directly (as ``Bus`` does) and
also publishes them on ``p bus:ev:{call_id}``; every instance listens on ``p bus:ev:*`` and
hands what other instances published to its local viewers. So a viewer may connect to any
instance: it reads the call's history from the shared store, then gets the live events
(partials included) from the bus, deduplicated by ``seq`` as on one instance.

A viewer's card action for a call served elsewhere goes out on ``p bus:act:{call_id}`` with a
request id; the instance serving the call applies it (card changes then reach every viewer as
events) and answers the sender's own replies on ``p bus:re:{origin}``. No answer within
``act_timeout_s`` means no instance serves the call.

Publishing never blocks the call: messages go through a bounded outbox drained by one task
(its commands time out after ``socket_timeout_s``). If Redis is unreachable, remote viewers
miss live events (counted in ``dropped``; the durable ones are in the store for their next
connect) and local viewers are unaffected; the listener resubscribes with capped backoff.
Each direction logs one WARNING when Redis goes away and one INFO when it is back, not a line
per message. Pub/sub is at-most-once; the store is what is never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.bus import ActionHandler, Bus, Event
from server.store import StoreError

log = logging.getLogger(__name__)

OUTBOX_MAX = 10_000
RECONNECT_S = 0.25  # the listener's first wait to resubscribe, doubled up to RECONNECT_MAX_S
RECONNECT_MAX_S = 5.0


class RedisBus(Bus):
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "cuecard:",
        max_pending: int = 2000,
        act_timeout_s: float = 2.0,
        socket_timeout_s: float = 5.0,
    ) -> None:
        super().__init__(max_pending)
        self._url = url
        self._p = prefix + "bus:"
        self._origin = uuid.uuid4().hex  # this process; never reused across restarts
        self._act_timeout_s = act_timeout_s
        self._socket_timeout_s = socket_timeout_s
        self._r: aioredis.Redis | None = None  # publishing (commands time out)
        self._sub: aioredis.Redis | None = None  # the subscription (waits for messages)
        self._publishing_ok = True
        self._outbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue(OUTBOX_MAX)
        self._tasks: list[asyncio.Task[None]] = []
        self._answering: set[asyncio.Task[None]] = set()
        self._answers: dict[str, asyncio.Future[list[Event] | None]] = {}
        self._actions: ActionHandler | None = None
        self._subscribed = asyncio.Event()

    async def start(self, actions: ActionHandler) -> None:
        self._actions = actions
        timeout_s = self._socket_timeout_s
        self._r = aioredis.Redis.from_url(
            self._url, decode_responses=True, socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )  # fmt: skip
        self._sub = aioredis.Redis.from_url(
            self._url, decode_responses=True, socket_connect_timeout=timeout_s
        )
        try:
            await self._r.ping()
        except (RedisError, OSError) as exc:
            await self._r.aclose()
            await self._sub.aclose()
            self._r = self._sub = None
            raise StoreError(f"cannot reach Redis at {self._url}: {exc}") from exc
        self._tasks = [
            asyncio.create_task(self._listen(), name="redis-bus-listen"),
            asyncio.create_task(self._drain(), name="redis-bus-publish"),
        ]
        # Events published before the subscription is in place would be missed by this
        # instance's viewers: wait for it (bounded; the listener keeps retrying regardless).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self._subscribed.wait()

    async def aclose(self) -> None:
        with contextlib.suppress(TimeoutError):  # let the last events (the ends) go out
            async with asyncio.timeout(2.0):
                await self._outbox.join()
        tasks = [*self._tasks, *self._answering]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for client in (self._r, self._sub):
            if client is not None:
                await client.aclose()

    # -- out ---------------------------------------------------------------------------------

    def publish(self, call_id: str, event: Event) -> None:
        super().publish(call_id, event)
        self._send(f"ev:{call_id}", {"o": self._origin, "e": event})

    def end(self, call_id: str) -> None:
        super().end(call_id)
        self._send(f"ev:{call_id}", {"o": self._origin, "end": True})

    async def act(self, call_id: str, message: Event) -> list[Event] | None:
        rid = uuid.uuid4().hex
        answer: asyncio.Future[list[Event] | None] = asyncio.get_running_loop().create_future()
        self._answers[rid] = answer
        try:
            self._send(f"act:{call_id}", {"o": self._origin, "id": rid, "m": message})
            async with asyncio.timeout(self._act_timeout_s):
                return await answer
        except TimeoutError:
            return None
        finally:
            self._answers.pop(rid, None)

    def _send(self, channel: str, message: dict[str, Any]) -> None:
        try:
            self._outbox.put_nowait((self._p + channel, json.dumps(message)))
        except asyncio.QueueFull:
            self._count_drop("outbox full")

    def _count_drop(self, why: str) -> None:
        if self._publishing_ok:
            log.warning("redis bus: dropping messages for other instances (%s)", why)
            self._publishing_ok = False
        self.dropped += 1

    async def _drain(self) -> None:
        assert self._r is not None
        while True:
            channel, message = await self._outbox.get()
            try:
                await self._r.publish(channel, message)
            except (RedisError, OSError) as exc:
                self._count_drop(f"Redis: {exc}")
            else:
                if not self._publishing_ok and not self._outbox.full():
                    log.info("redis bus: publishing to other instances again")
                    self._publishing_ok = True
            finally:
                self._outbox.task_done()

    # -- in ----------------------------------------------------------------------------------

    async def _listen(self) -> None:
        assert self._sub is not None
        wait_s, lost = RECONNECT_S, False
        while True:
            pubsub = self._sub.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(self._p + "ev:*", self._p + "act:*")
                await pubsub.subscribe(self._p + f"re:{self._origin}")
                self._subscribed.set()
                if lost:
                    log.info("redis bus: listening to other instances again")
                wait_s, lost = RECONNECT_S, False
                async for message in pubsub.listen():
                    if message["type"] in ("message", "pmessage"):
                        self._dispatch(message["channel"], message["data"])
            except (RedisError, OSError) as exc:
                if not lost:
                    log.warning("redis bus: lost the subscription (%s); resubscribing", exc)
                lost = True
                await asyncio.sleep(wait_s)
                wait_s = min(RECONNECT_MAX_S, wait_s * 2)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    def _dispatch(self, channel: str, data: str) -> None:
        try:
            msg = json.loads(data)
        except json.JSONDecodeError:
            log.warning("redis bus: ignoring a message that is not JSON on %s", channel)
            return
        kind, _, call_id = channel.removeprefix(self._p).partition(":")
        if kind == "re":
            answer = self._answers.get(msg.get("id", ""))
            if answer is not None and not answer.done():
                answer.set_result(msg.get("r"))
        elif msg.get("o") == self._origin:
            return  # our own event or action: already delivered here
        elif kind == "ev":
            if msg.get("end"):
                super().end(call_id)
            elif isinstance(msg.get("e"), dict):
                super().publish(call_id, msg["e"])
        elif kind == "act" and self._actions is not None:
            task = asyncio.create_task(self._answer(call_id, msg))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)

    async def _answer(self, call_id: str, msg: dict[str, Any]) -> None:
        assert self._actions is not None
        message = msg.get("m")
        if not isinstance(message, dict):
            return
        replies = await self._actions(call_id, message)
        if replies is not None:  # only the instance serving the call answers
            self._send(f"re:{msg.get('o')}", {"id": msg.get("id"), "r": replies})
