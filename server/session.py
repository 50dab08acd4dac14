"""One call: the session builds the call's chain of stages, drives the coach, and emits.

```
socket -> ingest (server/ingest.py, audio/codec.py) -> feed() -> audio queue
  -> segment()     audio/segmenter.py   AudioChunk -> SpeechEvent (VAD on the loop)
  -> diarize()     audio/diarize.py     one mixed channel: each utterance's end labelled
                                        rep | customer | unknown (voice encoder thread)
  -> transcribe()  nlp/asr.py           SpeechEvent -> Transcript | UtteranceSilent
  -> redact()      nlp/redaction.py     Transcript -> Transcript (redacted)
  -> insights()    nlp/insight.py       + Insight | InsightFailed (nlp thread)
  -> coach inbox   (+ Tick from feed(), CardAction from act())
  -> coach driver  guidance/coach.py    + Card | Score
  -> emit          store (durable events) -> bus -> viewers
```

Queues, each bounded with a stated policy: the audio queue (``audio_queue_chunks``; a full
queue blocks ``feed``, so back-pressure reaches the socket and audio is never dropped); the
recognizer's jobs (``nlp.scheduler.AsrScheduler``: a newer partial replaces an older one, at most
``max_pending_finals`` finals, then ``submit_final`` waits); the recognizer's output
(``nlp.asr.TranscriptQueue``: finals wait, partials replace or drop); the coach inbox
(``coach_inbox``; transcripts, insights and card actions wait, a tick is skipped while one is
still queued). ``emit`` stores an event before any viewer sees it (partials are shown, never
stored); durable events go through the call's ``server.outbox.StoreOutbox``, which holds them
in order while the store is down, and the end of the call (summary, status, close) follows
them there. A failing stage after the recognizer degrades the call with a ``status`` event
instead of ending it; only the transport ends a session. When the recognizer sheds live
partials (``server.overload``) the rep is told with a ``degraded`` status, not stored, and with
``live`` once it has caught up.

What the call shows the operator: the latencies of what it publishes (``server.latency``)
and the seconds its store appends take go to ``Engines.metrics``; ``start`` binds the call to
the log lines of its tasks (``server.logs``); each final is logged, its text only when asked
(``CUECARD_LOG_TRANSCRIPTS``).

The coach has one driver, the task that reads the inbox, so its events keep the order it
made them in without a lock. Its clock is ``Progress.through_s`` (audio/progress.py): the
audio before which every utterance is transcribed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from audio.chunk import AudioChunk, Speaker
from audio.diarize import Diarizer, DiarizerOptions, VoiceEncoder, diarize
from audio.progress import Progress
from audio.segmenter import SegmenterOptions, segment
from audio.vad import DetectorFactory
from guidance.coach import CardActionRejected, Coach, CoachEvent
from guidance.playbook import Playbook
from guidance.score import PriorError, ScoreModel, parse_prior
from guidance.summary import Summarizer
from nlp.analyze import Analyzer
from nlp.asr import AsrOptions, StreamStats, UtteranceSilent, transcribe
from nlp.insight import Insight, InsightFailed, insights
from nlp.redaction import Redactor, redact
from nlp.scheduler import AsrScheduler
from nlp.transcript import Transcript
from server.bus import Bus
from server.clock import call_date_of
from server.handoff import hand_off_call
from server.ingest import TRY_AGAIN_LATER, ProtocolError
from server.latency import LatencyProbe
from server.logs import TRANSCRIPT_FIELD, TRANSCRIPTS, bind_call
from server.metrics import Metrics, TimedExecutor
from server.outbox import OutboxOptions, StoreOutbox
from server.overload import OverloadWatch
from server.store import CallMeta, CallStatus, CallStore, StoreError
from server.voiceprints import VoiceprintStore
from server.webhooks import WebhookSender
from server.wire import END_STATES, Status, StatusState, WireEvent, is_durable, to_wire

log = logging.getLogger(__name__)
transcripts_log = logging.getLogger(TRANSCRIPTS)
OVERLOADED = "server busy: live partials paused"
CAUGHT_UP = "server caught up: live partials resumed"


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
    # a call of one ``unknown`` channel is diarized when a voice encoder is loaded
    voices: VoiceEncoder | None = None
    voiceprints: VoiceprintStore | None = None
    diarizer: DiarizerOptions = field(default_factory=DiarizerOptions)
    voice_executor: ThreadPoolExecutor = field(
        default_factory=lambda: TimedExecutor(1, thread_name_prefix="voices")
    )
    # one thread for text analysis and prosody: off the loop, never competing with itself
    nlp_executor: ThreadPoolExecutor = field(
        default_factory=lambda: TimedExecutor(1, thread_name_prefix="nlp")
    )
    metrics: Metrics = field(default_factory=Metrics)  # GET /metrics (server.metrics)
    audio_queue_chunks: int = 400  # 4 s of 20 ms frames of a two-channel call
    coach_inbox: int = 64
    tick_every_s: float = 0.25
    outbox: OutboxOptions = field(default_factory=OutboxOptions)  # durable events, store down

    async def aclose(self) -> None:
        """Stop the recognizer and the worker threads (their queued work finished first)."""
        await self.scheduler.stop()
        for executor in (self.nlp_executor, self.voice_executor):
            executor.shutdown(wait=True)


@dataclass(frozen=True, slots=True)
class Tick:
    """Audio time moved on: time-driven alerts may be due."""


@dataclass(frozen=True, slots=True)
class CardAction:
    """A message from the rep's page, and where the replies for its sender go."""

    message: dict[str, Any]
    replies: asyncio.Future[list[dict[str, Any]]]


ChainEvent = Transcript | UtteranceSilent | Insight | InsightFailed
CoachInput = ChainEvent | Tick | CardAction


class CallSession:
    def __init__(
        self,
        meta: CallMeta,
        speakers: tuple[Speaker, ...],
        engines: Engines,
        store: CallStore,
        bus: Bus,
        vocabulary: tuple[str, ...] = (),
    ) -> None:
        self.meta = meta
        # the recognizer's hotwords: the playbook's names, then this call's (start message)
        hints = dict.fromkeys((*engines.playbook.vocabulary_hints(), *vocabulary))
        self._asr = replace(engines.asr, hotwords=tuple(hints))
        self.call_id = meta.call_id
        self.engines = engines
        self.progress = Progress(speakers)
        self._mixed = speakers == ("unknown",)  # one channel carries both voices
        self._diarizer: Diarizer | None = None
        self._store = store
        self._bus = bus
        self._audio: asyncio.Queue[AudioChunk | None] = asyncio.Queue(engines.audio_queue_chunks)
        self._inbox: asyncio.Queue[CoachInput | None] = asyncio.Queue(engines.coach_inbox)
        self._task: asyncio.Task[None] | None = None
        self._coach: Coach | None = None
        self._ticked_s = 0.0
        self._tick_queued = False
        self._closed = False  # the coach takes no more card actions
        self._finishing = False  # finish() has begun
        self.finals = 0
        self._latency = LatencyProbe()
        self._overload = OverloadWatch()
        self._asr_stats = StreamStats()  # this call's lost partials: what the watch reads
        self._ended = False  # the call is closed in the store
        self._outbox = StoreOutbox(
            self.call_id, store, self._publish, engines.outbox, on_hold=self._storage_held
        )

    @property
    def audio_s(self) -> float:
        return self.progress.audio_s

    @property
    def overloaded(self) -> bool:
        """The rep was told live partials are paused (``server.overload``)."""
        return self._overload.degraded

    @property
    def transcribed_through_s(self) -> float:
        """The coach's clock: see ``audio.progress.Progress``."""
        return self.progress.through_s

    async def start(self) -> None:
        bind_call(self.call_id, self.meta.rep_id)  # this task's and the call's log lines
        log.info("call started (%s)", self.meta.source)
        try:
            await self._store.open_call(self.meta)
        except StoreError as exc:  # no call is opened while the store is down
            raise ProtocolError(TRY_AGAIN_LATER, f"call storage unavailable: {exc}") from exc
        await self._emit(Status("live", "audio stream open", 0.0))
        try:
            prior = parse_prior(self.meta.prior)
        except PriorError as err:
            prior = None
            await self._emit(Status("degraded", f"prior ignored: {err}", 0.0))
        self._coach = Coach(self.engines.playbook, self.engines.score_model, prior)
        if self._mixed:
            await self._start_diarizer()
        for event in self._coach.start():
            await self._emit(event)
        self._task = asyncio.create_task(self._run(self._coach), name=f"call-{self.call_id}")

    async def feed(self, chunks: list[AudioChunk]) -> None:
        """Audio from the transport; waits while the audio queue is full (back-pressure).
        Raises ``ProtocolError`` (1011; the call ends interrupted) once events were lost."""
        if self._outbox.failed:
            raise ProtocolError(1011, "call storage unavailable: the call cannot be stored whole")
        for chunk in chunks:
            self.progress.received(chunk.speaker, chunk.end_sample)  # raises for a stranger
            await self._audio.put(chunk)
        self._latency.arrived(self.audio_s, asyncio.get_running_loop().time())
        due = self.audio_s - self._ticked_s >= self.engines.tick_every_s
        if self._task is not None and due and not self._tick_queued and not self._inbox.full():
            self._ticked_s, self._tick_queued = self.audio_s, True
            self._inbox.put_nowait(Tick())  # a full inbox skips the tick: the next one comes

    async def finish(
        self, state: StatusState = "ended", detail: str = "call ended", *, by: float | None = None
    ) -> None:
        """Close the audio, let every utterance in flight reach its final, then end the call
        (summary stored, shown and handed off; closing status; record closed). Once per call:
        a second call returns at once. ``by`` (event-loop time; the drain's deadline): what is
        not done by then is cut off, the chain cancelled and no summary made, and the call
        ends ``interrupted``."""
        if self._finishing:
            return
        self._finishing = True
        # the record and the webhook say how the call really ended; a non-final state
        # (live, degraded) passed here means it was cut off
        call_status: CallStatus = state if state in END_STATES else "interrupted"
        budget = asyncio.timeout_at(by)
        summarize = True
        try:
            async with budget:
                await self._audio.put(None)
                if self._task is not None:
                    await self._task
        except TimeoutError:
            if not budget.expired():
                raise
            await self._cancel_chain()
            state = call_status = "interrupted"
            detail = f"{detail}: not finished within the shutdown drain"
            summarize = False
        # after every held event, each step retried while the store is down (server.outbox)
        if summarize:
            self._outbox.then(lambda: self._summarize(call_status))
        self._outbox.then(lambda: self._closing(state, detail))
        self._outbox.then(lambda: self._close_call(call_status))
        try:
            async with asyncio.timeout_at(by):
                settled = await self._outbox.settle()
        except TimeoutError:
            settled = False
        if not settled:
            log.warning(
                "call %s ended while its store is unavailable or slow: its end is stored once "
                "the store answers (or it is marked interrupted at the next start)",
                self.call_id,
            )

    async def _cancel_chain(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # we are cancelled too: go on
                    raise

    async def act(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """A message from the rep's page (a card action). Card changes go to every viewer;
        the replies (a rejection) go back to the sender only."""
        if self._task is None or self._closed:
            return [{"type": "error", "detail": "call is not live"}]
        replies: asyncio.Future[list[dict[str, Any]]] = asyncio.get_running_loop().create_future()
        await self._inbox.put(CardAction(message, replies))
        return await replies

    async def _run(self, coach: Coach) -> None:
        """The chain up to the coach's inbox, and the coach's one driver."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._fill_inbox())
            while (item := await self._inbox.get()) is not None:
                await self._drive(coach, item)
            self._closed = True
            while not self._inbox.empty():  # card actions that came after the last audio
                await self._drive(coach, self._inbox.get_nowait() or Tick())
            await self._drive(coach, Tick(), final=True)

    async def _start_diarizer(self) -> None:
        """A mixed call's speaker labeller, with the rep's voiceprint when one is enrolled;
        without a voice encoder every speaker stays ``unknown`` (and the rep is told)."""
        e = self.engines
        if e.voices is None:
            await self._emit(Status("degraded", "one mixed channel: speakers unknown", 0.0))
            return
        store, name = e.voiceprints, e.voices.name
        enrolled = await asyncio.to_thread(store.load, self.meta.rep_id, name) if store else None
        self._diarizer = Diarizer(e.diarizer, enrolled)

    def _chain(self) -> AsyncIterator[ChainEvent]:
        e = self.engines
        speech = segment(_drain(self._audio), e.detectors, e.segmenter, self.progress)
        if self._diarizer is not None and e.voices is not None:
            speech = diarize(speech, e.voices, e.voice_executor, self._diarizer)
        texts = redact(transcribe(speech, e.scheduler, self._asr, self._asr_stats), e.redactor)
        call_date = call_date_of(self.meta.started_at)  # what "by Friday" counts from
        return insights(texts, e.analyzer, e.nlp_executor, call_date)

    async def _fill_inbox(self) -> None:
        async for event in self._chain():
            await self._inbox.put(event)
        await self._inbox.put(None)

    async def _drive(self, coach: Coach, item: CoachInput, *, final: bool = False) -> None:
        """One inbox item: the chain's event is emitted, then what the coach makes of it."""
        out: list[CoachEvent] = []
        if isinstance(item, Tick):
            self._tick_queued = False
            await self._watch_overload()
            out = coach.tick(self.audio_s if final else self.progress.through_s)
        elif isinstance(item, CardAction):
            replies = []
            for event in coach.act(item.message):
                if isinstance(event, CardActionRejected):
                    replies.append(to_wire(event))
                else:
                    out.append(event)
            item.replies.set_result(replies)
        elif isinstance(item, Transcript):
            await self._emit(item)
            out = coach.observe_transcript(item)
            if item.is_final:
                self.finals += 1
                self.progress.settled(item.utterance_id)
                _log_final(item)
        elif isinstance(item, Insight):
            await self._emit(item)
            out = coach.observe_insight(item)
        elif isinstance(item, InsightFailed):
            await self._emit(Status("degraded", "insight failed", self.audio_s), durable=False)
        else:
            self.progress.settled(item.utterance_id)  # silence: no words to wait for
        for event in out:
            await self._emit(event)

    async def _summarize(self, call_status: CallStatus) -> list[dict[str, Any]]:
        """The call's summary from what was stored, stored with the call, handed to the
        webhooks; the event to show. A store failure raises (the outbox retries); any other
        failure degrades, never loses the call."""
        try:
            summary = await hand_off_call(
                self._store,
                self.engines.summarizer,
                self.engines.webhooks,
                self.call_id,
                call_status,
            )
        except StoreError:
            raise
        except Exception:
            log.exception("call %s: summary failed", self.call_id)
            return [to_wire(Status("degraded", "summary failed", self.audio_s))]
        return [to_wire(summary)]

    async def _closing(self, state: StatusState, detail: str) -> list[dict[str, Any]]:
        return [to_wire(Status(state, detail, self.audio_s))]

    async def _close_call(self, call_status: CallStatus) -> list[dict[str, Any]]:
        await self._store.close_call(self.call_id, call_status)
        self._ended = True
        log.info(
            "call over (%s): %.1f s of audio, %d finals", call_status, self.audio_s, self.finals
        )
        self._bus.end(self.call_id)
        return []

    def _publish(self, wire: dict[str, Any]) -> None:
        self._bus.publish(self.call_id, wire)

    def _storage_held(self, held: bool) -> None:
        """Tell the viewers (not stored: the store is what is missing) that durable events
        wait for the store, and when it answers again."""
        if self._ended:
            return
        status = (
            Status("degraded", "call storage unavailable: transcript and cards wait for it",
                   self.audio_s)
            if held
            else Status("live", "call storage back", self.audio_s)
        )  # fmt: skip
        self._bus.publish(self.call_id, to_wire(status))

    async def _emit(self, event: WireEvent, *, durable: bool | None = None) -> None:
        """Store (what ``is_durable`` says is stored), then publish: through the outbox, which
        holds durable events in order while the store is down; the rest at once."""
        wire = to_wire(event)
        loop = asyncio.get_running_loop()
        if durable if durable is not None else is_durable(event):
            t0 = loop.time()
            await self._outbox.put(wire)  # stored, then published (held while the store is down)
            self.engines.metrics.store_append(loop.time() - t0)
        else:
            self._bus.publish(self.call_id, wire)
        if (latency := self._latency.observe(event, loop.time())) is not None:
            self.engines.metrics.latency(*latency)

    async def _watch_overload(self) -> None:
        """Tell the rep when the recognizer starts and stops shedding this call's partials."""
        stats = self._asr_stats
        shift = self._overload.observe(stats.dropped_partials, self.audio_s, stats.decoded_partials)
        if shift is not None:
            detail = OVERLOADED if shift == "degraded" else CAUGHT_UP
            log.info(
                "live partials %s", "paused: server busy" if shift == "degraded" else "resumed"
            )
            await self._emit(Status(shift, detail, self.audio_s), durable=False)


def _log_final(t: Transcript) -> None:
    """One line per final on ``cuecard.transcripts``; its text is in the ``transcript`` field,
    which the formatters leave out unless ``CUECARD_LOG_TRANSCRIPTS=1``."""
    if transcripts_log.isEnabledFor(logging.INFO):
        transcripts_log.info(
            "final %s (%s, %.2f-%.2f s)",
            t.utterance_id,
            t.speaker,
            t.start_s,
            t.end_s,
            extra={TRANSCRIPT_FIELD: t.text},
        )


async def _drain(queue: asyncio.Queue[AudioChunk | None]) -> AsyncIterator[AudioChunk]:
    while (item := await queue.get()) is not None:
        yield item
