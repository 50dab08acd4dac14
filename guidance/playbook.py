"""The playbook: which card to show for which insight, and the thresholds of every alert.

A playbook is one YAML file. The packaged default (``guidance/playbook.yaml``) is complete;
a user copies it, edits talk tracks, battlecards and thresholds, and points the server at the
copy. ``load_playbook`` validates the whole file at start-up and raises ``PlaybookError`` whose
message names the file, the field path (``cards.objection_price.responses``) and the problem,
so a broken playbook never reaches a live call.

Every intent card kind and every alert kind must have a template: a playbook that silently
lacks the price-objection card would be worse than one that fails to load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from guidance.datafile import read_data_file
from guidance.errors import PlaybookError, describe_validation

IntentCardKind = Literal[
    "objection_price",
    "objection_timing",
    "objection_authority",
    "objection_need",
    "objection_competitor",
    "objection_trust",
    "buying_signal",
    "question",
    "next_step",
    "competitor",
]
AlertKind = Literal[
    "talk_ratio",
    "monologue",
    "fast_speech",
    "customer_silence",
    "interruption",
    "unanswered_question",
    "no_next_step",
    "sentiment_drop",
]
INTENT_CARD_KINDS: tuple[str, ...] = get_args(IntentCardKind)
ALERT_KINDS: tuple[str, ...] = get_args(AlertKind)

Line = Annotated[str, Field(min_length=1, max_length=400)]
Seconds = Annotated[float, Field(gt=0, le=86_400)]
Ratio = Annotated[float, Field(gt=0, lt=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CardTemplate(_Strict):
    """What the rep sees: a short title and one to three talk tracks; higher priority first."""

    title: Annotated[str, Field(min_length=1, max_length=80)]
    priority: Annotated[int, Field(ge=0, le=100)]
    responses: Annotated[tuple[Line, ...], Field(min_length=1, max_length=3)]


Raiser = Literal["customer", "rep"]


class IntentCardTemplate(CardTemplate):
    """An intent card, and whose lines may raise it (``raised_by``, default the customer's).

    A customer line raises the card as soon as its insight is sure enough. A rep line (only
    for a card whose ``raised_by`` names ``rep``, e.g. ``next_step``) raises it once the
    customer's reply agrees to it: a rep describing a problem, or proposing a meeting the
    customer turns down, is no next step. Battlecards and question topics follow the
    ``raised_by`` of ``competitor`` and ``question``."""

    raised_by: Annotated[tuple[Raiser, ...], Field(min_length=1, max_length=2)] = ("customer",)

    @field_validator("raised_by")
    @classmethod
    def _distinct(cls, v: tuple[Raiser, ...]) -> tuple[Raiser, ...]:
        if len(set(v)) != len(v):
            raise ValueError("lists a speaker twice")
        return v


class QuestionTopic(CardTemplate):
    """A customer question whose text contains one of ``keywords`` gets this card."""

    name: Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z0-9_]+$")]
    keywords: Annotated[tuple[Annotated[str, Field(min_length=2)], ...], Field(min_length=1)]


class IntentCards(_Strict):
    objection_price: IntentCardTemplate
    objection_timing: IntentCardTemplate
    objection_authority: IntentCardTemplate
    objection_need: IntentCardTemplate
    objection_competitor: IntentCardTemplate
    objection_trust: IntentCardTemplate
    buying_signal: IntentCardTemplate
    question: IntentCardTemplate
    next_step: IntentCardTemplate
    competitor: IntentCardTemplate  # a competitor named that has no battlecard


class AlertCards(_Strict):
    talk_ratio: CardTemplate
    monologue: CardTemplate
    fast_speech: CardTemplate
    customer_silence: CardTemplate
    interruption: CardTemplate
    unanswered_question: CardTemplate
    no_next_step: CardTemplate
    sentiment_drop: CardTemplate


class DeckSettings(_Strict):
    """Flood control. Every time here is call audio time, so cooldowns are deterministic."""

    max_new_cards_per_minute: Annotated[int, Field(ge=1, le=30)] = 4  # cue cards
    max_new_alerts_per_minute: Annotated[int, Field(ge=1, le=30)] = 3  # dynamics alerts
    update_min_interval_s: Seconds = 8.0
    card_ttl_s: Seconds = 120.0
    dismissed_cooldown_s: Seconds = 180.0
    used_cooldown_s: Seconds = 600.0
    max_pending_s: Seconds = 15.0
    min_confidence: Ratio = 0.4  # held-out sweep: python -m bench.bench_cards --threshold-sweep
    partial_min_confidence: Ratio = 0.8
    partial_min_words: Annotated[int, Field(ge=1, le=50)] = 4
    # A final's cards also need the recognizer's mean word probability this high (0: off).
    min_word_probability: Annotated[float, Field(ge=0, lt=1)] = 0.5
    provisional_max_s: Seconds = 8.0  # a provisional card whose utterance went quiet: withdrawn
    rep_agreement_s: Seconds = 20.0  # a rep-raised card waits this long for the customer's yes
    agreement_phrases: tuple[Annotated[str, Field(min_length=2)], ...] = (
        "yes", "yeah", "yep", "sure", "okay", "ok", "sounds good", "that works", "works for me",
        "perfect", "great", "absolutely", "definitely", "of course", "please do", "let's do it",
        "good idea", "that would help", "i'd like that", "why not",
    )  # fmt: skip

    @field_validator("agreement_phrases")
    @classmethod
    def _lower_phrases(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(p.lower() for p in v)


class DynamicsSettings(_Strict):
    talk_ratio_window_s: Seconds = 120.0
    max_rep_talk_ratio: Ratio = 0.75
    talk_ratio_min_speech_s: Seconds = 40.0
    monologue_s: Seconds = 45.0
    monologue_max_gap_s: Seconds = 5.0
    backchannel_max_s: Seconds = 1.0
    max_rep_wpm: Annotated[float, Field(gt=60, le=400)] = 190.0
    fast_speech_window_s: Seconds = 30.0
    fast_speech_min_words: Annotated[int, Field(ge=5, le=1000)] = 30
    customer_silence_s: Seconds = 45.0
    interruption_min_overlap_s: Seconds = 0.6
    unanswered_after_s: Seconds = 8.0
    no_next_step_after_s: Seconds = 1500.0
    closing_phrases: tuple[Annotated[str, Field(min_length=3)], ...] = ()
    sentiment_drop: Annotated[float, Field(gt=0, le=2)] = 0.6
    engagement_drop: Annotated[float, Field(gt=0, le=2)] = 0.8
    sentiment_window_s: Seconds = 180.0
    transcript_lag_s: Annotated[float, Field(ge=0, le=30)] = 0.3

    @field_validator("closing_phrases")
    @classmethod
    def _lower(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(p.lower() for p in v)


class Playbook(_Strict):
    version: Literal[1]
    cards: IntentCards
    alerts: AlertCards
    competitors: dict[Annotated[str, Field(min_length=1)], CardTemplate] = {}
    question_topics: tuple[QuestionTopic, ...] = ()
    deck: DeckSettings = DeckSettings()
    dynamics: DynamicsSettings = DynamicsSettings()
    # Names the recognizer should spell right: products, the company, partners.
    vocabulary: tuple[Annotated[str, Field(min_length=1, max_length=60)], ...] = ()

    def vocabulary_hints(self) -> tuple[str, ...]:
        """Names to bias the recognizer toward (``vocabulary``, then every competitor with a
        battlecard), each once, in that order."""
        seen: dict[str, str] = {}
        for name in (*self.vocabulary, *self.competitors):
            seen.setdefault(name.strip().casefold(), name.strip())
        return tuple(seen.values())

    def raised_by(self, kind: str) -> tuple[Raiser, ...]:
        """Whose lines may raise the intent card ``kind`` (KeyError for a kind that is none)."""
        if kind not in INTENT_CARD_KINDS:
            raise KeyError(kind)
        template: IntentCardTemplate = getattr(self.cards, kind)
        return template.raised_by

    def card(self, kind: str) -> CardTemplate:
        """The template of an intent or alert kind; KeyError for a kind the playbook lacks."""
        if kind in INTENT_CARD_KINDS:
            template: CardTemplate = getattr(self.cards, kind)
            return template
        if kind in ALERT_KINDS:
            alert: CardTemplate = getattr(self.alerts, kind)
            return alert
        raise KeyError(kind)

    def battlecard(self, competitor: str) -> CardTemplate | None:
        """The battlecard for a canonical competitor name, matched case-insensitively."""
        wanted = competitor.strip().casefold()
        for name, template in self.competitors.items():
            if name.casefold() == wanted:
                return template
        return None

    def topic_for(self, text: str) -> QuestionTopic | None:
        """The first question topic with a keyword in ``text`` (case-insensitive)."""
        lowered = text.casefold()
        for topic in self.question_topics:
            if any(k.casefold() in lowered for k in topic.keywords):
                return topic
        return None


def load_playbook(path: str | Path | None = None) -> Playbook:
    """The playbook at ``path``, or the packaged default; ``PlaybookError`` if it is unusable."""
    text, name = read_data_file(path, "playbook.yaml", "playbook", PlaybookError)
    return parse_playbook(text, name)


def parse_playbook(text: str, name: str = "<string>") -> Playbook:
    """Validate playbook YAML text; ``name`` is used in error messages."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise PlaybookError(f"playbook {name}:{where}: not valid YAML: {problem}") from e
    if not isinstance(data, dict):
        raise PlaybookError(f"playbook {name}: the top level must be a mapping of sections")
    try:
        return Playbook.model_validate(data)
    except ValidationError as e:
        raise PlaybookError(f"playbook {name}: " + describe_validation(e, limit=5)) from e
