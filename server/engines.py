"""Start-up: load every model once, warm it, and open the store. A missing model or extra
fails here, with the command that fixes it, never at a call's first utterance."""

from __future__ import annotations

import logging

from audio.segmenter import SegmenterOptions
from audio.vad import DetectorFactory
from models.registry import silero_path, whisper_path
from models.vad import silero_factory, webrtc_factory
from models.whisper import WhisperOptions, WhisperTranscriber
from nlp.asr import AsrOptions, AsrScheduler
from server.session import Engines
from server.settings import Settings
from server.store import CallStore

log = logging.getLogger(__name__)


def load_transcriber(settings: Settings) -> WhisperTranscriber:
    path = whisper_path(settings.model)
    transcriber = WhisperTranscriber(
        path, WhisperOptions(model=settings.model, cpu_threads=settings.asr_threads)
    )
    transcriber.warmup()
    return transcriber


def load_detectors(settings: Settings) -> DetectorFactory:
    return silero_factory(silero_path()) if settings.vad == "silero" else webrtc_factory()


def segmenter_options(settings: Settings) -> SegmenterOptions:
    return SegmenterOptions(
        min_silence_ms=settings.min_silence_ms,
        partial_every_ms=settings.partial_every_ms,
        max_utterance_s=settings.max_utterance_s,
    )


def load_engines(settings: Settings) -> Engines:
    transcriber = load_transcriber(settings)
    log.info("loaded %s (%d threads), VAD %s", transcriber.name, settings.asr_threads, settings.vad)
    return Engines(
        scheduler=AsrScheduler(transcriber),
        detectors=load_detectors(settings),
        segmenter=segmenter_options(settings),
        asr=AsrOptions(),
    )


async def open_store(settings: Settings) -> CallStore:
    if settings.store == "sqlite":
        from server.sqlite_store import SqliteCallStore

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return await SqliteCallStore.open(settings.data_dir / "calls.sqlite3")
    from server.redis_store import RedisCallStore

    return await RedisCallStore.open(settings.store)
