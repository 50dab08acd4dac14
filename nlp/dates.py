"""Relative dates in what people say, resolved against the call's date: the one resolver
behind date entities (``nlp.entities``) and action-item due dates (``guidance.action_items``).

``find_dates(text, today)`` returns the non-overlapping date phrases of ``text`` in order
(where two phrases overlap the longer wins, then the earlier). A deadline keeps its
preposition: "by Friday" is the phrase, not "Friday" (also "before", "until", "till", "no
later than"); "on"/"for" are not part of it.

The rules, with ``today`` the call date:

- "today", "tonight", "EOD", "(the) end of (the) day": today. "tomorrow" +1, "the day after
  tomorrow" +2.
- A bare weekday ("by Friday", "on Friday") is the first such day *after* today: said on a
  Friday, "by Friday" is the next Friday, 7 days later (nobody promises "by Friday" meaning
  today; they say "today"). "this/coming Friday" is the first on or after today. "next
  Friday" is the Friday of the following Monday-to-Sunday week.
- "(the) end of (the/this) week" is the first Friday on or after today (on a weekend, the
  coming one); "end of next week" is the Friday of the following week. "end of the
  month/quarter/year" is its last day, "end of next month/..." the last day of the next one,
  "end of March/Q3" the last day of the upcoming one.
- "next week/month/quarter/year" (or "coming ...") is its first day (Monday for a week).
  "this week" is its end (Friday, as "end of the week"), "this month/quarter/year" its last
  day: the period has begun, so what is meant is its end.
- "in/within N days/weeks/months/quarters/years" adds N (digits or words; "a couple of" is
  2, "a few" 3).
- A month day ("March 3rd", "March the third", "the 3rd of April", "3/15") is the first such
  date on or after today; "the 15th" alone is the first 15th on or after today; "3/15/2027"
  is that date. A day that does not exist ("the 31st of February") is no date.
- "Q3" is the first day of the upcoming Q3 (the current one while it lasts), "Q1 next year"
  that of next year; "in/by/before... March" the first of the upcoming March ("by may" is
  skipped: lowercase "may" is usually the verb); "the spring/summer/fall/winter" the first of
  its first month.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass

from nlp.numbers import ORDINALS, UNITS

_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_name) if m}
_MONTHS.update({m.lower(): i for i, m in enumerate(calendar.month_abbr) if m})
_MONTHS["sept"] = 9
_MONTH_NAMES = "|".join(sorted(_MONTHS, key=len, reverse=True))
_WEEKDAYS = {d.lower(): i for i, d in enumerate(calendar.day_name)}
_SEASON_MONTH = {"spring": 3, "summer": 6, "fall": 9, "autumn": 9, "winter": 12}
FRIDAY = 4


@dataclass(frozen=True, slots=True)
class DateMention:
    """A date phrase of a text: ``text[start_char:end_char] == self.text``."""

    start_char: int
    end_char: int
    text: str
    value: dt.date


_DAY = rf"(?P<day>\d{{1,2}})(?:st|nd|rd|th)?|(?P<dayword>{'|'.join(ORDINALS)})"
_MONTH = rf"(?P<month>{_MONTH_NAMES})\.?"
_COUNT = rf"(?P<count>\d+|a couple(?: of)?|a few|{'|'.join(k for k in UNITS if k != 'zero')})"
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    (name, re.compile(rx, re.IGNORECASE))
    for name, rx in [
        # "end the day": tiny.en's hearing of "end of the day" (espeak-ng voices)
        ("end_of", r"\b(?:the\s+)?end\s+(?:of\s+)?(?:the\s+|this\s+)?(?P<next>next\s+)?"
         rf"(?P<period>day|week|month|quarter|year|q[1-4]|{_MONTH_NAMES})\b"),
        ("relative", r"\b(?P<rel>today|tonight|eod|tomorrow|(?:the\s+)?day\s+after\s+tomorrow)\b"),
        ("month_day", rf"\b{_MONTH}\s+(?:the\s+)?(?:{_DAY})\b"),
        ("day_month", rf"\b(?:the\s+)?(?:{_DAY})\s+of\s+{_MONTH}\b"),
        ("day_only", rf"\bthe\s+(?P<day>\d{{1,2}})(?:st|nd|rd|th)\b(?!\s+of\s+(?:{_MONTH_NAMES}))"),
        ("numeric", r"\b(?P<m>1[0-2]|0?[1-9])/(?P<d>3[01]|[12]\d|0?[1-9])(?:/(?P<y>\d{2,4}))?\b"),
        ("in_count", rf"\b(?:in|within)\s+{_COUNT}\s+(?P<period>day|week|month|quarter|year)s?\b"),
        ("period", r"\b(?P<which>next|this|coming)\s+(?P<period>week|month|quarter|year)\b"),
        ("quarter", r"\b(?P<q>q[1-4])(?:\s+(?P<next>next\s+year))?\b"),
        ("weekday", rf"\b(?:(?P<which>next|this|coming)\s+)?(?P<wd>{'|'.join(_WEEKDAYS)})\b"),
        ("month_only", r"\b(?:in|by|until|till|before|after|early|late|mid|mid-|end of)\s+"
         + _MONTH + r"(?!\s+\d)"),
        ("season", r"\b(?:the|this|next|in the|by the)\s+(?P<next>next\s+)?"
         r"(?P<season>spring|summer|fall|autumn|winter)\b"),
    ]
]  # fmt: skip
_DEADLINE = re.compile(r"\b(?:by|before|until|till|no\s+later\s+than)\s+$", re.IGNORECASE)


def find_dates(text: str, today: dt.date) -> list[DateMention]:
    """The date phrases of ``text`` resolved against ``today``, non-overlapping, in order."""
    found: list[DateMention] = []
    for kind, rx in _PATTERNS:
        for m in rx.finditer(text):
            if kind == "month_only" and m.group("month") == "may":
                continue  # "by may" is too often the modal verb in lowercase ASR text
            d = resolve(kind, m.groupdict(), today)
            if d is None:
                continue
            lead = _DEADLINE.search(text[: m.start()]) if kind != "month_only" else None
            start = lead.start() if lead else m.start()
            found.append(DateMention(start, m.end(), text[start : m.end()], d))
    found.sort(key=lambda x: (x.start_char - x.end_char, x.start_char))
    kept: list[DateMention] = []
    for x in found:
        if all(x.end_char <= k.start_char or x.start_char >= k.end_char for k in kept):
            kept.append(x)
    return sorted(kept, key=lambda x: x.start_char)


def resolve(kind: str, g: Mapping[str, str | None], today: dt.date) -> dt.date | None:
    """The date one matched pattern names (see the module docstring); None if none exists."""
    if kind == "end_of":
        return _end_of(str(g["period"]).lower(), bool(g.get("next")), today)
    if kind == "relative":
        rel = str(g["rel"]).lower()
        return today + dt.timedelta(days=2 if "after" in rel else 1 if rel == "tomorrow" else 0)
    if kind in ("month_day", "day_month"):
        day = int(str(g["day"])) if g.get("day") else ORDINALS[str(g["dayword"]).lower()]
        return _upcoming(_MONTHS[str(g["month"]).lower()], day, today)
    if kind == "day_only":
        return _upcoming_day(int(str(g["day"])), today)
    if kind == "numeric":
        return _numeric(int(str(g["m"])), int(str(g["d"])), g.get("y"), today)
    if kind == "in_count":
        return _in_count(str(g["count"]).lower(), str(g["period"]).lower(), today)
    if kind == "period":
        which, period = str(g["which"]).lower(), str(g["period"]).lower()
        return _end_of(period, False, today) if which == "this" else _start_of_next(period, today)
    if kind == "weekday":
        return weekday(_WEEKDAYS[str(g["wd"]).lower()], (g.get("which") or "").lower(), today)
    if kind == "quarter":
        return _quarter(int(str(g["q"])[1:]), bool(g.get("next")), today)
    if kind == "month_only":
        return _upcoming(_MONTHS[str(g["month"]).lower()], 1, today.replace(day=1))
    if kind == "season":
        first = _upcoming(_SEASON_MONTH[str(g["season"]).lower()], 1, today.replace(day=1))
        return first.replace(year=first.year + 1) if first and g.get("next") else first
    raise ValueError(f"unknown date pattern {kind!r}")


def weekday(wd: int, which: str, today: dt.date) -> dt.date:
    """Weekday ``wd`` (0 = Monday) as said with ``which`` ("", "this", "coming", "next")."""
    if which == "next":
        return _monday(today) + dt.timedelta(days=7 + wd)
    ahead = (wd - today.weekday()) % 7
    if which in ("this", "coming"):
        return today + dt.timedelta(days=ahead)
    return today + dt.timedelta(days=ahead or 7)


def _monday(d: dt.date) -> dt.date:
    return d - dt.timedelta(days=d.weekday())


def _add_months(d: dt.date, months: int) -> dt.date:
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    return dt.date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def _month_end(d: dt.date) -> dt.date:
    return d.replace(day=calendar.monthrange(d.year, d.month)[1])


def _quarter_start(d: dt.date) -> dt.date:
    return dt.date(d.year, 3 * ((d.month - 1) // 3) + 1, 1)


def _upcoming(month: int, day: int, today: dt.date) -> dt.date | None:
    """The first ``month``/``day`` on or after ``today``; None if the day never exists."""
    for year in (today.year, today.year + 1):
        if day > calendar.monthrange(year, month)[1]:
            continue
        d = dt.date(year, month, day)
        if d >= today:
            return d
    return None


def _upcoming_day(day: int, today: dt.date) -> dt.date | None:
    for k in range(13):
        first = _add_months(today.replace(day=1), k)
        if (
            day <= calendar.monthrange(first.year, first.month)[1]
            and first.replace(day=day) >= today
        ):
            return first.replace(day=day)
    return None


def _numeric(month: int, day: int, year: str | None, today: dt.date) -> dt.date | None:
    if not year:
        return _upcoming(month, day, today)
    y = int(year) + (2000 if int(year) < 100 else 0)
    try:
        return dt.date(y, month, day)
    except ValueError:
        return None


def _end_of(period: str, nxt: bool, today: dt.date) -> dt.date | None:
    if period == "day":
        return today
    if period == "week":
        if nxt:
            return _monday(today) + dt.timedelta(days=7 + FRIDAY)
        return today + dt.timedelta(days=(FRIDAY - today.weekday()) % 7)
    if period == "month":
        return _month_end(_add_months(today, 1 if nxt else 0))
    if period == "quarter":
        return _add_months(_quarter_start(today), 6 if nxt else 3) - dt.timedelta(days=1)
    if period == "year":
        return dt.date(today.year + (1 if nxt else 0), 12, 31)
    if period.startswith("q") and len(period) == 2:
        end = _add_months(dt.date(today.year, 3 * int(period[1]) - 2, 1), 3) - dt.timedelta(days=1)
        return end if end >= today else end.replace(year=end.year + 1)
    start = _upcoming(_MONTHS[period], 1, today.replace(day=1))
    return _month_end(start) if start else None


def _start_of_next(period: str, today: dt.date) -> dt.date:
    if period == "week":
        return _monday(today) + dt.timedelta(days=7)
    if period == "month":
        return _add_months(today.replace(day=1), 1)
    if period == "quarter":
        return _add_months(_quarter_start(today), 3)
    return dt.date(today.year + 1, 1, 1)


def _in_count(count: str, period: str, today: dt.date) -> dt.date:
    n = 3 if count == "a few" else 2 if count.startswith("a couple") else None
    if n is None:
        n = int(count) if count.isdigit() else UNITS[count]
    if period == "day":
        return today + dt.timedelta(days=n)
    if period == "week":
        return today + dt.timedelta(weeks=n)
    return _add_months(today, {"month": 1, "quarter": 3, "year": 12}[period] * n)


def _quarter(q: int, next_year: bool, today: dt.date) -> dt.date:
    year = today.year + (1 if next_year else 0)
    start = dt.date(year, 3 * q - 2, 1)
    if next_year or _add_months(start, 3) > today:
        return start
    return start.replace(year=year + 1)
