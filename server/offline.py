"""Offline transcription of a file through the same stages a live call uses: segment,
transcribe, redact (a printed transcript is as safe as a stored one)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import soundfile as sf

from audio.chunk import AudioChunk, Speaker
from audio.codec import ChannelDecoder, StreamFormat
from audio.segmenter import segment
from nlp.asr import AsrOptions, transcribe
from nlp.redaction import Redactor, redact
from nlp.scheduler import AsrScheduler
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
    step = int(rate) * FRAME_MS // 1000
    chunks = [
        chunk
        for i in range(0, len(audio), step)
        for chunk in decoder.feed(np.ascontiguousarray(audio[i : i + step]).tobytes())
    ]
    chunks += decoder.flush()
    speech = segment(_iterate(chunks), load_detectors(settings), segmenter_options(settings))
    stream = redact(transcribe(speech, scheduler, AsrOptions(partials=False)), Redactor())
    try:
        out = [t async for t in stream if isinstance(t, Transcript) and t.is_final]
    finally:
        await scheduler.stop()
    return sorted(out, key=lambda t: t.start_s)


async def _iterate(chunks: list[AudioChunk]) -> AsyncIterator[AudioChunk]:
    for chunk in chunks:
        yield chunk
        await asyncio.sleep(0)
