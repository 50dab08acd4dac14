"""Time from the end of a call to its summary, built-in engine (target: within 2 s).

1. Through the real server (the figure the issue asks for): ``cuecard serve`` on a free
   loopback port; an espeak-ng call is streamed at 1.0x in 20 ms PCM16 frames while a viewer
   listens on the call's events socket; the clock runs from the moment the ``stop`` message
   has been sent to the moment the ``summary`` event reaches the viewer (one monotonic clock,
   one process). The call ends 0.3 s after its last word, so the stop also flushes that
   utterance's final: end-of-call work (last final, coach tick, summary from the store,
   summary stored, event stored and pushed) is all inside the figure. The first call is a
   warm-up, excluded.
2. The summary step alone for a long call: ~450 synthetic stored events shaped like a
   10-minute call (~150 alternating finals with word timings, an insight per utterance, cards
   on objections, a score per customer utterance) in a fresh SQLite store, then
   ``hand_off_call`` (read events, summarize, store the summary) is timed.

    python -m bench.bench_summary [--calls 8] [--runs 20] [--seed 0] [--skip-server]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audio.chunk import Speaker
from audio.prosody import Indicator, Prosody
from clients.callgen import Turn, render
from guidance.cards import Card
from guidance.score import Score
from guidance.summary import BuiltinSummarizer
from nlp.insight import Entity, Insight
from nlp.transcript import Transcript, Word
from server.handoff import hand_off_call
from server.sqlite_store import SqliteCallStore
from server.store import CallMeta
from server.wire import Status, WireEvent, to_wire

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
    """The stored wire dicts of a synthetic call, written through ``to_wire`` as the
    session writes them."""
    events: list[WireEvent] = [Status("live", "audio stream open", 0.0)]
    t, n, score = 0.5, 0, 50.0
    while t < duration_s - 5:
        speaker: Speaker = "rep" if n % 2 == 0 else "customer"
        text, label = rng.choice(REP if speaker == "rep" else CUSTOMER)
        words = text.split()
        length = len(words) * rng.uniform(0.3, 0.45)
        uid = f"{speaker}-{n // 2}"
        step = length / len(words)
        start_s, end_s = round(t, 3), round(t + length, 3)
        timed = tuple(
            Word(w, round(t + i * step, 3), round(t + (i + 1) * step, 3), 0.9)
            for i, w in enumerate(words)
        )
        events.append(Transcript(uid, speaker, True, text, start_s, end_s, timed))
        entities: tuple[Entity, ...] = ()
        if "Friday" in text:
            i = text.index("by Friday")
            entities = (Entity("date", "by Friday", "2026-11-27", i, i + 9),)
        indicators = {"engagement": Indicator(rng.uniform(-1, 1), {"energy": 0.1})}
        prosody = Prosody(180.0, 5.0, 2.0, -20.0, 160.0, 0.1, {"energy": 0.3}, indicators)
        scores = {label: 0.85, "other": 0.15}
        events.append(Insight(uid, speaker, True, text, start_s, end_s, label, 0.85, scores,
                              entities, rng.uniform(-0.6, 0.8), prosody))  # fmt: skip
        if label.startswith("objection_"):
            events.append(Card(f"card-{n}", "issued", label, 80, f"Handle {label}",
                               "Acknowledge, ask, answer.", ("Ask why",), None, end_s,
                               utterance_id=uid))  # fmt: skip
        if speaker == "customer":
            delta = rng.uniform(-4, 5)
            score = min(100.0, max(0.0, score + delta))
            reasons = ("asked about onboarding", "price concern", "timeline")
            events.append(Score(round(score), round(delta), reasons, end_s))
        t += length + rng.uniform(0.3, 1.5)
        n += 1
    events.append(Status("ended", "call ended", round(t, 3)))
    return [to_wire(e) for e in events]


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


END_OF_CALL: tuple[Turn, ...] = (
    Turn("rep", "Thanks for your time today. I will send the proposal by Friday."),
    Turn("customer", "Okay. We will discuss it with our legal team next week."),
    Turn("rep", "Great. I will email you the contract tomorrow."),
    Turn("customer", "That works. Let's schedule a follow up call next Tuesday."),
    Turn("rep", "Perfect, talk to you then. Have a great day."),
)


async def one_call(ws_base: str, token: str, call_id: str, audio: np.ndarray) -> float:
    """Stream ``audio`` at 1.0x; seconds from the stop message sent to the summary event."""
    events_url = f"{ws_base}/v1/calls/{call_id}/events"
    audio_url = f"{ws_base}/v1/calls/{call_id}/audio"
    auth = {"Authorization": f"Bearer {token}"}  # ?token= takes viewer tokens only
    start = {"type": "start", "encoding": "pcm16", "sample_rate_hz": 16000,
             "channels": 2, "speakers": ["rep", "customer"], "rep_id": "bench"}  # fmt: skip
    stopped: list[float] = []
    async with websockets.connect(events_url, max_size=None, additional_headers=auth) as viewer:

        async def summary_arrival() -> float:
            async for raw in viewer:
                if json.loads(raw)["type"] == "summary":
                    return time.monotonic()
            raise RuntimeError(f"call {call_id}: the events socket closed without a summary")

        waiting = asyncio.create_task(summary_arrival())
        async with websockets.connect(audio_url, additional_headers=auth) as ws:
            await ws.send(json.dumps(start))
            await ws.recv()
            t0 = time.monotonic()
            for i in range(0, len(audio), 320):
                await asyncio.sleep(max(0.0, t0 + i / 16000 - time.monotonic()))
                await ws.send(audio[i : i + 320].tobytes())
            await ws.send(json.dumps({"type": "stop"}))
            stopped.append(time.monotonic())
            async with asyncio.timeout(60):
                arrived = await waiting
    return arrived - stopped[0]


async def through_server(calls: int) -> tuple[list[float], float]:
    from clients.localserver import start_server, stop_server

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "call.wav"
        rendered = render(END_OF_CALL, tail_s=0.3)
        rendered.write(path)
        audio, _ = sf.read(str(path), dtype="int16")
        server = start_server(Path(tmp) / "data")
        try:
            times = [
                await one_call(server.ws, server.token, f"bench-summary-{i}", audio)
                for i in range(calls + 1)
            ]
        finally:
            stop_server(server)
    return times[1:], rendered.duration_s


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=8, help="calls streamed through the server")
    ap.add_argument("--runs", type=int, default=20, help="runs of the summary step alone")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-server", action="store_true")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, no GPU, Python "
          f"{platform.python_version()}")  # fmt: skip
    if not args.skip_server:
        e2e, call_s = asyncio.run(through_server(args.calls))
        print(
            f"stop message -> summary event on the viewer's socket (real server, built-in "
            f"engine, {call_s:.1f} s call at 1.0x), {len(e2e)} calls after 1 warm-up: "
            f"p50 {statistics.median(e2e) * 1e3:.0f} ms, p95 {_pct(e2e, 0.95) * 1e3:.0f} ms, "
            f"max {max(e2e) * 1e3:.0f} ms (target: 2000 ms)"
        )
    events = call_events(random.Random(args.seed))
    finals = sum(e["type"] == "transcript" for e in events)
    times: list[float] = []
    appends: list[float] = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as d:
            times.append(asyncio.run(one_run(events, Path(d) / f"run{i}", appends)))
    print(f"summary step alone, 600 s call: {finals} final utterances, {len(events)} stored events")
    print(
        f"  read events -> summary stored (built-in engine, SQLite), {args.runs} runs: "
        f"p50 {statistics.median(times) * 1e3:.1f} ms, p95 {_pct(times, 0.95) * 1e3:.1f} ms, "
        f"max {max(times) * 1e3:.1f} ms"
    )
    print(
        f"  durable append (WAL, synchronous=FULL), {len(appends)} appends: "
        f"p50 {_pct(appends, 0.5) * 1e3:.2f} ms, p95 {_pct(appends, 0.95) * 1e3:.2f} ms, "
        f"p99 {_pct(appends, 0.99) * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
