"""The shared scheduler batches recognitions across calls: pending finals go together in one
model call, before speculative decodes and partials; a final preempts a running partial
batch; a final is never dropped, however many wait."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence

import numpy as np

from audio.chunk import Samples
from nlp.scheduler import (
    PARTIAL,
    SPECULATIVE,
    AsrScheduler,
    BatchTranscriber,
    SchedulerOptions,
)
from nlp.transcript import NO_CONTEXT, Recognition, RecognitionContext


class BatchRecorder:
    """A scripted ``BatchTranscriber``: the first call waits for ``gate``; every call records
    the clip lengths it got; a partial batch waits for ``partial_gate`` and then asks
    ``should_stop`` (as the Whisper adapter does between encode and generate)."""

    name = "batch-recorder"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.partial_gate = threading.Event()
        self.partial_gate.set()
        self.partial_started = threading.Event()
        self.calls: list[list[int]] = []

    def recognize(
        self, audio: Samples, *, with_words: bool, context: RecognitionContext = NO_CONTEXT
    ) -> Recognition:
        out = self.recognize_batch([audio], with_words=[with_words], contexts=[context])
        assert out is not None
        return out[0]

    def recognize_batch(
        self,
        audios: Sequence[Samples],
        *,
        with_words: Sequence[bool],
        contexts: Sequence[RecognitionContext],
        should_stop: Callable[[], bool] | None = None,
    ) -> list[Recognition] | None:
        self.admit()
        self.calls.append([len(a) for a in audios])
        if should_stop is not None:
            self.partial_started.set()
            self.partial_gate.wait(10)
            if should_stop():
                return None
        return [Recognition(f"clip of {len(a)}", (), 0.0, -0.1, 1.0) for a in audios]

    def admit(self) -> None:
        """What each call waits for before it records its clips: the gate."""
        self.gate.wait(10)

    def warmup(self) -> None:
        pass


def clip(n: int) -> np.ndarray:
    return np.zeros(n, np.float32)


def test_the_recorder_is_a_batch_transcriber() -> None:
    assert isinstance(BatchRecorder(), BatchTranscriber)


async def test_pending_finals_share_one_model_call_before_speculatives_and_partials() -> None:
    t = BatchRecorder()
    scheduler = AsrScheduler(t, options=SchedulerOptions(max_batch=3, max_partial_batch=2))
    try:
        first = await scheduler.submit_final("a-1", clip(100))  # runs alone, held by the gate
        await asyncio.sleep(0.05)
        partials = [scheduler.submit(PARTIAL, f"p-{i}", clip(300 + i), False) for i in range(3)]
        spec = scheduler.submit(SPECULATIVE, "s-1", clip(200), True)
        finals = [await scheduler.submit_final(f"f-{i}", clip(101 + i)) for i in range(3)]
        t.gate.set()
        jobs = [first, *finals, spec, *partials]
        await asyncio.wait_for(asyncio.gather(*(j.future for j in jobs)), 10)
    finally:
        t.gate.set()
        await scheduler.stop()
    assert t.calls == [[100], [101, 102, 103], [200], [300, 301], [302]]
    assert scheduler.largest_batch == 3


async def test_a_final_preempts_a_running_partial_batch() -> None:
    t = BatchRecorder()
    t.gate.set()
    t.partial_gate.clear()
    scheduler = AsrScheduler(t)
    try:
        partials = [scheduler.submit(PARTIAL, f"p-{i}", clip(300 + i), False) for i in range(2)]
        assert await asyncio.to_thread(t.partial_started.wait, 10)
        final = await scheduler.submit_final("f-1", clip(100))
        t.partial_gate.set()
        got = await asyncio.wait_for(final.future, 10)
        assert [await p.future for p in partials] == [None, None]
    finally:
        t.partial_gate.set()
        await scheduler.stop()
    assert got is not None and got.text == "clip of 100"
    assert scheduler.preempted_partials == 2
    assert scheduler.dropped_partials == 2  # what /v1/stats reports
    assert t.calls[-1] == [100]


async def test_no_final_is_dropped_when_many_wait() -> None:
    t = BatchRecorder()
    scheduler = AsrScheduler(t, options=SchedulerOptions(max_pending_finals=4, max_batch=3))
    try:

        async def submit_all() -> list[asyncio.Future[Recognition | None]]:
            futures = []
            for i in range(20):
                futures.append((await scheduler.submit_final(f"f-{i}", clip(1000 + i))).future)
                scheduler.submit(PARTIAL, f"p-{i % 3}", clip(50), False)
            return futures

        submitting = asyncio.ensure_future(submit_all())
        await asyncio.sleep(0.05)
        assert not submitting.done()  # back-pressure: at most 4 finals pending
        t.gate.set()
        futures = await asyncio.wait_for(submitting, 10)
        results = await asyncio.wait_for(asyncio.gather(*futures), 10)
    finally:
        t.gate.set()
        await scheduler.stop()
    assert [r.text for r in results if r is not None] == [f"clip of {1000 + i}" for i in range(20)]
    assert all(len(c) <= 3 for c in t.calls)


class Concurrent(BatchRecorder):
    """Each call waits at a barrier of ``parties``: it returns only when that many run at
    once (or breaks after 10 s, which fails the call)."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=10)

    def admit(self) -> None:
        self.barrier.wait()


async def test_two_workers_run_two_recognitions_at_once() -> None:
    t = Concurrent(2)
    scheduler = AsrScheduler(t, options=SchedulerOptions(max_batch=1, workers=2))
    try:
        jobs = [await scheduler.submit_final(f"f-{i}", clip(100 + i)) for i in range(4)]
        results = await asyncio.wait_for(asyncio.gather(*(j.future for j in jobs)), 20)
    finally:
        t.barrier.abort()
        await scheduler.stop()
    assert [r.text for r in results if r is not None] == [f"clip of {100 + i}" for i in range(4)]


async def test_a_final_takes_a_free_worker_instead_of_preempting_a_partial() -> None:
    t = BatchRecorder()
    t.gate.set()
    t.partial_gate.clear()
    scheduler = AsrScheduler(t, options=SchedulerOptions(workers=2))
    try:
        partial = scheduler.submit(PARTIAL, "p-0", clip(300), False)
        assert await asyncio.to_thread(t.partial_started.wait, 10)
        final = await scheduler.submit_final("f-1", clip(100))
        got = await asyncio.wait_for(final.future, 10)  # while the partial still runs
        t.partial_gate.set()
        kept = await asyncio.wait_for(partial.future, 10)
    finally:
        t.partial_gate.set()
        await scheduler.stop()
    assert got is not None and got.text == "clip of 100"
    assert kept is not None and kept.text == "clip of 300"
    assert scheduler.preempted_partials == 0


async def test_with_every_worker_on_partials_a_final_stops_one_batch() -> None:
    t = BatchRecorder()
    t.gate.set()
    t.partial_gate.clear()
    scheduler = AsrScheduler(t, options=SchedulerOptions(max_partial_batch=1, workers=2))
    try:
        partials = [scheduler.submit(PARTIAL, f"p-{i}", clip(300 + i), False) for i in range(2)]
        for _ in range(100):  # both workers inside a partial batch
            if len(t.calls) == 2:
                break
            await asyncio.sleep(0.02)
        assert len(t.calls) == 2
        final = await scheduler.submit_final("f-1", clip(100))
        t.partial_gate.set()
        got = await asyncio.wait_for(final.future, 10)
        done = [await asyncio.wait_for(p.future, 10) for p in partials]
    finally:
        t.partial_gate.set()
        await scheduler.stop()
    assert got is not None and got.text == "clip of 100"
    assert sorted(d is None for d in done) == [False, True]  # one stopped, one kept
    assert scheduler.preempted_partials == 1
