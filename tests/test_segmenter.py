"""The segmenter core, table-tested with scripted speech probabilities."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from audio.segmenter import (
    Segmenter,
    SegmenterOptions,
    SpeechStarted,
    UtteranceDropped,
    UtteranceEnded,
    UtteranceGrew,
    UtterancePaused,
)

FRAME = 512  # 32 ms


def run(probs: list[float], options: SegmenterOptions | None = None) -> list[object]:
    seg = Segmenter("customer", options or SegmenterOptions())
    events: list[object] = []
    for i, p in enumerate(probs):
        frame = np.full(FRAME, i, dtype=np.float32)  # sample values encode the frame index
        events += seg.feed(frame, p)
    return events + seg.finish()


def frames(ms: int) -> int:
    return ms * 16 // FRAME


def test_one_utterance_starts_pauses_and_ends_once() -> None:
    """Speech then silence gives one start, one pause, one end, in that order."""
    events = run([0.0] * 10 + [0.9] * frames(1000) + [0.0] * frames(600))
    kinds = [type(e) for e in events if not isinstance(e, UtteranceGrew)]
    assert kinds == [SpeechStarted, UtterancePaused, UtteranceEnded]


def test_silence_and_noise_blips_produce_no_utterance() -> None:
    """Silence yields nothing; a blip shorter than min_speech_ms is dropped, never ended."""
    assert run([0.0] * 200) == []
    events = run([0.0] * 10 + [0.9] * 2 + [0.0] * 30)
    assert [type(e) for e in events] == [SpeechStarted, UtteranceDropped]


def test_end_follows_min_silence_and_keeps_tail() -> None:
    """The end comes after min_silence_ms, and the clip ends tail_ms after the last speech."""
    opts = SegmenterOptions(min_silence_ms=320, pause_ms=128, tail_ms=128)
    probs = [0.0] * 10 + [0.9] * 40 + [0.0] * 30
    seg = Segmenter("rep", opts)
    ended_at = None
    for i, p in enumerate(probs):
        for e in seg.feed(np.full(FRAME, i, np.float32), p):
            if isinstance(e, UtteranceEnded):
                ended_at, clip_end = i, e.end_sample
    assert ended_at == 49 + 10  # 10 silent frames = 320 ms after the last speech frame
    assert clip_end == 50 * FRAME + 128 * 16


def test_pre_roll_is_included() -> None:
    """The utterance starts pre_roll_ms before the first speech frame."""
    events = run([0.0] * 20 + [0.9] * 20 + [0.0] * 20, SegmenterOptions(pre_roll_ms=192))
    start = next(e for e in events if isinstance(e, SpeechStarted))
    assert start.start_sample == 20 * FRAME - 6 * FRAME


def test_speculative_pause_audio_matches_final_when_speech_does_not_resume() -> None:
    """The paused clip equals the final clip when no speech follows the pause."""
    events = run([0.0] * 5 + [0.9] * 30 + [0.0] * 20)
    paused = next(e for e in events if isinstance(e, UtterancePaused))
    ended = next(e for e in events if isinstance(e, UtteranceEnded))
    assert np.array_equal(paused.samples, ended.samples)


def test_resumed_speech_continues_the_same_utterance() -> None:
    """A pause shorter than min_silence_ms does not end the utterance."""
    events = run([0.9] * 20 + [0.0] * 6 + [0.9] * 20 + [0.0] * 20)
    assert sum(isinstance(e, UtteranceEnded) for e in events) == 1
    assert sum(isinstance(e, UtterancePaused) for e in events) == 2


def test_long_speech_is_split_at_max_utterance() -> None:
    """Continuous speech is force-split every max_utterance_s, and the next starts at once."""
    opts = SegmenterOptions(max_utterance_s=2.0)
    events = run([0.9] * frames(5000) + [0.0] * 20, opts)
    ended = [e for e in events if isinstance(e, UtteranceEnded)]
    assert [e.forced for e in ended] == [True, True, False]
    assert ended[1].start_sample == ended[0].end_sample
    assert len({e.utterance_id for e in ended}) == 3


def test_partials_come_at_the_configured_cadence() -> None:
    """UtteranceGrew arrives every partial_every_ms of speech, never during a pause."""
    opts = SegmenterOptions(partial_every_ms=640, pre_roll_ms=0)
    events = run([0.9] * frames(3200) + [0.0] * 40, opts)
    grew = [e for e in events if isinstance(e, UtteranceGrew)]
    assert len(grew) == 5  # at 640, 1280, 1920, 2560, 3200 ms; none during the silence
    assert all(len(b.samples) > len(a.samples) for a, b in itertools.pairwise(grew))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 0.3, "neg_threshold": 0.5},
        {"pause_ms": 400},
        {"tail_ms": 200},
        {"max_utterance_s": 40},
    ],
)
def test_invalid_options_are_refused(kwargs: dict[str, float]) -> None:
    """Options that break the segmenter's contract fail at construction."""
    with pytest.raises(ValueError):
        SegmenterOptions(**kwargs)  # type: ignore[arg-type]
