"""Rep feedback as an accuracy signal: per card kind, how often a shown card was used,
dismissed or left alone, over the calls in the store.

Computed from the stored card events (``CallStore.list_calls`` and ``CallStore.events``; no
table of its own). A card counts as *shown* once per ``card_id`` when its stored events hold
anything but a withdrawal: provisional cards are stored only once the final confirms them, and
a withdrawn card never counts. Its *action* is the rep's last ``used`` or ``dismissed``; a
shown card with neither is ``no_action``. ``dismiss_rate`` is dismissed / shown: a kind the
reps keep dismissing is a card that misleads (wrong trigger) or does not help (weak talk
track). Alerts (``group: alert``) are counted the same way as cue cards (``group: card``).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from guidance.cards import Budget, Card, budget_of
from server.store import CallFilter, CallStore
from server.wire import from_wire

_PAGE = 1000


@dataclass(frozen=True, slots=True)
class KindStats:
    kind: str
    group: Budget  # "card" (what the customer said) or "alert" (conversation dynamics)
    shown: int
    used: int
    dismissed: int
    no_action: int

    @property
    def dismiss_rate(self) -> float:
        return round(self.dismissed / self.shown, 4) if self.shown else 0.0

    @property
    def use_rate(self) -> float:
        return round(self.used / self.shown, 4) if self.shown else 0.0

    def as_dict(self) -> dict[str, object]:
        """The counts and both rates, JSON-ready (the REST and ``--json`` shape)."""
        out: dict[str, object] = dataclasses.asdict(self)
        out |= {"dismiss_rate": self.dismiss_rate, "use_rate": self.use_rate}
        return out


@dataclass(frozen=True, slots=True)
class CardStats:
    """Per-kind counts over ``calls`` stored calls, most shown kind first."""

    calls: int
    kinds: tuple[KindStats, ...]


def outcomes(cards: Iterable[Card]) -> dict[str, tuple[str, str | None]]:
    """Per shown card of one call, in order: ``card_id -> (kind, last rep action or None)``."""
    out: dict[str, tuple[str, str | None]] = {}
    withdrawn: set[str] = set()
    for c in cards:
        if c.state == "withdrawn":
            withdrawn.add(c.card_id)
            continue
        kind, action = out.get(c.card_id, (c.kind, None))
        out[c.card_id] = (kind, c.state if c.state in ("used", "dismissed") else action)
    return {k: v for k, v in out.items() if k not in withdrawn}


def tally(per_call: Iterable[Iterable[Card]]) -> CardStats:
    """The per-kind counts of the calls' card events (each call's in stored order)."""
    shown: Counter[str] = Counter()
    acted: Counter[tuple[str, str]] = Counter()
    calls = 0
    for cards in per_call:
        calls += 1
        for kind, action in outcomes(cards).values():
            shown[kind] += 1
            if action is not None:
                acted[kind, action] += 1
    kinds = tuple(
        KindStats(
            kind=kind,
            group=budget_of(kind),
            shown=n,
            used=acted[kind, "used"],
            dismissed=acted[kind, "dismissed"],
            no_action=n - acted[kind, "used"] - acted[kind, "dismissed"],
        )
        for kind, n in sorted(shown.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    return CardStats(calls=calls, kinds=kinds)


async def card_stats(
    store: CallStore,
    since: float | None = None,
    until: float | None = None,
    rep_id: str | None = None,
) -> CardStats:
    """The counts over every stored call started in ``[since, until)`` (epoch seconds), of
    one rep if ``rep_id`` is given. Raises ``StoreError`` when the store is unusable."""
    per_call: list[list[Card]] = []
    offset = 0
    while True:
        page = await store.list_calls(
            CallFilter(since=since, until=until, rep_id=rep_id, limit=_PAGE, offset=offset)
        )
        for record in page:
            events = await store.events(record.call_id)
            per_call.append([_card(e) for e in events if e["type"] == "card"])
        if len(page) < _PAGE:
            return tally(per_call)
        offset += _PAGE


def _card(event: dict[str, object]) -> Card:
    card = from_wire(event)
    assert isinstance(card, Card)  # the type key said so
    return card
