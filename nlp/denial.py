"""Concerns the speaker says they do not have: "the price is not really an issue for us".

Sentence embeddings hardly see negation: all-MiniLM puts "the price is not an issue" next to
"the price is an issue", and the intent head followed it (objection_price at 0.99 on the
scripted calls, three false cards of twelve). This sync core finds a *denied concern*: a
concern topic (price, timing, approval, security) whose clause says it is no problem, and
``without_denied`` takes that objection off the intent result, so no card, score change or
summary line claims an objection the customer just waved away.

Only explicit denials count ("X is not an issue", "X isn't a problem", "no concerns about X",
"not worried about X", "X doesn't matter", "X is fine"); hedges and conditions ("if it's not
too expensive", "not yet", "the price is not the only issue") are left to the classifier.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from nlp.insight import IntentResult
from nlp.intent import FALLBACK_LABEL

# The words that name each objection's topic, as a regex alternative.
TOPICS: Mapping[str, str] = {
    "objection_price": r"price|prices|pricing|cost|costs|money|budget|budgets|fee|fees|"
    r"spend|expense|the investment|affordability",
    "objection_timing": r"timing|the timeline|time|schedule|the deadline",
    "objection_authority": r"approval|approvals|sign[- ]off|the decision|procurement",
    "objection_trust": r"security|privacy|compliance|the data|data protection|reliability",
}

_PROBLEM = (
    r"(?:an? |the )?(?:real |big |huge |major |serious |main )?"
    r"(?:issue|issues|problem|problems|concern|concerns|worry|worries|obstacle|object|"
    r"deal[- ]?breaker|sticking point|factor|constraint|barrier)"
)
_SOFT = (
    r"(?:really |actually |even |necessarily |honestly |so much |that much |much of |too much of )?"
)
_NOT = r"(?:is not|isn't|is no|'s not|s not|are not|aren't|are no|was not|wasn't|won't be|will not be|isn't really)"
_ADVERB = r"(?:really |actually |honestly |also |just )?"
_OKAY = r"(?:fine|okay|ok|no problem|not a problem|reasonable|fair|good|great|manageable)"
# "not the only issue", "not the main problem": the concern is still there.
_STILL = re.compile(r"\bnot (?:the|our) (?:only|main|biggest|real|whole)\b", re.IGNORECASE)


def _patterns(topic: str) -> tuple[re.Pattern[str], ...]:
    t = rf"(?:the |our |your |that |this )?(?:{topic})"
    forms = (
        # "the price is not really an issue", "price isn't a concern", "money is no object"
        rf"\b{t} {_ADVERB}{_NOT} {_SOFT}{_PROBLEM}\b",
        # "price is fine", "the cost is reasonable": a flat all-clear (no "but"/"if" after it)
        rf"\b{t} (?:is|'s|s) {_ADVERB}{_OKAY}(?:\s*[.,!]|\s*$| for us| with us| with me| by me)",
        # "no problem with the price", "no concerns about security"
        rf"\bno {_SOFT}(?:issue|issues|problem|problems|concern|concerns|worries) "
        rf"(?:with|about|on|around|regarding) {t}\b",
        # "not worried about the price", "I'm not too concerned with the cost"
        rf"\b(?:not|n't|never) {_SOFT}(?:too |very |overly |especially )?"
        rf"(?:worried|concerned|bothered|fussed|hung up) (?:about|with|by|on) {t}\b",
        # "the price doesn't really matter", "cost isn't a factor"
        rf"\b{t} (?:doesn't|does not|don't|do not) {_SOFT}(?:matter|bother us|worry us|scare us)\b",
    )
    return tuple(re.compile(f, re.IGNORECASE) for f in forms)


_COMPILED = {label: _patterns(topic) for label, topic in TOPICS.items()}


def denied_concerns(text: str) -> frozenset[str]:
    """The objection labels whose topic ``text`` explicitly says is no concern."""
    flat = " ".join(text.replace("’", "'").split())
    if _STILL.search(flat):
        return frozenset()
    return frozenset(
        label for label, patterns in _COMPILED.items() if any(p.search(flat) for p in patterns)
    )


def without_denied(result: IntentResult, denied: frozenset[str]) -> IntentResult:
    """``result`` with the denied labels' probability moved to ``other``; the label becomes the
    top of what remains. A result whose label is not denied is returned as it is."""
    if result.label not in denied:
        return result
    scores = dict(result.scores)
    moved = sum(scores.get(label, 0.0) for label in denied)
    for label in denied:
        scores[label] = 0.0
    scores[FALLBACK_LABEL] = scores.get(FALLBACK_LABEL, 0.0) + moved
    label = max(scores, key=lambda k: scores[k])
    return IntentResult(label=label, confidence=scores[label], scores=scores)
