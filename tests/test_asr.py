"""The transcribe stage with the real Whisper model: one final per spoken utterance, and
utterances that hold no speech reported as settled without text."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from audio.segmenter import SpeechEvent, SpeechStarted, UtteranceEnded
from bench.realspeech import ROOT, edits, items, normalise
from clients.callgen import Turn, render
from nlp.asr import AsrOptions, UtteranceSilent, transcribe
from nlp.scheduler import AsrScheduler
from nlp.transcript import NO_CONTEXT, RecognitionContext, Transcript
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


def test_one_batch_recognizes_each_clip_as_its_own() -> None:
    """Clips of different lengths and contexts in one batch each get their own words."""
    t = load_transcriber(Settings())
    price = render((Turn("customer", "The price is too high for our team."),)).customer
    legal = render(
        (Turn("customer", "Please send the contract to our legal team before Friday."),)
    ).customer
    contexts = [
        NO_CONTEXT,
        RecognitionContext(prompt="We talked about the budget for the pilot."),
        RecognitionContext(prompt="Thanks for the call. " * 12, hotwords=("Acme", "Salesforce")),
    ]
    recs = t.recognize_batch(
        [price, legal, price], with_words=[True, False, True], contexts=contexts
    )
    assert recs is not None and len(recs) == 3
    assert "price" in recs[0].text.lower() and "price" in recs[2].text.lower()
    assert "contract" in recs[1].text.lower()
    assert recs[0].words and not recs[1].words and recs[2].words
    clip_s = len(price) / 16_000
    assert all(0 <= w.start_s <= w.end_s <= clip_s for w in recs[0].words + recs[2].words)


def test_a_batch_prompt_fits_its_length_keeping_the_hotwords() -> None:
    """A prompt trimmed for a batch drops its oldest transcript tokens before any hotword."""
    t = load_transcriber(Settings())
    context = RecognitionContext(prompt="one two three four five six seven", hotwords=("Acme",))
    full = t.decoder_prompt(context)
    plain = t.decoder_prompt(NO_CONTEXT)
    hot_ids, prev_ids = t.prompt_parts(context)
    fit = len(full) - len(plain) - 3
    trimmed = t.decoder_prompt(context, fit)
    assert len(trimmed) - len(plain) == fit
    assert trimmed[1 : 1 + len(hot_ids)] == hot_ids
    assert trimmed[-len(plain) - 1] == prev_ids[-1]  # the newest prompt token stays


LIBRI = ROOT / "read/librispeech_test_clean"
needs_real_speech = pytest.mark.skipif(
    not LIBRI.exists(), reason="needs the real-speech set (CUECARD_REAL_SPEECH)"
)


def _libri(stem: str) -> tuple[np.ndarray, str]:
    (item,) = [i for i in items() if i.name == stem]
    return item.audio, item.reference


@needs_real_speech
def test_two_workers_decode_at_once_as_one_would() -> None:
    """Two threads on a two-worker transcriber get, clip for clip, the words one thread got:
    the replicas share nothing that a decode writes."""
    t = load_transcriber(Settings(asr_workers=2))
    assert t.workers == 2
    clips = [_libri(s)[0] for s in ("1320-122612-0008", "260-123286-0006", "6829-68769-0004")]
    alone = [t.recognize(c, with_words=True).text for c in clips]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda c: t.recognize(c, with_words=True).text, clips * 2))
    assert together == alone * 2
    assert all(alone)


@needs_real_speech
def test_a_long_clip_is_recognized_to_its_end() -> None:
    """A 21.5 s read sentence without a prompt: the last of its 60+ words are heard too
    (CTranslate2 stops at half of ``max_length``, which once cut this clip at 65 tokens)."""
    audio, reference = _libri("8463-287645-0007")
    rec = load_transcriber(Settings()).recognize(audio, with_words=False)
    errors, n_ref = edits(reference, rec.text)
    assert n_ref > 60
    assert len(normalise(rec.text)) >= 0.9 * n_ref
    assert errors / n_ref < 0.2
