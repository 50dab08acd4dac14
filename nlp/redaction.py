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
- 3 or more digits that end the text within three words of a cue ("my card number is
  4556.", "reach me at 415"): the first group of a number read in several breaths;
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

A number read out in groups with pauses reaches the stage as several transcripts, each too
short for the rules above ("1,0001" | "90210" | "01803"). The ``Redactor`` stays stateless
and shared; the stage, ``redact()``, keeps one ``DictationGuard`` per call that remembers who
is dictating and tells the core (``find(dictating=True)``: every run of 3+ digits not after
a currency sign is masked); its docstring has the rules.

The module runs past 400 lines because the number grammar, the rules over it and the
stage's memory of them are one contract; split, neither half could be read alone.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from nlp.numbers import DIGITS, TEENS, TENS
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
    """Which categories to redact (all on by default), the partial digit-run threshold, and
    the audio windows of the redaction stage's dictation memory (``DictationGuard``)."""

    cards: bool = True
    ssns: bool = True
    emails: bool = True
    phones: bool = True
    partial_min_digits: int = 5
    dictation_s: float = 10.0  # a dictation lasts this long after its last masked group
    dictation_cue_s: float = 5.0  # a cue word or a bare digit group arms the next this long

    def __post_init__(self) -> None:
        if self.partial_min_digits < 1:
            raise ValueError("partial_min_digits must be >= 1")
        if self.dictation_s <= 0 or self.dictation_cue_s <= 0:
            raise ValueError("dictation_s and dictation_cue_s must be > 0")


@dataclass(frozen=True, slots=True)
class Span:
    """A detected span of the input, ``[start_char, end_char)``."""

    category: Category
    start_char: int
    end_char: int


# The digits each number word stands for, from nlp.numbers' one table ("twenty" -> "2",
# read before a unit digit as in "twenty one" -> "21"; "oh" and "o" as zero inside a run).
_DIGIT_WORDS = {w: str(n) for w, n in DIGITS.items()} | {"oh": "0", "o": "0"}
_ZERO_ALIASES = {"oh", "o"}  # only inside a run: "Oh, 4000 users" starts no number
_TEENS = {w: str(n) for w, n in TEENS.items()}
_TENS = {w: str(n // 10) for w, n in TENS.items()}
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
# Cues of a number about to be read out, narrower than _ID_CONTEXT (singular nouns: "how
# many accounts" or "the number of reps" asks for a count); they arm the dictation memory.
_DICTATION_CUE = re.compile(
    r"\b(?:card|car|cart|guard|cord|credit|debit|visa|master\s?card|amex|account|a\s?count|"
    r"acct|routing|iban|sort\s?code|zip|postal|policy|id|reference|confirmation|"
    r"number(?!\s+of\b)|digits|pin|cvv|cvc|phone|cell|mobile|extension|fax|social|ssn)\b",
    re.IGNORECASE,
)
_PHONE_VERB = re.compile(r"\b(?:call|calling|reach|dial|text)\b", re.IGNORECASE)
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

    def find(self, text: str, *, is_final: bool = True, dictating: bool = False) -> list[Span]:
        """Non-overlapping spans to mask in ``text``, in order. ``dictating``: the speaker is
        reading out a number (the stage's ``DictationGuard`` knows), so every run of 3 or
        more digits not after a currency sign is masked, as ``[DIGITS]`` when no rule names it."""
        spans: list[Span] = []
        if self.options.emails:
            spans += [Span("email", m.start(), m.end()) for m in _EMAIL_WRITTEN.finditer(text)]
            spans += [Span("email", m.start(), m.end()) for m in _EMAIL_SPOKEN.finditer(text)]
            if not is_final and (m := _EMAIL_PENDING.search(text)):
                spans.append(Span("email", m.start(), m.end()))
        for run in _runs(text, dictating):
            spans += self._classify(text, run, is_final, dictating)
        return _merge(spans)

    def redact(
        self,
        text: str,
        words: Sequence[Word] = (),
        *,
        is_final: bool = True,
        dictating: bool = False,
    ) -> tuple[str, tuple[Word, ...]]:
        """The text and words with every detected span replaced by its placeholder."""
        return (
            self._redact_text(text, is_final, dictating),
            self._redact_words(words, is_final, dictating),
        )

    def transcript(self, transcript: Transcript, *, dictating: bool = False) -> Transcript:
        """A copy of ``transcript`` with its text and words redacted (partials more eagerly)."""
        text, words = self.redact(
            transcript.text, transcript.words, is_final=transcript.is_final, dictating=dictating
        )
        if text == transcript.text and words == transcript.words:
            return transcript
        return dataclasses.replace(transcript, text=text, words=words)

    def _redact_text(self, text: str, is_final: bool, dictating: bool = False) -> str:
        return _apply(text, self.find(text, is_final=is_final, dictating=dictating))

    def _redact_words(
        self, words: Sequence[Word], is_final: bool, dictating: bool
    ) -> tuple[Word, ...]:
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
        spans = self.find(joined, is_final=is_final, dictating=dictating)
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

    def _classify(self, text: str, run: list[_Num], is_final: bool, dictating: bool) -> list[Span]:
        """Spans of one run: leftmost-longest classified windows, then the leftovers."""
        if _after_currency(text, run) or (not dictating and _is_quantity(text, run)):
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
            leftover = self._identifier(text, run, is_final, dictating)
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

    def _identifier(
        self, text: str, run: list[_Num], is_final: bool, dictating: bool
    ) -> Category | None:
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
            or (n >= 3 and (dictating or _cut_off_after_cue(text, run)))
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


def _runs(text: str, dictating: bool = False) -> list[list[_Num]]:
    """Maximal runs of number tokens joined only by separators, fillers and whitespace
    (while dictating, "oh" is a zero even at the start: "oh one eight oh three")."""
    runs: list[list[_Num]] = []
    run: list[_Num] = []
    tokens = list(_TOKEN.finditer(text))
    pending_boundary = False
    i = 0
    while i < len(tokens):
        num, i = _number_at(tokens, i, started=bool(run) or dictating)
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


def _after_currency(text: str, run: list[_Num]) -> bool:
    return text[: run[0].start_char].rstrip()[-1:] in _CURRENCY


def _is_quantity(text: str, run: list[_Num]) -> bool:
    """An amount, a thousands-separated count, or a list of years: not an identifier."""
    if _after_currency(text, run):
        return True
    if all(n.written for n in run) and 1 < len(run) and sum(len(n.digits) for n in run) <= 9:
        seps = [text[a.end_char : b.start_char] for a, b in itertools.pairwise(run)]
        if all(s == "," for s in seps) and all(len(n.digits) == 3 for n in run[1:]):
            return len(run[0].digits) <= 3
    return all(n.written and _YEAR.fullmatch(n.digits) for n in run)


def _cut_off_after_cue(text: str, run: list[_Num]) -> bool:
    """The run ends the text right after an identifier cue ("my card number is 4556."): the
    first group of a number read out in several breaths."""
    if text[run[-1].end_char :].strip(" .,;:!?-"):
        return False
    before = text[max(0, run[0].start_char - 40) : run[0].start_char]
    near = " ".join(before.split()[-3:])
    return bool(_DICTATION_CUE.search(near) or _PHONE_VERB.search(near))


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


# Words that may stand beside the digits of a group read out ("and 7375", "it's 90210").
_CONNECTIVES = frozenset(
    "and then so it it's its is that's the rest next yes yeah ok okay sure dash oh".split()
)
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_NUMERIC = tuple(PLACEHOLDERS[c] for c in ("card", "ssn", "phone", "digits"))
_NEVER = float("-inf")


@dataclass(frozen=True, slots=True)
class _Shape:
    """What the dictation memory reads in one transcript's text."""

    longest: int  # digits in its longest number run
    bare: bool  # mostly digits: a run of 3+ and at most 3 other words, connectives or cues
    alone: bool  # bare, and an identifier even unprompted (DictationGuard)
    plain: bool  # a word that is no number, filler, connective or cue
    cue: bool  # a dictation cue word ("card", "account", "number", ...)


def _shape(text: str) -> _Shape:
    runs = _runs(text)
    longest = max((sum(len(n.digits) for n in run) for run in runs), default=0)
    rest = list(text)
    for run in runs:
        rest[run[0].start_char : run[-1].end_char] = " " * (run[-1].end_char - run[0].start_char)
    others = [w for w in _WORD.findall("".join(rest).lower()) if w not in _FILLERS]
    cue = _DICTATION_CUE.search(text) is not None
    plain = [w for w in others if w not in _CONNECTIVES and not _DICTATION_CUE.fullmatch(w)]
    bare = longest >= 3 and len(others) <= 3 and not plain
    alone = bare and any(_identifier_alone(text, run) for run in runs)
    return _Shape(longest, bare, alone, bool(plain), cue)


def _identifier_alone(text: str, run: list[_Num]) -> bool:
    """A group said on its own that no count or year is: digit by digit ("four one five"),
    or 5+ digits that are not a round figure ("90210", "10,001"; "10,000", "$12345" are)."""
    digits = "".join(n.digits for n in run)
    if len(digits) < 3 or _after_currency(text, run):
        return False
    if all(len(n.digits) == 1 for n in run):
        return True
    years = all(n.written and _YEAR.fullmatch(n.digits) for n in run)
    return len(digits) >= 5 and not digits.endswith("00") and not years


@dataclass(slots=True)
class _Speaker:
    dictating_until_s: float = _NEVER  # a dictation in progress: every 3+ digit run is masked
    group_until_s: float = _NEVER  # a bare group left readable: the next bare one is dictation


class DictationGuard:
    """The redaction stage's memory of one call: who is reading out a number.

    A number dictated in groups with pauses reaches the stage as several transcripts, each
    too short for the stateless ``Redactor`` ("1,0001" | "90210" | "01803"). Stored events
    cannot be changed later, so each transcript is decided as it passes, from what came
    before, per speaker, in audio time:

    - *bare* utterances (a run of 3+ digits, at most three other words such as "and",
      "it's", "then", or a cue) are the groups of a dictation. A bare partial is always
      masked (its final decides). A bare final is masked when a cue word ("card",
      "account", "number", "phone", ... as ``_DICTATION_CUE``; said by either speaker) or
      another bare group of that speaker ended within ``dictation_cue_s`` before it, or
      when it is an identifier by itself: said digit by digit, or 5+ digits that are not a
      round figure ("90210", "10,001"; "10,000" is not). A lone "2019." or "450." after an
      ordinary line stays readable (a year, a count): it only arms the speaker's next bare
      group, unless another speaker asks a question (without a cue) in between;
    - once a final of the speaker had a number masked (by these rules or by the core's),
      the speaker is dictating: every run of 3+ digits in their transcripts, partial or
      final, is masked (``Redactor.find(dictating=True)``), until their final with ordinary
      words and no such run, or ``dictation_s`` of audio after their last masked group (a
      line of ordinary words with a number in it is masked, but is no group: it does not
      extend the dictation). The other speaker's lines neither end nor extend it.
    - a line whose speaker is ``unknown`` (a mixed channel the diarizer could not decide, and
      every partial there) could be either speaker's: it is judged by every speaker's memory,
      and a named speaker's line by the unknown one's as well as their own.

    What it cannot do: take back a first group of 3-4 digits said bare with no cue before
    it (it reads as a year or a count); the groups after it are masked.
    """

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self._speakers: dict[str, _Speaker] = {}
        self._cue_until_s = _NEVER

    def transcript(self, transcript: Transcript) -> Transcript:
        """``transcript`` redacted, in the light of what this call's speakers said before."""
        o = self.redactor.options
        state = self._speakers.setdefault(transcript.speaker, _Speaker())
        shape = _shape(transcript.text)
        at_s = transcript.start_s
        # On a mixed line an "unknown" line may be anyone's: it reads every speaker's memory,
        # and a named speaker's line reads the unknown one's too.
        kin = [
            s
            for who, s in self._speakers.items()
            if s is state or "unknown" in (who, transcript.speaker)
        ]
        dictating = at_s <= max(s.dictating_until_s for s in kin)
        armed = shape.cue or at_s <= max(self._cue_until_s, *(s.group_until_s for s in kin))
        if shape.bare and (armed or shape.alone or not transcript.is_final):
            dictating = True
        out = self.redactor.transcript(transcript, dictating=dictating)
        if shape.cue:
            self._cue_until_s = max(self._cue_until_s, transcript.end_s + o.dictation_cue_s)
        if not transcript.is_final:
            return out  # a partial's words may still change: only finals move the state
        if shape.plain and not shape.cue and transcript.text.rstrip().endswith("?"):
            for other in self._speakers.values():  # a new question: the next answer is its own
                if other is not state:
                    other.group_until_s = _NEVER
        if _numeric_masks(out.text) > _numeric_masks(transcript.text):
            if shape.bare or at_s > state.dictating_until_s:  # a group, or a new number
                state.dictating_until_s = transcript.end_s + o.dictation_s
            state.group_until_s = _NEVER
        elif shape.bare:
            state.group_until_s = transcript.end_s + o.dictation_cue_s
        elif shape.plain:  # ordinary words: no bare group is pending; no digits: it is over
            state.group_until_s = _NEVER
            if shape.longest < 3:
                state.dictating_until_s = _NEVER
        return out


def _numeric_masks(text: str) -> int:
    return sum(text.count(p) for p in _NUMERIC)


async def redact(
    events: AsyncIterable[Transcript | E], redactor: Redactor
) -> AsyncIterator[Transcript | E]:
    """The redaction stage: every transcript, partial or final, leaves it redacted; anything
    else passes through. It sits right after the recognizer, so nothing downstream (store,
    viewers, logs, insights) ever holds the raw text. Its ``DictationGuard`` is this call's
    own (the ``Redactor`` is shared): a number read out in groups is masked across them."""
    guard = DictationGuard(redactor)
    async for event in events:
        yield guard.transcript(event) if isinstance(event, Transcript) else event
