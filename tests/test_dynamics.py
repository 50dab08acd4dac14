"""Conversation-dynamics alerts fire once, when their condition becomes true, at the right time."""

from __future__ import annotations

import pytest

from guidance.cards import Card
from guidance.coach import Coach
from guidance.dynamics import Alert, Dynamics
from guidance.playbook import DynamicsSettings, load_playbook
from guidance.score import load_score_model
from nlp.insight import Indicator, Insight, Prosody
from nlp.transcript import Transcript, Word

SETTINGS = DynamicsSettings(closing_phrases=("thanks for your time",))


def words(text: str, start_s: float, end_s: float) -> tuple[Word, ...]:
    parts = text.split()
    step = (end_s - start_s) / len(parts)
    return tuple(
        Word(w, round(start_s + k * step, 3), round(start_s + (k + 1) * step, 3), 0.9)
        for k, w in enumerate(parts)
    )


def utt(
    speaker: str, start_s: float, end_s: float, text: str = "", *, final: bool = True, uid: str = ""
) -> Transcript:
    text = text or " ".join(["word"] * max(1, round((end_s - start_s) * 2.5)))
    return Transcript(
        uid or f"{speaker}-{start_s}",
        speaker,  # type: ignore[arg-type]
        final,
        text,
        start_s,
        end_s,
        words(text, start_s, end_s),
    )


def customer_insight(
    label: str,
    text: str,
    start_s: float,
    end_s: float,
    sentiment: float = 0.0,
    engagement: float | None = None,
) -> Insight:
    prosody = None
    if engagement is not None:
        indicators = {"engagement": Indicator(engagement, {})}
        prosody = Prosody(None, None, None, -20.0, None, 0.1, {}, indicators)
    return Insight(
        f"customer-{start_s}",
        "customer",
        True,
        text,
        start_s,
        end_s,
        label,
        0.9,
        {},
        (),
        sentiment,
        prosody,
    )


def feed(dyn: Dynamics, items: list[Transcript | Insight | float]) -> list[Alert]:
    """Feed transcripts, insights and ticks (floats) in order; all alerts raised."""
    out: list[Alert] = []
    for item in items:
        if isinstance(item, Transcript):
            out += dyn.observe_transcript(item)
        elif isinstance(item, Insight):
            out += dyn.observe_insight(item)
        else:
            out += dyn.tick(item)
    return out


def rep_minute(start_s: float = 10.0) -> list[Transcript | Insight | float]:
    """The rep talks for 60 s: six 9.5 s utterances with partials, ticks every 0.5 s."""
    items: list[Transcript | Insight | float] = []
    for k in range(6):
        s = start_s + 10.0 * k
        for part_end in (s + 3.0, s + 6.0):
            items.append(utt("rep", s, part_end, final=False, uid=f"r{k}"))
        items.append(utt("rep", s, s + 9.5, uid=f"r{k}"))
        items.append(s + 9.5)
    return items


def test_monologue_fires_once_at_the_moment_it_became_true() -> None:
    """60 s of rep speech gives one monologue alert at turn start + 45 s."""
    alerts = [a for a in feed(Dynamics(SETTINGS), rep_minute(10.0)) if a.kind == "monologue"]
    assert [(a.kind, a.audio_end_s) for a in alerts] == [("monologue", 55.0)]


def test_monologue_card_arrives_during_the_turn() -> None:
    """Through the coach, the monologue card is issued before the rep's turn ends."""
    coach = Coach(load_playbook(), load_score_model())
    for item in rep_minute(10.0):
        if isinstance(item, Transcript):
            events = coach.observe_transcript(item)
        else:
            assert isinstance(item, float)
            events = coach.tick(item)
        monologue = [e for e in events if isinstance(e, Card) and e.kind == "monologue"]
        if monologue:
            assert monologue[0].audio_end_s == 55.0 and monologue[0].state == "issued"
            assert item.end_s <= 70.0 if isinstance(item, Transcript) else item < 70.0
            return
    pytest.fail("no monologue card")


def test_customer_turn_ends_monologue_but_backchannel_does_not() -> None:
    """A customer "mm-hm" keeps the rep's turn going; a real customer sentence ends it."""
    backchannel = [
        *rep_minute(10.0)[:6],
        utt("customer", 30.5, 31.0, "mm-hm"),
        *rep_minute(10.0)[6:],
    ]
    assert any(a.kind == "monologue" for a in feed(Dynamics(SETTINGS), backchannel))
    spoken = [
        *rep_minute(10.0)[:9],
        utt("customer", 40.0, 43.0, "wait, how does that work?"),
        *rep_minute(44.0)[:9],
    ]
    assert not any(a.kind == "monologue" for a in feed(Dynamics(SETTINGS), spoken))


def exchanges(start_s: float, n: int) -> list[Transcript | Insight | float]:
    """``n`` exchanges of 8 s of rep speech and a 1.5 s customer reply, 12 s apart."""
    items: list[Transcript | Insight | float] = []
    for k in range(n):
        s = start_s + 12.0 * k
        items += [
            utt("rep", s, s + 8.0),
            utt("customer", s + 9.0, s + 10.5, "yes that makes sense"),
        ]
    return items


def test_talk_ratio_alert_and_rearm() -> None:
    """Rep talking over 75 % of the window raises talk_ratio once, again only after it fell back."""
    customer_turn = [utt("customer", 95.0 + 10 * k, 104.5 + 10 * k) for k in range(6)]
    items = [*exchanges(0.0, 8), *customer_turn, *exchanges(160.0, 15)]
    alerts = [a for a in feed(Dynamics(SETTINGS), items) if a.kind == "talk_ratio"]
    assert len(alerts) == 2
    assert alerts[0].audio_end_s == 56.0 and "87%" in alerts[0].detail
    assert alerts[1].audio_end_s > 200.0


def test_balanced_conversation_has_no_talk_ratio_alert() -> None:
    """Equal turns never raise talk_ratio."""
    items = [utt("rep" if k % 2 else "customer", 5.0 * k, 5.0 * k + 4.5) for k in range(60)]
    assert not any(a.kind == "talk_ratio" for a in feed(Dynamics(SETTINGS), items))


def test_fast_speech() -> None:
    """A rep at 240 wpm is told to slow down; at 150 wpm nothing."""
    fast = " ".join(["word"] * 40)  # 40 words in 10 s
    assert [a.kind for a in feed(Dynamics(SETTINGS), [utt("rep", 0.0, 10.0, fast)])] == [
        "fast_speech"
    ]
    calm = " ".join(["word"] * 25)
    assert feed(Dynamics(SETTINGS), [utt("rep", 0.0, 10.0, calm)]) == []


def test_fast_speech_is_timed_by_the_utterance_audio_not_the_word_spans() -> None:
    """40 words whose aligned words span 10 s (240 wpm) but whose utterance audio lasts 16 s
    (150 wpm) raise nothing: the rate counts what the rep took to say them."""
    import dataclasses

    import numpy as np

    fast = utt("rep", 0.0, 10.0, " ".join(["word"] * 40))
    heard = dataclasses.replace(fast, audio=np.zeros(16 * 16_000, np.float32))
    assert feed(Dynamics(SETTINGS), [heard]) == []
    rushed = dataclasses.replace(fast, audio=np.zeros(11 * 16_000, np.float32))  # 218 wpm
    assert [a.kind for a in feed(Dynamics(SETTINGS), [rushed])] == ["fast_speech"]


def test_customer_silence_fires_after_threshold_and_lag() -> None:
    """Silence alert at last customer speech + 45 s, only once ticks pass it plus the lag."""
    dyn = Dynamics(SETTINGS)
    feed(dyn, [utt("customer", 0.0, 5.0, "hello there how are you")])
    lag = SETTINGS.transcript_lag_s
    assert lag > 0
    assert [
        a for a in feed(dyn, [20.0, 50.0, 50.0 + lag - 0.01]) if a.kind == "customer_silence"
    ] == []
    [alert] = feed(dyn, [50.0 + lag, 52.0, 60.0])
    assert (alert.kind, alert.audio_end_s) == ("customer_silence", 50.0)
    assert feed(dyn, [120.0]) == []  # once per silence
    feed(dyn, [utt("customer", 121.0, 122.0, "sorry go on")])
    assert [a.kind for a in feed(dyn, [170.0])] == ["customer_silence"]


def test_interruption_when_rep_starts_mid_sentence() -> None:
    """The rep starting 2 s into a 5 s customer sentence is an interruption; after it, not."""
    dyn = Dynamics(SETTINGS)
    alerts = feed(
        dyn, [utt("customer", 0.0, 5.0, "so what we really need is a"), utt("rep", 2.0, 6.0)]
    )
    assert [(a.kind, a.audio_end_s) for a in alerts] == [("interruption", 2.6)]
    assert alerts[0].evidence is not None and alerts[0].evidence.speaker == "customer"
    polite = feed(
        Dynamics(SETTINGS), [utt("customer", 0.0, 5.0, "what we need"), utt("rep", 5.3, 9.0)]
    )
    assert polite == []


def test_interruption_detected_whichever_channel_arrives_first() -> None:
    """The rep's transcript may arrive before the customer's: still one interruption."""
    alerts = feed(
        Dynamics(SETTINGS), [utt("rep", 2.0, 6.0), utt("customer", 0.0, 5.0, "so what we")]
    )
    assert [a.kind for a in alerts] == ["interruption"]


@pytest.mark.parametrize(
    ("rep_answers", "expected"), [(False, [("unanswered_question", 14.0)]), (True, [])]
)
def test_unanswered_question(rep_answers: bool, expected: list[tuple[str, float]]) -> None:
    """A customer question with no rep reply within 8 s raises unanswered_question."""
    dyn = Dynamics(SETTINGS)
    question = "How does it integrate with our CRM?"
    items: list[Transcript | Insight | float] = [
        utt("customer", 3.0, 6.0, question),
        customer_insight("question", question, 3.0, 6.0),
    ]
    if rep_answers:
        items.append(utt("rep", 7.0, 12.0, "It posts to your CRM by webhook."))
    items += [10.0, 15.0, 16.0, 30.0]
    got = [(a.kind, a.audio_end_s) for a in feed(dyn, items) if a.kind == "unanswered_question"]
    assert got == expected


def test_no_next_step_on_closing_phrase_or_time() -> None:
    """Wrapping up without a next step alerts; with one agreed it does not."""
    bye = customer_insight("small_talk", "Thanks for your time, I have to go.", 600.0, 602.0)
    assert [a.kind for a in feed(Dynamics(SETTINGS), [bye])] == ["no_next_step"]
    agreed = customer_insight("next_step", "Let's meet Tuesday.", 500.0, 502.0)
    assert feed(Dynamics(SETTINGS), [agreed, bye]) == []
    late_items: list[Transcript | Insight | float] = [1499.0, 1500.5, 1600.0]
    [late] = [a for a in feed(Dynamics(SETTINGS), late_items) if a.kind == "no_next_step"]
    assert (late.kind, late.audio_end_s) == ("no_next_step", 1500.0)


def test_sentiment_and_engagement_drop() -> None:
    """A customer who turns negative (or flat-voiced) raises sentiment_drop once."""
    mood = [0.6, 0.5, 0.6, -0.5, -0.7, -0.8, -0.8]
    items: list[Transcript | Insight | float] = [
        customer_insight("other", "fine", 10.0 * k, 10.0 * k + 2, s) for k, s in enumerate(mood)
    ]
    alerts = feed(Dynamics(SETTINGS), items)
    assert [a.kind for a in alerts] == ["sentiment_drop"]
    assert alerts[0].audio_end_s == 42.0  # the fifth utterance pushes the drop past 0.6
    engaged = [0.7, 0.7, -0.5, -0.8, -0.9]
    items = [
        customer_insight("other", "ok", 10.0 * k, 10.0 * k + 2, 0.0, e)
        for k, e in enumerate(engaged)
    ]
    [alert] = feed(Dynamics(SETTINGS), items)
    assert alert.detail.startswith("The customer sounds less engaged")


def test_rep_talk_share() -> None:
    """The call-level talk share counts both channels' speech."""
    dyn = Dynamics(SETTINGS)
    assert dyn.rep_talk_share() is None
    feed(dyn, [utt("rep", 0.0, 6.0), utt("customer", 6.0, 8.0, "sure sounds good")])
    assert dyn.rep_talk_share() == pytest.approx(0.75)
    # with a prior of 60 s shared evenly, 8 s of talk barely moves the share off even
    assert dyn.rep_talk_share(prior_s=60.0) == pytest.approx((6 + 30) / (8 + 60))


def rep_insight(label: str, text: str, start_s: float, end_s: float) -> Insight:
    return Insight(
        f"rep-{start_s}", "rep", True, text, start_s, end_s, label, 0.9, {}, (), 0.0, None
    )


def test_no_customer_silence_before_the_customer_has_spoken() -> None:
    """The rep's opening is not customer silence: no alert until the customer has spoken or
    the rep has asked something, however long the rep talks."""
    dyn = Dynamics(SETTINGS)
    opening = "Hi, this is Sam from Acme, let me tell you about our product."
    items: list[Transcript | Insight | float] = [
        utt("rep", 0.5, 5.0, opening),
        rep_insight("small_talk", opening, 0.5, 5.0),
        *[float(t) for t in range(6, 120, 2)],
    ]
    assert [a for a in feed(dyn, items) if a.kind == "customer_silence"] == []
    feed(dyn, [utt("customer", 120.0, 122.0, "sorry, go on")])
    [alert] = [a for a in feed(dyn, [160.0, 168.0, 170.0]) if a.kind == "customer_silence"]
    assert alert.audio_end_s == 167.0


@pytest.mark.parametrize(
    ("label", "text"),
    [("question", "How many reps are on your team?"), ("other", "so what do you use today?")],
)
def test_customer_silence_counts_from_a_rep_question(label: str, text: str) -> None:
    """Before the customer's first words, an unanswered rep question starts the silence count
    (a question label, or a transcript ending in a question mark)."""
    dyn = Dynamics(SETTINGS)
    items: list[Transcript | Insight | float] = [
        utt("rep", 2.0, 5.0, text),
        rep_insight(label, text, 2.0, 5.0),
        30.0,
        51.0,
        52.0,
    ]
    [alert] = [a for a in feed(dyn, items) if a.kind == "customer_silence"]
    assert alert.audio_end_s == 50.0


def test_talk_ratio_alert_is_stamped_with_speech_time_not_tick_time() -> None:
    """Ticks running ahead of transcription do not move the talk-ratio alert's audio time:
    it is the end of the speech that tipped the ratio."""
    dyn = Dynamics(SETTINGS)
    items: list[Transcript | Insight | float] = []
    for k in range(6):
        items += [float(10.0 * k + 20.0), utt("rep", 10.0 * k, 10.0 * k + 9.0)]
    [alert] = [a for a in feed(dyn, items) if a.kind == "talk_ratio"]
    assert alert.audio_end_s == 49.0  # the fifth utterance brings 45 s of speech, all the rep's
