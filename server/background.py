"""A background task bound to an ``async with`` block: the retention purge, the Redis reaper
and the heap trim each run for as long as the server serves, and never outlive it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any


@contextlib.asynccontextmanager
async def running(coro: Coroutine[Any, Any, None], name: str) -> AsyncIterator[asyncio.Task[None]]:
    """``coro`` as a task while the block runs; cancelled and awaited when it closes. Closing
    never raises: the caller's own cancellation still propagates."""
    task = asyncio.create_task(coro, name=name)
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.wait({task})
