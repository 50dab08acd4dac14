"""``Coach``: one call's live coaching, composed of ``Dynamics``, ``CardDeck`` and ``LeadScore``.

The session feeds it, in audio order, every transcript (partials and finals, both speakers),
every insight, audio-time ticks a few times a second, and the rep's card actions; each method
returns the events to send (``Card``, ``Score``, ``CardActionRejected``), in order. Sync, no
I/O, no clock: every cooldown and rate limit counts call audio seconds (``now_s`` is the
latest audio time seen), so a replayed call produces exactly the same cards.

Which insight gives which card (final insights at ``deck.min_confidence`` or more, from a
speaker the card's ``raised_by`` names): objection labels give the objection card of that type,
``buying_signal`` and ``question`` (by question topic) theirs, each competitor entity its
battlecard (or the generic ``competitor`` card), ``next_step`` the next-step card. A rep line
raises a card (only one whose ``raised_by`` names the rep: ``next_step`` in the default
playbook) when the customer's next final, within ``deck.rep_agreement_s``, agrees to it: it
starts with one of ``deck.agreement_phrases`` or reads as a next step, buying signal or
positive, and is no objection. That card quotes the rep's proposal and is stamped with the end
of the customer's reply, the utterance that triggered it. A stable customer partial at
``deck.partial_min_confidence`` with ``deck.partial_min_words`` words issues its most important
card early as ``provisional``; the final confirms it, or withdraws it when it asks for another
card or none (another label, a confidence under the threshold); so does an utterance that goes
quiet for ``deck.provisional_max_s`` without a final.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from guidance.cards import Candidate, Card, CardDeck, Evidence
from guidance.dynamics import Alert, Dynamics
from guidance.errors import CardActionError, describe_validation
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
class _Proposal:
    """A rep line that asks for a rep-raised card, waiting for the customer's reply."""

    insight: Insight
    kind: str


_AGREEING_LABELS = frozenset({"next_step", "buying_signal", "positive"})


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
        self._proposal: _Proposal | None = None
        self._word_probability: dict[str, float] = {}  # final's mean, until its insight

    def start(self) -> list[CoachEvent]:
        """The opening score (the prior's contributions as reasons)."""
        return [self._score.start(self._now_s)]

    def observe_transcript(self, t: Transcript) -> list[CoachEvent]:
        self._advance(t.end_s)
        if not t.is_final:
            self._deck.heard(t.utterance_id, t.end_s)
        elif t.words:
            mean = sum(w.probability for w in t.words) / len(t.words)
            self._word_probability[t.utterance_id] = mean
        alerts = self._dynamics.observe_transcript(t)
        return [*self._deck.tick(self._now_s), *self._offer_alerts(alerts)]

    def observe_insight(self, i: Insight) -> list[CoachEvent]:
        self._advance(i.end_s)
        out: list[CoachEvent] = list(self._deck.tick(self._now_s))
        if not i.is_final:
            return out + self._provisional(i)
        candidates = self._candidates(i)
        if i.speaker == "rep":
            self._propose(i)
        else:
            candidates += self._agreed(i, {c.key for c in candidates})
        self._word_probability.pop(i.utterance_id, None)
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
            card_id = message.get("card_id") if isinstance(message, Mapping) else None
            return [
                CardActionRejected(  # an id that breaks the rules is not echoed back
                    card_id if isinstance(card_id, str) and 0 < len(card_id) <= 64 else None,
                    f"bad card_action message: {describe_validation(e, root='message')}",
                )
            ]
        try:
            return list(self._deck.act(action.card_id, action.action, self._now_s))
        except CardActionError as e:
            return [CardActionRejected(action.card_id, str(e))]

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

    def _sure(self, i: Insight) -> bool:
        """Sure enough of what was said (the intent) and that it was heard right (the final's
        mean word probability, where the recognizer gave one)."""
        deck = self._playbook.deck
        heard = self._word_probability.get(i.utterance_id, 1.0) if i.is_final else 1.0
        return i.confidence >= deck.min_confidence and heard >= deck.min_word_probability

    def _raises(self, i: Insight, kind: str) -> bool:
        return i.speaker in self._playbook.raised_by(kind)

    def _candidates(self, i: Insight) -> list[Candidate]:
        """The cards a customer insight asks for, before de-duplication and rate limiting
        (a rep's line raises a card only through the customer's agreement: ``_agreed``)."""
        if i.speaker != "customer" or not self._sure(i):
            return []
        out: list[Candidate] = []
        competitors = list(dict.fromkeys(e.value for e in i.entities if e.kind == "competitor"))
        if not self._raises(i, "competitor"):
            competitors = []
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
        if i.label in INTENT_CARD_KINDS and not self._raises(i, i.label):
            return out
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

    def _propose(self, i: Insight) -> None:
        """A sure rep final asking for a card the rep may raise waits for the reply."""
        if self._sure(i) and i.label in INTENT_CARD_KINDS and self._raises(i, i.label):
            self._proposal = _Proposal(i, i.label)

    def _agreed(self, i: Insight, raised: set[str]) -> list[Candidate]:
        """The rep's pending proposal as a card, if this customer final is the reply and
        agrees to it. The first customer final after the proposal settles it either way."""
        proposal, settings = self._proposal, self._playbook.deck
        if proposal is None or i.speaker != "customer":
            return []
        if i.start_s < proposal.insight.end_s - 0.5:
            return []  # said over the proposal (a backchannel), not a reply to it
        self._proposal = None
        if i.start_s - proposal.insight.end_s > settings.rep_agreement_s:
            return []
        objection = i.label.startswith("objection") and self._sure(i)
        said = i.text.casefold().lstrip(" \"'.,-")
        yes = any(
            said.startswith(p) and not said[len(p) : len(p) + 1].isalnum()
            for p in settings.agreement_phrases
        )
        if objection or not (yes or (i.label in _AGREEING_LABELS and self._sure(i))):
            return []
        if proposal.kind in raised:
            return []  # the reply raised the same card itself
        rep_said = proposal.insight
        card = self._card(rep_said, proposal.kind, proposal.kind, f"The customer agreed: {i.text}")
        draft = dataclasses.replace(card.card, audio_end_s=i.end_s, utterance_id=i.utterance_id)
        return [Candidate(card.key, draft)]

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
