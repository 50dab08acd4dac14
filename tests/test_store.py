"""CallStore contract, run against both backends (SQLite file; a real redis-server)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.clock import ManualClock
from server.redis_store import RedisCallStore
from server.retention import retention
from server.sqlite_store import SqliteCallStore
from server.store import (
    CallFilter,
    CallMeta,
    CallNotFound,
    CallStore,
    DeliveryAttempt,
    StoreError,
)
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]


def final(speaker: str, n: int, text: str, start_s: float) -> dict[str, Any]:
    return {
        "type": "transcript",
        "utterance_id": f"{speaker}-{n}",
        "speaker": speaker,
        "is_final": True,
        "text": text,
        "start_s": start_s,
        "end_s": start_s + 2.0,
        "words": [],
    }


@pytest.fixture(params=["sqlite", "redis"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[CallStore, ManualClock]]:
    clock = ManualClock(1_800_000_000.0)
    s: CallStore
    if request.param == "sqlite":
        s = await SqliteCallStore.open(tmp_path, clock=clock)
    else:
        url = request.getfixturevalue("redis_url")
        s = await RedisCallStore.open(url, prefix=f"t{os.urandom(4).hex()}:", clock=clock)
    try:
        yield s, clock
    finally:
        await s.close()


async def test_append_returns_increasing_seq_and_events_round_trip(
    store: tuple[CallStore, ManualClock],
) -> None:
    """Appended events come back in order with seq 1, 2, ... and their exact JSON."""
    s, _ = store
    await s.open_call(CallMeta("c1", "native", rep_id="ana", started_at=100.0))
    evs = [final("customer", i, f"hello number {i}", float(i)) for i in range(5)]
    seqs = [await s.append("c1", e) for e in evs]
    assert seqs == [1, 2, 3, 4, 5]
    got = await s.events("c1")
    assert [g.pop("seq") for g in got] == seqs
    assert got == evs
    assert [e["seq"] for e in await s.events("c1", after_seq=3)] == [4, 5]


async def test_unknown_call_id_raises_call_not_found(store: tuple[CallStore, ManualClock]) -> None:
    """Every per-call operation on an unknown id raises CallNotFound naming the id."""
    s, _ = store
    with pytest.raises(CallNotFound, match="nope"):
        await s.append("nope", final("rep", 0, "x", 0.0))
    for op in (s.events, s.get_call, s.get_summary, s.delete_call, s.deliveries):
        with pytest.raises(CallNotFound):
            await op("nope")
    with pytest.raises(CallNotFound):
        await s.close_call("nope", "ended")
    with pytest.raises(CallNotFound):
        await s.put_summary("nope", {"outcome": "advanced"})


async def test_status_summary_and_outcome(store: tuple[CallStore, ManualClock]) -> None:
    """close_call sets status and ended_at; put_summary stores the summary and its outcome."""
    s, clock = store
    await s.open_call(CallMeta("c1", "twilio", rep_id="ana", started_at=clock.now() - 60))
    rec = await s.get_call("c1")
    assert (rec.status, rec.ended_at, rec.has_summary, rec.outcome) == ("live", None, False, None)
    assert await s.get_summary("c1") is None
    await s.append("c1", final("rep", 0, "hi", 0.0))
    await s.close_call("c1", "ended")
    await s.put_summary("c1", {"call_id": "c1", "outcome": "advanced", "overview": "ok"})
    rec = await s.get_call("c1")
    assert rec.status == "ended"
    assert rec.ended_at == clock.now()
    assert rec.outcome == "advanced"
    assert rec.has_summary and rec.event_count == 1 and rec.source == "twilio"
    assert await s.get_summary("c1") == {"call_id": "c1", "outcome": "advanced", "overview": "ok"}


async def test_list_calls_filters(store: tuple[CallStore, ManualClock]) -> None:
    """list_calls filters by time, rep, outcome, status and transcript words, newest first."""
    s, _ = store
    texts = {
        "a": "The price is too high for our budget",
        "b": "We need a proposal by Friday",
        "c": "Our budget is fine, send the proposal",
    }
    for i, (cid, text) in enumerate(texts.items()):
        await s.open_call(
            CallMeta(
                cid, "native", rep_id="ana" if cid != "b" else "bo", started_at=1000.0 + i * 100
            )
        )
        await s.append(cid, final("customer", 0, text, 0.0))
        await s.append(cid, {"type": "score", "score": 50, "delta": 0, "reasons": []})
    await s.close_call("a", "ended")
    await s.put_summary("a", {"outcome": "stalled"})

    async def ids(**kw: Any) -> list[str]:
        return [r.call_id for r in await s.list_calls(CallFilter(**kw))]

    assert await ids() == ["c", "b", "a"]
    assert await ids(since=1100.0) == ["c", "b"]
    assert await ids(until=1100.0) == ["a"]
    assert await ids(rep_id="ana") == ["c", "a"]
    assert await ids(outcome="stalled") == ["a"]
    assert await ids(status="live") == ["c", "b"]
    assert await ids(text="budget") == ["c", "a"]
    assert await ids(text="BUDGET proposal") == ["c"]
    assert await ids(text="friday") == ["b"]
    assert await ids(text="nothing-like-this") == []
    assert await ids(text='"quote" OR *') == []
    assert await ids(limit=1, offset=1) == ["b"]


async def test_delete_removes_call_and_everything_derived(
    store: tuple[CallStore, ManualClock],
) -> None:
    """delete_call removes events, summary, deliveries and the text index entries."""
    s, clock = store
    await s.open_call(CallMeta("c1", "native", started_at=clock.now()))
    await s.append("c1", final("customer", 0, "unique zebra words", 0.0))
    await s.put_summary("c1", {"outcome": "advanced"})
    await s.record_delivery(
        DeliveryAttempt("c1", "d1", "http://x", 1, clock.now(), "delivered", status_code=200)
    )
    assert len(await s.deliveries("c1")) == 1
    await s.delete_call("c1")
    with pytest.raises(CallNotFound):
        await s.get_call("c1")
    assert await s.list_calls(CallFilter(text="zebra")) == []
    # Recreating the id starts from scratch: nothing of the old call survives.
    await s.open_call(CallMeta("c1", "native", started_at=clock.now()))
    assert await s.events("c1") == []
    assert await s.get_summary("c1") is None
    assert await s.deliveries("c1") == []
    with pytest.raises(CallNotFound):
        await s.delete_call("other")


async def test_deliveries_recorded_in_order(store: tuple[CallStore, ManualClock]) -> None:
    """Delivery attempts come back in order; one for a deleted call is dropped silently."""
    s, clock = store
    await s.open_call(CallMeta("c1", "native", started_at=clock.now()))
    a1 = DeliveryAttempt("c1", "d1", "http://x", 1, 1.0, "retrying", status_code=500)
    a2 = DeliveryAttempt("c1", "d1", "http://x", 2, 2.0, "failed", error="timed out")
    await s.record_delivery(a1)
    await s.record_delivery(a2)
    assert await s.deliveries("c1") == [a1, a2]
    await s.record_delivery(DeliveryAttempt("gone", "d2", "http://x", 1, 3.0, "failed"))


async def test_purge_and_interrupted(store: tuple[CallStore, ManualClock]) -> None:
    """Purge deletes only old, non-live calls; start-up marks live calls interrupted."""
    s, clock = store
    day = 86_400.0
    await s.open_call(CallMeta("old", "native", started_at=clock.now() - 10 * day))
    await s.open_call(CallMeta("old-live", "native", started_at=clock.now() - 10 * day))
    await s.open_call(CallMeta("new", "native", started_at=clock.now() - 1 * day))
    await s.close_call("old", "ended")
    await s.close_call("new", "ended")
    assert await s.purge_older_than(7 * day) == ["old"]
    assert sorted(r.call_id for r in await s.list_calls(CallFilter())) == ["new", "old-live"]
    assert await s.mark_live_calls_interrupted() == ["old-live"]
    assert (await s.get_call("old-live")).status == "interrupted"
    assert await s.mark_live_calls_interrupted() == []
    with pytest.raises(ValueError):
        await s.purge_older_than(0)


class ManualSleep:
    """An injectable sleep that returns only when the test calls ``wake``; each interval
    asked for is put on ``asked`` (so the test knows a purge pass has finished)."""

    def __init__(self) -> None:
        self.asked: asyncio.Queue[float] = asyncio.Queue()
        self._go: asyncio.Queue[None] = asyncio.Queue()

    async def __call__(self, seconds: float) -> None:
        self.asked.put_nowait(seconds)
        await self._go.get()

    def wake(self) -> None:
        self._go.put_nowait(None)


async def ids(s: CallStore) -> list[str]:
    return sorted(r.call_id for r in await s.list_calls(CallFilter()))


async def test_retention_purges_at_start_then_every_period(
    store: tuple[CallStore, ManualClock], caplog: pytest.LogCaptureFixture
) -> None:
    """The retention task purges at once, then once per period as calls age; it never touches
    a live call, logs what it removed, and is cancelled when its scope closes."""
    s, clock = store
    day = 86_400.0
    for call_id, age_days in [("old", 10), ("new", 1), ("live-old", 10)]:
        await s.open_call(CallMeta(call_id, "native", started_at=clock.now() - age_days * day))
    await s.close_call("old", "ended")
    await s.close_call("new", "interrupted")
    sleep = ManualSleep()
    caplog.set_level("INFO", logger="cuecard.retention")
    async with retention(s, 7 * day, every_s=3600.0, sleep=sleep) as task:
        assert task is not None
        assert await asyncio.wait_for(sleep.asked.get(), 10) == 3600.0
        assert await ids(s) == ["live-old", "new"]
        assert "removed 1 call(s) older than 7 days: old" in caplog.text
        clock.advance(7 * day)
        sleep.wake()
        assert await asyncio.wait_for(sleep.asked.get(), 10) == 3600.0
        assert await ids(s) == ["live-old"]
        sleep.wake()
        await asyncio.wait_for(sleep.asked.get(), 10)
        assert "removed 0 call(s)" in caplog.text
    assert task.cancelled()


async def test_retention_off_and_bad_arguments(tmp_path: Path) -> None:
    """Without a maximum age there is no task; a non-positive age or period is refused."""
    s = await SqliteCallStore.open(tmp_path)
    try:
        async with retention(s, None) as task:
            assert task is None
        for age, every in [(0.0, 3600.0), (86_400.0, 0.0)]:
            with pytest.raises(ValueError):
                async with retention(s, age, every_s=every):
                    pass
    finally:
        await s.close()


async def test_retention_survives_a_failing_pass(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A pass that fails (here: the store is gone) is logged and retried next period."""
    s = await SqliteCallStore.open(tmp_path)
    await s.close()
    sleep = ManualSleep()
    async with retention(s, 86_400.0, every_s=60.0, sleep=sleep) as task:
        for _ in range(2):
            assert await asyncio.wait_for(sleep.asked.get(), 10) == 60.0
            sleep.wake()
        assert task is not None and not task.done()
    assert caplog.text.count("retention: purge failed, retrying in 60 s") == 2


async def test_reopen_keeps_events(store: tuple[CallStore, ManualClock]) -> None:
    """Reopening a call (reconnecting stream) sets it live again and keeps its events."""
    s, _ = store
    await s.open_call(CallMeta("c1", "native", rep_id="ana", started_at=5.0))
    await s.append("c1", final("rep", 0, "one", 0.0))
    await s.close_call("c1", "interrupted")
    await s.open_call(CallMeta("c1", "native", rep_id="ana", started_at=5.0))
    assert await s.append("c1", final("rep", 1, "two", 1.0)) == 2
    rec = await s.get_call("c1")
    assert rec.status == "live" and rec.ended_at is None and rec.started_at == 5.0


async def test_concurrent_appends_get_distinct_seqs(store: tuple[CallStore, ManualClock]) -> None:
    """Appends racing on one call each get a distinct seq and none is lost."""
    s, _ = store
    await s.open_call(CallMeta("c1", "native"))
    seqs = await asyncio.gather(*(s.append("c1", final("rep", i, "x", 0.0)) for i in range(40)))
    assert sorted(seqs) == list(range(1, 41))
    assert len(await s.events("c1")) == 40


async def test_ping_answers_while_the_backend_does(store: tuple[CallStore, ManualClock]) -> None:
    s, _ = store
    await s.ping()


async def test_sqlite_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    """A file that is not a database fails to open with StoreError naming the file."""
    bad = tmp_path / "calls.sqlite3"
    bad.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError, match=r"calls\.sqlite3"):
        await SqliteCallStore.open(tmp_path)
    assert bad.read_bytes().startswith(b"this is not")  # left in place for the operator


async def test_redis_unreachable_is_a_clear_error() -> None:
    """A Redis URL with nothing listening fails to open with StoreError naming the URL."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(StoreError, match=r"127\.0\.0\.1"):
        await RedisCallStore.open(url)


_APPENDER = textwrap.dedent(
    """
    import asyncio, sys
    from server.sqlite_store import SqliteCallStore
    from server.store import CallMeta

    async def main() -> None:
        store = await SqliteCallStore.open(sys.argv[1])
        await store.open_call(CallMeta("crash", "native", started_at=1.0))
        i = 0
        while True:
            ev = {"type": "transcript", "utterance_id": f"rep-{i}", "speaker": "rep",
                  "is_final": True, "text": f"segment {i}", "start_s": i, "end_s": i + 1}
            seq = await store.append("crash", ev)
            print(seq, flush=True)  # a viewer "sees" the segment only after append returned
            i += 1

    asyncio.run(main())
    """
)


async def test_sigkill_mid_call_loses_no_acknowledged_segment(tmp_path: Path) -> None:
    """Every segment acknowledged before a SIGKILL is in the store after restart; the call is
    marked interrupted."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _APPENDER,
        str(tmp_path),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    seen: list[int] = []
    while len(seen) < 60:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        assert line, "appender exited early"
        seen.append(int(line))
    os.kill(proc.pid, signal.SIGKILL)
    await proc.wait()
    assert proc.returncode == -signal.SIGKILL

    store = await SqliteCallStore.open(tmp_path)
    try:
        assert await store.mark_live_calls_interrupted() == ["crash"]
        stored = {e["seq"]: e["text"] for e in await store.events("crash")}
        for seq in seen:
            assert stored[seq] == f"segment {seq - 1}"
        assert (await store.get_call("crash")).status == "interrupted"
    finally:
        await store.close()


async def test_redis_restart_marks_only_its_own_and_dead_instances_calls(redis_url: str) -> None:
    """Instances share one Redis: B restarting marks B's live calls and those of an instance
    whose heartbeat expired (C), never those of A, which is still running."""
    prefix = f"t{os.urandom(4).hex()}:"

    async def instance(name: str, ttl_s: float = 30.0) -> RedisCallStore:
        return await RedisCallStore.open(
            redis_url, prefix=prefix, instance_id=name, heartbeat_ttl_s=ttl_s
        )

    a, b, c = await instance("a"), await instance("b"), await instance("c", ttl_s=0.2)
    for store, call_id in ((a, "a-live"), (b, "b-live"), (c, "c-live")):
        await store.open_call(CallMeta(call_id, "native", started_at=1.0))
    await b.close()  # B is killed; C dies too and its heartbeat runs out
    await c.close()
    await asyncio.sleep(0.4)
    b = await instance("b")
    try:
        assert await b.mark_live_calls_interrupted() == ["b-live", "c-live"]
        assert (await a.get_call("a-live")).status == "live"
    finally:
        await a.close()
        await b.close()


async def test_running_instances_reap_only_dead_instances_calls_once_each(
    redis_url: str,
) -> None:
    """While running, A and B both reap at once: the dead instance C's live calls are marked
    ``interrupted`` by exactly one of them each, A's and B's own live calls never."""
    prefix = f"t{os.urandom(4).hex()}:"

    async def instance(name: str, ttl_s: float = 30.0) -> RedisCallStore:
        return await RedisCallStore.open(
            redis_url, prefix=prefix, instance_id=name, heartbeat_ttl_s=ttl_s
        )

    a, b, c = await instance("a"), await instance("b"), await instance("c", ttl_s=0.2)
    dead = [f"c-live-{n}" for n in range(20)]
    for store, call_id in ((a, "a-live"), (b, "b-live"), *((c, cid) for cid in dead)):
        await store.open_call(CallMeta(call_id, "native", started_at=1.0))
    await c.open_call(CallMeta("c-ended", "native", started_at=1.0))
    await c.close_call("c-ended", "ended")
    await c.close()  # C dies; its heartbeat runs out
    await asyncio.sleep(0.4)
    try:
        first = await asyncio.gather(
            a.mark_orphaned_calls_interrupted(), b.mark_orphaned_calls_interrupted()
        )
        assert first == [[], []]  # a beat gone once is only suspected (it may come back)
        by_a, by_b = await asyncio.gather(
            a.mark_orphaned_calls_interrupted(), b.mark_orphaned_calls_interrupted()
        )
        assert sorted(by_a + by_b) == sorted(dead)  # every one, and none twice
        assert not set(by_a) & set(by_b)
        for call_id, status in (("a-live", "live"), ("b-live", "live"), ("c-ended", "ended")):
            assert (await a.get_call(call_id)).status == status
        assert await a.mark_orphaned_calls_interrupted() == []
    finally:
        await a.close()
        await b.close()


async def test_the_database_and_its_folder_are_private(tmp_path: Path) -> None:
    """Only the service user may read what customers said: the folder the store creates is
    0700 and the database file (whose mode SQLite gives its -wal/-shm files) 0600."""
    from server.sqlite_store import SqliteCallStore

    folder = tmp_path / "data"
    store = await SqliteCallStore.open(folder / "calls.sqlite3")
    try:
        await store.open_call(CallMeta("c-1", "native", None, 0.0))
    finally:
        await store.close()
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / "calls.sqlite3").stat().st_mode & 0o777 == 0o600


def _old_database(path: Path, version: int) -> None:
    """A database as Cuecard wrote it before ``version`` + 1: the schema of the migrations up
    to ``version`` (0: the unversioned schema, i.e. migration 1's tables without the mark),
    with one call and one event in it."""
    import sqlite3

    from server.sqlite_store import _MIGRATIONS

    conn = sqlite3.connect(path, isolation_level=None)
    for statements in _MIGRATIONS[: max(version, 1)]:
        for sql in statements:
            conn.execute(sql)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.execute(
        "INSERT INTO calls(call_id, source, started_at, status) VALUES ('old', 'native', 1, 'ended')"
    )
    conn.execute(
        "INSERT INTO events(call_id, seq, type, body) VALUES ('old', 1, 'score', ?)",
        ('{"type":"score","score":50}',),
    )
    conn.close()


@pytest.mark.parametrize("version", [0, 1])
async def test_sqlite_old_schema_is_migrated(tmp_path: Path, version: int) -> None:
    """A database from before versioning (0) or at version 1 is brought to the latest
    version on open, keeping its calls; the new tables work."""
    import sqlite3

    from server.sqlite_store import SCHEMA_VERSION

    db = tmp_path / "calls.sqlite3"
    _old_database(db, version)
    store = await SqliteCallStore.open(tmp_path)
    try:
        assert [e["score"] for e in await store.events("old")] == [50]
        await store.queue_delivery("old", "d1", {"summary": {}}, ["http://x"], 2.0)
        assert [d.delivery_id for d in await store.pending_deliveries()] == ["d1"]
    finally:
        await store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    conn.close()


async def test_sqlite_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database a newer Cuecard wrote is refused with StoreError naming the file and both
    versions, and left as it was."""
    import sqlite3

    db = tmp_path / "calls.sqlite3"
    _old_database(db, 2)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    with pytest.raises(StoreError, match=r"calls\.sqlite3 is at schema version 7, newer .* 2"):
        await SqliteCallStore.open(tmp_path)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 7
    conn.close()


async def test_redis_schema_version_key(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A new Redis prefix gets the latest version; one holding calls but no version key (from
    before versioning) or version 1 is migrated; a newer version is refused naming both."""
    import redis.asyncio as aioredis

    from server.redis_store import SCHEMA_VERSION

    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        fresh, unversioned, v1, newer = (f"t{os.urandom(4).hex()}:" for _ in range(4))
        await r.zadd(unversioned + "calls", {"old": 1.0})
        await r.set(v1 + "schema", "1")
        await r.set(newer + "schema", "9")
        caplog.set_level("INFO", logger="server.redis_store")
        for prefix, migrated in ((fresh, False), (unversioned, True), (v1, True)):
            caplog.clear()
            store = await RedisCallStore.open(redis_url, prefix=prefix)
            await store.close()
            assert await r.get(prefix + "schema") == str(SCHEMA_VERSION) == "2"
            assert ("migrated to schema version 2" in caplog.text) is migrated
        with pytest.raises(StoreError, match=r"schema version 9, newer than this Cuecard's 2"):
            await RedisCallStore.open(redis_url, prefix=newer)
        assert await r.get(newer + "schema") == "9"
    finally:
        await r.aclose()


async def test_queued_deliveries_are_pending_until_final(
    store: tuple[CallStore, ManualClock],
) -> None:
    """A queued delivery is pending per URL (attempt 0) with its payload, still pending while
    retrying, and no longer once delivered or failed; the latest payload is kept; deleting
    the call removes it all."""
    s, _ = store
    await s.open_call(CallMeta("c1", "native", started_at=1.0))
    payload = {"call_status": "ended", "summary": {"outcome": "advanced"}}
    await s.queue_delivery("c1", "d1", payload, ["http://a", "http://b"], 10.0)
    pending = await s.pending_deliveries()
    assert [(p.url, p.attempts, p.payload) for p in pending] == [
        ("http://a", 0, payload), ("http://b", 0, payload)]  # fmt: skip
    await s.record_delivery(DeliveryAttempt("c1", "d1", "http://a", 1, 11.0, "retrying"))
    await s.record_delivery(DeliveryAttempt("c1", "d1", "http://b", 1, 11.0, "delivered"))
    [p] = await s.pending_deliveries()
    assert (p.call_id, p.delivery_id, p.url, p.attempts, p.last_at) == (
        "c1",
        "d1",
        "http://a",
        1,
        11.0,
    )
    await s.record_delivery(DeliveryAttempt("c1", "d1", "http://a", 2, 12.0, "failed"))
    assert await s.pending_deliveries() == []
    assert await s.delivery_payload("c1") == ("d1", payload)
    with pytest.raises(CallNotFound):
        await s.queue_delivery("nope", "d2", payload, ["http://a"], 1.0)
    await s.queue_delivery("c1", "d1", payload, ["http://b"], 13.0)  # a redelivery
    assert [p.url for p in await s.pending_deliveries()] == ["http://b"]
    await s.delete_call("c1")
    assert await s.pending_deliveries() == []


async def test_an_instance_whose_beat_lapsed_and_came_back_is_not_reaped(redis_url: str) -> None:
    """A beat that lapsed (a Redis outage longer than the TTL) and is back by the next pass
    leaves the instance's live calls alone."""
    prefix = f"t{os.urandom(4).hex()}:"
    a = await RedisCallStore.open(redis_url, prefix=prefix, instance_id="a")
    b = await RedisCallStore.open(redis_url, prefix=prefix, instance_id="b")
    try:
        await b.open_call(CallMeta("b-live", "native", started_at=1.0))
        await a._r.delete(prefix + "instance:b")  # b's beat lapsed
        assert await a.mark_orphaned_calls_interrupted() == []
        await b._beat()  # b reaches Redis again
        assert await a.mark_orphaned_calls_interrupted() == []
        assert (await a.get_call("b-live")).status == "live"
        await a._r.delete(prefix + "instance:b")  # gone for two passes: dead
        assert await a.mark_orphaned_calls_interrupted() == []
        assert await a.mark_orphaned_calls_interrupted() == ["b-live"]
    finally:
        await a.close()
        await b.close()
