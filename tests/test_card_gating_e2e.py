"""Cards that are right, end to end: the speaker who may raise a card, and provisional cards
that the final confirms or withdraws, through the real server (espeak-ng, Whisper, MiniLM) and
through the coach fed by the real analyzer.

What Whisper hears differs by CPU, so these tests assert the product's rules on whatever was
heard: the insight events of the call say what the coach was told, and the cards must follow
from them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import pytest

from clients.callgen import Turn, render
from clients.simulator import SimOptions, simulate
from guidance.cards import Card
from guidance.coach import Coach
from guidance.playbook import INTENT_CARD_KINDS, load_playbook
from guidance.score import load_score_model
from nlp.insight import Insight
from tests.conftest import ServerProcess

pytestmark = [pytest.mark.model, pytest.mark.slow]

PLAYBOOK = load_playbook()
SURE = PLAYBOOK.deck.min_confidence


def rep(text: str, gap_s: float = 0.8) -> Turn:
    return Turn("rep", text, gap_s=gap_s, rate_wpm=140)


PROPOSAL = "Let's set up a call next Tuesday with your VP."
# Rep lines full of trigger words; long customer lines whose first words are an objection (a
# partial issues a provisional card), one that turns around at the end, and a plain yes.
GATED_CALL = (
    rep("Is the price too high for you? A lot of teams say it is at first."),
    Turn("customer", "Not really, we are just looking around for now."),
    rep("Most of your reps struggle to follow up on leads quickly, right?"),
    Turn(
        "customer",
        "Honestly, the price is way too high for a team of our size, and we would need a "
        "much better offer before we could think about it.",
        gap_s=1.5,
    ),
    rep("I understand. Many teams start with a small pilot to keep the cost down."),
    Turn(
        "customer",
        "The price is not a problem for us at all, so when could we start?",
        gap_s=1.5,
    ),
    rep(PROPOSAL, gap_s=1.5),
    Turn("customer", "Sure, that works for me.", gap_s=0.8),
    rep("Great, I will send the invite today.", gap_s=1.0),
)


@pytest.fixture(scope="module")
def gated(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("gated") / "gated.wav"
    call = render(GATED_CALL)
    call.write(path)
    options = SimOptions(server=server.ws, token=server.token, speed=1.0)
    result = asyncio.run(simulate(path, options))
    stored = httpx.get(
        f"{server.http}/v1/calls/{result.call_id}",
        headers={"Authorization": f"Bearer {server.token}"},
    ).json()
    return {"call": call, "events": result.events, "stored": stored}


def intent_cards(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "card" and e["kind"] in INTENT_CARD_KINDS]


def heard(events: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{e['speaker']:>8} {e['label']:>18} {e['confidence']:.2f} {e['text']}"
        for e in events
        if e["type"] == "insight" and e["is_final"]
    )


def test_a_rep_line_raises_a_card_only_through_the_customers_agreement(
    gated: dict[str, Any],
) -> None:
    """No card quotes a rep line except a next step the customer agreed to, stamped with the
    end of the customer's reply; the customer's objection gets its card from the customer."""
    call, events = gated["call"], gated["events"]
    customer_turns = [u for u in call.utterances if u.speaker == "customer"]
    for c in intent_cards(events):
        ev = c["evidence"]
        if ev["speaker"] == "customer":
            continue
        assert ev["speaker"] == "rep" and c["kind"] == "next_step", (c, heard(events))
        reply = [u for u in customer_turns if u.start_s - 0.3 <= c["audio_end_s"] <= u.end_s + 0.6]
        assert reply and reply[0].start_s >= ev["end_s"] - 0.5, (c, heard(events))
    customer_kinds = {
        c["kind"] for c in intent_cards(events) if c["evidence"]["speaker"] == "customer"
    }
    assert "objection_price" in customer_kinds, heard(events)
    finals = [e for e in events if e["type"] == "insight" and e["is_final"]]
    proposal = [e for e in finals if e["speaker"] == "rep" and "tuesday" in e["text"].lower()]
    reply = [
        e for e in finals if e["speaker"] == "customer" and e["text"].lower().startswith("sure")
    ]
    if (
        proposal
        and proposal[0]["label"] == "next_step"
        and proposal[0]["confidence"] >= SURE
        and reply
    ):
        agreed = [c for c in intent_cards(events) if c["kind"] == "next_step"]
        assert agreed and agreed[0]["audio_end_s"] == pytest.approx(reply[0]["end_s"]), heard(
            events
        )


def test_provisional_cards_are_settled_by_their_final(gated: dict[str, Any]) -> None:
    """Each provisional card is settled once, later: confirmed when its utterance's final
    insight asks for that card (same label, sure enough), otherwise withdrawn; only settled
    cards are stored."""
    events = gated["events"]
    provisional = [c for c in intent_cards(events) if c["state"] == "issued" and c["provisional"]]
    assert provisional, heard(events)  # the long objections give cards from their partials
    for card in provisional:
        after = [c for c in intent_cards(events) if c["card_id"] == card["card_id"]]
        settled = [c for c in after if c["state"] in ("confirmed", "withdrawn")]
        assert len(settled) == 1, after
        [final] = [
            e for e in events
            if e["type"] == "insight" and e["is_final"] and e["utterance_id"] == card["utterance_id"]
        ]  # fmt: skip
        asks = final["label"] == card["kind"] and final["confidence"] >= SURE
        if card["kind"] == "competitor":  # a battlecard follows the name, not the label
            asks = any(e["kind"] == "competitor" for e in final["entities"])
        assert settled[0]["state"] == ("confirmed" if asks else "withdrawn"), (card, final)
    stored = gated["stored"]["cards"]
    assert not any(c["provisional"] for c in stored), stored
    assert {c["card_id"] for c in stored} >= {c["card_id"] for c in provisional}


TURNAROUNDS = [
    # (a partial, the utterance's final): the final takes back what the partial said
    ("the price is not a problem", "The price is not a problem for us, when can we start?"),
    (
        "Honestly the price is way too high",
        "Honestly the price is way too high for most teams, "
        "but it works for our budget, so when can we start?",
    ),
    (
        "My manager makes the final call on",
        "My manager makes the final call on lunch, not on software, so let's go ahead.",
    ),
    (
        "We can't afford another tool like this",
        "We can't afford another quarter without a tool like this, send me the contract.",
    ),
    (
        "That is way too expensive",
        "That is way too expensive to keep doing by hand, which is why we want to start.",
    ),
]


def test_the_coach_settles_provisional_cards_from_real_insights() -> None:
    """With the real analyzer's insights, a provisional card from a partial is confirmed
    exactly when the final still asks for it and withdrawn otherwise (and is then not
    actionable); at least one partial is sure enough to issue one."""
    from models.registry import load_embedder
    from nlp.analyze import load_analyzer

    analyzer = load_analyzer(load_embedder(threads=1))
    issued = 0
    for partial_text, final_text in TURNAROUNDS:
        coach = Coach(PLAYBOOK, load_score_model())
        p, f = (
            analyzer.analyze(t, call_date=dt.date(2026, 1, 5)) for t in (partial_text, final_text)
        )
        partial = Insight("u1", "customer", False, partial_text, 1.0, 2.5, p.intent.label,
                          p.intent.confidence, p.intent.scores, p.entities, p.sentiment, None)  # fmt: skip
        final = Insight("u1", "customer", True, final_text, 1.0, 5.0, f.intent.label,
                        f.intent.confidence, f.intent.scores, f.entities, f.sentiment, None)  # fmt: skip
        early = [e for e in coach.observe_insight(partial) if isinstance(e, Card)]
        if not early:
            continue
        issued += 1
        [card] = early
        settled = [
            e
            for e in coach.observe_insight(final)
            if isinstance(e, Card) and e.card_id == card.card_id
        ]
        asks = f.intent.label == card.kind and f.intent.confidence >= SURE
        assert [c.state for c in settled] == ["confirmed" if asks else "withdrawn"], (final_text, f)
        if not asks:
            [rejected] = coach.act(
                {"type": "card_action", "card_id": card.card_id, "action": "used"}
            )
            assert not isinstance(rejected, Card)
    assert issued >= 1
