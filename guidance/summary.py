"""The end-of-call ``summary``: needs, objections and their handling, buying signals, next
steps, action items, talk statistics, sentiment and engagement over time, final lead score.

Engines sit behind the ``Summarizer`` protocol and read the call's stored wire dicts (so a
summary can be rebuilt after a restart or from the REST API) plus the call's date, against
which relative dates are resolved. ``BuiltinSummarizer`` (default, no network) wraps the sync
core ``build_summary``; ``guidance.llm_summary.LlmSummarizer`` asks an OpenAI-compatible model.

The core works from final transcripts alone. Insights, when present, give each utterance's
intent label (used when its confidence reaches ``min_confidence``), sentiment, date entities
and prosodic engagement; without them the labels come from the phrase rules below
(``_RULES``), and sentiment is absent from the timeline.

Action items are commitments in one sentence: "I'll / I will / we'll / let me / I'm going to
<action verb> ..." is owned by the speaker; "can you / could you / would you / please <action
verb> ..." by the other party, when it has a due date or asks for a deliverable (send,
share, sign, schedule...): other requests are questions answered in the call. The item is
the verb phrase, with a pronoun right after the verb and the due-date phrase removed
("I'll send you the proposal by Friday" -> "send the proposal").

Due dates (``resolve_due``), relative to the call date: a bare weekday ("by Friday", "on
Friday") is the first such day *after* the call date (said on a Friday it means the next
Friday); "this Friday" is the first on or after the call date; "next Friday" is Friday of the
following Monday-to-Sunday week. "today"/"end of day"/"EOD" is the call date, "tomorrow" +1,
"end of the week"/"this week" the first Friday on or after the call date, "next week" the
following Monday, "end of next week" its Friday, "end of the month" its last day, "next month"
its first day, "in N days/weeks" +N days/weeks, "a couple of days" +2, "a few days" +3, and a
month day ("December 3rd", "the 3rd") the first such date on or after the call date. A date
entity from the utterance's insight, when it lies in the sentence, wins over these rules.

This module is longer than 400 lines because the rules, the date resolver and the Markdown
renderer belong to the one contract the summary makes; splitting them would scatter it.
"""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, ClassVar, Literal, Protocol

from pydantic import TypeAdapter

Owner = Literal["rep", "customer"]
Handling = Literal["addressed", "unanswered", "reraised"]
Outcome = Literal["advanced", "stalled", "no_decision"]
OUTCOMES: tuple[Outcome, ...] = ("advanced", "stalled", "no_decision")


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
class ActionItem:
    owner: Owner
    item: str
    due: str | None  # ISO date
    due_text: str | None  # the words that said it, e.g. "by Friday"
    utterance_id: str
    text: str  # the sentence it came from


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


_SUMMARY_ADAPTER: TypeAdapter[Summary] = TypeAdapter(Summary)


def summary_from_wire(data: Mapping[str, Any]) -> Summary:
    """A stored summary dict back into a ``Summary``; raises pydantic's ``ValidationError``."""
    return _SUMMARY_ADAPTER.validate_python({k: v for k, v in data.items() if k != "type"})


class Summarizer(Protocol):
    """Turns a call's stored wire events into its summary. Never raises for content: an
    engine that fails degrades to the built-in one."""

    name: str

    async def summarize(
        self, call_id: str, events: Sequence[Mapping[str, Any]], call_date: date
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
        self, call_id: str, events: Sequence[Mapping[str, Any]], call_date: date
    ) -> Summary:
        return build_summary(call_id, events, call_date, self.opts)


# -- reading the events ---------------------------------------------------------------------


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
    dates: tuple[tuple[int, int, str, str], ...]  # (start_char, end_char, text, iso value)


def turns_of(events: Sequence[Mapping[str, Any]], min_confidence: float = 0.5) -> list[Turn]:
    """Final transcripts in time order, each with its final insight's fields."""
    insights = {
        str(e.get("utterance_id")): e
        for e in events
        if e.get("type") == "insight" and e.get("is_final", True)
    }
    turns: list[Turn] = []
    for e in events:
        if e.get("type") != "transcript" or not e.get("is_final", True):
            continue
        text = str(e.get("text", "")).strip()
        if not text:
            continue
        uid, speaker = str(e.get("utterance_id", "")), str(e.get("speaker", "unknown"))
        ins = insights.get(uid)
        label = sentiment = engagement = None
        dates: tuple[tuple[int, int, str, str], ...] = ()
        if ins is not None:
            if float(ins.get("confidence", 0.0)) >= min_confidence:
                label = str(ins.get("label", "other"))
            sentiment = _float_or_none(ins.get("sentiment"))
            engagement = _engagement(ins.get("prosody"))
            dates = tuple(
                (
                    int(x.get("start_char", 0)),
                    int(x.get("end_char", 0)),
                    str(x.get("text", "")),
                    str(x.get("value", "")),
                )
                for x in ins.get("entities") or ()
                if isinstance(x, Mapping) and x.get("kind") == "date" and _iso(x.get("value"))
            )
        if label is None:
            label = rule_label(text, speaker)
        start_s = float(e.get("start_s", 0.0))
        end_s = max(start_s, float(e.get("end_s", start_s)))
        turns.append(Turn(uid, speaker, text, start_s, end_s, label, sentiment, engagement, dates))
    turns.sort(key=lambda t: (t.start_s, t.end_s))
    return turns


def _float_or_none(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def _engagement(prosody: Any) -> float | None:
    if not isinstance(prosody, Mapping):
        return None
    ind = (prosody.get("indicators") or {}).get("engagement")
    return _float_or_none(ind.get("value")) if isinstance(ind, Mapping) else None


def _iso(v: Any) -> bool:
    try:
        date.fromisoformat(str(v))
    except ValueError:
        return False
    return True


_RULES: tuple[tuple[str, str, re.Pattern[str]], ...] = tuple(
    (speaker, label, re.compile(rx, re.IGNORECASE))
    for speaker, label, rx in (
        (
            "customer",
            "objection_price",
            r"\b(too (expensive|pricey|much|costly)|over (our|the) "
            r"budget|out of (our|the) budget|no budget|(can't|cannot|can not) afford|cheaper|"
            r"(price|cost)s? (is|are) (too |really |very |quite )?high)",
        ),
        (
            "customer",
            "objection_timing",
            r"\b(not (a |the )?(right|good) time|not right now|"
            r"next (quarter|year)|maybe later|too busy|bad timing|revisit (this|it) later)",
        ),
        (
            "customer",
            "objection_authority",
            r"\b((need|have) to (check|talk|speak|run it by)|"
            r"not my (decision|call)|sign[- ]off from|(my|our) (boss|manager|cfo|ceo) (decides|"
            r"has to))",
        ),
        (
            "customer",
            "objection_need",
            r"\b((don't|do not) (really )?need|not (sure|convinced) "
            r"(we|that we) need|not a priority|happy with what we have)",
        ),
        (
            "customer",
            "objection_competitor",
            r"\b((already|currently) (use|using|work with|"
            r"working with)|competitor|(better|cheaper) (offer|quote|deal))",
        ),
        (
            "customer",
            "objection_trust",
            r"\b((don't|do not) trust|sounds too good|heard (bad|"
            r"mixed|negative)|skeptical|sceptical|burned before)",
        ),
        (
            "customer",
            "buying_signal",
            r"\b(how (soon|quickly) can (we|you)|when can we (start|get"
            r" started)|what (would|does) it take|send (me|us|over) (the|a) "
            r"(contract|proposal|quote|agreement)|(we'd|we would) like to "
            r"(move forward|go ahead|start|sign)|let's do it|"
            r"how does (the )?(onboarding|implementation) work|(free )?trial|pilot)",
        ),
        (
            "any",
            "next_step",
            r"\b(let's (schedule|set up|book|meet|talk|reconvene)|follow[- ]up|"
            r"next steps?|(set up|schedule|book) (a|another|the) (call|meeting|demo)|"
            r"(next|follow-up) (call|meeting))",
        ),
    )
)
_NEED = re.compile(
    r"\b((we|i) (really )?(need|want|have to|must)\b|(we're|we are|i'm|i am) (looking for|"
    r"trying to)|our (main |biggest |key )?(problem|challenge|issue|goal|priority|pain)|"
    r"struggl|it's important (for|to) us|looking for (a|an|something))",
    re.IGNORECASE,
)
_NOT_NEED = re.compile(r"\b(don't|do not|doesn't) (really )?(need|want)", re.IGNORECASE)


def rule_label(text: str, speaker: str) -> str | None:
    """The first phrase rule matching ``text`` for this speaker, or None."""
    for who, label, rx in _RULES:
        if who in ("any", speaker) and rx.search(text):
            return label
    return None


def sentences(text: str) -> list[tuple[int, str]]:
    """(start_char, sentence) pieces of an utterance, split after . ! ?"""
    out = []
    for m in re.finditer(r"[^.!?]+[.!?]*", text):
        s = m.group(0).strip()
        if s:
            out.append((m.start() + len(m.group(0)) - len(m.group(0).lstrip()), s))
    return out


# -- building ---------------------------------------------------------------------------------


def build_summary(
    call_id: str,
    events: Sequence[Mapping[str, Any]],
    call_date: date,
    opts: SummaryOptions | None = None,
    *,
    engine: str = "builtin",
) -> Summary:
    """The deterministic summary of one call's stored wire events (any order; partials and
    unknown event types are ignored)."""
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
    turns: list[Turn], events: Sequence[Mapping[str, Any]], opts: SummaryOptions
) -> list[Objection]:
    cards: dict[str, list[str]] = {}
    for e in events:
        if e.get("type") == "card" and e.get("utterance_id") is not None:
            title = e.get("title") or e.get("headline") or e.get("kind")
            if title:
                cards.setdefault(str(e["utterance_id"]), []).append(str(title))
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


def _final_score(
    events: Sequence[Mapping[str, Any]], max_reasons: int
) -> tuple[int | None, tuple[str, ...]]:
    scores = [e for e in events if e.get("type") == "score" and e.get("score") is not None]
    if not scores:
        return None, ()
    last = max(scores, key=lambda e: int(e.get("seq", 0)))
    reasons = []
    for r in last.get("reasons") or ():
        if isinstance(r, Mapping):
            r = r.get("text") or r.get("reason") or r.get("label") or ""
        if str(r):
            reasons.append(str(r))
    return round(float(last["score"])), tuple(reasons[:max_reasons])


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


# -- action items and due dates ---------------------------------------------------------------

_VERBS = (
    "send|share|email|e-mail|mail|forward|follow up|call|ring|phone|set up|schedule|book|arrange|"
    "prepare|draft|write|put together|get back|get|review|check|talk|speak|discuss|loop in|"
    "bring|introduce|confirm|circulate|run|sign|provide|look into|update|create|ask|sync|demo|"
    "show|walk|reach out|connect|meet|finalize|finalise|gather|test|try|install|approve|present|"
    "invite|order|pay|submit|complete|fill out|figure out|sort out|organize|organise|compile|"
    "pull together|reserve|clarify|verify|double-check|coordinate|renew"
)
_SELF = re.compile(
    r"\b(?:i|we)(?:'ll| will| shall|'m going to| am going to|'re going to| are going to|"
    r"'m gonna)\s+(?:also |then |definitely |just |quickly |happily |certainly )?"
    rf"(?P<act>(?:{_VERBS})\b.*)|\blet me\s+(?P<act2>(?:{_VERBS})\b.*)",
    re.IGNORECASE,
)
_OTHER = re.compile(
    rf"\b(?:can you|could you|would you|will you|please)\s+(?:also |just )?"
    rf"(?P<act>(?:{_VERBS})\b.*)",
    re.IGNORECASE,
)
_DELIVERABLE = re.compile(
    r"(send|share|e-?mail|forward|loop in|introduce|confirm|sign|submit|fill out|schedule|"
    r"set up|book)\b",
    re.IGNORECASE,
)
# Left at the end once the due phrase is cut out, also when ASR misheard the preposition
# (tiny.en on espeak-ng: "by Friday" -> "my Friday" / "buy Friday", "by end of day" -> "I end
# the day"). An item never ends in one of these words.
_DANGLING = re.compile(
    r"(?:[\s,]+(?:by|buy|bye|on|before|until|for|the|my|i|at|in|no later than))+$", re.IGNORECASE
)
_PRONOUN_AFTER_VERB = re.compile(
    rf"^((?:{_VERBS}))\s+(?:you|me|us|them|him|her)\b\s*", re.IGNORECASE
)


def action_items(turns: list[Turn], call_date: date) -> list[ActionItem]:
    """Commitments and requests, one per sentence, with owner and resolved due date."""
    out: list[ActionItem] = []
    for t in turns:
        if t.speaker not in ("rep", "customer"):
            continue
        other: Owner = "customer" if t.speaker == "rep" else "rep"
        for start, sent in sentences(t.text):
            m = _SELF.search(sent)
            owner: Owner = "rep" if t.speaker == "rep" else "customer"
            if m is None:
                m, owner = _OTHER.search(sent), other
            if m is None:
                continue
            act = m.group("act") if m.group("act") is not None else m.group("act2")
            due = _entity_due(t, start, len(sent)) or resolve_due(sent, call_date)
            if owner == other and due is None and not _DELIVERABLE.match(act):
                continue  # "could you walk me through it?" is a question, not a task
            if due is not None:
                act = act.replace(due[1], " ")
            item = _PRONOUN_AFTER_VERB.sub(r"\1 ", act)
            item = re.sub(r"\s+", " ", item).strip(" ,;:.!?")
            item = _DANGLING.sub("", item)
            if not item:
                continue
            out.append(
                ActionItem(
                    owner,
                    item,
                    due[0].isoformat() if due else None,
                    due[1] if due else None,
                    t.utterance_id,
                    sent,
                )
            )
    return out


def _entity_due(t: Turn, start: int, length: int) -> tuple[date, str] | None:
    for s, e, text, value in t.dates:
        if start <= s and e <= start + length and text:
            return date.fromisoformat(value), text
    return None


_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTHS = tuple(m.lower() for m in calendar.month_name[1:])
_NUMBERS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
_PREP = r"(?:(?:by|before|on|until|no later than|for)\s+)?"
_DUE_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(_PREP + rx, re.IGNORECASE), kind)
    for rx, kind in (
        (r"\b(?:the )?end (?:of )?(?:the )?day\b|\beod\b|\btoday\b|\btonight\b", "today"),
        (r"(?:the )?day after tomorrow\b", "day_after"),
        (r"\btomorrow\b", "tomorrow"),
        (r"(?:the )?end of next week\b", "end_next_week"),
        (r"(?:the )?end of (?:the |this )?week\b|\bthis week\b", "end_week"),
        (r"\bnext week\b", "next_week"),
        (r"(?:the )?end of (?:the |this )?month\b", "end_month"),
        (r"\bnext month\b", "next_month"),
        (
            r"\bin (?P<n>\d+|a|an|one|two|three|four|five|six|seven|eight|nine|ten) "
            r"(?P<unit>days?|weeks?)\b",
            "in",
        ),
        (r"\b(?:in )?a couple (?:of )?days\b", "couple"),
        (r"\b(?:in )?a few days\b", "few"),
        (rf"\b(?:(?P<rel>next|this|coming) )?(?P<wd>{'|'.join(_WEEKDAYS)})\b", "weekday"),
        (rf"\b(?P<mon>{'|'.join(_MONTHS)}) (?:the )?(?P<d>\d{{1,2}})(?:st|nd|rd|th)?\b", "mday"),
        (
            rf"\bthe (?P<d2>\d{{1,2}})(?:st|nd|rd|th)(?: of (?P<mon2>{'|'.join(_MONTHS)}))?\b",
            "mday",
        ),
    )
)


def resolve_due(text: str, call_date: date) -> tuple[date, str] | None:
    """The first due-date phrase in ``text`` (leftmost, longest) resolved against the call
    date, with the phrase as said; None if there is none. See the module docstring."""
    best: tuple[int, int, re.Match[str], str] | None = None
    for rx, kind in _DUE_RULES:
        m = rx.search(text)
        if m and (best is None or (m.start(), -m.end()) < (best[0], -best[1])):
            best = (m.start(), m.end(), m, kind)
    if best is None:
        return None
    _, _, m, kind = best
    d = _resolve(m, kind, call_date)
    return None if d is None else (d, m.group(0))


def _resolve(m: re.Match[str], kind: str, today: date) -> date | None:
    monday = today - timedelta(days=today.weekday())
    fixed = {
        "today": today,
        "tomorrow": today + timedelta(days=1),
        "day_after": today + timedelta(days=2),
        "end_week": today + timedelta(days=(4 - today.weekday()) % 7),
        "next_week": monday + timedelta(days=7),
        "end_next_week": monday + timedelta(days=11),
        "end_month": today.replace(day=calendar.monthrange(today.year, today.month)[1]),
        "next_month": (today.replace(day=28) + timedelta(days=4)).replace(day=1),
        "couple": today + timedelta(days=2),
        "few": today + timedelta(days=3),
    }
    if kind in fixed:
        return fixed[kind]
    g = m.groupdict()
    if kind == "in":
        n = int(g["n"]) if g["n"].isdigit() else _NUMBERS[g["n"].lower()]
        return today + timedelta(days=n * (7 if g["unit"].lower().startswith("week") else 1))
    if kind == "weekday":
        wd = _WEEKDAYS.index(g["wd"].lower())
        rel = (g.get("rel") or "").lower()
        if rel == "next":
            return monday + timedelta(days=7 + wd)
        ahead = (wd - today.weekday()) % 7
        return today + timedelta(days=ahead if rel in ("this", "coming") else ahead or 7)
    day = int(g.get("d") or g.get("d2") or 0)
    mon_name = g.get("mon") or g.get("mon2")
    for k in range(13):  # the first such date on or after the call date
        y, mo = divmod(today.month - 1 + k, 12)
        year, month = today.year + y, mo + 1
        if mon_name and month != _MONTHS.index(mon_name.lower()) + 1:
            continue
        if 1 <= day <= calendar.monthrange(year, month)[1] and date(year, month, day) >= today:
            return date(year, month, day)
    return None


# -- Markdown ---------------------------------------------------------------------------------


def _clock(s: float) -> str:
    m, sec = divmod(round(s), 60)
    return f"{m}:{sec:02d}"


def render_markdown(s: Summary) -> str:
    """The summary as a Markdown document for people (CRM notes, e-mail)."""
    lines = [
        f"# Call summary: {s.call_id}",
        "",
        f"*{s.call_date} · {_clock(s.duration_s)} · outcome: {s.outcome.replace('_', ' ')}"
        + (f" · lead score {s.lead_score}" if s.lead_score is not None else "")
        + f" · engine: {s.engine}*",
        "",
        s.overview,
        "",
    ]

    def section(title: str, rows: list[str]) -> None:
        lines.extend([f"## {title}", ""] + (rows or ["_None._"]) + [""])

    section("Customer needs", [f"- {m.text} ({_clock(m.start_s)})" for m in s.needs])
    section(
        "Objections",
        [
            f'- **{o.kind}** ({_clock(o.start_s)}): "{o.text}" — {o.handling}'
            + (f'; rep: "{o.response}"' if o.response else "")
            for o in s.objections
        ],
    )
    section("Buying signals", [f"- {m.text} ({_clock(m.start_s)})" for m in s.buying_signals])
    section("Next steps", [f"- {m.text} ({m.speaker}, {_clock(m.start_s)})" for m in s.next_steps])
    section(
        "Action items",
        [
            f"- [ ] **{a.owner}**: {a.item}" + (f" — due {a.due} ({a.due_text})" if a.due else "")
            for a in s.action_items
        ],
    )
    lines.extend(
        [
            "## Talk statistics",
            "",
            "| speaker | talk | share | words/min | questions | longest monologue |",
            "|---|---|---|---|---|---|",
        ]
    )
    for t in s.talk:
        wpm = "-" if t.words_per_min is None else f"{t.words_per_min:.0f}"
        lines.append(
            f"| {t.speaker} | {_clock(t.talk_s)} | {t.talk_share:.0%} | {wpm} | "
            f"{t.questions} | {_clock(t.longest_monologue_s)} |"
        )
    lines.extend(
        [
            "",
            "## Sentiment and engagement",
            "",
            "| window | customer sentiment | rep sentiment | engagement |",
            "|---|---|---|---|",
        ]
    )
    for p in s.timeline:
        lines.append(
            f"| {_clock(p.start_s)}-{_clock(p.end_s)} | {_fmt(p.customer_sentiment)} | "
            f"{_fmt(p.rep_sentiment)} | {_fmt(p.engagement)} |"
        )
    lines.append("")
    if s.lead_score is not None:
        section(f"Lead score: {s.lead_score}", [f"- {r}" for r in s.score_reasons])
    return "\n".join(lines).rstrip() + "\n"


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:+.2f}"
