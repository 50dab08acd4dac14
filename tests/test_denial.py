"""Denied concerns: "the price is not an issue" must not become a price objection."""

from __future__ import annotations

import datetime as dt

import pytest

from nlp.denial import denied_concerns, without_denied
from nlp.insight import IntentResult

PRICE = frozenset({"objection_price"})


@pytest.mark.parametrize(
    ("text", "denied"),
    [
        (
            "Right. The price is not really an issue for us, we just want something that works.",
            PRICE,
        ),
        ("right the price is not really an issue for us", PRICE),
        ("Honestly money is no object here.", PRICE),
        ("Budget isn't a concern.", PRICE),
        ("We're not worried about the cost.", PRICE),
        ("I’m not too concerned with the price, it's the rollout.", PRICE),
        ("No problem with the pricing.", PRICE),
        ("The cost doesn't really matter to us.", PRICE),
        ("The price is fine.", PRICE),
        ("The price isn't really the problem, it's that my boss has to approve it.", PRICE),
        ("Timing isn't a problem, we can start whenever.", frozenset({"objection_timing"})),
        ("security is not a concern for us", frozenset({"objection_trust"})),
        # still concerns: conditions, hedges, "not the only issue", plain objections
        ("If it's not too expensive, I'll do that.", frozenset()),
        ("The price is not the only issue.", frozenset()),
        ("The price is an issue.", frozenset()),
        ("Price is a big problem for us.", frozenset()),
        ("It is not in our budget this year.", frozenset()),
        ("Not yet, let me check my budget first.", frozenset()),
        ("We don't have the budget for it.", frozenset()),
        ("I'm not especially worried about food.", frozenset()),
        ("That's not a problem.", frozenset()),
    ],
)
def test_denied_concerns(text: str, denied: frozenset[str]) -> None:
    assert denied_concerns(text) == denied


def test_a_denied_objection_moves_its_probability_to_other() -> None:
    scores = {"objection_price": 0.8, "positive": 0.15, "other": 0.05}
    got = without_denied(IntentResult("objection_price", 0.8, scores), PRICE)
    assert got.label == "other"
    assert got.scores["objection_price"] == 0.0
    assert got.scores["other"] == pytest.approx(0.85)
    assert sum(got.scores.values()) == pytest.approx(1.0)


def test_a_label_that_is_not_denied_is_kept() -> None:
    r = IntentResult("objection_timing", 0.7, {"objection_timing": 0.7, "objection_price": 0.3})
    assert without_denied(r, PRICE) is r


@pytest.mark.model
def test_the_analyzer_reads_no_price_objection_into_a_denied_one(tmp_path: object) -> None:
    """On the real model, a price objection stays one and its denial does not (the false card
    of the scripted distribution call, in the words Whisper gave it)."""
    from models.registry import load_embedder
    from nlp.analyze import load_analyzer

    analyzer = load_analyzer(load_embedder())
    day = dt.date(2025, 3, 12)
    said = [
        "Right, the price is not really an issue for us, we just want something that works.",
        "Honestly, the price is way too high for us.",
    ]
    denied, objection = (a.intent for a in analyzer.analyze_many(said, call_date=day))
    assert denied.label != "objection_price"
    assert objection.label == "objection_price"
