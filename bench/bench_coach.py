"""Per-event processing time of the coach (``guidance.coach.Coach``), p50/p95/max.

Replays a synthetic, seeded 30-minute call as the session would feed it: both speakers'
transcripts (three growing partials then the final per utterance, with word timings), an
insight for every customer partial and every final (labels drawn from a realistic mix, some
naming competitors), ticks at 4 Hz of audio time, and an occasional rep card action. Times
every coach call with ``time.perf_counter``; the coach itself reads no clock.

    PYTHONPATH=. python bench/bench_coach.py [--minutes 30] [--seed 1] [--json bench/results/coach.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from audio.chunk import Speaker
from guidance.cards import Card
from guidance.coach import Coach
from guidance.playbook import load_playbook
from guidance.score import load_score_model, parse_prior
from nlp.insight import Entity, Indicator, Insight, Prosody
from nlp.transcript import Transcript, Word

LABELS = [
    ("other", 30), ("small_talk", 8), ("positive", 10), ("question", 12), ("buying_signal", 8),
    ("next_step", 3), ("objection_price", 4), ("objection_timing", 3), ("objection_need", 2),
    ("objection_authority", 2), ("objection_trust", 2), ("objection_competitor", 2),
]  # fmt: skip
COMPETITORS = ["Salesforce", "HubSpot", "Gong", "Zoho", "Pipedrive", "Acme"]


def utterances(minutes: float, rng: random.Random) -> list[tuple[Speaker, float, float]]:
    out, t = [], 1.0
    while t < minutes * 60:
        speaker: Speaker = "rep" if rng.random() < 0.55 else "customer"
        dur = rng.uniform(1.0, 12.0 if speaker == "rep" else 8.0)
        out.append((speaker, t, t + dur))
        t += dur + rng.uniform(0.2, 1.5)
    return out


def events(minutes: float, seed: int) -> list[tuple[float, str, Any]]:
    """(audio time, kind, payload) in the order a session would deliver them."""
    rng = random.Random(seed)
    labels, weights = zip(*LABELS, strict=True)
    out: list[tuple[float, str, Any]] = []
    for n, (speaker, start, end) in enumerate(utterances(minutes, rng)):
        n_words = max(2, round((end - start) * 2.6))
        words = tuple(
            Word(
                "word",
                start + k * (end - start) / n_words,
                start + (k + 1) * (end - start) / n_words,
                0.9,
            )
            for k in range(n_words)
        )
        label = rng.choices(labels, weights)[0]
        comp = (rng.choice(COMPETITORS),) if rng.random() < 0.06 else ()
        text = " ".join(["word"] * n_words)
        for frac in (0.3, 0.6, 1.0):
            k = max(1, round(frac * n_words))
            final = frac == 1.0
            t = Transcript(
                f"u{n}",
                speaker,
                final,
                " ".join(["word"] * k),
                start,
                words[k - 1].end_s,
                words[:k],
            )
            at = t.end_s + (0.9 if final else 0.5)
            out.append((at, "transcript", t))
            if final or speaker == "customer":
                prosody = Prosody(
                    180.0,
                    6.0,
                    2.0,
                    -20.0,
                    160.0,
                    0.1,
                    {},
                    {"engagement": Indicator(rng.uniform(-1, 1), {})},
                )
                ents = tuple(Entity("competitor", c, c, 0, len(c)) for c in comp)
                ins = Insight(
                    f"u{n}",
                    speaker,
                    final,
                    text,
                    start,
                    t.end_s,
                    label,
                    rng.uniform(0.4, 0.99),
                    {},
                    ents,
                    rng.uniform(-1, 1),
                    prosody,
                )
                out.append((at + 0.05, "insight", ins))
    for k in range(int(minutes * 60 * 4)):
        out.append((k / 4.0, "tick", k / 4.0))
    out.sort(key=lambda e: e[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    stream = events(args.minutes, args.seed)
    coach = Coach(
        load_playbook(),
        load_score_model(),
        parse_prior({"company_size": 250, "industry": "software"}),
    )
    coach.start()
    timings: dict[str, list[float]] = defaultdict(list)
    emitted: dict[str, int] = defaultdict(int)
    rng = random.Random(args.seed + 1)
    for _, kind, payload in stream:
        t0 = time.perf_counter()
        if kind == "transcript":
            out = coach.observe_transcript(payload)
        elif kind == "insight":
            out = coach.observe_insight(payload)
        else:
            out = coach.tick(payload)
        timings[kind].append(time.perf_counter() - t0)
        for e in out:
            emitted[f"{type(e).type}:{getattr(e, 'state', '')}"] += 1
            if isinstance(e, Card) and e.state == "issued" and rng.random() < 0.3:
                t0 = time.perf_counter()
                coach.act(
                    {
                        "type": "card_action",
                        "card_id": e.card_id,
                        "action": rng.choice(["dismissed", "used"]),
                    }
                )
                timings["act"].append(time.perf_counter() - t0)
    report: dict[str, Any] = {
        "minutes": args.minutes,
        "events": len(stream),
        "emitted": dict(emitted),
    }
    every = [x for v in timings.values() for x in v]
    for kind, xs in [*timings.items(), ("all", every)]:
        xs = sorted(xs)
        report[kind] = {
            "n": len(xs),
            "p50_us": round(1e6 * statistics.median(xs), 1),
            "p95_us": round(1e6 * xs[int(0.95 * (len(xs) - 1))], 1),
            "max_us": round(1e6 * xs[-1], 1),
        }
        print(
            f"{kind:>10}: n={len(xs):6d}  p50={report[kind]['p50_us']:8.1f} us  p95={report[kind]['p95_us']:8.1f} us  max={report[kind]['max_us']:8.1f} us"
        )
    print("emitted:", dict(sorted(emitted.items())))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
