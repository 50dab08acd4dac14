"""English number words, the one table the text rules share (entities, dates, redaction).

``words_to_number("two hundred and fifty")`` is 250.0; digits may be mixed in ("1.5
million"). The tables are read-only mappings from the lowercase word to its value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

DIGITS: Mapping[str, int] = MappingProxyType(
    {w: k for k, w in enumerate("zero one two three four five six seven eight nine".split())}
)
TEENS: Mapping[str, int] = MappingProxyType(
    {
        w: 10 + k
        for k, w in enumerate(
            "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
        )
    }
)
TENS: Mapping[str, int] = MappingProxyType(
    {
        w: 20 + 10 * k
        for k, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())
    }
)
# Every word that is a number below 100 by itself; "a"/"an" count as one ("a week").
UNITS: Mapping[str, int] = MappingProxyType({**DIGITS, **TEENS, **TENS, "a": 1, "an": 1})
SCALES: Mapping[str, int] = MappingProxyType(
    {
        "hundred": 100,
        "thousand": 1_000,
        "grand": 1_000,
        "k": 1_000,
        "million": 1_000_000,
        "mil": 1_000_000,
        "m": 1_000_000,
        "billion": 1_000_000_000,
        "bn": 1_000_000_000,
    }
)
ORDINALS: Mapping[str, int] = MappingProxyType(
    {
        w: k + 1
        for k, w in enumerate(
            "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
            "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth "
            "twentieth".split()
        )
    }
    | {"thirtieth": 30}
)


def words_to_number(text: str) -> float | None:
    """The value of a spoken number ("twenty five", "two hundred and fifty", "1.5 million",
    "a thousand"); None if any word is not part of a number."""
    total, current = 0.0, 0.0
    seen = False
    for tok in re.split(r"[\s-]+", text.lower().replace(",", "")):
        if tok in ("", "and"):
            continue
        if re.fullmatch(r"\d+(?:\.\d+)?", tok):
            current += float(tok)
        elif tok in UNITS:
            current += UNITS[tok]
        elif tok == "hundred":
            current = (current or 1) * 100
        elif tok in SCALES:
            total += (current or 1) * SCALES[tok]
            current = 0.0
        else:
            return None
        seen = True
    return total + current if seen else None
