"""Entity rules: money, dates relative to the call, competitors, roles."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from nlp.entities import DEFAULT_COMPETITORS, extract_entities

CALL = dt.date(2025, 3, 12)  # a Wednesday


def _found(text: str, kind: str) -> list[tuple[str, str]]:
    return [(e.text, e.value) for e in extract_entities(text, call_date=CALL) if e.kind == kind]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("it comes to $20,000 total", [("$20,000", "20000 USD")]),
        ("twenty thousand dollars is a lot", [("twenty thousand dollars", "20000 USD")]),
        ("maybe 20k tops", [("20k", "20000 USD")]),
        ("50 bucks a seat", [("50 bucks a seat", "50 USD/seat")]),
        ("about five grand", [("five grand", "5000 USD")]),
        ("a $1.5M deal", [("$1.5M", "1500000 USD")]),
        ("€300 per user", [("€300 per user", "300 EUR/user")]),
        ("we have 20k users", []),
        ("two hundred and fifty dollars", [("two hundred and fifty dollars", "250 USD")]),
    ],
)
def test_money(text: str, expected: list[tuple[str, str]]) -> None:
    """Money amounts in digits, words and slang normalise to an amount and currency."""
    assert _found(text, "money") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("we need it by Friday", [("by Friday", "2025-03-14")]),
        ("let's talk next Friday", [("next Friday", "2025-03-21")]),
        ("maybe next quarter", [("next quarter", "2025-04-01")]),
        ("by the end of the month", [("by the end of the month", "2025-03-31")]),
        ("end of the quarter", [("end of the quarter", "2025-03-31")]),
        ("on March 3rd", [("March 3rd", "2026-03-03")]),
        ("the 3rd of April", [("the 3rd of April", "2025-04-03")]),
        ("in two weeks", [("in two weeks", "2025-03-26")]),
        ("call me tomorrow", [("tomorrow", "2025-03-13")]),
        ("sometime in Q3", [("Q3", "2025-07-01")]),
        ("decide by May", [("by May", "2025-05-01")]),
        ("we may decide soon", []),
        ("next week works", [("next week", "2025-03-17")]),
        ("3/15 is the deadline", [("3/15", "2025-03-15")]),
        ("in the fall", [("in the fall", "2025-09-01")]),
    ],
)
def test_dates(text: str, expected: list[tuple[str, str]]) -> None:
    """Dates and deadlines resolve to ISO dates relative to the call date."""
    assert _found(text, "date") == expected


def test_competitors_from_defaults_and_custom_list() -> None:
    """Default aliases map to canonical names; a custom mapping replaces the defaults."""
    assert _found("we use sales force and Gong today", "competitor") == [
        ("sales force", "Salesforce"),
        ("Gong", "Gong"),
    ]
    custom = {"Acme Dialer": ("acme",)}
    ents = extract_entities("Acme is cheaper than HubSpot", call_date=CALL, competitors=custom)
    assert [(e.text, e.value) for e in ents] == [("Acme", "Acme Dialer")]
    assert "HubSpot" in DEFAULT_COMPETITORS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I'd run it by our VP of sales and the CFO", [("VP of sales", "vp"), ("CFO", "cfo")]),
        ("legal has to review it", [("legal", "legal")]),
        ("it goes to the board next month", [("board", "board")]),
        ("procurement will want a quote", [("procurement", "procurement")]),
        ("talk to our head of operations", [("head of operations", "head")]),
        ("the IT team", [("IT team", "it")]),
        ("we're all on board", []),
    ],
)
def test_roles(text: str, expected: list[tuple[str, str]]) -> None:
    """Decision-maker roles are found and normalised to a key; idioms are not roles."""
    assert _found(text, "role") == expected


def test_spans_do_not_overlap_and_index_the_text() -> None:
    """Every entity's offsets slice its own text out of the utterance, in order."""
    text = "Salesforce quoted $20k by Friday, our CFO said no"
    ents = extract_entities(text, call_date=CALL)
    assert [e.kind for e in ents] == ["competitor", "money", "date", "role"]
    for a, b in itertools.pairwise(ents):
        assert a.end_char <= b.start_char
    assert all(text[e.start_char : e.end_char] == e.text for e in ents)


def test_hostile_input_does_not_raise() -> None:
    """Empty, very long, non-English and binary-ish text return a tuple without raising."""
    for text in ["", "x" * 10_000, "¿Cuánto cuesta? 两千美元", "\x00\ufffd\x01$$$ 9/99/9999"]:
        assert isinstance(extract_entities(text, call_date=CALL), tuple)


def test_weekday_said_on_that_day_is_the_next_one() -> None:
    """ "by Friday" said on a Friday is the next Friday (the rule of ``nlp.dates``); "this
    Friday" is that day."""
    friday = dt.date(2025, 3, 14)
    got = [
        (e.text, e.value) for e in extract_entities("by Friday, or this Friday", call_date=friday)
    ]
    assert got == [("by Friday", "2025-03-21"), ("this Friday", "2025-03-14")]
