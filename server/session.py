"""One call: the place where the stages meet.

```
feed(chunks) -> per-speaker bounded queue -> segment() -> transcribe() -> redact -> emit
                                                                 final -> insight -> coach -> emit
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
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

from audio.chunk import AudioChunk, Speaker, samples_to_s
from audio.segmenter import SegmenterOptions, SpeechEvent, segment
from audio.vad import DetectorFactory
from nlp.asr import AsrOptions, AsrScheduler, transcribe
from nlp.transcript import Transcript
from server.bus import Bus
from server.store import CallMeta, CallStore
from server.wire import to_wire

log = logging.getLogger(__name__)
T = TypeVar("T")

StatusState = Literal["live", "degraded", "ended", "interrupted"]


@dataclass(frozen=True, slots=True)
class Status:
    type: ClassVar[str] = "status"

    state: StatusState
    detail: str
    audio_s: float


@dataclass(frozen=True, slots=True)
class Engines:
    """What every call shares: loaded once at start-up."""

    scheduler: AsrScheduler
    detectors: DetectorFactory
    segmenter: SegmenterOptions
    asr: AsrOptions
    audio_queue_chunks: int = 200  # per speaker: 4 s of 20 ms frames


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
        self.finals = 0

    @property
    def audio_s(self) -> float:
        return samples_to_s(self._audio_end_sample)

    async def start(self) -> None:
        await self._store.open_call(self.meta)
        await self._emit(Status("live", "audio stream open", 0.0), durable=True)
        self._task = asyncio.create_task(self._pipeline(), name=f"call-{self.call_id}")

    async def feed(self, chunks: list[AudioChunk]) -> None:
        for chunk in chunks:
            queue = self._queues.get(chunk.speaker)
            if queue is None:
                raise ValueError(f"speaker {chunk.speaker!r} was not declared for this call")
            await queue.put(chunk)
            self._audio_end_sample = max(self._audio_end_sample, chunk.end_sample)

    async def finish(self, state: StatusState = "ended", detail: str = "call ended") -> None:
        """Close the audio, let every utterance in flight reach its final, then end the call."""
        for queue in self._queues.values():
            await queue.put(None)
        if self._task is not None:
            await self._task
        await self._emit(Status(state, detail, self.audio_s), durable=True)
        await self._store.close_call(self.call_id, "ended" if state == "ended" else "interrupted")
        self._bus.end(self.call_id)

    async def act(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """A message from the rep's page; returns the replies for that viewer only."""
        kind = message.get("type") if isinstance(message, dict) else None
        return [{"type": "error", "detail": f"unknown message type {kind!r}"}]

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
                _drain(speech), self.engines.scheduler, self.engines.asr
            ):
                await self._on_transcript(transcript)

    async def _segment(
        self,
        speaker: Speaker,
        queue: asyncio.Queue[AudioChunk | None],
        out: asyncio.Queue[SpeechEvent | None],
    ) -> None:
        detector = self.engines.detectors()
        async for event in segment(_drain(queue), detector, self.engines.segmenter, speaker):
            out.put_nowait(event)

    async def _on_transcript(self, transcript: Transcript) -> None:
        await self._emit(transcript, durable=transcript.is_final)
        if transcript.is_final:
            self.finals += 1

    async def _emit(self, event: Any, *, durable: bool) -> None:
        wire = to_wire(event)
        if durable:
            wire["seq"] = await self._store.append(self.call_id, wire)
        self._bus.publish(self.call_id, wire)


async def _drain(queue: asyncio.Queue[T | None]) -> AsyncIterator[T]:
    while (item := await queue.get()) is not None:
        yield item
