"""Time from "call ended" to summary stored, built-in engine, for a realistic 10-minute call.

The call's events are synthetic but shaped like a real one: ~150 alternating final utterances
with word timings, an insight (intent, entities, sentiment, prosody) per utterance, cards on
objections and a score update per customer utterance (~450 stored events). Each run stores
them in a fresh SQLite store, then times ``hand_off_call`` (read events, summarize, store the
summary) - what the session does when a call ends.

    python bench/bench_summary.py [--runs 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from guidance.summary import BuiltinSummarizer
from server.sqlite_store import SqliteCallStore
from server.store import CallMeta
from server.webhooks import hand_off_call

CUSTOMER = [
    ("We need a better way to track renewals across our teams.", "other"),
    ("Honestly this sounds too expensive for us right now.", "objection_price"),
    ("We already use a competitor for part of this.", "objection_competitor"),
    ("I need to check with my manager before we decide.", "objection_authority"),
    ("How soon can we get started if we sign this month?", "buying_signal"),
    ("What does the onboarding look like for fifty seats?", "question"),
    ("That makes sense, thanks for explaining it.", "positive"),
    ("I will send you our current contract by Friday.", "next_step"),
]
REP = [
    ("Thanks for making time today, how is the quarter going?", "small_talk"),
    ("Most teams recover the cost within three months.", "other"),
    ("Let's schedule a demo with your manager next week.", "next_step"),
    ("I'll send you the proposal by the end of the week.", "next_step"),
    ("Could you share the list of tools you use today?", "question"),
    ("We integrate with the CRM you already have.", "other"),
]


def call_events(rng: random.Random, duration_s: float = 600.0) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [{"type": "status", "state": "live"}]
    t, n, score = 0.5, 0, 50.0
    while t < duration_s - 5:
        speaker = "rep" if n % 2 == 0 else "customer"
        text, label = rng.choice(REP if speaker == "rep" else CUSTOMER)
        words = text.split()
        length = len(words) * rng.uniform(0.3, 0.45)
        uid = f"{speaker}-{n // 2}"
        step = length / len(words)
        events.append({
            "type": "transcript", "utterance_id": uid, "speaker": speaker, "is_final": True,
            "text": text, "start_s": round(t, 3), "end_s": round(t + length, 3),
            "words": [{"text": w, "start_s": round(t + i * step, 3),
                       "end_s": round(t + (i + 1) * step, 3), "probability": 0.9}
                      for i, w in enumerate(words)],
        })  # fmt: skip
        entities = []
        if "Friday" in text:
            i = text.index("by Friday")
            entities = [{"kind": "date", "text": "by Friday", "value": "2026-11-27",
                         "start_char": i, "end_char": i + 9}]  # fmt: skip
        events.append({
            "type": "insight", "utterance_id": uid, "speaker": speaker, "is_final": True,
            "text": text, "start_s": round(t, 3), "end_s": round(t + length, 3), "label": label,
            "confidence": 0.85, "scores": {label: 0.85, "other": 0.15}, "entities": entities,
            "sentiment": rng.uniform(-0.6, 0.8),
            "prosody": {"pitch_median_hz": 180.0, "pitch_range_semitones": 5.0,
                        "pitch_variability_semitones": 2.0, "energy_db": -20.0,
                        "rate_wpm": 160.0, "pause_ratio": 0.1, "z": {"energy": 0.3},
                        "indicators": {"engagement": {"value": rng.uniform(-1, 1),
                                                      "drivers": {"energy": 0.1}}}},
        })  # fmt: skip
        if label.startswith("objection_"):
            events.append(
                {
                    "type": "card",
                    "utterance_id": uid,
                    "kind": label,
                    "title": f"Handle {label}",
                    "body": "Acknowledge, ask, answer.",
                }
            )
        if speaker == "customer":
            delta = rng.uniform(-4, 5)
            score = min(100.0, max(0.0, score + delta))
            events.append(
                {
                    "type": "score",
                    "score": round(score),
                    "delta": round(delta),
                    "reasons": ["asked about onboarding", "price concern", "timeline"],
                }
            )
        t += length + rng.uniform(0.3, 1.5)
        n += 1
    events.append({"type": "status", "state": "ended"})
    return events


async def one_run(events: list[dict[str, Any]], tmp: Path, appends: list[float]) -> float:
    store = await SqliteCallStore.open(tmp)
    try:
        await store.open_call(CallMeta("bench", "native", rep_id="ana", started_at=1.79e9))
        for e in events:
            t0 = time.perf_counter()
            await store.append("bench", e)
            appends.append(time.perf_counter() - t0)
        await store.close_call("bench", "ended")
        t0 = time.perf_counter()
        await hand_off_call(store, BuiltinSummarizer(), None, "bench")
        return time.perf_counter() - t0
    finally:
        await store.close()


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    events = call_events(random.Random(args.seed))
    finals = sum(e["type"] == "transcript" for e in events)
    times: list[float] = []
    appends: list[float] = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as d:
            times.append(asyncio.run(one_run(events, Path(d) / f"run{i}", appends)))
    print(f"call: 600 s, {finals} final utterances, {len(events)} stored events")
    print(
        f"end of call -> summary stored (built-in engine, SQLite), {args.runs} runs: "
        f"p50 {statistics.median(times) * 1e3:.1f} ms, p95 {_pct(times, 0.95) * 1e3:.1f} ms, "
        f"max {max(times) * 1e3:.1f} ms (target: 2000 ms)"
    )
    print(
        f"durable append (WAL, synchronous=FULL), {len(appends)} appends: "
        f"p50 {_pct(appends, 0.5) * 1e3:.2f} ms, p95 {_pct(appends, 0.95) * 1e3:.2f} ms, "
        f"p99 {_pct(appends, 0.99) * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
