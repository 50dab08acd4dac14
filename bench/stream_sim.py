"""The live stream, replayed offline on a virtual clock: VAD + segmenter + one Whisper thread.

Every channel goes through the real Silero detector and ``audio.segmenter.Segmenter`` in
32 ms frames; each event happens at the audio time of the 20 ms network frame that completes
its VAD frame. One worker runs the real ``Transcriber`` with the server scheduler's policy
(finals, then speculative decodes, then partials; a newer partial of an utterance replaces a
pending one; an ended utterance reuses its speculative decode when no speech followed the
pause) and the measured compute time of each decode advances the clock. ``nlp.asr.accept``
filters results as the stage does. So the finals are the stream's finals, and their times are
what a 1.0x replay on an idle machine would see, without socket and event-loop overhead.

``context="finals"`` gives each decode the call's recent finals (both speakers, emitted before
the decode was queued, newest last) as its prompt: the seam the ASR stage is to use.
"""

from __future__ import annotations

import heapq
import itertools
import time
from dataclasses import dataclass, field
from typing import Literal

from audio.chunk import SAMPLE_RATE_HZ, Samples
from audio.segmenter import (
    Segmenter,
    SegmenterOptions,
    SpeechEvent,
    UtteranceDropped,
    UtteranceEnded,
    UtteranceGrew,
    UtterancePaused,
)
from audio.vad import DetectorFactory
from nlp.asr import AsrOptions, accept
from nlp.scheduler import FINAL, PARTIAL, SPECULATIVE
from nlp.transcript import Recognition, RecognitionContext, Transcriber

NET_FRAME = 320  # 20 ms at 16 kHz: audio reaches the server in these steps


@dataclass(frozen=True, slots=True)
class StreamConfig:
    segmenter: SegmenterOptions = field(default_factory=SegmenterOptions)
    partials: bool = True
    context: Literal["none", "finals"] = "none"
    prompt_finals: int = 6  # how many recent finals make the prompt
    hotwords: tuple[str, ...] = ()
    asr: AsrOptions = field(default_factory=AsrOptions)


@dataclass(frozen=True, slots=True)
class Final:
    speaker: str
    text: str
    start_s: float  # the utterance's clip, call time
    words_end_s: float  # last word's end, call time (clip end when no words)
    emitted_s: float  # virtual wall time the final was emitted


@dataclass(slots=True)
class _Job:
    priority: int
    key: str
    audio: Samples
    with_words: bool
    context: RecognitionContext
    discarded: bool = False
    result: Recognition | None = None
    done_s: float | None = None


@dataclass(slots=True)
class _Pending:
    speaker: str
    event: UtteranceEnded
    job: _Job
    ended_s: float


@dataclass(slots=True)
class StreamResult:
    finals: list[Final] = field(default_factory=list)
    busy_s: float = 0.0
    decodes: int = 0


def speech_events(
    channels: dict[str, Samples], detectors: DetectorFactory, options: SegmenterOptions
) -> list[tuple[float, int, SpeechEvent]]:
    """(arrival time, order, event) of every channel's segmenter events, in time order."""
    out: list[tuple[float, int, SpeechEvent]] = []
    seq = itertools.count()
    for speaker, audio in channels.items():
        detector = detectors()
        seg = Segmenter(speaker, options)  # type: ignore[arg-type]
        n = detector.frame_samples
        for i in range(0, len(audio) - len(audio) % n, n):
            frame = audio[i : i + n]
            arrival = -(-(i + n) // NET_FRAME) * NET_FRAME / SAMPLE_RATE_HZ
            for event in seg.feed(frame, detector.probability(frame)):
                out.append((arrival, next(seq), event))
        for event in seg.finish():
            out.append((len(audio) / SAMPLE_RATE_HZ, next(seq), event))
    out.sort(key=lambda x: (x[0], x[1]))
    return out


class StreamSimulation:
    """One call through the scheduler policy on a virtual clock."""

    def __init__(self, transcriber: Transcriber, config: StreamConfig) -> None:
        self._t = transcriber
        self._cfg = config
        self._queue: list[tuple[int, int, _Job]] = []
        self._seq = itertools.count()
        self._partials: dict[str, _Job] = {}
        self._spec: dict[str, tuple[_Job, int]] = {}
        self._pending: list[_Pending] = []
        self._last_emit: dict[str, float] = {}
        self.result = StreamResult()

    def run(self, events: list[tuple[float, int, SpeechEvent]]) -> StreamResult:
        now, i = 0.0, 0
        while i < len(events) or self._queue:
            if not self._queue:
                now = max(now, events[i][0])
            while i < len(events) and events[i][0] <= now:
                self._handle(events[i][2], events[i][0])
                self._emit_ready()
                i += 1
            job = self._next_job()
            if job is None:
                continue
            t0 = time.perf_counter()
            job.result = self._t.recognize(
                job.audio, with_words=job.with_words, context=job.context
            )
            spent = time.perf_counter() - t0
            now += spent
            job.done_s = now
            self.result.busy_s += spent
            self.result.decodes += 1
            self._emit_ready()
        self._emit_ready()
        return self.result

    def _next_job(self) -> _Job | None:
        while self._queue:
            _, _, job = heapq.heappop(self._queue)
            if job.discarded:
                continue
            if job.priority == PARTIAL:
                self._partials.pop(job.key, None)
            return job
        return None

    def _submit(self, priority: int, key: str, audio: Samples, words: bool, at_s: float) -> _Job:
        job = _Job(priority, key, audio, words, self._context(at_s))
        if priority == PARTIAL:
            old = self._partials.pop(key, None)
            if old is not None:
                old.discarded = True
            self._partials[key] = job
        heapq.heappush(self._queue, (priority, next(self._seq), job))
        return job

    def _context(self, at_s: float) -> RecognitionContext:
        if self._cfg.context == "none":
            return RecognitionContext(hotwords=self._cfg.hotwords)
        done = [f for f in self.result.finals if f.emitted_s <= at_s]
        done.sort(key=lambda f: f.start_s)
        prompt = " ".join(f.text for f in done[-self._cfg.prompt_finals :])
        return RecognitionContext(prompt=prompt, hotwords=self._cfg.hotwords)

    def _handle(self, event: SpeechEvent, at_s: float) -> None:
        if isinstance(event, UtteranceGrew) and self._cfg.partials:
            self._submit(PARTIAL, event.utterance_id, event.samples, False, at_s)
        elif isinstance(event, UtterancePaused):
            old = self._spec.pop(event.utterance_id, None)
            if old is not None:
                old[0].discarded = True
            job = self._submit(SPECULATIVE, event.utterance_id, event.samples, True, at_s)
            self._spec[event.utterance_id] = (job, len(event.samples))
        elif isinstance(event, UtteranceEnded):
            spec = self._spec.pop(event.utterance_id, None)
            if spec is not None and spec[1] == len(event.samples) and not spec[0].discarded:
                job = spec[0]
            else:
                if spec is not None:
                    spec[0].discarded = True
                job = self._submit(FINAL, event.utterance_id, event.samples, True, at_s)
            self._pending.append(_Pending(event.speaker, event, job, at_s))
        elif isinstance(event, UtteranceDropped):
            spec = self._spec.pop(event.utterance_id, None)
            if spec is not None:
                spec[0].discarded = True

    def _emit_ready(self) -> None:
        """Finals leave in utterance order per speaker, each once its decode is done."""
        still: list[_Pending] = []
        blocked: set[str] = set()
        for p in self._pending:
            if p.speaker in blocked or p.job.done_s is None or p.job.result is None:
                blocked.add(p.speaker)
                still.append(p)
                continue
            emitted = max(p.job.done_s, p.ended_s, self._last_emit.get(p.speaker, 0.0))
            self._last_emit[p.speaker] = emitted
            ok = accept(p.job.result, self._cfg.asr)
            if ok is None:
                continue
            start = p.event.start_sample / SAMPLE_RATE_HZ
            end = start + (
                ok.words[-1].end_s if ok.words else len(p.event.samples) / SAMPLE_RATE_HZ
            )
            self.result.finals.append(Final(p.speaker, ok.text, start, end, emitted))
        self._pending = still


def stream(
    channels: dict[str, Samples],
    transcriber: Transcriber,
    detectors: DetectorFactory,
    config: StreamConfig,
) -> StreamResult:
    """Finals, busy time and decode count of one call (one or two channels)."""
    events = speech_events(channels, detectors, config.segmenter)
    return StreamSimulation(transcriber, config).run(events)
