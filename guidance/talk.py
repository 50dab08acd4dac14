"""Talk statistics per speaker and the call's timeline of sentiment and engagement."""

from __future__ import annotations

import math
from dataclasses import dataclass

from guidance.turns import Turn, sentences


@dataclass(frozen=True, slots=True)
class TalkStats:
    speaker: str
    talk_s: float
    talk_share: float  # of all speech in the call, 0..1
    utterances: int
    words: int
    words_per_min: float | None
    questions: int
    longest_monologue_s: float


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    """A window of the call: mean sentiment per speaker (None without insights) and the
    customer's engagement in [0, 1] (None when nobody spoke)."""

    start_s: float
    end_s: float
    customer_sentiment: float | None
    rep_sentiment: float | None
    engagement: float | None


def talk_stats(turns: list[Turn]) -> list[TalkStats]:
    """Per speaker (rep, customer, then any other present): talk time and share, words,
    pace, questions, and the longest run of turns without the other side speaking."""
    total = sum(t.end_s - t.start_s for t in turns) or 1.0
    speakers = ["rep", "customer", *sorted({t.speaker for t in turns} - {"rep", "customer"})]
    longest: dict[str, float] = {}
    run_start: Turn | None = None
    prev: Turn | None = None
    for t in [*turns, None]:
        if prev is not None and (t is None or t.speaker != prev.speaker):
            assert run_start is not None
            span = prev.end_s - run_start.start_s
            longest[prev.speaker] = max(longest.get(prev.speaker, 0.0), span)
            run_start = None
        if t is not None and run_start is None:
            run_start = t
        prev = t
    out = []
    for sp in speakers:
        mine = [t for t in turns if t.speaker == sp]
        talk_s = sum(t.end_s - t.start_s for t in mine)
        words = sum(len(t.text.split()) for t in mine)
        questions = sum(1 for t in mine for _, s in sentences(t.text) if s.endswith("?")) or sum(
            1 for t in mine if t.label == "question"
        )
        out.append(
            TalkStats(
                speaker=sp,
                talk_s=round(talk_s, 3),
                talk_share=round(talk_s / total, 3) if turns else 0.0,
                utterances=len(mine),
                words=words,
                words_per_min=round(words / (talk_s / 60.0), 1) if talk_s > 0 else None,
                questions=questions,
                longest_monologue_s=round(longest.get(sp, 0.0), 3),
            )
        )
    return out


def timeline(turns: list[Turn], duration_s: float, bucket_s: float) -> list[TimelinePoint]:
    """Windows of ``bucket_s`` (5 equal windows for shorter calls). Engagement is the
    customer's share of speech in the window doubled and capped at 1 (speaking half the time
    or more is full engagement), averaged with the mean prosodic engagement indicator of the
    customer's turns mapped to [0, 1] when insights carry it. A turn belongs to the window of
    its midpoint."""
    if duration_s <= 0:
        return []
    width = bucket_s if duration_s >= 5 * bucket_s else duration_s / 5
    n = max(1, math.ceil(duration_s / width - 1e-9))
    points = []
    for k in range(n):
        lo, hi = k * width, min(duration_s, (k + 1) * width)
        inside = [
            t
            for t in turns
            if lo <= (t.start_s + t.end_s) / 2 < hi
            or (k == n - 1 and (t.start_s + t.end_s) / 2 == hi)
        ]
        cust = [t for t in inside if t.speaker == "customer"]
        speech = sum(t.end_s - t.start_s for t in inside)
        engagement = None
        if speech > 0:
            engagement = min(1.0, 2 * sum(t.end_s - t.start_s for t in cust) / speech)
            prosodic = [(t.engagement + 1) / 2 for t in cust if t.engagement is not None]
            if prosodic:
                engagement = (engagement + sum(prosodic) / len(prosodic)) / 2
        points.append(
            TimelinePoint(
                start_s=round(lo, 3),
                end_s=round(hi, 3),
                customer_sentiment=_mean([t.sentiment for t in cust]),
                rep_sentiment=_mean([t.sentiment for t in inside if t.speaker == "rep"]),
                engagement=None if engagement is None else round(engagement, 3),
            )
        )
    return points


def _mean(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return round(sum(vals) / len(vals), 3) if vals else None
