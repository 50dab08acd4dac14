"""Speech segmentation: VAD frames in, utterance events out, for one speaker's channel.

``Segmenter.feed(frame, speech_prob)`` is the sync core; ``segment()`` is the async stage that
cuts chunks into detector frames and asks the detector. Contract, per utterance:
``SpeechStarted``, then any number of ``UtteranceGrew`` (every ``partial_every_ms`` of audio,
for partial transcripts) and ``UtterancePaused`` (a short silence: the ASR stage may decode
speculatively), then exactly one ``UtteranceEnded`` after ``min_silence_ms`` of silence, at
``max_utterance_s`` (``forced=True``; the next utterance starts at once), or at the end of the
stream. Utterances with less than ``min_speech_ms`` of speech end as ``UtteranceDropped``.
All times are sample counts at 16 kHz on the call's timeline.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field

import numpy as np

from audio.chunk import SAMPLE_RATE_HZ, AudioChunk, Samples, Speaker
from audio.progress import Progress
from audio.vad import DetectorFactory, SpeechDetector


@dataclass(frozen=True, slots=True)
class SegmenterOptions:
    threshold: float = 0.5  # speech starts above this probability
    neg_threshold: float = 0.35  # and continues until it falls below this one
    min_silence_ms: int = 300  # end-of-utterance hangover
    pause_ms: int = 128  # a pause this long triggers a speculative decode
    tail_ms: int = 128  # silence kept after the last speech frame
    pre_roll_ms: int = 192  # audio kept before the first speech frame
    min_speech_ms: int = 160
    partial_every_ms: int = 640
    max_utterance_s: float = 15.0

    def __post_init__(self) -> None:
        if not 0 < self.neg_threshold <= self.threshold < 1:
            raise ValueError("need 0 < neg_threshold <= threshold < 1")
        if not 0 < self.pause_ms <= self.min_silence_ms:
            raise ValueError("need 0 < pause_ms <= min_silence_ms")
        if self.tail_ms > self.pause_ms:
            raise ValueError("tail_ms must not exceed pause_ms (speculative audio must match)")
        if not 1.0 <= self.max_utterance_s <= 29.0:
            raise ValueError("max_utterance_s must be within [1, 29] (one Whisper window)")


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    utterance_id: str
    speaker: Speaker
    start_sample: int


@dataclass(frozen=True, slots=True)
class UtteranceGrew:
    utterance_id: str
    speaker: Speaker
    start_sample: int
    samples: Samples = field(repr=False)


@dataclass(frozen=True, slots=True)
class UtterancePaused:
    utterance_id: str
    speaker: Speaker
    start_sample: int
    samples: Samples = field(repr=False)


@dataclass(frozen=True, slots=True)
class UtteranceEnded:
    utterance_id: str
    speaker: Speaker
    start_sample: int
    samples: Samples = field(repr=False)
    forced: bool = False
    # None: the channel declared its speaker; else the diarizer's confidence (audio/diarize.py)
    speaker_confidence: float | None = None

    @property
    def end_sample(self) -> int:
        return self.start_sample + len(self.samples)


@dataclass(frozen=True, slots=True)
class UtteranceDropped:
    utterance_id: str
    speaker: Speaker


SpeechEvent = SpeechStarted | UtteranceGrew | UtterancePaused | UtteranceEnded | UtteranceDropped


def _ms(ms: int) -> int:
    return ms * SAMPLE_RATE_HZ // 1000


class Segmenter:
    """One channel's utterance state machine. Frames must be contiguous."""

    def __init__(self, speaker: Speaker, options: SegmenterOptions, first_sample: int = 0) -> None:
        self.speaker = speaker
        self.options = options
        self._next_sample = first_sample
        self._count = 0
        self._pre: deque[Samples] = deque()
        self._frames: list[Samples] = []
        self._start = 0  # first sample of the utterance (pre-roll included)
        self._speech_end = 0  # sample after the last speech frame
        self._speech_samples = 0
        self._in_speech = False
        self._paused = False
        self._grew_at = 0

    @property
    def utterance_id(self) -> str:
        return f"{self.speaker}-{self._count}"

    def feed(self, frame: Samples, speech_prob: float) -> list[SpeechEvent]:
        start = self._next_sample
        self._next_sample += len(frame)
        if not self._in_speech:
            return self._idle(frame, start, speech_prob)
        self._frames.append(frame)
        events: list[SpeechEvent] = []
        if speech_prob >= self.options.neg_threshold:
            self._speech_end = self._next_sample
            self._speech_samples += len(frame)
            self._paused = False
        silence = self._next_sample - self._speech_end
        if silence >= _ms(self.options.min_silence_ms):
            return [self._end(forced=False)]
        if not self._paused and silence >= _ms(self.options.pause_ms):
            self._paused = True
            if self._speech_samples >= _ms(self.options.min_speech_ms):
                events.append(
                    UtterancePaused(self.utterance_id, self.speaker, self._start, self._clip())
                )
        duration = self._next_sample - self._start
        if duration >= self.options.max_utterance_s * SAMPLE_RATE_HZ:
            events.append(self._end(forced=True))
            self._begin(self._next_sample)
            events.append(SpeechStarted(self.utterance_id, self.speaker, self._start))
        elif not self._paused and self._next_sample - self._grew_at >= _ms(
            self.options.partial_every_ms
        ):
            self._grew_at = self._next_sample
            audio = np.concatenate(self._frames)
            events.append(UtteranceGrew(self.utterance_id, self.speaker, self._start, audio))
        return events

    def finish(self) -> list[SpeechEvent]:
        """End of stream: close the open utterance, if any."""
        return [self._end(forced=False)] if self._in_speech else []

    def _idle(self, frame: Samples, start: int, prob: float) -> list[SpeechEvent]:
        if prob < self.options.threshold:
            self._pre.append(frame)
            while sum(len(f) for f in self._pre) > _ms(self.options.pre_roll_ms):
                self._pre.popleft()
            return []
        pre = list(self._pre)
        self._pre.clear()
        self._begin(start - sum(len(f) for f in pre))
        self._frames = [*pre, frame]
        self._speech_end = self._next_sample
        self._speech_samples = len(frame)
        return [SpeechStarted(self.utterance_id, self.speaker, self._start)]

    def _begin(self, start: int) -> None:
        self._count += 1
        self._in_speech = True
        self._paused = False
        self._start = start
        self._grew_at = start
        self._speech_end = start
        self._speech_samples = 0
        self._frames = []

    def _clip(self) -> Samples:
        """Utterance audio up to the last speech frame plus ``tail_ms``."""
        audio = np.concatenate(self._frames) if self._frames else np.zeros(0, np.float32)
        end = min(len(audio), self._speech_end - self._start + _ms(self.options.tail_ms))
        return audio[:end]

    def _end(self, *, forced: bool) -> SpeechEvent:
        self._in_speech = False
        clip = self._clip() if not forced else np.concatenate(self._frames)
        uid, speech = self.utterance_id, self._speech_samples
        self._frames = []
        if speech < _ms(self.options.min_speech_ms):
            return UtteranceDropped(uid, self.speaker)
        return UtteranceEnded(uid, self.speaker, self._start, clip, forced)


async def segment(
    chunks: AsyncIterable[AudioChunk],
    detectors: DetectorFactory,
    options: SegmenterOptions,
    progress: Progress | None = None,
) -> AsyncIterator[SpeechEvent]:
    """A call's chunks (any speakers, interleaved) -> speech events, each channel with its own
    detector and ``Segmenter``. The detector runs on the loop: Silero costs ~0.1 ms per 32 ms
    frame, less than an executor hop. ``progress`` hears of each utterance's start and of how
    far each channel's VAD has judged, as it happens."""
    channels: dict[Speaker, _Channel] = {}
    async for chunk in chunks:
        channel = channels.get(chunk.speaker)
        if channel is None:
            channel = channels[chunk.speaker] = _Channel(
                Segmenter(chunk.speaker, options, chunk.start_sample), detectors()
            )
        for event in channel.feed(chunk.samples):
            if progress is not None and isinstance(event, SpeechStarted):
                progress.started(event.utterance_id, event.start_sample)
            yield event
        if progress is not None:
            progress.heard(chunk.speaker, chunk.end_sample)
    for channel in channels.values():
        for event in channel.segmenter.finish():
            yield event


class _Channel:
    """One speaker's detector and segmenter, and the samples not yet a whole detector frame."""

    __slots__ = ("detector", "pending", "segmenter")

    def __init__(self, segmenter: Segmenter, detector: SpeechDetector) -> None:
        self.segmenter = segmenter
        self.detector = detector
        self.pending = np.zeros(0, np.float32)

    def feed(self, samples: Samples) -> list[SpeechEvent]:
        pending = np.concatenate([self.pending, samples]) if len(self.pending) else samples
        n = self.detector.frame_samples
        usable = len(pending) - len(pending) % n
        events: list[SpeechEvent] = []
        for i in range(0, usable, n):
            frame = np.ascontiguousarray(pending[i : i + n], dtype=np.float32)
            events += self.segmenter.feed(frame, self.detector.probability(frame))
        self.pending = pending[usable:]
        return events
