"""The wire contract: every event type survives to_wire -> JSON -> from_wire unchanged, and a
malformed or unknown event is a clear WireError."""

from __future__ import annotations

import json
from datetime import date

import pytest

from audio.prosody import Indicator, Prosody
from guidance.cards import Card, Evidence
from guidance.coach import CardActionRejected
from guidance.score import Score
from guidance.summary import BuiltinSummarizer
from nlp.insight import Entity, Insight
from nlp.transcript import Transcript, Word
from server.wire import WIRE_EVENTS, Status, WireError, WireEvent, from_wire, to_wire

TEXT = "It is too expensive, can you send a quote by Friday?"
TRANSCRIPT = Transcript(
    "customer-3", "customer", True, TEXT, 12.5, 15.25,
    (Word("It", 12.5, 12.625, 0.875), Word("is", 12.625, 12.75, 0.5)),
)  # fmt: skip
PROSODY = Prosody(
    181.5, 4.25, 1.5, -21.75, 162.0, 0.125, {"energy": 0.5, "rate": -1.25},
    {"engagement": Indicator(0.375, {"energy": 0.1}), "stress": Indicator(-0.25, {})},
)  # fmt: skip
INSIGHT = Insight(
    "customer-3", "customer", True, TEXT, 12.5, 15.25, "objection_price", 0.875,
    {"objection_price": 0.875, "other": 0.125},
    (Entity("date", "by Friday", "2026-11-27", 42, 51),), -0.5, PROSODY,
)  # fmt: skip
CARD = Card(
    "card-2", "updated", "objection_price", 90, "Price objection", "Anchor on value.",
    ("What would it be worth?", "Compare to the cost of churn."),
    Evidence(TEXT, "customer", 12.5, 15.25), 15.25, provisional=True, times_raised=2,
    utterance_id="customer-3",
)  # fmt: skip
ALERT = Card("card-3", "issued", "monologue", 40, "Let them talk", "", ("Ask a question",),
             None, 30.0)  # fmt: skip
EVENTS: list[WireEvent] = [
    TRANSCRIPT,
    Transcript("rep-0", "rep", False, "hi", 0.0, 0.5),
    INSIGHT,
    Insight("rep-1", "rep", False, "ok", 1.0, 2.0, "other", 0.0, {}, (), 0.0, None),
    CARD,
    ALERT,
    Score(61.5, -2.5, ("price objection raised", "engaged customer"), 15.25),
    Status("degraded", "insight failed", 20.0),
    CardActionRejected(None, "unknown card id"),
]


async def _summary() -> WireEvent:
    events = [TRANSCRIPT, INSIGHT, CARD, Score(61.5, -2.5, ("x",), 15.25)]
    return await BuiltinSummarizer().summarize("c1", events, date(2026, 11, 20))


async def test_every_event_type_round_trips() -> None:
    """Each wire type, nested values included, comes back equal from its JSON (with seq)."""
    events = [*EVENTS, await _summary()]
    assert {type(e) for e in events} == set(WIRE_EVENTS)
    for seq, event in enumerate(events, 1):
        data = {**json.loads(json.dumps(to_wire(event))), "seq": seq}
        assert from_wire(data) == event, type(event).__name__


def test_audio_never_leaves_the_process() -> None:
    """A transcript's audio is not on the wire; read back, it is absent (None)."""
    wire = to_wire(TRANSCRIPT)
    assert "audio" not in wire and "audio_start_s" not in wire
    assert isinstance(back := from_wire(wire), Transcript) and back.audio is None


def test_keys_no_field_names_are_ignored() -> None:
    """A key a newer server added does not stop an older reader."""
    assert from_wire({**to_wire(ALERT), "colour": "red"}) == ALERT


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"type": "telepathy"}, "unknown wire event type 'telepathy'"),
        ({"state": "live"}, "unknown wire event type None"),
        ({**to_wire(Status("live", "", 0.0)), "state": "asleep"}, "malformed status event: state"),
        ({k: v for k, v in to_wire(CARD).items() if k != "title"}, "malformed card event: title"),
        ({**to_wire(INSIGHT), "entities": [{"kind": "date"}]},
         "malformed insight event: entities.0.text"),
        ({**to_wire(TRANSCRIPT), "words": [{"text": "x", "start_s": "soon"}]},
         "malformed transcript event: words.0.start_s"),
    ],
)  # fmt: skip
def test_malformed_events_are_clear_errors(data: dict[str, object], message: str) -> None:
    """An unknown type or a missing or mistyped field (nested too) names what is wrong."""
    with pytest.raises(WireError, match=message.replace(".", r"\.")):
        from_wire(data)


def test_to_wire_refuses_what_is_no_event() -> None:
    """Only wire event types are serialised."""
    with pytest.raises(TypeError):
        to_wire(Word("x", 0.0, 1.0, 1.0))  # type: ignore[arg-type]
