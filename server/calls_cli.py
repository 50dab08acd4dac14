"""``cuecard calls``, ``cuecard summary CALL_ID`` and ``cuecard card-stats``: read the call
store directly.

They open the same store the server uses, from the same variables (SQLite in ``--data-dir``,
default ``$CUECARD_DATA_DIR`` or the server's default data directory; or Redis with
``--redis-url``, default ``$CUECARD_STORE`` when that is a redis:// URL), so they work whether
or not the server is running (SQLite in WAL mode lets them read while the server writes). Exit status: 0 on success, 2 for an unknown call id
or a live call without a summary, 1 when the store cannot be opened.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from guidance.summary import BuiltinSummarizer
from guidance.summary_markdown import render_markdown
from server.api import SummaryNotReady, summary_of
from server.card_stats import card_stats
from server.settings import default_data_dir, is_redis_url, require_extra
from server.store import CALL_STATUSES, CallFilter, CallNotFound, CallStore, StoreError
from server.wire import to_wire


def register(subparsers: Any) -> None:
    """Add ``calls`` and ``summary`` to the CLI's subparsers (``argparse`` sub-commands)."""
    calls = subparsers.add_parser("calls", help="list stored calls, newest first")
    _store_args(calls)
    calls.add_argument("--since", type=_when, help="started at or after (ISO 8601 date/time)")
    calls.add_argument("--until", type=_when, help="started before (ISO 8601 date/time)")
    calls.add_argument("--rep", help="rep id")
    calls.add_argument("--outcome", choices=["advanced", "stalled", "no_decision"])
    calls.add_argument("--status", choices=CALL_STATUSES)
    calls.add_argument("-q", "--query", help="words that must occur in the transcript")
    calls.add_argument("--limit", type=int, default=50)
    calls.add_argument("--json", action="store_true", help="one JSON object per line")
    calls.set_defaults(func=run_calls)

    summary = subparsers.add_parser("summary", help="print a call's summary")
    _store_args(summary)
    summary.add_argument("call_id")
    summary.add_argument("--format", choices=["markdown", "json"], default="markdown")
    summary.set_defaults(func=run_summary)

    stats = subparsers.add_parser(
        "card-stats", help="per card kind: shown, used, dismissed, no action, dismiss rate"
    )
    _store_args(stats)
    stats.add_argument("--since", type=_when, help="calls started at or after (ISO 8601)")
    stats.add_argument("--until", type=_when, help="calls started before (ISO 8601)")
    stats.add_argument("--rep", help="rep id")
    stats.add_argument("--json", action="store_true", help="one JSON object")
    stats.set_defaults(func=run_card_stats)


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("CUECARD_DATA_DIR") or default_data_dir()).expanduser(),
        help="directory of calls.sqlite3 (default: $CUECARD_DATA_DIR or %(default)s)",
    )
    store = os.environ.get("CUECARD_STORE", "")
    p.add_argument(
        "--redis-url",
        default=store if is_redis_url(store) else None,
        help="read from Redis instead of SQLite (default: $CUECARD_STORE when it is redis://…)",
    )


def _when(text: str) -> float:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date/time: {text!r}") from None


async def open_store(args: argparse.Namespace) -> CallStore:
    """The store named by ``--redis-url`` or ``--data-dir``."""
    if args.redis_url:
        require_extra("--redis-url", "redis", "redis")
        from server.redis_store import RedisCallStore

        return await RedisCallStore.open(args.redis_url)
    from server.sqlite_store import DB_FILENAME, SqliteCallStore

    if not (Path(args.data_dir) / DB_FILENAME).exists():
        raise StoreError(f"no call database in {args.data_dir} (set --data-dir)")
    return await SqliteCallStore.open(args.data_dir)


def run_calls(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    flt = CallFilter(
        since=args.since,
        until=args.until,
        rep_id=args.rep,
        outcome=args.outcome,
        status=args.status,
        text=args.query,
        limit=args.limit,
    )
    return asyncio.run(_with_store(args, lambda s: _calls(s, flt, args.json, out)))


async def _calls(store: CallStore, flt: CallFilter, as_json: bool, out: TextIO) -> int:
    for r in await store.list_calls(flt):
        if as_json:
            out.write(json.dumps(dataclasses.asdict(r)) + "\n")
            continue
        started = datetime.fromtimestamp(r.started_at).strftime("%Y-%m-%d %H:%M")
        minutes = "" if r.ended_at is None else f"{(r.ended_at - r.started_at) / 60:.0f} min"
        out.write(
            f"{r.call_id:<24} {started}  {r.status:<11} {r.outcome or '-':<11} "
            f"{r.rep_id or '-':<12} {minutes}\n"
        )
    return 0


def run_summary(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    return asyncio.run(_with_store(args, lambda s: _summary(s, args.call_id, args.format, out)))


async def _summary(store: CallStore, call_id: str, fmt: str, out: TextIO) -> int:
    summary = await summary_of(store, call_id, BuiltinSummarizer())
    if fmt == "json":
        out.write(json.dumps(to_wire(summary), indent=2) + "\n")
    else:
        out.write(render_markdown(summary))
    return 0


def run_card_stats(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    return asyncio.run(_with_store(args, lambda s: _card_stats(s, args, out)))


async def _card_stats(store: CallStore, args: argparse.Namespace, out: TextIO) -> int:
    stats = await card_stats(store, since=args.since, until=args.until, rep_id=args.rep)
    if args.json:
        kinds = [k.as_dict() for k in stats.kinds]
        out.write(json.dumps({"calls": stats.calls, "kinds": kinds}) + "\n")
        return 0
    out.write(f"{stats.calls} calls\n")
    out.write(f"{'kind':<22} {'group':<6} {'shown':>6} {'used':>6} {'dismissed':>9} ")
    out.write(f"{'no action':>9} {'dismiss rate':>12}\n")
    for k in stats.kinds:
        out.write(
            f"{k.kind:<22} {k.group:<6} {k.shown:>6} {k.used:>6} {k.dismissed:>9} "
            f"{k.no_action:>9} {k.dismiss_rate:>12.0%}\n"
        )
    return 0


async def _with_store(args: argparse.Namespace, body: Callable[[CallStore], Awaitable[int]]) -> int:
    try:
        store = await open_store(args)
    except StoreError as exc:
        print(f"cuecard: {exc}", file=sys.stderr)
        return 1
    try:
        return await body(store)
    except (CallNotFound, SummaryNotReady) as exc:
        print(f"cuecard: {exc}", file=sys.stderr)
        return 2
    finally:
        await store.close()
