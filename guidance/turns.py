"""Turns: a call's final utterances joined with what the insights said about them.

The summary engines read the call's stored events as typed values (``CallEvent``; the server
converts the stored dicts with ``server.wire.from_wire``). A ``Turn`` is one final transcript
with its final insight's intent label (when its confidence reaches ``min_confidence``),
sentiment, prosodic engagement and date entities. Labels come from the insights only: the
classifier that coached the call is the one the summary reports, so there is no second rule
set here. A turn without an insight (its analysis failed and the call was degraded) has no
label, sentiment or engagement: it still counts for talk time, needs and action items.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from guidance.cards import Card
from guidance.score import Score
from nlp.insight import Entity, Insight
from nlp.transcript import Transcript

CallEvent = Transcript | Insight | Card | Score
"""A stored event of a call that the summary reads (others are not passed to it)."""


@dataclass(frozen=True, slots=True)
class Turn:
    """A final utterance joined with its insight (if any)."""

    utterance_id: str
    speaker: str
    text: str
    start_s: float
    end_s: float
    label: str | None
    sentiment: float | None
    engagement: float | None  # prosodic indicator in [-1, 1]
    dates: tuple[Entity, ...] = ()  # the insight's date entities, spans in ``text``


def turns_of(events: Sequence[CallEvent], min_confidence: float = 0.5) -> list[Turn]:
    """Final transcripts with text, in time order, each with its final insight's fields
    (events may come in any order; partials are skipped)."""
    insights = {e.utterance_id: e for e in events if isinstance(e, Insight) and e.is_final}
    turns: list[Turn] = []
    for e in events:
        if not isinstance(e, Transcript) or not e.is_final or not e.text.strip():
            continue
        ins = insights.get(e.utterance_id)
        end_s = max(e.start_s, e.end_s)
        if ins is None:
            turns.append(Turn(e.utterance_id, e.speaker, e.text.strip(), e.start_s, end_s,
                              None, None, None))  # fmt: skip
            continue
        label = ins.label if ins.confidence >= min_confidence else None
        indicator = ins.prosody.indicators.get("engagement") if ins.prosody else None
        turns.append(
            Turn(
                e.utterance_id,
                e.speaker,
                e.text.strip(),
                e.start_s,
                end_s,
                label,
                _finite(ins.sentiment),
                None if indicator is None else _finite(indicator.value),
                tuple(x for x in ins.entities if x.kind == "date" and _iso(x.value)),
            )
        )
    turns.sort(key=lambda t: (t.start_s, t.end_s))
    return turns


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _iso(value: str) -> bool:
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def sentences(text: str) -> list[tuple[int, str]]:
    """(start_char, sentence) pieces of an utterance, split after . ! ?"""
    out = []
    for m in re.finditer(r"[^.!?]+[.!?]*", text):
        s = m.group(0).strip()
        if s:
            out.append((m.start() + len(m.group(0)) - len(m.group(0).lstrip()), s))
    return out
