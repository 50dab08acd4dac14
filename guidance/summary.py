"""The end-of-call ``summary``: needs, objections and their handling, buying signals, next
steps, action items, talk statistics, sentiment and engagement over time, final lead score.

Engines sit behind the ``Summarizer`` protocol and read the call's stored events as typed
values (``guidance.turns.CallEvent``: final transcripts, insights, cards, scores, in the order
they were stored; the server reads the store with ``server.wire.from_wire``) plus the call's
date, against which relative dates are resolved. So a summary can be rebuilt after a restart
or from the REST API. ``BuiltinSummarizer`` (default, no network) wraps the sync core
``build_summary``; ``guidance.llm_summary.LlmSummarizer`` asks an OpenAI-compatible model.

What each part comes from:

- objections, buying signals, next steps: the utterances whose insight carries that intent
  label (``objection_*``, ``buying_signal``, ``next_step``) with at least ``min_confidence``
  (``guidance.turns``); an objection's handling is what the rep said before the customer
  spoke again, and the cards issued for it are listed;
- needs: customer sentences stating one ("we need...", "our main problem is...");
- action items and their due dates: ``guidance.action_items`` (dates by ``nlp.dates``);
- talk statistics and the timeline: ``guidance.talk``; the lead score: the last ``score``.

Rendering for people is ``guidance.summary_markdown``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import ClassVar, Literal, Protocol

from guidance.action_items import ActionItem, action_items
from guidance.cards import Card
from guidance.score import Score
from guidance.talk import TalkStats, TimelinePoint, talk_stats, timeline
from guidance.turns import CallEvent, Turn, sentences, turns_of

Handling = Literal["addressed", "unanswered", "reraised"]
Outcome = Literal["advanced", "stalled", "no_decision"]


@dataclass(frozen=True, slots=True)
class Moment:
    """One utterance (or one sentence of it) worth quoting."""

    utterance_id: str
    speaker: str
    text: str
    start_s: float


@dataclass(frozen=True, slots=True)
class Objection:
    kind: str  # "price", "timing", "authority", "need", "competitor", "trust"
    utterance_id: str
    text: str
    start_s: float
    response: str  # what the rep said next, before the customer spoke again ("" if nothing)
    handling: Handling  # "reraised": the customer raised the same kind again later
    cards: tuple[str, ...] = ()  # titles of coaching cards issued for this utterance


@dataclass(frozen=True, slots=True)
class Summary:
    type: ClassVar[str] = "summary"

    call_id: str
    call_date: str  # ISO date that relative due dates were resolved against
    engine: str  # "builtin", "llm:<model>", or "builtin (llm failed: ...)"
    outcome: Outcome
    overview: str
    duration_s: float
    needs: tuple[Moment, ...]
    objections: tuple[Objection, ...]
    buying_signals: tuple[Moment, ...]
    next_steps: tuple[Moment, ...]
    action_items: tuple[ActionItem, ...]
    talk: tuple[TalkStats, ...]
    timeline: tuple[TimelinePoint, ...]
    lead_score: int | None
    score_reasons: tuple[str, ...]


class Summarizer(Protocol):
    """Turns a call's stored events into its summary. Never raises for content: an engine
    that fails degrades to the built-in one."""

    name: str

    async def summarize(
        self, call_id: str, events: Sequence[CallEvent], call_date: date
    ) -> Summary: ...


@dataclass(frozen=True, slots=True)
class SummaryOptions:
    min_confidence: float = 0.5  # an insight label below this is ignored
    bucket_s: float = 60.0  # timeline window; calls under 5 windows get 5 equal windows
    max_items: int = 8  # per list (needs, signals, next steps, objections, action items)
    max_reasons: int = 3
    max_response_chars: int = 300

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence}")
        if self.bucket_s <= 0 or self.max_items < 1 or self.max_reasons < 0:
            raise ValueError("bucket_s and max_items must be positive, max_reasons >= 0")


class BuiltinSummarizer:
    """The deterministic engine: ``build_summary`` inline (it takes milliseconds)."""

    name = "builtin"

    def __init__(self, opts: SummaryOptions | None = None) -> None:
        self.opts = opts or SummaryOptions()

    async def summarize(
        self, call_id: str, events: Sequence[CallEvent], call_date: date
    ) -> Summary:
        return build_summary(call_id, events, call_date, self.opts)


_NEED = re.compile(
    r"\b((we|i) (really )?(need|want|have to|must)\b|(we're|we are|i'm|i am) (looking for|"
    r"trying to)|our (main |biggest |key )?(problem|challenge|issue|goal|priority|pain)|"
    r"struggl|it's important (for|to) us|looking for (a|an|something))",
    re.IGNORECASE,
)
_NOT_NEED = re.compile(r"\b(don't|do not|doesn't) (really )?(need|want)", re.IGNORECASE)


def build_summary(
    call_id: str,
    events: Sequence[CallEvent],
    call_date: date,
    opts: SummaryOptions | None = None,
    *,
    engine: str = "builtin",
) -> Summary:
    """The deterministic summary of one call's stored events (in stored order: the last
    score is the final one; partial transcripts are ignored)."""
    opts = opts or SummaryOptions()
    turns = turns_of(events, opts.min_confidence)
    n = opts.max_items
    duration_s = max((t.end_s for t in turns), default=0.0)
    objections = _objections(turns, events, opts)[:n]
    needs = [
        _moment(t, s)
        for t in turns
        if t.speaker == "customer"
        for _, s in sentences(t.text)
        if _NEED.search(s) and not _NOT_NEED.search(s)
    ][:n]
    signals = [_moment(t) for t in turns if t.label == "buying_signal"][:n]
    next_steps = [_moment(t) for t in turns if t.label == "next_step"][:n]
    items = action_items(turns, call_date)[:n]
    talk = talk_stats(turns)
    score, reasons = _final_score(events, opts.max_reasons)
    outcome: Outcome = "no_decision"
    if next_steps or items:
        outcome = "advanced"
    elif any(o.handling != "addressed" for o in objections):
        outcome = "stalled"
    return Summary(
        call_id=call_id,
        call_date=call_date.isoformat(),
        engine=engine,
        outcome=outcome,
        overview=_overview(
            duration_s, talk, objections, signals, next_steps, items, score, reasons
        ),
        duration_s=round(duration_s, 3),
        needs=tuple(needs),
        objections=tuple(objections),
        buying_signals=tuple(signals),
        next_steps=tuple(next_steps),
        action_items=tuple(items),
        talk=tuple(talk),
        timeline=tuple(timeline(turns, duration_s, opts.bucket_s)),
        lead_score=score,
        score_reasons=reasons,
    )


def _moment(t: Turn, text: str | None = None) -> Moment:
    return Moment(t.utterance_id, t.speaker, text or t.text, t.start_s)


def _objections(
    turns: list[Turn], events: Sequence[CallEvent], opts: SummaryOptions
) -> list[Objection]:
    cards: dict[str, dict[str, None]] = {}  # utterance id -> card titles, in order, once each
    for e in events:
        if isinstance(e, Card) and e.utterance_id is not None and e.state != "withdrawn":
            cards.setdefault(e.utterance_id, {})[e.title] = None
    out: list[Objection] = []
    for i, t in enumerate(turns):
        if t.speaker != "customer" or not (t.label or "").startswith("objection_"):
            continue
        response: list[str] = []
        for later in turns[i + 1 :]:
            if later.speaker == "customer":
                break
            if later.speaker == "rep":
                response.append(later.text)
        reraised = any(
            u.speaker == "customer" and u.label == t.label
            for u in turns[i + 1 :]
            if u.start_s > t.end_s
        )
        handling: Handling = "reraised" if reraised else ("addressed" if response else "unanswered")
        text = " ".join(response)
        if len(text) > opts.max_response_chars:
            text = text[: opts.max_response_chars - 3].rstrip() + "..."
        kind = (t.label or "").removeprefix("objection_")
        out.append(
            Objection(
                kind,
                t.utterance_id,
                t.text,
                t.start_s,
                text,
                handling,
                tuple(cards.get(t.utterance_id, ())),
            )
        )
    return out


def _final_score(
    events: Sequence[CallEvent], max_reasons: int
) -> tuple[int | None, tuple[str, ...]]:
    last = next((e for e in reversed(events) if isinstance(e, Score)), None)
    if last is None:
        return None, ()
    return round(last.score), tuple(r for r in last.reasons if r)[:max_reasons]


def _overview(
    duration_s: float,
    talk: list[TalkStats],
    objections: list[Objection],
    signals: list[Moment],
    next_steps: list[Moment],
    items: list[ActionItem],
    score: int | None,
    reasons: tuple[str, ...],
) -> str:
    minutes, seconds = divmod(round(duration_s), 60)
    shares = ", ".join(f"{t.speaker} {t.talk_share:.0%}" for t in talk if t.utterances)
    parts = [f"A {minutes}:{seconds:02d} call (talk time: {shares or 'nobody spoke'})."]
    if objections:
        kinds = ", ".join(dict.fromkeys(o.kind for o in objections))
        addressed = sum(o.handling == "addressed" for o in objections)
        parts.append(
            f"The customer raised {len(objections)} objection(s) ({kinds}); {addressed} addressed."
        )
    else:
        parts.append("No objections were raised.")
    parts.append(f"{len(signals)} buying signal(s).")
    if next_steps:
        parts.append(f'Next step: "{next_steps[0].text}"')
    if items:
        parts.append(f"{len(items)} action item(s).")
    if score is not None:
        parts.append(f"Lead score {score}" + (f" ({reasons[0]})." if reasons else "."))
    return " ".join(parts)
