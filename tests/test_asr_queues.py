"""The recognizer's bounded queues keep their policy: finals are never dropped (they wait),
a newer partial replaces an older one, and a full scheduler holds back new finals."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import numpy as np

from audio.chunk import Samples
from audio.segmenter import SpeechEvent, UtteranceGrew
from nlp.asr import AsrOptions, TranscriptQueue, UtteranceSilent, transcribe
from nlp.scheduler import PARTIAL, AsrScheduler
from nlp.transcript import NO_CONTEXT, Recognition, RecognitionContext, Transcript


def partial(uid: str, text: str) -> Transcript:
    return Transcript(uid, "customer", False, text, 0.0, 1.0)


def final(uid: str, text: str) -> Transcript:
    return Transcript(uid, "customer", True, text, 0.0, 1.0)


async def test_a_newer_partial_replaces_the_pending_one() -> None:
    q = TranscriptQueue(4)
    q.put_partial(partial("u1", "the price"))
    q.put_partial(partial("u2", "hello"))
    q.put_partial(partial("u1", "the price is too"))
    await q.put(final("u1", "The price is too high."))
    got = [await q.get() for _ in range(3)]
    assert [(t.utterance_id, t.text) for t in got if isinstance(t, Transcript)] == [
        ("u1", "the price is too"),
        ("u2", "hello"),
        ("u1", "The price is too high."),
    ]
    assert q.stats.dropped_partials == 0
    q.put_partial(partial("u1", "again"))  # the taken partial's slot is gone: a new one
    assert await q.get() == partial("u1", "again")


async def test_a_full_queue_drops_partials_and_holds_finals() -> None:
    q = TranscriptQueue(2)
    await q.put(final("u1", "One."))
    await q.put(UtteranceSilent("u2", "customer"))
    q.put_partial(partial("u3", "dropped"))
    assert q.stats.dropped_partials == 1
    waiting = asyncio.ensure_future(q.put(final("u3", "Three.")))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # a final waits for room, it is never dropped
    assert await q.get() == final("u1", "One.")
    await asyncio.wait_for(waiting, 5)
    assert await q.get() == UtteranceSilent("u2", "customer")
    assert await q.get() == final("u3", "Three.")


class GatedTranscriber:
    """A scripted ``Transcriber`` that recognizes nothing until the gate opens."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls = 0

    def recognize(
        self, audio: Samples, *, with_words: bool, context: RecognitionContext = NO_CONTEXT
    ) -> Recognition:
        self.gate.wait(10)
        self.calls += 1
        return Recognition(f"clip of {len(audio)}", (), 0.0, -0.1, 1.0)

    def warmup(self) -> None:
        pass


async def test_submit_final_waits_while_the_scheduler_is_full() -> None:
    transcriber = GatedTranscriber()
    scheduler = AsrScheduler(transcriber, max_pending_finals=2)
    audio = np.zeros(1600, np.float32)
    try:
        first = await scheduler.submit_final("u1", audio)
        second = await scheduler.submit_final("u2", audio)
        third = asyncio.ensure_future(scheduler.submit_final("u3", audio))
        partial_job = scheduler.submit(PARTIAL, "u4", audio, False)  # partials never wait
        await asyncio.sleep(0.05)
        assert not third.done()
        transcriber.gate.set()
        job = await asyncio.wait_for(third, 10)
        results = await asyncio.wait_for(
            asyncio.gather(first.future, second.future, job.future), 10
        )
        assert [r.text for r in results if r is not None] == ["clip of 1600"] * 3
        assert await asyncio.wait_for(partial_job.future, 10) is not None
    finally:
        transcriber.gate.set()
        await scheduler.stop()


async def test_two_calls_with_the_same_utterance_id_keep_their_own_partials() -> None:
    """The scheduler is shared by every call and utterance ids repeat across calls: a partial
    of one call's ``customer-1`` must not replace the other call's pending one."""
    transcriber = GatedTranscriber()
    scheduler = AsrScheduler(transcriber)
    audio = np.zeros(16000, np.float32)
    grown = [asyncio.Event(), asyncio.Event()]

    async def call(i: int) -> AsyncIterator[SpeechEvent]:
        yield UtteranceGrew("customer-1", "customer", 0, audio)
        grown[i].set()
        await asyncio.wait_for(other_done[i].wait(), 10)

    other_done = [asyncio.Event(), asyncio.Event()]
    streams = [transcribe(call(i), scheduler, AsrOptions()) for i in range(2)]
    readers = [asyncio.ensure_future(anext(s)) for s in streams]
    try:
        await asyncio.wait_for(asyncio.gather(*(g.wait() for g in grown)), 10)
        await asyncio.sleep(0.05)  # both partials submitted while the worker is gated
        transcriber.gate.set()
        got = await asyncio.wait_for(asyncio.gather(*readers), 10)
        assert all(isinstance(t, Transcript) and not t.is_final for t in got)
        assert scheduler.dropped_partials == 0
    finally:
        transcriber.gate.set()
        for e in other_done:
            e.set()
        for s in streams:
            await s.aclose()
        await scheduler.stop()
