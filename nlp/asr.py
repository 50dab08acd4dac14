"""Streaming ASR: utterance events in, partial and final transcripts out.

Two pieces, over ``nlp.scheduler.AsrScheduler`` (one ``Transcriber`` and its one thread,
finals first, then speculative decodes, then partials):
- ``accept()`` is the sync guard against Whisper's known failures: text on silence or noise
  ("Thank you."), bracketed non-speech tags, repetition loops.
- ``transcribe()`` is the per-call stage. On ``UtterancePaused`` it starts a speculative
  decode of the utterance; if the utterance then ends with no new speech (same audio), the
  final reuses that result instead of starting over. This hides decode time behind the
  end-of-utterance hangover. Every decode gets the call's context: its recent finals (both
  speakers, newest last) as Whisper's prompt and the vocabulary hints (playbook and call
  names) as hotwords; ``bench/bench_real.py`` and ``bench/bench_vocab.py`` measure both.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np

from audio.chunk import SAMPLE_RATE_HZ, Speaker, samples_to_s
from audio.segmenter import (
    SpeechEvent,
    UtteranceDropped,
    UtteranceEnded,
    UtteranceGrew,
    UtterancePaused,
)
from nlp.scheduler import PARTIAL, SPECULATIVE, AsrJob, AsrScheduler
from nlp.transcript import Recognition, RecognitionContext, Transcript, Word

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AsrOptions:
    partials: bool = True
    max_no_speech_prob: float = 0.6
    min_avg_logprob: float = -1.0
    out_queue: int = 32  # transcripts waiting for the next stage (finals wait, partials drop)
    prompt_finals: int = 6  # recent finals given to Whisper as its prompt; 0: none
    hotwords: tuple[str, ...] = ()  # names to bias the recognizer toward (playbook, call)

    def __post_init__(self) -> None:
        if self.prompt_finals < 0:
            raise ValueError("prompt_finals must be >= 0")
        if not 0 < self.max_no_speech_prob <= 1:
            raise ValueError("max_no_speech_prob must be within (0, 1]")
        if self.out_queue < 1:
            raise ValueError("out_queue must be at least 1")


_TAG = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|♪+")
_SILENCE_PHRASES = {
    "thank you",
    "thanks for watching",
    "thank you for watching",
    "you",
    "bye",
    "okay",
    "so",
    "thank you very much",
    "please subscribe",
}


def accept(rec: Recognition, options: AsrOptions) -> Recognition | None:
    """The recognition if it is speech, cleaned of tags and loops; None for silence or noise."""
    text = _TAG.sub("", rec.text).strip()
    words = tuple(w for w in rec.words if _TAG.sub("", w.text).strip())
    if not text or not any(c.isalnum() for c in text):
        return None
    if (
        rec.no_speech_prob > options.max_no_speech_prob
        and rec.avg_logprob < options.min_avg_logprob
    ):
        return None
    normalized = re.sub(r"[^a-z ]", "", text.lower()).strip()
    if normalized in _SILENCE_PHRASES and (rec.no_speech_prob > 0.3 or rec.avg_logprob < -0.7):
        return None
    text, words = collapse_repeats(text, words)
    return Recognition(text, words, rec.no_speech_prob, rec.avg_logprob, rec.compression_ratio)


def collapse_repeats(text: str, words: tuple[Word, ...]) -> tuple[str, tuple[Word, ...]]:
    """Cut Whisper's repetition loops: a phrase of two or more words said twice or more in a
    row keeps one copy; a single word said more than three times in a row keeps three."""
    tokens = text.split()
    keep = [True] * len(tokens)
    norm = [t.lower().strip(".,!?;:") for t in tokens]
    for n in range(8, 0, -1):
        limit = 1 if n >= 2 else 3
        i = 0
        while i + n <= len(norm):
            gram = norm[i : i + n]
            j, reps = i + n, 1
            while j + n <= len(norm) and norm[j : j + n] == gram and all(keep[j : j + n]):
                reps += 1
                j += n
            if reps > limit and all(keep[i : i + n]):
                for k in range(i + n * limit, j):
                    keep[k] = False
                i = j
            else:
                i += 1
    kept = [t for t, k in zip(tokens, keep, strict=True) if k]
    if len(words) == len(tokens):
        words = tuple(w for w, k in zip(words, keep, strict=True) if k)
    return " ".join(kept), words


@dataclass(frozen=True, slots=True)
class UtteranceSilent:
    """An utterance that produced no transcript: silence, noise, or too little speech. The
    coach's clock treats it as settled."""

    utterance_id: str
    speaker: Speaker


AsrEvent = Transcript | UtteranceSilent


class TranscriptQueue:
    """The bounded hand-over from the recognizer to the next stage. Finals and silences are
    never dropped: ``put`` waits for room. A partial replaces a pending partial of the same
    utterance, or is dropped (``dropped_partials``) when the queue is full."""

    def __init__(self, maxsize: int) -> None:
        self._maxsize = maxsize
        self._items: deque[list[AsrEvent | None]] = deque()  # a slot a partial may overwrite
        self._partials: dict[str, list[AsrEvent | None]] = {}
        self._changed = asyncio.Event()
        self.dropped_partials = 0

    async def put(self, item: AsrEvent | None) -> None:
        """A final, a silence, or None (the end)."""
        while len(self._items) >= self._maxsize:
            await self._wait()
        self._push([item])

    def put_partial(self, t: Transcript) -> None:
        slot = self._partials.get(t.utterance_id)
        if slot is not None:
            slot[0] = t
        elif len(self._items) >= self._maxsize:
            self.dropped_partials += 1
        else:
            self._partials[t.utterance_id] = slot = [t]
            self._push(slot)

    async def get(self) -> AsrEvent | None:
        while not self._items:
            await self._wait()
        slot = self._items.popleft()
        item = slot[0]
        if isinstance(item, Transcript) and not item.is_final:
            self._partials.pop(item.utterance_id, None)
        self._changed.set()
        return item

    def _push(self, slot: list[AsrEvent | None]) -> None:
        self._items.append(slot)
        self._changed.set()

    async def _wait(self) -> None:
        self._changed.clear()
        await self._changed.wait()


class _Utterance:
    __slots__ = ("finished", "last_partial", "spec_len", "speculative")

    def __init__(self) -> None:
        self.speculative: AsrJob | None = None
        self.spec_len = -1
        self.last_partial = ""
        self.finished = False


async def transcribe(
    events: AsyncIterable[SpeechEvent],
    scheduler: AsrScheduler,
    options: AsrOptions,
) -> AsyncIterator[AsrEvent]:
    """Speech events of one call (any speakers) -> transcripts. Per utterance: partials, then
    exactly one final if it holds speech, or one ``UtteranceSilent`` if it held none (or was
    dropped by the segmenter). Each speaker's finals keep utterance order."""
    out = TranscriptQueue(options.out_queue)
    state: dict[str, _Utterance] = {}
    pending: set[asyncio.Task[None]] = set()
    last_final: dict[str, asyncio.Task[None]] = {}
    recent: deque[str] = deque(maxlen=max(1, options.prompt_finals))  # final texts, newest last

    def context() -> RecognitionContext:
        prompt = " ".join(recent) if options.prompt_finals else ""
        return RecognitionContext(prompt=prompt, hotwords=options.hotwords)

    def spawn(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        pending.add(task)
        task.add_done_callback(pending.discard)
        return task

    async def ended(event: UtteranceEnded) -> None:
        u = state.pop(event.utterance_id, _Utterance())
        u.finished = True
        spec = u.speculative
        if spec is not None and u.spec_len == len(event.samples) and not spec.cancelled:
            fut = spec.future  # no speech since the pause: the speculative decode is the final
        else:
            if spec is not None:
                spec.discard()
            job = await scheduler.submit_final(event.utterance_id, event.samples, context())
            fut = job.future
        prev = last_final.get(event.speaker)
        last_final[event.speaker] = spawn(_final(event, fut, prev, options, out, recent))

    async def pump() -> None:
        try:
            async for event in events:
                if isinstance(event, UtteranceGrew) and options.partials:
                    u = state.setdefault(event.utterance_id, _Utterance())
                    job = scheduler.submit(
                        PARTIAL, event.utterance_id, event.samples, False, context()
                    )
                    spawn(_partial(event, job.future, u, options, out))
                elif isinstance(event, UtterancePaused):
                    u = state.setdefault(event.utterance_id, _Utterance())
                    if u.speculative is not None:
                        u.speculative.discard()  # speech resumed since that pause
                    u.speculative = scheduler.submit(
                        SPECULATIVE, event.utterance_id, event.samples, True, context()
                    )
                    u.spec_len = len(event.samples)
                elif isinstance(event, UtteranceEnded):
                    await ended(event)
                elif isinstance(event, UtteranceDropped):
                    dropped = state.pop(event.utterance_id, None)
                    if dropped is not None:
                        dropped.finished = True
                        if dropped.speculative is not None:
                            dropped.speculative.discard()
                    await out.put(UtteranceSilent(event.utterance_id, event.speaker))
            if pending:
                await asyncio.gather(*list(pending))
        finally:
            for task in list(pending):
                task.cancel()
            await out.put(None)

    pump_task = asyncio.ensure_future(pump())
    try:
        while (item := await out.get()) is not None:
            yield item
        await pump_task
    finally:
        pump_task.cancel()
        for task in list(pending):
            task.cancel()


async def _partial(
    event: UtteranceGrew,
    fut: asyncio.Future[Recognition | None],
    u: _Utterance,
    options: AsrOptions,
    out: TranscriptQueue,
) -> None:
    try:
        rec = await fut
    except Exception:
        return
    if rec is None or u.finished:
        return
    ok = accept(rec, options)
    if ok is None or ok.text == u.last_partial:
        return
    u.last_partial = ok.text
    start = event.start_sample
    out.put_partial(
        Transcript(
            utterance_id=event.utterance_id,
            speaker=event.speaker,
            is_final=False,
            text=ok.text,
            start_s=samples_to_s(start),
            end_s=samples_to_s(start + len(event.samples)),
        )
    )


async def _final(
    event: UtteranceEnded,
    fut: asyncio.Future[Recognition | None],
    previous: asyncio.Task[None] | None,
    options: AsrOptions,
    out: TranscriptQueue,
    recent: deque[str],
) -> None:
    try:
        rec = await fut
    except Exception:
        rec = None
        log.warning("no final for %s: recognition failed", event.utterance_id)
    if previous is not None:
        await asyncio.shield(previous)
    ok = accept(rec, options) if rec is not None else None
    if ok is None:
        await out.put(UtteranceSilent(event.utterance_id, event.speaker))
    else:
        recent.append(ok.text)  # context for the call's next decodes
        await out.put(final_transcript(event, ok))


def final_transcript(event: UtteranceEnded, rec: Recognition) -> Transcript:
    """Clip-relative word times -> call audio time; the span is the words' span."""
    offset = event.start_sample / SAMPLE_RATE_HZ
    words = tuple(
        Word(
            w.text,
            round(offset + w.start_s, 3),
            round(offset + w.end_s, 3),
            round(w.probability, 3),
        )
        for w in rec.words
    )
    start_s = words[0].start_s if words else samples_to_s(event.start_sample)
    end_s = words[-1].end_s if words else samples_to_s(event.end_sample)
    return Transcript(
        utterance_id=event.utterance_id,
        speaker=event.speaker,
        is_final=True,
        text=rec.text,
        start_s=start_s,
        end_s=end_s,
        words=words,
        speaker_confidence=event.speaker_confidence,
        audio=np.asarray(event.samples, dtype=np.float32),
        audio_start_s=offset,
    )
