"""Entities of one utterance: money, dates/deadlines, competitors, decision-maker roles.

Pure rules, no model: ``extract_entities`` is a sync function of the text, the call's date and
the competitor list, so it is table-tested. Spans never overlap: where two rules match
overlapping text, the longer match wins (then the earlier one).

Normal forms (``Entity.value``):
- money: ``"<amount> <CUR>"`` with the amount as a plain number, e.g. ``"20000 USD"``,
  ``"1500000 USD"``; a per-unit price keeps its unit: ``"50 USD/seat"``.
- date: an ISO date relative to ``call_date``. A period names its first day ("next quarter",
  "in March", "Q3") except "end of ..." which names the last day ("end of the month").
  Weekdays name the next such day on or after the call date ("by Friday"); "next Friday" is
  the one after that when the call is in the same week as the upcoming Friday.
- competitor: the canonical name from the competitor mapping (aliases matched case-insensitively).
- role: a canonical key: ``ceo cfo cto coo cio cmo cro ciso vp director head owner founder
  manager procurement legal board finance it security compliance``.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Iterator, Mapping, Sequence

from nlp.insight import Entity

DEFAULT_COMPETITORS: Mapping[str, Sequence[str]] = {
    "Salesforce": ("salesforce", "sales force", "sfdc", "salesforce einstein"),
    "HubSpot": ("hubspot", "hub spot"),
    "Gong": ("gong", "gong.io"),
    "Chorus": ("chorus", "chorus.ai", "zoominfo chorus"),
    "Zoho": ("zoho", "zoho crm"),
    "Pipedrive": ("pipedrive", "pipe drive"),
    "Microsoft Dynamics": ("microsoft dynamics", "dynamics 365", "ms dynamics", "dynamics"),
    "Outreach": ("outreach.io", "outreach"),
    "Salesloft": ("salesloft", "sales loft"),
    "Clari": ("clari",),
    "Avoma": ("avoma",),
    "Dialpad": ("dialpad", "dial pad"),
    "Aircall": ("aircall", "air call"),
    "RingCentral": ("ringcentral", "ring central"),
    "Zoom": ("zoom revenue accelerator", "zoom iq", "zoom"),
    "Apollo": ("apollo.io", "apollo"),
    "Freshsales": ("freshsales", "freshworks"),
    "Close": ("close.com", "close crm"),
    "Monday.com": ("monday.com", "monday crm"),
    "Copper": ("copper crm",),
    "Oracle": ("oracle", "oracle sales"),
}

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "a": 1, "an": 1,
}  # fmt: skip
_SCALES = {"hundred": 100, "thousand": 1_000, "grand": 1_000, "k": 1_000, "million": 1_000_000,
           "mil": 1_000_000, "m": 1_000_000, "billion": 1_000_000_000, "bn": 1_000_000_000}  # fmt: skip
_ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
    "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13,
    "fourteenth": 14, "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18,
    "nineteenth": 19, "twentieth": 20, "thirtieth": 30,
}  # fmt: skip
_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_name) if m}
_MONTHS.update({m.lower(): i for i, m in enumerate(calendar.month_abbr) if m})
_MONTHS["sept"] = 9
_WEEKDAYS = {d.lower(): i for i, d in enumerate(calendar.day_name)}

_NUMWORD = r"(?:" + "|".join(sorted((k for k in _UNITS if len(k) > 1), key=len, reverse=True))
_NUMWORD += r"|hundred|thousand|million|billion)"
_WORDNUM = rf"(?:(?:a|an)\s+)?{_NUMWORD}(?:[\s-]+(?:and\s+)?{_NUMWORD})*"
_DIGITS = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_SCALE = r"(?:\s*(?:k|m|mm|bn)\b|\s+(?:thousand|million|billion|grand))"
_CUR_WORD = r"(?:dollars?|bucks|usd|euros?|eur|pounds?|gbp)"
_PER = r"(?:\s+(?:a|per)\s+(?P<unit{}>seat|user|license|licence|month|year|head|rep|location))?"
_MONEY = re.compile(
    rf"(?P<sym>[$€£])\s?(?P<n1>{_DIGITS})(?P<s1>{_SCALE})?{_PER.format(1)}"
    rf"|\b(?P<n2>{_DIGITS}|{_WORDNUM})(?P<s2>{_SCALE})?\s*(?P<cur>{_CUR_WORD})\b{_PER.format(2)}"
    rf"|\b(?P<n3>{_DIGITS}|{_WORDNUM})(?P<s3>\s*k)\b(?!\s*(?:users|seats|reps|people|employees))"
    rf"|\b(?P<n4>{_WORDNUM})\s+(?P<s4>grand)\b",
    re.IGNORECASE,
)
_CURRENCY = {"$": "USD", "€": "EUR", "£": "GBP", "dollar": "USD", "buck": "USD", "usd": "USD",
             "euro": "EUR", "eur": "EUR", "pound": "GBP", "gbp": "GBP"}  # fmt: skip


def _words_to_number(text: str) -> float | None:
    total, current = 0.0, 0.0
    seen = False
    for tok in re.split(r"[\s-]+", text.lower().replace(",", "")):
        if tok in ("", "and"):
            continue
        if re.fullmatch(r"\d+(?:\.\d+)?", tok):
            current += float(tok)
        elif tok in _UNITS:
            current += _UNITS[tok]
        elif tok == "hundred":
            current = (current or 1) * 100
        elif tok in _SCALES:
            total += (current or 1) * _SCALES[tok]
            current = 0.0
        else:
            return None
        seen = True
    return total + current if seen else None


def _amount(number: str, scale: str | None) -> float | None:
    value = _words_to_number(number)
    if value is None:
        return None
    if scale:
        s = scale.strip().lower()
        value *= {"mm": 1_000_000}.get(s, _SCALES.get(s, 1))
    return value


def _fmt_number(v: float) -> str:
    return str(int(v)) if v == int(v) else f"{v:.2f}".rstrip("0")


def _money(text: str) -> Iterator[Entity]:
    for m in _MONEY.finditer(text):
        g = m.groupdict()
        value = next(_amount(g[f"n{i}"], g[f"s{i}"]) for i in "1234" if g[f"n{i}"])
        if value is None or value <= 0:
            continue
        if g["sym"]:
            cur = _CURRENCY[g["sym"]]
        elif g["cur"]:
            cur = _CURRENCY[g["cur"].lower().rstrip("s")]
        else:
            cur = "USD"
        unit_word = g.get("unit1") or g.get("unit2")
        unit = f"/{unit_word.lower()}" if unit_word else ""
        yield Entity("money", m.group(0), f"{_fmt_number(value)} {cur}{unit}", m.start(), m.end())


def _add_months(d: dt.date, months: int) -> dt.date:
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    return dt.date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def _month_end(d: dt.date) -> dt.date:
    return d.replace(day=calendar.monthrange(d.year, d.month)[1])


def _quarter_start(d: dt.date) -> dt.date:
    return dt.date(d.year, 3 * ((d.month - 1) // 3) + 1, 1)


def _upcoming_month(month: int, day: int, today: dt.date) -> dt.date | None:
    for year in (today.year, today.year + 1):
        if day > calendar.monthrange(year, month)[1]:
            return None
        d = dt.date(year, month, day)
        if d >= today:
            return d
    return None


_DAY = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?|(?P<dayword>" + "|".join(_ORDINALS) + r")"
_MONTH = r"(?P<month>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_COUNT = (
    r"(?P<count>\d+|" + "|".join(k for k in _UNITS if k not in ("zero",)) + r"|a couple of|a few)"
)
_PERIOD = r"(?P<period>day|week|month|quarter|year)s?"
_DATE_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    (name, re.compile(rx, re.IGNORECASE))
    for name, rx in [
        ("end_of", r"\b(?:the\s+)?end\s+of\s+(?:the\s+|this\s+)?(?P<next>next\s+)?"
         r"(?P<period>day|week|month|quarter|year|q[1-4]|" + "|".join(_MONTHS) + r")\b"),
        ("month_day", rf"\b{_MONTH}\s+(?:the\s+)?(?:{_DAY})\b"),
        ("day_month", rf"\b(?:the\s+)?(?:{_DAY})\s+of\s+{_MONTH}\b"),
        ("numeric", r"\b(?P<m>1[0-2]|0?[1-9])/(?P<d>3[01]|[12]\d|0?[1-9])(?:/(?P<y>\d{2,4}))?\b"),
        ("relative", r"\b(?P<rel>today|tonight|tomorrow|(?:the\s+)?day\s+after\s+tomorrow)\b"),
        ("in_count", rf"\bin\s+{_COUNT}\s+{_PERIOD}\b"),
        ("next_period", r"\b(?P<which>next|this|coming)\s+(?P<period>week|month|quarter|year)\b"),
        ("quarter", r"\b(?P<q>q[1-4])(?:\s+(?P<next>next\s+year))?\b"),
        ("weekday", r"\b(?P<next>next\s+)?(?P<wd>" + "|".join(_WEEKDAYS) + r")\b"),
        ("month_only", r"\b(?:in|by|until|till|before|after|early|late|mid|mid-|end of)\s+"
         + _MONTH + r"(?!\s+\d)"),
        ("season", r"\b(?:the|this|next|in the|by the)\s+(?P<next>next\s+)?"
         r"(?P<season>spring|summer|fall|autumn|winter)\b"),
    ]
]  # fmt: skip
_DEADLINE = re.compile(r"\b(?:by|before|until|till|no\s+later\s+than)\s+$", re.IGNORECASE)
_SEASON_MONTH = {"spring": 3, "summer": 6, "fall": 9, "autumn": 9, "winter": 12}


def _resolve_date(kind: str, g: Mapping[str, str | None], today: dt.date) -> dt.date | None:
    nxt = bool(g.get("next"))
    if kind == "end_of":
        return _end_of(str(g["period"]).lower(), nxt, today)
    if kind in ("month_day", "day_month"):
        day = int(str(g["day"])) if g.get("day") else _ORDINALS[str(g["dayword"]).lower()]
        return _upcoming_month(_MONTHS[str(g["month"]).lower()], day, today)
    if kind == "numeric":
        month, day = int(str(g["m"])), int(str(g["d"]))
        if g.get("y"):
            year = int(str(g["y"]))
            year += 2000 if year < 100 else 0
            try:
                return dt.date(year, month, day)
            except ValueError:
                return None
        return _upcoming_month(month, day, today)
    if kind == "relative":
        rel = str(g["rel"]).lower()
        offset = 2 if "after" in rel else 1 if rel == "tomorrow" else 0
        return today + dt.timedelta(days=offset)
    if kind == "in_count":
        return _in_count(str(g["count"]).lower(), str(g["period"]).lower(), today)
    if kind == "next_period":
        return _period_start(str(g["period"]).lower(), str(g["which"]).lower() != "this", today)
    if kind == "quarter":
        q = int(str(g["q"])[1:])
        year = today.year + (1 if g.get("next") else 0)
        start = dt.date(year, 3 * q - 2, 1)
        return (
            start
            if g.get("next") or _add_months(start, 3) > today
            else start.replace(year=year + 1)
        )
    if kind == "weekday":
        wd = _WEEKDAYS[str(g["wd"]).lower()]
        d = today + dt.timedelta(days=(wd - today.weekday()) % 7)
        if nxt and (d <= today or d.isocalendar()[1] == today.isocalendar()[1]):
            d += dt.timedelta(days=7)
        return d
    if kind == "month_only":
        return _upcoming_month(_MONTHS[str(g["month"]).lower()], 1, today.replace(day=1))
    if kind == "season":
        first = _upcoming_month(_SEASON_MONTH[str(g["season"]).lower()], 1, today.replace(day=1))
        return first.replace(year=first.year + 1) if first and nxt else first
    return None


def _end_of(period: str, nxt: bool, today: dt.date) -> dt.date | None:
    if period == "day":
        return today
    if period == "week":
        friday = today + dt.timedelta(days=(4 - today.weekday()) % 7)
        return friday + dt.timedelta(days=7 if nxt else 0)
    if period == "month":
        return _month_end(_add_months(today, 1 if nxt else 0))
    if period == "quarter":
        return _add_months(_quarter_start(today), 3 + (3 if nxt else 0)) - dt.timedelta(days=1)
    if period == "year":
        return dt.date(today.year + (1 if nxt else 0), 12, 31)
    if period.startswith("q") and len(period) == 2:
        end = _add_months(dt.date(today.year, 3 * int(period[1]) - 2, 1), 3) - dt.timedelta(days=1)
        return end if end >= today else end.replace(year=end.year + 1)
    start = _upcoming_month(_MONTHS[period], 1, today.replace(day=1))
    return _month_end(start) if start else None


def _in_count(count: str, period: str, today: dt.date) -> dt.date:
    n = {"a couple of": 2, "a few": 3}.get(count) or (
        int(count) if count.isdigit() else _UNITS[count]
    )
    if period == "day":
        return today + dt.timedelta(days=n)
    if period == "week":
        return today + dt.timedelta(weeks=n)
    months = {"month": 1, "quarter": 3, "year": 12}[period] * n
    return _add_months(today, months)


def _period_start(period: str, nxt: bool, today: dt.date) -> dt.date:
    if period == "week":
        monday = today - dt.timedelta(days=today.weekday())
        return monday + dt.timedelta(days=7 if nxt else 0)
    if period == "month":
        return _add_months(today.replace(day=1), 1 if nxt else 0)
    if period == "quarter":
        return _add_months(_quarter_start(today), 3 if nxt else 0)
    return dt.date(today.year + (1 if nxt else 0), 1, 1)


def _dates(text: str, today: dt.date) -> Iterator[Entity]:
    for kind, rx in _DATE_PATTERNS:
        for m in rx.finditer(text):
            if kind == "month_only" and m.group("month") == "may":
                # "by may" is too often the modal verb in lowercase ASR text.
                continue
            d = _resolve_date(kind, m.groupdict(), today)
            if d is None:
                continue
            # A deadline keeps its preposition: "by Friday" is the entity, not "Friday".
            lead = _DEADLINE.search(text[: m.start()])
            start = lead.start() if lead and kind != "month_only" else m.start()
            yield Entity("date", text[start : m.end()], d.isoformat(), start, m.end())


def _competitors(text: str, competitors: Mapping[str, Sequence[str]]) -> Iterator[Entity]:
    for name, aliases in competitors.items():
        for alias in (name, *aliases):
            rx = r"(?<![\w.])" + re.escape(alias).replace(r"\ ", r"\s+") + r"(?![\w]|\.\w)"
            for m in re.finditer(rx, text, re.IGNORECASE):
                yield Entity("competitor", m.group(0), name, m.start(), m.end())


_ROLE_PATTERNS: list[tuple[str, str]] = [
    (r"\bchief\s+executive(?:\s+officer)?\b|\bceo\b", "ceo"),
    (r"\bchief\s+financial(?:\s+officer)?\b|\bcfo\b", "cfo"),
    (r"\bchief\s+technology(?:\s+officer)?\b|\bcto\b", "cto"),
    (r"\bchief\s+operating(?:\s+officer)?\b|\bcoo\b", "coo"),
    (r"\bchief\s+information\s+security(?:\s+officer)?\b|\bciso\b", "ciso"),
    (r"\bchief\s+information(?:\s+officer)?\b|\bcio\b", "cio"),
    (r"\bchief\s+marketing(?:\s+officer)?\b|\bcmo\b", "cmo"),
    (r"\bchief\s+revenue(?:\s+officer)?\b|\bcro\b", "cro"),
    (r"\b(?:s?vp|evp|vice\s+president)(?:\s+of\s+[a-z]+(?:\s+operations)?)?\b", "vp"),
    (r"\b(?:(?:sales|marketing|it|finance|financial|medical|regional|managing|executive|"
     r"operations|ops|purchasing|program|technical|district|practice|store|branch)\s+)?"
     r"directors?(?:\s+of\s+[a-z]+)?\b", "director"),
    (r"\bhead\s+of\s+[a-z]+\b", "head"),
    (r"\b(?:co-?)?owners?\b|\bdealer\s+principal\b", "owner"),
    (r"\b(?:co-?)?founders?\b", "founder"),
    (r"\b(?:my|our)\s+(?:boss|manager|supervisor)\b", "manager"),
    (r"\b(?:procurement|purchasing)(?:\s+(?:team|department|lead|office))?\b", "procurement"),
    (r"\blegal(?:\s+(?:team|department|counsel))?\b|\bgeneral\s+counsel\b|\b(?:lawyers?|attorneys?)\b", "legal"),
    (r"\bboard(?:\s+of\s+(?:directors|trustees))?\b|\btrustees\b", "board"),
    (r"\bfinance(?:\s+(?:team|department))?\b|\bcontroller\b", "finance"),
    (r"\bit\s+(?:team|department|manager|guy|folks)\b", "it"),
    (r"\bsecurity\s+(?:team|review|officer)\b", "security"),
    (r"\bcompliance(?:\s+(?:team|officer|department))?\b", "compliance"),
]  # fmt: skip
_ROLE_RX = [(re.compile(rx, re.IGNORECASE), key) for rx, key in _ROLE_PATTERNS]
_NOT_ROLE = re.compile(r"\b(?:on|on the|of the|aboard)\s*$", re.IGNORECASE)


def _roles(text: str) -> Iterator[Entity]:
    for rx, key in _ROLE_RX:
        for m in rx.finditer(text):
            if key == "board" and _NOT_ROLE.search(text[: m.start()]):
                continue  # "on board", "aboard": not the board of directors
            if (
                key == "it"
                and m.group(0)[:2] == "it"
                and not text[m.start() : m.start() + 2].isupper()
            ):
                continue  # lowercase "it team" is usually the pronoun
            yield Entity("role", m.group(0), key, m.start(), m.end())


def extract_entities(
    text: str,
    *,
    call_date: dt.date,
    competitors: Mapping[str, Sequence[str]] = DEFAULT_COMPETITORS,
) -> tuple[Entity, ...]:
    """Non-overlapping entities of ``text`` in order of position."""
    found = [
        *_money(text),
        *_dates(text, call_date),
        *_competitors(text, competitors),
        *_roles(text),
    ]
    found.sort(key=lambda e: (-(e.end_char - e.start_char), e.start_char))
    kept: list[Entity] = []
    for e in found:
        if all(e.end_char <= k.start_char or e.start_char >= k.end_char for k in kept):
            kept.append(e)
    return tuple(sorted(kept, key=lambda e: e.start_char))
