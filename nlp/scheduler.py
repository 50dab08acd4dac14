"""``AsrScheduler``: every recognition of one ``Transcriber``, on its one thread, by priority.

Jobs are taken finals first, then speculative finals, then partials; a partial job is replaced
by a newer one of the same utterance (``dropped_partials`` counts them). A final is never
dropped. Shared by every call on the server; ``nlp.asr.transcribe`` is its per-call client.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from audio.chunk import Samples
from nlp.transcript import NO_CONTEXT, Recognition, RecognitionContext, Transcriber

log = logging.getLogger(__name__)

FINAL, SPECULATIVE, PARTIAL = 0, 1, 2


class AsrScheduler:
    """Runs every recognition of one transcriber on one thread, by priority.

    Its queue is bounded by policy: one pending partial per utterance (a newer one replaces
    it), one speculative decode per utterance, and at most ``max_pending_finals`` finals:
    ``submit_final`` waits for room, which holds back the calls' segmenters and so their
    audio sockets (back-pressure; a final is never dropped).
    """

    def __init__(self, transcriber: Transcriber, max_pending_finals: int = 64) -> None:
        if max_pending_finals < 1:
            raise ValueError("max_pending_finals must be at least 1")
        self.transcriber = transcriber
        self._final_slots = asyncio.Semaphore(max_pending_finals)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="asr")
        self._queue: asyncio.PriorityQueue[tuple[int, int, AsrJob]] = asyncio.PriorityQueue()
        self._partials: dict[str, AsrJob] = {}
        self._seq = itertools.count()
        self._worker: asyncio.Task[None] | None = None
        self.dropped_partials = 0
        self.busy_s = 0.0

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="asr-worker")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        self._executor.shutdown(wait=True)

    async def submit_final(
        self, key: str, audio: Samples, context: RecognitionContext = NO_CONTEXT
    ) -> AsrJob:
        """Queue a final recognition (with words) once fewer than ``max_pending_finals`` are
        pending."""
        await self._final_slots.acquire()
        job = self.submit(FINAL, key, audio, True, context)
        job.future.add_done_callback(lambda _: self._final_slots.release())
        return job

    def submit(
        self,
        priority: int,
        key: str,
        audio: Samples,
        with_words: bool,
        context: RecognitionContext = NO_CONTEXT,
    ) -> AsrJob:
        """Queue a recognition (finals go through ``submit_final``). A partial replaces the
        pending partial of the same ``key``, whose future then resolves to None."""
        self.start()
        future = asyncio.get_running_loop().create_future()
        job = AsrJob(key, audio, with_words, future, context)
        if priority == PARTIAL:
            old = self._partials.pop(key, None)
            if old is not None and old.discard():
                self.dropped_partials += 1
            self._partials[key] = job
        self._queue.put_nowait((priority, next(self._seq), job))
        return job

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            priority, _, job = await self._queue.get()
            if job.cancelled or job.future.done():
                continue
            if priority == PARTIAL:
                self._partials.pop(job.key, None)
            t0 = loop.time()
            try:
                result = await loop.run_in_executor(self._executor, self._recognize, job)
            except Exception as err:  # a model failure degrades this utterance, not the call
                log.exception("recognition failed for %s", job.key)
                if not job.future.done():
                    job.future.set_exception(err)
                continue
            finally:
                self.busy_s += loop.time() - t0
            if not job.future.done():
                job.future.set_result(result)

    def _recognize(self, job: AsrJob) -> Recognition:
        return self.transcriber.recognize(job.audio, with_words=job.with_words, context=job.context)


@dataclass(slots=True)
class AsrJob:
    key: str
    audio: Samples
    with_words: bool
    future: asyncio.Future[Recognition | None]
    context: RecognitionContext = NO_CONTEXT
    cancelled: bool = False

    def discard(self) -> bool:
        """Drop the job if it has not run; its future resolves to None. True if dropped."""
        if self.future.done():
            return False
        self.cancelled = True
        self.future.set_result(None)
        return True
