"""Live coaching end to end: espeak-ng calls through the real server, cards and scores back.

Scripts use short, common words that tiny.en hears well on espeak-ng speech; each customer
line was checked with ``cuecard analyze`` on the text tiny.en actually gives. Cards are matched
to the scripted turn that triggered them through their evidence times (the rendered call's
ground truth), so a card of the wrong type on the wrong line fails the test.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clients.callgen import RenderedCall, Spoken, Turn, render
from clients.simulator import SimOptions, simulate
from tests.conftest import REPO, ServerProcess

pytestmark = [pytest.mark.model, pytest.mark.slow]

PRICE = "Honestly, the price is way too high for us."
TIMING = "We can't start this until next year."
AUTHORITY = "I need to check with my boss first."
COMPETITOR = "We already use Salesforce and we are happy with it."
TRUST = "I'm not sure we can trust a small company with our data."

# The card kinds each objection may give: Salesforce has a battlecard, which replaces the
# generic competitor-objection card.
OBJECTION_KINDS: dict[str, set[str]] = {
    PRICE: {"objection_price"},
    TIMING: {"objection_timing"},
    AUTHORITY: {"objection_authority"},
    COMPETITOR: {"competitor", "objection_competitor"},
    TRUST: {"objection_trust"},
}


def rep(text: str) -> Turn:
    """A rep line at a calm pace: espeak-ng's 165 wpm measures ~200 and raises fast_speech,
    whose card would take one of the minute's four card slots from an objection."""
    return Turn("rep", text, rate_wpm=140)


# One objection every ~16 s, with a neutral customer line between, so the deck's limit of four
# new cards a minute lets every objection through and the talk stays balanced.
OBJECTION_CALL = (
    rep("Thanks for taking my call today. I would like to show you our coaching tool."),
    Turn("customer", PRICE),
    rep("I understand. Most teams see the cost come back within one quarter of the year."),
    Turn("customer", "We have about forty people on the sales floor."),
    rep("Great. When would you want your team to start using it?"),
    Turn("customer", TIMING),
    rep("That makes sense. What would need to change before then, do you think?"),
    Turn("customer", "Our reps make about fifty calls a day."),
    rep("Who else would look at a tool like this with you?"),
    Turn("customer", AUTHORITY),
    rep("Of course. What does your boss care about most when you buy new tools?"),
    Turn("customer", "I see what you mean."),
    rep("And what are you using on your calls today?"),
    Turn("customer", COMPETITOR),
    rep("Many of our customers use it too. We help the rep during the call itself."),
    Turn("customer", "Okay, go on."),
    rep("Everything runs on your own servers, in your own building."),
    Turn("customer", TRUST),
    rep("That is fair. Your data never leaves your network."),
)

BUYING_SIGNALS = (
    "How long would it take to get all thirty people started?",
    "If we sign this month, when could we start?",
    "Can you send over the contract so our legal team can review it?",
)
NEXT_STEP = "Please send me a proposal by Friday. Let's set up a call next Tuesday with our VP."
WARM_CALL = (
    Turn("rep", "Hi, thanks for joining. How is your week going?"),
    Turn(
        "customer",
        "Pretty good, thanks. We have been looking for a tool like this for a while now.",
    ),
    Turn("rep", "Great to hear."),
    Turn("customer", BUYING_SIGNALS[0]),
    Turn("rep", "About two weeks."),
    Turn("customer", BUYING_SIGNALS[1]),
    Turn("rep", "On the first of next month."),
    Turn("customer", BUYING_SIGNALS[2]),
    Turn("rep", "Yes, today."),
    Turn("customer", NEXT_STEP),
    Turn("rep", "Perfect, I will send the invite for Tuesday."),
)

PITCH = (
    "Let me tell you a little about how our product helps sales teams like yours every single day.",
    "When your reps are on a call, the system listens to both sides and writes down what is said.",
    "It then looks for the moments that matter, like a question about price or a new competitor.",
    "For each of those moments, the rep sees a short card with a few good ways to answer.",
    "The cards show up within a second, so the rep can use them before the customer stops talking.",
    "At the end of the call, the notes and next steps are sent straight to your sales system.",
    "Managers can see which cards helped the most, and they can change the advice at any time.",
    "Most teams are up and running in one afternoon, and the whole thing runs on your own servers.",
    "We also keep a record of every call, so new reps can learn from the best calls of the week.",
    "And because it is open source, your engineers can read every line and change what they need.",
)
# About a minute of rep speech: ten sentences 0.8 s apart, far under the 5 s gap that would end
# the rep's turn (dynamics.monologue_max_gap_s), each its own utterance for the segmenter.
MONOLOGUE_CALL = (
    Turn("rep", "Hi, thanks for taking the time to talk with me today."),
    Turn("customer", "Sure, go ahead and tell me about it."),
    *(Turn("rep", sentence, gap_s=0.8) for sentence in PITCH),
    Turn("customer", "Okay, that sounds interesting."),
)


@dataclass(frozen=True)
class Replayed:
    call: RenderedCall
    events: list[dict[str, Any]]


@pytest.fixture(scope="module")
def replayed(
    server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Replayed]:
    """The three calls replayed at the same time, in real time (1.0x) as a softphone would:
    tick-driven alerts assume transcription keeps up with the audio, which a replay at full
    speed does not give. Concurrency keeps the wall time near the longest call's length."""
    scripts = {"objections": OBJECTION_CALL, "warm": WARM_CALL, "monologue": MONOLOGUE_CALL}
    folder = tmp_path_factory.mktemp("coaching")
    calls = {name: render(turns) for name, turns in scripts.items()}
    for name, call in calls.items():
        call.write(folder / f"{name}.wav")

    async def replay_all() -> list[list[dict[str, Any]]]:
        results = await asyncio.gather(
            *(
                simulate(
                    folder / f"{name}.wav",
                    SimOptions(server=server.ws, token=server.token, speed=1.0),
                )
                for name in calls
            )
        )
        return [r.events for r in results]

    out = {}
    for (name, call), events in zip(calls.items(), asyncio.run(replay_all()), strict=True):
        assert events[-1]["type"] == "status" and events[-1]["state"] == "ended", events[-1]
        out[name] = Replayed(call, events)
    return out


def issued(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cards issued and not withdrawn later (a provisional card the final did not confirm)."""
    withdrawn = {e["card_id"] for e in events if e["type"] == "card" and e["state"] == "withdrawn"}
    return [
        e
        for e in events
        if e["type"] == "card" and e["state"] == "issued" and e["card_id"] not in withdrawn
    ]


def scores(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "score"]


def turn_of(card: dict[str, Any], call: RenderedCall) -> Spoken:
    """The scripted turn the card's evidence was said in (largest overlap, same speaker)."""
    ev = card["evidence"]
    best = max(
        (u for u in call.utterances if u.speaker == ev["speaker"]),
        key=lambda u: min(u.end_s, ev["end_s"]) - max(u.start_s, ev["start_s"]),
    )
    assert min(best.end_s, ev["end_s"]) > max(best.start_s, ev["start_s"]), (card, best)
    return best


def transcript(events: list[dict[str, Any]]) -> str:
    """The finals, for failure messages: what tiny.en actually heard."""
    return "\n".join(
        f"{e['speaker']:>8} {e['start_s']:6.2f} {e['text']}"
        for e in events
        if e["type"] == "transcript" and e["is_final"]
    )


def test_objection_call_gives_objection_cards_and_a_falling_score(
    replayed: dict[str, Replayed],
) -> None:
    """Price, timing, authority, competitor and trust objections each get their own card type;
    no other customer line gets a card; the lead score ends below where it started."""
    call, events = replayed["objections"].call, replayed["objections"].events
    heard = transcript(events)
    carded: set[str] = set()
    for card in issued(events):
        if card["evidence"] is None or card["evidence"]["speaker"] != "customer":
            continue
        turn = turn_of(card, call)
        assert card["kind"] in OBJECTION_KINDS.get(turn.text, set()), (card, heard)
        # a provisional card is stamped with the end of its partial, before the turn's end
        assert turn.start_s < card["audio_end_s"] <= turn.end_s + 0.6, (card, turn)
        carded.add(turn.text)
    assert len(carded) >= 4, (carded, heard)  # one objection may be misheard by tiny.en
    score = scores(events)
    assert score[-1]["score"] < score[0]["score"] - 5, [s["score"] for s in score]
    objection_reasons = [
        r for s in score for r in s["reasons"] if r.startswith("-") and "objection" in r
    ]
    assert len(objection_reasons) >= 4, objection_reasons


def test_warm_call_gives_buying_signal_and_next_step_cards_and_a_rising_score(
    replayed: dict[str, Replayed],
) -> None:
    """Buying signals give a buying-signal card, the proposal and meeting a next-step card,
    no objection card appears, and the lead score ends well above where it started."""
    call, events = replayed["warm"].call, replayed["warm"].events
    heard = transcript(events)
    cards = issued(events)
    kinds = {c["kind"] for c in cards}
    assert not any(k.startswith("objection") for k in kinds), (kinds, heard)
    [signal] = [c for c in cards if c["kind"] == "buying_signal"]
    assert turn_of(signal, call).text in BUYING_SIGNALS, (signal, heard)
    next_steps = [c for c in cards if c["kind"] == "next_step"]
    assert next_steps, (kinds, heard)
    assert turn_of(next_steps[0], call).text in (NEXT_STEP, WARM_CALL[-1].text)
    score = scores(events)
    assert score[-1]["score"] > score[0]["score"] + 20, [s["score"] for s in score]
    reasons = [r for s in score for r in s["reasons"]]
    assert sum(r.startswith("+") and "buying signal" in r for r in reasons) >= 2, reasons
    assert any(r.startswith("+") and "next step" in r for r in reasons), reasons


def test_a_minute_of_rep_talk_raises_a_monologue_card_during_the_turn(
    replayed: dict[str, Replayed],
) -> None:
    """A rep's minute-long pitch raises a monologue card 45 s into the turn, and it reaches
    the rep's socket while the rep is still talking."""
    call, events = replayed["monologue"].call, replayed["monologue"].events
    pitch = [u for u in call.utterances if u.text in PITCH]
    turn_start_s, turn_end_s = pitch[0].start_s, pitch[-1].end_s
    [card] = [c for c in issued(events) if c["kind"] == "monologue"]
    assert card["audio_end_s"] == pytest.approx(turn_start_s + 45.0, abs=1.0), card
    assert card["audio_end_s"] < turn_end_s - 10.0
    assert card["received_s"] < turn_end_s, card  # on screen before the rep stops talking


def test_simulate_json_prints_cards_with_audio_end_and_received_times(
    server: ServerProcess, tmp_path: Path
) -> None:
    """``cuecard simulate FILE --json`` prints one JSON event per line; each card carries
    ``audio_end_s``, ``received_s`` and their difference ``latency_s``, and none arrives
    before the speech that triggered it ended."""
    call = render((Turn("rep", "What do you think so far?"), Turn("customer", PRICE)))
    path = tmp_path / "call.wav"
    call.write(path)
    cli = [sys.executable, "-m", "server.cli", "simulate", str(path), "--json", "--speed", "1"]
    proc = subprocess.run(
        [*cli, "--server", server.ws, "--token", server.token],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    cards = [e for e in events if e["type"] == "card"]
    assert [c["kind"] for c in cards if c["state"] == "issued"] == ["objection_price"], events
    price_end_s = call.utterances[1].end_s
    for c in cards:
        assert call.utterances[1].start_s < c["audio_end_s"] <= price_end_s + 0.6
        assert c["received_s"] >= c["audio_end_s"], c  # causal: after the words were spoken
        assert c["latency_s"] == pytest.approx(c["received_s"] - c["audio_end_s"], abs=1e-3)


# The customer speaks every ~40 s: never 45 s of silence. Replayed as fast as the socket takes
# it, the audio runs far ahead of the recognizer; the coach's clock must wait for the words.
PAUSED_CALL = (
    rep("Thanks for taking my call today, I will share my screen now."),
    Turn("customer", "Sure, go ahead, we can see it."),
    Turn("customer", "Yes, that part looks clear to us.", gap_s=40.0),
    Turn("customer", "Okay, and what happens after that step?", gap_s=40.0),
    Turn("rep", "After that, the report goes to your manager.", gap_s=1.0, rate_wpm=140),
)


async def test_no_silence_alert_while_the_customer_words_are_still_in_the_recognizer(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Alerts that time alone raises (customer silence) follow the transcribed audio, not the
    received audio: a replay far faster than real time gets no silence alert."""
    rendered = render(PAUSED_CALL)
    path = tmp_path / "paused.wav"
    rendered.write(path)
    result = await simulate(path, SimOptions(server=server.ws, token=server.token, speed=0))
    customer_finals = [
        e
        for e in result.events
        if e["type"] == "transcript" and e["is_final"] and e["speaker"] == "customer"
    ]
    assert len(customer_finals) >= 3  # the words were there to be waited for
    kinds = [e["kind"] for e in result.events if e["type"] == "card"]
    assert "customer_silence" not in kinds, kinds
