"""Start-up: load every model once, warm it, and open the store. A missing model or extra
fails here, with the command that fixes it, never at a call's first utterance; a playbook,
webhook or LLM configuration that its component rejects fails here too, as a ``SettingsError``
naming the variable."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from audio.diarize import VoiceEncoder
from audio.prosody import ProsodyTracker
from audio.segmenter import SegmenterOptions
from audio.vad import DetectorFactory
from guidance.errors import PlaybookError
from guidance.playbook import Playbook, load_playbook
from guidance.score import load_score_model
from guidance.summary import BuiltinSummarizer, Summarizer
from models import registry
from models.errors import ModelUnavailable
from models.registry import load_embedder
from nlp.analyze import load_analyzer
from nlp.asr import AsrOptions
from nlp.commit import CommitOptions
from nlp.redaction import Redactor
from nlp.scheduler import AsrScheduler, SchedulerOptions
from server.clock import Clock
from server.metrics import Metrics
from server.session import Engines
from server.settings import Settings, SettingsError
from server.store import CallStore
from server.voiceprints import VoiceprintStore
from server.webhooks import WebhookOptions, WebhookSender

if TYPE_CHECKING:
    from models.whisper import WhisperTranscriber

log = logging.getLogger(__name__)
_T = TypeVar("_T")


def timed(metrics: Metrics, model: str, load: Callable[[], _T]) -> _T:
    """``load()``, its seconds (loading and warming up) recorded as ``model``'s load time."""
    t0 = time.perf_counter()
    out = load()
    metrics.model_loaded(model, time.perf_counter() - t0)
    return out


def load_transcriber(settings: Settings) -> WhisperTranscriber:
    return registry.load_transcriber(
        settings.model,
        threads=settings.asr_threads,
        workers=settings.resolved_asr_workers,
        device=settings.device,
        compute_type=settings.compute_type,
    )


def scheduler_options(settings: Settings) -> SchedulerOptions:
    """Batch sizes by device. On the 2-core CPU a batch of 4 clips took 0.97x the time of the
    4 one by one (the int8 encoder dominates and gains nothing), so a batch would only make its
    first final wait for the others: one clip per call. A GPU decodes dozens in the time of one."""
    workers = settings.resolved_asr_workers
    if settings.device == "cuda":
        return SchedulerOptions(max_batch=32, max_partial_batch=32, workers=workers)
    return SchedulerOptions(max_batch=1, max_partial_batch=1, workers=workers)


def asr_options(settings: Settings) -> AsrOptions:
    """Commits of long turns only when asked for (``CUECARD_LONG_TURN_COMMIT_S``)."""
    after_s = settings.long_turn_commit_s
    commit = CommitOptions(enabled=True, after_s=after_s) if after_s > 0 else CommitOptions()
    return AsrOptions(commit=commit)


def load_detectors(settings: Settings) -> DetectorFactory:
    return registry.load_detectors(settings.vad)


def segmenter_options(settings: Settings) -> SegmenterOptions:
    return SegmenterOptions(
        min_silence_ms=settings.min_silence_ms,
        partial_every_ms=settings.partial_every_ms,
        max_utterance_s=settings.max_utterance_s,
    )


def load_summarizer(settings: Settings) -> Summarizer:
    if not settings.llm_base_url:
        return BuiltinSummarizer()
    from guidance.llm_summary import LlmOptions, LlmSummarizer

    try:
        options = LlmOptions(
            base_url=settings.llm_base_url,
            model=settings.llm_model or "gpt-4o-mini",
            api_key=settings.llm_api_key or "unused",
        )
    except ValueError as err:
        raise SettingsError(f"CUECARD_LLM_BASE_URL/CUECARD_LLM_MODEL: {err}") from err
    return LlmSummarizer(options)


def load_configured_playbook(settings: Settings) -> Playbook:
    try:
        return load_playbook(settings.playbook or None)
    except PlaybookError as err:
        raise SettingsError(f"CUECARD_PLAYBOOK: {err}") from err


def webhook_sender(
    settings: Settings, store: CallStore, clock: Clock | None = None
) -> WebhookSender | None:
    if not settings.webhook_urls:
        return None
    try:
        options = WebhookOptions(urls=settings.webhook_urls, secret=settings.webhook_secret)
    except ValueError as err:
        raise SettingsError(f"CUECARD_WEBHOOK_URLS/CUECARD_WEBHOOK_SECRET: {err}") from err
    return WebhookSender(store, options, clock=clock)


def load_engines(settings: Settings, store: CallStore, clock: Clock | None = None) -> Engines:
    """Blocking (model loads): run it off the loop. ``store`` receives webhook attempts,
    stamped by ``clock`` (the runtime's). Configuration is checked before the first model
    loads. Each model's load time goes to the engines' ``Metrics``."""
    playbook = load_configured_playbook(settings)
    summarizer = load_summarizer(settings)
    webhooks = webhook_sender(settings, store, clock)
    metrics = Metrics()
    transcriber = timed(metrics, "whisper", lambda: load_transcriber(settings))
    log.info(
        "loaded %s on %s (%s, %d workers of %d threads), VAD %s",
        transcriber.name,
        settings.device,
        transcriber.compute_type,
        transcriber.workers,
        settings.asr_threads,
        settings.vad,
    )
    analyzer = timed(metrics, "analyzer", lambda: _warm(load_analyzer(load_embedder(threads=1))))
    timed(metrics, "prosody", lambda: _warm(ProsodyTracker()))
    voices = timed(metrics, "voices", load_voices)
    detectors = timed(metrics, "vad", lambda: load_detectors(settings))
    return Engines(
        scheduler=AsrScheduler(transcriber, options=scheduler_options(settings)),
        detectors=detectors,
        segmenter=segmenter_options(settings),
        asr=asr_options(settings),
        redactor=Redactor(),
        analyzer=analyzer,
        playbook=playbook,
        score_model=load_score_model(),
        summarizer=summarizer,
        webhooks=webhooks,
        voices=voices,
        voiceprints=VoiceprintStore(settings.data_dir / "voiceprints"),
        metrics=metrics,
    )


class _Warmable(Protocol):
    def warmup(self) -> None: ...


_W = TypeVar("_W", bound=_Warmable)


def _warm(model: _W) -> _W:
    model.warmup()
    return model


def load_voices() -> VoiceEncoder | None:
    """The speaker encoder for calls of one mixed channel, warmed; None (with the command that
    fixes it in the log) when its weights are not installed: such calls keep ``unknown``."""
    try:
        encoder = registry.load_voice_encoder()
    except ModelUnavailable as err:
        log.warning("mixed mono calls will not be diarized: %s", err)
        return None
    encoder.warmup()
    return encoder


async def open_store(settings: Settings, clock: Clock | None = None) -> CallStore:
    """The configured store; ``clock`` (the runtime's) stamps call ends and retention."""
    if settings.store == "sqlite":
        from server.sqlite_store import SqliteCallStore

        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return await SqliteCallStore.open(settings.data_dir / "calls.sqlite3", clock=clock)
    from server.redis_store import RedisCallStore

    return await RedisCallStore.open(
        settings.store, instance_id=settings.instance_id or None, clock=clock
    )
