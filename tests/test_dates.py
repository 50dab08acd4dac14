"""The one relative-date resolver (``nlp.dates``), and its two callers agreeing: a date entity
and an action item's due date from the same sentence."""

from __future__ import annotations

from datetime import date

import pytest

from guidance.action_items import action_items
from guidance.turns import turns_of
from nlp.dates import find_dates
from nlp.entities import extract_entities
from nlp.insight import Insight
from nlp.transcript import Transcript

MON = date(2026, 11, 16)
WED = date(2026, 11, 18)
FRI = date(2026, 11, 20)
SAT = date(2026, 11, 21)


@pytest.mark.parametrize(
    ("text", "today", "phrase", "value"),
    [
        # weekdays: bare = the first such day after today; said on that day, a week later
        ("I'll send it by Friday.", WED, "by Friday", "2026-11-20"),
        ("I'll send it by Friday.", FRI, "by Friday", "2026-11-27"),
        ("I'll send it by Friday.", SAT, "by Friday", "2026-11-27"),
        ("on friday then", SAT, "friday", "2026-11-27"),
        ("on Thursday then", FRI, "Thursday", "2026-11-26"),
        ("let's talk Monday", MON, "Monday", "2026-11-23"),
        ("this Friday", FRI, "this Friday", "2026-11-20"),
        ("this Friday", WED, "this Friday", "2026-11-20"),
        ("the coming Monday", WED, "coming Monday", "2026-11-23"),
        ("next Friday", WED, "next Friday", "2026-11-27"),
        ("next Friday", FRI, "next Friday", "2026-11-27"),
        ("next Friday", SAT, "next Friday", "2026-11-27"),
        ("next Monday", MON, "next Monday", "2026-11-23"),
        ("next Sunday", MON, "next Sunday", "2026-11-29"),
        ("by next Tuesday", SAT, "by next Tuesday", "2026-11-24"),
        # days
        ("today", FRI, "today", "2026-11-20"),
        ("I can do it tonight", FRI, "tonight", "2026-11-20"),
        ("by EOD", WED, "by EOD", "2026-11-18"),
        ("by end of day", WED, "by end of day", "2026-11-18"),
        ("the pricing I end the day", WED, "end the day", "2026-11-18"),
        ("tomorrow", FRI, "tomorrow", "2026-11-21"),
        ("tomorrow", SAT, "tomorrow", "2026-11-22"),
        ("the day after tomorrow", WED, "the day after tomorrow", "2026-11-20"),
        # weeks, months, quarters, years
        ("by the end of the week", WED, "by the end of the week", "2026-11-20"),
        ("by the end of the week", FRI, "by the end of the week", "2026-11-20"),
        ("by the end of the week", SAT, "by the end of the week", "2026-11-27"),
        ("this week", WED, "this week", "2026-11-20"),
        ("by the end of next week", WED, "by the end of next week", "2026-11-27"),
        ("by the end of next week", SAT, "by the end of next week", "2026-11-27"),
        ("sometime next week", SAT, "next week", "2026-11-23"),
        ("before the end of the month", SAT, "before the end of the month", "2026-11-30"),
        ("by the end of next month", SAT, "by the end of next month", "2026-12-31"),
        ("this month", SAT, "this month", "2026-11-30"),
        ("next month", SAT, "next month", "2026-12-01"),
        ("end of the quarter", SAT, "end of the quarter", "2026-12-31"),
        ("end of next quarter", SAT, "end of next quarter", "2027-03-31"),
        ("maybe next quarter", SAT, "next quarter", "2027-01-01"),
        ("end of the year", SAT, "end of the year", "2026-12-31"),
        ("sometime in Q3", SAT, "Q3", "2027-07-01"),
        # counts
        ("in two weeks", SAT, "in two weeks", "2026-12-05"),
        ("in 3 days", SAT, "in 3 days", "2026-11-24"),
        ("in a couple of days", SAT, "in a couple of days", "2026-11-23"),
        ("in a few days", SAT, "in a few days", "2026-11-24"),
        ("within a week", SAT, "within a week", "2026-11-28"),
        ("in two months", SAT, "in two months", "2027-01-21"),
        # month days
        ("on March 3rd", SAT, "March 3rd", "2027-03-03"),
        ("by December 3rd", SAT, "by December 3rd", "2026-12-03"),
        ("December the third", SAT, "December the third", "2026-12-03"),
        ("the 3rd of April", SAT, "the 3rd of April", "2027-04-03"),
        ("by the 15th", SAT, "by the 15th", "2026-12-15"),
        ("on January 2nd", SAT, "January 2nd", "2027-01-02"),
        ("by the 25th", SAT, "by the 25th", "2026-11-25"),
        ("by the 5th", SAT, "by the 5th", "2026-12-05"),
        ("the 21st", SAT, "the 21st", "2026-11-21"),
        ("3/15 is the deadline", SAT, "3/15", "2027-03-15"),
        ("signed on 12/1/2026", SAT, "12/1/2026", "2026-12-01"),
        ("decide by May", SAT, "by May", "2027-05-01"),
        ("in the fall", SAT, "in the fall", "2027-09-01"),
    ],
)
def test_find_dates(text: str, today: date, phrase: str, value: str) -> None:
    """Each relative phrase resolves against the call date by the documented rules."""
    [d] = find_dates(text, today)
    assert (d.text, d.value.isoformat()) == (phrase, value)
    assert text[d.start_char : d.end_char] == d.text


@pytest.mark.parametrize(
    "text",
    ["I will send the proposal soon.", "the 31st of February", "a weekend day trip",
     "we may decide", "the first thing", ""],
)  # fmt: skip
def test_no_date(text: str) -> None:
    """Text without a date phrase (or naming a day that does not exist) has no date."""
    assert find_dates(text, SAT) == []


def test_several_dates_in_order_without_overlap() -> None:
    """Several phrases come back in text order; the longest of overlapping ones wins."""
    got = find_dates("tomorrow or by the end of next week, not next month", WED)
    assert [(d.text, d.value.isoformat()) for d in got] == [
        ("tomorrow", "2026-11-19"),
        ("by the end of next week", "2026-11-27"),
        ("next month", "2026-12-01"),
    ]


@pytest.mark.parametrize("today", [WED, FRI, SAT])
def test_entity_and_action_item_agree(today: date) -> None:
    """The date entity and the action item's due date of one sentence are the same date, also
    on a Friday ("by Friday" = the next Friday), with and without the insight's entity."""
    text = "I'll send you the proposal by Friday."
    [entity] = [e for e in extract_entities(text, call_date=today) if e.kind == "date"]
    transcript = Transcript("rep-0", "rep", True, text, 0.0, 3.0)
    insight = Insight("rep-0", "rep", True, text, 0.0, 3.0, "next_step", 0.9, {}, (entity,), 0.0,
                      None)  # fmt: skip
    from_rules = action_items(turns_of([transcript]), today)
    from_entity = action_items(turns_of([transcript, insight]), today)
    assert [a.due for a in from_rules] == [a.due for a in from_entity] == [entity.value]
    assert from_rules[0].due_text == entity.text == "by Friday"
    if today == FRI:
        assert entity.value == "2026-11-27"
