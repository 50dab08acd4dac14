"""The ``insight`` event, what one utterance means and how it sounded, and ``insights()``,
the stage that makes it.

Built for every final transcript (and for partials of the customer), from sync cores owned by
this package and ``audio.prosody``: intent (``nlp.intent``), entities (``nlp.entities``),
sentiment (``nlp.sentiment``) through ``nlp.analyze.Analyzer``, prosody (``audio.prosody``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterable, AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, TypeVar

from audio.chunk import Speaker
from audio.prosody import Indicator as Indicator  # re-exported: defined in audio (no nlp import)
from audio.prosody import Prosody, ProsodyTracker
from nlp.transcript import Transcript

if TYPE_CHECKING:  # nlp.analyze imports this module's value types
    from nlp.analyze import Analyzer

log = logging.getLogger(__name__)
E = TypeVar("E")

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


@dataclass(frozen=True, slots=True)
class InsightFailed:
    """Text analysis or prosody raised for one utterance; the call goes on without it."""

    utterance_id: str


async def insights(
    events: AsyncIterable[Transcript | E],
    analyzer: Analyzer,
    executor: Executor,
    call_date: dt.date,
) -> AsyncIterator[Transcript | Insight | InsightFailed | E]:
    """Every event passes through; a final transcript, or a customer's partial, is followed by
    its ``Insight`` (or ``InsightFailed``). The blocking work runs on ``executor``, one
    utterance at a time: insights come in transcript order."""
    prosody = ProsodyTracker()  # per call: it learns each speaker's baseline
    loop = asyncio.get_running_loop()
    async for event in events:
        yield event
        if isinstance(event, Transcript) and (event.is_final or event.speaker == "customer"):
            try:
                yield await loop.run_in_executor(
                    executor, _insight, analyzer, prosody, event, call_date
                )
            except Exception:
                log.exception("insight failed for %s", event.utterance_id)
                yield InsightFailed(event.utterance_id)


def _insight(
    analyzer: Analyzer, tracker: ProsodyTracker, t: Transcript, call_date: dt.date
) -> Insight:
    """Blocking: text analysis, and prosody for finals (it needs the audio)."""
    text = analyzer.analyze(t.text, call_date=call_date)
    prosody = None
    if t.is_final and t.audio is not None:
        spans = [(w.start_s, w.end_s) for w in t.words]
        prosody = tracker.observe(t.speaker, t.audio, spans, offset_s=t.audio_start_s)
    return Insight(
        utterance_id=t.utterance_id,
        speaker=t.speaker,
        is_final=t.is_final,
        text=t.text,
        start_s=t.start_s,
        end_s=t.end_s,
        label=text.intent.label,
        confidence=text.intent.confidence,
        scores=text.intent.scores,
        entities=text.entities,
        sentiment=text.sentiment,
        prosody=prosody,
    )
