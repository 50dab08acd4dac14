"""Redaction of payment cards, US social security numbers, emails and phone numbers.

Run it on every transcript, partial or final, before it is stored, shown, logged or sent::

    redactor = Redactor(RedactionOptions())            # all categories on by default
    transcript = redactor.transcript(transcript)       # text and words, consistently
    text = redact_text("my card is 4111 1111 1111 1111")  # -> "my card is [CARD]"

Contract: a detected span is replaced by a typed placeholder (``[CARD]``, ``[SSN]``,
``[EMAIL]``, ``[PHONE]``, and ``[DIGITS]`` for partials, below) in the text, and the words
that overlap it are replaced by one placeholder word spanning their times (lowest
probability), keeping any characters of those words outside the span. The same detector runs
on the text and on the words' concatenated text, so both agree.

Detection works on a token stream where numbers can be written ("4111", "4,111",
"555-123-4567") or spoken as Whisper writes dictation ("four one one one", "oh" for zero
inside a number, "double five", "triple two", "forty-one", "eight hundred"), mixed, with
spaces, commas, dashes, periods, slashes, parentheses and fillers (um, uh) between them. A
*run* is a maximal sequence of such number tokens; any other word ends it. Then:

- card: 13-19 digits that pass the Luhn check. A run is searched left to right for the
  longest window, starting and ending on digit-group boundaries, that is a card, SSN or
  phone, so "4111 1111 1111 1111 123-45-6789" is a card and an SSN. Other digits in a run
  that holds a card (an expiry, a misheard extra digit) are masked with it;
- SSN: a 9-digit run grouped 3-2-4 ("123-45-6789", "one two three, four five, six seven
  eight nine"), or any 9-digit run after "social security"/"SSN"; area not 000, 666 or 9xx,
  group not 00, serial not 0000;
- phone: 10 digits (or 11 starting with 1) with a valid North American area code and
  exchange (first digit 2-9), in any grouping; or 7 digits grouped 3-4 ("555-1234") or
  after "call", "phone", "number", "cell", "reach", ...;
- email: written (``john.smith@acme.com``) or spoken ("john dot smith at acme dot com"; a
  spoken "at" needs a known top-level domain at the end, to spare "meet at the office").

Recognizers mishear dictated numbers: they drop or add a digit (so Luhn fails), hear the cue
word wrong ("car", "cart", "guard" for card; "a count" for account) or write "for" for four.
So a run the rules above leave, in a final as in a partial, is still masked when it looks like
an identifier rather than a quantity (the *identifier* rules):

- 12 or more digits in any form: ``[CARD]`` (no quantity is said as twelve bare digits);
- 8 or more digits said as several groups ("4556 7375"), or 4 or more said digit by digit
  ("four five five six", "4 3 4 5": a PIN, or the rest of a card read in two breaths):
  ``[DIGITS]``, unless it is a list of round numbers ("100, 200, 300") or a date
  ("12/25/2026");
- 6 or more digits after an identifier cue in the 40 characters before the run ("card",
  "car", "cart", "guard", "account", "a count", "number", "routing", "member", "policy",
  "ID", "reference", ...): ``[DIGITS]``, or ``[PHONE]`` for 9 to 11 digits after a phone cue;
- inside a digit-by-digit run, "for", "to"/"too", "ate" and "won" between single digits are
  read as the digits they sound like.

Not redacted: amounts after a currency sign, numbers with thousands separators
("5,551,234 users"), runs made only of years ("2019, 2020, 2021"), dates, lists of round
numbers, single numbers under 12 digits without a cue ("revenue was 1234567890"), short
numbers, prices.

Partial transcripts may hold only the start of a number or address. In a partial
(``is_final=False``) every run of ``partial_min_digits`` (default 5) or more digits that is
not classified is masked as ``[DIGITS]`` (any digit within three words of an identifier cue,
"my car number is 4"; three digits said one by one), and an address still being spoken ("john dot
smith at acme dot", "john.smith@acm") as ``[EMAIL]``. Partials are replaced by later
partials and the final, so over-masking there costs nothing; the final is classified exactly.

The module runs past 400 lines because the number grammar and the rules over it are one
contract; split, neither half could be read alone.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from nlp.transcript import Transcript, Word

E = TypeVar("E")

Category = Literal["card", "ssn", "email", "phone", "digits"]

PLACEHOLDERS: dict[Category, str] = {
    "card": "[CARD]",
    "ssn": "[SSN]",
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "digits": "[DIGITS]",
}


@dataclass(frozen=True, slots=True)
class RedactionOptions:
    """Which categories to redact (all on by default) and the partial digit-run threshold."""

    cards: bool = True
    ssns: bool = True
    emails: bool = True
    phones: bool = True
    partial_min_digits: int = 5

    def __post_init__(self) -> None:
        if self.partial_min_digits < 1:
            raise ValueError("partial_min_digits must be >= 1")


@dataclass(frozen=True, slots=True)
class Span:
    """A detected span of the input, ``[start_char, end_char)``."""

    category: Category
    start_char: int
    end_char: int


_DIGIT_WORDS = {
    w: str(k) for k, w in enumerate("zero one two three four five six seven eight nine".split())
}
_DIGIT_WORDS |= {"oh": "0", "o": "0"}
_ZERO_ALIASES = {"oh", "o"}  # only inside a run: "Oh, 4000 users" starts no number
_TEENS = {
    w: str(10 + k)
    for k, w in enumerate(
        "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
    )
}
_TENS = {
    w: str(k + 2)
    for k, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())
}
_REPEATS = {"double": 2, "triple": 3}
_FILLERS = {"um", "uh", "er", "erm", "ah", "hmm", "mm"}
_SEPARATORS = set(",-./()+")
_CURRENCY = set("$€£¥")
_TOKEN = re.compile(r"\d+|[^\W\d_]+|\S")
_SSN_CONTEXT = re.compile(r"social|security|\bssn\b|\bs\.?\s?s\.?\s?n\b", re.IGNORECASE)
_PHONE_CONTEXT = re.compile(
    r"\b(call|calling|phone|number|cell|mobile|reach|text|dial|extension|line|fax)\b",
    re.IGNORECASE,
)
_YEAR = re.compile(r"(19|20)\d\d")
# Words said before an identifier, and what recognizers make of them ("card" heard as "car").
_ID_CONTEXT = re.compile(
    r"\b(cards?|car|cars|cart|carts|guard|cord|credit|debit|visa|master\s?card|amex|"
    r"accounts?|a\s?count|acct|routing|iban|sort\s?code|member(ship)?|policy|"
    r"id|i\.d\.|reference|ref|confirmation|customer|numbers?|no\.|digits|pin|cvv|cvc|"
    r"call|calling|phone|cell|mobile|reach|text|dial|extension|fax)\b",
    re.IGNORECASE,
)
_DATE_SEPARATORS = {"/", "-", "."}
_HOMOPHONES = {"for": "4", "to": "2", "too": "2", "ate": "8", "won": "1"}

_TLDS = "com|net|org|edu|gov|io|co|us|ai|biz|info|me|uk|ca|de|fr|app|dev|tech"
_CONNECT = r"(?:\s*\.\s*|\s+dot\s+|_|\s+underscore\s+|\s+dash\s+|\s+hyphen\s+)"
_LABEL = r"[A-Za-z0-9+%-]{1,64}"  # bounded: keeps the scan linear on long runs
_DOT = r"(?:\.|\s+dot\s+)"
_DOT_END = r"(?:\.|\s+dot\b)"
_EMAIL_WRITTEN = re.compile(
    r"[A-Za-z0-9._%+-]{1,64}\s*@\s*[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", re.IGNORECASE
)
_EMAIL_SPOKEN = re.compile(
    rf"\b{_LABEL}(?:{_CONNECT}{_LABEL})*\s+at\s+{_LABEL}(?:{_DOT}{_LABEL})*{_DOT}(?:{_TLDS})\b",
    re.IGNORECASE,
)
# Partials only: an address cut off mid-way (no top-level domain yet).
_EMAIL_PENDING = re.compile(
    rf"(?:[A-Za-z0-9._%+-]{{1,64}}\s*@\s*[A-Za-z0-9.-]*"
    rf"|\b{_LABEL}(?:{_CONNECT}{_LABEL})+\s+at(?:\s+{_LABEL}(?:{_DOT}{_LABEL})*{_DOT_END}?)?"
    rf"|\b{_LABEL}\s+at\s+{_LABEL}(?:{_DOT}{_LABEL})*{_DOT_END})[\s.]*$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class _Num:
    """A number token: its digits, characters, and whether a group boundary precedes it."""

    digits: str
    start_char: int
    end_char: int
    written: bool
    boundary_before: bool


class Redactor:
    """Finds and masks sensitive spans; stateless apart from its options, safe to share."""

    def __init__(self, options: RedactionOptions | None = None) -> None:
        self.options = options or RedactionOptions()

    def find(self, text: str, *, is_final: bool = True) -> list[Span]:
        """Non-overlapping spans to mask in ``text``, in order."""
        spans: list[Span] = []
        if self.options.emails:
            spans += [Span("email", m.start(), m.end()) for m in _EMAIL_WRITTEN.finditer(text)]
            spans += [Span("email", m.start(), m.end()) for m in _EMAIL_SPOKEN.finditer(text)]
            if not is_final and (m := _EMAIL_PENDING.search(text)):
                spans.append(Span("email", m.start(), m.end()))
        for run in _runs(text):
            spans += self._classify(text, run, is_final)
        return _merge(spans)

    def redact(
        self, text: str, words: Sequence[Word] = (), *, is_final: bool = True
    ) -> tuple[str, tuple[Word, ...]]:
        """The text and words with every detected span replaced by its placeholder."""
        return self._redact_text(text, is_final), self._redact_words(words, is_final)

    def transcript(self, transcript: Transcript) -> Transcript:
        """A copy of ``transcript`` with its text and words redacted (partials more eagerly)."""
        text, words = self.redact(transcript.text, transcript.words, is_final=transcript.is_final)
        if text == transcript.text and words == transcript.words:
            return transcript
        return dataclasses.replace(transcript, text=text, words=words)

    def _redact_text(self, text: str, is_final: bool) -> str:
        return _apply(text, self.find(text, is_final=is_final))

    def _redact_words(self, words: Sequence[Word], is_final: bool) -> tuple[Word, ...]:
        # Whisper's own words start with a space (a word without one continues the last);
        # ours are stripped ("4", "5"): joined bare they would glue into one number or hide
        # a cue word ("Mycarnumberis4556"), so those are joined with spaces.
        spaced = any(w.text[:1].isspace() for w in words)
        pieces = [w.text if k == 0 or spaced else " " + w.text for k, w in enumerate(words)]
        joined = "".join(pieces)
        starts = [0]
        for piece in pieces:
            starts.append(starts[-1] + len(piece))
        # Word index ranges [a, b) hit by spans; ranges sharing a word become one placeholder.
        ranges: list[list[int]] = []
        spans = self.find(joined, is_final=is_final)
        for span in spans:
            a = next(k for k in range(len(words)) if starts[k + 1] > span.start_char)
            b = next(k for k in range(a, len(words) + 1) if starts[k] >= span.end_char)
            if ranges and a < ranges[-1][1]:
                ranges[-1][1] = max(ranges[-1][1], b)
            else:
                ranges.append([a, b])
        out: list[Word] = []
        cursor = 0
        for a, b in ranges:
            out += words[cursor:a]
            hit = words[a:b]
            inner = [
                Span(x.category, x.start_char - starts[a], x.end_char - starts[a])
                for x in spans
                if starts[a] <= x.start_char < starts[b]
            ]
            inserted = len(pieces[a]) - len(words[a].text)  # the space added above, if any
            out.append(
                Word(
                    text=_apply(joined[starts[a] : starts[b]], inner)[inserted:],
                    start_s=hit[0].start_s,
                    end_s=hit[-1].end_s,
                    probability=min(w.probability for w in hit),
                )
            )
            cursor = b
        return (*out, *words[cursor:])

    def _classify(self, text: str, run: list[_Num], is_final: bool) -> list[Span]:
        """Spans of one run: leftmost-longest classified windows, then the leftovers."""
        if _is_quantity(text, run):
            return []
        labels: list[Category | None] = [None] * len(run)
        window_ids = list(range(len(run)))  # tokens of one classified window share an id
        i = 0
        while i < len(run):
            found = self._window_at(text, run, i)
            if found is None:
                i += 1
                continue
            category, end = found
            labels[i:end] = [category] * (end - i)
            window_ids[i:end] = [i] * (end - i)
            i = end
        # Digits next to a card (expiry, a misheard extra digit) go with it; in a partial a
        # long run is masked whole, since the rest of the number may still be coming.
        leftover: Category | None = None
        if "card" in labels:
            leftover = "card"
        elif None in labels:
            leftover = self._identifier(text, run, is_final)
            if leftover == "card":
                labels = ["card"] * len(run)  # a card-length run is one card, whatever is inside
                window_ids = [0] * len(run)
        joins = [
            k > 0 and (window_ids[k] == window_ids[k - 1] or None in (labels[k], labels[k - 1]))
            for k in range(len(run))
        ]
        labels = [label or leftover for label in labels]
        spans: list[Span] = []
        for k, (num, label) in enumerate(zip(run, labels, strict=True)):
            if label is None:
                continue
            if joins[k] and labels[k - 1] == label and spans:
                spans[-1] = Span(label, spans[-1].start_char, num.end_char)
            else:
                spans.append(Span(label, _lead_start(text, num.start_char), num.end_char))
        return spans

    def _window_at(self, text: str, run: list[_Num], i: int) -> tuple[Category, int] | None:
        """The longest window ``run[i:end]`` that is a card, SSN or phone, as (category, end).

        Windows start and end on group boundaries, so a spoken number that fails the Luhn
        check is not searched digit by digit for a shorter one that passes."""
        before = text[max(0, run[i].start_char - 40) : run[i].start_char]
        starts_group = i == 0 or run[i].boundary_before
        best: tuple[Category, int] | None = None
        digits = ""
        for end in range(i + 1, len(run) + 1):
            digits += run[end - 1].digits
            if len(digits) > 19:
                break
            window = run[i:end]
            if not starts_group or (end < len(run) and not run[end].boundary_before):
                continue
            if self.options.cards and len(digits) >= 13 and _luhn(digits):
                best = ("card", end)
            elif self.options.ssns and _is_ssn(window, digits, before):
                best = ("ssn", end)
            elif self.options.phones and _is_phone(window, digits, before):
                best = ("phone", end)
        return best

    def _identifier(self, text: str, run: list[_Num], is_final: bool) -> Category | None:
        """The placeholder for a run no card, SSN or phone rule took, if it still looks like
        an identifier (module docstring: the identifier rules), else None. In a partial any
        match is ``digits``: the number may still be growing."""
        o = self.options
        n = sum(len(x.digits) for x in run)
        before = text[max(0, run[0].start_char - 40) : run[0].start_char]
        cue = _ID_CONTEXT.search(before) is not None
        digits = "".join(x.digits for x in run)
        if (not o.ssns and _is_ssn(run, digits, before)) or (
            not o.phones and _is_phone(run, digits, before)
        ):
            return None  # its own category is switched off
        found: Category | None = None
        dictated = all(len(x.digits) == 1 for x in run)  # said digit by digit
        if o.cards and n >= 12:
            found = "card"
        elif o.phones and cue and 9 <= n <= 11 and _PHONE_CONTEXT.search(before):
            found = "phone"
        elif o.cards and (
            (cue and n >= 6)
            or (dictated and n >= 4)
            or (n >= 8 and _grouped(run) and not _is_listed(text, run))
        ):
            found = "digits"
        if is_final or found is not None:
            return found if is_final else "digits"
        numeric = o.cards or o.ssns or o.phones
        near = _ID_CONTEXT.search(" ".join(before.split()[-3:])) is not None
        growing = dictated and n >= 3  # a dictation still being spoken
        return "digits" if numeric and (n >= o.partial_min_digits or near or growing) else None


def redact_text(
    text: str, options: RedactionOptions | None = None, *, is_final: bool = True
) -> str:
    """``text`` with every detected span replaced by its placeholder."""
    return Redactor(options)._redact_text(text, is_final)


def _apply(text: str, spans: Sequence[Span]) -> str:
    out, cursor = [], 0
    for span in spans:
        out += [text[cursor : span.start_char], PLACEHOLDERS[span.category]]
        cursor = span.end_char
    return "".join([*out, text[cursor:]])


def _runs(text: str) -> list[list[_Num]]:
    """Maximal runs of number tokens joined only by separators, fillers and whitespace."""
    runs: list[list[_Num]] = []
    run: list[_Num] = []
    tokens = list(_TOKEN.finditer(text))
    pending_boundary = False
    i = 0
    while i < len(tokens):
        num, i = _number_at(tokens, i, started=bool(run))
        if num is None and run and len(run[-1].digits) == 1:
            num, i = _homophone_at(tokens, i)
        if num is not None:
            prev = run[-1] if run else None
            # Written multi-digit numbers are groups of their own ("555 123 4567"); spoken
            # digits group until punctuation ("five five five, one two three").
            boundary = pending_boundary or (
                prev is not None and (_is_written_group(prev) or _is_written_group(num))
            )
            run.append(dataclasses.replace(num, boundary_before=boundary))
            pending_boundary = False
            continue
        token = tokens[i].group().lower()
        if run and (token in _SEPARATORS or token in _FILLERS):
            pending_boundary = pending_boundary or token in _SEPARATORS
        else:
            if run:
                runs.append(run)
            run, pending_boundary = [], False
        i += 1
    if run:
        runs.append(run)
    return runs


def _number_at(tokens: list[re.Match[str]], i: int, *, started: bool) -> tuple[_Num | None, int]:
    """The number token starting at ``tokens[i]`` and the index after it, or (None, i)."""
    tok = tokens[i]
    word = tok.group().lower()

    def num(digits: str, end: int, written: bool = False) -> tuple[_Num, int]:
        return _Num(digits, tok.start(), tokens[end - 1].end(), written, False), end

    nxt = tokens[i + 1].group().lower() if i + 1 < len(tokens) else ""
    nxt2 = tokens[i + 2].group().lower() if i + 2 < len(tokens) else ""
    units = set(_DIGIT_WORDS) - {"zero", "oh", "o"}
    if tok.group().isdigit():
        return num(tok.group(), i + 1, written=True)
    if word in _ZERO_ALIASES and not started:
        return None, i
    if word in _DIGIT_WORDS:
        if nxt == "hundred":
            return num(_DIGIT_WORDS[word] + "00", i + 2)
        return num(_DIGIT_WORDS[word], i + 1)
    if word in _REPEATS and nxt in _DIGIT_WORDS:
        return num(_DIGIT_WORDS[nxt] * _REPEATS[word], i + 2)
    if word in _TEENS:
        return num(_TEENS[word], i + 1)
    if word in _TENS:
        if nxt == "-" and nxt2 in units:  # "forty-one"
            return num(_TENS[word] + _DIGIT_WORDS[nxt2], i + 3)
        if nxt in units:  # "forty one"
            return num(_TENS[word] + _DIGIT_WORDS[nxt], i + 2)
        return num(_TENS[word] + "0", i + 1)
    return None, i


def _homophone_at(tokens: list[re.Match[str]], i: int) -> tuple[_Num | None, int]:
    """ "for" (4), "to" (2), ... between single digits, as in "4 5 5 for 7": the digit it
    sounds like. The caller knows a single digit precedes."""
    word = tokens[i].group().lower()
    if word not in _HOMOPHONES or i + 1 >= len(tokens):
        return None, i
    after, _ = _number_at(tokens, i + 1, started=True)
    if after is None or len(after.digits) != 1:
        return None, i
    tok = tokens[i]
    return _Num(_HOMOPHONES[word], tok.start(), tok.end(), False, False), i + 1


def _grouped(run: list[_Num]) -> bool:
    """Said as an identifier: several groups, or digit by digit (not one written number)."""
    return len(run) >= 2


def _is_listed(text: str, run: list[_Num]) -> bool:
    """A list of round numbers ("100, 200, 300") or a date ("12/25/2026", "2026-01-05")."""
    if all(x.written and len(x.digits) >= 2 and x.digits.endswith("0") for x in run):
        return True
    if len(run) != 3 or not all(x.written for x in run):
        return False
    seps = {text[a.end_char : b.start_char].strip() for a, b in itertools.pairwise(run)}
    if len(seps) != 1 or not seps <= _DATE_SEPARATORS:
        return False
    sizes = [len(x.digits) for x in run]
    return sizes in ([4, 2, 2], [4, 1, 2], [4, 2, 1], [4, 1, 1]) or (
        max(sizes[:2]) <= 2 and sizes[2] in (2, 4)
    )


def _is_written_group(n: _Num) -> bool:
    return n.written and len(n.digits) > 1


def _groups(run: list[_Num]) -> list[int]:
    groups: list[int] = []
    for n in run:
        if n.boundary_before or not groups:
            groups.append(0)
        groups[-1] += len(n.digits)
    return groups


def _is_quantity(text: str, run: list[_Num]) -> bool:
    """An amount, a thousands-separated count, or a list of years: not an identifier."""
    if text[: run[0].start_char].rstrip()[-1:] in _CURRENCY:
        return True
    if all(n.written for n in run) and 1 < len(run) and sum(len(n.digits) for n in run) <= 9:
        seps = [text[a.end_char : b.start_char] for a, b in itertools.pairwise(run)]
        if all(s == "," for s in seps) and all(len(n.digits) == 3 for n in run[1:]):
            return len(run[0].digits) <= 3
    return all(n.written and _YEAR.fullmatch(n.digits) for n in run)


def _is_ssn(run: list[_Num], digits: str, before: str) -> bool:
    if len(digits) != 9 or digits[:3] in {"000", "666"} or digits[0] == "9":
        return False
    if digits[3:5] == "00" or digits[5:] == "0000":
        return False
    return _groups(run) == [3, 2, 4] or bool(_SSN_CONTEXT.search(before))


def _is_phone(run: list[_Num], digits: str, before: str) -> bool:
    if len(digits) == 11 and digits[0] == "1":
        digits = digits[1:]
    if len(digits) == 10:  # area code 2-9; the exchange is not checked (555-123-4567)
        return digits[0] not in "01"
    if len(digits) == 7 and digits[0] not in "01":
        return _groups(run) == [3, 4] or bool(_PHONE_CONTEXT.search(before))
    return False


def _lead_start(text: str, start_char: int) -> int:
    """Include an opening parenthesis or plus sign right before a number ("(415)", "+1")."""
    while start_char > 0 and text[start_char - 1] in "(+":
        start_char -= 1
    return start_char


def _luhn(digits: str) -> bool:
    total = 0
    for k, ch in enumerate(reversed(digits)):
        d = int(ch)
        if k % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _merge(spans: list[Span]) -> list[Span]:
    """Sorted, overlaps merged into the earlier span's category."""
    out: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start_char, -s.end_char)):
        if out and span.start_char < out[-1].end_char:
            last = out[-1]
            out[-1] = Span(last.category, last.start_char, max(last.end_char, span.end_char))
        else:
            out.append(span)
    return out


async def redact(
    events: AsyncIterable[Transcript | E], redactor: Redactor
) -> AsyncIterator[Transcript | E]:
    """The redaction stage: every transcript, partial or final, leaves it redacted; anything
    else passes through. It sits right after the recognizer, so nothing downstream (store,
    viewers, logs, insights) ever holds the raw text."""
    async for event in events:
        yield redactor.transcript(event) if isinstance(event, Transcript) else event
