"""Retention: calls older than ``CUECARD_RETENTION_DAYS`` are deleted with everything derived
from them, at start-up and then every ``every_s`` (an hour by default).

``purge_expired`` is one pass (a live call is never purged; see ``CallStore.purge_older_than``).
``retention`` is the background task's scope: it starts the periodic purge when a maximum age is
configured and cancels it, awaited, when the scope closes, so the task never outlives the store.
A failing pass (store unreachable) is logged and retried at the next period; it never stops the
server. The wait between passes goes through an injectable ``sleep`` so tests drive the schedule
without a wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from server.background import running
from server.store import CallStore, StoreError

log = logging.getLogger("cuecard.retention")

HOUR_S = 3600.0
Sleep = Callable[[float], Awaitable[None]]


async def purge_expired(store: CallStore, max_age_s: float) -> list[str]:
    """One pass: delete every ended or interrupted call older than ``max_age_s``; logs and
    returns the ids removed."""
    removed = await store.purge_older_than(max_age_s)
    log.info(
        "retention: removed %d call(s) older than %.4g days%s",
        len(removed),
        max_age_s / 86_400.0,
        (": " + ", ".join(removed[:20]) + (" ..." if len(removed) > 20 else "")) if removed else "",
    )
    return removed


async def purge_periodically(
    store: CallStore,
    max_age_s: float,
    every_s: float = HOUR_S,
    sleep: Sleep = asyncio.sleep,
) -> None:
    """Purge now, then after every ``every_s``; runs until cancelled."""
    while True:
        try:
            await purge_expired(store, max_age_s)
        except StoreError as err:
            log.error("retention: purge failed, retrying in %.0f s: %s", every_s, err)
        except Exception:  # a bug in one pass must not end retention for the server's life
            log.exception("retention: purge failed, retrying in %.0f s", every_s)
        await sleep(every_s)


@contextlib.asynccontextmanager
async def retention(
    store: CallStore,
    max_age_s: float | None,
    every_s: float = HOUR_S,
    sleep: Sleep = asyncio.sleep,
) -> AsyncIterator[asyncio.Task[None] | None]:
    """The periodic purge as a task for the duration of the ``async with`` block (None when
    ``max_age_s`` is None: calls are kept forever)."""
    if max_age_s is None:
        yield None
        return
    if max_age_s <= 0 or every_s <= 0:
        raise ValueError("max_age_s and every_s must be > 0")
    purging = purge_periodically(store, max_age_s, every_s, sleep)
    async with running(purging, "cuecard-retention") as task:
        yield task
