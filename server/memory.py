"""Giving freed memory back to the system after a burst of connections.

A storm of viewers or connections allocates per-socket buffers in many small pieces; once they
are closed, Python frees them, but glibc's allocator keeps the pages in its arenas, so the
process's RSS stays at the storm's peak (measured with ``bench.bench_load``: +12.6 % over the
baseline after the storm, +5 % once trimmed; ``tracemalloc`` showed no Python objects left
behind). ``trimming`` runs ``malloc_trim(0)`` every ``every_s`` in a worker thread while the
server runs, so RSS returns near its baseline within a period of the load ending. Where the C
library is not glibc (musl, macOS) there is no ``malloc_trim`` and the task does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
from collections.abc import AsyncIterator, Callable

from server.background import running

log = logging.getLogger(__name__)

TRIM_EVERY_S = 30.0


def malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)`` as a callable, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: fn(0)


async def trim_periodically(trim: Callable[[], object], every_s: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(every_s)
        await loop.run_in_executor(None, trim)


@contextlib.asynccontextmanager
async def trimming(every_s: float = TRIM_EVERY_S) -> AsyncIterator[None]:
    """While the scope is open, give freed heap memory back every ``every_s``."""
    trim = malloc_trim()
    if trim is None:
        log.debug("no malloc_trim in this C library: freed memory stays with the process")
        yield
        return
    async with running(trim_periodically(trim, every_s), "cuecard-malloc-trim"):
        yield
