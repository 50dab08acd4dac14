"""Streaming ASR: utterance events in, partial and final transcripts out.

Two pieces, over ``nlp.scheduler.AsrScheduler`` (one ``Transcriber`` and its workers,
finals first, then speculative decodes, then partials):
- ``accept()`` is the sync guard against Whisper's known failures: text on silence or noise
  ("Thank you."), bracketed non-speech tags, repetition loops.
- ``transcribe()`` is the per-call stage. On ``UtterancePaused`` it starts a speculative
  decode of the utterance; if the utterance then ends with no new speech (same audio), the
  final reuses that result instead of starting over. This hides decode time behind the
  end-of-utterance hangover. Every decode gets the call's context: its recent finals (both
  speakers, newest last) as Whisper's prompt and the vocabulary hints (playbook and call
  names) as hotwords; ``bench/bench_real.py`` and ``bench/bench_vocab.py`` measure both.
A long utterance is committed piece by piece while it is spoken (``nlp/commit.py``): every
decode covers only the audio after the committed prefix, so a final's cost does not grow with
the utterance. (Over 400 lines: the stage and its two per-utterance helpers read together.)
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Coroutine
from dataclasses import dataclass, field
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
from nlp.commit import Commitment, CommitOptions, Piece, join_text, merge, tail_text
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
    commit: CommitOptions = field(default_factory=CommitOptions)  # long utterances: nlp/commit.py

    def __post_init__(self) -> None:
        if self.prompt_finals < 0:
            raise ValueError("prompt_finals must be >= 0")
        if not 0 < self.max_no_speech_prob <= 1:
            raise ValueError("max_no_speech_prob must be within (0, 1]")
        if self.out_queue < 1:
            raise ValueError("out_queue must be at least 1")


_STREAMS = itertools.count(1)  # scopes the shared scheduler's keys per transcribe() stream
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


@dataclass(slots=True)
class StreamStats:
    """What one ``transcribe()`` stream lost: its partials the shared scheduler dropped (a
    newer one replaced it, or a final cut its batch short) or the output queue had no room
    for. The session watches it to tell the rep when this call's live line stalls."""

    dropped_partials: int = 0
    decoded_partials: int = 0  # came back from the recognizer (shown unless filtered)


class TranscriptQueue:
    """The bounded hand-over from the recognizer to the next stage. Finals and silences are
    never dropped: ``put`` waits for room. A partial replaces a pending partial of the same
    utterance, or is dropped (counted in ``stats.dropped_partials``) when the queue is full."""

    def __init__(self, maxsize: int, stats: StreamStats | None = None) -> None:
        self._maxsize = maxsize
        self._items: deque[list[AsrEvent | None]] = deque()  # a slot a partial may overwrite
        self._partials: dict[str, list[AsrEvent | None]] = {}
        self._changed = asyncio.Event()
        self.stats = stats or StreamStats()

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
            self.stats.dropped_partials += 1
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
    __slots__ = (
        "commit",
        "finished",
        "last_partial",
        "spec_cut",
        "spec_from",
        "spec_len",
        "speculative",
    )

    def __init__(self, options: AsrOptions) -> None:
        self.speculative: AsrJob | None = None
        self.spec_from = 0  # where the speculative decode's audio starts
        self.spec_cut = 0  # the cut when it was queued
        self.spec_len = -1
        self.last_partial = ""
        self.finished = False
        self.commit = Commitment(options.commit)

    def on_speculative(self, job: AsrJob, start: int, end: int, options: AsrOptions) -> None:
        """A speculative decode finished: commit it as a piece if speech went on after it."""
        if self.finished or job.cancelled or job.future.exception() is not None:
            return
        rec = job.future.result()
        ok = accept(rec, options) if rec is not None else None
        if ok is not None:
            self.commit.commit_piece(start, end, ok)


async def transcribe(
    events: AsyncIterable[SpeechEvent],
    scheduler: AsrScheduler,
    options: AsrOptions,
    stats: StreamStats | None = None,
) -> AsyncIterator[AsrEvent]:
    """Speech events of one call (any speakers) -> transcripts. Per utterance: partials, then
    exactly one final if it holds speech, or one ``UtteranceSilent`` if it held none (or was
    dropped by the segmenter). Each speaker's finals keep utterance order. A long utterance
    is committed piece by piece as it is spoken (``nlp.commit``): every decode covers only the
    audio after its committed prefix. ``stats`` counts this stream's lost partials."""
    out = TranscriptQueue(options.out_queue, stats)
    # The scheduler is shared by every call and utterance ids repeat across calls
    # ("customer-3"): its keys carry this stream's own scope, so one call's partial never
    # replaces another call's pending one.
    scope = f"s{next(_STREAMS)}/"
    state: dict[str, _Utterance] = {}
    pending: set[asyncio.Task[None]] = set()
    last_final: dict[str, asyncio.Task[None]] = {}
    recent: deque[str] = deque(maxlen=max(1, options.prompt_finals))  # final texts, newest last

    def context(u: _Utterance | None = None, upto: int | None = None) -> RecognitionContext:
        parts = list(recent) if options.prompt_finals else []
        if u is not None:  # the utterance's own committed text, before the audio decoded
            pieces = u.commit.pieces if upto is None else u.commit.upto(upto)
            parts += [p.text for p in pieces]
        return RecognitionContext(prompt=join_text(parts), hotwords=options.hotwords)

    def spawn(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        pending.add(task)
        task.add_done_callback(pending.discard)
        return task

    def utterance(uid: str) -> _Utterance:
        u = state.get(uid)
        if u is None:
            u = state[uid] = _Utterance(options)
        return u

    def grew(event: UtteranceGrew) -> None:
        u = utterance(event.utterance_id)
        start, words = u.commit.start, u.commit.wants_words(len(event.samples))
        job = scheduler.submit(
            PARTIAL, scope + event.utterance_id, event.samples[start:], words, context(u)
        )
        spawn(_partial(event, job.future, u, start, list(u.commit.pieces), options, out))

    def paused(event: UtterancePaused) -> None:
        u = utterance(event.utterance_id)
        old = u.speculative
        if old is not None and not old.started:
            old.discard()  # speech resumed since that pause, and it has not run
        start, end = u.commit.start, len(event.samples)
        job = scheduler.submit(
            SPECULATIVE, scope + event.utterance_id, event.samples[start:], True, context(u)
        )
        job.future.add_done_callback(lambda _: u.on_speculative(job, start, end, options))
        u.speculative, u.spec_from, u.spec_cut, u.spec_len = job, start, u.commit.cut, end

    async def ended(event: UtteranceEnded) -> None:
        u = state.pop(event.utterance_id, None) or _Utterance(options)
        u.finished = True  # no more commits: the pieces below are the final's
        spec, n = u.speculative, len(event.samples)
        fut: asyncio.Future[Recognition | None] | None
        if spec is not None and u.spec_len == n and not spec.cancelled:
            # no speech since the pause: the speculative decode is the final's tail
            pieces, start, fut = u.commit.upto(u.spec_cut), u.spec_from, spec.future
        else:
            if spec is not None and not spec.started:
                spec.discard()
            pieces, start = list(u.commit.pieces), u.commit.start
            fut = None
            if n - u.commit.cut >= _MIN_TAIL or not pieces:
                job = await scheduler.submit_final(
                    scope + event.utterance_id, event.samples[start:], context(u)
                )
                fut = job.future
        prev = last_final.get(event.speaker)
        final = _final(event, _Decoded(pieces, start, fut), prev, options, out, recent)
        last_final[event.speaker] = spawn(final)

    def dropped(event: UtteranceDropped) -> None:
        u = state.pop(event.utterance_id, None)
        if u is not None:
            u.finished = True
            if u.speculative is not None:
                u.speculative.discard()

    async def pump() -> None:
        try:
            async for event in events:
                if isinstance(event, UtteranceGrew) and options.partials:
                    grew(event)
                elif isinstance(event, UtterancePaused):
                    paused(event)
                elif isinstance(event, UtteranceEnded):
                    await ended(event)
                elif isinstance(event, UtteranceDropped):
                    dropped(event)
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


_MIN_TAIL = SAMPLE_RATE_HZ // 5  # less audio than this after the pieces is not decoded


@dataclass(frozen=True, slots=True)
class _Decoded:
    """What makes one final: committed pieces, then the tail decoded from ``tail_start``."""

    pieces: list[Piece]
    tail_start: int
    tail: asyncio.Future[Recognition | None] | None


async def _partial(
    event: UtteranceGrew,
    fut: asyncio.Future[Recognition | None],
    u: _Utterance,
    start: int,
    pieces: list[Piece],
    options: AsrOptions,
    out: TranscriptQueue,
) -> None:
    try:
        rec = await fut
    except Exception:
        return
    if rec is None:
        out.stats.dropped_partials += 1  # replaced or cut short by the scheduler
    else:
        out.stats.decoded_partials += 1
    if rec is None or u.finished:
        return
    ok = accept(rec, options)
    if ok is None:
        return
    if ok.words:
        u.commit.observe(start, event.samples, ok)
    text = join_text((*(p.text for p in pieces), tail_text(pieces, ok, start)[0]))
    if text == u.last_partial:
        return
    u.last_partial = text
    begin = event.start_sample
    out.put_partial(
        Transcript(
            utterance_id=event.utterance_id,
            speaker=event.speaker,
            is_final=False,
            text=text,
            start_s=samples_to_s(begin),
            end_s=samples_to_s(begin + len(event.samples)),
        )
    )


async def _final(
    event: UtteranceEnded,
    decoded: _Decoded,
    previous: asyncio.Task[None] | None,
    options: AsrOptions,
    out: TranscriptQueue,
    recent: deque[str],
) -> None:
    tail: Recognition | None = None
    if decoded.tail is not None:
        try:
            tail = await decoded.tail
        except Exception:
            log.warning("no final for %s: recognition failed", event.utterance_id)
    if previous is not None:
        await asyncio.shield(previous)
    tail_ok = accept(tail, options) if tail is not None else None
    rec = merge(decoded.pieces, tail_ok, decoded.tail_start)
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
