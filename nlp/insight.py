"""The ``insight`` event: what one utterance means and how it sounded.

Built for every final transcript (and for stable partials of the customer), from three
sync cores owned by this package and ``audio.prosody``: intent (``nlp.intent``), entities
(``nlp.entities``), sentiment (``nlp.sentiment``), prosody (``audio.prosody``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from audio.chunk import Speaker

IntentLabel = Literal[
    "objection_price",
    "objection_timing",
    "objection_authority",
    "objection_need",
    "objection_competitor",
    "objection_trust",
    "buying_signal",
    "question",
    "next_step",
    "positive",
    "small_talk",
    "other",
]

EntityKind = Literal["money", "date", "competitor", "role"]


@dataclass(frozen=True, slots=True)
class Entity:
    """A span of the utterance's text; ``value`` is its normal form (e.g. ``"20000 USD"``,
    an ISO date relative to the call, the canonical competitor name, the role)."""

    kind: EntityKind
    text: str
    value: str
    start_char: int
    end_char: int


@dataclass(frozen=True, slots=True)
class IntentResult:
    label: str
    confidence: float
    scores: dict[str, float]


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
class Insight:
    type: ClassVar[str] = "insight"

    utterance_id: str
    speaker: Speaker
    is_final: bool
    text: str
    start_s: float
    end_s: float
    label: str
    confidence: float
    scores: dict[str, float]
    entities: tuple[Entity, ...]
    sentiment: float
    prosody: Prosody | None
