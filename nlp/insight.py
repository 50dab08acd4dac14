"""The ``insight`` event: what one utterance means and how it sounded.

Built for every final transcript (and for stable partials of the customer), from three
sync cores owned by this package and ``audio.prosody``: intent (``nlp.intent``), entities
(``nlp.entities``), sentiment (``nlp.sentiment``), prosody (``audio.prosody``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from audio.chunk import Speaker
from audio.prosody import Indicator as Indicator  # re-exported: defined in audio (no nlp import)
from audio.prosody import Prosody

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
