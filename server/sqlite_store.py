"""The embedded ``CallStore``: one SQLite file in WAL mode with ``synchronous=FULL``.

Durability: every ``append`` is its own committed transaction, and with ``synchronous=FULL``
the WAL is fsynced before the commit returns, so a SIGKILL (or power loss) after ``append``
returned cannot lose the row. A killed server leaves its calls ``live``; the next start-up
calls ``mark_live_calls_interrupted``.

Threading: one connection, owned by one worker thread (a single-thread executor); every
blocking call runs there, so the event loop never blocks and SQLite sees a single writer.
Other processes (``cuecard calls``) may read the same file concurrently (WAL readers).

Schema: ``PRAGMA user_version`` counts the migrations applied (``_MIGRATIONS``, oldest first).
``open`` creates a new file at ``SCHEMA_VERSION``, brings an older one up in one transaction,
and refuses (``StoreError`` naming the file and both versions) a file a newer Cuecard wrote.

Text search uses an FTS5 index over final transcript text (external content, kept in step
by triggers); when the SQLite build lacks FTS5 it falls back to ``LIKE``.

(Over STYLE's 400 lines: one backend of the whole ``CallStore`` protocol, its schema history
and the queries on it kept in one file.)
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

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

T = TypeVar("T")

DB_FILENAME = "calls.sqlite3"

# The schema's history, oldest first: migration i brings a database from version i to i + 1
# (``PRAGMA user_version``). A new database runs them all; an older one the ones it lacks, in
# one transaction. Never edit a shipped migration: append one.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the schema as it was before versioning (such files say 0; every statement is
    # IF NOT EXISTS, so on them this only sets the version)
    (
        """CREATE TABLE IF NOT EXISTS calls (
            call_id TEXT PRIMARY KEY,
            source TEXT NOT NULL,
            rep_id TEXT,
            started_at REAL NOT NULL,
            ended_at REAL,
            status TEXT NOT NULL,
            outcome TEXT,
            prior TEXT NOT NULL DEFAULT '{}',
            summary TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS calls_started ON calls(started_at)",
        """CREATE TABLE IF NOT EXISTS events (
            id INTEGER PRIMARY KEY,
            call_id TEXT NOT NULL REFERENCES calls(call_id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            type TEXT NOT NULL,
            speaker TEXT,
            start_s REAL,
            end_s REAL,
            text TEXT,
            body TEXT NOT NULL,
            UNIQUE (call_id, seq)
        )""",
        """CREATE TABLE IF NOT EXISTS deliveries (
            id INTEGER PRIMARY KEY,
            call_id TEXT NOT NULL REFERENCES calls(call_id) ON DELETE CASCADE,
            delivery_id TEXT NOT NULL,
            url TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            at REAL NOT NULL,
            outcome TEXT NOT NULL,
            status_code INTEGER,
            error TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS deliveries_call ON deliveries(call_id)",
    ),
    # 2: what a webhook delivery sends, kept with it so a restart can re-send it unchanged
    (
        """CREATE TABLE webhook_payloads (
            call_id TEXT NOT NULL REFERENCES calls(call_id) ON DELETE CASCADE,
            delivery_id TEXT NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (call_id, delivery_id)
        )""",
        "CREATE INDEX deliveries_outcome ON deliveries(outcome)",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

_FTS_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS events_fts
    USING fts5(text, content='events', content_rowid='id');
CREATE TRIGGER IF NOT EXISTS events_ai AFTER INSERT ON events WHEN new.text IS NOT NULL BEGIN
    INSERT INTO events_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS events_ad AFTER DELETE ON events WHEN old.text IS NOT NULL BEGIN
    INSERT INTO events_fts(events_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
"""

_CALL_COLUMNS = (
    "c.call_id, c.source, c.rep_id, c.started_at, c.ended_at, c.status, c.outcome, c.prior, "
    "c.summary IS NOT NULL, (SELECT COUNT(*) FROM events e WHERE e.call_id = c.call_id)"
)


class SqliteCallStore:
    """``CallStore`` on one SQLite file. Create with ``await SqliteCallStore.open(path)``."""

    def __init__(self, path: Path, *, clock: Clock | None = None) -> None:
        self.path = path
        self._clock = clock or SystemClock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cuecard-sqlite")
        self._conn: sqlite3.Connection | None = None
        self.has_fts = False

    @classmethod
    async def open(cls, path: Path | str, *, clock: Clock | None = None) -> SqliteCallStore:
        """Open (creating if needed) the database at ``path``; a directory gets ``calls.sqlite3``
        inside. Raises ``StoreError`` naming the file if it is not a usable database."""
        store = cls(Path(path), clock=clock)
        try:
            await store._run(store._connect)
        except BaseException:
            store._executor.shutdown(wait=False)
            raise
        return store

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:  # disk full, I/O error, locked past busy_timeout: a 503
            raise StoreError(f"call database {self.path}: {exc}") from exc

    def _connect(self) -> None:
        self.path = self.path.expanduser()
        if self.path.is_dir() or self.path.suffix == "":
            self.path = self.path / DB_FILENAME
        try:
            # private to the service user: the calls (and SQLite's -wal/-shm files, which
            # take the database file's mode) hold what customers said
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            conn = sqlite3.connect(self.path, isolation_level=None)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StoreError(f"cannot open call database {self.path}: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            _migrate(conn, self.path)
            try:
                conn.executescript(_FTS_SCHEMA)
                self.has_fts = True
            except sqlite3.OperationalError:
                self.has_fts = False
            conn.execute("PRAGMA quick_check").fetchone()
        except BaseException as exc:
            conn.close()
            if not isinstance(exc, sqlite3.DatabaseError | OSError):
                raise
            raise StoreError(
                f"cannot open call database {self.path}: {exc} "
                "(move the file aside to start with an empty store)"
            ) from exc
        self._conn = conn

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the store is closed")
        return self._conn

    async def ping(self) -> None:
        try:
            await self._run(lambda: self._db.execute("SELECT 1").fetchone())
        except sqlite3.Error as exc:
            raise StoreError(f"call database {self.path}: {exc}") from exc

    async def close(self) -> None:
        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await self._run(_close)
        self._executor.shutdown(wait=True)

    # -- writing ----------------------------------------------------------------------------

    async def open_call(self, meta: CallMeta) -> None:
        def _open() -> None:
            with self._db:
                self._db.execute(
                    "INSERT INTO calls(call_id, source, rep_id, started_at, status, prior) "
                    "VALUES (?, ?, ?, ?, 'live', ?) "
                    "ON CONFLICT(call_id) DO UPDATE SET status='live', ended_at=NULL",
                    (meta.call_id, meta.source, meta.rep_id, meta.started_at, _dumps(meta.prior)),
                )

        await self._run(_open)

    async def append(self, call_id: str, event: dict[str, Any]) -> int:
        def _append() -> int:
            db = self._db
            with db:
                row = db.execute(
                    "SELECT (SELECT COALESCE(MAX(seq), 0) FROM events WHERE call_id = ?) "
                    "FROM calls WHERE call_id = ?",
                    (call_id, call_id),
                ).fetchone()
                if row is None:
                    raise CallNotFound(call_id)
                seq = int(row[0]) + 1
                db.execute(
                    "INSERT INTO events(call_id, seq, type, speaker, start_s, end_s, text, body) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (call_id, seq, *_columns(event), _dumps(event)),
                )
            return seq

        return await self._run(_append)

    async def close_call(self, call_id: str, status: CallStatus) -> None:
        now = self._clock.now()

        def _close_call() -> None:
            with self._db:
                cur = self._db.execute(
                    "UPDATE calls SET status = ?, ended_at = ? WHERE call_id = ?",
                    (status, now, call_id),
                )
                if cur.rowcount == 0:
                    raise CallNotFound(call_id)

        await self._run(_close_call)

    async def put_summary(self, call_id: str, summary: dict[str, Any]) -> None:
        outcome = summary.get("outcome")

        def _put() -> None:
            with self._db:
                cur = self._db.execute(
                    "UPDATE calls SET summary = ?, outcome = ? WHERE call_id = ?",
                    (_dumps(summary), outcome if isinstance(outcome, str) else None, call_id),
                )
                if cur.rowcount == 0:
                    raise CallNotFound(call_id)

        await self._run(_put)

    async def record_delivery(self, attempt: DeliveryAttempt) -> None:
        a = attempt
        row = [a.call_id, a.delivery_id, a.url, a.attempt, a.at, a.outcome, a.status_code, a.error]

        def _record() -> None:
            with self._db:
                self._db.execute(
                    "INSERT INTO deliveries(call_id, delivery_id, url, attempt, at, outcome, "
                    "status_code, error) SELECT ?, ?, ?, ?, ?, ?, ?, ? "
                    "WHERE EXISTS (SELECT 1 FROM calls WHERE call_id = ?)",
                    [*row, a.call_id],
                )

        await self._run(_record)

    async def queue_delivery(
        self, call_id: str, delivery_id: str, payload: dict[str, Any], urls: list[str], at: float
    ) -> None:
        def _queue() -> None:
            with self._db:
                self._require(call_id)
                self._db.execute(
                    "INSERT OR REPLACE INTO webhook_payloads(call_id, delivery_id, body) "
                    "VALUES (?, ?, ?)",
                    (call_id, delivery_id, _dumps(payload)),
                )
                self._db.executemany(
                    "INSERT INTO deliveries(call_id, delivery_id, url, attempt, at, outcome) "
                    "VALUES (?, ?, ?, 0, ?, 'pending')",
                    [(call_id, delivery_id, url, at) for url in urls],
                )

        await self._run(_queue)

    async def delivery_payload(self, call_id: str) -> tuple[str, dict[str, Any]] | None:
        def _get() -> tuple[str, dict[str, Any]] | None:
            self._require(call_id)
            row = self._db.execute(
                "SELECT p.delivery_id, p.body FROM webhook_payloads p JOIN deliveries d "
                "ON d.call_id = p.call_id AND d.delivery_id = p.delivery_id "
                "WHERE p.call_id = ? ORDER BY d.id DESC LIMIT 1",
                (call_id,),
            ).fetchone()
            return None if row is None else (row[0], dict(json.loads(row[1])))

        return await self._run(_get)

    async def pending_deliveries(self) -> list[PendingDelivery]:
        def _pending() -> list[PendingDelivery]:
            rows = self._db.execute(
                "SELECT d.call_id, d.delivery_id, d.url, p.body, d.attempt, d.at "
                "FROM deliveries d JOIN webhook_payloads p "
                "ON p.call_id = d.call_id AND p.delivery_id = d.delivery_id "
                "WHERE d.outcome IN ('pending', 'retrying') AND NOT EXISTS ("
                "  SELECT 1 FROM deliveries l WHERE l.call_id = d.call_id "
                "  AND l.delivery_id = d.delivery_id AND l.url = d.url AND l.id > d.id) "
                "ORDER BY d.id"
            ).fetchall()
            return [
                PendingDelivery(cid, did, url, dict(json.loads(body)), int(n), float(at))
                for cid, did, url, body, n, at in rows
            ]

        return await self._run(_pending)

    async def delete_call(self, call_id: str) -> None:
        def _delete() -> None:
            with self._db:
                if self._delete_calls([call_id]) == 0:
                    raise CallNotFound(call_id)

        await self._run(_delete)

    def _delete_calls(self, call_ids: list[str]) -> int:
        # Explicit deletes (not only the cascade) so the FTS delete trigger fires per row.
        db = self._db
        n = 0
        for call_id in call_ids:
            db.execute("DELETE FROM events WHERE call_id = ?", (call_id,))
            db.execute("DELETE FROM deliveries WHERE call_id = ?", (call_id,))
            db.execute("DELETE FROM webhook_payloads WHERE call_id = ?", (call_id,))
            n += db.execute("DELETE FROM calls WHERE call_id = ?", (call_id,)).rowcount
        return n

    async def purge_older_than(self, max_age_s: float) -> list[str]:
        if max_age_s <= 0:
            raise ValueError(f"max_age_s must be > 0, got {max_age_s}")
        cutoff = self._clock.now() - max_age_s

        def _purge() -> list[str]:
            with self._db:
                ids = [
                    r[0]
                    for r in self._db.execute(
                        "SELECT call_id FROM calls WHERE started_at < ? AND status != 'live'",
                        (cutoff,),
                    )
                ]
                self._delete_calls(ids)
            return ids

        return await self._run(_purge)

    async def mark_live_calls_interrupted(self) -> list[str]:
        now = self._clock.now()

        def _mark() -> list[str]:
            with self._db:
                ids = [
                    r[0]
                    for r in self._db.execute(
                        "SELECT call_id FROM calls WHERE status='live' ORDER BY call_id"
                    )
                ]
                self._db.execute(
                    "UPDATE calls SET status='interrupted', ended_at=? WHERE status='live'", (now,)
                )
            return ids

        return await self._run(_mark)

    async def mark_orphaned_calls_interrupted(self) -> list[str]:
        return []  # one process owns the file: there is no other instance whose calls to mark

    # -- reading ----------------------------------------------------------------------------

    async def events(self, call_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        def _events() -> list[dict[str, Any]]:
            self._require(call_id)
            rows = self._db.execute(
                "SELECT seq, body FROM events WHERE call_id = ? AND seq > ? ORDER BY seq",
                (call_id, after_seq),
            ).fetchall()
            return [{**json.loads(body), "seq": seq} for seq, body in rows]

        return await self._run(_events)

    def _require(self, call_id: str) -> None:
        if self._db.execute("SELECT 1 FROM calls WHERE call_id = ?", (call_id,)).fetchone() is None:
            raise CallNotFound(call_id)

    async def get_call(self, call_id: str) -> CallRecord:
        def _get() -> CallRecord:
            row = self._db.execute(
                f"SELECT {_CALL_COLUMNS} FROM calls c WHERE c.call_id = ?", (call_id,)
            ).fetchone()
            if row is None:
                raise CallNotFound(call_id)
            return _record(row)

        return await self._run(_get)

    async def get_summary(self, call_id: str) -> dict[str, Any] | None:
        def _get() -> dict[str, Any] | None:
            row = self._db.execute(
                "SELECT summary FROM calls WHERE call_id = ?", (call_id,)
            ).fetchone()
            if row is None:
                raise CallNotFound(call_id)
            return None if row[0] is None else dict(json.loads(row[0]))

        return await self._run(_get)

    async def deliveries(self, call_id: str) -> list[DeliveryAttempt]:
        def _get() -> list[DeliveryAttempt]:
            self._require(call_id)
            rows = self._db.execute(
                "SELECT call_id, delivery_id, url, attempt, at, outcome, status_code, error "
                "FROM deliveries WHERE call_id = ? ORDER BY id",
                (call_id,),
            ).fetchall()
            return [DeliveryAttempt(*r) for r in rows]

        return await self._run(_get)

    async def list_calls(self, flt: CallFilter) -> list[CallRecord]:
        where, params = self._where(flt)
        sql = (
            f"SELECT {_CALL_COLUMNS} FROM calls c {where} "
            "ORDER BY c.started_at DESC, c.call_id LIMIT ? OFFSET ?"
        )

        def _list() -> list[CallRecord]:
            rows = self._db.execute(sql, [*params, flt.limit, flt.offset]).fetchall()
            return [_record(r) for r in rows]

        return await self._run(_list)

    def _where(self, flt: CallFilter) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, op, value in (
            ("started_at", ">=", flt.since),
            ("started_at", "<", flt.until),
            ("rep_id", "=", flt.rep_id),
            ("outcome", "=", flt.outcome),
            ("status", "=", flt.status),
        ):
            if value is not None:
                clauses.append(f"c.{column} {op} ?")
                params.append(value)
        for word in _words(flt.text or ""):
            if self.has_fts:
                clauses.append(
                    "c.call_id IN (SELECT e.call_id FROM events_fts f JOIN events e "
                    "ON e.id = f.rowid WHERE events_fts MATCH ?)"
                )
                params.append('"' + word.replace('"', '""') + '"')
            else:
                clauses.append(
                    "c.call_id IN (SELECT call_id FROM events WHERE text LIKE ? ESCAPE '\\')"
                )
                escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                params.append(f"%{escaped}%")
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the database to ``SCHEMA_VERSION`` in one transaction (others wait: ``BEGIN
    IMMEDIATE``); refuse one written by a newer Cuecard."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"call database {path} is at schema version {version}, newer than this "
                f"Cuecard's {SCHEMA_VERSION}: run the Cuecard that wrote it, or a newer one"
            )
        for statements in _MIGRATIONS[version:]:
            for sql in statements:
                conn.execute(sql)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _words(text: str) -> list[str]:
    """Words as FTS5's default tokenizer splits them (letters and digits)."""
    return "".join(ch if ch.isalnum() else " " for ch in text).split()


def _columns(event: dict[str, Any]) -> tuple[Any, ...]:
    kind = str(event.get("type", "unknown"))
    text = event.get("text") if kind == "transcript" and event.get("is_final", True) else None
    return (
        kind,
        event.get("speaker"),
        event.get("start_s"),
        event.get("end_s"),
        text if isinstance(text, str) else None,
    )


def _record(row: tuple[Any, ...]) -> CallRecord:
    call_id, source, rep_id, started_at, ended_at, status, outcome, prior, has_sum, n = row
    return CallRecord(
        call_id=call_id,
        source=source,
        rep_id=rep_id,
        started_at=float(started_at),
        ended_at=None if ended_at is None else float(ended_at),
        status=status,
        outcome=outcome,
        event_count=int(n),
        has_summary=bool(has_sum),
        prior=json.loads(prior),
    )


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
