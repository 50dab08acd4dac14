"""Capacity: latency as concurrent calls are added to one server.

Starts the real server (``cuecard serve`` on a free loopback port, tiny.en, its default workers) and, for
each N in ``--calls``, replays N copies of ``bench_stream``'s 81 s two-speaker espeak-ng call at
1.0x at the same time (distinct call ids, starts staggered by ``--stagger`` seconds so their
utterance ends do not all coincide), then reports per N the p50/p95 of final, first-partial,
card and insight-stage latency over all calls (``bench_stream.measure``; the first 5 s of each
call excluded), and the share of wall time the Whisper workers were busy (``GET /v1/stats``).

The simulator clients run in this process, on the same 2 cores as the server: at high N they
take CPU from it, so the figures are a little pessimistic for a server with its own machine.

    python -m bench.bench_capacity [--calls 1 2 3 4] [--stagger 1.3] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_stream import BENCH_CALL, asr_busy_s, measure, pct
from bench.metrics import asr_workers
from clients.callgen import render
from clients.simulator import SimOptions, simulate


async def one_level(server: Any, path: Path, call: Any, n: int, stagger_s: float) -> dict[str, Any]:
    async def one(i: int) -> list[dict[str, Any]]:
        await asyncio.sleep(i * stagger_s)
        opts = SimOptions(server=server.ws, token=server.token, speed=1.0, call_id=f"cap{n}-{i}")
        return (await simulate(path, opts)).events

    busy0, t0 = asr_busy_s(server), time.monotonic()
    results = await asyncio.gather(*(one(i) for i in range(n)))
    workers = asr_workers(server)
    busy_share = (asr_busy_s(server) - busy0) / (time.monotonic() - t0) / workers
    lat: dict[str, list[float]] = {}
    for events in results:
        for k, v in measure(events, call, 1.0).items():
            lat.setdefault(k, []).extend(v)
    row: dict[str, Any] = {"calls": n, "asr_busy_share": round(busy_share, 3)}
    for k in ("final", "partial", "card", "insight_stage"):
        xs = lat.get(k, [])
        row[k] = {"n": len(xs), "p50": round(pct(xs, 50), 3), "p95": round(pct(xs, 95), 3)}
    return row


async def run(levels: list[int], stagger_s: float) -> dict[str, Any]:
    from clients.localserver import start_server, stop_server

    call = render(BENCH_CALL)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench-call.wav"
        call.write(path)
        server = start_server(Path(tmp) / "data")
        try:
            for n in levels:
                rows.append(await one_level(server, path, call, n, stagger_s))
                print(json.dumps(rows[-1]), flush=True)
        finally:
            stop_server(server)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
        "call_audio_s": round(call.duration_s, 1),
        "stagger_s": stagger_s,
        "levels": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--stagger", type=float, default=1.3)
    parser.add_argument("--json")
    args = parser.parse_args()
    report = asyncio.run(run(args.calls, args.stagger))
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
