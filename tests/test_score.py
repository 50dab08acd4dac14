"""Lead score: moves with the call's signals, explains itself, validates priors, and retrains."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

import pytest

from guidance.coach import Coach
from guidance.errors import PriorError, ScoreModelError
from guidance.playbook import load_playbook
from guidance.score import LeadScore, Score, load_score_model, parse_prior
from guidance.train import auc, load_history, train
from nlp.insight import Insight
from server.guidance_cli import register

MODEL = load_score_model()
HISTORY = Path(__file__).resolve().parents[1] / "guidance" / "data" / "example_history.jsonl"


def say(speaker: str, label: str, text: str, start_s: float, sentiment: float = 0.0) -> Insight:
    end_s = start_s + 0.4 * len(text.split())
    return Insight(
        f"{speaker}-{start_s}",
        speaker,
        True,
        text,
        start_s,
        end_s,  # type: ignore[arg-type]
        label,
        0.9,
        {},
        (),
        sentiment,
        None,
    )


OBJECTION_CALL = [
    say("customer", "objection_price", "Honestly this is far too expensive for us.", 5, -0.5),
    say("rep", "other", "Okay.", 9),
    say(
        "customer",
        "objection_timing",
        "And we really cannot do anything before next year.",
        12,
        -0.6,
    ),
    say("customer", "objection_trust", "We got burned by a vendor like you before.", 20, -0.7),
    say("customer", "objection_authority", "It's not my decision anyway.", 28, -0.5),
]
WARM_CALL = [
    say("customer", "buying_signal", "This is exactly what our team has been missing.", 5, 0.7),
    say("rep", "other", "Great, tell me more about the team and how you coach them today.", 9),
    say("customer", "question", "How long would onboarding take for thirty people?", 15, 0.4),
    say("customer", "buying_signal", "We'd want to start next month if possible.", 25, 0.6),
    say("customer", "next_step", "Let's book a pilot kickoff next Tuesday.", 35, 0.7),
]


def scores(lead: LeadScore, call: list[Insight], talk_share: float) -> list[Score]:
    return [s for i in call if (s := lead.observe(i, talk_share)) is not None]


def test_objection_call_score_falls() -> None:
    """Objection after objection, unanswered, pushes the score down each time."""
    lead = LeadScore(MODEL)
    start = lead.score
    out = scores(lead, OBJECTION_CALL, talk_share=0.7)
    assert len(out) == 4  # one score per customer utterance
    assert all(s.delta < 0 for s in out) and out[-1].score < start - 10
    assert any(re.match(r"^-\d+ price objection: “Honestly", r) for r in out[0].reasons)


def test_warm_call_score_rises() -> None:
    """Buying signals, questions and an agreed next step push the score up, with reasons."""
    lead = LeadScore(MODEL)
    opening = lead.start()
    out = scores(lead, WARM_CALL, talk_share=0.45)
    assert out[-1].score > opening.score + 15
    assert out[-1].delta > 0
    assert any(r.startswith("+") and "next step: “Let's book" in r for r in out[-1].reasons)
    assert any(re.match(r"^\+\d+ buying signal: “", r) for s in out for r in s.reasons)


@pytest.mark.parametrize("call", [OBJECTION_CALL, WARM_CALL])
def test_reasons_add_up_to_delta(call: list[Insight]) -> None:
    """The signed points of the reasons add up to the score's delta within rounding."""
    lead = LeadScore(MODEL, parse_prior({"company_size": 300, "lead_source": "referral"}))
    for s in scores(lead, call, talk_share=0.6):
        points = sum(int(r.split()[0]) for r in s.reasons)
        assert abs(points - s.delta) <= 0.5 * len(s.reasons) + 1.0


def test_answering_an_objection_counts() -> None:
    """The rep replying in substance to an objection adds a "you answered" reason."""
    lead = LeadScore(MODEL)
    lead.observe(say("customer", "objection_price", "It's too expensive.", 1.0))
    lead.observe(
        say("rep", "other", "I hear you; most teams recover the cost in the first quarter.", 3)
    )
    s = lead.observe(say("customer", "positive", "Okay, that's fair.", 9.0, 0.3))
    assert s is not None and lead.conversation_features()["objections_addressed"] == 1.0
    assert any("you answered the price objection" in r for r in s.reasons)


def test_prior_moves_the_opening_score() -> None:
    """A strong CRM prior starts higher than a weak one, with the prior fields as reasons."""
    strong = LeadScore(MODEL, parse_prior({"prior_stage": "Demo", "industry": "Software"})).start()
    weak = LeadScore(
        MODEL, parse_prior({"industry": "education", "lead_source": "paid ads"})
    ).start()
    assert strong.score > weak.score
    assert any("industry: software" in r for r in strong.reasons)
    assert any("lead source: paid ads" in r for r in weak.reasons)


@pytest.mark.parametrize(
    ("prior", "field"),
    [
        ({"company_size": "fifty"}, "company_size"),
        ({"company_size": -3}, "company_size"),
        ({"industry": 12}, "industry"),
        ({"lead_sauce": "referral"}, "lead_sauce"),
    ],
)
def test_prior_with_wrong_types_is_a_clear_error(prior: dict[str, object], field: str) -> None:
    """A bad prior raises PriorError naming the field and the bad value."""
    with pytest.raises(PriorError, match=field) as info:
        parse_prior(prior)
    assert repr(next(iter(prior.values()))) in str(info.value)


def test_coach_emits_score_after_each_customer_final() -> None:
    """Through the coach: an opening score, then one score event per customer final."""
    coach = Coach(load_playbook(), MODEL, parse_prior({"company_size": 40}))
    [opening] = coach.start()
    assert isinstance(opening, Score)
    events = [e for i in WARM_CALL for e in coach.observe_insight(i) if isinstance(e, Score)]
    assert len(events) == 4 and events[-1].audio_end_s == WARM_CALL[-1].end_s


def test_broken_coefficients_file(tmp_path: Path) -> None:
    """A malformed coefficients file is a ScoreModelError naming the file and field."""
    bad = tmp_path / "coef.json"
    bad.write_text(
        json.dumps({"model": "cuecard logistic scorecard v1", "intercept": "x", "features": {}})
    )
    with pytest.raises(ScoreModelError, match=r"coef\.json: intercept"):
        load_score_model(bad)
    with pytest.raises(ScoreModelError, match=r"^score model .*missing\.json: cannot read the"):
        load_score_model(tmp_path / "missing.json")


def test_train_score_on_example_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """train-score on the shipped history reports AUC well above chance, writes a loadable file."""
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    out = tmp_path / "coef.json"
    args = parser.parse_args(["train-score", str(HISTORY), "--out", str(out)])
    assert args.handler(args) == 0
    model = load_score_model(out)
    assert model.training["cv_auc"] > 0.7
    assert model.weight("next_steps") > 0 > model.weight("objections")
    assert "cross-validated AUC" in capsys.readouterr().out
    assert LeadScore(model).observe(WARM_CALL[0]) is not None


def test_auc_of_shuffled_outcomes_is_chance() -> None:
    """With outcomes shuffled the cross-validated AUC drops to chance level."""
    import numpy as np

    history = load_history(HISTORY)
    shuffled = type(history)(history.rows, np.random.default_rng(1).permutation(history.won))
    assert abs(train(shuffled).training["cv_auc"] - 0.5) < 0.1
    assert auc(np.array([0.0, 1.0]), np.array([0.2, 0.9])) == 1.0


def test_bad_history_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad history line fails with exit 2 and the line number."""
    bad = tmp_path / "h.jsonl"
    lines = HISTORY.read_text().splitlines()[:30]
    lines[6] = json.dumps({"outcome": "maybe", "features": {}})
    bad.write_text("\n".join(lines))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["train-score", str(bad), "--out", str(tmp_path / "c.json")])
    assert args.handler(args) == 2
    assert "line 7: outcome must be 'won' or 'lost'" in capsys.readouterr().err


def test_objection_counts_from_the_card_threshold() -> None:
    """An objection the coach shows a card for (confidence 0.42) also lowers the score; one
    under the playbook's threshold does not count as an objection."""
    sure = load_playbook().deck.min_confidence
    unsure_said = say("customer", "objection_price", "That is more than we planned.", 5)
    lead = LeadScore(MODEL, min_confidence=sure)
    low = lead.observe(dataclasses.replace(unsure_said, confidence=sure - 0.05))
    assert low is not None and not any("objection" in r for r in low.reasons)
    coach = Coach(load_playbook(), MODEL)
    events = coach.observe_insight(dataclasses.replace(unsure_said, confidence=0.42))
    [score] = [e for e in events if isinstance(e, Score)]
    assert score.delta < 0 and any(
        r.startswith("-") and "price objection" in r for r in score.reasons
    )
    # Counted exactly once: the coach's score event is the one a lead score that saw this
    # one objection gives, and that lead score's features hold one objection.
    counted = LeadScore(MODEL, min_confidence=sure)
    alone = counted.observe(dataclasses.replace(unsure_said, confidence=0.42))
    assert alone == score and counted.conversation_features()["objections"] == 1.0
