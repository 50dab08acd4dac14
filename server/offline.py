"""Offline transcription of a file through the same stages a live call uses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import soundfile as sf

from audio.chunk import AudioChunk, Speaker
from audio.codec import ChannelDecoder, StreamFormat
from audio.segmenter import SpeechEvent, segment
from nlp.asr import AsrOptions, AsrScheduler, transcribe
from nlp.transcript import Transcript
from server.engines import load_detectors, load_transcriber, segmenter_options
from server.settings import Settings

FRAME_MS = 20


async def transcribe_file(path: Path, settings: Settings) -> list[Transcript]:
    """Final transcripts of a mono (``unknown`` speaker) or stereo (rep, customer) WAV."""
    audio, rate = sf.read(str(path), dtype="int16", always_2d=True)
    speakers: tuple[Speaker, ...] = ("rep", "customer") if audio.shape[1] == 2 else ("unknown",)
    decoder = ChannelDecoder(StreamFormat("pcm16", int(rate), speakers), 1 << 30)
    scheduler = AsrScheduler(load_transcriber(settings))
    detectors = load_detectors(settings)
    opts = segmenter_options(settings)
    per_speaker: dict[Speaker, list[AudioChunk]] = {s: [] for s in speakers}
    step = int(rate) * FRAME_MS // 1000
    for i in range(0, len(audio), step):
        for chunk in decoder.feed(np.ascontiguousarray(audio[i : i + step]).tobytes()):
            per_speaker[chunk.speaker].append(chunk)
    for chunk in decoder.flush():
        per_speaker[chunk.speaker].append(chunk)

    async def events() -> AsyncIterator[SpeechEvent]:
        for speaker, chunks in per_speaker.items():
            async for event in segment(_iterate(chunks), detectors(), opts, speaker):
                yield event

    try:
        out = [t async for t in transcribe(events(), scheduler, AsrOptions(partials=False))]
    finally:
        await scheduler.stop()
    return sorted((t for t in out if t.is_final), key=lambda t: t.start_s)


async def _iterate(chunks: list[AudioChunk]) -> AsyncIterator[AudioChunk]:
    for chunk in chunks:
        yield chunk
        await asyncio.sleep(0)
