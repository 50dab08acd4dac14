"""The cost of watching a call from another instance: the Redis bus hop.

Starts a redis-server and two real servers sharing it (``CUECARD_STORE=redis://…``, instance
ids a and b), replays ``bench_stream``'s 81 s two-speaker espeak-ng call into A at 1.0x, and
watches it at once from A (the simulator's own events socket) and from B (a second viewer).
For every event both viewers received (transcripts, partials included, insights, cards,
scores), the hop is B's receive time minus A's, both on this process's monotonic clock. It
also reports the final and card latency as seen on B (``bench_stream.measure``).

Everything (Redis, both servers, both viewers) shares the same 2 cores, so the hop includes
waiting for CPU, not only Redis.

    python -m bench.bench_bus [--json OUT]
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

import websockets

from bench.bench_stream import BENCH_CALL, measure, pct
from clients.callgen import render
from clients.simulator import SimOptions, simulate


def identity(e: dict[str, Any]) -> tuple[Any, ...]:
    return (
        e.get("type"),
        e.get("utterance_id"),
        e.get("is_final"),
        e.get("text"),
        e.get("card_id"),
        e.get("state"),
        e.get("score"),
    )


async def run() -> dict[str, Any]:
    from clients.localserver import running_redis, start_server, stop_server

    call = render(BENCH_CALL)
    with tempfile.TemporaryDirectory() as tmp, running_redis() as url:
        path = Path(tmp) / "bench-call.wav"
        call.write(path)
        a, b = (start_server(Path(tmp) / n, CUECARD_STORE=url, CUECARD_INSTANCE_ID=n) for n in "ab")
        try:
            at_a: dict[tuple[Any, ...], float] = {}
            at_b: dict[tuple[Any, ...], float] = {}
            b_events: list[dict[str, Any]] = []
            t0 = time.monotonic()

            async def watch_b() -> None:
                url_b = f"{b.ws}/v1/calls/bus-bench/events?wait_s=60"
                async with websockets.connect(url_b, additional_headers=b.auth) as ws:
                    async for raw in ws:
                        e = json.loads(raw)
                        at_b.setdefault(identity(e), time.monotonic())
                        b_events.append(e)

            watcher = asyncio.create_task(watch_b())
            await asyncio.sleep(0.5)  # B's viewer is waiting before the call starts

            def on_a(e: dict[str, Any]) -> None:
                at_a.setdefault(identity(e), time.monotonic())

            opts = SimOptions(server=a.ws, token=a.token, speed=1.0, call_id="bus-bench")
            streamed = await simulate(path, opts, on_a)
            async with asyncio.timeout(60):
                await watcher
        finally:
            stop_server(a)
            stop_server(b)
    # B's events on the simulator's clock: its first frame went out at the first received_s
    # origin; the simulator stamps received_s from that origin, so shift B's by the same.
    origin = min(at_a.values()) - min(
        (float(e["received_s"]) for e in streamed.events), default=0.0
    )
    for e in b_events:
        e["received_s"] = at_b[identity(e)] - origin
    hops = [(at_b[k] - at_a[k]) * 1e3 for k in at_a.keys() & at_b.keys()]
    on_b = measure(b_events, call, 1.0)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
        "call_audio_s": round(call.duration_s, 1),
        "events_on_a": len(at_a),
        "events_on_b": len(at_b),
        "missing_on_b": len(at_a.keys() - at_b.keys()),
        "hop_ms": {"n": len(hops), "p50": round(pct(hops, 50), 2), "p95": round(pct(hops, 95), 2)},
        "final_latency_on_b_s": _stats(on_b.get("final", [])),
        "card_latency_on_b_s": _stats(on_b.get("card", [])),
        "wall_s": round(time.monotonic() - t0, 1),
    }


def _stats(xs: list[float]) -> dict[str, Any]:
    return {"n": len(xs), "p50": round(pct(xs, 50), 3), "p95": round(pct(xs, 95), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    args = parser.parse_args()
    report = asyncio.run(run())
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
