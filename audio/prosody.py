"""Prosody of one utterance, z-scored against the same speaker's running baseline in the call.

``ProsodyTracker`` is a sync core, one per call, holding one baseline per speaker::

    tracker = ProsodyTracker(ProsodyOptions())
    tracker.warmup()  # once at start-up: loads librosa's pitch module (seconds, cold)
    prosody = tracker.observe(t.speaker, t.audio, [(w.start_s, w.end_s) for w in t.words],
                              offset_s=t.start_s)

Inputs. ``samples`` is the utterance's 16 kHz mono float32 audio; word spans are
``(start_s, end_s)`` pairs on the same time axis as ``offset_s`` (call time for a
``Transcript``'s words, whose audio starts at ``transcript.start_s``), so a span's position in
the clip is ``start_s - offset_s``. Plain pairs keep ``audio`` independent of ``nlp``.

Features, on the clip resampled to 8 kHz (pitch and telephone speech live below 4 kHz, and
it makes yin four times cheaper), in frames of 64 ms every 20 ms:

- pitch: ``librosa.yin`` in 60-400 Hz on voiced frames only. A frame is voiced when it is
  active (RMS within 30 dB of the utterance's loudest frame and above -55 dBFS) and periodic
  (normalised autocorrelation at the yin period >= 0.5). Median in Hz, range = p90 - p10 and
  variability = standard deviation, both in semitones. ``None`` under 5 voiced frames.
  (``librosa.pyin`` is avoided: its first call compiles for ~19 s.)
- energy: RMS level in dBFS over active frames (of the 0-4 kHz band).
- rate: words per minute over the word span (first start to last end); ``None`` with fewer
  than 2 words or a span under 0.3 s.
- pause ratio: the summed gaps between consecutive words longer than 150 ms, over the word
  span. With fewer than 2 words it is measured on frames instead: inactive runs of 150 ms or
  more inside the active extent, over that extent.

Baseline and z-scores. Per speaker and feature, a Welford running mean and variance of all
earlier utterances of this call (pitch median on a log scale, as semitones re 100 Hz). An
utterance is scored against the baseline *before* it is added. Warm-up: a feature's z-score is
0.0 until the speaker has ``warmup_utterances`` (default 3) earlier values of it. The standard
deviation has a floor per feature (0.5 st, 1 dB, 10 wpm, 0.03 pause ratio, ...) so a very
steady baseline does not turn tiny changes into large z; z is clipped to [-4, 4]. A feature
that is ``None`` (too little voicing, too few words) is absent from ``z``; a clip with no
active frame at all gets an empty ``z`` and leaves the baseline alone.

Indicators (the default ``InterpretableAffect``): each is ``tanh(sum_i w_i * z_i / 1.5)`` in
[-1, 1], the sum over the features present, with the weights renormalised to the present
features' total absolute weight; ``drivers`` holds each present feature's ``w_i * z_i``.

=============  ==========================================================================
arousal        0.3 pitch_median + 0.3 energy + 0.3 rate + 0.1 pitch_range
engagement     0.4 pitch_variability + 0.2 energy + 0.2 rate - 0.2 pause_ratio
stress         0.4 pitch_median + 0.3 rate - 0.3 pitch_variability
hesitation     0.6 pause_ratio - 0.4 rate
=============  ==========================================================================

These follow the usual acoustic correlates (raised F0, loudness and tempo for arousal; a flat,
slow, pausing delivery for disengagement; raised, fast and flattened F0 for stress) and are
relative to the speaker's own delivery in this call, never absolute. A learned model plugs in
through the ``AffectEstimator`` protocol; see docs/prosody.md.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import soxr

from audio.chunk import SAMPLE_RATE_HZ, Samples, Speaker

ANALYSIS_RATE_HZ = 8_000

FEATURES: tuple[str, ...] = (
    "pitch_median",
    "pitch_range",
    "pitch_variability",
    "energy",
    "rate",
    "pause_ratio",
)

# Floors on a baseline's standard deviation, in each feature's unit (semitones, dB, wpm, ratio).
_STD_FLOOR: dict[str, float] = {
    "pitch_median": 0.5,
    "pitch_range": 1.0,
    "pitch_variability": 0.4,
    "energy": 1.0,
    "rate": 10.0,
    "pause_ratio": 0.03,
}
_Z_LIMIT = 4.0
_INDICATOR_SCALE = 1.5

INDICATOR_WEIGHTS: dict[str, dict[str, float]] = {
    "arousal": {"pitch_median": 0.3, "energy": 0.3, "rate": 0.3, "pitch_range": 0.1},
    "engagement": {"pitch_variability": 0.4, "energy": 0.2, "rate": 0.2, "pause_ratio": -0.2},
    "stress": {"pitch_median": 0.4, "rate": 0.3, "pitch_variability": -0.3},
    "hesitation": {"pause_ratio": 0.6, "rate": -0.4},
}


@dataclass(frozen=True, slots=True)
class Indicator:
    """An interpretable prosodic indicator in [-1, 1] and the z-scored features that drove it."""

    value: float
    drivers: dict[str, float]


@dataclass(frozen=True, slots=True)
class Prosody:
    """Per-utterance prosody and its z-scores against the same speaker's running baseline."""

    pitch_median_hz: float | None
    pitch_range_semitones: float | None
    pitch_variability_semitones: float | None
    energy_db: float
    rate_wpm: float | None
    pause_ratio: float
    z: dict[str, float]
    indicators: dict[str, Indicator]


@dataclass(frozen=True, slots=True)
class ProsodyOptions:
    pitch_min_hz: float = 60.0
    pitch_max_hz: float = 400.0
    frame_length: int = 512
    hop_ms: float = 20.0
    active_range_db: float = 30.0
    silence_floor_db: float = -55.0
    voicing_threshold: float = 0.5
    min_voiced_frames: int = 5
    min_pause_ms: float = 150.0
    warmup_utterances: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.pitch_min_hz < self.pitch_max_hz:
            raise ValueError("need 0 < pitch_min_hz < pitch_max_hz")
        if self.pitch_max_hz >= ANALYSIS_RATE_HZ / 4:
            raise ValueError("pitch_max_hz must be below 2000 Hz")
        if self.frame_length < 2 * ANALYSIS_RATE_HZ / self.pitch_min_hz:
            raise ValueError("frame_length must hold two periods of pitch_min_hz")
        if self.hop_ms <= 0 or self.min_pause_ms < 0 or self.active_range_db <= 0:
            raise ValueError("hop_ms and active_range_db must be > 0, min_pause_ms >= 0")
        if not 0 < self.voicing_threshold < 1:
            raise ValueError("voicing_threshold must be in (0, 1)")
        if self.min_voiced_frames < 2 or self.warmup_utterances < 2:
            raise ValueError("min_voiced_frames and warmup_utterances must be >= 2")

    @property
    def hop_samples(self) -> int:
        return round(ANALYSIS_RATE_HZ * self.hop_ms / 1000)


@dataclass(frozen=True, slots=True)
class ProsodyFeatures:
    """Raw features of one utterance (units as in ``Prosody``)."""

    pitch_median_hz: float | None
    pitch_range_semitones: float | None
    pitch_variability_semitones: float | None
    energy_db: float
    rate_wpm: float | None
    pause_ratio: float
    active_s: float

    def baseline_values(self) -> dict[str, float]:
        """The features present, on the scales the baseline uses (pitch median in semitones).

        A clip with no active frame (silence, noise floor) has none: it is not scored and
        does not move the baseline."""
        if self.active_s <= 0:
            return {}
        values = {
            "pitch_median": (
                None
                if self.pitch_median_hz is None
                else 12.0 * math.log2(self.pitch_median_hz / 100.0)
            ),
            "pitch_range": self.pitch_range_semitones,
            "pitch_variability": self.pitch_variability_semitones,
            "energy": self.energy_db,
            "rate": self.rate_wpm,
            "pause_ratio": self.pause_ratio,
        }
        return {k: v for k, v in values.items() if v is not None}


class AffectEstimator(Protocol):
    """Indicators from one utterance's features, z-scores and audio. Blocking, sync, cheap.

    The default is ``InterpretableAffect``; a learned speech-emotion model implements this
    protocol (e.g. reading ``samples``) and is passed to ``ProsodyTracker``.
    """

    name: str

    def estimate(
        self, features: ProsodyFeatures, z: Mapping[str, float], samples: Samples
    ) -> dict[str, Indicator]: ...

    def warmup(self) -> None: ...


class InterpretableAffect:
    """Weighted sums of z-scores squashed by tanh (weights default to ``INDICATOR_WEIGHTS``)."""

    name: str = "interpretable"

    def __init__(self, weights: Mapping[str, Mapping[str, float]] | None = None) -> None:
        self.weights = weights if weights is not None else INDICATOR_WEIGHTS

    def estimate(
        self, features: ProsodyFeatures, z: Mapping[str, float], samples: Samples
    ) -> dict[str, Indicator]:
        return {name: _indicator(w, z) for name, w in self.weights.items()}

    def warmup(self) -> None:
        return None


def _indicator(weights: Mapping[str, float], z: Mapping[str, float]) -> Indicator:
    present = {k: w for k, w in weights.items() if k in z}
    total = sum(abs(w) for w in present.values())
    if total == 0:
        return Indicator(value=0.0, drivers={})
    drivers = {k: w / total * z[k] for k, w in present.items()}
    return Indicator(value=math.tanh(sum(drivers.values()) / _INDICATOR_SCALE), drivers=drivers)


@dataclass(slots=True)
class _Welford:
    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: float) -> None:
        self.count += 1
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)

    def std(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 0.0


class ProsodyTracker:
    """One call's prosody: features per utterance, z against each speaker's own baseline."""

    def __init__(
        self, options: ProsodyOptions | None = None, estimator: AffectEstimator | None = None
    ) -> None:
        self.options = options or ProsodyOptions()
        self.estimator: AffectEstimator = estimator or InterpretableAffect()
        self._baselines: dict[Speaker, dict[str, _Welford]] = {}

    def warmup(self) -> None:
        """Pay librosa's lazy import and the estimator's start-up once, before the first call."""
        t = np.arange(SAMPLE_RATE_HZ // 2, dtype=np.float32) / SAMPLE_RATE_HZ
        tone = (0.3 * np.sin(2 * np.pi * 150.0 * t)).astype(np.float32)
        measure(tone, [(0.0, 0.2), (0.3, 0.5)], self.options)
        self.estimator.warmup()

    def observe(
        self,
        speaker: Speaker,
        samples: Samples,
        word_spans: Sequence[tuple[float, float]],
        *,
        offset_s: float = 0.0,
    ) -> Prosody:
        """Prosody of one utterance; then the utterance joins ``speaker``'s baseline."""
        spans = [(s - offset_s, e - offset_s) for s, e in word_spans]
        features = measure(samples, spans, self.options)
        values = features.baseline_values()
        baseline = self._baselines.setdefault(speaker, {k: _Welford() for k in FEATURES})
        z = {k: self._z(baseline[k], k, x) for k, x in values.items()}
        for k, x in values.items():
            baseline[k].add(x)
        return Prosody(
            pitch_median_hz=features.pitch_median_hz,
            pitch_range_semitones=features.pitch_range_semitones,
            pitch_variability_semitones=features.pitch_variability_semitones,
            energy_db=features.energy_db,
            rate_wpm=features.rate_wpm,
            pause_ratio=features.pause_ratio,
            z=z,
            indicators=self.estimator.estimate(features, z, samples),
        )

    def utterances_seen(self, speaker: Speaker) -> int:
        """How many utterances of ``speaker`` with any active audio the baseline holds."""
        baseline = self._baselines.get(speaker)
        return 0 if baseline is None else baseline["energy"].count

    def _z(self, stats: _Welford, feature: str, x: float) -> float:
        if stats.count < self.options.warmup_utterances:
            return 0.0
        z = (x - stats.mean) / max(stats.std(), _STD_FLOOR[feature])
        return float(min(_Z_LIMIT, max(-_Z_LIMIT, z)))


def measure(
    samples: Samples, word_spans: Sequence[tuple[float, float]], options: ProsodyOptions
) -> ProsodyFeatures:
    """Raw features of one 16 kHz clip; ``word_spans`` are seconds from its first sample."""
    x = np.asarray(soxr.resample(samples, SAMPLE_RATE_HZ, ANALYSIS_RATE_HZ), dtype=np.float32)
    frames = _frames(x, options)
    power = np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12
    level_db = 10.0 * np.log10(power)
    active = (level_db > level_db.max() - options.active_range_db) & (
        level_db > options.silence_floor_db
    )
    energy_db = float(10.0 * np.log10(np.mean(power[active] if active.any() else power)))
    pitch = _pitch(x, frames, active, options)
    rate_wpm, pause_ratio = _timing(word_spans, active, options)
    return ProsodyFeatures(
        pitch_median_hz=pitch[0],
        pitch_range_semitones=pitch[1],
        pitch_variability_semitones=pitch[2],
        energy_db=energy_db,
        rate_wpm=rate_wpm,
        pause_ratio=pause_ratio,
        active_s=float(active.sum()) * options.hop_ms / 1000,
    )


def _frames(x: Samples, options: ProsodyOptions) -> npt.NDArray[np.float32]:
    """Centred frames, one per hop, aligned with ``librosa.yin(center=True)``."""
    n = options.frame_length
    padded = np.pad(x, (n // 2, n // 2))
    n_frames = 1 + len(x) // options.hop_samples
    windows = np.lib.stride_tricks.sliding_window_view(padded, n)[:: options.hop_samples]
    return windows[:n_frames]


def _pitch(
    x: Samples,
    frames: npt.NDArray[np.float32],
    active: npt.NDArray[np.bool_],
    options: ProsodyOptions,
) -> tuple[float | None, float | None, float | None]:
    """(median Hz, p90-p10 st, std st) over voiced frames, or Nones with too little voicing."""
    if active.sum() < options.min_voiced_frames:
        return None, None, None
    import librosa  # lazy: its pitch module costs seconds to import; warmup() pays it

    f0 = librosa.yin(
        x,
        fmin=options.pitch_min_hz,
        fmax=options.pitch_max_hz,
        sr=ANALYSIS_RATE_HZ,
        frame_length=options.frame_length,
        hop_length=options.hop_samples,
        center=True,
    )[: len(frames)]
    voiced = active[: len(f0)].copy()
    periodic = _periodicity(frames[: len(f0)][voiced], f0[voiced]) >= options.voicing_threshold
    voiced[voiced] = periodic
    if voiced.sum() < options.min_voiced_frames:
        return None, None, None
    hz = f0[voiced].astype(np.float64)
    median_hz = float(np.median(hz))
    st = 12.0 * np.log2(hz / median_hz)
    p10, p90 = np.percentile(st, [10, 90])
    return median_hz, float(p90 - p10), float(np.std(st))


def _periodicity(frames: npt.NDArray[np.float32], f0: npt.NDArray[np.floating]) -> npt.NDArray:
    """Normalised autocorrelation of each frame at its yin period (1 = perfectly periodic)."""
    lags = np.rint(ANALYSIS_RATE_HZ / f0).astype(np.int64)
    width = frames.shape[1] - int(lags.max())
    a = frames[:, :width].astype(np.float64)
    b = np.take_along_axis(frames, lags[:, None] + np.arange(width)[None, :], axis=1)
    b = b.astype(np.float64)
    den = np.sqrt(np.sum(a * a, axis=1) * np.sum(b * b, axis=1)) + 1e-12
    return np.asarray(np.sum(a * b, axis=1) / den)


def _timing(
    word_spans: Sequence[tuple[float, float]],
    active: npt.NDArray[np.bool_],
    options: ProsodyOptions,
) -> tuple[float | None, float]:
    """(words per minute, pause ratio): from word spans, else pause ratio from frames."""
    min_pause_s = options.min_pause_ms / 1000
    spans = sorted((s, e) for s, e in word_spans if e >= s)
    if len(spans) >= 2:
        span_s = max(e for _, e in spans) - spans[0][0]
        if span_s >= 0.3:
            gaps = (b[0] - a[1] for a, b in itertools.pairwise(spans))
            paused = sum(g for g in gaps if g > min_pause_s)
            return len(spans) / span_s * 60.0, float(min(1.0, paused / span_s))
    return None, _frame_pause_ratio(active, options)


def _frame_pause_ratio(active: npt.NDArray[np.bool_], options: ProsodyOptions) -> float:
    idx = np.flatnonzero(active)
    if len(idx) < 2:
        return 0.0
    inner = active[idx[0] : idx[-1] + 1]
    min_run = max(1, math.ceil(options.min_pause_ms / options.hop_ms))
    paused, run = 0, 0
    for is_active in inner:
        if is_active:
            paused += run if run >= min_run else 0
            run = 0
        else:
            run += 1
    return paused / len(inner)
