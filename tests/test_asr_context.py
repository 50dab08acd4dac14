"""The transcribe stage gives every decode the call's context: the recent finals of both
speakers (newest last) as the prompt, and the call's vocabulary as hotwords."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import numpy as np

from audio.chunk import Samples
from audio.segmenter import SpeechEvent, SpeechStarted, UtteranceEnded
from nlp.asr import AsrOptions, transcribe
from nlp.scheduler import AsrScheduler
from nlp.transcript import NO_CONTEXT, Recognition, RecognitionContext, Transcript


class ScriptedTranscriber:
    """A ``Transcriber`` that says the next scripted line and keeps the context it got."""

    name = "scripted"

    def __init__(self, lines: list[str]) -> None:
        self._lines = iter(lines)
        self.contexts: list[RecognitionContext] = []
        self._lock = threading.Lock()

    def recognize(
        self, audio: Samples, *, with_words: bool, context: RecognitionContext = NO_CONTEXT
    ) -> Recognition:
        with self._lock:
            self.contexts.append(context)
            return Recognition(next(self._lines), (), 0.0, -0.1, 1.0)

    def warmup(self) -> None:
        pass


async def _turns(n: int, settled: asyncio.Queue[None]) -> AsyncIterator[SpeechEvent]:
    """``n`` alternating turns; each waits until the previous final is out, as in a call."""
    audio = np.zeros(16_000, np.float32)
    for i in range(n):
        speaker = "rep" if i % 2 == 0 else "customer"
        if i:
            await settled.get()
        yield SpeechStarted(f"u{i}", speaker, i * 32_000)
        yield UtteranceEnded(f"u{i}", speaker, i * 32_000, audio)


async def _run(lines: list[str], options: AsrOptions) -> tuple[list[str], ScriptedTranscriber]:
    t = ScriptedTranscriber(lines)
    scheduler = AsrScheduler(t)
    finals: list[Transcript] = []
    settled: asyncio.Queue[None] = asyncio.Queue()
    try:
        async for item in transcribe(_turns(len(lines), settled), scheduler, options):
            if isinstance(item, Transcript) and item.is_final:
                finals.append(item)
                settled.put_nowait(None)
    finally:
        await scheduler.stop()
    return [f.text for f in finals], t


async def test_recent_finals_of_both_speakers_become_the_prompt() -> None:
    lines = ["Hi, this is Sam from Acme.", "Hello Sam.", "Do you use Gong?", "We do."]
    texts, t = await _run(lines, AsrOptions(partials=False, prompt_finals=2, hotwords=("Acme",)))
    assert texts == lines
    assert [c.prompt for c in t.contexts] == [
        "",
        "Hi, this is Sam from Acme.",
        "Hi, this is Sam from Acme. Hello Sam.",
        "Hello Sam. Do you use Gong?",  # the oldest final leaves first
    ]
    assert all(c.hotwords == ("Acme",) for c in t.contexts)


async def test_no_prompt_when_prompt_finals_is_zero() -> None:
    lines = ["One.", "Two.", "Three."]
    _, t = await _run(lines, AsrOptions(partials=False, prompt_finals=0))
    assert t.contexts == [RecognitionContext()] * 3
