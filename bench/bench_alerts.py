"""Latency of the alerts that time alone makes true (a customer question left unanswered).

Such an alert's ``audio_end_s`` is the moment its condition became true (the question's end
plus ``unanswered_after_s``); its latency is the wall time it reaches the rep's socket minus
that moment, as for cards (REFERENCE.md). The coach learns that time has passed from the
server's tick on the transcribed-audio clock (``CallSession.transcribed_through_s``), and waits
the playbook's ``transcript_lag_s`` past the moment for speech the VAD has not confirmed yet.

Starts the real server and replays at 1.0x an espeak-ng call of six customer questions, each
followed by ten seconds in which nobody speaks, one every ~30 s so the deck's two-alerts-a-minute
limit holds none back.

    python -m bench.bench_alerts [--json OUT] [--events EVENTS.jsonl]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

from bench.bench_stream import pct
from clients.callgen import Turn, render
from clients.simulator import SimOptions, simulate

QUESTIONS = (
    "How long does the setup usually take?",
    "Does it work with our phone system?",
    "What happens to the recordings after a call?",
    "Can our managers see the coaching reports?",
    "Which languages does it support?",
    "How does the search across old calls work?",
)


def alert_call() -> tuple[Turn, ...]:
    turns = [Turn("rep", "Hi, this is Sam from Acme, thanks for making the time.", rate_wpm=140)]
    for q in QUESTIONS:
        turns += [
            Turn("customer", q),
            Turn("rep", "Good question, let me explain how that works for teams like yours.",
                 gap_s=10.0, rate_wpm=140),
            Turn("customer", "Okay, that makes sense.", gap_s=1.0),
            Turn("rep", "Great. Let me go on to the next part of the product.", gap_s=8.0,
                 rate_wpm=140),
        ]  # fmt: skip
    return tuple(turns)


async def run() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from clients.localserver import start_server, stop_server

    call = render(alert_call())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "alerts.wav"
        call.write(path)
        server = start_server(Path(tmp) / "data")
        try:
            opts = SimOptions(server=server.ws, token=server.token, speed=1.0, call_id="alerts")
            result = await simulate(path, opts)
        finally:
            stop_server(server)
    alerts = [
        e
        for e in result.events
        if e["type"] == "card"
        and e["state"] in ("issued", "updated")  # raised again while on screen: an update
        and e["kind"] == "unanswered_question"
    ]
    lat = [float(e["latency_s"]) for e in alerts]
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
        "call_audio_s": round(call.duration_s, 1),
        "questions": len(QUESTIONS),
        "unanswered_question_alerts": len(alerts),
        "alert_latency_s": {
            "n": len(lat),
            "p50": round(pct(lat, 50), 3),
            "p95": round(pct(lat, 95), 3),
            "max": round(max(lat, default=float("nan")), 3),
        },
    }
    return report, result.events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    parser.add_argument("--events", type=Path, help="write every event received, one per line")
    args = parser.parse_args()
    report, events = asyncio.run(run())
    if args.events:
        args.events.write_text("".join(json.dumps(e) + "\n" for e in events))
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
