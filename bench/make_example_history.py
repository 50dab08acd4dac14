"""Write ``guidance/data/example_history.jsonl``: 400 synthetic past calls with outcomes.

Seeded and deterministic (``python bench/make_example_history.py``). Each call has a latent
deal fit ``u`` (driven by its CRM prior) and a rep skill ``s``; the conversation features are
noisy consequences of both (good-fit buyers show more buying signals and fewer objections,
skilled reps answer objections, agree next steps and talk less), and the outcome is drawn from
a logistic model of ``u``, ``s`` and a few direct effects. No feature reveals the outcome
alone, so a fitted scorecard lands at a realistic, clearly-better-than-chance AUC. The file is
there so ``cuecard train-score guidance/data/example_history.jsonl`` can be tried.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "guidance" / "data" / "example_history.jsonl"
N_CALLS = 600
SEED = 20240611

INDUSTRY = {
    "software": 0.3,
    "financial_services": 0.1,
    "professional_services": 0.1,
    "healthcare": -0.1,
    "manufacturing": -0.1,
    "retail": -0.2,
    "education": -0.3,
}
LEAD_SOURCE = {
    "referral": 0.7,
    "inbound_demo": 0.5,
    "partner": 0.3,
    "event": 0.1,
    "webinar": 0.0,
    "paid_ads": -0.2,
    "outbound": -0.5,
}
STAGE = {"new": -0.4, "discovery": 0.0, "demo": 0.3, "proposal": 0.6, "negotiation": 0.9}


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def one_call(rng: np.random.Generator, n: int) -> dict[str, object]:
    size = int(np.clip(np.exp(rng.normal(math.log(150), 1.3)), 5, 50_000))
    industry = str(rng.choice(list(INDUSTRY), p=[0.3, 0.15, 0.15, 0.12, 0.12, 0.1, 0.06]))
    source = str(rng.choice(list(LEAD_SOURCE), p=[0.1, 0.25, 0.08, 0.1, 0.12, 0.1, 0.25]))
    stage = str(rng.choice(list(STAGE), p=[0.2, 0.35, 0.25, 0.12, 0.08]))
    u = (
        rng.normal(0.0, 1.0)
        + INDUSTRY[industry]
        + LEAD_SOURCE[source]
        + STAGE[stage]
        + 0.25 * (math.log10(size) - 2.0)
    )
    skill = rng.normal(0.0, 1.0)
    objections = int(rng.poisson(math.exp(0.4 - 0.35 * u)))
    addressed = int(rng.binomial(objections, sigmoid(0.3 + 0.8 * skill)))
    next_steps = int(rng.binomial(2, sigmoid(-0.6 + 0.9 * u + 0.5 * skill)))
    talk_share = float(np.clip(0.55 - 0.06 * skill + rng.normal(0.0, 0.1), 0.2, 0.92))
    features = {
        "buying_signals": int(rng.poisson(math.exp(0.2 + 0.45 * u))),
        "objections": objections,
        "objections_addressed": addressed,
        "questions": int(rng.poisson(2.0 + 0.6 * max(u, 0.0))),
        "next_steps": next_steps,
        "competitor_mentions": int(rng.poisson(0.6)),
        "customer_sentiment": round(math.tanh(0.3 * u + rng.normal(0.0, 0.3)), 3),
        "customer_engagement": round(math.tanh(0.25 * u + rng.normal(0.0, 0.35)), 3),
        "rep_talk_share_over_half": round(talk_share - 0.5, 3),
    }
    z = (
        -0.9
        + 0.9 * u
        + 0.3 * skill
        + 0.5 * next_steps
        - 0.25 * (objections - addressed)
        - 2.0 * (talk_share - 0.5)
    )
    prior: dict[str, object] = {"company_size": size, "industry": industry}
    if rng.random() < 0.9:
        prior["lead_source"] = source
    if rng.random() < 0.85:
        prior["prior_stage"] = stage
    return {
        "call_id": f"example-{n:04d}",
        "outcome": "won" if rng.random() < sigmoid(z) else "lost",
        "prior": prior,
        "features": features,
    }


def main() -> None:
    rng = np.random.default_rng(SEED)
    lines = [json.dumps(one_call(rng, n), separators=(",", ":")) for n in range(1, N_CALLS + 1)]
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    won = sum('"outcome":"won"' in line for line in lines)
    print(f"wrote {OUT} ({len(lines)} calls, {won} won)")


if __name__ == "__main__":
    main()
