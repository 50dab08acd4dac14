"""One call: the place where the stages meet.

```
feed(chunks) -> per-speaker bounded queue -> segment() -> transcribe() -> redact -> emit
   transcript -> coach -> emit;  final (or customer partial) -> insight -> emit -> coach -> emit
   audio time advancing -> coach.tick -> emit;  end -> summary -> emit -> webhooks
```

``emit`` stores an event before any viewer sees it (partials are shown, never stored). Audio
queues block the producer when full: back-pressure reaches the socket, audio is never
dropped; partial recognitions may be dropped by the scheduler, finals never. A failing stage
after ASR degrades the call with a ``status`` event instead of ending it; only the transport
ends a session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from audio.chunk import AudioChunk, Speaker, samples_to_s
from audio.prosody import ProsodyTracker
from audio.segmenter import (
    SegmenterOptions,
    SpeechEvent,
    SpeechStarted,
    UtteranceDropped,
    segment,
)
from audio.vad import DetectorFactory
from guidance.coach import CardActionRejected, Coach
from guidance.playbook import Playbook
from guidance.score import PriorError, ScoreModel, parse_prior
from guidance.summary import Summarizer
from nlp.analyze import Analyzer
from nlp.asr import AsrOptions, AsrScheduler, transcribe
from nlp.insight import Insight
from nlp.redaction import Redactor
from nlp.transcript import Transcript
from server.bus import Bus
from server.store import CallMeta, CallStatus, CallStore
from server.webhooks import WebhookSender, call_date_of, hand_off_call
from server.wire import Status, StatusState, to_wire

log = logging.getLogger(__name__)
T = TypeVar("T")

@dataclass(frozen=True, slots=True)
class Engines:
    """What every call shares: loaded once at start-up."""

    scheduler: AsrScheduler
    detectors: DetectorFactory
    segmenter: SegmenterOptions
    asr: AsrOptions
    redactor: Redactor
    analyzer: Analyzer
    playbook: Playbook
    score_model: ScoreModel
    summarizer: Summarizer
    webhooks: WebhookSender | None = None
    # one thread for text analysis and prosody: off the loop, never competing with itself
    nlp_executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="nlp")
    )
    audio_queue_chunks: int = 200  # per speaker: 4 s of 20 ms frames
    tick_every_s: float = 0.25


TranscriptHook = Callable[[Transcript], Transcript]


class CallSession:
    def __init__(
        self,
        meta: CallMeta,
        speakers: tuple[Speaker, ...],
        engines: Engines,
        store: CallStore,
        bus: Bus,
    ) -> None:
        self.meta = meta
        self.call_id = meta.call_id
        self.engines = engines
        self._store = store
        self._bus = bus
        self._queues: dict[Speaker, asyncio.Queue[AudioChunk | None]] = {
            s: asyncio.Queue(engines.audio_queue_chunks) for s in speakers
        }
        self._task: asyncio.Task[None] | None = None
        self._audio_end_sample = 0
        self._ticked_s = 0.0
        # Utterances heard but not yet transcribed (start audio time): the coach's clock stops
        # at the oldest, so a silence or unanswered-question alert never fires while the words
        # that would cancel it are still in the recognizer (issue 4: alerts under ASR lag).
        self._unsettled: dict[str, float] = {}
        self._segmented: dict[Speaker, int] = dict.fromkeys(speakers, 0)  # end sample, per VAD
        self._prosody = ProsodyTracker()
        self._call_date = call_date_of(meta.started_at)  # what "by Friday" counts from
        self._coach: Coach | None = None
        self._lock = asyncio.Lock()  # coach events are emitted in the order the coach made them
        self.finals = 0

    @property
    def audio_s(self) -> float:
        return samples_to_s(self._audio_end_sample)

    async def start(self) -> None:
        await self._store.open_call(self.meta)
        await self._emit(Status("live", "audio stream open", 0.0), durable=True)
        try:
            prior = parse_prior(self.meta.prior)
        except PriorError as err:
            prior = None
            await self._emit(Status("degraded", f"prior ignored: {err}", 0.0), durable=True)
        self._coach = Coach(self.engines.playbook, self.engines.score_model, prior)
        await self._coached(self._coach.start())
        self._task = asyncio.create_task(self._pipeline(), name=f"call-{self.call_id}")

    async def feed(self, chunks: list[AudioChunk]) -> None:
        for chunk in chunks:
            queue = self._queues.get(chunk.speaker)
            if queue is None:
                raise ValueError(f"speaker {chunk.speaker!r} was not declared for this call")
            await queue.put(chunk)
            self._audio_end_sample = max(self._audio_end_sample, chunk.end_sample)
        if self._coach is not None and self.audio_s - self._ticked_s >= self.engines.tick_every_s:
            self._ticked_s = self.audio_s
            await self._coached(self._coach.tick(self.transcribed_through_s))

    @property
    def transcribed_through_s(self) -> float:
        """Audio time before which every utterance has its final (or was silence): the VAD
        has seen every channel's audio up to it, and no utterance that started before it is
        still in the recognizer. (Speech the VAD has not yet confirmed, at most a frame or
        two, is what the playbook's ``transcript_lag_s`` allows for.)"""
        vad_s = min(
            self.audio_s if queue.empty() else samples_to_s(self._segmented[speaker])
            for speaker, queue in self._queues.items()
        )
        return min([vad_s, *self._unsettled.values()])

    async def finish(self, state: StatusState = "ended", detail: str = "call ended") -> None:
        """Close the audio, let every utterance in flight reach its final, then end the call."""
        for queue in self._queues.values():
            await queue.put(None)
        if self._task is not None:
            await self._task
        if self._coach is not None:
            await self._coached(self._coach.tick(self.audio_s))
        call_status: CallStatus = "ended" if state == "ended" else "interrupted"
        await self._summarize(call_status)
        await self._emit(Status(state, detail, self.audio_s), durable=True)
        await self._store.close_call(self.call_id, call_status)
        self._bus.end(self.call_id)

    async def act(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """A message from the rep's page (a card action). Card changes go to every viewer;
        a rejection goes back to the sender only."""
        if self._coach is None:
            return [{"type": "error", "detail": "call is not live"}]
        replies = []
        for event in self._coach.act(message):
            if isinstance(event, CardActionRejected):
                replies.append(to_wire(event))
            else:
                await self._coached([event])
        return replies

    async def _summarize(self, call_status: CallStatus) -> None:
        """The call's summary from what was stored, stored with the call, handed to the
        webhooks, then shown; a failure degrades, never loses the call."""
        try:
            summary = await hand_off_call(
                self._store,
                self.engines.summarizer,
                self.engines.webhooks,
                self.call_id,
                call_status,
            )
            await self._emit(summary, durable=True)
        except Exception:
            log.exception("call %s: summary failed", self.call_id)
            await self._emit(Status("degraded", "summary failed", self.audio_s), durable=True)

    async def abort(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _pipeline(self) -> None:
        speech: asyncio.Queue[SpeechEvent | None] = asyncio.Queue()
        async with asyncio.TaskGroup() as tg:
            feeders = [
                tg.create_task(self._segment(speaker, queue, speech))
                for speaker, queue in self._queues.items()
            ]

            async def close_when_done() -> None:
                await asyncio.gather(*feeders)
                speech.put_nowait(None)

            tg.create_task(close_when_done())
            async for transcript in transcribe(
                _drain(speech), self.engines.scheduler, self.engines.asr, self._settled
            ):
                await self._on_transcript(transcript)

    async def _segment(
        self,
        speaker: Speaker,
        queue: asyncio.Queue[AudioChunk | None],
        out: asyncio.Queue[SpeechEvent | None],
    ) -> None:
        detector = self.engines.detectors()

        async def chunks() -> AsyncIterator[AudioChunk]:
            async for chunk in _drain(queue):
                yield chunk  # resumes when the segmenter asks for more: this one is done
                self._segmented[speaker] = chunk.end_sample

        async for event in segment(chunks(), detector, self.engines.segmenter, speaker):
            if isinstance(event, SpeechStarted):
                self._unsettled[event.utterance_id] = samples_to_s(event.start_sample)
            elif isinstance(event, UtteranceDropped):
                self._settled(event.utterance_id)
            out.put_nowait(event)

    def _settled(self, utterance_id: str) -> None:
        self._unsettled.pop(utterance_id, None)

    async def _on_transcript(self, raw: Transcript) -> None:
        transcript = self.engines.redactor.transcript(raw)
        await self._emit(transcript, durable=transcript.is_final)
        assert self._coach is not None
        await self._coached(self._coach.observe_transcript(transcript))
        if transcript.is_final:
            self.finals += 1
            self._settled(transcript.utterance_id)
        if transcript.is_final or transcript.speaker == "customer":
            try:
                insight = await asyncio.get_running_loop().run_in_executor(
                    self.engines.nlp_executor, self._insight, transcript
                )
            except Exception:
                log.exception(
                    "call %s: insight failed for %s", self.call_id, transcript.utterance_id
                )
                await self._emit(Status("degraded", "insight failed", self.audio_s), durable=False)
                return
            await self._emit(insight, durable=insight.is_final)
            await self._coached(self._coach.observe_insight(insight))

    def _insight(self, t: Transcript) -> Insight:
        """Blocking: text analysis, and prosody for finals (it needs the audio)."""
        text = self.engines.analyzer.analyze(t.text, call_date=self._call_date)
        prosody = None
        if t.is_final and t.audio is not None:
            spans = [(w.start_s, w.end_s) for w in t.words]
            prosody = self._prosody.observe(t.speaker, t.audio, spans, offset_s=t.audio_start_s)
        return Insight(
            utterance_id=t.utterance_id,
            speaker=t.speaker,
            is_final=t.is_final,
            text=t.text,
            start_s=t.start_s,
            end_s=t.end_s,
            label=text.intent.label,
            confidence=text.intent.confidence,
            scores=text.intent.scores,
            entities=text.entities,
            sentiment=text.sentiment,
            prosody=prosody,
        )

    async def _coached(self, events: list[Any]) -> None:
        async with self._lock:
            for event in events:
                await self._emit(event, durable=not getattr(event, "provisional", False))

    async def _emit(self, event: Any, *, durable: bool) -> None:
        wire = to_wire(event)
        if durable:
            wire["seq"] = await self._store.append(self.call_id, wire)
        self._bus.publish(self.call_id, wire)


async def _drain(queue: asyncio.Queue[T | None]) -> AsyncIterator[T]:
    while (item := await queue.get()) is not None:
        yield item
