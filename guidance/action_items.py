"""Action items: the commitments and requests spoken in a call, with owner and due date.

Commitments in one sentence: "I'll / I will / we'll / let me / I'm going to <action verb>
..." is owned by the speaker; "can you / could you / would you / please <action verb> ..." by
the other party, when it has a due date or asks for a deliverable (send, share, sign,
schedule...): other requests are questions answered in the call. The item is the verb
phrase, with a pronoun right after the verb and the due-date phrase removed ("I'll send you
the proposal by Friday" -> "send the proposal").

The due date is the sentence's first date phrase, resolved against the call date by
``nlp.dates`` (the resolver of the date entities too, so the two always agree: "by Friday"
said on a Friday is the next Friday). A date entity of the utterance's insight that lies in
the sentence is taken as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Literal

from guidance.turns import Turn, sentences
from nlp.dates import find_dates

Owner = Literal["rep", "customer"]


@dataclass(frozen=True, slots=True)
class ActionItem:
    owner: Owner
    item: str
    due: str | None  # ISO date
    due_text: str | None  # the words that said it, e.g. "by Friday"
    utterance_id: str
    text: str  # the sentence it came from


_VERBS = (
    "send|share|email|e-mail|mail|forward|follow up|call|ring|phone|set up|schedule|book|arrange|"
    "prepare|draft|write|put together|get back|get|review|check|talk|speak|discuss|loop in|"
    "bring|introduce|confirm|circulate|run|sign|provide|look into|update|create|ask|sync|demo|"
    "show|walk|reach out|connect|meet|finalize|finalise|gather|test|try|install|approve|present|"
    "invite|order|pay|submit|complete|fill out|figure out|sort out|organize|organise|compile|"
    "pull together|reserve|clarify|verify|double-check|coordinate|renew"
)
_SELF = re.compile(
    r"\b(?:i|we)(?:'ll| will| shall|'m going to| am going to|'re going to| are going to|"
    r"'m gonna)\s+(?:also |then |definitely |just |quickly |happily |certainly )?"
    rf"(?P<act>(?:{_VERBS})\b.*)|\blet me\s+(?P<act2>(?:{_VERBS})\b.*)",
    re.IGNORECASE,
)
_OTHER = re.compile(
    rf"\b(?:can you|could you|would you|will you|please)\s+(?:also |just )?"
    rf"(?P<act>(?:{_VERBS})\b.*)",
    re.IGNORECASE,
)
_DELIVERABLE = re.compile(
    r"(send|share|e-?mail|forward|loop in|introduce|confirm|sign|submit|fill out|schedule|"
    r"set up|book)\b",
    re.IGNORECASE,
)
# Left at the end once the due phrase is cut out, also when ASR misheard the preposition
# (tiny.en on espeak-ng: "by Friday" -> "my Friday" / "buy Friday", "by end of day" -> "I end
# the day"). An item never ends in one of these words.
_DANGLING = re.compile(
    r"(?:[\s,]+(?:by|buy|bye|on|before|until|for|the|my|i|at|in|no later than))+$", re.IGNORECASE
)
_PRONOUN_AFTER_VERB = re.compile(
    rf"^((?:{_VERBS}))\s+(?:you|me|us|them|him|her)\b\s*", re.IGNORECASE
)


def action_items(turns: list[Turn], call_date: date) -> list[ActionItem]:
    """Commitments and requests, one per sentence, with owner and resolved due date."""
    out: list[ActionItem] = []
    for t in turns:
        if t.speaker not in ("rep", "customer"):
            continue
        for start, sent in sentences(t.text):
            item = _item(t, start, sent, call_date)
            if item is not None:
                out.append(item)
    return out


def _item(t: Turn, start: int, sent: str, call_date: date) -> ActionItem | None:
    other: Owner = "customer" if t.speaker == "rep" else "rep"
    m = _SELF.search(sent)
    owner: Owner = "rep" if t.speaker == "rep" else "customer"
    if m is None:
        m, owner = _OTHER.search(sent), other
    if m is None:
        return None
    group = "act" if m.group("act") is not None else "act2"
    act = m.group(group)
    # the date inside the commitment first: "Thanks for your time today, I will send the
    # proposal by Friday" is due Friday (whether Whisper wrote a comma or a full stop there)
    at, length = start + m.start(group), m.end(group) - m.start(group)
    due = (
        _entity_due(t, at, length)
        or _said_due(act, call_date)
        or _entity_due(t, start, len(sent))
        or _said_due(sent, call_date)
    )
    if owner == other and due is None and not _DELIVERABLE.match(act):
        return None  # "could you walk me through it?" is a question, not a task
    if due is not None:
        act = act.replace(due[1], " ")
    item = _PRONOUN_AFTER_VERB.sub(r"\1 ", act)
    item = re.sub(r"\s+", " ", item).strip(" ,;:.!?")
    item = _DANGLING.sub("", item)
    if not item:
        return None
    return ActionItem(
        owner, item, due[0] if due else None, due[1] if due else None, t.utterance_id, sent
    )


def _entity_due(t: Turn, start: int, length: int) -> tuple[str, str] | None:
    for e in t.dates:
        if start <= e.start_char and e.end_char <= start + length and e.text:
            return e.value, e.text
    return None


def _said_due(sentence: str, call_date: date) -> tuple[str, str] | None:
    found = find_dates(sentence, call_date)
    return (found[0].value.isoformat(), found[0].text) if found else None
