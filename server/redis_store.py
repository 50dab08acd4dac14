"""``CallStore`` on Redis, for deployments with several server instances.

Layout (``p`` is the key prefix, default ``cuecard:``; the ``{call_id}`` hash tag keeps one
call's keys in one Redis Cluster slot):

- ``p call:{id}`` hash: source, rep_id, started_at, ended_at, status, outcome, prior, owner
- ``p events:{id}`` list of event JSON; the RPUSH result is the event's seq (atomic across
  instances)
- ``p text:{id}`` the call's final transcript words, lower-case, for text search
- ``p summary:{id}`` the summary JSON; ``p deliveries:{id}`` list of webhook attempts
- ``p calls`` sorted set of call ids by started_at
- ``p instance:{owner}`` a heartbeat key with a TTL, refreshed while the instance runs
- ``p webhook:{id}`` hash: delivery_id -> JSON ``{"by": instance, "body": payload}``;
  ``p webhooks`` set of the call ids with a delivery that may still be pending
- ``p schema`` the layout's version (``SCHEMA_VERSION``; below)

Versions: ``open`` sets ``p schema`` on first use (to ``SCHEMA_VERSION``, or to 1 when it
finds calls stored before there was a version key), runs the migrations the store lacks in
order (``_MIGRATIONS``), and refuses with ``StoreError`` a store a newer Cuecard wrote.

Failures: every Redis error or dropped connection leaves a method as ``StoreError`` (the REST
API answers 503); the first failure after a success logs one WARNING, the first success
after failures one INFO. Commands time out after ``socket_timeout_s`` (a Redis that stops
answering without closing the connection is a failure too, not a hang).

Every per-call write is one Lua script that first checks the call exists, so a write racing a
delete never resurrects a half call. Durability is Redis's: run it with ``appendonly yes`` and
``appendfsync always`` for the same guarantee as the SQLite store.

``mark_live_calls_interrupted`` (at start-up) marks live calls owned by this instance, or by an
instance whose heartbeat expired, so one instance restarting never touches calls another is
still serving; ``mark_orphaned_calls_interrupted`` (periodically, while running) marks only the
dead instances' calls. Each call is marked by one atomic script that rechecks it is still
live, still that owner's and the owner still dead, so of several instances at once exactly one
marks it (and hands it off).
Listing with filters scans the calls in the time range (one pipelined round trip per page).

(Over STYLE's 400 lines: one backend of the whole ``CallStore`` protocol, its key layout and
every write that depends on it kept in one file.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.clock import Clock, SystemClock
from server.store import (
    CallFilter,
    CallMeta,
    CallNotFound,
    CallRecord,
    CallStatus,
    DeliveryAttempt,
    PendingDelivery,
    StoreError,
)

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")
SCHEMA_VERSION = 2

_APPEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local n = redis.call('RPUSH', KEYS[2], ARGV[1])
if ARGV[2] ~= '' then redis.call('APPEND', KEYS[3], ARGV[2]) end
return n
"""
_HSET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""
_PUT_SUMMARY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'outcome', ARGV[2])
return 1
"""
_QUEUE_DELIVERY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[3])
for i = 4, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
return 1
"""
# a live call whose owner is ARGV[1] and whose owner's heartbeat (KEYS[2]) is gone becomes
# interrupted: atomic, so of several instances reaping at once exactly one marks (and hands
# off) each call
_INTERRUPT_ORPHAN = """
if redis.call('HGET', KEYS[1], 'status') ~= 'live' then return 0 end
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'status', 'interrupted', 'ended_at', ARGV[3])
return 1
"""
_RPUSH_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
"""


def _unavailable(
    fn: Callable[Concatenate[RedisCallStore, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[RedisCallStore, P], Coroutine[Any, Any, T]]:
    """Redis errors and dropped connections leave ``fn`` as ``StoreError``; the store's
    health (one log line per change) follows what happened."""

    @functools.wraps(fn)
    async def wrapper(self: RedisCallStore, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            result = await fn(self, *args, **kwargs)
        except StoreError:  # CallNotFound: Redis answered
            self._answered()
            raise
        except (RedisError, OSError) as exc:
            self._failed(exc)
            raise StoreError(f"Redis at {self._url} is unavailable: {exc}") from exc
        self._answered()
        return result

    return wrapper


class RedisCallStore:
    """``CallStore`` on Redis. Create with ``await RedisCallStore.open(url)``."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        url: str,
        prefix: str,
        instance_id: str,
        heartbeat_ttl_s: float,
        clock: Clock,
    ) -> None:
        self._r = client
        self._url = url
        self._p = prefix
        self.instance_id = instance_id
        self._ttl_s = heartbeat_ttl_s
        self._clock = clock
        self._append = client.register_script(_APPEND)
        self._hset_if_exists = client.register_script(_HSET_IF_EXISTS)
        self._put_summary = client.register_script(_PUT_SUMMARY)
        self._rpush_if_exists = client.register_script(_RPUSH_IF_EXISTS)
        self._queue_delivery = client.register_script(_QUEUE_DELIVERY)
        self._interrupt_orphan = client.register_script(_INTERRUPT_ORPHAN)
        self._heartbeat: asyncio.Task[None] | None = None
        self._suspects: set[str] = set()  # instances whose beat was gone at the last reaping
        self.available = True  # False from a failure until the next command that succeeds

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        prefix: str = "cuecard:",
        instance_id: str | None = None,
        heartbeat_ttl_s: float = 30.0,
        socket_timeout_s: float = 5.0,
        clock: Clock | None = None,
    ) -> RedisCallStore:
        """Connect and start the instance heartbeat. ``instance_id`` should be stable across
        restarts of one instance (default: the host name). Raises ``StoreError`` naming the URL
        if Redis does not answer."""
        if heartbeat_ttl_s <= 0:
            raise ValueError(f"heartbeat_ttl_s must be > 0, got {heartbeat_ttl_s}")
        client = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=socket_timeout_s,
            socket_timeout=socket_timeout_s,
        )
        store = cls(
            client,
            url=url,
            prefix=prefix,
            instance_id=instance_id or socket.gethostname(),
            heartbeat_ttl_s=heartbeat_ttl_s,
            clock=clock or SystemClock(),
        )
        try:
            await store._beat()
            await store._check_schema()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise StoreError(f"cannot reach Redis at {url}: {exc}") from exc
        except BaseException:
            await client.aclose()
            raise
        store._heartbeat = asyncio.create_task(store._heartbeat_loop(), name="redis-heartbeat")
        return store

    async def _check_schema(self) -> None:
        key = self._p + "schema"
        raw = await self._r.get(key)
        if raw is None:  # first use, or calls stored before the version key existed (1)
            found = 1 if await self._r.exists(self._p + "calls") else SCHEMA_VERSION
            await self._r.set(key, found, nx=True)
            raw = await self._r.get(key)
        version = int(str(raw))
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"Redis at {self._url} (prefix {self._p!r}) holds schema version {version}, "
                f"newer than this Cuecard's {SCHEMA_VERSION}: run the Cuecard that wrote it, "
                "or a newer one"
            )
        for to_version in range(version + 1, SCHEMA_VERSION + 1):
            await _MIGRATIONS[to_version](self)
            await self._r.set(key, to_version)
            log.info(
                "Redis store %s%s: migrated to schema version %d", self._url, self._p, to_version
            )

    def _failed(self, exc: BaseException) -> None:
        if self.available:
            log.warning(
                "Redis at %s is unavailable (%s): calls keep coaching from memory and their "
                "events wait to be stored; REST answers 503 until it is back",
                self._url, exc,
            )  # fmt: skip
        self.available = False

    def _answered(self) -> None:
        if not self.available:
            log.info("Redis at %s answers again", self._url)
        self.available = True

    async def _beat(self) -> None:
        await self._r.set(self._p + f"instance:{self.instance_id}", "1", px=int(self._ttl_s * 1e3))

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._ttl_s / 3)
            try:
                await self._beat()
            except (RedisError, OSError) as exc:
                self._failed(exc)  # the next beat retries before the TTL runs out
                continue
            self._answered()

    @_unavailable
    async def ping(self) -> None:
        await self._r.ping()

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        await self._r.aclose()

    def _k(self, kind: str, call_id: str) -> str:
        return f"{self._p}{kind}:{{{call_id}}}"

    # -- writing ----------------------------------------------------------------------------

    @_unavailable
    async def open_call(self, meta: CallMeta) -> None:
        key = self._k("call", meta.call_id)
        async with self._r.pipeline(transaction=True) as pipe:
            for name, value in (
                ("source", meta.source),
                ("rep_id", _j(meta.rep_id)),
                ("started_at", _j(meta.started_at)),
                ("prior", _j(meta.prior)),
                ("outcome", _j(None)),
            ):
                pipe.hsetnx(key, name, value)
            pipe.hset(key, mapping={"status": "live", "ended_at": _j(None)})
            pipe.hset(key, "owner", self.instance_id)
            pipe.zadd(self._p + "calls", {meta.call_id: meta.started_at}, nx=True)
            await pipe.execute()

    @_unavailable
    async def append(self, call_id: str, event: dict[str, Any]) -> int:
        text = ""
        if event.get("type") == "transcript" and event.get("is_final", True):
            text = " " + " ".join(_words(str(event.get("text", "")))) + " "
        keys = [self._k("call", call_id), self._k("events", call_id), self._k("text", call_id)]
        seq = int(await self._append(keys=keys, args=[_j(event), text]))
        if seq < 0:
            raise CallNotFound(call_id)
        return seq

    @_unavailable
    async def close_call(self, call_id: str, status: CallStatus) -> None:
        args = ["status", status, "ended_at", _j(self._clock.now())]
        if not await self._hset_if_exists(keys=[self._k("call", call_id)], args=args):
            raise CallNotFound(call_id)

    @_unavailable
    async def put_summary(self, call_id: str, summary: dict[str, Any]) -> None:
        outcome = summary.get("outcome")
        keys = [self._k("call", call_id), self._k("summary", call_id)]
        args = [_j(summary), _j(outcome if isinstance(outcome, str) else None)]
        if not await self._put_summary(keys=keys, args=args):
            raise CallNotFound(call_id)

    @_unavailable
    async def record_delivery(self, attempt: DeliveryAttempt) -> None:
        a = attempt
        body = [a.call_id, a.delivery_id, a.url, a.attempt, a.at, a.outcome, a.status_code, a.error]
        keys = [self._k("call", a.call_id), self._k("deliveries", a.call_id)]
        await self._rpush_if_exists(keys=keys, args=[_j(body)])

    @_unavailable
    async def queue_delivery(
        self, call_id: str, delivery_id: str, payload: dict[str, Any], urls: list[str], at: float
    ) -> None:
        keys = [
            self._k("call", call_id),
            self._k("deliveries", call_id),
            self._k("webhook", call_id),
            self._p + "webhooks",
        ]
        pending = [_j([call_id, delivery_id, url, 0, at, "pending", None, None]) for url in urls]
        held = _j({"by": self.instance_id, "body": payload})
        args = [delivery_id, held, call_id, *pending]
        if not await self._queue_delivery(keys=keys, args=args):
            raise CallNotFound(call_id)

    @_unavailable
    async def delivery_payload(self, call_id: str) -> tuple[str, dict[str, Any]] | None:
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.exists(self._k("call", call_id))
            pipe.hgetall(self._k("webhook", call_id))
            pipe.lrange(self._k("deliveries", call_id), 0, -1)
            exists, held, rows = await pipe.execute()
        if not exists:
            raise CallNotFound(call_id)
        for row in reversed(rows):
            delivery_id = json.loads(row)[1]
            if delivery_id in held:
                return delivery_id, dict(json.loads(held[delivery_id])["body"])
        return None

    @_unavailable
    async def pending_deliveries(self) -> list[PendingDelivery]:
        ids = sorted(str(c) for c in await self._r.smembers(self._p + "webhooks"))
        async with self._r.pipeline(transaction=False) as pipe:
            for cid in ids:
                pipe.hgetall(self._k("webhook", cid))
                pipe.lrange(self._k("deliveries", cid), 0, -1)
            res = await pipe.execute()
        out: list[PendingDelivery] = []
        alive: dict[str, bool] = {self.instance_id: False}
        for i, cid in enumerate(ids):
            held, rows = res[2 * i], res[2 * i + 1]
            last = {(r[1], r[2]): r for r in map(json.loads, rows)}  # the last row per URL
            open_ = [r for r in last.values() if r[5] in ("pending", "retrying") and r[1] in held]
            if not open_:
                # nothing left to resume (a redelivery racing this adds it back on its own)
                await self._r.srem(self._p + "webhooks", cid)
                continue
            for r in open_:
                kept = json.loads(held[r[1]])
                by = str(kept.get("by"))
                if by not in alive:
                    alive[by] = bool(await self._r.exists(self._p + f"instance:{by}"))
                if not alive[by]:
                    out.append(PendingDelivery(cid, r[1], r[2], dict(kept["body"]), r[3], r[4]))
        return sorted(out, key=lambda d: d.last_at)

    @_unavailable
    async def delete_call(self, call_id: str) -> None:
        if not await self._delete([call_id]):
            raise CallNotFound(call_id)

    async def _delete(self, call_ids: list[str]) -> int:
        if not call_ids:
            return 0
        async with self._r.pipeline(transaction=False) as pipe:
            for cid in call_ids:
                pipe.delete(self._k("call", cid))
                kinds = ("events", "text", "summary", "deliveries", "webhook")
                pipe.delete(*(self._k(k, cid) for k in kinds))
                pipe.zrem(self._p + "calls", cid)
                pipe.srem(self._p + "webhooks", cid)
            results = await pipe.execute()
        return sum(int(r) for r in results[0::4])

    @_unavailable
    async def purge_older_than(self, max_age_s: float) -> list[str]:
        if max_age_s <= 0:
            raise ValueError(f"max_age_s must be > 0, got {max_age_s}")
        cutoff = self._clock.now() - max_age_s
        ids = _ids(await self._r.zrangebyscore(self._p + "calls", "-inf", f"({cutoff!r}"))
        statuses = await self._hget_many(ids, "status")
        old = [cid for cid, st in zip(ids, statuses, strict=True) if st not in (None, "live")]
        await self._delete(old)
        return old

    @_unavailable
    async def mark_live_calls_interrupted(self) -> list[str]:
        return await self._mark_orphans(own=True)

    @_unavailable
    async def mark_orphaned_calls_interrupted(self) -> list[str]:
        return await self._mark_orphans(own=False)

    async def _mark_orphans(self, *, own: bool) -> list[str]:
        """Mark the live calls of dead instances (and, with ``own``, this instance's: it is
        starting, so they are a previous run's) ``interrupted``; returns the ids marked here."""
        ids = _ids(await self._r.zrange(self._p + "calls", 0, -1))
        async with self._r.pipeline(transaction=False) as pipe:
            for cid in ids:
                pipe.hmget(self._k("call", cid), ["status", "owner"])
            rows = await pipe.execute()
        marked: list[str] = []
        alive: dict[str, bool] = {self.instance_id: not own}
        suspects, self._suspects = self._suspects, set()
        for cid, (status, owner) in zip(ids, rows, strict=True):
            if status != "live" or owner is None:
                continue
            if owner not in alive:
                alive[owner] = bool(await self._r.exists(self._p + f"instance:{owner}"))
            if alive[owner]:
                continue
            if not own and owner not in suspects:
                # seen dead once: reaped only if still dead at the next pass, so an instance
                # whose beat lapsed during a Redis outage has beaten again by then
                self._suspects.add(owner)
                continue
            keys = [self._k("call", cid), self._p + f"instance:{owner}"]
            recheck = "0" if owner == self.instance_id else "1"  # the beat is gone, still?
            args = [owner, recheck, _j(self._clock.now())]
            if await self._interrupt_orphan(keys=keys, args=args):
                marked.append(cid)
        return sorted(marked)

    # -- reading ----------------------------------------------------------------------------

    async def _require(self, call_id: str) -> None:
        if not await self._r.exists(self._k("call", call_id)):
            raise CallNotFound(call_id)

    async def _hget_many(self, ids: list[str], field: str) -> list[str | None]:
        async with self._r.pipeline(transaction=False) as pipe:
            for cid in ids:
                pipe.hget(self._k("call", cid), field)
            return list(await pipe.execute())

    @_unavailable
    async def events(self, call_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        await self._require(call_id)
        bodies = await self._r.lrange(self._k("events", call_id), after_seq, -1)
        return [{**json.loads(b), "seq": after_seq + i + 1} for i, b in enumerate(bodies)]

    @_unavailable
    async def get_call(self, call_id: str) -> CallRecord:
        records = await self._records([call_id])
        if records[0] is None:
            raise CallNotFound(call_id)
        return records[0]

    async def _records(self, ids: list[str]) -> list[CallRecord | None]:
        async with self._r.pipeline(transaction=False) as pipe:
            for cid in ids:
                pipe.hgetall(self._k("call", cid))
                pipe.llen(self._k("events", cid))
                pipe.exists(self._k("summary", cid))
            res = await pipe.execute()
        out: list[CallRecord | None] = []
        for i, cid in enumerate(ids):
            h, n, has_summary = res[3 * i : 3 * i + 3]
            out.append(_record(cid, h, int(n), bool(has_summary)) if h else None)
        return out

    @_unavailable
    async def get_summary(self, call_id: str) -> dict[str, Any] | None:
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.exists(self._k("call", call_id))
            pipe.get(self._k("summary", call_id))
            exists, body = await pipe.execute()
        if not exists:
            raise CallNotFound(call_id)
        return None if body is None else dict(json.loads(body))

    @_unavailable
    async def deliveries(self, call_id: str) -> list[DeliveryAttempt]:
        await self._require(call_id)
        rows = await self._r.lrange(self._k("deliveries", call_id), 0, -1)
        return [DeliveryAttempt(*json.loads(r)) for r in rows]

    @_unavailable
    async def list_calls(self, flt: CallFilter) -> list[CallRecord]:
        lo = "-inf" if flt.since is None else repr(flt.since)
        hi = "+inf" if flt.until is None else f"({flt.until!r}"
        ids = _ids(await self._r.zrangebyscore(self._p + "calls", lo, hi))
        words = _words(flt.text or "")
        if words:
            texts = await self._r.mget([self._k("text", cid) for cid in ids]) if ids else []
            ids = [
                cid
                for cid, t in zip(ids, texts, strict=True)
                if t is not None and all(f" {w} " in t for w in words)
            ]
        records = [r for r in await self._records(ids) if r is not None and _matches(r, flt)]
        records.sort(key=lambda r: (-r.started_at, r.call_id))
        return records[flt.offset : flt.offset + flt.limit]


async def _add_webhook_index(store: RedisCallStore) -> None:
    """2: ``p webhook:{id}`` and ``p webhooks`` (durable webhook deliveries). A version-1
    store has no pending delivery to index (its deliveries were never resumable), so there
    is nothing to move: the keys appear with the first delivery queued."""


# version -> the step that brings a store from the version before it
_MIGRATIONS: dict[int, Callable[[RedisCallStore], Awaitable[None]]] = {2: _add_webhook_index}
assert sorted(_MIGRATIONS) == list(range(2, SCHEMA_VERSION + 1))


def _matches(r: CallRecord, flt: CallFilter) -> bool:
    return (
        (flt.rep_id is None or r.rep_id == flt.rep_id)
        and (flt.outcome is None or r.outcome == flt.outcome)
        and (flt.status is None or r.status == flt.status)
    )


def _record(call_id: str, h: dict[str, str], n: int, has_summary: bool) -> CallRecord:
    return CallRecord(
        call_id=call_id,
        source=h.get("source", "native"),
        rep_id=json.loads(h.get("rep_id", "null")),
        started_at=float(json.loads(h.get("started_at", "0"))),
        ended_at=json.loads(h.get("ended_at", "null")),
        status=h.get("status", "live"),  # type: ignore[arg-type]
        outcome=json.loads(h.get("outcome", "null")),
        event_count=n,
        has_summary=has_summary,
        prior=json.loads(h.get("prior", "{}")),
    )


def _ids(raw: Any) -> list[str]:
    return [str(x) for x in raw]


def _words(text: str) -> list[str]:
    """Lower-case words, split like SQLite FTS5's default tokenizer (letters and digits)."""
    return "".join(ch.lower() if ch.isalnum() else " " for ch in text).split()


def _j(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
