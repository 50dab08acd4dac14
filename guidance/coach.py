"""``Coach``: one call's live coaching, composed of ``Dynamics``, ``CardDeck`` and ``LeadScore``.

The session feeds it, in audio order, every transcript (partials and finals, both speakers),
every insight, audio-time ticks a few times a second, and the rep's card actions; each method
returns the events to send (``Card``, ``Score``, ``CardActionRejected``), in order. Sync, no
I/O, no clock: every cooldown and rate limit counts call audio seconds (``now_s`` is the
latest audio time seen), so a replayed call produces exactly the same cards.

Which insight gives which card (final customer insights at ``deck.min_confidence`` or more):
objection labels give the objection card of that type, ``buying_signal`` and ``question`` (by
question topic) theirs, each competitor entity its battlecard (or the generic ``competitor``
card), and ``next_step`` from either speaker the next-step card. A stable customer partial at
``deck.partial_min_confidence`` with ``deck.partial_min_words`` words issues its most important
card early as ``provisional``; the final confirms or withdraws it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from guidance.cards import Candidate, Card, CardDeck, Evidence
from guidance.dynamics import Alert, Dynamics
from guidance.errors import CardActionError
from guidance.playbook import INTENT_CARD_KINDS, CardTemplate, Playbook
from guidance.score import TALK_SHARE_PRIOR_S, LeadScore, Prior, Score, ScoreModel
from nlp.insight import Insight
from nlp.transcript import Transcript


@dataclass(frozen=True, slots=True)
class CardActionRejected:
    """A rep's card action that could not be applied; the call goes on."""

    type: ClassVar[str] = "card_action_rejected"

    card_id: str | None
    reason: str


CoachEvent = Card | Score | CardActionRejected


@dataclass(frozen=True, slots=True)
class CoachState:
    """What the coach knows at a moment, e.g. at the end of the call for the summary."""

    score: float
    features: dict[str, float]
    cards: tuple[Card, ...]
    next_step_agreed: bool


class CardActionMessage(BaseModel):
    """``{"type": "card_action", "card_id": "card-3", "action": "dismissed" | "used"}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["card_action"]
    card_id: str = Field(min_length=1, max_length=64)
    action: Literal["dismissed", "used"]


class Coach:
    """Per-call coaching core. Construct it when the call starts, call ``start()`` once."""

    def __init__(self, playbook: Playbook, score_model: ScoreModel, prior: Prior | None = None):
        self._playbook = playbook
        self._deck = CardDeck(playbook.deck)
        sure = playbook.deck.min_confidence
        self._dynamics = Dynamics(playbook.dynamics, min_confidence=sure)
        self._score = LeadScore(score_model, prior, min_confidence=sure)
        self._now_s = 0.0

    def start(self) -> list[CoachEvent]:
        """The opening score (the prior's contributions as reasons)."""
        return [self._score.start(self._now_s)]

    def observe_transcript(self, t: Transcript) -> list[CoachEvent]:
        self._advance(t.end_s)
        alerts = self._dynamics.observe_transcript(t)
        return [*self._deck.tick(self._now_s), *self._offer_alerts(alerts)]

    def observe_insight(self, i: Insight) -> list[CoachEvent]:
        self._advance(i.end_s)
        out: list[CoachEvent] = list(self._deck.tick(self._now_s))
        if not i.is_final:
            return out + self._provisional(i)
        candidates = self._candidates(i)
        out += self._deck.finalize(i.utterance_id, candidates, self._now_s)
        out += self._offer_alerts(self._dynamics.observe_insight(i))
        score = self._score.observe(i, self._dynamics.rep_talk_share(TALK_SHARE_PRIOR_S))
        if score is not None:
            out.append(score)
        return out

    def tick(self, audio_now_s: float) -> list[CoachEvent]:
        self._advance(audio_now_s)
        alerts = self._dynamics.tick(audio_now_s)
        return [*self._offer_alerts(alerts), *self._deck.tick(self._now_s)]

    def act(self, message: Mapping[str, Any]) -> list[CoachEvent]:
        """A message from the rep's page; a ``CardActionRejected`` if it is malformed or names
        no card of this call. Never raises for bad input."""
        try:
            action = CardActionMessage.model_validate(message)
        except ValidationError as e:
            first = e.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "message"
            card_id = message.get("card_id") if isinstance(message, Mapping) else None
            return [
                CardActionRejected(
                    card_id if isinstance(card_id, str) else None,
                    f"bad card_action message: {where}: {first['msg']}",
                )
            ]
        try:
            return list(self._deck.act(action.card_id, action.action, self._now_s))
        except CardActionError as e:
            return [CardActionRejected(action.card_id, str(e))]

    def state(self) -> CoachState:
        return CoachState(
            score=self._score.score,
            features=self._score.conversation_features(),
            cards=tuple(self._deck.cards()),
            next_step_agreed=self._dynamics.next_step_agreed,
        )

    def _advance(self, audio_s: float) -> None:
        self._now_s = max(self._now_s, audio_s)

    def _provisional(self, i: Insight) -> list[CoachEvent]:
        settings = self._playbook.deck
        if i.speaker != "customer" or i.confidence < settings.partial_min_confidence:
            return []
        if len(i.text.split()) < settings.partial_min_words:
            return []
        candidates = sorted(self._candidates(i), key=lambda c: -c.card.priority)
        if not candidates:
            return []
        return list(self._deck.offer_provisional(candidates[0], i.utterance_id, self._now_s))

    def _candidates(self, i: Insight) -> list[Candidate]:
        """The cards an insight asks for, before de-duplication and rate limiting."""
        if (
            i.speaker not in ("rep", "customer")
            or i.confidence < self._playbook.deck.min_confidence
        ):
            return []
        if i.speaker == "rep":
            return [self._card(i, "next_step", "next_step")] if i.label == "next_step" else []
        out: list[Candidate] = []
        competitors = list(dict.fromkeys(e.value for e in i.entities if e.kind == "competitor"))
        for name in competitors:
            battlecard = self._playbook.battlecard(name)
            kind = "competitor"
            if battlecard is None:
                template = self._playbook.card("competitor")
                title = f"{template.title}: {name}"
            else:
                template, title = battlecard, battlecard.title
            detail = f"The customer mentioned {name}."
            out.append(
                self._card(i, kind, f"competitor:{name.casefold()}", detail, title, template)
            )
        if i.label == "objection_competitor" and competitors:
            return out  # the battlecard is the better answer than the generic objection card
        if i.label == "question":
            topic = self._playbook.topic_for(i.text)
            if topic is not None:
                out.append(
                    self._card(i, "question", f"question:{topic.name}", "", topic.title, topic)
                )
                return out
        if i.label in INTENT_CARD_KINDS:
            out.append(self._card(i, i.label, i.label))
        return out

    def _card(
        self,
        i: Insight,
        kind: str,
        key: str,
        detail: str = "",
        title: str | None = None,
        template: CardTemplate | None = None,
    ) -> Candidate:
        if template is None:
            template = self._playbook.card(kind)
        evidence = Evidence(i.text, i.speaker, i.start_s, i.end_s)
        card = _draft(template, kind, i.end_s, evidence, detail, title, i.utterance_id)
        return Candidate(key, card)

    def _offer_alerts(self, alerts: list[Alert]) -> list[CoachEvent]:
        candidates = [
            Candidate(
                f"alert:{a.kind}",
                _draft(self._playbook.card(a.kind), a.kind, a.audio_end_s, a.evidence, a.detail),
            )
            for a in alerts
        ]
        return list(self._deck.offer(candidates, self._now_s)) if candidates else []


def _draft(
    template: CardTemplate,
    kind: str,
    audio_end_s: float,
    evidence: Evidence | None,
    detail: str = "",
    title: str | None = None,
    utterance_id: str | None = None,
) -> Card:
    """A card not yet issued: the deck sets its id and lifecycle fields when it issues it."""
    return Card(
        card_id="",
        state="issued",
        kind=kind,
        priority=template.priority,
        title=title if title is not None else template.title,
        detail=detail,
        responses=tuple(template.responses),
        evidence=evidence,
        audio_end_s=audio_end_s,
        utterance_id=utterance_id,
    )
