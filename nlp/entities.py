"""Entities of one utterance: money, dates/deadlines, competitors, decision-maker roles.

Pure rules, no model: ``extract_entities`` is a sync function of the text, the call's date and
the competitor list, so it is table-tested. Spans never overlap: where two rules match
overlapping text, the longer match wins (then the earlier one).

Normal forms (``Entity.value``):
- money: ``"<amount> <CUR>"`` with the amount as a plain number, e.g. ``"20000 USD"``,
  ``"1500000 USD"``; a per-unit price keeps its unit: ``"50 USD/seat"``.
- date: an ISO date relative to ``call_date``, by ``nlp.dates`` (the resolver the action
  items' due dates use too): "by Friday" said on a Friday is the next Friday; "next quarter",
  "in March", "Q3" name a first day, "end of ..." and "this month" a last day.
- competitor: the canonical name from the competitor mapping (aliases matched case-insensitively).
- role: a canonical key: ``ceo cfo cto coo cio cmo cro ciso vp director head owner founder
  manager procurement legal board finance it security compliance``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping, Sequence

from nlp.dates import find_dates
from nlp.insight import Entity
from nlp.numbers import SCALES, UNITS, words_to_number

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

_NUMWORD = r"(?:" + "|".join(sorted((k for k in UNITS if len(k) > 1), key=len, reverse=True))
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


def _amount(number: str, scale: str | None) -> float | None:
    value = words_to_number(number)
    if value is None:
        return None
    if scale:
        s = scale.strip().lower()
        value *= {"mm": 1_000_000}.get(s, SCALES.get(s, 1))
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


def _dates(text: str, today: dt.date) -> Iterator[Entity]:
    for d in find_dates(text, today):
        yield Entity("date", d.text, d.value.isoformat(), d.start_char, d.end_char)


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
