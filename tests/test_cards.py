"""Cue cards: which insights give which cards, lifecycle, de-duplication and rate limiting."""

from __future__ import annotations

import dataclasses
import json

import pytest

from guidance.cards import Candidate, Card, CardDeck
from guidance.coach import CardActionRejected, Coach
from guidance.playbook import INTENT_CARD_KINDS, DeckSettings, load_playbook
from guidance.score import load_score_model
from nlp.insight import Entity, Insight
from nlp.transcript import Transcript
from server.wire import dumps

PLAYBOOK = load_playbook()
MODEL = load_score_model()


def insight(
    label: str,
    text: str,
    start_s: float,
    end_s: float,
    *,
    speaker: str = "customer",
    final: bool = True,
    confidence: float = 0.9,
    uid: str | None = None,
    competitors: tuple[str, ...] = (),
    sentiment: float = 0.0,
) -> Insight:
    entities = tuple(Entity("competitor", c, c, 0, len(c)) for c in competitors)
    return Insight(
        utterance_id=uid or f"{speaker}-{start_s}",
        speaker=speaker,  # type: ignore[arg-type]
        is_final=final,
        text=text,
        start_s=start_s,
        end_s=end_s,
        label=label,
        confidence=confidence,
        scores={label: confidence},
        entities=entities,
        sentiment=sentiment,
        prosody=None,
    )


def cards(events: list[object]) -> list[Card]:
    return [e for e in events if isinstance(e, Card)]


def transcript_of(i: Insight) -> Transcript:
    return Transcript(i.utterance_id, i.speaker, i.is_final, i.text, i.start_s, i.end_s)


def run(coach: Coach, insights: list[Insight]) -> list[Card]:
    """Feed each utterance as the session does (tick, transcript, insight); intent cards only."""
    out: list[Card] = []
    for i in insights:
        out += cards(coach.tick(i.start_s))
        out += cards(coach.observe_transcript(transcript_of(i)))
        out += cards(coach.observe_insight(i))
    return [c for c in out if c.kind in INTENT_CARD_KINDS]


OBJECTIONS = [
    insight("objection_price", "Honestly the price is too high for us.", 5.0, 8.0),
    insight("objection_timing", "We can't look at this until next year.", 25.0, 28.0),
    insight("objection_authority", "I'd need to run this by our VP.", 45.0, 47.5),
    insight("objection_trust", "We've been burned by tools like this before.", 70.0, 73.0),
    insight("objection_need", "Our reps are doing fine without it.", 90.0, 92.0),
    insight(
        "objection_competitor", "We already use Gong for this.", 110.0, 112.0, competitors=("Gong",)
    ),
]
WARM = [
    insight("buying_signal", "This is exactly what our team needs.", 5.0, 7.5, sentiment=0.7),
    insight("question", "How long would onboarding take for 30 people?", 30.0, 33.0),
    insight("next_step", "Let's set up a pilot call next Tuesday.", 60.0, 63.0, sentiment=0.6),
]


@pytest.mark.parametrize(
    ("sequence", "expected"),
    [
        (
            OBJECTIONS,
            [
                ("objection_price", "Price objection"),
                ("objection_timing", 'Timing objection: "not now"'),
                ("objection_authority", "Authority: someone else decides"),
                ("objection_trust", "Trust / risk concern"),
                ("objection_need", "No perceived need"),
                ("competitor", "Battlecard: Gong"),
            ],
        ),
        (
            WARM,
            [
                ("buying_signal", "Buying signal: lean in"),
                ("question", "Onboarding question"),
                ("next_step", "Next step: lock it in"),
            ],
        ),
    ],
)
def test_insight_sequences_give_the_right_cards(
    sequence: list[Insight], expected: list[tuple[str, str]]
) -> None:
    """Each objection type, buying signal, question topic and next step gets its own card."""
    issued = [c for c in run(Coach(PLAYBOOK, MODEL), sequence) if c.state == "issued"]
    assert [(c.kind, c.title) for c in issued] == expected
    for card, source in zip(issued, sequence, strict=True):
        assert card.audio_end_s == source.end_s
        assert card.evidence is not None and card.evidence.quote == source.text
        assert card.evidence.speaker == "customer"
        assert card.evidence.start_s == source.start_s and card.responses
        assert card.utterance_id == source.utterance_id
    assert len({c.card_id for c in issued}) == len(issued)


def test_low_confidence_and_rep_objections_give_no_card() -> None:
    """Uncertain intents and the rep's own words never produce objection cards."""
    coach = Coach(PLAYBOOK, MODEL)
    events = coach.observe_insight(insight("objection_price", "Too pricey.", 1, 2, confidence=0.3))
    events += coach.observe_insight(
        insight("objection_price", "Is price a concern?", 3, 4, speaker="rep")
    )
    assert cards(events) == []


def test_unknown_competitor_gets_generic_card_with_name() -> None:
    """A competitor without a battlecard gets the generic competitor card naming it."""
    coach = Coach(PLAYBOOK, MODEL)
    [card] = cards(
        coach.observe_insight(insight("other", "We looked at Acme.", 1, 2, competitors=("Acme",)))
    )
    assert card.kind == "competitor" and card.title.endswith("Acme")


def test_same_objection_again_updates_the_card() -> None:
    """The same objection raised again updates the card (same id, count) instead of a new one."""
    coach = Coach(PLAYBOOK, MODEL)
    first = run(coach, [insight("objection_price", "That's expensive.", 1.0, 2.0)])
    quiet = run(coach, [insight("objection_price", "Really expensive.", 4.0, 5.0)])
    later = run(coach, [insight("objection_price", "Still too expensive.", 20.0, 21.5)])
    assert [c.state for c in first] == ["issued"] and quiet == []
    [update] = later
    assert update.state == "updated" and update.card_id == first[0].card_id
    assert update.times_raised == 3 and update.audio_end_s == 21.5
    assert update.evidence is not None and update.evidence.quote == "Still too expensive."


def test_card_event_is_wire_json() -> None:
    """A card serialises to JSON with type "card" and nested evidence."""
    [card] = cards(Coach(PLAYBOOK, MODEL).observe_insight(OBJECTIONS[0]))
    wire = json.loads(dumps(card))
    assert wire["type"] == "card" and wire["evidence"]["quote"] == OBJECTIONS[0].text
    assert wire["state"] == "issued" and wire["provisional"] is False


def _candidate(key: str, priority: int, at_s: float, kind: str = "question") -> Candidate:
    draft = Card("", "issued", kind, priority, key, "", ("say something",), None, at_s)
    return Candidate(key, draft)


def test_alerts_and_cue_cards_have_separate_budgets() -> None:
    """Alerts filling their budget never hold back a card for what the customer just said, and
    a burst of cards never holds back an alert; each budget is still enforced."""
    deck = CardDeck(
        DeckSettings(max_new_cards_per_minute=2, max_new_alerts_per_minute=1, max_pending_s=61)
    )
    alerts = deck.offer(
        [_candidate("fast", 40, 1.0, "fast_speech"), _candidate("mono", 50, 1.0, "monologue")],
        1.0,
    )
    assert [c.title for c in alerts] == ["mono"]  # one alert a minute; "fast" waits
    objections = deck.offer(
        [_candidate(k, 90, 2.0, "objection_price") for k in ("a", "b", "c")], 2.0
    )
    assert [c.state for c in objections] == ["issued", "issued"]
    assert deck.tick(30.0) == []  # both budgets spent: the waiting ones wait
    assert [c.title for c in deck.tick(62.5)] == ["c"]  # "fast" waited 61.5 s: stale, dropped


@pytest.mark.parametrize("per_minute", [1, 3, 4])
def test_rate_limit_never_exceeded(per_minute: int) -> None:
    """However many distinct cards are raised, no 60 s of audio sees more than N issued."""
    deck = CardDeck(DeckSettings(max_new_cards_per_minute=per_minute))
    issued_at: list[float] = []
    for n in range(300):  # a new distinct card every 2 s for 10 minutes, ticks in between
        now_s = 2.0 * n
        for c in deck.offer([_candidate(f"k{n}", n % 90, now_s)], now_s) + deck.tick(now_s + 1):
            if c.state == "issued":
                issued_at.append(now_s)
    assert len(issued_at) >= per_minute * 9
    for t in issued_at:
        assert sum(t <= u < t + 60.0 for u in issued_at) <= per_minute


def test_most_important_first_and_stale_dropped() -> None:
    """Cards raised together go out by priority; waiting ones by priority, stale ones never."""
    deck = CardDeck(DeckSettings(max_new_cards_per_minute=2, max_pending_s=15.0))
    first = deck.offer(
        [_candidate("low", 10, 0.0), _candidate("high", 90, 0.0), _candidate("mid", 50, 0.0)], 0.0
    )
    assert [c.title for c in first] == ["high", "mid"]
    deck.offer([_candidate("top", 95, 50.0)], 50.0)
    released = deck.tick(60.0)
    assert [c.title for c in released] == ["top"]  # "low" waited 60 s: stale, dropped
    assert deck.tick(200.0) == []


def test_partial_card_confirmed_on_final() -> None:
    """A clear partial issues a provisional card; the matching final confirms the same card."""
    coach = Coach(PLAYBOOK, MODEL)
    partial = insight("objection_price", "the price is just too", 1.0, 2.2, final=False, uid="u1")
    [early] = cards(coach.observe_insight(partial))
    assert early.state == "issued" and early.provisional and early.audio_end_s == 2.2
    final = insight("objection_price", "The price is just too high.", 1.0, 3.0, uid="u1")
    [confirmed] = cards(coach.observe_insight(final))
    assert confirmed.card_id == early.card_id and confirmed.state == "confirmed"
    assert not confirmed.provisional and confirmed.audio_end_s == 3.0


def test_partial_card_withdrawn_when_final_differs() -> None:
    """If the final's intent differs, the provisional card is withdrawn and the right one issued."""
    coach = Coach(PLAYBOOK, MODEL)
    partial = insight("objection_price", "the price is not a", 1.0, 2.0, final=False, uid="u1")
    [early] = cards(coach.observe_insight(partial))
    final = insight(
        "buying_signal", "The price is not a problem, when can we start?", 1.0, 4.0, uid="u1"
    )
    withdrawn, issued = cards(coach.observe_insight(final))
    assert (withdrawn.card_id, withdrawn.state) == (early.card_id, "withdrawn")
    assert issued.state == "issued" and issued.kind == "buying_signal"
    rejected = coach.act({"type": "card_action", "card_id": early.card_id, "action": "used"})
    assert isinstance(rejected[0], CardActionRejected)


def test_unsure_or_short_partials_wait_for_the_final() -> None:
    """Partials below the confidence or word threshold issue nothing."""
    coach = Coach(PLAYBOOK, MODEL)
    assert (
        cards(coach.observe_insight(insight("objection_price", "the price", 1, 2, final=False)))
        == []
    )
    unsure = insight(
        "objection_price", "the price is quite a lot", 1, 2, final=False, confidence=0.6
    )
    assert cards(coach.observe_insight(unsure)) == []


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (
            {"type": "card_action", "card_id": "card-999", "action": "dismissed"},
            "no card with id 'card-999'",
        ),
        ({"type": "card_action", "card_id": "card-1", "action": "liked"}, "action"),
        ({"type": "card_action", "action": "used"}, "card_id"),
        ({"type": "card_action", "card_id": 7, "action": "used"}, "card_id"),
    ],
)
def test_bad_card_actions_are_rejected_clearly(message: dict[str, object], reason: str) -> None:
    """Unknown ids and malformed actions give a CardActionRejected event; the coach goes on."""
    coach = Coach(PLAYBOOK, MODEL)
    coach.observe_insight(OBJECTIONS[0])
    [event] = coach.act(message)
    assert isinstance(event, CardActionRejected) and reason in event.reason
    assert cards(coach.observe_insight(WARM[0]))  # still coaching


def test_dismissed_card_stays_quiet_for_its_cooldown() -> None:
    """A dismissed card's objection raised again is not shown until the dismiss cooldown ends."""
    coach = Coach(PLAYBOOK, MODEL)
    [card] = cards(coach.observe_insight(OBJECTIONS[0]))
    [dismissed] = coach.act({"type": "card_action", "card_id": card.card_id, "action": "dismissed"})
    assert isinstance(dismissed, Card) and dismissed.state == "dismissed"
    assert coach.act({"type": "card_action", "card_id": card.card_id, "action": "dismissed"}) == []
    assert run(coach, [insight("objection_price", "Too expensive.", 60.0, 61.0)]) == []
    [again] = run(coach, [insight("objection_price", "Too expensive.", 200.0, 201.0)])
    assert again.state == "issued" and again.card_id != card.card_id


def test_used_card_recorded_in_state() -> None:
    """A used card shows as used in the coach state the summary reads."""
    coach = Coach(PLAYBOOK, MODEL)
    [card] = cards(coach.observe_insight(WARM[0]))
    coach.act({"type": "card_action", "card_id": card.card_id, "action": "used"})
    assert [c.state for c in coach.state().cards] == ["used"]


@pytest.mark.parametrize(
    ("label", "confidence", "kind"),
    [
        ("objection_price", 0.42, "objection_price"),  # the reported miss: a card now
        ("objection_timing", 0.40, "objection_timing"),
        ("objection_price", 0.39, None),
        ("other", 0.95, None),
        ("small_talk", 0.95, None),
        ("positive", 0.95, None),
    ],
)
def test_card_threshold(label: str, confidence: float, kind: str | None) -> None:
    """Objections from the playbook's min_confidence (0.4) up give their card; below it, or
    for other, small talk and praise at any confidence, no card."""
    assert PLAYBOOK.deck.min_confidence == 0.4
    coach = Coach(PLAYBOOK, MODEL)
    said = insight(label, "Honestly that is more than we planned to spend.", 1.0, 3.0)
    got = cards(coach.observe_insight(dataclasses.replace(said, confidence=confidence)))
    assert [c.kind for c in got] == ([kind] if kind else [])


def test_the_reps_opening_does_not_read_as_talking_too_much() -> None:
    """An 8 s opening and a short reply cost under 2 score points for talk share (15 points
    before the share counted two minutes of even talk in); the same 4:1 split over three
    minutes still costs several, with the reason in words."""
    from guidance.score import Score

    def talk_cost(lines: list[Insight]) -> float:
        coach = Coach(PLAYBOOK, MODEL)
        scores: list[Score] = []
        for i in lines:
            coach.observe_transcript(transcript_of(i))
            scores += [e for e in coach.observe_insight(i) if isinstance(e, Score)]
        assert any("you are talking more than the customer" in r for r in scores[-1].reasons)
        return -sum(s.delta for s in scores)

    opening = [
        insight("small_talk", "Hi this is Sam from Acme thanks for taking the time", 0.0, 8.0,
                speaker="rep"),
        insight("small_talk", "Sure happy to chat", 8.5, 10.5),
    ]  # fmt: skip
    assert 0 < talk_cost(opening) < 2.0
    long_pitch = [
        insight("other", "word " * 400, 0.0, 160.0, speaker="rep"),
        insight("other", "okay I see what you mean there", 160.5, 200.5),
    ]
    assert talk_cost(long_pitch) > 8.0
