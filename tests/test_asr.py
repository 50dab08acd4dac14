"""The transcribe stage with the real Whisper model: one final per spoken utterance, and
utterances that hold no speech reported as settled without text."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest

from audio.segmenter import SpeechEvent, SpeechStarted, UtteranceEnded
from clients.callgen import Turn, render
from nlp.asr import AsrOptions, UtteranceSilent, transcribe
from nlp.scheduler import AsrScheduler
from nlp.transcript import Transcript
from server.engines import load_transcriber
from server.settings import Settings
from tests.conftest import noise

pytestmark = pytest.mark.model


async def _events(*utterances: tuple[str, np.ndarray]) -> AsyncIterator[SpeechEvent]:
    at = 0
    for uid, samples in utterances:
        yield SpeechStarted(uid, "customer", at)
        yield UtteranceEnded(uid, "customer", at, samples)
        at += len(samples) + 16_000


async def test_noise_settles_without_a_final_and_speech_gets_one() -> None:
    speech = render((Turn("customer", "The price is too high for our team."),)).customer
    scheduler = AsrScheduler(load_transcriber(Settings()))
    try:
        out = [
            t
            async for t in transcribe(
                _events(("hiss", noise(1.5, 0.01, seed=4)), ("said", speech)),
                scheduler,
                AsrOptions(partials=False),
            )
        ]
    finally:
        await scheduler.stop()
    silent = [e.utterance_id for e in out if isinstance(e, UtteranceSilent)]
    finals = [t for t in out if isinstance(t, Transcript)]
    assert silent == ["hiss"]
    assert [(t.utterance_id, t.is_final) for t in finals] == [("said", True)]
    assert "price" in finals[0].text.lower()
