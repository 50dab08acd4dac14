"""``AsrScheduler``: every recognition of one ``Transcriber``, on ``workers`` threads, by
priority, in batches across calls.

Jobs are taken finals first, then speculative finals, then partials; a partial job is replaced
by a newer one of the same utterance (``dropped_partials`` counts them). A final is never
dropped. Shared by every call on the server; ``nlp.asr.transcribe`` is its per-call client.
``workers`` > 1 runs that many recognitions at once (the transcriber must allow it: Whisper's
CTranslate2 replicas, one per worker); each free worker takes the next job by the same order.

When the transcriber is a ``BatchTranscriber``, one model call decodes several jobs: all the
pending finals and speculative decodes (finals first, up to ``max_batch``), or, when none is
pending, the oldest pending partials (up to ``max_partial_batch``). Partials never ride in a
final's batch: they would lengthen it. A final submitted while a partial batch runs preempts
it at the transcriber's next stage boundary (``should_stop``) when no worker is free for the
final: those partials resolve to None and count as dropped (``dropped_partials``, of which
``preempted_partials``), and the final runs next.

Beyond capacity the work degrades in this order: partials are replaced by newer ones of the
same utterance and wait behind every final (fewer partials per utterance); a running partial
batch is cut short by a final; finals and speculative decodes are batched together (each
waits for its batch); last, ``submit_final`` waits for room, which holds back the calls'
audio (back-pressure). A final is never dropped.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from audio.chunk import Samples
from nlp.transcript import NO_CONTEXT, Recognition, RecognitionContext, Transcriber

log = logging.getLogger(__name__)

FINAL, SPECULATIVE, PARTIAL = 0, 1, 2


@runtime_checkable
class BatchTranscriber(Transcriber, Protocol):
    """A transcriber that decodes several clips in one model call. ``should_stop`` is polled
    between stages; when it returns True the call may return None for every clip."""

    def recognize_batch(
        self,
        audios: Sequence[Samples],
        *,
        with_words: Sequence[bool],
        contexts: Sequence[RecognitionContext],
        should_stop: Callable[[], bool] | None = None,
    ) -> list[Recognition] | None: ...


@dataclass(frozen=True, slots=True)
class SchedulerOptions:
    max_pending_finals: int = 64
    max_batch: int = 8  # finals and speculative decodes per model call
    max_partial_batch: int = 4  # partials per model call
    preempt: bool = True  # a final stops a running partial batch after its encode
    workers: int = 1  # recognitions at once (the transcriber's concurrent calls)

    def __post_init__(self) -> None:
        if self.max_pending_finals < 1:
            raise ValueError("max_pending_finals must be at least 1")
        if self.max_batch < 1 or self.max_partial_batch < 1:
            raise ValueError("max_batch and max_partial_batch must be at least 1")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")


class AsrScheduler:
    """Runs every recognition of one transcriber on ``options.workers`` threads, by priority,
    batched.

    Its queue is bounded by policy: one pending partial per utterance (a newer one replaces
    it), one speculative decode per utterance, and at most ``max_pending_finals`` finals:
    ``submit_final`` waits for room, which holds back the calls' segmenters and so their
    audio sockets (back-pressure; a final is never dropped).
    """

    def __init__(
        self,
        transcriber: Transcriber,
        max_pending_finals: int | None = None,
        options: SchedulerOptions | None = None,
    ) -> None:
        options = options or SchedulerOptions()
        if max_pending_finals is not None:
            options = dataclasses.replace(options, max_pending_finals=max_pending_finals)
        self.options = options
        self.transcriber = transcriber
        self._batched = isinstance(transcriber, BatchTranscriber)
        self._final_slots = asyncio.Semaphore(options.max_pending_finals)
        self._executor = ThreadPoolExecutor(options.workers, thread_name_prefix="asr")
        self._pending: tuple[list[AsrJob], list[AsrJob], list[AsrJob]] = ([], [], [])
        self._wake = asyncio.Event()
        # one event per running partial batch: set, that batch stops for a waiting final
        self._running_partials: list[threading.Event] = []
        self._busy_workers = 0
        self._partials: dict[str, AsrJob] = {}
        self._seq = itertools.count()
        self._workers: list[asyncio.Task[None]] = []
        self.dropped_partials = 0
        self.preempted_partials = 0
        self.busy_s = 0.0
        self.busy_s_by_priority = [0.0, 0.0, 0.0]  # FINAL, SPECULATIVE, PARTIAL
        self.batches = 0
        self.batched_jobs = 0
        self.largest_batch = 0

    def start(self) -> None:
        if not self._workers:
            # shared by every call: they must not inherit the context (log fields) of the call
            # whose first job started them
            loop = asyncio.get_running_loop()
            self._workers = [
                loop.create_task(self._run(), name=f"asr-worker-{i}", context=contextvars.Context())
                for i in range(self.options.workers)
            ]

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            try:
                await worker
            except asyncio.CancelledError:
                pass
        self._workers = []
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
        job = AsrJob(key, audio, with_words, future, context, priority, next(self._seq))
        if priority == PARTIAL:
            old = self._partials.pop(key, None)
            if old is not None and old.discard():
                self.dropped_partials += 1
            self._partials[key] = job
        self._pending[priority].append(job)
        if priority != PARTIAL:
            self._preempt_for_urgent()
        self._wake.set()
        return job

    def _preempt_for_urgent(self) -> None:
        """Stop as many running partial batches as there are waiting finals and speculative
        decodes that no free worker will take."""
        idle = self.options.workers - self._busy_workers
        waiting = sum(1 for j in (*self._pending[FINAL], *self._pending[SPECULATIVE])
                      if not j.future.done())  # fmt: skip
        unstopped = [e for e in self._running_partials if not e.is_set()]
        for event in unstopped[: max(0, waiting - idle)]:
            event.set()

    def pending(self) -> int:
        """Jobs waiting (not running), all priorities."""
        return sum(1 for jobs in self._pending for j in jobs if not j.future.done())

    def pending_finals(self) -> int:
        """Finals waiting (not running): the backlog ``/readyz`` watches."""
        return sum(1 for j in self._pending[FINAL] if not j.future.done())

    def _take(self) -> list[AsrJob]:
        """The next batch: pending finals then speculative decodes, else the oldest partials."""
        for jobs in self._pending:
            jobs[:] = [j for j in jobs if not (j.cancelled or j.future.done())]
        urgent = [*self._pending[FINAL], *self._pending[SPECULATIVE]]
        if urgent:
            limit = self.options.max_batch if self._batched else 1
            batch = urgent[:limit]
        else:
            limit = self.options.max_partial_batch if self._batched else 1
            batch = self._pending[PARTIAL][:limit]
        for job in batch:
            self._pending[job.priority].remove(job)
            job.started = True
            if job.priority == PARTIAL:
                self._partials.pop(job.key, None)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = self._take()
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            stop = threading.Event()
            if batch[0].priority == PARTIAL:
                self._running_partials.append(stop)
            self._busy_workers += 1
            t0 = loop.time()
            try:
                results = await loop.run_in_executor(self._executor, self._recognize, batch, stop)
            except Exception as err:  # a model failure degrades these utterances, not the calls
                log.exception("recognition failed for %s", ", ".join(j.key for j in batch))
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            finally:
                took_s = loop.time() - t0
                self.busy_s += took_s
                self.busy_s_by_priority[batch[0].priority] += took_s
                self._busy_workers -= 1
                if stop in self._running_partials:
                    self._running_partials.remove(stop)
            self._count(batch)
            self._resolve(batch, results)

    def _count(self, batch: list[AsrJob]) -> None:
        self.batches += 1
        self.batched_jobs += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))

    def _resolve(self, batch: list[AsrJob], results: list[Recognition] | None) -> None:
        if results is None:  # preempted by a final: the partials are dropped (and counted)
            self.preempted_partials += len(batch)
            self.dropped_partials += len(batch)
            for job in batch:
                job.discard()
            return
        for job, result in zip(batch, results, strict=True):
            if not job.future.done():
                job.future.set_result(result)

    def _recognize(self, batch: list[AsrJob], stop: threading.Event) -> list[Recognition] | None:
        if not self._batched:
            (job,) = batch
            return [self.transcriber.recognize(job.audio, with_words=job.with_words,
                                               context=job.context)]  # fmt: skip
        assert isinstance(self.transcriber, BatchTranscriber)
        preemptible = batch[0].priority == PARTIAL and self.options.preempt
        return self.transcriber.recognize_batch(
            [j.audio for j in batch],
            with_words=[j.with_words for j in batch],
            contexts=[j.context for j in batch],
            should_stop=stop.is_set if preemptible else None,
        )


@dataclass(slots=True)
class AsrJob:
    key: str
    audio: Samples
    with_words: bool
    future: asyncio.Future[Recognition | None]
    context: RecognitionContext = NO_CONTEXT
    priority: int = FINAL
    seq: int = 0
    cancelled: bool = False
    started: bool = field(default=False)  # taken by the worker: discarding it saves nothing

    def discard(self) -> bool:
        """Drop the job if it has not run; its future resolves to None. True if dropped."""
        if self.future.done():
            return False
        self.cancelled = True
        self.future.set_result(None)
        return True
