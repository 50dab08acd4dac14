"""Card latency on a replayed call, and the card threshold on the held-out intents.

Card latency (REFERENCE.md): wall time a coaching card reaches the rep's socket minus the audio
time at which the customer utterance that triggered it ended. Starts the real server
(``cuecard serve`` on a free loopback port, as ``bench.bench_stream`` does), replays at 1.0x an
espeak-ng call of sixteen customer objections, buying signals, questions and next steps, one
every ~20 s so the deck's four-new-cards-a-minute limit does not hold cards back (a held card
measures the rate limit, not the pipeline: ``held_by_rate_limit`` counts them), and reports
p50/p95 of:

- ``card_latency_s``: ``bench_stream.measure``'s figure (issued cards with customer evidence:
  received minus the card's own ``audio_end_s``; for a card issued early from a partial, that
  is the end of the partial);
- ``first_card_after_utterance_end_s``: per triggering utterance, its first card (issued or
  updated) received minus the scripted end of the utterance (negative: on screen before the
  customer finished).

``--threshold-sweep`` instead runs the held-out intent set (``nlp/data/intents_test.jsonl``,
or with ``--dataset FILE`` a TSV of ``label<TAB>text`` lines with a header, such as the outside
lines of ``../shared/intent-dev/utterances.tsv``) through the coach at several
``deck.min_confidence`` values and prints card precision and recall.

    python -m bench.bench_cards [--runs 1] [--json OUT] [--events EVENTS.jsonl]
    python -m bench.bench_cards --threshold-sweep [--dataset FILE.tsv]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.bench_stream import WARMUP_S, measure, pct, turn_of
from clients.callgen import RenderedCall, Turn, render
from clients.simulator import SimOptions, simulate


def _rep(text: str) -> Turn:
    return Turn("rep", text, rate_wpm=140)  # calm: no fast_speech card taking a card slot


TRIGGERS = (
    "Honestly, the price is way too high for us.",
    "We can't start this until next year.",
    "My manager makes the final call on this.",
    "We already use Salesforce and we are happy with it.",
    "I'm not sure we can trust a small company with our data.",
    "We don't really need this, our team is doing fine.",
    "If we sign this month, when could we start?",
    "Can you send over the contract so our legal team can review it?",
    "Does it work with our phone system?",
    "Let's set up a call next Tuesday with our VP.",
    "That is more than we can afford right now.",
    "Another company gave us a better offer.",
    "How long would it take to get all thirty people started?",
    "Is our data secure and encrypted?",
    "Now is not a good time for us, maybe next quarter.",
    "Please send me a proposal by Friday.",
)
FILLERS = (
    "We have about forty people on the sales floor.",
    "Our reps make about fifty calls a day.",
    "I see what you mean.",
    "Okay, go on.",
)
REP_LINES = (
    "Thanks for your time today. Can I show you how our tool works?",
    "I understand, thank you for telling me that.",
    "That is a good point. Let me explain how most teams use it.",
    "Here is how it works on a normal day for your reps.",
)


def bench_call() -> tuple[Turn, ...]:
    """A warm-up exchange, then per trigger: rep line, trigger, rep reply, customer filler, and
    a pause; ~20 s a trigger keeps the new cards (and an alert or two) under four a minute."""
    turns = [_rep("Hi, this is Sam from Acme."), Turn("customer", "Hi Sam, nice to meet you.")]
    for k, trigger in enumerate(TRIGGERS):
        turns += [
            Turn("rep", REP_LINES[k % len(REP_LINES)], gap_s=4.0, rate_wpm=140),
            Turn("customer", trigger),
            _rep(REP_LINES[(k + 1) % len(REP_LINES)]),
            Turn("customer", FILLERS[k % len(FILLERS)]),
        ]
    return tuple(turns)


def first_cards(events: list[dict[str, Any]], call: RenderedCall) -> dict[str, float]:
    """Per scripted trigger, its first card (issued or updated) received minus the utterance's
    scripted end (1.0x: audio seconds are wall seconds since the first frame)."""
    out: dict[str, float] = {}
    for e in events:
        if e["type"] != "card" or e["state"] not in ("issued", "updated"):
            continue
        ev = e.get("evidence") or {}
        if ev.get("speaker") != "customer":
            continue
        turn = turn_of(call.utterances, "customer", ev["end_s"])
        if turn is None or turn.text not in TRIGGERS or turn.start_s < WARMUP_S:
            continue
        out.setdefault(turn.text, e["received_s"] - turn.end_s)
    return out


def held(events: list[dict[str, Any]]) -> int:
    """Cards issued more than 2 s after the audio they refer to: waited for a rate-limit slot."""
    return sum(
        1
        for e in events
        if e["type"] == "card" and e["state"] == "issued" and e["received_s"] - e["audio_end_s"] > 2
    )


def summary(xs: list[float]) -> dict[str, Any]:
    return {
        "n": len(xs),
        "p50": round(pct(xs, 50), 3),
        "p95": round(pct(xs, 95), 3),
        "max": round(max(xs), 3) if xs else None,
        "mean": round(statistics.fmean(xs), 3) if xs else None,
    }


async def run(runs: int, events_path: Path | None = None) -> dict[str, Any]:
    from clients.localserver import start_server, stop_server

    call = render(bench_call())
    card_lat: list[float] = []
    first: list[float] = []
    missed: list[str] = []
    held_back = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench-cards.wav"
        call.write(path)
        server = start_server(Path(tmp) / "data")
        try:
            for _ in range(runs):
                options = SimOptions(server=server.ws, token=server.token, speed=1.0)
                events = (await simulate(path, options)).events
                if events_path is not None:
                    with events_path.open("a") as f:
                        f.writelines(json.dumps(e) + "\n" for e in events)
                card_lat += measure(events, call, 1.0)["card"]
                got = first_cards(events, call)
                first += list(got.values())
                missed += [t for t in TRIGGERS if t not in got]
                held_back += held(events)
        finally:
            stop_server(server)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.processor() or 'cpu'}, no GPU",
        "call_audio_s": round(call.duration_s, 1),
        "speed": 1.0,
        "runs": runs,
        "customer_trigger_utterances": len(TRIGGERS) * runs,
        "card_latency_s": summary(card_lat),
        "first_card_after_utterance_end_s": summary(first),
        "triggers_without_card": missed,
        "held_by_rate_limit": held_back,
    }


def tsv_examples(path: Path) -> list[Any]:
    """``label<TAB>text`` rows after a header line (intent-dev's format), as examples."""
    from nlp.intent import Example

    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:]]
    return [Example(text=r[1], label=r[0]) for r in rows if len(r) >= 2]


def threshold_sweep(
    thresholds: tuple[float, ...], dataset: Path | None = None
) -> list[dict[str, Any]]:
    """Card precision and recall of the coach on the held-out intents at each threshold.

    Each line is a final customer utterance to a fresh coach. A card is right when its kind is
    the line's label, or it is a competitor battlecard for a line that names a competitor
    (the entity, not the intent, triggers it). Recall: lines whose label has a card
    (objections, buying signals, questions, next steps) that got the right card (a competitor
    objection naming a competitor is answered by its battlecard)."""
    from guidance.cards import Card
    from guidance.coach import Coach
    from guidance.playbook import INTENT_CARD_KINDS, load_playbook
    from guidance.score import load_score_model
    from models.registry import load_embedder
    from nlp.analyze import load_analyzer
    from nlp.insight import Insight
    from nlp.intent import DATA_DIR, load_examples

    examples = (
        load_examples(DATA_DIR / "intents_test.jsonl") if dataset is None else tsv_examples(dataset)
    )
    analyzer = load_analyzer(load_embedder(threads=2))
    texts = [x.text for x in examples]
    analyses = analyzer.analyze_many(texts, call_date=dt.date(2026, 1, 5))
    playbook, model = load_playbook(), load_score_model()
    card_worthy = [x for x in examples if x.label in INTENT_CARD_KINDS]
    rows = []
    for threshold in thresholds:
        pb = playbook.model_copy(
            update={"deck": playbook.deck.model_copy(update={"min_confidence": threshold})}
        )
        right = wrong = found = 0
        spurious: list[str] = []
        for x, a in zip(examples, analyses, strict=True):
            insight = Insight(
                "u1", "customer", True, x.text, 1.0, 3.0, a.intent.label,
                a.intent.confidence, a.intent.scores, a.entities, a.sentiment, None,
            )  # fmt: skip
            cards = [e for e in Coach(pb, model).observe_insight(insight) if isinstance(e, Card)]
            names_competitor = any(e.kind == "competitor" for e in a.entities)
            ok = [c.kind == x.label or (c.kind == "competitor" and names_competitor) for c in cards]
            right += sum(ok)
            wrong += len(ok) - sum(ok)
            answers = {x.label, "competitor"} if x.label == "objection_competitor" else {x.label}
            found += x.label in INTENT_CARD_KINDS and any(c.kind in answers for c in cards)
            if cards and x.label in ("other", "small_talk", "positive") and not all(ok):
                spurious.append(f"{x.label}: {x.text!r} -> {cards[0].kind}")
        rows.append(
            {
                "min_confidence": threshold,
                "cards": right + wrong,
                "precision": round(right / max(1, right + wrong), 3),
                "recall": round(found / len(card_worthy), 3),
                "right_cards_for_card_labels": f"{found}/{len(card_worthy)}",
                "cards_on_other_small_talk_positive": spurious,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json")
    parser.add_argument("--events", type=Path, help="also append every event here (JSON lines)")
    parser.add_argument("--threshold-sweep", action="store_true")
    parser.add_argument("--dataset", type=Path, help="TSV (label, text) for --threshold-sweep")
    args = parser.parse_args()
    if args.threshold_sweep:
        report: Any = threshold_sweep((0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7), args.dataset)
    else:
        report = asyncio.run(run(args.runs, args.events))
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
