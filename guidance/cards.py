"""Cue cards and ``CardDeck``: the lifecycle, de-duplication, cooldowns and rate limit of cards.

A card is identified by its ``card_id`` and de-duplicated by a *key* (its kind, or
``competitor:Gong``, ``question:pricing``): raising a key whose card is still on screen updates
that card instead of issuing another. Contracts:

- ``issued`` is the only state that adds a card to the rep's screen; at most
  ``max_new_cards_per_minute`` cue cards (what the customer said: objections, signals,
  questions, competitors, next steps) and ``max_new_alerts_per_minute`` alerts (conversation
  dynamics) are issued in any 60 s of audio time. The two budgets are separate so an alert
  about the rep's pace never delays the card for the objection just raised. A card that cannot
  be issued yet waits (most important first) and is dropped once ``max_pending_s`` old.
- ``updated`` (same key raised again) is sent at most once per ``update_min_interval_s`` per card;
  raises in between only bump ``times_raised`` and the evidence, shown with the next update.
- A card issued from a partial transcript is ``provisional``; the utterance's final either
  ``confirmed`` it or ``withdrawn`` it (a withdrawn card gives its rate-limit slot back). An
  utterance that goes quiet for ``provisional_max_s`` without a final (the recognizer dropped
  it) has its provisional card withdrawn too: a provisional card never stays on screen.
- ``dismissed``/``used`` come from the rep; the key then stays quiet for its cooldown.
- A card not raised for ``card_ttl_s`` is stale: raising its key again issues a new card.

All times are call audio seconds (``now_s`` is the latest audio time the coach has seen), so the
deck is deterministic and replayable. No clock, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass
from typing import ClassVar, Literal

from audio.chunk import Speaker
from guidance.errors import CardActionError
from guidance.playbook import ALERT_KINDS, DeckSettings

CardState = Literal["issued", "updated", "confirmed", "withdrawn", "dismissed", "used"]
CardAction = Literal["dismissed", "used"]
Budget = Literal["card", "alert"]


def budget_of(kind: str) -> Budget:
    return "alert" if kind in ALERT_KINDS else "card"


@dataclass(frozen=True, slots=True)
class Evidence:
    """What triggered a card: who said what, when (call audio time)."""

    quote: str
    speaker: Speaker
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class Card:
    """A cue card event. ``audio_end_s`` is the audio time of the end of the triggering
    utterance, or for an alert the moment its condition became true: wall time at arrival minus
    this is the card latency."""

    type: ClassVar[str] = "card"

    card_id: str
    state: CardState
    kind: str
    priority: int
    title: str
    detail: str
    responses: tuple[str, ...]
    evidence: Evidence | None
    audio_end_s: float
    provisional: bool = False
    times_raised: int = 1
    utterance_id: str | None = None  # the triggering utterance; None for timing alerts
    # audio seconds the card waited for a slot of the rate limit before it was issued: part of
    # its latency by design (the rep is not flooded), not the pipeline's
    waited_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Candidate:
    """A card the coach would like on screen, and the key it is de-duplicated by; the deck
    decides whether and how it is sent. ``card`` is a draft: the deck gives it its id, state
    and lifecycle fields when it issues it."""

    key: str
    card: Card


@dataclass(slots=True)
class _Slot:
    card: Card
    last_raised_s: float
    last_sent_s: float
    issued_at_s: float
    closed_at_s: float | None = None


class CardDeck:
    """Per-call card lifecycle; every method returns the card events to send, in order."""

    def __init__(self, settings: DeckSettings) -> None:
        self._settings = settings
        self._slots: dict[str, _Slot] = {}
        self._key_of_id: dict[str, str] = {}
        self._issued_at_s: dict[Budget, deque[float]] = {"card": deque(), "alert": deque()}
        self._pending: dict[str, Candidate] = {}
        self._waiting_since: dict[str, float] = {}  # key -> when it first waited for a slot
        self._provisional: dict[str, str] = {}  # utterance_id -> card_id
        self._heard_s: dict[str, float] = {}  # utterance_id -> when more of it was last heard
        self._next_id = 1

    def offer(self, candidates: list[Candidate], now_s: float) -> list[Card]:
        """Raise candidates (most important first): issue, update, queue or suppress each."""
        out: list[Card] = []
        for c in sorted(candidates, key=lambda c: -c.card.priority):
            out.extend(self._raise(c, now_s))
        return out

    def offer_provisional(self, c: Candidate, utterance_id: str, now_s: float) -> list[Card]:
        """Issue ``c`` early from a partial, only if its key is quiet and the rate allows it."""
        if utterance_id in self._provisional or self._quiet_reason(c.key, now_s) is not None:
            return []
        if self._active(c.key, now_s) is not None or not self._has_budget(c, now_s):
            return []
        card = self._issue(c, now_s, provisional=True)
        self._provisional[utterance_id] = card.card_id
        self._heard_s[utterance_id] = now_s
        return [card]

    def heard(self, utterance_id: str, now_s: float) -> None:
        """More of ``utterance_id`` was heard (a partial): its provisional card may stay."""
        if utterance_id in self._provisional:
            self._heard_s[utterance_id] = max(self._heard_s[utterance_id], now_s)

    def finalize(self, utterance_id: str, candidates: list[Candidate], now_s: float) -> list[Card]:
        """The final of ``utterance_id``: confirm or withdraw its provisional card, then raise
        the final's candidates."""
        out: list[Card] = []
        rest = list(candidates)
        slot = self._provisional_slot(utterance_id)
        if slot is not None:
            match = next((c for c in rest if c.key == self._key_of_id[slot.card.card_id]), None)
            if match is not None:
                rest.remove(match)
                out.append(self._send(slot, match, "confirmed", now_s, raised=False))
            else:
                out.append(self._withdraw(slot, now_s))
        out.extend(self.offer(rest, now_s))
        return out

    def tick(self, now_s: float) -> list[Card]:
        """Withdraw provisional cards of utterances gone quiet, drop stale waiting cards and
        issue waiting ones the rate limit now allows."""
        out: list[Card] = []
        for utterance_id in list(self._provisional):
            if now_s - self._heard_s[utterance_id] > self._settings.provisional_max_s:
                slot = self._provisional_slot(utterance_id)
                if slot is not None:
                    out.append(self._withdraw(slot, now_s))
        for key, c in list(self._pending.items()):
            if now_s - c.card.audio_end_s > self._settings.max_pending_s:
                del self._pending[key]
                self._waiting_since.pop(key, None)
        for key in sorted(self._pending, key=lambda k: -self._pending[k].card.priority):
            if self._has_budget(self._pending[key], now_s):
                out.append(self._issue(self._pending.pop(key), now_s, provisional=False))
        return out

    def act(self, card_id: str, action: CardAction, now_s: float) -> list[Card]:
        """The rep dismissed or used a card. ``CardActionError`` for an unknown or withdrawn
        card; repeating an action already taken sends nothing."""
        key = self._key_of_id.get(card_id)
        if key is None:
            raise CardActionError(f"no card with id {card_id!r} in this call")
        slot = self._slots.get(key)
        if slot is None or slot.card.card_id != card_id:
            raise CardActionError(f"card {card_id!r} is no longer on screen")
        if slot.card.state in ("dismissed", "used"):
            return []
        slot.closed_at_s = now_s
        slot.card = dataclasses.replace(slot.card, state=action, provisional=False)
        return [slot.card]

    def cards(self) -> list[Card]:
        """The latest state of every card of the call that was not withdrawn, oldest first."""
        return sorted((s.card for s in self._slots.values()), key=lambda c: int(c.card_id[5:]))

    def _provisional_slot(self, utterance_id: str) -> _Slot | None:
        """The open provisional card of ``utterance_id``, forgotten as such (the final or
        the withdrawal settles it once)."""
        card_id = self._provisional.pop(utterance_id, None)
        self._heard_s.pop(utterance_id, None)
        key = self._key_of_id.get(card_id) if card_id is not None else None
        slot = self._slots.get(key) if key is not None else None
        if (
            slot is None
            or slot.card.card_id != card_id
            or not slot.card.provisional
            or slot.closed_at_s is not None
        ):
            return None
        return slot

    def _raise(self, c: Candidate, now_s: float) -> list[Card]:
        if self._quiet_reason(c.key, now_s) is not None:
            return []
        slot = self._active(c.key, now_s)
        if slot is not None:
            if now_s - slot.last_sent_s < self._settings.update_min_interval_s:
                slot.card = _with_evidence(slot.card, c, slot.card.times_raised + 1)
                slot.last_raised_s = now_s
                return []
            return [self._send(slot, c, "updated", now_s, raised=True)]
        if self._has_budget(c, now_s):
            return [self._issue(c, now_s, provisional=False)]
        waiting = self._pending.get(c.key)
        if waiting is None or waiting.card.priority <= c.card.priority:
            self._pending[c.key] = c
        self._waiting_since.setdefault(c.key, now_s)
        return []

    def _quiet_reason(self, key: str, now_s: float) -> str | None:
        slot = self._slots.get(key)
        if slot is None or slot.closed_at_s is None:
            return None
        cooldown = (
            self._settings.used_cooldown_s
            if slot.card.state == "used"
            else self._settings.dismissed_cooldown_s
        )
        return slot.card.state if now_s - slot.closed_at_s < cooldown else None

    def _active(self, key: str, now_s: float) -> _Slot | None:
        slot = self._slots.get(key)
        if slot is None or slot.closed_at_s is not None:
            return None
        if now_s - slot.last_raised_s > self._settings.card_ttl_s:
            return None
        return slot

    def _has_budget(self, c: Candidate, now_s: float) -> bool:
        budget = budget_of(c.card.kind)
        issued = self._issued_at_s[budget]
        while issued and now_s - issued[0] >= 60.0:
            issued.popleft()
        limit = (
            self._settings.max_new_alerts_per_minute
            if budget == "alert"
            else self._settings.max_new_cards_per_minute
        )
        return len(issued) < limit

    def _issue(self, c: Candidate, now_s: float, *, provisional: bool) -> Card:
        card_id = f"card-{self._next_id}"
        self._next_id += 1
        waited_s = max(0.0, now_s - self._waiting_since.pop(c.key, now_s))
        card = dataclasses.replace(
            c.card,
            card_id=card_id,
            state="issued",
            provisional=provisional,
            times_raised=1,
            waited_s=round(waited_s, 3),
        )
        self._slots[c.key] = _Slot(
            card=card, last_raised_s=now_s, last_sent_s=now_s, issued_at_s=now_s
        )
        self._key_of_id[card_id] = c.key
        self._pending.pop(c.key, None)
        self._issued_at_s[budget_of(card.kind)].append(now_s)
        return card

    def _send(
        self, slot: _Slot, c: Candidate, state: CardState, now_s: float, *, raised: bool
    ) -> Card:
        times = slot.card.times_raised + (1 if raised else 0)
        slot.card = dataclasses.replace(
            _with_evidence(slot.card, c, times), state=state, provisional=False
        )
        slot.last_raised_s = now_s
        slot.last_sent_s = now_s
        return slot.card

    def _withdraw(self, slot: _Slot, now_s: float) -> Card:
        card = dataclasses.replace(slot.card, state="withdrawn", provisional=False)
        key = self._key_of_id[card.card_id]
        del self._slots[key]
        issued = self._issued_at_s[budget_of(card.kind)]
        if slot.issued_at_s in issued:
            # The provisional card's rate-limit slot goes back: the card never really happened.
            issued.remove(slot.issued_at_s)
        return card


def _with_evidence(card: Card, c: Candidate, times_raised: int) -> Card:
    return dataclasses.replace(
        card,
        detail=c.card.detail,
        evidence=c.card.evidence,
        audio_end_s=c.card.audio_end_s,
        utterance_id=c.card.utterance_id,
        times_raised=times_raised,
        priority=max(card.priority, c.card.priority),
    )
